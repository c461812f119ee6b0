//! Whole-host benchmarks (issue 11; goals printed beside each figure, never
//! asserted; results in BENCHMARKS.md (f)). Each runs the real `patchbay`
//! binary as a process, so the server's CPU time and memory are its own:
//!
//! 1. API invocation: the bundled HubSpot plugin's `find-contact` through
//!    `POST …/operations/find-contact` (auth, connection, binding, sandbox,
//!    egress with audit, the answer) against a HubSpot-shaped loopback
//!    keep-alive upstream, at concurrency 1 and 50.
//! 2. Start-up: process start to the first successful invocation, with ten
//!    plugins installed and the compiled cache warm.
//! 3. Memory: resident set per invocation in flight on a slow upstream.
//!
//! `cargo bench -p patchbay-tests --bench host`. Every run is bounded in
//! count and time.

use patchbay_tests::load::{self, ProcessUsage, Server, Settings, Upstream};
use patchbay_tests::plugins;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_patchbay-under-test");

fn main() {
    // `cargo bench` passes `--bench`; a filter (any other argument) picks benchmarks.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if wanted("api invocation") {
        runtime.block_on(api_invocation());
    }
    if wanted("start-up") {
        runtime.block_on(start_up());
    }
    if wanted("memory per in-flight call") {
        runtime.block_on(memory_per_call());
    }
}

async fn api_invocation() {
    let upstream = Upstream::start(load::hubspot_search_answer()).await;
    let server = Server::start(Path::new(BINARY), &[]);
    let target = load::hubspot_scenario(&server, upstream.address).await;
    let limit = Duration::from_secs(20);
    // Warm-up: caches, pooled upstream connections, the instance pool.
    load::run(
        &target,
        Settings {
            concurrency: 8,
            requests: 1_000,
            time_limit: limit,
        },
    )
    .await;
    for (concurrency, requests) in [(1, 4_000), (50, 20_000)] {
        let before = ProcessUsage::of(server.pid()).expect("server usage");
        let report = load::run(
            &target,
            Settings {
                concurrency,
                requests,
                time_limit: limit,
            },
        )
        .await;
        let after = ProcessUsage::of(server.pid()).expect("server usage");
        let answered = report.latencies.len().max(1) as u32;
        let cpu = after.cpu.saturating_sub(before.cpu) / answered;
        println!(
            "api invocation, HubSpot find-contact, concurrency {concurrency}: \
             {:.0}/s (goal >= 2000/s at 50), p50 {}, p99 {}, server CPU {} per invocation \
             (goal <= 250 µs), {} failed",
            report.throughput(),
            load::micros(report.percentile(50.0)),
            load::micros(report.percentile(99.0)),
            load::micros(cpu),
            report.failed(),
        );
    }
}

/// Ten plugins: the bundled HubSpot connector and nine test plugins.
const INSTALLED: [patchbay_tests::TestPlugin; 9] = [
    plugins::PROBE,
    plugins::CRM_TRANSFORM,
    plugins::STACK_OVERFLOW,
    plugins::GROW_MEMORY,
    plugins::INVALID_JSON,
    plugins::LOOP_FOREVER,
    plugins::OVERSIZED_OUTPUT,
    plugins::PANIC,
    plugins::TRAP,
];

async fn start_up() {
    let packages = tempfile::tempdir().expect("tempdir");
    for plugin in INSTALLED {
        plugin.write_dir(packages.path());
    }
    let dir = packages.path().to_str().expect("utf-8 path");
    // First start: installs and compiles everything, and sets up a connection.
    let server = Server::start(Path::new(BINARY), &["--plugins-dir", dir]);
    let token = server.operator_token.clone();
    let (status, _) = server
        .operator_call("POST", "/v1/workspaces", Some(json!({ "id": "acme" })))
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .operator_call(
            "PUT",
            "/v1/workspaces/acme/connections/probe",
            Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = server.operator_call("GET", "/v1/plugins", None).await;
    let installed = listed
        .as_array()
        .or_else(|| listed["plugins"].as_array())
        .map_or(0, Vec::len);
    let mut data = server.stop();
    let client = patchbay_tests::plain_http_client();
    let mut samples = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let server = Server::start_on(Path::new(BINARY), data, &token, &[]);
        let url = format!(
            "{}/v1/workspaces/acme/connections/probe/operations/echo",
            server.base_url()
        );
        loop {
            let answer = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "input": { "caller": "+15550100" } }))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no successful invocation within 30 s of start"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed());
        data = server.stop();
    }
    samples.sort();
    println!(
        "start-up, {installed} plugins installed, compiled cache warm: process start to first \
         successful invocation median {} (min {}, max {}; goal <= 50 ms)",
        load::micros(samples[samples.len() / 2]),
        load::micros(samples[0]),
        load::micros(samples[samples.len() - 1]),
    );
}

async fn memory_per_call() {
    // Each call waits on the upstream for 2.5 s (HubSpot's plugin gives up
    // at 3 s). The caps (32 calls per connection and 64 per workspace, 16
    // outbound requests per connection) need 4 workspaces of 4 connections
    // for 200 at once.
    const IN_FLIGHT: usize = 200;
    let upstream =
        Upstream::start_after(load::hubspot_search_answer(), Duration::from_millis(2500)).await;
    let server = Server::start(Path::new(BINARY), &[]);
    let mut targets = Vec::new();
    for w in 0..4 {
        for c in 0..4 {
            let workspace = format!("ws-{w}");
            let connection = format!("crm-{c}");
            targets.push(
                load::hubspot_connection(&server, upstream.address, &workspace, &connection).await,
            );
        }
    }
    // Warm every connection once (bindings, upstream pool, instance pool).
    for target in &targets {
        load::run(
            target,
            Settings {
                concurrency: 1,
                requests: 1,
                time_limit: Duration::from_secs(10),
            },
        )
        .await;
    }
    let idle = ProcessUsage::of(server.pid()).expect("usage").rss_bytes;
    let served = upstream.served.load(std::sync::atomic::Ordering::Relaxed);
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let target = targets[i % targets.len()].clone();
            tokio::spawn(async move {
                load::run(
                    &target,
                    Settings {
                        concurrency: 1,
                        requests: 1,
                        time_limit: Duration::from_secs(20),
                    },
                )
                .await
            })
        })
        .collect();
    let waiting_since = Instant::now();
    while upstream.served.load(std::sync::atomic::Ordering::Relaxed) < served + IN_FLIGHT as u64
        && waiting_since.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = upstream.served.load(std::sync::atomic::Ordering::Relaxed) - served;
    let busy = ProcessUsage::of(server.pid()).expect("usage").rss_bytes;
    let mut failed = 0;
    for call in calls {
        failed += call.await.expect("call").failed();
    }
    println!(
        "memory per in-flight call: {waiting} calls waiting on a slow upstream: RSS {:.1} -> {:.1} MiB, \
         {:.0} KiB per call (goal <= 256 KiB); {failed} failed",
        idle as f64 / 1048576.0,
        busy as f64 / 1048576.0,
        busy.saturating_sub(idle) as f64 / 1024.0 / waiting.max(1) as f64,
    );
}
