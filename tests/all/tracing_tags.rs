//! Plugin log lines become `tracing` events tagged with plugin, version and
//! invocation id.

use patchbay_tests::Harness;
use patchbay_tests::TestPlugin;
use patchbay_tests::plugins::{
    GROW_MEMORY, HOSTILE, INVALID_JSON, LOOP_FOREVER, PANIC, PROBE, STACK_OVERFLOW, TRAP,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

type Events = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// Events of one target, with their fields and level.
struct Capture(Events, &'static str);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == self.1 {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            let level = event.metadata().level().to_string();
            fields.0.insert("level".into(), level);
            self.0.lock().expect("lock").push(fields.0);
        }
    }
}

#[test]
fn plugin_output_is_emitted_as_tagged_tracing_events() {
    let events: Events = Arc::default();
    let subscriber =
        tracing_subscriber::registry().with(Capture(events.clone(), "patchbay::plugin"));
    // A current-thread runtime runs the plugin on this thread, inside the scoped subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    patchbay_tests::interest_per_thread();
    let invocation_id = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let harness = Harness::new();
            let plugin = harness.install(PROBE).await;
            let binding = harness.binding(&plugin, "ws-1", "probe", &[]);
            let outcome = harness
                .invoke(&plugin, &binding, "log-flood", json!({ "lines": 1 }))
                .await;
            assert!(outcome.result.is_ok());
            outcome.invocation_id
        })
    });
    let events = events.lock().expect("lock");
    for message in ["log line 0", "stdout line 0", "stderr line 0"] {
        let event = events
            .iter()
            .find(|e| e.get("message").is_some_and(|m| m == message))
            .unwrap_or_else(|| panic!("no event for {message:?} in {events:?}"));
        assert_eq!(event["plugin"], "probe");
        assert_eq!(event["version"], "1.0.0");
        assert_eq!(event["invocation_id"], invocation_id);
    }
}

/// Run `operation` of `plugin` on `input` in a fresh harness with the host's
/// runtime log captured: the invocation's id (if it failed) and the events.
fn runtime_events(
    plugin: TestPlugin,
    operation: &str,
    input: Value,
) -> (Option<String>, Vec<BTreeMap<String, String>>) {
    let events: Events = Arc::default();
    let subscriber =
        tracing_subscriber::registry().with(Capture(events.clone(), "patchbay::runtime"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    patchbay_tests::interest_per_thread();
    let failed = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let harness = Harness::new();
            let (plugin, binding) = harness.ready(plugin).await;
            let outcome = harness.invoke(&plugin, &binding, operation, input).await;
            outcome.result.is_err().then_some(outcome.invocation_id)
        })
    });
    let events = events.lock().expect("lock").clone();
    (failed, events)
}

#[test]
fn each_failed_invocation_logs_one_warning_naming_its_reason_and_id() {
    let hoard = json!({ "form": "many", "count": 5000, "bytes": 10 });
    let cases = [
        (TRAP, "run", Value::Null, Some("trap")),
        (PANIC, "run", Value::Null, Some("panic")),
        (
            STACK_OVERFLOW,
            "run",
            json!({ "depth": 10_000_000 }),
            Some("stack-overflow"),
        ),
        (GROW_MEMORY, "run", Value::Null, Some("memory-limit")),
        (LOOP_FOREVER, "run", Value::Null, Some("deadline")),
        (INVALID_JSON, "run", Value::Null, Some("invalid-output")),
        (HOSTILE, "hoard-headers", hoard, Some("host-resources")),
        // Not failures of the plugin or host: no warning.
        (LOOP_FOREVER, "ok", Value::Null, None),
        (LOOP_FOREVER, "no-such-operation", Value::Null, None),
    ];
    for (plugin, operation, input, reason) in cases {
        let (failed, events) = runtime_events(plugin, operation, input);
        let warnings: Vec<_> = events
            .iter()
            .filter(|e| e.get("message").is_some_and(|m| m == "invocation failed"))
            .collect();
        let case = format!("{} {operation}", plugin.name);
        match reason {
            None => assert!(warnings.is_empty(), "{case}: {warnings:?}"),
            Some(reason) => {
                assert_eq!(
                    warnings.len(),
                    1,
                    "{case}: one line per failed call: {events:?}"
                );
                let warning = warnings[0];
                assert_eq!(warning["level"], "WARN", "{case}");
                assert_eq!(warning["reason"], reason, "{case}");
                assert_eq!(Some(&warning["invocation_id"]), failed.as_ref(), "{case}");
                assert_eq!(warning["plugin"], plugin.name, "{case}");
            }
        }
    }
}
