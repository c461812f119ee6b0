//! A plugin whose output breaks its own output schema.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{plugins::WRONG_OUTPUT, run_failing};
use serde_json::Value;

#[tokio::test]
async fn output_is_checked_against_the_output_schema() {
    match run_failing(WRONG_OUTPUT, Default::default(), Value::Null).await {
        InvokeError::OutputSchema(problems) => {
            assert!(problems.iter().any(|p| p.contains("id")), "{problems:?}")
        }
        other => panic!("expected an output schema error, got {other:?}"),
    }
}
