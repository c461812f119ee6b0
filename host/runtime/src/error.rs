//! Errors of loading and invoking plugins.

use crate::bindings::PluginError;
use serde::Serialize;

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "plugin.wasm is a core WebAssembly module, not a component: build it for wasm32-wasip2"
    )]
    CoreModule,
    #[error("plugin.wasm is not WebAssembly")]
    NotWasm,
    #[error("plugin.wasm is not a valid component: {0}")]
    Invalid(String),
    #[error("plugin.wasm imports `{0}`, which is outside the patchbay:connector world")]
    ForbiddenImport(String),
    #[error("plugin.wasm imports cannot be satisfied by this host: {0}")]
    Link(String),
    #[error("plugin.wasm does not export `patchbay:connector/operations@0.1` as expected: {0}")]
    Exports(String),
    #[error("operation `{operation}`: {message}")]
    Schema { operation: String, message: String },
    #[error("compiled-plugin cache: {0}")]
    Cache(String),
}

/// Why an invocation failed. Each case is specific to that one call; the host
/// keeps serving others.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum InvokeError {
    #[error("plugin has no operation `{0}`")]
    UnknownOperation(String),
    #[error("input is {size} bytes; the limit is {max}")]
    InputTooLarge { size: usize, max: usize },
    #[error("input does not match the operation's schema: {}", .0.join("; "))]
    InvalidInput(Vec<String>),
    #[error("plugin returned an error: {0}")]
    Plugin(PluginFailure),
    #[error("plugin ran past its deadline of {0} ms")]
    Timeout(u64),
    #[error("plugin tried to grow its memory past its limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("plugin overflowed its stack")]
    StackOverflow,
    #[error("plugin panicked: {0}")]
    Panic(String),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin output is not valid JSON: {0}")]
    InvalidOutput(String),
    #[error("plugin output is {size} bytes; the limit is {max}")]
    OutputTooLarge { size: usize, max: usize },
    #[error("plugin output does not match the operation's schema: {}", .0.join("; "))]
    OutputSchema(Vec<String>),
    #[error(
        "plugin held more than {0} host resources at once (a limit derived from its memory_mb)"
    )]
    HostResources(usize),
    #[error("plugin grew a header collection past {0} bytes (a limit derived from its memory_mb)")]
    HeaderFieldsTooLarge(usize),
    #[error(
        "{scope} already runs {limit} calls at once and no slot freed before this call's deadline"
    )]
    TooManyCalls { scope: String, limit: usize },
    #[error("the host is running as many plugin instances as it holds ({0}); retry shortly")]
    AtCapacity(u32),
    #[error("host could not run the plugin: {0}")]
    Host(String),
}

pub use patchbay_policy::text::{MAX_ERROR_MESSAGE_BYTES, cap_message};

impl InvokeError {
    /// The classified reason of a failure the host answers with a 5xx (the
    /// plugin or the host failed, not the caller), for the host's own log;
    /// `None` for refusals and for errors the plugin reported about upstreams.
    pub fn failure_reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::Timeout(_) => "deadline",
            Self::MemoryLimit(_) => "memory-limit",
            Self::StackOverflow => "stack-overflow",
            Self::Panic(_) => "panic",
            Self::Trap(_) => "trap",
            Self::InvalidOutput(_) => "invalid-output",
            Self::OutputTooLarge { .. } => "output-too-large",
            Self::OutputSchema(_) => "output-schema",
            Self::HostResources(_) | Self::HeaderFieldsTooLarge(_) => "host-resources",
            Self::AtCapacity(_) => "pool-exhausted",
            Self::Host(_) => "host",
            Self::Plugin(PluginFailure::Internal { .. }) => "plugin-internal-error",
            Self::UnknownOperation(_)
            | Self::InputTooLarge { .. }
            | Self::InvalidInput(_)
            | Self::TooManyCalls { .. }
            | Self::Plugin(_) => return None,
        })
    }
}

/// An error the plugin returned on purpose (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PluginFailure {
    InvalidInput { message: String },
    NotFound { message: String },
    Unauthorized { message: String },
    AccessDenied { message: String },
    RateLimited { retry_after_ms: u64 },
    Upstream { status: u16, message: String },
    Timeout { message: String },
    Unsupported { message: String },
    Internal { message: String },
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInput { message } => write!(f, "invalid input: {message}"),
            Self::NotFound { message } => write!(f, "not found: {message}"),
            Self::Unauthorized { message } => write!(f, "unauthorized: {message}"),
            Self::AccessDenied { message } => write!(f, "access denied: {message}"),
            Self::RateLimited { retry_after_ms } => {
                write!(f, "rate limited: retry after {retry_after_ms} ms")
            }
            Self::Upstream { status, message } => write!(f, "upstream error {status}: {message}"),
            Self::Timeout { message } => write!(f, "timeout: {message}"),
            Self::Unsupported { message } => write!(f, "unsupported: {message}"),
            Self::Internal { message } => write!(f, "internal: {message}"),
        }
    }
}

impl From<PluginError> for PluginFailure {
    /// Every message capped: the plugin chooses its length.
    fn from(e: PluginError) -> Self {
        let cap = cap_message;
        match e {
            PluginError::InvalidInput(message) => Self::InvalidInput {
                message: cap(message),
            },
            PluginError::NotFound(message) => Self::NotFound {
                message: cap(message),
            },
            PluginError::Unauthorized(message) => Self::Unauthorized {
                message: cap(message),
            },
            PluginError::AccessDenied(message) => Self::AccessDenied {
                message: cap(message),
            },
            PluginError::RateLimited(retry_after_ms) => Self::RateLimited { retry_after_ms },
            PluginError::Upstream(u) => Self::Upstream {
                status: u.status,
                message: cap(u.message),
            },
            PluginError::Timeout(message) => Self::Timeout {
                message: cap(message),
            },
            PluginError::Unsupported(message) => Self::Unsupported {
                message: cap(message),
            },
            PluginError::Internal(message) => Self::Internal {
                message: cap(message),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_char_boundary_and_marked() {
        let max = MAX_ERROR_MESSAGE_BYTES;
        let cases = [
            ("x".repeat(10), None),
            ("x".repeat(max), None),
            ("x".repeat(max + 1), Some(max + 1)),
            ("x".repeat(50 << 20), Some(50 << 20)),
            // A 3-byte character straddling the cut is dropped whole.
            (format!("{}€€", "x".repeat(max - 1)), Some(max + 5)),
        ];
        for (message, cut_from) in cases {
            let original = message.clone();
            let capped = cap_message(message);
            match cut_from {
                None => assert_eq!(capped, original),
                Some(total) => {
                    let marker = format!("… [truncated, {total} bytes]");
                    assert!(capped.ends_with(&marker), "{}", &capped[max - 8..]);
                    let kept = &capped[..capped.len() - marker.len()];
                    assert!(kept.len() <= max && original.starts_with(kept));
                }
            }
        }
    }

    #[test]
    fn a_plugins_own_error_messages_are_capped() {
        use crate::bindings::patchbay::connector::types::UpstreamError;
        let long = || "m".repeat(MAX_ERROR_MESSAGE_BYTES * 3);
        let errors = [
            PluginError::InvalidInput(long()),
            PluginError::NotFound(long()),
            PluginError::Unauthorized(long()),
            PluginError::AccessDenied(long()),
            PluginError::Timeout(long()),
            PluginError::Unsupported(long()),
            PluginError::Internal(long()),
            PluginError::Upstream(UpstreamError {
                status: 500,
                message: long(),
            }),
        ];
        for error in errors {
            let failure = PluginFailure::from(error);
            let text = failure.to_string();
            assert!(
                text.len() < MAX_ERROR_MESSAGE_BYTES + 100 && text.contains("[truncated"),
                "{failure:?}"
            );
        }
    }
}
