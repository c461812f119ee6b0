//! Caller-context lookups: a workspace's definitions, running one for an
//! inbound caller, and dropping a kept result. The record a run returns is
//! masked to the profile of the token that asked (or a lower one the
//! request names); the operator token sees `admin`.

use super::AppState;
use super::auth::{Caller, WorkspaceAccess};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use patchbay_lookup::{LookupError, MaskedAnswer};
use patchbay_policy::lookup::{LookupDefinition, Profile};
use patchbay_storage::tenancy::StoredLookup;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, put, delete))
        .routes(routes!(run))
        .routes(routes!(forget))
        .routes(routes!(runs))
}

/// The workspace's caller lookups run, oldest first, a page at a time: who
/// asked, how each source ended, which fields (names only) went back.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/lookup-runs",
    operation_id = "listLookupRuns",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id"), crate::workspaces::AuditQuery),
    responses((status = 200, description = "a page of runs, oldest first", body = patchbay_lookup::RunPage), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn runs(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(query): ApiQuery<crate::workspaces::AuditQuery>,
) -> Result<Json<patchbay_lookup::RunPage>, ApiError> {
    state.tenancy.workspace(&ws)?;
    let limit = query.limit()?;
    let page = state
        .lookups
        .runs(&ws, query.from(), query.to(), query.after.as_deref(), limit)
        .await
        .map_err(crate::workspaces::audit_error)?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/lookups",
    operation_id = "listLookups",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the workspace's lookups, by name", body = [StoredLookup]), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn list(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<StoredLookup>>, ApiError> {
    Ok(Json(state.tenancy.lookups(&ws)?))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/lookups/{name}",
    operation_id = "getLookup",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "lookup name")),
    responses((status = 200, description = "the lookup", body = StoredLookup), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn get(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<StoredLookup>, ApiError> {
    Ok(Json(state.tenancy.lookup(&ws, &name)?))
}

#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/lookups/{name}",
    operation_id = "putLookup",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "lookup name")),
    request_body = LookupDefinition,
    responses(
        (status = 201, description = "created", body = StoredLookup),
        (status = 200, description = "replaced; results kept for the old definition are dropped", body = StoredLookup),
        crate::error::ApiErrors
    ),
    security(("operator" = []), ("workspace" = []))
)]
async fn put(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    ApiJson(definition): ApiJson<LookupDefinition>,
) -> Result<(StatusCode, Json<StoredLookup>), ApiError> {
    let (stored, created) = state.tenancy.put_lookup(&ws, &name, definition).await?;
    state.lookups.forget_lookup(&ws, &name);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/lookups/{name}",
    operation_id = "deleteLookup",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "lookup name")),
    responses((status = 204, description = "deleted, with every result kept for it"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn delete(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.delete_lookup(&ws, &name)?;
    state.lookups.forget_lookup(&ws, &name);
    Ok(StatusCode::NO_CONTENT)
}

/// Who is calling, and what they know of them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RunLookup {
    /// The caller's number, in any common form; read in `default_region`
    /// when it has no country code.
    phone: String,
    /// The caller's email, when known.
    #[serde(default)]
    email: Option<String>,
    /// Region (CLDR code, e.g. `US`) for a number without a country code;
    /// the workspace's `settings.default_region` when absent.
    #[serde(default)]
    default_region: Option<String>,
    /// A profile lower than the token's, to see less; never a higher one.
    #[serde(default)]
    profile: Option<Profile>,
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/lookups/{name}/run",
    operation_id = "runLookup",
    tag = "lookups",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "lookup name")),
    request_body = RunLookup,
    responses((status = 200, description = "the caller record, masked to the profile, with each source's status", body = MaskedAnswer), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn run(
    WorkspaceAccess(caller): WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<RunLookup>,
) -> Result<Json<MaskedAnswer>, ApiError> {
    let (allowed, token) = match &caller {
        Caller::Operator => (Profile::Admin, "operator".to_owned()),
        Caller::Workspace(token) => (token.profile, token.id.clone()),
    };
    let profile = match request.profile {
        Some(asked) if asked > allowed => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "profile-above-token",
                format!(
                    "the request asks for profile {}, above its token's {}",
                    asked.as_str(),
                    allowed.as_str()
                ),
            ));
        }
        Some(asked) => asked,
        None => allowed,
    };
    let stored = state.tenancy.lookup(&ws, &name)?;
    let region = match request.default_region {
        Some(region) => Some(region),
        None => state.tenancy.workspace(&ws)?.settings.default_region,
    };
    let answer = state
        .lookups
        .run(
            &ws,
            &name,
            &stored.definition,
            &request.phone,
            request.email.as_deref(),
            region.as_deref(),
        )
        .await
        .map_err(bad_caller)?;
    let masked = answer.masked(profile);
    // The audit of a run: who asked, how each source ended, which fields
    // (names only) went back, and whether the cache answered.
    let statuses: Vec<String> = masked
        .sources
        .iter()
        .map(|s| format!("{}={}", s.name, s.status.as_str()))
        .collect();
    tracing::info!(target: "patchbay::audit", capability = "lookup", workspace = %ws,
        lookup = %name, token = %token, profile = profile.as_str(), cached = masked.cached,
        sources = %statuses.join(","), fields = %masked.fields_returned.join(","),
        "caller lookup");
    state.lookups.audit(&ws, &name, &token, &masked);
    Ok(Json(masked))
}

fn bad_caller(error: LookupError) -> ApiError {
    let code = match error {
        LookupError::Phone(_) => "invalid-phone",
        LookupError::Email(_) => "invalid-email",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, error.to_string())
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/lookups/{name}/cache/{key}",
    operation_id = "forgetLookupResult",
    tag = "lookups",
    params(
        ("ws" = String, Path, description = "workspace id"),
        ("name" = String, Path, description = "lookup name"),
        ("key" = String, Path, description = "the caller's number (E.164, or any form with `default_region`), URL-encoded"),
        ("default_region" = Option<String>, Query, description = "region for a number without a country code; the workspace's setting when absent")
    ),
    responses((status = 204, description = "the results kept for that caller are dropped"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn forget(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name, key)): ApiPath<(String, String, String)>,
    axum::extract::Query(query): axum::extract::Query<ForgetQuery>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.lookup(&ws, &name)?;
    let region = match query.default_region {
        Some(region) => Some(region),
        None => state.tenancy.workspace(&ws)?.settings.default_region,
    };
    state
        .lookups
        .forget(&ws, &name, &key, region.as_deref())
        .map_err(bad_caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ForgetQuery {
    #[serde(default)]
    default_region: Option<String>,
}
