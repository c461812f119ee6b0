//! `patchbay plugin test [DIR]`: the conformance kit. It judges a plugin
//! directory offline, in the real sandbox, against the exchanges recorded in
//! its fixtures:
//!
//! - the package installs (manifest and schemas valid; every declared
//!   operation exported and every exported one declared);
//! - every fixture's input gives the expected output (checked against the
//!   output schema too) or the expected error, with every request the plugin
//!   sends answered from the recording;
//! - error paths generated from each successful fixture: its first recorded
//!   answer replaced by a 401, 404, 429 with `Retry-After`, 500, malformed
//!   JSON and a timeout, each expected to come back as the matching error;
//! - every request allowed by a declared destination (a refused one fails
//!   its case), and a declared destination no fixture uses is a warning;
//! - the operation stays within its declared time and memory.
//!
//! A fixture is a JSON file in `DIR/fixtures/`:
//!
//! ```json
//! { "operation": "find-contact", "config": {"base_url": "https://api.example.com"},
//!   "input": {"email": "ada@example.com"},
//!   "exchanges": [{ "request": {"method": "POST", "url": "https://api.example.com/search", "body": {…}},
//!                   "response": {"status": 200, "headers": {…}, "body": {…}} }],
//!   "output": {…} }
//! ```
//!
//! `error` (an error code such as `not-found`) replaces `output` for a case
//! that should fail; `error_paths` overrides what an error path should give
//! (`{"404": "upstream"}`) or skips it (`"skip"`).

use crate::services::{Options, Services};
use anyhow::{Context as _, bail};
use patchbay_egress::credentials::Secret;
use patchbay_egress::replay::{Answer, Exchange, Replay};
use patchbay_policy::OperatorPolicy;
use patchbay_policy::grants::Grants;
use patchbay_policy::http::Target;
use patchbay_policy::manifest::{CredentialKind, Manifest};
use patchbay_policy::recording::{Clocks, KvValue, RandomValues};
use patchbay_policy::signing::PackagePolicy;
use patchbay_runtime::error::InvokeError;
use patchbay_runtime::package::Package;
use patchbay_runtime::record::{Playback, Tape};
use patchbay_storage::Scope;
use patchbay_tenancy::invoke::Invocation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The error paths generated from each successful fixture, and the error
/// code each should come back as.
const ERROR_PATHS: [(&str, &str); 6] = [
    ("401", "upstream-unauthorized"),
    ("404", "not-found"),
    ("429", "rate-limited"),
    ("500", "upstream"),
    ("malformed-json", "upstream"),
    ("timeout", "timeout"),
];

/// One fixture file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fixture {
    /// For the report; the file's name when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    pub(super) operation: String,
    /// The connection's settings.
    #[serde(default)]
    pub(super) config: Map<String, Value>,
    /// What the workspace approved; everything the plugin asks when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) grants: Option<Grants>,
    #[serde(default = "empty_object")]
    pub(super) input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
    /// KV keys the connection holds before the call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) kv: BTreeMap<String, KvValue>,
    /// Clock readings and random values served to the plugin, in order
    /// (a replayed transcript's); the host's own when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) host: Option<HostValues>,
    #[serde(default)]
    pub(super) exchanges: Vec<RecordedExchange>,
    /// The expected output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) output: Option<Value>,
    /// The expected error code, instead of an output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    /// Error paths whose expected code differs from the kit's, or `skip`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) error_paths: BTreeMap<String, String>,
}

/// Clock readings and random values a fixture serves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostValues {
    #[serde(default)]
    pub(super) clocks: Clocks,
    #[serde(default)]
    pub(super) random: RandomValues,
}

impl HostValues {
    fn playback(&self) -> anyhow::Result<Playback> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(Playback {
            wall_ns: self.clocks.wall_ns.clone(),
            monotonic_ns: self.clocks.monotonic_ns.clone(),
            secure: b64
                .decode(&self.random.secure)
                .context("host.random.secure is not base64")?,
            insecure: b64
                .decode(&self.random.insecure)
                .context("host.random.insecure is not base64")?,
            insecure_seed: match &self.random.insecure_seed {
                Some(seed) => Some(seed.parse().context("host.random.insecure_seed")?),
                None => None,
            },
        })
    }
}

fn empty_object() -> Value {
    json!({})
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordedExchange {
    pub(super) request: RecordedRequest,
    pub(super) response: RecordedResponse,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordedRequest {
    pub(super) method: String,
    pub(super) url: String,
    /// Headers the request must carry, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) headers: BTreeMap<String, String>,
    /// When given, the request's body must be this JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordedResponse {
    #[serde(default = "ok")]
    pub(super) status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) headers: BTreeMap<String, String>,
    /// A JSON body (sent with `content-type: application/json` unless the
    /// headers name another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body: Option<Value>,
    /// A body as text, when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body_text: Option<String>,
    /// A body's bytes in base64, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body_base64: Option<String>,
    /// No answer in time: the request times out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) timeout: bool,
    /// No connection: the request fails at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) unreachable: bool,
}

fn ok() -> u16 {
    200
}

impl RecordedExchange {
    fn to_exchange(&self) -> Exchange {
        Exchange {
            method: self.request.method.clone(),
            url: self.request.url.clone(),
            headers: self
                .request
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: self.request.body.clone(),
            answer: self.response.to_answer(),
        }
    }
}

impl RecordedResponse {
    fn to_answer(&self) -> Answer {
        if self.timeout {
            return Answer::Timeout;
        }
        if self.unreachable {
            return Answer::Unreachable;
        }
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = match (&self.body, &self.body_text) {
            (Some(json), _) => {
                if !self
                    .headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                json.to_string().into_bytes()
            }
            (None, Some(text)) => text.clone().into_bytes(),
            (None, None) => {
                use base64::Engine as _;
                self.body_base64
                    .as_ref()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default()
            }
        };
        Answer::Respond {
            status: self.status,
            headers,
            body,
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Pass,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Check {
    pub(super) status: Status,
    pub(super) name: String,
    /// Why, when it did not pass; what was measured when it did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) details: Vec<String>,
}

/// The whole report, as `--format json` prints it.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) plugin: String,
    pub(super) version: String,
    pub(super) passed: bool,
    pub(super) summary: Summary,
    pub(super) checks: Vec<Check>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Summary {
    pub(super) pass: usize,
    pub(super) warn: usize,
    pub(super) fail: usize,
}

impl Report {
    fn new(plugin: String, version: String, checks: Vec<Check>) -> Self {
        let mut summary = Summary::default();
        for check in &checks {
            match check.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        Self {
            plugin,
            version,
            passed: summary.fail == 0,
            summary,
            checks,
        }
    }

    /// The report for people.
    pub(super) fn text(&self) -> String {
        let mut out = format!("conformance of {}@{}\n", self.plugin, self.version);
        for check in &self.checks {
            let tag = match check.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{tag}  {}\n", check.name));
            for detail in &check.details {
                out.push_str(&format!("      {detail}\n"));
            }
        }
        out.push_str(&format!(
            "{}: {} passed, {} warnings, {} failed\n",
            if self.passed { "passed" } else { "FAILED" },
            self.summary.pass,
            self.summary.warn,
            self.summary.fail
        ));
        out
    }
}

fn check(status: Status, name: impl Into<String>, details: Vec<String>) -> Check {
    Check {
        status,
        name: name.into(),
        details,
    }
}

/// A plugin installed in a scratch data directory, answered from a replay.
struct Setup {
    _data: tempfile::TempDir,
    services: Services,
    replay: Arc<Replay>,
    manifest: Manifest,
}

/// Install the plugin directory `dir` in a scratch data directory whose
/// requests are answered by a replay; `Err` with the report when it does
/// not install (the failing check in
/// `checks`) when it does not install.
async fn setup(dir: &Path, checks: &mut Vec<Check>) -> anyhow::Result<Result<Setup, Report>> {
    let manifest_path = dir.join("plugin.toml");
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let wasm_path = dir.join("plugin.wasm");
    if !wasm_path.exists() {
        bail!(
            "{} is missing: build the plugin first (`patchbay plugin build`)",
            wasm_path.display()
        );
    }
    let manifest = match Manifest::parse(&manifest_text) {
        Ok(m) => {
            checks.push(check(
                Status::Pass,
                "manifest and schemas are valid",
                vec![],
            ));
            m
        }
        Err(e) => {
            checks.push(check(
                Status::Fail,
                "manifest and schemas are valid",
                vec![e.to_string()],
            ));
            return Ok(Err(Report::new(
                "?".into(),
                "?".into(),
                std::mem::take(checks),
            )));
        }
    };
    let data = tempfile::tempdir().context("making a scratch data directory")?;
    let replay = Arc::new(Replay::new());
    let policy = OperatorPolicy {
        packages: PackagePolicy {
            allow_unsigned: true,
            ..PackagePolicy::default()
        },
        // Nothing leaves the machine (every request is answered from the
        // recording), so a request recorded against any address, a
        // loopback mock or an on-premise system, replays.
        addresses: patchbay_policy::ssrf::AddressPolicy {
            allowed_cidrs: ["0.0.0.0/0", "::/0"]
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
        },
        ..OperatorPolicy::default()
    };
    let services = Services::open_with(
        data.path(),
        policy,
        Options {
            // A key file of the scratch directory's own.
            master_key: None,
            transport: Some(replay.clone()),
            ..Options::default()
        },
    )?;
    let package = Package::read_dir(dir)?;
    match services.catalog.install(package).await {
        Ok(_) => checks.push(check(
            Status::Pass,
            "every declared operation is exported and every exported one declared",
            vec![],
        )),
        Err(e) => {
            checks.push(check(
                Status::Fail,
                "the package installs (component, operations, schemas)",
                vec![e.to_string()],
            ));
            let (id, version) = (manifest.id.clone(), manifest.version.to_string());
            return Ok(Err(Report::new(id, version, std::mem::take(checks))));
        }
    }
    replay.ignore_query_params(
        manifest
            .capabilities
            .credentials
            .iter()
            .filter_map(|c| c.param.clone())
            .collect(),
    );
    Ok(Ok(Setup {
        _data: data,
        services,
        replay,
        manifest,
    }))
}

impl Setup {
    /// The kit over this setup, with no case run yet.
    fn kit(&self) -> Kit<'_> {
        Kit {
            services: &self.services,
            replay: &self.replay,
            manifest: &self.manifest,
            runs: 0,
            used: Vec::new(),
        }
    }

    fn report(&self, checks: Vec<Check>) -> Report {
        let (id, version) = (self.manifest.id.clone(), self.manifest.version.to_string());
        Report::new(id, version, checks)
    }
}

/// Run one `fixture` (a replayed transcript's) on the plugin directory `dir`.
pub(super) async fn run_one(dir: &Path, name: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let mut checks = Vec::new();
    let setup = match setup(dir, &mut checks).await? {
        Ok(setup) => setup,
        Err(report) => return Ok(report),
    };
    checks.push(setup.kit().case(name, fixture).await);
    Ok(setup.report(checks))
}

/// Run the kit on the plugin directory `dir`.
pub(super) async fn run(dir: &Path) -> anyhow::Result<Report> {
    let mut checks = Vec::new();
    let setup = match setup(dir, &mut checks).await? {
        Ok(setup) => setup,
        Err(report) => return Ok(report),
    };
    let fixtures = read_fixtures(&dir.join("fixtures"), &mut checks);
    let mut kit = setup.kit();
    for (name, fixture) in &fixtures {
        checks.push(kit.case(name, fixture).await);
        if fixture.output.is_some() && !fixture.exchanges.is_empty() {
            for (path, expected) in ERROR_PATHS {
                let expected = match fixture.error_paths.get(path) {
                    Some(skip) if skip == "skip" => continue,
                    Some(other) => other.as_str(),
                    None => expected,
                };
                checks.push(kit.error_path(name, fixture, path, expected).await);
            }
        }
    }
    for operation in &setup.manifest.operations {
        if !fixtures.iter().any(|(_, f)| f.operation == operation.name) {
            checks.push(check(
                Status::Warn,
                format!("operation {} has no fixture", operation.name),
                vec!["add one under fixtures/: nothing checks what it does".into()],
            ));
        }
    }
    checks.extend(kit.unused_destinations(&fixtures));
    Ok(setup.report(checks))
}

/// Every `*.json` under `dir`, sorted by name; a file that is not a fixture
/// fails its own check.
fn read_fixtures(dir: &Path, checks: &mut Vec<Check>) -> Vec<(String, Fixture)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        checks.push(check(
            Status::Fail,
            "fixtures",
            vec![format!(
                "no fixtures in {}: add one JSON file per case (see `patchbay plugin test --help`)",
                dir.display()
            )],
        ));
    }
    let mut fixtures = Vec::new();
    for path in paths {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Fixture>(&text).map_err(|e| e.to_string()))
            .and_then(|f| match (&f.output, &f.error) {
                (Some(_), Some(_)) | (None, None) => {
                    Err("give exactly one of `output` and `error`".to_owned())
                }
                _ => Ok(f),
            });
        match parsed {
            Ok(fixture) => {
                let name = fixture
                    .name
                    .clone()
                    .unwrap_or_else(|| file.trim_end_matches(".json").to_owned());
                fixtures.push((format!("{} / {name}", fixture.operation), fixture));
            }
            Err(e) => checks.push(check(
                Status::Fail,
                format!("fixture {file}"),
                vec![format!("not a fixture: {e}")],
            )),
        }
    }
    fixtures
}

/// The services the cases run on, and what the runs used.
struct Kit<'a> {
    services: &'a Services,
    replay: &'a Replay,
    manifest: &'a Manifest,
    runs: usize,
    /// Every (method, URL) the plugin sent, with the config it ran under.
    used: Vec<(Map<String, Value>, String, String)>,
}

/// What one run gave.
struct Ran {
    result: Result<Value, InvokeError>,
    duration: Duration,
    problems: Vec<String>,
}

impl Kit<'_> {
    async fn case(&mut self, name: &str, fixture: &Fixture) -> Check {
        let exchanges: Vec<Exchange> = fixture
            .exchanges
            .iter()
            .map(RecordedExchange::to_exchange)
            .collect();
        let ran = match self.run(fixture, exchanges).await {
            Ok(ran) => ran,
            Err(e) => return check(Status::Fail, name, vec![format!("{e:#}")]),
        };
        let mut problems = ran.problems;
        match (&fixture.output, &fixture.error, &ran.result) {
            (Some(expected), _, Ok(output)) => {
                if let Some(difference) = first_difference(expected, output, "") {
                    problems.push(format!("output differs from the fixture's: {difference}"));
                    // The whole output, to check and record.
                    problems.push(format!("the plugin's output: {output}"));
                }
            }
            (Some(_), _, Err(e)) => problems.push(format!(
                "expected an output, got the error {}: {e}",
                e.code()
            )),
            (None, Some(code), Ok(output)) => problems.push(format!(
                "expected the error {code}, got an output: {}",
                clip(&output.to_string())
            )),
            (None, Some(code), Err(e)) if e.code() != code => {
                problems.push(format!("expected the error {code}, got {}: {e}", e.code()))
            }
            _ => {}
        }
        let unused = self.replay.unused();
        if problems.is_empty() && !unused.is_empty() {
            let detail = unused
                .iter()
                .map(|i| {
                    let e = &fixture.exchanges[*i].request;
                    format!("recorded but never requested: {} {}", e.method, e.url)
                })
                .collect();
            return check(Status::Warn, name, detail);
        }
        finish(name, problems, ran.duration)
    }

    async fn error_path(
        &mut self,
        name: &str,
        fixture: &Fixture,
        path: &str,
        expected: &str,
    ) -> Check {
        let mut exchanges: Vec<Exchange> = fixture
            .exchanges
            .iter()
            .map(RecordedExchange::to_exchange)
            .collect();
        exchanges[0].answer = substitute(path);
        let title = format!("{name} [{path} -> {expected}]");
        let ran = match self.run(fixture, exchanges).await {
            Ok(ran) => ran,
            Err(e) => return check(Status::Fail, title, vec![format!("{e:#}")]),
        };
        let mut problems = ran.problems;
        match &ran.result {
            Ok(output) => problems.push(format!(
                "expected the error {expected}, got an output: {}",
                clip(&output.to_string())
            )),
            Err(e) if e.code() != expected => problems.push(format!(
                "expected the error {expected}, got {}: {e}",
                e.code()
            )),
            Err(_) => {}
        }
        finish(&title, problems, ran.duration)
    }

    /// Run `fixture` once in a workspace of its own (so the host's pacing
    /// and breakers of one run never touch another) against `exchanges`.
    async fn run(
        &mut self,
        fixture: &Fixture,
        mut exchanges: Vec<Exchange>,
    ) -> anyhow::Result<Ran> {
        self.runs += 1;
        let workspace = format!("kit-{}", self.runs);
        let tenancy = self.services.tenancy();
        tenancy.create_workspace(&workspace).await?;
        let grants = fixture.grants.clone().unwrap_or_else(Grants::all_requested);
        let request = serde_json::from_value(json!({
            "plugin": self.manifest.id,
            "version": self.manifest.version.to_string(),
            "config": fixture.config,
            "grants": grants,
        }))?;
        tenancy
            .put_connection(&workspace, "plugin", request)
            .await
            .context("the fixture's config does not make a connection")?;
        self.seed_kv(&workspace, &fixture.kv)?;
        exchanges.extend(self.credentials(&workspace, &fixture.config).await?);
        self.replay.load(exchanges);
        let tape = match &fixture.host {
            Some(host) => Some(Tape::playback(host.playback()?)),
            None => None,
        };
        let started = Instant::now();
        let invoked = tenancy
            .invoke(Invocation {
                workspace: workspace.clone(),
                connection: "plugin".into(),
                operation: fixture.operation.clone(),
                input: fixture.input.clone(),
                idempotency_key: fixture.idempotency_key.clone(),
                deadline: None,
                tape: tape.clone(),
            })
            .await?;
        let duration = started.elapsed();
        let mut problems = Vec::new();
        for seen in self.replay.seen() {
            self.used.push((
                fixture.config.clone(),
                seen.method.clone(),
                seen.url.clone(),
            ));
            if seen.matched.is_none() {
                // The whole URL: the kit's credentials are made up, and a
                // vendor records what is shown here.
                problems.push(format!(
                    "sent a request the recording does not have: {} {}",
                    seen.method, seen.url
                ));
            }
        }
        for denial in &invoked.outcome.denials {
            problems.push(format!(
                "a request no declared destination allows was refused: {denial:?}"
            ));
        }
        if let Some(tape) = &tape {
            problems.extend(tape.overrun());
        }
        let limit = Duration::from_millis(self.manifest.limits.timeout_ms.into());
        if duration > limit {
            problems.push(format!(
                "took {} ms, past the declared limits.timeout_ms {}",
                duration.as_millis(),
                limit.as_millis()
            ));
        }
        Ok(Ran {
            result: invoked.outcome.result,
            duration,
            problems,
        })
    }

    /// Put the fixture's KV keys in the connection's store.
    fn seed_kv(&self, workspace: &str, kv: &BTreeMap<String, KvValue>) -> anyhow::Result<()> {
        let scope = Scope {
            workspace: workspace.to_owned(),
            connection: "plugin".into(),
        };
        let limits = patchbay_storage::KvLimits {
            max_keys: u64::MAX,
            max_total_bytes: u64::MAX,
        };
        for (key, value) in kv {
            let bytes = value.bytes().map_err(anyhow::Error::msg)?;
            self.services
                .kv
                .set(&scope, key, &bytes, None, &limits)
                .with_context(|| format!("putting the fixture's KV key {key:?}"))?;
        }
        Ok(())
    }

    /// Made-up values for every credential the plugin declares (the host
    /// adds them; the plugin never sees them), and a token endpoint answer
    /// for each OAuth2 one.
    async fn credentials(
        &self,
        workspace: &str,
        config: &Map<String, Value>,
    ) -> anyhow::Result<Vec<Exchange>> {
        let scope = Scope {
            workspace: workspace.to_owned(),
            connection: "plugin".into(),
        };
        let mut values = patchbay_runtime::schema_defaults(self.manifest);
        values.extend(patchbay_runtime::config_strings(config));
        let mut token_endpoints = Vec::new();
        for credential in &self.manifest.capabilities.credentials {
            let made_up = format!("patchbay-kit-{}", credential.name);
            let secret = match credential.kind {
                CredentialKind::WebhookSecret => continue,
                CredentialKind::Basic => Secret::Basic {
                    username: "patchbay-kit".into(),
                    password: made_up.into(),
                },
                CredentialKind::Oauth2ClientCredentials => Secret::Oauth2ClientCredentials {
                    client_id: "patchbay-kit".into(),
                    client_secret: made_up.into(),
                },
                CredentialKind::Oauth2RefreshToken => Secret::Oauth2RefreshToken {
                    client_id: "patchbay-kit".into(),
                    client_secret: Some(made_up.clone().into()),
                    refresh_token: made_up.into(),
                },
                kind => Secret::from_text(kind, made_up).map_err(anyhow::Error::msg)?,
            };
            if let Some(token_url) = &credential.token_url {
                token_endpoints.push(Exchange {
                    method: "POST".into(),
                    url: token_url.fill_url(&values)?,
                    headers: vec![],
                    body: None,
                    answer: Answer::Respond {
                        status: 200,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: json!({
                            "access_token": "patchbay-kit-access-token",
                            "token_type": "Bearer",
                            "expires_in": 3600
                        })
                        .to_string()
                        .into_bytes(),
                    },
                });
            }
            self.services
                .credentials
                .set(&scope, &credential.name, secret)
                .await?;
        }
        Ok(token_endpoints)
    }

    /// A warning for each declared destination no fixture's request used.
    fn unused_destinations(&self, fixtures: &[(String, Fixture)]) -> Vec<Check> {
        if fixtures.is_empty() {
            return Vec::new();
        }
        let mut checks = Vec::new();
        for destination in &self.manifest.capabilities.http {
            let used = self.used.iter().any(|(config, method, url)| {
                let mut values = patchbay_runtime::schema_defaults(self.manifest);
                values.extend(patchbay_runtime::config_strings(config));
                let (Ok(rule), Ok(target)) =
                    (destination.fill(&values), Target::parse(method, url))
                else {
                    return false;
                };
                rule.allows(&target)
            });
            checks.push(if used {
                check(
                    Status::Pass,
                    format!("destination {destination} is used"),
                    vec![],
                )
            } else {
                check(
                    Status::Warn,
                    format!("destination {destination} is never used by any fixture"),
                    vec![
                        "declare only what the plugin needs, or add a fixture that uses it".into(),
                    ],
                )
            });
        }
        checks
    }
}

/// The answer an error path puts in place of the first recorded one.
fn substitute(path: &str) -> Answer {
    let json = |status: u16, headers: Vec<(String, String)>, body: Value| {
        let mut headers = headers;
        headers.push(("content-type".into(), "application/json".into()));
        Answer::Respond {
            status,
            headers,
            body: body.to_string().into_bytes(),
        }
    };
    match path {
        "401" => json(401, vec![], json!({ "error": "unauthorized" })),
        "404" => json(404, vec![], json!({ "error": "not found" })),
        "429" => json(
            429,
            vec![("retry-after".into(), "120".into())],
            json!({ "error": "too many requests" }),
        ),
        "500" => json(500, vec![], json!({ "error": "internal server error" })),
        "malformed-json" => Answer::Respond {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"results\": [{\"id\": ".to_vec(),
        },
        _ => Answer::Timeout,
    }
}

fn finish(name: &str, problems: Vec<String>, duration: Duration) -> Check {
    if problems.is_empty() {
        check(
            Status::Pass,
            name,
            vec![format!("{} ms", duration.as_millis())],
        )
    } else {
        check(Status::Fail, name, problems)
    }
}

/// Where `actual` first differs from `expected`, as a JSON pointer and both
/// values.
fn first_difference(expected: &Value, actual: &Value, at: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{at}/{key}");
                match a.get(key) {
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, &here) {
                            return Some(d);
                        }
                    }
                    None => {
                        return Some(format!(
                            "{here}: expected {}, missing",
                            clip(&value.to_string())
                        ));
                    }
                }
            }
            a.keys()
                .find(|k| !e.contains_key(*k))
                .map(|k| format!("{at}/{k}: not expected, got {}", clip(&a[k].to_string())))
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (e, a))| first_difference(e, a, &format!("{at}/{i}"))),
        _ if expected == actual => None,
        _ => Some(format!(
            "{}: expected {}, got {}",
            if at.is_empty() { "/" } else { at },
            clip(&expected.to_string()),
            clip(&actual.to_string())
        )),
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
