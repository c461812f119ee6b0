//! Test plugin: one operation per way a plugin can misbehave, plus a few
//! well-behaved ones that exercise capabilities. Never ship this.

use patchbay_sdk::http::Request;
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector, kv, log};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Misbehave;

impl Connector for Misbehave {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("echo", |_ctx, input: Value| Ok(input));
        ops.register("context", context);
        ops.register("trap", |_ctx, _: Value| -> Result<Value, Error> { trap() });
        ops.register("panic", |_ctx, _: Value| -> Result<Value, Error> {
            panic!("the plugin gave up on purpose")
        });
        ops.register("loop-forever", loop_forever);
        ops.register("grow-memory", grow_memory);
        ops.register("stack-overflow", stack_overflow);
        ops.register_raw("invalid-json", |_ctx, _| Ok("{not json".to_owned()));
        ops.register("oversized-output", oversized_output);
        ops.register("wrong-output", |_ctx, _: Value| {
            Ok(json!({ "unexpected": true }))
        });
        ops.register("fail", fail);
        ops.register("log-flood", log_flood);
        ops.register("kv", kv_script);
        ops.register("fetch", fetch);
        ops.register("read-config", read_config);
    }
}

export_connector!(Misbehave);

fn context(ctx: &Context, _: Value) -> Result<Value, Error> {
    Ok(json!({
        "invocation_id": ctx.invocation_id(),
        "idempotency_key": ctx.idempotency_key(),
        "workspace": ctx.workspace(),
        "connection": ctx.connection(),
    }))
}

fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

fn loop_forever(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn grow_memory(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[derive(Deserialize)]
struct Depth {
    depth: u64,
    /// `true`: frames hold an array whose address is taken, so they live on
    /// Rust's shadow stack in linear memory rather than the wasm call stack.
    #[serde(default)]
    linear: bool,
}

fn stack_overflow(_ctx: &Context, input: Depth) -> Result<Value, Error> {
    let result = if input.linear {
        recurse_linear(input.depth)
    } else {
        recurse(input.depth)
    };
    Ok(json!(result))
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

#[derive(Deserialize)]
struct Size {
    bytes: usize,
}

fn oversized_output(_ctx: &Context, input: Size) -> Result<Value, Error> {
    Ok(json!({ "blob": "x".repeat(input.bytes) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Failure {
    NotFound,
    RateLimited,
    Upstream,
    AccessDenied,
}

fn fail(_ctx: &Context, input: Failure) -> Result<Value, Error> {
    Err(match input {
        Failure::NotFound => Error::not_found("nobody by that number"),
        Failure::RateLimited => Error::RateLimited {
            retry_after_ms: 1500,
        },
        Failure::Upstream => Error::Upstream {
            status: 503,
            message: "upstream down".into(),
        },
        Failure::AccessDenied => Error::AccessDenied("plugin says no".into()),
    })
}

#[derive(Deserialize)]
struct Flood {
    lines: usize,
}

fn log_flood(_ctx: &Context, input: Flood) -> Result<Value, Error> {
    for i in 0..input.lines {
        log::info(&format!("log line {i}"));
        println!("stdout line {i}");
        eprintln!("stderr line {i}");
    }
    Ok(json!({ "done": true }))
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum KvStep {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
    List {
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    },
    Increment {
        key: String,
        delta: i64,
    },
}

#[derive(Serialize)]
struct KvResult {
    ok: Option<Value>,
    err: Option<String>,
}

fn kv_script(_ctx: &Context, steps: Vec<KvStep>) -> Result<Vec<KvResult>, Error> {
    let results = steps
        .into_iter()
        .map(|step| {
            let r: Result<Value, kv::KvError> = match step {
                KvStep::Get { key } => kv::get(&key)
                    .map(|v| json!(v.map(|b| String::from_utf8_lossy(&b).into_owned()))),
                KvStep::Set { key, value, ttl_ms } => {
                    kv::set(&key, value.as_bytes(), ttl_ms).map(|()| Value::Null)
                }
                KvStep::Delete { key } => kv::delete(&key).map(|b| json!(b)),
                KvStep::List {
                    prefix,
                    cursor,
                    limit,
                } => kv::list_keys(&prefix, cursor.as_deref(), limit)
                    .map(|p| json!({ "keys": p.keys, "next_cursor": p.next_cursor })),
                KvStep::Increment { key, delta } => kv::increment(&key, delta).map(|n| json!(n)),
            };
            match r {
                Ok(v) => KvResult {
                    ok: Some(v),
                    err: None,
                },
                Err(e) => KvResult {
                    ok: None,
                    err: Some(format!("{e:?}")),
                },
            }
        })
        .collect();
    Ok(results)
}

#[derive(Deserialize)]
struct Fetch {
    url: String,
    #[serde(default)]
    method: Option<String>,
}

fn fetch(_ctx: &Context, input: Fetch) -> Result<Value, Error> {
    let method = match input.method.as_deref().unwrap_or("GET") {
        "POST" => patchbay_sdk::http::Method::Post,
        "DELETE" => patchbay_sdk::http::Method::Delete,
        _ => patchbay_sdk::http::Method::Get,
    };
    let response = Request::new(method, input.url).send()?;
    Ok(json!({
        "status": response.status(),
        "body": String::from_utf8_lossy(response.body()),
        "location": response.header("location"),
    }))
}

fn read_config(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let all: serde_json::Map<String, Value> = config::all()?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    Ok(json!({ "config": all, "env": env, "args": std::env::args().collect::<Vec<_>>() }))
}
