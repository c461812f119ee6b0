//! `plugin.toml`: what a plugin is, what it does and what it asks for.
//!
//! Parsed and validated once, when a plugin is installed or loaded; every error
//! names the field at fault so a vendor can fix it without guessing.

use crate::http::{Destination, DestinationError};
use crate::rate::RateLimit;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// The contract versions this host can run.
pub const SUPPORTED_CONTRACT: &str = "^0.1";

/// A manifest that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, a missing or unknown field, or a value of the wrong type:
    /// the parser's message.
    #[error("plugin.toml is not valid TOML or has a wrong field: {0}")]
    Syntax(String),
    /// A value that parses but is refused.
    #[error("field `{field}`: {message}")]
    Field {
        /// Where it is in `plugin.toml` (`capabilities.credentials[0].header`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A validated manifest.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// The plugin's id, a slug ([`is_slug`]): the catalog and connections name
    /// the plugin by it.
    pub id: String,
    /// This release's version.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// The `patchbay:connector` contract version it was built against.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub contract: semver::Version,
    /// The plugin's name, for people; not empty.
    pub name: String,
    /// What the plugin does, for people; may be empty.
    pub description: String,
    /// Who publishes the plugin; not empty.
    pub vendor: String,
    /// The operations it exports: at least one, names unique.
    pub operations: Vec<Operation>,
    /// What it asks the host for; a workspace grants each per connection.
    pub capabilities: Capabilities,
    /// The memory and time it asks for, before the operator's ceilings.
    pub limits: RequestedLimits,
    /// How webhooks sent to its connections are verified; `None` when it
    /// takes none (`POST /v1/hooks/…` then answers 401).
    pub webhook: Option<WebhookSpec>,
    /// What a recorded invocation's transcript leaves out (`[recording]`).
    pub recording: RecordingSpec,
}

/// `[recording]`: the fields of this plugin's data that are secret, whose
/// values a transcript of one of its invocations never holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// JSON member names (any case) whose values are redacted wherever they
    /// appear: input, output, request and response bodies, form fields,
    /// query parameters, KV values. The host always redacts
    /// [`crate::recording::ALWAYS_REDACTED`] too.
    #[serde(default)]
    pub redact: Vec<String>,
}

/// Most names `[recording] redact` may list.
pub const MAX_REDACTED_FIELDS: usize = 64;

/// How a plugin's connections take webhooks in (`[webhook]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookSpec {
    /// Who checks the signature.
    pub verify: WebhookVerify,
    /// `standard-webhooks`: the `webhook_secret` credential holding the
    /// endpoint's secret (`whsec_…`).
    pub secret: Option<String>,
}

/// Who checks a webhook's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WebhookVerify {
    /// The host, by the Standard Webhooks scheme; the payload's `type`,
    /// `timestamp` and `data` make one event.
    StandardWebhooks,
    /// The plugin's `verify-webhook` export (contract 0.1.1 or later), which
    /// checks the vendor's scheme through the host's `verify-hmac` and maps
    /// the payload to events.
    Plugin,
}

/// The first contract version with the `webhooks` export and `signing` import.
pub const WEBHOOK_CONTRACT: semver::Version = semver::Version::new(0, 1, 1);

/// What kind of work an operation does; callers use it to decide retries and caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// Reads upstream state (e.g. find a contact); safe to retry.
    Lookup,
    /// Changes upstream state (e.g. create a ticket).
    Action,
    /// Reshapes data without leaving the sandbox.
    Transform,
}

/// One operation a plugin exports, with the JSON Schemas its input and
/// output are checked against.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Operation {
    /// Its name, a slug unique in the plugin; callers invoke it by this.
    pub name: String,
    /// What kind of work it does.
    pub kind: OperationKind,
    /// Whether calling it twice with the same input does no more than calling
    /// it once. The vendor says; unsaid, lookups and transforms are, actions
    /// are not.
    pub idempotent: bool,
    /// JSON Schema the input must match before the plugin runs.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Json,
    /// JSON Schema the plugin's output must match before it is returned.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub output_schema: Json,
}

/// What a plugin asks the host for. Nothing here is granted by asking: a
/// workspace approves each per connection ([`Grants`](crate::grants::Grants)).
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capabilities {
    /// Outbound HTTP destinations, as written (templates unfilled).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub http: Vec<Destination>,
    /// The upstream API's request rate, as the vendor declares it.
    pub http_rate_limit: Option<RateLimit>,
    /// Key-value storage with its quota; `None` when the plugin uses none.
    pub kv: Option<KvQuota>,
    /// JSON Schema of the connection's non-secret settings.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config_schema: Option<Json>,
    /// Credentials the host is to add to the plugin's requests, names unique.
    pub credentials: Vec<CredentialRequest>,
}

/// The key-value quota a plugin asks for, per connection; the operator's
/// `max_kv_*` ceilings cap it. Every number is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KvQuota {
    /// Keys the connection may hold.
    pub max_keys: u64,
    /// Bytes its keys and values may take together.
    pub max_total_bytes: u64,
    /// Largest single value, in bytes.
    pub max_value_bytes: u64,
}

/// How the host carries a credential on a request, and how it gets the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A static key in the header the manifest names (`header`).
    ApiKeyHeader,
    /// A static key in the query parameter the manifest names (`param`).
    ApiKeyQuery,
    /// A static token, sent as `Authorization: Bearer`.
    Bearer,
    /// A user name and password, sent as `Authorization: Basic`.
    Basic,
    /// An access token the host fetches from `token_url` with the client
    /// credentials grant, sent as a bearer token.
    Oauth2ClientCredentials,
    /// An access token the host gets from `token_url` with a stored refresh
    /// token, sent as a bearer token.
    Oauth2RefreshToken,
    /// The secret a sender signs its webhooks with. Never sent anywhere: the
    /// host checks signatures with it (`[webhook]`, and the `verify-hmac`
    /// import), so it takes no destinations.
    WebhookSecret,
}

impl CredentialKind {
    /// The kind as `plugin.toml` writes it (`api_key_header`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKeyHeader => "api_key_header",
            Self::ApiKeyQuery => "api_key_query",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
            Self::Oauth2RefreshToken => "oauth2_refresh_token",
            Self::WebhookSecret => "webhook_secret",
        }
    }

    /// Whether the host fetches tokens for it from a token endpoint (`oauth2_*`).
    pub fn is_oauth2(self) -> bool {
        matches!(
            self,
            Self::Oauth2ClientCredentials | Self::Oauth2RefreshToken
        )
    }
}

/// A credential the plugin needs; the host holds its value and adds it to
/// requests bound for `destinations`, so the plugin never sees it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialRequest {
    /// Its name in grants and in the tenant's stored secrets: lowercase letters,
    /// digits, dashes or underscores, unique in the manifest.
    pub name: String,
    /// How it is carried, and so which of the fields below it takes.
    pub kind: CredentialKind,
    /// What it is, for the tenant who supplies it; may be empty.
    pub description: String,
    /// Where the host may send it (destination grammar, templates allowed).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub destinations: Vec<Destination>,
    /// `api_key_header`: the header that carries the key (lowercase).
    pub header: Option<String>,
    /// `api_key_query`: the query parameter that carries the key.
    pub param: Option<String>,
    /// `oauth2_*`: the token endpoint (a URL, templates allowed).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub token_url: Option<Destination>,
    /// `oauth2_*`: scopes to ask for.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: String,
    kind: CredentialKind,
    #[serde(default)]
    description: String,
    #[serde(default)]
    destinations: Vec<String>,
    header: Option<String>,
    param: Option<String>,
    token_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Headers the host owns on every request; a credential may not be placed in them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "traceparent",
];

/// Limits the plugin asks for; the operator's maxima cap them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Memory the plugin asks for, in MiB: 32 unless given, at most [`MAX_MEMORY_MB`].
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Deadline it asks for per invocation, in milliseconds: 5000 unless
    /// given, at most [`MAX_TIMEOUT_MS`].
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
    webhook: Option<RawWebhook>,
    #[serde(default)]
    recording: RecordingSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    verify: WebhookVerify,
    secret: Option<String>,
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
    credentials: Vec<RawCredential>,
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

/// Most memory a manifest may ask for, in MiB: a fixed host ceiling (a
/// manifest asking for more is invalid), not the operator's. The operator's,
/// `limits.max_memory_mb`, caps the ask when the plugin runs.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Longest deadline a manifest may ask for, in milliseconds (5 minutes): a
/// fixed host ceiling, like [`MAX_MEMORY_MB`]. The operator's,
/// `limits.max_timeout_ms`, caps the ask when the plugin runs.
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
        let webhook = validate_webhook(raw.webhook, &capabilities, &contract)?;
        validate_recording(&raw.recording)?;
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
            webhook,
            recording: raw.recording,
        })
    }

    /// The operation named `name`.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }
}

/// Whether `s` is a slug: 1-64 lowercase ASCII letters, digits and dashes,
/// not starting or ending with a dash. Plugin ids, operation names,
/// workspace ids and connection names are slugs.
pub fn is_slug(s: &str) -> bool {
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
    let mut credentials = Vec::with_capacity(raw.credentials.len());
    for (i, credential) in raw.credentials.into_iter().enumerate() {
        let at = format!("capabilities.credentials[{i}]");
        if !names.insert(credential.name.clone()) {
            return Err(field_error(
                format!("{at}.name"),
                format!("credential {:?} is declared twice", credential.name),
            ));
        }
        credentials.push(validate_credential(credential, &at)?);
    }
    Ok(Capabilities {
        http,
        http_rate_limit,
        kv: raw.kv,
        config_schema,
        credentials,
    })
}

fn validate_credential(raw: RawCredential, at: &str) -> Result<CredentialRequest, ManifestError> {
    if !is_slug(&raw.name.replace('_', "-")) {
        return Err(field_error(
            format!("{at}.name"),
            format!(
                "{:?} must be lowercase letters, digits, dashes or underscores",
                raw.name
            ),
        ));
    }
    let destinations = if raw.kind == CredentialKind::WebhookSecret {
        if !raw.destinations.is_empty() {
            return Err(field_error(
                format!("{at}.destinations"),
                "a webhook_secret is never sent anywhere: it takes no destinations",
            ));
        }
        Vec::new()
    } else {
        credential_destinations(&raw.destinations, at)?
    };
    check_kind_fields(&raw, at)?;
    let header = match &raw.header {
        Some(header) => Some(credential_header(header, at)?),
        None => None,
    };
    if let Some(param) = &raw.param {
        check_param(param, at)?;
    }
    let token_url = match &raw.token_url {
        Some(url) => Some(token_url(url, at)?),
        None => None,
    };
    check_scopes(&raw.scopes, at)?;
    Ok(CredentialRequest {
        name: raw.name,
        kind: raw.kind,
        description: raw.description,
        destinations,
        header,
        param: raw.param,
        token_url,
        scopes: raw.scopes,
    })
}

/// `[webhook]`: a secret to verify with, and a contract that has the export
/// when the plugin verifies. Every `webhook_secret` credential is for it.
fn validate_webhook(
    raw: Option<RawWebhook>,
    capabilities: &Capabilities,
    contract: &semver::Version,
) -> Result<Option<WebhookSpec>, ManifestError> {
    let secrets: Vec<&str> = capabilities
        .credentials
        .iter()
        .filter(|c| c.kind == CredentialKind::WebhookSecret)
        .map(|c| c.name.as_str())
        .collect();
    let Some(raw) = raw else {
        return match secrets.first() {
            Some(name) => Err(field_error(
                "capabilities.credentials",
                format!("webhook_secret {name:?} is declared but the manifest has no [webhook]"),
            )),
            None => Ok(None),
        };
    };
    match raw.verify {
        WebhookVerify::StandardWebhooks => {
            let Some(secret) = &raw.secret else {
                return Err(field_error(
                    "webhook.secret",
                    "standard-webhooks needs the name of a webhook_secret credential",
                ));
            };
            if !secrets.contains(&secret.as_str()) {
                return Err(field_error(
                    "webhook.secret",
                    format!("{secret:?} is not a webhook_secret credential of this manifest"),
                ));
            }
        }
        WebhookVerify::Plugin => {
            if raw.secret.is_some() {
                return Err(field_error(
                    "webhook.secret",
                    "with verify = \"plugin\" the plugin names the credential in each verify-hmac call",
                ));
            }
            if secrets.is_empty() {
                return Err(field_error(
                    "webhook.verify",
                    "verify = \"plugin\" needs at least one webhook_secret credential",
                ));
            }
            if *contract < WEBHOOK_CONTRACT {
                return Err(field_error(
                    "webhook.verify",
                    format!(
                        "verify = \"plugin\" needs contract {WEBHOOK_CONTRACT} or later (the verify-webhook export), not {contract}"
                    ),
                ));
            }
        }
    }
    Ok(Some(WebhookSpec {
        verify: raw.verify,
        secret: raw.secret,
    }))
}

/// `[recording] redact`: at most [`MAX_REDACTED_FIELDS`] names, each 1-128
/// printable characters.
fn validate_recording(spec: &RecordingSpec) -> Result<(), ManifestError> {
    if spec.redact.len() > MAX_REDACTED_FIELDS {
        return Err(field_error(
            "recording.redact",
            format!(
                "lists {} names; at most {MAX_REDACTED_FIELDS}",
                spec.redact.len()
            ),
        ));
    }
    for (i, name) in spec.redact.iter().enumerate() {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(field_error(
                format!("recording.redact[{i}]"),
                "a field name: 1-128 characters, no control characters",
            ));
        }
    }
    Ok(())
}

/// The destinations a credential may be sent to: at least one, each a rule.
fn credential_destinations(
    entries: &[String],
    at: &str,
) -> Result<Vec<Destination>, ManifestError> {
    if entries.is_empty() {
        return Err(field_error(
            format!("{at}.destinations"),
            "list the destinations this credential may be sent to",
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(j, entry)| {
            Destination::parse(entry).map_err(|e| {
                field_error(format!("{at}.destinations[{j}]"), format!("{entry:?}: {e}"))
            })
        })
        .collect()
}

/// Each kind's own fields are present for that kind and only for it:
/// `header` for API-key headers, `param` for API-key queries, `token_url`
/// and `scopes` for OAuth2.
fn check_kind_fields(raw: &RawCredential, at: &str) -> Result<(), ManifestError> {
    use CredentialKind as K;
    let only_for = |field: &str, present: bool, wanted: bool, kinds: &str| {
        if present && !wanted {
            Err(field_error(
                format!("{at}.{field}"),
                format!("only {kinds} credentials take `{field}`"),
            ))
        } else if wanted && !present {
            Err(field_error(
                format!("{at}.{field}"),
                format!("a {} credential needs `{field}`", raw.kind.as_str()),
            ))
        } else {
            Ok(())
        }
    };
    let oauth2 = raw.kind.is_oauth2();
    only_for(
        "header",
        raw.header.is_some(),
        raw.kind == K::ApiKeyHeader,
        "api_key_header",
    )?;
    only_for(
        "param",
        raw.param.is_some(),
        raw.kind == K::ApiKeyQuery,
        "api_key_query",
    )?;
    only_for("token_url", raw.token_url.is_some(), oauth2, "oauth2_*")?;
    if !raw.scopes.is_empty() && !oauth2 {
        return Err(field_error(
            format!("{at}.scopes"),
            "only oauth2_* credentials take `scopes`",
        ));
    }
    Ok(())
}

/// An API-key header: a valid name, and not one the host manages.
fn credential_header(header: &str, at: &str) -> Result<String, ManifestError> {
    let name = http::HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| {
        field_error(
            format!("{at}.header"),
            format!("{header:?} is not a valid header name"),
        )
    })?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(field_error(
            format!("{at}.header"),
            format!("{header:?} is managed by the host and cannot carry a credential"),
        ));
    }
    Ok(name.as_str().to_owned())
}

/// An API-key query parameter: 1-64 letters, digits, `-`, `_` or `.`.
fn check_param(param: &str, at: &str) -> Result<(), ManifestError> {
    let ok = !param.is_empty()
        && param.len() <= 64
        && param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(field_error(
            format!("{at}.param"),
            format!("{param:?} must be 1-64 letters, digits, `-`, `_` or `.`"),
        ))
    }
}

/// An OAuth2 token endpoint: a destination rule without methods.
fn token_url(url: &str, at: &str) -> Result<Destination, ManifestError> {
    let parsed = Destination::parse(url)
        .map_err(|e| field_error(format!("{at}.token_url"), format!("{url:?}: {e}")))?;
    if parsed.has_methods() {
        return Err(field_error(
            format!("{at}.token_url"),
            format!("{url:?}: write the URL alone, without methods"),
        ));
    }
    Ok(parsed)
}

/// OAuth2 scopes: printable, no quotes or backslashes (RFC 6749 3.3).
fn check_scopes(scopes: &[String], at: &str) -> Result<(), ManifestError> {
    for (j, scope) in scopes.iter().enumerate() {
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(field_error(
                format!("{at}.scopes[{j}]"),
                format!("{scope:?} is not a valid OAuth2 scope"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The destinations the credentials below are checked against.
    const HTTP: &str = r#"
[capabilities.http]
destinations = ["https://api.example.com/v1", "https://{{instance}}.example.com"]
"#;

    fn with_credential(block: &str) -> Result<Manifest, ManifestError> {
        let rest = format!("{HTTP}\n[[capabilities.credentials]]\n{block}");
        Manifest::parse(&crate::test_support::test_manifest_text("1.0.0", &rest))
    }

    #[test]
    fn accepts_each_credential_kind_with_its_fields() {
        let ok = [
            "name = \"k\"\nkind = \"api_key_header\"\nheader = \"X-Api-Key\"\ndestinations = [\"https://api.example.com/v1\"]",
            "name = \"k\"\nkind = \"api_key_query\"\nparam = \"api_key\"\ndestinations = [\"https://api.example.com/v1\"]",
            "name = \"k\"\nkind = \"bearer\"\ndestinations = [\"GET https://api.example.com/v1\"]",
            "name = \"k\"\nkind = \"basic\"\ndestinations = [\"https://{{instance}}.example.com\"]",
            "name = \"k\"\nkind = \"oauth2_client_credentials\"\ntoken_url = \"https://login.example.com/oauth/token\"\nscopes = [\"a.read\", \"b:write\"]\ndestinations = [\"https://api.example.com/v1\"]",
            "name = \"k\"\nkind = \"oauth2_refresh_token\"\ntoken_url = \"https://{{instance}}.example.com/oauth/token\"\ndestinations = [\"https://{{instance}}.example.com\"]",
        ];
        for block in ok {
            let manifest = with_credential(block).unwrap_or_else(|e| panic!("{block}: {e}"));
            assert_eq!(manifest.capabilities.credentials.len(), 1);
        }
        let header = with_credential(ok[0]).expect("parses");
        assert_eq!(
            header.capabilities.credentials[0].header.as_deref(),
            Some("x-api-key")
        );
    }

    #[test]
    fn refuses_credential_mistakes_naming_the_field() {
        let cases = [
            (
                "name = \"k\"\nkind = \"bearer\"",
                "credentials[0].destinations",
                "list the destinations",
            ),
            (
                "name = \"k\"\nkind = \"bearer\"\ndestinations = [\"api.example.com\"]",
                "destinations[0]",
                "scheme",
            ),
            (
                "name = \"k\"\nkind = \"api_key_header\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].header",
                "needs `header`",
            ),
            (
                "name = \"k\"\nkind = \"api_key_header\"\nheader = \"Host\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].header",
                "managed by the host",
            ),
            (
                "name = \"k\"\nkind = \"api_key_header\"\nheader = \"bad header\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].header",
                "not a valid header",
            ),
            (
                "name = \"k\"\nkind = \"bearer\"\nheader = \"X-Key\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].header",
                "only api_key_header",
            ),
            (
                "name = \"k\"\nkind = \"api_key_query\"\nparam = \"a&b\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].param",
                "letters",
            ),
            (
                "name = \"k\"\nkind = \"oauth2_client_credentials\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].token_url",
                "needs `token_url`",
            ),
            (
                "name = \"k\"\nkind = \"oauth2_client_credentials\"\ntoken_url = \"POST https://a.example.com/t\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].token_url",
                "without methods",
            ),
            (
                "name = \"k\"\nkind = \"oauth2_client_credentials\"\ntoken_url = \"https://a.example.com/t?x=1\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].token_url",
                "query",
            ),
            (
                "name = \"k\"\nkind = \"oauth2_client_credentials\"\ntoken_url = \"https://a.example.com/t\"\nscopes = [\"has space\"]\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].scopes[0]",
                "scope",
            ),
            (
                "name = \"k\"\nkind = \"bearer\"\nscopes = [\"a\"]\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].scopes",
                "only oauth2",
            ),
            (
                "name = \"K y\"\nkind = \"bearer\"\ndestinations = [\"https://a.example.com\"]",
                "credentials[0].name",
                "lowercase",
            ),
        ];
        for (block, field, needle) in cases {
            let message = with_credential(block)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                message.contains(field) && message.contains(needle),
                "{block:?}: {message:?} should name {field:?} and say {needle:?}"
            );
        }
    }

    fn with_webhook(contract: &str, rest: &str) -> Result<Manifest, ManifestError> {
        let text = crate::test_support::test_manifest_text("1.0.0", rest).replace(
            "contract = \"0.1.0\"",
            &format!("contract = \"{contract}\""),
        );
        Manifest::parse(&text)
    }

    const SECRET: &str =
        "[[capabilities.credentials]]\nname = \"signing\"\nkind = \"webhook_secret\"\n";

    #[test]
    fn a_webhook_section_names_a_webhook_secret_and_the_right_contract() {
        let standard = with_webhook(
            "0.1.0",
            &format!("{SECRET}[webhook]\nverify = \"standard-webhooks\"\nsecret = \"signing\"\n"),
        )
        .expect("standard webhooks need no new contract");
        let spec = standard.webhook.expect("webhook");
        assert_eq!(spec.verify, WebhookVerify::StandardWebhooks);
        assert_eq!(spec.secret.as_deref(), Some("signing"));
        let plugin = with_webhook(
            "0.1.1",
            &format!("{SECRET}[webhook]\nverify = \"plugin\"\n"),
        )
        .expect("plugin verification on 0.1.1");
        assert_eq!(
            plugin.webhook.map(|w| w.verify),
            Some(WebhookVerify::Plugin)
        );
        assert!(
            with_webhook("0.1.0", "")
                .expect("no webhook")
                .webhook
                .is_none(),
            "a manifest without [webhook] takes none"
        );
    }

    #[test]
    fn refuses_webhook_sections_that_cannot_work_naming_the_field() {
        let bearer = "[capabilities.http]\ndestinations = [\"https://a.example.com\"]\n\
                      [[capabilities.credentials]]\nname = \"token\"\nkind = \"bearer\"\n\
                      destinations = [\"https://a.example.com\"]\n";
        let cases = [
            (
                "0.1.0",
                format!("{SECRET}[webhook]\nverify = \"plugin\"\n"),
                "webhook.verify",
                "0.1.1",
            ),
            (
                "0.1.1",
                "[webhook]\nverify = \"plugin\"\n".to_owned(),
                "webhook.verify",
                "at least one webhook_secret",
            ),
            (
                "0.1.1",
                format!("{SECRET}[webhook]\nverify = \"plugin\"\nsecret = \"signing\"\n"),
                "webhook.secret",
                "verify-hmac",
            ),
            (
                "0.1.0",
                format!("{SECRET}[webhook]\nverify = \"standard-webhooks\"\n"),
                "webhook.secret",
                "needs the name",
            ),
            (
                "0.1.0",
                format!(
                    "{bearer}{SECRET}[webhook]\nverify = \"standard-webhooks\"\nsecret = \"token\"\n"
                ),
                "webhook.secret",
                "not a webhook_secret",
            ),
            (
                "0.1.0",
                SECRET.to_owned(),
                "capabilities.credentials",
                "no [webhook]",
            ),
            (
                "0.1.0",
                format!(
                    "{SECRET}destinations = [\"https://a.example.com\"]\n[webhook]\nverify = \"standard-webhooks\"\nsecret = \"signing\"\n"
                ),
                "credentials[0].destinations",
                "never sent",
            ),
            (
                "0.1.0",
                format!("{SECRET}[webhook]\nverify = \"hmac\"\n"),
                "webhook",
                "unknown variant",
            ),
        ];
        for (contract, rest, field, needle) in cases {
            let message = with_webhook(contract, &rest)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                message.contains(field) && message.contains(needle),
                "{rest:?}: {message:?} should name {field:?} and say {needle:?}"
            );
        }
    }
}
