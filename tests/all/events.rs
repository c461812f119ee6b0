//! The event flow through the API: events accepted durably and fanned out,
//! each destination delivered on its own schedule through the sandbox (the
//! probe's `deliver` action POSTs to a loopback mock with the delivery's
//! idempotency key), retries, the dead-letter queue, idempotency.

use patchbay_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A workspace `ws-1` served over the API, with the probe installed.
struct Hub {
    harness: Harness,
    base: String,
}

impl Hub {
    async fn new() -> Self {
        Self::on(Harness::new()).await
    }

    async fn on(harness: Harness) -> Self {
        harness.ensure(plugins::PROBE).await;
        let base = harness.serve_api().await;
        let (status, _) = create_workspace(&base, "ws-1").await;
        assert!(status == 201 || status == 409, "{status}");
        Self { harness, base }
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

    /// Connection `name` running the probe against `upstream`.
    async fn connect(&self, name: &str, upstream: &str) {
        let (status, body) = self
            .call(
                "PUT",
                &format!("/connections/{name}"),
                Some(
                    json!({ "plugin": "probe", "config": { "upstream": upstream },
                    "grants": { "approve_all_requested": true } }),
                ),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
    }

    /// Subscription `name`: `call.*` events to `connection`'s `deliver`,
    /// retried fast, with `extra` fields merged in.
    async fn subscribe(&self, name: &str, connection: &str, extra: Value) -> Value {
        let mut body = json!({
            "types": ["call.*"],
            "destination": { "connection": connection, "operation": "deliver" },
            "retry": { "max_attempts": 5, "max_age_secs": 600, "backoff_base_ms": 50, "backoff_cap_ms": 200 }
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let (status, answer) = self
            .call("PUT", &format!("/subscriptions/{name}"), Some(body))
            .await;
        assert_eq!(status, 201, "{answer}");
        answer
    }

    async fn publish(&self, events: Value) -> (u16, Value) {
        self.call("POST", "/events", Some(events)).await
    }

    /// The dead letters, once there is one (waiting at most `secs`).
    async fn dead_soon(&self, secs: u64) -> Vec<Value> {
        until(
            Duration::from_secs(secs),
            || self.dead_letters(""),
            |d| !d.is_empty(),
        )
        .await
    }

    async fn dead_letters(&self, query: &str) -> Vec<Value> {
        let (status, page) = self
            .call("GET", &format!("/dead-letters{query}"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /metrics` as the operator.
    async fn metrics(&self) -> String {
        operator_metrics(&self.base).await
    }

    async fn depth(&self, subscription: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/subscriptions/{subscription}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["depth"].clone()
    }
}

fn call_ended(id: &str) -> Value {
    json!({ "id": id, "type": "call.ended", "source": "cc-hub",
        "occurred_at": "2026-12-02T10:00:00Z", "subject": "+16502530000",
        "data": { "duration_s": 42, "agent": "a-7" } })
}

/// An error answer's details, one a line.
fn details(answer: &Value) -> String {
    answer["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The deliveries a mock received: each request's idempotency key.
async fn keys(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/allowed/deliveries")
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// Wait (at most `limit`) until `done` holds of what `probe` reads.
async fn until<T, F, Fut>(limit: Duration, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let start = Instant::now();
    loop {
        let value = probe().await;
        if done(&value) || start.elapsed() > limit {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({})))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn each_destination_is_delivered_on_its_own_schedule() {
    let hub = Hub::new().await;
    let fine = answering(200).await;
    let broken = answering(500).await;
    let hung = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&hung)
        .await;
    for (name, server) in [("a", &fine), ("b", &broken), ("c", &hung)] {
        hub.connect(name, &server.uri()).await;
        hub.subscribe(&format!("to-{name}"), name, json!({})).await;
    }
    // Another event type matches no subscription.
    let (status, answer) = hub
        .publish(
            json!([call_ended("evt-1"), { "type": "case.closed", "source": "desk",
            "occurred_at": "2026-12-02T10:00:00Z" }]),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"][0]["deliveries"], 3);
    assert_eq!(answer["accepted"][1]["deliveries"], 0);
    assert!(
        answer["accepted"][1]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_")),
        "an event without an id is given one: {answer}"
    );

    // A is delivered at once, while C hangs and B fails.
    let delivered = until(Duration::from_secs(10), || keys(&fine), |k| !k.is_empty()).await;
    assert_eq!(delivered, ["evt-1:to-a"]);
    let depth = until(
        Duration::from_secs(5),
        || hub.depth("to-a"),
        |d| d["pending"] == 0,
    )
    .await;
    assert_eq!(depth, json!({ "pending": 0, "dead": 0 }));
    // B retries on its own schedule, every attempt with the same key.
    let tried = until(Duration::from_secs(10), || keys(&broken), |k| k.len() >= 3).await;
    assert!(tried.len() >= 3, "{tried:?}");
    assert!(tried.iter().all(|k| k == "evt-1:to-b"), "{tried:?}");
    // C's attempt runs out of the plugin's time and is retried too.
    let hung_keys = until(Duration::from_secs(10), || keys(&hung), |k| k.len() >= 2).await;
    assert!(hung_keys.len() >= 2, "{hung_keys:?}");
    assert!(hung_keys.iter().all(|k| k == "evt-1:to-c"), "{hung_keys:?}");
    // A got nothing more.
    assert_eq!(keys(&fine).await.len(), 1);
}

#[tokio::test]
async fn a_rate_limited_answer_is_retried_no_sooner_than_it_asked() {
    let hub = Hub::new().await;
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 1 })))
        .mount(&crm)
        .await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    hub.publish(call_ended("evt-429")).await;
    // wiremock keeps no arrival times: the gap is measured between receipts.
    let first = until(Duration::from_secs(10), || keys(&crm), |k| !k.is_empty()).await;
    assert_eq!(first.len(), 1);
    let at_first = Instant::now();
    let both = until(Duration::from_secs(10), || keys(&crm), |k| k.len() >= 2).await;
    let gap = at_first.elapsed();
    assert_eq!(both, ["evt-429:to-crm", "evt-429:to-crm"]);
    // The subscription's backoff (at most 200 ms) alone would retry sooner.
    assert!(
        gap >= Duration::from_millis(850),
        "retried {gap:?} after a 429 that asked for 1 s"
    );
    let depth = until(
        Duration::from_secs(5),
        || hub.depth("to-crm"),
        |d| d["pending"] == 0,
    )
    .await;
    assert_eq!(depth, json!({ "pending": 0, "dead": 0 }));
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once_and_replays_once_fixed() {
    let hub = Hub::new().await;
    let crm = MockServer::start().await;
    let refusal = Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(422).set_body_json(json!({ "message": "missing field" })),
        )
        .mount_as_scoped(&crm)
        .await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    hub.publish(call_ended("evt-dlq")).await;
    let dead = hub.dead_soon(10).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(keys(&crm).await.len(), 1, "a 422 is not retried");
    let letter = &dead[0];
    assert_eq!(letter["subscription"], "to-crm");
    assert_eq!(letter["event_id"], "evt-dlq");
    assert_eq!(letter["dead"]["code"], "upstream");
    assert_eq!(letter["history"].as_array().map(Vec::len), Some(1));
    assert!(
        letter["history"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("422"),
        "{letter}"
    );
    assert_eq!(
        hub.depth("to-crm").await,
        json!({ "pending": 0, "dead": 1 })
    );
    let metrics = hub.metrics().await;
    for line in [
        r#"patchbay_event_queue_depth{workspace="ws-1",subscription="to-crm",queue="dead"} 1"#,
        r#"patchbay_event_queue_depth{workspace="ws-1",subscription="to-crm",queue="pending"} 0"#,
        r#"patchbay_event_deliveries_total{workspace="ws-1",subscription="to-crm",outcome="dead-lettered"} 1"#,
        r#"patchbay_event_destination_breaker_open{workspace="ws-1",subscription="to-crm"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // Filters: by subscription and code; a code that matches nothing.
    assert_eq!(
        hub.dead_letters("?subscription=to-crm&code=upstream")
            .await
            .len(),
        1
    );
    assert!(hub.dead_letters("?code=not-found").await.is_empty());
    assert!(hub.dead_letters("?subscription=other").await.is_empty());

    // Inspect: the event as accepted, every attempt.
    let id = letter["id"].to_string();
    let (status, detail) = hub.call("GET", &format!("/dead-letters/{id}"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["event"]["data"]["agent"], "a-7");
    assert_eq!(detail["delivery"]["history"][0]["counted"], true);

    // Fixed upstream: the replay delivers it, once, with the same key.
    drop(refusal);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let (status, _) = hub
        .call("POST", &format!("/dead-letters/{id}/replay"), None)
        .await;
    assert_eq!(status, 202);
    let sent = until(Duration::from_secs(10), || keys(&crm), |k| k.len() >= 2).await;
    assert_eq!(sent, ["evt-dlq:to-crm", "evt-dlq:to-crm"]);
    let depth = until(
        Duration::from_secs(5),
        || hub.depth("to-crm"),
        |d| d["pending"] == 0,
    )
    .await;
    assert_eq!(depth, json!({ "pending": 0, "dead": 0 }));
    assert!(hub.dead_letters("").await.is_empty());
    let metrics = hub.metrics().await;
    for line in [
        r#"patchbay_event_deliveries_total{workspace="ws-1",subscription="to-crm",outcome="delivered"} 1"#,
        r#"patchbay_event_delivery_latency_seconds_count{workspace="ws-1",subscription="to-crm"} 1"#,
        r#"patchbay_event_queue_depth{workspace="ws-1",subscription="to-crm",queue="dead"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // Replaying it again: it is not in the queue any more.
    let (status, _) = hub
        .call("POST", &format!("/dead-letters/{id}/replay"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dead_letters_are_replayed_and_purged_by_filter() {
    let hub = Hub::new().await;
    let crm = answering(404).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    let batch: Vec<Value> = (0..3).map(|n| call_ended(&format!("evt-{n}"))).collect();
    hub.publish(Value::Array(batch)).await;
    let dead = until(
        Duration::from_secs(10),
        || hub.dead_letters(""),
        |d| d.len() == 3,
    )
    .await;
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter().all(|d| d["dead"]["code"] == "not-found"),
        "{dead:?}"
    );
    // A page of one, then the rest by cursor.
    let (_, page) = hub.call("GET", "/dead-letters?limit=1", None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let (_, rest) = hub
        .call("GET", &format!("/dead-letters?after={next}"), None)
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2));
    assert!(rest.get("next").is_none());
    let (status, bad) = hub.call("GET", "/dead-letters?after=nonsense", None).await;
    assert_eq!((status, bad["code"].as_str()), (422, Some("invalid-query")));
    // By time: dead-lettered at or after `since`, before `until`.
    let at = dead[1]["dead"]["at_ms"].as_u64().expect("dead-lettered at");
    let ids =
        |letters: Vec<Value>| -> Vec<Value> { letters.iter().map(|d| d["id"].clone()).collect() };
    let from_at = ids(hub.dead_letters(&format!("?since={at}")).await);
    let before_at = ids(hub.dead_letters(&format!("?until={at}")).await);
    assert!(from_at.contains(&dead[1]["id"]) && !before_at.contains(&dead[1]["id"]));
    assert_eq!(
        from_at.len() + before_at.len(),
        3,
        "{from_at:?} {before_at:?}"
    );
    assert!(
        hub.dead_letters(&format!("?since={}", at + 3_600_000))
            .await
            .is_empty()
    );
    // A replay or purge covers what matches; paging it is refused, not ignored.
    for (method, path) in [
        ("POST", "/dead-letters/replay?limit=1"),
        ("DELETE", "/dead-letters?after=1-1"),
    ] {
        let (status, bad) = hub.call(method, path, None).await;
        assert_eq!(
            (status, bad["code"].as_str()),
            (422, Some("invalid-query")),
            "{method} {path}"
        );
    }
    assert_eq!(
        hub.dead_letters("").await.len(),
        3,
        "a refused purge removed nothing"
    );

    // Purge one, then replay the rest (they fail again: dead again).
    let one = dead[0]["id"].to_string();
    let (status, _) = hub
        .call("DELETE", &format!("/dead-letters/{one}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, replayed) = hub
        .call("POST", "/dead-letters/replay?subscription=to-crm", None)
        .await;
    assert_eq!(
        (status, replayed["count"].as_u64()),
        (200, Some(2)),
        "{replayed}"
    );
    until(Duration::from_secs(10), || keys(&crm), |k| k.len() >= 5).await;
    let again = until(
        Duration::from_secs(10),
        || hub.dead_letters(""),
        |d| d.len() == 2,
    )
    .await;
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|d| d["tries"] == 2),
        "history is kept: {again:?}"
    );
    let (status, purged) = hub
        .call("DELETE", "/dead-letters?code=not-found", None)
        .await;
    assert_eq!(
        (status, purged["count"].as_u64()),
        (200, Some(2)),
        "{purged}"
    );
    assert!(hub.dead_letters("").await.is_empty());
    assert_eq!(
        hub.depth("to-crm").await,
        json!({ "pending": 0, "dead": 0 })
    );
}

#[tokio::test]
async fn an_event_id_is_accepted_once() {
    let hub = Hub::new().await;
    let crm = answering(200).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    let (status, first) = hub.publish(call_ended("evt-once")).await;
    assert_eq!(status, 202);
    assert_eq!(first["accepted"][0]["duplicate"], false);
    // Again while it may still be in flight, and after delivery.
    let (_, second) = hub.publish(call_ended("evt-once")).await;
    assert_eq!(
        second["accepted"][0],
        json!({ "id": "evt-once", "duplicate": true, "deliveries": 0 })
    );
    until(Duration::from_secs(10), || keys(&crm), |k| !k.is_empty()).await;
    let (_, third) = hub
        .publish(json!([
            call_ended("evt-once"),
            call_ended("evt-twice"),
            call_ended("evt-twice")
        ]))
        .await;
    let duplicates: Vec<&Value> = third["accepted"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["duplicate"]).collect())
        .unwrap_or_default();
    assert_eq!(duplicates, [&json!(true), &json!(false), &json!(true)]);
    until(Duration::from_secs(10), || keys(&crm), |k| k.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = keys(&crm).await;
    sent.sort();
    assert_eq!(sent, ["evt-once:to-crm", "evt-twice:to-crm"]);
}

#[tokio::test]
async fn a_transform_maps_the_event_and_its_output_must_fit_the_destination() {
    let hub = Hub::new().await;
    let crm = answering(200).await;
    hub.connect("crm", &crm.uri()).await;
    hub.connect("maps", "http://127.0.0.1:9").await;
    hub.subscribe(
        "notes",
        "crm",
        json!({ "transform": { "connection": "maps", "operation": "summarize" } }),
    )
    .await;
    // `remember` takes a string: the transform's object does not fit it.
    hub.subscribe(
        "misfit",
        "crm",
        json!({ "transform": { "connection": "maps", "operation": "summarize" },
            "destination": { "connection": "crm", "operation": "remember" } }),
    )
    .await;
    hub.publish(call_ended("evt-map")).await;
    let sent = until(
        Duration::from_secs(10),
        || async { crm.received_requests().await.unwrap_or_default() },
        |r| !r.is_empty(),
    )
    .await;
    let body: Value = serde_json::from_slice(&sent[0].body).expect("json body");
    assert_eq!(
        body,
        json!({ "note": "call.ended from cc-hub", "event_id": "evt-map", "subject": "+16502530000" })
    );
    let dead = hub.dead_soon(10).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["subscription"], "misfit");
    assert_eq!(dead[0]["dead"]["code"], "invalid-input", "{dead:?}");
}

#[tokio::test]
async fn filters_choose_which_events_a_subscription_gets() {
    let hub = Hub::new().await;
    let crm = answering(200).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe(
        "long-calls",
        "crm",
        json!({ "filter": [
            { "field": "data.duration_s", "op": "gte", "value": 30 },
            { "field": "data.queue", "op": "in", "value": ["sales", "billing"] }
        ] }),
    )
    .await;
    let mut short = call_ended("short");
    short["data"] = json!({ "duration_s": 5, "queue": "sales" });
    let mut other_queue = call_ended("support");
    other_queue["data"] = json!({ "duration_s": 90, "queue": "support" });
    let mut wanted = call_ended("wanted");
    wanted["data"] = json!({ "duration_s": 90, "queue": "billing" });
    let (_, answer) = hub.publish(json!([short, other_queue, wanted])).await;
    let counts: Vec<u64> = answer["accepted"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["deliveries"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(counts, [0, 0, 1]);
    let sent = until(Duration::from_secs(10), || keys(&crm), |k| !k.is_empty()).await;
    assert_eq!(sent, ["wanted:long-calls"]);
    // A disabled subscription matches nothing.
    let (status, _) = hub
        .call(
            "PUT",
            "/subscriptions/long-calls",
            Some(json!({ "types": ["*"], "enabled": false,
                "destination": { "connection": "crm", "operation": "deliver" } })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, answer) = hub.publish(call_ended("ignored")).await;
    assert_eq!(answer["accepted"][0]["deliveries"], 0);
}

#[tokio::test]
async fn bad_subscriptions_and_events_are_refused_naming_each_problem() {
    let hub = Hub::new().await;
    hub.connect("crm", "http://127.0.0.1:9").await;
    let cases = [
        (
            json!({ "types": ["call.*"], "destination": { "connection": "crm", "operation": "summarize" } }),
            "is a transform operation; a destination must be an action",
        ),
        (
            json!({ "types": ["call.*"], "destination": { "connection": "nope", "operation": "deliver" } }),
            "no connection \"nope\"",
        ),
        (
            json!({ "types": ["call.*"], "destination": { "connection": "crm", "operation": "missing" } }),
            "has no operation \"missing\"",
        ),
        (
            json!({ "types": ["call.*"], "destination": { "connection": "crm", "operation": "deliver" },
                "transform": { "connection": "crm", "operation": "deliver" } }),
            "is an action operation; a transform must be a transform",
        ),
        (
            json!({ "types": ["Call"], "destination": { "connection": "crm", "operation": "deliver" },
                "retry": { "max_attempts": 0 } }),
            "retry.max_attempts",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = hub
            .call("PUT", "/subscriptions/bad", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["code"], "invalid-subscription");
        let details = details(&answer);
        assert!(details.contains(expected), "{expected:?} not in {details}");
    }
    let (status, _) = hub.call("GET", "/subscriptions/bad", None).await;
    assert_eq!(status, 404, "nothing was saved");
    let (status, answer) = hub
        .call(
            "PUT",
            "/subscriptions/Bad_Name",
            Some(json!({ "types": ["*"],
            "destination": { "connection": "crm", "operation": "deliver" } })),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-name")),
        "{answer}"
    );

    // One bad event refuses the batch, each problem named; nothing is kept.
    let bad = json!({ "id": "bad id", "type": "Call", "source": "", "occurred_at": "yesterday" });
    let (status, answer) = hub
        .publish(json!([call_ended("good"), bad, call_ended("fine")]))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["code"], "invalid-events");
    let problems = details(&answer);
    for field in [
        "events[1].id",
        "events[1].type",
        "events[1].source",
        "events[1].occurred_at",
    ] {
        assert!(problems.contains(field), "{field} not in {problems}");
    }
    // Not events at all: the body's shape, each place named.
    let (status, answer) = hub
        .publish(json!([call_ended("good"), 7, { "type": 3 }]))
        .await;
    let code = answer["code"].as_str();
    assert_eq!((status, code), (422, Some("invalid-body")), "{answer}");
    let shape = details(&answer);
    for at in [
        "events[1]: an event is a JSON object",
        "events[2]: invalid type",
    ] {
        assert!(shape.contains(at), "{at} not in {shape}");
    }
    let (_, again) = hub.publish(call_ended("good")).await;
    assert_eq!(
        again["accepted"][0]["duplicate"], false,
        "the refused batch kept nothing"
    );
    let (status, answer) = hub.publish(json!([])).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-events"))
    );
    let too_many: Vec<Value> = (0..501).map(|n| call_ended(&format!("e{n}"))).collect();
    let (status, _) = hub.publish(Value::Array(too_many)).await;
    assert_eq!(status, 422);
    // Unknown envelope fields are refused, not dropped.
    let mut extra = call_ended("extra");
    extra["priority"] = json!("high");
    let (status, answer) = hub.publish(extra).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-body")),
        "{answer}"
    );
    assert!(details(&answer).contains("priority"), "{answer}");
}

#[tokio::test]
async fn another_workspace_sees_none_of_it() {
    let hub = Hub::new().await;
    let crm = answering(404).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    hub.publish(call_ended("evt-mine")).await;
    let dead = hub.dead_soon(10).await;
    let id = dead[0]["id"].to_string();
    let (_, other) = create_workspace(&hub.base, "ws-2").await;
    assert_eq!(other["id"], "ws-2");
    let (_, token) = operator_call(
        &hub.base,
        "POST",
        "/v1/workspaces/ws-2/tokens",
        Some(json!({})),
    )
    .await;
    let token = token["token"].as_str().expect("token").to_owned();
    for path in [
        "/v1/workspaces/ws-2/subscriptions".to_owned(),
        "/v1/workspaces/ws-2/dead-letters".to_owned(),
    ] {
        let (status, body) = api_call("GET", &hub.base, &path, Some(&token), None).await;
        assert_eq!(status, 200);
        let empty = body.as_array().map(Vec::is_empty).unwrap_or(false)
            || body["items"].as_array().is_some_and(Vec::is_empty);
        assert!(empty, "{path}: {body}");
    }
    for (method, path) in [
        ("GET", format!("/v1/workspaces/ws-2/dead-letters/{id}")),
        (
            "POST",
            format!("/v1/workspaces/ws-2/dead-letters/{id}/replay"),
        ),
        ("DELETE", format!("/v1/workspaces/ws-2/dead-letters/{id}")),
        ("GET", "/v1/workspaces/ws-2/subscriptions/to-crm".to_owned()),
        ("GET", "/v1/workspaces/ws-1/dead-letters".to_owned()),
    ] {
        let (status, _) = api_call(method, &hub.base, &path, Some(&token), None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    // The same event id in another workspace is its own event.
    let (_, answer) = api_call(
        "POST",
        &hub.base,
        "/v1/workspaces/ws-2/events",
        Some(&token),
        Some(call_ended("evt-mine")),
    )
    .await;
    assert_eq!(answer["accepted"][0]["duplicate"], false);
    // Deleting ws-1 removes its subscriptions and dead letters with it.
    let (status, _) = operator_call(&hub.base, "DELETE", "/v1/workspaces/ws-1", None).await;
    assert_eq!(status, 204);
    create_workspace(&hub.base, "ws-1").await;
    assert!(hub.dead_letters("").await.is_empty());
    let (_, subs) = hub.call("GET", "/subscriptions", None).await;
    assert_eq!(subs, json!([]));
}

#[tokio::test]
async fn accepted_deliveries_survive_a_restart() {
    // Accepted with no delivery loop running (as if the host died right
    // after answering 202), then delivered by the next start.
    let harness = Harness::new();
    harness.ensure(plugins::PROBE).await;
    let crm = answering(200).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("ws-1").await.expect("workspace");
    let request = serde_json::from_value(json!({ "plugin": "probe",
        "config": { "upstream": crm.uri() }, "grants": { "approve_all_requested": true } }))
    .expect("request");
    tenancy
        .put_connection("ws-1", "crm", request)
        .await
        .expect("connection");
    let events = harness.services.events.clone();
    let subscription = serde_json::from_value(json!({ "types": ["call.*"],
        "destination": { "connection": "crm", "operation": "deliver" } }))
    .expect("subscription");
    events
        .put_subscription("ws-1", "to-crm", subscription)
        .await
        .expect("subscribe");
    let batch: Vec<Value> = (0..20).map(|n| call_ended(&format!("evt-r{n}"))).collect();
    let accepted = events
        .publish("ws-1", Value::Array(batch))
        .await
        .expect("publish");
    assert_eq!(accepted.len(), 20);
    drop((events, tenancy));
    assert!(
        keys(&crm).await.is_empty(),
        "nothing is delivered without the loop"
    );
    let hub = Hub::on(harness.reopen()).await;
    let depth = until(
        Duration::from_secs(15),
        || hub.depth("to-crm"),
        |d| d["pending"] == 0,
    )
    .await;
    assert_eq!(
        depth["pending"], 0,
        "every accepted delivery was made after the restart"
    );
    let mut sent = keys(&crm).await;
    sent.sort();
    assert_eq!(sent.len(), 20, "{sent:?}");
    sent.dedup();
    assert_eq!(sent.len(), 20, "each once: {sent:?}");
}

#[tokio::test]
async fn an_open_breaker_holds_deliveries_without_using_their_attempts() {
    use patchbay::policy::limits::{BreakerConfig, OperatorLimits};
    let harness = Harness::with_limits(OperatorLimits {
        circuit_breaker: BreakerConfig {
            failures: 2,
            window_ms: 60_000,
            cool_down_ms: 1_500,
        },
        ..OperatorLimits::default()
    });
    let hub = Hub::on(harness).await;
    let crm = answering(503).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe(
        "to-crm",
        "crm",
        json!({ "retry": { "max_attempts": 3, "max_age_secs": 600, "backoff_base_ms": 50, "backoff_cap_ms": 100 } }),
    )
    .await;
    hub.publish(call_ended("evt-breaker")).await;
    // Three failures at ~100 ms apart would dead-letter it well within the
    // breaker's cool-down; held attempts use none of them.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        hub.depth("to-crm").await,
        json!({ "pending": 1, "dead": 0 }),
        "still pending while the breaker is open"
    );
    let metrics = hub.metrics().await;
    let held =
        r#"patchbay_event_deliveries_total{workspace="ws-1",subscription="to-crm",outcome="held"}"#;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(held) && !l.ends_with(" 0")),
        "held attempts counted:\n{metrics}"
    );
    let open =
        r#"patchbay_event_destination_breaker_open{workspace="ws-1",subscription="to-crm"} 1"#;
    assert!(metrics.contains(open), "{metrics}");
    // Once the breaker lets requests through again, the 503s use up the rest.
    let dead = hub.dead_soon(15).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let history = dead[0]["history"].as_array().cloned().unwrap_or_default();
    let counted = history.iter().filter(|a| a["counted"] == true).count();
    let held: Vec<&Value> = history.iter().filter(|a| a["counted"] == false).collect();
    assert_eq!(counted, 3, "{history:?}");
    assert!(!held.is_empty(), "{history:?}");
    assert!(held.iter().all(|a| a["code"] == "circuit-open"), "{held:?}");
    // Each held attempt waited out the breaker's remaining time (1.5 s), not
    // the 50 ms backoff: a few, not dozens.
    assert!(held.len() <= 5, "{} held attempts: {held:?}", held.len());
    assert_eq!(dead[0]["attempts"], 3);
}

#[tokio::test]
async fn a_subscriptions_rate_limit_paces_its_deliveries_without_using_attempts() {
    let hub = Hub::new().await;
    let crm = answering(200).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe(
        "paced",
        "crm",
        json!({ "rate_limit": { "requests": 2, "per_seconds": 1 },
            "retry": { "max_attempts": 1, "max_age_secs": 600, "backoff_base_ms": 50, "backoff_cap_ms": 100 } }),
    )
    .await;
    let started = Instant::now();
    let batch: Vec<Value> = (0..6).map(|n| call_ended(&format!("paced-{n}"))).collect();
    hub.publish(Value::Array(batch)).await;
    // A burst of two, then one every half second.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let early = keys(&crm).await.len();
    assert!(
        (2..=4).contains(&early),
        "{early} delivered in the first 0.7 s"
    );
    let all = until(Duration::from_secs(10), || keys(&crm), |k| k.len() >= 6).await;
    assert_eq!(all.len(), 6);
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "six at two a second took {:?}",
        started.elapsed()
    );
    // Waiting for the pace used no attempt: one each was enough.
    assert!(hub.dead_letters("").await.is_empty());
    let metrics = hub.metrics().await;
    let deferred = r#"patchbay_event_deliveries_total{workspace="ws-1",subscription="paced",outcome="deferred"}"#;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(deferred) && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_disabled_subscription_holds_its_deliveries_and_a_deleted_one_dead_letters_them() {
    let hub = Hub::new().await;
    // Nothing listens: every attempt fails until the subscription goes.
    let crm = answering(503).await;
    hub.connect("crm", &crm.uri()).await;
    let slow = json!({ "retry": { "max_attempts": 100, "max_age_secs": 600, "backoff_base_ms": 3000, "backoff_cap_ms": 3000 } });
    hub.subscribe("held", "crm", slow.clone()).await;
    hub.publish(call_ended("held-1")).await;
    until(Duration::from_secs(10), || keys(&crm), |k| !k.is_empty()).await;
    // Disabled: its pending delivery waits, attempted no more.
    let mut disabled = json!({ "types": ["call.*"], "enabled": false,
        "destination": { "connection": "crm", "operation": "deliver" } });
    disabled["retry"] = slow["retry"].clone();
    let (status, body) = hub.call("PUT", "/subscriptions/held", Some(disabled)).await;
    assert_eq!(status, 200, "{body}");
    // An attempt already running (the egress retries a 503 itself) ends first.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let sent = keys(&crm).await.len();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        keys(&crm).await.len(),
        sent,
        "a disabled subscription's delivery was attempted"
    );
    assert_eq!(hub.depth("held").await["pending"], 1);
    // Deleted: the delivery is dead-lettered when it next comes due.
    let (status, _) = hub.call("DELETE", "/subscriptions/held", None).await;
    assert_eq!(status, 204);
    let dead = hub.dead_soon(15).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["dead"]["code"], "subscription-not-found");
    assert_eq!(
        keys(&crm).await.len(),
        sent,
        "not attempted after its subscription went"
    );
}

#[tokio::test]
async fn an_event_id_is_forgotten_after_the_window_unless_a_delivery_of_it_is_open() {
    let hub = Hub::new().await;
    let crm = answering(404).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    // One routed nowhere (closed at once), one dead-lettered (open).
    let mut unrouted = call_ended("quiet");
    unrouted["type"] = json!("case.closed");
    hub.publish(json!([unrouted.clone(), call_ended("loud")]))
        .await;
    hub.dead_soon(10).await;
    let events = hub.harness.services.events.clone();
    assert_eq!(
        events.purge_expired_ids(100).await.expect("purge"),
        0,
        "inside the window"
    );
    hub.harness.advance_clock(Duration::from_secs(25 * 3600));
    assert_eq!(events.purge_expired_ids(100).await.expect("purge"), 1);
    let (_, again) = hub.publish(json!([unrouted, call_ended("loud")])).await;
    let duplicate: Vec<&Value> = again["accepted"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["duplicate"]).collect())
        .unwrap_or_default();
    assert_eq!(
        duplicate,
        [&json!(false), &json!(true)],
        "the closed id is forgotten, the dead-lettered one is kept"
    );
}

#[tokio::test]
async fn a_subscription_moved_to_another_destination_takes_its_pending_deliveries() {
    let hub = Hub::new().await;
    let down = answering(503).await;
    let up = answering(200).await;
    hub.connect("old", &down.uri()).await;
    hub.connect("new", &up.uri()).await;
    let slow = json!({ "retry": { "max_attempts": 100, "max_age_secs": 600, "backoff_base_ms": 1500, "backoff_cap_ms": 1500 } });
    hub.subscribe("moving", "old", slow.clone()).await;
    hub.publish(call_ended("moved-1")).await;
    until(Duration::from_secs(10), || keys(&down), |k| !k.is_empty()).await;
    let mut moved = json!({ "types": ["call.*"],
        "destination": { "connection": "new", "operation": "deliver" } });
    moved["retry"] = slow["retry"].clone();
    let (status, body) = hub.call("PUT", "/subscriptions/moving", Some(moved)).await;
    assert_eq!(status, 200, "{body}");
    let sent = until(Duration::from_secs(10), || keys(&up), |k| !k.is_empty()).await;
    assert_eq!(
        sent,
        ["moved-1:moving"],
        "the same key at its new destination"
    );
    let depth = until(
        Duration::from_secs(5),
        || hub.depth("moving"),
        |d| d["pending"] == 0,
    )
    .await;
    assert_eq!(depth, json!({ "pending": 0, "dead": 0 }));
}

#[tokio::test]
async fn a_workspace_has_at_most_a_hundred_subscriptions() {
    let hub = Hub::new().await;
    hub.connect("crm", "http://127.0.0.1:9").await;
    let body =
        json!({ "types": ["*"], "destination": { "connection": "crm", "operation": "deliver" } });
    for n in 0..100 {
        let (status, answer) = hub
            .call("PUT", &format!("/subscriptions/s{n}"), Some(body.clone()))
            .await;
        assert_eq!(status, 201, "{n}: {answer}");
    }
    let (status, answer) = hub
        .call("PUT", "/subscriptions/one-more", Some(body.clone()))
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-subscription")),
        "{answer}"
    );
    assert!(details(&answer).contains("100 subscriptions"), "{answer}");
    // Replacing one of them is still allowed.
    let (status, _) = hub.call("PUT", "/subscriptions/s7", Some(body)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_signed_alert_goes_out_each_time_the_dead_letters_reach_the_threshold() {
    let hub = Hub::new().await;
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "bad"})))
        .mount(&crm)
        .await;
    let pager = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&pager)
        .await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("calls", "crm", json!({})).await;
    // Refusals name each problem.
    let (status, refused) = hub
        .call(
            "PUT",
            "/dead-letter-alert",
            Some(json!({ "url": "ftp://x.example", "threshold": 0 })),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("invalid-alert")),
        "{refused}"
    );
    assert_eq!(
        refused["details"].as_array().map(Vec::len),
        Some(2),
        "{refused}"
    );
    let (status, set) = hub
        .call(
            "PUT",
            "/dead-letter-alert",
            Some(json!({ "url": format!("{}/alerts", pager.uri()), "threshold": 2 })),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let secret = set["secret"]
        .as_str()
        .expect("a made secret, shown once")
        .to_owned();
    let key =
        patchbay::policy::webhook::decode_secret(&secret).expect("a Standard Webhooks secret");
    let alerts = || async { pager.received_requests().await.unwrap_or_default() };
    let dead = |n: u64| {
        let hub = &hub;
        async move {
            let until = Instant::now() + Duration::from_secs(15);
            while hub.depth("calls").await["dead"] != json!(n) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(hub.depth("calls").await["dead"], json!(n));
        }
    };
    hub.publish(call_ended("dla-1")).await;
    dead(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts().await.is_empty(), "below the threshold: no alert");
    hub.publish(json!([call_ended("dla-2"), call_ended("dla-3")]))
        .await;
    dead(3).await;
    let until = Instant::now() + Duration::from_secs(10);
    while alerts().await.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = alerts().await;
    assert_eq!(sent.len(), 1, "one alert for the crossing");
    let header = |name: &str| sent[0].headers.get(name).and_then(|v| v.to_str().ok());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let headers = patchbay::policy::webhook::Headers {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    patchbay::policy::webhook::verify(&[key], headers, &sent[0].body, now)
        .expect("signed with the alert's secret");
    let body: Value = serde_json::from_slice(&sent[0].body).expect("json");
    assert_eq!(body["type"], "dead_letters.threshold_reached");
    assert_eq!(body["data"]["workspace"], "ws-1");
    assert_eq!(body["data"]["threshold"], 2);
    assert!(body["data"]["dead"].as_u64() >= Some(2), "{body}");
    let (_, shown) = hub.call("GET", "/dead-letter-alert", None).await;
    assert_eq!(
        (shown["raised"].clone(), shown["dead"].clone()),
        (json!(true), json!(3)),
        "{shown}"
    );
    assert!(
        shown.get("secret").is_none(),
        "the secret is never shown again: {shown}"
    );
    // Another failure while raised: no second alert.
    hub.publish(call_ended("dla-4")).await;
    dead(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts().await.len(), 1);
    // Purged below the threshold it re-arms; the next crossing alerts again.
    let (status, _) = hub
        .call("DELETE", "/dead-letters?subscription=calls", None)
        .await;
    assert_eq!(status, 200);
    dead(0).await;
    let until = Instant::now() + Duration::from_secs(5);
    while hub.call("GET", "/dead-letter-alert", None).await.1["raised"] != json!(false)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.publish(json!([call_ended("dla-5"), call_ended("dla-6")]))
        .await;
    dead(2).await;
    let until = Instant::now() + Duration::from_secs(10);
    while alerts().await.len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alerts().await.len(), 2, "a second crossing, a second alert");
    // The alert went through the egress: it is in the workspace's audit trail.
    let records = hub.harness.audit_records("ws-1").await;
    assert!(
        records.iter().filter(|r| r.path == "/alerts").count() >= 2,
        "audited"
    );
    assert_eq!(hub.call("DELETE", "/dead-letter-alert", None).await.0, 204);
    assert_eq!(hub.call("GET", "/dead-letter-alert", None).await.0, 404);
}

#[tokio::test]
async fn a_subscription_created_again_under_a_deleted_name_never_takes_the_old_ones_deliveries() {
    let hub = Hub::new().await;
    let down = answering(503).await;
    let up = answering(200).await;
    hub.connect("old-crm", &down.uri()).await;
    hub.connect("new-crm", &up.uri()).await;
    let slow = json!({ "retry": { "max_attempts": 100, "max_age_secs": 600, "backoff_base_ms": 2000, "backoff_cap_ms": 2000 } });
    hub.subscribe("calls", "old-crm", slow).await;
    hub.publish(call_ended("before")).await;
    until(Duration::from_secs(10), || keys(&down), |k| !k.is_empty()).await;
    // Deleted, then created again under the same name, delivering elsewhere.
    assert_eq!(
        hub.call("DELETE", "/subscriptions/calls", None).await.0,
        204
    );
    hub.subscribe("calls", "new-crm", json!({})).await;
    hub.publish(call_ended("after")).await;
    let dead = hub.dead_soon(15).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_id"], "before");
    assert_eq!(dead[0]["dead"]["code"], "subscription-not-found");
    let delivered = until(Duration::from_secs(10), || keys(&up), |k| !k.is_empty()).await;
    assert_eq!(
        delivered,
        ["after:calls"],
        "only the new subscription's own event"
    );
    // Replayed, the old delivery still belongs to the deleted subscription.
    let id = match &dead[0]["id"] {
        Value::Number(n) => n.to_string(),
        other => other.as_str().expect("id").to_owned(),
    };
    assert_eq!(
        hub.call("POST", &format!("/dead-letters/{id}/replay"), None)
            .await
            .0,
        202
    );
    let again = until(
        Duration::from_secs(10),
        || hub.dead_letters(""),
        |d| {
            d.first()
                .is_some_and(|d| d["tries"].as_u64() > dead[0]["tries"].as_u64())
        },
    )
    .await;
    assert_eq!(again[0]["dead"]["code"], "subscription-not-found");
    assert_eq!(keys(&up).await, ["after:calls"]);
}

#[tokio::test]
async fn a_delivery_past_its_max_age_is_dead_lettered_with_attempts_to_spare() {
    let hub = Hub::new().await;
    let crm = answering(503).await;
    hub.connect("crm", &crm.uri()).await;
    let short = json!({ "retry": { "max_attempts": 100, "max_age_secs": 60, "backoff_base_ms": 200, "backoff_cap_ms": 400 } });
    hub.subscribe("aging", "crm", short).await;
    hub.publish(call_ended("old-news")).await;
    until(Duration::from_secs(10), || keys(&crm), |k| !k.is_empty()).await;
    assert!(hub.dead_letters("").await.is_empty(), "young: retried");
    // A minute later by the host's clock, the next retry would be past max_age_secs.
    hub.harness.advance_clock(Duration::from_secs(61));
    let dead = hub.dead_soon(15).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["dead"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("past 60 s")),
        "{}",
        dead[0]
    );
    assert!(
        dead[0]["tries"].as_u64() < Some(100),
        "attempts were left: {}",
        dead[0]
    );
}

#[tokio::test]
async fn an_alert_to_an_address_the_operator_refuses_is_never_sent_and_stays_armed() {
    let hub = Hub::new().await;
    let crm = answering(400).await;
    hub.connect("crm", &crm.uri()).await;
    hub.subscribe("to-crm", "crm", json!({})).await;
    // Loopback, but outside the operator's allowed 127.0.0.1/32: a listener
    // there must see no connection.
    let listener = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let (status, set) = hub
        .call(
            "PUT",
            "/dead-letter-alert",
            Some(json!({ "url": url, "threshold": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    hub.publish(call_ended("refused-alert")).await;
    hub.dead_soon(10).await;
    // Refused before anything is sent, audited as a denial, and not tried
    // again at once (it would be refused the same way); then the alert is
    // not left raised, so the next check tries again.
    let refused = until(
        Duration::from_secs(15),
        || hub.harness.audit_records("ws-1"),
        |records| records.iter().any(|r| r.path == "/alerts"),
    )
    .await;
    let attempts: Vec<_> = refused.iter().filter(|r| r.path == "/alerts").collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        attempts[0].decision,
        patchbay::storage::audit::Decision::Denied
    );
    assert!(
        attempts[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("127.0.0.2")),
        "{attempts:?}"
    );
    let shown = until(
        Duration::from_secs(15),
        || async { hub.call("GET", "/dead-letter-alert", None).await.1 },
        |v| v["raised"] == json!(false) && v["dead"] == json!(1),
    )
    .await;
    assert_eq!(shown["raised"], false, "{shown}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the refused address saw a connection"
    );
}
