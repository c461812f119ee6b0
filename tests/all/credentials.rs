//! Host-held credentials: added by the host at send time, bound to their
//! destinations, never readable by the plugin, scrubbed from what comes back.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay::runtime::{Binding, LoadedPlugin};
use patchbay_tests::{Harness, plugins::PROBE, scope};
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::matchers::{header, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One credential of each static kind, each on its own path under the probe's
/// allowed prefix; `/allowed/open` has none.
const CREDENTIALS: &str = r#"
[[capabilities.credentials]]
name = "api_key"
kind = "api_key_header"
header = "X-Api-Key"
destinations = ["{{upstream}}/allowed/header"]

[[capabilities.credentials]]
name = "query_key"
kind = "api_key_query"
param = "key"
destinations = ["{{upstream}}/allowed/query"]

[[capabilities.credentials]]
name = "token"
kind = "bearer"
destinations = ["{{upstream}}/allowed/bearer"]

[[capabilities.credentials]]
name = "login"
kind = "basic"
destinations = ["GET {{upstream}}/allowed/basic"]
"#;

const API_KEY: &str = "ak-7f3e9c1d2b";
const QUERY_KEY: &str = "qk-58a1c0ffee";
const TOKEN: &str = "bt-0a1b2c3d4e5f";
const PASSWORD: &str = "pw-correct-horse";

/// Answers with everything the request carried: an upstream that echoes
/// credentials back (in its body and a header) to whoever called it.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        ResponseTemplate::new(200)
            .insert_header("x-echo-authorization", auth.as_str())
            .set_body_string(format!("url={} headers={}", request.url, headers.join(";")))
    }
}

async fn setup() -> (Harness, MockServer, Arc<LoadedPlugin>, Binding) {
    let harness = Harness::new();
    let server = MockServer::start().await;
    let plugin = harness
        .install_package(PROBE.package_with(|m| format!("{m}\n{CREDENTIALS}")))
        .await;
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    for (name, secret) in [
        (
            "api_key",
            Secret::ApiKeyHeader {
                value: API_KEY.into(),
            },
        ),
        (
            "query_key",
            Secret::ApiKeyQuery {
                value: QUERY_KEY.into(),
            },
        ),
        (
            "token",
            Secret::Bearer {
                token: TOKEN.into(),
            },
        ),
        (
            "login",
            Secret::Basic {
                username: "agent".into(),
                password: PASSWORD.into(),
            },
        ),
    ] {
        harness.set_credential("crm", name, secret).await;
    }
    (harness, server, plugin, binding)
}

async fn fetch(
    harness: &Harness,
    plugin: &LoadedPlugin,
    binding: &Binding,
    input: Value,
) -> Result<Value, InvokeError> {
    harness.invoke(plugin, binding, "fetch", input).await.result
}

fn assert_no_secret(text: &str) {
    for secret in [API_KEY, QUERY_KEY, TOKEN, PASSWORD] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
    // Basic auth's wire form.
    assert!(!text.contains("YWdlbnQ6cHctY29ycmVjdC1ob3JzZQ"), "{text}");
}

#[tokio::test]
async fn each_kind_is_added_by_the_host_where_its_destinations_match() {
    let (harness, server, plugin, binding) = setup().await;
    // Each mock only answers a request carrying exactly the injected credential.
    Mock::given(path("/allowed/header/x"))
        .and(header("x-api-key", API_KEY))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/query/x"))
        .and(query_param("key", QUERY_KEY))
        .and(query_param("q", "1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/bearer/x"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/basic/x"))
        .and(header(
            "authorization",
            "Basic YWdlbnQ6cHctY29ycmVjdC1ob3JzZQ==",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    for url in [
        "/allowed/header/x",
        "/allowed/query/x?q=1",
        "/allowed/bearer/x",
        "/allowed/basic/x",
    ] {
        let output = fetch(
            &harness,
            &plugin,
            &binding,
            json!({ "url": format!("{}{url}", server.uri()) }),
        )
        .await
        .expect("fetch");
        assert_eq!(output["status"], 200, "{url}: {output}");
    }
}

#[tokio::test]
async fn requests_outside_a_credentials_destinations_carry_none() {
    let (harness, server, plugin, binding) = setup().await;
    Mock::given(path("/allowed/open"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/basic/x"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    let open = fetch(
        &harness,
        &plugin,
        &binding,
        json!({ "url": format!("{}/allowed/open", server.uri()) }),
    )
    .await
    .expect("fetch");
    // The basic credential is bound to GET only.
    let posted = fetch(
        &harness,
        &plugin,
        &binding,
        json!({ "url": format!("{}/allowed/basic/x", server.uri()), "method": "POST" }),
    )
    .await
    .expect("fetch");
    for request in server.received_requests().await.expect("recorded") {
        assert!(
            !request.headers.contains_key("authorization")
                && !request.headers.contains_key("x-api-key")
                && request.url.query().is_none(),
            "{request:?}"
        );
    }
    assert_eq!(open["status"], 200);
    assert_eq!(posted["status"], 200);
}

#[tokio::test]
async fn an_upstream_echoing_the_credential_hands_the_plugin_nothing() {
    let (harness, server, plugin, binding) = setup().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(Echo)
        .mount(&server)
        .await;
    for url in [
        "/allowed/header/x",
        "/allowed/query/x",
        "/allowed/bearer/x",
        "/allowed/basic/x",
    ] {
        let output = fetch(
            &harness,
            &plugin,
            &binding,
            json!({ "url": format!("{}{url}", server.uri()) }),
        )
        .await
        .expect("fetch");
        let text = output.to_string();
        assert_no_secret(&text);
        assert!(text.contains("[REDACTED]"), "{url}: {text}");
    }
    // The upstream did get them: the redaction is on the way back.
    let received = server.received_requests().await.expect("recorded");
    assert_eq!(received.len(), 4);
    assert!(format!("{received:?}").contains(TOKEN));
}

#[tokio::test]
async fn the_plugin_may_not_set_what_the_host_manages() {
    let (harness, server, plugin, binding) = setup().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let cases = [
        (
            "/allowed/bearer/x",
            json!({ "Authorization": "Bearer mine" }),
            "header authorization",
        ),
        (
            "/allowed/basic/x",
            json!({ "authorization": "Basic bWluZQ==" }),
            "header authorization",
        ),
        (
            "/allowed/header/x",
            json!({ "x-api-key": "mine" }),
            "header x-api-key",
        ),
        (
            "/allowed/query/x?KEY=mine",
            json!({}),
            "query parameter key",
        ),
    ];
    for (url, headers, place) in cases {
        let outcome = harness
            .invoke(
                &plugin,
                &binding,
                "fetch",
                json!({ "url": format!("{}{url}", server.uri()), "headers": headers }),
            )
            .await;
        assert!(
            matches!(
                outcome.result,
                Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
            ),
            "{url}: {:?}",
            outcome.result
        );
        let reason = &outcome.denials.first().expect("audited").reason;
        assert!(reason.contains(place), "{url}: {reason}");
    }
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty(),
        "refused before anything was sent"
    );
    // Its own Authorization to a destination without a host credential is its business.
    let open = fetch(
        &harness,
        &plugin,
        &binding,
        json!({ "url": format!("{}/allowed/open", server.uri()), "headers": { "Authorization": "Bearer own" } }),
    )
    .await
    .expect("fetch");
    assert_eq!(open["status"], 200);
}

#[tokio::test]
async fn the_plugin_cannot_read_credentials_through_config_or_environment() {
    let (harness, _server, plugin, binding) = setup().await;
    let output = harness
        .invoke(&plugin, &binding, "read-config", json!({}))
        .await
        .result
        .expect("read-config");
    assert_no_secret(&output.to_string());
    let config = output["config"].as_object().expect("config map");
    assert_eq!(config.keys().collect::<Vec<_>>(), ["upstream"], "{output}");
    assert_eq!(output["env"], json!([]));
}

#[tokio::test]
async fn an_unset_credential_fails_before_anything_is_sent() {
    let (harness, server, plugin, _) = setup().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // Another connection of the same plugin has no credentials set.
    let other = harness.binding(&plugin, "ws-1", "crm-2", &[("upstream", &server.uri())]);
    let output = fetch(
        &harness,
        &plugin,
        &other,
        json!({ "url": format!("{}/allowed/bearer/x", server.uri()) }),
    )
    .await
    .expect("fetch");
    assert_eq!(output["status"], 401, "{output}");
    assert!(
        output["body"]
            .as_str()
            .is_some_and(|b| b.contains("token") && b.contains("is not set")),
        "{output}"
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
}

#[tokio::test]
async fn credentials_are_sealed_on_disk_and_survive_a_restart() {
    let (harness, server, plugin, _) = setup().await;
    drop(plugin);
    let harness = harness.reopen();
    // Every file of the data directory, secrets nowhere in the clear.
    for (_, bytes) in harness.data_files() {
        assert_no_secret(&String::from_utf8_lossy(&bytes));
    }
    let names: Vec<String> = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["api_key", "login", "query_key", "token"]);
    Mock::given(path("/allowed/bearer/x"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let plugin = harness
        .services
        .catalog
        .get("probe")
        .await
        .expect("installed");
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    let output = fetch(
        &harness,
        &plugin,
        &binding,
        json!({ "url": format!("{}/allowed/bearer/x", server.uri()) }),
    )
    .await
    .expect("fetch");
    assert_eq!(output["status"], 200);
}

#[tokio::test]
async fn another_workspaces_connection_of_the_same_name_gets_nothing() {
    let (harness, server, plugin, _) = setup().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(Echo)
        .mount(&server)
        .await;
    let other = harness.binding(&plugin, "ws-2", "crm", &[("upstream", &server.uri())]);
    let output = fetch(
        &harness,
        &plugin,
        &other,
        json!({ "url": format!("{}/allowed/bearer/x", server.uri()) }),
    )
    .await
    .expect("fetch");
    assert_eq!(output["status"], 401);
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
}

/// Everything every layer logs, at every level, formatted as an operator would see it.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_appear_in_no_log_line_audit_record_or_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        // Everything, except the compiler's own tracing of plugin code (slow, and holds no data).
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,cranelift_codegen=warn,cranelift_frontend=warn,regalloc2=warn,wasmtime_cranelift=warn,wasmtime_environ=warn,wasmtime_internal_cranelift=warn,wasmtime_internal_environ=warn,wasmparser=warn",
        ))
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime keeps every task on this thread, inside the subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut seen = Vec::new();
    patchbay_tests::interest_per_thread();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let (harness, server, plugin, binding) = setup().await;
            Mock::given(wiremock::matchers::any())
                .respond_with(Echo)
                .mount(&server)
                .await;
            let base = server.uri();
            let inputs = [
                json!({ "url": format!("{base}/allowed/header/x") }),
                json!({ "url": format!("{base}/allowed/query/x?q=1") }),
                json!({ "url": format!("{base}/allowed/bearer/x") }),
                json!({ "url": format!("{base}/allowed/basic/x") }),
                json!({ "url": format!("{base}/allowed/bearer/x"), "headers": { "Authorization": "Bearer mine" } }),
                // The upstream is gone: connection errors name the URL, which held a key.
                json!({ "url": "http://127.0.0.1:9/allowed/query/x" }),
            ];
            for input in inputs {
                let outcome = harness.invoke(&plugin, &binding, "fetch", input).await;
                seen.push(format!("{:?} {:?} {:?}", outcome.result, outcome.logs, outcome.denials));
            }
            let unreachable = harness.binding(&plugin, "ws-1", "crm", &[("upstream", "http://127.0.0.1:9")]);
            let outcome = harness
                .invoke(&plugin, &unreachable, "fetch", json!({ "url": "http://127.0.0.1:9/allowed/query/x" }))
                .await;
            seen.push(format!("{:?}", outcome.result));
            assert!(outcome.result.is_err(), "port 9 refuses connections");
            seen.push(format!(
                "{:?}",
                harness.services.credentials.describe(&scope("ws-1", "crm"))
            ));
            harness.services.audit.flushed().await;
            let audit = harness
                .services
                .audit
                .query("ws-1", 0, u64::MAX, None, 1000)
                .expect("audit");
            assert!(audit.records.len() >= 6, "the flow was audited");
            seen.push(serde_json::to_string(&audit).expect("json"));
        })
    });
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("patchbay::audit"),
        "the capture saw the audit events"
    );
    assert!(
        logs.lines().count() > 20,
        "the capture saw the flow: {logs}"
    );
    assert_no_secret(&logs);
    assert_no_secret(&seen.join("\n"));
}

#[tokio::test]
async fn a_wrong_master_key_stops_start_up_naming_the_credential() {
    use patchbay::services::{Options, Services};
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        master_key: None,
        ..Options::default()
    };
    let services = Services::open_with(dir.path(), Default::default(), options()).expect("open");
    services
        .credentials
        .set(
            &scope("ws-1", "crm"),
            "token",
            Secret::Bearer {
                token: TOKEN.into(),
            },
        )
        .await
        .expect("set");
    drop(services);
    // Another key in place of the one the credential was sealed under.
    let (_, other) = patchbay::egress::credentials::seal::MasterKey::generate().expect("key");
    std::fs::write(dir.path().join("master.key"), other).expect("write key");
    let error = Services::open_with(dir.path(), Default::default(), options())
        .err()
        .expect("refused")
        .to_string();
    for needle in ["\"token\"", "ws-1/crm", "another master key"] {
        assert!(error.contains(needle), "{needle} in {error}");
    }
    assert!(!error.contains(TOKEN));
}
