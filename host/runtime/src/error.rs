//! Errors of loading and invoking plugins.

use crate::bindings::PluginError;
use serde::Serialize;

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A core module, not a component: built for the wrong target.
    #[error(
        "plugin.wasm is a core WebAssembly module, not a component: build it for wasm32-wasip2"
    )]
    CoreModule,
    /// Not WebAssembly at all.
    #[error("plugin.wasm is not WebAssembly")]
    NotWasm,
    /// A component the parser or the compiler refuses: their message.
    #[error("plugin.wasm is not a valid component: {0}")]
    Invalid(String),
    /// The component imports an interface outside the connector world (the
    /// filesystem, sockets…), named here.
    #[error("plugin.wasm imports `{0}`, which is outside the patchbay:connector world")]
    ForbiddenImport(String),
    /// An allowed interface imported in a version or shape this host does not
    /// provide: the linker's message.
    #[error("plugin.wasm imports cannot be satisfied by this host: {0}")]
    Link(String),
    /// The operations interface is not exported, or not in the expected shape.
    #[error("plugin.wasm does not export `patchbay:connector/operations@0.1` as expected: {0}")]
    Exports(String),
    /// A JSON Schema of the manifest cannot be compiled or costs too much to
    /// check.
    #[error("operation `{operation}`: {message}")]
    Schema {
        /// The operation whose schema it is, or `(connection config)`.
        operation: String,
        /// Which of its schemas, and what is wrong with it.
        message: String,
    },
    /// The compiled artifact could not be written to the cache directory.
    #[error("compiled-plugin cache: {0}")]
    Cache(String),
}

/// Why an invocation failed. Each case is specific to that one call; the host
/// keeps serving others.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum InvokeError {
    /// The plugin has no operation of this name: the caller's mistake.
    #[error("plugin has no operation `{0}`")]
    UnknownOperation(String),
    /// The input's JSON text is over the plugin's `max_input_bytes`; nothing
    /// ran.
    #[error("input is {size} bytes; the limit is {max}")]
    InputTooLarge {
        /// The input's size, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The input does not match the operation's input schema: one message per
    /// violation. Nothing ran.
    #[error("input does not match the operation's schema: {}", .0.join("; "))]
    InvalidInput(Vec<String>),
    /// The plugin returned an error on purpose.
    #[error("plugin returned an error: {0}")]
    Plugin(PluginFailure),
    /// The call's deadline passed, in the sandbox or in a schema check: the
    /// time it had, in milliseconds.
    #[error("plugin ran past its deadline of {0} ms")]
    Timeout(u64),
    /// The plugin asked for more linear memory than its limit (in bytes) and
    /// trapped.
    #[error("plugin tried to grow its memory past its limit of {0} bytes")]
    MemoryLimit(usize),
    /// The plugin's wasm stack overflowed (deep recursion).
    #[error("plugin overflowed its stack")]
    StackOverflow,
    /// The plugin panicked: the message it printed to stderr, capped.
    #[error("plugin panicked: {0}")]
    Panic(String),
    /// The plugin trapped for another reason, or called `exit`: what happened,
    /// capped.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin's output is not JSON: the parser's message, capped.
    #[error("plugin output is not valid JSON: {0}")]
    InvalidOutput(String),
    /// The plugin's output is over its `max_output_bytes`.
    #[error("plugin output is {size} bytes; the limit is {max}")]
    OutputTooLarge {
        /// The output's size, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The output does not match the operation's output schema: one message per
    /// violation.
    #[error("plugin output does not match the operation's schema: {}", .0.join("; "))]
    OutputSchema(Vec<String>),
    /// The plugin held more host resources at once (requests, streams, header
    /// collections) than its budget, given.
    #[error(
        "plugin held more than {0} host resources at once (a limit derived from its memory_mb)"
    )]
    HostResources(usize),
    /// The plugin grew one header collection past its budget, in bytes.
    #[error("plugin grew a header collection past {0} bytes (a limit derived from its memory_mb)")]
    HeaderFieldsTooLarge(usize),
    /// The connection or the workspace ran its maximum of calls at once and no
    /// slot freed before the call's deadline; the caller may retry.
    #[error(
        "{scope} already runs {limit} calls at once and no slot freed before this call's deadline"
    )]
    TooManyCalls {
        /// Which cap: the connection or the workspace, by name.
        scope: String,
        /// Calls it may run at once.
        limit: usize,
    },
    /// Every instance of the host's pool (of this size) or every call thread
    /// was in use: refused at once, to be retried shortly.
    #[error("the host is running as many plugin instances as it holds ({0}); retry shortly")]
    AtCapacity(u32),
    /// The host failed to run part of the call (a schema check's thread died):
    /// not the plugin's fault, nor the caller's.
    #[error("host could not run the plugin: {0}")]
    Host(String),
}

pub use patchbay_policy::text::{MAX_ERROR_MESSAGE_BYTES, cap_message};

impl InvokeError {
    /// The invoke API's error code for this error (`invalid-input`,
    /// `rate-limited`, `upstream`…): the one vocabulary for a call that
    /// failed, wherever it is reported.
    pub fn code(&self) -> &'static str {
        use InvokeError as E;
        use PluginFailure as P;
        match self {
            E::UnknownOperation(_) => "unknown-operation",
            E::InputTooLarge { .. } => "input-too-large",
            E::InvalidInput(_) | E::Plugin(P::InvalidInput { .. }) => "invalid-input",
            E::Plugin(P::NotFound { .. }) => "not-found",
            E::Plugin(P::Unauthorized { .. }) => "upstream-unauthorized",
            E::Plugin(P::AccessDenied { .. }) => "access-denied",
            E::Plugin(P::RateLimited { .. }) => "rate-limited",
            E::Plugin(P::Upstream { .. }) => "upstream",
            E::Plugin(P::Timeout { .. }) | E::Timeout(_) => "timeout",
            E::Plugin(P::Unsupported { .. }) => "unsupported",
            E::TooManyCalls { .. } => "too-many-calls",
            E::AtCapacity(_) | E::HostResources(_) => "host-at-capacity",
            _ => "plugin-failed",
        }
    }

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
    /// The input does not satisfy the operation.
    InvalidInput {
        /// Which field, and why (the plugin's text, capped).
        message: String,
    },
    /// What was looked up does not exist upstream.
    NotFound {
        /// What was not found (the plugin's text, capped).
        message: String,
    },
    /// The upstream refused the credentials the host added.
    Unauthorized {
        /// The plugin's account of the refusal, capped.
        message: String,
    },
    /// The host refused a capability: not declared, not granted, or not
    /// allowed by operator policy.
    AccessDenied {
        /// Which capability, as the plugin tells it, capped.
        message: String,
    },
    /// The upstream, or the host's rate limit, asked the plugin to slow down.
    RateLimited {
        /// How long to wait before retrying, in milliseconds.
        retry_after_ms: u64,
    },
    /// The upstream answered with an error status.
    Upstream {
        /// The HTTP status, or 0 when no response was received.
        status: u16,
        /// A short description (the plugin's text, capped).
        message: String,
    },
    /// The call or one of its upstream requests ran out of time.
    Timeout {
        /// What timed out (the plugin's text, capped).
        message: String,
    },
    /// The operation, or a feature of it, is not supported by the plugin.
    Unsupported {
        /// What is not supported (the plugin's text, capped).
        message: String,
    },
    /// Anything else: a bug or an unexpected state in the plugin.
    Internal {
        /// For the logs, not for end users (the plugin's text, capped).
        message: String,
    },
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
