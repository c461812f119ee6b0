//! Liveness.

use super::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "health",
    responses((status = 200, description = "the process is up", body = Object), crate::error::ApiErrors)
)]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: its database answers a read.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "health",
    responses((status = 200, description = "the database answers", body = Object), (status = 503, description = "the database does not answer", body = Object), crate::error::ApiErrors)
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.tenancy.store.clone();
    let read = tokio::task::spawn_blocking(move || store.get_workspace("readyz")).await;
    match read {
        Ok(Ok(_)) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        ),
    }
}
