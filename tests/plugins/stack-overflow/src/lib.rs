//! Test plugin: recurses without bound. `ok` answers normally, to show the same plugin keeps serving.

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
struct Depth {
    depth: u64,
    /// `true`: frames hold an array whose address is taken, so they live on
    /// Rust's shadow stack in linear memory rather than the wasm call stack.
    #[serde(default)]
    linear: bool,
}

fn run(_ctx: &Context, input: Depth) -> Result<Value, Error> {
    let result = if input.linear {
        recurse_linear(input.depth)
    } else {
        recurse(input.depth)
    };
    Ok(Value::from(result))
}

/// Not a tail call (the result is combined afterwards), so every level is a wasm frame.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        1
    } else {
        recurse(n - 1).wrapping_mul(31).rotate_left(7) ^ n
    }
}

#[inline(never)]
fn recurse_linear(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    if n == 0 {
        pad[0]
    } else {
        recurse_linear(n - 1).wrapping_add(pad[63])
    }
}
