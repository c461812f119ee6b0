//! A plugin that returns text that is not JSON.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{plugins::INVALID_JSON, run_failing};
use serde_json::Value;

#[tokio::test]
async fn invalid_json_output_is_refused() {
    let error = run_failing(INVALID_JSON, Default::default(), Value::Null).await;
    assert!(matches!(error, InvokeError::InvalidOutput(_)), "{error:?}");
}
