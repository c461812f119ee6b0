//! Caller-context lookup against a native Rust handler (issue 12; the goal
//! is printed beside each figure, never asserted; results in BENCHMARKS.md).
//!
//! Both make the same upstream calls to the same loopback keep-alive
//! upstreams (HubSpot contact search; Stripe customer search then open
//! invoices; Cal.com bookings), the three vendors in parallel:
//! - through Patchbay: `Lookups::run` on stored connections of the shipped
//!   plugins, a fresh sandbox per source, egress with audit, merge, masking;
//! - natively: one pooled HTTP client, the same requests, the JSON parsed
//!   and merged.
//!
//! The plugins' declared vendor rate limits (5/s, 20/s, 2/s) are removed
//! for the run, as the native handler has none; the cache is off and every
//! lookup is for a different caller, so each runs its sources.
//!
//! `cargo bench -p patchbay-tests --bench lookup`. Bounded in count and time.

use patchbay::lookup::Lookups;
use patchbay::policy::lookup::{LookupDefinition, Profile};
use patchbay_tests::load::{self, Upstream};
use patchbay_tests::{Harness, plain_http_client, plugins};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WS: &str = "bench";
const CONCURRENCY: usize = 16;
const LOOKUPS: u64 = 3000;
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(compare());
}

struct Upstreams {
    hubspot: Upstream,
    stripe: Upstream,
    cal: Upstream,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        hubspot: Upstream::routes(vec![(
            "/crm/v3/objects/contacts/search".into(),
            load::hubspot_search_answer(),
        )])
        .await,
        stripe: Upstream::routes(vec![
            (
                "/v1/customers/search".into(),
                json!({ "object": "search_result", "has_more": false, "data": [{
                    "id": "cus_1", "object": "customer", "balance": 1200, "currency": "usd", "created": 1,
                    "delinquent": false, "email": "ada@example.com", "name": "Ada Lovelace",
                    "phone": "+16502530000", "invoice_settings": { "default_payment_method": null }
                }] }),
            ),
            (
                "/v1/invoices".into(),
                json!({ "object": "list", "has_more": false, "data": [{
                    "id": "in_1", "object": "invoice", "status": "open", "amount_due": 4900,
                    "amount_remaining": 4900, "currency": "usd", "due_date": 1_700_000_000,
                    "collection_method": "send_invoice", "attempt_count": 0,
                    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/in_1"
                }] }),
            ),
        ])
        .await,
        cal: Upstream::routes(vec![(
            "/v2/bookings".into(),
            json!({ "status": "success", "data": [{
                "id": 1, "uid": "bk_1", "title": "Consultation", "status": "accepted",
                "start": "2026-12-09T09:00:00.000Z", "end": "2026-12-09T09:30:00.000Z", "metadata": {}
            }] }),
        )])
        .await,
    }
}

/// A distinct valid US number per lookup, so no result is shared.
fn caller(i: u64) -> String {
    format!("+1650253{:04}", i % 10_000)
}

async fn patchbay_lookups(up: &Upstreams) -> (Harness, Arc<Lookups>, LookupDefinition) {
    let harness = Harness::new();
    for plugin in [plugins::HUBSPOT, plugins::STRIPE, plugins::CALCOM] {
        harness.install_package(plugin.unpaced()).await;
    }
    let tenancy = Arc::new(harness.services.tenancy());
    tenancy.create_workspace(WS).await.expect("workspace");
    for (name, plugin, address, credential) in [
        ("crm", "hubspot", up.hubspot.address, "private_app_token"),
        ("billing", "stripe", up.stripe.address, "secret_key"),
        ("calendar", "calcom", up.cal.address, "api_key"),
    ] {
        let base_url = format!("http://{address}");
        harness
            .stored_connection(WS, name, (plugin, &base_url), (credential, "bench-key"))
            .await;
    }
    let definition: LookupDefinition = serde_json::from_value(json!({
        "sources": [
            { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 5000 },
            { "name": "billing", "connection": "billing", "operation": "payment-status", "provides": "payment",
              "input": { "email": "{email}" }, "deadline_ms": 5000 },
            { "name": "calendar", "connection": "calendar", "operation": "upcoming-appointments", "provides": "appointments",
              "input": { "email": "{email}" }, "deadline_ms": 5000 }
        ],
        "cache_ttl_seconds": 0
    }))
    .expect("definition");
    let lookups = Arc::new(Lookups::new(
        tenancy,
        10_000,
        harness.services.lookup_runs.clone(),
    ));
    (harness, lookups, definition)
}

/// The same calls and merge, natively.
async fn native_lookup(client: &reqwest::Client, up: &Upstreams, phone: &str) -> Value {
    let hubspot = async {
        let body = json!({
            "filterGroups": [
                { "filters": [{ "propertyName": "phone", "operator": "EQ", "value": phone }] },
                { "filters": [{ "propertyName": "mobilephone", "operator": "EQ", "value": phone }] }
            ],
            "properties": ["firstname", "lastname", "email", "phone", "mobilephone", "company", "lastmodifieddate"],
            "limit": 1
        });
        let found: Value = client
            .post(format!(
                "http://{}/crm/v3/objects/contacts/search",
                up.hubspot.address
            ))
            .bearer_auth("bench-key")
            .json(&body)
            .send()
            .await
            .expect("hubspot")
            .json()
            .await
            .expect("hubspot json");
        found["results"][0]["properties"].clone()
    };
    let stripe = async {
        let customers: Value = client
            .get(format!(
                "http://{}/v1/customers/search?query=email%3A%22ada%40example.com%22&limit=10",
                up.stripe.address
            ))
            .bearer_auth("bench-key")
            .send()
            .await
            .expect("stripe")
            .json()
            .await
            .expect("stripe json");
        let id = customers["data"][0]["id"].as_str().unwrap_or("").to_owned();
        let invoices: Value = client
            .get(format!(
                "http://{}/v1/invoices?customer={id}&status=open&limit=100",
                up.stripe.address
            ))
            .bearer_auth("bench-key")
            .send()
            .await
            .expect("invoices")
            .json()
            .await
            .expect("invoices json");
        json!({ "customer": customers["data"][0]["id"], "open": invoices["data"].as_array().map(Vec::len) })
    };
    let cal = async {
        let bookings: Value = client
            .get(format!(
                "http://{}/v2/bookings?attendeeEmail=ada%40example.com&status=upcoming%2Cunconfirmed&take=100",
                up.cal.address
            ))
            .bearer_auth("bench-key")
            .header("cal-api-version", "2024-08-13")
            .send()
            .await
            .expect("cal")
            .json()
            .await
            .expect("cal json");
        bookings["data"][0].clone()
    };
    let (contact, payment, next) = tokio::join!(hubspot, stripe, cal);
    json!({ "contact": contact, "payment": payment, "next_appointment": next })
}

/// Run `one` `LOOKUPS` times at `CONCURRENCY`, within `TIME_LIMIT`.
async fn measure<F, Fut>(one: F) -> load::Report
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + TIME_LIMIT;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (one, issued) = (one.clone(), issued.clone());
            tokio::spawn(async move {
                let mut seen = (Vec::new(), 0u64, 0u64);
                loop {
                    let i = issued.fetch_add(1, Ordering::Relaxed);
                    if i >= LOOKUPS || Instant::now() >= stop_at {
                        return seen;
                    }
                    let at = Instant::now();
                    let ok = one(i).await;
                    seen.0.push(at.elapsed());
                    if ok { seen.1 += 1 } else { seen.2 += 1 }
                }
            })
        })
        .collect();
    let mut report = load::Report::default();
    for worker in workers {
        let (latencies, ok, failed) = worker.await.expect("worker");
        report.latencies.extend(latencies);
        report.succeeded += ok;
        if failed > 0 {
            *report.errors.entry("failed lookup".into()).or_default() += failed;
        }
    }
    report.elapsed = started.elapsed();
    report.latencies.sort();
    report
}

async fn compare() {
    let up = upstreams().await;
    let (_harness, lookups, definition) = patchbay_lookups(&up).await;
    let client = plain_http_client();
    let up = Arc::new(up);
    let definition = Arc::new(definition);

    let native = || {
        let (client, up) = (client.clone(), up.clone());
        move |i: u64| {
            let (client, up) = (client.clone(), up.clone());
            async move { native_lookup(&client, &up, &caller(i)).await["contact"].is_object() }
        }
    };
    let through_patchbay = || {
        let (lookups, definition) = (lookups.clone(), definition.clone());
        move |i: u64| {
            let (lookups, definition) = (lookups.clone(), definition.clone());
            async move {
                let answer = lookups
                    .run(
                        WS,
                        "caller",
                        &definition,
                        &caller(i),
                        Some("ada@example.com"),
                        None,
                    )
                    .await
                    .expect("lookup");
                let masked = answer.masked(Profile::Advanced);
                answer
                    .sources
                    .iter()
                    .all(|s| s.status == patchbay::lookup::SourceStatus::Ok)
                    && masked.record["contact"].is_object()
            }
        }
    };
    // Warm both (connections, compiled plugins), then alternate: this VM's speed drifts.
    measure(native()).await;
    measure(through_patchbay()).await;
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let n = measure(native()).await;
        let p = measure(through_patchbay()).await;
        rounds.push((n, p));
    }
    for (round, (n, p)) in rounds.iter().enumerate() {
        println!(
            "round {}: native {:.0}/s p50 {} p99 {} ({} failed) · patchbay {:.0}/s p50 {} p99 {} ({} failed)",
            round + 1,
            n.throughput(),
            load::micros(n.percentile(50.0)),
            load::micros(n.percentile(99.0)),
            n.failed(),
            p.throughput(),
            load::micros(p.percentile(50.0)),
            load::micros(p.percentile(99.0)),
            p.failed(),
        );
        println!(
            "  throughput {:.0} % of native (goal >= 85 %), p99 {:.2}x native (goal <= 1.5x)",
            100.0 * p.throughput() / n.throughput().max(1e-9),
            p.percentile(99.0).as_secs_f64() / n.percentile(99.0).as_secs_f64().max(1e-9),
        );
    }
}
