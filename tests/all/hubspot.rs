//! The HubSpot connector against a HubSpot-shaped mock on loopback.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, plugins::HUBSPOT};
use serde_json::json;
use wiremock::matchers::{body_json, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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

async fn setup() -> (
    Harness,
    MockServer,
    std::sync::Arc<patchbay::runtime::LoadedPlugin>,
    patchbay::runtime::Binding,
) {
    let harness = Harness::new();
    let upstream = MockServer::start().await;
    let plugin = harness.install(HUBSPOT).await;
    let binding = harness.binding(
        &plugin,
        "ws-1",
        "hubspot-main",
        &[("base_url", &upstream.uri())],
    );
    harness
        .set_credential(
            "hubspot-main",
            "private_app_token",
            Secret::Bearer {
                token: PRIVATE_APP_TOKEN.into(),
            },
        )
        .await;
    (harness, upstream, plugin, binding)
}

#[tokio::test]
async fn finds_a_contact_by_phone_with_the_crm_v3_search_shape() {
    let (harness, upstream, plugin, binding) = setup().await;
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
        .mount(&upstream)
        .await;

    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "find-contact",
            json!({ "phone": " +15551234 " }),
        )
        .await;
    assert_eq!(
        outcome.result.expect("contact"),
        json!({
            "id": "512", "source": "hubspot", "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.com", "phone": "+15551234", "company": "Analytical Engines",
            "updated_at": "2026-10-01T10:00:00.123Z"
        })
    );
}

#[tokio::test]
async fn finds_a_contact_by_email_case_insensitively() {
    let (harness, upstream, plugin, binding) = setup().await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .and(body_json(search_body(json!([
            { "filters": [{ "propertyName": "email", "operator": "EQ", "value": "ada@example.com" }] },
        ]))))
        .respond_with(ResponseTemplate::new(200).set_body_json(ada()))
        .expect(1)
        .mount(&upstream)
        .await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "find-contact",
            json!({ "email": "Ada@Example.com" }),
        )
        .await;
    assert_eq!(outcome.result.expect("contact")["id"], "512");
}

#[tokio::test]
async fn no_match_is_not_found() {
    let (harness, upstream, plugin, binding) = setup().await;
    Mock::given(method("POST"))
        .and(path(SEARCH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "total": 0, "results": [] })),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "find-contact",
            json!({ "phone": "+10000000" }),
        )
        .await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
        ),
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
async fn upstream_errors_become_typed_errors() {
    let cases = [
        (
            ResponseTemplate::new(500).set_body_string("oops"),
            "upstream",
        ),
        (ResponseTemplate::new(401), "unauthorized"),
        (
            ResponseTemplate::new(429).insert_header("retry-after", "3"),
            "rate-limited",
        ),
        (
            ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
            "bad-json",
        ),
    ];
    for (response, case) in cases {
        let (harness, upstream, plugin, binding) = setup().await;
        Mock::given(method("POST"))
            .and(path(SEARCH))
            .respond_with(response)
            .expect(1)
            .mount(&upstream)
            .await;
        let outcome = harness
            .invoke(
                &plugin,
                &binding,
                "find-contact",
                json!({ "phone": "+1555" }),
            )
            .await;
        let failure = match outcome.result {
            Err(InvokeError::Plugin(failure)) => failure,
            other => panic!("{case}: expected a plugin error, got {other:?}"),
        };
        match (case, failure) {
            ("upstream", PluginFailure::Upstream { status: 500, .. }) => {}
            ("unauthorized", PluginFailure::Unauthorized { .. }) => {}
            (
                "rate-limited",
                PluginFailure::RateLimited {
                    retry_after_ms: 3000,
                },
            ) => {}
            ("bad-json", PluginFailure::Upstream { status: 200, .. }) => {}
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_upstream() {
    let (harness, upstream, plugin, binding) = setup().await;
    for input in [
        json!({}),
        json!({ "phone": "1", "email": "a@b.c" }),
        json!({ "phone": 5 }),
        json!({ "fax": "1" }),
    ] {
        let outcome = harness
            .invoke(&plugin, &binding, "find-contact", input.clone())
            .await;
        assert!(
            matches!(outcome.result, Err(InvokeError::InvalidInput(_))),
            "{input}: {:?}",
            outcome.result
        );
    }
    assert!(
        upstream
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}
