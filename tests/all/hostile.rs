//! A plugin written to take what it can from the host on one call: host-side
//! memory through wasi:http header collections, and error messages of any
//! size. Each attempt ends in a clear error, the host stays small, and the
//! same plugin serves its next call.

use patchbay::runtime::error::{InvokeError, MAX_ERROR_MESSAGE_BYTES, PluginFailure};
use patchbay_tests::{Harness, api_call, create_workspace, operator_call, plugins::HOSTILE};
use serde_json::{Value, json};

/// Held by the tests of this module that move the process's resident set by
/// tens of megabytes, so the one that measures it measures only itself.
static RESIDENT_SET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's resident set, from /proc (Linux), in bytes.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

#[tokio::test]
async fn header_collections_are_bounded_by_a_budget_derived_from_memory_mb() {
    let _alone = RESIDENT_SET.lock().await;
    let harness = Harness::new();
    let (plugin, binding) = harness.ready(HOSTILE).await;
    // memory_mb = 16: 256 host resources of at most 64 KiB of fields each.
    // Each form would make the host hold about 600 MB if nothing bounded it.
    let cases = [
        (
            json!({ "form": "many", "count": 10_000, "bytes": 60_000 }),
            InvokeError::HostResources(256),
        ),
        (
            json!({ "form": "clones", "count": 10_000, "bytes": 60_000 }),
            InvokeError::HostResources(256),
        ),
        (
            json!({ "form": "one", "count": 5000, "bytes": 60_000 }),
            InvokeError::HeaderFieldsTooLarge(64 * 1024),
        ),
    ];
    for (input, expected) in cases {
        let before = resident_bytes();
        let outcome = harness
            .invoke(&plugin, &binding, "hoard-headers", input.clone())
            .await;
        let grown = resident_bytes().saturating_sub(before);
        assert_eq!(outcome.result, Err(expected), "{input}");
        // Generous: other tests run in this process at the same time.
        assert!(
            grown < 256 << 20,
            "{input}: the host grew by {} MiB",
            grown >> 20
        );
        let after = harness.invoke(&plugin, &binding, "ok", Value::Null).await;
        assert_eq!(after.result, Ok(Value::from("ok")), "serves after {input}");
    }
    // A plugin within its budget is not refused.
    let fine = harness
        .invoke(
            &plugin,
            &binding,
            "hoard-headers",
            json!({ "form": "many", "count": 100, "bytes": 1000 }),
        )
        .await;
    assert_eq!(fine.result, Ok(json!(100)));
}

#[tokio::test]
async fn a_plugins_huge_error_message_is_capped_and_marked() {
    let _alone = RESIDENT_SET.lock().await;
    let harness = Harness::new();
    // Room in the plugin's own memory for a 50 MB message.
    let package = HOSTILE.package_with(|m| m.replace("memory_mb = 16", "memory_mb = 128"));
    let plugin = harness.install_package(package).await;
    let binding = harness.binding(&plugin, "ws-1", "hostile", &[]);
    let bytes = 50_000_000;
    for kind in ["invalid-input", "not-found", "upstream", "unsupported"] {
        let outcome = harness
            .invoke(
                &plugin,
                &binding,
                "huge-error",
                json!({ "kind": kind, "bytes": bytes }),
            )
            .await;
        let Err(InvokeError::Plugin(failure)) = outcome.result else {
            panic!(
                "{kind}: expected the plugin's error, got {:?}",
                outcome.result
            );
        };
        let message = match &failure {
            PluginFailure::InvalidInput { message }
            | PluginFailure::NotFound { message }
            | PluginFailure::Upstream { message, .. }
            | PluginFailure::Unsupported { message } => message,
            other => panic!("{kind}: unexpected {other:?}"),
        };
        assert!(
            message.len() < MAX_ERROR_MESSAGE_BYTES + 64,
            "{kind}: {} bytes",
            message.len()
        );
        assert!(
            message.ends_with(&format!("[truncated, {bytes} bytes]")),
            "{kind}: {}",
            &message[message.len() - 40..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_a_huge_plugin_error_small_and_marked() {
    let _alone = RESIDENT_SET.lock().await;
    let harness = Harness::new();
    let package = HOSTILE.package_with(|m| m.replace("memory_mb = 16", "memory_mb = 128"));
    harness.install_package(package).await;
    let base = harness.serve_api().await;
    assert_eq!(create_workspace(&base, "acme").await.0, 201);
    let (status, body) = operator_call(
        &base,
        "PUT",
        "/v1/workspaces/acme/connections/h",
        Some(json!({ "plugin": "hostile", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = api_call(
        "POST",
        &base,
        "/v1/workspaces/acme/connections/h/operations/huge-error",
        Some(patchbay_tests::OPERATOR_TOKEN),
        Some(json!({ "input": { "kind": "invalid-input", "bytes": 50_000_000 } })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let answer = body.to_string();
    assert!(answer.len() < 8 * 1024, "{} bytes", answer.len());
    assert!(answer.contains("[truncated, 50000000 bytes]"), "{answer}");
}

/// Schemas that make checking one value cost far more than any call may
/// take are refused when the package is installed, naming the reason.
#[tokio::test]
async fn expensive_schemas_are_refused_at_install() {
    let harness = Harness::new();
    let echo = "name = \"echo\"\nkind = \"transform\"\ninput_schema = { }\noutput_schema = { }";
    // d0..d19, each an anyOf of two references to the next: 2^20 paths.
    let chain: String = (0..20)
        .map(|d| format!("d{d} = {{ anyOf = [ {{ \"$ref\" = \"#/$defs/d{n}\" }}, {{ \"$ref\" = \"#/$defs/d{n}\" }} ] }}, ", n = d + 1))
        .collect();
    let chain = format!(
        "{{ \"$defs\" = {{ {chain}d20 = {{ type = \"integer\" }} }}, \"$ref\" = \"#/$defs/d0\" }}"
    );
    let node = r##"{ type = "array", items = { "$ref" = "#/$defs/node" } }"##;
    let twice = format!(
        "{{ \"$defs\" = {{ node = {{ anyOf = [ {node}, {node} ] }} }}, \"$ref\" = \"#/$defs/node\" }}"
    );
    let cases = [
        (r#"{ pattern = "^(?=a)(a+)+$" }"#.to_owned(), "look-around"),
        (r#"{ pattern = '^(a+)\1$' }"#.to_owned(), "back-references"),
        (chain, "expands to more than"),
        (twice, "can apply more than once"),
    ];
    for (schema, reason) in cases {
        for which in ["input", "output", "config"] {
            let edited = match which {
                "input" => format!(
                    "name = \"echo\"\nkind = \"transform\"\ninput_schema = {schema}\noutput_schema = {{ }}"
                ),
                "output" => format!(
                    "name = \"echo\"\nkind = \"transform\"\ninput_schema = {{ }}\noutput_schema = {schema}"
                ),
                // Every connection save is checked against the config schema.
                _ => format!("{echo}\n\n[capabilities.config]\nschema = {schema}"),
            };
            let package = HOSTILE.package_with(|m| {
                assert!(m.contains(echo), "the manifest declares echo as expected");
                m.replace(echo, &edited)
            });
            let error = harness
                .services
                .catalog
                .install(package)
                .await
                .err()
                .unwrap_or_else(|| panic!("{which} {schema}: installed"))
                .to_string();
            assert!(
                error.contains(&format!("{which} schema")) && error.contains(reason),
                "{which} {schema}: {error}"
            );
        }
    }
    assert!(harness.services.catalog.list().expect("list").is_empty());
}
