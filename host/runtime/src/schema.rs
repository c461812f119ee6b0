//! Checking a value against an operation's schema within the call's deadline
//! (the schema's cost is bounded at install by [`patchbay_policy::schema`]).

use crate::error::InvokeError;
use crate::slots::Slot;
use patchbay_policy::schema::{BoundedValidator, schema_errors};
use patchbay_policy::text::cap_message;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Subschema applications a check may take on the calling task. At a few
/// tens of nanoseconds each, that is well under a millisecond: less than an
/// epoch slice of guest code, and far less than a thread hand-off costs a
/// lookup's small input and output.
pub const INLINE_CHECK_WORK: usize = 64 * 1024;

/// The violations of `validator` in an operation's `input` (a JSON text of
/// `bytes` bytes), found within `deadline`.
///
/// When the schema's cost bound puts the check under [`INLINE_CHECK_WORK`]
/// it runs in place. Otherwise the value moves to a blocking thread, is
/// checked and dropped there, raced against the deadline: a schema can make
/// checking cost far more than the plugin's run, and the call must still
/// end on time. A check that outlives its call keeps the call's `slot` until
/// it ends, so the concurrency caps also bound the checks left running.
pub async fn input_problems(
    validator: &Arc<BoundedValidator>,
    input: Json,
    bytes: usize,
    within: (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<Vec<String>, InvokeError> {
    let validator = validator.clone();
    let cost = validator.work_bound(bytes);
    in_time(
        cost,
        move || schema_errors(&validator.validator, &input),
        within,
        slot,
    )
    .await
}

/// A plugin's output `text` parsed, and its violations of `validator`,
/// within `deadline`: in place for a small output under a cheap schema, on
/// a blocking thread otherwise (parsing costs less than checking, per byte,
/// so the schema's bound covers both).
pub async fn parsed_output(
    validator: &Arc<BoundedValidator>,
    text: String,
    within: (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<(Json, Vec<String>), InvokeError> {
    let validator = validator.clone();
    let cost = validator.work_bound(text.len());
    let parse_and_check = move || {
        let output: Json = serde_json::from_str(&text)
            .map_err(|e| InvokeError::InvalidOutput(cap_message(e.to_string())))?;
        let problems = schema_errors(&validator.validator, &output);
        Ok((output, problems))
    };
    in_time(cost, parse_and_check, within, slot).await?
}

/// Run `work` (of `cost` subschema applications at most) in place when it
/// is under [`INLINE_CHECK_WORK`]; otherwise on a blocking thread that holds
/// `slot` until it ends, waited for until the deadline.
async fn in_time<T: Send + 'static>(
    cost: usize,
    work: impl FnOnce() -> T + Send + 'static,
    (deadline, timeout): (Instant, Duration),
    slot: &Arc<Slot>,
) -> Result<T, InvokeError> {
    if cost <= INLINE_CHECK_WORK {
        return Ok(work());
    }
    let slot = slot.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    });
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(InvokeError::Host(format!("schema check failed: {e}"))),
        Err(_) => Err(InvokeError::Timeout(timeout.as_millis() as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::test_support::ref_chain;
    use serde_json::json;

    fn scope() -> patchbay_storage::Scope {
        patchbay_storage::Scope {
            workspace: "ws".into(),
            connection: "c".into(),
        }
    }

    /// The one place `slots` (of one per scope) holds for [`scope`].
    async fn held(slots: &crate::slots::Slots) -> Arc<Slot> {
        let far = Instant::now() + Duration::from_secs(30);
        Arc::new(slots.acquire(&scope(), far).await.expect("slot"))
    }

    fn one_slot() -> (crate::slots::Slots, Arc<Slot>) {
        let slots = crate::slots::Slots::new(1, 1);
        let slot = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(held(&slots));
        (slots, slot)
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
            let result = input_problems(&validator, json!(5), 1, within, &slot).await;
            assert_eq!(result.map(|problems| problems.len()), Ok(1));
            release.send(()).expect("release");
            busy.await.expect("join").expect("released");
        });
    }

    #[tokio::test]
    async fn outputs_are_parsed_and_checked_in_place_or_on_a_thread_alike() {
        let slots = crate::slots::Slots::new(1, 1);
        let slot = held(&slots).await;
        let validator = Arc::new(
            patchbay_policy::schema::bounded_validator(
                &json!({ "type": "array", "items": { "type": "integer" } }),
            )
            .expect("built"),
        );
        let timeout = Duration::from_secs(30);
        let within = (Instant::now() + timeout, timeout);
        let small = "[1, 2]".to_owned();
        let large = format!("[{}]", vec!["7"; 60_000].join(","));
        assert!(validator.work_bound(small.len()) <= INLINE_CHECK_WORK);
        assert!(validator.work_bound(large.len()) > INLINE_CHECK_WORK);
        for text in [small, large] {
            let (value, problems) = parsed_output(&validator, text.clone(), within, &slot)
                .await
                .expect("parsed");
            assert_eq!(value, serde_json::from_str::<Json>(&text).expect("json"));
            assert!(problems.is_empty(), "{problems:?}");

            let wrong = text
                .replacen('7', "\"seven\"", 1)
                .replacen('2', "\"two\"", 1);
            let (_, problems) = parsed_output(&validator, wrong, within, &slot)
                .await
                .expect("parsed");
            assert_eq!(problems.len(), 1, "{problems:?}");

            let broken = format!("{text} trailing");
            match parsed_output(&validator, broken, within, &slot).await {
                Err(InvokeError::InvalidOutput(message)) => {
                    assert!(message.contains("trailing characters"), "{message}")
                }
                other => panic!("expected invalid output, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_slow_check_ends_at_the_deadline_and_keeps_its_slot_until_done() {
        // Built without the install bounds: 2^17 paths, about a second of work.
        let validator = Arc::new(BoundedValidator {
            validator: jsonschema::validator_for(&ref_chain("anyOf", 17)).expect("built"),
            subschemas: 1 << 18,
        });
        let slots = crate::slots::Slots::new(1, 1);
        let (scope, far) = (scope(), Instant::now() + Duration::from_secs(30));
        let slot = held(&slots).await;
        let started = Instant::now();
        let timeout = Duration::from_millis(100);
        let result = input_problems(
            &validator,
            json!("x"),
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
