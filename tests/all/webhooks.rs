//! Webhooks in over the API: `POST /v1/hooks/{ws}/{connection}` verifies
//! before it keeps anything, answers every refusal with the same bare 401,
//! refuses oversize bodies with 413, dedupes by webhook id, and feeds what
//! it takes into the event flow. The probe takes webhooks by the Standard
//! Webhooks scheme (the host verifies) or by its own (the plugin verifies
//! through `verify-hmac`; the secret stays with the host).

use patchbay::policy::webhook::{decode_secret, sign};
use patchbay_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A plugin-scheme secret (its text's bytes are the HMAC key).
const PLUGIN_SECRET: &str = "probe-signing-secret-do-not-log";

/// The probe taking Standard Webhooks, verified by the host.
fn standard_manifest(manifest: String) -> String {
    format!(
        "{manifest}\n[[capabilities.credentials]]\nname = \"signing\"\nkind = \"webhook_secret\"\n\
         [webhook]\nverify = \"standard-webhooks\"\nsecret = \"signing\"\n"
    )
}

/// The probe verifying webhooks itself (contract 0.1.1).
fn plugin_manifest(manifest: String) -> String {
    format!(
        "{}\n[[capabilities.credentials]]\nname = \"signing\"\nkind = \"webhook_secret\"\n\
         [webhook]\nverify = \"plugin\"\n",
        manifest.replace("contract = \"0.1.0\"", "contract = \"0.1.1\"")
    )
}

struct Hooks {
    harness: Harness,
    base: String,
    upstream: MockServer,
}

impl Hooks {
    async fn new(edit: fn(String) -> String, secret: &str) -> Self {
        Self::with(Harness::new(), edit, secret).await
    }

    async fn with(harness: Harness, edit: fn(String) -> String, secret: &str) -> Self {
        harness
            .install_package(plugins::PROBE.package_with(edit))
            .await;
        let base = harness.serve_api().await;
        assert_eq!(create_workspace(&base, "ws-1").await.0, 201);
        let upstream = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/allowed/deliveries"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .mount(&upstream)
            .await;
        let hooks = Self {
            harness,
            base,
            upstream,
        };
        let (status, body) = hooks
            .call(
                "PUT",
                "/connections/desk",
                Some(
                    json!({ "plugin": "probe", "config": { "upstream": hooks.upstream.uri() },
                    "grants": { "approve_all_requested": true } }),
                ),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
        let (status, body) = hooks
            .call(
                "PUT",
                "/connections/desk/credentials/signing",
                Some(json!({ "kind": "webhook_secret", "value": secret })),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = hooks
            .call(
                "PUT",
                "/subscriptions/crm",
                Some(json!({
                    "types": ["*"],
                    "destination": { "connection": "desk", "operation": "deliver" },
                    "retry": { "max_attempts": 3, "max_age_secs": 600, "backoff_base_ms": 50, "backoff_cap_ms": 100 }
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        hooks
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        operator_call(
            &self.base,
            method,
            &format!("/v1/workspaces/ws-1{path}"),
            body,
        )
        .await
    }

    /// POST `body` with `headers` to `/v1/hooks/{ws}/{connection}`.
    async fn send(
        &self,
        target: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, Value, String) {
        let mut request = plain_http_client()
            .post(format!("{}/v1/hooks/{target}", self.base))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, json, text)
    }

    async fn metrics_text(&self) -> String {
        operator_metrics(&self.base).await
    }

    async fn deliveries(&self) -> Vec<Value> {
        self.upstream
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/allowed/deliveries")
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    async fn wait_for_deliveries(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.deliveries().await;
            if got.len() >= n || Instant::now() > until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A named refusal case: its headers and body.
type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Standard Webhooks headers for `body`, signed at `timestamp` with `key`.
fn signed(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sign(key, id, timestamp, body)),
        ("content-type", "application/json".to_owned()),
    ]
}

fn key() -> Vec<u8> {
    decode_secret(SECRET).expect("secret")
}

const BODY: &[u8] =
    br#"{"type": "ticket.updated", "timestamp": "2026-12-02T10:00:00Z", "data": {"ticket": 35436, "status": "solved"}}"#;

/// The one answer every refusal gets.
fn assert_bare_401((status, body, _): &(u16, Value, String), case: &str) {
    assert_eq!(*status, 401, "{case}: {body}");
    assert_eq!(
        body,
        &json!({ "code": "unauthorized", "message": "the webhook could not be verified" }),
        "{case}: a refusal tells the sender nothing"
    );
}

#[tokio::test]
async fn a_genuine_standard_webhook_becomes_an_event_and_is_delivered() {
    let hooks = Hooks::new(standard_manifest, SECRET).await;
    let answer = hooks
        .send(
            "ws-1/desk",
            &signed(&key(), "msg_1", now_secs(), BODY),
            BODY,
        )
        .await;
    assert_eq!(answer.0, 202, "{}", answer.2);
    assert_eq!(answer.1["webhook_id"], "msg_1");
    assert_eq!(answer.1["duplicate"], false);
    let event_id = answer.1["events"][0]["id"].as_str().expect("id").to_owned();
    assert!(event_id.starts_with("desk:wh_"), "{event_id}");
    assert_eq!(answer.1["events"][0]["deliveries"], 1);
    let delivered = hooks.wait_for_deliveries(1).await;
    assert_eq!(delivered.len(), 1, "the event reached the subscription");
    let event = &delivered[0];
    assert_eq!(event["type"], "ticket.updated");
    assert_eq!(event["source"], "webhook:desk");
    assert_eq!(event["occurred_at"], "2026-12-02T10:00:00Z");
    assert_eq!(event["data"], json!({"ticket": 35436, "status": "solved"}));
}

#[tokio::test]
async fn tampered_reserialised_stale_early_or_unsigned_webhooks_get_a_bare_401_and_keep_nothing() {
    let hooks = Hooks::new(standard_manifest, SECRET).await;
    let now = now_secs();
    let good = signed(&key(), "msg_2", now, BODY);
    let tampered = br#"{"type": "ticket.updated", "timestamp": "2026-12-02T10:00:00Z", "data": {"ticket": 35436, "status": "open"}}"#;
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<Value>(BODY).expect("json")).expect("json");
    assert_ne!(reserialised.as_slice(), BODY);
    let mut cases: Vec<Case> = vec![
        ("tampered body", good.clone(), tampered.to_vec()),
        ("the same JSON re-serialised", good.clone(), reserialised),
        (
            "301 s old",
            signed(&key(), "msg_2", now - 301, BODY),
            BODY.to_vec(),
        ),
        (
            "301 s ahead",
            signed(&key(), "msg_2", now + 301, BODY),
            BODY.to_vec(),
        ),
        (
            "another secret",
            signed(&[7u8; 32], "msg_2", now, BODY),
            BODY.to_vec(),
        ),
    ];
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let headers = good
            .iter()
            .filter(|(n, _)| *n != missing)
            .cloned()
            .collect();
        cases.push((missing, headers, BODY.to_vec()));
    }
    for (case, headers, body) in &cases {
        assert_bare_401(&hooks.send("ws-1/desk", headers, body).await, case);
    }
    // 299 s old is within the window; so is one good signature in a rotation list.
    let rotated = format!(
        "v1,{} {} v1a,ignored",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        sign(&key(), "msg_3", now, BODY)
    );
    let mut rotation = signed(&key(), "msg_3", now, BODY);
    rotation[2].1 = rotated;
    for (case, headers) in [
        (
            "299 s old",
            signed(&key(), "msg_299", now_secs() - 299, BODY),
        ),
        ("a rotation list with one good signature", rotation),
    ] {
        let (status, body, _) = hooks.send("ws-1/desk", &headers, BODY).await;
        assert_eq!(status, 202, "{case}: {body}");
    }
    let (status, page) = hooks.call("GET", "/subscriptions/crm", None).await;
    assert_eq!(status, 200);
    let delivered = hooks.wait_for_deliveries(2).await;
    assert_eq!(
        delivered.len(),
        2,
        "only the two genuine webhooks became events ({page})"
    );
    let metrics = hooks.metrics_text().await;
    assert!(
        metrics.contains(r#"patchbay_webhooks_total{workspace="ws-1",outcome="accepted"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_targets_and_unset_secrets_are_refused_like_a_bad_signature() {
    let hooks = Hooks::new(standard_manifest, SECRET).await;
    let headers = signed(&key(), "msg_4", now_secs(), BODY);
    for target in ["ws-nope/desk", "ws-1/nope", "ws-1/Bad..Name"] {
        assert_bare_401(&hooks.send(target, &headers, BODY).await, target);
    }
    // A connection whose plugin takes no webhooks.
    hooks.harness.ensure(plugins::CRM_TRANSFORM).await;
    let (status, body) = hooks
        .call(
            "PUT",
            "/connections/plain",
            Some(json!({ "plugin": "crm-transform", "grants": { "approve_all_requested": true } })),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    assert_bare_401(
        &hooks.send("ws-1/plain", &headers, BODY).await,
        "no [webhook]",
    );
    let (status, _) = hooks
        .call("DELETE", "/connections/desk/credentials/signing", None)
        .await;
    assert_eq!(status, 204);
    assert_bare_401(
        &hooks.send("ws-1/desk", &headers, BODY).await,
        "secret not set",
    );
    let metrics = hooks.metrics_text().await;
    assert!(
        metrics.contains(r#"patchbay_webhooks_total{workspace="",outcome="refused"} 1"#),
        "a workspace that does not exist is no label value:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"patchbay_webhooks_total{workspace="ws-1",outcome="refused"} 4"#),
        "{metrics}"
    );
    assert!(!metrics.contains("ws-nope"), "{metrics}");
}

#[tokio::test]
async fn a_resent_webhook_is_a_duplicate_and_delivered_once() {
    let hooks = Hooks::new(standard_manifest, SECRET).await;
    let first = hooks
        .send(
            "ws-1/desk",
            &signed(&key(), "msg_5", now_secs(), BODY),
            BODY,
        )
        .await;
    assert_eq!(first.0, 202, "{}", first.2);
    // The sender's retry: the same id, signed again later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = hooks
        .send(
            "ws-1/desk",
            &signed(&key(), "msg_5", now_secs(), BODY),
            BODY,
        )
        .await;
    assert_eq!(again.0, 200, "{}", again.2);
    assert_eq!(again.1["duplicate"], true);
    assert_eq!(again.1["events"], json!([]));
    assert_eq!(hooks.wait_for_deliveries(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.deliveries().await.len(), 1, "delivered once");
    // Past the dedupe window (24 h by default) and the event-id window, the id is new again.
    hooks.harness.advance_clock(Duration::from_secs(25 * 3600));
    let events = &hooks.harness.services.events;
    events.purge_expired_ids(10_000).await.expect("purge");
    let later = now_secs() + 25 * 3600;
    let after = hooks
        .send("ws-1/desk", &signed(&key(), "msg_5", later, BODY), BODY)
        .await;
    assert_eq!(after.0, 202, "{}", after.2);
    let metrics = hooks.metrics_text().await;
    for (outcome, n) in [("accepted", 2), ("duplicate", 1)] {
        let line =
            format!(r#"patchbay_webhooks_total{{workspace="ws-1",outcome="{outcome}"}} {n}"#);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn an_oversize_body_gets_413_before_it_is_read_whole() {
    let mut policy = patchbay::policy::OperatorPolicy {
        addresses: patchbay::policy::ssrf::AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        ..Default::default()
    };
    policy.webhooks.max_body_kb = 1;
    let hooks = Hooks::with(Harness::with_policy(policy), standard_manifest, SECRET).await;
    // At the limit the body is read and verified (spaces are no JSON: 422).
    let exact = vec![b' '; 1024];
    let headers = signed(&key(), "msg_exact", now_secs(), &exact);
    let (status, body, _) = hooks.send("ws-1/desk", &headers, &exact).await;
    assert_eq!(
        status, 422,
        "a body of exactly max_body_kb is taken: {body}"
    );
    let big = vec![b' '; 1025];
    let headers = signed(&key(), "msg_6", now_secs(), &big);
    let (status, body, _) = hooks.send("ws-1/desk", &headers, &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "body-too-large");
    // Declared larger than the limit: refused on the header, the body never sent.
    let mut stream = tokio::net::TcpStream::connect(hooks.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(
            b"POST /v1/hooks/ws-1/desk HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Streamed without a length and over the limit: 413 too.
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let response = plain_http_client()
        .post(format!("{}/v1/hooks/ws-1/desk", hooks.base))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 413);
    assert!(hooks.deliveries().await.is_empty());
}

#[tokio::test]
async fn webhooks_turned_off_by_the_operator_are_refused() {
    let mut policy = patchbay::policy::OperatorPolicy {
        addresses: patchbay::policy::ssrf::AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        ..Default::default()
    };
    policy.webhooks.enabled = false;
    let hooks = Hooks::with(Harness::with_policy(policy), standard_manifest, SECRET).await;
    let headers = signed(&key(), "msg_7", now_secs(), BODY);
    assert_bare_401(&hooks.send("ws-1/desk", &headers, BODY).await, "turned off");
}

/// Headers of a probe-scheme webhook: hex HMAC-SHA256 of the body.
fn probe_signed(secret: &str, body: &[u8], mode: Option<&str>) -> Vec<(&'static str, String)> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let mut headers = vec![
        (
            "x-probe-signature",
            hex::encode(mac.finalize().into_bytes()),
        ),
        ("x-probe-id", "probe-1".to_owned()),
    ];
    if let Some(mode) = mode {
        headers.push(("x-probe-mode", mode.to_owned()));
    }
    headers
}

const PROBE_BODY: &[u8] = br#"[{"type": "case.updated", "data": {"case": 1}}, {"type": "case.closed", "data": {"case": 1}}]"#;

#[tokio::test]
async fn a_plugin_verifies_with_a_secret_it_never_sees_and_cannot_skip_the_check() {
    let hooks = Hooks::new(plugin_manifest, PLUGIN_SECRET).await;
    let (status, body, text) = hooks
        .send(
            "ws-1/desk",
            &probe_signed(PLUGIN_SECRET, PROBE_BODY, None),
            PROBE_BODY,
        )
        .await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(hooks.wait_for_deliveries(2).await.len(), 2);
    for (case, headers) in [
        ("another secret", probe_signed("guess", PROBE_BODY, None)),
        (
            "the plugin skips verify-hmac",
            probe_signed("guess", PROBE_BODY, Some("skip")),
        ),
        (
            "the plugin ignores a false",
            probe_signed("guess", PROBE_BODY, Some("mismatch")),
        ),
        (
            "a credential not declared",
            probe_signed(PLUGIN_SECRET, PROBE_BODY, Some("undeclared")),
        ),
    ] {
        assert_bare_401(&hooks.send("ws-1/desk", &headers, PROBE_BODY).await, case);
    }
    // An error before any check is the same bare 401: its text never reaches the sender.
    assert_bare_401(
        &hooks
            .send(
                "ws-1/desk",
                &probe_signed(PLUGIN_SECRET, PROBE_BODY, Some("error-first")),
                PROBE_BODY,
            )
            .await,
        "an error before verifying",
    );
    // During a verification a plugin can neither keep nor send a genuine pair.
    for (mode, refused) in [("kv-write", "kv"), ("http", "http")] {
        let (status, body, _) = hooks
            .send(
                "ws-1/desk",
                &probe_signed(PLUGIN_SECRET, PROBE_BODY, Some(mode)),
                PROBE_BODY,
            )
            .await;
        assert_eq!(status, 422, "{mode}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("{refused}:")),
            "{mode}: {body}"
        );
    }
    assert!(
        hooks
            .upstream
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .all(|r| r.url.path() != "/allowed/pairs"),
        "nothing was sent"
    );
    // Outside a webhook verification, verify-hmac is refused as a value, not a trap.
    let (status, body) = hooks
        .call(
            "POST",
            "/connections/desk/operations/check-signature",
            Some(json!({ "input": {} })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("only available while verifying a webhook"),
        "{body}"
    );
    // The secret is in no answer, no log and no data file in the clear.
    let metrics = hooks.metrics_text().await;
    assert!(!metrics.contains(PLUGIN_SECRET));
    assert!(
        hooks
            .harness
            .data_files_containing(PLUGIN_SECRET.as_bytes())
            .is_empty()
    );
    let (_, listed) = hooks.call("GET", "/connections/desk", None).await;
    assert!(!listed.to_string().contains(PLUGIN_SECRET), "{listed}");
}

#[tokio::test]
async fn a_flood_of_webhooks_is_held_to_the_connections_rate() {
    let mut policy = patchbay::policy::OperatorPolicy {
        addresses: patchbay::policy::ssrf::AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        ..Default::default()
    };
    policy.webhooks.per_connection_per_second = 2;
    let hooks = Hooks::with(Harness::with_policy(policy), standard_manifest, SECRET).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..6 {
        let id = format!("msg_flood_{i}");
        let response = plain_http_client()
            .post(format!("{}/v1/hooks/ws-1/desk", hooks.base))
            .headers(
                signed(&key(), &id, now_secs(), BODY)
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            reqwest::header::HeaderName::from_static(n),
                            v.parse().expect("value"),
                        )
                    })
                    .collect(),
            )
            .body(BODY.to_vec())
            .send()
            .await
            .expect("send");
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
    }
    assert!(statuses.starts_with(&[202, 202]), "{statuses:?}");
    assert!(statuses.contains(&429), "past 2 a second: {statuses:?}");
    assert!(retry_after.is_some(), "the 429 says when to come back");
    // Unknown connections are refused before the limiter: no key is made for them.
    let headers = signed(&key(), "msg_x", now_secs(), BODY);
    for i in 0..5 {
        assert_bare_401(
            &hooks
                .send(&format!("ws-1/made-up-{i}"), &headers, BODY)
                .await,
            "unknown",
        );
    }
    let metrics = hooks.metrics_text().await;
    assert!(metrics.contains(r#"outcome="limited""#), "{metrics}");
}
