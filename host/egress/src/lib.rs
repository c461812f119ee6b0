//! The one door out: a shared, pooled HTTP client for every plugin's requests.
//!
//! Requests arrive from the wasi:http hook already matched against the
//! connection's destination rules; here they are checked against the
//! operator's address policy (literal IPs directly, names through
//! [`resolve::GuardedResolver`]), sent on a keep-alive pool with deadlines, and
//! held to size caps while streaming. Redirects are never followed.

#![warn(missing_docs)]

pub mod audit;
pub mod breaker;
pub mod coding;
pub mod credentials;
pub mod rate;
pub mod replay;
pub mod resolve;
pub mod retry;

use crate::audit::AuditLog;
use crate::credentials::scrub::Scrubber;
use crate::credentials::{BoundCredential, CredentialError, Credentials, oauth::TokenHttp};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Limited, StreamBody};
use patchbay_policy::call::CallId;
use patchbay_policy::http::{Target, TargetHost};
use patchbay_policy::rate::RateLimit;
use patchbay_policy::ssrf::{AddressClass, AddressPolicy};
use patchbay_storage::Scope;
use patchbay_storage::audit::{AuditRecord, Decision};
use resolve::{GuardedResolver, NameLookup, RefusedAddress};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size limits for one request and its response, and when to stop calling a failing upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    /// Largest request body read and sent, in bytes; a bigger one is refused
    /// before anything is sent ([`EgressError::RequestTooLarge`]).
    pub max_request_bytes: usize,
    /// Largest response body handed over, in bytes, counted after decoding; past
    /// it the body ends with [`BodyError::TooLarge`].
    pub max_response_bytes: usize,
    /// When a (workspace, origin)'s circuit breaker opens, and for how long.
    pub breaker: breaker::BreakerConfig,
    /// Requests one connection may have in flight at once, bodies still being
    /// read included (0 counts as 1); a request waits for a slot until its
    /// call's deadline.
    pub max_concurrent_per_connection: usize,
    /// How long opening a connection to an upstream may take.
    pub connect_timeout: Duration,
}

impl EgressLimits {
    /// The egress part of the operator's limits.
    pub fn from_operator(operator: &patchbay_policy::limits::OperatorLimits) -> Self {
        Self {
            max_request_bytes: operator.max_request_body_bytes,
            max_response_bytes: operator.max_response_body_bytes,
            breaker: operator.circuit_breaker,
            max_concurrent_per_connection: operator.max_concurrent_requests_per_connection,
            connect_timeout: Duration::from_millis(u64::from(operator.connect_timeout_ms)),
        }
    }
}

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Operator address policy refuses where the request would go (a literal
    /// IP, or every address its name resolved to): why. Nothing was sent.
    #[error("destination address refused: {0}")]
    AddressRefused(String),
    /// The request body is over the limit, in bytes (given); nothing was sent.
    #[error("request body is over {0} bytes")]
    RequestTooLarge(usize),
    /// The request cannot be sent as given (it sets `Host`, or the client
    /// cannot build it), or the shared client could not be set up.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The call's deadline or the request's first-byte timeout passed, or none
    /// of the connection's in-flight slots freed up in time.
    #[error("timed out")]
    Timeout,
    /// No connection to the upstream could be opened, so nothing was sent: the
    /// error and its causes.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The exchange failed after the request went out; the upstream may have
    /// acted on it.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The (workspace, origin)'s breaker is open, so the upstream was not
    /// contacted; how long until it admits a trial request.
    #[error("circuit open after repeated failures; retry in {0:?}")]
    CircuitOpen(Duration),
    /// Already scrubbed of secret values.
    #[error("{0}")]
    Credential(String),
    /// A response to a credentialed request that the host cannot read whole to
    /// scrub (partial content, an unknown or stacked coding), or a scrubber that
    /// could not be built: withheld from the plugin, with why.
    #[error("response refused: {0}")]
    Unscrubbable(String),
}

/// Why a response body ended before its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No data within the read timeout, or the call's deadline passed.
    #[error("no data in time")]
    ReadTimeout,
    /// The upstream stopped sending before the end.
    #[error("the upstream ended the body early")]
    Incomplete,
    /// The body's content coding could not be decoded.
    #[error("the body could not be decoded")]
    ContentCoding,
    /// The body (decoded) passed the response size limit; this many bytes were seen.
    #[error("the body is over the size limit ({0} bytes seen)")]
    TooLarge(u64),
}

/// A response body as the egress hands it over: streamed, capped, scrubbed.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// A request's own timeouts, besides the call's deadline (which always holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the response's head arrives.
    pub first_byte: Option<Duration>,
    /// The longest gap between two chunks of the response body.
    pub between_bytes: Option<Duration>,
}

/// Where a request goes once the host has checked, authorized and admitted
/// it: the network ([`Network`]), or a recording ([`replay::Replay`], for
/// the conformance kit). Everything before (destination rules, addresses,
/// credentials, rate limits, breakers, retries, audit) and after (reading,
/// decoding and scrubbing the body) is the same whatever the transport.
pub trait Transport: Send + Sync {
    /// Send `request` on `client` (the host's guarded, pooled client):
    /// the response head, or why there is none.
    fn execute<'a>(
        &'a self,
        client: &'a reqwest::Client,
        request: reqwest::Request,
    ) -> futures_util::future::BoxFuture<'a, Result<reqwest::Response, EgressError>>;
}

/// The network: requests go out on the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Network;

impl Transport for Network {
    fn execute<'a>(
        &'a self,
        client: &'a reqwest::Client,
        request: reqwest::Request,
    ) -> futures_util::future::BoxFuture<'a, Result<reqwest::Response, EgressError>> {
        Box::pin(async move { client.execute(request).await.map_err(classify) })
    }
}

/// The shared egress: one client and pool for all plugins and tenants.
pub struct Egress {
    client: reqwest::Client,
    transport: Arc<dyn Transport>,
    addresses: Arc<AddressPolicy>,
    limits: EgressLimits,
    rates: rate::RateLimiters,
    breakers: breaker::Breakers,
    credentials: Arc<Credentials>,
    audit: Arc<AuditLog>,
    in_flight: std::sync::Mutex<std::collections::HashMap<Scope, Arc<tokio::sync::Semaphore>>>,
    /// When set, a request must also match one of these (operator policy).
    operator_rules: Option<Arc<[patchbay_policy::http::Rule]>>,
}

/// What one request is sent on behalf of.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Nothing waits past this.
    pub deadline: Instant,
    /// The invocation the request is made for: how the audit trail records
    /// it, and (its invocation id) the trace id sent upstream in `traceparent`.
    pub id: Arc<CallId>,
    /// The connection the request is made for; rate limits and breakers are per workspace.
    pub scope: Arc<Scope>,
    /// The request rate allowed to the (workspace, origin); the first limit a
    /// workspace's limiter for an origin is created with is the one it keeps.
    pub rate_limit: RateLimit,
    /// The host-held credential to add, when the request matches its destinations.
    pub credential: Option<BoundCredential>,
}

impl Egress {
    /// The egress under the operator's address policy `addresses`: one shared
    /// client (rustls with the webpki roots, no proxy, no redirects) that
    /// resolves names through `lookup`, refusing addresses the policy does not
    /// allow. Fails only if TLS or the client cannot be set up.
    pub fn new(
        addresses: AddressPolicy,
        lookup: Arc<dyn NameLookup>,
        limits: EgressLimits,
        credentials: Arc<Credentials>,
        audit: Arc<AuditLog>,
    ) -> Result<Self, EgressError> {
        let addresses = Arc::new(addresses);
        let tls = tls_config()
            .map_err(|e| EgressError::InvalidRequest(format!("tls configuration: {e}")))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .connect_timeout(limits.connect_timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                lookup,
                policy: addresses.clone(),
            }))
            .build()
            .map_err(|e| EgressError::InvalidRequest(format!("building the http client: {e}")))?;
        Ok(Self {
            client,
            transport: Arc::new(Network),
            addresses,
            breakers: breaker::Breakers::new(limits.breaker),
            limits,
            rates: rate::RateLimiters::default(),
            credentials,
            audit,
            in_flight: Default::default(),
            operator_rules: None,
        })
    }

    /// Send every request through `transport` instead of the network.
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// Restrict every plugin to destinations matching `rules` (operator policy).
    pub fn with_operator_destinations(mut self, rules: Vec<patchbay_policy::http::Rule>) -> Self {
        self.operator_rules = Some(rules.into());
        self
    }

    /// The operator's destination rules, when operator policy restricts them.
    pub fn operator_destinations(&self) -> Option<Arc<[patchbay_policy::http::Rule]>> {
        self.operator_rules.clone()
    }

    /// The semaphore bounding `scope`'s requests in flight.
    fn connection_slots(&self, scope: &Scope) -> Arc<tokio::sync::Semaphore> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(scope.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.limits.max_concurrent_per_connection.max(1),
                ))
            })
            .clone()
    }

    /// Every connection's credentials (the runtime checks webhook signatures
    /// with them, without ever handing one to a plugin).
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The circuit breakers of every (workspace, origin), for reporting.
    pub fn breakers(&self) -> &breaker::Breakers {
        &self.breakers
    }

    /// The audit trail every outbound attempt is written to; the runtime writes
    /// the requests it refuses there too.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The operator's address policy.
    pub fn address_policy(&self) -> &AddressPolicy {
        &self.addresses
    }

    /// Check an address host before anything is sent (the resolver never sees addresses).
    pub fn check_host(&self, host: &TargetHost) -> Result<(), (IpAddr, AddressClass)> {
        self.addresses.allows_host(host)
    }

    /// Send `request`, bounded by the call's deadline and `timeouts`,
    /// retrying idempotent requests on retryable outcomes (see [`retry`]).
    /// `target` is `request`'s destination as the caller parsed and checked
    /// it; the client is handed exactly that URL (and derives `Host` from it).
    ///
    /// Each attempt is authorized (the host-held credential added), admitted
    /// (a connection slot, the breaker, a rate-limit slot) and sent; the host
    /// answers itself when the credential cannot be used (401) or the rate
    /// limit's next slot is past the deadline (429 with `Retry-After`).
    pub async fn send<B>(
        &self,
        request: http::Request<B>,
        target: Target,
        timeouts: Timeouts,
        call: &Caller,
    ) -> Result<http::Response<ResponseBody>, EgressError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.check_address(&target)?;
        let outgoing = self.prepare(request, target, timeouts, call).await?;
        let breaker = self.breakers.get(&call.scope.workspace, &outgoing.origin);
        let mut retry = Retry::new(&outgoing);
        loop {
            let mut record = retry.record(self, call, &outgoing);
            let authorized = match self.authorize(&outgoing, call, &mut record, &retry).await? {
                Step::Go(authorized) => authorized,
                Step::Answer(response) => return Ok(response),
            };
            let admitted = match self
                .admit(call, &outgoing.origin, &breaker, &record)
                .await?
            {
                Step::Go(admitted) => admitted,
                Step::Answer(response) => return Ok(response),
            };
            let Authorized {
                headers,
                url,
                applied,
            } = authorized;
            let result = self
                .attempt(&outgoing, headers, url, call, &mut record)
                .await;
            let outcome = retry::Outcome::of(&result);
            admitted
                .breaker
                .record(!outcome.is_failure(), Instant::now());
            match retry.next(outcome, &result, applied.as_ref(), call.deadline) {
                // This failure opened the breaker: a resend would be refused
                // unsent, so the caller gets the upstream's own answer (and
                // knows the request did reach it).
                Next::Resend { .. }
                    if breaker.state(Instant::now()) == breaker::BreakerState::Open =>
                {
                    return self.finish(result, record, applied, admitted.slot, &outgoing, call);
                }
                Next::Resend { wait } => {
                    self.audit.record(&record);
                    tracing::debug!(target: "patchbay::egress", attempt = retry.sent(), ?outcome,
                        ?wait, workspace = %call.scope.workspace, origin = %outgoing.origin,
                        "resending outbound request");
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Next::Finish => {
                    return self.finish(result, record, applied, admitted.slot, &outgoing, call);
                }
            }
        }
    }

    /// The address check again: the caller's decision holds only for the
    /// address it checked, so the client never dials a literal the policy refuses.
    fn check_address(&self, target: &Target) -> Result<(), EgressError> {
        self.check_host(&target.host).map_err(|(ip, class)| {
            EgressError::AddressRefused(format!(
                "address {ip} is {class} and operator policy does not allow it"
            ))
        })
    }

    /// Read the body whole (under the size limit, so a retry can resend it)
    /// and set the headers the host manages. After a credentialed request,
    /// only what the host can read whole may come back: it picks the codings
    /// (those it decodes itself), and asks for no partial content and no
    /// transfer coding but chunked.
    async fn prepare<B>(
        &self,
        request: http::Request<B>,
        target: Target,
        timeouts: Timeouts,
        call: &Caller,
    ) -> Result<Outgoing, EgressError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        if parts.headers.contains_key(http::header::HOST) {
            return Err(EgressError::InvalidRequest(
                "a Host header is not sent: the URL names the host".into(),
            ));
        }
        let max = self.limits.max_request_bytes;
        let body = Limited::new(body, max)
            .collect()
            .await
            .map_err(|_| EgressError::RequestTooLarge(max))?
            .to_bytes();
        let mut headers = parts.headers;
        if call.credential.is_some() {
            headers.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static(coding::ACCEPTED),
            );
            headers.remove(http::header::RANGE);
            headers.remove(http::header::TE);
        }
        Ok(Outgoing {
            idempotent: retry::is_idempotent(&parts.method, &headers),
            method: parts.method,
            // Canonical, so `a.com.` and `A.com:443` share `a.com`'s limits.
            origin: target.origin(),
            target,
            headers,
            body,
            timeouts,
        })
    }

    /// Add the connection's credential to a copy of the request's headers and
    /// URL. A credential the tenant must fix gets the host's own 401.
    async fn authorize(
        &self,
        outgoing: &Outgoing,
        call: &Caller,
        record: &mut AuditRecord,
        retry: &Retry,
    ) -> Result<Step<Authorized>, EgressError> {
        let mut authorized = Authorized {
            headers: outgoing.headers.clone(),
            url: outgoing.target.url.clone(),
            applied: None,
        };
        let Some(credential) = &call.credential else {
            return Ok(Step::Go(authorized));
        };
        let kind = credential.kind.as_str();
        record.credential = Some(kind.to_owned());
        let http = TokenHttp::new(
            self.client.clone(),
            self.transport.clone(),
            self.addresses.clone(),
            call.deadline,
        )
        .audited(self.audit.clone(), call.id.clone(), kind)
        .within(self.operator_rules.clone());
        let applied = self
            .credentials
            .apply(
                &call.scope,
                credential,
                &mut authorized.headers,
                &mut authorized.url,
                &http,
                retry.refused_token.as_ref(),
            )
            .await;
        match applied {
            Ok(applied) => {
                authorized.applied = Some(applied);
                Ok(Step::Go(authorized))
            }
            Err(error) => {
                self.hold(record, error.to_string());
                if error.needs_tenant() {
                    Ok(Step::Answer(credential_unavailable_response(&error)))
                } else {
                    Err(EgressError::Credential(error.to_string()))
                }
            }
        }
    }

    /// Take a place for one attempt: one of the connection's in-flight slots,
    /// then the breaker (an open circuit fails fast, before a rate-limit slot
    /// is spent), then a slot from the workspace's rate limit for the origin.
    async fn admit(
        &self,
        call: &Caller,
        origin: &str,
        breaker: &Arc<breaker::Breaker>,
        record: &AuditRecord,
    ) -> Result<Step<Admitted>, EgressError> {
        let workspace = call.scope.workspace.as_str();
        let slots = self.connection_slots(&call.scope).acquire_owned();
        let Ok(Ok(slot)) = tokio::time::timeout_at(call.deadline.into(), slots).await else {
            let max = self.limits.max_concurrent_per_connection;
            self.hold(
                record,
                format!("the connection already has {max} requests in flight"),
            );
            return Err(EgressError::Timeout);
        };
        let admission = match breaker::Breaker::admit_guarded(breaker, Instant::now()) {
            Ok(admission) => admission,
            Err(open) => {
                tracing::info!(target: "patchbay::egress", workspace, %origin,
                    retry_after = ?open.retry_after, "circuit open: failing fast");
                self.hold(
                    record,
                    format!("circuit open; retry in {:?}", open.retry_after),
                );
                return Err(EgressError::CircuitOpen(open.retry_after));
            }
        };
        let rate = self
            .rates
            .acquire(workspace, origin, call.rate_limit, call.deadline);
        if let Err(limited) = rate.await {
            // Nothing was sent: a half-open breaker's trial goes back unused.
            admission.release();
            tracing::info!(target: "patchbay::egress", workspace, %origin,
                retry_after = ?limited.retry_after, "outbound request rate-limited by the host");
            self.hold(
                record,
                format!("host rate limit; next slot in {:?}", limited.retry_after),
            );
            return Ok(Step::Answer(rate_limited_response(limited.retry_after)));
        }
        Ok(Step::Go(Admitted {
            slot,
            breaker: admission,
        }))
    }

    /// Send one attempt and note in `record` what became of it. Only an
    /// attempt that got a connection sent its body.
    async fn attempt(
        &self,
        outgoing: &Outgoing,
        mut headers: http::HeaderMap,
        url: url::Url,
        call: &Caller,
        record: &mut AuditRecord,
    ) -> Result<reqwest::Response, EgressError> {
        headers.insert(
            "traceparent",
            traceparent(&call.id.invocation_id, &mut fastrand::Rng::new()),
        );
        let left = call.deadline.saturating_duration_since(Instant::now());
        let timeout = outgoing.timeouts.first_byte.map_or(left, |t| t.min(left));
        let request = self
            .client
            .request(outgoing.method.clone(), url)
            .headers(headers)
            // Bytes clones share the buffer: a retry resends without copying.
            .body(outgoing.body.clone())
            .timeout(timeout)
            .build()
            .map_err(|e| EgressError::InvalidRequest(e.without_url().to_string()))?;
        let started = Instant::now();
        let result = self.transport.execute(&self.client, request).await;
        record.latency_ms = started.elapsed().as_millis() as u64;
        let sent = outgoing.body.len() as u64;
        match &result {
            Ok(response) => {
                record.status = Some(response.status().as_u16());
                record.bytes_out = sent;
                record.address = response.remote_addr().map(|a| a.to_string());
            }
            Err(EgressError::AddressRefused(reason)) => {
                record.decision = Decision::Denied;
                record.reason = Some(reason.clone());
            }
            Err(error @ EgressError::Connect(_)) => record.reason = Some(error.to_string()),
            Err(error) => {
                record.bytes_out = sent;
                record.reason = Some(error.to_string());
            }
        }
        result
    }

    /// Hand over the last attempt's answer. After a credentialed request only
    /// a body the host can read whole goes back (`coding` is the one it
    /// decodes), scrubbed of the credential's values; the record is written
    /// when the body is done with.
    fn finish(
        &self,
        result: Result<reqwest::Response, EgressError>,
        mut record: AuditRecord,
        applied: Option<credentials::Applied>,
        slot: tokio::sync::OwnedSemaphorePermit,
        outgoing: &Outgoing,
        call: &Caller,
    ) -> Result<http::Response<ResponseBody>, EgressError> {
        // Built only for the response handed over, not for each retry.
        let scrubber = applied.map(|a| self.credentials.scrubber(a));
        let readable = result.and_then(|response| match &scrubber {
            Some(scrubber) if scrubber.is_broken() => Err(EgressError::Unscrubbable(
                "the host could not prepare to scrub the credential".into(),
            )),
            Some(_) => coding::readable(response.status(), response.headers())
                .map(|coding| (response, coding)),
            None => Ok((response, None)),
        });
        match readable {
            Ok((response, coding)) => Ok(self.response(
                response,
                coding,
                call.deadline,
                outgoing.timeouts.between_bytes,
                scrubber,
                InFlight {
                    audit: self.audit.clone(),
                    record,
                    _slot: slot,
                },
            )),
            Err(error) => {
                if matches!(error, EgressError::Unscrubbable(_)) {
                    record.reason = Some(error.to_string());
                }
                self.audit.record(&record);
                Err(error)
            }
        }
    }

    /// Record an attempt the host held back, with why.
    fn hold(&self, record: &AuditRecord, reason: String) {
        let mut record = record.clone();
        record.decision = Decision::Held;
        record.reason = Some(reason);
        self.audit.record(&record);
    }

    /// The response as the plugin gets it. After a request that carried a
    /// credential, `scrubber` redacts its values from the headers and body (an
    /// upstream that echoes the request back must not hand it to the plugin).
    fn response(
        &self,
        response: reqwest::Response,
        coding: Option<coding::Coding>,
        deadline: Instant,
        between_bytes: Option<Duration>,
        scrubber: Option<Scrubber>,
        // Recorded, and its slot freed, when the body is done with (read to
        // the end, failed or dropped).
        audit: InFlight,
    ) -> http::Response<ResponseBody> {
        let scrubber = scrubber.filter(|s| !s.is_empty());
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
            if coding.is_some() {
                headers.remove(http::header::CONTENT_ENCODING);
            }
            if let Some(scrubber) = &scrubber {
                scrub_headers(headers, scrubber);
                // The body's length changes with what is redacted, and the
                // upstream's figure would tell the secret's length.
                headers.remove(http::header::CONTENT_LENGTH);
            }
        }
        let stream = counted(response, coding, self.limits.max_response_bytes, audit);
        let stream = bounded_stream(scrubbed(stream, scrubber), deadline, between_bytes);
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

/// The response's body chunks, decoded when the host picked the coding,
/// with what was read and why it ended noted in `audit`'s record. Decoded
/// bytes count against `max`: a small compressed body cannot unpack past it.
fn counted(
    response: reqwest::Response,
    coding: Option<coding::Coding>,
    max: usize,
    mut audit: InFlight,
) -> impl futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    let raw = response.bytes_stream();
    let body: futures_util::stream::BoxStream<'static, Result<Bytes, coding::BodyError>> =
        match coding {
            Some(coding) => coding::decoded(raw, coding).boxed(),
            None => raw.map_err(coding::BodyError::Transport).boxed(),
        };
    let mut seen = 0usize;
    body.map(move |chunk| {
        let chunk: Bytes = chunk.map_err(|e| match e {
            coding::BodyError::Transport(e) => {
                let timeout = e.is_timeout();
                audit.record.reason = Some(format!("response body: {}", e.without_url()));
                if timeout {
                    BodyError::ReadTimeout
                } else {
                    BodyError::Incomplete
                }
            }
            coding::BodyError::Decode(reason) => {
                audit.record.reason = Some(format!("response body could not be decoded: {reason}"));
                BodyError::ContentCoding
            }
        })?;
        seen += chunk.len();
        audit.record.bytes_in = seen as u64;
        if seen > max {
            audit.record.reason = Some(format!("response body over {max} bytes"));
            return Err(BodyError::TooLarge(seen as u64));
        }
        Ok(chunk)
    })
}

/// A response being read: writes its record to the audit trail, and frees
/// the connection's slot, when dropped.
struct InFlight {
    audit: Arc<AuditLog>,
    record: AuditRecord,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.audit.record(&self.record);
    }
}

/// A request ready to send, as every attempt of it goes out.
struct Outgoing {
    method: http::Method,
    target: Target,
    /// The target's canonical origin: what rate limits and breakers are kept by.
    origin: String,
    /// The request's headers with those the host manages set.
    headers: http::HeaderMap,
    /// Read whole, so a retry resends it.
    body: Bytes,
    idempotent: bool,
    timeouts: Timeouts,
}

/// One attempt's headers and URL, with the credential added.
struct Authorized {
    headers: http::HeaderMap,
    url: url::Url,
    /// What was added, when the request carries a credential.
    applied: Option<credentials::Applied>,
}

/// What one attempt holds while it is in flight.
struct Admitted {
    /// The connection's in-flight slot, kept until the response body is done with.
    slot: tokio::sync::OwnedSemaphorePermit,
    /// The breaker's admission, told how the attempt went.
    breaker: breaker::Admission,
}

/// A step's result: go on, or the host's own answer to hand over.
enum Step<T> {
    Go(T),
    Answer(http::Response<ResponseBody>),
}

/// What to do after an attempt.
enum Next {
    /// Send the request again after `wait`.
    Resend { wait: Duration },
    /// Hand over this attempt's answer.
    Finish,
}

/// The retry state of one request: attempts made, the backoff, and a token
/// the upstream refused.
struct Retry {
    /// Attempts sent, counting the resend after a refreshed token.
    sent: u32,
    /// Attempts counted against [`retry::MAX_ATTEMPTS`].
    attempts: u32,
    idempotent: bool,
    backoff: retry::Backoff,
    rng: fastrand::Rng,
    /// An OAuth2 access token the upstream refused with 401: refreshed once,
    /// then the request is sent once more.
    refused_token: Option<secrecy::SecretString>,
}

impl Retry {
    fn new(outgoing: &Outgoing) -> Self {
        Self {
            sent: 0,
            attempts: 1,
            idempotent: outgoing.idempotent,
            backoff: retry::Backoff::default(),
            rng: fastrand::Rng::new(),
            refused_token: None,
        }
    }

    fn sent(&self) -> u32 {
        self.sent
    }

    /// The audit record of the next attempt.
    fn record(&mut self, egress: &Egress, call: &Caller, outgoing: &Outgoing) -> AuditRecord {
        self.sent += 1;
        let mut record = AuditRecord::for_target(&call.id, egress.audit.now_ms(), &outgoing.target);
        record.attempt = self.sent;
        record
    }

    /// Whether to send again. A 401 to an OAuth2 token: the request was not
    /// processed, so it is resent once with a fresh token, idempotent or not.
    /// Otherwise an idempotent request is retried on a retryable outcome,
    /// after the upstream's `Retry-After` or the backoff, if that still ends
    /// before `deadline` (a 429 then goes to the plugin with its `Retry-After`).
    fn next(
        &mut self,
        outcome: retry::Outcome,
        result: &Result<reqwest::Response, EgressError>,
        applied: Option<&credentials::Applied>,
        deadline: Instant,
    ) -> Next {
        let token = applied.and_then(|a| a.access_token.clone());
        if let (retry::Outcome::Status(401), Some(token), None) =
            (outcome, token, &self.refused_token)
        {
            self.refused_token = Some(token);
            return Next::Resend {
                wait: Duration::ZERO,
            };
        }
        if self.attempts >= retry::MAX_ATTEMPTS || !self.idempotent || !retry::is_retryable(outcome)
        {
            return Next::Finish;
        }
        let asked = match result {
            Ok(response) => retry::retry_after(response.headers(), std::time::SystemTime::now()),
            Err(_) => None,
        };
        let wait = asked.unwrap_or_else(|| self.backoff.delay(self.attempts, &mut self.rng));
        if wait >= deadline.saturating_duration_since(Instant::now()) {
            return Next::Finish;
        }
        self.attempts += 1;
        Next::Resend { wait }
    }
}

/// Body chunks as frames, with secret values redacted when there is a scrubber.
fn scrubbed<S>(
    stream: S,
    scrubber: Option<Scrubber>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, BodyError>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
{
    // State: the stream (None once it ended or failed) and the scrubber.
    futures_util::stream::unfold(
        (Some(Box::pin(stream)), scrubber),
        |(stream, mut scrubber)| async move {
            let mut inner = stream?;
            match inner.next().await {
                Some(Ok(chunk)) => {
                    let chunk = match scrubber.as_mut() {
                        Some(s) => s.feed(&chunk),
                        None => chunk,
                    };
                    Some((Ok(http_body::Frame::data(chunk)), (Some(inner), scrubber)))
                }
                // An error ends the body; nothing held back is released after it.
                Some(Err(e)) => Some((Err(e), (None, None))),
                None => {
                    let tail = scrubber.take().map(|mut s| s.finish()).unwrap_or_default();
                    (!tail.is_empty()).then(|| (Ok(http_body::Frame::data(tail)), (None, None)))
                }
            }
        },
    )
}

fn scrub_headers(headers: &mut http::HeaderMap, scrubber: &Scrubber) {
    for value in headers.values_mut() {
        let text = String::from_utf8_lossy(value.as_bytes());
        let clean = scrubber.scrub_str(&text);
        if clean != text {
            *value = http::HeaderValue::from_str(&clean)
                .unwrap_or_else(|_| http::HeaderValue::from_static("[REDACTED]"));
        }
    }
}

/// The host's own 401 when the connection's credential cannot be used: the
/// request never left. The plugin handles it like an upstream 401.
fn credential_unavailable_response(error: &CredentialError) -> http::Response<ResponseBody> {
    let state = match error {
        CredentialError::NotSet(_) => "not-set",
        CredentialError::WrongKind { .. } => "wrong-kind",
        _ => "needs-attention",
    };
    let body =
        serde_json::json!({ "error": "credential_unavailable", "message": error.to_string() })
            .to_string();
    let mut response = http::Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-patchbay-credential",
        http::HeaderValue::from_static(state),
    );
    response
}

/// Ends the body with a timeout error at the call's deadline or when the gap
/// between chunks exceeds `between_bytes`.
fn bounded_stream<S>(
    stream: S,
    deadline: Instant,
    between_bytes: Option<Duration>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, BodyError>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<http_body::Frame<Bytes>, BodyError>> + Send + 'static,
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
            Err(_) => Some((Err(BodyError::ReadTimeout), None)),
        }
    })
}

/// The host's own 429: the plugin handles it like an upstream one.
fn rate_limited_response(retry_after: Duration) -> http::Response<ResponseBody> {
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

/// An error and its sources, joined: reqwest's own message alone is vague.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn classify(error: reqwest::Error) -> EgressError {
    // The URL may carry a host-added API key in its query.
    let error = error.without_url();
    let mut source: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return EgressError::AddressRefused(refused.to_string());
        }
        source = e.source();
    }
    // A connect timeout is a connect failure: nothing was sent, so it may be retried.
    if error.is_connect() {
        EgressError::Connect(error_chain(&error))
    } else if error.is_timeout() {
        EgressError::Timeout
    } else {
        EgressError::Upstream(error.to_string())
    }
}

/// TLS for outbound clients: ring, the webpki roots, safe protocol versions.
pub fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
