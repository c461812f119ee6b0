//! OAuth2 credentials: tokens fetched by the host, shared by concurrent calls,
//! refreshed before expiry and after a 401, and a refused grant marks the
//! connection needs-attention.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::{Binding, LoadedPlugin};
use patchbay_tests::{Harness, plugins::PROBE, scope};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLIENT_CREDENTIALS: &str = r#"
[[capabilities.credentials]]
name = "oauth"
kind = "oauth2_client_credentials"
token_url = "{{upstream}}/oauth/token"
scopes = ["contacts.read", "contacts.write"]
destinations = ["{{upstream}}/allowed/api"]
"#;

const REFRESH_TOKEN: &str = r#"
[[capabilities.credentials]]
name = "oauth"
kind = "oauth2_refresh_token"
token_url = "{{upstream}}/oauth/token"
destinations = ["{{upstream}}/allowed/api"]
"#;

const CLIENT_SECRET: &str = "cs-9d8c7b6a5f4e";

fn token(access: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": expires_in
    }))
}

async fn setup(
    manifest_extra: &str,
    secret: Secret,
) -> (Harness, MockServer, Arc<LoadedPlugin>, Binding) {
    let harness = Harness::new();
    let server = MockServer::start().await;
    let plugin = harness
        .install_package(PROBE.package_with(|m| format!("{m}\n{manifest_extra}")))
        .await;
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    harness.set_credential("crm", "oauth", secret).await;
    (harness, server, plugin, binding)
}

fn client_credentials() -> Secret {
    Secret::Oauth2ClientCredentials {
        client_id: "patchbay-client".into(),
        client_secret: CLIENT_SECRET.into(),
    }
}

fn refresh_token(value: &str) -> Secret {
    Secret::Oauth2RefreshToken {
        client_id: "patchbay-client".into(),
        client_secret: None,
        refresh_token: value.into(),
    }
}

async fn call_api(
    harness: &Harness,
    plugin: &LoadedPlugin,
    binding: &Binding,
    server: &MockServer,
) -> Value {
    harness
        .invoke(
            plugin,
            binding,
            "fetch",
            json!({ "url": format!("{}/allowed/api/contacts", server.uri()) }),
        )
        .await
        .result
        .expect("fetch")
}

async fn requests_to(server: &MockServer, at: &str) -> usize {
    server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.url.path() == at)
        .count()
}

#[tokio::test]
async fn a_burst_of_fifty_calls_makes_one_token_request() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("scope=contacts.read+contacts.write"))
        // Client id and secret as HTTP basic auth (RFC 6749 §2.3.1).
        .and(header(
            "authorization",
            "Basic cGF0Y2hiYXktY2xpZW50OmNzLTlkOGM3YjZhNWY0ZQ==",
        ))
        // Slow enough that the burst queues behind the one request.
        .respond_with(token("tok-1", 3600).set_delay(Duration::from_millis(100)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(50)
        .mount(&server)
        .await;
    let calls = (0..50).map(|_| call_api(&harness, &plugin, &binding, &server));
    let outputs = futures_util::future::join_all(calls).await;
    for output in outputs {
        assert_eq!(output["status"], 200, "{output}");
    }
    assert_eq!(requests_to(&server, "/oauth/token").await, 1);
    assert!(
        patchbay_tests::metrics_text(&harness).contains("patchbay_oauth_token_requests_total 1"),
        "token requests are counted in the metrics"
    );
    // The host's own token request is audited like the plugin's requests.
    harness.services.audit.flushed().await;
    let records = harness
        .services
        .audit
        .query("ws-1", 0, u64::MAX, None, 100)
        .expect("audit")
        .records;
    let token: Vec<_> = records
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .collect();
    assert_eq!(token.len(), 1, "{records:#?}");
    assert_eq!(
        (
            token[0].method.as_str(),
            token[0].status,
            token[0].credential.as_deref()
        ),
        ("POST", Some(200), Some("oauth2_client_credentials"))
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.path == "/allowed/api/contacts")
            .count(),
        50
    );
    assert!(
        !serde_json::to_string(&records)
            .expect("json")
            .contains(CLIENT_SECRET)
    );
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("tok-1", 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("tok-2", 3600))
        .mount(&server)
        .await;
    // The bodies name which token was used (not the token itself, which is scrubbed).
    for (access, answer) in [("tok-1", "first"), ("tok-2", "second")] {
        Mock::given(path("/allowed/api/contacts"))
            .and(header("authorization", format!("Bearer {access}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_string(answer))
            .mount(&server)
            .await;
    }
    let body = |v: Value| v["body"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        body(call_api(&harness, &plugin, &binding, &server).await),
        "first"
    );
    // 100 s before expiry: still well outside the refresh skew (60 s).
    harness.advance_clock(Duration::from_secs(3500));
    assert_eq!(
        body(call_api(&harness, &plugin, &binding, &server).await),
        "first"
    );
    assert_eq!(requests_to(&server, "/oauth/token").await, 1);
    // 55 s before expiry: inside the skew, so replaced before it can lapse mid-call.
    harness.advance_clock(Duration::from_secs(45));
    assert_eq!(
        body(call_api(&harness, &plugin, &binding, &server).await),
        "second"
    );
    assert_eq!(requests_to(&server, "/oauth/token").await, 2);
}

#[tokio::test]
async fn a_401_causes_one_refresh_and_one_retry() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("revoked", 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("fresh", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer revoked"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(ResponseTemplate::new(200).set_body_string("served"))
        .mount(&server)
        .await;
    // A POST (not idempotent) is resent too: a 401 means it was not processed.
    let output = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/api/contacts", server.uri()), "method": "POST", "body": "{}" }),
        )
        .await
        .result
        .expect("fetch");
    assert_eq!(output["status"], 200, "{output}");
    assert_eq!(output["body"], "served");
    assert_eq!(requests_to(&server, "/oauth/token").await, 2);
    assert_eq!(requests_to(&server, "/allowed/api/contacts").await, 2);
}

#[tokio::test]
async fn a_second_401_goes_back_to_the_plugin() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("any", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let output = call_api(&harness, &plugin, &binding, &server).await;
    assert_eq!(output["status"], 401);
    assert_eq!(requests_to(&server, "/oauth/token").await, 2, "one refresh");
    assert_eq!(
        requests_to(&server, "/allowed/api/contacts").await,
        2,
        "one retry"
    );
}

#[tokio::test]
async fn invalid_grant_marks_the_connection_needs_attention() {
    let (harness, server, plugin, binding) =
        setup(REFRESH_TOKEN, refresh_token("rt-revoked")).await;
    Mock::given(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-revoked"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "refresh token rt-revoked was revoked"
        })))
        .expect(1)
        .mount(&server)
        .await;
    for _ in 0..3 {
        let output = call_api(&harness, &plugin, &binding, &server).await;
        assert_eq!(output["status"], 401, "{output}");
        let body = output["body"].as_str().expect("body");
        assert!(
            body.contains("needs attention") && body.contains("invalid_grant"),
            "{body}"
        );
        assert!(
            !body.contains("rt-revoked"),
            "the refresh token is scrubbed: {body}"
        );
    }
    // One token request: later calls fail fast on the durable mark.
    assert_eq!(requests_to(&server, "/oauth/token").await, 1);
    assert_eq!(requests_to(&server, "/allowed/api/contacts").await, 0);
    let metrics = patchbay_tests::metrics_text(&harness);
    assert!(
        metrics.contains("patchbay_credentials_marked_needs_attention_total 1")
            && metrics.contains("patchbay_oauth_token_failures_total 1"),
        "{metrics}"
    );
    let described = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe");
    let reason = described[0]
        .needs_attention
        .clone()
        .expect("needs attention");
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert!(!reason.contains("rt-revoked"), "{reason}");

    // The mark survives a restart (and shows in the metrics after it); a new value clears it.
    drop(plugin);
    let harness = harness.reopen();
    let described = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe");
    assert!(described[0].needs_attention.is_some());
    let marked = "patchbay_credential_needs_attention{workspace=\"ws-1\",connection=\"crm\",credential=\"oauth\"} 1";
    assert!(patchbay_tests::metrics_text(&harness).contains(marked));
    let api = harness.serve_api().await;
    let (status, body) = patchbay_tests::api_get(
        &api,
        "/v1/egress/needs-attention",
        Some(patchbay_tests::OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &body[0]["workspace"],
            &body[0]["connection"],
            &body[0]["credential"]
        ),
        (&json!("ws-1"), &json!("crm"), &json!("oauth"))
    );
    assert!(
        body[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid_grant"))
    );
    assert!(!body.to_string().contains("rt-revoked"));
    harness
        .set_credential("crm", "oauth", refresh_token("rt-new"))
        .await;
    assert!(!patchbay_tests::metrics_text(&harness).contains(marked));
    Mock::given(path("/oauth/token"))
        .and(body_string_contains("refresh_token=rt-new"))
        .respond_with(token("tok-new", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer tok-new"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let plugin = harness
        .services
        .catalog
        .get("probe")
        .await
        .expect("installed");
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    assert_eq!(
        call_api(&harness, &plugin, &binding, &server).await["status"],
        200
    );
}

#[tokio::test]
async fn a_refused_client_marks_the_connection_needs_attention() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    // A 401 without a JSON error body still reads as a refusal.
    Mock::given(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_string("nope"))
        .expect(1)
        .mount(&server)
        .await;
    let output = call_api(&harness, &plugin, &binding, &server).await;
    assert_eq!(output["status"], 401);
    let described = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe");
    let reason = described[0]
        .needs_attention
        .clone()
        .expect("needs attention");
    assert!(reason.contains("refused the client"), "{reason}");
}

#[tokio::test]
async fn a_failing_token_endpoint_is_not_the_tenants_fault() {
    let (harness, server, plugin, binding) = setup(CLIENT_CREDENTIALS, client_credentials()).await;
    Mock::given(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("tok-1", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let failed = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/api/contacts", server.uri()) }),
        )
        .await
        .result;
    let message = format!("{failed:?}");
    assert!(
        failed.is_err() && message.contains("token endpoint"),
        "{message}"
    );
    assert!(!message.contains(CLIENT_SECRET), "{message}");
    let described = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe");
    assert_eq!(described[0].needs_attention, None, "a 503 is transient");
    assert_eq!(
        call_api(&harness, &plugin, &binding, &server).await["status"],
        200
    );
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_before_its_access_token_is_used() {
    let (harness, server, plugin, binding) = setup(REFRESH_TOKEN, refresh_token("rt-1")).await;
    Mock::given(path("/oauth/token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": "rt-2"
        })))
        .expect(1)
        .mount(&server)
        .await;
    // When the upstream sees tok-1, rt-2 must already be in the store.
    let credentials = harness.services.credentials.clone();
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(move |_: &wiremock::Request| {
            let stored = credentials
                .get(&scope("ws-1", "crm"), "oauth")
                .expect("get")
                .expect("set");
            let refresh = match &stored.secret {
                Secret::Oauth2RefreshToken { refresh_token, .. } => {
                    refresh_token.expose_secret().to_owned()
                }
                other => panic!("unexpected kind {other:?}"),
            };
            ResponseTemplate::new(200).set_body_string(format!("stored={refresh}"))
        })
        .mount(&server)
        .await;
    let output = call_api(&harness, &plugin, &binding, &server).await;
    assert_eq!(
        output["body"], "stored=[REDACTED]",
        "the plugin cannot see it either"
    );
    let received = server.received_requests().await.expect("recorded");
    assert_eq!(received.len(), 2);
    // The responder holds the credential store open; a restart needs it gone.
    server.reset().await;

    // On disk too: after a restart, the next refresh sends rt-2.
    drop(plugin);
    let harness = harness.reopen();
    Mock::given(path("/oauth/token"))
        .and(body_string_contains("refresh_token=rt-2"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("second"))
        .mount(&server)
        .await;
    let plugin = harness
        .services
        .catalog
        .get("probe")
        .await
        .expect("installed");
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    let output = call_api(&harness, &plugin, &binding, &server).await;
    assert_eq!(output["body"], "second", "{output}");
}

/// The operator's destination rules hold the host's own token requests too:
/// a token endpoint they do not allow is never called, the refusal is
/// audited, and the credential is not blamed (it is not marked
/// needs-attention: the tenant could not fix it by setting it again).
#[tokio::test]
async fn a_token_endpoint_outside_the_operators_destinations_is_never_called() {
    let server = MockServer::start().await;
    Mock::given(path("/oauth/token"))
        .respond_with(token("tok-1", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/allowed/api/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let policy = patchbay::policy::OperatorPolicy {
        addresses: patchbay::policy::ssrf::AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        destinations: vec![format!("{}/allowed", server.uri())],
        ..Default::default()
    };
    let harness = Harness::with_policy(policy);
    let plugin = harness
        .install_package(PROBE.package_with(|m| format!("{m}\n{CLIENT_CREDENTIALS}")))
        .await;
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    harness
        .set_credential("crm", "oauth", client_credentials())
        .await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/api/contacts", server.uri()) }),
        )
        .await;
    assert!(outcome.result.is_err(), "{:?}", outcome.result);
    assert_eq!(requests_to(&server, "/oauth/token").await, 0);
    assert_eq!(requests_to(&server, "/allowed/api/contacts").await, 0);
    harness.services.audit.flushed().await;
    let records = harness
        .services
        .audit
        .query("ws-1", 0, u64::MAX, None, 100)
        .expect("audit")
        .records;
    assert!(
        records.iter().any(|r| r.path == "/oauth/token"
            && r.decision == patchbay::storage::audit::Decision::Denied
            && r.reason
                .as_deref()
                .is_some_and(|why| why.contains("operator policy"))),
        "{records:?}"
    );
    let described = harness
        .services
        .credentials
        .describe(&scope("ws-1", "crm"))
        .expect("describe");
    assert!(
        described.iter().all(|c| c.needs_attention.is_none()),
        "{described:?}"
    );
}
