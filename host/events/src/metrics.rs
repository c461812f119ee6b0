//! Delivery counters per subscription, kept as plain numbers: the API's
//! `/metrics` takes a snapshot at each scrape. Keys are workspace and
//! subscription names only, never anything of an event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the delivery-latency buckets, in seconds: from a
/// delivery made at once to one that waited out a day of retries.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3_600.0, 86_400.0,
];

/// One subscription's numbers since the host started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionStats {
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Deliveries moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Attempts held because the destination's circuit breaker was open
    /// (or the host was at capacity): nothing was sent.
    pub held: u64,
    /// Deliveries put back by the subscription's rate limit.
    pub deferred: u64,
    /// Whether the last attempt found the destination's breaker open.
    pub breaker_open: bool,
    /// From acceptance to delivery: count per bucket of
    /// [`LATENCY_BUCKETS`] (not cumulative), then those past the last.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, in seconds.
    pub latency_sum: f64,
}

impl SubscriptionStats {
    /// Deliveries whose latency was observed.
    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }
}

/// How an attempt ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counted {
    /// Delivered, this long after acceptance.
    Delivered(Duration),
    /// Failed, to be tried again.
    Retried,
    /// Held by an open breaker (or a busy host), nothing sent.
    Held,
    /// Put back by the rate limit.
    Deferred,
    /// Moved to the dead-letter queue.
    DeadLettered,
}

/// Every subscription's numbers, by (workspace, subscription), and
/// webhooks taken in, by (workspace, outcome).
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    stats: Mutex<HashMap<(String, String), SubscriptionStats>>,
    webhooks: Mutex<HashMap<(String, &'static str), u64>>,
}

impl DeliveryMetrics {
    /// Count one attempt's end.
    pub fn count(&self, workspace: &str, subscription: &str, what: Counted) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let entry = stats
            .entry((workspace.to_owned(), subscription.to_owned()))
            .or_default();
        entry.breaker_open = matches!(what, Counted::Held);
        match what {
            Counted::Delivered(latency) => {
                entry.delivered += 1;
                let seconds = latency.as_secs_f64();
                let bucket = LATENCY_BUCKETS
                    .iter()
                    .position(|bound| seconds <= *bound)
                    .unwrap_or(LATENCY_BUCKETS.len());
                entry.latency_buckets[bucket] += 1;
                entry.latency_sum += seconds;
            }
            Counted::Retried => entry.retried += 1,
            Counted::Held => entry.held += 1,
            Counted::Deferred => entry.deferred += 1,
            Counted::DeadLettered => entry.dead_lettered += 1,
        }
    }

    /// Count one webhook's end, `outcome` one of a fixed set (accepted,
    /// duplicate, refused, invalid, limited, unavailable, failed). `workspace` is
    /// `None` when no such workspace exists: the sender named it, and an
    /// unauthenticated sender must not create label values.
    pub fn count_webhook(&self, workspace: Option<&str>, outcome: &'static str) {
        let mut webhooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        *webhooks
            .entry((workspace.unwrap_or_default().to_owned(), outcome))
            .or_default() += 1;
    }

    /// A copy of the webhook counts, by (workspace, outcome); the workspace
    /// is empty for webhooks to no workspace.
    pub fn webhooks(&self) -> Vec<((String, &'static str), u64)> {
        let webhooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        webhooks.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// A copy of every subscription's numbers.
    pub fn snapshot(&self) -> Vec<((String, String), SubscriptionStats)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Forget a deleted subscription's numbers.
    pub fn remove_subscription(&self, workspace: &str, subscription: &str) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(ws, sub), _| ws != workspace || sub != subscription);
    }

    /// Forget a deleted workspace's numbers.
    pub fn remove_workspace(&self, workspace: &str) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(ws, _), _| ws != workspace);
        self.webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(ws, _), _| ws != workspace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket_and_the_breaker_flag_follows_the_last_attempt() {
        let metrics = DeliveryMetrics::default();
        metrics.count("ws", "s", Counted::Delivered(Duration::from_millis(3)));
        metrics.count("ws", "s", Counted::Delivered(Duration::from_millis(400)));
        metrics.count("ws", "s", Counted::Delivered(Duration::from_secs(200_000)));
        metrics.count("ws", "s", Counted::Held);
        let snapshot = metrics.snapshot();
        let stats = &snapshot[0].1;
        assert_eq!(stats.delivered, 3);
        assert_eq!(stats.latency_buckets[0], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(stats.latency_buckets[6], 1, "400 ms is in the 0.5 s bucket");
        assert_eq!(
            stats.latency_buckets[LATENCY_BUCKETS.len()],
            1,
            "past the last bound"
        );
        assert_eq!(stats.latency_count(), 3);
        assert!(stats.breaker_open);
        metrics.count("ws", "s", Counted::Retried);
        assert!(!metrics.snapshot()[0].1.breaker_open);
        metrics.remove_workspace("ws");
        assert!(metrics.snapshot().is_empty());
    }
}
