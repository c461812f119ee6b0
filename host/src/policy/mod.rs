//! Pure grant types: each answers `allows(...)` and knows nothing of wasmtime.

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
}
