//! `patchbay:connector/kv`: a key-value store private to one connection.
//!
//! Granted only when the manifest declares `[capabilities.kv]`; the scope
//! (workspace, connection) comes from the host, never from the plugin, so a
//! plugin cannot name another connection's keys. Every mutation is flushed
//! before the call returns, so what a plugin was told is stored survives a crash.

use crate::bindings::patchbay::connector::kv::{Host, KeyPage, KvError, add_to_linker as add_kv};
use crate::record::Tape;
use patchbay_policy::call::CallId;
use patchbay_policy::clock::Clock;
use patchbay_policy::manifest::KvQuota;
use patchbay_policy::recording::KvCall;
use patchbay_storage::{KvLimits, Scope, SharedKv, StorageError};
use serde_json::Value as Json;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Most keys one `list-keys` call returns.
pub const MAX_PAGE: u32 = 1000;

/// What a granted connection may do with KV.
#[derive(Clone)]
pub struct KvAccess {
    /// The host's KV store; `scope` keeps this connection's keys apart.
    pub store: SharedKv,
    /// The connection whose keys these are.
    pub scope: Arc<Scope>,
    /// The manifest's quota, capped by the operator's ceilings.
    pub quota: KvQuota,
    /// The clock time-to-live and expiry are reckoned by.
    pub clock: Clock,
}

impl KvAccess {
    fn limits(&self) -> KvLimits {
        KvLimits {
            max_keys: self.quota.max_keys,
            max_total_bytes: self.quota.max_total_bytes,
        }
    }
}

/// Per-invocation KV context: `None` when KV is not granted.
#[derive(Clone)]
pub struct KvCtx {
    /// `None` when the manifest declares no KV or the workspace did not grant
    /// it: every operation is then refused with `access-denied`.
    pub access: Option<KvAccess>,
    /// The invocation, for the host's log line about a refusal.
    pub call: Arc<CallId>,
    /// Where the call's KV calls are recorded, when they are.
    pub tape: Option<Arc<Tape>>,
}

impl KvCtx {
    fn granted(&self, op: &str) -> Result<&KvAccess, KvError> {
        self.access.as_ref().ok_or_else(|| {
            tracing::warn!(target: "patchbay::audit", capability = "kv", operation = op,
                invocation = %self.call, decision = "denied", "kv not granted");
            KvError::AccessDenied(
                "kv is not granted to this plugin: declare [capabilities.kv] in plugin.toml".into(),
            )
        })
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidArgument(format!(
            "key is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn storage_error(e: StorageError) -> KvError {
    match e {
        StorageError::NotAnInteger => {
            KvError::NotAnInteger("stored value is not a decimal 64-bit integer".into())
        }
        StorageError::Overflow => {
            KvError::InvalidArgument("increment would overflow a 64-bit integer".into())
        }
        StorageError::Quota(message) => KvError::QuotaExceeded(message),
        StorageError::Backend(detail) | StorageError::NotFound(detail) => {
            // The plugin gets no internals; the operator gets the detail.
            tracing::error!(target: "patchbay::kv", error = %detail, "kv backend failure");
            KvError::Internal("the key-value store failed; try again".into())
        }
    }
}

/// Run blocking storage work off the async executor threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, KvError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(storage_error),
        Err(join) => {
            tracing::error!(target: "patchbay::kv", error = %join, "kv task failed");
            Err(KvError::Internal(
                "the key-value store failed; try again".into(),
            ))
        }
    }
}

impl KvCtx {
    async fn do_get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let access = self.granted("get")?.clone();
        check_key(&key)?;
        blocking(move || access.store.get(&access.scope, &key, (access.clock)())).await
    }

    async fn do_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let access = self.granted("set")?.clone();
        check_key(&key)?;
        if value.len() as u64 > access.quota.max_value_bytes {
            return Err(KvError::QuotaExceeded(format!(
                "value is {} bytes; the limit is {}",
                value.len(),
                access.quota.max_value_bytes
            )));
        }
        let expires_at = match ttl_ms {
            Some(0) => {
                return Err(KvError::InvalidArgument(
                    "ttl-ms must be greater than zero".into(),
                ));
            }
            Some(ttl) => Some((access.clock)().saturating_add(ttl)),
            None => None,
        };
        blocking(move || {
            let limits = access.limits();
            access
                .store
                .set(&access.scope, &key, &value, expires_at, &limits)?;
            access.store.flush()
        })
        .await
    }

    async fn do_delete(&mut self, key: String) -> Result<bool, KvError> {
        let access = self.granted("delete")?.clone();
        check_key(&key)?;
        blocking(move || {
            let existed = access.store.delete(&access.scope, &key, (access.clock)())?;
            access.store.flush()?;
            Ok(existed)
        })
        .await
    }

    async fn do_list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, KvError> {
        let access = self.granted("list-keys")?.clone();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let list = blocking(move || {
            access.store.list(
                &access.scope,
                &prefix,
                cursor.as_deref(),
                limit,
                (access.clock)(),
            )
        })
        .await?;
        let next_cursor = if list.more {
            list.keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage {
            keys: list.keys,
            next_cursor,
        })
    }

    async fn do_increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        let access = self.granted("increment")?.clone();
        check_key(&key)?;
        blocking(move || {
            let limits = access.limits();
            let value =
                access
                    .store
                    .increment(&access.scope, &key, delta, (access.clock)(), &limits)?;
            access.store.flush()?;
            Ok(value)
        })
        .await
    }
}

/// The code a KV error reaches the plugin as.
fn error_code(error: &KvError) -> &'static str {
    match error {
        KvError::AccessDenied(_) => "access-denied",
        KvError::InvalidArgument(_) => "invalid-argument",
        KvError::QuotaExceeded(_) => "quota-exceeded",
        KvError::NotAnInteger(_) => "not-an-integer",
        KvError::Internal(_) => "internal",
    }
}

impl KvCtx {
    /// A record of this KV call, when the call is recorded (nothing is
    /// allocated otherwise).
    fn call(&self, op: &str, key: &str) -> Option<KvCall> {
        self.tape.as_ref()?;
        Some(KvCall {
            op: op.to_owned(),
            key: key.to_owned(),
            value: None,
            ttl_ms: None,
            delta: None,
            result: Json::Null,
            error: None,
        })
    }

    /// Keep `call` and what it returned on the tape, when there is one.
    fn taped<T>(
        &self,
        call: Option<KvCall>,
        result: &Result<T, KvError>,
        shown: impl FnOnce(&Tape, &T) -> Json,
    ) {
        let (Some(tape), Some(mut call)) = (&self.tape, call) else {
            return;
        };
        match result {
            Ok(value) => call.result = shown(tape, value),
            Err(error) => call.error = Some(error_code(error).to_owned()),
        }
        tape.kv(call);
    }
}

/// A value read, as the tape keeps it (charged to the transcript's bound;
/// `{"omitted": …}` past it).
fn kept(tape: &Tape, bytes: &[u8]) -> Json {
    tape.kv_value(bytes)
        .and_then(|v| serde_json::to_value(v).ok())
        // Not null: the key was there, only its value is not kept.
        .unwrap_or_else(|| serde_json::json!({ "omitted": "too large to keep" }))
}

impl Host for KvCtx {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let call = self.call("get", &key);
        let result = self.do_get(key).await;
        self.taped(call, &result, |tape, v| {
            v.as_deref().map_or(Json::Null, |bytes| kept(tape, bytes))
        });
        result
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let call = self.call("set", &key).map(|call| KvCall {
            value: self.tape.as_ref().and_then(|tape| tape.kv_value(&value)),
            ttl_ms,
            ..call
        });
        let result = self.do_set(key, value, ttl_ms).await;
        self.taped(call, &result, |_, _| Json::Null);
        result
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        let call = self.call("delete", &key);
        let result = self.do_delete(key).await;
        self.taped(call, &result, |_, existed| Json::Bool(*existed));
        result
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, KvError> {
        let call = self.call("list-keys", &prefix);
        let result = self.do_list_keys(prefix, cursor, limit).await;
        self.taped(call, &result, |_, page| serde_json::json!(page.keys));
        result
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        let call = self.call("increment", &key).map(|call| KvCall {
            delta: Some(delta),
            ..call
        });
        let result = self.do_increment(key, delta).await;
        self.taped(call, &result, |_, value| Json::from(*value));
        result
    }
}

struct KvCap;

impl HasData for KvCap {
    type Data<'a> = &'a mut KvCtx;
}

/// Link `patchbay:connector/kv` for a store whose data holds the call's KV
/// context where `get` finds it.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KvCtx,
) -> wasmtime::Result<()> {
    add_kv::<T, KvCap>(linker, get)
}
