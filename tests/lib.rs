//! Shared harness for Patchbay's integration tests: the compiled plugins, a
//! throw-away data directory with the real sled store, and helpers to install
//! and invoke.

use patchbay::egress::credentials::Secret;
use patchbay::egress::resolve::{NameLookup, SystemLookup};
use patchbay::policy::OperatorPolicy;
use patchbay::policy::grants::Grants;
use patchbay::policy::limits::OperatorLimits;
use patchbay::policy::manifest::Manifest;
use patchbay::policy::signing::{SIGNATURE_FILE, SecretKey, Signature, TrustedPublisher};
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::runtime::error::InvokeError;
use patchbay::runtime::package::Package;
use patchbay::runtime::{Binding, InvokeOutcome, LoadedPlugin};
use patchbay::services::{Options, Services};
use patchbay::storage::Scope;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A plugin crate compiled by build.rs.
#[derive(Debug, Clone, Copy)]
pub struct TestPlugin {
    pub name: &'static str,
    /// The crate directory, holding plugin.toml.
    pub dir: &'static str,
    /// The compiled component.
    pub wasm: &'static str,
}

pub mod load;

pub mod plugins {
    use super::TestPlugin;
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

impl TestPlugin {
    pub fn manifest(&self) -> String {
        std::fs::read_to_string(Path::new(self.dir).join("plugin.toml")).expect("plugin.toml")
    }

    pub fn wasm_bytes(&self) -> Vec<u8> {
        std::fs::read(self.wasm).expect("compiled plugin")
    }

    /// The package, signed by [`TEST_PUBLISHER`] (whom every [`Harness`] trusts).
    pub fn package(&self) -> Package {
        self.package_with(|m| m)
    }

    /// The package with its manifest edited by `edit`.
    /// The package with its manifest's declared pace (`rate_limit` lines)
    /// taken out, for measuring the host rather than the vendor's limit.
    pub fn unpaced(&self) -> Package {
        self.package_with(|manifest| without_rate_limits(&manifest))
    }

    /// The package with its manifest edited by `edit`, signed by [`TEST_PUBLISHER`].
    pub fn package_with(&self, edit: impl FnOnce(String) -> String) -> Package {
        signed(Package {
            manifest_text: edit(self.manifest()),
            wasm: self.wasm_bytes(),
            signature: None,
        })
    }

    /// Write the package as a plugin directory (plugin.toml, plugin.wasm, and
    /// plugin.sig by [`TEST_PUBLISHER`]) under `parent`.
    pub fn write_dir(&self, parent: &Path) -> PathBuf {
        let dir = parent.join(self.name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let package = self.package();
        std::fs::write(dir.join("plugin.toml"), &package.manifest_text).expect("write manifest");
        std::fs::write(dir.join("plugin.wasm"), &package.wasm).expect("write wasm");
        let signature = package.signature.expect("signed");
        std::fs::write(dir.join(SIGNATURE_FILE), signature).expect("write signature");
        dir
    }
}

/// The publisher the test packages are signed by; every [`Harness`] trusts it.
pub const TEST_PUBLISHER: &str = "Patchbay tests";

/// [`TEST_PUBLISHER`]'s key (a fixed seed: tests only).
pub fn test_publisher_key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

/// [`TEST_PUBLISHER`] as operator policy trusts it.
pub fn test_publisher() -> TrustedPublisher {
    TrustedPublisher {
        name: TEST_PUBLISHER.into(),
        key: test_publisher_key().public_key(),
    }
}

/// `package` signed by [`TEST_PUBLISHER`]. A manifest that does not parse is
/// left unsigned, for tests of what install says about it.
pub fn signed(package: Package) -> Package {
    signed_by(package, &test_publisher_key(), TEST_PUBLISHER)
}

/// `package` signed by `publisher` with `key` (left unsigned when its
/// manifest does not parse).
pub fn signed_by(package: Package, key: &SecretKey, publisher: &str) -> Package {
    let Ok(manifest) = Manifest::parse(&package.manifest_text) else {
        return package;
    };
    let signature = Signature::sign(
        key,
        publisher,
        (&manifest.id, &manifest.version.to_string()),
        &package.manifest_text,
        &package.wasm,
    )
    .expect("sign");
    Package {
        signature: Some(signature.to_toml()),
        ..package
    }
}

/// A data directory with real services on it, removed when dropped. Its
/// clock is the system's plus an offset the test can move forward.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub services: Services,
    clock_offset_ms: Arc<AtomicU64>,
    policy: OperatorPolicy,
    lookup: Arc<dyn NameLookup>,
}

impl Harness {
    /// Default operator policy, except that loopback (127.0.0.1/32), where the
    /// test upstreams listen, is explicitly allowed.
    pub fn new() -> Self {
        Self::with_limits(OperatorLimits::default())
    }

    pub fn with_limits(limits: OperatorLimits) -> Self {
        Self::with_policy(OperatorPolicy {
            limits,
            addresses: AddressPolicy {
                allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
            },
            ..OperatorPolicy::default()
        })
    }

    pub fn with_policy(policy: OperatorPolicy) -> Self {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// A harness whose host names resolve through `lookup`. It trusts
    /// [`TEST_PUBLISHER`] beside whomever `policy` trusts.
    pub fn with_lookup(mut policy: OperatorPolicy, lookup: Arc<dyn NameLookup>) -> Self {
        init_tracing();
        policy.packages.trusted_publishers.push(test_publisher());
        let dir = tempfile::tempdir().expect("tempdir");
        let clock_offset_ms = Arc::new(AtomicU64::new(0));
        let services = open(dir.path(), &policy, &lookup, &clock_offset_ms);
        Self {
            dir,
            services,
            clock_offset_ms,
            policy,
            lookup,
        }
    }

    /// Stop the services and open new ones on the same data directory, as a
    /// restart would. Callers drop their handles to loaded plugins first.
    pub fn reopen(self) -> Self {
        let Self {
            dir,
            services,
            clock_offset_ms,
            policy,
            lookup,
        } = self;
        drop(services);
        let services = open(dir.path(), &policy, &lookup, &clock_offset_ms);
        Self {
            dir,
            services,
            clock_offset_ms,
            policy,
            lookup,
        }
    }

    /// Every file of the data directory with its bytes.
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).expect("read");
                    files.push((path, bytes));
                }
            }
        }
        files
    }

    /// The data directory's files that hold `needle` anywhere.
    pub fn data_files_containing(&self, needle: &[u8]) -> Vec<PathBuf> {
        self.data_files()
            .into_iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(path, _)| path)
            .collect()
    }

    /// Move the host's wall clock forward (expiry of KV keys and tokens).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Set a credential's value for a connection of workspace `ws-1`.
    pub async fn set_credential(&self, connection: &str, name: &str, secret: Secret) {
        self.services
            .credentials
            .set(&scope("ws-1", connection), name, secret)
            .await
            .expect("set credential");
    }

    pub async fn install(&self, plugin: TestPlugin) -> Arc<LoadedPlugin> {
        self.install_package(plugin.package()).await
    }

    /// Save connection `name` of `workspace` (which must exist) running
    /// `plugin` at `base_url`, everything it asks for approved, with the
    /// bearer credential `credential` holding `token`.
    pub async fn stored_connection(
        &self,
        workspace: &str,
        name: &str,
        (plugin, base_url): (&str, &str),
        (credential, token): (&str, &str),
    ) {
        let request: patchbay::tenancy::service::ConnectionRequest =
            serde_json::from_value(serde_json::json!({
                "plugin": plugin,
                "config": { "base_url": base_url },
                "grants": { "approve_all_requested": true }
            }))
            .expect("request");
        self.services
            .tenancy()
            .put_connection(workspace, name, request)
            .await
            .expect("connection");
        self.services
            .credentials
            .set(
                &scope(workspace, name),
                credential,
                Secret::Bearer {
                    token: token.to_owned().into(),
                },
            )
            .await
            .expect("credential");
    }

    /// Install `package` (e.g. a test plugin with an edited manifest) and load it.
    pub async fn install_package(&self, package: Package) -> Arc<LoadedPlugin> {
        let installed = self
            .services
            .catalog
            .install(package)
            .await
            .expect("install");
        self.services
            .catalog
            .get(&format!("{}@{}", installed.id, installed.version))
            .await
            .expect("loaded")
    }

    /// `plugin`, installed on first use and reused after that.
    pub async fn ensure(&self, plugin: TestPlugin) -> Arc<LoadedPlugin> {
        match self.services.catalog.get(plugin.name).await {
            Ok(installed) => installed,
            Err(_) => self.install(plugin).await,
        }
    }

    pub fn binding(
        &self,
        plugin: &LoadedPlugin,
        workspace: &str,
        connection: &str,
        config: &[(&str, &str)],
    ) -> Binding {
        self.binding_with_grants(
            plugin,
            workspace,
            connection,
            config,
            &Grants::all_requested(),
        )
    }

    /// A binding with only what `grants` approves.
    pub fn binding_with_grants(
        &self,
        plugin: &LoadedPlugin,
        workspace: &str,
        connection: &str,
        config: &[(&str, &str)],
        grants: &Grants,
    ) -> Binding {
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Binding::from_manifest(
            &plugin.manifest,
            scope(workspace, connection),
            config,
            grants,
        )
        .expect("binding")
    }

    /// Every audit record of `workspace`, once the writer has flushed.
    pub async fn audit_records(
        &self,
        workspace: &str,
    ) -> Vec<patchbay::storage::audit::AuditRecord> {
        self.services.audit.flushed().await;
        self.services
            .audit
            .query(workspace, 0, u64::MAX, None, 1000)
            .expect("query")
            .records
    }

    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        operation: &str,
        input: Value,
    ) -> InvokeOutcome {
        self.services
            .catalog
            .runtime()
            .invoke(plugin, binding, operation, input, Default::default())
            .await
    }
}

/// A shipped connector bound (as connection `connection` of `ws-1`) to a
/// mock of its vendor's API on loopback, with its credential set.
pub struct Vendor {
    pub harness: Harness,
    pub upstream: wiremock::MockServer,
    pub plugin: Arc<LoadedPlugin>,
    pub binding: Binding,
}

impl Vendor {
    /// `plugin` with `base_url` pointing at a fresh mock plus `config`, and
    /// credential `name` holding `secret`.
    pub async fn start(
        plugin: TestPlugin,
        connection: &str,
        credential: (&str, Secret),
        config: &[(&str, &str)],
    ) -> Self {
        Self::start_at("base_url", plugin, connection, credential, config).await
    }

    /// [`start`](Self::start) for a plugin whose URL setting is `url_setting`.
    pub async fn start_at(
        url_setting: &str,
        plugin: TestPlugin,
        connection: &str,
        (name, secret): (&str, Secret),
        config: &[(&str, &str)],
    ) -> Self {
        let harness = Harness::new();
        let upstream = wiremock::MockServer::start().await;
        let plugin = harness.install(plugin).await;
        let uri = upstream.uri();
        let mut settings = vec![(url_setting, uri.as_str())];
        settings.extend_from_slice(config);
        let binding = harness.binding(&plugin, "ws-1", connection, &settings);
        harness.set_credential(connection, name, secret).await;
        Self {
            harness,
            upstream,
            plugin,
            binding,
        }
    }

    /// Invoke `operation` and return its result.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, InvokeError> {
        self.call_keyed(operation, input, None).await
    }

    /// Invoke `operation` with the caller's `idempotency_key`.
    pub async fn call_keyed(
        &self,
        operation: &str,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, InvokeError> {
        let options = patchbay::runtime::CallOptions {
            idempotency_key: idempotency_key.map(str::to_owned),
            deadline: None,
            tape: None,
        };
        self.harness
            .services
            .catalog
            .runtime()
            .invoke(&self.plugin, &self.binding, operation, input, options)
            .await
            .result
    }

    /// Invoke `operation` expecting the plugin to fail, and return how;
    /// `case` names the scenario if it does not.
    pub async fn failure(
        &self,
        operation: &str,
        input: Value,
        case: &str,
    ) -> patchbay::runtime::error::PluginFailure {
        match self.call(operation, input).await {
            Err(InvokeError::Plugin(failure)) => failure,
            other => panic!("{case}: expected a plugin error, got {other:?}"),
        }
    }

    /// Each `(operation, input)` is refused by the host's input schema check
    /// and nothing reaches the mock.
    pub async fn assert_schema_refuses(&self, cases: &[(&str, Value)]) {
        for (operation, input) in cases {
            let outcome = self.call(operation, input.clone()).await;
            assert!(
                matches!(outcome, Err(InvokeError::InvalidInput(_))),
                "{operation} {input}: {outcome:?}"
            );
        }
        let seen = self.upstream.received_requests().await.expect("recording");
        assert!(seen.is_empty(), "reached the upstream: {seen:?}");
    }

    /// The requests the mock received with `method` on `path`, in order.
    pub async fn requests(&self, method: &str, path: &str) -> Vec<wiremock::Request> {
        self.upstream
            .received_requests()
            .await
            .expect("the mock records requests")
            .into_iter()
            .filter(|r| r.url.path() == path && r.method.as_str() == method)
            .collect()
    }
}

/// The value of query parameter `name` in `request`, decoded.
pub fn query_value(request: &wiremock::Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Call before capturing events with `tracing::subscriber::with_default`.
/// Keeps a second dispatcher alive for the whole test process: with only
/// one, tracing-core asks the *registering thread's* default about a new call
/// site, so a call site first reached by another test thread (no subscriber
/// there) would stay disabled for the capturing test's subscriber too.
pub fn interest_per_thread() {
    static KEEPER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    KEEPER.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

pub fn scope(workspace: &str, connection: &str) -> Scope {
    Scope {
        workspace: workspace.into(),
        connection: connection.into(),
    }
}

fn open(
    dir: &Path,
    policy: &OperatorPolicy,
    lookup: &Arc<dyn NameLookup>,
    offset: &Arc<AtomicU64>,
) -> Services {
    let system = patchbay::policy::clock::system();
    let offset = offset.clone();
    let options = Options {
        lookup: lookup.clone(),
        clock: Arc::new(move || system() + offset.load(Ordering::SeqCst)),
        master_key: None,
        transport: None,
    };
    Services::open_with(dir, policy.clone(), options).expect("services")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        // PATCHBAY_TEST_LOG (a RUST_LOG-style filter) shows more when debugging a test.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATCHBAY_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A HubSpot-style contact search page with `contacts` records (about 400
/// bytes each), deterministic, every tenth archived.
pub fn crm_page(contacts: usize) -> String {
    let stages = ["lead", "subscriber", "opportunity", "customer"];
    let results: Vec<Value> = (0..contacts)
        .map(|i| {
            serde_json::json!({
                "id": format!("{}", 100_000 + i),
                "properties": {
                    "firstname": format!("First{i}"),
                    "lastname": format!("Last{i}"),
                    "email": format!("Person.{i}@Example.COM"),
                    "phone": if i % 3 == 0 { Value::Null } else { Value::String(format!("+1 (555) {:03}-{:04}", i % 1000, i)) },
                    "mobilephone": format!("+44 7700 {:06}", i),
                    "company": format!("Company {}", i % 97),
                    "lifecyclestage": stages[i % stages.len()],
                    "hs_object_id": format!("{}", 100_000 + i),
                },
                "createdAt": "2025-01-01T00:00:00.000Z",
                "updatedAt": format!("2026-10-{:02}T10:00:00.000Z", 1 + i % 28),
                "archived": i % 10 == 9,
            })
        })
        .collect();
    serde_json::json!({ "total": contacts, "results": results }).to_string()
}

impl Harness {
    /// Install `plugin` and bind it to a test connection in workspace `ws-1`.
    pub async fn ready(&self, plugin: TestPlugin) -> (Arc<LoadedPlugin>, Binding) {
        let loaded = self.install(plugin).await;
        let binding = self.binding(&loaded, "ws-1", plugin.name, &[]);
        (loaded, binding)
    }
}

/// Run a failure plugin's `run` operation with `input` and return its error,
/// after checking that the same plugin still answers its `ok` operation: a
/// failure is confined to the call that caused it.
pub async fn run_failing(plugin: TestPlugin, limits: OperatorLimits, input: Value) -> InvokeError {
    let harness = Harness::with_limits(limits);
    let (loaded, binding) = harness.ready(plugin).await;
    let outcome = harness.invoke(&loaded, &binding, "run", input).await;
    let error = match outcome.result {
        Err(error) => error,
        Ok(output) => panic!("{}: expected a failure, got {output}", plugin.name),
    };
    let after = harness.invoke(&loaded, &binding, "ok", Value::Null).await;
    assert_eq!(
        after.result,
        Ok(Value::from("ok")),
        "{} serves again after the failure",
        plugin.name
    );
    error
}

/// The operator metrics of `harness`'s services, as `GET /metrics` renders them.
pub fn metrics_text(harness: &Harness) -> String {
    patchbay::api::metrics::render(&harness.services.app_state("unused").metrics).expect("metrics")
}

/// What the probe's manifest adds to declare a bearer credential `token`,
/// sent to its upstream's `/allowed` paths.
pub const PROBE_BEARER_CREDENTIAL: &str = "\n[[capabilities.credentials]]\nname = \"token\"\nkind = \"bearer\"\ndestinations = [\"{{upstream}}/allowed\"]\n";

/// The probe package, declaring the bearer credential `token`.
pub fn probe_with_bearer_credential() -> Package {
    plugins::PROBE.package_with(|m| format!("{m}{PROBE_BEARER_CREDENTIAL}"))
}

/// The operator token [`Harness::serve_api`] accepts.
pub const OPERATOR_TOKEN: &str = "pbo_test-operator-0123456789abcdef";

impl Harness {
    /// Serve the HTTP API of these services on a loopback port; its base URL.
    /// The server lives as long as the test's runtime.
    pub async fn serve_api(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = patchbay::api::router(self.services.app_state(OPERATOR_TOKEN));
        // Deliveries run while the server does (the handle lives in its task).
        let dispatcher =
            patchbay::events::dispatch::Dispatcher::start(self.services.events.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, router).await;
            drop(dispatcher);
            served
        });
        base
    }
}

/// A plain pooled HTTP client (for the API under test, and as the
/// benchmark's baseline); it trusts no certificates, loopback http only.
pub fn plain_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .expect("client")
}

/// `GET base+path` with `token` as bearer (if any): status and JSON body.
/// `GET /metrics` of the API at `base`, as the operator.
pub async fn operator_metrics(base: &str) -> String {
    plain_http_client()
        .get(format!("{base}/metrics"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

pub async fn api_get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    api_call("GET", base, path, token, None).await
}

/// `method base+path` as the operator, with a JSON `body` (if any).
pub async fn operator_call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    api_call(method, base, path, Some(OPERATOR_TOKEN), body).await
}

/// `POST /v1/workspaces {"id"}` as the operator (the answer is the caller's
/// to check, as with any other call).
pub async fn create_workspace(base: &str, id: &str) -> (u16, Value) {
    operator_call(
        base,
        "POST",
        "/v1/workspaces",
        Some(serde_json::json!({ "id": id })),
    )
    .await
}

/// `method base+path` with `token` as bearer (if any) and a JSON `body` (if
/// any): status and JSON body (`null` when there is none).
pub async fn api_call(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = plain_http_client().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `manifest` without its `rate_limit` lines.
pub fn without_rate_limits(manifest: &str) -> String {
    manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with("rate_limit"))
        .collect::<Vec<_>>()
        .join("\n")
}
