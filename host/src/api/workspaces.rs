//! Workspaces: operator routes.

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use crate::tenancy::Workspace;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces", get(list).post(create))
        .route("/v1/workspaces/{ws}", delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    id: String,
}

async fn create(
    _: Operator,
    State(state): State<AppState>,
    Json(body): Json<NewWorkspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    let workspace = state.tenancy.create_workspace(&body.id)?;
    Ok((StatusCode::CREATED, Json(workspace)))
}

async fn list(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Json<Vec<Workspace>>, ApiError> {
    let all = state
        .tenancy
        .store
        .list_workspaces()
        .map_err(ApiError::internal)?;
    Ok(Json(all))
}

/// Removes the workspace and everything it owns.
async fn remove(
    _: Operator,
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.delete_workspace(&ws).await?;
    Ok(StatusCode::NO_CONTENT)
}
