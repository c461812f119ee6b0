//! The one invocation path (`Tenancy::invoke`): a connection's binding is
//! built once per revision of the connection and reused, and the next call
//! sees any change to the connection (settings, grants, pinned version), its
//! removal, and the caller's deadline.

use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay::tenancy::invoke::{Invocation, InvocationError};
use patchbay::tenancy::service::{ConnectionRequest, Tenancy, TenancyError};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(body: Value) -> ConnectionRequest {
    let mut body = body;
    body["plugin"] = json!("probe");
    serde_json::from_value(body).expect("request")
}

fn approved(upstream: &str) -> ConnectionRequest {
    request(
        json!({ "config": { "upstream": upstream }, "grants": { "approve_all_requested": true } }),
    )
}

fn call(operation: &str, input: Value) -> Invocation {
    Invocation {
        workspace: "acme".into(),
        connection: "crm".into(),
        operation: operation.into(),
        input,
        idempotency_key: None,
        deadline: None,
        tape: None,
    }
}

async fn setup() -> (Harness, Tenancy) {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("acme").await.expect("workspace");
    (harness, tenancy)
}

async fn output(tenancy: &Tenancy, invocation: Invocation) -> Result<Value, InvokeError> {
    tenancy
        .invoke(invocation)
        .await
        .expect("the call runs")
        .outcome
        .result
}

#[tokio::test]
async fn a_binding_is_built_once_per_connection_revision() {
    let (_harness, tenancy) = setup().await;
    tenancy
        .put_connection("acme", "crm", approved("http://127.0.0.1:1"))
        .await
        .expect("saved");
    for _ in 0..3 {
        let config = output(&tenancy, call("read-config", json!(null))).await;
        assert_eq!(
            config.expect("config")["config"]["upstream"],
            "http://127.0.0.1:1"
        );
    }
    assert_eq!(tenancy.bindings.built(), 1, "built once, then reused");

    tenancy
        .put_connection("acme", "crm", approved("http://127.0.0.1:2"))
        .await
        .expect("saved");
    for _ in 0..2 {
        let config = output(&tenancy, call("read-config", json!(null))).await;
        assert_eq!(
            config.expect("config")["config"]["upstream"],
            "http://127.0.0.1:2"
        );
    }
    assert_eq!(
        tenancy.bindings.built(),
        2,
        "the new revision is built once"
    );
}

#[tokio::test]
async fn a_change_made_past_the_cache_is_still_seen() {
    // Another writer of the same store (no eviction reaches this cache): the
    // stored record is compared, so the stale binding is never used.
    let (harness, tenancy) = setup().await;
    tenancy
        .put_connection("acme", "crm", approved("http://127.0.0.1:1"))
        .await
        .expect("saved");
    output(&tenancy, call("read-config", json!(null)))
        .await
        .expect("first call");
    let mut changed = tenancy.connection("acme", "crm").expect("stored");
    changed
        .config
        .insert("upstream".into(), json!("http://127.0.0.1:3"));
    harness
        .services
        .tenancy_store
        .put_connection(&changed)
        .expect("written directly");
    let config = output(&tenancy, call("read-config", json!(null))).await;
    assert_eq!(
        config.expect("config")["config"]["upstream"],
        "http://127.0.0.1:3"
    );
    assert_eq!(tenancy.bindings.built(), 2);
}

#[tokio::test]
async fn a_grant_change_is_seen_by_the_next_call() {
    let (_harness, tenancy) = setup().await;
    let server = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("reached"))
        .mount(&server)
        .await;
    let url = format!("{}/allowed/x", server.uri());
    let fetch = || call("fetch", json!({ "url": url }));
    let not_approved = request(json!({ "config": { "upstream": server.uri() } }));

    tenancy
        .put_connection("acme", "crm", approved(&server.uri()))
        .await
        .expect("saved");
    assert!(output(&tenancy, fetch()).await.is_ok());

    tenancy
        .put_connection("acme", "crm", not_approved)
        .await
        .expect("grant withdrawn");
    let invoked = tenancy.invoke(fetch()).await.expect("runs");
    assert!(
        matches!(
            invoked.outcome.result,
            Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
        ),
        "{:?}",
        invoked.outcome.result
    );
    assert!(
        invoked.explanation.refused[0].contains("not approved"),
        "{:?}",
        invoked.explanation
    );

    tenancy
        .put_connection("acme", "crm", approved(&server.uri()))
        .await
        .expect("granted again");
    assert!(output(&tenancy, fetch()).await.is_ok());
    assert_eq!(server.received_requests().await.expect("recorded").len(), 2);
}

#[tokio::test]
async fn moving_to_another_plugin_version_runs_that_version() {
    let (harness, tenancy) = setup().await;
    harness
        .install_package(
            PROBE.package_with(|m| m.replace("version = \"1.0.0\"", "version = \"1.1.0\"")),
        )
        .await;
    let pinned = |version: &str| {
        let mut request = approved("http://127.0.0.1:1");
        request.version = version.into();
        request
    };
    tenancy
        .put_connection("acme", "crm", pinned("1.0.0"))
        .await
        .expect("saved");
    let bound = tenancy.bound("acme", "crm").await.expect("bound");
    assert_eq!(bound.plugin.manifest.version.to_string(), "1.0.0");
    assert!(output(&tenancy, call("echo", json!(1))).await.is_ok());

    tenancy
        .put_connection("acme", "crm", pinned("1.1.0"))
        .await
        .expect("moved");
    let bound = tenancy.bound("acme", "crm").await.expect("bound");
    assert_eq!(bound.plugin.manifest.version.to_string(), "1.1.0");
    assert!(output(&tenancy, call("echo", json!(1))).await.is_ok());
}

#[tokio::test]
async fn disabled_and_deleted_connections_are_not_run() {
    let (_harness, tenancy) = setup().await;
    let mut off = approved("http://127.0.0.1:1");
    off.enabled = false;
    tenancy
        .put_connection("acme", "crm", approved("http://127.0.0.1:1"))
        .await
        .expect("saved");
    output(&tenancy, call("echo", json!(1)))
        .await
        .expect("runs");
    tenancy
        .put_connection("acme", "crm", off)
        .await
        .expect("off");
    assert!(matches!(
        tenancy.invoke(call("echo", json!(1))).await,
        Err(InvocationError::Disabled(name)) if name == "crm"
    ));

    tenancy
        .delete_connection("acme", "crm")
        .await
        .expect("deleted");
    assert!(matches!(
        tenancy.invoke(call("echo", json!(1))).await,
        Err(InvocationError::Tenancy(TenancyError::ConnectionNotFound(
            _
        )))
    ));
    // A new connection of the same name runs with its own settings.
    tenancy
        .put_connection("acme", "crm", approved("http://127.0.0.1:4"))
        .await
        .expect("saved again");
    let config = output(&tenancy, call("read-config", json!(null))).await;
    assert_eq!(
        config.expect("config")["config"]["upstream"],
        "http://127.0.0.1:4"
    );
}

#[tokio::test]
async fn the_callers_deadline_ends_the_call_before_the_plugins_timeout() {
    let (_harness, tenancy) = setup().await;
    let server = MockServer::start().await;
    Mock::given(path("/allowed/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    tenancy
        .put_connection("acme", "crm", approved(&server.uri()))
        .await
        .expect("saved");
    let mut slow = call(
        "fetch",
        json!({ "url": format!("{}/allowed/slow", server.uri()) }),
    );
    slow.deadline = Some(Instant::now() + Duration::from_millis(200));
    // The probe's own timeout is 1000 ms; the error names the time the call had.
    match output(&tenancy, slow).await {
        Err(InvokeError::Timeout(ms)) => assert!(ms <= 200, "{ms} ms"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
