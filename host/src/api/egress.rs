//! Operator views of the outbound side: circuit breakers that are not
//! closed, and credentials refused for good. Operator only; per-workspace
//! views come with the workspace routes.

use super::AppState;
use super::auth::Operator;
use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/egress/breakers", get(breakers))
        .route("/v1/egress/needs-attention", get(needs_attention))
}

#[derive(Debug, Serialize)]
struct TrippedBreaker {
    workspace: String,
    origin: String,
    state: &'static str,
}

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

#[derive(Debug, Serialize)]
struct NeedsAttention {
    workspace: String,
    connection: String,
    credential: String,
    reason: String,
}

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
