//! Test plugin: returns output that breaks its output schema. `ok` answers normally, to show the same plugin keeps serving.

use patchbay_sdk::{Connector, Error, Operations, export_connector};
use serde_json::Value;

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register("run", |_ctx, _: Value| {
            Ok(serde_json::json!({ "unexpected": true }))
        });
    }
}

export_connector!(Plugin);
