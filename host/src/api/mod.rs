//! The HTTP API. `router` is built apart from `main` so tests drive it with
//! `oneshot`; each resource gets its own module as the API grows.

mod health;

use crate::package::catalog::Catalog;
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
}

pub fn router(state: AppState) -> Router {
    Router::new().merge(health::routes()).with_state(state)
}
