//! A plugin built against the frozen 0.1.0 contract (`wit/v0.1.0`, no SDK)
//! keeps installing and running on the 0.1.1 host: its exports and imports
//! are found by semver-compatible name, and without a `webhooks` export it
//! simply takes no webhooks.

use patchbay_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_contract_0_1_0_plugin_installs_runs_and_uses_kv() {
    let harness = Harness::new();
    let plugin = harness.install(plugins::CONTRACT_0_1_0).await;
    assert_eq!(plugin.manifest.contract.to_string(), "0.1.0");
    let binding = harness.binding(&plugin, "ws-1", "legacy", &[]);
    for expected in [1, 2] {
        let outcome = harness
            .invoke(&plugin, &binding, "echo", json!({ "hello": "world" }))
            .await;
        let output = outcome.result.expect("the 0.1.0 plugin runs");
        assert_eq!(output["echo"], json!({ "hello": "world" }));
        assert_eq!(
            output["kv"], expected,
            "its kv@0.1.0 import reaches the store"
        );
        assert_eq!(output["connection"], "legacy");
    }
}

#[tokio::test]
async fn a_contract_0_1_0_plugin_cannot_claim_to_verify_webhooks() {
    let harness = Harness::new();
    // A manifest asking the plugin to verify webhooks must name contract 0.1.1 …
    let error = harness
        .services
        .catalog
        .install(plugins::CONTRACT_0_1_0.package_with(|m| {
            format!("{m}\n[[capabilities.credentials]]\nname = \"s\"\nkind = \"webhook_secret\"\n[webhook]\nverify = \"plugin\"\n")
        }))
        .await
        .expect_err("0.1.0 has no verify-webhook");
    assert!(error.to_string().contains("0.1.1"), "{error}");
    // … and a 0.1.0 component claiming 0.1.1 is refused for the missing export.
    let error = harness
        .services
        .catalog
        .install(plugins::CONTRACT_0_1_0.package_with(|m| {
            format!(
                "{}\n[[capabilities.credentials]]\nname = \"s\"\nkind = \"webhook_secret\"\n[webhook]\nverify = \"plugin\"\n",
                m.replace("contract = \"0.1.0\"", "contract = \"0.1.1\"")
            )
        }))
        .await
        .expect_err("no webhooks export");
    assert!(
        error.to_string().contains("patchbay:connector/webhooks"),
        "{error}"
    );
}
