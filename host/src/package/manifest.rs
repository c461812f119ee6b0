//! `plugin.toml`: what a plugin is, what it does and what it asks for.
//!
//! Parsed and validated once, when a plugin is installed or loaded; every error
//! names the field at fault so a vendor can fix it without guessing.

use crate::policy::http::{Destination, DestinationError};
use crate::policy::rate::RateLimit;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// The contract versions this host can run.
pub const SUPPORTED_CONTRACT: &str = "^0.1";

/// A manifest that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("plugin.toml is not valid TOML or has a wrong field: {0}")]
    Syntax(String),
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A validated manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub id: String,
    pub version: semver::Version,
    pub contract: semver::Version,
    pub name: String,
    pub description: String,
    pub vendor: String,
    pub operations: Vec<Operation>,
    pub capabilities: Capabilities,
    pub limits: RequestedLimits,
}

/// What kind of work an operation does; callers use it to decide retries and caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// Reads upstream state (e.g. find a contact); safe to retry.
    Lookup,
    /// Changes upstream state (e.g. create a ticket).
    Action,
    /// Reshapes data without leaving the sandbox.
    Transform,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    pub name: String,
    pub kind: OperationKind,
    pub idempotent: bool,
    pub input_schema: Json,
    pub output_schema: Json,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Capabilities {
    /// Outbound HTTP destinations, as written (templates unfilled).
    pub http: Vec<Destination>,
    /// The upstream API's request rate, as the vendor declares it.
    pub http_rate_limit: Option<RateLimit>,
    pub kv: Option<KvQuota>,
    /// JSON Schema of the connection's non-secret settings.
    pub config_schema: Option<Json>,
    pub credentials: Vec<CredentialRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvQuota {
    pub max_keys: u64,
    pub max_total_bytes: u64,
    pub max_value_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKeyHeader,
    ApiKeyQuery,
    Bearer,
    Basic,
    Oauth2ClientCredentials,
    Oauth2RefreshToken,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    pub name: String,
    pub kind: CredentialKind,
    #[serde(default)]
    pub description: String,
}

/// Limits the plugin asks for; the operator's maxima cap them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_memory_mb() -> u32 {
    32
}
fn default_timeout_ms() -> u32 {
    5_000
}

impl Default for RequestedLimits {
    fn default() -> Self {
        Self {
            memory_mb: default_memory_mb(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

// ---- raw TOML shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    version: String,
    contract: String,
    name: String,
    #[serde(default)]
    description: String,
    vendor: String,
    #[serde(default)]
    operations: Vec<RawOperation>,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    limits: RequestedLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    name: String,
    kind: OperationKind,
    #[serde(default)]
    idempotent: Option<bool>,
    input_schema: toml::Value,
    output_schema: toml::Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    http: Option<RawHttp>,
    kv: Option<KvQuota>,
    config: Option<RawConfig>,
    #[serde(default)]
    credentials: Vec<CredentialRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    destinations: Vec<String>,
    rate_limit: Option<RateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    schema: toml::Value,
}

/// Operator ceilings on what a manifest may ask for.
pub const MAX_MEMORY_MB: u32 = 4096;
pub const MAX_TIMEOUT_MS: u32 = 300_000;

impl Manifest {
    /// Parse and validate `plugin.toml` text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        validate_id(&raw.id)?;
        let version = semver::Version::parse(&raw.version).map_err(|e| {
            field_error(
                "version",
                format!("{:?} is not a semver version: {e}", raw.version),
            )
        })?;
        let contract = semver::Version::parse(&raw.contract).map_err(|e| {
            field_error(
                "contract",
                format!("{:?} is not a semver version: {e}", raw.contract),
            )
        })?;
        let supported =
            semver::VersionReq::parse(SUPPORTED_CONTRACT).expect("constant requirement parses");
        if !supported.matches(&contract) {
            return Err(field_error(
                "contract",
                format!(
                    "contract {contract} is not supported by this host (supports {SUPPORTED_CONTRACT})"
                ),
            ));
        }
        if raw.name.trim().is_empty() {
            return Err(field_error("name", "must not be empty"));
        }
        if raw.vendor.trim().is_empty() {
            return Err(field_error("vendor", "must not be empty"));
        }
        let operations = validate_operations(raw.operations)?;
        let capabilities = validate_capabilities(raw.capabilities)?;
        if raw.limits.memory_mb == 0 || raw.limits.memory_mb > MAX_MEMORY_MB {
            return Err(field_error(
                "limits.memory_mb",
                format!("must be between 1 and {MAX_MEMORY_MB}"),
            ));
        }
        if raw.limits.timeout_ms == 0 || raw.limits.timeout_ms > MAX_TIMEOUT_MS {
            return Err(field_error(
                "limits.timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        Ok(Self {
            id: raw.id,
            version,
            contract,
            name: raw.name,
            description: raw.description,
            vendor: raw.vendor,
            operations,
            capabilities,
            limits: raw.limits,
        })
    }

    /// The operation named `name`.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn validate_id(id: &str) -> Result<(), ManifestError> {
    if is_slug(id) {
        Ok(())
    } else {
        Err(field_error(
            "id",
            format!("{id:?} must be 1-64 lowercase letters, digits or inner dashes"),
        ))
    }
}

fn validate_operations(raw: Vec<RawOperation>) -> Result<Vec<Operation>, ManifestError> {
    if raw.is_empty() {
        return Err(field_error(
            "operations",
            "a plugin must declare at least one operation",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut operations = Vec::with_capacity(raw.len());
    for (i, op) in raw.into_iter().enumerate() {
        let at = format!("operations[{i}]");
        if !is_slug(&op.name) {
            return Err(field_error(
                format!("{at}.name"),
                format!("{:?} must be lowercase kebab-case", op.name),
            ));
        }
        if !seen.insert(op.name.clone()) {
            return Err(field_error(
                format!("{at}.name"),
                format!("operation {:?} is declared twice", op.name),
            ));
        }
        let input_schema = schema_value(&op.input_schema, &format!("{at}.input_schema"))?;
        let output_schema = schema_value(&op.output_schema, &format!("{at}.output_schema"))?;
        operations.push(Operation {
            name: op.name,
            kind: op.kind,
            // Lookups and transforms are idempotent unless the vendor says otherwise.
            idempotent: op.idempotent.unwrap_or(op.kind != OperationKind::Action),
            input_schema,
            output_schema,
        });
    }
    Ok(operations)
}

/// A schema is written either as a TOML table or as a string holding JSON.
fn schema_value(value: &toml::Value, field: &str) -> Result<Json, ManifestError> {
    let json: Json = match value {
        toml::Value::String(text) => serde_json::from_str(text)
            .map_err(|e| field_error(field, format!("not valid JSON: {e}")))?,
        toml::Value::Table(_) => {
            serde_json::to_value(value).map_err(|e| field_error(field, e.to_string()))?
        }
        _ => return Err(field_error(field, "must be a table or a string of JSON")),
    };
    check_schema(&json).map_err(|message| field_error(field, message))?;
    Ok(json)
}

/// Whether `schema` is a valid JSON Schema (draft 2020-12 unless `$schema` says otherwise).
pub fn check_schema(schema: &Json) -> Result<(), String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema must be an object or a boolean".into());
    }
    jsonschema::meta::validate(schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| format!("not a usable JSON Schema: {e}"))
}

fn validate_capabilities(raw: RawCapabilities) -> Result<Capabilities, ManifestError> {
    let mut http = Vec::new();
    let mut http_rate_limit = None;
    if let Some(raw_http) = raw.http {
        if let Some(limit) = raw_http.rate_limit {
            http_rate_limit = Some(limit.validate().ok_or_else(|| {
                field_error(
                    "capabilities.http.rate_limit",
                    "requests and per_seconds must be greater than zero",
                )
            })?);
        }
        for (i, entry) in raw_http.destinations.iter().enumerate() {
            let destination = Destination::parse(entry).map_err(|e: DestinationError| {
                field_error(
                    format!("capabilities.http.destinations[{i}]"),
                    format!("{entry:?}: {e}"),
                )
            })?;
            http.push(destination);
        }
    }
    if let Some(kv) = raw.kv
        && (kv.max_keys == 0 || kv.max_total_bytes == 0 || kv.max_value_bytes == 0)
    {
        return Err(field_error(
            "capabilities.kv",
            "quotas must be greater than zero",
        ));
    }
    let config_schema = match raw.config {
        Some(config) => Some(schema_value(&config.schema, "capabilities.config.schema")?),
        None => None,
    };
    let mut names = BTreeSet::new();
    for (i, credential) in raw.credentials.iter().enumerate() {
        if !is_slug(&credential.name.replace('_', "-")) {
            return Err(field_error(
                format!("capabilities.credentials[{i}].name"),
                format!(
                    "{:?} must be lowercase letters, digits, dashes or underscores",
                    credential.name
                ),
            ));
        }
        if !names.insert(credential.name.clone()) {
            return Err(field_error(
                format!("capabilities.credentials[{i}].name"),
                format!("credential {:?} is declared twice", credential.name),
            ));
        }
    }
    Ok(Capabilities {
        http,
        http_rate_limit,
        kv: raw.kv,
        config_schema,
        credentials: raw.credentials,
    })
}
