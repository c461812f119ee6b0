//! Workspaces: created, listed and deleted by the operator; a workspace's
//! token may read it and its audit trail.

use super::AppState;
use super::auth::{Operator, WorkspaceAccess};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use patchbay_storage::tenancy::Workspace;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
        .routes(routes!(audit))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}",
    operation_id = "getWorkspace",
    tag = "workspaces",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the workspace", body = Workspace), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn show(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(state.tenancy.workspace(&ws)?))
}

/// `from` / `to`: milliseconds since the epoch (default: all time); `after`:
/// the `next` cursor of the previous page; `limit`: 1-1000 (default 100).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<u64>,
    to: Option<u64>,
    after: Option<String>,
    limit: Option<usize>,
}

/// The workspace's outbound requests, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/audit",
    operation_id = "listWorkspaceAudit",
    tag = "workspaces",
    params(("ws" = String, Path, description = "workspace id"), AuditQuery),
    responses((status = 200, description = "a page of audit records, oldest first", body = patchbay_egress::audit::AuditPage), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn audit(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<patchbay_egress::audit::AuditPage>, ApiError> {
    state.tenancy.workspace(&ws)?;
    let limit = query.limit.unwrap_or(100);
    let range = super::limits::AUDIT_PAGE;
    if !range.contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
            format!(
                "limit must be between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    let audit = state.tenancy.audit.clone();
    audit.flushed().await;
    let page = audit
        .query(
            &ws,
            query.from.unwrap_or(0),
            query.to.unwrap_or(u64::MAX),
            query.after.as_deref(),
            limit,
        )
        .map_err(|e| match e {
            patchbay_egress::audit::AuditError::Cursor(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-query",
                e.to_string(),
            ),
            other => ApiError::internal(other),
        })?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    id: String,
}

#[utoipa::path(
    post,
    path = "/v1/workspaces",
    operation_id = "createWorkspace",
    tag = "workspaces",
    request_body = NewWorkspace,
    responses((status = 201, description = "created", body = Workspace), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn create(
    _: Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    let workspace = state.tenancy.create_workspace(&body.id).await?;
    Ok((StatusCode::CREATED, Json(workspace)))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces",
    operation_id = "listWorkspaces",
    tag = "workspaces",
    responses((status = 200, description = "every workspace", body = [Workspace]), crate::error::ApiErrors),
    security(("operator" = []))
)]
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
#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}",
    operation_id = "deleteWorkspace",
    tag = "workspaces",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 204, description = "deleted with everything it owned"), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn remove(
    _: Operator,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.delete_workspace(&ws).await?;
    state.lookups.forget_workspace(&ws);
    Ok(StatusCode::NO_CONTENT)
}
