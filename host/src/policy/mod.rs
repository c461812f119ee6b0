//! Pure grant types: each answers `allows(...)` and knows nothing of wasmtime.

pub mod grants;
pub mod http;
pub mod limits;
pub mod rate;
pub mod ssrf;

use serde::{Deserialize, Serialize};

/// Everything the operator decides for all tenants and plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorPolicy {
    pub limits: limits::OperatorLimits,
    /// Non-public address ranges plugins may still reach (on-premise systems).
    pub addresses: ssrf::AddressPolicy,
    /// How long the audit trail of outbound requests is kept.
    pub audit: crate::audit::Retention,
    /// When not empty, plugins may only reach destinations matching one of
    /// these entries (same grammar as a manifest's, without templates), on
    /// top of what each manifest declares and each workspace approves.
    pub destinations: Vec<String>,
}

impl OperatorPolicy {
    /// The operator's destination entries as rules; an error names the entry.
    pub fn destination_rules(&self) -> Result<Option<Vec<http::Rule>>, String> {
        if self.destinations.is_empty() {
            return Ok(None);
        }
        self.destinations
            .iter()
            .map(|entry| {
                http::Destination::parse(entry)
                    .and_then(|d| d.fill(&Default::default()))
                    .map_err(|e| format!("operator destination {entry:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
