//! When a failed delivery is tried again, and when it goes to the
//! dead-letter queue: a subscription's retry policy and the decision after
//! each failed attempt. Pure: the outbox stores the next attempt's time;
//! the caller supplies the jitter (a uniform random number), so the
//! decision is testable and the same on every host.
//!
//! Waits grow exponentially from `backoff_base_ms`, capped at
//! `backoff_cap_ms`, with full jitter (a uniform wait between zero and that
//! bound, so retries of many deliveries spread out instead of arriving
//! together). A `rate-limited` answer's `Retry-After`, and an open circuit
//! breaker's remaining time, come first, with the jittered backoff added on
//! top (so what one breaker or one 429 held does not all wake at once). An
//! open breaker makes a delivery wait without using up an attempt, at least
//! `backoff_base_ms` when its remaining time is unknown.
//! Errors that cannot go away by themselves go to the dead-letter queue at
//! once; so does a delivery out of attempts, or older than `max_age_secs`
//! by its next attempt.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The operator's settings of the event flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventPolicy {
    /// How long an accepted event id is remembered at least (resubmitting
    /// it creates nothing), in hours: 1 to 720 (30 days).
    pub idempotency_window_hours: u32,
    /// Deliveries one destination (a connection) may have in flight at
    /// once: 1 to 1000.
    pub deliveries_per_destination: u32,
}

impl Default for EventPolicy {
    fn default() -> Self {
        Self {
            idempotency_window_hours: 24,
            deliveries_per_destination: 16,
        }
    }
}

impl EventPolicy {
    /// Every value the host cannot run with, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=720).contains(&self.idempotency_window_hours) {
            problems.push("events.idempotency_window_hours must be 1 to 720".to_owned());
        }
        if !(1..=1000).contains(&self.deliveries_per_destination) {
            problems.push("events.deliveries_per_destination must be 1 to 1000".to_owned());
        }
        problems
    }
}

/// The operator's settings of webhooks in (`POST /v1/hooks/{ws}/{connection}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookPolicy {
    /// Whether the host takes webhooks at all; when not, every one gets 401.
    pub enabled: bool,
    /// The largest body taken, in KiB (1 to 16384): a longer one gets 413
    /// before it is read whole.
    pub max_body_kb: u32,
    /// How long a webhook's id is remembered at least, so a resent webhook
    /// creates nothing, in hours (1 to 720).
    pub dedupe_window_hours: u32,
    /// Most events one webhook may become (1 to 500, a batch's size).
    pub max_events_per_webhook: u32,
    /// Webhooks one connection takes per second (1 to 10000; as many in a
    /// burst): past it a sender gets 429 with `Retry-After`, so a flood
    /// never takes the connection's or its workspace's share of the host.
    pub per_connection_per_second: u32,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_body_kb: 1024,
            dedupe_window_hours: 24,
            max_events_per_webhook: 100,
            per_connection_per_second: 50,
        }
    }
}

impl WebhookPolicy {
    /// Every value the host cannot run with, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=16_384).contains(&self.max_body_kb) {
            problems.push("webhooks.max_body_kb must be 1 to 16384".to_owned());
        }
        if !(1..=720).contains(&self.dedupe_window_hours) {
            problems.push("webhooks.dedupe_window_hours must be 1 to 720".to_owned());
        }
        if !(1..=500).contains(&self.max_events_per_webhook) {
            problems.push("webhooks.max_events_per_webhook must be 1 to 500".to_owned());
        }
        if !(1..=10_000).contains(&self.per_connection_per_second) {
            problems.push("webhooks.per_connection_per_second must be 1 to 10000".to_owned());
        }
        problems
    }

    /// The largest body taken, in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_kb as usize * 1024
    }
}

/// How a subscription's deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1-100; default 10).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The oldest a delivery may be at its next attempt, in seconds from
    /// its event's acceptance or its last replay (60 s to 30 days; default
    /// one day).
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// The first retry waits up to this, in milliseconds (10 ms to 1 h;
    /// default 1 s); each further one up to twice as long as the last.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// No wait is longer than this, in milliseconds (from the base to one
    /// day; default one hour).
    #[serde(default = "default_backoff_cap_ms")]
    pub backoff_cap_ms: u64,
}

fn default_max_attempts() -> u32 {
    10
}
fn default_max_age_secs() -> u64 {
    86_400
}
fn default_backoff_base_ms() -> u64 {
    1_000
}
fn default_backoff_cap_ms() -> u64 {
    3_600_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            max_age_secs: default_max_age_secs(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_cap_ms: default_backoff_cap_ms(),
        }
    }
}

/// How an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It may go away by itself (a timeout, a 5xx, a dropped connection).
    Transient,
    /// The destination asked to slow down, perhaps saying for how long.
    RateLimited(Option<Duration>),
    /// The destination's circuit breaker is open: nothing was sent. The
    /// time until it lets a request through, when known.
    CircuitOpen(Option<Duration>),
    /// It will fail the same way every time (invalid input, unauthorized
    /// after a refresh, not found, access denied): the error's code.
    Permanent(String),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again after this wait; `counts` says whether the attempt just
    /// made used one up (a delivery held by an open breaker did not).
    Retry {
        /// How long to wait.
        after: Duration,
        /// Whether the failed attempt counts against `max_attempts`.
        counts: bool,
    },
    /// Move it to the dead-letter queue, for this reason.
    DeadLetter(String),
}

impl RetryPolicy {
    /// Everything wrong with the policy, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=100).contains(&self.max_attempts) {
            problems.push("max_attempts: 1 to 100".to_owned());
        }
        if !(60..=30 * 86_400).contains(&self.max_age_secs) {
            problems.push("max_age_secs: 60 to 2592000 (30 days)".to_owned());
        }
        if !(10..=3_600_000).contains(&self.backoff_base_ms) {
            problems.push("backoff_base_ms: 10 to 3600000 (one hour)".to_owned());
        }
        if self.backoff_cap_ms < self.backoff_base_ms || self.backoff_cap_ms > 86_400_000 {
            problems.push(
                "backoff_cap_ms: at least backoff_base_ms and at most 86400000 (one day)"
                    .to_owned(),
            );
        }
        problems
    }

    /// After attempt number `attempts` (counting from 1, only attempts that
    /// counted) failed with `failure`, `age` after the delivery's first
    /// attempt: what next. `jitter` is a uniform random number in `[0, 1)`.
    pub fn after_failure(
        &self,
        attempts: u32,
        age: Duration,
        failure: &Failure,
        jitter: f64,
    ) -> Next {
        let (floor, counts) = match failure {
            Failure::Permanent(code) => {
                return Next::DeadLetter(format!(
                    "{code}: not retried (it would fail the same way)"
                ));
            }
            Failure::CircuitOpen(until) => (
                until.unwrap_or(Duration::from_millis(self.backoff_base_ms)),
                false,
            ),
            Failure::RateLimited(after) => (after.unwrap_or(Duration::ZERO), true),
            Failure::Transient => (Duration::ZERO, true),
        };
        if counts && attempts >= self.max_attempts {
            return Next::DeadLetter(format!("no attempt left: {attempts} made"));
        }
        let after = floor.saturating_add(self.backoff(attempts, jitter));
        if age.saturating_add(after) > Duration::from_secs(self.max_age_secs) {
            return Next::DeadLetter(format!(
                "too old: the next attempt would be past {} s from the first",
                self.max_age_secs
            ));
        }
        Next::Retry { after, counts }
    }

    /// Full jitter: uniform in `[0, min(cap, base × 2^(attempts − 1)))`.
    fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(63);
        let bound = self
            .backoff_base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_cap_ms);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Below 2^53 ms, so exact in f64.
        Duration::from_millis((bound as f64 * jitter) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_age_secs: 3_600,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 6_000,
        }
    }

    fn retry(after: Duration, counts: bool) -> Next {
        Next::Retry { after, counts }
    }

    #[test]
    fn waits_double_up_to_the_cap_with_full_jitter() {
        let p = policy();
        let young = Duration::from_secs(1);
        // The bound doubles: 1 s, 2 s, 4 s, then the 6 s cap.
        for (attempts, bound) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 6_000)] {
            assert_eq!(
                p.after_failure(attempts, young, &Failure::Transient, 0.5),
                retry(MS(bound / 2), true)
            );
            assert_eq!(
                p.after_failure(attempts, young, &Failure::Transient, 0.0),
                retry(MS(0), true)
            );
            let near = p.after_failure(attempts, young, &Failure::Transient, 0.999_999);
            assert!(
                matches!(near, Next::Retry { after, .. } if after < MS(bound) && after >= MS(bound - 1)),
                "{near:?}"
            );
        }
        // Out-of-range jitter cannot stretch a wait past the bound.
        for odd in [f64::NAN, f64::INFINITY, -1.0, 7.0] {
            assert!(
                matches!(p.after_failure(1, young, &Failure::Transient, odd), Next::Retry { after, .. } if after <= MS(1_000))
            );
        }
    }

    #[test]
    fn retry_after_comes_first_and_an_open_breaker_uses_no_attempt() {
        let p = policy();
        let young = Duration::from_secs(1);
        // Retry-After first, then the jittered backoff on top.
        let limited = Failure::RateLimited(Some(Duration::from_secs(30)));
        assert_eq!(
            p.after_failure(1, young, &limited, 0.5),
            retry(MS(30_500), true)
        );
        assert_eq!(
            p.after_failure(1, young, &limited, 0.0),
            retry(MS(30_000), true)
        );
        let brief = Failure::RateLimited(Some(MS(10)));
        assert_eq!(
            p.after_failure(3, young, &brief, 0.5),
            retry(MS(2_010), true)
        );
        assert_eq!(
            p.after_failure(1, young, &Failure::RateLimited(None), 0.5),
            retry(MS(500), true)
        );
        // The breaker: waits until it may let a request through, and even
        // with every attempt used, the delivery is not dead-lettered for it.
        let open = Failure::CircuitOpen(Some(Duration::from_secs(20)));
        assert_eq!(
            p.after_failure(5, young, &open, 0.0),
            retry(Duration::from_secs(20), false)
        );
        // Its remaining time unknown: at least the base, never a busy poll.
        let unknown = Failure::CircuitOpen(None);
        assert_eq!(
            p.after_failure(5, young, &unknown, 0.0),
            retry(MS(1_000), false)
        );
    }

    #[test]
    fn permanent_errors_exhausted_attempts_and_old_deliveries_go_to_the_dead_letter_queue() {
        let p = policy();
        let young = Duration::from_secs(1);
        for code in [
            "invalid-input",
            "unauthorized",
            "not-found",
            "access-denied",
        ] {
            let next = p.after_failure(1, young, &Failure::Permanent(code.into()), 0.5);
            assert!(
                matches!(&next, Next::DeadLetter(why) if why.starts_with(code)),
                "{next:?}"
            );
        }
        assert!(matches!(
            p.after_failure(4, young, &Failure::Transient, 0.5),
            Next::Retry { .. }
        ));
        assert!(
            matches!(p.after_failure(5, young, &Failure::Transient, 0.5), Next::DeadLetter(why) if why.contains("5 made"))
        );
        assert!(matches!(
            p.after_failure(5, young, &Failure::RateLimited(None), 0.5),
            Next::DeadLetter(_)
        ));
        // The next attempt would be past the hour: no more.
        let old = Duration::from_secs(3_599);
        assert!(
            matches!(p.after_failure(2, old, &Failure::Transient, 0.9), Next::DeadLetter(why) if why.contains("too old"))
        );
        assert!(matches!(
            p.after_failure(2, old, &Failure::Transient, 0.0),
            Next::Retry { .. }
        ));
        let held = Failure::CircuitOpen(Some(Duration::from_secs(10)));
        assert!(matches!(
            p.after_failure(1, old, &held, 0.0),
            Next::DeadLetter(_)
        ));
    }

    #[test]
    fn policies_are_checked_and_default_sensibly() {
        assert_eq!(RetryPolicy::default().problems(), Vec::<String>::new());
        let read: RetryPolicy = serde_json::from_str("{}").expect("defaults");
        assert_eq!(read, RetryPolicy::default());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_tries": 3}"#).is_err());
        for (bad, field) in [
            (
                RetryPolicy {
                    max_attempts: 0,
                    ..policy()
                },
                "max_attempts",
            ),
            (
                RetryPolicy {
                    max_attempts: 101,
                    ..policy()
                },
                "max_attempts",
            ),
            (
                RetryPolicy {
                    max_age_secs: 59,
                    ..policy()
                },
                "max_age_secs",
            ),
            (
                RetryPolicy {
                    backoff_base_ms: 5,
                    ..policy()
                },
                "backoff_base_ms",
            ),
            (
                RetryPolicy {
                    backoff_cap_ms: 999,
                    ..policy()
                },
                "backoff_cap_ms",
            ),
            (
                RetryPolicy {
                    backoff_cap_ms: 86_400_001,
                    ..policy()
                },
                "backoff_cap_ms",
            ),
        ] {
            let problems = bad.problems();
            assert!(
                problems.len() == 1 && problems[0].starts_with(field),
                "{bad:?}: {problems:?}"
            );
        }
        // Huge attempt counts neither overflow nor exceed the cap.
        let wide = RetryPolicy {
            max_attempts: 100,
            backoff_cap_ms: 86_400_000,
            max_age_secs: 30 * 86_400,
            ..policy()
        };
        assert_eq!(
            wide.after_failure(99, Duration::ZERO, &Failure::Transient, 0.5),
            retry(MS(43_200_000), true)
        );
    }
}
