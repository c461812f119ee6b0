//! A plugin that panics.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{plugins::PANIC, run_failing};
use serde_json::Value;

#[tokio::test]
async fn a_panic_is_reported_with_its_message() {
    let error = run_failing(PANIC, Default::default(), Value::Null).await;
    assert!(
        matches!(&error, InvokeError::Panic(m) if m.contains("gave up on purpose")),
        "{error:?}"
    );
}
