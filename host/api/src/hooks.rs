//! Webhooks in: `POST /v1/hooks/{ws}/{connection}`. No bearer token: the
//! sender proves itself with its signature, checked before anything is
//! stored. Every refusal is the same bare 401, so an unauthenticated sender
//! cannot tell an unknown connection from a wrong signature.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use patchbay_events::webhooks::{IncomingWebhook, Received, WebhookError};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// Take a webhook for a connection whose plugin declares `[webhook]`. The body is kept byte
/// for byte and verified (Standard Webhooks by the host, or the vendor's scheme by the plugin,
/// with a secret the plugin never sees); a genuine webhook's events are on disk before the
/// 202. A webhook id taken before (within the dedupe window) is answered 200 and creates
/// nothing. An unknown connection, a plugin that takes no webhooks, a secret not set or a bad
/// signature all get the same bare 401.
#[utoipa::path(
    post,
    path = "/v1/hooks/{ws}/{connection}",
    operation_id = "receiveWebhook",
    tag = "events",
    params(("ws" = String, Path, description = "workspace id"), ("connection" = String, Path, description = "connection name")),
    request_body(content = Vec<u8>, description = "the sender's payload, as it signed it", content_type = "application/octet-stream"),
    responses(
        (status = 202, description = "verified; its events are accepted, durably", body = Received),
        (status = 200, description = "a duplicate: its id was taken before; nothing created", body = Received),
        (status = 401, description = "not verified (no detail is given)", body = crate::error::ErrorBody),
        (status = 413, description = "the body is over the operator's `webhooks.max_body_kb`", body = crate::error::ErrorBody),
        (status = 422, description = "genuine, but not events: each problem named", body = crate::error::ErrorBody),
        (status = 429, description = "past the operator's `webhooks.per_connection_per_second`; `Retry-After` says when to send it again", body = crate::error::ErrorBody),
        (status = 503, description = "cannot be verified now; send it again later", body = crate::error::ErrorBody),
        (status = 500, description = "the host failed; send it again later", body = crate::error::ErrorBody),
    ),
    security(())
)]
async fn receive(
    State(state): State<AppState>,
    Path((ws, connection)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Received>), ApiError> {
    let target = state
        .events
        .webhook_target(&ws, &connection)
        .await
        .map_err(refusal)?;
    let max = state.events.webhook_policy().max_body_bytes();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a webhook body is at most {max} bytes"),
        )
    };
    // Refused on its declared length before a byte of it is read.
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let body = match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "the body could not be read",
            ));
        }
    };
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let webhook = IncomingWebhook { headers, body };
    match state.events.receive_webhook(target, webhook).await {
        Ok(received) if received.duplicate => Ok((StatusCode::OK, Json(received))),
        Ok(received) => Ok((StatusCode::ACCEPTED, Json(received))),
        Err(error) => Err(refusal(error)),
    }
}

/// The answer for a webhook not taken; a refusal says nothing more.
fn refusal(error: WebhookError) -> ApiError {
    match error {
        WebhookError::Refused(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the webhook could not be verified",
        ),
        WebhookError::InvalidEvents(problems) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-events",
            problems.join("; "),
        ),
        WebhookError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the webhook cannot be verified now; send it again later",
        ),
        WebhookError::TooMany(wait) => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many webhooks for this connection; send it again later",
            );
            error.retry_after = Some((wait.as_millis() as u64).div_ceil(1000).max(1));
            error
        }
        WebhookError::Failed(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the webhook could not be taken; send it again later",
        ),
    }
}
