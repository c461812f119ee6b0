//! A plugin that grows its memory without bound.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::error::InvokeError;
use patchbay_tests::{plugins::GROW_MEMORY, run_failing};
use serde_json::Value;

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
