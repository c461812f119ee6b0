//! In-memory stores, for unit tests only.

use super::{
    KeyList, KvLimits, KvStore, Scope, StorageError, Usage, add_to_stored, decode_value,
    encode_value,
};
use crate::tenancy::tokens::{TokenDigest, WorkspaceToken};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct KvState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    usage: HashMap<Vec<u8>, Usage>,
}

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
        let base = scope.prefix();
        let start = scope.key(prefix);
        let state = self.lock();
        let map = &state.map;
        let mut keys = Vec::new();
        let mut more = false;
        for (k, v) in map.range(start.clone()..) {
            if !k.starts_with(&start) {
                break;
            }
            let name = String::from_utf8_lossy(&k[base.len()..]).into_owned();
            if after.is_some_and(|a| name.as_str() <= a) || decode_value(v, now_ms).is_none() {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(name);
        }
        Ok(KeyList { keys, more })
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

/// In-memory `SecretStore`, for unit tests only.
#[derive(Debug, Default)]
pub struct MemorySecrets {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemorySecrets {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl super::secrets::SecretStore for MemorySecrets {
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map().get(&scope.key(name)).cloned())
    }

    fn put(&self, scope: &Scope, name: &str, sealed: &[u8]) -> Result<(), StorageError> {
        self.map().insert(scope.key(name), sealed.to_vec());
        Ok(())
    }

    fn put_all(&self, values: &[(Scope, String, Vec<u8>)]) -> Result<(), StorageError> {
        let mut map = self.map();
        for (scope, name, sealed) in values {
            map.insert(scope.key(name), sealed.clone());
        }
        Ok(())
    }

    fn remove(&self, scope: &Scope, name: &str) -> Result<bool, StorageError> {
        Ok(self.map().remove(&scope.key(name)).is_some())
    }

    fn names(&self, scope: &Scope) -> Result<Vec<String>, StorageError> {
        let prefix = scope.prefix();
        Ok(self
            .map()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    fn all(&self) -> Result<Vec<(Scope, String, Vec<u8>)>, StorageError> {
        Ok(self
            .map()
            .iter()
            .filter_map(|(k, v)| Scope::split_key(k).map(|(s, n)| (s, n, v.clone())))
            .collect())
    }
}

/// In-memory `TenancyStore`, for unit tests only.
#[derive(Debug, Default)]
pub struct MemoryTenancy {
    state: Mutex<TenancyMaps>,
}

/// Workspaces by id, connections by (workspace, name), tokens by
/// (workspace, id) with their digests.
type TenancyMaps = (
    BTreeMap<String, crate::tenancy::Workspace>,
    BTreeMap<(String, String), crate::tenancy::Connection>,
    BTreeMap<(String, String), (WorkspaceToken, TokenDigest)>,
);

impl super::tenancy::TenancyStore for MemoryTenancy {
    fn create_workspace(
        &self,
        workspace: &crate::tenancy::Workspace,
    ) -> Result<bool, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.contains_key(&workspace.id) {
            return Ok(false);
        }
        state.0.insert(workspace.id.clone(), workspace.clone());
        Ok(true)
    }

    fn get_workspace(&self, id: &str) -> Result<Option<crate::tenancy::Workspace>, StorageError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned())
    }

    fn list_workspaces(&self) -> Result<Vec<crate::tenancy::Workspace>, StorageError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .values()
            .cloned()
            .collect())
    }

    fn delete_workspace(
        &self,
        id: &str,
    ) -> Result<Option<Vec<crate::tenancy::Connection>>, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.remove(id).is_none() {
            return Ok(None);
        }
        state.2.retain(|(ws, _), _| ws != id);
        let names: Vec<(String, String)> =
            state.1.keys().filter(|(ws, _)| ws == id).cloned().collect();
        Ok(Some(
            names.iter().filter_map(|k| state.1.remove(k)).collect(),
        ))
    }

    fn put_connection(&self, connection: &crate::tenancy::Connection) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.0.contains_key(&connection.workspace) {
            return Err(StorageError::NotFound(format!(
                "workspace {:?}",
                connection.workspace
            )));
        }
        state.1.insert(
            (connection.workspace.clone(), connection.name.clone()),
            connection.clone(),
        );
        Ok(())
    }

    fn get_connection(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<crate::tenancy::Connection>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .1
            .get(&(workspace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn list_connections(
        &self,
        workspace: &str,
    ) -> Result<Vec<crate::tenancy::Connection>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .1
            .iter()
            .filter(|((ws, _), _)| ws == workspace)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn delete_connection(&self, workspace: &str, name: &str) -> Result<bool, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .1
            .remove(&(workspace.to_owned(), name.to_owned()))
            .is_some())
    }

    fn put_token(&self, token: &WorkspaceToken, digest: &TokenDigest) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.0.contains_key(&token.workspace) {
            return Err(StorageError::NotFound(format!(
                "workspace {:?}",
                token.workspace
            )));
        }
        state.2.insert(
            (token.workspace.clone(), token.id.clone()),
            (token.clone(), *digest),
        );
        Ok(())
    }

    fn list_tokens(&self, workspace: &str) -> Result<Vec<WorkspaceToken>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .2
            .iter()
            .filter(|((ws, _), _)| ws == workspace)
            .map(|(_, (t, _))| t.clone())
            .collect())
    }

    fn delete_token(&self, workspace: &str, id: &str) -> Result<bool, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .2
            .remove(&(workspace.to_owned(), id.to_owned()))
            .is_some())
    }

    fn token_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<WorkspaceToken>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .2
            .values()
            .find(|(_, d)| d == digest)
            .map(|(t, _)| t.clone()))
    }
}

/// In-memory `AuditStore`, for unit tests only: records by (workspace,
/// time, sequence), so each workspace's are one ordered range as in sled.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<BTreeMap<(String, u64, u64), Vec<u8>>>,
}

impl MemoryAudit {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64, u64), Vec<u8>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl super::audit::AuditStore for MemoryAudit {
    fn append(
        &self,
        batch: &[(String, super::audit::AuditCursor, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let mut records = self.records();
        for (workspace, cursor, json) in batch {
            records.insert((workspace.clone(), cursor.at_ms, cursor.seq), json.clone());
        }
        Ok(())
    }

    fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<super::audit::AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<super::audit::StoredRecord>, bool), StorageError> {
        use std::ops::Bound::{Excluded, Included};
        let ws = workspace.to_owned();
        let start = match after {
            Some(c) if c.at_ms >= from_ms => Excluded((ws.clone(), c.at_ms, c.seq)),
            _ => Included((ws.clone(), from_ms, 0)),
        };
        if to_ms <= from_ms {
            return Ok((Vec::new(), false));
        }
        let records = self.records();
        let mut out = Vec::new();
        for ((_, at_ms, seq), json) in records.range((start, Excluded((ws, to_ms, 0)))) {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(super::audit::StoredRecord {
                cursor: super::audit::AuditCursor {
                    at_ms: *at_ms,
                    seq: *seq,
                },
                json: json.clone(),
            });
        }
        Ok((out, false))
    }

    fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError> {
        let mut records = self.records();
        let before = records.len();
        records.retain(|(_, at_ms, _), _| *at_ms >= before_ms);
        let mut per_workspace: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
        for key in records.keys() {
            per_workspace
                .entry(key.0.clone())
                .or_default()
                .push(key.clone());
        }
        for keys in per_workspace.values() {
            // Keys are in time order: the oldest go first.
            for key in keys
                .iter()
                .take(keys.len().saturating_sub(max_per_workspace))
            {
                records.remove(key);
            }
        }
        Ok(before - records.len())
    }

    fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        let mut records = self.records();
        let before = records.len();
        records.retain(|(ws, _, _), _| ws != workspace);
        Ok(before - records.len())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_meets_the_audit_store_contract() {
        super::super::audit::contract_tests::run_all(&super::MemoryAudit::default());
    }

    #[test]
    fn memory_store_meets_the_tenancy_store_contract() {
        super::super::tenancy::contract_tests::run_all(&super::MemoryTenancy::default());
    }

    #[test]
    fn memory_store_meets_the_kv_contract() {
        super::super::contract_tests::run_all(&super::MemoryKv::default());
    }

    #[test]
    fn memory_store_meets_the_secret_store_contract() {
        super::super::secrets::contract_tests::run_all(&super::MemorySecrets::default());
    }
}
