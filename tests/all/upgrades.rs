//! Moving a connection between plugin versions: the capability diff, exact
//! approval, pinned versions running side by side; and per-connection limits.

use patchbay_tests::{Harness, operator_call as operator, plugins::PROBE};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Probe 1.0.0 and a 2.0.0 that asks for a new destination, more memory and more KV.
async fn two_versions() -> Harness {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    harness
        .install_package(PROBE.package_with(|m| {
            m.replacen("version = \"1.0.0\"", "version = \"2.0.0\"", 1)
                .replace(
                    r#"destinations = ["GET,HEAD,POST,PUT {{upstream}}/allowed"]"#,
                    r#"destinations = ["GET,HEAD,POST,PUT {{upstream}}/allowed", "GET {{upstream}}/extra"]"#,
                )
                .replace("memory_mb = 16", "memory_mb = 32")
                .replace("max_keys = 100", "max_keys = 200")
        }))
        .await;
    harness
}

fn connection(version: &str, upstream: &str, extra: Value) -> Value {
    let mut body = json!({
        "plugin": "probe",
        "version": version,
        "config": { "upstream": upstream },
        "grants": { "approve_all_requested": true },
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body
}

async fn fetch(api: &str, name: &str, url: String) -> (u16, Value) {
    operator(
        api,
        "POST",
        &format!("/v1/workspaces/acme/connections/{name}/operations/fetch"),
        Some(json!({ "input": { "url": url } })),
    )
    .await
}

#[tokio::test]
async fn an_upgrade_that_asks_for_more_waits_for_exactly_its_diff() {
    let upstream = MockServer::start().await;
    Mock::given(path("/extra/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    let harness = two_versions().await;
    let api = harness.serve_api().await;
    let uri = upstream.uri();
    patchbay_tests::create_workspace(&api, "acme").await;
    for name in ["crm", "crm-2"] {
        let (status, body) = operator(
            &api,
            "PUT",
            &format!("/v1/workspaces/acme/connections/{name}"),
            Some(connection("1.0.0", &uri, json!({}))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.get("upgrade").is_none(),
            "a new connection is no upgrade"
        );
    }
    let crm = "/v1/workspaces/acme/connections/crm";

    // Refused, even with approve_all_requested, showing the diff.
    let (status, refused) =
        operator(&api, "PUT", crm, Some(connection("2.0.0", &uri, json!({})))).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("upgrade-needs-approval")),
        "{refused}"
    );
    let diff = refused["diff"].clone();
    assert_eq!(
        diff,
        json!({
            "from": "1.0.0",
            "to": "2.0.0",
            "new_destinations": ["GET {{upstream}}/extra"],
            "memory_mb": { "from": 16, "to": 32 },
            "kv": {
                "from": { "max_keys": 100, "max_total_bytes": 65536, "max_value_bytes": 1024 },
                "to": { "max_keys": 200, "max_total_bytes": 65536, "max_value_bytes": 1024 }
            }
        })
    );
    assert_eq!(
        operator(&api, "GET", crm, None).await.1["version"],
        "1.0.0",
        "nothing changed"
    );

    // Approving less than the diff is approving something else.
    let mut partial = diff.clone();
    partial.as_object_mut().expect("object").remove("memory_mb");
    let (status, body) = operator(
        &api,
        "PUT",
        crm,
        Some(connection(
            "2.0.0",
            &uri,
            json!({ "approve_upgrade": partial }),
        )),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("upgrade-needs-approval"))
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not match")),
        "{body}"
    );
    assert_eq!(body["diff"], diff);

    let (status, moved) = operator(
        &api,
        "PUT",
        crm,
        Some(connection(
            "2.0.0",
            &uri,
            json!({ "approve_upgrade": diff.clone() }),
        )),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["version"], "2.0.0");
    assert_eq!(
        moved["upgrade"], diff,
        "the response shows what was approved"
    );

    // Each connection runs its pinned version: only 2.0.0 reaches /extra.
    let (status, body) = fetch(&api, "crm", format!("{uri}/extra/x")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fetch(&api, "crm-2", format!("{uri}/extra/x")).await;
    assert_eq!(status, 403, "1.0.0 never declared /extra: {body}");
    assert_eq!(
        upstream.received_requests().await.expect("recorded").len(),
        1
    );

    // Moving back asks for nothing new: no approval needed.
    let (status, back) =
        operator(&api, "PUT", crm, Some(connection("1.0.0", &uri, json!({})))).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["upgrade"], json!({ "from": "2.0.0", "to": "1.0.0" }));
}

#[tokio::test]
async fn a_connection_can_hold_its_plugin_to_tighter_limits() {
    let upstream = MockServer::start().await;
    Mock::given(path("/allowed/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{}")
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&upstream)
        .await;
    let harness = two_versions().await;
    let api = harness.serve_api().await;
    let uri = upstream.uri();
    patchbay_tests::create_workspace(&api, "acme").await;

    for (limits, problem) in [
        (json!({ "memory_mb": 64 }), "memory_mb 64"),
        (json!({ "timeout_ms": 0 }), "timeout_ms 0"),
        (json!({ "timeout_ms": 5000 }), "timeout_ms 5000"),
    ] {
        let (status, body) = operator(
            &api,
            "PUT",
            "/v1/workspaces/acme/connections/tight",
            Some(connection("1.0.0", &uri, json!({ "limits": limits }))),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid-limits")),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(problem)),
            "{body}"
        );
    }
    let (status, body) = operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/tight",
        Some(connection(
            "1.0.0",
            &uri,
            json!({ "limits": { "timeout_ms": 100, "memory_mb": 8 } }),
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"], json!({ "timeout_ms": 100, "memory_mb": 8 }));
    operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/loose",
        Some(connection("1.0.0", &uri, json!({}))),
    )
    .await;

    let (status, body) = fetch(&api, "loose", format!("{uri}/allowed/slow")).await;
    assert_eq!(status, 200, "the plugin's own 1000 ms is enough: {body}");
    let (status, body) = fetch(&api, "tight", format!("{uri}/allowed/slow")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("timeout")),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("100")),
        "{body}"
    );
}
