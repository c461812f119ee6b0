//! Checking a value against an operation's schema within the call's deadline
//! (the schema's cost is bounded at install by [`patchbay_policy::schema`]).

use crate::error::InvokeError;
use crate::slots::Slot;
use patchbay_policy::schema::schema_errors;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `value`, with its violations of `validator`, found on a blocking thread
/// raced against `deadline`: a schema can make checking cost far more than
/// the plugin's run, and the call must still end on time. A check that
/// outlives its call keeps the call's `slot` until it ends, so the
/// concurrency caps also bound the checks left running.
pub async fn checked_in_time(
    validator: &Arc<jsonschema::Validator>,
    value: Json,
    (deadline, timeout): (Instant, Duration),
    slot: Arc<Slot>,
) -> Result<(Json, Vec<String>), InvokeError> {
    let validator = validator.clone();
    let check = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let problems = schema_errors(&validator, &value);
        (value, problems)
    });
    match tokio::time::timeout_at(deadline.into(), check).await {
        Ok(Ok(checked)) => Ok(checked),
        Ok(Err(e)) => Err(InvokeError::Host(format!("schema check failed: {e}"))),
        Err(_) => Err(InvokeError::Timeout(timeout.as_millis() as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::test_support::ref_chain;
    use serde_json::json;

    #[tokio::test]
    async fn a_slow_check_ends_at_the_deadline_and_keeps_its_slot_until_done() {
        // Built without the install bounds: 2^17 paths, about a second of work.
        let validator =
            Arc::new(jsonschema::validator_for(&ref_chain("anyOf", 17)).expect("built"));
        let slots = crate::slots::Slots::new(1, 1);
        let scope = patchbay_storage::Scope {
            workspace: "ws".into(),
            connection: "c".into(),
        };
        let far = Instant::now() + Duration::from_secs(30);
        let slot = Arc::new(slots.acquire(&scope, far).await.expect("slot"));
        let started = Instant::now();
        let timeout = Duration::from_millis(100);
        let result =
            checked_in_time(&validator, json!("x"), (started + timeout, timeout), slot).await;
        assert_eq!(result.map(|(_, p)| p), Err(InvokeError::Timeout(100)));
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            slots.open_scopes(),
            2,
            "the running check still holds its slot"
        );
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(slots.acquire(&scope, soon).await.is_err());
        // Once the check ends, its slot is free again.
        assert!(slots.acquire(&scope, far).await.is_ok());
    }
}
