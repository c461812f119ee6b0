//! KV in sled: values, and per scope the keys and bytes it holds.

use super::{backend, transaction_error};
use crate::{
    KeyList, KvLimits, KvStore, Scope, StorageError, Usage, add_to_stored, decode_value,
    encode_value, list_keys,
};

/// KV values, and per scope the keys and bytes it holds, changed together
/// in one transaction so the quota count never drifts from the data.
#[derive(Debug, Clone)]
pub struct SledKv {
    pub(super) tree: sled::Tree,
    pub(super) usage: sled::Tree,
}

impl SledKv {
    /// Set `key` to what `next` makes of its current stored form (`None`
    /// removes it), with the scope's usage, atomically. Returns `next`'s extra.
    fn update<T>(
        &self,
        scope: &Scope,
        key: &str,
        limits: &KvLimits,
        next: impl Fn(Option<&[u8]>) -> Result<(Option<Vec<u8>>, T), StorageError>,
    ) -> Result<T, StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let k = scope.key(key);
        let prefix = scope.prefix();
        let result = (&self.tree, &self.usage).transaction(|(kv, usage)| {
            let old = kv.get(&k)?;
            let (new, extra) = next(old.as_deref()).map_err(ConflictableTransactionError::Abort)?;
            let current = Usage::decode(usage.get(&prefix)?.as_deref());
            let after = current
                .after(key, old.as_deref(), new.as_deref(), limits)
                .map_err(ConflictableTransactionError::Abort)?;
            match new {
                Some(value) => kv.insert(k.as_slice(), value)?,
                None => kv.remove(k.as_slice())?,
            };
            usage.insert(prefix.as_slice(), &after.encode()[..])?;
            Ok(extra)
        });
        result.map_err(transaction_error)
    }
}

impl KvStore for SledKv {
    fn get(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let stored = self.tree.get(scope.key(key)).map_err(backend)?;
        Ok(stored.and_then(|v| decode_value(&v, now_ms).map(<[u8]>::to_vec)))
    }

    fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
        limits: &KvLimits,
    ) -> Result<(), StorageError> {
        let stored = encode_value(value, expires_at_ms);
        self.update(scope, key, limits, |_| Ok((Some(stored.clone()), ())))
    }

    fn delete(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<bool, StorageError> {
        self.update(scope, key, &KvLimits::UNLIMITED, |old| {
            Ok((None, old.is_some_and(|v| decode_value(v, now_ms).is_some())))
        })
    }

    fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyList, StorageError> {
        list_keys(scope, prefix, after, limit, now_ms, |start| {
            self.tree.range(start..).map(|item| item.map_err(backend))
        })
    }

    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: i64,
        now_ms: u64,
        limits: &KvLimits,
    ) -> Result<i64, StorageError> {
        // In a transaction: concurrent increments retry instead of losing updates.
        self.update(scope, key, limits, |old| {
            let (next, stored) = add_to_stored(old, delta, now_ms)?;
            Ok((Some(stored), next))
        })
    }

    fn remove_scope(&self, scope: &Scope) -> Result<usize, StorageError> {
        let prefix = scope.prefix();
        let stored = self
            .tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        // With the usage record, in transactions as `set` writes them: a
        // key set since the scan survives and keeps its share of the usage,
        // where resetting the record would leave it uncounted. In chunks, so
        // a full scope's values are not all held in one transaction.
        let mut removed = 0;
        for chunk in stored.chunks(REMOVE_CHUNK) {
            removed += self.remove_keys(&prefix, chunk)?;
        }
        self.flush()?;
        Ok(removed)
    }

    fn usage(&self, scope: &Scope) -> Result<Usage, StorageError> {
        let stored = self.usage.get(scope.prefix()).map_err(backend)?;
        Ok(Usage::decode(stored.as_deref()))
    }

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, StorageError> {
        let mut expired = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(backend)?;
            if decode_value(&v, now_ms).is_none()
                && let Some(found) = Scope::split_key(&k)
            {
                expired.push(found);
                if expired.len() == max {
                    break;
                }
            }
        }
        let mut purged = 0;
        for (scope, key) in &expired {
            // Re-checked inside the transaction: the key may have been set again meanwhile.
            let removed = self.update(scope, key, &KvLimits::UNLIMITED, |old| match old {
                Some(v) if decode_value(v, now_ms).is_none() => Ok((None, true)),
                other => Ok((other.map(<[u8]>::to_vec), false)),
            })?;
            purged += usize::from(removed);
        }
        if purged > 0 {
            self.flush()?;
        }
        Ok(purged)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.tree.flush().map(|_| ()).map_err(backend)
    }
}

/// Keys `remove_scope` removes per transaction.
const REMOVE_CHUNK: usize = 1_000;

impl SledKv {
    /// Remove `keys` (full keys under `prefix`) and their share of the
    /// scope's usage, in one transaction; how many were still there.
    fn remove_keys(&self, prefix: &[u8], keys: &[sled::IVec]) -> Result<usize, StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let result = (&self.tree, &self.usage).transaction(|(kv, usage)| {
            let mut left = Usage::decode(usage.get(prefix)?.as_deref());
            let mut removed = 0;
            for k in keys {
                if let Some(old) = kv.remove(k)? {
                    let key = String::from_utf8_lossy(&k[prefix.len()..]);
                    left = left
                        .after(&key, Some(&old), None, &KvLimits::UNLIMITED)
                        .map_err(ConflictableTransactionError::Abort)?;
                    removed += 1;
                }
            }
            if left == Usage::default() {
                usage.remove(prefix)?;
            } else {
                usage.insert(prefix, &left.encode()[..])?;
            }
            Ok(removed)
        });
        result.map_err(transaction_error)
    }
}
