//! Test plugin: allocates until memory runs out. `ok` answers normally, to show the same plugin keeps serving.

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

fn run(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
