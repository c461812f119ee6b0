//! In-memory KV.

use crate::{
    KeyList, KvLimits, KvStore, Scope, StorageError, Usage, add_to_stored, decode_value,
    encode_value, list_keys,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct KvState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    usage: HashMap<Vec<u8>, Usage>,
}

/// In-memory `KvStore`, for unit tests only: one ordered map of stored keys,
/// with each scope's usage beside it.
#[derive(Debug, Default)]
pub struct MemoryKv {
    state: Mutex<KvState>,
}

impl MemoryKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, KvState> {
        // A poisoned lock only means a panicking test thread; the maps are intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KvState {
    /// Replace `key`'s stored form, keeping the scope's usage in step.
    fn replace(
        &mut self,
        scope: &Scope,
        key: &str,
        new: Option<Vec<u8>>,
        limits: &KvLimits,
    ) -> Result<(), StorageError> {
        let k = scope.key(key);
        let usage = self.usage.get(&scope.prefix()).copied().unwrap_or_default();
        let next = usage.after(
            key,
            self.map.get(&k).map(Vec::as_slice),
            new.as_deref(),
            limits,
        )?;
        match new {
            Some(v) => self.map.insert(k, v),
            None => self.map.remove(&k),
        };
        self.usage.insert(scope.prefix(), next);
        Ok(())
    }
}

impl KvStore for MemoryKv {
    fn get(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .lock()
            .map
            .get(&scope.key(key))
            .and_then(|v| decode_value(v, now_ms))
            .map(<[u8]>::to_vec))
    }

    fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
        limits: &KvLimits,
    ) -> Result<(), StorageError> {
        self.lock()
            .replace(scope, key, Some(encode_value(value, expires_at_ms)), limits)
    }

    fn delete(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let live = state
            .map
            .get(&scope.key(key))
            .is_some_and(|v| decode_value(v, now_ms).is_some());
        state.replace(scope, key, None, &KvLimits::UNLIMITED)?;
        Ok(live)
    }

    fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyList, StorageError> {
        let state = self.lock();
        list_keys(scope, prefix, after, limit, now_ms, |start| {
            state.map.range(start..).map(Ok)
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
        let mut state = self.lock();
        let old = state.map.get(&scope.key(key)).cloned();
        let (next, stored) = add_to_stored(old.as_deref(), delta, now_ms)?;
        state.replace(scope, key, Some(stored), limits)?;
        Ok(next)
    }

    fn usage(&self, scope: &Scope) -> Result<Usage, StorageError> {
        Ok(self
            .lock()
            .usage
            .get(&scope.prefix())
            .copied()
            .unwrap_or_default())
    }

    fn remove_scope(&self, scope: &Scope) -> Result<usize, StorageError> {
        let mut state = self.lock();
        let prefix = scope.prefix();
        let keys: Vec<Vec<u8>> = state
            .map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            state.map.remove(key);
        }
        state.usage.remove(&prefix);
        Ok(keys.len())
    }

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, StorageError> {
        let mut state = self.lock();
        let expired: Vec<(Scope, String)> = state
            .map
            .iter()
            .filter(|(_, v)| decode_value(v, now_ms).is_none())
            .filter_map(|(k, _)| Scope::split_key(k))
            .take(max)
            .collect();
        for (scope, key) in &expired {
            state.replace(scope, key, None, &KvLimits::UNLIMITED)?;
        }
        Ok(expired.len())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
