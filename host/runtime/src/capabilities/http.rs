//! Outbound HTTP through `wasi:http/outgoing-handler`, gated per request.
//!
//! The gate runs in the `send_request` hook, before any DNS look-up or
//! connection: a request goes out only if it matches one of the connection's
//! filled destination rules, and a literal IP only if operator policy allows
//! that address (names are checked as they resolve, in `egress`). A denial is
//! an error code (`HTTP-request-denied`, `destination-IP-prohibited`), never a
//! trap, and is audited. Redirects are never followed: a 3xx is handed back to
//! the plugin, whose next request is checked from scratch.

use crate::record::{Side, Tape, Tee};
use http_body_util::BodyExt as _;
use patchbay_egress::Caller;
use patchbay_egress::credentials::BoundCredential;
use patchbay_egress::{BodyError, Egress, EgressError, Timeouts};
use patchbay_policy::call::CallId;
use patchbay_policy::http::{Denial, Destinations, Target, Verdict};
use patchbay_policy::rate::RateLimit;
use patchbay_storage::Scope;
use patchbay_storage::audit::{AuditRecord, Decision};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

/// Why the gate refused a request.
enum DenialCause {
    /// No destination rule matches (or the URL is malformed).
    Rule(String),
    /// The literal address is not public and the operator has not allowed it.
    Address(String),
}

/// What one invocation's requests are held to, besides the destination rules.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    /// The invocation the requests are made for.
    pub id: Arc<CallId>,
    /// The connection; rate limits are kept per workspace and upstream origin.
    pub scope: Arc<Scope>,
    /// Outbound requests the invocation may start; the egress's retries do not
    /// count.
    pub max_requests: usize,
    /// The plugin's effective request rate, kept per (workspace, upstream
    /// origin).
    pub rate_limit: RateLimit,
    /// Host-held credentials and the destinations each may be sent to.
    pub credentials: Arc<[BoundCredential]>,
}

/// The per-invocation gate.
pub struct HttpGate {
    egress: Arc<Egress>,
    destinations: Destinations,
    call: RequestPolicy,
    /// Requests this invocation may still start.
    requests_left: usize,
    deadline: Instant,
    denials: Arc<Mutex<Denials>>,
    /// Where the call's exchanges are recorded, when they are.
    pub tape: Option<Arc<Tape>>,
}

impl Denials {
    /// Keep `denial` in full while under the limit (and return it, kept);
    /// past it, only count it.
    fn push(&mut self, denial: Denial) -> Option<Denial> {
        if self.recorded.len() < MAX_RECORDED_DENIALS {
            self.recorded.push(denial.clone());
            Some(denial)
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The refusals of one invocation: the first few in full, then a count.
#[derive(Debug, Default)]
struct Denials {
    recorded: Vec<Denial>,
    suppressed: usize,
    /// Requests not sent because their destination's circuit breaker was open.
    circuit_open: u32,
    /// The longest an open breaker said it would stay open, of those.
    circuit_retry_after: Option<std::time::Duration>,
    /// The last refusal's record: the summary's host, port and path.
    last: Option<AuditRecord>,
}

/// wasi:http state of one invocation.
pub struct HttpCtx {
    /// wasmtime-wasi-http's own state, with the call's header-size cap.
    pub ctx: WasiHttpCtx,
    /// The hooks every outgoing request passes through.
    pub gate: HttpGate,
}

impl HttpCtx {
    /// wasi:http for one call: requests held to `destinations` and `call`, sent
    /// through `egress`, none waiting past `deadline`.
    pub fn new(
        egress: Arc<Egress>,
        destinations: Destinations,
        deadline: Instant,
        call: RequestPolicy,
    ) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            gate: HttpGate {
                egress,
                destinations,
                requests_left: call.max_requests,
                call,
                deadline,
                denials: Arc::default(),
                tape: None,
            },
        }
    }

    /// The refusals recorded in full, and how many more were only counted.
    pub fn denials(&self) -> (Vec<Denial>, usize) {
        let denials = self.gate.denials.lock().unwrap_or_else(|e| e.into_inner());
        (denials.recorded.clone(), denials.suppressed)
    }

    /// Requests of this call not sent because their destination's circuit
    /// breaker was open, and the longest any said it would stay open.
    pub fn circuit_open(&self) -> (u32, Option<std::time::Duration>) {
        let denials = self.gate.denials.lock().unwrap_or_else(|e| e.into_inner());
        (denials.circuit_open, denials.circuit_retry_after)
    }
}

/// Refusals one invocation records one by one; past this they are counted,
/// and one summary record is written when the call ends, so a plugin that
/// loops on refused requests cannot flood the workspace's audit trail.
pub const MAX_RECORDED_DENIALS: usize = 20;

impl HttpGate {
    /// Whether a request to `target` may go out, and with which host-held credential.
    fn decide(
        &self,
        target: &Target,
        headers: &http::HeaderMap,
    ) -> Result<Option<BoundCredential>, DenialCause> {
        let rule = |reason: &str| DenialCause::Rule(reason.to_owned());
        if self.requests_left == 0 {
            return Err(rule("the invocation's outbound request limit is used up"));
        }
        match self.destinations.verdict(target) {
            Verdict::Allowed => {}
            refused => return Err(rule(refused.reason())),
        }
        self.egress
            .check_host(&target.host)
            .map_err(|(ip, class)| {
                DenialCause::Address(format!(
                    "address {ip} is {class} and operator policy does not allow it"
                ))
            })?;
        let credential = self.call.credentials.iter().find(|c| c.applies_to(target));
        if credential.is_some() && headers.contains_key(http::header::RANGE) {
            // An upstream that reflects the request could hand the
            // credential back in slices too short to recognise.
            return Err(rule(
                "a request that carries a credential may not ask for partial content (Range)",
            ));
        }
        if let Some(credential) = credential
            && let Some(place) = credential.collides_with(headers, target.url.query())
        {
            return Err(rule(&format!(
                "the plugin set {place}, which the host manages for this destination (credential {})",
                credential.name
            )));
        }
        Ok(credential.cloned())
    }

    /// Audit, log and keep a refusal, up to [`MAX_RECORDED_DENIALS`] per call;
    /// past that only count it.
    fn deny(&mut self, mut record: AuditRecord, denial: Denial) {
        let mut denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        record.decision = Decision::Denied;
        record.reason = Some(denial.reason.clone());
        let Some(kept) = denials.push(denial) else {
            return;
        };
        self.egress.audit().record(&record);
        tracing::warn!(target: "patchbay::audit", capability = "http", invocation = %self.call.id,
            method = %kept.method, url = %kept.url, decision = "denied", reason = %kept.reason,
            "outbound request denied");
        denials.last = Some(record);
    }

    /// Never wait past the invocation's deadline, whatever the plugin asked.
    fn bounded(&self, options: Option<RequestOptions>) -> RequestOptions {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let cap = |asked: Option<std::time::Duration>| Some(asked.map_or(left, |a| a.min(left)));
        let asked = options.unwrap_or_default();
        RequestOptions {
            connect_timeout: cap(asked.connect_timeout),
            first_byte_timeout: cap(asked.first_byte_timeout),
            between_bytes_timeout: cap(asked.between_bytes_timeout),
        }
    }
}

impl Drop for HttpGate {
    /// One record for the refusals past the per-call limit, when the call ends.
    fn drop(&mut self) {
        let denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        if denials.suppressed == 0 {
            return;
        }
        let Some(mut record) = denials.last.clone() else {
            return;
        };
        let audit = self.egress.audit();
        let reason = format!(
            "{} more requests refused in this invocation, not recorded one by one (at most {MAX_RECORDED_DENIALS} are)",
            denials.suppressed
        );
        record.at_ms = audit.now_ms();
        record.reason = Some(reason.clone());
        audit.record(&record);
        tracing::warn!(target: "patchbay::audit", capability = "http", invocation = %self.call.id,
            suppressed = denials.suppressed, decision = "denied", "{reason}");
    }
}

/// What a sent request comes to: the response head (and the future that
/// ends the sending), or the error code the plugin sees.
type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

type SendFuture = Box<dyn Future<Output = Sent> + Send>;

/// The URL as logs and denial lists show it: query values redacted.
fn shown_url(target: &Target) -> String {
    let url = &target.url;
    format!(
        "{}://{}{}",
        url.scheme(),
        match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_owned(),
        },
        patchbay_storage::audit::redact_query(url.path(), url.query())
    )
}

impl WasiHttpHooks for HttpGate {
    /// The client derives `Host` from the URL the gate checked; a guest may
    /// not set one either (it is a forbidden header).
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// Parse the request's URL once, decide on it, and send it through the
    /// egress or refuse it; the one parsed value serves every decision and is
    /// the URL the client sends to.
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let taped = self.tape.clone().map(|tape| {
            let index = tape.request(&method, &uri, header_pairs(request.headers()));
            (tape, index)
        });
        let target = match Target::parse(&method, &uri) {
            Ok(target) => target,
            Err(error) => {
                let refused = self.deny_unparsed(request.uri(), method, &error);
                return taped_failure(taped, refused);
            }
        };
        match self.decide(&target, request.headers()) {
            Ok(credential) => match taped {
                Some((tape, index)) => {
                    let request = request.map(|body| {
                        Tee::new(body, tape.clone(), index, Side::Request).boxed_unsync()
                    });
                    let sent = self.send_allowed(request, target, credential, options);
                    Box::new(taped_response(sent, tape, index))
                }
                None => self.send_allowed(request, target, credential, options),
            },
            Err(cause) => {
                let refused = self.deny_target(&target, method, cause);
                taped_failure(taped, refused)
            }
        }
    }
}

impl HttpGate {
    /// Deny a request whose URL does not parse; its record shows the
    /// authority cut to a DNS name's length and the query values redacted.
    fn deny_unparsed(
        &mut self,
        uri: &http::Uri,
        method: String,
        error: &dyn std::fmt::Display,
    ) -> SendFuture {
        let record = AuditRecord::new(&self.call.id, self.egress.audit().now_ms(), &method, uri);
        let mut authority = uri.authority().map_or("?", |a| a.as_str()).to_owned();
        patchbay_policy::text::truncate(&mut authority, 253);
        let url = format!(
            "{}://{authority}{}",
            uri.scheme_str().unwrap_or("?"),
            patchbay_storage::audit::redact_query(uri.path(), uri.query())
        );
        let reason = format!("unusable URL: {error}");
        self.deny(
            record,
            Denial {
                method,
                url,
                reason,
            },
        );
        Box::new(async { Err(HttpError::HttpRequestUriInvalid) })
    }

    /// Deny a request the destination rules or the address policy refuse.
    fn deny_target(&mut self, target: &Target, method: String, cause: DenialCause) -> SendFuture {
        let (reason, code) = match cause {
            DenialCause::Rule(reason) => (reason, HttpError::HttpRequestDenied),
            DenialCause::Address(reason) => (reason, HttpError::DestinationIpProhibited),
        };
        let record = AuditRecord::for_target(&self.call.id, self.egress.audit().now_ms(), target);
        let url = shown_url(target);
        self.deny(
            record,
            Denial {
                method,
                url,
                reason,
            },
        );
        Box::new(async move { Err(code) })
    }

    /// Hand an allowed request to the egress, with the host-held credential
    /// it gets. What the egress refuses or answers itself is kept among the
    /// call's denials, so the caller learns why.
    fn send_allowed(
        &mut self,
        request: http::Request<WasiBody>,
        target: Target,
        credential: Option<BoundCredential>,
        options: Option<RequestOptions>,
    ) -> SendFuture {
        let (method, url) = (request.method().to_string(), shown_url(&target));
        tracing::debug!(target: "patchbay::audit", capability = "http", invocation = %self.call.id,
            %method, %url, decision = "allowed", "outbound request");
        let options = self.bounded(options);
        let timeouts = Timeouts {
            first_byte: options.first_byte_timeout,
            between_bytes: options.between_bytes_timeout,
        };
        self.requests_left -= 1;
        let caller = Caller {
            deadline: self.deadline,
            id: self.call.id.clone(),
            scope: self.call.scope.clone(),
            rate_limit: self.call.rate_limit,
            credential,
        };
        let (egress, denials) = (self.egress.clone(), self.denials.clone());
        let held = self.denials.clone();
        let shown = format!("{method} {url}");
        let keep = move |reason: String| {
            let denial = Denial {
                method,
                url,
                reason,
            };
            denials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(denial);
        };
        Box::new(async move {
            match egress.send(request, target, timeouts, &caller).await {
                Ok(response) => {
                    // The host answered itself (the credential cannot be
                    // used): the call's record says which and why.
                    let state = response.headers().get("x-patchbay-credential");
                    if let (Some(state), Some(credential)) = (state, &caller.credential) {
                        keep(format!(
                            "credential {} is {}; the request was not sent",
                            credential.name,
                            String::from_utf8_lossy(state.as_bytes())
                        ));
                    }
                    let response = response.map(|body| body.map_err(body_error).boxed_unsync());
                    let sent = Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), HttpError>> + Send>;
                    Ok((response, sent))
                }
                Err(error) => {
                    if let EgressError::AddressRefused(reason) = &error {
                        tracing::warn!(target: "patchbay::audit", capability = "http",
                            invocation = %caller.id, request = %shown, decision = "denied",
                            reason = %reason, "outbound request denied");
                        keep(reason.clone());
                    }
                    if let EgressError::CircuitOpen(retry_after) = &error {
                        let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                        held.circuit_open = held.circuit_open.saturating_add(1);
                        held.circuit_retry_after = held.circuit_retry_after.max(Some(*retry_after));
                    }
                    Err(http_error(&error))
                }
            }
        })
    }
}

/// A refusal, noted on the tape when the call records.
fn taped_failure(taped: Option<(Arc<Tape>, usize)>, refused: SendFuture) -> SendFuture {
    match taped {
        None => refused,
        Some((tape, index)) => Box::new(async move {
            let result = Box::into_pin(refused).await;
            if let Err(code) = &result {
                tape.failed(index, error_code_name(code));
            }
            result
        }),
    }
}

/// A sent request's outcome, noted on the tape: the error code the plugin
/// got, or the response head, with its body copied as the plugin reads it.
async fn taped_response(sent: SendFuture, tape: Arc<Tape>, index: usize) -> Sent {
    match Box::into_pin(sent).await {
        Ok((response, sent)) => {
            let headers = header_pairs(response.headers());
            tape.response(index, response.status().as_u16(), headers);
            let response = response
                .map(|body| Tee::new(body, tape.clone(), index, Side::Response).boxed_unsync());
            Ok((response, sent))
        }
        Err(code) => {
            tape.failed(index, error_code_name(&code));
            Err(code)
        }
    }
}

/// Headers as a tape keeps them: names and values, in order.
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect()
}

/// An error code as wasi:http names it (`HTTP-request-denied`…).
fn error_code_name(code: &HttpError) -> String {
    let name = match code {
        HttpError::HttpRequestDenied => "HTTP-request-denied",
        HttpError::DestinationIpProhibited => "destination-IP-prohibited",
        HttpError::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        HttpError::ConnectionTimeout => "connection-timeout",
        HttpError::ConnectionReadTimeout => "connection-read-timeout",
        HttpError::ConnectionRefused => "connection-refused",
        HttpError::HttpProtocolError => "HTTP-protocol-error",
        HttpError::DestinationUnavailable => "destination-unavailable",
        HttpError::InternalError(_) => "internal-error",
        HttpError::HttpRequestBodySize(_) => "HTTP-request-body-size",
        HttpError::HttpResponseBodySize(_) => "HTTP-response-body-size",
        HttpError::HttpResponseContentCoding(_) => "HTTP-response-content-coding",
        HttpError::HttpResponseIncomplete => "HTTP-response-incomplete",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

/// The wasi:http error code the plugin sees for a request the egress did not complete.
fn http_error(error: &EgressError) -> HttpError {
    match error {
        EgressError::AddressRefused(_) => HttpError::DestinationIpProhibited,
        EgressError::RequestTooLarge(n) => HttpError::HttpRequestBodySize(Some(*n as u64)),
        EgressError::InvalidRequest(_) => HttpError::HttpRequestUriInvalid,
        EgressError::Timeout => HttpError::ConnectionTimeout,
        EgressError::Connect(_) => HttpError::ConnectionRefused,
        EgressError::Upstream(_) => HttpError::HttpProtocolError,
        EgressError::CircuitOpen(_) => HttpError::DestinationUnavailable,
        EgressError::Credential(message) => HttpError::InternalError(Some(message.clone())),
        EgressError::Unscrubbable(message) => {
            HttpError::HttpResponseContentCoding(Some(message.clone()))
        }
    }
}

/// The wasi:http error code that ends a response body the plugin is reading.
fn body_error(error: BodyError) -> HttpError {
    match error {
        BodyError::ReadTimeout => HttpError::ConnectionReadTimeout,
        BodyError::Incomplete => HttpError::HttpResponseIncomplete,
        BodyError::ContentCoding => HttpError::HttpResponseContentCoding(None),
        BodyError::TooLarge(seen) => HttpError::HttpResponseBodySize(Some(seen)),
    }
}

/// `wasi:http/outgoing-handler.handle` as wasmtime-wasi-http 48 implements
/// it, then freeing the `request-options` resource the guest handed over:
/// the crate reads it and leaves it in the table, one entry per request,
/// which would count against the call's resource budget
/// (`runtime::limits::HostBudget`) until the call ends.
fn handle<T: WasiHttpView>(
    state: &mut T,
    request: Resource<HostOutgoingRequest>,
    options: Option<Resource<wasmtime_wasi_http::RequestOptions>>,
) -> wasmtime::Result<Result<Resource<HostFutureIncomingResponse>, ErrorCode>> {
    let owned = options
        .as_ref()
        .map(|o| Resource::<wasmtime_wasi_http::RequestOptions>::new_own(o.rep()));
    let mut view = state.http();
    let result = outgoing_handler::Host::handle(&mut view, request, options);
    if let Some(options) = owned {
        // Gone already only if a later wasmtime frees it itself.
        let _ = view.table.delete(options);
    }
    match result {
        Ok(response) => Ok(Ok(response)),
        // A trap stays a trap (a host bug); an error code goes to the guest.
        Err(error) => error.downcast().map(Err),
    }
}

/// Link `wasi:http` (types, and the outgoing handler with the fix above) for
/// any store whose data is a [`WasiHttpView`]; its hooks are the gate.
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::p2::bindings;
    linker
        .instance("wasi:http/outgoing-handler@0.2.12")?
        .func_wrap(
            "handle",
            |mut store: wasmtime::StoreContextMut<'_, T>,
             (request, options): (
                Resource<HostOutgoingRequest>,
                Option<Resource<wasmtime_wasi_http::RequestOptions>>,
            )| { handle(store.data_mut(), request, options).map(|r| (r,)) },
        )?;
    bindings::http::types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(
        linker,
        &bindings::LinkOptions::default().into(),
        T::http,
    )
}
