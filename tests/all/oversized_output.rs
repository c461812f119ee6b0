//! A plugin that returns more than the operator allows.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::error::InvokeError;
use patchbay_tests::{Harness, plugins::OVERSIZED_OUTPUT, run_failing};
use serde_json::json;

fn limits() -> OperatorLimits {
    OperatorLimits {
        max_output_bytes: 64 * 1024,
        ..OperatorLimits::default()
    }
}

#[tokio::test]
async fn output_under_the_limit_passes() {
    let harness = Harness::with_limits(limits());
    let (plugin, binding) = harness.ready(OVERSIZED_OUTPUT).await;
    let outcome = harness
        .invoke(&plugin, &binding, "run", json!({ "bytes": 1000 }))
        .await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
}

#[tokio::test]
async fn oversized_output_is_refused() {
    let error = run_failing(OVERSIZED_OUTPUT, limits(), json!({ "bytes": 100_000 })).await;
    assert!(
        matches!(error, InvokeError::OutputTooLarge { size, max: 65536 } if size > 100_000),
        "{error:?}"
    );
}
