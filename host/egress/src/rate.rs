//! One GCRA limiter per (workspace, upstream origin), shared by every plugin
//! and invocation of that workspace that calls the origin.
//!
//! A request reserves its own slot and sleeps once, until that slot. Asking
//! "when is the next free slot?" instead (what `governor` offers) gives every
//! waiter the same answer: they all wake together, one wins and the rest go
//! back to sleep, so N waiters cost O(N²) wake-ups and come out in no
//! particular order. Reservations make the order first come, first served.

use patchbay_policy::rate::RateLimit;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One (workspace, origin)'s limiter, shared by every request to it.
type Limiter = Arc<Mutex<Gcra>>;

/// The host's outbound rate limiters, one per (workspace, upstream origin),
/// created on first use; idle ones are swept out as the map grows.
#[derive(Default)]
pub struct RateLimiters {
    limiters: Mutex<Keyed>,
}

/// The limiters, and the size at which idle ones are next swept out.
#[derive(Default)]
struct Keyed {
    map: HashMap<(String, String), Limiter>,
    sweep_at: usize,
}

/// Limiters kept before the first sweep of idle ones.
const SWEEP_FROM: usize = 4096;

/// The limiter refused to wait: the next slot is past the call's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// How long until the next free slot.
    pub retry_after: Duration,
}

/// The generic cell rate algorithm, with slots reserved ahead of time.
#[derive(Debug)]
struct Gcra {
    /// Time between two requests at the steady rate.
    period: Duration,
    /// How far a burst may run ahead of the steady rate: one period less
    /// than the burst, so a burst of 1 means evenly spaced requests.
    tolerance: Duration,
    /// When the next request would go at the steady rate; `None` until the first.
    next_at: Option<Instant>,
}

impl Gcra {
    fn new(limit: RateLimit) -> Self {
        let period = limit.period();
        Self {
            period,
            tolerance: period * limit.requests.max(1).saturating_sub(1),
            next_at: None,
        }
    }

    /// Reserve the first free slot for a request made at `now`, if it is no
    /// later than `latest`; otherwise reserve nothing and say how long until
    /// that slot.
    fn reserve(&mut self, now: Instant, latest: Instant) -> Result<Instant, Duration> {
        let next_at = self.next_at.map_or(now, |at| at.max(now));
        let slot = next_at
            .checked_sub(self.tolerance)
            .map_or(now, |at| at.max(now));
        if slot > latest {
            return Err(slot - now);
        }
        self.next_at = Some(next_at + self.period);
        Ok(slot)
    }
}

/// Take a slot from `gcra` and sleep until it, or refuse at once if it would
/// come after `deadline`. A caller dropped while it sleeps gives its slot
/// back when no later caller has reserved behind it (a later reservation
/// keeps its place, so the slot then goes unused: the upstream sees fewer
/// requests, never more).
async fn wait_for_slot(gcra: &Mutex<Gcra>, deadline: Instant) -> Result<(), Limited> {
    let now = Instant::now();
    let (slot, returned) = {
        let mut state = gcra.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.next_at;
        let slot = state
            .reserve(now, deadline)
            .map_err(|retry_after| Limited { retry_after })?;
        (
            slot,
            Unused {
                gcra,
                before,
                after: state.next_at,
            },
        )
    };
    if slot > now {
        tokio::time::sleep_until(slot.into()).await;
    }
    std::mem::forget(returned);
    Ok(())
}

/// A reservation not yet reached: given back if its waiter goes away.
struct Unused<'a> {
    gcra: &'a Mutex<Gcra>,
    before: Option<Instant>,
    after: Option<Instant>,
}

impl Drop for Unused<'_> {
    fn drop(&mut self) {
        let mut state = self.gcra.lock().unwrap_or_else(|e| e.into_inner());
        if state.next_at == self.after {
            state.next_at = self.before;
        }
    }
}

impl RateLimiters {
    fn limiter(&self, workspace: &str, origin: &str, limit: RateLimit) -> Limiter {
        let mut keyed = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        // A plugin may reach many origins (`*.example.com`): a limiter whose
        // slots are all in the past, and that no request holds, is the same
        // as a new one, so it is dropped once the map grows.
        if keyed.map.len() >= keyed.sweep_at.max(SWEEP_FROM) {
            let now = Instant::now();
            keyed.map.retain(|_, limiter| {
                Arc::strong_count(limiter) > 1
                    || limiter
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .next_at
                        .is_some_and(|at| at > now)
            });
            keyed.sweep_at = keyed.map.len() * 2;
        }
        // The first limit seen for an origin in a workspace is kept: the
        // upstream's real limit belongs to the account, not the plugin.
        keyed
            .map
            .entry((workspace.to_owned(), origin.to_owned()))
            .or_insert_with(|| Arc::new(Mutex::new(Gcra::new(limit))))
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
        wait_for_slot(&limiter, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_goes_at_once_then_requests_are_spaced_by_the_period() {
        // 4 per second: a burst of 4, then one every 250 ms.
        let mut gcra = Gcra::new(RateLimit {
            requests: 4,
            per_seconds: 1,
        });
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let slots: Vec<Duration> = (0..7)
            .map(|_| gcra.reserve(t0, far).expect("slot") - t0)
            .collect();
        assert_eq!(
            slots,
            [ms(0), ms(0), ms(0), ms(0), ms(250), ms(500), ms(750)]
        );
    }

    #[test]
    fn a_slot_past_the_deadline_is_refused_and_not_taken() {
        let mut gcra = Gcra::new(RateLimit {
            requests: 1,
            per_seconds: 1,
        });
        let t0 = Instant::now();
        let cases = [
            // (asked at, latest acceptable slot, the slot or how long until it)
            (ms(0), ms(0), Ok(ms(0))),
            (ms(0), ms(500), Err(ms(1000))),
            // The refusal took nothing: the same slot is still free.
            (ms(100), ms(1000), Ok(ms(1000))),
            (ms(100), ms(1500), Err(ms(1900))),
            // Idle time does not bank more than the burst.
            (ms(10_000), ms(10_000), Ok(ms(10_000))),
            (ms(10_000), ms(10_999), Err(ms(1000))),
        ];
        for (at, latest, expected) in cases {
            let got = gcra.reserve(t0 + at, t0 + latest).map(|slot| slot - t0);
            assert_eq!(got, expected, "asked at {at:?}, latest {latest:?}");
        }
    }

    #[tokio::test]
    async fn waiters_each_sleep_once_until_their_own_slot_in_arrival_order() {
        const WAITERS: usize = 10;
        let period = ms(30);
        let gcra = Arc::new(Mutex::new(Gcra {
            period,
            tolerance: Duration::ZERO,
            next_at: None,
        }));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let finished = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for waiter in 0..WAITERS {
            let (gcra, finished) = (gcra.clone(), finished.clone());
            // Each waiter reserves on its first poll, before the next one is spawned.
            let (reserved_tx, reserved_rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let mut wait = std::pin::pin!(wait_for_slot(&gcra, deadline));
                let mut polls = 0usize;
                let mut reserved_tx = Some(reserved_tx);
                let result = std::future::poll_fn(|cx| {
                    polls += 1;
                    let poll = wait.as_mut().poll(cx);
                    if let Some(tx) = reserved_tx.take() {
                        let _ = tx.send(());
                    }
                    poll
                })
                .await;
                finished
                    .lock()
                    .expect("lock")
                    .push((waiter, started.elapsed()));
                (result, polls)
            }));
            reserved_rx.await.expect("reserved");
        }
        for (waiter, task) in tasks.into_iter().enumerate() {
            let (result, polls) = task.await.expect("join");
            assert_eq!(result, Ok(()), "waiter {waiter}");
            // One poll to reserve, one when its own timer fires; never
            // woken for someone else's slot.
            assert!(polls <= 2, "waiter {waiter} was polled {polls} times");
        }
        let finished = finished.lock().expect("lock").clone();
        let order: Vec<usize> = finished.iter().map(|(w, _)| *w).collect();
        assert_eq!(order, (0..WAITERS).collect::<Vec<_>>(), "{finished:?}");
        for (waiter, at) in finished {
            assert!(
                at >= period * waiter as u32,
                "waiter {waiter} went at {at:?}, before its slot"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the waiters took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_waiter_whose_slot_is_past_its_deadline_is_refused_at_once() {
        let limiters = RateLimiters::default();
        let limit = RateLimit {
            requests: 1,
            per_seconds: 10,
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(limiters.acquire("ws", "o", limit, deadline).await, Ok(()));
        let asked = Instant::now();
        let refused = limiters
            .acquire("ws", "o", limit, deadline)
            .await
            .expect_err("the next slot is 10 s away");
        assert!(
            asked.elapsed() < ms(100),
            "refusing took {:?}",
            asked.elapsed()
        );
        assert!(refused.retry_after > Duration::from_secs(9), "{refused:?}");
        // Another workspace has its own budget.
        assert_eq!(limiters.acquire("ws-2", "o", limit, deadline).await, Ok(()));
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_gives_its_slot_back() {
        let gcra = Mutex::new(Gcra::new(RateLimit {
            requests: 1,
            per_seconds: 1,
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        wait_for_slot(&gcra, deadline)
            .await
            .expect("the first slot is now");
        // The next slot is a second away; its waiter is dropped at once.
        let mut waiter = Box::pin(wait_for_slot(&gcra, deadline));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(waiter.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
        let held = gcra.lock().expect("lock").next_at;
        drop(waiter);
        let after = gcra.lock().expect("lock").next_at;
        assert!(after < held, "{after:?} should be before {held:?}");
    }

    #[test]
    fn idle_limiters_are_swept_once_there_are_many() {
        let limiters = RateLimiters::default();
        let limit = RateLimit {
            requests: 10,
            per_seconds: 1,
        };
        for i in 0..SWEEP_FROM * 3 {
            // Never used, so idle at once.
            limiters.limiter("ws", &format!("https://h{i}.example.com:443"), limit);
        }
        let kept = limiters.limiters.lock().expect("lock").map.len();
        assert!(kept <= SWEEP_FROM + 1, "{kept} limiters kept");
        // A limiter with a slot ahead is kept through a sweep.
        let busy = limiters.limiter("ws", "https://busy.example.com:443", limit);
        busy.lock().expect("lock").next_at = Some(Instant::now() + Duration::from_secs(60));
        drop(busy);
        for i in 0..SWEEP_FROM * 3 {
            limiters.limiter("ws", &format!("https://g{i}.example.com:443"), limit);
        }
        let keyed = limiters.limiters.lock().expect("lock");
        assert!(
            keyed
                .map
                .contains_key(&("ws".to_owned(), "https://busy.example.com:443".to_owned()))
        );
    }
}
