//! Workspaces: created, listed and deleted by the operator; a workspace's
//! token may read it and its audit trail.

use super::AppState;
use super::auth::{Operator, WorkspaceAccess};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use patchbay_storage::tenancy::{Workspace, WorkspaceSettings};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
        .routes(routes!(audit))
        .routes(routes!(settings))
}

/// Replace the workspace's settings (every field optional; an absent one is
/// unset). A workspace token may set its own workspace's.
#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/settings",
    operation_id = "putWorkspaceSettings",
    tag = "workspaces",
    params(("ws" = String, Path, description = "workspace id")),
    request_body = WorkspaceSettings,
    responses((status = 200, description = "the workspace with its new settings", body = Workspace), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn settings(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiJson(mut settings): ApiJson<WorkspaceSettings>,
) -> Result<Json<Workspace>, ApiError> {
    if let Some(region) = &settings.default_region {
        let canonical = patchbay_lookup::phone::region(region).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-settings",
                format!("default_region: {e}"),
            )
        })?;
        settings.default_region = Some(canonical);
    }
    Ok(Json(state.tenancy.set_workspace_settings(&ws, settings)?))
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
pub(crate) struct AuditQuery {
    from: Option<u64>,
    to: Option<u64>,
    pub(crate) after: Option<String>,
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
    let limit = query.limit()?;
    let audit = state.tenancy.audit.clone();
    audit.flushed().await;
    let page = audit
        .query(&ws, query.from(), query.to(), query.after.as_deref(), limit)
        .map_err(audit_error)?;
    Ok(Json(page))
}

impl AuditQuery {
    /// The page size asked for, checked.
    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(100);
        let range = super::limits::AUDIT_PAGE;
        if range.contains(&limit) {
            return Ok(limit);
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
            format!(
                "limit must be between {} and {}",
                range.start(),
                range.end()
            ),
        ))
    }

    pub(crate) fn from(&self) -> u64 {
        self.from.unwrap_or(0)
    }

    pub(crate) fn to(&self) -> u64 {
        self.to.unwrap_or(u64::MAX)
    }
}

/// A bad cursor is the client's (422); anything else the host's.
pub(crate) fn audit_error(e: patchbay_egress::audit::AuditError) -> ApiError {
    match e {
        patchbay_egress::audit::AuditError::Cursor(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
            e.to_string(),
        ),
        other => ApiError::internal(other),
    }
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
    // A crash part-way through deleting a workspace of this id may have left
    // its trail of lookup runs: a new workspace never inherits it.
    if matches!(
        state.tenancy.workspace(&body.id),
        Err(patchbay_tenancy::service::TenancyError::WorkspaceNotFound(
            _
        ))
    ) {
        state
            .lookups
            .remove_workspace(&body.id)
            .await
            .map_err(ApiError::internal)?;
        state.events.remove_workspace(&body.id).await?;
    }
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
    // Then its trail of lookup runs (and kept results). A crash in between
    // leaves a trail no route reaches (the workspace is gone); creating a
    // workspace of the same id removes it first.
    state
        .lookups
        .remove_workspace(&ws)
        .await
        .map_err(ApiError::internal)?;
    // And its subscriptions, events, queues and dead letters, the same way.
    state.events.remove_workspace(&ws).await?;
    Ok(StatusCode::NO_CONTENT)
}
