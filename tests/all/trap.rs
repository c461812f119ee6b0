//! A plugin that traps.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{plugins::TRAP, run_failing};
use serde_json::Value;

#[tokio::test]
async fn a_trap_fails_only_that_call() {
    let error = run_failing(TRAP, Default::default(), Value::Null).await;
    assert!(
        matches!(&error, InvokeError::Trap(m) if m.contains("unreachable")),
        "{error:?}"
    );
}
