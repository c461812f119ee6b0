//! Events in, subscriptions, and the dead-letter queue.

use super::AppState;
use super::auth::WorkspaceAccess;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use patchbay_events::alerts::{AlertRequest, AlertView};
use patchbay_events::{DeadFilter, DeadLetterDetail, DeadPage, StoredSubscription};
use patchbay_policy::events::Subscription;
use patchbay_storage::outbox::Accepted;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(list_subscriptions))
        .routes(routes!(
            get_subscription,
            put_subscription,
            delete_subscription
        ))
        .routes(routes!(list_dead, purge_dead))
        .routes(routes!(replay_dead))
        .routes(routes!(get_dead, purge_one))
        .routes(routes!(replay_one))
        .routes(routes!(get_alert, put_alert, delete_alert))
}

/// Set the workspace's dead-letter alert: when its dead letters reach `threshold`, one POST
/// to `url`, signed by the Standard Webhooks scheme with the alert's secret (`secret`, or one
/// made and shown in this answer only), each time the depth crosses it from below. Sent
/// through the egress: the operator's address policy applies, and it is audited.
#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/dead-letter-alert",
    operation_id = "putDeadLetterAlert",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id")),
    request_body = AlertRequest,
    responses((status = 200, description = "set; a made secret is in `secret`, once", body = AlertView), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn put_alert(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiJson(request): ApiJson<AlertRequest>,
) -> Result<Json<AlertView>, ApiError> {
    Ok(Json(state.events.put_alert(&ws, request).await?))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/dead-letter-alert",
    operation_id = "getDeadLetterAlert",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the alert (never its secret), the dead letters now, and whether it is raised", body = AlertView), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn get_alert(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<AlertView>, ApiError> {
    Ok(Json(state.events.alert(&ws).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/dead-letter-alert",
    operation_id = "deleteDeadLetterAlert",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 204, description = "removed, with its secret"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn delete_alert(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.events.delete_alert(&ws).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(patchbay_events::EventsError::AlertNotSet.into())
    }
}

/// What `POST …/events` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PublishAnswer {
    /// One per event sent, in order: its id (generated when it had none),
    /// whether it was a duplicate, and the deliveries made for it.
    accepted: Vec<Accepted>,
}

/// Accept one event or a batch (a JSON array of up to 500). Answered 202 once the events
/// and their deliveries are on disk; an id accepted before (within the idempotency window, or
/// still being delivered) is a duplicate and creates nothing. A refused event refuses the batch.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/events",
    operation_id = "publishEvents",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id")),
    request_body(content = Object, description = "an event ({id?, type, source, occurred_at, subject?, data}) or an array of them"),
    responses((status = 202, description = "accepted, durably", body = PublishAnswer), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn publish(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiJson(body): ApiJson<Json_>,
) -> Result<(StatusCode, Json<PublishAnswer>), ApiError> {
    let accepted = state.events.publish(&ws, body).await?;
    Ok((StatusCode::ACCEPTED, Json(PublishAnswer { accepted })))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/subscriptions",
    operation_id = "listSubscriptions",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the workspace's subscriptions, by name, each with its pending and dead-lettered deliveries", body = [StoredSubscription]), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn list_subscriptions(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<StoredSubscription>>, ApiError> {
    Ok(Json(state.events.subscriptions(&ws).await?))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/subscriptions/{name}",
    operation_id = "getSubscription",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "subscription name")),
    responses((status = 200, description = "the subscription", body = StoredSubscription), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn get_subscription(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<Json<StoredSubscription>, ApiError> {
    Ok(Json(state.events.subscription(&ws, &name).await?))
}

/// Create or replace a subscription: event types (`call.ended`, `call.*`, `*`), a filter, the
/// destination (an `action` on a connection), an optional transform (a `transform` operation),
/// a retry policy, a rate limit, enabled or not. Events accepted from now on are matched
/// against it.
#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/subscriptions/{name}",
    operation_id = "putSubscription",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "subscription name")),
    request_body = Subscription,
    responses(
        (status = 201, description = "created", body = StoredSubscription),
        (status = 200, description = "replaced", body = StoredSubscription),
        crate::error::ApiErrors
    ),
    security(("operator" = []), ("workspace" = []))
)]
async fn put_subscription(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    ApiJson(subscription): ApiJson<Subscription>,
) -> Result<(StatusCode, Json<StoredSubscription>), ApiError> {
    let (stored, created) = state
        .events
        .put_subscription(&ws, &name, subscription)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)))
}

/// Delete a subscription. Its pending deliveries are dead-lettered as they come due (nothing is
/// dropped unseen); its dead letters stay until purged.
#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/subscriptions/{name}",
    operation_id = "deleteSubscription",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("name" = String, Path, description = "subscription name")),
    responses((status = 204, description = "deleted"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn delete_subscription(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.events.delete_subscription(&ws, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which dead letters: `subscription`, `code` (the last attempt's error
/// code), `since` / `until` (ms since the epoch, dead-lettered at or after /
/// before); for a listing also `after` (the previous page's `next`) and
/// `limit` (1-1000, default 100).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    subscription: Option<String>,
    code: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
    after: Option<String>,
    limit: Option<usize>,
}

impl DeadQuery {
    fn filter(&self) -> DeadFilter {
        DeadFilter {
            subscription: self.subscription.clone(),
            code: self.code.clone(),
            since_ms: self.since,
            until_ms: self.until,
        }
    }

    /// The filter of a replay or purge, which pages nothing.
    fn bulk_filter(&self) -> Result<DeadFilter, ApiError> {
        if self.after.is_some() || self.limit.is_some() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-query",
                "after and limit page a listing; a replay or purge takes subscription, code, since and until",
            ));
        }
        Ok(self.filter())
    }
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/dead-letters",
    operation_id = "listDeadLetters",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), DeadQuery),
    responses((status = 200, description = "dead-lettered deliveries, oldest first, each with its attempts", body = DeadPage), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn list_dead(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadQuery>,
) -> Result<Json<DeadPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    let range = super::limits::AUDIT_PAGE;
    if !range.contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
            format!(
                "limit must be between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    let page = state
        .events
        .dead_letters(&ws, query.filter(), query.after.as_deref(), limit)
        .await?;
    Ok(Json(page))
}

/// How many a replay or purge of a filter covered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BulkAnswer {
    /// Dead letters replayed or purged (at most 1000 per request: repeat
    /// until 0 for more).
    count: usize,
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/dead-letters",
    operation_id = "purgeDeadLetters",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), DeadQuery),
    responses((status = 200, description = "the matching dead letters (up to 1000) are removed for good", body = BulkAnswer), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn purge_dead(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadQuery>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let filter = query.bulk_filter()?;
    let count = state.events.purge_matching(&ws, filter).await?;
    Ok(Json(BulkAnswer { count }))
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/dead-letters/replay",
    operation_id = "replayDeadLetters",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), DeadQuery),
    responses((status = 200, description = "the matching dead letters (up to 1000) are back in their queues, due now, with a fresh round of attempts", body = BulkAnswer), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn replay_dead(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadQuery>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let filter = query.bulk_filter()?;
    let count = state.events.replay_matching(&ws, filter).await?;
    Ok(Json(BulkAnswer { count }))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/dead-letters/{id}",
    operation_id = "getDeadLetter",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "delivery id")),
    responses((status = 200, description = "the dead letter: its event and every attempt with its time and error", body = DeadLetterDetail), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn get_dead(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    Ok(Json(state.events.dead_letter(&ws, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/dead-letters/{id}",
    operation_id = "purgeDeadLetter",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "delivery id")),
    responses((status = 204, description = "removed for good"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn purge_one(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.events.purge(&ws, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/dead-letters/{id}/replay",
    operation_id = "replayDeadLetter",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "delivery id")),
    responses((status = 202, description = "back in its queue, due now, with a fresh round of attempts"), crate::error::ApiErrors),
    security(("operator" = []), ("workspace" = []))
)]
async fn replay_one(
    _: WorkspaceAccess,
    State(state): State<AppState>,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.events.replay(&ws, &id).await?;
    Ok(StatusCode::ACCEPTED)
}
