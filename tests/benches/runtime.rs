//! Runtime benchmarks (goals, not assertions; results in BENCHMARKS.md):
//! (a) a fresh instance from the pre-instantiated component, a no-op call, drop;
//! (b) one JSON transform, natively and as a plugin, on CRM-like payloads.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use patchbay_tests::{Harness, crm_page, plugins::CRM_TRANSFORM};
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn instantiate_and_noop(c: &mut Criterion) {
    let rt = runtime();
    let harness = Harness::new();
    let plugin = rt.block_on(harness.install(CRM_TRANSFORM));
    let binding = harness.binding(&plugin, "ws-bench", "bench", &[]);
    let sandbox = harness.services.catalog.runtime().clone();
    c.bench_function("instantiate + noop call + drop", |b| {
        b.to_async(&rt).iter(|| async {
            let outcome = sandbox
                .call_sandboxed(&plugin, &binding, "noop", "{}", Default::default())
                .await;
            outcome.result.expect("noop succeeds")
        })
    });
}

/// A fresh instance and a lookup-shaped operation (about 1.4 KiB of JSON in
/// and out), the whole per-call path: input schema, instance, call, output
/// parse and schema. Goal (issue 11): <= 20 µs p50, <= 60 µs p99.
fn lookup_shaped(c: &mut Criterion) {
    let rt = runtime();
    let harness = Harness::new();
    let plugin = rt.block_on(harness.install(CRM_TRANSFORM));
    let binding = harness.binding(&plugin, "ws-bench", "bench", &[]);
    let sandbox = harness.services.catalog.runtime().clone();
    let page = crm_page(4);
    let value: Value = serde_json::from_str(&page).expect("json");
    let output = crm_normalize::transform(&page).expect("native");
    eprintln!(
        "lookup-shaped: {} bytes in, {} bytes out (goal: <= 20 µs p50, <= 60 µs p99)",
        page.len(),
        output.len()
    );
    c.bench_function("fresh instance + lookup-shaped operation (invoke)", |b| {
        b.to_async(&rt).iter_batched(
            || value.clone(),
            |value| async {
                let outcome = sandbox
                    .invoke(
                        &plugin,
                        &binding,
                        "normalize-contacts",
                        value,
                        Default::default(),
                    )
                    .await;
                outcome.result.expect("lookup-shaped call")
            },
            BatchSize::SmallInput,
        )
    });
}

/// Payload sizes named in the issue: about 20 KiB and about 300 KiB.
const SIZES: [(&str, usize); 2] = [("20KiB", 62), ("300KiB", 925)];

fn json_transform(c: &mut Criterion) {
    let rt = runtime();
    let harness = Harness::new();
    let plugin = rt.block_on(harness.install(CRM_TRANSFORM));
    let binding = harness.binding(&plugin, "ws-bench", "bench", &[]);
    let sandbox = harness.services.catalog.runtime().clone();
    let mut group = c.benchmark_group("crm transform");
    for (label, contacts) in SIZES {
        let page = crm_page(contacts);
        let value: Value = serde_json::from_str(&page).expect("json");
        eprintln!("payload {label}: {} bytes", page.len());
        group.throughput(Throughput::Bytes(page.len() as u64));
        group.bench_with_input(BenchmarkId::new("native", label), &page, |b, page| {
            b.iter(|| crm_normalize::transform(page).expect("native transform"))
        });
        group.bench_with_input(
            BenchmarkId::new("plugin (sandboxed call)", label),
            &page,
            |b, page| {
                b.to_async(&rt).iter(|| async {
                    let outcome = sandbox
                        .call_sandboxed(
                            &plugin,
                            &binding,
                            "normalize-contacts",
                            page,
                            Default::default(),
                        )
                        .await;
                    outcome.result.expect("plugin transform")
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("plugin (invoke, with schema checks)", label),
            &value,
            |b, value| {
                b.to_async(&rt).iter_batched(
                    || value.clone(),
                    |value| async {
                        let outcome = sandbox
                            .invoke(
                                &plugin,
                                &binding,
                                "normalize-contacts",
                                value,
                                Default::default(),
                            )
                            .await;
                        outcome.result.expect("plugin transform")
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, instantiate_and_noop, lookup_shaped, json_transform);
criterion_main!(benches);
