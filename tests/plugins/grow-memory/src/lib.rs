//! Test plugin: allocates until memory runs out. `ok` answers normally, to show the same plugin keeps serving.
//! `run` hoards 1 MiB blocks (the system allocator's side of the SDK's heap),
//! `run-small` hoards 48-byte blocks (its size classes), and `churn` allocates
//! and frees `{"megabytes": n}` of small blocks with few live at once.

use patchbay_sdk::{Connector, Context, Error, Operations, export_connector};
use serde_json::{Value, json};

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register("run", run);
        ops.register("run-small", run_small);
        ops.register("churn", churn);
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

fn run_small(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut hoard: Vec<Box<[u8; 48]>> = Vec::new();
    loop {
        hoard.push(Box::new([1u8; 48]));
        std::hint::black_box(&hoard);
    }
}

/// Allocate and free `megabytes` MB of blocks of 1..=2048 bytes, at most 64 live.
fn churn(_ctx: &Context, input: Value) -> Result<Value, Error> {
    let megabytes = input["megabytes"].as_u64().unwrap_or(1);
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(64);
    let (mut total, mut seed) = (0u64, 1u32);
    while total < megabytes * 1_000_000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = 1 + (seed >> 16) as usize % 2048;
        total += size as u64;
        live.push(vec![(seed & 0xff) as u8; size]);
        if live.len() == 64 {
            let gone = live.swap_remove((seed >> 8) as usize % 64);
            std::hint::black_box(gone);
        }
    }
    Ok(json!({ "bytes": total }))
}
