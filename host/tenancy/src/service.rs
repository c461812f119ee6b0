//! Workspaces and connections as the API and CLI use them: validated, and
//! deleting removes everything the workspace or connection owns.

use crate::catalog::Catalog;
use crate::{NameError, check_name, validate_config};
use patchbay_egress::audit::AuditLog;
use patchbay_egress::credentials::Credentials;
use patchbay_policy::clock::Clock;
use patchbay_policy::grants::Grants;
use patchbay_policy::limits::ConnectionLimits;
use patchbay_policy::upgrade::{self, CapabilityDiff};
use patchbay_runtime::Binding;
use patchbay_storage::tenancy::SharedTenancy;
use patchbay_storage::tenancy::{Connection, Workspace};
use patchbay_storage::tokens::{self, WorkspaceToken};
use patchbay_storage::{SharedKv, StorageError};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value as Json;
use std::sync::Arc;

/// What a tenant sends to create or change a connection.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// The id of the installed plugin to run.
    pub plugin: String,
    /// A version, or `latest` (resolved now and stored as the concrete version).
    #[serde(default = "latest")]
    pub version: String,
    /// Settings, checked against the plugin's config schema.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Map<String, Json>,
    /// What the workspace approves of what the plugin asks for; naming anything
    /// it does not ask for is refused. Nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Tighter memory and time limits for this connection's calls; none by
    /// default.
    #[serde(default)]
    pub limits: ConnectionLimits,
    /// Whether calls may run; `true` unless sent.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// When moving to a version that asks for more: the diff the host showed,
    /// sent back as it was to approve exactly that.
    #[serde(default)]
    pub approve_upgrade: Option<CapabilityDiff>,
}

/// A saved connection, and what moving it to its version added (if it moved).
#[derive(Debug)]
pub struct Saved {
    /// The connection as stored.
    pub connection: Connection,
    /// What the new version asks for beyond the old, when the save moved the
    /// connection to another version of its plugin; `None` otherwise.
    pub upgrade: Option<CapabilityDiff>,
}

/// A move that asks for more goes through only with exactly its diff approved.
fn check_approval(
    diff: &CapabilityDiff,
    approved: Option<&CapabilityDiff>,
) -> Result<(), TenancyError> {
    let refuse = |reason: String| {
        Err(TenancyError::UpgradeNeedsApproval {
            reason,
            diff: Box::new(diff.clone()),
        })
    };
    match approved {
        Some(approved) if approved == diff => Ok(()),
        Some(_) => refuse(format!(
            "approve_upgrade does not match what {} asks for beyond {}: approve exactly the diff shown",
            diff.to, diff.from
        )),
        None if diff.asks_for_more() => refuse(format!(
            "version {} asks for more than {}: send the diff shown as approve_upgrade to approve it",
            diff.to, diff.from
        )),
        None => Ok(()),
    }
}

fn latest() -> String {
    "latest".into()
}

fn enabled() -> bool {
    true
}

/// Why a change or look-up of workspaces, connections, tokens or installed
/// plugins was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// A workspace or connection name that is not a slug.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A workspace of this id exists already.
    #[error("workspace {0:?} already exists")]
    WorkspaceExists(String),
    /// No workspace of this id.
    #[error("workspace {0:?} not found")]
    WorkspaceNotFound(String),
    /// The workspace has no connection of this name.
    #[error("connection {0:?} not found")]
    ConnectionNotFound(String),
    /// A connection names a plugin or version that is not installed (or could
    /// not be loaded): the `id` or `id@version` asked for.
    #[error("plugin {0} is not installed")]
    UnknownPlugin(String),
    /// The config does not match the plugin's config schema: one message per
    /// failing field.
    #[error("config does not match the plugin's schema: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The grants name what the plugin's manifest does not ask for: each such
    /// grant.
    #[error("grants name what the plugin does not ask for: {}", .0.join("; "))]
    Grants(Vec<String>),
    /// A connection limit of 0, or above what the plugin gets: one message
    /// per limit.
    #[error("limits: {}", .0.join("; "))]
    Limits(Vec<String>),
    /// The move to another version needs the workspace to approve what it asks
    /// for beyond the old one, and `approve_upgrade` is missing or differs.
    #[error("{reason}")]
    UpgradeNeedsApproval {
        /// What is asked, and how to approve it.
        reason: String,
        /// The diff to approve, to be sent back as it is.
        diff: Box<CapabilityDiff>,
    },
    /// The config does not fill the plugin's destination or token-URL
    /// templates: which, and why.
    #[error("the connection cannot be bound: {0}")]
    Binding(String),
    /// The plugin version to remove (`id@version`) is not installed.
    #[error("plugin {0} is not installed")]
    PluginNotFound(String),
    /// The plugin version to remove is pinned by connections, so it stays.
    #[error("plugin {plugin} is pinned by connections: {}", .connections.join(", "))]
    PluginInUse {
        /// The version, as `id@version`.
        plugin: String,
        /// Each connection that pins it, as `workspace/connection`.
        connections: Vec<String>,
    },
    /// The workspace has no token of this id.
    #[error("token {0:?} not found")]
    TokenNotFound(String),
    /// A token label that is refused: why.
    #[error("invalid token label: {0}")]
    Label(String),
    /// No lookup of that name in the workspace.
    #[error("lookup {0:?} not found")]
    LookupNotFound(String),
    /// A lookup definition that is refused: every problem, each naming where.
    #[error("invalid lookup: {}", .0.join("; "))]
    Lookup(Vec<String>),
    /// The store failed, or the plugin version a connection pins could not be
    /// read or loaded: a host fault, not the caller's.
    #[error("storage failed: {0}")]
    Storage(String),
}

impl From<StorageError> for TenancyError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// Workspaces, their connections and tokens, and the plugin versions
/// connections pin, as the API and CLI change and read them; deleting a
/// workspace or connection removes everything it owns.
pub struct Tenancy {
    /// Workspaces, connections and tokens.
    pub store: SharedTenancy,
    /// The installed plugins, loaded; each connection runs the version it pins.
    pub catalog: Arc<Catalog>,
    /// Connections' credentials, removed with their connection.
    pub credentials: Arc<Credentials>,
    /// Connections' KV data, removed with their connection.
    pub kv: SharedKv,
    /// The audit trail; a deleted workspace's records are removed from it.
    pub audit: Arc<AuditLog>,
    /// Stamps creation and update times (milliseconds since the Unix epoch).
    pub clock: Clock,
    /// Held to read while a connection is saved and pins a version, to write
    /// while a version is removed: a save can never pin a version that a
    /// removal running at the same time has already checked and is deleting.
    pub pins: Arc<tokio::sync::RwLock<()>>,
    /// Connections' bindings, kept per revision for the invocation path.
    pub bindings: Arc<crate::invoke::Bindings>,
    /// Idempotency keys in use, so calls sharing one run one at a time.
    pub keyed: Arc<crate::invoke::KeyedCalls>,
    /// Connections' recordings and transcripts, removed with their connection.
    pub recordings: Arc<patchbay_storage::recordings::Recordings>,
}

impl Tenancy {
    /// Create workspace `id` (a slug), empty; refused if it exists. Audit
    /// records and transcripts left under the id by an unfinished deletion
    /// are removed first.
    pub async fn create_workspace(&self, id: &str) -> Result<Workspace, TenancyError> {
        check_name("workspace", id)?;
        if self.store.get_workspace(id)?.is_some() {
            return Err(TenancyError::WorkspaceExists(id.to_owned()));
        }
        // A crash part-way through deleting a workspace of this id may have
        // left audit records and transcripts: a new workspace never
        // inherits them.
        self.audit.remove_workspace(id).await?;
        let (recordings, workspace) = (self.recordings.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || recordings.remove_workspace(&workspace))
            .await
            .map_err(|e| TenancyError::Storage(e.to_string()))??;
        let workspace = Workspace {
            id: id.to_owned(),
            created_at_ms: (self.clock)(),
            settings: Default::default(),
        };
        if self.store.create_workspace(&workspace)? {
            Ok(workspace)
        } else {
            Err(TenancyError::WorkspaceExists(id.to_owned()))
        }
    }

    /// Workspace `id`, or [`TenancyError::WorkspaceNotFound`].
    pub fn workspace(&self, id: &str) -> Result<Workspace, TenancyError> {
        self.store
            .get_workspace(id)?
            .ok_or_else(|| TenancyError::WorkspaceNotFound(id.to_owned()))
    }

    /// Replace workspace `id`'s settings (checked by the caller); the
    /// workspace as it now is.
    pub fn set_workspace_settings(
        &self,
        id: &str,
        settings: patchbay_storage::tenancy::WorkspaceSettings,
    ) -> Result<Workspace, TenancyError> {
        self.store
            .set_workspace_settings(id, &settings)?
            .ok_or_else(|| TenancyError::WorkspaceNotFound(id.to_owned()))
    }

    /// Delete the workspace and everything it owns: connections, their
    /// credentials and KV data, and its audit records.
    pub async fn delete_workspace(&self, id: &str) -> Result<(), TenancyError> {
        let removed = self
            .store
            .delete_workspace(id)?
            .ok_or_else(|| TenancyError::WorkspaceNotFound(id.to_owned()))?;
        self.bindings.forget_workspace(id);
        for connection in &removed {
            self.remove_connection_data(connection).await?;
        }
        self.audit.remove_workspace(id).await?;
        Ok(())
    }

    /// Create or replace connection `name` of `workspace`: the plugin
    /// version resolved, the config checked against its schema (every
    /// failing field listed) and the grants checked against what it asks.
    pub async fn put_connection(
        &self,
        workspace: &str,
        name: &str,
        request: ConnectionRequest,
    ) -> Result<Saved, TenancyError> {
        check_name("connection", name)?;
        self.workspace(workspace)?;
        let _pinning = self.pins.read().await;
        let plugin = self.checked_plugin(&request).await?;
        let manifest = &plugin.manifest;
        let existing = self.store.get_connection(workspace, name)?;
        let upgrade = match &existing {
            Some(old) if old.plugin == manifest.id && old.version != manifest.version => {
                let diff = self.upgrade_diff(old, manifest)?;
                check_approval(&diff, request.approve_upgrade.as_ref())?;
                Some(diff)
            }
            _ => None,
        };
        let now = (self.clock)();
        // A connection moved to another plugin starts clean, like a new one:
        // the old plugin's credentials and KV data are not the new one's to
        // be sent or to read.
        let starts_clean = existing
            .as_ref()
            .is_none_or(|old| old.plugin != manifest.id);
        let moved_plugin = starts_clean && existing.is_some();
        let created_at_ms = existing.map_or(now, |c| c.created_at_ms);
        let connection = Connection {
            workspace: workspace.to_owned(),
            name: name.to_owned(),
            plugin: manifest.id.clone(),
            version: manifest.version.clone(),
            config: request.config,
            grants: request.grants,
            limits: request.limits,
            enabled: request.enabled,
            created_at_ms,
            updated_at_ms: now,
        };
        // Templates must fill from this config before anything is stored.
        Binding::for_connection(&connection, manifest).map_err(TenancyError::Binding)?;
        if starts_clean {
            // For a new connection too: a crash part-way through deleting an
            // earlier one of this name may have left its data behind.
            self.remove_connection_data(&connection).await?;
        }
        // The workspace may have been deleted since it was checked above.
        self.store
            .put_connection(&connection)
            .map_err(|e| match e {
                StorageError::NotFound(_) => TenancyError::WorkspaceNotFound(workspace.to_owned()),
                other => other.into(),
            })?;
        self.bindings.forget(workspace, name);
        if moved_plugin {
            // Calls of the old plugin that were running may have written
            // after the first removal: remove again, now that no new call
            // can bind the old plugin.
            self.remove_connection_data(&connection).await?;
        }
        Ok(Saved {
            connection,
            upgrade,
        })
    }

    /// The plugin version `request` names (`latest` resolved now), once its
    /// config, grants and limits are checked against it: every problem of the
    /// first kind that has any.
    async fn checked_plugin(
        &self,
        request: &ConnectionRequest,
    ) -> Result<Arc<patchbay_runtime::LoadedPlugin>, TenancyError> {
        let reference = if request.version == "latest" {
            request.plugin.clone()
        } else {
            format!("{}@{}", request.plugin, request.version)
        };
        let plugin = self
            .catalog
            .get(&reference)
            .await
            .map_err(|_| TenancyError::UnknownPlugin(reference.clone()))?;
        let problems = validate_config(&plugin.manifest, &request.config);
        if !problems.is_empty() {
            return Err(TenancyError::Config(problems));
        }
        let unknown = request.grants.unknown_to(&plugin.manifest);
        if !unknown.is_empty() {
            return Err(TenancyError::Grants(unknown));
        }
        let problems = request.limits.problems(&plugin.limits);
        if !problems.is_empty() {
            return Err(TenancyError::Limits(problems));
        }
        Ok(plugin)
    }

    /// What `manifest` asks for beyond the version `old` runs. A pinned
    /// version cannot be removed, so it is read from the store.
    fn upgrade_diff(
        &self,
        old: &Connection,
        manifest: &patchbay_policy::manifest::Manifest,
    ) -> Result<CapabilityDiff, TenancyError> {
        let pinned = self
            .catalog
            .inspect(&old.pinned())
            .map_err(|e| TenancyError::Storage(format!("reading the pinned version: {e}")))?;
        Ok(upgrade::diff(&pinned, manifest))
    }

    /// Connection `name` of `workspace`. A connection exists only in an
    /// existing workspace, so the workspace is read only to name what is
    /// missing: the invocation path reads one record.
    pub fn connection(&self, workspace: &str, name: &str) -> Result<Connection, TenancyError> {
        match self.store.get_connection(workspace, name)? {
            Some(connection) => Ok(connection),
            None => {
                self.workspace(workspace)?;
                Err(TenancyError::ConnectionNotFound(name.to_owned()))
            }
        }
    }

    /// The loaded plugin version `connection` pins.
    pub async fn plugin_of(
        &self,
        connection: &Connection,
    ) -> Result<Arc<patchbay_runtime::LoadedPlugin>, TenancyError> {
        self.catalog
            .get(&connection.pinned())
            .await
            .map_err(|e| TenancyError::Storage(format!("loading {}: {e}", connection.pinned())))
    }

    /// Every connection of `workspace`.
    pub fn connections(&self, workspace: &str) -> Result<Vec<Connection>, TenancyError> {
        self.workspace(workspace)?;
        Ok(self.store.list_connections(workspace)?)
    }

    /// Remove an installed plugin version (`id@version`), refused while any
    /// connection pins it.
    pub async fn remove_plugin(&self, id: &str, version: &str) -> Result<(), TenancyError> {
        let version_ = semver::Version::parse(version)
            .map_err(|_| TenancyError::PluginNotFound(format!("{id}@{version}")))?;
        let _removing = self.pins.write().await;
        let mut pinned = Vec::new();
        for workspace in self.store.list_workspaces()? {
            for connection in self.store.list_connections(&workspace.id)? {
                if connection.plugin == id && connection.version == version_ {
                    pinned.push(format!("{}/{}", connection.workspace, connection.name));
                }
            }
        }
        if !pinned.is_empty() {
            return Err(TenancyError::PluginInUse {
                plugin: format!("{id}@{version}"),
                connections: pinned,
            });
        }
        self.catalog
            .remove(&format!("{id}@{version}"))
            .map_err(|e| match e {
                patchbay_runtime::package::PackageError::NotInstalled(p) => {
                    TenancyError::PluginNotFound(p)
                }
                other => TenancyError::Storage(other.to_string()),
            })?;
        Ok(())
    }

    /// Issue a token for `workspace`: the record, and the token itself,
    /// which is never available again.
    pub fn issue_token(
        &self,
        workspace: &str,
        label: Option<String>,
        profile: patchbay_policy::lookup::Profile,
    ) -> Result<(WorkspaceToken, SecretString), TenancyError> {
        if let Some(label) = &label {
            tokens::check_label(label).map_err(TenancyError::Label)?;
        }
        let (id, secret) =
            tokens::generate().map_err(|e| TenancyError::Storage(format!("no randomness: {e}")))?;
        let token = WorkspaceToken {
            id,
            workspace: workspace.to_owned(),
            label,
            created_at_ms: (self.clock)(),
            profile,
        };
        self.store
            .put_token(&token, &tokens::digest(secret.expose_secret()))
            .map_err(|e| match e {
                StorageError::NotFound(_) => TenancyError::WorkspaceNotFound(workspace.to_owned()),
                other => other.into(),
            })?;
        Ok((token, secret))
    }

    /// The records of `workspace`'s live tokens; never the tokens themselves.
    pub fn tokens(&self, workspace: &str) -> Result<Vec<WorkspaceToken>, TenancyError> {
        self.workspace(workspace)?;
        Ok(self.store.list_tokens(workspace)?)
    }

    /// Revoke a token: from now on it opens nothing.
    pub fn revoke_token(&self, workspace: &str, id: &str) -> Result<(), TenancyError> {
        self.workspace(workspace)?;
        if self.store.delete_token(workspace, id)? {
            Ok(())
        } else {
            Err(TenancyError::TokenNotFound(id.to_owned()))
        }
    }

    /// The live workspace token `presented` is, if it is one; `digest` is
    /// its digest, which the caller has already computed.
    pub fn authenticate(
        &self,
        presented: &str,
        digest: &tokens::TokenDigest,
    ) -> Result<Option<WorkspaceToken>, TenancyError> {
        if !presented.starts_with(tokens::TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self.store.token_by_digest(digest)?)
    }

    /// Delete a connection with its credentials and KV data.
    pub async fn delete_connection(&self, workspace: &str, name: &str) -> Result<(), TenancyError> {
        let connection = self.connection(workspace, name)?;
        self.store.delete_connection(workspace, name)?;
        self.bindings.forget(workspace, name);
        self.remove_connection_data(&connection).await
    }

    async fn remove_connection_data(&self, connection: &Connection) -> Result<(), TenancyError> {
        let scope = connection.scope();
        self.credentials
            .remove_scope(&scope)
            .await
            .map_err(|e| TenancyError::Storage(e.to_string()))?;
        let (kv, recordings) = (self.kv.clone(), self.recordings.clone());
        tokio::task::spawn_blocking(move || {
            kv.remove_scope(&scope)?;
            recordings.clear(&scope, true).map(drop)
        })
        .await
        .map_err(|e| TenancyError::Storage(e.to_string()))??;
        Ok(())
    }
}

impl Tenancy {
    /// Create or replace `workspace`'s lookup `name`: its definition must be
    /// sound, and every source must name a connection of the workspace and an
    /// operation its plugin has. Whether it was created (not replaced).
    pub async fn put_lookup(
        &self,
        workspace: &str,
        name: &str,
        definition: patchbay_policy::lookup::LookupDefinition,
    ) -> Result<(patchbay_storage::tenancy::StoredLookup, bool), TenancyError> {
        check_name("lookup", name)?;
        self.workspace(workspace)?;
        let mut problems = definition.problems();
        for (i, source) in definition.sources.iter().enumerate() {
            let Ok(Some(connection)) = self.store.get_connection(workspace, &source.connection)
            else {
                problems.push(format!(
                    "sources[{i}].connection: the workspace has no connection {:?}",
                    source.connection
                ));
                continue;
            };
            let plugin = self.plugin_of(&connection).await?;
            if !plugin
                .manifest
                .operations
                .iter()
                .any(|op| op.name == source.operation)
            {
                problems.push(format!(
                    "sources[{i}].operation: {} has no operation {:?}",
                    connection.pinned(),
                    source.operation
                ));
            }
        }
        if !problems.is_empty() {
            return Err(TenancyError::Lookup(problems));
        }
        let now = (self.clock)();
        let existing = self.store.get_lookup(workspace, name)?;
        let stored = patchbay_storage::tenancy::StoredLookup {
            workspace: workspace.to_owned(),
            name: name.to_owned(),
            definition,
            created_at_ms: existing.as_ref().map_or(now, |l| l.created_at_ms),
            updated_at_ms: now,
        };
        self.store.put_lookup(&stored).map_err(|e| match e {
            StorageError::NotFound(_) => TenancyError::WorkspaceNotFound(workspace.to_owned()),
            other => other.into(),
        })?;
        Ok((stored, existing.is_none()))
    }

    /// `workspace`'s lookup `name`.
    pub fn lookup(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<patchbay_storage::tenancy::StoredLookup, TenancyError> {
        self.workspace(workspace)?;
        self.store
            .get_lookup(workspace, name)?
            .ok_or_else(|| TenancyError::LookupNotFound(name.to_owned()))
    }

    /// `workspace`'s lookups, by name.
    pub fn lookups(
        &self,
        workspace: &str,
    ) -> Result<Vec<patchbay_storage::tenancy::StoredLookup>, TenancyError> {
        self.workspace(workspace)?;
        Ok(self.store.list_lookups(workspace)?)
    }

    /// Delete `workspace`'s lookup `name`.
    pub fn delete_lookup(&self, workspace: &str, name: &str) -> Result<(), TenancyError> {
        self.workspace(workspace)?;
        if self.store.delete_lookup(workspace, name)? {
            Ok(())
        } else {
            Err(TenancyError::LookupNotFound(name.to_owned()))
        }
    }
}
