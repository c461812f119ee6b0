//! Workspaces, connections and workspace tokens in sled.

use super::{backend, remove_prefix, transaction_error};
use crate::StorageError;
use crate::tenancy::{Connection, StoredLookup, Workspace, WorkspaceSettings};
use crate::tenancy::{StoredToken, TenancyStore, connection_key, from_json, to_json};
use crate::tokens::{TokenDigest, WorkspaceToken};

/// Workspaces and connections; every write is flushed before it returns.
#[derive(Debug, Clone)]
pub struct SledTenancy {
    pub(super) workspaces: sled::Tree,
    pub(super) connections: sled::Tree,
    /// Token records under their workspace, and digest -> record key.
    pub(super) tokens: sled::Tree,
    pub(super) token_digests: sled::Tree,
    /// Caller-context lookups under their workspace.
    pub(super) lookups: sled::Tree,
}

impl SledTenancy {
    /// The trees share one sled log: flushing one makes every write before it durable.
    fn flush(&self) -> Result<(), StorageError> {
        self.connections.flush().map(|_| ()).map_err(backend)
    }

    /// Remove the workspace's tokens and their digests, as one batch per tree.
    fn remove_tokens_of(&self, workspace: &str) -> Result<(), StorageError> {
        let mut records = sled::Batch::default();
        let mut digests = sled::Batch::default();
        for item in self.tokens.scan_prefix(crate::workspace_prefix(workspace)) {
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
            .scan_prefix(crate::workspace_prefix(workspace))
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
        remove_prefix(&self.connections, &crate::workspace_prefix(&workspace.id))?;
        remove_prefix(&self.lookups, &crate::workspace_prefix(&workspace.id))?;
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

    fn set_workspace_settings(
        &self,
        id: &str,
        settings: &WorkspaceSettings,
    ) -> Result<Option<Workspace>, StorageError> {
        // Only the settings change, on the record as it is when swapped: a
        // deletion (or a deletion and re-creation) at the same time wins.
        loop {
            let Some(current) = self.workspaces.get(id.as_bytes()).map_err(backend)? else {
                return Ok(None);
            };
            let mut workspace: Workspace = from_json(&current)?;
            workspace.settings = settings.clone();
            let swapped = self
                .workspaces
                .compare_and_swap(id.as_bytes(), Some(current), Some(to_json(&workspace)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(Some(workspace));
            }
        }
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
        remove_prefix(&self.lookups, &crate::workspace_prefix(id))?;
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
            .scan_prefix(crate::workspace_prefix(workspace))
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

    fn put_lookup(&self, lookup: &StoredLookup) -> Result<(), StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let key = connection_key(&lookup.workspace, &lookup.name);
        let value = to_json(lookup)?;
        let result = (&self.workspaces, &self.lookups).transaction(|(workspaces, lookups)| {
            if workspaces.get(lookup.workspace.as_bytes())?.is_none() {
                return Err(ConflictableTransactionError::Abort(StorageError::NotFound(
                    format!("workspace {:?}", lookup.workspace),
                )));
            }
            lookups.insert(key.as_slice(), value.as_slice())?;
            Ok(())
        });
        result.map_err(transaction_error)?;
        self.flush()
    }

    fn get_lookup(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<StoredLookup>, StorageError> {
        match self
            .lookups
            .get(connection_key(workspace, name))
            .map_err(backend)?
        {
            Some(v) => from_json(&v).map(Some),
            None => Ok(None),
        }
    }

    fn list_lookups(&self, workspace: &str) -> Result<Vec<StoredLookup>, StorageError> {
        self.lookups
            .scan_prefix(crate::workspace_prefix(workspace))
            .values()
            .map(|v| from_json(&v.map_err(backend)?))
            .collect()
    }

    fn delete_lookup(&self, workspace: &str, name: &str) -> Result<bool, StorageError> {
        let existed = self
            .lookups
            .remove(connection_key(workspace, name))
            .map_err(backend)?
            .is_some();
        self.flush()?;
        Ok(existed)
    }
}
