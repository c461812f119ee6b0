//! The sled-backed stores (embedded, on disk under the data directory).

use super::audit::{AuditCursor, AuditStore, StoredRecord, cursor_of, record_key};
use super::secrets::SecretStore;
use super::tenancy::{StoredToken, TenancyStore, connection_key, from_json, to_json};
use super::{
    KeyList, KvLimits, KvStore, Scope, StorageError, Usage, add_to_stored, decode_value,
    encode_value, workspace_prefix,
};
use crate::tenancy::tokens::{TokenDigest, WorkspaceToken};
use crate::tenancy::{Connection, Workspace};
use std::path::Path;

fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// A failed transaction's error: our own refusal, or sled's.
fn transaction_error(e: sled::transaction::TransactionError<StorageError>) -> StorageError {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => backend(e),
    }
}

/// Remove every key under `prefix` in one batch; how many.
fn remove_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<usize, StorageError> {
    let mut batch = sled::Batch::default();
    let mut removed = 0;
    for key in tree.scan_prefix(prefix).keys() {
        batch.remove(key.map_err(backend)?);
        removed += 1;
    }
    tree.apply_batch(batch).map_err(backend)?;
    Ok(removed)
}

/// The embedded database: one sled instance, one tree per kind of state.
#[derive(Debug, Clone)]
pub struct SledDb {
    db: sled::Db,
}

impl SledDb {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        Ok(Self { db })
    }

    pub fn audit(&self) -> Result<SledAudit, StorageError> {
        Ok(SledAudit {
            tree: self.db.open_tree("audit").map_err(backend)?,
        })
    }

    pub fn tenancy(&self) -> Result<SledTenancy, StorageError> {
        Ok(SledTenancy {
            workspaces: self.db.open_tree("workspaces").map_err(backend)?,
            connections: self.db.open_tree("connections").map_err(backend)?,
            tokens: self.db.open_tree("tokens").map_err(backend)?,
            token_digests: self.db.open_tree("token-digests").map_err(backend)?,
        })
    }

    pub fn secrets(&self) -> Result<SledSecrets, StorageError> {
        Ok(SledSecrets {
            tree: self.db.open_tree("secrets").map_err(backend)?,
        })
    }

    pub fn kv(&self) -> Result<SledKv, StorageError> {
        Ok(SledKv {
            tree: self.db.open_tree("kv").map_err(backend)?,
            usage: self.db.open_tree("kv-usage").map_err(backend)?,
        })
    }
}

/// KV values, and per scope the keys and bytes it holds, changed together
/// in one transaction so the quota count never drifts from the data.
#[derive(Debug, Clone)]
pub struct SledKv {
    tree: sled::Tree,
    usage: sled::Tree,
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
        let base = scope.prefix().len();
        let mut keys = Vec::new();
        let mut more = false;
        let iter = match after {
            // Strictly after the cursor: start at cursor + NUL, the next possible key.
            Some(cursor) if cursor >= prefix => {
                let mut start = scope.key(cursor);
                start.push(0);
                self.tree.range(start..)
            }
            _ => self.tree.range(scope.key(prefix)..),
        };
        let full_prefix = scope.key(prefix);
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            if decode_value(&v, now_ms).is_none() {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&k[base..]).into_owned());
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
        // In a transaction: concurrent increments retry instead of losing updates.
        self.update(scope, key, limits, |old| {
            let (next, stored) = add_to_stored(old, delta, now_ms)?;
            Ok((Some(stored), next))
        })
    }

    fn remove_scope(&self, scope: &Scope) -> Result<usize, StorageError> {
        let prefix = scope.prefix();
        let removed = remove_prefix(&self.tree, &prefix)?;
        self.usage.remove(&prefix).map_err(backend)?;
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

/// Sealed credentials; every write is flushed before it is acknowledged.
#[derive(Debug, Clone)]
pub struct SledSecrets {
    tree: sled::Tree,
}

impl SecretStore for SledSecrets {
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree
            .get(scope.key(name))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, scope: &Scope, name: &str, sealed: &[u8]) -> Result<(), StorageError> {
        self.tree.insert(scope.key(name), sealed).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }

    fn remove(&self, scope: &Scope, name: &str) -> Result<bool, StorageError> {
        let old = self.tree.remove(scope.key(name)).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(old.is_some())
    }

    fn names(&self, scope: &Scope) -> Result<Vec<String>, StorageError> {
        let prefix = scope.prefix();
        self.tree
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    fn all(&self) -> Result<Vec<(Scope, String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item.map_err(backend)?;
            if let Some((scope, name)) = Scope::split_key(&key) {
                out.push((scope, name, value.to_vec()));
            }
        }
        Ok(out)
    }

    fn put_all(&self, values: &[(Scope, String, Vec<u8>)]) -> Result<(), StorageError> {
        // One batch is applied atomically by sled, also across a crash.
        let mut batch = sled::Batch::default();
        for (scope, name, sealed) in values {
            batch.insert(scope.key(name), sealed.as_slice());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }
}

/// The audit trail, one time-ordered range per workspace.
#[derive(Debug, Clone)]
pub struct SledAudit {
    tree: sled::Tree,
}

impl SledAudit {
    /// Remove the records of one workspace that are before `before_ms` or
    /// beyond the newest `keep`.
    fn purge_workspace(
        &self,
        prefix: &[u8],
        before_ms: u64,
        keep: usize,
    ) -> Result<usize, StorageError> {
        let mut doomed = Vec::new();
        let mut total = 0usize;
        for key in self.tree.scan_prefix(prefix).keys() {
            let key = key.map_err(backend)?;
            total += 1;
            if cursor_of(&key, prefix.len()).is_some_and(|c| c.at_ms < before_ms) {
                doomed.push(key);
            }
        }
        let over = total.saturating_sub(keep).saturating_sub(doomed.len());
        if over > 0 {
            // The oldest beyond the age cut, in key (time) order.
            let skip = doomed.len();
            for key in self.tree.scan_prefix(prefix).keys().skip(skip).take(over) {
                doomed.push(key.map_err(backend)?);
            }
        }
        let mut batch = sled::Batch::default();
        for key in &doomed {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        Ok(doomed.len())
    }
}

impl AuditStore for SledAudit {
    fn append(&self, records: &[(String, AuditCursor, Vec<u8>)]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (workspace, cursor, json) in records {
            batch.insert(record_key(workspace, *cursor), json.as_slice());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }

    fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, bool), StorageError> {
        let prefix = workspace_prefix(workspace);
        let start = match after {
            Some(c) if c.at_ms >= from_ms => {
                let mut key = record_key(workspace, c);
                key.push(0);
                key
            }
            _ => record_key(
                workspace,
                AuditCursor {
                    at_ms: from_ms,
                    seq: 0,
                },
            ),
        };
        let end = record_key(
            workspace,
            AuditCursor {
                at_ms: to_ms,
                seq: 0,
            },
        );
        let mut out = Vec::new();
        for item in self.tree.range(start..end) {
            let (key, value) = item.map_err(backend)?;
            let Some(cursor) = cursor_of(&key, prefix.len()) else {
                continue;
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(StoredRecord {
                cursor,
                json: value.to_vec(),
            });
        }
        Ok((out, false))
    }

    fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut next: Vec<u8> = Vec::new();
        // Visit each workspace's range once, jumping from one to the next.
        while let Some(item) = self.tree.range(next.clone()..).next() {
            let (key, _) = item.map_err(backend)?;
            let Some(len) = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                break;
            };
            let prefix = key[..(4 + len as usize).min(key.len())].to_vec();
            removed += self.purge_workspace(&prefix, before_ms, max_per_workspace)?;
            next = prefix;
            next.extend_from_slice(&[0xff; 17]);
        }
        if removed > 0 {
            self.tree.flush().map_err(backend)?;
        }
        Ok(removed)
    }

    fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        let removed = remove_prefix(&self.tree, &workspace_prefix(workspace))?;
        self.tree.flush().map_err(backend)?;
        Ok(removed)
    }
}

/// Workspaces and connections; every write is flushed before it returns.
#[derive(Debug, Clone)]
pub struct SledTenancy {
    workspaces: sled::Tree,
    connections: sled::Tree,
    /// Token records under their workspace, and digest -> record key.
    tokens: sled::Tree,
    token_digests: sled::Tree,
}

impl SledTenancy {
    fn flush(&self) -> Result<(), StorageError> {
        self.connections.flush().map(|_| ()).map_err(backend)
    }

    /// Remove the workspace's tokens and their digests, as one batch per tree.
    fn remove_tokens_of(&self, workspace: &str) -> Result<(), StorageError> {
        let mut records = sled::Batch::default();
        let mut digests = sled::Batch::default();
        for item in self.tokens.scan_prefix(super::workspace_prefix(workspace)) {
            let (key, value) = item.map_err(backend)?;
            let stored: StoredToken = from_json(&value)?;
            if let Ok(digest) = hex::decode(&stored.digest) {
                digests.remove(digest);
            }
            records.remove(key);
        }
        // Digests first: a crash in between leaves records no digest reaches.
        self.token_digests.apply_batch(digests).map_err(backend)?;
        self.tokens.apply_batch(records).map_err(backend)
    }

    fn connections_of(&self, workspace: &str) -> Result<Vec<Connection>, StorageError> {
        self.connections
            .scan_prefix(super::workspace_prefix(workspace))
            .values()
            .map(|v| from_json(&v.map_err(backend)?))
            .collect()
    }
}

impl TenancyStore for SledTenancy {
    fn create_workspace(&self, workspace: &Workspace) -> Result<bool, StorageError> {
        if self
            .workspaces
            .contains_key(workspace.id.as_bytes())
            .map_err(backend)?
        {
            return Ok(false);
        }
        // A crash part-way through deleting a workspace of this id may have
        // left some of its records: a new workspace never inherits them.
        remove_prefix(&self.connections, &super::workspace_prefix(&workspace.id))?;
        self.remove_tokens_of(&workspace.id)?;
        let created = self
            .workspaces
            .compare_and_swap(
                workspace.id.as_bytes(),
                None as Option<&[u8]>,
                Some(to_json(workspace)?),
            )
            .map_err(backend)?
            .is_ok();
        self.flush()?;
        Ok(created)
    }

    fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StorageError> {
        match self.workspaces.get(id.as_bytes()).map_err(backend)? {
            Some(v) => from_json(&v).map(Some),
            None => Ok(None),
        }
    }

    fn list_workspaces(&self) -> Result<Vec<Workspace>, StorageError> {
        self.workspaces
            .iter()
            .values()
            .map(|v| from_json(&v.map_err(backend)?))
            .collect()
    }

    fn delete_workspace(&self, id: &str) -> Result<Option<Vec<Connection>>, StorageError> {
        if self
            .workspaces
            .remove(id.as_bytes())
            .map_err(backend)?
            .is_none()
        {
            return Ok(None);
        }
        // The workspace is gone first, so no connection can be added to it
        // while its connections are removed.
        let removed = self.connections_of(id)?;
        let mut batch = sled::Batch::default();
        for connection in &removed {
            batch.remove(connection_key(id, &connection.name));
        }
        self.connections.apply_batch(batch).map_err(backend)?;
        self.remove_tokens_of(id)?;
        self.flush()?;
        Ok(Some(removed))
    }

    fn put_connection(&self, connection: &Connection) -> Result<(), StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let key = connection_key(&connection.workspace, &connection.name);
        let value = to_json(connection)?;
        let result =
            (&self.workspaces, &self.connections).transaction(|(workspaces, connections)| {
                if workspaces.get(connection.workspace.as_bytes())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(StorageError::NotFound(
                        format!("workspace {:?}", connection.workspace),
                    )));
                }
                connections.insert(key.as_slice(), value.as_slice())?;
                Ok(())
            });
        result.map_err(transaction_error)?;
        self.flush()
    }

    fn get_connection(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<Connection>, StorageError> {
        match self
            .connections
            .get(connection_key(workspace, name))
            .map_err(backend)?
        {
            Some(v) => from_json(&v).map(Some),
            None => Ok(None),
        }
    }

    fn list_connections(&self, workspace: &str) -> Result<Vec<Connection>, StorageError> {
        self.connections_of(workspace)
    }

    fn delete_connection(&self, workspace: &str, name: &str) -> Result<bool, StorageError> {
        let existed = self
            .connections
            .remove(connection_key(workspace, name))
            .map_err(backend)?
            .is_some();
        self.flush()?;
        Ok(existed)
    }

    fn put_token(&self, token: &WorkspaceToken, digest: &TokenDigest) -> Result<(), StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let key = connection_key(&token.workspace, &token.id);
        let value = to_json(&StoredToken {
            token: token.clone(),
            digest: hex::encode(digest),
        })?;
        let result = (&self.workspaces, &self.tokens, &self.token_digests).transaction(
            |(workspaces, tokens, digests)| {
                if workspaces.get(token.workspace.as_bytes())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(StorageError::NotFound(
                        format!("workspace {:?}", token.workspace),
                    )));
                }
                tokens.insert(key.as_slice(), value.as_slice())?;
                digests.insert(&digest[..], key.as_slice())?;
                Ok(())
            },
        );
        result.map_err(transaction_error)?;
        self.flush()
    }

    fn list_tokens(&self, workspace: &str) -> Result<Vec<WorkspaceToken>, StorageError> {
        self.tokens
            .scan_prefix(super::workspace_prefix(workspace))
            .values()
            .map(|v| from_json::<StoredToken>(&v.map_err(backend)?).map(|s| s.token))
            .collect()
    }

    fn delete_token(&self, workspace: &str, id: &str) -> Result<bool, StorageError> {
        let key = connection_key(workspace, id);
        let Some(value) = self.tokens.get(&key).map_err(backend)? else {
            return Ok(false);
        };
        let stored: StoredToken = from_json(&value)?;
        if let Ok(digest) = hex::decode(&stored.digest) {
            self.token_digests.remove(digest).map_err(backend)?;
        }
        self.tokens.remove(&key).map_err(backend)?;
        self.flush()?;
        Ok(true)
    }

    fn token_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<WorkspaceToken>, StorageError> {
        let Some(key) = self.token_digests.get(&digest[..]).map_err(backend)? else {
            return Ok(None);
        };
        // The record must still exist and name the same digest: a leftover
        // index entry opens nothing.
        let Some(value) = self.tokens.get(&key).map_err(backend)? else {
            return Ok(None);
        };
        let stored: StoredToken = from_json(&value)?;
        Ok((stored.digest == hex::encode(digest)).then_some(stored.token))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sled_store_meets_the_tenancy_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::tenancy::contract_tests::run_all(&db.tenancy().expect("trees"));
    }

    #[test]
    fn sled_store_meets_the_audit_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::audit::contract_tests::run_all(&db.audit().expect("audit tree"));
    }

    #[test]
    fn sled_store_meets_the_secret_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::secrets::contract_tests::run_all(&db.secrets().expect("secrets tree"));
    }

    #[test]
    fn sled_store_meets_the_kv_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::contract_tests::run_all(&db.kv().expect("kv tree"));
    }
}
