//! Operator views of the outbound side: circuit breakers that are not
//! closed, and credentials refused for good. Operator only; per-workspace
//! views come with the workspace routes.

use super::AppState;
use super::auth::Operator;
use axum::{Json, extract::State};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(breakers))
        .routes(routes!(needs_attention))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TrippedBreaker {
    workspace: String,
    origin: String,
    state: &'static str,
}

#[utoipa::path(
    get,
    path = "/v1/egress/breakers",
    operation_id = "listTrippedBreakers",
    tag = "operator",
    responses((status = 200, description = "circuit breakers that are not closed", body = [TrippedBreaker]), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn breakers(_: Operator, State(state): State<AppState>) -> Json<Vec<TrippedBreaker>> {
    let tripped = state
        .metrics
        .egress
        .breakers()
        .all_tripped(std::time::Instant::now());
    Json(
        tripped
            .into_iter()
            .map(|(workspace, origin, state)| TrippedBreaker {
                workspace,
                origin,
                state: state.as_str(),
            })
            .collect(),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NeedsAttention {
    workspace: String,
    connection: String,
    credential: String,
    reason: String,
}

#[utoipa::path(
    get,
    path = "/v1/egress/needs-attention",
    operation_id = "listCredentialsNeedingAttention",
    tag = "operator",
    responses((status = 200, description = "credentials refused for good", body = [NeedsAttention]), crate::error::ApiErrors),
    security(("operator" = []))
)]
async fn needs_attention(_: Operator, State(state): State<AppState>) -> Json<Vec<NeedsAttention>> {
    Json(
        state
            .metrics
            .credentials
            .needing_attention()
            .into_iter()
            .map(|(scope, credential, reason)| NeedsAttention {
                workspace: scope.workspace,
                connection: scope.connection,
                credential,
                reason,
            })
            .collect(),
    )
}
