//! The seed scenario, end to end through the API, against loopback mocks of
//! HubSpot, Salesforce and Zendesk with their real shapes: a contact-center
//! hub posts `call.ended`; the `cx-transforms` plugin maps it in the sandbox
//! to HubSpot's and Salesforce's `log-call`, each delivered on its own
//! schedule (HubSpot answers 503 once and is retried; Salesforce logs its
//! Task once per call id). Then a signed Zendesk webhook comes in, becomes
//! `case.updated`, and keeps the requester's HubSpot contact in step.

use crate::zendesk::{SIGNING_SECRET, rfc3339, status_changed, zendesk_signature};
use patchbay_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLS: &str = "/crm/v3/objects/calls";
const BATCH_UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
const TASKS: &str = "/services/data/v67.0/sobjects/Task";
const QUERY: &str = "/services/data/v67.0/query";

async fn hubspot_mock() -> MockServer {
    let hubspot = MockServer::start().await;
    // Down for a moment: the first log-call attempt gets a 503.
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "status": "error", "message": "Service Unavailable", "category": "SERVICE_UNAVAILABLE",
            "correlationId": "3d3e7ac1-8f1a-4b36-9a2c-2b0d5b6f6f11"
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&hubspot)
        .await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "28921",
            "properties": { "hs_call_direction": "INBOUND", "hs_object_id": "28921" },
            "createdAt": "2026-12-02T10:00:05.000Z", "updatedAt": "2026-12-02T10:00:05.000Z", "archived": false
        })))
        .with_priority(2)
        .mount(&hubspot)
        .await;
    Mock::given(method("POST"))
        .and(path(BATCH_UPSERT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": [{
                "id": "902", "new": true,
                "properties": { "external_id": "zendesk-20978392", "hs_object_id": "902",
                    "lastmodifieddate": "2026-12-02T10:12:09.000Z" },
                "createdAt": "2026-12-02T10:12:09.000Z", "updatedAt": "2026-12-02T10:12:09.000Z", "archived": false
            }],
            "startedAt": "2026-12-02T10:12:09.000Z", "completedAt": "2026-12-02T10:12:09.100Z"
        })))
        .mount(&hubspot)
        .await;
    hubspot
}

async fn salesforce_mock() -> MockServer {
    let org = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "00Dxx0000001gPL!AQ4AQEXAMPLE", "instance_url": org.uri(),
            "id": format!("{}/id/00Dxx0000001gPLEAY/005xx000001Sv6AAAS", org.uri()),
            "token_type": "Bearer", "issued_at": "1764669600000", "signature": "c2lnbmF0dXJl"
        })))
        .mount(&org)
        .await;
    // Until the Task is logged, the lookup by call id finds nothing; then it finds it.
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "totalSize": 0, "done": true, "records": [] })),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&org)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 1, "done": true,
            "records": [{ "attributes": { "type": "Task",
                "url": "/services/data/v67.0/sobjects/Task/00Txx000002ZqT1EAK" },
                "Id": "00Txx000002ZqT1EAK" }]
        })))
        .with_priority(2)
        .mount(&org)
        .await;
    Mock::given(method("POST"))
        .and(path(TASKS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "00Txx000002ZqT1EAK", "success": true, "errors": []
        })))
        .mount(&org)
        .await;
    org
}

async fn requests(server: &MockServer, method: &str, at: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == at)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// Wait (bounded) until `server` saw `n` requests `method at`.
async fn until_seen(server: &MockServer, method: &str, at: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = requests(server, method, at).await;
        if seen.len() >= n || Instant::now() > until {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn call_ended_reaches_both_crms_and_a_zendesk_ticket_event_reaches_hubspot() {
    let harness = Harness::new();
    for plugin in [
        plugins::HUBSPOT,
        plugins::SALESFORCE,
        plugins::ZENDESK,
        plugins::CX_TRANSFORMS,
    ] {
        harness.ensure(plugin).await;
    }
    let base = harness.serve_api().await;
    assert_eq!(create_workspace(&base, "acme").await.0, 201);
    let (hubspot, salesforce) = (hubspot_mock().await, salesforce_mock().await);
    let call = |m: &'static str, p: String, b: Value| {
        let base = base.clone();
        async move {
            let (status, answer) =
                operator_call(&base, m, &format!("/v1/workspaces/acme{p}"), Some(b)).await;
            assert!((200..300).contains(&status), "{m} {p}: {status} {answer}");
            answer
        }
    };
    let all = json!({ "approve_all_requested": true });
    for (name, plugin, config) in [
        ("hubspot", "hubspot", json!({ "base_url": hubspot.uri() })),
        (
            "salesforce",
            "salesforce",
            json!({ "instance_url": salesforce.uri() }),
        ),
        (
            "desk",
            "zendesk",
            json!({ "base_url": "https://acme.zendesk.com" }),
        ),
        ("cx", "cx-transforms", json!({})),
    ] {
        call(
            "PUT",
            format!("/connections/{name}"),
            json!({ "plugin": plugin, "config": config, "grants": all }),
        )
        .await;
    }
    for (connection, credential, value) in [
        (
            "hubspot",
            "private_app_token",
            json!({ "kind": "bearer", "token": "pat-na1-0000-example" }),
        ),
        (
            "salesforce",
            "connected_app",
            json!({ "kind": "oauth2_client_credentials",
            "client_id": "3MVG9consumer-key", "client_secret": "consumer-secret-42" }),
        ),
        (
            "desk",
            "webhook_signing_secret",
            json!({ "kind": "webhook_secret", "value": SIGNING_SECRET }),
        ),
    ] {
        call(
            "PUT",
            format!("/connections/{connection}/credentials/{credential}"),
            value,
        )
        .await;
    }
    let retry = json!({ "max_attempts": 5, "max_age_secs": 600, "backoff_base_ms": 50, "backoff_cap_ms": 200 });
    for (name, types, transform, destination) in [
        (
            "calls-to-hubspot",
            "call.ended",
            "call-to-hubspot-log",
            ("hubspot", "log-call"),
        ),
        (
            "calls-to-salesforce",
            "call.ended",
            "call-to-salesforce-log",
            ("salesforce", "log-call"),
        ),
        (
            "cases-to-hubspot",
            "case.*",
            "case-to-hubspot-contact",
            ("hubspot", "upsert-contact"),
        ),
    ] {
        call(
            "PUT",
            format!("/subscriptions/{name}"),
            json!({
                "types": [types],
                "transform": { "connection": "cx", "operation": transform },
                "destination": { "connection": destination.0, "operation": destination.1 },
                "retry": retry
            }),
        )
        .await;
    }

    // 1. The contact center's hub posts call.ended, with the CRM ids its lookup found.
    let call_ended = |id: &str| {
        json!({
            "id": id, "type": "call.ended", "source": "cc-hub",
            "occurred_at": "2026-12-02T10:00:00Z", "subject": "+16502530000",
            "data": {
                "call_id": "call-7f3a", "direction": "inbound", "started_at": "2026-12-02T09:56:56Z",
                "duration_s": 184, "from": "+16502530000", "to": "+18005550100", "outcome": "completed",
                "summary": "Asked about invoice 123; resolved.",
                "contact_ids": { "hubspot": "501", "salesforce": "003xx000004TmiQAAS" }
            }
        })
    };
    let accepted = call("POST", "/events".into(), call_ended("cc-9f2")).await;
    assert_eq!(accepted["accepted"][0]["deliveries"], 2);

    let logged = until_seen(&hubspot, "POST", CALLS, 2).await;
    assert_eq!(
        logged.len(),
        2,
        "HubSpot: one 503, then retried on its own schedule"
    );
    let properties = &logged[1]["properties"];
    assert_eq!(properties["hs_call_direction"], "INBOUND");
    assert_eq!(properties["hs_call_duration"], "184000");
    assert_eq!(
        properties["hs_call_title"],
        "Inbound call from +16502530000"
    );
    assert_eq!(
        properties["hs_call_body"],
        "Asked about invoice 123; resolved."
    );
    assert_eq!(logged[1]["associations"][0]["to"]["id"], "501");
    let tasks = until_seen(&salesforce, "POST", TASKS, 1).await;
    assert_eq!(tasks.len(), 1, "Salesforce: logged once");
    assert_eq!(tasks[0]["WhoId"], "003xx000004TmiQAAS");
    assert_eq!(tasks[0]["CallObject"], "call-7f3a");
    assert_eq!(tasks[0]["CallDurationInSeconds"], 184);
    assert_eq!(tasks[0]["TaskSubtype"], "Call");
    // The hub sends the same call again under another event id (its own
    // retry): Salesforce finds the call's Task and logs nothing new. (HubSpot
    // has no key for engagements: it logs the call again, as its README says.)
    call("POST", "/events".into(), call_ended("cc-9f2-resent")).await;
    until_seen(&salesforce, "GET", QUERY, 2).await;
    until_seen(&hubspot, "POST", CALLS, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen: Vec<String> = salesforce
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.url.path(),
                r.url.query().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        requests(&salesforce, "POST", TASKS).await.len(),
        1,
        "one Task per call id: {seen:#?}"
    );

    // 2. A ticket about the same customer is solved in Zendesk; its webhook comes in.
    let body = status_changed("01HNZ6Q4K3SEED");
    let timestamp = rfc3339(0);
    let response = plain_http_client()
        .post(format!("{base}/v1/hooks/acme/desk"))
        .header("content-type", "application/json")
        .header(
            "x-zendesk-webhook-signature",
            zendesk_signature(SIGNING_SECRET, &timestamp, &body),
        )
        .header("x-zendesk-webhook-signature-timestamp", &timestamp)
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(response.status().as_u16(), 202);
    let created = until_seen(&hubspot, "POST", BATCH_UPSERT, 1).await;
    assert_eq!(created.len(), 1, "the case reached HubSpot");
    assert_eq!(created[0]["inputs"][0]["idProperty"], "external_id");
    assert_eq!(created[0]["inputs"][0]["id"], "zendesk-20978392");
    assert_eq!(
        created[0]["inputs"][0]["properties"],
        json!({ "external_id": "zendesk-20978392", "last_case_id": "35436",
            "last_case_status": "solved", "last_case_updated_at": "2026-12-02T10:12:07Z" })
    );

    // Every queue drained, nothing dead-lettered; the retry is counted.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, subs) =
            operator_call(&base, "GET", "/v1/workspaces/acme/subscriptions", None).await;
        let drained = subs.as_array().is_some_and(|all| {
            all.iter()
                .all(|s| s["depth"] == json!({ "pending": 0, "dead": 0 }))
        });
        if drained || Instant::now() > until {
            assert!(drained, "{subs}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let metrics = operator_metrics(&base).await;
    for line in [
        r#"patchbay_event_deliveries_total{workspace="acme",subscription="calls-to-hubspot",outcome="retried"} 1"#,
        r#"patchbay_event_deliveries_total{workspace="acme",subscription="calls-to-hubspot",outcome="delivered"} 2"#,
        r#"patchbay_event_deliveries_total{workspace="acme",subscription="calls-to-salesforce",outcome="delivered"} 2"#,
        r#"patchbay_event_deliveries_total{workspace="acme",subscription="cases-to-hubspot",outcome="delivered"} 1"#,
        r#"patchbay_webhooks_total{workspace="acme",outcome="accepted"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_call_without_the_crms_contact_id_is_refused_by_the_transform_naming_it() {
    let harness = Harness::new();
    let plugin = harness.install(plugins::CX_TRANSFORMS).await;
    let binding = harness.binding(&plugin, "ws-1", "cx", &[]);
    let event = json!({ "id": "e", "type": "call.ended", "occurred_at": "2026-12-02T10:00:00Z",
        "data": { "contact_ids": { "salesforce": "003xx000004TmiQAAS" } } });
    let outcome = harness
        .invoke(&plugin, &binding, "call-to-hubspot-log", event.clone())
        .await;
    let error = outcome.result.expect_err("no hubspot id");
    assert_eq!(error.code(), "invalid-input", "{error}");
    assert!(error.to_string().contains("hubspot"), "{error}");
    // The Salesforce mapping of the same event works, with defaults filled in.
    let mapped = harness
        .invoke(&plugin, &binding, "call-to-salesforce-log", event)
        .await
        .result
        .expect("mapped");
    assert_eq!(
        mapped,
        json!({ "contact_id": "003xx000004TmiQAAS", "direction": "inbound",
            "started_at": "2026-12-02T10:00:00Z", "subject": "Inbound call", "call_id": "e" })
    );
}
