//! Storage traits and their implementations. Keys are built here, so isolation
//! is structural: the workspace and connection are part of every stored key,
//! and no caller can name a key outside its own scope.

#![warn(missing_docs)]

pub mod audit;
pub mod memory;
pub mod outbox;
pub mod purge;
pub mod recordings;
pub mod secrets;
pub mod sled_store;
pub mod tenancy;
pub mod tokens;

use std::sync::Arc;

/// Why a storage operation failed. `Quota`, `NotFound`, `NotAnInteger` and
/// `Overflow` are the caller's to report; `Backend` is a host fault.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend failed (sled, the disk) or a stored record no longer
    /// reads; the message says which, for the log.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// `increment` found a value that is not a decimal `i64`.
    #[error("stored value is not a decimal 64-bit integer")]
    NotAnInteger,
    /// `increment` would take the value past the range of an `i64`.
    #[error("integer overflow")]
    Overflow,
    /// A write would take the scope past its quota; the message names which.
    #[error("{0}")]
    Quota(String),
    /// What the write depends on does not exist.
    #[error("{0} not found")]
    NotFound(String),
}

/// The start of every key a workspace owns, in any kind of state: its id,
/// length-prefixed, so no workspace's keys begin with another's.
pub(crate) fn workspace_prefix(workspace: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + workspace.len());
    out.extend_from_slice(&(workspace.len() as u32).to_be_bytes());
    out.extend_from_slice(workspace.as_bytes());
    out
}

/// The owner of a set of KV keys: one connection in one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The workspace's id.
    pub workspace: String,
    /// The connection's name within the workspace.
    pub connection: String,
}

impl Scope {
    /// Length-prefixed so that no (workspace, connection) pair can produce the
    /// prefix of another's keys, whatever bytes the names contain.
    pub fn prefix(&self) -> Vec<u8> {
        let mut out = workspace_prefix(&self.workspace);
        out.extend_from_slice(&(self.connection.len() as u32).to_be_bytes());
        out.extend_from_slice(self.connection.as_bytes());
        out
    }

    /// The stored key for `key` in this scope: [`prefix`](Self::prefix), then `key`.
    pub fn key(&self, key: &str) -> Vec<u8> {
        let mut out = self.prefix();
        out.extend_from_slice(key.as_bytes());
        out
    }

    /// The scope and key a stored key was built from (`None` if it was not
    /// built by [`key`](Self::key) from UTF-8 names).
    pub fn split_key(stored: &[u8]) -> Option<(Self, String)> {
        let mut rest = stored;
        let mut part = || -> Option<String> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let text = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_owned();
            rest = &rest[4 + len..];
            Some(text)
        };
        let workspace = part()?;
        let connection = part()?;
        let key = std::str::from_utf8(rest).ok()?.to_owned();
        Some((
            Self {
                workspace,
                connection,
            },
            key,
        ))
    }
}

/// A scope from its two names: the contract suites' shorthand.
#[cfg(test)]
pub(crate) fn scope(workspace: &str, connection: &str) -> Scope {
    Scope {
        workspace: workspace.into(),
        connection: connection.into(),
    }
}

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    /// The keys, in byte order.
    pub keys: Vec<String>,
    /// Whether more keys match after the last one here; pass that key as
    /// `after` for the next page.
    pub more: bool,
}

/// Connection-scoped key-value storage. Times are milliseconds since the Unix
/// epoch, passed in so expiry is testable with a controlled clock.
pub trait KvStore: Send + Sync + 'static {
    /// The live value of `key`; `None` when it is absent or expired at `now_ms`.
    fn get(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, StorageError>;
    /// Store `value`, refused with [`StorageError::Quota`] when the scope
    /// would grow past `limits`.
    fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
        limits: &KvLimits,
    ) -> Result<(), StorageError>;
    /// Remove `key`; whether it was live (an expired key counts as absent).
    fn delete(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<bool, StorageError>;
    /// Up to `limit` live keys that start with `prefix`, in byte order and
    /// strictly after `after` when given (the last key of the previous page).
    fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyList, StorageError>;
    /// Add `delta` to the decimal integer stored at `key` (an absent or expired
    /// key counts as 0; a live one keeps its expiry) and return the sum. Refused
    /// with `NotAnInteger`, `Overflow` or `Quota`.
    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: i64,
        now_ms: u64,
        limits: &KvLimits,
    ) -> Result<i64, StorageError>;
    /// What `scope` holds (expired keys count until purged).
    fn usage(&self, scope: &Scope) -> Result<Usage, StorageError>;
    /// Remove up to `max` keys expired at `now_ms` (an expiry at or before
    /// it, as `get` sees them), in any scope. How many.
    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, StorageError>;
    /// Remove every key of `scope` (its connection was deleted); how many. Durable.
    fn remove_scope(&self, scope: &Scope) -> Result<usize, StorageError>;
    /// Make every write so far durable.
    fn flush(&self) -> Result<(), StorageError>;
}

/// A KV store as the services share it.
pub type SharedKv = Arc<dyn KvStore>;

/// Ceilings for one scope's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Keys the scope may hold.
    pub max_keys: u64,
    /// Bytes its keys and values may take together.
    pub max_total_bytes: u64,
}

impl KvLimits {
    /// No ceiling: for removals, which never grow a scope, and for tests.
    pub const UNLIMITED: Self = Self {
        max_keys: u64::MAX,
        max_total_bytes: u64::MAX,
    };
}

/// Keys and bytes (key plus value) a scope holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys held, expired ones included until purged.
    pub keys: u64,
    /// Bytes of those keys and their values.
    pub bytes: u64,
}

impl Usage {
    pub(crate) fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.keys.to_be_bytes());
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub(crate) fn decode(stored: Option<&[u8]>) -> Self {
        let read = |range: std::ops::Range<usize>| {
            stored
                .and_then(|b| b.get(range))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        Self {
            keys: read(0..8),
            bytes: read(8..16),
        }
    }

    /// The usage after the stored form of `key` goes from `old` to `new`
    /// (`None`: absent). Growth past `limits` is refused; shrinking never is,
    /// so a scope over a lowered quota can always delete its way back.
    pub(crate) fn after(
        self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        limits: &KvLimits,
    ) -> Result<Self, StorageError> {
        let size = |stored: &[u8]| (key.len() + stored.len().saturating_sub(8)) as u64;
        let keys = self.keys - u64::from(old.is_some()).min(self.keys) + u64::from(new.is_some());
        let bytes =
            (self.bytes - old.map_or(0, size).min(self.bytes)).saturating_add(new.map_or(0, size));
        if keys > self.keys && keys > limits.max_keys {
            return Err(StorageError::Quota(format!(
                "the connection holds {} keys; its quota is {}",
                self.keys, limits.max_keys
            )));
        }
        if bytes > self.bytes && bytes > limits.max_total_bytes {
            return Err(StorageError::Quota(format!(
                "the connection's keys and values would take {bytes} bytes; its quota is {}",
                limits.max_total_bytes
            )));
        }
        Ok(Self { keys, bytes })
    }
}

/// Stored value layout: 8-byte big-endian expiry (0 = never), then the bytes.
pub(crate) fn encode_value(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The live value, or `None` when absent or expired.
pub(crate) fn decode_value(stored: &[u8], now_ms: u64) -> Option<&[u8]> {
    let (expiry, value) = stored.split_at_checked(8)?;
    let expiry = u64::from_be_bytes(expiry.try_into().ok()?);
    (expiry == 0 || expiry > now_ms).then_some(value)
}

/// A page of `scope`'s live keys under `prefix`, strictly after `after`:
/// the one listing both backends share. `range_from(start)` yields the
/// stored keys and values from `start` on, in byte order.
pub(crate) fn list_keys<I, K, V>(
    scope: &Scope,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    now_ms: u64,
    range_from: impl FnOnce(Vec<u8>) -> I,
) -> Result<KeyList, StorageError>
where
    I: Iterator<Item = Result<(K, V), StorageError>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let base = scope.prefix().len();
    let full_prefix = scope.key(prefix);
    let start = match after {
        // Strictly after the cursor: cursor + NUL is the next possible key. A
        // cursor before the prefix is before all its keys.
        Some(cursor) if cursor >= prefix => {
            let mut start = scope.key(cursor);
            start.push(0);
            start
        }
        _ => full_prefix.clone(),
    };
    let mut keys = Vec::new();
    for item in range_from(start) {
        let (k, v) = item?;
        let k = k.as_ref();
        if !k.starts_with(&full_prefix) {
            break;
        }
        if decode_value(v.as_ref(), now_ms).is_none() {
            continue;
        }
        if keys.len() == limit {
            return Ok(KeyList { keys, more: true });
        }
        keys.push(String::from_utf8_lossy(&k[base..]).into_owned());
    }
    Ok(KeyList { keys, more: false })
}

pub(crate) fn add_to_stored(
    stored: Option<&[u8]>,
    delta: i64,
    now_ms: u64,
) -> Result<(i64, Vec<u8>), StorageError> {
    let (current, expiry) = match stored {
        Some(bytes) => match decode_value(bytes, now_ms) {
            Some(value) => {
                let text = std::str::from_utf8(value).map_err(|_| StorageError::NotAnInteger)?;
                let n = text
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| StorageError::NotAnInteger)?;
                (
                    n,
                    u64::from_be_bytes(
                        bytes[..8]
                            .try_into()
                            .map_err(|_| StorageError::NotAnInteger)?,
                    ),
                )
            }
            None => (0, 0),
        },
        None => (0, 0),
    };
    let next = current.checked_add(delta).ok_or(StorageError::Overflow)?;
    let expiry = (expiry != 0).then_some(expiry);
    Ok((next, encode_value(next.to_string().as_bytes(), expiry)))
}

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The behaviour every `KvStore` must have, run against each implementation.
    use super::*;

    pub(crate) fn run_all(store: &dyn KvStore) {
        scopes_never_share_keys(store);
        expired_keys_are_invisible(store);
        lists_by_prefix_with_cursor(store);
        increments_atomically_and_refuses_non_integers(store);
        quotas_count_keys_and_bytes_and_refuse_growth(store);
        expired_keys_are_purged_and_free_their_quota(store);
        a_scope_removed_while_keys_are_set_keeps_its_usage_true(store);
        a_large_scope_is_removed_whole(store);
    }

    /// More keys than one removal transaction takes: all go, and the usage
    /// record with them.
    fn a_large_scope_is_removed_whole(store: &dyn KvStore) {
        let s = scope("ws-large", "crm");
        for i in 0..2_500 {
            store
                .set(&s, &format!("k{i}"), b"v", None, &KvLimits::UNLIMITED)
                .expect("set");
        }
        assert_eq!(store.usage(&s).expect("usage").keys, 2_500);
        assert_eq!(store.remove_scope(&s).expect("remove"), 2_500);
        assert_eq!(store.usage(&s).expect("usage"), Usage::default());
        assert!(store.get(&s, "k2499", 0).expect("get").is_none());
    }

    /// `remove_scope` racing `set`: whichever keys survive, the usage record
    /// counts exactly them. No timing is asserted; the rounds only give the
    /// two many chances to interleave, and each round is checked before the
    /// next removal could hide a drift.
    fn a_scope_removed_while_keys_are_set_keeps_its_usage_true(store: &dyn KvStore) {
        use std::sync::Barrier;
        use std::sync::atomic::{AtomicBool, Ordering};
        let s = scope("ws-race", "c");
        for round in 0..50 {
            let removing = AtomicBool::new(true);
            let start = Barrier::new(2);
            std::thread::scope(|threads| {
                threads.spawn(|| {
                    start.wait();
                    for i in 0..10_000 {
                        if !removing.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("k{}", i % 64);
                        store
                            .set(&s, &key, b"v", None, &KvLimits::UNLIMITED)
                            .expect("set");
                    }
                });
                start.wait();
                store.remove_scope(&s).expect("remove");
                removing.store(false, Ordering::Relaxed);
            });
            let held = store.list(&s, "", None, usize::MAX, 0).expect("list").keys;
            let bytes = held.iter().map(|k| k.len() as u64 + 1).sum();
            assert_eq!(
                store.usage(&s).expect("usage"),
                Usage {
                    keys: held.len() as u64,
                    bytes
                },
                "round {round}: {held:?}"
            );
        }
    }

    fn quotas_count_keys_and_bytes_and_refuse_growth(store: &dyn KvStore) {
        let s = scope("ws-quota", "c");
        let limits = KvLimits {
            max_keys: 2,
            max_total_bytes: 20,
        };
        store.set(&s, "a", b"12345", None, &limits).expect("set");
        store.set(&s, "b", b"12345", None, &limits).expect("set");
        assert_eq!(
            store.usage(&s).expect("usage"),
            Usage { keys: 2, bytes: 12 }
        );
        // A third key is refused; overwriting one is not a new key.
        assert!(matches!(
            store.set(&s, "c", b"1", None, &limits),
            Err(StorageError::Quota(m)) if m.contains("2 keys")
        ));
        assert!(matches!(
            store.increment(&s, "c", 1, 0, &limits),
            Err(StorageError::Quota(_))
        ));
        store
            .set(&s, "a", b"1234567", None, &limits)
            .expect("overwrite");
        // Bytes: a(1+7) + b(1+5) = 14; growing b to 12 bytes makes 21 > 20.
        assert!(matches!(
            store.set(&s, "b", b"123456789012", None, &limits),
            Err(StorageError::Quota(m)) if m.contains("quota is 20")
        ));
        assert_eq!(
            store.get(&s, "b", 0).expect("get").as_deref(),
            Some(&b"12345"[..])
        );
        assert!(store.delete(&s, "a", 0).expect("delete"));
        assert_eq!(store.usage(&s).expect("usage"), Usage { keys: 1, bytes: 6 });
        store.set(&s, "c", b"1", None, &limits).expect("room again");
        // Another scope has its own quota.
        store
            .set(&scope("ws-quota", "d"), "a", b"1", None, &limits)
            .expect("other scope");
    }

    fn expired_keys_are_purged_and_free_their_quota(store: &dyn KvStore) {
        let s = scope("ws-purge", "c");
        let limits = KvLimits {
            max_keys: 2,
            max_total_bytes: 1000,
        };
        store.set(&s, "old", b"v", Some(500), &limits).expect("set");
        store.set(&s, "kept", b"v", None, &limits).expect("set");
        // Expired but not yet purged: it still counts.
        assert!(store.set(&s, "new", b"v", None, &limits).is_err());
        let purged = store.purge_expired(1_000, 100).expect("purge");
        assert!(purged >= 1, "{purged}");
        assert_eq!(store.usage(&s).expect("usage").keys, 1);
        store
            .set(&s, "new", b"v", None, &limits)
            .expect("room after purge");
        assert!(store.get(&s, "kept", 2_000).expect("get").is_some());

        // Removing a scope takes its keys and usage, and nothing of its neighbours.
        let neighbour = scope("ws-purge", "c2");
        store
            .set(&neighbour, "k", b"v", None, &limits)
            .expect("set");
        assert_eq!(store.remove_scope(&s).expect("remove"), 2);
        assert!(store.get(&s, "kept", 0).expect("get").is_none());
        assert_eq!(store.usage(&s).expect("usage"), Usage::default());
        assert!(store.get(&neighbour, "k", 0).expect("get").is_some());
    }

    fn scopes_never_share_keys(store: &dyn KvStore) {
        let a = scope("ws-a", "crm");
        let b = scope("ws-b", "crm");
        // Names chosen so a naive concatenation would collide.
        let c = scope("ws-a", "c");
        let d = scope("ws-ac", "");
        store
            .set(&a, "k", b"a", None, &KvLimits::UNLIMITED)
            .expect("set");
        assert_eq!(store.get(&b, "k", 0).expect("get"), None);
        store
            .set(&c, "rmk", b"c", None, &KvLimits::UNLIMITED)
            .expect("set");
        assert_eq!(store.get(&d, "crmk", 0).expect("get"), None);
        assert_eq!(
            store.get(&a, "k", 0).expect("get").as_deref(),
            Some(&b"a"[..])
        );
        assert!(
            store
                .list(&b, "", None, 10, 0)
                .expect("list")
                .keys
                .is_empty()
        );
    }

    fn expired_keys_are_invisible(store: &dyn KvStore) {
        let s = scope("ws-ttl", "c");
        store
            .set(&s, "short", b"v", Some(1_000), &KvLimits::UNLIMITED)
            .expect("set");
        assert!(store.get(&s, "short", 999).expect("get").is_some());
        assert!(store.get(&s, "short", 1_000).expect("get").is_none());
        assert!(
            store
                .list(&s, "", None, 10, 1_000)
                .expect("list")
                .keys
                .is_empty()
        );
        assert!(!store.delete(&s, "short", 1_000).expect("delete"));
    }

    fn lists_by_prefix_with_cursor(store: &dyn KvStore) {
        let s = scope("ws-list", "c");
        for k in ["a:1", "a:2", "a:3", "b:1"] {
            store
                .set(&s, k, b"x", None, &KvLimits::UNLIMITED)
                .expect("set");
        }
        let first = store.list(&s, "a:", None, 2, 0).expect("list");
        assert_eq!(first.keys, ["a:1", "a:2"]);
        assert!(first.more);
        let second = store.list(&s, "a:", Some("a:2"), 2, 0).expect("list");
        assert_eq!(second.keys, ["a:3"]);
        assert!(!second.more);
        // A cursor before the prefix's keys starts at the first; one past them leaves none.
        let all = store.list(&s, "a:", Some("0"), 10, 0).expect("list");
        assert_eq!(all.keys, ["a:1", "a:2", "a:3"]);
        let none = store.list(&s, "a:", Some("b"), 10, 0).expect("list");
        assert!(none.keys.is_empty() && !none.more);
    }

    fn increments_atomically_and_refuses_non_integers(store: &dyn KvStore) {
        let s = scope("ws-inc", "c");
        assert_eq!(
            store
                .increment(&s, "n", 5, 0, &KvLimits::UNLIMITED)
                .expect("inc"),
            5
        );
        assert_eq!(
            store
                .increment(&s, "n", -2, 0, &KvLimits::UNLIMITED)
                .expect("inc"),
            3
        );
        store
            .set(&s, "text", b"hello", None, &KvLimits::UNLIMITED)
            .expect("set");
        assert!(matches!(
            store.increment(&s, "text", 1, 0, &KvLimits::UNLIMITED),
            Err(StorageError::NotAnInteger)
        ));
        store
            .set(
                &s,
                "max",
                i64::MAX.to_string().as_bytes(),
                None,
                &KvLimits::UNLIMITED,
            )
            .expect("set");
        assert!(matches!(
            store.increment(&s, "max", 1, 0, &KvLimits::UNLIMITED),
            Err(StorageError::Overflow)
        ));
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn a_refused_key_names_the_keys_held_and_the_quota() {
        // Over a quota lowered since: 3 held, 2 allowed.
        let held = Usage { keys: 3, bytes: 6 };
        let limits = KvLimits {
            max_keys: 2,
            max_total_bytes: u64::MAX,
        };
        let refused = held.after("k", None, Some(&encode_value(b"v", None)), &limits);
        assert!(
            matches!(
                &refused,
                Err(StorageError::Quota(m)) if m == "the connection holds 3 keys; its quota is 2"
            ),
            "{refused:?}"
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::{Scope, scope};

    #[test]
    fn a_stored_key_splits_back_into_its_scope_and_key() {
        for (ws, conn, key) in [
            ("ws-1", "crm", "token"),
            ("", "", ""),
            ("a\u{0}b", "c:d", "k/e/y"),
        ] {
            let scope = scope(ws, conn);
            assert_eq!(
                Scope::split_key(&scope.key(key)),
                Some((scope.clone(), key.to_owned()))
            );
        }
        assert_eq!(Scope::split_key(b"\x00\x00"), None);
        assert_eq!(Scope::split_key(b"\x00\x00\x00\x09short"), None);
    }
}
