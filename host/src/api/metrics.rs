//! `GET /metrics`: OpenMetrics text (which Prometheus scrapes), operator
//! only. The description names the content type the route really sends.

use super::AppState;
use super::auth::Operator;
use super::error::ApiError;
use axum::extract::State;
use axum::response::IntoResponse;
use utoipa_axum::{router::OpenApiRouter, routes};

/// What the route sends: the format `prometheus_client` encodes.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operator",
    operation_id = "getMetrics",
    responses((status = 200, description = "OpenMetrics 1.0 text exposition", content_type = "application/openmetrics-text", body = String), crate::api::error::ApiErrors),
    security(("operator" = []))
)]
async fn metrics(
    _: Operator,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let text = crate::metrics::render(&state.metrics).map_err(ApiError::internal)?;
    Ok(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text))
}

#[cfg(test)]
mod tests {
    use crate::test_support::OPERATOR_TOKEN;
    use http::StatusCode;

    async fn get(token: Option<&str>) -> (StatusCode, String) {
        crate::test_support::get("/metrics", token).await
    }

    #[tokio::test]
    async fn metrics_are_for_the_operator_only() {
        for token in [None, Some("pbo_wrong"), Some("")] {
            let (status, body) = get(token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
            assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        }
        let (status, body) = get(Some(OPERATOR_TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        for name in [
            "patchbay_outbound_requests_total{decision=\"allowed\"} 0",
            "patchbay_oauth_token_requests_total 0",
            "patchbay_credentials_marked_needs_attention_total 0",
            "# EOF",
        ] {
            assert!(body.contains(name), "{name} in {body}");
        }
    }
}
