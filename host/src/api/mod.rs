//! The HTTP API. `router` is built apart from `main` so tests drive it with
//! `oneshot`; each resource gets its own module as the API grows.

pub mod auth;
mod connections;
mod egress;
pub mod error;
mod health;
mod metrics;
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(egress::routes())
        .merge(workspaces::routes())
        .merge(connections::routes())
        .with_state(state)
}
