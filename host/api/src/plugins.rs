//! Installed plugins: operator routes. A package is sent as JSON, the
//! manifest's TOML text beside the component in base64, and is validated as
//! `patchbay plugin install` validates a directory.

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::limits::MAX_INSTALL_BODY_BYTES;
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use http::StatusCode;
use patchbay_runtime::package::{Package, PackageError};
use patchbay_tenancy::store::{InstalledPlugin, PluginVersion};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, install).layer(DefaultBodyLimit::max(MAX_INSTALL_BODY_BYTES)))
        .routes(routes!(show))
        .routes(routes!(manifest, remove))
}

#[utoipa::path(
    get,
    path = "/v1/plugins",
    operation_id = "listPlugins",
    tag = "plugins",
    responses((status = 200, description = "every installed version", body = [InstalledPlugin]), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn list(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Json<Vec<InstalledPlugin>>, ApiError> {
    Ok(Json(state.catalog.list().map_err(ApiError::internal)?))
}

#[derive(Serialize, utoipa::ToSchema)]
struct PluginVersions {
    id: String,
    /// Newest first.
    versions: Vec<InstalledPlugin>,
}

#[utoipa::path(
    get,
    path = "/v1/plugins/{id}",
    operation_id = "listPluginVersions",
    tag = "plugins",
    params(("id" = String, Path, description = "plugin id")),
    responses((status = 200, description = "the plugin's versions, newest first", body = PluginVersions), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn show(
    _: Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PluginVersions>, ApiError> {
    let versions = state
        .catalog
        .list_versions(&id)
        .map_err(ApiError::internal)?;
    if versions.is_empty() {
        return Err(package_error(PackageError::NotInstalled(id)));
    }
    Ok(Json(PluginVersions { id, versions }))
}

/// One version's whole manifest (what it asks for, and its schemas), with
/// the package's digest and publisher under `package`.
#[utoipa::path(
    get,
    path = "/v1/plugins/{id}/{version}",
    operation_id = "getPluginManifest",
    tag = "plugins",
    params(("id" = String, Path, description = "plugin id"), ("version" = String, Path, description = "semver version")),
    responses((status = 200, description = "the version's manifest, with `package`: its digest and publisher", body = PluginVersion), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn manifest(
    _: Operator,
    State(state): State<AppState>,
    ApiPath((id, version)): ApiPath<(String, String)>,
) -> Result<Json<PluginVersion>, ApiError> {
    let version = state
        .catalog
        .inspect_package(&format!("{id}@{version}"))
        .map_err(package_error)?;
    Ok(Json(version))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPackage {
    /// `plugin.toml`'s text.
    manifest: String,
    /// `plugin.wasm`, base64 (standard alphabet).
    component: String,
    /// `plugin.sig`'s text, for a signed package (`patchbay plugin sign`).
    #[serde(default)]
    signature: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/plugins",
    operation_id = "installPlugin",
    tag = "plugins",
    request_body = NewPackage,
    responses((status = 201, description = "validated and installed", body = InstalledPlugin), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn install(
    _: Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewPackage>,
) -> Result<(StatusCode, Json<InstalledPlugin>), ApiError> {
    use base64::Engine as _;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.component.trim())
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("component: not base64: {e}"),
            )
        })?;
    let package = Package {
        manifest_text: body.manifest,
        wasm,
        signature: body.signature,
    };
    let installed = state
        .catalog
        .install(package)
        .await
        .map_err(package_error)?;
    Ok((StatusCode::CREATED, Json(installed)))
}

#[utoipa::path(
    delete,
    path = "/v1/plugins/{id}/{version}",
    operation_id = "removePluginVersion",
    tag = "plugins",
    params(("id" = String, Path, description = "plugin id"), ("version" = String, Path, description = "semver version")),
    responses((status = 204, description = "removed"), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn remove(
    _: Operator,
    State(state): State<AppState>,
    ApiPath((id, version)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.remove_plugin(&id, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Why a package or plugin reference was refused, as the API says it.
fn package_error(error: PackageError) -> ApiError {
    match error {
        PackageError::NotInstalled(_) => ApiError::not_found(error.to_string()),
        PackageError::AlreadyInstalled { .. } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        PackageError::Manifest(_)
        | PackageError::Component(_)
        | PackageError::Probe(_)
        | PackageError::OperationMismatch(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-plugin",
            error.to_string(),
        ),
        PackageError::Signature(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-signature",
            error.to_string(),
        ),
        PackageError::Untrusted(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "untrusted-package",
            error.to_string(),
        ),
        PackageError::Read { .. } | PackageError::Store(_) => ApiError::internal(error),
    }
}
