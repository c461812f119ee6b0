//! The connection's private key-value store (manifest: `[capabilities.kv]`).
//!
//! Keys are scoped by the host to the calling connection in its workspace: there
//! is no way to name another connection's keys.

use crate::bindings::patchbay::connector::kv as wit;
use std::fmt;

/// Why a KV call failed.
///
/// ```no_run
/// match patchbay_sdk::kv::get("k") {
///     Err(patchbay_sdk::kv::KvError::AccessDenied(why)) => patchbay_sdk::log::warn(&why),
///     _ => {}
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// KV not declared, not granted, or not allowed by operator policy.
    AccessDenied(String),
    /// A quota would be exceeded.
    QuotaExceeded(String),
    /// The key or value is not acceptable.
    InvalidArgument(String),
    /// The stored value is not an integer (from [`increment`]).
    NotAnInteger(String),
    /// The store failed.
    Internal(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccessDenied(m) => write!(f, "kv access denied: {m}"),
            Self::QuotaExceeded(m) => write!(f, "kv quota exceeded: {m}"),
            Self::InvalidArgument(m) => write!(f, "kv invalid argument: {m}"),
            Self::NotAnInteger(m) => write!(f, "kv value is not an integer: {m}"),
            Self::Internal(m) => write!(f, "kv internal error: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<wit::KvError> for KvError {
    fn from(e: wit::KvError) -> Self {
        match e {
            wit::KvError::AccessDenied(m) => Self::AccessDenied(m),
            wit::KvError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::KvError::InvalidArgument(m) => Self::InvalidArgument(m),
            wit::KvError::NotAnInteger(m) => Self::NotAnInteger(m),
            wit::KvError::Internal(m) => Self::Internal(m),
        }
    }
}

/// One page of keys from [`list_keys`].
///
/// ```no_run
/// let page = patchbay_sdk::kv::list_keys("session:", None, 100)?;
/// for key in &page.keys { let _ = key; }
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Cursor for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The value stored at `key`, or `None`.
///
/// ```no_run
/// let token = patchbay_sdk::kv::get("cursor")?;
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Ok(wit::get(key)?)
}

/// Store `value` at `key`, expiring after `ttl_ms` milliseconds when given.
///
/// ```no_run
/// patchbay_sdk::kv::set("cursor", b"42", Some(60_000))?;
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
    Ok(wit::set(key, value, ttl_ms)?)
}

/// Delete `key`; returns whether it existed.
///
/// ```no_run
/// let existed = patchbay_sdk::kv::delete("cursor")?;
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
pub fn delete(key: &str) -> Result<bool, KvError> {
    Ok(wit::delete(key)?)
}

/// Keys starting with `prefix`, at most `limit`, after `cursor`.
///
/// ```no_run
/// let first = patchbay_sdk::kv::list_keys("", None, 50)?;
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
pub fn list_keys(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KeyPage, KvError> {
    let page = wit::list_keys(prefix, cursor, limit)?;
    Ok(KeyPage {
        keys: page.keys,
        next_cursor: page.next_cursor,
    })
}

/// Atomically add `delta` to the integer at `key` (absent counts as 0).
///
/// ```no_run
/// let calls = patchbay_sdk::kv::increment("calls", 1)?;
/// # Ok::<(), patchbay_sdk::kv::KvError>(())
/// ```
pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
    Ok(wit::increment(key, delta)?)
}
