//! Recording a connection's invocations for replay. The operator turns a
//! recording on and off; the operator and the workspace read and delete the
//! transcripts it kept (the workspace's own invocations, secrets redacted).

use super::AppState;
use super::auth::{Operator, WorkspaceAccess};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use patchbay_policy::recording::{Recording, RecordingRequest, TranscriptSummary};
use patchbay_tenancy::recording::RecordError;
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, start, stop))
        .routes(routes!(list, clear))
        .routes(routes!(transcript))
}

/// A connection's recording.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RecordingView {
    /// Whether the connection's invocations are recorded now.
    active: bool,
    /// The last recording started, until it is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    recording: Option<Recording>,
    /// Transcripts kept for the connection.
    transcripts: u32,
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Tenancy(e) => e.into(),
            RecordError::Invalid(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-recording",
                message,
            ),
        }
    }
}

async fn view(state: &AppState, ws: &str, name: &str) -> Result<RecordingView, ApiError> {
    let (recorded, active) = state.tenancy.recording(ws, name).await?;
    Ok(RecordingView {
        active,
        recording: recorded.recording,
        transcripts: recorded.kept,
    })
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/connections/{name}/recording",
    operation_id = "showRecording",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 200, description = "the connection's recording", body = RecordingView), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn show(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<RecordingView>, ApiError> {
    Ok(Json(view(&state, &ws, &name).await?))
}

/// Record the connection's next invocations, at most `max_invocations` of
/// them and for at most `for_minutes`. Each keeps a transcript of its host
/// calls (HTTP exchanges, KV calls, settings, clock readings, random values)
/// with credentials and secret fields redacted, for `patchbay plugin replay`.
#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/connections/{name}/recording",
    operation_id = "startRecording",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    request_body = RecordingRequest,
    responses((status = 200, description = "recording", body = RecordingView), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn start(
    _: Operator,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<RecordingRequest>,
) -> Result<Json<RecordingView>, ApiError> {
    state.tenancy.start_recording(&ws, &name, request).await?;
    Ok(Json(view(&state, &ws, &name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/connections/{name}/recording",
    operation_id = "stopRecording",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 204, description = "stopped; the transcripts are kept"), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn stop(
    _: Operator,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.tenancy.stop_recording(&ws, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "connection {name:?} has no recording"
        )))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TranscriptList {
    /// Oldest first.
    transcripts: Vec<TranscriptSummary>,
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/connections/{name}/transcripts",
    operation_id = "listTranscripts",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 200, description = "the transcripts kept, oldest first", body = TranscriptList), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn list(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<TranscriptList>, ApiError> {
    Ok(Json(TranscriptList {
        transcripts: state.tenancy.transcripts(&ws, &name).await?,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Deleted {
    deleted: usize,
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/connections/{name}/transcripts",
    operation_id = "deleteTranscripts",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name")),
    responses((status = 200, description = "deleted; a recording that is on goes on", body = Deleted), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn clear(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    Ok(Json(Deleted {
        deleted: state.tenancy.delete_transcripts(&ws, &name).await?,
    }))
}

/// One transcript, as `patchbay plugin replay` reads it.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/connections/{name}/transcripts/{id}",
    operation_id = "getTranscript",
    tag = "recordings",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "connection name"), ("id" = String, Path, description = "the invocation id")),
    responses((status = 200, description = "the transcript (format patchbay-transcript/1)", content_type = "application/json"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn transcript(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name, id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    match state.tenancy.transcript(&ws, &name, &id).await? {
        Some(bytes) => {
            Ok(([(http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "connection {name:?} has no transcript {id:?}"
        ))),
    }
}
