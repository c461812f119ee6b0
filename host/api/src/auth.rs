//! Who is calling, and what they may reach. Every request presents a bearer
//! token: the operator token, or a token of one workspace. The operator token
//! is compared by SHA-256 digest in constant time, so neither its length nor
//! a matching prefix shows in the response time; workspace tokens are found
//! by digest (`tenancy::tokens`).
//!
//! A workspace token reaching for another workspace gets the same 404 as a
//! workspace that does not exist, on every route of it, so it cannot learn
//! which workspaces exist.

use super::AppState;
use super::error::ApiError;
use axum::extract::{FromRequestParts, RawPathParams};
use http::StatusCode;
use http::request::Parts;
use patchbay_storage::tokens::WorkspaceToken;
use patchbay_tenancy::service::TenancyError;
use subtle::ConstantTimeEq as _;

pub use patchbay_storage::tokens::{TokenDigest, digest};

/// Whose token the request carries.
#[derive(Debug)]
pub enum Caller {
    /// The operator token: every route, every workspace.
    Operator,
    /// A live token of one workspace: that workspace's routes only.
    Workspace(WorkspaceToken),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                ApiError::unauthorized("send the operator or a workspace token as a bearer token")
            })?;
        let presented_digest = digest(presented);
        if bool::from(presented_digest.ct_eq(&state.operator_token)) {
            return Ok(Caller::Operator);
        }
        match state.tenancy.authenticate(presented, &presented_digest)? {
            Some(token) => Ok(Caller::Workspace(token)),
            None => Err(ApiError::unauthorized(
                "the token is neither the operator token nor a live workspace token",
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// matched without regard to case (RFC 9110 §11.1), so `bearer` and `BEARER`
/// work as clients send them; anything but one non-empty token is refused.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains([' ', '\t']))
        .then_some(token)
}

/// Shortest operator token `serve` accepts. The operator token opens every
/// workspace, so it must not be guessable: 32 characters of a random token
/// carry well over 128 bits (the generated one is `pbo_` and 64 hex digits).
pub const MIN_OPERATOR_TOKEN_CHARS: usize = 32;

/// Why a configured operator token is refused, if it is.
pub fn check_operator_token(token: &str) -> Result<(), String> {
    let chars = token.chars().count();
    if chars < MIN_OPERATOR_TOKEN_CHARS {
        return Err(format!(
            "the operator token is {chars} characters; use at least {MIN_OPERATOR_TOKEN_CHARS} \
             random ones (e.g. `pbo_$(openssl rand -hex 32)`), or unset PATCHBAY_OPERATOR_TOKEN \
             to have one generated into the data directory"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the operator token holds whitespace or control characters, which cannot \
                    be sent in a bearer header"
                .into(),
        );
    }
    Ok(())
}

/// The `{ws}` segment of the route, if it has one; a path whose segments
/// do not decode (`%FF`) is the caller's error.
async fn path_workspace(parts: &mut Parts, state: &AppState) -> Result<Option<String>, ApiError> {
    let params: RawPathParams =
        super::extract::parts_or(parts, state, StatusCode::BAD_REQUEST, "invalid-path").await?;
    Ok(params
        .iter()
        .find(|(name, _)| *name == "ws")
        .map(|(_, value)| value.to_owned()))
}

/// The 404 a workspace token gets for a workspace not its own: word for word
/// the one for a workspace that does not exist.
fn hidden(workspace: String) -> ApiError {
    TenancyError::WorkspaceNotFound(workspace).into()
}

/// Proof that the request carries the operator token. A workspace token is
/// refused: 404 on another workspace's routes, 403 anywhere else.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Operator => Ok(Operator),
            Caller::Workspace(token) => match path_workspace(parts, state).await? {
                Some(ws) if ws != token.workspace => Err(hidden(ws)),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "operator-only",
                    "this route takes the operator token, not a workspace token",
                )),
            },
        }
    }
}

/// Proof that the caller may act on the route's `{ws}`: the operator, or a
/// token of that workspace.
#[derive(Debug)]
pub struct WorkspaceAccess(pub Caller);

impl FromRequestParts<AppState> for WorkspaceAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Some(ws) = path_workspace(parts, state).await? else {
            return Err(ApiError::internal("a workspace route without {ws}"));
        };
        match caller {
            Caller::Workspace(token) if token.workspace != ws => Err(hidden(ws)),
            caller => Ok(WorkspaceAccess(caller)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MIN_OPERATOR_TOKEN_CHARS, bearer_token, check_operator_token};

    #[test]
    fn refuses_operator_tokens_shorter_than_the_minimum() {
        let at = "a".repeat(MIN_OPERATOR_TOKEN_CHARS);
        let under = "a".repeat(MIN_OPERATOR_TOKEN_CHARS - 1);
        assert!(check_operator_token(&at).is_ok());
        assert!(check_operator_token(&format!("pbo_{}", "0f".repeat(32))).is_ok());
        for (what, token) in [
            ("one under", under.as_str()),
            ("empty", ""),
            ("short", "secret"),
        ] {
            let error = check_operator_token(token).expect_err(what);
            assert!(error.contains("at least 32"), "{what}: {error}");
        }
        // Counted in characters, not bytes: 31 two-byte characters are still too few.
        assert!(check_operator_token(&"é".repeat(MIN_OPERATOR_TOKEN_CHARS - 1)).is_err());
        assert!(check_operator_token(&format!("{at} x")).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_read_whatever_its_case() {
        let table = [
            ("Bearer pbw_abc", Some("pbw_abc")),
            ("bearer pbw_abc", Some("pbw_abc")),
            ("BEARER pbw_abc", Some("pbw_abc")),
            ("bEaReR pbw_abc", Some("pbw_abc")),
            ("Bearer   pbw_abc  ", Some("pbw_abc")),
            ("Bearer\tpbw_abc", Some("pbw_abc")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearerpbw_abc", None),
            ("Bearer a b", None),
            ("Token pbw_abc", None),
            ("", None),
        ];
        for (header, expected) in table {
            assert_eq!(bearer_token(header), expected, "{header:?}");
        }
    }
}
