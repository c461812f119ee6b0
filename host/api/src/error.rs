//! The API's one error type and its one table from domain errors to HTTP:
//! a status, a stable code and a message, as `{"code", "message",
//! "details"?, "invocation_id"?}`. A 5xx never carries internals.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use patchbay_runtime::error::{InvokeError, PluginFailure};
use patchbay_tenancy::invoke::InvocationError;
use patchbay_tenancy::service::TenancyError;
use serde_json::json;

/// An error answer: what every handler and extractor returns. The `From`
/// impls and [`from_invoke`](Self::from_invoke) are the one table from
/// domain errors to it; [`IntoResponse`] writes the JSON body and headers.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// Stable and machine-readable (`not-found`, `invalid-config`…): what a
    /// client branches on.
    pub code: &'static str,
    /// What was wrong, for people; the caller's own values in it are cut
    /// short when it is sent.
    pub message: String,
    /// Every problem, when there are several (e.g. each failing config field).
    pub details: Vec<String>,
    /// The invocation that failed, for an operation's error; `None` otherwise.
    pub invocation_id: Option<String>,
    /// Seconds, for `Retry-After` on a 429 or 503.
    pub retry_after: Option<u64>,
    /// The capability diff an upgrade waits on.
    pub diff: Option<Box<serde_json::Value>>,
}

impl ApiError {
    /// An answer with `status`, `code` and `message`, and nothing more.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            invocation_id: None,
            retry_after: None,
            diff: None,
        }
    }

    /// 401 `unauthorized`: no bearer token, or one the host does not know.
    /// The answer carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not-found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// A host fault: logged in full, answered without detail.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(target: "patchbay::api", error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// The one table from an invocation's failure to HTTP.
    pub fn from_invoke(error: InvokeError, invocation_id: &str) -> Self {
        use InvokeError as E;
        use PluginFailure as P;
        let mut out = match error {
            E::UnknownOperation(op) => {
                Self::not_found(format!("the plugin has no operation {op:?}"))
            }
            E::InputTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "input-too-large",
                error.to_string(),
            ),
            E::InvalidInput(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "input does not match the operation's schema",
            )
            .with_details(problems),
            E::Plugin(failure) => match failure {
                P::InvalidInput { message } => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", message)
                }
                P::NotFound { message } => Self::not_found(message),
                P::Unauthorized { message } => Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unauthorized",
                    format!("the upstream refused the connection's credentials: {message}"),
                ),
                P::AccessDenied { message } => {
                    Self::new(StatusCode::FORBIDDEN, "access-denied", message)
                }
                P::RateLimited { retry_after_ms } => {
                    let mut e = Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate-limited",
                        format!("retry after {retry_after_ms} ms"),
                    );
                    e.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
                    e
                }
                P::Upstream { status, message } => Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    format!("upstream error {status}: {message}"),
                ),
                P::Timeout { message } => {
                    Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
                }
                P::Unsupported { message } => {
                    Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported", message)
                }
                P::Internal { .. } => plugin_failed(),
            },
            E::Timeout(ms) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("the plugin ran past its {ms} ms deadline"),
            ),
            // The plugin failed: its detail is in the invocation's log, not the response.
            E::MemoryLimit(_)
            | E::StackOverflow
            | E::Panic(_)
            | E::Trap(_)
            | E::InvalidOutput(_)
            | E::OutputTooLarge { .. }
            | E::OutputSchema(_) => plugin_failed(),
            // The limits are the host's, not the plugin's internals: say which.
            E::HostResources(_) | E::HeaderFieldsTooLarge(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "plugin-resource-limit",
                error.to_string(),
            ),
            // The caller's own load: its connection or workspace is at its cap.
            E::TooManyCalls { .. } => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-concurrent-calls",
                    error.to_string(),
                )
            },
            // The host's capacity, not the plugin's fault.
            E::AtCapacity(_) => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "host-at-capacity",
                    error.to_string(),
                )
            },
            E::Host(detail) => Self::internal(detail),
        };
        out.invocation_id = Some(invocation_id.to_owned());
        out
    }
}

fn plugin_failed() -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "plugin-failed",
        "the plugin failed; see the invocation's log",
    )
}

impl From<InvocationError> for ApiError {
    fn from(error: InvocationError) -> Self {
        match error {
            InvocationError::Tenancy(error) => error.into(),
            InvocationError::Disabled(name) => Self::new(
                StatusCode::CONFLICT,
                "disabled",
                format!("connection {name:?} is disabled"),
            ),
            InvocationError::KeyInUse(_) => Self::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-use",
                "a call with this idempotency key is still running on this connection; retry when it has ended",
            ),
            InvocationError::Binding(reason) => Self::internal(reason),
        }
    }
}

impl From<TenancyError> for ApiError {
    fn from(error: TenancyError) -> Self {
        use TenancyError as T;
        let unprocessable =
            |code, message: String| Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        match error {
            T::Name(e) => unprocessable("invalid-name", e.to_string()),
            T::WorkspaceExists(_) => Self::new(StatusCode::CONFLICT, "conflict", error.to_string()),
            T::Label(_) => unprocessable("invalid-label", error.to_string()),
            T::Lookup(problems) => {
                unprocessable("invalid-lookup", "the lookup definition is refused".into())
                    .with_details(problems)
            }
            T::PluginInUse {
                ref connections, ..
            } => Self::new(StatusCode::CONFLICT, "plugin-in-use", error.to_string())
                .with_details(connections.clone()),
            T::WorkspaceNotFound(_)
            | T::ConnectionNotFound(_)
            | T::TokenNotFound(_)
            | T::LookupNotFound(_)
            | T::PluginNotFound(_) => Self::not_found(error.to_string()),
            T::UnknownPlugin(_) => unprocessable("unknown-plugin", error.to_string()),
            T::Config(problems) => unprocessable(
                "invalid-config",
                "config does not match the plugin's schema".into(),
            )
            .with_details(problems),
            T::Grants(problems) => unprocessable(
                "invalid-grants",
                "grants name what the plugin does not ask for".into(),
            )
            .with_details(problems),
            T::Binding(message) => unprocessable("invalid-config", message),
            T::Limits(problems) => {
                unprocessable("invalid-limits", problems.join("; ")).with_details(problems)
            }
            T::UpgradeNeedsApproval { reason, diff } => Self {
                diff: serde_json::to_value(&diff).ok().map(Box::new),
                ..Self::new(StatusCode::CONFLICT, "upgrade-needs-approval", reason)
            },
            T::Storage(detail) => Self::internal(detail),
        }
    }
}

impl From<patchbay_events::EventsError> for ApiError {
    fn from(error: patchbay_events::EventsError) -> Self {
        use patchbay_events::EventsError as E;
        match error {
            E::Tenancy(e) => e.into(),
            E::InvalidBody(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "the body is not an event or an array of events",
            )
            .with_details(problems),
            E::InvalidEvents(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-events",
                "the events are refused; nothing was accepted",
            )
            .with_details(problems),
            E::InvalidSubscription(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-subscription",
                "the subscription is refused",
            )
            .with_details(problems),
            E::InvalidQuery(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-query", message)
            }
            E::InvalidAlert(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-alert",
                "the dead-letter alert is refused",
            )
            .with_details(problems),
            E::SubscriptionNotFound(_) | E::DeadLetterNotFound(_) | E::AlertNotSet => {
                Self::not_found(error.to_string())
            }
            E::Storage(detail) => Self::internal(detail),
        }
    }
}

/// The body of every error answer, for the API description.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `not-found`, `invalid-config`, `operator-only`…
    code: String,
    /// What was wrong, for people.
    message: String,
    /// Every problem, when there are several.
    details: Option<Vec<String>>,
    /// The invocation that failed, for an operation's error.
    invocation_id: Option<String>,
    /// The capability diff an upgrade waits on.
    diff: Option<serde_json::Value>,
}

/// The error answers every route may give, for the API description.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built: `ApiError` is what answers
pub enum ApiErrors {
    /// A refusal: bad input, no or wrong token, not found, conflict, rate-limited…
    #[response(status = "4XX")]
    Refused(ErrorBody),
    /// A failure of the host or upstream; never carries internals.
    #[response(status = "5XX")]
    Failed(ErrorBody),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // No caller's value comes back at length, whichever layer wrote the message.
        let cap = super::shape::cap_echoes;
        let mut body = json!({ "code": self.code, "message": cap(&self.message) });
        if !self.details.is_empty() {
            let details: Vec<_> = self.details.iter().map(|d| cap(d)).collect();
            body["details"] = json!(details);
        }
        if let Some(id) = &self.invocation_id {
            body["invocation_id"] = json!(id);
        }
        if let Some(diff) = self.diff {
            body["diff"] = *diff;
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}
