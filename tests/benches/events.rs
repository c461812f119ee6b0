//! Sustained event delivery (issue 13; the goal is printed beside each
//! figure, never asserted; results in BENCHMARKS.md).
//!
//! Events are published in batches of 500 by 4 concurrent clients, each
//! batch acknowledged only once it and its deliveries are flushed to disk
//! (the embedded sled store in a temporary directory), and delivered by the
//! dispatcher through the sandbox (the probe's `deliver` action: a POST to
//! a lean loopback upstream, with the idempotency key). Measured: events
//! accepted per second, and events delivered per second from the first
//! publish to the last delivery; once without a transform, once with one
//! (the probe's `summarize`, a second sandboxed call per delivery).
//!
//! `cargo bench -p patchbay-tests --bench events`; `PATCHBAY_BENCH_EVENTS`
//! sets how many events per scenario (default 20,000). Bounded in count and time.

use patchbay::events::dispatch::Dispatcher;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::limits::OperatorLimits;
use patchbay::policy::rate::RateLimit;
use patchbay_tests::load::Upstream;
use patchbay_tests::{Harness, plugins};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WS: &str = "bench";
const BATCH: usize = 500;
const PUBLISHERS: usize = 4;
const TIME_LIMIT: Duration = Duration::from_secs(90);
const GOAL: f64 = 5_000.0;

fn main() {
    let events: usize = std::env::var("PATCHBAY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        for transform in [false, true] {
            scenario(events, transform).await;
        }
    });
}

async fn scenario(events: usize, transform: bool) {
    // The operator's default pace (5,000 requests/s per origin) would be
    // the ceiling measured; lifted, so the host's own rate is.
    let harness = Harness::with_policy(OperatorPolicy {
        limits: OperatorLimits {
            default_rate_limit: RateLimit {
                requests: 1_000_000,
                per_seconds: 1,
            },
            ..OperatorLimits::default()
        },
        addresses: patchbay::policy::ssrf::AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        ..OperatorPolicy::default()
    });
    harness.ensure(plugins::PROBE).await;
    let crm = Upstream::start(json!({ "id": 1 })).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace(WS).await.expect("workspace");
    for name in ["crm", "maps"] {
        let request = serde_json::from_value(json!({ "plugin": "probe",
            "config": { "upstream": format!("http://{}", crm.address) },
            "grants": { "approve_all_requested": true } }))
        .expect("request");
        tenancy
            .put_connection(WS, name, request)
            .await
            .expect("connection");
    }
    let events_flow = harness.services.events.clone();
    let mut subscription = json!({ "types": ["call.*"],
        "destination": { "connection": "crm", "operation": "deliver" } });
    if transform {
        subscription["transform"] = json!({ "connection": "maps", "operation": "summarize" });
    }
    events_flow
        .put_subscription(
            WS,
            "to-crm",
            serde_json::from_value(subscription).expect("subscription"),
        )
        .await
        .expect("subscribe");
    let dispatcher = Dispatcher::start(events_flow.clone());
    let started = Instant::now();
    let batches = events.div_ceil(BATCH);
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let events_flow = events_flow.clone();
        publishers.push(tokio::spawn(async move {
            for b in (p..batches).step_by(PUBLISHERS) {
                let batch: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(events))
                    .map(|n| {
                        json!({ "id": format!("e{n}"), "type": "call.ended", "source": "cc-hub",
                        "occurred_at": "2026-12-02T10:00:00Z", "subject": "+16502530000",
                        "data": { "duration_s": 42, "n": n } })
                    })
                    .collect();
                events_flow
                    .publish(WS, Value::Array(batch))
                    .await
                    .expect("publish");
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let accepted_in = started.elapsed();
    while crm.served.load(Ordering::Relaxed) < events as u64 && started.elapsed() < TIME_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_in = started.elapsed();
    let delivered = crm.served.load(Ordering::Relaxed);
    dispatcher.shutdown(Duration::from_secs(5)).await;
    let rate = delivered as f64 / delivered_in.as_secs_f64();
    println!(
        "events {} transform: {events} accepted in {:.2} s ({:.0}/s, durable); {delivered} delivered in {:.2} s: {rate:.0} events/s (goal ≥ {GOAL:.0}/s){}",
        if transform { "with" } else { "without" },
        accepted_in.as_secs_f64(),
        events as f64 / accepted_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        if delivered < events as u64 {
            " — stopped at the time limit"
        } else {
            ""
        },
    );
}
