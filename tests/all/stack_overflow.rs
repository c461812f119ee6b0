//! A plugin that recurses without bound.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{Harness, plugins::STACK_OVERFLOW, run_failing};
use serde_json::json;

#[tokio::test]
async fn shallow_recursion_is_fine() {
    let harness = Harness::new();
    let (plugin, binding) = harness.ready(STACK_OVERFLOW).await;
    let outcome = harness
        .invoke(&plugin, &binding, "run", json!({ "depth": 10 }))
        .await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    let error = run_failing(
        STACK_OVERFLOW,
        Default::default(),
        json!({ "depth": 10_000_000 }),
    )
    .await;
    assert_eq!(error, InvokeError::StackOverflow);
}

#[tokio::test]
async fn overflowing_the_linear_memory_stack_fails_only_that_call() {
    // Rust keeps address-taken locals on a shadow stack at the bottom of linear
    // memory; running off it is an out-of-bounds access, not a wasm stack overflow.
    let input = json!({ "depth": 10_000_000, "linear": true });
    let error = run_failing(STACK_OVERFLOW, Default::default(), input).await;
    assert!(
        matches!(&error, InvokeError::Trap(m) if m.contains("out of bounds")),
        "{error:?}"
    );
}
