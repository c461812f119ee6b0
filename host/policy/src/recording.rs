//! Recording invocations for replay: what an operator turns on for one
//! connection, what a transcript of one invocation holds, and what it never
//! holds.
//!
//! A transcript keeps every host call the plugin made (its HTTP exchanges as
//! the plugin sent and saw them, KV reads and writes, the settings it could
//! read, clock readings and random bytes) so `patchbay plugin replay` can run
//! the invocation again, deterministically, away from production. Credentials
//! are never in it: the plugin never sees them (the host adds them after the
//! plugin's request leaves it), and headers that carry credentials, the
//! fields the host always treats as secret and those the manifest's
//! `[recording] redact` names are replaced by [`REDACTED`].

use crate::grants::Grants;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `format` of a transcript this host writes and replays.
pub const TRANSCRIPT_FORMAT: &str = "patchbay-transcript/1";

/// What a redacted value is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Field names whose values no transcript holds, whatever the manifest says
/// (compared as [`Redactor::is_secret_field`] does: `apiKey` is `api_key`).
pub const ALWAYS_REDACTED: [&str; 11] = [
    "password",
    "passwd",
    "secret",
    "client_secret",
    "api_key",
    "access_token",
    "refresh_token",
    "id_token",
    "authorization",
    "private_key",
    "token",
];

/// Request and response headers whose values no transcript holds.
pub const REDACTED_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "www-authenticate",
];

/// Most invocations one recording may keep.
pub const MAX_RECORDED_INVOCATIONS: u32 = 1_000;
/// Longest a recording may stay on, in minutes (one week).
pub const MAX_RECORDING_MINUTES: u32 = 7 * 24 * 60;
/// Bytes of one HTTP body a transcript keeps; past it the body is cut and
/// marked.
pub const MAX_RECORDED_BODY: usize = 256 * 1024;
/// Bytes of one KV value a transcript keeps; a larger value is left out
/// (and noted).
pub const MAX_RECORDED_KV_VALUE: usize = 64 * 1024;
/// Bytes one transcript keeps in all (bodies, KV values and keys, URLs and
/// headers, settings read), whatever the plugin sends, reads or writes: a
/// hostile plugin's transcript stays this small.
pub const MAX_TRANSCRIPT_BYTES: usize = 4 * 1024 * 1024;
/// Outbound requests one transcript keeps (allowed or refused); past them
/// only a count.
pub const MAX_RECORDED_EXCHANGES: usize = 256;
/// Bytes of a KV key or a settings key a transcript keeps (a refused key may
/// be longer: its start is kept).
pub const MAX_RECORDED_KEY: usize = 512;
/// Bytes of one transcript as stored (JSON); past it, its bodies are left
/// out, and past it again, it is not kept.
pub const MAX_STORED_TRANSCRIPT_BYTES: usize = 8 * 1024 * 1024;
/// Settings reads one transcript keeps; past them only a count.
pub const MAX_RECORDED_CONFIG_READS: usize = 1_000;
/// KV calls one transcript keeps; past them only a count.
pub const MAX_RECORDED_KV_CALLS: usize = 1_000;
/// Clock readings one transcript keeps, of each clock.
pub const MAX_RECORDED_CLOCK_READINGS: usize = 10_000;
/// Random bytes one transcript keeps, of both sources together.
pub const MAX_RECORDED_RANDOM_BYTES: usize = 64 * 1024;

/// What an operator asks for when turning recording on for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    /// Invocations to record, then recording stops: 1 to 1000.
    pub max_invocations: u32,
    /// Minutes recording stays on at most: 1 to 10080 (a week).
    pub for_minutes: u32,
}

impl RecordingRequest {
    /// Whether the bounds are within the host's; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.max_invocations == 0 || self.max_invocations > MAX_RECORDED_INVOCATIONS {
            return Err(format!(
                "max_invocations must be between 1 and {MAX_RECORDED_INVOCATIONS}, not {}",
                self.max_invocations
            ));
        }
        if self.for_minutes == 0 || self.for_minutes > MAX_RECORDING_MINUTES {
            return Err(format!(
                "for_minutes must be between 1 and {MAX_RECORDING_MINUTES}, not {}",
                self.for_minutes
            ));
        }
        Ok(())
    }
}

/// A connection's recording, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recording {
    /// When it was turned on, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When it stops, whatever it recorded.
    pub until_ms: u64,
    /// Invocations it keeps at most.
    pub max_invocations: u32,
    /// Invocations it has taken (each keeps a transcript once it ends).
    pub taken: u32,
}

impl Recording {
    /// A recording of `request` started at `now_ms`.
    pub fn start(request: RecordingRequest, now_ms: u64) -> Self {
        Self {
            started_at_ms: now_ms,
            until_ms: now_ms.saturating_add(u64::from(request.for_minutes) * 60_000),
            max_invocations: request.max_invocations,
            taken: 0,
        }
    }

    /// Whether it records an invocation starting at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms && self.taken < self.max_invocations
    }
}

/// Redacts secret fields: the host's own list and a manifest's.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Secret field names, as [`normalized`] writes them.
    fields: Vec<String>,
    /// Lowercase header names.
    headers: Vec<String>,
}

impl Redactor {
    /// Redact [`ALWAYS_REDACTED`], `fields` (any case), [`REDACTED_HEADERS`]
    /// and `headers` (the headers the host's credentials for this connection
    /// are carried in).
    pub fn new<'a>(
        fields: impl IntoIterator<Item = &'a String>,
        headers: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut all: Vec<String> = ALWAYS_REDACTED.iter().map(|f| normalized(f)).collect();
        all.extend(fields.into_iter().map(|f| normalized(f)));
        let mut header_names: Vec<String> =
            REDACTED_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        header_names.extend(headers.into_iter().map(|h| h.to_ascii_lowercase()));
        Self {
            fields: all,
            headers: header_names,
        }
    }

    /// Whether a field called `name` is secret: compared in any case, with
    /// `_` and `-` left out (`access_token`, `accessToken` and `Access-Token`
    /// are one name). A bracketed form key (`metadata[card_number]`) is
    /// judged by its innermost name too.
    pub fn is_secret_field(&self, name: &str) -> bool {
        let secret = |name: &str| self.fields.contains(&normalized(name));
        secret(name)
            || name
                .rsplit_once('[')
                .is_some_and(|(_, inner)| secret(inner.trim_end_matches(']')))
    }

    /// Whether a header called `name` carries a secret.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Replace the value of every secret member of `value`, at any depth.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, member) in map.iter_mut() {
                    if self.is_secret_field(key) && !member.is_null() {
                        *member = Value::String(REDACTED.into());
                    } else {
                        self.json(member);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            _ => {}
        }
    }

    /// `text` (`a=1&b=2`, a form body or a query) with the values of secret
    /// keys replaced.
    pub fn form(&self, text: &str) -> String {
        text.split('&')
            .map(|pair| {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                let name = url::form_urlencoded::parse(key.as_bytes())
                    .next()
                    .map(|(name, _)| name)
                    .unwrap_or_default();
                if self.is_secret_field(&name) {
                    let redacted: String =
                        url::form_urlencoded::byte_serialize(REDACTED.as_bytes()).collect();
                    format!("{key}={redacted}")
                } else {
                    pair.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `url` with the values of secret query parameters replaced.
    pub fn url(&self, url: &str) -> String {
        match url.split_once('?') {
            Some((base, query)) => {
                let (query, fragment) = match query.split_once('#') {
                    Some((q, f)) => (q, Some(f)),
                    None => (query, None),
                };
                let mut out = format!("{base}?{}", self.form(query));
                if let Some(fragment) = fragment {
                    out.push('#');
                    out.push_str(fragment);
                }
                out
            }
            None => url.to_owned(),
        }
    }

    /// `headers` with secret values replaced.
    pub fn headers(&self, headers: Vec<(String, String)>) -> Vec<(String, String)> {
        headers
            .into_iter()
            .map(|(name, value)| {
                if self.is_secret_header(&name) {
                    (name, REDACTED.to_owned())
                } else {
                    (name, value)
                }
            })
            .collect()
    }

    /// A body as a transcript keeps it: JSON redacted by member, a form by
    /// key, other text as it is, bytes in base64.
    pub fn body(&self, bytes: &[u8], content_type: Option<&str>, truncated: bool) -> Body {
        let mut body = Body {
            truncated,
            ..Body::default()
        };
        if bytes.is_empty() {
            return body;
        }
        if !truncated && let Ok(mut json) = serde_json::from_slice::<Value>(bytes) {
            self.json(&mut json);
            body.body = Some(json);
            return body;
        }
        // A body cut inside a character keeps the characters before it.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(e) if truncated && e.error_len().is_none() => {
                std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        match text {
            Some(text) => {
                let form = content_type
                    .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
                body.body_text = Some(if form {
                    self.form(text)
                } else {
                    // Text that is not whole JSON (a cut body, JSON with a
                    // syntax error) may still carry `"secret": value` pairs.
                    self.json_text(text)
                });
            }
            None => {
                let redacted = self.json_bytes(bytes);
                body.body_base64 = Some(base64::engine::general_purpose::STANDARD.encode(redacted))
            }
        }
        body
    }

    /// `text` with the value after every `"<secret name>":` replaced, for
    /// JSON that does not parse (cut, or broken): strings, numbers, literals,
    /// objects and arrays alike, a value cut short included.
    pub fn json_text(&self, text: &str) -> String {
        // Only ASCII bytes are put in or cut at: what was UTF-8 stays so.
        String::from_utf8(self.json_bytes(text.as_bytes()))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// [`json_text`](Self::json_text) over bytes that need not be UTF-8.
    pub fn json_bytes(&self, b: &[u8]) -> Vec<u8> {
        let n = b.len();
        // The end of the string token whose opening quote is at `at`
        // (past the closing quote; `n` when it is cut).
        let string_end = |at: usize| {
            let mut j = at + 1;
            while j < n && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(n)
        };
        let skip_ws = |mut k: usize| {
            while k < n && b[k].is_ascii_whitespace() {
                k += 1;
            }
            k
        };
        let mut out: Vec<u8> = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let Some(quote) = b[i..].iter().position(|c| *c == b'"').map(|p| i + p) else {
                out.extend_from_slice(&b[i..]);
                break;
            };
            out.extend_from_slice(&b[i..quote]);
            let end = string_end(quote);
            let key = std::str::from_utf8(b.get(quote + 1..end.saturating_sub(1)).unwrap_or(b""))
                .unwrap_or("");
            out.extend_from_slice(&b[quote..end]);
            i = end;
            let colon = skip_ws(i);
            if colon >= n || b[colon] != b':' || !self.is_secret_field(key) {
                continue;
            }
            let value = skip_ws(colon + 1);
            out.extend_from_slice(&b[i..value]);
            out.push(b'"');
            out.extend_from_slice(REDACTED.as_bytes());
            out.push(b'"');
            i = match b.get(value) {
                None => n,
                Some(b'"') => string_end(value),
                Some(b'{' | b'[') => {
                    let mut depth = 0usize;
                    let mut k = value;
                    while k < n {
                        match b[k] {
                            b'"' => {
                                k = string_end(k);
                                continue;
                            }
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    k += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                    k.min(n)
                }
                Some(_) => {
                    let mut k = value;
                    while k < n
                        && !matches!(b[k], b',' | b'}' | b']')
                        && !b[k].is_ascii_whitespace()
                    {
                        k += 1;
                    }
                    k
                }
            };
        }
        out
    }
}

/// A field name as redaction compares it: lowercase, without `_` and `-`.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A body as a transcript holds it: at most one of the three forms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// The body, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The body, when it is other text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    /// The body's bytes in base64, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Cut at [`MAX_RECORDED_BODY`] bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Body {
    /// The bytes the body stands for (JSON written compactly).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        if let Some(json) = &self.body {
            return Ok(json.to_string().into_bytes());
        }
        if let Some(text) = &self.body_text {
            return Ok(text.clone().into_bytes());
        }
        if let Some(b64) = &self.body_base64 {
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("body_base64 is not base64: {e}"));
        }
        Ok(Vec::new())
    }
}

/// A request as the plugin sent it (before the host added any credential).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Its method.
    pub method: String,
    /// Its URL, secret query values redacted.
    pub url: String,
    /// Its headers, in order, secret values redacted.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Its body.
    #[serde(flatten)]
    pub body: Body,
}

/// A response as the plugin received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// Its status code.
    pub status: u16,
    /// Its headers, in order, secret values redacted.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Its body, as far as the plugin read it.
    #[serde(flatten)]
    pub body: Body,
    /// The body ended in an error (its wasi:http code) after what is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
}

/// One outbound request of the plugin, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedExchange {
    /// The request.
    pub request: RecordedRequest,
    /// The response, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,
    /// The wasi:http error code the plugin got instead of a response
    /// (`HTTP-request-denied`, `connection-timeout`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A KV value: text as it is, other bytes in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KvValue {
    /// UTF-8 bytes.
    Text(String),
    /// Other bytes.
    Bytes {
        /// The bytes, in base64.
        base64: String,
    },
}

impl KvValue {
    /// `bytes` as a transcript holds them: JSON text with its secret members
    /// redacted, other text as it is, other bytes in base64.
    pub fn of(bytes: &[u8], redactor: &Redactor) -> Self {
        if let Ok(mut json) = serde_json::from_slice::<Value>(bytes)
            && (json.is_object() || json.is_array())
        {
            redactor.json(&mut json);
            return Self::Text(json.to_string());
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(redactor.json_text(text)),
            Err(_) => Self::Bytes {
                base64: base64::engine::general_purpose::STANDARD
                    .encode(redactor.json_bytes(bytes)),
            },
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Self::Text(text) => Ok(text.clone().into_bytes()),
            Self::Bytes { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| format!("a KV value is not base64: {e}")),
        }
    }
}

/// One KV call of the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvCall {
    /// `get`, `set`, `delete`, `list-keys` or `increment`.
    pub op: String,
    /// The key (the prefix, for `list-keys`).
    pub key: String,
    /// `set`: the value written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<KvValue>,
    /// `set`: its time to live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// `increment`: the delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    /// What the call returned: `get` the value or null, `delete` whether the
    /// key existed, `list-keys` the keys, `increment` the new value, `set`
    /// null.
    #[serde(default)]
    pub result: Value,
    /// The KV error code the plugin got instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One read of the connection's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRead {
    /// The key read; `*` for `get-all`.
    pub key: String,
    /// What it read (`None` for a key that is not set, and for `get-all`,
    /// whose values are the transcript's `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Clock readings, in the order the plugin took them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// `wasi:clocks/wall-clock.now`: nanoseconds since the Unix epoch.
    #[serde(default)]
    pub wall_ns: Vec<u64>,
    /// `wasi:clocks/monotonic-clock.now`: nanoseconds.
    #[serde(default)]
    pub monotonic_ns: Vec<u64>,
}

/// Random values the plugin was given, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomValues {
    /// `wasi:random/random` bytes, in base64.
    #[serde(default)]
    pub secure: String,
    /// `wasi:random/insecure` bytes, in base64.
    #[serde(default)]
    pub insecure: String,
    /// `wasi:random/insecure-seed`, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_seed: Option<String>,
}

/// The host calls one invocation made, in the order it made them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostCalls {
    /// Outbound HTTP.
    #[serde(default)]
    pub http: Vec<RecordedExchange>,
    /// KV.
    #[serde(default)]
    pub kv: Vec<KvCall>,
    /// Settings read through `wasi:config`, in order.
    #[serde(default)]
    pub config_reads: Vec<ConfigRead>,
    /// Clock readings.
    #[serde(default)]
    pub clocks: Clocks,
    /// Random values.
    #[serde(default)]
    pub random: RandomValues,
    /// What was left out past the transcript's bounds, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
}

/// An error as the caller of the invocation saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    /// The error code (`not-found`, `upstream`…).
    pub code: String,
    /// Its message.
    pub message: String,
}

/// One recorded invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// [`TRANSCRIPT_FORMAT`].
    pub format: String,
    /// The invocation's id.
    pub invocation_id: String,
    /// When it started, in ms since the Unix epoch.
    pub at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// The workspace and connection it ran for.
    pub workspace: String,
    /// The connection.
    pub connection: String,
    /// The plugin's id.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The operation.
    pub operation: String,
    /// Its input, secret fields redacted.
    pub input: Value,
    /// The idempotency key it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The settings the plugin could read (never a credential).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What the workspace had approved for the connection.
    #[serde(default)]
    pub grants: Grants,
    /// The output, secret fields redacted, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    /// Every host call it made.
    #[serde(flatten)]
    pub calls: HostCalls,
}

/// A transcript in a list: what it was, not what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TranscriptSummary {
    /// The invocation's id: the transcript's name.
    pub invocation_id: String,
    /// When it started, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The operation.
    pub operation: String,
    /// `ok`, or the error code.
    pub outcome: String,
    /// Outbound requests it made.
    pub requests: usize,
}

impl Transcript {
    /// What a list shows of it.
    pub fn summary(&self) -> TranscriptSummary {
        TranscriptSummary {
            invocation_id: self.invocation_id.clone(),
            at_ms: self.at_ms,
            operation: self.operation.clone(),
            outcome: self
                .error
                .as_ref()
                .map_or_else(|| "ok".to_owned(), |e| e.code.clone()),
            requests: self.calls.http.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(
            &["card_number".to_owned(), "SSN".to_owned()],
            ["X-Vendor-Key"],
        )
    }

    #[test]
    fn json_members_are_redacted_at_any_depth_by_the_hosts_list_and_the_manifests() {
        let mut value = json!({
            "name": "Ada",
            "Card_Number": "4242",
            "nested": [{"ssn": "123-45-6789", "access_token": "t", "keep": 1}],
            "password": null
        });
        redactor().json(&mut value);
        assert_eq!(
            value,
            json!({
                "name": "Ada",
                "Card_Number": REDACTED,
                "nested": [{"ssn": REDACTED, "access_token": REDACTED, "keep": 1}],
                "password": null
            })
        );
    }

    #[test]
    fn forms_queries_and_headers_are_redacted_by_name() {
        let r = redactor();
        assert_eq!(
            r.form("email=a%40b.c&card%5Bcard_number%5D=4242&api_key=k"),
            "email=a%40b.c&card%5Bcard_number%5D=%5Bredacted%5D&api_key=%5Bredacted%5D"
        );
        assert_eq!(
            r.url("https://x.test/p?ssn=1&q=2#frag"),
            "https://x.test/p?ssn=%5Bredacted%5D&q=2#frag"
        );
        assert_eq!(r.url("https://x.test/p"), "https://x.test/p");
        let headers = r.headers(vec![
            ("Authorization".into(), "Bearer x".into()),
            ("x-vendor-key".into(), "k".into()),
            ("accept".into(), "application/json".into()),
        ]);
        assert_eq!(headers[0].1, REDACTED);
        assert_eq!(headers[1].1, REDACTED);
        assert_eq!(headers[2].1, "application/json");
    }

    #[test]
    fn bodies_keep_json_text_or_bytes_and_say_when_cut() {
        let r = redactor();
        let json = r.body(br#"{"ssn":"1","a":2}"#, Some("application/json"), false);
        assert_eq!(json.body, Some(json!({"ssn": REDACTED, "a": 2})));
        let form = r.body(
            b"ssn=1&a=2",
            Some("application/x-www-form-urlencoded"),
            false,
        );
        assert_eq!(form.body_text.as_deref(), Some("ssn=%5Bredacted%5D&a=2"));
        let bytes = r.body(&[0xff, 0x00], None, false);
        assert_eq!(bytes.bytes().expect("test step"), vec![0xff, 0x00]);
        let cut = r.body(br#"{"a": [1, 2"#, None, true);
        assert!(cut.truncated && cut.body.is_none());
        assert_eq!(cut.body_text.as_deref(), Some(r#"{"a": [1, 2"#));
    }

    #[test]
    fn recording_bounds_are_checked_and_a_recording_ends_by_count_or_time() {
        let bad = RecordingRequest {
            max_invocations: 0,
            for_minutes: 10,
        };
        assert!(
            bad.check()
                .expect_err("refused")
                .contains("max_invocations")
        );
        let long = RecordingRequest {
            max_invocations: 5,
            for_minutes: MAX_RECORDING_MINUTES + 1,
        };
        assert!(long.check().expect_err("refused").contains("for_minutes"));
        let ok = RecordingRequest {
            max_invocations: 2,
            for_minutes: 1,
        };
        ok.check().expect("test step");
        let mut recording = Recording::start(ok, 1_000);
        assert!(recording.active(1_000));
        assert!(!recording.active(61_000), "past its minute");
        recording.taken = 2;
        assert!(!recording.active(1_001), "past its count");
    }

    #[test]
    fn names_match_in_any_case_and_spelling() {
        let r = redactor();
        for name in [
            "accessToken",
            "AccessToken",
            "access-token",
            "CLIENT_SECRET",
            "cardNumber",
        ] {
            assert!(r.is_secret_field(name), "{name}");
        }
        for name in ["next_page_token", "tokens", "email"] {
            assert!(!r.is_secret_field(name), "{name}");
        }
    }

    #[test]
    fn a_cut_or_broken_json_body_keeps_no_secret_value() {
        let r = redactor();
        let cut = br#"{"user": {"accessToken": "at-1", "name": "Ada", "ssn": 123456789, "keys": {"private_key": {"n": "x"}}, "token": ["a", "b"]}, "items": [{"password": "p\"q", "more": "#;
        let body = r.body(cut, Some("application/json"), true);
        let text = body.body_text.expect("text");
        for secret in ["at-1", "123456789", "\"x\"", "\"a\"", "p\\\"q"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("\"name\": \"Ada\""), "{text}");
        assert!(text.contains("\"more\": "), "{text}");
        // Bytes that are not UTF-8 are redacted before they are kept.
        let latin1 = b"{\"password\": \"p\xe4ss\", \"name\": \"J\xfcrgen\"}";
        let kept = r.body(latin1, None, false).bytes().expect("bytes");
        assert_eq!(
            kept,
            b"{\"password\": \"[redacted]\", \"name\": \"J\xfcrgen\"}"
        );
        // A value cut short is redacted too.
        let short = r.body(br#"{"password": "hunt"#, None, true);
        assert_eq!(
            short.body_text.as_deref(),
            Some(r#"{"password": "[redacted]""#)
        );
        // A cut inside a character keeps the characters before it.
        let mut accented = "{\"name\": \"Zoë".as_bytes().to_vec();
        accented.pop();
        let body = r.body(&accented, None, true);
        assert_eq!(body.body_text.as_deref(), Some("{\"name\": \"Zo"));
    }

    /// `snake_case` as camelCase.
    fn camel(name: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in name.chars() {
            match c {
                '_' => upper = true,
                c if upper => {
                    out.extend(c.to_uppercase());
                    upper = false;
                }
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn every_secret_name_in_every_spelling_is_redacted_wherever_it_is_carried() {
        let r = redactor();
        let names = ALWAYS_REDACTED
            .iter()
            .map(|n| (*n).to_owned())
            .chain(["card_number".to_owned(), "ssn".to_owned()]);
        for name in names {
            let spellings = [
                name.clone(),
                camel(&name),
                name.replace('_', "-"),
                name.to_uppercase(),
            ];
            for spelled in spellings {
                let secret = "s3cr3t-value";
                let mut json = serde_json::json!({ "outer": [{ spelled.clone(): secret }] });
                r.json(&mut json);
                assert!(!json.to_string().contains(secret), "JSON {spelled}: {json}");
                let cut = format!("{{\"a\": 1, \"{spelled}\": \"{secret}\", \"b\": [");
                let text = r.body(cut.as_bytes(), None, true).body_text.expect("text");
                assert!(!text.contains(secret), "cut JSON {spelled}: {text}");
                let form = format!("a=1&{spelled}={secret}&meta%5B{spelled}%5D={secret}");
                assert!(!r.form(&form).contains(secret), "form {spelled}");
                let url = format!("https://x.test/p?{spelled}={secret}#f");
                assert!(!r.url(&url).contains(secret), "query {spelled}");
                let kv = KvValue::of(format!("{{\"{spelled}\": \"{secret}\"}}").as_bytes(), &r);
                assert!(!format!("{kv:?}").contains(secret), "KV {spelled}");
            }
        }
    }

    #[test]
    fn kv_values_keep_text_and_bytes_and_redact_json() {
        let r = redactor();
        assert_eq!(
            KvValue::of(br#"{"token":"t","id":1}"#, &r),
            KvValue::Text(r#"{"id":1,"token":"[redacted]"}"#.into())
        );
        let bytes = KvValue::of(&[0xff], &r);
        assert_eq!(bytes.bytes().expect("test step"), vec![0xff]);
        assert_eq!(KvValue::of(b"42", &r), KvValue::Text("42".into()));
    }
}
