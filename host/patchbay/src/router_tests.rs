//! The services wired together and served through the whole router: the
//! unit tests that need every layer at once.

use crate::services::Services;
use patchbay_api::AppState;

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
    let response = patchbay_api::router(state)
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

#[tokio::test]
async fn healthz_answers_ok() {
    let (status, body) = get("/healthz", None).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test]
async fn metrics_are_for_the_operator_only() {
    for token in [None, Some("pbo_wrong"), Some("")] {
        let (status, body) = get("/metrics", token).await;
        assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    }
    let (status, body) = get("/metrics", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, http::StatusCode::OK);
    for name in [
        "patchbay_outbound_requests_total{decision=\"allowed\"} 0",
        "patchbay_oauth_token_requests_total 0",
        "patchbay_credentials_marked_needs_attention_total 0",
        "# EOF",
    ] {
        assert!(body.contains(name), "{name} in {body}");
    }
}
