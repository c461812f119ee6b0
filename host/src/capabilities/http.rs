//! Outbound HTTP through `wasi:http/outgoing-handler`, gated per request.
//!
//! The gate runs in the `send_request` hook, before any DNS look-up or
//! connection: a request goes out only if it matches one of the connection's
//! filled destination rules. A denial is the `HTTP-request-denied` error code
//! (an error value, never a trap) and is audited. Redirects are never
//! followed: a 3xx is handed back to the plugin, whose next request is checked
//! from scratch.

use crate::policy::http::Rule;
use crate::runtime::state::CallState;
use http_body_util::BodyExt;
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

/// The per-invocation gate.
pub struct HttpGate {
    rules: Arc<[Rule]>,
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
    pub fn new(rules: Arc<[Rule]>, deadline: Instant, audit_tag: String) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            gate: HttpGate {
                rules,
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
    fn decide(&self, request: &http::Request<WasiBody>) -> Result<(), String> {
        let uri = request.uri();
        let authority = uri.authority().ok_or("request has no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in the URL is not allowed".into());
        }
        let scheme = uri.scheme_str().ok_or("request has no scheme")?;
        let path = uri.path();
        let allowed = self.rules.iter().any(|rule| {
            rule.allows(
                request.method().as_str(),
                scheme,
                authority.host(),
                authority.port_u16(),
                path,
            )
        });
        if allowed {
            Ok(())
        } else if self.rules.is_empty() {
            Err("the plugin declares no HTTP destinations".into())
        } else {
            Err("no declared destination matches".into())
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
        let url = redact_query(request.uri());
        if let Err(reason) = self.decide(&request) {
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
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(target: "patchbay::audit", capability = "http", invocation = %self.audit_tag,
            %method, %url, decision = "allowed", "outbound request");
        let options = self.bounded(options);
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// `scheme://host:port/path` with query values removed (they may carry personal data).
fn redact_query(uri: &http::Uri) -> String {
    let base = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |a| a.as_str()),
        uri.path()
    );
    match uri.query() {
        Some(q) => {
            let keys: Vec<&str> = q
                .split('&')
                .map(|pair| pair.split('=').next().unwrap_or(""))
                .collect();
            format!(
                "{base}?{}",
                keys.iter()
                    .map(|k| format!("{k}=REDACTED"))
                    .collect::<Vec<_>>()
                    .join("&")
            )
        }
        None => base,
    }
}

pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
