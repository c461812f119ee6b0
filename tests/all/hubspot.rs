//! The HubSpot connector against a HubSpot-shaped mock on loopback.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Vendor, plugins::HUBSPOT};
use serde_json::json;
use wiremock::matchers::{body_json, header, header_exists, method, path};
use wiremock::{Mock, ResponseTemplate};

const SEARCH: &str = "/crm/v3/objects/contacts/search";
const PRIVATE_APP_TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

fn search_body(groups: serde_json::Value) -> serde_json::Value {
    json!({
        "filterGroups": groups,
        "properties": ["firstname", "lastname", "email", "phone", "mobilephone", "company", "lastmodifieddate"],
        "sorts": [{ "propertyName": "lastmodifieddate", "direction": "DESCENDING" }],
        "limit": 1,
    })
}

fn ada() -> serde_json::Value {
    json!({
        "total": 1,
        "results": [{
            "id": "512",
            "properties": {
                "firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com",
                "phone": null, "mobilephone": "+15551234", "company": "Analytical Engines",
                "lastmodifieddate": "2026-10-01T10:00:00Z"
            },
            "createdAt": "2025-01-01T00:00:00Z",
            "updatedAt": "2026-10-01T10:00:00.123Z",
            "archived": false
        }]
    })
}

async fn hubspot() -> Vendor {
    hubspot_with(&[]).await
}

async fn hubspot_with(config: &[(&str, &str)]) -> Vendor {
    let token = Secret::Bearer {
        token: PRIVATE_APP_TOKEN.into(),
    };
    Vendor::start(
        HUBSPOT,
        "hubspot-main",
        ("private_app_token", token),
        config,
    )
    .await
}

#[tokio::test]
async fn finds_a_contact_by_phone_with_the_crm_v3_search_shape() {
    let hs = hubspot().await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        // Added by the host: the plugin never holds the token.
        .and(header(
            "authorization",
            format!("Bearer {PRIVATE_APP_TOKEN}").as_str(),
        ))
        .and(header_exists("content-length"))
        .and(body_json(search_body(json!([
            { "filters": [{ "propertyName": "phone", "operator": "EQ", "value": "+15551234" }] },
            { "filters": [{ "propertyName": "mobilephone", "operator": "EQ", "value": "+15551234" }] },
        ]))))
        .respond_with(ResponseTemplate::new(200).set_body_json(ada()))
        .expect(1)
        .mount(&hs.upstream)
        .await;

    let outcome = hs
        .call("find-contact", json!({ "phone": " +15551234 " }))
        .await;
    assert_eq!(
        outcome.expect("contact"),
        json!({
            "id": "512", "source": "hubspot", "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.com", "phone": "+15551234", "company": "Analytical Engines",
            "updated_at": "2026-10-01T10:00:00.123Z"
        })
    );
}

#[tokio::test]
async fn finds_a_contact_by_email_case_insensitively() {
    let hs = hubspot().await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .and(body_json(search_body(json!([
            { "filters": [{ "propertyName": "email", "operator": "EQ", "value": "ada@example.com" }] },
        ]))))
        .respond_with(ResponseTemplate::new(200).set_body_json(ada()))
        .expect(1)
        .mount(&hs.upstream)
        .await;
    let outcome = hs
        .call("find-contact", json!({ "email": "Ada@Example.com" }))
        .await;
    assert_eq!(outcome.expect("contact")["id"], "512");
}

#[tokio::test]
async fn no_match_is_not_found() {
    let hs = hubspot().await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "total": 0, "results": [] })),
        )
        .expect(1)
        .mount(&hs.upstream)
        .await;
    let outcome = hs
        .call("find-contact", json!({ "phone": "+10000000" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
        ),
        "{:?}",
        outcome
    );
}

/// HubSpot's error envelope.
fn hubspot_error(status: u16, category: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header(
            "x-hubspot-correlation-id",
            "aeb5b6b2-7fdb-4d5c-9a3e-1c1f3f2b8a11",
        )
        .set_body_json(json!({
            "status": "error",
            "message": message,
            "correlationId": "aeb5b6b2-7fdb-4d5c-9a3e-1c1f3f2b8a11",
            "category": category
        }))
}

/// HubSpot's 429: `errorType` instead of `category`, and the policy hit.
fn rate_limited(policy: &str) -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({
        "status": "error",
        "message": "You have reached your secondly limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24",
        "policyName": policy,
        "requestId": "54af1b1b-6f5b-4a5e-8ac4-1c1f3f2b8a11"
    }))
}

#[tokio::test]
async fn upstream_errors_become_typed_errors() {
    let cases = [
        (
            "400",
            hubspot_error(
                400,
                "VALIDATION_ERROR",
                "There was a problem with the request.",
            ),
        ),
        (
            "401",
            hubspot_error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            ),
        ),
        (
            "403",
            hubspot_error(
                403,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call.",
            ),
        ),
        (
            "404",
            hubspot_error(404, "OBJECT_NOT_FOUND", "Object not found."),
        ),
        (
            "429 with retry-after",
            rate_limited("TEN_SECONDLY_ROLLING").insert_header("retry-after", "3"),
        ),
        ("429", rate_limited("DAILY")),
        ("429 secondly", rate_limited("TEN_SECONDLY_ROLLING")),
        ("500", ResponseTemplate::new(500).set_body_string("oops")),
        (
            "502",
            hubspot_error(502, "INTERNAL_ERROR", "Processing took too long"),
        ),
        (
            "bad-json",
            ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
        ),
    ];
    for (case, response) in cases {
        let hs = hubspot().await;
        Mock::given(method("POST"))
            .and(path(SEARCH))
            .respond_with(response)
            .expect(1)
            .mount(&hs.upstream)
            .await;
        let failure = hs
            .failure("find-contact", json!({ "phone": "+1555" }), case)
            .await;
        match (case, &failure) {
            (
                "400",
                PluginFailure::Upstream {
                    status: 400,
                    message,
                },
            ) => assert!(
                message.contains("VALIDATION_ERROR") && message.contains("aeb5b6b2"),
                "{message}"
            ),
            ("401", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("INVALID_AUTHENTICATION"), "{message}")
            }
            ("403", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("MISSING_SCOPES"), "{message}")
            }
            ("404", PluginFailure::NotFound { .. }) => {}
            (
                "429 with retry-after",
                PluginFailure::RateLimited {
                    retry_after_ms: 3000,
                },
            ) => {}
            (
                "429",
                PluginFailure::RateLimited {
                    retry_after_ms: 3_600_000,
                },
            ) => {}
            (
                "429 secondly",
                PluginFailure::RateLimited {
                    retry_after_ms: 10_000,
                },
            ) => {}
            ("500", PluginFailure::Upstream { status: 500, .. }) => {}
            (
                "502",
                PluginFailure::Upstream {
                    status: 502,
                    message,
                },
            ) => {
                assert!(message.contains("INTERNAL_ERROR"), "{message}")
            }
            ("bad-json", PluginFailure::Upstream { status: 200, .. }) => {}
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_hubspot_is_a_timeout() {
    let hs = hubspot_with(&[("request_timeout_ms", "300")]).await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "total": 0, "results": [] }))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&hs.upstream)
        .await;
    let outcome = hs.call("find-contact", json!({ "phone": "+1555" })).await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::Timeout { .. }))
        ),
        "{outcome:?}"
    );
}

const CONTACTS: &str = "/crm/v3/objects/contacts";

const BATCH_UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";

fn contact_object(id: &str, email: &str) -> serde_json::Value {
    json!({
        "id": id,
        "properties": {
            "createdate": "2026-11-30T08:00:00.000Z", "email": email, "firstname": "Grace",
            "lastname": "Hopper", "hs_object_id": id, "lastmodifieddate": "2026-12-02T10:00:00.000Z",
            "crm_ref": "ERP-42"
        },
        "createdAt": "2026-11-30T08:00:00.000Z",
        "updatedAt": "2026-12-02T10:00:00.000Z",
        "archived": false
    })
}

fn upsert_input() -> serde_json::Value {
    json!({
        "external_id": "ERP-42",
        "contact": {
            "first_name": "Grace", "last_name": "Hopper", "email": "Grace@Navy.example",
            "attributes": { "lifecyclestage": "customer" }
        }
    })
}

fn written_properties() -> serde_json::Value {
    json!({ "properties": {
        "firstname": "Grace", "lastname": "Hopper", "email": "grace@navy.example",
        "lifecyclestage": "customer", "crm_ref": "ERP-42"
    }})
}

/// The batch upsert HubSpot is sent: one input keyed by the external id property.
fn batch_upsert_body() -> serde_json::Value {
    json!({ "inputs": [{
        "idProperty": "crm_ref", "id": "ERP-42",
        "properties": written_properties()["properties"]
    }]})
}

/// HubSpot's answer to a batch upsert that wrote contact `id`.
fn batch_answer(id: &str, new: bool) -> ResponseTemplate {
    let mut result = contact_object(id, "grace@navy.example");
    result["new"] = json!(new);
    ResponseTemplate::new(200).set_body_json(json!({
        "status": "COMPLETE",
        "results": [result],
        "requestedAt": "2026-12-02T10:00:00.000Z",
        "startedAt": "2026-12-02T10:00:00.010Z",
        "completedAt": "2026-12-02T10:00:00.090Z"
    }))
}

/// A 207: the batch ran, and refused its one input with `error`.
fn batch_refusal(error: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(207).set_body_json(json!({
        "status": "COMPLETE", "results": [], "numErrors": 1, "errors": [error],
        "startedAt": "2026-12-02T10:00:00.010Z", "completedAt": "2026-12-02T10:00:00.090Z"
    }))
}

async fn upsert_hubspot() -> Vendor {
    hubspot_with(&[("external_id_property", "crm_ref")]).await
}

#[tokio::test]
async fn upsert_is_one_batch_upsert_keyed_by_the_external_id_property() {
    for (new, id) in [(false, "901"), (true, "902")] {
        let hs = upsert_hubspot().await;
        Mock::given(method("POST"))
            .and(path(BATCH_UPSERT))
            .and(header(
                "authorization",
                format!("Bearer {PRIVATE_APP_TOKEN}").as_str(),
            ))
            .and(body_json(batch_upsert_body()))
            .respond_with(batch_answer(id, new))
            .expect(1)
            .mount(&hs.upstream)
            .await;
        let output = hs
            .call("upsert-contact", upsert_input())
            .await
            .expect("upserted");
        assert_eq!(output["created"], new);
        assert_eq!(output["contact"]["id"], id);
        assert_eq!(output["contact"]["email"], "grace@navy.example");
        // One atomic request: no search that could lag, no separate create.
        let sent = hs.upstream.received_requests().await.expect("recording");
        assert_eq!(sent.len(), 1, "{sent:?}");
    }
}

#[tokio::test]
async fn a_conflict_on_the_email_updates_the_contact_holding_it_instead_of_duplicating() {
    // The shapes HubSpot refuses a duplicate email with: two 409 bodies, and
    // a refused input inside a batch's 207.
    let conflict = json!({
        "status": "error", "message": "Contact already exists. Existing ID: 37765128953",
        "correlationId": "8f0f4b44-5b2b-4b65-9c3c-2b8a11aeb5b6", "category": "CONFLICT"
    });
    let answers = [
        ResponseTemplate::new(409).set_body_json(conflict.clone()),
        ResponseTemplate::new(409).set_body_json(json!({
            "status": "error", "message": "Contact already exists",
            "correlationId": "8f0f4b44-5b2b-4b65-9c3c-2b8a11aeb5b6", "category": "OBJECT_ALREADY_EXISTS",
            "error": "CONTACT_EXISTS",
            "errors": [{ "message": "A contact with email grace@navy.example already exists. Existing ID: 37765128953", "in": "email" }]
        })),
        batch_refusal(conflict),
    ];
    for answer in answers {
        let hs = upsert_hubspot().await;
        Mock::given(method("POST"))
            .and(path(BATCH_UPSERT))
            .respond_with(answer)
            .expect(1)
            .mount(&hs.upstream)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{CONTACTS}/37765128953")))
            .and(wiremock::matchers::query_param("properties", "crm_ref"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "37765128953", "properties": { "crm_ref": null, "hs_object_id": "37765128953" },
                "archived": false
            })))
            .expect(1)
            .mount(&hs.upstream)
            .await;
        Mock::given(method("PATCH"))
            .and(path(format!("{CONTACTS}/37765128953")))
            .and(body_json(written_properties()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(contact_object("37765128953", "grace@navy.example")),
            )
            .expect(1)
            .mount(&hs.upstream)
            .await;
        let output = hs
            .call("upsert-contact", upsert_input())
            .await
            .expect("upserted");
        assert_eq!(
            (output["created"].clone(), output["contact"]["id"].clone()),
            (json!(false), json!("37765128953"))
        );
    }
}

#[tokio::test]
async fn a_refusal_without_an_existing_id_is_an_upstream_error_and_nothing_is_updated() {
    let cases = [
        (
            hubspot_error(409, "CONFLICT", "A conflicting write is in progress"),
            409,
            "CONFLICT",
        ),
        // A property that does not hold unique values cannot key an upsert.
        (
            batch_refusal(json!({
                "status": "error", "category": "VALIDATION_ERROR",
                "message": "crm_ref is not a unique property", "context": {}
            })),
            400,
            "crm_ref is not a unique property",
        ),
        (
            batch_refusal(json!({
                "status": "error", "category": "CONFLICT", "message": "a concurrent write won"
            })),
            409,
            "a concurrent write won",
        ),
    ];
    for (answer, status, text) in cases {
        let hs = upsert_hubspot().await;
        Mock::given(method("POST"))
            .and(path(BATCH_UPSERT))
            .respond_with(answer)
            .mount(&hs.upstream)
            .await;
        match hs.call("upsert-contact", upsert_input()).await {
            Err(InvokeError::Plugin(PluginFailure::Upstream {
                status: got,
                message,
            })) => {
                assert_eq!(got, status, "{message}");
                assert!(message.contains(text), "{message}");
            }
            other => panic!("expected an upstream {status}, got {other:?}"),
        }
        let sent = hs.upstream.received_requests().await.expect("recording");
        assert_eq!(sent.len(), 1, "nothing else is sent: {sent:?}");
    }
}

#[tokio::test]
async fn log_call_creates_a_call_engagement_associated_with_the_contact() {
    let hs = hubspot().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/calls"))
        .and(header("authorization", format!("Bearer {PRIVATE_APP_TOKEN}").as_str()))
        .and(body_json(json!({
            "properties": {
                "hs_timestamp": "2026-12-02T09:15:00Z",
                "hs_call_direction": "INBOUND",
                "hs_call_duration": "184000",
                "hs_call_title": "Billing question",
                "hs_call_body": "Asked about invoice in_123; resolved.",
                "hs_call_from_number": "+15551234567",
                "hs_call_to_number": "+15557654321",
                "hs_call_status": "NO_ANSWER",
                "hs_call_recording_url": "https://recordings.example/abc.mp3"
            },
            "associations": [{
                "to": { "id": "512" },
                "types": [{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194 }]
            }]
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "28921",
            "properties": {
                "hs_call_direction": "INBOUND", "hs_call_duration": "184000", "hs_timestamp": "2026-12-02T09:15:00Z",
                "hs_createdate": "2026-12-02T09:20:00.000Z", "hs_object_id": "28921"
            },
            "createdAt": "2026-12-02T09:20:00.000Z", "updatedAt": "2026-12-02T09:20:00.000Z", "archived": false
        })))
        .expect(1)
        .mount(&hs.upstream)
        .await;
    let output = hs
        .call(
            "log-call",
            json!({
                "contact_id": "512", "direction": "inbound", "started_at": "2026-12-02T09:15:00Z",
                "duration_seconds": 184, "title": "Billing question",
                "notes": "Asked about invoice in_123; resolved.", "from_number": "+15551234567",
                "to_number": "+15557654321", "status": "no_answer",
                "recording_url": "https://recordings.example/abc.mp3"
            }),
        )
        .await
        .expect("logged");
    assert_eq!(
        output,
        json!({ "id": "28921", "source": "hubspot", "contact_id": "512" })
    );
}

#[tokio::test]
async fn log_call_on_a_missing_contact_is_not_found() {
    let hs = hubspot().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/calls"))
        .respond_with(hubspot_error(
            404,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
        ))
        .mount(&hs.upstream)
        .await;
    let outcome = hs
        .call("log-call", json!({ "contact_id": "999", "direction": "outbound", "started_at": "2026-12-02T09:15:00+01:00" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn write_input_that_breaks_the_schema_never_reaches_hubspot() {
    let hs = hubspot().await;
    hs
        .assert_schema_refuses(&[
        ("upsert-contact", json!({ "contact": {} })),
        (
            "upsert-contact",
            json!({ "external_id": "x", "contact": { "attributes": { "Bad Name": "1" } } }),
        ),
        (
            "upsert-contact",
            json!({ "external_id": "x", "contact": { "ssn": "1" } }),
        ),
        (
            "log-call",
            json!({ "contact_id": "12/../../owners", "direction": "inbound", "started_at": "2026-12-02T09:15:00Z" }),
        ),
        (
            "log-call",
            json!({ "contact_id": "12", "direction": "sideways", "started_at": "2026-12-02T09:15:00Z" }),
        ),
        (
            "log-call",
            json!({ "contact_id": "12", "direction": "inbound", "started_at": "yesterday" }),
        ),
        (
            "log-call",
            json!({ "contact_id": "12", "direction": "inbound", "started_at": "2026-12-02T09:15:00Z", "recording_url": "http://plain.example" }),
        ),
        ])
        .await;
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_upstream() {
    let hs = hubspot().await;
    for input in [
        json!({}),
        json!({ "phone": "1", "email": "a@b.c" }),
        json!({ "phone": 5 }),
        json!({ "fax": "1" }),
    ] {
        let outcome = hs.call("find-contact", input.clone()).await;
        assert!(
            matches!(outcome, Err(InvokeError::InvalidInput(_))),
            "{input}: {:?}",
            outcome
        );
    }
    assert!(
        hs.upstream
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn a_conflict_with_a_contact_of_another_external_id_changes_nothing() {
    let hs = upsert_hubspot().await;
    Mock::given(method("POST"))
        .and(path(BATCH_UPSERT))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "status": "error", "message": "Contact already exists. Existing ID: 4242",
            "correlationId": "8f0f4b44-5b2b-4b65-9c3c-2b8a11aeb5b6", "category": "CONFLICT"
        })))
        .mount(&hs.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{CONTACTS}/4242")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "4242", "properties": { "crm_ref": "ERP-99" }, "archived": false
        })))
        .mount(&hs.upstream)
        .await;
    match hs.call("upsert-contact", upsert_input()).await {
        Err(InvokeError::Plugin(PluginFailure::Upstream {
            status: 409,
            message,
        })) => {
            assert!(
                message.contains("ERP-99") && message.contains("nothing was changed"),
                "{message}"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        hs.requests("PATCH", &format!("{CONTACTS}/4242"))
            .await
            .is_empty()
    );
}
