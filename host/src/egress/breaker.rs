//! Circuit breakers per (workspace, upstream origin).
//!
//! `failures` failed attempts within `window` open the breaker for `cool_down`;
//! while open, requests fail fast without touching the upstream. After the
//! cool-down one trial request is admitted (half-open): success closes the
//! breaker, failure opens it again.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
    pub window_ms: u64,
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            window_ms: 30_000,
            cool_down_ms: 30_000,
        }
    }
}

/// The breaker's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The state's name in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: VecDeque<Instant> },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// Admission to send one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    Trial,
}

/// Refused: the breaker is open (or its one trial is under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::Closed {
                failures: VecDeque::new(),
            }),
        }
    }

    fn cool_down(&self) -> Duration {
        Duration::from_millis(self.config.cool_down_ms)
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now >= *until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn admit(&self, now: Instant) -> Result<Permit, Open> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Closed { .. } => Ok(Permit::Normal),
            State::Open { until } if now < *until => Err(Open {
                retry_after: *until - now,
            }),
            State::Open { .. }
            | State::HalfOpen {
                trial_in_flight: false,
            } => {
                *state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(Permit::Trial)
            }
            State::HalfOpen {
                trial_in_flight: true,
            } => Err(Open {
                retry_after: self.cool_down(),
            }),
        }
    }

    /// Give back a permit whose request was never sent, so a half-open
    /// breaker admits its next trial instead of waiting forever.
    pub fn release(&self, permit: Permit) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let (State::HalfOpen { trial_in_flight }, Permit::Trial) = (&mut *state, permit) {
            *trial_in_flight = false;
        }
    }

    pub fn record(&self, permit: Permit, success: bool, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = Duration::from_millis(self.config.window_ms);
        match (&mut *state, permit) {
            (State::HalfOpen { .. }, Permit::Trial) => {
                *state = if success {
                    State::Closed {
                        failures: VecDeque::new(),
                    }
                } else {
                    State::Open {
                        until: now + self.cool_down(),
                    }
                };
            }
            (State::Closed { failures }, Permit::Normal) if !success => {
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    failures.pop_front();
                }
                if failures.len() >= self.config.failures as usize {
                    *state = State::Open {
                        until: now + self.cool_down(),
                    };
                }
            }
            // A success while closed, or a late result from before a transition, changes nothing.
            _ => {}
        }
    }
}

/// All breakers of the host, by (workspace, origin).
#[derive(Debug, Default)]
pub struct Breakers {
    config: BreakerConfig,
    breakers: Mutex<HashMap<(String, String), Arc<Breaker>>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            breakers: Mutex::default(),
        }
    }

    pub fn get(&self, workspace: &str, origin: &str) -> Arc<Breaker> {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((workspace.to_owned(), origin.to_owned()))
            .or_insert_with(|| Arc::new(Breaker::new(self.config)))
            .clone()
    }

    /// Every breaker that is not closed: workspace, origin, state.
    pub fn all_tripped(&self, now: Instant) -> Vec<(String, String, BreakerState)> {
        let map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .map(|((ws, origin), breaker)| (ws.clone(), origin.clone(), breaker.state(now)))
            .filter(|(_, _, state)| *state != BreakerState::Closed)
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_that_was_never_sent_is_given_back() {
        let breaker = Breaker::new(BreakerConfig {
            failures: 1,
            window_ms: 10_000,
            cool_down_ms: 1_000,
        });
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        breaker.record(Permit::Normal, false, at(0));
        assert_eq!(breaker.admit(at(1_100)), Ok(Permit::Trial));
        breaker.release(Permit::Trial);
        assert_eq!(
            breaker.admit(at(1_200)),
            Ok(Permit::Trial),
            "the next request gets the trial"
        );
        // Releasing a normal permit changes nothing.
        breaker.record(Permit::Trial, true, at(1_300));
        breaker.release(Permit::Normal);
        assert_eq!(breaker.state(at(1_300)), BreakerState::Closed);
    }

    #[test]
    fn opens_half_opens_and_closes() {
        let breaker = Breaker::new(BreakerConfig {
            failures: 3,
            window_ms: 10_000,
            cool_down_ms: 1_000,
        });
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);

        // Two failures: still closed.
        for ms in [0, 100] {
            assert_eq!(breaker.admit(at(ms)), Ok(Permit::Normal));
            breaker.record(Permit::Normal, false, at(ms));
        }
        assert_eq!(breaker.state(at(100)), BreakerState::Closed);
        // The third within the window opens it.
        breaker.record(Permit::Normal, false, at(200));
        assert_eq!(breaker.state(at(200)), BreakerState::Open);
        assert_eq!(
            breaker.admit(at(700)),
            Err(Open {
                retry_after: Duration::from_millis(500)
            })
        );

        // After the cool-down: one trial, the rest still refused.
        assert_eq!(breaker.admit(at(1_200)), Ok(Permit::Trial));
        assert!(
            breaker.admit(at(1_250)).is_err(),
            "only one trial at a time"
        );
        // A failed trial opens it again.
        breaker.record(Permit::Trial, false, at(1_300));
        assert_eq!(breaker.state(at(1_300)), BreakerState::Open);
        assert!(breaker.admit(at(2_000)).is_err());

        // A successful trial closes it.
        assert_eq!(breaker.admit(at(2_400)), Ok(Permit::Trial));
        breaker.record(Permit::Trial, true, at(2_450));
        assert_eq!(breaker.state(at(2_450)), BreakerState::Closed);
        assert_eq!(breaker.admit(at(2_500)), Ok(Permit::Normal));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let breaker = Breaker::new(BreakerConfig {
            failures: 2,
            window_ms: 1_000,
            cool_down_ms: 1_000,
        });
        let t0 = Instant::now();
        breaker.record(Permit::Normal, false, t0);
        breaker.record(Permit::Normal, false, t0 + Duration::from_millis(1_500));
        assert_eq!(
            breaker.state(t0 + Duration::from_millis(1_500)),
            BreakerState::Closed
        );
        breaker.record(Permit::Normal, false, t0 + Duration::from_millis(1_600));
        assert_eq!(
            breaker.state(t0 + Duration::from_millis(1_600)),
            BreakerState::Open
        );
    }

    #[test]
    fn breakers_are_kept_per_workspace_and_origin() {
        let breakers = Breakers::new(BreakerConfig {
            failures: 1,
            window_ms: 1_000,
            cool_down_ms: 60_000,
        });
        let now = Instant::now();
        breakers
            .get("ws-a", "https://api.example.com")
            .record(Permit::Normal, false, now);
        assert_eq!(
            breakers.all_tripped(now),
            vec![(
                "ws-a".to_owned(),
                "https://api.example.com".to_owned(),
                BreakerState::Open
            )],
            "ws-a's breaker only: ws-b's for the same origin is another one"
        );
        assert_eq!(
            breakers.get("ws-b", "https://api.example.com").admit(now),
            Ok(Permit::Normal)
        );
    }
}
