//! Workspaces and their connections. Connection keys are the workspace
//! (length-prefixed) followed by the connection name, so one workspace's
//! connections are one range and no name can reach into another's.

use super::StorageError;
use crate::tenancy::{Connection, Workspace};
use std::sync::Arc;

pub trait TenancyStore: Send + Sync + 'static {
    /// Create `workspace`; `false` if one with its id exists. Durable when it returns.
    fn create_workspace(&self, workspace: &Workspace) -> Result<bool, StorageError>;
    fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StorageError>;
    /// Every workspace, by id.
    fn list_workspaces(&self) -> Result<Vec<Workspace>, StorageError>;
    /// Remove the workspace and all its connections (durable when it
    /// returns); the connections removed, or `None` if there was no such workspace.
    fn delete_workspace(&self, id: &str) -> Result<Option<Vec<Connection>>, StorageError>;
    /// Create or replace a connection; refused with `NotFound` when its
    /// workspace does not exist. Durable when it returns.
    fn put_connection(&self, connection: &Connection) -> Result<(), StorageError>;
    fn get_connection(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<Connection>, StorageError>;
    /// The workspace's connections, by name.
    fn list_connections(&self, workspace: &str) -> Result<Vec<Connection>, StorageError>;
    /// Remove one connection (durable when it returns); whether it existed.
    fn delete_connection(&self, workspace: &str, name: &str) -> Result<bool, StorageError>;
}

pub type SharedTenancy = Arc<dyn TenancyStore>;

pub(crate) fn connection_key(workspace: &str, name: &str) -> Vec<u8> {
    let mut out = super::workspace_prefix(workspace);
    out.extend_from_slice(name.as_bytes());
    out
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Backend(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Backend(format!("stored record unreadable: {e}")))
}

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The behaviour every `TenancyStore` must have.
    use super::*;
    use crate::policy::grants::Grants;

    fn workspace(id: &str) -> Workspace {
        Workspace {
            id: id.into(),
            created_at_ms: 1,
        }
    }

    fn connection(ws: &str, name: &str) -> Connection {
        Connection {
            workspace: ws.into(),
            name: name.into(),
            plugin: "hubspot".into(),
            version: semver::Version::new(0, 1, 0),
            config: serde_json::Map::new(),
            grants: Grants::all_requested(),
            enabled: true,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    pub(crate) fn run_all(store: &dyn TenancyStore) {
        assert!(store.create_workspace(&workspace("acme")).expect("create"));
        assert!(
            !store.create_workspace(&workspace("acme")).expect("again"),
            "ids are unique"
        );
        // Ids chosen so that a naive key concatenation would collide.
        assert!(
            store
                .create_workspace(&workspace("acme-eu"))
                .expect("create")
        );
        assert_eq!(
            store
                .list_workspaces()
                .expect("list")
                .iter()
                .map(|w| w.id.as_str())
                .collect::<Vec<_>>(),
            ["acme", "acme-eu"]
        );

        assert!(matches!(
            store.put_connection(&connection("nobody", "crm")),
            Err(StorageError::NotFound(_))
        ));
        store
            .put_connection(&connection("acme", "crm"))
            .expect("put");
        store
            .put_connection(&connection("acme", "eu-crm"))
            .expect("put");
        store
            .put_connection(&connection("acme-eu", "crm"))
            .expect("put");
        let mut replaced = connection("acme", "crm");
        replaced.enabled = false;
        store.put_connection(&replaced).expect("replace");
        assert_eq!(
            store.get_connection("acme", "crm").expect("get"),
            Some(replaced),
            "a name is unique in its workspace: putting it again replaces it"
        );
        let names = |ws: &str| -> Vec<String> {
            store
                .list_connections(ws)
                .expect("list")
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names("acme"), ["crm", "eu-crm"]);
        assert_eq!(names("acme-eu"), ["crm"]);
        assert_eq!(
            store.get_connection("acme-eu", "eu-crm").expect("get"),
            None
        );

        assert!(store.delete_connection("acme", "eu-crm").expect("delete"));
        assert!(!store.delete_connection("acme", "eu-crm").expect("again"));

        let removed = store
            .delete_workspace("acme")
            .expect("delete")
            .expect("existed");
        assert_eq!(removed.len(), 1);
        assert_eq!(store.get_workspace("acme").expect("get"), None);
        assert!(names("acme").is_empty());
        assert_eq!(
            names("acme-eu"),
            ["crm"],
            "the other workspace is untouched"
        );
        assert_eq!(store.delete_workspace("acme").expect("delete"), None);
    }
}
