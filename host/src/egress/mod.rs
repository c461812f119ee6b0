//! The one door out: a shared, pooled HTTP client for every plugin's requests.
//!
//! Requests arrive from the wasi:http hook already matched against the
//! connection's destination rules; here they are checked against the
//! operator's address policy (literal IPs directly, names through
//! [`resolve::GuardedResolver`]), sent on a keep-alive pool with deadlines, and
//! held to size caps while streaming. Redirects are never followed.

pub mod breaker;
pub mod rate;
pub mod resolve;
pub mod retry;

use crate::policy::rate::RateLimit;
use crate::policy::ssrf::{AddressClass, AddressPolicy};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use resolve::{GuardedResolver, NameLookup, RefusedAddress};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// Size limits for one request and its response, and when to stop calling a failing upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub breaker: breaker::BreakerConfig,
}

impl Default for EgressLimits {
    fn default() -> Self {
        let operator = crate::policy::limits::OperatorLimits::default();
        Self {
            max_request_bytes: operator.max_request_body_bytes,
            max_response_bytes: operator.max_response_body_bytes,
            breaker: operator.circuit_breaker,
        }
    }
}

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("destination address refused: {0}")]
    AddressRefused(String),
    #[error("request body is over {0} bytes")]
    RequestTooLarge(usize),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("circuit open after repeated failures; retry in {0:?}")]
    CircuitOpen(Duration),
}

impl EgressError {
    /// The wasi:http error code the plugin sees.
    pub fn to_http_error(&self) -> HttpError {
        match self {
            Self::AddressRefused(_) => HttpError::DestinationIpProhibited,
            Self::RequestTooLarge(n) => HttpError::HttpRequestBodySize(Some(*n as u64)),
            Self::InvalidRequest(_) => HttpError::HttpRequestUriInvalid,
            Self::Timeout => HttpError::ConnectionTimeout,
            Self::Connect(_) => HttpError::ConnectionRefused,
            Self::Upstream(_) => HttpError::HttpProtocolError,
            Self::CircuitOpen(_) => HttpError::DestinationUnavailable,
        }
    }
}

/// The shared egress: one client and pool for all plugins and tenants.
pub struct Egress {
    client: reqwest::Client,
    addresses: Arc<AddressPolicy>,
    limits: EgressLimits,
    rates: rate::RateLimiters,
    breakers: breaker::Breakers,
}

/// What one request is sent on behalf of.
#[derive(Debug, Clone)]
pub struct Call {
    /// Nothing waits past this.
    pub deadline: Instant,
    /// 32 hex digits: the invocation id, sent upstream in `traceparent`.
    pub trace_id: String,
    pub workspace: String,
    pub rate_limit: RateLimit,
}

impl Egress {
    pub fn new(
        addresses: AddressPolicy,
        lookup: Arc<dyn NameLookup>,
        limits: EgressLimits,
    ) -> Result<Self, EgressError> {
        let addresses = Arc::new(addresses);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| EgressError::InvalidRequest(format!("tls configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .dns_resolver(Arc::new(GuardedResolver {
                lookup,
                policy: addresses.clone(),
            }))
            .build()
            .map_err(|e| EgressError::InvalidRequest(format!("building the http client: {e}")))?;
        Ok(Self {
            client,
            addresses,
            breakers: breaker::Breakers::new(limits.breaker),
            limits,
            rates: rate::RateLimiters::default(),
        })
    }

    /// Check a literal IP host before anything is sent (the resolver never sees literals).
    pub fn check_literal(&self, host: &str) -> Result<(), (IpAddr, AddressClass)> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.addresses.allows(ip).map_err(|class| (ip, class)),
            Err(_) => Ok(()),
        }
    }

    /// Send `request`, bounded by `deadline` and the plugin's own timeouts,
    /// retrying idempotent requests on retryable outcomes (see [`retry`]).
    /// Each attempt first takes a slot from the workspace's rate limit for the
    /// origin; when the next slot is past the deadline the plugin gets a 429
    /// from the host, with `Retry-After`, at once.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: RequestOptions,
        call: &Call,
    ) -> Result<http::Response<WasiBody>, EgressError> {
        let deadline = call.deadline;
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, self.limits.max_request_bytes)
            .collect()
            .await
            .map_err(|_| EgressError::RequestTooLarge(self.limits.max_request_bytes))?
            .to_bytes();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| EgressError::InvalidRequest(e.to_string()))?;
        let mut headers = parts.headers;
        // reqwest derives Host from the URL; the plugin's copy could disagree with it.
        headers.remove(http::header::HOST);
        let idempotent = retry::is_idempotent(&parts.method, &headers);
        let backoff = retry::Backoff::default();
        let mut rng = fastrand::Rng::new();
        let mut attempt = 1;
        let origin = format!("{}://{}", url.scheme(), url.authority());
        let breaker = self.breakers.get(&call.workspace, &origin);
        loop {
            // An open circuit fails fast, before spending a rate-limit slot.
            let permit = breaker.admit(Instant::now()).map_err(|open| {
                tracing::info!(target: "patchbay::egress", workspace = %call.workspace, %origin,
                    retry_after = ?open.retry_after, "circuit open: failing fast");
                EgressError::CircuitOpen(open.retry_after)
            })?;
            if let Err(limited) = self
                .rates
                .acquire(&call.workspace, &origin, call.rate_limit, deadline)
                .await
            {
                tracing::info!(target: "patchbay::egress", workspace = %call.workspace, %origin,
                    retry_after = ?limited.retry_after, "outbound request rate-limited by the host");
                return Ok(rate_limited_response(limited.retry_after));
            }
            headers.insert("traceparent", traceparent(&call.trace_id, &mut rng));
            let left = deadline.saturating_duration_since(Instant::now());
            let total = [options.first_byte_timeout, Some(left)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(left);
            let request = self
                .client
                .request(parts.method.clone(), url.clone())
                .headers(headers.clone())
                // Bytes clones share the buffer: a retry resends without copying.
                .body(body.clone())
                .timeout(total)
                .build()
                .map_err(|e| EgressError::InvalidRequest(e.to_string()))?;
            let result = self.client.execute(request).await.map_err(classify);
            let outcome = match &result {
                Ok(response) => retry::Outcome::Status(response.status().as_u16()),
                Err(EgressError::Connect(_)) => retry::Outcome::Connect,
                Err(EgressError::Timeout) => retry::Outcome::Timeout,
                Err(_) => retry::Outcome::Other,
            };
            let failed = matches!(
                outcome,
                retry::Outcome::Connect
                    | retry::Outcome::Timeout
                    | retry::Outcome::Status(500 | 502 | 503 | 504)
            );
            breaker.record(permit, !failed, Instant::now());
            if attempt >= retry::MAX_ATTEMPTS || !idempotent || !retry::is_retryable(outcome) {
                return result.map(|response| {
                    self.wasi_response(response, deadline, options.between_bytes_timeout)
                });
            }
            let wait = match &result {
                Ok(response) => {
                    retry::retry_after(response.headers(), std::time::SystemTime::now())
                }
                Err(_) => None,
            }
            .unwrap_or_else(|| backoff.delay(attempt, &mut rng));
            if Instant::now() + wait >= deadline {
                // No time to wait: hand over what we have (a 429 carries its
                // Retry-After, which the plugin turns into rate-limited).
                return result.map(|response| {
                    self.wasi_response(response, deadline, options.between_bytes_timeout)
                });
            }
            tracing::debug!(target: "patchbay::egress", attempt, ?outcome, ?wait, "retrying outbound request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn wasi_response(
        &self,
        response: reqwest::Response,
        deadline: Instant,
        between_bytes: Option<Duration>,
    ) -> http::Response<WasiBody> {
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
        }
        let max = self.limits.max_response_bytes;
        let mut seen = 0usize;
        let stream = response.bytes_stream().map(move |chunk| {
            let chunk: Bytes = chunk.map_err(|e| {
                if e.is_timeout() {
                    HttpError::ConnectionReadTimeout
                } else {
                    HttpError::HttpResponseIncomplete
                }
            })?;
            seen += chunk.len();
            if seen > max {
                return Err(HttpError::HttpResponseBodySize(Some(seen as u64)));
            }
            Ok(http_body::Frame::data(chunk))
        });
        let stream = bounded_stream(stream, deadline, between_bytes);
        let body = StreamBody::new(stream).boxed_unsync();
        builder.body(body).unwrap_or_else(|_| {
            http::Response::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
        })
    }
}

/// Ends the body with a timeout error at the call's deadline or when the gap
/// between chunks exceeds `between_bytes`.
fn bounded_stream<S>(
    stream: S,
    deadline: Instant,
    between_bytes: Option<Duration>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, HttpError>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<http_body::Frame<Bytes>, HttpError>> + Send + 'static,
{
    // The state is `None` after an error, so the body ends there.
    futures_util::stream::unfold(Some(Box::pin(stream)), move |state| async move {
        let mut stream = state?;
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = between_bytes.map_or(left, |b| b.min(left));
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(frame))) => Some((Ok(frame), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => Some((Err(HttpError::ConnectionReadTimeout), None)),
        }
    })
}

/// The host's own 429: the plugin handles it like an upstream one.
fn rate_limited_response(retry_after: Duration) -> http::Response<WasiBody> {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = http::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(seconds.max(1)),
    );
    headers.insert("x-patchbay-limit", http::HeaderValue::from_static("rate"));
    response
}

/// `00-<trace id>-<fresh span id>-01`; a malformed trace id gets a fresh one.
fn traceparent(trace_id: &str, rng: &mut fastrand::Rng) -> http::HeaderValue {
    let trace = if trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        trace_id.to_ascii_lowercase()
    } else {
        format!("{:032x}", rng.u128(1..))
    };
    let value = format!("00-{trace}-{:016x}-01", rng.u64(1..));
    http::HeaderValue::from_str(&value).unwrap_or_else(|_| {
        http::HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

fn classify(error: reqwest::Error) -> EgressError {
    let mut source: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return EgressError::AddressRefused(refused.to_string());
        }
        source = e.source();
    }
    if error.is_timeout() {
        EgressError::Timeout
    } else if error.is_connect() {
        EgressError::Connect(error.to_string())
    } else {
        EgressError::Upstream(error.to_string())
    }
}
