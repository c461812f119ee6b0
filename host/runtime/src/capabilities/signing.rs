//! `patchbay:connector/signing`: HMAC checks against the connection's
//! webhook secrets, which never enter the sandbox.
//!
//! Granted only while the host runs a plugin's `verify-webhook` export, and
//! only for `webhook_secret` credentials the manifest declares and the
//! workspace approved. The host remembers whether any check matched: a
//! webhook whose call never saw one is refused whatever the plugin answers.

use crate::bindings::patchbay::connector::signing::{
    Error, HmacAlgorithm, Host, add_to_linker as add_signing,
};
use patchbay_egress::credentials::{CredentialError, Credentials};
use patchbay_policy::call::CallId;
use patchbay_policy::webhook::{HmacAlgorithm as Algorithm, hmac_matches};
use patchbay_storage::Scope;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Most `verify-hmac` calls in one call, refused ones included: a scheme
/// needs one per signature it was sent (rotation lists are short); each
/// costs the host a pass over the message, or a log line when refused.
pub const MAX_CHECKS: u32 = 32;
/// Longest message `verify-hmac` takes, in bytes: a body at the operator's
/// largest webhook size plus room for what a scheme prefixes it with.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;

/// What a `verify-webhook` call may check signatures with.
#[derive(Clone)]
pub struct SigningAccess {
    /// Where the secrets are held, sealed.
    pub credentials: Arc<Credentials>,
    /// The connection whose secrets these are.
    pub scope: Arc<Scope>,
    /// `webhook_secret` credentials declared and approved, by name.
    pub allowed: Arc<[String]>,
}

/// Per-invocation signing context.
pub struct SigningCtx {
    /// `None` outside a `verify-webhook` call: every check is refused.
    pub access: Option<SigningAccess>,
    /// The invocation, for the host's log line about a refusal.
    pub call: Arc<CallId>,
    /// Whether any check matched during this call.
    pub matched: bool,
    /// Checks made during this call.
    pub checks: u32,
}

impl SigningCtx {
    /// A context that refuses every check (an operation, not a webhook).
    pub fn denied(call: Arc<CallId>) -> Self {
        Self {
            access: None,
            call,
            matched: false,
            checks: 0,
        }
    }

    fn deny(&self, why: String) -> Error {
        tracing::warn!(target: "patchbay::audit", capability = "signing", operation = "verify-hmac",
            invocation = %self.call, decision = "denied", reason = %why, "verify-hmac refused");
        Error::AccessDenied(why)
    }
}

impl Host for SigningCtx {
    fn verify_hmac(
        &mut self,
        credential: String,
        algorithm: HmacAlgorithm,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        // Every call counts, refused ones too: a plugin looping on a refusal
        // gets silent refusals past the limit, not a log line each.
        self.checks = self.checks.saturating_add(1);
        if self.checks > MAX_CHECKS {
            return Ok(Err(Error::AccessDenied(format!(
                "more than {MAX_CHECKS} verify-hmac calls in one call"
            ))));
        }
        let Some(access) = &self.access else {
            return Ok(Err(self.deny(
                "verify-hmac is only available while verifying a webhook".into(),
            )));
        };
        if !access.allowed.contains(&credential) {
            let why = format!(
                "credential {credential:?} is not a webhook_secret this plugin declares and the workspace approved"
            );
            return Ok(Err(self.deny(why)));
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Ok(Err(Error::InvalidInput(format!(
                "the message is longer than {MAX_MESSAGE_BYTES} bytes"
            ))));
        }
        let algorithm = match algorithm {
            HmacAlgorithm::Sha1 => Algorithm::Sha1,
            HmacAlgorithm::Sha256 => Algorithm::Sha256,
            HmacAlgorithm::Sha512 => Algorithm::Sha512,
        };
        let checked = access
            .credentials
            .with_webhook_secret(&access.scope, &credential, |key| {
                hmac_matches(algorithm, key.as_bytes(), &message, &signature)
            });
        let matched = match checked {
            Ok(Some(matched)) => matched,
            Ok(None) => {
                return Ok(Err(self.deny(format!(
                    "credential {credential:?} is not set for this connection"
                ))));
            }
            Err(e @ CredentialError::WrongKind { .. }) => return Ok(Err(self.deny(e.to_string()))),
            Err(e) => {
                tracing::error!(target: "patchbay::credentials", invocation = %self.call,
                    error = %e, "reading a webhook secret");
                return Ok(Err(Error::Internal("the credential store failed".into())));
            }
        };
        self.matched |= matched;
        Ok(Ok(matched))
    }
}

struct SigningCap;

impl HasData for SigningCap {
    type Data<'a> = &'a mut SigningCtx;
}

/// Link `patchbay:connector/signing` for a store whose data holds the call's
/// signing context where `get` finds it.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SigningCtx,
) -> wasmtime::Result<()> {
    add_signing::<T, SigningCap>(linker, get)
}
