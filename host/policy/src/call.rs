//! The identity of one invocation, carried wherever the call shows up: its
//! log lines, audit records, outbound requests (as the trace id) and errors.

use std::fmt;

/// Who one invocation runs for and what it runs. Built once when the call
/// starts and shared (behind an `Arc`) by everything that tags its work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId {
    /// The workspace the connection belongs to.
    pub workspace: String,
    /// The connection's name within the workspace.
    pub connection: String,
    /// The plugin's id, as its manifest names it.
    pub plugin: String,
    /// The plugin version the connection pins.
    pub version: String,
    /// The operation invoked.
    pub operation: String,
    /// 32 hex digits, unique per invocation; also the W3C trace id of every
    /// request the call sends.
    pub invocation_id: String,
}

impl CallId {
    /// `id@version`, as audit records and the catalog name a plugin version.
    pub fn plugin_version(&self) -> String {
        format!("{}@{}", self.plugin, self.version)
    }
}

impl fmt::Display for CallId {
    /// `workspace/connection plugin@version invocation-id`: the `invocation`
    /// field of the host's own log lines about the call.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}@{} {}",
            self.workspace, self.connection, self.plugin, self.version, self.invocation_id
        )
    }
}
