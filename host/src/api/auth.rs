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
use crate::tenancy::service::TenancyError;
use crate::tenancy::tokens::WorkspaceToken;
use axum::extract::{FromRequestParts, RawPathParams};
use http::StatusCode;
use http::request::Parts;
use subtle::ConstantTimeEq as _;

pub use crate::tenancy::tokens::{TokenDigest, digest};

/// Whose token the request carries.
#[derive(Debug)]
pub enum Caller {
    Operator,
    Workspace(WorkspaceToken),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
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

/// The `{ws}` segment of the route, if it has one; a path whose segments
/// do not decode (`%FF`) is the caller's error.
async fn path_workspace(parts: &mut Parts, state: &AppState) -> Result<Option<String>, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-path", e.body_text()))?;
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
