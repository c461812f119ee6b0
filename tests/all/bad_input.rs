//! The bad-input matrix, over every route `/openapi.json` describes: hostile
//! path segments (sent raw, so no client tidies them up first) and bad
//! bodies each get a clear 4xx, and nothing is written or removed.

use patchbay_tests::{Harness, OPERATOR_TOKEN, api_call, operator_call as operator};
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};

/// One raw HTTP/1.1 request; the status and the JSON body (or null).
async fn raw(
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let address = base.trim_start_matches("http://").to_owned();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {OPERATOR_TOKEN}\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream.write_all(head.as_bytes()).expect("send head");
        // The server may answer (413) before reading all of a large body.
        let _ = stream.write_all(&body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, json)
    })
    .await
    .expect("join")
}

/// Everything the operator can read, to prove nothing moved.
async fn snapshot(api: &str) -> Value {
    let mut all = serde_json::Map::new();
    for path in [
        "/v1/workspaces",
        "/v1/workspaces/acme/connections",
        "/v1/workspaces/acme/tokens",
        "/v1/plugins",
    ] {
        let (status, body) = operator(api, "GET", path, None).await;
        assert_eq!(status, 200, "{path}");
        all.insert(path.to_owned(), body);
    }
    Value::Object(all)
}

/// `path` with each `{param}` filled from the tenant set up below.
fn concrete(path: &str, token_id: &str) -> Vec<String> {
    path.split('/')
        .map(|segment| match segment {
            "{ws}" => "acme".to_owned(),
            "{name}" => "crm".to_owned(),
            "{op}" => "echo".to_owned(),
            "{credential}" => "token".to_owned(),
            "{version}" => "1.0.0".to_owned(),
            "{id}" if path.starts_with("/v1/plugins") => "probe".to_owned(),
            "{id}" => token_id.to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn every_route_refuses_bad_paths_and_bodies_with_a_4xx_and_changes_nothing() {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme").await;
    let (status, _) = operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200);
    operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm/credentials/token",
        Some(json!({ "kind": "bearer", "token": "t-1" })),
    )
    .await;
    let (_, issued) = operator(&api, "POST", "/v1/workspaces/acme/tokens", Some(json!({}))).await;
    let token_id = issued["id"].as_str().expect("id").to_owned();
    let before = snapshot(&api).await;

    let (_, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let method = method.to_uppercase();
            let segments = concrete(path, &token_id);
            let takes_body = operation.get("requestBody").is_some();
            let body = if takes_body {
                b"{}".to_vec()
            } else {
                Vec::new()
            };

            // Each parameter in turn replaced by something that is not a name.
            for (i, template) in path.split('/').enumerate() {
                if !template.starts_with('{') {
                    continue;
                }
                for bad in [
                    "..",
                    "%2E%2E",
                    "a%2Fb",
                    "%2F",
                    "a%00b",
                    "%FF",
                    "A%20B",
                    &"x".repeat(300),
                ] {
                    let mut attacked = segments.clone();
                    attacked[i] = bad.to_owned();
                    let target = attacked.join("/");
                    let (status, answer) =
                        raw(&api, &method, &target, "application/json", body.clone()).await;
                    assert!(
                        (400..500).contains(&status) && answer["code"].is_string(),
                        "{method} {target}: {status} {answer}"
                    );
                    checked += 1;
                }
            }

            if !takes_body {
                continue;
            }
            let target = segments.join("/");
            let install = path == "/v1/plugins";
            // Webhooks in take any bytes, and no body is read for a target that
            // takes no webhooks (none here): whatever the body, the same bare 401.
            let hook = path.starts_with("/v1/hooks/");
            let oversize = format!("\"{}\"", "x".repeat(3 * 1024 * 1024)).into_bytes();
            let cases: [(&str, Vec<u8>, u16, &str); 5] = [
                ("application/json", b"{,}".to_vec(), 400, "malformed-json"),
                (
                    "application/json",
                    b"\"not an object\"".to_vec(),
                    422,
                    "invalid-body",
                ),
                (
                    "application/json",
                    b"{\"zzz\": 1}".to_vec(),
                    422,
                    "invalid-body",
                ),
                ("text/plain", b"{}".to_vec(), 415, "unsupported-media-type"),
                (
                    "application/json",
                    oversize,
                    // The install route takes large packages; a string is still no package.
                    if install { 422 } else { 413 },
                    if install {
                        "invalid-body"
                    } else {
                        "body-too-large"
                    },
                ),
            ];
            for (content_type, bytes, status, code) in cases {
                let (status, code) = if hook {
                    (401, "unauthorized")
                } else {
                    (status, code)
                };
                let (got, answer) = raw(&api, &method, &target, content_type, bytes).await;
                assert_eq!(
                    (got, answer["code"].as_str()),
                    (status, Some(code)),
                    "{method} {target} ({content_type}): {answer}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "the matrix ran: {checked} requests");

    // Query strings: unknown, malformed and out-of-range parameters.
    for query in ["colour=1", "limit=abc", "limit=0", "after=zzz", "from=-1"] {
        let target = format!("/v1/workspaces/acme/audit?{query}");
        let (status, answer) = raw(&api, "GET", &target, "application/json", Vec::new()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (422, Some("invalid-query")),
            "{target}: {answer}"
        );
    }

    // Unknown or malformed plugin versions.
    for version in ["9.9.9", "not-semver", "../1.0.0"] {
        let (status, answer) = operator(
            &api,
            "PUT",
            "/v1/workspaces/acme/connections/crm",
            Some(json!({ "plugin": "probe", "version": version })),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (422, Some("unknown-plugin")),
            "{version}: {answer}"
        );
    }

    assert_eq!(
        snapshot(&api).await,
        before,
        "nothing was written or removed"
    );
    let (status, connection) =
        operator(&api, "GET", "/v1/workspaces/acme/connections/crm", None).await;
    assert_eq!(status, 200);
    assert_eq!(connection["credentials"][0]["set"], true, "{connection}");
}

/// One raw HTTP/1.1 request (`extra` is added to the head as it is): the
/// status, the head's lines and the JSON body (or null).
async fn raw_full(base: &str, method: &str, target: &str, extra: &str) -> (u16, String, Value) {
    let address = base.trim_start_matches("http://").to_owned();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {OPERATOR_TOKEN}\r\n\
         content-length: 0\r\n{extra}connection: close\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(head.as_bytes()).expect("send head");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let json = serde_json::from_str(body).unwrap_or(Value::Null);
        (status, head.to_ascii_lowercase(), json)
    })
    .await
    .expect("join")
}

/// What the router refuses before a handler runs (a method the route does
/// not serve, a target or header block too long) answers in the error shape
/// on every route, like everything else.
#[tokio::test]
async fn every_rejection_answers_in_the_error_shape() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let (_, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        let target = concrete(path, "tok_0123456789abcdef").join("/");
        let served: Vec<String> = item
            .as_object()
            .expect("item")
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let unserved = ["GET", "POST", "PUT", "DELETE", "PATCH"]
            .into_iter()
            .find(|m| !served.iter().any(|s| s == m))
            .expect("some method is not served");
        for method in [unserved, "FROBNICATE"] {
            let (status, head, body) = raw_full(&api, method, &target, "").await;
            assert_eq!(status, 405, "{method} {path}");
            assert_eq!(
                body["code"], "method-not-allowed",
                "{method} {path}: {body}"
            );
            assert!(head.contains("\r\nallow: "), "{method} {path}: {head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let allow = head
                .lines()
                .find_map(|l| l.strip_prefix("allow: "))
                .expect("allow");
            for allowed in &served {
                let allowed = allowed.to_ascii_lowercase();
                assert!(allow.contains(allowed.as_str()), "{method} {path}: {allow}");
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");

    let long_target = format!("/v1/workspaces?x={}", "a".repeat(9 * 1024));
    let huge_header = format!("x-padding: {}\r\n", "b".repeat(17 * 1024));
    let long_unrouted = "/nowhere/x".repeat(1000);
    for (what, target, extra, status, code) in [
        (
            "a long target",
            long_target.as_str(),
            "",
            414,
            "uri-too-long",
        ),
        (
            "a long target, unrouted",
            long_unrouted.as_str(),
            "",
            414,
            "uri-too-long",
        ),
        (
            "large headers",
            "/v1/workspaces",
            huge_header.as_str(),
            431,
            "headers-too-large",
        ),
        ("no route", "/nowhere", "", 404, "no-route"),
    ] {
        let (got, head, body) = raw_full(&api, "GET", target, extra).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{what}: {head} {body}"
        );
        assert!(body["message"].is_string(), "{what}: {body}");
    }
}

/// A caller's value comes back in an error message cut to 64 characters
/// and marked, whichever layer wrote the message.
#[tokio::test]
async fn error_messages_cap_the_values_they_echo() {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    patchbay_tests::create_workspace(&api, "acme").await;
    operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    let long = "q".repeat(300);
    let cases = [
        ("GET", format!("/v1/workspaces/{long}"), None),
        (
            "POST",
            "/v1/workspaces".to_owned(),
            Some(json!({ "id": long })),
        ),
        (
            "POST",
            "/v1/workspaces".to_owned(),
            Some(json!({ long.as_str(): 1 })),
        ),
        (
            "PUT",
            format!("/v1/workspaces/acme/connections/{long}"),
            Some(json!({ "plugin": "probe" })),
        ),
        (
            "PUT",
            "/v1/workspaces/acme/connections/c2".to_owned(),
            Some(json!({ "plugin": long })),
        ),
        ("GET", format!("/v1/plugins/{long}"), None),
        ("DELETE", format!("/v1/plugins/probe/{long}"), None),
        ("DELETE", format!("/v1/workspaces/acme/tokens/{long}"), None),
        (
            "PUT",
            format!("/v1/workspaces/acme/connections/crm/credentials/{long}"),
            Some(json!({ "kind": "bearer", "token": "t" })),
        ),
        (
            "POST",
            format!("/v1/workspaces/acme/connections/crm/operations/{long}"),
            Some(json!({ "input": {} })),
        ),
        ("GET", format!("/v1/nowhere/{long}"), None),
    ];
    for (method, path, body) in cases {
        let (status, answer) = operator(&api, method, &path, body).await;
        assert!((400..500).contains(&status), "{method} {path}: {status}");
        let text = answer.to_string();
        assert!(answer["code"].is_string(), "{method}: {text}");
        assert!(
            !text.contains(&long[..65]),
            "{method} {}: echoed whole: {text}",
            &path[..40.min(path.len())]
        );
        assert!(
            text.contains("qqqq…"),
            "{method} {}: not marked: {text}",
            &path[..40.min(path.len())]
        );
    }
}

/// Method names are the caller's to choose; the metrics label them from a
/// fixed set, so made-up ones add no series.
#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let series = || async {
        let text = patchbay_tests::plain_http_client()
            .get(format!("{api}/metrics"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with("patchbay_api_"))
            .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_owned())
            .collect::<std::collections::BTreeSet<String>>()
    };
    // One of each first, so the fold's own series already exists.
    raw_full(&api, "FOLD", "/healthz", "").await;
    raw_full(&api, "FOLD", "/nowhere", "").await;
    series().await; // its own first scrape adds the /metrics series
    let before = series().await;
    for i in 0..50 {
        for target in ["/healthz", "/nowhere", "/v1/workspaces"] {
            let (status, _, _) = raw_full(&api, &format!("MADEUP{i}"), target, "").await;
            assert!(status == 405 || status == 404, "{status}");
        }
    }
    let after = series().await;
    let new: Vec<_> = after.difference(&before).collect();
    // /v1/workspaces had no `other` series yet: its one request and one duration family at most.
    assert!(
        new.iter()
            .all(|s| s.contains("method=\"other\"") && s.contains("route=\"/v1/workspaces\"")),
        "{new:#?}"
    );
    assert!(after.iter().all(|s| !s.contains("MADEUP")), "{after:#?}");
}

/// The bearer scheme is matched without regard to case (RFC 9110), over HTTP.
#[tokio::test]
async fn the_bearer_scheme_is_taken_in_any_case() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    for (scheme, status) in [
        ("Bearer", 200),
        ("bearer", 200),
        ("BEARER", 200),
        ("Basic", 401),
    ] {
        let response = patchbay_tests::plain_http_client()
            .get(format!("{api}/v1/workspaces"))
            .header("authorization", format!("{scheme} {OPERATOR_TOKEN}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), status, "{scheme}");
    }
}
