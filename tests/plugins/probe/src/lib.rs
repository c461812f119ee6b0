//! Test plugin: operations that exercise each capability (KV, HTTP, config,
//! logging, errors, context) on the host's behalf. Never ship this.

use patchbay_sdk::http::Request;
use patchbay_sdk::{
    Connector, Context, Error, Operations, config, export_connector, kv, log, webhooks,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Probe;

impl Connector for Probe {
    /// With `[webhook] verify = "plugin"`: the `x-probe-mode` header picks a
    /// behaviour. Unset, the body (a JSON array of `{type, data}`) is taken
    /// when `x-probe-signature` is the hex HMAC-SHA256 of it under the
    /// `signing` secret. `skip` maps it without verifying; `undeclared` checks
    /// with a credential the manifest does not declare; `mismatch` calls
    /// verify-hmac, ignores its `false`, and maps anyway.
    fn webhook(
        _ctx: &Context,
        request: &webhooks::WebhookRequest,
    ) -> Result<webhooks::Verified, Error> {
        let signature = request
            .header("x-probe-signature")
            .and_then(webhooks::hex_decode)
            .unwrap_or_default();
        let credential = match request.header("x-probe-mode") {
            Some("undeclared") => "not-declared",
            _ => "signing",
        };
        if request.header("x-probe-mode") == Some("error-first") {
            return Err(Error::invalid_input("a detail only the plugin knows"));
        }
        if request.header("x-probe-mode") != Some("skip") {
            let genuine = webhooks::verify_hmac(
                credential,
                webhooks::Algorithm::Sha256,
                request.body(),
                &signature,
            )?;
            if !genuine && request.header("x-probe-mode") != Some("mismatch") {
                return Err(Error::unauthorized("bad signature"));
            }
        }
        // Keeping or sending a verified pair must be impossible.
        match request.header("x-probe-mode") {
            Some("kv-write") => {
                kv::set("pair", request.body(), None)
                    .map_err(|e| Error::invalid_input(format!("kv: {e}")))?;
            }
            Some("http") => {
                let upstream: String = config::get("upstream")?.unwrap_or_default();
                Request::post(format!("{upstream}/allowed/pairs"))
                    .body(request.body().to_vec())
                    .send()
                    .map_err(|e| Error::invalid_input(format!("http: {e}")))?;
            }
            _ => {}
        }
        let items: Vec<Value> = request.json()?;
        let mut verified = webhooks::Verified::new(request.header("x-probe-id"));
        for item in items {
            let kind = item["type"].as_str().unwrap_or("probe.event");
            verified = verified.with(webhooks::Event::new(kind, &item["data"])?);
        }
        Ok(verified)
    }

    fn operations(ops: &mut Operations<'_>) {
        ops.register("echo", |_ctx, input: Value| Ok(input));
        ops.register("context", context);
        ops.register("fail", fail);
        ops.register("log-flood", log_flood);
        ops.register("kv", kv_script);
        ops.register("fetch", fetch);
        ops.register("read-config", read_config);
        ops.register("remember", remember);
        ops.register("deliver", deliver);
        ops.register("summarize", summarize);
        ops.register("check-signature", check_signature);
        ops.register("entropy", entropy);
        ops.register_raw("heap-origin", heap_origin);
    }
}

export_connector!(Probe);

fn context(ctx: &Context, _: Value) -> Result<Value, Error> {
    Ok(json!({
        "invocation_id": ctx.invocation_id(),
        "idempotency_key": ctx.idempotency_key(),
        "workspace": ctx.workspace(),
        "connection": ctx.connection(),
    }))
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
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    /// Send the same request this many times (default once); the last response wins.
    #[serde(default)]
    times: Option<u32>,
    /// Count failed sends and go on, instead of returning the first error.
    #[serde(default)]
    keep_going: bool,
}

fn fetch(_ctx: &Context, input: Fetch) -> Result<Value, Error> {
    use patchbay_sdk::http::Method;
    let method = match input.method.as_deref().unwrap_or("GET") {
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        _ => Method::Get,
    };
    let mut last = Value::Null;
    let mut errors = 0u32;
    for _ in 0..input.times.unwrap_or(1) {
        let mut request = Request::new(method, input.url.clone());
        for (name, value) in &input.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(body) = &input.body {
            request = request.body(body.clone().into_bytes());
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(error) if input.keep_going => {
                errors += 1;
                last = json!({ "errors": errors, "last_error": error.to_string() });
                continue;
            }
            Err(error) => return Err(error),
        };
        last = json!({
            "status": response.status(),
            "body": String::from_utf8_lossy(response.body()),
            "location": response.header("location"),
            "x_echo": response.header("x-echo"),
            "content_length": response.header("content-length"),
            "retry_after_ms": response.retry_after_ms(),
        });
    }
    Ok(last)
}

/// Whose block the input text is (the host wrote it through `cabi_realloc`) and
/// whose a string made here is (`patchbay_sdk::alloc`, "Blocks from elsewhere").
fn heap_origin(_ctx: &Context, input: &str) -> Result<String, Error> {
    let own = String::from("made in the plugin");
    Ok(json!({
        "input_is_heap_block": patchbay_sdk::alloc::is_heap_block(input.as_ptr()),
        "own_is_heap_block": patchbay_sdk::alloc::is_heap_block(own.as_ptr()),
        "memory_pages": core::arch::wasm32::memory_size(0),
    })
    .to_string())
}

fn read_config(_ctx: &Context, _: Value) -> Result<Value, Error> {
    let all: serde_json::Map<String, Value> = config::all()?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    // Read through wasi-libc, which frees what the host hands it with C `free`
    // (sdk/src/alloc.rs, "Blocks from elsewhere").
    let mut stdin = Vec::new();
    let stdin = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin)
        .map_err(|e| Error::internal(format!("reading stdin: {e}")))?;
    Ok(json!({
        "config": all,
        "env": env,
        "args": std::env::args().collect::<Vec<_>>(),
        "stdin_bytes": stdin,
        "cwd": std::env::current_dir().ok(),
    }))
}

/// What the previous call in this instance stored: always `null` when every
/// call gets a fresh instance, as the host promises.
static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn remember(_ctx: &Context, value: String) -> Result<Value, Error> {
    let mut last = LAST.lock().map_err(|_| Error::internal("poisoned"))?;
    Ok(json!({ "previous": last.replace(value) }))
}

/// An event delivery as a vendor's action makes it: the input POSTed as
/// JSON to `{upstream}/allowed/deliveries`, with the call's idempotency key
/// as `Idempotency-Key`; the upstream's status mapped to the SDK's errors
/// (429 with its `Retry-After`, 5xx retryable, other 4xx not).
fn deliver(ctx: &Context, input: Value) -> Result<Value, Error> {
    let upstream: String = config::get("upstream")?.unwrap_or_default();
    let mut request = Request::post(format!("{upstream}/allowed/deliveries")).json(&input)?;
    if let Some(key) = ctx.idempotency_key() {
        request = request.header("idempotency-key", key);
    }
    let response = request.send()?.error_for_status()?;
    Ok(json!({ "status": response.status() }))
}

/// A transform: an event envelope to a note a CRM would log.
fn summarize(_ctx: &Context, event: Value) -> Result<Value, Error> {
    let kind = event["type"].as_str().unwrap_or("event");
    let source = event["source"].as_str().unwrap_or("somewhere");
    Ok(json!({
        "note": format!("{kind} from {source}"),
        "event_id": event["id"],
        "subject": event["subject"],
    }))
}

/// verify-hmac outside a webhook verification: the host refuses it.
fn check_signature(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let matched =
        webhooks::verify_hmac("signing", webhooks::Algorithm::Sha256, b"message", &[0; 32])?;
    Ok(json!({ "matched": matched }))
}

/// What a replay must serve as recorded: the wall clock, and a value the
/// standard library seeds from the host's randomness.
fn entropy(_ctx: &Context, _: Value) -> Result<Value, Error> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(b"patchbay");
    Ok(serde_json::json!({
        "now_ns": now.as_nanos().to_string(),
        "hash": hasher.finish().to_string(),
    }))
}
