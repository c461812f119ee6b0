//! OAuth2 access tokens for connections: client-credentials and refresh-token
//! grants (through the `oauth2` crate), cached per connection and credential.
//!
//! - One refresh at a time per credential: concurrent callers wait for it and
//!   share its token (a burst of calls makes one token request).
//! - A token is refreshed `skew` before it expires, not after a 401.
//! - A 401 from the upstream drops the token it refused (only that one: a
//!   newer token fetched meanwhile is kept) so the retry gets a fresh one.
//! - A refusal that will not go away by retrying (`invalid_grant`,
//!   `invalid_client`, …) marks the credential needs-attention, durably.
//! - A rotated refresh token is stored, durably, before the access token that
//!   came with it is used: losing it would lock the connection out.
//!
//! Token requests go through the same guarded client as plugin requests, so
//! the token endpoint is held to the operator's address policy too.

use super::{BoundCredential, CredentialError, Credentials, Secret};
use crate::audit::AuditLog;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{ClientId, ClientSecret, RefreshToken, RequestTokenError, TokenResponse, TokenUrl};
use patchbay_policy::call::CallId;
use patchbay_policy::ssrf::AddressPolicy;
use patchbay_storage::Scope;
use patchbay_storage::audit::{AuditRecord, Decision};
use secrecy::{ExposeSecret as _, SecretString};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long before expiry a token is replaced.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

/// Token endpoint responses are small; anything bigger is refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Token {
    access: SecretString,
    /// Milliseconds since the epoch; `None` when the server gave no lifetime.
    expires_at_ms: Option<u64>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Cached access tokens, one slot per (connection, credential).
pub(crate) struct Tokens {
    slots: Mutex<HashMap<(Scope, String), Slot>>,
    skew_ms: u64,
}

impl Tokens {
    pub(crate) fn new(skew: Duration) -> Self {
        Self {
            slots: Mutex::default(),
            skew_ms: u64::try_from(skew.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn slot(&self, scope: &Scope, name: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry((scope.clone(), name.to_owned()))
            .or_default()
            .clone()
    }

    pub(crate) fn forget(&self, scope: &Scope, name: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(&(scope.clone(), name.to_owned()));
    }
}

/// The HTTP client the `oauth2` crate calls the token endpoint with: the
/// host's guarded client, bounded by the invocation's deadline.
#[derive(Clone)]
pub struct TokenHttp {
    client: reqwest::Client,
    transport: Arc<dyn crate::Transport>,
    addresses: Arc<AddressPolicy>,
    deadline: Instant,
    /// Status of the last response, to classify a refusal without a JSON body.
    last_status: Arc<AtomicU16>,
    /// Where token requests are audited, for whom, and for which credential kind.
    audit: Option<(Arc<AuditLog>, Arc<CallId>, &'static str)>,
    /// When set, the token endpoint must match one of these (operator policy).
    operator_rules: Option<Arc<[patchbay_policy::http::Rule]>>,
}

/// Why a token-endpoint request got no response for the `oauth2` crate to
/// read.
#[derive(Debug, thiserror::Error)]
pub enum TokenHttpError {
    /// The token URL names an IP address operator policy refuses; nothing was
    /// sent. (A name that resolves only to refused addresses is a `Transport`
    /// error.)
    #[error("{0}")]
    Refused(String),
    /// Operator policy's destination rules do not allow the token endpoint:
    /// nothing was sent, and the credential itself is not at fault.
    #[error("{0}")]
    NotAllowed(String),
    /// The invocation's deadline passed before the response was read whole.
    #[error("timed out")]
    Timeout,
    /// The token URL is unusable, or connecting, sending or reading failed: the
    /// error and its causes.
    #[error("{0}")]
    Transport(String),
    /// The response body is over 64 KiB.
    #[error("token response is over {MAX_TOKEN_RESPONSE_BYTES} bytes")]
    TooLarge,
}

impl TokenHttp {
    /// Token requests on `client` (the egress's guarded client) through
    /// `transport`, held to the operator's `addresses` and ending by
    /// `deadline`, the invocation's.
    pub fn new(
        client: reqwest::Client,
        transport: Arc<dyn crate::Transport>,
        addresses: Arc<AddressPolicy>,
        deadline: Instant,
    ) -> Self {
        Self {
            client,
            transport,
            addresses,
            deadline,
            last_status: Arc::default(),
            audit: None,
            operator_rules: None,
        }
    }

    /// Hold token requests to the operator's destination rules too, like a
    /// plugin's own requests.
    pub fn within(mut self, operator_rules: Option<Arc<[patchbay_policy::http::Rule]>>) -> Self {
        self.operator_rules = operator_rules;
        self
    }

    /// Record every token request in the audit trail, like a plugin's own.
    pub fn audited(mut self, audit: Arc<AuditLog>, call: Arc<CallId>, kind: &'static str) -> Self {
        self.audit = Some((audit, call, kind));
        self
    }

    async fn send(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, TokenHttpError> {
        let Some((audit, call, kind)) = &self.audit else {
            return self.exchange(request).await;
        };
        let mut record = AuditRecord::new(
            call,
            audit.now_ms(),
            request.method().as_str(),
            request.uri(),
        );
        let body_len = request.body().len() as u64;
        record.credential = Some((*kind).to_owned());
        let started = Instant::now();
        let result = self.exchange(request).await;
        record.latency_ms = started.elapsed().as_millis() as u64;
        // Bytes count as sent only once a connection took them.
        match &result {
            Ok(response) => {
                record.bytes_out = body_len;
                record.status = Some(response.status().as_u16());
                record.bytes_in = response.body().len() as u64;
            }
            Err(TokenHttpError::Refused(reason) | TokenHttpError::NotAllowed(reason)) => {
                record.decision = Decision::Denied;
                record.reason = Some(reason.clone());
            }
            Err(error) => record.reason = Some(error.to_string()),
        }
        audit.record(&record);
        result
    }

    async fn exchange(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, TokenHttpError> {
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| TokenHttpError::Transport(format!("bad token url: {e}")))?;
        let target = patchbay_policy::http::Target::from_url(parts.method.as_str(), url)
            .map_err(|e| TokenHttpError::Transport(format!("bad token url: {e}")))?;
        if !patchbay_policy::http::operator_allows(self.operator_rules.as_deref(), &target) {
            return Err(TokenHttpError::NotAllowed(
                "operator policy does not allow this token endpoint".into(),
            ));
        }
        self.addresses
            .allows_host(&target.host)
            .map_err(|(ip, class)| {
                TokenHttpError::Refused(format!(
                    "address {ip} is {class} and operator policy does not allow it"
                ))
            })?;
        let url = target.url;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let request = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .timeout(left)
            .build()
            .map_err(|e| TokenHttpError::Transport(crate::error_chain(&e.without_url())))?;
        let response = self
            .transport
            .execute(&self.client, request)
            .await
            .map_err(|e| match e {
                crate::EgressError::Timeout => TokenHttpError::Timeout,
                other => TokenHttpError::Transport(other.to_string()),
            })?;
        self.last_status
            .store(response.status().as_u16(), Ordering::Relaxed);
        let mut builder = http::Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
        }
        let mut body = Vec::new();
        let mut stream = response;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, stream.chunk())
                .await
                .map_err(|_| TokenHttpError::Timeout)?
                .map_err(|e| TokenHttpError::Transport(e.without_url().to_string()))?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(TokenHttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| TokenHttpError::Transport(e.to_string()))
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp {
    type Error = TokenHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, TokenHttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// How a token request ended, when it did not give a token.
enum Failure {
    /// Retrying will not help: the tenant must fix the credential.
    Refused(String),
    /// The endpoint may answer next time.
    Transient(String),
}

impl Credentials {
    /// A valid access token for `credential`: the cached one unless it is near
    /// expiry or is `rejected`, else a fresh one (one request for all waiters).
    pub(super) async fn access_token(
        &self,
        scope: &Scope,
        credential: &BoundCredential,
        http: &TokenHttp,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, CredentialError> {
        let slot = self.tokens.slot(scope, &credential.name);
        let mut cached = slot.lock().await;
        let now = (self.clock)();
        if let Some(token) = cached.as_ref() {
            let refused =
                rejected.is_some_and(|r| r.expose_secret() == token.access.expose_secret());
            let due = token
                .expires_at_ms
                .is_some_and(|at| now.saturating_add(self.tokens.skew_ms) >= at);
            if !refused && !due {
                return Ok(token.access.clone());
            }
        }
        *cached = None;
        // Waiters that queued behind a failed refresh see the mark and fail fast.
        let stored = match self.get(scope, &credential.name)? {
            Some(latest) => latest,
            None => return Err(CredentialError::NotSet(credential.name.clone())),
        };
        if let Some(reason) = &stored.problem {
            return Err(CredentialError::NeedsAttention {
                name: credential.name.clone(),
                reason: reason.clone(),
            });
        }
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
        let scrubber = super::scrub::Scrubber::new(stored.secret.sensitive_strings());
        let token = match self.exchange(scope, credential, &stored.secret, http).await {
            Ok(token) => token,
            Err(Failure::Refused(reason)) => {
                let reason = scrubber.scrub_str(&reason);
                self.counters.token_failures.fetch_add(1, Ordering::Relaxed);
                self.mark_needs_attention(scope, &credential.name, &reason)
                    .await?;
                return Err(CredentialError::NeedsAttention {
                    name: credential.name.clone(),
                    reason,
                });
            }
            Err(Failure::Transient(message)) => {
                self.counters.token_failures.fetch_add(1, Ordering::Relaxed);
                return Err(CredentialError::TokenEndpoint {
                    name: credential.name.clone(),
                    message: scrubber.scrub_str(&message),
                });
            }
        };
        let access = token.access.clone();
        *cached = Some(token);
        Ok(access)
    }

    /// One token request. A rotated refresh token is stored before returning.
    async fn exchange(
        &self,
        scope: &Scope,
        credential: &BoundCredential,
        secret: &Secret,
        http: &TokenHttp,
    ) -> Result<Token, Failure> {
        let response = request_token(credential, secret, http).await?;
        let access = SecretString::from(response.access_token().secret().to_owned());
        let now = (self.clock)();
        let expires_at_ms = response
            .expires_in()
            .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        if let Some(rotated) = response.refresh_token() {
            self.keep_rotated(scope, credential, secret, rotated)
                .await?;
        }
        Ok(Token {
            access,
            expires_at_ms,
        })
    }

    /// Store the refresh token the endpoint rotated `secret`'s to, if it did,
    /// so the next refresh uses it.
    async fn keep_rotated(
        &self,
        scope: &Scope,
        credential: &BoundCredential,
        secret: &Secret,
        rotated: &RefreshToken,
    ) -> Result<(), Failure> {
        let Secret::Oauth2RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } = secret
        else {
            return Ok(());
        };
        if rotated.secret() == refresh_token.expose_secret() {
            return Ok(());
        }
        // Only over the value that was refreshed: a credential set anew, or
        // removed (the connection deleted or moved to another plugin) while
        // the request was out, is not brought back.
        let unchanged = matches!(
            self.get(scope, &credential.name),
            Ok(Some(stored)) if matches!(
                &stored.secret,
                Secret::Oauth2RefreshToken { refresh_token: current, .. }
                    if current.expose_secret() == refresh_token.expose_secret()
            )
        );
        if !unchanged {
            tracing::info!(target: "patchbay::credentials", workspace = %scope.workspace,
                connection = %scope.connection, credential = %credential.name,
                "the credential changed while its token was refreshed: the rotated refresh token is not stored");
            return Ok(());
        }
        let next = Secret::Oauth2RefreshToken {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            refresh_token: SecretString::from(rotated.secret().to_owned()),
        };
        self.write(scope, &credential.name, next, None)
            .await
            .map_err(|e| {
                Failure::Transient(format!("could not store the rotated refresh token: {e}"))
            })?;
        tracing::info!(target: "patchbay::credentials", workspace = %scope.workspace,
            connection = %scope.connection, credential = %credential.name,
            "stored a rotated refresh token");
        Ok(())
    }
}

/// Ask `credential`'s token endpoint for an access token with `secret`: the
/// client-credentials grant, or the refresh-token grant.
async fn request_token(
    credential: &BoundCredential,
    secret: &Secret,
    http: &TokenHttp,
) -> Result<oauth2::basic::BasicTokenResponse, Failure> {
    let token_url = credential
        .token_url
        .clone()
        .ok_or_else(|| Failure::Refused("the manifest gives no token_url".into()))?;
    let token_url = TokenUrl::new(token_url)
        .map_err(|e| Failure::Refused(format!("token_url is not a URL: {e}")))?;
    let scopes = credential
        .scopes
        .iter()
        .map(|s| oauth2::Scope::new(s.clone()));
    let response = match secret {
        Secret::Oauth2ClientCredentials {
            client_id,
            client_secret,
        } => {
            BasicClient::new(ClientId::new(client_id.clone()))
                .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
                .set_token_uri(token_url)
                .exchange_client_credentials()
                .add_scopes(scopes)
                .request_async(http)
                .await
        }
        Secret::Oauth2RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => {
            let mut client =
                BasicClient::new(ClientId::new(client_id.clone())).set_token_uri(token_url);
            if let Some(client_secret) = client_secret {
                client = client
                    .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()));
            }
            let refresh = RefreshToken::new(refresh_token.expose_secret().to_owned());
            client
                .exchange_refresh_token(&refresh)
                .add_scopes(scopes)
                .request_async(http)
                .await
        }
        _ => {
            return Err(Failure::Refused(format!(
                "stored value is a {}, not an OAuth2 credential",
                secret.kind().as_str()
            )));
        }
    };
    response.map_err(|e| classify(e, http.last_status.load(Ordering::Relaxed)))
}

fn classify(
    error: RequestTokenError<TokenHttpError, oauth2::basic::BasicErrorResponse>,
    status: u16,
) -> Failure {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error();
            let transient = matches!(code, BasicErrorResponseType::Extension(e) if e == "temporarily_unavailable")
                || status >= 500;
            let mut reason = format!("token endpoint refused: {}", code.as_ref());
            if let Some(description) = response.error_description() {
                reason.push_str(&format!(" ({description})"));
            }
            if transient {
                Failure::Transient(reason)
            } else {
                Failure::Refused(reason)
            }
        }
        RequestTokenError::Request(TokenHttpError::Refused(reason)) => Failure::Refused(reason),
        RequestTokenError::Request(e) => Failure::Transient(e.to_string()),
        // The body may hold anything; it is not repeated.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => match status {
            400 | 401 | 403 => {
                Failure::Refused(format!("token endpoint refused the client (HTTP {status})"))
            }
            _ => Failure::Transient(format!(
                "token endpoint sent an unusable response (HTTP {status})"
            )),
        },
    }
}
