//! Shared set-up for the host's unit tests.

use crate::api::AppState;
use crate::services::Services;

/// The operator token `app_state` accepts.
pub(crate) const OPERATOR_TOKEN: &str = "pbo_test-operator-token-0123456789";

/// Real services on a throw-away data directory, removed when the returned
/// guard is dropped (keep it for as long as the state is used).
pub(crate) async fn app_state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = Services::open(dir.path(), Default::default()).expect("services");
    (services.app_state(OPERATOR_TOKEN), dir)
}

/// `GET path` through the whole router of fresh services, with `token` as
/// bearer (if any): the status and the body as text.
pub(crate) async fn get(path: &str, token: Option<&str>) -> (http::StatusCode, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let mut request = http::Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (state, _dir) = app_state().await;
    let response = crate::api::router(state)
        .oneshot(request.body(axum::body::Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
