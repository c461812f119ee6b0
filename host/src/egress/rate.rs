//! One GCRA limiter per (workspace, upstream origin), shared by every plugin
//! and invocation of that workspace that calls the origin.

use crate::policy::rate::RateLimit;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct RateLimiters {
    limiters: Mutex<HashMap<(String, String), Arc<DefaultDirectRateLimiter>>>,
}

/// The limiter refused to wait: the next slot is past the call's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl RateLimiters {
    fn limiter(
        &self,
        workspace: &str,
        origin: &str,
        limit: RateLimit,
    ) -> Arc<DefaultDirectRateLimiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((workspace.to_owned(), origin.to_owned()))
            .or_insert_with(|| {
                let burst = NonZeroU32::new(limit.requests).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(limit.period())
                    .unwrap_or_else(|| Quota::per_second(burst))
                    .allow_burst(burst);
                // The first limit seen for an origin in a workspace is kept: the
                // upstream's real limit belongs to the account, not the plugin.
                Arc::new(DefaultDirectRateLimiter::direct(quota))
            })
            .clone()
    }

    /// Wait for a slot for one request, or refuse if it would come after `deadline`.
    pub async fn acquire(
        &self,
        workspace: &str,
        origin: &str,
        limit: RateLimit,
        deadline: Instant,
    ) -> Result<(), Limited> {
        let limiter = self.limiter(workspace, origin, limit);
        let clock = DefaultClock::default();
        loop {
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    if Instant::now() + wait > deadline {
                        return Err(Limited { retry_after: wait });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
