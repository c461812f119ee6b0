//! In-call retries, Retry-After, traceparent and the per-invocation request cap,
//! against a scripted upstream on loopback.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::InvokeOutcome;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An upstream answering `first` for the first `times` requests, then 200.
async fn flaky(first: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

async fn fetch_with(harness: &Harness, server: &MockServer, request: Value) -> InvokeOutcome {
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let mut input = request;
    input["url"] = json!(format!("{}/allowed/x", server.uri()));
    harness.invoke(&plugin, &binding, "fetch", input).await
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_retryable_statuses() {
    for method in ["GET", "HEAD", "PUT"] {
        let server = flaky(ResponseTemplate::new(503), 2).await;
        let outcome = fetch_with(&Harness::new(), &server, json!({ "method": method })).await;
        assert_eq!(outcome.result.expect("fetch")["status"], 200, "{method}");
        assert_eq!(requests(&server).await, 3, "{method}");
    }
}

#[tokio::test]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let server = flaky(ResponseTemplate::new(503), 2).await;
    let outcome = fetch_with(
        &Harness::new(),
        &server,
        json!({ "method": "POST", "body": "{}" }),
    )
    .await;
    assert_eq!(outcome.result.expect("fetch")["status"], 503);
    assert_eq!(requests(&server).await, 1);

    let server = flaky(ResponseTemplate::new(503), 2).await;
    let keyed = json!({ "method": "POST", "body": "{}", "headers": { "Idempotency-Key": "k-1" } });
    let outcome = fetch_with(&Harness::new(), &server, keyed).await;
    assert_eq!(outcome.result.expect("fetch")["status"], 200);
    assert_eq!(requests(&server).await, 3);
}

#[tokio::test]
async fn non_retryable_statuses_are_returned_at_once() {
    for status in [400, 404, 501] {
        let server = flaky(ResponseTemplate::new(status), 1).await;
        let outcome = fetch_with(&Harness::new(), &server, json!({})).await;
        assert_eq!(outcome.result.expect("fetch")["status"], status);
        assert_eq!(requests(&server).await, 1, "{status}");
    }
}

#[tokio::test]
async fn attempts_are_bounded() {
    let server = flaky(ResponseTemplate::new(502), 100).await;
    let outcome = fetch_with(&Harness::new(), &server, json!({})).await;
    assert_eq!(outcome.result.expect("fetch")["status"], 502);
    assert_eq!(requests(&server).await, 3);
}

#[tokio::test]
async fn retry_after_within_the_deadline_is_waited_for() {
    let server = flaky(
        ResponseTemplate::new(429).insert_header("retry-after", "0"),
        1,
    )
    .await;
    let outcome = fetch_with(&Harness::new(), &server, json!({})).await;
    assert_eq!(outcome.result.expect("fetch")["status"], 200);
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn retry_after_past_the_deadline_goes_back_to_the_plugin_at_once() {
    let in_an_hour = httpdate::fmt_http_date(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    for value in ["3600".to_owned(), in_an_hour] {
        let server = flaky(
            ResponseTemplate::new(429).insert_header("retry-after", value.as_str()),
            1,
        )
        .await;
        let output = fetch_with(&Harness::new(), &server, json!({}))
            .await
            .result
            .expect("fetch");
        assert_eq!(output["status"], 429, "{value}");
        let wait = output["retry_after_ms"]
            .as_u64()
            .expect("retry-after understood");
        assert!((3_590_000..=3_600_000).contains(&wait), "{value}: {wait}");
        assert_eq!(requests(&server).await, 1, "{value}");
    }
}

/// An upstream's `Retry-After` is the upstream's to choose: a value past
/// any clock, in seconds or as the last HTTP date there is, hands the
/// answer back; it does not overflow the host's deadline arithmetic.
#[tokio::test]
async fn a_retry_after_past_any_clock_is_handed_back_not_a_panic() {
    let far = [
        u64::MAX.to_string(),
        (u64::MAX / 1000).to_string(),
        "Fri, 31 Dec 9999 23:59:59 GMT".to_owned(),
    ];
    for value in far {
        let server = flaky(
            ResponseTemplate::new(503).insert_header("retry-after", value.as_str()),
            1,
        )
        .await;
        let output = fetch_with(&Harness::new(), &server, json!({}))
            .await
            .result
            .unwrap_or_else(|e| panic!("{value}: {e:?}"));
        assert_eq!(output["status"], 503, "{value}");
        if value == u64::MAX.to_string() {
            assert_eq!(output["retry_after_ms"], u64::MAX);
        }
        assert_eq!(requests(&server).await, 1, "{value}");
    }
}

#[tokio::test]
async fn the_sdk_turns_a_429_into_rate_limited() {
    let harness = Harness::new();
    let server = MockServer::start().await;
    Mock::given(path("/crm/v3/objects/contacts/search"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let plugin = harness.install(patchbay_tests::plugins::HUBSPOT).await;
    let binding = harness.binding(&plugin, "ws-1", "hubspot", &[("base_url", &server.uri())]);
    harness
        .set_credential(
            "hubspot",
            "private_app_token",
            patchbay::egress::credentials::Secret::Bearer {
                token: "pat-test-token".into(),
            },
        )
        .await;
    let outcome = harness
        .invoke(&plugin, &binding, "find-contact", json!({ "phone": "+1" }))
        .await;
    assert_eq!(
        outcome.result,
        Err(InvokeError::Plugin(PluginFailure::RateLimited {
            retry_after_ms: 120_000
        }))
    );
}

#[tokio::test]
async fn every_request_carries_a_traceparent_with_the_invocation_id() {
    let server = flaky(ResponseTemplate::new(503), 1).await;
    let outcome = fetch_with(&Harness::new(), &server, json!({})).await;
    assert!(outcome.result.is_ok());
    let received = server.received_requests().await.expect("recording");
    assert_eq!(received.len(), 2);
    let mut spans = Vec::new();
    for request in &received {
        let value = request
            .headers
            .get("traceparent")
            .expect("traceparent")
            .to_str()
            .expect("ascii");
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "{value}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", outcome.invocation_id.as_str(), "01"),
            "{value}"
        );
        spans.push(parts[2].to_owned());
    }
    assert_ne!(spans[0], spans[1], "each attempt is its own span");
}

#[tokio::test]
async fn an_invocation_may_start_only_so_many_requests() {
    let limits = OperatorLimits {
        max_outbound_requests: 2,
        ..OperatorLimits::default()
    };
    let harness = Harness::with_limits(limits);
    let server = flaky(ResponseTemplate::new(200), 1).await;
    let outcome = fetch_with(&harness, &server, json!({ "times": 3 })).await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
        ),
        "{:?}",
        outcome.result
    );
    assert_eq!(requests(&server).await, 2);
    assert!(
        outcome.denials[0].reason.contains("outbound request limit"),
        "{:?}",
        outcome.denials
    );
}

#[tokio::test]
async fn a_failing_upstream_trips_the_breaker_which_half_opens_and_closes() {
    use patchbay::policy::limits::BreakerConfig;
    let limits = OperatorLimits {
        circuit_breaker: BreakerConfig {
            failures: 3,
            window_ms: 60_000,
            cool_down_ms: 300,
        },
        ..OperatorLimits::default()
    };
    let harness = Harness::with_limits(limits);
    let server = flaky(ResponseTemplate::new(500), 3).await;

    // Three failed attempts (one request, retried) open the breaker...
    let outcome = fetch_with(&harness, &server, json!({})).await;
    assert_eq!(outcome.result.expect("fetch")["status"], 500);
    assert_eq!(requests(&server).await, 3);

    // ...so the next call fails fast, without reaching the upstream.
    let outcome = fetch_with(&harness, &server, json!({})).await;
    match outcome.result {
        Err(InvokeError::Plugin(PluginFailure::Upstream { status: 0, message })) => {
            assert!(message.contains("circuit breaker is open"), "{message}")
        }
        other => panic!("expected a fail-fast circuit error, got {other:?}"),
    }
    assert_eq!(requests(&server).await, 3);
    // The operator sees it in the metrics, named by workspace and origin.
    let metrics = patchbay_tests::metrics_text(&harness);
    let tripped = format!(
        "patchbay_circuit_breaker_tripped{{workspace=\"ws-1\",origin=\"{}\",state=\"open\"}} 1",
        server.uri()
    );
    assert!(metrics.contains(&tripped), "{tripped} in {metrics}");
    assert!(
        metrics.contains("patchbay_outbound_requests_total{decision=\"held\"} 1"),
        "{metrics}"
    );
    // And in the API, for the operator only.
    let api = harness.serve_api().await;
    let (status, _) = patchbay_tests::api_get(&api, "/v1/egress/breakers", None).await;
    assert_eq!(status, 401);
    let (status, body) = patchbay_tests::api_get(
        &api,
        "/v1/egress/breakers",
        Some(patchbay_tests::OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{ "workspace": "ws-1", "origin": server.uri(), "state": "open" }])
    );

    // After the cool-down one trial goes through; it succeeds and closes the breaker.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let outcome = fetch_with(&harness, &server, json!({})).await;
    assert_eq!(outcome.result.expect("trial")["status"], 200);
    let outcome = fetch_with(&harness, &server, json!({})).await;
    assert_eq!(outcome.result.expect("closed again")["status"], 200);
    assert_eq!(requests(&server).await, 5);
    let metrics = patchbay_tests::metrics_text(&harness);
    assert!(
        !metrics.contains("patchbay_circuit_breaker_tripped{"),
        "closed: {metrics}"
    );
}

#[tokio::test]
async fn the_failure_that_opens_the_breaker_is_handed_back_not_resent() {
    use patchbay::policy::limits::BreakerConfig;
    let harness = Harness::with_limits(OperatorLimits {
        circuit_breaker: BreakerConfig {
            failures: 2,
            window_ms: 60_000,
            cool_down_ms: 60_000,
        },
        ..OperatorLimits::default()
    });
    let server = flaky(ResponseTemplate::new(503), 10).await;
    // The second failure opens the breaker: the third try would be refused
    // unsent, so the plugin gets the upstream's 503 and knows it was reached.
    let outcome = fetch_with(&harness, &server, json!({})).await;
    assert_eq!(outcome.result.expect("fetch")["status"], 503);
    assert_eq!(requests(&server).await, 2);
    assert_eq!(
        outcome.circuit_open, 0,
        "nothing was refused by the breaker"
    );
    // The next call is the one the breaker holds.
    let outcome = fetch_with(&harness, &server, json!({})).await;
    assert!(outcome.result.is_err());
    assert_eq!(outcome.circuit_open, 1);
    let open_for = outcome.circuit_retry_after.expect("how long it stays open");
    assert!(
        open_for > std::time::Duration::from_secs(50)
            && open_for <= std::time::Duration::from_secs(60),
        "{open_for:?}"
    );
    assert_eq!(requests(&server).await, 2);
}
