//! Outbound HTTP through `wasi:http/outgoing-handler`, gated per request.
//!
//! The gate runs in the `send_request` hook, before any DNS look-up or
//! connection: a request goes out only if it matches one of the connection's
//! filled destination rules, and a literal IP only if operator policy allows
//! that address (names are checked as they resolve, in `egress`). A denial is
//! an error code (`HTTP-request-denied`, `destination-IP-prohibited`), never a
//! trap, and is audited. Redirects are never followed: a 3xx is handed back to
//! the plugin, whose next request is checked from scratch.

use crate::audit::{AuditRecord, AuditTags, Decision};
use crate::credentials::BoundCredential;
use crate::egress::Call;
use crate::egress::{Egress, EgressError};
use crate::policy::http::Rule;
use crate::policy::rate::RateLimit;
use crate::runtime::state::CallState;
use crate::storage::Scope;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

/// A refused request, kept for the invocation's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    pub method: String,
    pub url: String,
    pub reason: String,
}

/// Why the gate refused a request.
enum Refusal {
    /// No destination rule matches (or the URL is malformed).
    Rule(String),
    /// The literal address is not public and the operator has not allowed it.
    Address(String),
}

/// What one invocation's requests are held to, besides the destination rules.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Who the requests are made for, as the audit trail records it.
    pub tags: Arc<AuditTags>,
    /// Also the W3C trace id of every outbound request.
    pub invocation_id: String,
    /// The connection; rate limits are kept per workspace and upstream origin.
    pub scope: Arc<Scope>,
    pub max_requests: usize,
    pub rate_limit: RateLimit,
    /// Host-held credentials and the destinations each may be sent to.
    pub credentials: Arc<[BoundCredential]>,
    /// Destinations declared but not approved by the workspace (for the refusal's reason).
    pub unapproved_rules: Arc<[Rule]>,
}

/// The per-invocation gate.
pub struct HttpGate {
    egress: Arc<Egress>,
    rules: Arc<[Rule]>,
    call: CallPolicy,
    /// Requests this invocation may still start.
    requests_left: usize,
    deadline: Instant,
    audit_tag: String,
    denials: Arc<Mutex<Vec<Denial>>>,
}

/// wasi:http state of one invocation.
pub struct HttpCtx {
    pub ctx: WasiHttpCtx,
    pub gate: HttpGate,
}

impl HttpCtx {
    pub fn new(
        egress: Arc<Egress>,
        rules: Arc<[Rule]>,
        deadline: Instant,
        call: CallPolicy,
        audit_tag: String,
    ) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            gate: HttpGate {
                egress,
                rules,
                requests_left: call.max_requests,
                call,
                deadline,
                audit_tag,
                denials: Arc::default(),
            },
        }
    }

    pub fn denials(&self) -> Vec<Denial> {
        self.gate
            .denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl HttpGate {
    /// Whether `request` may go out, and with which host-held credential.
    fn decide(
        &self,
        request: &http::Request<WasiBody>,
    ) -> Result<Option<BoundCredential>, Refusal> {
        let uri = request.uri();
        let rule = |reason: &str| Refusal::Rule(reason.to_owned());
        if self.requests_left == 0 {
            return Err(rule("the invocation's outbound request limit is used up"));
        }
        let authority = uri.authority().ok_or_else(|| rule("request has no host"))?;
        if authority.as_str().contains('@') {
            return Err(rule("user info in the URL is not allowed"));
        }
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| rule("request has no scheme"))?;
        let path = uri.path();
        let matches = |rule: &Rule| {
            rule.allows(
                request.method().as_str(),
                scheme,
                authority.host(),
                authority.port_u16(),
                path,
            )
        };
        let allowed = self.rules.iter().any(matches);
        if allowed {
            if !self.egress.operator_allows(|rule| matches(rule)) {
                return Err(rule("operator policy does not allow this destination"));
            }
            self.egress
                .check_literal(authority.host())
                .map_err(|(ip, class)| {
                    Refusal::Address(format!(
                        "address {ip} is {class} and operator policy does not allow it"
                    ))
                })?;
            let credential = self.call.credentials.iter().find(|c| {
                c.applies_to(
                    request.method().as_str(),
                    scheme,
                    authority.host(),
                    authority.port_u16(),
                    path,
                )
            });
            if let Some(credential) = credential
                && let Some(place) = credential.collides_with(request.headers(), uri.query())
            {
                return Err(rule(&format!(
                    "the plugin set {place}, which the host manages for this destination (credential {})",
                    credential.name
                )));
            }
            Ok(credential.cloned())
        } else if self.call.unapproved_rules.iter().any(matches) {
            Err(rule(
                "the destination is declared but the workspace has not approved it",
            ))
        } else if self.rules.is_empty() && self.call.unapproved_rules.is_empty() {
            Err(rule("the plugin declares no HTTP destinations"))
        } else {
            Err(rule("no declared destination matches"))
        }
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

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let method = request.method().to_string();
        let url = format!(
            "{}://{}{}",
            request.uri().scheme_str().unwrap_or("?"),
            request.uri().authority().map_or("?", |a| a.as_str()),
            crate::audit::redact_query(request.uri())
        );
        let credential = match self.decide(&request) {
            Ok(credential) => credential,
            Err(refusal) => {
                let (reason, code) = match refusal {
                    Refusal::Rule(reason) => (reason, HttpError::HttpRequestDenied),
                    Refusal::Address(reason) => (reason, HttpError::DestinationIpProhibited),
                };
                let audit = self.egress.audit();
                let mut record =
                    AuditRecord::new(&self.call.tags, audit.now_ms(), &method, request.uri());
                record.decision = Decision::Denied;
                record.reason = Some(reason.clone());
                audit.record(&record);
                tracing::warn!(target: "patchbay::audit", capability = "http", invocation = %self.audit_tag,
                %method, %url, decision = "denied", %reason, "outbound request denied");
                self.denials
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Denial {
                        method,
                        url,
                        reason,
                    });
                return Box::new(async { Err(code) });
            }
        };
        tracing::debug!(target: "patchbay::audit", capability = "http", invocation = %self.audit_tag,
            %method, %url, decision = "allowed", "outbound request");
        let options = self.bounded(options);
        self.requests_left -= 1;
        let (egress, denials, audit_tag) = (
            self.egress.clone(),
            self.denials.clone(),
            self.audit_tag.clone(),
        );
        let call = Call {
            deadline: self.deadline,
            trace_id: self.call.invocation_id.clone(),
            tags: self.call.tags.clone(),
            scope: self.call.scope.clone(),
            rate_limit: self.call.rate_limit,
            credential,
        };
        Box::new(async move {
            match egress.send(request, options, &call).await {
                Ok(response) => Ok((
                    response,
                    Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                )),
                Err(error) => {
                    if let EgressError::AddressRefused(reason) = &error {
                        tracing::warn!(target: "patchbay::audit", capability = "http", invocation = %audit_tag,
                            %method, %url, decision = "denied", %reason, "outbound request denied");
                        denials
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Denial {
                                method,
                                url,
                                reason: reason.clone(),
                            });
                    }
                    Err(error.to_http_error())
                }
            }
        })
    }
}

pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
