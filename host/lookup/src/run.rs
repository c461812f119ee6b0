//! Running a lookup: the sources in parallel, fallbacks, the cache.

use crate::merge::merge;
use crate::phone::{PhoneError, normalise};
use moka::Expiry;
use moka::future::Cache;
use patchbay_egress::audit::{AuditError, AuditLog};
use patchbay_policy::lookup::{LookupDefinition, LookupSource, Profile, fill_input, mask_record};
use patchbay_runtime::error::{InvokeError, PluginFailure, cap_message};
use patchbay_storage::StorageError;
use patchbay_tenancy::invoke::{Invocation, InvocationError};
use patchbay_tenancy::service::Tenancy;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Past a source's deadline, how long the host waits for the runtime to
/// report the timeout itself before giving up on it.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);
/// Longest email accepted.
const MAX_EMAIL_CHARS: usize = 254;

/// How one source's part of a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SourceStatus {
    /// It answered.
    Ok,
    /// It answered that it does not know the caller.
    NotFound,
    /// It did not answer within its deadline.
    Timeout,
    /// It failed; `code` says how.
    Error,
    /// It was not asked, or its request was not sent: its connection is
    /// disabled, its credential needs attention, its upstream's circuit
    /// breaker is open, or the request lacked what its input needs.
    Skipped,
}

impl SourceStatus {
    /// Its name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotFound => "not-found",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }
}

/// One source's status in a lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceReport {
    /// The source's name in the lookup.
    pub name: String,
    /// The connection it asked.
    pub connection: String,
    /// How it ended.
    pub status: SourceStatus,
    /// For `error`: the error code (as the invoke API gives it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What happened, for `error`, `timeout` and `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds it took.
    pub duration_ms: u64,
    /// The invocation it ran as, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// A lookup's result before masking: kept in the cache as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The caller's number in E.164: the lookup's key.
    pub key: String,
    /// The merged caller record.
    pub record: Json,
    /// Per field (`contact.first_name`), the source it came from.
    pub provenance: BTreeMap<String, String>,
    /// Every source asked, in definition order.
    pub sources: Vec<SourceReport>,
    /// Whether it came from the cache: kept from a run that ended before
    /// this one was asked for. (Callers that asked while an identical run
    /// was in flight share it, and read `false`.)
    pub cached: bool,
}

/// An answer as one profile may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaskedAnswer {
    /// The caller's number in E.164.
    pub key: String,
    /// The profile the record was masked for.
    pub profile: Profile,
    /// The caller record, with only what `profile` may see.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub record: Json,
    /// Per returned field, the source it came from.
    pub provenance: BTreeMap<String, String>,
    /// Every source asked, with its status.
    pub sources: Vec<SourceReport>,
    /// Whether it came from the cache.
    pub cached: bool,
    /// The names (never the values) of the fields returned, for the audit.
    #[serde(skip)]
    pub fields_returned: Vec<String>,
}

impl Answer {
    /// What `profile` may see: fields above it removed, masked ones masked,
    /// sensitive ones never; provenance kept only for what is returned.
    pub fn masked(&self, profile: Profile) -> MaskedAnswer {
        let (record, fields_returned) = mask_record(&self.record, profile);
        // An upstream's error text can quote the caller's data: admin only.
        let sources = self
            .sources
            .iter()
            .cloned()
            .map(|mut s| {
                if profile < Profile::Admin {
                    s.message = None;
                }
                s
            })
            .collect();
        let provenance = self
            .provenance
            .iter()
            // A section's provenance (`next_appointment`) stays while any of its fields is returned.
            .filter(|(field, _)| {
                fields_returned.iter().any(|f| {
                    f == *field
                        || f.strip_prefix(field.as_str())
                            .is_some_and(|r| r.starts_with('.'))
                })
            })
            .map(|(f, s)| (f.clone(), s.clone()))
            .collect();
        MaskedAnswer {
            key: self.key.clone(),
            profile,
            record,
            provenance,
            sources,
            cached: self.cached,
            fields_returned,
        }
    }

    /// Kept only when every source answered, found or not: an error or a
    /// timeout is asked again next time.
    fn cacheable(&self) -> bool {
        self.sources
            .iter()
            .all(|s| matches!(s.status, SourceStatus::Ok | SourceStatus::NotFound))
    }
}

/// Why a lookup could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The caller's number.
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// The caller's email.
    #[error("email {0:?} is not an email address")]
    Email(String),
}

/// The cache key: a lookup's result for one caller under one revision of
/// its definition (a changed definition never serves an old result).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    workspace: String,
    lookup: String,
    /// The definition, the workspace's creation and its sources' connections
    /// as they are now: a result is never served across a change of any.
    revision: u64,
    phone: String,
    email: Option<String>,
}

#[derive(Clone)]
struct Kept {
    answer: Arc<Answer>,
    ttl: Duration,
    /// When the sources answered: a caller that asked before then shared
    /// the run (its sources were asked for it too), one after was answered
    /// from the cache.
    answered_at: Instant,
}

/// Each entry lives for its lookup's TTL.
struct LookupTtl;

impl Expiry<Key, Kept> for LookupTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        kept: &Kept,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(kept.ttl)
    }
}

/// Runs lookups, keeps their results and the trail of who ran them.
pub struct Lookups {
    tenancy: Arc<Tenancy>,
    cache: Cache<Key, Kept>,
    /// Per workspace, moved on by every drop of its kept results: a run in
    /// flight across one hands its answer to its callers but does not keep
    /// it. Another workspace's drops never touch it.
    generations: std::sync::Mutex<HashMap<String, u64>>,
    /// Where the next generation comes from (never reused, so a workspace
    /// removed from `generations` cannot go back to an old one).
    next_generation: AtomicU64,
    /// The audit trail of runs ([`RunRecord`]s), per workspace.
    runs: Arc<AuditLog>,
}

/// One lookup run as its audit trail keeps it: who asked, how each source
/// ended, which fields went back (names, never values), and whether the
/// cache answered. Never the caller's number or any value found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    /// When it was answered, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The workspace it ran in.
    pub workspace: String,
    /// The lookup's name.
    pub lookup: String,
    /// The id of the workspace token that asked, or `operator`.
    pub token: String,
    /// The profile the answer was masked for.
    pub profile: Profile,
    /// Whether the answer came from the cache (no source was asked for it).
    pub cached: bool,
    /// Every source, with how it ended.
    pub sources: Vec<RunSource>,
    /// The fields returned (names such as `contact.email`).
    pub fields: Vec<String>,
}

/// A source's part in a [`RunRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSource {
    /// The source's name in the lookup.
    pub name: String,
    /// How it ended.
    pub status: SourceStatus,
    /// For `error`: the error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// A page of a workspace's [`RunRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunPage {
    /// This page's runs, oldest first.
    pub records: Vec<RunRecord>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl Lookups {
    /// Lookups run on `tenancy`, keeping at most `max_cached` results in
    /// memory and the trail of runs in `runs`.
    pub fn new(tenancy: Arc<Tenancy>, max_cached: u64, runs: Arc<AuditLog>) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_cached)
            .expire_after(LookupTtl)
            .support_invalidation_closures()
            .build();
        Self {
            tenancy,
            cache,
            generations: Default::default(),
            next_generation: AtomicU64::new(1),
            runs,
        }
    }

    /// Put the run of lookup `name` that answered `token` with `answer` on
    /// the workspace's trail (group-committed with others).
    pub fn audit(&self, workspace: &str, name: &str, token: &str, answer: &MaskedAnswer) {
        let record = RunRecord {
            at_ms: self.runs.now_ms(),
            workspace: workspace.to_owned(),
            lookup: name.to_owned(),
            token: token.to_owned(),
            profile: answer.profile,
            cached: answer.cached,
            sources: answer
                .sources
                .iter()
                .map(|s| RunSource {
                    name: s.name.clone(),
                    status: s.status,
                    code: s.code.clone(),
                })
                .collect(),
            fields: answer.fields_returned.clone(),
        };
        self.runs.record_any(workspace, record.at_ms, &record);
    }

    /// A page of `workspace`'s runs with `from_ms <= at < to_ms`, oldest
    /// first, after the cursor `after`; every run answered before the call
    /// is on it.
    pub async fn runs(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, AuditError> {
        self.runs.flushed().await;
        let (records, next) = self
            .runs
            .query_as(workspace, from_ms, to_ms, after, limit)?;
        Ok(RunPage { records, next })
    }

    /// Drop `workspace`'s kept results and its trail of runs (it is being
    /// deleted, or created anew over what an unfinished deletion left).
    pub async fn remove_workspace(&self, workspace: &str) -> Result<(), StorageError> {
        self.forget_workspace(workspace);
        self.runs.remove_workspace(workspace).await.map(|_| ())
    }

    /// Run lookup `name` of `workspace` (its `definition`) for the caller
    /// with `phone` (read in `default_region` when it has no country code)
    /// and perhaps `email`. From the cache when a result is kept; concurrent
    /// identical runs share one.
    pub async fn run(
        &self,
        workspace: &str,
        name: &str,
        definition: &LookupDefinition,
        phone: &str,
        email: Option<&str>,
        default_region: Option<&str>,
    ) -> Result<Answer, LookupError> {
        let phone = normalise(phone, default_region)?;
        let email = match email.map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(e) if is_email(e) => Some(e.to_lowercase()),
            Some(e) => {
                return Err(LookupError::Email(
                    e.chars().take(MAX_EMAIL_CHARS).collect(),
                ));
            }
        };
        let generation = self.generation(workspace);
        let key = Key {
            workspace: workspace.to_owned(),
            lookup: name.to_owned(),
            revision: revision(&self.tenancy, workspace, definition),
            phone: phone.clone(),
            email: email.clone(),
        };
        let ttl = Duration::from_secs(definition.cache_ttl_seconds.into());
        let definition = Arc::new(definition.clone());
        let tenancy = self.tenancy.clone();
        let workspace = workspace.to_owned();
        let ask = async move {
            let answer = ask_all(tenancy, workspace.clone(), definition, phone, email).await;
            // A drop of the workspace's kept results since this run began may concern it.
            let dropped_since = self.generation(&workspace) != generation;
            if answer.cacheable() && !ttl.is_zero() && !dropped_since {
                Ok(Kept {
                    answer: Arc::new(answer),
                    ttl,
                    answered_at: Instant::now(),
                })
            } else {
                // Not kept, but still handed to every identical run waiting on this one.
                Err(answer)
            }
        };
        let asked_at = Instant::now();
        match self.cache.entry(key).or_try_insert_with(ask).await {
            Ok(entry) => {
                let kept = entry.value();
                let mut answer = (*kept.answer).clone();
                answer.cached = !entry.is_fresh() && kept.answered_at < asked_at;
                Ok(answer)
            }
            Err(shared) => Ok((*shared).clone()),
        }
    }

    /// Drop the kept results of lookup `name` for the caller `phone`
    /// (normalised as [`run`](Self::run) does), whatever the email.
    pub fn forget(
        &self,
        workspace: &str,
        name: &str,
        phone: &str,
        default_region: Option<&str>,
    ) -> Result<String, LookupError> {
        let phone = normalise(phone, default_region)?;
        let (name, key) = (name.to_owned(), phone.clone());
        self.invalidate(workspace, move |k| k.lookup == name && k.phone == key);
        Ok(phone)
    }

    /// Drop every kept result of lookup `name` (it was changed or deleted).
    pub fn forget_lookup(&self, workspace: &str, name: &str) {
        let name = name.to_owned();
        self.invalidate(workspace, move |k| k.lookup == name);
    }

    /// Drop every kept result of `workspace` (it was deleted).
    pub fn forget_workspace(&self, workspace: &str) {
        self.invalidate(workspace, |_| true);
        // Its results are never served again (their revision names the
        // workspace's creation), so its generation need not be kept.
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(workspace);
    }

    /// The workspace's generation of kept results now.
    fn generation(&self, workspace: &str) -> u64 {
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        generations.get(workspace).copied().unwrap_or(0)
    }

    /// Drop `workspace`'s kept results that `which` picks, and move its
    /// generation on first, so no run of the workspace in flight keeps its
    /// answer. (A run of the same caller begun just after the drop may
    /// still share the answer of one begun before it; it is not kept.)
    fn invalidate(&self, workspace: &str, which: impl Fn(&Key) -> bool + Send + Sync + 'static) {
        let next = self.next_generation.fetch_add(1, Ordering::SeqCst);
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(workspace.to_owned(), next);
        let workspace = workspace.to_owned();
        // Only fails when the cache was built without invalidation closures.
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |k, _| k.workspace == workspace && which(k))
        {
            tracing::error!(target: "patchbay::lookup", error = %e, "dropping cached lookup results");
        }
    }

    /// Results kept now (for metrics and tests).
    pub async fn cached(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

/// A stamp of what a result depends on besides the caller: the definition,
/// the workspace (a deleted and recreated one is another), and each
/// source's connection (saving, disabling or deleting one changes it).
fn revision(tenancy: &Tenancy, workspace: &str, definition: &LookupDefinition) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(definition)
        .unwrap_or_default()
        .hash(&mut hasher);
    let created = tenancy.store.get_workspace(workspace).ok().flatten();
    created.map(|w| w.created_at_ms).hash(&mut hasher);
    for source in &definition.sources {
        let connection = tenancy
            .store
            .get_connection(workspace, &source.connection)
            .ok()
            .flatten();
        connection
            .map(|c| (c.updated_at_ms, c.enabled, c.created_at_ms))
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn is_email(text: &str) -> bool {
    text.chars().count() <= MAX_EMAIL_CHARS
        && !text.chars().any(|c| c.is_control() || c.is_whitespace())
        && text
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
}

/// Ask every source (fallbacks after their primaries) and merge.
async fn ask_all(
    tenancy: Arc<Tenancy>,
    workspace: String,
    definition: Arc<LookupDefinition>,
    phone: String,
    email: Option<String>,
) -> Answer {
    // The whole run ends by the largest deadline: a fallback gets what is left of it.
    let longest = definition
        .sources
        .iter()
        .map(|s| s.deadline_ms)
        .max()
        .unwrap_or(0);
    let run_ends = Instant::now() + Duration::from_millis(longest.into());
    let mut chains = JoinSet::new();
    let mut first_of = std::collections::HashMap::new();
    for source in definition
        .sources
        .iter()
        .filter(|s| s.fallback_for.is_none())
    {
        let task = chains.spawn(chain(
            tenancy.clone(),
            workspace.clone(),
            definition.clone(),
            source.clone(),
            phone.clone(),
            email.clone(),
            run_ends,
        ));
        first_of.insert(task.id(), source.clone());
    }
    let mut reports = Vec::new();
    let mut answers = BTreeMap::new();
    while let Some(done) = chains.join_next().await {
        match done {
            Ok(asked) => {
                for (report, output) in asked {
                    if let Some(output) = output {
                        answers.insert(report.name.clone(), output);
                    }
                    reports.push(report);
                }
            }
            // A source's task panicked (a host bug): it is an error (so the
            // result is not kept); the other sources' answers still count.
            Err(e) => {
                tracing::error!(target: "patchbay::lookup", error = %e, "a lookup source failed");
                if let Some(source) = first_of.get(&e.id()) {
                    reports.push(SourceReport {
                        name: source.name.clone(),
                        connection: source.connection.clone(),
                        status: SourceStatus::Error,
                        code: Some("host".into()),
                        message: Some("the host failed running this source".into()),
                        duration_ms: 0,
                        invocation_id: None,
                    });
                }
            }
        }
    }
    let position = |name: &str| definition.sources.iter().position(|s| s.name == name);
    reports.sort_by_key(|r| position(&r.name));
    let merged = merge(&definition, &answers);
    Answer {
        key: phone,
        record: merged.record,
        provenance: merged.provenance,
        sources: reports,
        cached: false,
    }
}

/// `first`, then its fallback while the last one asked failed.
async fn chain(
    tenancy: Arc<Tenancy>,
    workspace: String,
    definition: Arc<LookupDefinition>,
    first: LookupSource,
    phone: String,
    email: Option<String>,
    run_ends: Instant,
) -> Vec<(SourceReport, Option<Json>)> {
    let mut asked = Vec::new();
    let mut next = Some(first);
    while let Some(source) = next {
        let (report, output) = ask(
            &tenancy,
            &workspace,
            &source,
            &phone,
            email.as_deref(),
            run_ends,
        )
        .await;
        let failed = matches!(
            report.status,
            SourceStatus::Error | SourceStatus::Timeout | SourceStatus::Skipped
        );
        asked.push((report, output));
        next = if failed {
            definition
                .sources
                .iter()
                .find(|s| s.fallback_for.as_deref() == Some(source.name.as_str()))
                .cloned()
        } else {
            None
        };
    }
    asked
}

/// Ask one source within its deadline.
async fn ask(
    tenancy: &Tenancy,
    workspace: &str,
    source: &LookupSource,
    phone: &str,
    email: Option<&str>,
    run_ends: Instant,
) -> (SourceReport, Option<Json>) {
    let started = Instant::now();
    let mut report = SourceReport {
        name: source.name.clone(),
        connection: source.connection.clone(),
        status: SourceStatus::Skipped,
        code: None,
        message: None,
        duration_ms: 0,
        invocation_id: None,
    };
    let input = match fill_input(&source.input, Some(phone), email) {
        Ok(input) => input,
        Err(missing) => {
            report.message = Some(format!("the request gave no {missing}"));
            return (report, None);
        }
    };
    let deadline = (started + Duration::from_millis(source.deadline_ms.into())).min(run_ends);
    if deadline <= started {
        report.status = SourceStatus::Timeout;
        report.message = Some("no time was left of the lookup's deadline".into());
        return (report, None);
    }
    let invocation = Invocation {
        workspace: workspace.to_owned(),
        connection: source.connection.clone(),
        operation: source.operation.clone(),
        input,
        idempotency_key: None,
        deadline: Some(deadline),
        tape: None,
    };
    let ran = tokio::time::timeout_at(
        (deadline + DEADLINE_GRACE).into(),
        tenancy.invoke(invocation),
    )
    .await;
    let mut output = None;
    let (status, code, message) = match ran {
        Err(_) => (
            SourceStatus::Timeout,
            None,
            Some(format!(
                "no answer within {} ms",
                deadline.saturating_duration_since(started).as_millis()
            )),
        ),
        Ok(Err(InvocationError::Disabled(_))) => (
            SourceStatus::Skipped,
            None,
            Some("the connection is disabled".into()),
        ),
        Ok(Err(e)) => (
            SourceStatus::Error,
            Some("connection".into()),
            Some(e.to_string()),
        ),
        Ok(Ok(invoked)) => {
            report.invocation_id = Some(invoked.outcome.invocation_id.clone());
            match invoked.outcome.result {
                Ok(value) => {
                    output = Some(value);
                    (SourceStatus::Ok, None, None)
                }
                Err(InvokeError::Plugin(PluginFailure::NotFound { .. })) => {
                    (SourceStatus::NotFound, None, None)
                }
                Err(
                    e @ (InvokeError::Timeout(_)
                    | InvokeError::Plugin(PluginFailure::Timeout { .. })),
                ) => (SourceStatus::Timeout, None, Some(e.to_string())),
                Err(_) if invoked.outcome.circuit_open > 0 => (
                    SourceStatus::Skipped,
                    None,
                    Some("the upstream's circuit breaker is open after repeated failures".into()),
                ),
                Err(InvokeError::Plugin(PluginFailure::Unauthorized { .. }))
                    if invoked.explanation.credential_unavailable =>
                {
                    let why = invoked.explanation.unusable_credentials.join("; ");
                    (
                        SourceStatus::Skipped,
                        None,
                        Some(format!("credential needs attention: {why}")),
                    )
                }
                Err(e) => (
                    SourceStatus::Error,
                    Some(e.code().into()),
                    Some(e.to_string()),
                ),
            }
        }
    };
    report.status = status;
    report.code = code;
    report.message = message.map(cap_message);
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    (report, output)
}

#[cfg(test)]
mod tests {
    use super::SourceStatus;

    #[test]
    fn status_names_are_the_serialised_ones() {
        for status in [
            SourceStatus::Ok,
            SourceStatus::NotFound,
            SourceStatus::Timeout,
            SourceStatus::Error,
            SourceStatus::Skipped,
        ] {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
    }
}
