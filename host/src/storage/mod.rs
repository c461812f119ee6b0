//! Storage traits and their implementations. Keys are built here, so isolation
//! is structural: the workspace and connection are part of every stored key,
//! and no caller can name a key outside its own scope.

pub mod audit;
pub mod memory;
pub mod secrets;
pub mod sled_store;

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored value is not a decimal 64-bit integer")]
    NotAnInteger,
    #[error("integer overflow")]
    Overflow,
}

/// The owner of a set of KV keys: one connection in one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub workspace: String,
    pub connection: String,
}

impl Scope {
    /// Length-prefixed so that no (workspace, connection) pair can produce the
    /// prefix of another's keys, whatever bytes the names contain.
    pub fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.workspace.len() + self.connection.len());
        for part in [&self.workspace, &self.connection] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

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

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    pub keys: Vec<String>,
    pub more: bool,
}

/// Connection-scoped key-value storage. Times are milliseconds since the Unix
/// epoch, passed in so expiry is testable with a controlled clock.
pub trait KvStore: Send + Sync + 'static {
    fn get(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, StorageError>;
    fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StorageError>;
    fn delete(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<bool, StorageError>;
    fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyList, StorageError>;
    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> Result<i64, StorageError>;
    /// Make every write so far durable.
    fn flush(&self) -> Result<(), StorageError>;
}

pub type SharedKv = Arc<dyn KvStore>;

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

    fn scope(ws: &str, conn: &str) -> Scope {
        Scope {
            workspace: ws.into(),
            connection: conn.into(),
        }
    }

    pub(crate) fn run_all(store: &dyn KvStore) {
        scopes_never_share_keys(store);
        expired_keys_are_invisible(store);
        lists_by_prefix_with_cursor(store);
        increments_atomically_and_refuses_non_integers(store);
    }

    fn scopes_never_share_keys(store: &dyn KvStore) {
        let a = scope("ws-a", "crm");
        let b = scope("ws-b", "crm");
        // Names chosen so a naive concatenation would collide.
        let c = scope("ws-a", "c");
        let d = scope("ws-ac", "");
        store.set(&a, "k", b"a", None).expect("set");
        assert_eq!(store.get(&b, "k", 0).expect("get"), None);
        store.set(&c, "rmk", b"c", None).expect("set");
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
        store.set(&s, "short", b"v", Some(1_000)).expect("set");
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
            store.set(&s, k, b"x", None).expect("set");
        }
        let first = store.list(&s, "a:", None, 2, 0).expect("list");
        assert_eq!(first.keys, ["a:1", "a:2"]);
        assert!(first.more);
        let second = store.list(&s, "a:", Some("a:2"), 2, 0).expect("list");
        assert_eq!(second.keys, ["a:3"]);
        assert!(!second.more);
    }

    fn increments_atomically_and_refuses_non_integers(store: &dyn KvStore) {
        let s = scope("ws-inc", "c");
        assert_eq!(store.increment(&s, "n", 5, 0).expect("inc"), 5);
        assert_eq!(store.increment(&s, "n", -2, 0).expect("inc"), 3);
        store.set(&s, "text", b"hello", None).expect("set");
        assert!(matches!(
            store.increment(&s, "text", 1, 0),
            Err(StorageError::NotAnInteger)
        ));
        store
            .set(&s, "max", i64::MAX.to_string().as_bytes(), None)
            .expect("set");
        assert!(matches!(
            store.increment(&s, "max", 1, 0),
            Err(StorageError::Overflow)
        ));
    }
}

#[cfg(test)]
mod scope_tests {
    use super::Scope;

    #[test]
    fn a_stored_key_splits_back_into_its_scope_and_key() {
        for (ws, conn, key) in [
            ("ws-1", "crm", "token"),
            ("", "", ""),
            ("a\u{0}b", "c:d", "k/e/y"),
        ] {
            let scope = Scope {
                workspace: ws.into(),
                connection: conn.into(),
            };
            assert_eq!(
                Scope::split_key(&scope.key(key)),
                Some((scope.clone(), key.to_owned()))
            );
        }
        assert_eq!(Scope::split_key(b"\x00\x00"), None);
        assert_eq!(Scope::split_key(b"\x00\x00\x00\x09short"), None);
    }
}
