//! Test plugin: returns text that is not JSON. `ok` answers normally, to show the same plugin keeps serving.

use patchbay_sdk::{Connector, Operations, export_connector};
use serde_json::Value;

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register_raw("run", |_ctx, _| Ok("{not json".to_owned()));
    }
}

export_connector!(Plugin);
