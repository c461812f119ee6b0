//! The HTTP API over a real loopback socket: workspaces, connections and
//! invocations, with the error table's codes.

use patchbay_tests::{Harness, OPERATOR_TOKEN, api_call, operator_call as call, plugins::PROBE};
use serde_json::{Value, json};

#[tokio::test]
async fn a_tenant_flow_from_workspace_to_invocation() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;

    let (status, body) = patchbay_tests::create_workspace(&api, "acme").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        call(
            &api,
            "POST",
            "/v1/workspaces",
            Some(json!({ "id": "acme" }))
        )
        .await
        .0,
        409
    );
    let (status, body) = call(
        &api,
        "POST",
        "/v1/workspaces",
        Some(json!({ "id": "Not Valid" })),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid-name")));

    let connection = "/v1/workspaces/acme/connections/crm";
    let (status, body) = call(
        &api,
        "PUT",
        connection,
        Some(json!({ "plugin": "probe", "config": { "upstream": 7 }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-config")),
        "{body}"
    );
    assert!(
        body["details"][0]
            .as_str()
            .is_some_and(|d| d.contains("/upstream")),
        "{body}"
    );

    let (status, body) = call(
        &api,
        "PUT",
        connection,
        Some(json!({ "plugin": "probe", "config": { "upstream": "http://127.0.0.1:9" }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_str(), body["status"].as_str()),
        (Some("1.0.0"), Some("ok"))
    );
    assert_eq!(call(&api, "GET", connection, None).await.1["name"], "crm");
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/acme/connections", None)
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (status, body) = call(
        &api,
        "POST",
        &format!("{connection}/operations/echo"),
        Some(json!({ "input": { "hello": "world" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"], json!({ "hello": "world" }));
    assert_eq!(body["invocation_id"].as_str().map(str::len), Some(32));

    // An Idempotency-Key is taken, or refused naming the header: never dropped.
    let keyed = |key: Vec<u8>| {
        let url = format!("{api}{connection}/operations/echo");
        async move {
            let response = patchbay_tests::plain_http_client()
                .post(url)
                .bearer_auth(OPERATOR_TOKEN)
                .header(
                    "idempotency-key",
                    reqwest::header::HeaderValue::from_bytes(&key).expect("header"),
                )
                .json(&json!({ "input": { "hello": "again" } }))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(keyed(b"call-1:echo".to_vec()).await.0, 200);
    assert_eq!(keyed("k".repeat(255).into_bytes()).await.0, 200);
    for bad in [
        Vec::new(),
        "k".repeat(256).into_bytes(),
        "caf\u{e9}".as_bytes().to_vec(),
    ] {
        let (status, body) = keyed(bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid-idempotency-key")),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("Idempotency-Key"),
            "{body}"
        );
    }

    let (status, body) = call(
        &api,
        "POST",
        &format!("{connection}/operations/nope"),
        Some(json!({ "input": {} })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not-found")),
        "{body}"
    );
    assert!(body["invocation_id"].is_string());

    // Plugin errors go through the one table: the probe's `fail` returns the one it is told.
    for (kind, status_wanted, code) in [
        ("not-found", 404, "not-found"),
        ("rate-limited", 429, "rate-limited"),
        ("upstream", 502, "upstream"),
        ("access-denied", 403, "access-denied"),
    ] {
        let (status, body) = call(
            &api,
            "POST",
            &format!("{connection}/operations/fail"),
            Some(json!({ "input": kind })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (status_wanted, Some(code)),
            "{kind}: {body}"
        );
        assert!(body["invocation_id"].is_string(), "{body}");
    }

    assert_eq!(
        call(&api, "DELETE", "/v1/workspaces/acme", None).await.0,
        204
    );
    assert_eq!(call(&api, "GET", connection, None).await.0, 404);
    assert_eq!(
        call(&api, "DELETE", "/v1/workspaces/acme", None).await.0,
        404
    );
}

#[tokio::test]
async fn workspace_routes_need_the_operator_token() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    for (method, path) in [
        ("GET", "/v1/workspaces"),
        ("POST", "/v1/workspaces"),
        ("DELETE", "/v1/workspaces/acme"),
        ("GET", "/v1/workspaces/acme/connections"),
        ("PUT", "/v1/workspaces/acme/connections/crm"),
        (
            "POST",
            "/v1/workspaces/acme/connections/crm/operations/echo",
        ),
    ] {
        let (status, body) = api_call(method, &api, path, Some("pbo_wrong"), Some(json!({}))).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn credentials_are_write_only_through_the_api() {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme").await;
    let connection = "/v1/workspaces/acme/connections/crm";
    let (status, body) = call(
        &api,
        "PUT",
        connection,
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let secret = "bt-api-write-only-42";
    let set = |kind: &str| json!({ "kind": kind, "token": secret });
    assert_eq!(
        call(
            &api,
            "PUT",
            &format!("{connection}/credentials/token"),
            Some(set("bearer"))
        )
        .await
        .0,
        204
    );
    let (status, body) = call(
        &api,
        "PUT",
        &format!("{connection}/credentials/nope"),
        Some(set("bearer")),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &api,
        "PUT",
        &format!("{connection}/credentials/token"),
        Some(json!({ "kind": "basic", "username": "u", "password": "password-1" })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-credential")),
        "{body}"
    );

    let (status, body) = call(&api, "GET", connection, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["credentials"],
        json!([{ "name": "token", "kind": "bearer", "set": true, "needs_attention": null }])
    );
    assert!(!body.to_string().contains(secret), "{body}");
    let (_, listed) = call(&api, "GET", "/v1/workspaces/acme/connections", None).await;
    assert!(!listed.to_string().contains(secret));

    assert_eq!(
        call(
            &api,
            "DELETE",
            &format!("{connection}/credentials/token"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            &api,
            "DELETE",
            &format!("{connection}/credentials/token"),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn a_workspaces_audit_trail_is_paged_through_the_api() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;
    for ws in ["acme", "other"] {
        call(&api, "POST", "/v1/workspaces", Some(json!({ "id": ws }))).await;
        let (status, _) = call(
            &api,
            "PUT",
            &format!("/v1/workspaces/{ws}/connections/crm"),
            Some(json!({ "plugin": "probe", "config": { "upstream": "http://127.0.0.1:9" }, "grants": { "approve_all_requested": true } })),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Three refused requests in acme (not declared), one in other.
    for (ws, times) in [("acme", 3), ("other", 1)] {
        for _ in 0..times {
            call(
                &api,
                "POST",
                &format!("/v1/workspaces/{ws}/connections/crm/operations/fetch"),
                Some(json!({ "input": { "url": "http://127.0.0.1:9/admin" } })),
            )
            .await;
        }
    }
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/acme", None).await.1["id"],
        "acme"
    );
    let (status, first) = call(&api, "GET", "/v1/workspaces/acme/audit?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["records"].as_array().map(Vec::len), Some(2));
    let next = first["next"].as_str().expect("a second page");
    let (_, second) = call(
        &api,
        "GET",
        &format!("/v1/workspaces/acme/audit?limit=2&after={next}"),
        None,
    )
    .await;
    assert_eq!(second["records"].as_array().map(Vec::len), Some(1));
    assert!(second["next"].is_null());
    for record in first["records"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(second["records"].as_array().into_iter().flatten())
    {
        assert_eq!(
            (record["workspace"].as_str(), record["decision"].as_str()),
            (Some("acme"), Some("denied"))
        );
    }
    let (_, other) = call(&api, "GET", "/v1/workspaces/other/audit", None).await;
    assert_eq!(other["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/acme/audit?limit=0", None)
            .await
            .0,
        422
    );
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/acme/audit?after=garbage", None)
            .await
            .0,
        422
    );
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/nobody/audit", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn every_response_has_a_request_id_and_bodies_are_bounded() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let client = patchbay_tests::plain_http_client();

    let ready = client
        .get(format!("{api}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
    let id = ready
        .headers()
        .get("x-request-id")
        .expect("an id")
        .to_str()
        .expect("text");
    assert_eq!(id.len(), 36, "a fresh UUID: {id}");

    // The caller's id is kept, on errors too.
    let refused = client
        .get(format!("{api}/v1/workspaces"))
        .header("x-request-id", "call-7f3a")
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-request-id"], "call-7f3a");

    // Over the body limit: refused before anything is parsed or stored.
    let huge = "x".repeat(patchbay::api::MAX_BODY_BYTES + 1);
    let response = client
        .post(format!("{api}/v1/workspaces"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"id\":\"{huge}\"}}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        call(&api, "GET", "/v1/workspaces", None).await.1,
        json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx_and_write_nothing() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme").await;
    let client = patchbay_tests::plain_http_client();
    let send = |path: &'static str, content_type: &'static str, body: &'static str| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let response = client
                .put(format!("{api}{path}"))
                .bearer_auth(OPERATOR_TOKEN)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let path = "/v1/workspaces/acme/connections/crm";
    let cases = [
        (
            "application/json",
            "{\"plugin\": ",
            400,
            "malformed-json",
            "EOF",
        ),
        (
            "application/json",
            "{\"plugin\": 5}",
            422,
            "invalid-body",
            "plugin",
        ),
        (
            "application/json",
            "{\"plugin\": \"probe\", \"colour\": 1}",
            422,
            "invalid-body",
            "colour",
        ),
        (
            "text/plain",
            "{\"plugin\": \"probe\"}",
            415,
            "unsupported-media-type",
            "application/json",
        ),
    ];
    for (content_type, body, status, code, needle) in cases {
        let (got, answer) = send(path, content_type, body).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{body}: {answer}"
        );
    }
    // Path segments that are not names never reach storage. (`..` is resolved
    // by the URL itself, leaving a path no route has.)
    for (bad, wanted) in [("..", 404), ("a%2Fb", 422), ("ACME", 422)] {
        let (status, body) = call(
            &api,
            "PUT",
            &format!("/v1/workspaces/acme/connections/{bad}"),
            Some(json!({ "plugin": "probe" })),
        )
        .await;
        assert_eq!(status, wanted, "{bad}: {body}");
    }
    assert_eq!(
        call(&api, "GET", "/v1/workspaces/acme/connections", None)
            .await
            .1,
        json!([])
    );
}

#[tokio::test]
async fn api_requests_are_counted_and_timed_by_route_template_never_by_name() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme-secretive").await;
    call(
        &api,
        "PUT",
        "/v1/workspaces/acme-secretive/connections/crm",
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    for _ in 0..3 {
        let (status, _) = call(
            &api,
            "POST",
            "/v1/workspaces/acme-secretive/connections/crm/operations/echo",
            Some(json!({ "input": {} })),
        )
        .await;
        assert_eq!(status, 200);
    }
    call(&api, "GET", "/v1/workspaces/nobody-here", None).await;
    call(&api, "GET", "/no/such/route", None).await;

    let (status, _) = api_call("GET", &api, "/metrics", Some(OPERATOR_TOKEN), None).await;
    assert_eq!(status, 200);
    let text = patchbay_tests::plain_http_client()
        .get(format!("{api}/metrics"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let api_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("patchbay_api_"))
        .collect();
    let has = |needle: &str| api_lines.iter().any(|l| l.contains(needle));
    assert!(
        api_lines
            .iter()
            .any(|l| l.starts_with("patchbay_api_requests_total")
                && l.contains(r#"route="/v1/workspaces/{ws}/connections/{name}/operations/{op}""#)
                && l.contains(r#"status="200""#)
                && l.ends_with(" 3")),
        "{api_lines:#?}"
    );
    assert!(
        has(r#"route="/v1/workspaces/{ws}",status="404""#),
        "{api_lines:#?}"
    );
    assert!(has(r#"route="unmatched""#), "{api_lines:#?}");
    assert!(
        has("patchbay_api_request_duration_seconds_bucket"),
        "{api_lines:#?}"
    );
    for line in &api_lines {
        assert!(
            !line.contains("acme-secretive")
                && !line.contains("nobody-here")
                && !line.contains("crm"),
            "a name leaked into a label: {line}"
        );
    }
}

#[tokio::test]
async fn the_error_table_holds_over_http_headers_included_and_5xx_tell_nothing_inside() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    harness.ensure(patchbay_tests::plugins::PANIC).await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme").await;
    for (name, plugin) in [("crm", "probe"), ("fragile", "panic")] {
        let (status, body) = call(
            &api,
            "PUT",
            &format!("/v1/workspaces/acme/connections/{name}"),
            Some(json!({ "plugin": plugin, "grants": { "approve_all_requested": true } })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let post = |path: &str, input: Value| {
        patchbay_tests::plain_http_client()
            .post(format!("{api}/v1/workspaces/acme/connections/{path}"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({ "input": input }))
            .send()
    };

    // rate-limited → 429 with Retry-After, in whole seconds rounded up (1500 ms → 2).
    let response = post("crm/operations/fail", json!("rate-limited"))
        .await
        .expect("send");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );

    // invalid input (the operation's schema) → 422 naming the problem.
    let response = post("crm/operations/kv", json!({ "not": "an array" }))
        .await
        .expect("send");
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "invalid-input", "{body}");
    assert!(body["details"][0].is_string(), "{body}");

    // A plugin that panics → 502, with the invocation id and none of its insides.
    let response = post("fragile/operations/run", json!({}))
        .await
        .expect("send");
    assert_eq!(response.status(), 502);
    let text = response.text().await.expect("text");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["code"], "plugin-failed", "{body}");
    assert!(body["invocation_id"].is_string(), "{body}");
    for inside in ["gave up on purpose", "panicked", "wasm", "src/"] {
        assert!(!text.contains(inside), "{inside:?} in {text}");
    }
}
