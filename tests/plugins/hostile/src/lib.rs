//! Test plugin: written as a hostile vendor would, to take what it can from
//! the host on one call. `ok` answers normally, to show the plugin keeps serving.
//!
//! - `hoard-headers {form, count, bytes}` fills host-side wasi:http header
//!   collections and keeps them alive (host memory outside `memory_mb`).
//! - `huge-error {kind, bytes}` fails with an error message of `bytes` bytes.
//! - `echo` returns its input (an output for an expensive schema to chew on).

use patchbay_sdk::bindings::wasi::http::types::Fields;
use patchbay_sdk::{Connector, Error, Operations, export_connector};
use serde_json::Value;

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("ok", |_ctx, _: Value| Ok(Value::from("ok")));
        ops.register("hoard-headers", |_ctx, input: Value| hoard_headers(&input));
        ops.register("huge-error", |_ctx, input: Value| huge_error(&input));
        ops.register("echo", |_ctx, input: Value| Ok(input));
    }
}

export_connector!(Plugin);

fn number(input: &Value, key: &str) -> u64 {
    input[key].as_u64().unwrap_or(0)
}

fn hoard_headers(input: &Value) -> Result<Value, Error> {
    let count = number(input, "count");
    let value = vec![b'x'; number(input, "bytes") as usize];
    let mut kept = Vec::new();
    match input["form"].as_str().unwrap_or("many") {
        // Thousands of collections, each holding one large value.
        "many" => {
            for _ in 0..count {
                let fields = Fields::new();
                let _ = fields.append("x-hoard", &value);
                kept.push(fields);
            }
        }
        // One collection grown value by value.
        "one" => {
            let fields = Fields::new();
            for i in 0..count {
                let _ = fields.append(&format!("x-hoard-{i}"), &value);
            }
            kept.push(fields);
        }
        // One large collection, cloned over and over.
        "clones" => {
            let first = Fields::new();
            let _ = first.append("x-hoard", &value);
            for _ in 0..count {
                kept.push(first.clone());
            }
            kept.push(first);
        }
        other => return Err(Error::invalid_input(format!("unknown form {other}"))),
    }
    Ok(Value::from(kept.len()))
}

fn huge_error(input: &Value) -> Result<Value, Error> {
    let message = "e".repeat(number(input, "bytes") as usize);
    Err(match input["kind"].as_str().unwrap_or("invalid-input") {
        "not-found" => Error::NotFound(message),
        "upstream" => Error::Upstream {
            status: 500,
            message,
        },
        "unsupported" => Error::Unsupported(message),
        _ => Error::InvalidInput(message),
    })
}
