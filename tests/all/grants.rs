//! A capability needs all three: the manifest asks, the workspace approves,
//! the operator allows. Each refusal says which one was missing.

use patchbay::egress::credentials::Secret;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::grants::Grants;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROBE_DESTINATION: &str = "GET,HEAD,POST,PUT {{upstream}}/allowed";

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn operator(destinations: &[&str]) -> OperatorPolicy {
    OperatorPolicy {
        addresses: AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
        ..OperatorPolicy::default()
    }
}

#[tokio::test]
async fn a_destination_the_workspace_did_not_approve_is_refused() {
    let harness = Harness::new();
    let server = upstream().await;
    let plugin = harness.ensure(PROBE).await;
    let url = format!("{}/allowed/x", server.uri());
    let config = [("upstream", server.uri())];
    let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let nothing =
        harness.binding_with_grants(&plugin, "ws-1", "probe", &config, &Grants::default());
    let outcome = harness
        .invoke(&plugin, &nothing, "fetch", json!({ "url": url }))
        .await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
        ),
        "{:?}",
        outcome.result
    );
    assert!(
        outcome.denials[0].reason.contains("has not approved"),
        "{:?}",
        outcome.denials
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );

    let approved = Grants {
        http: [PROBE_DESTINATION.to_owned()].into(),
        ..Grants::default()
    };
    let binding = harness.binding_with_grants(&plugin, "ws-1", "probe", &config, &approved);
    let outcome = harness
        .invoke(&plugin, &binding, "fetch", json!({ "url": url }))
        .await;
    assert_eq!(outcome.result.expect("fetch")["status"], 200);
}

#[tokio::test]
async fn kv_needs_the_workspaces_approval() {
    let harness = Harness::new();
    let plugin = harness.ensure(PROBE).await;
    let script = json!([{ "op": "set", "key": "k", "value": "v" }]);
    let denied = harness.binding_with_grants(&plugin, "ws-1", "probe", &[], &Grants::default());
    let output = harness
        .invoke(&plugin, &denied, "kv", script.clone())
        .await
        .result
        .expect("kv script");
    assert!(
        output[0]["err"]
            .as_str()
            .is_some_and(|e| e.contains("AccessDenied")),
        "{output}"
    );
    let approved = Grants {
        kv: true,
        ..Grants::default()
    };
    let binding = harness.binding_with_grants(&plugin, "ws-1", "probe", &[], &approved);
    let output = harness
        .invoke(&plugin, &binding, "kv", script)
        .await
        .result
        .expect("kv script");
    assert!(output[0]["err"].is_null(), "{output}");
}

#[tokio::test]
async fn an_unapproved_credential_is_not_sent() {
    let harness = Harness::new();
    let server = upstream().await;
    let plugin = harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    harness
        .set_credential(
            "probe",
            "token",
            Secret::Bearer {
                token: "bt-unapproved-1234".into(),
            },
        )
        .await;
    let grants = Grants {
        http: [PROBE_DESTINATION.to_owned()].into(),
        ..Grants::default()
    };
    let uri = server.uri();
    let binding =
        harness.binding_with_grants(&plugin, "ws-1", "probe", &[("upstream", &uri)], &grants);
    let output = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{uri}/allowed/x") }),
        )
        .await
        .result
        .expect("fetch");
    assert_eq!(output["status"], 200);
    let received = server.received_requests().await.expect("recorded");
    assert!(!received[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn operator_destinations_narrow_every_plugin() {
    let server = upstream().await;
    let port = server.address().port();
    // The operator allows only another path on the same upstream.
    let narrow = format!("http://127.0.0.1:{port}/allowed/public");
    let harness = Harness::with_policy(operator(&[&narrow]));
    let plugin = harness.ensure(PROBE).await;
    let uri = server.uri();
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &uri)]);
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{uri}/allowed/private") }),
        )
        .await;
    assert!(outcome.result.is_err());
    assert!(
        outcome.denials[0].reason.contains("operator policy"),
        "{:?}",
        outcome.denials
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{uri}/allowed/public/x") }),
        )
        .await;
    assert_eq!(outcome.result.expect("fetch")["status"], 200);
}

#[test]
fn a_malformed_operator_destination_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = patchbay::services::Services::open(dir.path(), operator(&["ftp://files.example"]))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("ftp://files.example"), "{error}");
}
