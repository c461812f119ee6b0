//! Test plugin: returns as many bytes as asked. `ok` answers normally, to show the same plugin keeps serving.

use patchbay_sdk::{Connector, Context, Error, Operations, export_connector};
use serde_json::Value;

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register("run", run);
    }
}

export_connector!(Plugin);

#[derive(serde::Deserialize)]
struct Size {
    bytes: usize,
}

fn run(_ctx: &Context, input: Size) -> Result<Value, Error> {
    Ok(Value::from("x".repeat(input.bytes)))
}
