//! An optional alert when a workspace's dead-letter queue reaches a
//! threshold: one POST to the tenant's URL, signed by the Standard Webhooks
//! scheme with the alert's own secret, each time the depth crosses the
//! threshold from below (and once after a restart while it is still at or
//! above). It goes out through the egress like a plugin's request: the
//! operator's address policy and destination list apply, and it is audited.

use crate::{Events, EventsError, blocking};
use patchbay_egress::Timeouts;
use patchbay_egress::credentials::Secret;
use patchbay_policy::call::CallId;
use patchbay_policy::http::Target;
use patchbay_policy::rate::RateLimit;
use patchbay_policy::webhook::{self as standard};
use patchbay_storage::Scope;
use patchbay_storage::audit::{AuditRecord, Decision};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The setting's name in the outbox.
const SETTING: &str = "dead-letter-alert";
/// The alert's secret, held as a credential of the workspace itself.
const SECRET: &str = "dead-letter-alert";
/// Attempts to send one alert, the waits between them growing from 1 s.
const ATTEMPTS: u32 = 3;
/// Alerts being sent at once, across workspaces.
const SENDING_AT_ONCE: usize = 8;
/// Every workspace with an alert is checked this often, whatever happened.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A workspace's dead-letter alert, as set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertRequest {
    /// Where the alert is POSTed: an http or https URL without user info.
    pub url: String,
    /// Dead letters in the workspace at which it is sent (1 to 1,000,000).
    pub threshold: u64,
    /// The signing secret (`whsec_` and base64 of 24-64 bytes); left out,
    /// one is made and shown once, in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    url: String,
    threshold: u64,
}

/// A workspace's dead-letter alert as the API shows it: never its secret,
/// except a made one, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    /// Where the alert goes.
    pub url: String,
    /// The depth it is sent at.
    pub threshold: u64,
    /// Dead letters in the workspace now.
    pub dead: u64,
    /// Whether an alert was sent for the current crossing (reset once the
    /// depth falls below the threshold).
    pub raised: bool,
    /// The secret made for it: only in the answer that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Which workspaces to look at, and which have an alert out.
#[derive(Debug, Default)]
pub(crate) struct Alerts {
    pending: Mutex<HashSet<String>>,
    raised: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Alerts {
    /// Look at `workspace`'s depth soon (its dead-letter queue changed).
    pub(crate) fn check_soon(&self, workspace: &str) {
        lock(&self.pending).insert(workspace.to_owned());
        self.wake.notify_one();
    }
}

/// The workspace's own scope, where its alert secret is kept (no connection
/// is named by the empty string).
fn workspace_scope(workspace: &str) -> Scope {
    Scope {
        workspace: workspace.to_owned(),
        connection: String::new(),
    }
}

impl Events {
    /// Set `workspace`'s dead-letter alert; the answer holds the secret only
    /// when one was made.
    pub async fn put_alert(
        &self,
        workspace: &str,
        request: AlertRequest,
    ) -> Result<AlertView, EventsError> {
        self.tenancy.workspace(workspace)?;
        let mut problems = Vec::new();
        if let Err(e) = Target::parse("POST", &request.url) {
            problems.push(format!("url: {e}"));
        }
        if !(1..=1_000_000).contains(&request.threshold) {
            problems.push("threshold: 1 to 1000000 dead letters".to_owned());
        }
        if let Some(secret) = &request.secret
            && let Err(e) = standard::decode_secret(secret)
        {
            problems.push(format!("secret: {e}"));
        }
        if !problems.is_empty() {
            return Err(EventsError::InvalidAlert(problems));
        }
        let made = match &request.secret {
            Some(_) => None,
            None => Some(made_secret().ok_or_else(|| {
                EventsError::Storage("no OS randomness to make a secret; give one".into())
            })?),
        };
        let secret = request
            .secret
            .clone()
            .or_else(|| made.clone())
            .unwrap_or_default();
        self.tenancy
            .credentials
            .set(
                &workspace_scope(workspace),
                SECRET,
                Secret::WebhookSecret {
                    value: secret.into(),
                },
            )
            .await
            .map_err(|e| EventsError::Storage(e.to_string()))?;
        let stored = serde_json::to_vec(&Stored {
            url: request.url.clone(),
            threshold: request.threshold,
        })
        .map_err(|e| EventsError::Storage(e.to_string()))?;
        let (outbox, ws) = (self.outbox.clone(), workspace.to_owned());
        blocking(move || outbox.put_setting(&ws, SETTING, &stored)).await?;
        lock(&self.alerts.raised).remove(workspace);
        self.alerts.check_soon(workspace);
        let mut view = self.alert(workspace).await?;
        view.secret = made;
        Ok(view)
    }

    /// `workspace`'s dead-letter alert.
    pub async fn alert(&self, workspace: &str) -> Result<AlertView, EventsError> {
        self.tenancy.workspace(workspace)?;
        let stored = self
            .stored_alert(workspace)
            .await?
            .ok_or(EventsError::AlertNotSet)?;
        let (dead, _) = self.dead_depth(workspace).await?;
        Ok(AlertView {
            url: stored.url,
            threshold: stored.threshold,
            dead,
            raised: lock(&self.alerts.raised).contains(workspace),
            secret: None,
        })
    }

    /// Remove `workspace`'s dead-letter alert; whether there was one.
    pub async fn delete_alert(&self, workspace: &str) -> Result<bool, EventsError> {
        self.tenancy.workspace(workspace)?;
        let (outbox, ws) = (self.outbox.clone(), workspace.to_owned());
        let removed = blocking(move || outbox.delete_setting(&ws, SETTING)).await?;
        self.remove_alert_of(workspace).await?;
        Ok(removed)
    }

    /// Forget `workspace`'s alert secret and state (its alert, or the
    /// workspace itself, was deleted).
    pub(crate) async fn remove_alert_of(&self, workspace: &str) -> Result<(), EventsError> {
        self.tenancy
            .credentials
            .remove(&workspace_scope(workspace), SECRET)
            .await
            .map_err(|e| EventsError::Storage(e.to_string()))?;
        lock(&self.alerts.raised).remove(workspace);
        lock(&self.alerts.pending).remove(workspace);
        Ok(())
    }

    async fn stored_alert(&self, workspace: &str) -> Result<Option<Stored>, EventsError> {
        let (outbox, ws) = (self.outbox.clone(), workspace.to_owned());
        match blocking(move || outbox.setting(&ws, SETTING)).await? {
            Some(json) => serde_json::from_slice(&json).map(Some).map_err(|e| {
                EventsError::Storage(format!("the dead-letter alert does not read: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// Dead letters in `workspace`, in all and per subscription.
    async fn dead_depth(
        &self,
        workspace: &str,
    ) -> Result<(u64, BTreeMap<String, u64>), EventsError> {
        let (outbox, ws) = (self.outbox.clone(), workspace.to_owned());
        let depths = blocking(move || outbox.depths(&ws)).await?;
        let per: BTreeMap<String, u64> = depths
            .into_iter()
            .filter(|(_, d)| d.dead > 0)
            .map(|(s, d)| (s, d.dead))
            .collect();
        Ok((per.values().sum(), per))
    }

    /// The alert to send for `workspace` if its depth crossed the
    /// threshold (marked raised now; the sender clears the mark if it
    /// fails), re-armed once the depth is below.
    async fn check_alert(
        &self,
        workspace: &str,
    ) -> Result<Option<(String, serde_json::Value, u64)>, EventsError> {
        let Some(stored) = self.stored_alert(workspace).await? else {
            return Ok(None);
        };
        let (dead, per) = self.dead_depth(workspace).await?;
        if dead < stored.threshold {
            lock(&self.alerts.raised).remove(workspace);
            return Ok(None);
        }
        if !lock(&self.alerts.raised).insert(workspace.to_owned()) {
            return Ok(None);
        }
        let now_ms = self.now_ms();
        let body = json!({
            "type": "dead_letters.threshold_reached",
            "timestamp": chrono::DateTime::from_timestamp_millis(now_ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "data": { "workspace": workspace, "dead": dead, "threshold": stored.threshold,
                "by_subscription": per }
        });
        Ok(Some((stored.url, body, now_ms)))
    }

    async fn send_alert(
        &self,
        workspace: &str,
        url: &str,
        body: &serde_json::Value,
        now_ms: u64,
    ) -> Result<(), String> {
        let scope = workspace_scope(workspace);
        let key = self
            .tenancy
            .credentials
            .with_webhook_secret(&scope, SECRET, standard::decode_secret)
            .map_err(|e| e.to_string())?
            .ok_or("its secret is not set")?
            .map_err(|e| e.to_string())?;
        let egress = self.tenancy.catalog.runtime().egress().clone();
        let target = Target::parse("POST", url).map_err(|e| e.to_string())?;
        let call_id = Arc::new(CallId {
            workspace: workspace.to_owned(),
            connection: String::new(),
            plugin: "patchbay".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            operation: "dead-letter-alert".into(),
            invocation_id: trace_id(),
        });
        // A refusal by operator policy is audited like a plugin's, and not
        // tried again: it would be refused the same way.
        let refuse = |reason: String| {
            let mut record = AuditRecord::for_target(&call_id, egress.audit().now_ms(), &target);
            record.decision = Decision::Denied;
            record.reason = Some(reason.clone());
            egress.audit().record(&record);
            reason
        };
        if let Some(rules) = egress.operator_destinations()
            && !rules.iter().any(|rule| rule.allows(&target))
        {
            return Err(refuse(format!(
                "{url} is outside the operator's destinations"
            )));
        }
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let id = format!("dla_{}", call_id.invocation_id);
        let timestamp = now_ms / 1000;
        let signature = standard::sign(&key, &id, timestamp, &body);
        let mut wait = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let request = http::Request::post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", &signature)
                .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
                .map_err(|e| e.to_string())?;
            let caller = patchbay_egress::Caller {
                deadline: Instant::now() + Duration::from_secs(10),
                id: call_id.clone(),
                scope: Arc::new(scope.clone()),
                rate_limit: RateLimit {
                    requests: 10,
                    per_seconds: 1,
                },
                credential: None,
            };
            let timeouts = Timeouts {
                first_byte: Some(Duration::from_secs(10)),
                between_bytes: Some(Duration::from_secs(10)),
            };
            match egress
                .send(request, target.clone(), timeouts, &caller)
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => last = format!("answered {}", response.status()),
                Err(e @ patchbay_egress::EgressError::AddressRefused(_)) => {
                    return Err(refuse(e.to_string()));
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(last)
    }
}

/// 32 hex digits: the alert's invocation id in the audit trail.
fn trace_id() -> String {
    hex::encode(crate::random_bytes::<16>())
}

/// `whsec_` and 32 random bytes in base64; `None` without OS randomness (a
/// secret is never made from the clock, unlike an id).
fn made_secret() -> Option<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    Some(format!("{}{key}", standard::SECRET_PREFIX))
}

/// Check the workspaces whose dead-letter queue changed as they come, and
/// every workspace with an alert each [`SWEEP_EVERY`].
pub(crate) async fn watch(events: Arc<Events>) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let sending = Arc::new(tokio::sync::Semaphore::new(SENDING_AT_ONCE));
    loop {
        let everyone = tokio::select! {
            _ = events.alerts.wake.notified() => false,
            _ = sweep.tick() => true,
        };
        let mut workspaces: Vec<String> = lock(&events.alerts.pending).drain().collect();
        if everyone {
            let outbox = events.outbox.clone();
            match blocking(move || outbox.settings_named(SETTING)).await {
                Ok(all) => workspaces.extend(all.into_iter().map(|(ws, _)| ws)),
                Err(e) => tracing::warn!(target: "patchbay::events", error = %e,
                    "listing dead-letter alerts failed"),
            }
        }
        workspaces.sort();
        workspaces.dedup();
        for workspace in workspaces {
            let (url, body, now_ms) = match events.check_alert(&workspace).await {
                Ok(Some(send)) => send,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(target: "patchbay::events", workspace = ?workspace, error = %e,
                        "checking the dead-letter alert failed");
                    continue;
                }
            };
            // Sent apart, a few at a time: a tenant's slow URL holds up
            // nobody else's alert.
            let Ok(permit) = sending.clone().acquire_owned().await else {
                return;
            };
            let events = events.clone();
            tokio::spawn(async move {
                if let Err(e) = events.send_alert(&workspace, &url, &body, now_ms).await {
                    tracing::warn!(target: "patchbay::events", workspace = ?workspace, error = %e,
                        "the dead-letter alert could not be sent; it is tried again at the next check");
                    lock(&events.alerts.raised).remove(&workspace);
                }
                drop(permit);
            });
        }
    }
}
