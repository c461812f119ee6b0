//! Test plugin: panics. `ok` answers normally, to show the same plugin keeps serving.

use patchbay_sdk::{Connector, Error, Operations, export_connector};
use serde_json::Value;

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register("run", |_ctx, _: Value| -> Result<Value, Error> {
            panic!("the plugin gave up on purpose")
        });
    }
}

export_connector!(Plugin);
