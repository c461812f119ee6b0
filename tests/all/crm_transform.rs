//! The benchmark transform gives the same result in the sandbox as natively.

use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, crm_page, plugins::CRM_TRANSFORM};
use serde_json::Value;

#[tokio::test]
async fn the_plugin_and_the_native_build_agree() {
    let harness = Harness::new();
    let plugin = harness.install(CRM_TRANSFORM).await;
    let binding = harness.binding(&plugin, "ws-1", "bench", &[]);
    let page = crm_page(40);
    let native: Value =
        serde_json::from_str(&crm_normalize::transform(&page).expect("native")).expect("json");
    let input: Value = serde_json::from_str(&page).expect("json");
    let outcome = harness
        .invoke(&plugin, &binding, "normalize-contacts", input)
        .await;
    let sandboxed = outcome.result.expect("plugin");
    assert_eq!(sandboxed, native);
    let contacts = sandboxed.as_array().expect("array");
    assert_eq!(contacts.len(), 36, "archived records are dropped");
    assert_eq!(contacts[1]["email"], "person.1@example.com");
    assert_eq!(contacts[1]["phone"], "+15550010001");
    assert_eq!(
        contacts[0]["phone"], "+447700000000",
        "falls back to the mobile number"
    );
}

#[tokio::test]
async fn the_raw_sandbox_call_returns_the_plugins_text() {
    let harness = Harness::new();
    let plugin = harness.install(CRM_TRANSFORM).await;
    let binding = harness.binding(&plugin, "ws-1", "bench", &[]);
    let runtime = harness.services.catalog.runtime();
    let noop = runtime
        .call_sandboxed(&plugin, &binding, "noop", "{}", Default::default())
        .await;
    assert_eq!(noop.result.expect("noop"), "null");
    let bad = runtime
        .call_sandboxed(
            &plugin,
            &binding,
            "normalize-contacts",
            "[1]",
            Default::default(),
        )
        .await;
    assert!(
        matches!(
            bad.result,
            Err(InvokeError::Plugin(PluginFailure::InvalidInput { .. }))
        ),
        "{:?}",
        bad.result
    );
    let unknown = runtime
        .call_sandboxed(&plugin, &binding, "nope", "{}", Default::default())
        .await;
    assert_eq!(
        unknown.result,
        Err(InvokeError::UnknownOperation("nope".into()))
    );
}
