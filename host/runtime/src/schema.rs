//! Checking a value against an operation's schema within the call's deadline
//! (the schema's cost is bounded at install by [`patchbay_policy::schema`]).

use crate::error::InvokeError;
use crate::slots::Slot;
use patchbay_policy::schema::{BoundedValidator, schema_errors};
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Subschema applications a check may take on the calling task. At a few
/// tens of nanoseconds each, that is well under a millisecond: less than an
/// epoch slice of guest code, and far less than a thread hand-off costs a
/// lookup's small input and output.
pub const INLINE_CHECK_WORK: usize = 64 * 1024;

/// The violations of `validator` in `value` (a JSON text of `bytes` bytes),
/// found within `deadline`.
///
/// When the schema's cost bound puts the check under [`INLINE_CHECK_WORK`]
/// it runs in place. Otherwise it runs on a blocking thread raced against
/// the deadline: a schema can make checking cost far more than the
/// plugin's run, and the call must still end on time. A check that outlives
/// its call keeps the call's `slot` until it ends, so the concurrency caps
/// also bound the checks left running.
pub async fn checked_in_time(
    validator: &Arc<BoundedValidator>,
    value: &Json,
    bytes: usize,
    within: (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<Vec<String>, InvokeError> {
    if validator.work_bound(bytes) <= INLINE_CHECK_WORK {
        return Ok(schema_errors(&validator.validator, value));
    }
    let (validator, value) = (validator.clone(), value.clone());
    on_a_thread(
        move || schema_errors(&validator.validator, &value),
        within,
        slot,
    )
    .await
}

/// [`checked_in_time`] for a value the caller owns: moved to the checking
/// thread and back rather than copied (a large output is the costly case).
pub async fn checked_owned_in_time(
    validator: &Arc<BoundedValidator>,
    value: Json,
    bytes: usize,
    within: (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<(Json, Vec<String>), InvokeError> {
    if validator.work_bound(bytes) <= INLINE_CHECK_WORK {
        let problems = schema_errors(&validator.validator, &value);
        return Ok((value, problems));
    }
    let validator = validator.clone();
    let check = move || {
        let problems = schema_errors(&validator.validator, &value);
        (value, problems)
    };
    on_a_thread(check, within, slot).await
}

/// Run `check` on a blocking thread that holds `slot` until it ends, and
/// wait for it until the deadline.
async fn on_a_thread<T: Send + 'static>(
    check: impl FnOnce() -> T + Send + 'static,
    (deadline, timeout): (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<T, InvokeError> {
    let slot = slot.clone();
    let check = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        check()
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

    fn one_slot() -> (crate::slots::Slots, Arc<Slot>) {
        let slots = crate::slots::Slots::new(1, 1);
        let scope = patchbay_storage::Scope {
            workspace: "ws".into(),
            connection: "c".into(),
        };
        let far = Instant::now() + Duration::from_secs(30);
        let slot = futures_lite_block_on(slots.acquire(&scope, far)).expect("slot");
        (slots, Arc::new(slot))
    }

    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn a_cheap_check_runs_in_place_not_behind_the_blocking_pool() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (_slots, slot) = one_slot();
        let validator = Arc::new(
            patchbay_policy::schema::bounded_validator(&json!({ "type": "string" }))
                .expect("built"),
        );
        runtime.block_on(async {
            // The only blocking thread is taken: a check sent there would
            // wait past its deadline.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || held.recv());
            let timeout = Duration::from_millis(300);
            let within = (Instant::now() + timeout, timeout);
            let result = checked_in_time(&validator, &json!(5), 1, within, &slot).await;
            assert_eq!(result.map(|problems| problems.len()), Ok(1));
            release.send(()).expect("release");
            busy.await.expect("join").expect("released");
        });
    }

    #[tokio::test]
    async fn a_slow_check_ends_at_the_deadline_and_keeps_its_slot_until_done() {
        // Built without the install bounds: 2^17 paths, about a second of work.
        let validator = Arc::new(BoundedValidator {
            validator: jsonschema::validator_for(&ref_chain("anyOf", 17)).expect("built"),
            subschemas: 1 << 18,
        });
        let slots = crate::slots::Slots::new(1, 1);
        let scope = patchbay_storage::Scope {
            workspace: "ws".into(),
            connection: "c".into(),
        };
        let far = Instant::now() + Duration::from_secs(30);
        let slot = Arc::new(slots.acquire(&scope, far).await.expect("slot"));
        let started = Instant::now();
        let timeout = Duration::from_millis(100);
        let result = checked_in_time(
            &validator,
            &json!("x"),
            3,
            (started + timeout, timeout),
            &slot,
        )
        .await;
        drop(slot);
        assert_eq!(result, Err(InvokeError::Timeout(100)));
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
