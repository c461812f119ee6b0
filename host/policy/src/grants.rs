//! What a workspace approved for one connection: deny by default.
//!
//! A plugin gets a capability only if its manifest asks for it, the
//! workspace granted it here, and operator policy allows it. Grants name what
//! the manifest asks for, exactly as written (a destination entry, a
//! credential name), so an approval cannot reach past the request, and an
//! upgrade that asks for more is not covered by the old approval.

use crate::http::Destination;
use crate::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a workspace approved for one connection, stored with it. Each
/// `allows_*` holds only for what is named here, or for everything the
/// manifest asks when `approve_all_requested` is set; the manifest and
/// operator policy are checked beside it, not here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Approve everything this plugin version asks for.
    #[serde(default)]
    pub approve_all_requested: bool,
    /// Destination entries approved, as written in the manifest.
    #[serde(default)]
    pub http: BTreeSet<String>,
    /// Whether the key-value store is approved (with the manifest's quota).
    #[serde(default)]
    pub kv: bool,
    /// Credential names approved.
    #[serde(default)]
    pub credentials: BTreeSet<String>,
}

impl Grants {
    /// Everything requested: for local runs (`patchbay invoke`) and tests.
    pub fn all_requested() -> Self {
        Self {
            approve_all_requested: true,
            ..Self::default()
        }
    }

    /// Whether requests may go out under `destination`, a manifest entry
    /// (approved by its text, as the manifest writes it).
    pub fn allows_destination(&self, destination: &Destination) -> bool {
        self.approve_all_requested || self.http.contains(&destination.to_string())
    }

    /// Whether the connection may use the key-value store.
    pub fn allows_kv(&self) -> bool {
        self.approve_all_requested || self.kv
    }

    /// Whether the host may add the credential the manifest names `name` to
    /// this connection's requests.
    pub fn allows_credential(&self, name: &str) -> bool {
        self.approve_all_requested || self.credentials.contains(name)
    }

    /// Grants naming something `manifest` does not ask for: each is a mistake
    /// the tenant should hear about, not a silent no-op.
    pub fn unknown_to(&self, manifest: &Manifest) -> Vec<String> {
        let caps = &manifest.capabilities;
        let declared: BTreeSet<String> = caps.http.iter().map(ToString::to_string).collect();
        let mut out: Vec<String> = self
            .http
            .iter()
            .filter(|d| !declared.contains(*d))
            .map(|d| format!("http destination {d:?} is not requested by the plugin"))
            .collect();
        if self.kv && caps.kv.is_none() {
            out.push("kv is not requested by the plugin".into());
        }
        out.extend(
            self.credentials
                .iter()
                .filter(|n| !caps.credentials.iter().any(|c| &c.name == *n))
                .map(|n| format!("credential {n:?} is not requested by the plugin")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        crate::test_support::sample_manifest()
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let grants = Grants::default();
        let m = manifest();
        assert!(
            !m.capabilities
                .http
                .iter()
                .any(|d| grants.allows_destination(d))
        );
        assert!(!grants.allows_kv());
        assert!(!grants.allows_credential("token"));
    }

    #[test]
    fn grants_name_requested_entries_exactly() {
        let m = manifest();
        let grants = Grants {
            http: ["GET https://api.example.com/v1".to_owned()].into(),
            credentials: ["token".to_owned()].into(),
            ..Grants::default()
        };
        assert!(grants.allows_destination(&m.capabilities.http[0]));
        assert!(!grants.allows_destination(&m.capabilities.http[1]));
        assert!(grants.allows_credential("token"));
        assert!(!grants.allows_kv());
        assert!(grants.unknown_to(&m).is_empty());
    }

    #[test]
    fn approving_all_covers_what_is_requested() {
        let m = manifest();
        let grants = Grants::all_requested();
        assert!(
            m.capabilities
                .http
                .iter()
                .all(|d| grants.allows_destination(d))
        );
        assert!(grants.allows_kv() && grants.allows_credential("token"));
    }

    #[test]
    fn grants_for_things_not_requested_are_named() {
        let grants = Grants {
            http: ["https://evil.example".to_owned()].into(),
            kv: true,
            credentials: ["admin".to_owned()].into(),
            ..Grants::default()
        };
        let mut m = manifest();
        m.capabilities.kv = None;
        let unknown = grants.unknown_to(&m);
        assert_eq!(unknown.len(), 3, "{unknown:?}");
        assert!(unknown[0].contains("evil.example"));
        assert!(unknown[2].contains("admin"));
    }
}
