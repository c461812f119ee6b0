//! Operator metrics in the Prometheus / OpenMetrics text format.
//!
//! The domain keeps plain atomic counters and state; a scrape takes a
//! snapshot of them into a fresh registry and encodes it. So no domain type
//! depends on the metrics library, and a scrape costs nothing between scrapes.
//! Labels name workspaces and upstream origins, never a secret or a
//! tenant's data; the endpoint is for operators only.

mod route;
pub(crate) use route::routes;

use patchbay_egress::Egress;
use patchbay_egress::audit::AuditLog;
use patchbay_egress::credentials::Credentials;
use patchbay_runtime::RuntimeCounters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the numbers come from.
#[derive(Clone)]
pub struct MetricsSources {
    /// The audit writer: outbound attempts counted by decision.
    pub audit: Arc<AuditLog>,
    /// The credentials: OAuth2 token requests, and credentials marked
    /// needs-attention.
    pub credentials: Arc<Credentials>,
    /// The egress, for its circuit breakers that are not closed.
    pub egress: Arc<Egress>,
    /// The API's own requests: counts and durations by route template.
    pub api: ApiMetrics,
    /// The runtime: invocations refused at capacity or over their call limits.
    pub runtime: Arc<RuntimeCounters>,
    /// The event flow: deliveries per subscription, and its queues' depths.
    pub events: Arc<patchbay_events::Events>,
}

/// The HTTP API's own requests. Labelled by route *template*
/// (`/v1/workspaces/{ws}/…`), never by the workspace or names in the path,
/// so the label set stays small and carries no tenant's identifiers.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<ApiLabels, Counter>,
    durations: Family<ApiRouteLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiRouteLabels {
    method: String,
    route: String,
}

/// Seconds: 0.5 ms to 10 s, covering a cached lookup to a slow upstream.
const API_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(API_BUCKETS)),
        }
    }
}

impl ApiMetrics {
    /// One answered request: `route` is the matched template, or
    /// `unmatched` when no route matched.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: std::time::Duration) {
        let (method, route) = (method_label(method).to_owned(), route.to_owned());
        self.durations
            .get_or_create(&ApiRouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&ApiLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// The `method` label: one of the methods HTTP defines, or `other`. Any
/// caller, signed in or not, chooses the method it sends; were it the label,
/// made-up methods would add series without bound.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttentionLabels {
    workspace: String,
    connection: String,
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    workspace: String,
    origin: String,
    state: &'static str,
}

/// The current metrics as OpenMetrics text.
pub fn render(sources: &MetricsSources) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("patchbay");
    register_outbound(&mut registry, sources);
    register_credentials(&mut registry, sources);
    register_invocations(&mut registry, sources);
    register_events(&mut registry, sources);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A counter holding `value`: a snapshot of one of the domain's atomics.
fn counter(value: &AtomicU64) -> Counter<u64> {
    let c = Counter::<u64>::default();
    c.inc_by(value.load(Ordering::Relaxed));
    c
}

/// Outbound attempts by decision, and the breakers not closed.
fn register_outbound(registry: &mut Registry, sources: &MetricsSources) {
    let outbound = Family::<DecisionLabels, Counter>::default();
    for (decision, count) in sources.audit.counts() {
        outbound
            .get_or_create(&DecisionLabels { decision })
            .inc_by(count);
    }
    registry.register(
        "outbound_requests",
        "Outbound request attempts by decision (allowed, denied by policy, held by the host)",
        outbound,
    );
    let breakers = Family::<BreakerLabels, Gauge>::default();
    let tripped = sources
        .egress
        .breakers()
        .all_tripped(std::time::Instant::now());
    // `all_tripped` holds only open and half-open breakers.
    for (workspace, origin, state) in tripped {
        breakers
            .get_or_create(&BreakerLabels {
                workspace,
                origin,
                state: state.as_str(),
            })
            .set(1);
    }
    registry.register(
        "circuit_breaker_tripped",
        "Circuit breakers not closed, per workspace and upstream origin",
        breakers,
    );
}

/// OAuth2 token traffic, and credentials refused for good.
fn register_credentials(registry: &mut Registry, sources: &MetricsSources) {
    let counters = &sources.credentials.counters;
    registry.register(
        "oauth_token_requests",
        "OAuth2 token requests (fetches and refreshes) made by the host",
        counter(&counters.token_requests),
    );
    registry.register(
        "oauth_token_failures",
        "OAuth2 token requests that failed, transiently or for good",
        counter(&counters.token_failures),
    );
    registry.register(
        "credentials_marked_needs_attention",
        "Times a credential was refused for good and marked needs-attention",
        counter(&counters.marked_needs_attention),
    );
    let attention = Family::<AttentionLabels, Gauge>::default();
    for (scope, credential, _) in sources.credentials.needing_attention() {
        attention
            .get_or_create(&AttentionLabels {
                workspace: scope.workspace,
                connection: scope.connection,
                credential,
            })
            .set(1);
    }
    registry.register(
        "credential_needs_attention",
        "Credentials refused for good (e.g. invalid_grant) until the tenant sets a new value",
        attention,
    );
}

/// Invocations refused for capacity, and the API's own requests.
fn register_invocations(registry: &mut Registry, sources: &MetricsSources) {
    let runtime = &sources.runtime;
    registry.register(
        "invocations_refused_at_capacity",
        "Invocations refused because every plugin instance of the pool was in use",
        counter(&runtime.refused_at_capacity),
    );
    registry.register(
        "invocations_refused_too_many_calls",
        "Invocations refused because their connection or workspace ran its maximum of calls",
        counter(&runtime.refused_too_many_calls),
    );
    registry.register(
        "invocations_moved_off_workers",
        "Plugin calls whose guest code computed long enough to be moved to a thread of their own",
        counter(&runtime.moved_off_workers),
    );
    registry.register(
        "api_requests",
        "HTTP API requests answered, by method, route template and status",
        sources.api.requests.clone(),
    );
    registry.register(
        "api_request_duration_seconds",
        "HTTP API request durations, by method and route template",
        sources.api.durations.clone(),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    workspace: String,
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    workspace: String,
    subscription: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    workspace: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    workspace: String,
    subscription: String,
    queue: &'static str,
}

/// Each subscription's delivery latencies, as counted by the event flow:
/// encoded as one histogram per label set.
#[derive(Debug)]
struct Latencies(
    Vec<(
        SubscriptionLabels,
        patchbay_events::metrics::SubscriptionStats,
    )>,
);

impl prometheus_client::encoding::EncodeMetric for Latencies {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        use patchbay_events::metrics::LATENCY_BUCKETS;
        for (labels, stats) in &self.0 {
            // Per bucket, not cumulative; the last is past every bound (+Inf).
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .zip(stats.latency_buckets.iter().copied())
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    stats.latency_sum,
                    stats.latency_count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Deliveries per subscription by outcome, latencies, breaker state, and
/// the queues' depths. Labels: workspace and subscription names only.
fn register_events(registry: &mut Registry, sources: &MetricsSources) {
    let outcomes = Family::<OutcomeLabels, Counter>::default();
    let breakers = Family::<SubscriptionLabels, Gauge>::default();
    let depths = Family::<QueueLabels, Gauge>::default();
    let mut latencies = Vec::new();
    let set_depth =
        |workspace: &str, subscription: &str, depth: patchbay_storage::outbox::Depth| {
            for (queue, n) in [("pending", depth.pending), ("dead", depth.dead)] {
                depths
                    .get_or_create(&QueueLabels {
                        workspace: workspace.to_owned(),
                        subscription: subscription.to_owned(),
                        queue,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        };
    for ((workspace, subscription), stats) in sources.events.metrics.snapshot() {
        // Emptied queues read 0 (the store keeps no row for them).
        set_depth(&workspace, &subscription, Default::default());
        let labels = SubscriptionLabels {
            workspace: workspace.clone(),
            subscription: subscription.clone(),
        };
        for (outcome, count) in [
            ("delivered", stats.delivered),
            ("retried", stats.retried),
            ("dead-lettered", stats.dead_lettered),
            ("held", stats.held),
            ("deferred", stats.deferred),
        ] {
            outcomes
                .get_or_create(&OutcomeLabels {
                    workspace: workspace.clone(),
                    subscription: subscription.clone(),
                    outcome,
                })
                .inc_by(count);
        }
        breakers
            .get_or_create(&labels)
            .set(i64::from(stats.breaker_open));
        latencies.push((labels, stats));
    }
    registry.register(
        "event_deliveries",
        "Delivery attempts' ends per subscription: delivered, retried (failed, tried again), dead-lettered, held (destination's breaker open or host busy; no attempt used), deferred (the subscription's rate limit)",
        outcomes,
    );
    registry.register(
        "event_delivery_latency_seconds",
        "From an event's acceptance to its delivery, per subscription",
        Latencies(latencies),
    );
    registry.register(
        "event_destination_breaker_open",
        "1 while a subscription's last attempt found its destination's circuit breaker open",
        breakers,
    );
    match sources.events.outbox().all_depths() {
        Ok(all) => {
            for (workspace, subscription, depth) in all {
                set_depth(&workspace, &subscription, depth);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the event queues' depths for metrics"),
    }
    let webhooks = Family::<WebhookLabels, Counter>::default();
    for ((workspace, outcome), count) in sources.events.metrics.webhooks() {
        webhooks
            .get_or_create(&WebhookLabels { workspace, outcome })
            .inc_by(count);
    }
    registry.register(
        "webhooks",
        "Webhooks received per workspace (empty for a workspace that does not exist) and outcome: accepted, duplicate (its id was taken before), refused (401: unknown connection, no webhook, secret not set, bad signature), invalid (422), limited (429: the connection's webhook rate), unavailable (503), failed (500)",
        webhooks,
    );
    registry.register(
        "event_queue_depth",
        "Deliveries waiting (pending) and in the dead-letter queue (dead), per subscription",
        depths,
    );
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn method_labels_come_from_a_bounded_set() {
        let table = [
            ("GET", "GET"),
            ("POST", "POST"),
            ("DELETE", "DELETE"),
            ("OPTIONS", "OPTIONS"),
            ("get", "other"),
            ("FOO", "other"),
            ("PROPFIND", "other"),
            ("X-12345", "other"),
            ("", "other"),
        ];
        for (method, label) in table {
            assert_eq!(method_label(method), label, "{method:?}");
        }
    }
}
