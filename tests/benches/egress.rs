//! Egress benchmarks (goals, not assertions; results in BENCHMARKS.md):
//! the per-request cost the host's outbound path adds over a bare pooled
//! client (goal ≤ 50 µs), and destination-rule matching on its own.

use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use patchbay::egress::resolve::SystemLookup;
use patchbay::egress::{Caller, Egress, EgressLimits};
use patchbay::policy::call::CallId;
use patchbay::policy::http::{Destination, Target};
use patchbay::policy::limits::OperatorLimits;
use patchbay::policy::rate::RateLimit;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::storage::Scope;
use patchbay_tests::Harness;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The same GET to a loopback upstream, by a bare pooled reqwest client and
/// through `Egress::send` (address policy, circuit breaker, rate limiter,
/// in-flight slot, traceparent, audit record, body size caps, deadline).
fn hook_overhead(c: &mut Criterion) {
    let rt = runtime();
    let harness = Harness::new();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(path("/contacts"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\":\"512\"}"))
            .mount(&server)
            .await;
        server
    });
    let url = format!("{}/contacts", server.uri());

    let bare = patchbay_tests::plain_http_client();
    let mut group = c.benchmark_group("outbound GET to loopback");
    group.bench_function("bare pooled reqwest client", |b| {
        b.to_async(&rt).iter(|| async {
            let response = bare.get(&url).send().await.expect("send");
            response.bytes().await.expect("body")
        })
    });

    let egress = Egress::new(
        AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        Arc::new(SystemLookup),
        EgressLimits::from_operator(&OperatorLimits::default()),
        harness.services.credentials.clone(),
        harness.services.audit.clone(),
    )
    .expect("egress");
    let scope = Arc::new(Scope {
        workspace: "ws-bench".into(),
        connection: "bench".into(),
    });
    let id = Arc::new(CallId {
        workspace: scope.workspace.clone(),
        connection: scope.connection.clone(),
        plugin: "bench".into(),
        version: "1.0.0".into(),
        operation: "fetch".into(),
        invocation_id: "0af7651916cd43dd8448eb211c80319c".into(),
    });
    group.bench_function("through the host's egress", |b| {
        b.to_async(&rt).iter(|| async {
            let request = http::Request::get(url.as_str())
                .body(
                    http_body_util::Empty::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .expect("request");
            let call = Caller {
                deadline: Instant::now() + Duration::from_secs(5),
                id: id.clone(),
                scope: scope.clone(),
                // High enough never to wait: the limiter's own cost is what is measured.
                rate_limit: RateLimit {
                    requests: 1_000_000,
                    per_seconds: 1,
                },
                credential: None,
            };
            let target = Target::parse("GET", url.as_str()).expect("target");
            let response = egress
                .send(request, target, Default::default(), &call)
                .await
                .expect("send");
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        })
    });
    group.finish();
}

fn rule_matching(c: &mut Criterion) {
    let rules: Vec<_> = [
        "POST https://api.hubapi.com/crm/v3/objects/contacts/search",
        "GET https://*.my.salesforce.com/services/data",
        "https://[10.20.0.0/16]:8000-8100/api",
    ]
    .iter()
    .map(|entry| {
        Destination::parse(entry)
            .expect("entry")
            .fill(&Default::default())
            .expect("rule")
    })
    .collect();
    let url = "https://acme.my.salesforce.com/services/data/v60.0/query";
    c.bench_function("match a request against 3 destination rules", |b| {
        let target = Target::parse("GET", url).expect("target");
        b.iter(|| rules.iter().any(|rule| rule.allows(&target)))
    });
    // The gate parses each request's URL once, then matches.
    c.bench_function("parse a request URL and match it against 3 rules", |b| {
        b.iter(|| {
            let target = Target::parse("GET", url).expect("target");
            rules.iter().any(|rule| rule.allows(&target))
        })
    });
}

criterion_group!(benches, hook_overhead, rule_matching);
criterion_main!(benches);
