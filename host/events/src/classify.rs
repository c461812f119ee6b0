//! How a failed delivery attempt is classified for retrying: what may go
//! away by itself, what a rate limit or an open breaker holds, and what
//! will fail the same way every time.

use patchbay_policy::delivery::Failure;
use patchbay_runtime::error::{InvokeError, PluginFailure};
use patchbay_tenancy::invoke::{InvocationError, Invoked};
use patchbay_tenancy::service::TenancyError;
use std::time::Duration;

/// A failed attempt: how to retry it, its code, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// How the retry policy treats it.
    pub failure: Failure,
    /// The error code recorded with the attempt.
    pub code: String,
    /// What happened, for the attempt's record.
    pub message: String,
    /// The invocation that failed, when one ran.
    pub invocation_id: Option<String>,
}

/// An upstream status that will not change on retry: a 4xx other than
/// 408 (timeout), 425 (too early) and 429 (slow down).
fn permanent_status(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// Classify a call that ran and failed with `error`.
pub fn invoke_failure(error: &InvokeError, invoked: &Invoked) -> Failed {
    use InvokeError as E;
    use PluginFailure as P;
    let held = invoked.outcome.circuit_open > 0;
    let code = if held { "circuit-open" } else { error.code() }.to_owned();
    let failure = match error {
        // Nothing was sent: the destination's breaker is open.
        _ if held => Failure::CircuitOpen(invoked.outcome.circuit_retry_after),
        E::Plugin(P::RateLimited { retry_after_ms }) => {
            Failure::RateLimited(Some(Duration::from_millis(*retry_after_ms)))
        }
        // The host is busy: nothing was attempted, nothing used up.
        E::TooManyCalls { .. } | E::AtCapacity(_) => Failure::CircuitOpen(None),
        E::Plugin(P::Upstream { status, .. }) if permanent_status(*status) => {
            Failure::Permanent(format!("upstream {status}"))
        }
        E::UnknownOperation(_)
        | E::InputTooLarge { .. }
        | E::InvalidInput(_)
        | E::InvalidOutput(_)
        | E::OutputTooLarge { .. }
        | E::OutputSchema(_)
        | E::Plugin(
            P::InvalidInput { .. }
            | P::NotFound { .. }
            | P::Unauthorized { .. }
            | P::AccessDenied { .. }
            | P::Unsupported { .. },
        ) => Failure::Permanent(code.clone()),
        _ => Failure::Transient,
    };
    let mut message = error.to_string();
    let explanation = &invoked.explanation;
    if !explanation.refused.is_empty() || !explanation.unusable_credentials.is_empty() {
        message.push_str(" (");
        message.push_str(
            &explanation
                .refused
                .iter()
                .chain(&explanation.unusable_credentials)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        );
        message.push(')');
    }
    Failed {
        failure,
        code,
        message: patchbay_policy::text::cap_message(message),
        invocation_id: Some(invoked.outcome.invocation_id.clone()),
    }
}

/// Classify a call that could not start.
pub fn start_failure(error: &InvocationError) -> Failed {
    let (failure, code) = match error {
        InvocationError::Tenancy(TenancyError::ConnectionNotFound(_)) => (
            Failure::Permanent("connection-not-found".into()),
            "connection-not-found",
        ),
        InvocationError::Tenancy(TenancyError::WorkspaceNotFound(_)) => (
            Failure::Permanent("workspace-not-found".into()),
            "workspace-not-found",
        ),
        // Switched off: deliveries wait for it, without using attempts up.
        InvocationError::Disabled(_) => (Failure::CircuitOpen(None), "connection-disabled"),
        // An earlier attempt with this key still runs: wait for it.
        InvocationError::KeyInUse(_) => (Failure::CircuitOpen(None), "idempotency-key-in-use"),
        InvocationError::Binding(_) => (
            Failure::Permanent("invalid-config".into()),
            "invalid-config",
        ),
        InvocationError::Tenancy(_) => (Failure::Transient, "host"),
    };
    Failed {
        failure,
        code: code.to_owned(),
        message: patchbay_policy::text::cap_message(error.to_string()),
        invocation_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::permanent_status;

    #[test]
    fn client_errors_are_permanent_except_those_that_ask_to_wait() {
        for status in [400, 401, 403, 404, 409, 410, 422] {
            assert!(permanent_status(status), "{status}");
        }
        for status in [0, 408, 425, 429, 500, 502, 503, 504] {
            assert!(!permanent_status(status), "{status}");
        }
    }
}
