//! In-memory workspaces, connections and tokens.

use crate::StorageError;
use crate::tokens::{TokenDigest, WorkspaceToken};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// In-memory `TenancyStore`, for unit tests only.
#[derive(Debug, Default)]
pub struct MemoryTenancy {
    state: Mutex<TenancyMaps>,
}

/// Workspaces by id, connections by (workspace, name), tokens by
/// (workspace, id) with their digests, lookups by (workspace, name).
type TenancyMaps = (
    BTreeMap<String, crate::tenancy::Workspace>,
    BTreeMap<(String, String), crate::tenancy::Connection>,
    BTreeMap<(String, String), (WorkspaceToken, TokenDigest)>,
    BTreeMap<(String, String), crate::tenancy::StoredLookup>,
);

impl crate::tenancy::TenancyStore for MemoryTenancy {
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

    fn set_workspace_settings(
        &self,
        id: &str,
        settings: &crate::tenancy::WorkspaceSettings,
    ) -> Result<Option<crate::tenancy::Workspace>, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state.0.get_mut(id).map(|stored| {
            stored.settings = settings.clone();
            stored.clone()
        }))
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
        state.3.retain(|(ws, _), _| ws != id);
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

    fn put_lookup(&self, lookup: &crate::tenancy::StoredLookup) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.0.contains_key(&lookup.workspace) {
            return Err(StorageError::NotFound(format!(
                "workspace {:?}",
                lookup.workspace
            )));
        }
        state.3.insert(
            (lookup.workspace.clone(), lookup.name.clone()),
            lookup.clone(),
        );
        Ok(())
    }

    fn get_lookup(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<crate::tenancy::StoredLookup>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .3
            .get(&(workspace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn list_lookups(
        &self,
        workspace: &str,
    ) -> Result<Vec<crate::tenancy::StoredLookup>, StorageError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .3
            .iter()
            .filter(|((ws, _), _)| ws == workspace)
            .map(|(_, l)| l.clone())
            .collect())
    }

    fn delete_lookup(&self, workspace: &str, name: &str) -> Result<bool, StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .3
            .remove(&(workspace.to_owned(), name.to_owned()))
            .is_some())
    }
}
