//! Each capability, exercised through the probe plugin: HTTP gating, config,
//! environment, logging, errors and the invocation context.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::CallOptions;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay::runtime::{Binding, LoadedPlugin};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn setup_with(limits: OperatorLimits) -> (Harness, Arc<LoadedPlugin>, Binding) {
    let harness = Harness::with_limits(limits);
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[]);
    (harness, plugin, binding)
}

async fn setup() -> (Harness, Arc<LoadedPlugin>, Binding) {
    setup_with(OperatorLimits::default()).await
}

#[tokio::test]
async fn oversized_input_is_refused_before_the_call() {
    let limits = OperatorLimits {
        max_input_bytes: 1024,
        ..OperatorLimits::default()
    };
    let (harness, plugin, binding) = setup_with(limits).await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "echo",
            json!({ "blob": "x".repeat(2000) }),
        )
        .await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::InputTooLarge { max: 1024, .. })
        ),
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
async fn unknown_operations_are_refused() {
    let (harness, plugin, binding) = setup().await;
    let outcome = harness
        .invoke(&plugin, &binding, "no-such-op", json!(null))
        .await;
    assert_eq!(
        outcome.result,
        Err(InvokeError::UnknownOperation("no-such-op".into()))
    );
}

#[tokio::test]
async fn plugin_errors_keep_their_type() {
    let (harness, plugin, binding) = setup().await;
    let cases = [
        (
            "not-found",
            PluginFailure::NotFound {
                message: "nobody by that number".into(),
            },
        ),
        (
            "rate-limited",
            PluginFailure::RateLimited {
                retry_after_ms: 1500,
            },
        ),
        (
            "upstream",
            PluginFailure::Upstream {
                status: 503,
                message: "upstream down".into(),
            },
        ),
        (
            "access-denied",
            PluginFailure::AccessDenied {
                message: "plugin says no".into(),
            },
        ),
    ];
    for (input, expected) in cases {
        let outcome = harness
            .invoke(&plugin, &binding, "fail", json!(input))
            .await;
        assert_eq!(outcome.result, Err(InvokeError::Plugin(expected)));
    }
}

#[tokio::test]
async fn logs_and_stdio_are_captured_and_tagged() {
    let (harness, plugin, binding) = setup().await;
    let outcome = harness
        .invoke(&plugin, &binding, "log-flood", json!({ "lines": 2 }))
        .await;
    assert!(outcome.result.is_ok());
    let lines: Vec<(String, String)> = outcome
        .logs
        .iter()
        .map(|l| (format!("{:?}", l.source), l.message.clone()))
        .collect();
    for expected in [
        ("Log", "log line 0"),
        ("Stdout", "stdout line 0"),
        ("Stderr", "stderr line 1"),
    ] {
        assert!(
            lines
                .iter()
                .any(|(s, m)| s == expected.0 && m == expected.1),
            "{expected:?} missing from {lines:?}"
        );
    }
    assert_eq!(outcome.dropped_log_bytes, 0);
}

#[tokio::test]
async fn log_output_is_bounded_per_call() {
    let limits = OperatorLimits {
        max_log_bytes: 4096,
        ..OperatorLimits::default()
    };
    let (harness, plugin, binding) = setup_with(limits).await;
    let outcome = harness
        .invoke(&plugin, &binding, "log-flood", json!({ "lines": 2000 }))
        .await;
    assert!(
        outcome.result.is_ok(),
        "a plugin that logs too much still completes: {:?}",
        outcome.result
    );
    let kept: usize = outcome
        .logs
        .iter()
        .map(|l| l.message.len() + l.context.len())
        .sum();
    assert!(kept <= 4096, "kept {kept} bytes");
    assert!(outcome.dropped_log_bytes > 0);
}

#[tokio::test]
async fn the_sandbox_has_no_environment_and_only_the_connection_config() {
    let (harness, plugin, _) = setup().await;
    let binding = harness.binding(
        &plugin,
        "ws-1",
        "probe",
        &[("upstream", "http://127.0.0.1:1")],
    );
    // The host process has environment variables; none may reach the plugin.
    assert!(std::env::var_os("PATH").is_some());
    let outcome = harness
        .invoke(&plugin, &binding, "read-config", json!(null))
        .await;
    let output = outcome.result.expect("read-config");
    assert_eq!(
        output["config"],
        json!({ "upstream": "http://127.0.0.1:1" })
    );
    assert_eq!(output["env"], json!([]));
    assert_eq!(output["args"], json!([]));
    assert_eq!(output["stdin_bytes"], json!(0));
    // wasi-libc's default when the host gives no initial directory.
    assert_eq!(output["cwd"], json!("/"));
}

/// The host's lists and strings are written through the SDK's `cabi_realloc` on
/// wasi-libc's `malloc` (which wasi-libc may free with C `free`), while the
/// plugin's own small blocks come from the SDK's size classes.
#[tokio::test]
async fn host_written_input_is_a_libc_block_and_the_plugins_own_are_the_heaps() {
    let (harness, plugin, binding) = setup().await;
    let input = json!({ "text": "x".repeat(100) });
    let outcome = harness
        .invoke(&plugin, &binding, "heap-origin", input)
        .await;
    let mut output = outcome.result.expect("heap-origin");
    // Built with the workspace's `.cargo/config.toml`: 4 MiB (64 pages) from the start.
    let pages = output["memory_pages"].take().as_u64().expect("pages");
    assert!(
        pages >= 64,
        "{pages} pages: built without --initial-memory?"
    );
    assert_eq!(
        output,
        json!({ "input_is_heap_block": false, "own_is_heap_block": true, "memory_pages": null })
    );
}

#[tokio::test]
async fn the_plugin_sees_its_invocation_context() {
    let (harness, plugin, binding) = setup().await;
    let outcome = harness
        .services
        .catalog
        .runtime()
        .invoke(
            &plugin,
            &binding,
            "context",
            json!(null),
            CallOptions {
                idempotency_key: Some("idem-42".into()),
                deadline: None,
                tape: None,
            },
        )
        .await;
    let output = outcome.result.expect("context");
    assert_eq!(
        output,
        json!({
            "invocation_id": outcome.invocation_id,
            "idempotency_key": "idem-42",
            "workspace": "ws-1",
            "connection": "probe",
        })
    );
}

async fn fetch(
    harness: &Harness,
    plugin: &LoadedPlugin,
    binding: &Binding,
    url: String,
    method: &str,
) -> Result<Value, InvokeError> {
    harness
        .invoke(
            plugin,
            binding,
            "fetch",
            json!({ "url": url, "method": method }),
        )
        .await
        .result
}

#[tokio::test]
async fn http_goes_out_only_to_declared_destinations() {
    let (harness, plugin, _) = setup().await;
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/allowed/thing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .expect(1)
        .mount(&upstream)
        .await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &upstream.uri())]);

    let ok = fetch(
        &harness,
        &plugin,
        &binding,
        format!("{}/allowed/thing", upstream.uri()),
        "GET",
    )
    .await;
    assert_eq!(ok.expect("allowed")["body"], "hi");

    let denied = [
        (format!("{}/forbidden", upstream.uri()), "GET"),
        (format!("{}/allowed/../forbidden", upstream.uri()), "GET"),
        (format!("{}/allowed/thing", upstream.uri()), "DELETE"),
        (
            format!(
                "{}/allowed/thing",
                upstream.uri().replace("http://", "https://")
            ),
            "GET",
        ),
        ("http://example.invalid/allowed".to_owned(), "GET"),
    ];
    for (url, method) in denied {
        let result = fetch(&harness, &plugin, &binding, url.clone(), method).await;
        assert!(
            matches!(
                result,
                Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
            ),
            "{method} {url}: {result:?}"
        );
    }
    // Only the one allowed request reached the upstream (checked by `expect(1)` on drop too).
    assert_eq!(
        upstream.received_requests().await.expect("recording").len(),
        1
    );
}

#[tokio::test]
async fn denials_are_recorded_for_the_invocation() {
    let (harness, plugin, binding) = setup().await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": "http://127.0.0.1:1/secret?token=abc" }),
        )
        .await;
    assert!(matches!(
        outcome.result,
        Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
    ));
    assert_eq!(outcome.denials.len(), 1);
    assert_eq!(outcome.denials[0].method, "GET");
    assert_eq!(
        outcome.denials[0].url,
        "http://127.0.0.1:1/secret?token=REDACTED"
    );
}

#[tokio::test]
async fn redirects_are_handed_back_not_followed() {
    let (harness, plugin, _) = setup().await;
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/allowed/redirect"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/elsewhere", upstream.uri())),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&upstream)
        .await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &upstream.uri())]);
    let result = fetch(
        &harness,
        &plugin,
        &binding,
        format!("{}/allowed/redirect", upstream.uri()),
        "GET",
    )
    .await;
    let output = result.expect("a 3xx is a response");
    assert_eq!(output["status"], 302);
    assert_eq!(output["location"], format!("{}/elsewhere", upstream.uri()));
}

#[tokio::test]
async fn a_slow_upstream_is_bounded_by_the_call_deadline() {
    // The upstream answers after 10 s; the plugin's deadline is 1 s. Without the
    // deadline the call would succeed with a 200.
    let (harness, plugin, _) = setup().await;
    let upstream = MockServer::start().await;
    Mock::given(path("/allowed/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(10)))
        .mount(&upstream)
        .await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &upstream.uri())]);
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/slow", upstream.uri()) }),
        )
        .await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::Timeout(_)) | Err(InvokeError::Plugin(PluginFailure::Timeout { .. }))
        ),
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
async fn no_state_survives_from_one_call_or_tenant_to_the_next() {
    let (harness, plugin, binding) = setup().await;
    let other_tenant = harness.binding(&plugin, "ws-2", "probe", &[]);
    // Enough calls that pooled memory slots are reused.
    for (i, binding) in [&binding, &other_tenant]
        .into_iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        let secret = format!("secret-{i}");
        let outcome = harness
            .invoke(&plugin, binding, "remember", json!(secret))
            .await;
        assert_eq!(
            outcome.result.expect("remember"),
            json!({ "previous": null }),
            "call {i}"
        );
    }
}
