//! Workspace tokens and the isolation matrix: a token of workspace A against
//! every route of workspace B, and a plugin in A against B's KV, config,
//! credentials and audit trail.

use patchbay_tests::{Harness, api_call, operator_call as operator};
use serde_json::{Value, json};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A probe that also declares a bearer credential for its upstream.
async fn harness_with_probe() -> Harness {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    harness
}

/// Workspace `ws` with connection `crm` pointing at `upstream`, and a token for it.
async fn tenant(api: &str, ws: &str, upstream: &str, secret: &str) -> String {
    assert_eq!(
        operator(api, "POST", "/v1/workspaces", Some(json!({ "id": ws })))
            .await
            .0,
        201
    );
    let connection = format!("/v1/workspaces/{ws}/connections/crm");
    let (status, body) = operator(
        api,
        "PUT",
        &connection,
        Some(json!({ "plugin": "probe", "config": { "upstream": upstream }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = operator(
        api,
        "PUT",
        &format!("{connection}/credentials/token"),
        Some(json!({ "kind": "bearer", "token": secret })),
    )
    .await;
    assert_eq!(status, 204);
    let (status, issued) = operator(
        api,
        "POST",
        &format!("/v1/workspaces/{ws}/tokens"),
        Some(json!({ "label": format!("{ws} contact center") })),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    issued["token"]
        .as_str()
        .expect("token shown at issue")
        .to_owned()
}

/// Every route of one workspace, with a body each would accept.
fn workspace_routes(ws: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let c = format!("/v1/workspaces/{ws}/connections/crm");
    vec![
        ("GET", format!("/v1/workspaces/{ws}"), None),
        ("DELETE", format!("/v1/workspaces/{ws}"), None),
        ("GET", format!("/v1/workspaces/{ws}/audit"), None),
        ("GET", format!("/v1/workspaces/{ws}/connections"), None),
        ("GET", c.clone(), None),
        (
            "PUT",
            c.clone(),
            Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
        ),
        // A body the route would refuse is still answered 404 first.
        ("PUT", c.clone(), Some(json!({ "nonsense": true }))),
        ("DELETE", c.clone(), None),
        (
            "POST",
            format!("{c}/operations/context"),
            Some(json!({ "input": {} })),
        ),
        (
            "PUT",
            format!("{c}/credentials/token"),
            Some(json!({ "kind": "bearer", "token": "stolen" })),
        ),
        ("DELETE", format!("{c}/credentials/token"), None),
        ("GET", format!("/v1/workspaces/{ws}/tokens"), None),
        (
            "POST",
            format!("/v1/workspaces/{ws}/tokens"),
            Some(json!({})),
        ),
        ("DELETE", format!("/v1/workspaces/{ws}/tokens/tok_0"), None),
    ]
}

#[tokio::test]
async fn a_workspace_token_gets_404_on_every_route_of_another_workspace() {
    let harness = harness_with_probe().await;
    let api = harness.serve_api().await;
    let token_a = tenant(&api, "acme", "http://127.0.0.1:9", "secret-of-acme-1").await;
    let token_b = tenant(&api, "beta", "http://127.0.0.1:9", "secret-of-beta-1").await;

    for (method, path, body) in workspace_routes("beta") {
        let (status, answer) = api_call(method, &api, &path, Some(&token_a), body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        // Word for word what a workspace that does not exist gets: A cannot
        // tell that beta exists.
        let ghost = path.replace("/beta", "/ghost");
        let (_, missing) = api_call(method, &api, &ghost, Some(&token_a), body).await;
        assert_eq!(
            answer["message"]
                .as_str()
                .map(|m| m.replace("beta", "ghost")),
            missing["message"].as_str().map(str::to_owned),
            "{method} {path}"
        );
        assert_eq!(answer["code"], missing["code"], "{method} {path}");
    }

    // Nothing of beta's moved: its connection, credential and token stand.
    let (status, connection) = api_call(
        "GET",
        &api,
        "/v1/workspaces/beta/connections/crm",
        Some(&token_b),
        None,
    )
    .await;
    assert_eq!(status, 200, "beta's own token still works");
    assert_eq!(connection["credentials"][0]["set"], true);
    assert_eq!(
        operator(&api, "GET", "/v1/workspaces/beta/tokens", None)
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // A's token works on A's routes.
    let (status, output) = api_call(
        "POST",
        &api,
        "/v1/workspaces/acme/connections/crm/operations/context",
        Some(&token_a),
        Some(json!({ "input": {} })),
    )
    .await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(output["output"]["workspace"], "acme");
}

#[tokio::test]
async fn operator_routes_refuse_workspace_tokens() {
    let harness = harness_with_probe().await;
    let api = harness.serve_api().await;
    let token = tenant(&api, "acme", "http://127.0.0.1:9", "s-1").await;
    for (method, path, body) in [
        ("GET", "/v1/workspaces", None),
        ("POST", "/v1/workspaces", Some(json!({ "id": "mine" }))),
        ("DELETE", "/v1/workspaces/acme", None),
        ("GET", "/v1/workspaces/acme/tokens", None),
        ("POST", "/v1/workspaces/acme/tokens", Some(json!({}))),
        ("GET", "/metrics", None),
        ("GET", "/v1/plugins", None),
        ("POST", "/v1/plugins", Some(json!({}))),
        ("GET", "/v1/plugins/probe", None),
        ("DELETE", "/v1/plugins/probe/1.0.0", None),
        ("GET", "/v1/egress/breakers", None),
        ("GET", "/v1/egress/needs-attention", None),
    ] {
        let (status, answer) = api_call(method, &api, path, Some(&token), body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("operator-only")),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(
        operator(&api, "GET", "/v1/workspaces/acme", None).await.0,
        200,
        "the refused DELETE removed nothing"
    );
    assert_eq!(
        operator(&api, "GET", "/v1/workspaces", None)
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(1),
        "the refused POST created nothing"
    );
}

#[tokio::test]
async fn tokens_are_shown_once_stored_hashed_and_revocable() {
    let harness = harness_with_probe().await;
    let api = harness.serve_api().await;
    let token = tenant(&api, "acme", "http://127.0.0.1:9", "s-1").await;
    assert!(token.starts_with("pbw_"), "{token}");

    let (status, listed) = operator(&api, "GET", "/v1/workspaces/acme/tokens", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["label"], "acme contact center");
    assert!(listed[0].get("token").is_none(), "{listed}");
    assert!(!listed.to_string().contains(&token[4..]), "{listed}");
    let id = listed[0]["id"].as_str().expect("id").to_owned();

    // The database holds no copy of the token.
    let own = "/v1/workspaces/acme/connections";
    assert_eq!(api_call("GET", &api, own, Some(&token), None).await.0, 200);
    let on_disk = harness.data_files_containing(token.as_bytes());
    assert!(on_disk.is_empty(), "token found in {on_disk:?}");

    // A token that merely looks like one opens nothing.
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(api_call("GET", &api, own, Some(&forged), None).await.0, 401);

    let (status, _) = operator(
        &api,
        "DELETE",
        &format!("/v1/workspaces/acme/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = api_call("GET", &api, own, Some(&token), None).await;
    assert_eq!(status, 401, "a revoked token is refused at once: {body}");
    let (status, _) = operator(
        &api,
        "DELETE",
        &format!("/v1/workspaces/acme/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (status, body) = operator(
        &api,
        "POST",
        "/v1/workspaces/acme/tokens",
        Some(json!({ "label": "x".repeat(101) })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-label"))
    );
    assert_eq!(
        operator(&api, "GET", "/v1/workspaces/acme/tokens", None)
            .await
            .1,
        json!([]),
        "the refused label issued nothing"
    );
}

#[tokio::test]
async fn a_workspace_sees_none_of_another_workspaces_kv_config_credentials_or_audit() {
    let upstream = MockServer::start().await;
    Mock::given(path_regex("^/(a|b)/allowed"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    let harness = harness_with_probe().await;
    let api = harness.serve_api().await;
    let (secret_a, secret_b) = ("bearer-of-acme-77", "bearer-of-beta-88");
    let token_a = tenant(&api, "acme", &format!("{}/a", upstream.uri()), secret_a).await;
    let token_b = tenant(&api, "beta", &format!("{}/b", upstream.uri()), secret_b).await;

    // Everything A's token is ever answered, to search for B's data.
    let mut seen_by_a = String::new();
    let invoke = |token: String, ws: &'static str, op: &'static str, input: Value| {
        let api = api.clone();
        async move {
            let (status, body) = api_call(
                "POST",
                &api,
                &format!("/v1/workspaces/{ws}/connections/crm/operations/{op}"),
                Some(&token),
                Some(json!({ "input": input })),
            )
            .await;
            assert_eq!(status, 200, "{ws} {op}: {body}");
            body
        }
    };

    // Same plugin, same connection name, same key in both workspaces.
    let set = |v: &str| json!([{ "op": "set", "key": "caller:42", "value": v }]);
    invoke(token_b.clone(), "beta", "kv", set("beta-kv-value")).await;
    let read = json!([
        { "op": "get", "key": "caller:42" },
        { "op": "list", "prefix": "", "limit": 100 }
    ]);
    let a_view = invoke(token_a.clone(), "acme", "kv", read.clone()).await;
    assert_eq!(a_view["output"][0]["ok"], Value::Null, "{a_view}");
    assert_eq!(a_view["output"][1]["ok"]["keys"], json!([]), "{a_view}");
    seen_by_a.push_str(&a_view.to_string());
    invoke(token_a.clone(), "acme", "kv", set("acme-kv-value")).await;
    let b_view = invoke(token_b.clone(), "beta", "kv", read).await;
    assert_eq!(b_view["output"][0]["ok"], "beta-kv-value", "{b_view}");

    // Each plugin reaches its own upstream with its own credential.
    for (token, ws, prefix) in [(&token_a, "acme", "a"), (&token_b, "beta", "b")] {
        let body = invoke(
            token.clone(),
            ws,
            "fetch",
            json!({ "url": format!("{}/{prefix}/allowed/x", upstream.uri()) }),
        )
        .await;
        if ws == "acme" {
            seen_by_a.push_str(&body.to_string());
        }
    }
    let received = upstream.received_requests().await.expect("recorded");
    for request in &received {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let expected = if request.url.path().starts_with("/a/") {
            secret_a
        } else {
            secret_b
        };
        assert_eq!(auth, format!("Bearer {expected}"), "{}", request.url);
    }

    for path in [
        "/v1/workspaces/acme",
        "/v1/workspaces/acme/connections",
        "/v1/workspaces/acme/connections/crm",
        "/v1/workspaces/acme/audit",
    ] {
        let (status, body) = api_call("GET", &api, path, Some(&token_a), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen_by_a.push_str(&body.to_string());
    }
    let (_, audit_a) = api_call(
        "GET",
        &api,
        "/v1/workspaces/acme/audit",
        Some(&token_a),
        None,
    )
    .await;
    let records = audit_a["records"].as_array().expect("records");
    assert!(!records.is_empty(), "{audit_a}");
    assert!(
        records.iter().all(|r| r["workspace"] == "acme"),
        "{audit_a}"
    );
    let (status, _) = api_call("GET", &api, "/metrics", Some(&token_a), None).await;
    assert_eq!(
        status, 403,
        "metrics (with workspace labels) are the operator's"
    );

    for marker in ["beta-kv-value", secret_b, "/b/allowed", secret_a] {
        assert!(
            !seen_by_a.contains(marker),
            "A was shown {marker:?}: {seen_by_a}"
        );
    }
    assert!(seen_by_a.contains("acme"), "the search saw A's own data");
}
