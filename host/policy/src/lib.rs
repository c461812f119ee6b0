//! Patchbay's pure policy, the bottom layer of the host: what is allowed and
//! what things are, decided without I/O. Destination rules and request
//! targets, SSRF address classes, grants, operator limits (with breaker and
//! retention settings), rate limits, the plugin manifest and its validation,
//! JSON-Schema cost bounds, and the capability diff of an upgrade.
//!
//! Nothing here opens a file or a socket, or names wasm or an HTTP server:
//! `cargo tree` of this crate holds no tokio, sled, reqwest, wasmtime or axum
//! (`tests/all/layers.rs` checks it).

#![warn(missing_docs)]

pub mod call;
pub mod clock;
pub mod delivery;
pub mod events;
pub mod grants;
pub mod http;
pub mod limits;
pub mod lookup;
pub mod manifest;
pub mod rate;
pub mod recording;
pub mod schema;
pub mod signing;
pub mod ssrf;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod text;
pub mod upgrade;
pub mod webhook;

use serde::{Deserialize, Serialize};

/// Everything the operator decides for all tenants and plugins: the one
/// home of operator policy. `serve --policy FILE` reads it as TOML (every
/// key optional, unknown keys refused); `patchbay policy defaults` prints it
/// whole; the README's "Operator policy" section documents every key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorPolicy {
    /// Ceilings on every plugin and connection: memory, time, sizes, rates,
    /// breakers, KV quotas and concurrency.
    pub limits: limits::OperatorLimits,
    /// Non-public address ranges plugins may still reach (on-premise systems).
    pub addresses: ssrf::AddressPolicy,
    /// How long the audit trail of outbound requests is kept.
    pub audit: crate::limits::Retention,
    /// The event flow: the idempotency window, deliveries per destination.
    pub events: crate::delivery::EventPolicy,
    /// Webhooks in: on or off, body size, the dedupe window, events per webhook.
    pub webhooks: crate::delivery::WebhookPolicy,
    /// Which plugin packages are installed: signed by a trusted publisher,
    /// or also unsigned ones.
    pub packages: signing::PackagePolicy,
    /// When not empty, plugins may only reach destinations matching one of
    /// these entries (same grammar as a manifest's, without templates), on
    /// top of what each manifest declares and each workspace approves.
    pub destinations: Vec<String>,
}

/// A policy file that cannot be used; the message names the key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML, an unknown key, or a value of the wrong type: the parser's
    /// message, with the line and key.
    #[error("{0}")]
    Syntax(String),
    /// Values that parse but the host cannot run with: one message per key.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl OperatorPolicy {
    /// Read a policy written as TOML: missing keys keep their defaults,
    /// unknown keys and bad values are refused, each named.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text)
            .map_err(|e| PolicyError::Syntax(e.to_string().trim_end().to_owned()))?;
        policy.check()?;
        Ok(policy)
    }

    /// The whole policy as TOML, every key present.
    pub fn to_toml(&self) -> String {
        // Every field is a plain number, string, list or table: serialising cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot describe the policy: {e}\n"))
    }

    /// Refuse values the host cannot run with, naming each key.
    pub fn check(&self) -> Result<(), PolicyError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid(problems))
        }
    }

    /// Every value the host cannot run with, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let l = &self.limits;
        let breaker = &l.circuit_breaker;
        let audit = &self.audit;
        // Zero here would mean "refuse every call", "refuse every use" (a zero
        // KV ceiling leaves KV unusable) or "spin": never what an operator means.
        let at_least_one: [(&str, u64); 25] = [
            ("limits.max_memory_mb", l.max_memory_mb.into()),
            ("limits.max_timeout_ms", l.max_timeout_ms.into()),
            ("limits.max_input_bytes", l.max_input_bytes as u64),
            ("limits.max_output_bytes", l.max_output_bytes as u64),
            ("limits.max_log_bytes", l.max_log_bytes as u64),
            (
                "limits.max_request_body_bytes",
                l.max_request_body_bytes as u64,
            ),
            (
                "limits.max_response_body_bytes",
                l.max_response_body_bytes as u64,
            ),
            (
                "limits.max_outbound_requests",
                l.max_outbound_requests as u64,
            ),
            (
                "limits.default_rate_limit.requests",
                l.default_rate_limit.requests.into(),
            ),
            (
                "limits.default_rate_limit.per_seconds",
                l.default_rate_limit.per_seconds.into(),
            ),
            ("limits.circuit_breaker.failures", breaker.failures.into()),
            ("limits.circuit_breaker.window_ms", breaker.window_ms),
            ("limits.circuit_breaker.cool_down_ms", breaker.cool_down_ms),
            (
                "limits.max_concurrent_requests_per_connection",
                l.max_concurrent_requests_per_connection as u64,
            ),
            ("limits.connect_timeout_ms", l.connect_timeout_ms.into()),
            ("limits.max_kv_keys", l.max_kv_keys),
            ("limits.max_kv_total_bytes", l.max_kv_total_bytes),
            ("limits.max_kv_value_bytes", l.max_kv_value_bytes),
            ("limits.kv_purge_every_secs", l.kv_purge_every_secs.into()),
            ("audit.max_age_days", audit.max_age_days.into()),
            (
                "audit.max_records_per_workspace",
                audit.max_records_per_workspace as u64,
            ),
            ("audit.purge_every_secs", audit.purge_every_secs.into()),
            ("limits.max_instances", l.max_instances.into()),
            (
                "limits.max_concurrent_calls_per_connection",
                l.max_concurrent_calls_per_connection as u64,
            ),
            (
                "limits.max_concurrent_calls_per_workspace",
                l.max_concurrent_calls_per_workspace as u64,
            ),
        ];
        let mut out: Vec<String> = at_least_one
            .iter()
            .filter(|(_, value)| *value == 0)
            .map(|(key, _)| format!("{key} must be at least 1"))
            .collect();
        // Sizes of pools and semaphores: past these a value is a typo, and
        // would overflow the structures built from it.
        let at_most: [(&str, u64, u64); 4] = [
            ("limits.max_instances", l.max_instances.into(), 100_000),
            (
                "limits.max_concurrent_calls_per_connection",
                l.max_concurrent_calls_per_connection as u64,
                1_000_000,
            ),
            (
                "limits.max_concurrent_calls_per_workspace",
                l.max_concurrent_calls_per_workspace as u64,
                1_000_000,
            ),
            (
                "limits.max_concurrent_requests_per_connection",
                l.max_concurrent_requests_per_connection as u64,
                1_000_000,
            ),
        ];
        out.extend(
            at_most
                .iter()
                .filter(|(_, value, max)| value > max)
                .map(|(key, _, max)| format!("{key} must be at most {max}")),
        );
        out.extend(self.events.problems());
        out.extend(self.webhooks.problems());
        out.extend(self.packages.problems());
        if let Err(e) = self.destination_rules() {
            out.push(e);
        }
        out
    }

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
                    .map_err(|e| format!("destinations entry {entry:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `value`, dotted from the top (`limits.max_memory_mb`).
    fn leaf_keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaf_keys(&path, value, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    fn default_keys() -> Vec<String> {
        let value: toml::Value =
            toml::from_str(&OperatorPolicy::default().to_toml()).expect("defaults are TOML");
        let mut keys = Vec::new();
        leaf_keys("", &value, &mut keys);
        keys
    }

    #[test]
    fn the_printed_defaults_read_back_as_the_defaults() {
        let text = OperatorPolicy::default().to_toml();
        assert_eq!(
            OperatorPolicy::from_toml(&text),
            Ok(OperatorPolicy::default()),
            "{text}"
        );
        assert_eq!(OperatorPolicy::from_toml(""), Ok(OperatorPolicy::default()));
        // Every knob is printed, so an operator sees each one with its default.
        let keys = default_keys();
        for key in [
            "limits.default_rate_limit.requests",
            "limits.max_memory_mb",
            "addresses.allowed_cidrs",
            "audit.max_age_days",
            "destinations",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn the_readme_documents_every_policy_key() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Operator policy")
            .nth(1)
            .expect("README has an \"Operator policy\" section");
        let undocumented: Vec<String> = default_keys()
            .into_iter()
            .filter(|key| !section.contains(&format!("`{key}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "README's Operator policy section does not document: {undocumented:?}"
        );
    }

    #[test]
    fn a_file_sets_only_what_it_names() {
        let policy = OperatorPolicy::from_toml(
            r#"
destinations = ["https://*.hubapi.com"]
[limits]
default_rate_limit = { requests = 50, per_seconds = 10 }
[addresses]
allowed_cidrs = ["10.20.0.0/16"]
[audit]
max_age_days = 7
"#,
        )
        .expect("valid");
        let defaults = OperatorPolicy::default();
        assert_eq!(policy.limits.default_rate_limit.requests, 50);
        assert_eq!(policy.limits.default_rate_limit.per_seconds, 10);
        assert_eq!(policy.limits.max_memory_mb, defaults.limits.max_memory_mb);
        assert_eq!(policy.audit.max_age_days, 7);
        assert_eq!(
            policy.audit.max_records_per_workspace,
            defaults.audit.max_records_per_workspace
        );
        assert_eq!(policy.addresses.allowed_cidrs.len(), 1);
        assert_eq!(policy.destinations, ["https://*.hubapi.com"]);
    }

    #[test]
    fn a_bad_file_is_refused_naming_what_is_wrong() {
        let cases = [
            ("pace = 5", "pace"),
            ("[limits]\nmax_memroy_mb = 64", "max_memroy_mb"),
            ("[limits.default_rate_limit]\nrequests = 5", "per_seconds"),
            ("[limits]\nmax_memory_mb = \"lots\"", "max_memory_mb"),
            ("[limits]\nmax_memory_mb = -1", "max_memory_mb"),
            ("[limits]\nmax_timeout_ms = 0", "limits.max_timeout_ms"),
            (
                "[limits]\ndefault_rate_limit = { requests = 0, per_seconds = 1 }",
                "limits.default_rate_limit.requests",
            ),
            ("[audit]\nmax_age_days = 0", "audit.max_age_days"),
            (
                "[[packages.trusted_publishers]]\nname = \"Acme\"\nkey = \"ed25519:AAAA\"",
                "not an ed25519 public key",
            ),
            (
                "[[packages.trusted_publishers]]\nname = \"\"\nkey = \"ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\"",
                "packages.trusted_publishers[0].name",
            ),
            ("[packages]\nallow_unsigned = \"yes\"", "allow_unsigned"),
            (
                "[addresses]\nallowed_cidrs = [\"10.0.0.0/33\"]",
                "allowed_cidrs",
            ),
            (
                "destinations = [\"ftp://x.example.com\"]",
                "ftp://x.example.com",
            ),
            ("[limits\nmax_memory_mb = 1", "line 1"),
        ];
        for (text, named) in cases {
            let error = OperatorPolicy::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(named), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_event_flows_settings_are_read_and_checked() {
        let policy = OperatorPolicy::from_toml(
            "[events]\nidempotency_window_hours = 48\ndeliveries_per_destination = 4\n",
        )
        .expect("policy");
        assert_eq!(policy.events.idempotency_window_hours, 48);
        assert_eq!(policy.events.deliveries_per_destination, 4);
        for (text, named) in [
            (
                "[events]\nidempotency_window_hours = 0",
                "events.idempotency_window_hours",
            ),
            (
                "[events]\nidempotency_window_hours = 721",
                "events.idempotency_window_hours",
            ),
            (
                "[events]\ndeliveries_per_destination = 0",
                "events.deliveries_per_destination",
            ),
            ("[events]\ndeliveries = 4", "deliveries"),
        ] {
            let error = OperatorPolicy::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(named), "{text:?}: {error}");
        }
        assert!(OperatorPolicy::default().to_toml().contains("[events]"));
    }

    #[test]
    fn the_webhook_settings_are_read_and_checked() {
        let policy = OperatorPolicy::from_toml(
            "[webhooks]\nenabled = false\nmax_body_kb = 64\ndedupe_window_hours = 2\nmax_events_per_webhook = 5\n",
        )
        .expect("policy");
        assert!(!policy.webhooks.enabled);
        assert_eq!(policy.webhooks.max_body_bytes(), 64 * 1024);
        assert_eq!(policy.webhooks.dedupe_window_hours, 2);
        assert_eq!(policy.webhooks.max_events_per_webhook, 5);
        for (text, named) in [
            ("[webhooks]\nmax_body_kb = 0", "webhooks.max_body_kb"),
            ("[webhooks]\nmax_body_kb = 16385", "webhooks.max_body_kb"),
            (
                "[webhooks]\ndedupe_window_hours = 0",
                "webhooks.dedupe_window_hours",
            ),
            (
                "[webhooks]\nmax_events_per_webhook = 501",
                "webhooks.max_events_per_webhook",
            ),
            ("[webhooks]\nsecret = \"x\"", "secret"),
        ] {
            let error = OperatorPolicy::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(named), "{text:?}: {error}");
        }
        assert!(OperatorPolicy::default().to_toml().contains("[webhooks]"));
    }

    #[test]
    fn every_value_the_host_cannot_run_with_is_listed_at_once() {
        let mut policy = OperatorPolicy::default();
        policy.limits.max_memory_mb = 0;
        policy.audit.purge_every_secs = 0;
        let problems = policy.problems();
        assert_eq!(
            problems,
            [
                "limits.max_memory_mb must be at least 1",
                "audit.purge_every_secs must be at least 1"
            ]
        );
        // A zero breaker pause would reopen at once; zero KV ceilings leave KV unusable.
        let mut zeros = OperatorPolicy::default();
        zeros.limits.circuit_breaker.cool_down_ms = 0;
        zeros.limits.max_log_bytes = 0;
        zeros.limits.max_outbound_requests = 0;
        zeros.limits.max_kv_keys = 0;
        zeros.limits.max_kv_total_bytes = 0;
        zeros.limits.max_kv_value_bytes = 0;
        let mut problems = zeros.problems();
        problems.sort();
        assert_eq!(
            problems,
            [
                "limits.circuit_breaker.cool_down_ms must be at least 1",
                "limits.max_kv_keys must be at least 1",
                "limits.max_kv_total_bytes must be at least 1",
                "limits.max_kv_value_bytes must be at least 1",
                "limits.max_log_bytes must be at least 1",
                "limits.max_outbound_requests must be at least 1",
            ]
        );
        assert!(OperatorPolicy::default().problems().is_empty());
        let mut huge = OperatorPolicy::default();
        huge.limits.max_instances = u32::MAX;
        huge.limits.max_concurrent_calls_per_workspace = usize::MAX;
        assert_eq!(
            huge.problems(),
            [
                "limits.max_instances must be at most 100000",
                "limits.max_concurrent_calls_per_workspace must be at most 1000000"
            ]
        );
    }
}
