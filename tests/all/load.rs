//! The load generator the benchmarks and `patchbay-load` use: it counts what
//! it sends, stops at its bounds, and tells failures from answers.

use patchbay_tests::load::{self, ProcessUsage, Settings, Target};
use patchbay_tests::{Harness, OPERATOR_TOKEN, plugins::PROBE};
use serde_json::json;
use std::time::Duration;

async fn echo_target(token: &str) -> (Harness, Target) {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;
    assert_eq!(patchbay_tests::create_workspace(&api, "acme").await.0, 201);
    let (status, body) = patchbay_tests::operator_call(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let target = Target {
        address: api.trim_start_matches("http://").parse().expect("address"),
        path: "/v1/workspaces/acme/connections/crm/operations/echo".into(),
        token: token.into(),
        body: json!({ "input": { "caller": "+15550100" } })
            .to_string()
            .into(),
    };
    (harness, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_the_requests_asked_and_reports_each() {
    let (_harness, target) = echo_target(OPERATOR_TOKEN).await;
    let settings = Settings {
        concurrency: 4,
        requests: 30,
        time_limit: Duration::from_secs(30),
    };
    let report = load::run(&target, settings).await;
    assert_eq!(
        (report.succeeded, report.failed()),
        (30, 0),
        "{}",
        report.summary()
    );
    assert_eq!(report.latencies.len(), 30);
    assert!(report.latencies.windows(2).all(|w| w[0] <= w[1]), "sorted");
    assert!(report.percentile(50.0) <= report.percentile(99.0));
    assert!(report.throughput() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_by_status() {
    let (_harness, target) = echo_target("pbo_not-the-token").await;
    let settings = Settings {
        concurrency: 2,
        requests: 6,
        time_limit: Duration::from_secs(30),
    };
    let report = load::run(&target, settings).await;
    assert_eq!(report.succeeded, 0);
    assert_eq!(
        report.errors.get("status 401"),
        Some(&6),
        "{}",
        report.summary()
    );
    assert!(report.summary().contains("6 × status 401"));
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let target = Target {
        address,
        path: "/".into(),
        token: String::new(),
        body: Default::default(),
    };
    let settings = Settings {
        concurrency: 1,
        requests: 3,
        time_limit: Duration::from_secs(10),
    };
    let report = load::run(&target, settings).await;
    assert_eq!((report.succeeded, report.failed()), (0, 3));
    assert!(
        report.errors.keys().all(|what| what.starts_with("connect")),
        "{:?}",
        report.errors
    );
}

#[test]
fn reads_a_process_cpu_time_and_memory() {
    let usage = ProcessUsage::of(std::process::id()).expect("/proc of this process");
    assert!(usage.rss_bytes > 0 && usage.peak_rss_bytes >= usage.rss_bytes);
    assert!(ProcessUsage::of(u32::MAX).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_scenario_runs_on_the_real_binary() {
    let upstream = load::Upstream::start(load::hubspot_search_answer()).await;
    let server = load::Server::start(std::path::Path::new(crate::spawn::BINARY), &[]);
    let target = load::hubspot_scenario(&server, upstream.address).await;
    let settings = Settings {
        concurrency: 2,
        requests: 10,
        time_limit: Duration::from_secs(30),
    };
    let report = load::run(&target, settings).await;
    assert_eq!(
        (report.succeeded, report.failed()),
        (10, 0),
        "{}",
        report.summary()
    );
    assert_eq!(
        upstream.served.load(std::sync::atomic::Ordering::Relaxed),
        10,
        "one upstream request per lookup"
    );
    let usage = ProcessUsage::of(server.pid()).expect("the server's usage");
    assert!(usage.cpu > Duration::ZERO && usage.rss_bytes > 0);
    // Stopped, it keeps its data directory for a restart.
    let data = server.stop();
    assert!(data.path().exists());
}
