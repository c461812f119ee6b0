//! A plugin that never returns.

use patchbay::runtime::error::InvokeError;
use patchbay_tests::{Harness, plugins::LOOP_FOREVER, run_failing};
use serde_json::Value;
use std::sync::Arc;

#[tokio::test]
async fn an_infinite_loop_hits_the_deadline() {
    let error = run_failing(LOOP_FOREVER, Default::default(), Value::Null).await;
    assert_eq!(error, InvokeError::Timeout(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_proceed_while_a_plugin_loops() {
    let harness = Arc::new(Harness::new());
    let (plugin, binding) = harness.ready(LOOP_FOREVER).await;
    let looping = {
        let (harness, plugin, binding) = (harness.clone(), plugin.clone(), binding.clone());
        tokio::spawn(async move { harness.invoke(&plugin, &binding, "run", Value::Null).await })
    };
    for _ in 0..5 {
        let outcome = harness.invoke(&plugin, &binding, "ok", Value::Null).await;
        assert_eq!(outcome.result, Ok(Value::from("ok")));
    }
    let outcome = looping.await.expect("task");
    assert_eq!(outcome.result, Err(InvokeError::Timeout(1000)));
}
