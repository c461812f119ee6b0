use crate::bindings::exports::patchbay::connector::operations::Error as WitError;
use crate::bindings::patchbay::connector::types::UpstreamError;
use std::fmt;

/// Why an operation failed. The host maps each case to a precise API status, so
/// pick the one that tells the caller what to do next.
///
/// ```no_run
/// use patchbay_sdk::Error;
/// fn check(phone: &str) -> Result<(), Error> {
///     if phone.is_empty() {
///         return Err(Error::invalid_input("phone must not be empty"));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input did not satisfy the operation; say which field.
    InvalidInput(String),
    /// The thing looked up does not exist upstream.
    NotFound(String),
    /// The upstream refused the credentials the host injected.
    Unauthorized(String),
    /// The host refused a capability (destination, KV, ...).
    AccessDenied(String),
    /// Too many requests; retry after this many milliseconds.
    RateLimited {
        /// Milliseconds to wait before retrying.
        retry_after_ms: u64,
    },
    /// The upstream answered with an error status (0 when there was no response).
    Upstream {
        /// HTTP status code.
        status: u16,
        /// Short description; never put credentials here.
        message: String,
    },
    /// The call or an upstream request ran out of time.
    Timeout(String),
    /// Not supported by this plugin.
    Unsupported(String),
    /// Anything else.
    Internal(String),
}

impl Error {
    /// An [`Error::InvalidInput`] with a message naming the field at fault.
    ///
    /// ```no_run
    /// let e = patchbay_sdk::Error::invalid_input("email: not an address");
    /// ```
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// An [`Error::Internal`].
    ///
    /// ```no_run
    /// let e = patchbay_sdk::Error::internal("unexpected upstream shape");
    /// ```
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// An [`Error::NotFound`].
    ///
    /// ```no_run
    /// let e = patchbay_sdk::Error::not_found("no contact with that phone");
    /// ```
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// An [`Error::Unauthorized`]: for a webhook, a forged or stale one.
    ///
    /// ```no_run
    /// let e = patchbay_sdk::Error::unauthorized("the signature does not match");
    /// ```
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(message.into())
    }

    /// An [`Error::Unsupported`].
    ///
    /// ```no_run
    /// let e = patchbay_sdk::Error::unsupported("this plugin takes no webhooks");
    /// ```
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::Unsupported(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            Self::AccessDenied(m) => write!(f, "access denied: {m}"),
            Self::RateLimited { retry_after_ms } => {
                write!(f, "rate limited: retry after {retry_after_ms} ms")
            }
            Self::Upstream { status, message } => write!(f, "upstream error {status}: {message}"),
            Self::Timeout(m) => write!(f, "timeout: {m}"),
            Self::Unsupported(m) => write!(f, "unsupported: {m}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for WitError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => WitError::InvalidInput(m),
            Error::NotFound(m) => WitError::NotFound(m),
            Error::Unauthorized(m) => WitError::Unauthorized(m),
            Error::AccessDenied(m) => WitError::AccessDenied(m),
            Error::RateLimited { retry_after_ms } => WitError::RateLimited(retry_after_ms),
            Error::Upstream { status, message } => {
                WitError::Upstream(UpstreamError { status, message })
            }
            Error::Timeout(m) => WitError::Timeout(m),
            Error::Unsupported(m) => WitError::Unsupported(m),
            Error::Internal(m) => WitError::Internal(m),
        }
    }
}

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::InvalidInput(m) => Error::InvalidInput(m),
            WitError::NotFound(m) => Error::NotFound(m),
            WitError::Unauthorized(m) => Error::Unauthorized(m),
            WitError::AccessDenied(m) => Error::AccessDenied(m),
            WitError::RateLimited(retry_after_ms) => Error::RateLimited { retry_after_ms },
            WitError::Upstream(UpstreamError { status, message }) => {
                Error::Upstream { status, message }
            }
            WitError::Timeout(m) => Error::Timeout(m),
            WitError::Unsupported(m) => Error::Unsupported(m),
            WitError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<crate::kv::KvError> for Error {
    fn from(e: crate::kv::KvError) -> Self {
        match e {
            crate::kv::KvError::AccessDenied(m) => Error::AccessDenied(m),
            other => Error::Internal(other.to_string()),
        }
    }
}
