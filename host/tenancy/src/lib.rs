//! Tenancy: workspaces, and the connections that enable a plugin in one.
//!
//! A connection is one plugin version enabled in one workspace under a name
//! unique there, with its typed config, the capabilities the workspace
//! approved (`Grants`) and whether it is enabled. Its credentials live in
//! `credentials`, its KV and audit records under the same scope, so deleting
//! a workspace can remove everything it owns.

#![warn(missing_docs)]

pub mod catalog;
pub mod invoke;
pub mod recording;
pub mod service;
pub mod status;
pub mod store;

use patchbay_policy::manifest::{Manifest, is_slug};
use serde_json::Value as Json;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} must be 1-64 lowercase letters, digits or inner dashes")]
pub struct NameError {
    /// What the name is for (`workspace`, `connection`), for the message.
    pub what: &'static str,
    /// The name as given.
    pub value: String,
}

/// Workspace ids and connection names are slugs: they are path segments and
/// storage-key parts, so nothing else (no `..`, `/`, `%`) can ever reach either.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    if is_slug(value) {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.to_owned(),
        })
    }
}

/// Check `config` against the plugin's config schema: every failing field,
/// each naming where it is. No schema means no settings are accepted.
pub fn validate_config(manifest: &Manifest, config: &serde_json::Map<String, Json>) -> Vec<String> {
    let Some(schema) = &manifest.capabilities.config_schema else {
        // As many problems as a schema check reports at most.
        return config
            .keys()
            .take(20)
            .map(|k| format!("at /{k}: the plugin takes no settings"))
            .collect();
    };
    let validator = match patchbay_policy::schema::schema_validator(schema) {
        Ok(validator) => validator,
        // Checked at install; a failure here is a host bug, reported, not hidden.
        Err(e) => return vec![format!("the plugin's config schema is unusable: {e}")],
    };
    patchbay_policy::schema::schema_errors(&validator, &Json::Object(config.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::grants::Grants;
    use patchbay_policy::limits::ConnectionLimits;
    use patchbay_storage::tenancy::Connection;
    use serde_json::json;

    fn manifest() -> Manifest {
        patchbay_policy::test_support::test_manifest(
            "1.2.0",
            r#"
[capabilities.http]
destinations = ["https://{{instance}}.example.com/api"]
[capabilities.config.schema]
type = "object"
required = ["instance"]
additionalProperties = false
[capabilities.config.schema.properties.instance]
type = "string"
pattern = "^[a-z0-9-]+$"
[capabilities.config.schema.properties.page_size]
type = "integer"
minimum = 1
maximum = 100
"#,
        )
    }

    fn config(value: Json) -> serde_json::Map<String, Json> {
        value.as_object().expect("object").clone()
    }

    #[test]
    fn names_are_slugs_so_they_are_safe_in_paths_and_keys() {
        for good in ["acme", "acme-2", "a"] {
            assert!(check_name("workspace", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "a%2Fb",
            "Acme",
            "-a",
            "a-",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_name("workspace", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_errors_list_every_failing_field() {
        let m = manifest();
        assert!(
            validate_config(&m, &config(json!({ "instance": "acme", "page_size": 50 }))).is_empty()
        );
        let errors = validate_config(
            &m,
            &config(json!({ "instance": "Not A Label", "page_size": 500, "extra": true })),
        );
        let text = errors.join("\n");
        assert_eq!(errors.len(), 3, "{text}");
        assert!(
            text.contains("/instance") && text.contains("/page_size"),
            "{text}"
        );
        assert!(text.contains("extra"), "{text}");
        let missing = validate_config(&m, &config(json!({})));
        assert!(missing.join("").contains("instance"), "{missing:?}");
    }

    #[test]
    fn a_connection_binds_with_its_typed_config_and_grants() {
        let m = manifest();
        let connection = Connection {
            workspace: "ws-1".into(),
            name: "crm".into(),
            plugin: "crm".into(),
            version: m.version.clone(),
            config: config(json!({ "instance": "acme", "page_size": 50 })),
            grants: Grants::all_requested(),
            limits: ConnectionLimits::default(),
            enabled: true,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let binding = patchbay_runtime::Binding::for_connection(&connection, &m).expect("binding");
        let strings = patchbay_runtime::config_strings(&connection.config);
        assert_eq!(
            strings["page_size"], "50",
            "non-strings are read as JSON text"
        );
        assert_eq!(strings["instance"], "acme");
        assert!(
            binding.http_rules[0].allows(
                &patchbay_policy::http::Target::parse("GET", "https://acme.example.com/api/x")
                    .expect("url")
            )
        );
        let denied = Connection {
            grants: Grants::default(),
            ..connection
        };
        assert!(
            patchbay_runtime::Binding::for_connection(&denied, &m)
                .expect("binding")
                .http_rules
                .is_empty()
        );
    }

    #[test]
    fn settings_for_a_plugin_that_takes_none_are_refused_in_a_bounded_list() {
        let bare = patchbay_policy::test_support::test_manifest("1.0.0", "");
        let config: serde_json::Map<String, Json> =
            (0..500).map(|i| (format!("k{i}"), json!(i))).collect();
        let problems = validate_config(&bare, &config);
        assert_eq!(problems.len(), 20, "{problems:?}");
        assert!(problems[0].contains("takes no settings"), "{problems:?}");
    }
}
