//! Circuit breakers per (workspace, upstream origin).
//!
//! `failures` failed attempts within `window` open the breaker for `cool_down`;
//! while open, requests fail fast without touching the upstream. After the
//! cool-down one trial request is admitted (half-open): success closes the
//! breaker, failure opens it again.

pub use patchbay_policy::limits::BreakerConfig;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The breaker's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Requests go through; failures within the window are counted.
    Closed,
    /// Requests fail fast until the cool-down ends.
    Open,
    /// The cool-down is over: one trial request decides whether it closes or
    /// opens again.
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
    /// Admitted by a closed breaker: a failure counts towards opening it.
    Normal,
    /// The one trial of a half-open breaker: its outcome closes or reopens it.
    Trial,
}

/// Refused: the breaker is open (or its one trial is under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Until the cool-down ends; while a trial is under way, one cool-down.
    pub retry_after: Duration,
}

/// The circuit breaker of one (workspace, upstream origin); see the module
/// docs for how it moves between states.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker with no failures counted.
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

    /// Closed, with no failure inside the window.
    fn is_idle(&self, now: Instant) -> bool {
        let window = Duration::from_millis(self.config.window_ms);
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { failures } => failures
                .back()
                .is_none_or(|last| now.duration_since(*last) > window),
            _ => false,
        }
    }

    /// Its state at `now`; an open breaker whose cool-down has passed reports
    /// half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now >= *until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Admit one attempt at `now`, or refuse it with how long to wait. Once the
    /// cool-down has passed it admits one trial and refuses the rest until the
    /// trial is recorded or released. Prefer [`admit_guarded`](Self::admit_guarded),
    /// which cannot lose a trial.
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

    /// Record the outcome of an attempt admitted with `permit`: while closed, a
    /// failure is counted, and `failures` of them within the window open the
    /// breaker; a trial's outcome closes it or opens it again. A success while
    /// closed, or an outcome that outlived a state change, changes nothing.
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

/// An admitted attempt. A half-open breaker's one trial goes back if the
/// attempt is dropped before its outcome is recorded (its call timed out,
/// or the plugin dropped the request), so the breaker is never left waiting
/// for a trial that will not report.
#[derive(Debug)]
pub struct Admission {
    breaker: Arc<Breaker>,
    permit: Option<Permit>,
}

impl Admission {
    /// Nothing was sent.
    pub fn release(mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }

    /// What the attempt came to.
    pub fn record(mut self, success: bool, now: Instant) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, success, now);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

impl Breaker {
    /// [`admit`](Self::admit), with the permit held by a guard.
    pub fn admit_guarded(this: &Arc<Self>, now: Instant) -> Result<Admission, Open> {
        this.admit(now).map(|permit| Admission {
            breaker: this.clone(),
            permit: Some(permit),
        })
    }
}

/// Breakers kept before idle ones are first swept out; after a sweep, the
/// next comes when the map has doubled from what the sweep kept.
const SWEEP_FROM: usize = 4096;

/// All breakers of the host, by (workspace, origin).
#[derive(Debug, Default)]
pub struct Breakers {
    config: BreakerConfig,
    breakers: Mutex<Keyed>,
}

/// The breakers by (workspace, origin), and the size that triggers the next sweep.
#[derive(Debug, Default)]
struct Keyed {
    map: HashMap<(String, String), Arc<Breaker>>,
    sweep_at: usize,
}

impl Breakers {
    /// No breakers yet; each one created opens by `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            breakers: Mutex::default(),
        }
    }

    /// The breaker of (`workspace`, `origin`), created closed on first use.
    /// `origin` is a target's canonical origin, so spellings of one host share
    /// a breaker.
    pub fn get(&self, workspace: &str, origin: &str) -> Arc<Breaker> {
        let mut keyed = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        // A plugin may reach many origins: a closed breaker with no recent
        // failure, held by no request, is the same as a new one, so such
        // breakers are dropped once the map grows. A sweep that keeps most
        // of them is not repeated until the map doubles.
        if keyed.map.len() >= keyed.sweep_at.max(SWEEP_FROM) {
            let now = Instant::now();
            keyed
                .map
                .retain(|_, breaker| Arc::strong_count(breaker) > 1 || !breaker.is_idle(now));
            keyed.sweep_at = keyed.map.len() * 2;
        }
        keyed
            .map
            .entry((workspace.to_owned(), origin.to_owned()))
            .or_insert_with(|| Arc::new(Breaker::new(self.config)))
            .clone()
    }

    /// Every breaker that is not closed: workspace, origin, state.
    pub fn all_tripped(&self, now: Instant) -> Vec<(String, String, BreakerState)> {
        let keyed = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = keyed
            .map
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
    fn a_sweep_that_keeps_every_breaker_is_not_repeated_on_each_request() {
        let breakers = Breakers::new(BreakerConfig::default());
        // Every breaker is held (a request in flight), so none can go.
        let held: Vec<Arc<Breaker>> = (0..SWEEP_FROM)
            .map(|i| breakers.get("ws", &format!("https://h{i}.example.com")))
            .collect();
        breakers.get("ws", "https://h0.example.com");
        let keyed = breakers.breakers.lock().expect("lock");
        assert_eq!(keyed.map.len(), SWEEP_FROM, "a held breaker is kept");
        assert_eq!(
            keyed.sweep_at,
            2 * SWEEP_FROM,
            "the next sweep waits for the map to double"
        );
        drop(keyed);
        drop(held);
        // Idle once released: the sweep at the doubled size drops them.
        for i in SWEEP_FROM..2 * SWEEP_FROM {
            breakers.get("ws", &format!("https://h{i}.example.com"));
        }
        breakers.get("ws", "https://last.example.com");
        assert!(
            breakers.breakers.lock().expect("lock").map.len() < 8,
            "idle breakers swept"
        );
    }

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

    #[test]
    fn a_trial_dropped_before_its_outcome_goes_back() {
        let breaker = Arc::new(Breaker::new(BreakerConfig {
            failures: 1,
            window_ms: 60_000,
            cool_down_ms: 10,
        }));
        let t0 = Instant::now();
        breaker.record(Permit::Normal, false, t0);
        let later = t0 + Duration::from_millis(20);
        let trial = Breaker::admit_guarded(&breaker, later).expect("the trial");
        assert!(
            Breaker::admit_guarded(&breaker, later).is_err(),
            "one trial at a time"
        );
        drop(trial);
        let next = Breaker::admit_guarded(&breaker, later).expect("the trial came back");
        next.record(true, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn idle_breakers_are_swept_once_there_are_many_and_open_ones_kept() {
        let breakers = Breakers::new(BreakerConfig {
            failures: 1,
            window_ms: 60_000,
            cool_down_ms: 60_000,
        });
        breakers.get("ws", "https://down.example.com:443").record(
            Permit::Normal,
            false,
            Instant::now(),
        );
        for i in 0..SWEEP_FROM * 2 {
            breakers.get("ws", &format!("https://h{i}.example.com:443"));
        }
        let map = &breakers.breakers.lock().expect("lock").map;
        assert!(map.len() < SWEEP_FROM * 2, "{} kept", map.len());
        assert!(map.contains_key(&("ws".to_owned(), "https://down.example.com:443".to_owned())));
    }
}
