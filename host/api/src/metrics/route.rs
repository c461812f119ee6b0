//! `GET /metrics`: OpenMetrics text (which Prometheus scrapes), operator
//! only. The description names the content type the route really sends.

use crate::AppState;
use crate::auth::Operator;
use crate::error::ApiError;
use axum::extract::State;
use axum::response::IntoResponse;
use utoipa_axum::{router::OpenApiRouter, routes};

/// What the route sends: the format `prometheus_client` encodes.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operator",
    operation_id = "getMetrics",
    responses((status = 200, description = "OpenMetrics 1.0 text exposition", content_type = "application/openmetrics-text", body = String), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn metrics(
    _: Operator,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let text = crate::metrics::render(&state.metrics).map_err(ApiError::internal)?;
    Ok(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text))
}
