//! Connections of a workspace, and invoking their operations.
//! Workspace routes: the operator token or that workspace's token.

use super::AppState;
use super::auth::WorkspaceAccess;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use http::{HeaderMap, StatusCode};
use patchbay_egress::credentials::CredentialInfo;
use patchbay_storage::tenancy::Connection;
use patchbay_tenancy::invoke::{Explanation, Invocation};
use patchbay_tenancy::service::ConnectionRequest;
use patchbay_tenancy::status;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, save, remove))
        .routes(routes!(invoke))
        .routes(routes!(set_credential, remove_credential))
}

/// Write-only: the value is sealed and stored, and never shown again.
#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/connections/{name}/credentials/{credential}",
    operation_id = "setConnectionCredential",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name"), ("credential" = String, Path, description = "credential name, as the manifest declares it")),
    request_body = crate::limits::CredentialBody,
    responses((status = 204, description = "sealed and stored; never shown again"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn set_credential(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name, credential)): ApiPath<(String, String, String)>,
    ApiJson(secret): ApiJson<patchbay_egress::credentials::Secret>,
) -> Result<StatusCode, ApiError> {
    let connection = state.tenancy.connection(&ws, &name)?;
    let plugin = state.tenancy.plugin_of(&connection).await?;
    let declared = plugin
        .manifest
        .capabilities
        .credentials
        .iter()
        .find(|c| c.name == credential)
        .ok_or_else(|| {
            ApiError::not_found(format!("the plugin declares no credential {credential:?}"))
        })?;
    if declared.kind != secret.kind() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-credential",
            format!(
                "credential {credential:?} is a {}, not a {}",
                declared.kind.as_str(),
                secret.kind().as_str()
            ),
        ));
    }
    state
        .tenancy
        .credentials
        .set(&connection.scope(), &credential, secret)
        .await
        .map_err(|e| match e {
            patchbay_egress::credentials::CredentialError::Invalid(..) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-credential",
                e.to_string(),
            ),
            other => ApiError::internal(other),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/connections/{name}/credentials/{credential}",
    operation_id = "deleteConnectionCredential",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name"), ("credential" = String, Path, description = "credential name")),
    responses((status = 204, description = "removed"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn remove_credential(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name, credential)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let connection = state.tenancy.connection(&ws, &name)?;
    let existed = state
        .tenancy
        .credentials
        .remove(&connection.scope(), &credential)
        .await
        .map_err(ApiError::internal)?;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "credential {credential:?} is not set"
        )))
    }
}

/// A connection as the API shows it: never a credential value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ConnectionView {
    #[serde(flatten)]
    connection: Connection,
    /// `ok` (everything the plugin asks for is approved and every credential
    /// it declares is set), `disabled` or `needs-attention` (see `reasons`).
    status: &'static str,
    /// `reasons` joined, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What is missing, each with how to fix it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
    credentials: Vec<CredentialInfo>,
    /// On a save that moved the version: what the new version added.
    #[serde(skip_serializing_if = "Option::is_none")]
    upgrade: Option<patchbay_policy::upgrade::CapabilityDiff>,
}

/// The connection with its status and what it lacks, and every credential
/// its plugin declares: set or not, never a value.
async fn view(state: &AppState, connection: Connection) -> Result<ConnectionView, ApiError> {
    let plugin = state.tenancy.plugin_of(&connection).await?;
    let credentials = state
        .tenancy
        .declared_credentials(&connection, &plugin.manifest)
        .map_err(ApiError::internal)?;
    let addresses = state.catalog.runtime().egress().address_policy();
    let status = status::status(&connection, &plugin.manifest, &credentials, addresses);
    Ok(ConnectionView {
        connection,
        status: status.status,
        reason: (!status.reasons.is_empty()).then(|| status.reasons.join("; ")),
        reasons: status.reasons,
        credentials,
        upgrade: None,
    })
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/connections",
    operation_id = "listConnections",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the workspace's connections", body = [ConnectionView]), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn list(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    let mut views = Vec::new();
    for connection in state.tenancy.connections(&ws)? {
        views.push(view(&state, connection).await?);
    }
    Ok(Json(views))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/connections/{name}",
    operation_id = "getConnection",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 200, description = "the connection, its status and its credentials' names", body = ConnectionView), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn show(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<ConnectionView>, ApiError> {
    let connection = state.tenancy.connection(&ws, &name)?;
    Ok(Json(view(&state, connection).await?))
}

#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/connections/{name}",
    operation_id = "saveConnection",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    request_body = ConnectionRequest,
    responses((status = 200, description = "saved; `upgrade` shows what a version move added", body = ConnectionView), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn save(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ConnectionRequest>,
) -> Result<Json<ConnectionView>, ApiError> {
    let saved = state.tenancy.put_connection(&ws, &name, request).await?;
    let mut shown = view(&state, saved.connection).await?;
    shown.upgrade = saved.upgrade;
    Ok(Json(shown))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/connections/{name}",
    operation_id = "deleteConnection",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 204, description = "deleted with its credentials and KV data"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn remove(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.tenancy.delete_connection(&ws, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InvokeRequest {
    input: Json_,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct InvokeResponse {
    output: Json_,
    invocation_id: String,
    duration_ms: u64,
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/connections/{name}/operations/{op}",
    operation_id = "invokeOperation",
    tag = "connections",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name"), ("op" = String, Path, description = "operation name"), ("idempotency-key" = Option<String>, Header, description = "1-255 visible ASCII characters, passed to the plugin; calls on one connection with the same key run one at a time")),
    request_body = InvokeRequest,
    responses((status = 200, description = "the operation's output", body = InvokeResponse), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn invoke(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name, op)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<InvokeRequest>,
) -> Result<Json<InvokeResponse>, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let invoked = state
        .tenancy
        .invoke(Invocation {
            workspace: ws,
            connection: name,
            operation: op,
            input: request.input,
            idempotency_key,
            deadline: None,
            tape: None,
        })
        .await?;
    let outcome = invoked.outcome;
    match outcome.result {
        Ok(output) => Ok(Json(InvokeResponse {
            output,
            invocation_id: outcome.invocation_id,
            duration_ms: outcome.duration.as_millis() as u64,
        })),
        Err(error) => {
            let mut answer = ApiError::from_invoke(error, &outcome.invocation_id);
            explain_failure(&mut answer, invoked.explanation);
            Err(answer)
        }
    }
}

/// Say why a failed call failed when the host, not the upstream, caused it:
/// the requests it refused, and credentials it could not send. A 401 the
/// plugin reports for a credential the host never sent is the tenant's to
/// fix, not the upstream's refusal.
fn explain_failure(answer: &mut ApiError, explanation: Explanation) {
    if explanation.credential_unavailable
        && let Some(first) = explanation.unusable_credentials.first()
    {
        answer.status = StatusCode::CONFLICT;
        answer.code = "credential-unavailable";
        answer.message = first.clone();
    } else if let Some(first) = explanation.refused.first() {
        answer.message = format!("{}: {first}", answer.message);
    }
    answer.details.extend(explanation.refused);
    answer.details.extend(explanation.unusable_credentials);
}

/// Longest `Idempotency-Key` accepted (Stripe's limit).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`: visible ASCII, 1-255 characters, or a
/// 400 naming the header (never silently dropped: a dropped key would
/// neither reach the plugin nor keep two calls apart).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            format!("the Idempotency-Key header {why}"),
        )
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII text"))?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY {
        return Err(invalid(&format!(
            "must be 1-{MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(text.to_owned()))
}
