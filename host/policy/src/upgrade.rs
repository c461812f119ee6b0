//! Moving a connection to another plugin version: what the new version asks
//! for beyond the one the workspace approved. A move that asks for more is
//! refused until the request approves exactly this diff, so nothing a tenant
//! has not seen slips in with an upgrade (even under `approve_all_requested`).

use crate::manifest::{CredentialRequest, KvQuota, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What `to` asks for that `from` did not. Empty lists and unchanged limits
/// are left out, so the JSON shows only the new asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CapabilityDiff {
    /// The version the connection runs now.
    pub from: String,
    /// The version it would move to.
    pub to: String,
    /// Destinations (as the manifest writes them) `from` did not declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_destinations: Vec<String>,
    /// Credentials that are new, of another kind, or sent to new destinations:
    /// `name (kind)`, or `name (kind) also to DESTINATION`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_credentials: Vec<String>,
    /// `{"from", "to"}` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub memory_mb: Option<Growth<u32>>,
    /// `{"from", "to"}` in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub timeout_ms: Option<Growth<u32>>,
    /// KV newly asked for (`from` is null), or a larger quota: `{"from", "to"}`
    /// with `max_keys`, `max_total_bytes`, `max_value_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub kv: Option<Growth<Option<KvQuota>>>,
}

/// A limit that grows from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Growth<T> {
    /// The value approved with the current version.
    pub from: T,
    /// The value the new version asks for.
    pub to: T,
}

impl CapabilityDiff {
    /// Whether `to` asks for anything `from` did not: a new destination or
    /// credential, more memory or time, or KV or a larger quota.
    pub fn asks_for_more(&self) -> bool {
        !self.new_destinations.is_empty()
            || !self.new_credentials.is_empty()
            || self.memory_mb.is_some()
            || self.timeout_ms.is_some()
            || self.kv.is_some()
    }
}

/// What `to` asks for beyond `from`.
pub fn diff(from: &Manifest, to: &Manifest) -> CapabilityDiff {
    let grew = |a: u32, b: u32| (b > a).then_some(Growth { from: a, to: b });
    CapabilityDiff {
        from: from.version.to_string(),
        to: to.version.to_string(),
        new_destinations: new_destinations(from, to),
        new_credentials: new_credentials(from, to),
        memory_mb: grew(from.limits.memory_mb, to.limits.memory_mb),
        timeout_ms: grew(from.limits.timeout_ms, to.limits.timeout_ms),
        kv: kv_growth(from, to),
    }
}

/// Destination rules `to` declares that `from` did not, as written.
fn new_destinations(from: &Manifest, to: &Manifest) -> Vec<String> {
    let texts = |m: &Manifest| -> BTreeSet<String> {
        m.capabilities
            .http
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let old = texts(from);
    texts(to).into_iter().filter(|d| !old.contains(d)).collect()
}

/// Credentials `to` declares that `from` did not (by name and kind), and
/// places an existing one may now be sent to: a new destination or token URL.
fn new_credentials(from: &Manifest, to: &Manifest) -> Vec<String> {
    let token_url = |c: &CredentialRequest| c.token_url.as_ref().map(ToString::to_string);
    let mut out = Vec::new();
    for credential in &to.capabilities.credentials {
        let label = format!("{} ({})", credential.name, credential.kind.as_str());
        let old = from
            .capabilities
            .credentials
            .iter()
            .find(|c| c.name == credential.name && c.kind == credential.kind);
        let Some(old) = old else {
            out.push(label);
            continue;
        };
        let known: BTreeSet<String> = old.destinations.iter().map(ToString::to_string).collect();
        let moved_token_url = token_url(credential).filter(|u| Some(u) != token_url(old).as_ref());
        for destination in credential
            .destinations
            .iter()
            .map(ToString::to_string)
            .chain(moved_token_url)
            .filter(|d| !known.contains(d))
        {
            out.push(format!("{label} also to {destination}"));
        }
    }
    out
}

/// KV newly asked for, or any of its quotas raised.
fn kv_growth(from: &Manifest, to: &Manifest) -> Option<Growth<Option<KvQuota>>> {
    match (from.capabilities.kv, to.capabilities.kv) {
        (_, None) => None,
        (None, Some(new)) => Some(Growth {
            from: None,
            to: Some(new),
        }),
        (Some(old), Some(new)) => (new.max_keys > old.max_keys
            || new.max_total_bytes > old.max_total_bytes
            || new.max_value_bytes > old.max_value_bytes)
            .then_some(Growth {
                from: Some(old),
                to: Some(new),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str, extra: &str) -> Manifest {
        crate::test_support::test_manifest(version, extra)
    }

    const V1: &str = r#"
[capabilities.http]
destinations = ["GET https://api.example.com/v1"]
[capabilities.kv]
max_keys = 100
max_total_bytes = 1000
max_value_bytes = 100
[[capabilities.credentials]]
name = "token"
kind = "bearer"
destinations = ["https://api.example.com/v1"]
[limits]
memory_mb = 16
timeout_ms = 1000
"#;

    #[test]
    fn the_same_asks_make_an_empty_diff() {
        let d = diff(&manifest("1.0.0", V1), &manifest("1.1.0", V1));
        assert!(!d.asks_for_more(), "{d:?}");
        assert_eq!((d.from.as_str(), d.to.as_str()), ("1.0.0", "1.1.0"));
    }

    #[test]
    fn asking_for_less_is_not_asking_for_more() {
        let less = V1
            .replace("memory_mb = 16", "memory_mb = 8")
            .replace("max_keys = 100", "max_keys = 10");
        assert!(!diff(&manifest("1.0.0", V1), &manifest("0.9.0", &less)).asks_for_more());
        let nothing = "[limits]\nmemory_mb = 16\ntimeout_ms = 1000\n";
        assert!(!diff(&manifest("1.0.0", V1), &manifest("2.0.0", nothing)).asks_for_more());
    }

    #[test]
    fn every_kind_of_new_ask_is_in_the_diff() {
        let more = V1
            .replace(
                r#"destinations = ["GET https://api.example.com/v1"]"#,
                r#"destinations = ["GET https://api.example.com/v1", "POST https://api.example.com/v2"]"#,
            )
            .replace(
                r#"destinations = ["https://api.example.com/v1"]"#,
                r#"destinations = ["https://api.example.com/v1", "https://api.example.com/v2"]"#,
            )
            .replace("memory_mb = 16", "memory_mb = 64")
            .replace("timeout_ms = 1000", "timeout_ms = 2000")
            .replace("max_value_bytes = 100", "max_value_bytes = 200")
            + r#"
[[capabilities.credentials]]
name = "login"
kind = "basic"
destinations = ["https://api.example.com/v2"]
"#;
        let d = diff(&manifest("1.0.0", V1), &manifest("2.0.0", &more));
        assert_eq!(d.new_destinations, ["POST https://api.example.com/v2"]);
        assert_eq!(
            d.new_credentials,
            [
                "token (bearer) also to https://api.example.com/v2",
                "login (basic)"
            ]
        );
        assert_eq!(d.memory_mb, Some(Growth { from: 16, to: 64 }));
        assert_eq!(
            d.timeout_ms,
            Some(Growth {
                from: 1000,
                to: 2000
            })
        );
        assert_eq!(
            d.kv.and_then(|g| g.to).map(|q| q.max_value_bytes),
            Some(200)
        );
        assert!(d.asks_for_more());
    }

    #[test]
    fn a_credential_of_another_kind_or_new_kv_is_new() {
        let other_kind = V1.replace("kind = \"bearer\"", "kind = \"basic\"");
        let d = diff(&manifest("1.0.0", V1), &manifest("2.0.0", &other_kind));
        assert_eq!(d.new_credentials, ["token (basic)"]);
        let d = diff(&manifest("1.0.0", ""), &manifest("2.0.0", V1));
        assert_eq!(d.kv.map(|g| g.from), Some(None));
    }

    #[test]
    fn the_diff_round_trips_as_json_for_approval() {
        let d = diff(&manifest("1.0.0", ""), &manifest("2.0.0", V1));
        let text = serde_json::to_string(&d).expect("json");
        let back: CapabilityDiff = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, d);
    }
}
