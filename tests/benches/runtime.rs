//! Runtime benchmarks (goals, not assertions; results in BENCHMARKS.md):
//! (a) a fresh instance from the pre-instantiated component, a no-op call, drop;
//! (b) one JSON transform, natively and as a plugin, on CRM-like payloads.

use criterion::{
    BatchSize, Bencher, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::{Binding, LoadedPlugin, Runtime};
use patchbay_tests::{Harness, crm_page, plugins::CRM_TRANSFORM};
use serde_json::Value;
use std::sync::Arc;

/// The crm-transform plugin installed and bound, with a single-threaded
/// executor to drive its calls.
struct Bench {
    rt: tokio::runtime::Runtime,
    _harness: Harness,
    sandbox: Arc<Runtime>,
    plugin: Arc<LoadedPlugin>,
    binding: Binding,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let harness = match std::env::var("PATCHBAY_BENCH_MAX_INSTANCES") {
            // Valgrind cannot reserve the default pool's address space
            // (BENCHMARKS.md, "Instruction counts").
            Ok(n) => Harness::with_limits(OperatorLimits {
                max_instances: n.parse().expect("PATCHBAY_BENCH_MAX_INSTANCES: a number"),
                ..OperatorLimits::default()
            }),
            Err(_) => Harness::new(),
        };
        let plugin = rt.block_on(harness.install(CRM_TRANSFORM));
        let binding = harness.binding(&plugin, "ws-bench", "bench", &[]);
        let sandbox = harness.services.catalog.runtime().clone();
        Self {
            rt,
            _harness: harness,
            sandbox,
            plugin,
            binding,
        }
    }

    /// `operation` on `input` through the sandbox alone (no schema checks).
    fn call_sandboxed(&self, b: &mut Bencher<'_>, operation: &str, input: &str) {
        b.to_async(&self.rt).iter(|| async {
            let outcome = self
                .sandbox
                .call_sandboxed(
                    &self.plugin,
                    &self.binding,
                    operation,
                    input,
                    Default::default(),
                )
                .await;
            outcome.result.expect("sandboxed call")
        })
    }

    /// `normalize-contacts` on `value` through the whole per-call path; the
    /// copy of `value` each call takes is made outside the measurement.
    fn invoke_normalize(&self, b: &mut Bencher<'_>, value: &Value, size: BatchSize) {
        b.to_async(&self.rt).iter_batched(
            || value.clone(),
            |value| async {
                let outcome = self
                    .sandbox
                    .invoke(
                        &self.plugin,
                        &self.binding,
                        "normalize-contacts",
                        value,
                        Default::default(),
                    )
                    .await;
                outcome.result.expect("normalize-contacts")
            },
            size,
        )
    }
}

fn instantiate_and_noop(c: &mut Criterion) {
    let bench = Bench::new();
    c.bench_function("instantiate + noop call + drop", |b| {
        bench.call_sandboxed(b, "noop", "{}")
    });
}

/// A fresh instance and a lookup-shaped operation (about 1.4 KiB of JSON in
/// and out), the whole per-call path: input schema, instance, call, output
/// parse and schema. Goal (issue 11): <= 20 µs p50, <= 60 µs p99.
fn lookup_shaped(c: &mut Criterion) {
    let bench = Bench::new();
    let page = crm_page(4);
    let value: Value = serde_json::from_str(&page).expect("json");
    let output = crm_normalize::transform(&page).expect("native");
    eprintln!(
        "lookup-shaped: {} bytes in, {} bytes out (goal: <= 20 µs p50, <= 60 µs p99)",
        page.len(),
        output.len()
    );
    c.bench_function("fresh instance + lookup-shaped operation (invoke)", |b| {
        bench.invoke_normalize(b, &value, BatchSize::SmallInput)
    });
    // Attribution in the same run: the operation's own work natively, and
    // the sandboxed call without the host's JSON and schema steps.
    c.bench_function("lookup-shaped operation, native", |b| {
        b.iter(|| crm_normalize::transform(&page).expect("native transform"))
    });
    c.bench_function(
        "fresh instance + lookup-shaped operation (sandboxed call)",
        |b| bench.call_sandboxed(b, "normalize-contacts", &page),
    );
}

/// Payload sizes named in the issue: about 20 KiB and about 300 KiB.
const SIZES: [(&str, usize); 2] = [("20KiB", 62), ("300KiB", 925)];

fn json_transform(c: &mut Criterion) {
    let bench = Bench::new();
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
            |b, page| bench.call_sandboxed(b, "normalize-contacts", page),
        );
        group.bench_with_input(
            BenchmarkId::new("plugin (invoke, with schema checks)", label),
            &value,
            |b, value| bench.invoke_normalize(b, value, BatchSize::LargeInput),
        );
    }
    group.finish();
}

/// (m) Plugins in Python and JavaScript against Rust: record size, install
/// (validate and compile) time, and a fresh instance + an echo call. The
/// components come from `PATCHBAY_BENCH_PYTHON_WASM` and
/// `PATCHBAY_BENCH_JS_WASM` (build `examples/python-crm` and
/// `examples/js-crm` as their READMEs say); a language without one is skipped.
fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let harness = Harness::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rust = patchbay_tests::plugins::HUBSPOT.package();
    let mut packages = vec![("rust (hubspot)", None, rust)];
    for (language, variable, example) in [
        (
            "python (python-crm)",
            "PATCHBAY_BENCH_PYTHON_WASM",
            "python-crm",
        ),
        ("javascript (js-crm)", "PATCHBAY_BENCH_JS_WASM", "js-crm"),
    ] {
        let Ok(wasm) = std::env::var(variable) else {
            eprintln!("(m) {language} skipped: set {variable} to a built examples/{example}");
            continue;
        };
        let manifest = root.join(format!("examples/{example}/plugin.toml"));
        let package = patchbay_tests::signed(patchbay::runtime::package::Package {
            manifest_text: std::fs::read_to_string(manifest).expect("manifest"),
            wasm: std::fs::read(wasm).expect("component"),
            signature: None,
        });
        packages.push((language, Some(example), package));
    }
    for (language, _, package) in &packages {
        let started = std::time::Instant::now();
        rt.block_on(harness.services.catalog.install(package.clone()))
            .expect("install");
        eprintln!(
            "(m) {language}: {} KiB, installed (validated and compiled) in {} ms",
            package.wasm.len() / 1024,
            started.elapsed().as_millis()
        );
    }
    let sandbox = harness.services.catalog.runtime().clone();
    for (language, example, _) in &packages {
        let Some(example) = example else { continue };
        let plugin = rt
            .block_on(harness.services.catalog.get(example))
            .expect("loaded");
        let binding = harness.binding(&plugin, "ws-bench", example, &[]);
        c.bench_function(
            &format!("{language}: fresh instance + echo call + drop"),
            |b| {
                b.to_async(&rt).iter(|| async {
                    sandbox
                        .call_sandboxed(&plugin, &binding, "echo", "{}", Default::default())
                        .await
                        .result
                        .expect("echo")
                })
            },
        );
    }
}

criterion_group!(
    benches,
    instantiate_and_noop,
    lookup_shaped,
    json_transform,
    languages
);
criterion_main!(benches);
