//! The HTTP API. `router` is built apart from `main` so tests drive it with
//! `oneshot`; each resource gets its own module as the API grows.

#![warn(missing_docs)]

pub mod auth;
mod connections;
mod egress;
pub mod error;
mod events;
mod extract;
mod health;
mod hooks;
mod limits;
mod lookups;
pub mod metrics;
mod plugins;
mod recordings;
mod shape;
mod tokens;
mod workspaces;

use crate::metrics::MetricsSources;
use axum::Router;
use axum::extract::State;
use patchbay_tenancy::catalog::Catalog;
use patchbay_tenancy::service::Tenancy;
use std::sync::Arc;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Count and time every answered request by its route template.
async fn observe(
    State(metrics): State<crate::metrics::ApiMetrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    metrics.record(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// What no route matches: our error shape, not an empty 404.
async fn no_route(method: http::Method, uri: http::Uri) -> error::ApiError {
    error::ApiError::new(
        http::StatusCode::NOT_FOUND,
        "no-route",
        format!(
            "no route {} {}",
            shape::echo(method.as_str()),
            shape::echo(uri.path())
        ),
    )
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// `GET /openapi.json`'s body, rendered once.
    pub openapi: bytes::Bytes,
    /// The installed-plugin catalog.
    pub catalog: Arc<Catalog>,
    /// The tenancy service: workspaces, connections, tokens, invocations.
    pub tenancy: Arc<Tenancy>,
    /// Runs caller-context lookups and keeps their results.
    pub lookups: Arc<patchbay_lookup::Lookups>,
    /// Events accepted, subscriptions, deliveries and the dead-letter queue.
    pub events: Arc<patchbay_events::Events>,
    /// What `GET /metrics` reads.
    pub metrics: MetricsSources,
    /// SHA-256 of the operator token (the token itself is not kept).
    pub operator_token: auth::TokenDigest,
}

pub use limits::MAX_BODY_BYTES;

/// Every route, with its description; one list, so a route cannot be served
/// without being described (routes register only through `routes!`).
fn described() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(egress::routes())
        .merge(workspaces::routes())
        .merge(tokens::routes())
        .merge(plugins::routes())
        .merge(connections::routes())
        .merge(recordings::routes())
        .merge(lookups::routes())
        .merge(events::routes())
        .merge(hooks::routes())
        .routes(routes!(openapi_json))
}

/// The OpenAPI description of this API, built from the route handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::Modify as _;
    let mut openapi = described().into_openapi();
    // After the routes are merged: the limits are written onto their parameters.
    limits::DescribeLimits.modify(&mut openapi);
    openapi
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Patchbay", description = "Operator and tenant API of the Patchbay connector host"),
    components(schemas(error::ErrorBody, limits::CredentialBody)),
    modifiers(&BearerTokens)
)]
struct ApiDoc;

/// The two kinds of bearer token the routes name in `security`.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("operator", bearer("the operator token"));
        components.add_security_scheme(
            "workspace",
            bearer("a token of the route's workspace (`pbw_…`)"),
        );
    }
}

/// This description, as JSON.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 description of this API", body = Object))
)]
async fn openapi_json(State(spec): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        spec.openapi.clone(),
    )
        .into_response()
}

/// The whole API over `state`: every described route, the error shape,
/// metrics, the body limit and request ids. `serve` listens with it; tests
/// drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let request_id = http::HeaderName::from_static("x-request-id");
    let (routes, _) = described().split_for_parts();
    let api_metrics = state.metrics.api.clone();
    routes
        .fallback(no_route)
        .with_state(state)
        .layer(axum::middleware::from_fn(shape::error_shape))
        .layer(axum::middleware::from_fn_with_state(api_metrics, observe))
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
