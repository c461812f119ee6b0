//! Workspaces and their connections. Connection keys are the workspace
//! (length-prefixed) followed by the connection name, so one workspace's
//! connections are one range and no name can reach into another's. Tokens
//! are kept the same way, with an index from digest to token.

use super::{Scope, StorageError};
use crate::tokens::{TokenDigest, WorkspaceToken};
use patchbay_policy::grants::Grants;
use patchbay_policy::limits::ConnectionLimits;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::sync::Arc;

/// A tenant's space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workspace {
    /// Its id, a slug, unique among workspaces.
    pub id: String,
    /// When it was created, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// What the tenant set for the whole workspace.
    #[serde(default)]
    pub settings: WorkspaceSettings,
}

/// A workspace's own settings; every one optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// Region (CLDR code, e.g. `US`) in which caller numbers without a
    /// country code are read; a lookup request may name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
}

/// One plugin version enabled in one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    /// The id of the workspace it belongs to.
    pub workspace: String,
    /// Its name, a slug unique in the workspace; API routes and stored keys use it.
    pub name: String,
    /// The id of the plugin it runs.
    pub plugin: String,
    /// Always concrete: `latest` is resolved when the connection is saved.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// Non-secret settings, checked against the plugin's config schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Map<String, Json>,
    /// What the workspace approved for it.
    pub grants: Grants,
    /// Tighter limits than the plugin's own, if the tenant wants them.
    #[serde(default)]
    pub limits: ConnectionLimits,
    /// Whether it may be invoked.
    pub enabled: bool,
    /// When it was created, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it was last saved, in ms since the Unix epoch.
    pub updated_at_ms: u64,
}

impl Connection {
    /// The plugin version it runs, as the catalog names it (`id@version`).
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.plugin, self.version)
    }

    /// The scope its KV keys and secrets are kept under.
    pub fn scope(&self) -> Scope {
        Scope {
            workspace: self.workspace.clone(),
            connection: self.name.clone(),
        }
    }
}

/// A workspace's caller-context lookup, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredLookup {
    /// The id of the workspace it belongs to.
    pub workspace: String,
    /// Its name, a slug unique in the workspace.
    pub name: String,
    /// What it asks and how it merges.
    pub definition: patchbay_policy::lookup::LookupDefinition,
    /// When it was created, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it was last saved, in ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// Where workspaces, their connections and their tokens are kept.
pub trait TenancyStore: Send + Sync + 'static {
    /// Create `workspace`; `false` if one with its id exists. Durable when it returns.
    fn create_workspace(&self, workspace: &Workspace) -> Result<bool, StorageError>;
    /// Replace the settings of workspace `id`, and nothing else of it; the
    /// workspace as it now is, or `None` (nothing written) when there is
    /// none. Durable when it returns.
    fn set_workspace_settings(
        &self,
        id: &str,
        settings: &WorkspaceSettings,
    ) -> Result<Option<Workspace>, StorageError>;
    /// The workspace with this id; `None` when there is none.
    fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StorageError>;
    /// Every workspace, by id.
    fn list_workspaces(&self) -> Result<Vec<Workspace>, StorageError>;
    /// Remove the workspace and all its connections (durable when it
    /// returns); the connections removed, or `None` if there was no such workspace.
    fn delete_workspace(&self, id: &str) -> Result<Option<Vec<Connection>>, StorageError>;
    /// Create or replace a connection; refused with `NotFound` when its
    /// workspace does not exist. Durable when it returns.
    fn put_connection(&self, connection: &Connection) -> Result<(), StorageError>;
    /// The connection `name` of `workspace`; `None` when there is none.
    fn get_connection(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<Connection>, StorageError>;
    /// The workspace's connections, by name.
    fn list_connections(&self, workspace: &str) -> Result<Vec<Connection>, StorageError>;
    /// Remove one connection (durable when it returns); whether it existed.
    fn delete_connection(&self, workspace: &str, name: &str) -> Result<bool, StorageError>;
    /// Store a workspace token by its digest; refused with `NotFound` when
    /// its workspace does not exist. Durable when it returns.
    fn put_token(&self, token: &WorkspaceToken, digest: &TokenDigest) -> Result<(), StorageError>;
    /// The workspace's tokens, by id.
    fn list_tokens(&self, workspace: &str) -> Result<Vec<WorkspaceToken>, StorageError>;
    /// Revoke one token (durable when it returns); whether it existed.
    fn delete_token(&self, workspace: &str, id: &str) -> Result<bool, StorageError>;
    /// The token with this digest, if one is live.
    fn token_by_digest(&self, digest: &TokenDigest)
    -> Result<Option<WorkspaceToken>, StorageError>;
    /// Create or replace a lookup; refused with `NotFound` when its
    /// workspace does not exist. Durable when it returns. Deleting the
    /// workspace deletes its lookups.
    fn put_lookup(&self, lookup: &StoredLookup) -> Result<(), StorageError>;
    /// The lookup `name` of `workspace`; `None` when there is none.
    fn get_lookup(&self, workspace: &str, name: &str)
    -> Result<Option<StoredLookup>, StorageError>;
    /// The workspace's lookups, by name.
    fn list_lookups(&self, workspace: &str) -> Result<Vec<StoredLookup>, StorageError>;
    /// Remove one lookup (durable when it returns); whether it existed.
    fn delete_lookup(&self, workspace: &str, name: &str) -> Result<bool, StorageError>;
}

/// A tenancy store as the services share it.
pub type SharedTenancy = Arc<dyn TenancyStore>;

pub(crate) fn connection_key(workspace: &str, name: &str) -> Vec<u8> {
    let mut out = super::workspace_prefix(workspace);
    out.extend_from_slice(name.as_bytes());
    out
}

/// A token record: the listed form and the digest it is found by.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredToken {
    pub token: WorkspaceToken,
    pub digest: String,
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
    use patchbay_policy::grants::Grants;

    fn workspace(id: &str) -> Workspace {
        Workspace {
            id: id.into(),
            created_at_ms: 1,
            settings: WorkspaceSettings::default(),
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
            limits: Default::default(),
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
        let mut set = workspace("acme");
        set.settings.default_region = Some("GB".into());
        assert_eq!(
            store
                .set_workspace_settings("acme", &set.settings)
                .expect("update"),
            Some(set.clone())
        );
        assert_eq!(store.get_workspace("acme").expect("get"), Some(set));
        assert_eq!(
            store.get_workspace("acme-eu").expect("get"),
            Some(workspace("acme-eu")),
            "only the workspace named is changed"
        );
        assert_eq!(
            store
                .set_workspace_settings("nobody", &WorkspaceSettings::default())
                .expect("update"),
            None,
            "an update never creates a workspace"
        );
        assert_eq!(store.get_workspace("nobody").expect("get"), None);

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

        let token = |ws: &str, id: &str| WorkspaceToken {
            profile: patchbay_policy::lookup::Profile::Advanced,
            id: id.into(),
            workspace: ws.into(),
            label: None,
            created_at_ms: 1,
        };
        assert!(matches!(
            store.put_token(&token("nobody", "t1"), &[1; 32]),
            Err(StorageError::NotFound(_))
        ));
        store
            .put_token(&token("acme", "t1"), &[1; 32])
            .expect("put");
        store
            .put_token(&token("acme", "t2"), &[2; 32])
            .expect("put");
        store
            .put_token(&token("acme-eu", "t1"), &[3; 32])
            .expect("put");
        assert_eq!(
            store.token_by_digest(&[1; 32]).expect("find"),
            Some(token("acme", "t1"))
        );
        assert_eq!(
            store.token_by_digest(&[3; 32]).expect("find"),
            Some(token("acme-eu", "t1")),
            "the same id in two workspaces names two tokens"
        );
        assert_eq!(store.token_by_digest(&[9; 32]).expect("find"), None);
        assert_eq!(
            store.list_tokens("acme").expect("list"),
            [token("acme", "t1"), token("acme", "t2")]
        );
        assert!(store.delete_token("acme", "t2").expect("revoke"));
        assert!(!store.delete_token("acme", "t2").expect("again"));
        assert!(
            !store.delete_token("acme", "t9").expect("unknown"),
            "an unknown id is not an error"
        );
        assert_eq!(
            store.token_by_digest(&[2; 32]).expect("find"),
            None,
            "a revoked token opens nothing"
        );

        assert!(store.delete_connection("acme", "eu-crm").expect("delete"));
        assert!(!store.delete_connection("acme", "eu-crm").expect("again"));

        // Lookups: per workspace, replaced by name, gone with their workspace.
        let lookup = |ws: &str, name: &str, ttl: u32| StoredLookup {
            workspace: ws.into(),
            name: name.into(),
            definition: serde_json::from_value(serde_json::json!({
                "sources": [{ "name": "crm", "connection": "crm", "operation": "find-contact",
                              "provides": "contact", "deadline_ms": 500 }],
                "cache_ttl_seconds": ttl
            }))
            .expect("definition"),
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        store
            .put_lookup(&lookup("acme", "caller", 10))
            .expect("put");
        store
            .put_lookup(&lookup("acme", "caller", 20))
            .expect("replace");
        store
            .put_lookup(&lookup("acme-eu", "caller", 30))
            .expect("put");
        store.put_lookup(&lookup("acme", "vip", 40)).expect("put");
        assert!(matches!(
            store.put_lookup(&lookup("nobody", "caller", 1)),
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(
            store.get_lookup("acme", "caller").expect("get"),
            Some(lookup("acme", "caller", 20))
        );
        let listed: Vec<String> = store
            .list_lookups("acme")
            .expect("list")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(listed, ["caller", "vip"]);
        assert!(store.delete_lookup("acme", "vip").expect("delete"));
        assert!(!store.delete_lookup("acme", "vip").expect("again"));
        assert_eq!(store.get_lookup("acme", "vip").expect("get"), None);

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
        assert_eq!(
            store.token_by_digest(&[1; 32]).expect("find"),
            None,
            "deleting a workspace revokes its tokens"
        );
        assert!(store.list_tokens("acme").expect("list").is_empty());
        assert_eq!(
            store.list_tokens("acme-eu").expect("list"),
            [token("acme-eu", "t1")]
        );
        assert!(
            store.list_lookups("acme").expect("list").is_empty(),
            "deleting a workspace deletes its lookups"
        );
        assert_eq!(store.list_lookups("acme-eu").expect("list").len(), 1);
        // A workspace created again under a deleted one's id starts empty.
        assert!(store.create_workspace(&workspace("acme")).expect("create"));
        assert!(names("acme").is_empty());
        assert!(store.list_tokens("acme").expect("list").is_empty());
    }
}
