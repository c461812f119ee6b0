//! The HTTP API. `router` is built apart from `main` so tests drive it with
//! `oneshot`; each resource gets its own module as the API grows.

pub mod auth;
mod connections;
mod egress;
pub mod error;
mod health;
mod json;
mod metrics;
mod plugins;
mod tokens;
mod workspaces;

use crate::metrics::MetricsSources;
use crate::package::catalog::Catalog;
use crate::tenancy::service::Tenancy;
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub tenancy: Arc<Tenancy>,
    pub metrics: MetricsSources,
    /// SHA-256 of the operator token (the token itself is not kept).
    pub operator_token: auth::TokenDigest,
}

/// Largest request body any route accepts (an invocation's input is
/// further held to the operator's `max_input_bytes`).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let request_id = http::HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(egress::routes())
        .merge(workspaces::routes())
        .merge(tokens::routes())
        .merge(plugins::routes())
        .merge(connections::routes())
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost first: every response, errors included, carries the request's id
        // (the caller's, or a fresh UUID).
        .layer(tower_http::request_id::PropagateRequestIdLayer::new(
            request_id.clone(),
        ))
        .layer(tower_http::request_id::SetRequestIdLayer::new(
            request_id,
            tower_http::request_id::MakeRequestUuid,
        ))
}
