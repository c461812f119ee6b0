//! Host-held credentials: sealed at rest, added to outbound requests at send
//! time, never visible to plugins.
//!
//! A plugin's manifest names the credentials it needs and the destinations
//! each may be sent to; a tenant sets their values per connection. When a
//! request matches a credential's destinations, the host adds it (header,
//! query parameter, basic auth or an OAuth2 access token) as the request
//! leaves. The plugin cannot read a value through config, any import or any
//! error, and may not set the header the host manages for that destination.

pub mod oauth;
pub mod rotate;
pub mod scrub;
pub mod seal;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use patchbay_policy::clock::Clock;
use patchbay_policy::http::{Rule, Target};
use patchbay_policy::manifest::{CredentialKind, CredentialRequest};
use patchbay_storage::Scope;
use patchbay_storage::secrets::SharedSecrets;
use seal::MasterKey;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A credential value as a tenant sets it. `Debug` shows no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Secret {
    /// A static API key, sent in the header the manifest names.
    ApiKeyHeader {
        /// The key, sent verbatim as the header's value.
        #[serde(serialize_with = "expose_for_sealing")]
        value: SecretString,
    },
    /// A static API key, sent in the query parameter the manifest names.
    ApiKeyQuery {
        /// The key, form-encoded into the query.
        #[serde(serialize_with = "expose_for_sealing")]
        value: SecretString,
    },
    /// A static token, sent as `Authorization: Bearer`.
    Bearer {
        /// The token, sent verbatim after `Bearer `.
        #[serde(serialize_with = "expose_for_sealing")]
        token: SecretString,
    },
    /// A user name and password, sent as `Authorization: Basic`.
    Basic {
        /// Not secret, and may not hold `:`.
        username: String,
        /// The secret half of the pair.
        #[serde(serialize_with = "expose_for_sealing")]
        password: SecretString,
    },
    /// An OAuth2 client whose access tokens the host gets from the token
    /// endpoint with the client-credentials grant.
    Oauth2ClientCredentials {
        /// The client's id at the token endpoint.
        client_id: String,
        /// The client's secret, sent to the token endpoint only (HTTP basic auth).
        #[serde(serialize_with = "expose_for_sealing")]
        client_secret: SecretString,
    },
    /// An OAuth2 refresh token the host trades for access tokens at the token
    /// endpoint; a refresh token the endpoint rotates replaces it, durably.
    Oauth2RefreshToken {
        /// The client's id at the token endpoint.
        client_id: String,
        /// The client's secret, sent to the token endpoint only; `None` for a
        /// public client.
        #[serde(default, serialize_with = "expose_optional_for_sealing")]
        client_secret: Option<SecretString>,
        /// The current refresh token.
        #[serde(serialize_with = "expose_for_sealing")]
        refresh_token: SecretString,
    },
    /// The secret a webhook sender signs with: never sent anywhere, only
    /// used by the host to check signatures.
    WebhookSecret {
        /// The secret as the sender shows it (Standard Webhooks: `whsec_…`).
        #[serde(serialize_with = "expose_for_sealing")]
        value: SecretString,
    },
}

/// Serialisation exists only to seal a value; nothing else serialises a `Secret`.
fn expose_for_sealing<S: serde::Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.expose_secret())
}

fn expose_optional_for_sealing<S: serde::Serializer>(
    value: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Secret {
    /// A credential of `kind` as an operator hands it over in text (an
    /// environment variable): the bare value for bearer and API-key kinds,
    /// else its JSON form, e.g. `{"kind":"basic","username":"u","password":"p"}`.
    pub fn from_text(kind: CredentialKind, text: String) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            let secret: Self = serde_json::from_str(&text)
                .map_err(|e| format!("is not a credential in JSON form: {e}"))?;
            if secret.kind() != kind {
                return Err(format!(
                    "is a {}, not a {}",
                    secret.kind().as_str(),
                    kind.as_str()
                ));
            }
            return Ok(secret);
        }
        let value = text.into();
        match kind {
            CredentialKind::Bearer => Ok(Self::Bearer { token: value }),
            CredentialKind::ApiKeyHeader => Ok(Self::ApiKeyHeader { value }),
            CredentialKind::ApiKeyQuery => Ok(Self::ApiKeyQuery { value }),
            CredentialKind::WebhookSecret => Ok(Self::WebhookSecret { value }),
            other => Err(format!(
                "holds a bare value, but a {} credential is given in JSON form",
                other.as_str()
            )),
        }
    }

    /// The kind of credential this value is, to be matched against the kind the
    /// manifest declares.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::ApiKeyHeader { .. } => CredentialKind::ApiKeyHeader,
            Self::ApiKeyQuery { .. } => CredentialKind::ApiKeyQuery,
            Self::Bearer { .. } => CredentialKind::Bearer,
            Self::Basic { .. } => CredentialKind::Basic,
            Self::Oauth2ClientCredentials { .. } => CredentialKind::Oauth2ClientCredentials,
            Self::Oauth2RefreshToken { .. } => CredentialKind::Oauth2RefreshToken,
            Self::WebhookSecret { .. } => CredentialKind::WebhookSecret,
        }
    }

    /// Every secret string in the value, in every form it takes on the wire.
    pub fn sensitive_strings(&self) -> Vec<String> {
        let expose = |s: &SecretString| s.expose_secret().to_owned();
        match self {
            Self::ApiKeyHeader { value } | Self::ApiKeyQuery { value } => {
                let raw = expose(value);
                let encoded: String =
                    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
                vec![raw, encoded]
            }
            Self::Bearer { token } | Self::WebhookSecret { value: token } => vec![expose(token)],
            Self::Basic { username, password } => vec![
                expose(password),
                basic_value(username, password.expose_secret()),
            ],
            Self::Oauth2ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                expose(client_secret),
                token_endpoint_basic(client_id, client_secret.expose_secret()),
            ],
            Self::Oauth2RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let mut out = vec![expose(refresh_token)];
                if let Some(secret) = client_secret {
                    out.push(expose(secret));
                    out.push(token_endpoint_basic(client_id, secret.expose_secret()));
                }
                out
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let empty = |s: &SecretString| s.expose_secret().trim().is_empty();
        let blank = match self {
            Self::ApiKeyHeader { value }
            | Self::ApiKeyQuery { value }
            | Self::WebhookSecret { value } => empty(value),
            Self::Bearer { token } => empty(token),
            Self::Basic { username, password } => username.is_empty() || empty(password),
            Self::Oauth2ClientCredentials {
                client_id,
                client_secret,
            } => client_id.is_empty() || empty(client_secret),
            Self::Oauth2RefreshToken {
                client_id,
                refresh_token,
                ..
            } => client_id.is_empty() || empty(refresh_token),
        };
        if blank {
            return Err("a credential value must not be empty".into());
        }
        // A value that cannot be a header would fail at send time; refuse it now.
        let header_safe = |s: &str| HeaderValue::from_str(s).is_ok();
        let ok = match self {
            Self::ApiKeyHeader { value } => header_safe(value.expose_secret()),
            Self::Bearer { token } => header_safe(token.expose_secret()),
            Self::Basic { username, .. } => !username.contains(':'),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err("the value holds characters that cannot be sent in an HTTP header (or a basic-auth username holds `:`)".into())
        }
    }
}

/// The `Authorization: Basic` value an OAuth2 client sends its token
/// endpoint (RFC 6749 §2.3.1: each part form-encoded first).
fn token_endpoint_basic(client_id: &str, client_secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    basic_value(&encode(client_id), &encode(client_secret))
}

fn basic_value(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

/// A manifest credential bound to one connection: its templates filled.
#[derive(Debug, Clone)]
pub struct BoundCredential {
    /// The credential's name in the manifest: the connection stores its value
    /// under it.
    pub name: String,
    /// How the host carries it, as the manifest declares; the stored value must
    /// be of this kind.
    pub kind: CredentialKind,
    rules: Vec<Rule>,
    header: Option<HeaderName>,
    param: Option<String>,
    token_url: Option<String>,
    scopes: Vec<String>,
}

impl BoundCredential {
    /// Bind the manifest's `request` to a connection: fill the templates of its
    /// destinations and token URL from the connection's config `values`. The
    /// error names the credential and the part that cannot be filled.
    pub fn bind(
        request: &CredentialRequest,
        values: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let rules = request
            .destinations
            .iter()
            .map(|d| {
                d.fill(values)
                    .map_err(|e| format!("credential {}: destination {d}: {e}", request.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let token_url = match &request.token_url {
            Some(url) => Some(
                url.fill_url(values)
                    .map_err(|e| format!("credential {}: token_url {url}: {e}", request.name))?,
            ),
            None => None,
        };
        let header = match &request.header {
            Some(h) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("credential {}: bad header {h:?}", request.name))?,
            ),
            None => None,
        };
        Ok(Self {
            name: request.name.clone(),
            kind: request.kind,
            rules,
            header,
            param: request.param.clone(),
            token_url,
            scopes: request.scopes.clone(),
        })
    }

    /// Whether this credential goes with a request to `target`.
    pub fn applies_to(&self, target: &Target) -> bool {
        self.rules.iter().any(|rule| rule.allows(target))
    }

    /// Where the plugin's request already carries what the host will set, if anywhere.
    pub fn collides_with(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        match (&self.header, &self.param) {
            (Some(header), _) if headers.contains_key(header) => {
                Some(format!("header {}", header.as_str()))
            }
            (None, Some(param)) => query.and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .any(|(k, _)| k.eq_ignore_ascii_case(param))
                    .then(|| format!("query parameter {param}"))
            }),
            (None, None) if headers.contains_key(http::header::AUTHORIZATION) => {
                Some("header authorization".to_owned())
            }
            _ => None,
        }
    }
}

/// Why a credential could not be added to a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The connection holds no value for the named credential; the tenant must
    /// set one.
    #[error("credential {0:?} is not set for this connection")]
    NotSet(String),
    /// The value was refused for good (a token endpoint's `invalid_grant`, say)
    /// and stays unused until the tenant sets a new one.
    #[error("credential {name:?} needs attention: {reason}")]
    NeedsAttention {
        /// The credential, by its manifest name.
        name: String,
        /// Why it was refused, scrubbed of secret values.
        reason: String,
    },
    /// The stored value is of another kind than the manifest declares (after
    /// an upgrade changed it, say); the tenant must set a new one.
    #[error("credential {name:?} holds a {stored} value but the plugin needs a {wanted}")]
    WrongKind {
        /// The credential, by its manifest name.
        name: String,
        /// The stored value's kind (`basic`…).
        stored: &'static str,
        /// The kind the manifest declares.
        wanted: &'static str,
    },
    /// The OAuth2 token endpoint gave no token this time (a timeout, a 5xx,
    /// `temporarily_unavailable`); the next call asks again.
    #[error("credential {name:?}: the token endpoint failed: {message}")]
    TokenEndpoint {
        /// The credential, by its manifest name.
        name: String,
        /// What failed, scrubbed of secret values.
        message: String,
    },
    /// A value refused when it was set (empty, or not sendable in a header):
    /// the credential's name and why.
    #[error("credential {0:?}: invalid value: {1}")]
    Invalid(String, String),
    /// The credential store failed, or a stored value does not open (another
    /// master key, damaged) or cannot be sent: a host fault, not the tenant's.
    #[error("credential store: {0}")]
    Storage(String),
}

impl CredentialError {
    /// A fault the tenant must fix (the upstream would refuse the request as sent).
    pub fn needs_tenant(&self) -> bool {
        matches!(
            self,
            Self::NotSet(_) | Self::NeedsAttention { .. } | Self::WrongKind { .. }
        )
    }
}

/// A stored credential, opened.
#[derive(Debug)]
pub struct Stored {
    /// The value as the tenant set it, or as the last refresh-token rotation
    /// left it.
    pub secret: Secret,
    /// Set when the credential was refused for good (e.g. `invalid_grant`).
    pub problem: Option<String>,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    secret: Secret,
    #[serde(default)]
    problem: Option<String>,
    updated_at_ms: u64,
}

/// What the API may show about a credential: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialInfo {
    /// The credential's name in the manifest.
    pub name: String,
    /// Its kind (`api_key_header`…): the stored value's, or the manifest's when
    /// none is set.
    pub kind: &'static str,
    /// Whether the connection holds a value for it.
    pub set: bool,
    /// Why the stored value was refused for good; `None` when it is usable or
    /// not set.
    pub needs_attention: Option<String>,
}

/// What was added to a request.
#[derive(Debug)]
pub struct Applied {
    /// The kind of credential added.
    pub kind: CredentialKind,
    /// The OAuth2 access token sent, to tell whether a 401 refused this one.
    pub access_token: Option<SecretString>,
    /// Secret strings to scrub from what comes back.
    pub sensitive: Vec<String>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct CredentialCounters {
    /// OAuth2 token requests made since start.
    pub token_requests: std::sync::atomic::AtomicU64,
    /// Token requests that gave no token, refused or failed, since start.
    pub token_failures: std::sync::atomic::AtomicU64,
    /// Times a credential was marked needs-attention since start.
    pub marked_needs_attention: std::sync::atomic::AtomicU64,
}

/// Every connection's credentials: the sealed store, a cache of opened
/// values, and the OAuth2 token cache.
pub struct Credentials {
    store: SharedSecrets,
    key: Arc<MasterKey>,
    clock: Clock,
    opened: Mutex<HashMap<(Scope, String), Arc<Stored>>>,
    /// Every credential marked needs-attention, with the reason: read from
    /// the store at start, kept current by every write.
    attention: Mutex<BTreeMap<(Scope, String), String>>,
    tokens: oauth::Tokens,
    /// Scrubbers of the secrets requests carried, built once per set.
    matchers: scrub::Matchers,
    /// Token and needs-attention counts since start, for metrics.
    pub counters: CredentialCounters,
}

impl Credentials {
    /// Open the credentials in `store`. Every stored value is opened once
    /// here, so a wrong master key or a damaged value is reported at start-up
    /// (naming the connection and credential), not on a customer's call.
    pub fn new(
        store: SharedSecrets,
        key: MasterKey,
        clock: Clock,
    ) -> Result<Self, CredentialError> {
        let credentials = Self {
            store,
            key: Arc::new(key),
            clock,
            opened: Mutex::default(),
            attention: Mutex::default(),
            tokens: oauth::Tokens::new(oauth::DEFAULT_SKEW),
            matchers: scrub::Matchers::default(),
            counters: CredentialCounters::default(),
        };
        let all = credentials
            .store
            .all()
            .map_err(|e| CredentialError::Storage(e.to_string()))?;
        for (scope, name, _) in all {
            let stored = credentials.get(&scope, &name)?.ok_or_else(|| {
                CredentialError::Storage(format!("credential {name:?} vanished while opening"))
            })?;
            if let Some(reason) = &stored.problem {
                credentials
                    .attention_map()
                    .insert((scope, name), reason.clone());
            }
        }
        Ok(credentials)
    }

    /// Credentials refused for good and not yet replaced: (scope, name, reason).
    pub fn needing_attention(&self) -> Vec<(Scope, String, String)> {
        self.attention_map()
            .iter()
            .map(|((scope, name), reason)| (scope.clone(), name.clone(), reason.clone()))
            .collect()
    }

    fn attention_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Scope, String), String>> {
        self.attention.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `secret` as `name` for `scope` (durable when this returns). A
    /// new value clears a needs-attention mark and any cached access token.
    pub async fn set(
        &self,
        scope: &Scope,
        name: &str,
        secret: Secret,
    ) -> Result<(), CredentialError> {
        secret
            .check()
            .map_err(|e| CredentialError::Invalid(name.to_owned(), e))?;
        self.write(scope, name, secret, None).await?;
        self.tokens.forget(scope, name);
        Ok(())
    }

    /// Remove a credential (durable when this returns). Whether it existed.
    pub async fn remove(&self, scope: &Scope, name: &str) -> Result<bool, CredentialError> {
        let (store, s, n) = (self.store.clone(), scope.clone(), name.to_owned());
        let existed = blocking(move || store.remove(&s, &n)).await?;
        self.opened_map().remove(&(scope.clone(), name.to_owned()));
        self.matchers.clear();
        self.attention_map()
            .remove(&(scope.clone(), name.to_owned()));
        self.tokens.forget(scope, name);
        Ok(existed)
    }

    /// Remove every credential of `scope` (its connection was deleted); how many.
    pub async fn remove_scope(&self, scope: &Scope) -> Result<usize, CredentialError> {
        let names = self
            .store
            .names(scope)
            .map_err(|e| CredentialError::Storage(e.to_string()))?;
        for name in &names {
            self.remove(scope, name).await?;
        }
        Ok(names.len())
    }

    /// The opened credential, if set.
    pub fn get(&self, scope: &Scope, name: &str) -> Result<Option<Arc<Stored>>, CredentialError> {
        let cache_key = (scope.clone(), name.to_owned());
        if let Some(stored) = self.opened_map().get(&cache_key) {
            return Ok(Some(stored.clone()));
        }
        let Some(sealed) = self
            .store
            .get(scope, name)
            .map_err(|e| CredentialError::Storage(e.to_string()))?
        else {
            return Ok(None);
        };
        let plain = self.key.open(&sealed, &scope.key(name)).map_err(|e| {
            CredentialError::Storage(format!(
                "credential {name:?} of connection {}/{}: {e}",
                scope.workspace, scope.connection
            ))
        })?;
        let record: Record = serde_json::from_slice(&plain)
            .map_err(|_| CredentialError::Storage(format!("credential {name:?} is unreadable")))?;
        let stored = Arc::new(Stored {
            secret: record.secret,
            problem: record.problem,
            updated_at_ms: record.updated_at_ms,
        });
        self.opened_map().insert(cache_key, stored.clone());
        Ok(Some(stored))
    }

    /// Run `use_it` on the text of `scope`'s webhook secret `name` (an HMAC
    /// key, or a `whsec_…` to decode), which is neither kept nor copied out:
    /// `None` when it is not set, an error when it holds another kind.
    pub fn with_webhook_secret<T>(
        &self,
        scope: &Scope,
        name: &str,
        use_it: impl FnOnce(&str) -> T,
    ) -> Result<Option<T>, CredentialError> {
        let Some(stored) = self.get(scope, name)? else {
            return Ok(None);
        };
        match &stored.secret {
            Secret::WebhookSecret { value } => Ok(Some(use_it(value.expose_secret()))),
            other => Err(CredentialError::WrongKind {
                name: name.to_owned(),
                stored: other.kind().as_str(),
                wanted: CredentialKind::WebhookSecret.as_str(),
            }),
        }
    }

    /// Names, kinds and state of the credentials set for `scope`: never values.
    pub fn describe(&self, scope: &Scope) -> Result<Vec<CredentialInfo>, CredentialError> {
        let names = self
            .store
            .names(scope)
            .map_err(|e| CredentialError::Storage(e.to_string()))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(stored) = self.get(scope, &name)? {
                out.push(CredentialInfo {
                    kind: stored.secret.kind().as_str(),
                    set: true,
                    needs_attention: stored.problem.clone(),
                    name,
                });
            }
        }
        Ok(out)
    }

    /// Add `credential` to a request's headers or URL. OAuth2 tokens are
    /// fetched (once, for concurrent callers) through `http`; `rejected` is an
    /// access token the upstream just refused with 401, which forces a refresh.
    pub async fn apply(
        &self,
        scope: &Scope,
        credential: &BoundCredential,
        headers: &mut HeaderMap,
        url: &mut url::Url,
        http: &oauth::TokenHttp,
        rejected: Option<&SecretString>,
    ) -> Result<Applied, CredentialError> {
        let stored = self.usable(scope, credential)?;
        let mut sensitive = stored.secret.sensitive_strings();
        let mut access_token = None;
        let value = match &stored.secret {
            Secret::ApiKeyHeader { value } => {
                let name = credential
                    .header
                    .clone()
                    .ok_or_else(|| CredentialError::NotSet(credential.name.clone()))?;
                headers.insert(name, sensitive_header(value.expose_secret())?);
                None
            }
            Secret::ApiKeyQuery { value } => {
                let param = credential.param.as_deref().unwrap_or("api_key");
                url.query_pairs_mut()
                    .append_pair(param, value.expose_secret());
                None
            }
            Secret::Bearer { token } => Some(format!("Bearer {}", token.expose_secret())),
            Secret::Basic { username, password } => Some(format!(
                "Basic {}",
                basic_value(username, password.expose_secret())
            )),
            Secret::WebhookSecret { .. } => {
                // Bindings leave webhook secrets out; reaching here is a host bug.
                return Err(CredentialError::Storage(format!(
                    "credential {:?} is a webhook secret, never sent",
                    credential.name
                )));
            }
            Secret::Oauth2ClientCredentials { .. } | Secret::Oauth2RefreshToken { .. } => {
                let token = self.access_token(scope, credential, http, rejected).await?;
                sensitive.push(token.expose_secret().to_owned());
                let value = format!("Bearer {}", token.expose_secret());
                access_token = Some(token);
                Some(value)
            }
        };
        if let Some(value) = value {
            headers.insert(http::header::AUTHORIZATION, sensitive_header(&value)?);
        }
        if access_token.is_some()
            && let Some(latest) = self.get(scope, &credential.name)?
        {
            // A refresh may have rotated the refresh token: scrub the new one too.
            sensitive.extend(latest.secret.sensitive_strings());
        }
        Ok(Applied {
            kind: credential.kind,
            access_token,
            sensitive,
        })
    }

    /// A scrubber for what comes back to a request that carried `applied`:
    /// built once per set of secrets, then shared.
    pub fn scrubber(&self, applied: Applied) -> scrub::Scrubber {
        self.matchers.scrubber(applied.sensitive)
    }

    /// How many sets of secrets have a scrubber kept (for tests).
    pub fn scrubbers_kept(&self) -> usize {
        self.matchers.len()
    }

    /// The stored value of `credential`, if it is set, not marked as needing
    /// attention, and of the kind the plugin declares.
    fn usable(
        &self,
        scope: &Scope,
        credential: &BoundCredential,
    ) -> Result<Arc<Stored>, CredentialError> {
        let stored = self
            .get(scope, &credential.name)?
            .ok_or_else(|| CredentialError::NotSet(credential.name.clone()))?;
        if let Some(reason) = &stored.problem {
            return Err(CredentialError::NeedsAttention {
                name: credential.name.clone(),
                reason: reason.clone(),
            });
        }
        if stored.secret.kind() != credential.kind {
            return Err(CredentialError::WrongKind {
                name: credential.name.clone(),
                stored: stored.secret.kind().as_str(),
                wanted: credential.kind.as_str(),
            });
        }
        Ok(stored)
    }

    /// Mark `name` as refused for good, durably, with the reason (shown to the
    /// tenant). Calls fail fast until a new value is set.
    pub(crate) async fn mark_needs_attention(
        &self,
        scope: &Scope,
        name: &str,
        reason: &str,
    ) -> Result<(), CredentialError> {
        let Some(stored) = self.get(scope, name)? else {
            return Ok(());
        };
        let reason = scrub::Scrubber::new(stored.secret.sensitive_strings()).scrub_str(reason);
        tracing::warn!(target: "patchbay::credentials", workspace = %scope.workspace,
            connection = %scope.connection, credential = name, %reason, "credential needs attention");
        self.counters
            .marked_needs_attention
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write(scope, name, stored.secret.clone(), Some(reason))
            .await
    }

    /// Seal and store; the opened cache is updated only after the write is durable.
    async fn write(
        &self,
        scope: &Scope,
        name: &str,
        secret: Secret,
        problem: Option<String>,
    ) -> Result<(), CredentialError> {
        let record = Record {
            secret,
            problem,
            updated_at_ms: (self.clock)(),
        };
        let plain = zeroizing_json(&record)?;
        let sealed = self
            .key
            .seal(&plain, &scope.key(name))
            .map_err(|e| CredentialError::Storage(e.to_string()))?;
        let (store, s, n) = (self.store.clone(), scope.clone(), name.to_owned());
        blocking(move || store.put(&s, &n, &sealed)).await?;
        let id = (scope.clone(), name.to_owned());
        match &record.problem {
            Some(reason) => {
                self.attention_map().insert(id, reason.clone());
            }
            None => {
                self.attention_map().remove(&id);
            }
        }
        self.matchers.clear();
        self.opened_map().insert(
            (scope.clone(), name.to_owned()),
            Arc::new(Stored {
                secret: record.secret,
                problem: record.problem,
                updated_at_ms: record.updated_at_ms,
            }),
        );
        Ok(())
    }

    fn opened_map(&self) -> std::sync::MutexGuard<'_, HashMap<(Scope, String), Arc<Stored>>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sensitive_header(value: &str) -> Result<HeaderValue, CredentialError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        CredentialError::Storage("stored credential cannot be sent as a header".into())
    })?;
    // Keeps it out of HTTP/2 header compression tables.
    header.set_sensitive(true);
    Ok(header)
}

fn zeroizing_json(record: &Record) -> Result<zeroize::Zeroizing<Vec<u8>>, CredentialError> {
    serde_json::to_vec(record)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| CredentialError::Storage(e.to_string()))
}

/// Run a storage call that may flush to disk off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, patchbay_storage::StorageError> + Send + 'static,
) -> Result<T, CredentialError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CredentialError::Storage(format!("storage task failed: {e}")))?
        .map_err(|e| CredentialError::Storage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_storage::memory::MemorySecrets;

    fn credentials() -> Credentials {
        Credentials::new(
            Arc::new(MemorySecrets::default()),
            MasterKey::generate().expect("key").0,
            patchbay_policy::clock::system(),
        )
        .expect("credentials")
    }

    fn scope(ws: &str) -> Scope {
        Scope {
            workspace: ws.into(),
            connection: "crm".into(),
        }
    }

    #[tokio::test]
    async fn a_webhook_secret_is_lent_to_the_check_and_no_other_kind_is() {
        let creds = credentials();
        let length = |text: &str| text.len();
        assert!(matches!(
            creds.with_webhook_secret(&scope("a"), "signing", length),
            Ok(None)
        ));
        let secret = Secret::WebhookSecret {
            value: "whsec_abc".into(),
        };
        creds
            .set(&scope("a"), "signing", secret)
            .await
            .expect("set");
        assert!(matches!(
            creds.with_webhook_secret(&scope("a"), "signing", length),
            Ok(Some(9))
        ));
        assert!(
            matches!(
                creds.with_webhook_secret(&scope("b"), "signing", length),
                Ok(None)
            ),
            "another scope's"
        );
        let token = Secret::Bearer {
            token: "bearer-token-1".into(),
        };
        creds.set(&scope("a"), "token", token).await.expect("set");
        assert!(matches!(
            creds.with_webhook_secret(&scope("a"), "token", length),
            Err(CredentialError::WrongKind {
                wanted: "webhook_secret",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn kept_scrubbers_are_forgotten_when_a_credential_is_set_or_removed() {
        let creds = credentials();
        let applied = |secret: &str| Applied {
            kind: CredentialKind::Bearer,
            access_token: None,
            sensitive: vec![secret.to_owned()],
        };
        let set = |token: &str| Secret::Bearer {
            token: token.into(),
        };
        creds
            .set(&scope("a"), "token", set("first-token-value"))
            .await
            .expect("set");
        let mut scrubber = creds.scrubber(applied("first-token-value"));
        assert_eq!(creds.scrubbers_kept(), 1);
        creds.scrubber(applied("first-token-value"));
        assert_eq!(creds.scrubbers_kept(), 1, "reused, not built again");
        let mut out = scrubber.feed(b"echo first-token-value").to_vec();
        out.extend_from_slice(&scrubber.finish());
        assert_eq!(out, b"echo [REDACTED]");
        creds
            .set(&scope("a"), "token", set("second-token-value"))
            .await
            .expect("set");
        assert_eq!(creds.scrubbers_kept(), 0, "a new value clears them");
        creds.scrubber(applied("second-token-value"));
        assert_eq!(creds.scrubbers_kept(), 1);
        creds.remove(&scope("a"), "token").await.expect("remove");
        assert_eq!(creds.scrubbers_kept(), 0, "a removal clears them");
    }

    #[tokio::test]
    async fn values_are_sealed_in_the_store_and_never_described() {
        let store = Arc::new(MemorySecrets::default());
        let creds = Credentials::new(
            store.clone(),
            MasterKey::generate().expect("key").0,
            patchbay_policy::clock::system(),
        )
        .expect("credentials");
        let secret = Secret::Basic {
            username: "agent".into(),
            password: "correct-horse-battery".into(),
        };
        creds.set(&scope("a"), "login", secret).await.expect("set");
        let raw = patchbay_storage::secrets::SecretStore::get(&*store, &scope("a"), "login")
            .expect("get")
            .expect("stored");
        assert!(!String::from_utf8_lossy(&raw).contains("correct-horse"));
        let described = creds.describe(&scope("a")).expect("describe");
        assert_eq!(
            described,
            [CredentialInfo {
                name: "login".into(),
                kind: "basic",
                set: true,
                needs_attention: None
            }]
        );
        assert!(!format!("{described:?}").contains("correct-horse"));
        assert!(creds.describe(&scope("b")).expect("describe").is_empty());
        let opened = creds.get(&scope("a"), "login").expect("get").expect("set");
        assert!(
            !format!("{opened:?}").contains("correct-horse"),
            "Debug hides it"
        );
    }

    #[tokio::test]
    async fn a_needs_attention_mark_goes_with_a_new_value_or_removal() {
        let creds = credentials();
        let bearer = || Secret::Bearer {
            token: "bt-attention-1".into(),
        };
        for (ws, clear_by_removing) in [("a", false), ("b", true)] {
            creds.set(&scope(ws), "token", bearer()).await.expect("set");
            creds
                .mark_needs_attention(&scope(ws), "token", "invalid_grant: revoked")
                .await
                .expect("mark");
            let marked: Vec<String> = creds
                .needing_attention()
                .into_iter()
                .map(|(s, _, _)| s.workspace)
                .collect();
            assert!(marked.contains(&ws.to_owned()), "{marked:?}");
            if clear_by_removing {
                assert!(creds.remove(&scope(ws), "token").await.expect("remove"));
            } else {
                creds.set(&scope(ws), "token", bearer()).await.expect("set");
                assert_eq!(
                    creds.describe(&scope(ws)).expect("describe")[0].needs_attention,
                    None
                );
            }
            assert!(
                !creds
                    .needing_attention()
                    .iter()
                    .any(|(s, _, _)| s.workspace == ws),
                "{ws}: the mark (and its gauge) is gone"
            );
        }
    }

    #[tokio::test]
    async fn empty_and_header_breaking_values_are_refused() {
        let creds = credentials();
        for secret in [
            Secret::Bearer { token: "  ".into() },
            Secret::Bearer {
                token: "line\nbreak".into(),
            },
            Secret::Basic {
                username: "a:b".into(),
                password: "pw-long".into(),
            },
        ] {
            let error = creds
                .set(&scope("a"), "token", secret)
                .await
                .expect_err("refused");
            assert!(matches!(error, CredentialError::Invalid(..)), "{error}");
        }
        assert!(creds.describe(&scope("a")).expect("describe").is_empty());
    }

    #[test]
    fn a_credential_never_collides_silently_with_the_plugins_own_headers() {
        let manifest = |extra: &str| CredentialRequest {
            name: "c".into(),
            kind: if extra == "header" {
                CredentialKind::ApiKeyHeader
            } else if extra == "param" {
                CredentialKind::ApiKeyQuery
            } else {
                CredentialKind::Bearer
            },
            description: String::new(),
            destinations: vec![
                patchbay_policy::http::Destination::parse("https://api.example.com/v1")
                    .expect("destination"),
            ],
            header: (extra == "header").then(|| "x-api-key".to_owned()),
            param: (extra == "param").then(|| "key".to_owned()),
            token_url: None,
            scopes: vec![],
        };
        let bound =
            |extra| BoundCredential::bind(&manifest(extra), &BTreeMap::new()).expect("bind");
        let mut auth = HeaderMap::new();
        auth.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer mine"),
        );
        let mut api_key = HeaderMap::new();
        api_key.insert("X-Api-Key", HeaderValue::from_static("mine"));
        let none = HeaderMap::new();
        assert!(bound("").collides_with(&auth, None).is_some());
        assert!(bound("").collides_with(&api_key, None).is_none());
        assert!(bound("header").collides_with(&api_key, None).is_some());
        assert!(bound("header").collides_with(&none, None).is_none());
        assert!(
            bound("param")
                .collides_with(&none, Some("q=1&KEY=mine"))
                .is_some()
        );
        assert!(bound("param").collides_with(&none, Some("q=1")).is_none());
        assert!(
            bound("")
                .applies_to(&Target::parse("GET", "https://api.example.com/v1/x").expect("url"))
        );
        assert!(
            !bound("")
                .applies_to(&Target::parse("GET", "https://api.example.com/v2/x").expect("url"))
        );
        assert!(
            !bound("")
                .applies_to(&Target::parse("GET", "https://evil.example.com/v1/x").expect("url"))
        );
    }

    #[test]
    fn every_wire_form_of_a_secret_is_sensitive() {
        use base64::engine::general_purpose::STANDARD;
        let b64 = |s: &str| STANDARD.encode(s);
        let cases: Vec<(Secret, Vec<String>)> = vec![
            (
                Secret::Basic {
                    username: "agent".into(),
                    password: "pw:1".into(),
                },
                vec!["pw:1".into(), b64("agent:pw:1")],
            ),
            (
                Secret::Oauth2ClientCredentials {
                    client_id: "id 1".into(),
                    client_secret: "s&cr=t".into(),
                },
                // RFC 6749 §2.3.1: each part form-encoded before base64.
                vec!["s&cr=t".into(), b64("id+1:s%26cr%3Dt")],
            ),
            (
                Secret::Oauth2RefreshToken {
                    client_id: "id".into(),
                    client_secret: Some("sec/ret".into()),
                    refresh_token: "rt-1".into(),
                },
                vec!["rt-1".into(), "sec/ret".into(), b64("id:sec%2Fret")],
            ),
        ];
        for (secret, expected) in cases {
            let sensitive = secret.sensitive_strings();
            for form in expected {
                assert!(
                    sensitive.contains(&form),
                    "{form} missing from {:?}",
                    secret.kind()
                );
            }
        }
    }
}
