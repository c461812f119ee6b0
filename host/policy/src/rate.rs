//! Outbound request rates: what a vendor declares for its upstream API, and
//! the operator's default; the stricter applies.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `requests` per `per_seconds` seconds, with bursts up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed in each window, and the largest burst.
    pub requests: u32,
    /// The window's length, in seconds.
    pub per_seconds: u32,
}

impl RateLimit {
    /// Requests per second, for comparing two limits.
    fn rate(&self) -> f64 {
        f64::from(self.requests) / f64::from(self.per_seconds.max(1))
    }

    /// The stricter of the vendor's declared limit (if any) and the operator's.
    pub fn effective(declared: Option<RateLimit>, operator: RateLimit) -> RateLimit {
        match declared {
            Some(declared) if declared.rate() < operator.rate() => declared,
            _ => operator,
        }
    }

    /// Time between two requests at the steady rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.per_seconds)) / self.requests.max(1)
    }

    /// `None` when either number is zero.
    pub fn validate(self) -> Option<Self> {
        (self.requests > 0 && self.per_seconds > 0).then_some(self)
    }
}

/// `REQUESTS/SECONDS` (`500/1`, `190/10`), or `REQUESTS` for per second:
/// how the command line writes a rate.
impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (requests, seconds) = text.trim().split_once('/').unwrap_or((text.trim(), "1"));
        let number = |part: &str| part.trim().parse::<u32>().ok().filter(|n| *n > 0);
        match (number(requests), number(seconds)) {
            (Some(requests), Some(per_seconds)) => Ok(Self {
                requests,
                per_seconds,
            }),
            _ => Err(format!(
                "{text:?} is not a rate: expected REQUESTS/SECONDS with both at least 1, e.g. 500/1"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_seconds: u32) -> RateLimit {
        RateLimit {
            requests,
            per_seconds,
        }
    }

    #[test]
    fn the_stricter_limit_applies() {
        let operator = limit(100, 1);
        let cases = [
            (None, limit(100, 1)),
            (Some(limit(190, 10)), limit(190, 10)),
            (Some(limit(1000, 1)), limit(100, 1)),
            (Some(limit(100, 1)), limit(100, 1)),
        ];
        for (declared, expected) in cases {
            assert_eq!(
                RateLimit::effective(declared, operator),
                expected,
                "{declared:?}"
            );
        }
    }

    #[test]
    fn period_spreads_requests_evenly() {
        assert_eq!(limit(190, 10).period(), Duration::from_secs(10) / 190);
        assert_eq!(limit(4, 1).period(), Duration::from_millis(250));
        assert_eq!(limit(0, 1).validate(), None);
        assert_eq!(limit(1, 0).validate(), None);
    }

    #[test]
    fn a_rate_reads_as_requests_per_seconds() {
        let cases = [
            ("500/1", Some(limit(500, 1))),
            ("190/10", Some(limit(190, 10))),
            ("300", Some(limit(300, 1))),
            (" 20 / 2 ", Some(limit(20, 2))),
            ("0/1", None),
            ("5/0", None),
            ("5/", None),
            ("fast", None),
            ("-5/1", None),
            ("1.5/1", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<RateLimit>().ok(), expected, "{text:?}");
        }
    }
}
