//! When an outbound request is tried again, and how long to wait.
//!
//! Only idempotent requests are retried (GET, HEAD, PUT, DELETE, OPTIONS, or
//! any request carrying an `Idempotency-Key`), and only on outcomes that may go
//! away by themselves. Waits follow `Retry-After` when the upstream sends it
//! (seconds or HTTP-date), else exponential backoff with full jitter.

use std::time::{Duration, SystemTime};

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: u32 = 3;

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connection could not be established.
    Connect,
    /// The attempt ran out of time.
    Timeout,
    /// A response arrived.
    Status(u16),
    /// Anything else: refused by policy, malformed, protocol error.
    Other,
}

impl Outcome {
    /// What became of an attempt.
    pub fn of(result: &Result<reqwest::Response, crate::EgressError>) -> Self {
        match result {
            Ok(response) => Self::Status(response.status().as_u16()),
            Err(crate::EgressError::Connect(_)) => Self::Connect,
            Err(crate::EgressError::Timeout) => Self::Timeout,
            Err(_) => Self::Other,
        }
    }

    /// Whether it counts against the upstream's circuit breaker.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Timeout | Self::Status(500 | 502 | 503 | 504)
        )
    }
}

/// The one classification table: which outcomes are worth another attempt.
pub fn is_retryable(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Connect | Outcome::Status(408 | 429 | 500 | 502 | 503 | 504)
    )
}

/// Whether repeating `method` (with these headers) cannot duplicate an effect.
pub fn is_idempotent(method: &http::Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::OPTIONS
    ) || headers.contains_key("idempotency-key")
}

/// The wait a `Retry-After` header asks for, in either form; a date in the past is zero.
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with full jitter: a uniform draw between zero and
/// `base * 2^(attempt-1)`, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The ceiling of the first wait; it doubles with each attempt.
    pub base: Duration,
    /// The ceiling no wait goes past.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use Outcome::*;
        let cases: &[(Outcome, bool)] = &[
            (Connect, true),
            (Timeout, false),
            (Other, false),
            (Status(200), false),
            (Status(301), false),
            (Status(400), false),
            (Status(401), false),
            (Status(404), false),
            (Status(408), true),
            (Status(409), false),
            (Status(422), false),
            (Status(429), true),
            (Status(500), true),
            (Status(501), false),
            (Status(502), true),
            (Status(503), true),
            (Status(504), true),
            (Status(505), false),
        ];
        for (outcome, retry) in cases {
            assert_eq!(is_retryable(*outcome), *retry, "{outcome:?}");
        }
    }

    #[test]
    fn idempotency_by_method_or_key() {
        let none = http::HeaderMap::new();
        let mut keyed = http::HeaderMap::new();
        keyed.insert("idempotency-key", http::HeaderValue::from_static("k-1"));
        let cases = [
            (http::Method::GET, &none, true),
            (http::Method::HEAD, &none, true),
            (http::Method::PUT, &none, true),
            (http::Method::DELETE, &none, true),
            (http::Method::OPTIONS, &none, true),
            (http::Method::POST, &none, false),
            (http::Method::PATCH, &none, false),
            (http::Method::POST, &keyed, true),
            (http::Method::PATCH, &keyed, true),
        ];
        for (method, headers, expected) in cases {
            assert_eq!(
                is_idempotent(&method, headers),
                expected,
                "{method} {headers:?}"
            );
        }
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        let header = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(v));
            h
        };
        assert_eq!(
            retry_after(&header("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(&header(" 0 "), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&header("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&header("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&header("soon"), now), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }

    #[test]
    fn full_jitter_stays_within_the_capped_exponential() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(350),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for (attempt, ceiling_ms) in [(1, 100), (2, 200), (3, 350), (10, 350)] {
            let draws: Vec<Duration> = (0..200).map(|_| backoff.delay(attempt, &mut rng)).collect();
            assert!(
                draws
                    .iter()
                    .all(|d| *d <= Duration::from_millis(ceiling_ms)),
                "attempt {attempt}"
            );
            // Full jitter spreads over the whole range, down to near zero.
            assert!(
                draws
                    .iter()
                    .any(|d| *d < Duration::from_millis(ceiling_ms / 4)),
                "attempt {attempt}"
            );
        }
    }
}
