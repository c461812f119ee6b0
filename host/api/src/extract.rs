//! Extractors whose refusals are ordinary `ApiError`s (`{code, message}`),
//! naming what was wrong, instead of axum's plain text: the JSON body, the
//! path parameters, the query string.

use super::error::ApiError;
use axum::extract::rejection::{
    JsonRejection, PathRejection, QueryRejection, RawPathParamsRejection,
};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use http::StatusCode;
use http::request::Parts;

pub(super) struct ApiJson<T>(pub(super) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    e.body_text(),
                ),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", e.body_text())
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "send the body as application/json",
                ),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    format!(
                        "the body is over this route's limit ({} bytes; {} for a plugin install)",
                        super::MAX_BODY_BYTES,
                        super::limits::MAX_INSTALL_BODY_BYTES
                    ),
                ),
                other => ApiError::new(other.status(), "bad-request", other.body_text()),
            }),
        }
    }
}

/// Path parameters; a segment that does not decode or parse is a 400.
pub(super) struct ApiPath<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = parts_or(parts, state, StatusCode::BAD_REQUEST, "invalid-path").await?;
        Ok(Self(value))
    }
}

/// The query string; an unknown or malformed parameter is a 422 naming it.
pub(super) struct ApiQuery<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = parts_or(
            parts,
            state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
        )
        .await?;
        Ok(Self(value))
    }
}

/// What axum's extractor `E` takes from the request's parts; its refusal is
/// an `ApiError` with `status` and `code`, and axum's text (which names the
/// parameter) as the message.
pub(super) async fn parts_or<S, E>(
    parts: &mut Parts,
    state: &S,
    status: StatusCode,
    code: &'static str,
) -> Result<E, ApiError>
where
    E: FromRequestParts<S>,
    E::Rejection: RejectionText,
    S: Send + Sync,
{
    E::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::new(status, code, rejection.text()))
}

/// The text axum would have answered with; its rejections have it only as
/// an inherent method.
pub(super) trait RejectionText {
    fn text(&self) -> String;
}

impl RejectionText for PathRejection {
    fn text(&self) -> String {
        self.body_text()
    }
}

impl RejectionText for QueryRejection {
    fn text(&self) -> String {
        self.body_text()
    }
}

impl RejectionText for RawPathParamsRejection {
    fn text(&self) -> String {
        self.body_text()
    }
}

#[cfg(test)]
mod tests {
    use super::{ApiPath, ApiQuery};
    use axum::Router;
    use axum::routing::get;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Page {
        #[allow(dead_code, reason = "only its parsing is tested")]
        limit: u32,
    }

    async fn refusal(uri: &str) -> (StatusCode, serde_json::Value) {
        let app = Router::new().route(
            "/items/{n}",
            get(|ApiPath(_): ApiPath<u32>, ApiQuery(_): ApiQuery<Page>| async {}),
        );
        let request = Request::get(uri)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn a_bad_path_or_query_is_refused_with_its_code_naming_what_is_wrong() {
        let (status, body) = refusal("/items/seven?limit=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "invalid-path");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Invalid URL")),
            "{body}"
        );

        let (status, body) = refusal("/items/7?limit=1&pace=5").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "invalid-query");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains("pace")),
            "{body}"
        );
    }
}
