//! Workspace tokens: operator routes. The token is in the issue response
//! and nowhere else, ever.

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use patchbay_storage::tokens::WorkspaceToken;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, issue))
        .routes(routes!(revoke))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    label: Option<String>,
    /// What the token may see of caller-context lookups; `basic` unless given.
    #[serde(default)]
    profile: patchbay_policy::lookup::Profile,
}

#[derive(Serialize, utoipa::ToSchema)]
struct IssuedToken {
    #[serde(flatten)]
    record: WorkspaceToken,
    /// Shown this once; only its digest is kept.
    token: String,
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/tokens",
    operation_id = "issueWorkspaceToken",
    tag = "tokens",
    params(("ws" = String, Path, description = "workspace id")),
    request_body = NewToken,
    responses((status = 201, description = "the token, shown this once", body = IssuedToken), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn issue(
    _: Operator,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let (record, secret) = state.tenancy.issue_token(&ws, body.label, body.profile)?;
    let token = secret.expose_secret().to_owned();
    Ok((StatusCode::CREATED, Json(IssuedToken { record, token })))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/tokens",
    operation_id = "listWorkspaceTokens",
    tag = "tokens",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the workspace's tokens, never their values", body = [WorkspaceToken]), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn list(
    _: Operator,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<WorkspaceToken>>, ApiError> {
    Ok(Json(state.tenancy.tokens(&ws)?))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/tokens/{id}",
    operation_id = "revokeWorkspaceToken",
    tag = "tokens",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "token id")),
    responses((status = 204, description = "revoked"), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn revoke(
    _: Operator,
    State(state): State<AppState>,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.revoke_token(&ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
