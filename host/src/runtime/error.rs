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
    #[error("host could not run the plugin: {0}")]
    Host(String),
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
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::InvalidInput(message) => Self::InvalidInput { message },
            PluginError::NotFound(message) => Self::NotFound { message },
            PluginError::Unauthorized(message) => Self::Unauthorized { message },
            PluginError::AccessDenied(message) => Self::AccessDenied { message },
            PluginError::RateLimited(retry_after_ms) => Self::RateLimited { retry_after_ms },
            PluginError::Upstream(u) => Self::Upstream {
                status: u.status,
                message: u.message,
            },
            PluginError::Timeout(message) => Self::Timeout { message },
            PluginError::Unsupported(message) => Self::Unsupported { message },
            PluginError::Internal(message) => Self::Internal { message },
        }
    }
}
