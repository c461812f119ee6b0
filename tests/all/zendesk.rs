//! The Zendesk connector against a loopback mock of the Support API
//! (the request and error shapes of developer.zendesk.com, cited in the
//! plugin's README), and its webhook verification through the host, with
//! the signing secret held by the host.

use base64::Engine as _;
use hmac::Mac as _;
use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

const EMAIL_TOKEN: (&str, &str) = ("agent@example.com/token", "zd-api-token-1234567890");

async fn zendesk() -> Vendor {
    Vendor::start(
        plugins::ZENDESK,
        "desk",
        (
            "api_token",
            Secret::Basic {
                username: EMAIL_TOKEN.0.into(),
                password: EMAIL_TOKEN.1.to_owned().into(),
            },
        ),
        &[],
    )
    .await
}

/// Zendesk's answer to a ticket create or update.
fn ticket(id: u64, status: &str) -> Value {
    json!({ "ticket": {
        "id": id, "url": format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"),
        "status": status, "subject": "Caller asked for a refund", "priority": "high",
        "requester_id": 20978392, "tags": ["voice"], "created_at": "2026-12-02T10:00:00Z"
    }, "audit": { "id": 1, "events": [] } })
}

#[tokio::test]
async fn create_ticket_sends_zendesks_shape_with_the_key_and_creates_once_per_key() {
    let vendor = zendesk().await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", EMAIL_TOKEN.0, EMAIL_TOKEN.1))
    );
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets"))
        .and(header("authorization", basic.as_str()))
        .and(header("idempotency-key", "evt-1:zendesk"))
        .and(body_json(json!({ "ticket": {
            "subject": "Caller asked for a refund",
            "comment": { "body": "Order 1234 arrived broken.", "public": false },
            "requester": { "name": "Ada Lovelace", "email": "ada@example.com" },
            "priority": "high", "tags": ["voice"]
        }})))
        .respond_with(ResponseTemplate::new(201).set_body_json(ticket(35436, "new")))
        .expect(1)
        .mount(&vendor.upstream)
        .await;
    let input = json!({
        "subject": "Caller asked for a refund", "comment": "Order 1234 arrived broken.",
        "public": false, "requester": { "name": "Ada Lovelace", "email": "ada@example.com" },
        "priority": "high", "tags": ["voice"]
    });
    for _ in 0..2 {
        let created = vendor
            .call_keyed("create-ticket", input.clone(), Some("evt-1:zendesk"))
            .await
            .expect("created");
        assert_eq!(
            created,
            json!({ "id": "35436", "source": "zendesk", "status": "new",
                "url": "https://acme.zendesk.com/api/v2/tickets/35436.json" })
        );
    }
    // `expect(1)`: the retried call answered from what the first one did.
}

#[tokio::test]
async fn update_ticket_puts_a_private_comment_once_per_key() {
    let vendor = zendesk().await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/35436"))
        .and(body_json(json!({ "ticket": {
            "status": "solved",
            "comment": { "body": "Refund issued on the call.", "public": false },
            "additional_tags": ["refund"]
        }})))
        .respond_with(ResponseTemplate::new(200).set_body_json(ticket(35436, "solved")))
        .expect(1)
        .mount(&vendor.upstream)
        .await;
    let input = json!({ "ticket_id": "35436", "status": "solved",
        "comment": "Refund issued on the call.", "add_tags": ["refund"] });
    for _ in 0..2 {
        let updated = vendor
            .call_keyed("update-ticket", input.clone(), Some("evt-2:zendesk"))
            .await
            .expect("updated");
        assert_eq!(updated["status"], "solved");
    }
    let fresh = zendesk().await;
    fresh
        .assert_schema_refuses(&[
            ("update-ticket", json!({ "ticket_id": "35436" })),
            (
                "update-ticket",
                json!({ "ticket_id": "../users", "status": "open" }),
            ),
            ("create-ticket", json!({ "subject": "s" })),
            (
                "create-ticket",
                json!({ "subject": "s", "comment": "c", "requester_id": "1",
            "requester": { "email": "a@b.c" } }),
            ),
        ])
        .await;
}

#[tokio::test]
async fn zendesks_errors_map_to_the_right_variant() {
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (
            ResponseTemplate::new(404).set_body_json(json!({ "error": "RecordNotFound", "description": "Not found" })),
            "not-found",
        ),
        (
            ResponseTemplate::new(422).set_body_json(json!({ "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": { "status": [{ "description": "Status: closed prevents ticket update" }] } })),
            "invalid-input",
        ),
        (
            ResponseTemplate::new(401).set_body_json(json!({ "error": "Couldn't authenticate you" })),
            "upstream-unauthorized",
        ),
        (
            ResponseTemplate::new(403).set_body_json(json!({ "error": "Forbidden", "description": "You do not have access to this page." })),
            "upstream-unauthorized",
        ),
        (
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            "rate-limited",
        ),
        (ResponseTemplate::new(503), "upstream"),
        (ResponseTemplate::new(200).set_body_string("{not json"), "upstream"),
        (
            ResponseTemplate::new(200).set_delay(Duration::from_secs(3)).set_body_json(ticket(1, "open")),
            "timeout",
        ),
    ];
    for (answer, expected) in cases {
        let vendor = Vendor::start(
            plugins::ZENDESK,
            "desk",
            (
                "api_token",
                Secret::Basic {
                    username: "u/token".into(),
                    password: "p".to_owned().into(),
                },
            ),
            &[("request_timeout_ms", "500")],
        )
        .await;
        Mock::given(method("PUT"))
            .and(path("/api/v2/tickets/7"))
            .respond_with(answer)
            .mount(&vendor.upstream)
            .await;
        let result = vendor
            .call(
                "update-ticket",
                json!({ "ticket_id": "7", "status": "open" }),
            )
            .await;
        let code = match &result {
            Err(e) => e.code(),
            Ok(v) => panic!("{expected}: {v}"),
        };
        assert_eq!(code, expected, "{result:?}");
        match (expected, &result) {
            (
                "rate-limited",
                Err(InvokeError::Plugin(PluginFailure::RateLimited { retry_after_ms })),
            ) => {
                assert_eq!(*retry_after_ms, 7000)
            }
            ("invalid-input", Err(e)) => assert!(e.to_string().contains("closed prevents"), "{e}"),
            ("not-found", Err(e)) => assert!(e.to_string().contains("RecordNotFound"), "{e}"),
            _ => {}
        }
    }
}

// ---- webhooks, through the API ----

pub(crate) const SIGNING_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";

/// Zendesk's scheme: base64(HMAC-SHA256(secret, timestamp + body)).
pub(crate) fn zendesk_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) fn rfc3339(secs_from_now: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = now + secs_from_now;
    let (days, rem) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A ticket status change as Zendesk's event webhooks send it.
pub(crate) fn status_changed(event_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "zen:event-type:ticket.status_changed",
        "account_id": 12514403,
        "id": event_id,
        "time": "2026-12-02T10:12:07Z",
        "zendesk_event_version": "2022-11-06",
        "subject": "zen:ticket:35436",
        "detail": {
            "actor_id": "8447388090494", "assignee_id": "8447388090494", "brand_id": "8447346621310",
            "created_at": "2026-12-01T09:00:00Z", "description": "Order 1234 arrived broken.",
            "external_id": "", "form_id": "8447325312126", "group_id": "8447320466430",
            "id": "35436", "is_public": true, "organization_id": "", "priority": "HIGH",
            "requester_id": "20978392", "status": "SOLVED", "subject": "Refund",
            "submitter_id": "20978392", "tags": ["voice"], "type": "INCIDENT",
            "updated_at": "2026-12-02T10:12:07Z", "via": { "channel": "web_service" }
        },
        "event": { "current": "SOLVED", "previous": "OPEN" }
    }))
    .expect("json")
}

struct Desk {
    harness: Harness,
    base: String,
    crm: wiremock::MockServer,
}

/// Workspace `ws-1` with a Zendesk connection `desk` (its signing secret set
/// through the API) and a subscription sending `case.*` to the probe's
/// `deliver` on connection `crm`.
async fn desk() -> Desk {
    let harness = Harness::new();
    harness.ensure(plugins::ZENDESK).await;
    harness.ensure(plugins::PROBE).await;
    let base = harness.serve_api().await;
    assert_eq!(create_workspace(&base, "ws-1").await.0, 201);
    let crm = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&crm)
        .await;
    let call = |m: &'static str, p: String, b: Value| {
        let base = base.clone();
        async move { operator_call(&base, m, &format!("/v1/workspaces/ws-1{p}"), Some(b)).await }
    };
    for (name, body) in [
        (
            "desk",
            json!({ "plugin": "zendesk", "config": { "base_url": "https://acme.zendesk.com" },
            "grants": { "approve_all_requested": true } }),
        ),
        (
            "crm",
            json!({ "plugin": "probe", "config": { "upstream": crm.uri() },
            "grants": { "approve_all_requested": true } }),
        ),
    ] {
        let (status, answer) = call("PUT", format!("/connections/{name}"), body).await;
        assert!(status == 200 || status == 201, "{status} {answer}");
    }
    let (status, answer) = call(
        "PUT",
        "/connections/desk/credentials/webhook_signing_secret".into(),
        json!({ "kind": "webhook_secret", "value": SIGNING_SECRET }),
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = call(
        "PUT",
        "/subscriptions/cases-to-crm".into(),
        json!({ "types": ["case.*"], "destination": { "connection": "crm", "operation": "deliver" } }),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    Desk { harness, base, crm }
}

impl Desk {
    /// `body` signed now (plus `secs_from_now`) with the connection's secret.
    async fn send_signed(&self, secs_from_now: i64, body: &[u8]) -> (u16, Value) {
        let timestamp = rfc3339(secs_from_now);
        let signature = zendesk_signature(SIGNING_SECRET, &timestamp, body);
        self.send(&timestamp, &signature, body).await
    }

    async fn send(&self, timestamp: &str, signature: &str, body: &[u8]) -> (u16, Value) {
        let response = plain_http_client()
            .post(format!("{}/v1/hooks/ws-1/desk", self.base))
            .header("content-type", "application/json")
            .header("x-zendesk-webhook-id", "01GK8E6BKWMJZD2T8Y5AXJQMG5")
            .header("x-zendesk-webhook-invocation-id", "8350205582")
            .header("x-zendesk-webhook-signature", signature)
            .header("x-zendesk-webhook-signature-timestamp", timestamp)
            .body(body.to_vec())
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn delivered(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let got: Vec<Value> = self
                .crm
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
                .collect();
            if got.len() >= n || Instant::now() > until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_signed_ticket_event_becomes_a_case_event_for_the_crm() {
    let desk = desk().await;
    let body = status_changed("01HNZ6Q4K3EXAMPLE");
    let (status, answer) = desk.send_signed(0, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["webhook_id"], "01HNZ6Q4K3EXAMPLE");
    assert_eq!(answer["events"][0]["id"], "desk:01HNZ6Q4K3EXAMPLE");
    let delivered = desk.delivered(1).await;
    assert_eq!(
        delivered.len(),
        1,
        "the case event reached the CRM connection"
    );
    let event = &delivered[0];
    assert_eq!(event["type"], "case.updated");
    assert_eq!(event["subject"], "zen:ticket:35436");
    assert_eq!(event["occurred_at"], "2026-12-02T10:12:07Z");
    assert_eq!(event["data"]["case_id"], "35436");
    assert_eq!(event["data"]["status"], "solved");
    assert_eq!(event["data"]["priority"], "high");
    assert_eq!(event["data"]["change"], "status_changed");
    assert_eq!(
        event["data"]["event"],
        json!({ "current": "SOLVED", "previous": "OPEN" })
    );
    // Zendesk's retry of the same event: a duplicate, nothing new.
    let (status, answer) = desk.send_signed(1, &body).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
}

#[tokio::test]
async fn forged_or_stale_zendesk_signatures_are_refused_and_both_documented_orders_taken() {
    let desk = desk().await;
    let body = status_changed("01HNZ6Q4K3FORGED");
    let now = rfc3339(0);
    let old = rfc3339(-301);
    let ahead = rfc3339(301);
    // Body then timestamp (the event-connector guide's worked example) is
    // accepted too; with the wrong secret it is refused like any other.
    let other = status_changed("01HNZ6Q4K3REORDERED");
    let reordered = {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("key");
        mac.update(&other);
        mac.update(now.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    for (case, timestamp, signature) in [
        (
            "another secret",
            now.clone(),
            zendesk_signature("guessed", &now, &body),
        ),
        (
            "301 s old",
            old.clone(),
            zendesk_signature(SIGNING_SECRET, &old, &body),
        ),
        (
            "301 s ahead",
            ahead.clone(),
            zendesk_signature(SIGNING_SECRET, &ahead, &body),
        ),
        ("not base64", now.clone(), "%%%".to_owned()),
    ] {
        let (status, answer) = desk.send(&timestamp, &signature, &body).await;
        assert_eq!(status, 401, "{case}: {answer}");
        assert_eq!(
            answer["message"], "the webhook could not be verified",
            "{case}"
        );
    }
    let (status, answer) = desk.send(&now, &reordered, &other).await;
    assert_eq!(status, 202, "body then timestamp: {answer}");
    let within = rfc3339(-299);
    let (status, answer) = desk
        .send(
            &within,
            &zendesk_signature(SIGNING_SECRET, &within, &body),
            &body,
        )
        .await;
    assert_eq!(status, 202, "299 s old is within the window: {answer}");
    // A trigger's body, written with the placeholders the README suggests.
    let trigger = br#"{"event":"updated","ticket":{"id":"35437","subject":"Refund","status":"Solved","priority":"-","requester_id":"20978392","updated_at":"2026-12-02T10:20:00Z"}}"#;
    let (status, answer) = desk
        .send(
            &now,
            &zendesk_signature(SIGNING_SECRET, &now, trigger),
            trigger,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let delivered = desk.delivered(3).await;
    let case = delivered
        .iter()
        .find(|e| e["data"]["case_id"] == "35437")
        .unwrap_or_else(|| panic!("the trigger's case was delivered: {delivered:?}"));
    assert_eq!(case["type"], "case.updated");
    assert_eq!(case["subject"], "zen:ticket:35437");
    assert_eq!(case["data"]["status"], "solved");
    assert!(
        case["data"].get("priority").is_none(),
        "`-` is no priority: {case}"
    );
    // A genuine event about something else (a user) becomes no event.
    let user = br#"{"type":"zen:event-type:user.active_changed","account_id":1,"id":"2b24ef10","time":"2026-12-02T10:00:00Z","subject":"zen:user:6596848315901","detail":{"id":"6596848315901"},"event":{"current":false,"previous":true}}"#;
    let (status, answer) = desk
        .send(&now, &zendesk_signature(SIGNING_SECRET, &now, user), user)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"], json!([]));
    assert!(
        desk.harness
            .data_files_containing(SIGNING_SECRET.as_bytes())
            .is_empty(),
        "the signing secret is sealed at rest"
    );
}
