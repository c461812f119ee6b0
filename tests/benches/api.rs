//! API benchmark (a goal, not an assertion; results in BENCHMARKS.md (d)):
//! what the HTTP API adds to an invocation on the contact-center path:
//! token check, workspace and connection lookups, plugin and binding, the
//! error table, over a loopback keep-alive connection. Baselines: the same
//! operation invoked in-process, and `GET /healthz` over the same connection.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use patchbay_tests::{Harness, OPERATOR_TOKEN, api_call, plain_http_client, plugins::PROBE};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn api_invocation(c: &mut Criterion) {
    let rt = runtime();
    let harness = Harness::new();
    let (api, token) = rt.block_on(async {
        harness.ensure(PROBE).await;
        let api = harness.serve_api().await;
        let operator = Some(OPERATOR_TOKEN);
        api_call(
            "POST",
            &api,
            "/v1/workspaces",
            operator,
            Some(json!({ "id": "acme" })),
        )
        .await;
        let (status, _) = api_call(
            "PUT",
            &api,
            "/v1/workspaces/acme/connections/crm",
            operator,
            Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
        )
        .await;
        assert_eq!(status, 200);
        let (_, issued) = api_call(
            "POST",
            &api,
            "/v1/workspaces/acme/tokens",
            operator,
            Some(json!({})),
        )
        .await;
        (api, issued["token"].as_str().expect("token").to_owned())
    });
    let client = plain_http_client();
    let url = format!("{api}/v1/workspaces/acme/connections/crm/operations/echo");
    let body = json!({ "input": { "caller": "+15550100" } }).to_string();
    let mut group = c.benchmark_group("api");

    let plugin = rt.block_on(harness.ensure(PROBE));
    let binding = harness.binding(&plugin, "acme", "crm", &[]);
    let sandbox = harness.services.catalog.runtime().clone();
    let input = json!({ "caller": "+15550100" });
    group.bench_function("invoke in-process (baseline)", |b| {
        b.to_async(&rt).iter_batched(
            || input.clone(),
            |input| async {
                let outcome = sandbox
                    .invoke(&plugin, &binding, "echo", input, Default::default())
                    .await;
                outcome.result.expect("echo")
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("GET /healthz over loopback (baseline)", |b| {
        b.to_async(&rt).iter(|| async {
            let response = client
                .get(format!("{api}/healthz"))
                .send()
                .await
                .expect("send");
            response.bytes().await.expect("body")
        })
    });
    for (label, bearer) in [
        ("workspace token", token.as_str()),
        ("operator token", OPERATOR_TOKEN),
    ] {
        group.bench_function(format!("POST operations/echo, {label}"), |b| {
            b.to_async(&rt).iter(|| async {
                let response = client
                    .post(&url)
                    .bearer_auth(bearer)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, api_invocation);
criterion_main!(benches);
