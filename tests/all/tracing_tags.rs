//! Plugin log lines become `tracing` events tagged with plugin, version and
//! invocation id.

use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

type Events = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

struct Capture(Events);

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
        if event.metadata().target() == "patchbay::plugin" {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0.lock().expect("lock").push(fields.0);
        }
    }
}

#[test]
fn plugin_output_is_emitted_as_tagged_tracing_events() {
    let events: Events = Arc::default();
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    // A current-thread runtime runs the plugin on this thread, inside the scoped subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
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
