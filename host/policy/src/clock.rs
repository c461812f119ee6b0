//! Wall-clock time in milliseconds, injectable so expiry can be tested.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the Unix epoch:
/// [`system`] in the host; in tests, a closure the test sets.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock; 0 if it reads before 1970.
pub fn system() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}
