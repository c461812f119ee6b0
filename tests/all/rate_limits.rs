//! Outbound rate limits per (workspace, upstream): requests wait for a slot
//! within their deadline, or get the host's 429 at once when the slot is later.

use patchbay::policy::limits::OperatorLimits;
use patchbay::policy::rate::RateLimit;
use patchbay::runtime::{Binding, LoadedPlugin};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The probe plugin declaring `declared` as its upstream's rate limit.
async fn probe(harness: &Harness, declared: Option<&str>) -> Arc<LoadedPlugin> {
    let package = PROBE.package_with(|m| match declared {
        Some(limit) => m.replacen(
            "[capabilities.http]\n",
            &format!("[capabilities.http]\nrate_limit = {limit}\n"),
            1,
        ),
        None => m,
    });
    let installed = harness
        .services
        .catalog
        .install(package)
        .await
        .expect("install");
    harness
        .services
        .catalog
        .get(&installed.id)
        .await
        .expect("loaded")
}

async fn burst(
    harness: &Harness,
    plugin: &LoadedPlugin,
    binding: &Binding,
    server: &MockServer,
    times: u32,
) -> Value {
    let input = json!({ "url": format!("{}/allowed/x", server.uri()), "times": times });
    harness
        .invoke(plugin, binding, "fetch", input)
        .await
        .result
        .expect("fetch")
}

fn received_within_limit(received: usize, limit: RateLimit, started: Instant) {
    let periods = started.elapsed().as_secs_f64() / limit.period().as_secs_f64();
    let allowed = limit.requests as f64 + periods.ceil() + 1.0;
    assert!(
        received as f64 <= allowed,
        "{received} requests, at most {allowed} allowed"
    );
}

#[tokio::test]
async fn the_vendors_declared_limit_holds_waiting_within_the_deadline() {
    let harness = Harness::new();
    let plugin = probe(&harness, Some("{ requests = 3, per_seconds = 1 }")).await;
    let server = upstream().await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let started = Instant::now();
    let last = burst(&harness, &plugin, &binding, &server, 12).await;
    let received = server.received_requests().await.expect("recording").len();
    received_within_limit(
        received,
        RateLimit {
            requests: 3,
            per_seconds: 1,
        },
        started,
    );
    // More than the burst went out: requests waited for slots instead of failing at once...
    assert!(received > 3, "only {received} requests were sent");
    // ...until the next slot lay past the 1 s deadline, and the host answered itself.
    assert_eq!(last["status"], 429);
    assert!(last["retry_after_ms"].as_u64().expect("retry-after") >= 1000);
}

#[tokio::test]
async fn the_operator_default_applies_when_none_is_declared() {
    let limits = OperatorLimits {
        default_rate_limit: RateLimit {
            requests: 2,
            per_seconds: 10,
        },
        ..OperatorLimits::default()
    };
    let harness = Harness::with_limits(limits);
    let plugin = probe(&harness, None).await;
    let server = upstream().await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let last = burst(&harness, &plugin, &binding, &server, 5).await;
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
    assert_eq!(last["status"], 429);
}

#[tokio::test]
async fn a_declared_limit_cannot_exceed_the_operators() {
    let limits = OperatorLimits {
        default_rate_limit: RateLimit {
            requests: 2,
            per_seconds: 10,
        },
        ..OperatorLimits::default()
    };
    let harness = Harness::with_limits(limits);
    let plugin = probe(&harness, Some("{ requests = 1000, per_seconds = 1 }")).await;
    let server = upstream().await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    burst(&harness, &plugin, &binding, &server, 5).await;
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
}

#[tokio::test]
async fn each_workspace_has_its_own_budget() {
    let limits = OperatorLimits {
        default_rate_limit: RateLimit {
            requests: 2,
            per_seconds: 10,
        },
        ..OperatorLimits::default()
    };
    let harness = Harness::with_limits(limits);
    let plugin = probe(&harness, None).await;
    let server = upstream().await;
    let a = harness.binding(&plugin, "ws-a", "probe", &[("upstream", &server.uri())]);
    let b = harness.binding(&plugin, "ws-b", "probe", &[("upstream", &server.uri())]);
    assert_eq!(
        burst(&harness, &plugin, &a, &server, 3).await["status"],
        429,
        "a used up its budget"
    );
    assert_eq!(
        burst(&harness, &plugin, &b, &server, 1).await["status"],
        200,
        "b is untouched"
    );
}

#[tokio::test]
async fn a_zero_rate_limit_is_refused_at_install() {
    let harness = Harness::new();
    let package = PROBE.package_with(|m| {
        m.replacen(
            "[capabilities.http]\n",
            "[capabilities.http]\nrate_limit = { requests = 0, per_seconds = 1 }\n",
            1,
        )
    });
    let err = harness
        .services
        .catalog
        .install(package)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("capabilities.http.rate_limit"),
        "{err}"
    );
}
