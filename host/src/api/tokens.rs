//! Workspace tokens: operator routes. The token is in the issue response
//! and nowhere else, ever.

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use super::json::ApiJson;
use crate::tenancy::tokens::WorkspaceToken;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http::StatusCode;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{ws}/tokens", get(list).post(issue))
        .route("/v1/workspaces/{ws}/tokens/{id}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    label: Option<String>,
}

#[derive(Serialize)]
struct IssuedToken {
    #[serde(flatten)]
    record: WorkspaceToken,
    /// Shown this once; only its digest is kept.
    token: String,
}

async fn issue(
    _: Operator,
    State(state): State<AppState>,
    Path(ws): Path<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let (record, secret) = state.tenancy.issue_token(&ws, body.label)?;
    let token = secret.expose_secret().to_owned();
    Ok((StatusCode::CREATED, Json(IssuedToken { record, token })))
}

async fn list(
    _: Operator,
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> Result<Json<Vec<WorkspaceToken>>, ApiError> {
    Ok(Json(state.tenancy.tokens(&ws)?))
}

async fn revoke(
    _: Operator,
    State(state): State<AppState>,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.revoke_token(&ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
