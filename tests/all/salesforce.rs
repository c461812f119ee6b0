//! The Salesforce connector against a mock org on loopback that answers
//! with Salesforce's shapes: the client-credentials token endpoint on the My
//! Domain, SOQL query results, upsert answers (201, 200, 300, 404), Task
//! creation, and error bodies as arrays of `{message, errorCode}`.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Vendor, plugins::SALESFORCE, query_value};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{body_json, body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

const TOKEN: &str = "00Dxx0000001gPL!AQ4AQFlk3j2EXAMPLEACCESSTOKEN";
const QUERY: &str = "/services/data/v67.0/query";
const TASKS: &str = "/services/data/v67.0/sobjects/Task";
/// `base64("3MVG9consumer-key:consumer-secret-42")`.
const BASIC: &str = "Basic M01WRzljb25zdW1lci1rZXk6Y29uc3VtZXItc2VjcmV0LTQy";

async fn org(config: &[(&str, &str)]) -> Vendor {
    let app = Secret::Oauth2ClientCredentials {
        client_id: "3MVG9consumer-key".into(),
        client_secret: "consumer-secret-42".into(),
    };
    let org = Vendor::start_at(
        "instance_url",
        SALESFORCE,
        "salesforce-main",
        ("connected_app", app),
        config,
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .and(header("authorization", BASIC))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token_answer(&org.upstream.uri(), TOKEN))
        .mount(&org.upstream)
        .await;
    org
}

/// Salesforce's token answer: no `expires_in`, no refresh token, `issued_at`
/// in milliseconds as a string.
fn token_answer(instance: &str, access: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access,
        "signature": "ZS0HAP2tEXAMPLEsignature=",
        "scope": "api",
        "instance_url": instance,
        "id": format!("{instance}/id/00Dxx0000001gPLEAY/005xx000001Sv6AAAS"),
        "token_type": "Bearer",
        "issued_at": "1764669600000",
        "api_instance_url": "https://api.salesforce.com"
    }))
}

fn query_answer(records: Vec<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("sforce-limit-info", "api-usage=25/15000")
        .set_body_json(json!({ "totalSize": records.len(), "done": true, "records": records }))
}

fn contact_record(id: &str) -> Value {
    json!({
        "attributes": { "type": "Contact", "url": format!("/services/data/v67.0/sobjects/Contact/{id}") },
        "Id": id, "FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com",
        "Phone": null, "MobilePhone": "+15551234567",
        "Account": { "attributes": { "type": "Account", "url": "/services/data/v67.0/sobjects/Account/001xx000003DGb2AAG" }, "Name": "Analytical Engines" },
        "LastModifiedDate": "2026-10-01T10:00:00.000+0000"
    })
}

/// Salesforce's error body: an array of `{message, errorCode, fields}`.
fn sf_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!([{ "message": message, "errorCode": code, "fields": [] }]))
}

async fn answer_queries(org: &Vendor, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(response)
        .mount(&org.upstream)
        .await;
}

fn soql_sent(org_requests: &[wiremock::Request]) -> Vec<String> {
    org_requests
        .iter()
        .map(|r| query_value(r, "q").unwrap_or_default())
        .collect()
}

const FIELDS: &str =
    "Id, FirstName, LastName, Email, Phone, MobilePhone, Account.Name, LastModifiedDate";

#[tokio::test]
async fn finds_a_contact_by_phone_with_a_token_from_the_my_domain() {
    let org = org(&[]).await;
    answer_queries(
        &org,
        query_answer(vec![contact_record("003xx000004TmiQAAS")]),
    )
    .await;
    let output = org
        .call("find-contact", json!({ "phone": " +15551234567 " }))
        .await
        .expect("contact");
    assert_eq!(
        output,
        json!({
            "id": "003xx000004TmiQAAS", "source": "salesforce", "first_name": "Ada",
            "last_name": "Lovelace", "email": "ada@example.com", "phone": "+15551234567",
            "company": "Analytical Engines", "updated_at": "2026-10-01T10:00:00.000Z"
        })
    );
    assert_eq!(
        soql_sent(&org.requests("GET", QUERY).await),
        [format!(
            "SELECT {FIELDS} FROM Contact WHERE Phone = '+15551234567' OR MobilePhone = '+15551234567' ORDER BY LastModifiedDate DESC LIMIT 1"
        )]
    );
    // One token, fetched by the host from the org's own domain, reused.
    org.call("find-contact", json!({ "email": "ada@example.com" }))
        .await
        .expect("contact");
    assert_eq!(
        org.requests("POST", "/services/oauth2/token").await.len(),
        1
    );
}

#[tokio::test]
async fn salesforce_offsets_become_rfc_3339_ones() {
    for (sent, shown) in [
        ("2026-10-01T10:00:00.000+0000", "2026-10-01T10:00:00.000Z"),
        (
            "2026-10-01T02:00:00.000-0800",
            "2026-10-01T02:00:00.000-08:00",
        ),
        (
            "2026-10-01T15:30:00.000+0530",
            "2026-10-01T15:30:00.000+05:30",
        ),
        // Already RFC 3339, or not a time at all: left as it came.
        ("2026-10-01T10:00:00Z", "2026-10-01T10:00:00Z"),
        ("soon", "soon"),
    ] {
        let org = org(&[]).await;
        let mut record = contact_record("003xx000004TmiQAAS");
        record["LastModifiedDate"] = json!(sent);
        answer_queries(&org, query_answer(vec![record])).await;
        let output = org
            .call("find-contact", json!({ "email": "ada@example.com" }))
            .await
            .expect("contact");
        assert_eq!(output["updated_at"], shown, "{sent}");
    }
}

#[tokio::test]
async fn values_stay_data_in_soql_whatever_they_hold() {
    let org = org(&[]).await;
    answer_queries(&org, query_answer(vec![])).await;
    let attacks = [
        ("' OR Name != '", r"'\' OR Name != \''"),
        (
            r"a\' OR Id != null OR Email = '",
            r"'a\\\' OR Id != null OR Email = \''",
        ),
        ("x\" OR \"", r#"'x\" OR \"'"#),
        ("line\nbreak@example.com", r"'line\nbreak@example.com'"),
    ];
    for (email, _) in attacks {
        let outcome = org.call("find-contact", json!({ "email": email })).await;
        assert!(
            matches!(
                outcome,
                Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
            ),
            "{email:?}: {outcome:?}"
        );
    }
    let expected: Vec<String> = attacks
        .iter()
        .map(|(_, literal)| {
            format!("SELECT {FIELDS} FROM Contact WHERE Email = {literal} ORDER BY LastModifiedDate DESC LIMIT 1")
        })
        .collect();
    assert_eq!(soql_sent(&org.requests("GET", QUERY).await), expected);
    // A control character SOQL has no escape for is refused before anything is sent.
    let outcome = org
        .call("find-contact", json!({ "email": "a\u{1}b@example.com" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::InvalidInput { .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(org.requests("GET", QUERY).await.len(), attacks.len());
}

fn upsert_input() -> Value {
    json!({
        "external_id": "ERP 42",
        "contact": {
            "first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example",
            "attributes": { "Title": "Rear Admiral", "Preferred_Language__c": "en" }
        }
    })
}

async fn mount_upsert(org: &Vendor, response: ResponseTemplate) {
    Mock::given(method("PATCH"))
        .and(path(
            "/services/data/v67.0/sobjects/Contact/External_Id__c/ERP%2042",
        ))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "FirstName": "Grace", "LastName": "Hopper", "Email": "grace@navy.example",
            "Title": "Rear Admiral", "Preferred_Language__c": "en"
        })))
        .respond_with(response)
        .expect(1)
        .mount(&org.upstream)
        .await;
}

#[tokio::test]
async fn upsert_by_external_id_creates_then_updates() {
    for (status, created) in [(201, true), (200, false)] {
        let org = org(&[("external_id_field", "External_Id__c")]).await;
        mount_upsert(
            &org,
            ResponseTemplate::new(status).set_body_json(json!({
                "id": "003xx000004TmiRAAS", "success": true, "errors": [], "created": created
            })),
        )
        .await;
        let mut record = contact_record("003xx000004TmiRAAS");
        record["FirstName"] = json!("Grace");
        answer_queries(&org, query_answer(vec![record])).await;
        let output = org
            .call("upsert-contact", upsert_input())
            .await
            .expect("upserted");
        assert_eq!(output["created"], created, "{status}");
        assert_eq!(output["contact"]["id"], "003xx000004TmiRAAS");
        assert_eq!(output["contact"]["first_name"], "Grace");
        assert_eq!(
            soql_sent(&org.requests("GET", QUERY).await),
            [format!(
                "SELECT {FIELDS} FROM Contact WHERE Id = '003xx000004TmiRAAS' LIMIT 1"
            )]
        );
    }
}

#[tokio::test]
async fn an_update_answered_without_a_body_is_read_back_by_its_external_id() {
    // API versions before 46.0 answer an update with 204 and no id.
    let org = org(&[
        ("external_id_field", "External_Id__c"),
        ("api_version", "v67.0"),
    ])
    .await;
    mount_upsert(&org, ResponseTemplate::new(204)).await;
    answer_queries(
        &org,
        query_answer(vec![contact_record("003xx000004TmiRAAS")]),
    )
    .await;
    let output = org
        .call("upsert-contact", upsert_input())
        .await
        .expect("upserted");
    assert_eq!(output["created"], false);
    assert_eq!(
        soql_sent(&org.requests("GET", QUERY).await),
        [format!(
            "SELECT {FIELDS} FROM Contact WHERE External_Id__c = 'ERP 42' LIMIT 1"
        )]
    );
}

#[tokio::test]
async fn upsert_refusals_say_what_is_wrong() {
    let cases = [
        (
            "several",
            ResponseTemplate::new(300).set_body_json(json!([
                "/services/data/v67.0/sobjects/Contact/003xx000004TmiRAAS",
                "/services/data/v67.0/sobjects/Contact/003xx000004TmiSAAS"
            ])),
        ),
        (
            "not an external id",
            sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
        ),
        (
            "duplicate",
            sf_error(
                400,
                "DUPLICATE_VALUE",
                "duplicate value found: Email duplicates value on record with id: 003xx000004TmiSAAS",
            ),
        ),
    ];
    for (case, response) in cases {
        let org = org(&[("external_id_field", "External_Id__c")]).await;
        mount_upsert(&org, response).await;
        let failure = match org.call("upsert-contact", upsert_input()).await {
            Err(InvokeError::Plugin(failure)) => failure,
            other => panic!("{case}: expected a plugin error, got {other:?}"),
        };
        match (case, &failure) {
            (
                "several",
                PluginFailure::Upstream {
                    status: 300,
                    message,
                },
            ) => {
                assert!(
                    message.contains("several Contacts") && message.contains("nothing was written"),
                    "{message}"
                )
            }
            (
                "not an external id",
                PluginFailure::Upstream {
                    status: 404,
                    message,
                },
            ) => {
                assert!(
                    message.contains("external_id_field") && message.contains("NOT_FOUND"),
                    "{message}"
                )
            }
            (
                "duplicate",
                PluginFailure::Upstream {
                    status: 400,
                    message,
                },
            ) => {
                assert!(message.contains("DUPLICATE_VALUE"), "{message}")
            }
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn upsert_needs_the_external_id_field_setting() {
    let org = org(&[]).await;
    let outcome = org.call("upsert-contact", upsert_input()).await;
    match outcome {
        Err(InvokeError::Plugin(PluginFailure::InvalidInput { message })) => {
            assert!(message.contains("external_id_field"), "{message}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    assert!(
        org.requests(
            "PATCH",
            "/services/data/v67.0/sobjects/Contact/External_Id__c/ERP%2042"
        )
        .await
        .is_empty()
    );
}

fn call_input() -> Value {
    json!({
        "contact_id": "003xx000004TmiQAAS", "direction": "inbound",
        "started_at": "2026-12-02T09:15:00Z", "duration_seconds": 184,
        "subject": "Billing question", "notes": "Asked about invoice 123; resolved.",
        "disposition": "Resolved"
    })
}

#[tokio::test]
async fn log_call_creates_a_call_task_once_per_call_id() {
    let org = org(&[]).await;
    let lookup = "SELECT Id FROM Task WHERE CallObject = 'call-7f3a' AND WhoId = '003xx000004TmiQAAS' LIMIT 1";
    // The first lookup finds nothing; after the create, the Task is there.
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(query_answer(vec![]))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&org.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(query_answer(vec![json!({
            "attributes": { "type": "Task", "url": "/services/data/v67.0/sobjects/Task/00Txx000002ZqT1EAK" },
            "Id": "00Txx000002ZqT1EAK"
        })]))
        .with_priority(2)
        .mount(&org.upstream)
        .await;
    Mock::given(method("POST"))
        .and(path(TASKS))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "Subject": "Billing question", "WhoId": "003xx000004TmiQAAS", "TaskSubtype": "Call",
            "Status": "Completed", "CallType": "Inbound", "ActivityDate": "2026-12-02",
            "CallDurationInSeconds": 184, "Description": "Asked about invoice 123; resolved.",
            "CallDisposition": "Resolved", "CallObject": "call-7f3a"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "00Txx000002ZqT1EAK", "success": true, "errors": []
        })))
        .expect(1)
        .mount(&org.upstream)
        .await;
    for _ in 0..2 {
        let output = org
            .call_keyed("log-call", call_input(), Some("call-7f3a"))
            .await
            .expect("logged");
        assert_eq!(
            output,
            json!({ "id": "00Txx000002ZqT1EAK", "source": "salesforce", "contact_id": "003xx000004TmiQAAS" })
        );
    }
    assert_eq!(
        soql_sent(&org.requests("GET", QUERY).await),
        [lookup, lookup]
    );
}

#[tokio::test]
async fn log_call_without_a_call_id_creates_directly() {
    let org = org(&[]).await;
    Mock::given(method("POST"))
        .and(path(TASKS))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(
                json!({ "id": "00Txx000002ZqT2EAK", "success": true, "errors": [] }),
            ),
        )
        .expect(1)
        .mount(&org.upstream)
        .await;
    let mut input = call_input();
    input["direction"] = json!("outbound");
    input.as_object_mut().expect("object").remove("subject");
    let output = org.call("log-call", input).await.expect("logged");
    assert_eq!(output["id"], "00Txx000002ZqT2EAK");
    let sent: Value =
        serde_json::from_slice(&org.requests("POST", TASKS).await[0].body).expect("json");
    assert_eq!(
        (sent["Subject"].clone(), sent["CallType"].clone()),
        (json!("Outbound call"), json!("Outbound"))
    );
    assert!(sent.get("CallObject").is_none());
    assert!(org.requests("GET", QUERY).await.is_empty());
}

#[tokio::test]
async fn salesforces_errors_become_typed_errors() {
    let cases = [
        (
            "400",
            sf_error(400, "MALFORMED_QUERY", "unexpected token: OR"),
        ),
        (
            "401",
            sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
                .insert_header("www-authenticate", "Token"),
        ),
        (
            "403",
            sf_error(
                403,
                "INSUFFICIENT_ACCESS",
                "insufficient access rights on object id",
            ),
        ),
        (
            "403 daily limit",
            sf_error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            ),
        ),
        (
            "403 concurrency",
            sf_error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
            ),
        ),
        (
            "404",
            sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
        ),
        (
            "429",
            ResponseTemplate::new(429).insert_header("retry-after", "5"),
        ),
        (
            "500",
            sf_error(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
            ),
        ),
        (
            "503",
            ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        ),
        (
            "malformed",
            ResponseTemplate::new(200).set_body_string("{\"totalSize\":1,\"records\":["),
        ),
    ];
    for (case, response) in cases {
        let org = org(&[]).await;
        answer_queries(&org, response).await;
        let failure = org
            .failure("find-contact", json!({ "email": "ada@example.com" }), case)
            .await;
        match (case, &failure) {
            (
                "400",
                PluginFailure::Upstream {
                    status: 400,
                    message,
                },
            ) => {
                assert!(
                    message.contains("MALFORMED_QUERY: unexpected token"),
                    "{message}"
                )
            }
            ("401", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("INVALID_SESSION_ID"), "{message}")
            }
            ("403", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("INSUFFICIENT_ACCESS"), "{message}")
            }
            (
                "403 daily limit",
                PluginFailure::RateLimited {
                    retry_after_ms: 3_600_000,
                },
            ) => {}
            (
                "403 concurrency",
                PluginFailure::RateLimited {
                    retry_after_ms: 10_000,
                },
            ) => {}
            // The query resource always exists: the settings are wrong, not the record missing.
            (
                "404",
                PluginFailure::Upstream {
                    status: 404,
                    message,
                },
            ) => {
                assert!(
                    message.contains("api_version") && message.contains("NOT_FOUND"),
                    "{message}"
                )
            }
            (
                "429",
                PluginFailure::RateLimited {
                    retry_after_ms: 5000,
                },
            ) => {}
            (
                "500",
                PluginFailure::Upstream {
                    status: 500,
                    message,
                },
            ) => assert!(message.contains("UNKNOWN_EXCEPTION"), "{message}"),
            ("503", PluginFailure::Upstream { status: 503, .. }) => {}
            (
                "malformed",
                PluginFailure::Upstream {
                    status: 200,
                    message,
                },
            ) => assert!(message.contains("not the expected JSON"), "{message}"),
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn an_expired_session_gets_a_new_token_and_the_query_is_sent_again() {
    let org = org(&[]).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(sf_error(
            401,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&org.upstream)
        .await;
    answer_queries(
        &org,
        query_answer(vec![contact_record("003xx000004TmiQAAS")]),
    )
    .await;
    // The host drops the refused token, asks the My Domain for a new one and sends the query again.
    let output = org
        .call("find-contact", json!({ "email": "ada@example.com" }))
        .await
        .expect("found with a new token");
    assert_eq!(output["id"], "003xx000004TmiQAAS");
    assert_eq!(
        org.requests("POST", "/services/oauth2/token").await.len(),
        2
    );
    assert_eq!(org.requests("GET", QUERY).await.len(), 2);
}

#[tokio::test]
async fn a_refused_consumer_secret_never_reaches_the_api() {
    let app = Secret::Oauth2ClientCredentials {
        client_id: "3MVG9consumer-key".into(),
        client_secret: "wrong".into(),
    };
    let org = Vendor::start_at(
        "instance_url",
        SALESFORCE,
        "salesforce-main",
        ("connected_app", app),
        &[],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client", "error_description": "invalid client credentials"
        })))
        .mount(&org.upstream)
        .await;
    let outcome = org
        .call("find-contact", json!({ "email": "ada@example.com" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::Unauthorized { .. }))
        ),
        "{outcome:?}"
    );
    assert!(org.requests("GET", QUERY).await.is_empty());
}

#[tokio::test]
async fn a_slow_org_is_a_timeout() {
    let org = org(&[("request_timeout_ms", "300")]).await;
    answer_queries(&org, query_answer(vec![]).set_delay(Duration::from_secs(3))).await;
    let outcome = org
        .call("find-contact", json!({ "email": "ada@example.com" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::Timeout { .. }))
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_salesforce() {
    let org = org(&[("external_id_field", "External_Id__c")]).await;
    org
        .assert_schema_refuses(&[
        ("find-contact", json!({})),
        ("find-contact", json!({ "email": "a@b.c", "phone": "1" })),
        (
            "upsert-contact",
            json!({ "external_id": "x", "contact": { "attributes": { "Name; DROP": "x" } } }),
        ),
        (
            "upsert-contact",
            json!({ "external_id": "x", "contact": { "company": "Acme" } }),
        ),
        (
            "log-call",
            json!({ "contact_id": "003' OR Id != '", "direction": "inbound", "started_at": "2026-12-02T09:15:00Z" }),
        ),
        (
            "log-call",
            json!({ "contact_id": "003xx000004TmiQAAS", "direction": "sideways", "started_at": "2026-12-02T09:15:00Z" }),
        ),
        ])
        .await;
}

#[tokio::test]
async fn an_external_id_is_one_path_segment_whatever_it_holds() {
    let org = org(&[("external_id_field", "External_Id__c")]).await;
    // A slash is refused (Salesforce does not match it even encoded); nothing is sent.
    for refused in ["a/b", "../Account/001", "/"] {
        let input = json!({ "external_id": refused, "contact": { "last_name": "Hopper" } });
        let failure = org.failure("upsert-contact", input, refused).await;
        assert!(
            matches!(failure, PluginFailure::InvalidInput { .. }),
            "{refused}: {failure:?}"
        );
    }
    assert!(
        org.upstream
            .received_requests()
            .await
            .expect("r")
            .is_empty()
    );
    // Everything else is percent-encoded into the one segment.
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "003xx000004TmiRAAS", "success": true, "errors": []
        })))
        .mount(&org.upstream)
        .await;
    answer_queries(
        &org,
        query_answer(vec![contact_record("003xx000004TmiRAAS")]),
    )
    .await;
    for (value, segment) in [
        ("ERP?x=1#y", "ERP%3Fx%3D1%23y"),
        ("100%", "100%25"),
        ("é ü", "%C3%A9%20%C3%BC"),
        ("a\\b..", "a%5Cb.."),
    ] {
        let input = json!({ "external_id": value, "contact": { "last_name": "Hopper" } });
        org.call("upsert-contact", input).await.expect(value);
        let sent = org.upstream.received_requests().await.expect("r");
        let last = sent
            .iter()
            .rev()
            .find(|r| r.method.as_str() == "PATCH")
            .expect("patch");
        assert_eq!(
            last.url.path(),
            format!("/services/data/v67.0/sobjects/Contact/External_Id__c/{segment}"),
            "{value}"
        );
    }
}
