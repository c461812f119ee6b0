//! A plugin that grows its memory without bound.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::error::InvokeError;
use patchbay_tests::{Harness, plugins::GROW_MEMORY, run_failing};
use serde_json::{Value, json};

#[tokio::test]
async fn growing_memory_past_the_cap_is_a_memory_error() {
    let error = run_failing(GROW_MEMORY, Default::default(), Value::Null).await;
    assert_eq!(
        error,
        InvokeError::MemoryLimit(16 << 20),
        "the manifest asks for 16 MiB"
    );
}

#[tokio::test]
async fn the_memory_ask_is_capped_by_the_operator() {
    let limits = OperatorLimits {
        max_memory_mb: 8,
        ..OperatorLimits::default()
    };
    let error = run_failing(GROW_MEMORY, limits, Value::Null).await;
    assert_eq!(error, InvokeError::MemoryLimit(8 << 20));
}

/// The SDK's size classes (`patchbay_sdk::alloc`) hold small blocks: hoarding
/// them still ends in the memory limit, and the plugin serves again after.
#[tokio::test]
async fn hoarding_small_blocks_past_the_cap_is_a_memory_error() {
    let harness = Harness::new();
    let (loaded, binding) = harness.ready(GROW_MEMORY).await;
    let outcome = harness
        .invoke(&loaded, &binding, "run-small", Value::Null)
        .await;
    assert_eq!(outcome.result, Err(InvokeError::MemoryLimit(16 << 20)));
    let after = harness.invoke(&loaded, &binding, "ok", Value::Null).await;
    assert_eq!(after.result, Ok(Value::from("ok")));
}

/// A block freed in a call is reused within it: 100 MB allocated and freed in
/// small blocks fits a 16 MiB memory (a heap that never reused memory would not).
#[tokio::test]
async fn small_blocks_freed_in_a_call_are_reused() {
    let harness = Harness::new();
    let (loaded, binding) = harness.ready(GROW_MEMORY).await;
    let outcome = harness
        .invoke(&loaded, &binding, "churn", json!({ "megabytes": 100 }))
        .await;
    let bytes = outcome.result.expect("churn fits")["bytes"]
        .as_u64()
        .expect("bytes");
    assert!(bytes >= 100_000_000, "{bytes}");
}
