//! A connection's status says what it lacks, and a call that fails because
//! of it says how to fix it, over the HTTP API. Upstreams listen on loopback
//! and count what reaches them: a refused request never does.

use patchbay::egress::credentials::Secret;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay_tests::{
    Harness, create_workspace, operator_call as call, plugins::HUBSPOT,
    probe_with_bearer_credential,
};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONNECTION: &str = "/v1/workspaces/acme/connections/crm";

/// Any request reaching it is answered 200 and counted.
async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "total": 0, "results": [] })),
        )
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

fn reasons(view: &Value) -> Vec<String> {
    view["reasons"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|r| r.as_str().expect("text").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn status_names_what_is_missing_until_nothing_is() {
    let harness = Harness::new();
    harness
        .install_package(probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    create_workspace(&api, "acme").await;
    let token_path = "PUT /v1/workspaces/acme/connections/crm/credentials/token";
    // (grants, enabled, set the credential first, status, a phrase of each reason)
    let cases: [(Value, bool, bool, &str, Vec<&str>); 5] = [
        (
            json!({}),
            true,
            false,
            "needs-attention",
            vec![
                "destinations not approved: \"GET,HEAD,POST,PUT {{upstream}}/allowed\" (approve them in grants.http",
                "the key-value store is not approved (approve it with grants.kv",
                "credential token is not approved (approve it in grants.credentials",
                "credential token is not set (PUT /v1/workspaces/acme/connections/crm/credentials/token)",
            ],
        ),
        (
            json!({ "approve_all_requested": true }),
            true,
            false,
            "needs-attention",
            vec![token_path],
        ),
        (
            json!({ "http": ["GET,HEAD,POST,PUT {{upstream}}/allowed"], "credentials": ["token"] }),
            true,
            true,
            "needs-attention",
            vec!["the key-value store is not approved"],
        ),
        (
            json!({ "approve_all_requested": true }),
            true,
            true,
            "ok",
            vec![],
        ),
        (
            json!({ "approve_all_requested": true }),
            false,
            true,
            "disabled",
            vec![],
        ),
    ];
    for (grants, enabled, set_credential, expected, phrases) in cases {
        let label = format!("grants {grants}, enabled {enabled}, credential set {set_credential}");
        call(&api, "DELETE", CONNECTION, None).await;
        let (status, saved) = call(
            &api,
            "PUT",
            CONNECTION,
            Some(json!({ "plugin": "probe", "grants": grants, "enabled": enabled })),
        )
        .await;
        assert_eq!(status, 200, "{label}: {saved}");
        if set_credential {
            let (status, body) = call(
                &api,
                "PUT",
                &format!("{CONNECTION}/credentials/token"),
                Some(json!({ "kind": "bearer", "token": "t-1" })),
            )
            .await;
            assert_eq!(status, 204, "{label}: {body}");
        }
        let (_, shown) = call(&api, "GET", CONNECTION, None).await;
        let (_, listed) = call(&api, "GET", "/v1/workspaces/acme/connections", None).await;
        assert_eq!(
            listed[0]["status"], shown["status"],
            "{label}: the list agrees"
        );
        assert_eq!(shown["status"], expected, "{label}: {shown}");
        let got = reasons(&shown);
        assert_eq!(got.len(), phrases.len(), "{label}: {got:#?}");
        for (reason, phrase) in got.iter().zip(&phrases) {
            assert!(
                reason.contains(phrase),
                "{label}: {reason:?} lacks {phrase:?}"
            );
        }
        if !got.is_empty() {
            assert_eq!(shown["reason"], got.join("; "), "{label}");
        }
    }
    // Saved with nothing approved: the save's own answer already says so.
    let (_, saved) = call(
        &api,
        "PUT",
        CONNECTION,
        Some(json!({ "plugin": "probe", "grants": {} })),
    )
    .await;
    assert_eq!(saved["status"], "needs-attention", "{saved}");
}

/// The probe as connection `crm` of `acme`, its upstream `base`, with `grants`.
async fn probe_connection(api: &str, base: &str, grants: Value) {
    create_workspace(api, "acme").await;
    let (status, body) = call(
        api,
        "PUT",
        CONNECTION,
        Some(json!({ "plugin": "probe", "config": { "upstream": base }, "grants": grants })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_call_refused_by_the_host_names_the_fix() {
    let loopback_allowed = AddressPolicy {
        allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
    };
    let all = json!({ "approve_all_requested": true });
    // (operator policy, grants, a phrase the error's details must hold)
    let cases = [
        (
            OperatorPolicy {
                addresses: loopback_allowed.clone(),
                ..OperatorPolicy::default()
            },
            json!({ "kv": true }),
            "the workspace has not approved it; approve it in grants.http (not yet approved: \"GET,HEAD,POST,PUT {{upstream}}/allowed\"), or with grants.approve_all_requested",
        ),
        (
            OperatorPolicy::default(),
            all.clone(),
            "the address is refused by operator policy: the operator can allow its range with --allow-cidr or the policy file's addresses.allowed_cidrs",
        ),
        (
            OperatorPolicy {
                addresses: loopback_allowed,
                destinations: vec!["https://only.example.com".into()],
                ..OperatorPolicy::default()
            },
            all,
            "the operator's destinations list (the policy file's destinations) does not include it",
        ),
    ];
    for (policy, grants, fix) in cases {
        let harness = Harness::with_policy(policy);
        harness
            .install_package(probe_with_bearer_credential())
            .await;
        let api = harness.serve_api().await;
        let server = upstream().await;
        probe_connection(&api, &server.uri(), grants).await;
        let url = format!("{}/allowed/x", server.uri());
        let (status, body) = call(
            &api,
            "POST",
            &format!("{CONNECTION}/operations/fetch"),
            Some(json!({ "input": { "url": url } })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("access-denied")),
            "{fix}: {body}"
        );
        let details = body["details"].as_array().expect("details").clone();
        let refused = format!("GET {url} was refused: ");
        assert!(
            details
                .iter()
                .filter_map(Value::as_str)
                .any(|d| d.starts_with(&refused) && d.contains(fix)),
            "{fix}: {body:#}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(fix)),
            "the message carries the first fix: {body:#}"
        );
        assert_eq!(
            received(&server).await,
            0,
            "{fix}: nothing reached the upstream"
        );
    }
}

#[tokio::test]
async fn a_401_the_host_gave_for_an_unset_credential_names_the_credential() {
    let harness = Harness::new();
    harness.install(HUBSPOT).await;
    let api = harness.serve_api().await;
    let server = upstream().await;
    create_workspace(&api, "acme").await;
    let hubspot = "/v1/workspaces/acme/connections/hubspot";
    let (status, saved) = call(
        &api,
        "PUT",
        hubspot,
        Some(json!({ "plugin": "hubspot", "config": { "base_url": server.uri() }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let set_it = "PUT /v1/workspaces/acme/connections/hubspot/credentials/private_app_token";
    assert_eq!(saved["status"], "needs-attention", "{saved}");
    assert!(
        reasons(&saved)
            .iter()
            .any(|r| r.contains("credential private_app_token is not set") && r.contains(set_it)),
        "{saved:#}"
    );

    let find = format!("{hubspot}/operations/find-contact");
    let input = Some(json!({ "input": { "phone": "+15551234" } }));
    let (status, body) = call(&api, "POST", &find, input.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("credential-unavailable")),
        "{body:#}"
    );
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("credential private_app_token is not set")
            && message.contains("sent nothing")
            && message.contains(set_it),
        "{message}"
    );
    assert!(
        !message.contains("upstream refused"),
        "nothing reached the upstream, so it refused nothing: {message}"
    );
    assert!(body["invocation_id"].is_string(), "{body}");
    assert_eq!(
        received(&server).await,
        0,
        "nothing was sent without the credential"
    );

    // Once set, the call goes through and the status is ok.
    harness
        .services
        .credentials
        .set(
            &patchbay_tests::scope("acme", "hubspot"),
            "private_app_token",
            Secret::Bearer {
                token: "pat-1".into(),
            },
        )
        .await
        .expect("set");
    let (status, body) = call(&api, "POST", &find, input).await;
    assert_eq!(status, 404, "no contact in an empty result: {body}");
    assert_eq!(received(&server).await, 1);
    assert_eq!(call(&api, "GET", hubspot, None).await.1["status"], "ok");
}

#[tokio::test]
async fn a_destination_at_a_refused_address_shows_before_any_call() {
    // No allowed ranges: the probe's upstream on loopback is refused.
    let harness = Harness::with_policy(OperatorPolicy::default());
    harness.ensure(patchbay_tests::plugins::PROBE).await;
    let api = harness.serve_api().await;
    create_workspace(&api, "acme").await;
    let server = upstream().await;
    let (status, saved) = call(
        &api,
        "PUT",
        CONNECTION,
        Some(json!({
            "plugin": "probe",
            "config": { "upstream": server.uri() },
            "grants": { "approve_all_requested": true },
        })),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["status"], "needs-attention", "{saved:#}");
    assert!(
        reasons(&saved)
            .iter()
            .any(|r| r.contains("127.0.0.1 (loopback)") && r.contains("--allow-cidr")),
        "{saved:#}"
    );
    assert_eq!(received(&server).await, 0);
}
