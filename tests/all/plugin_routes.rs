//! The operator's plugin routes: list, show, install over HTTP, remove.

use base64::Engine as _;
use patchbay::runtime::package::Package;
use patchbay_tests::{Harness, operator_call as operator, plugins::PROBE, signed};
use serde_json::{Value, json};

/// The install request for a package signed by the test publisher.
fn package_body(manifest: String, wasm: &[u8]) -> Value {
    let package = signed(Package {
        manifest_text: manifest,
        wasm: wasm.to_vec(),
        signature: None,
    });
    json!({
        "manifest": package.manifest_text,
        "component": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
        "signature": package.signature,
    })
}

fn probe_at(version: &str) -> String {
    PROBE.manifest().replacen(
        "version = \"1.0.0\"",
        &format!("version = \"{version}\""),
        1,
    )
}

#[tokio::test]
async fn plugins_are_installed_listed_shown_and_removed_over_http() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let api = harness.serve_api().await;

    let (status, body) = operator(
        &api,
        "POST",
        "/v1/plugins",
        Some(package_body(probe_at("1.1.0"), &PROBE.wasm_bytes())),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["version"].as_str()),
        (Some("probe"), Some("1.1.0"))
    );
    let (status, body) = operator(
        &api,
        "POST",
        "/v1/plugins",
        Some(package_body(probe_at("1.1.0"), &PROBE.wasm_bytes())),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );

    let (status, listed) = operator(&api, "GET", "/v1/plugins", None).await;
    assert_eq!(status, 200);
    let probes: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["id"] == "probe")
        .filter_map(|p| p["version"].as_str())
        .collect();
    assert_eq!(probes.len(), 2, "{listed}");
    let (status, shown) = operator(&api, "GET", "/v1/plugins/probe", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        shown["versions"][0]["version"], "1.1.0",
        "newest first: {shown}"
    );
    assert_eq!(shown["versions"][1]["version"], "1.0.0");
    let (status, manifest) = operator(&api, "GET", "/v1/plugins/probe/1.0.0", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        manifest["capabilities"]["kv"]["max_keys"], 100,
        "{manifest}"
    );

    for missing in [
        "/v1/plugins/nothing",
        "/v1/plugins/probe/9.9.9",
        "/v1/plugins/..%2F..",
        "/v1/plugins/probe/..%2F..%2F..",
        "/v1/plugins/%2E%2E/1.0.0",
    ] {
        let (status, body) = operator(&api, "GET", missing, None).await;
        assert_eq!(status, 404, "{missing}: {body}");
    }

    // A pinned version stays until nothing pins it.
    patchbay_tests::create_workspace(&api, "acme").await;
    let (status, body) = operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "version": "1.1.0", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = operator(&api, "DELETE", "/v1/plugins/probe/1.1.0", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("plugin-in-use")),
        "{body}"
    );
    assert_eq!(body["details"], json!(["acme/crm"]));
    assert_eq!(
        operator(&api, "GET", "/v1/plugins/probe/1.1.0", None)
            .await
            .0,
        200
    );
    operator(&api, "DELETE", "/v1/workspaces/acme/connections/crm", None).await;
    assert_eq!(
        operator(&api, "DELETE", "/v1/plugins/probe/1.1.0", None)
            .await
            .0,
        204
    );
    assert_eq!(
        operator(&api, "GET", "/v1/plugins/probe/1.1.0", None)
            .await
            .0,
        404
    );
    assert_eq!(
        operator(&api, "DELETE", "/v1/plugins/probe/1.1.0", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_bad_package_is_refused_naming_what_is_wrong_and_installs_nothing() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let wasm = PROBE.wasm_bytes();
    let cases = [
        (
            package_body("id = [".into(), &wasm),
            "invalid-plugin",
            "plugin.toml",
        ),
        (
            package_body(probe_at("2.0.0"), b"\0asm not really"),
            "invalid-plugin",
            "",
        ),
        (
            json!({ "manifest": probe_at("2.0.0"), "component": "***" }),
            "invalid-body",
            "base64",
        ),
        (
            json!({ "manifest": probe_at("2.0.0") }),
            "invalid-body",
            "component",
        ),
        (
            package_body(
                probe_at("2.0.0").replace("name = \"kv\"", "name = \"kv2\""),
                &wasm,
            ),
            "invalid-plugin",
            "kv2",
        ),
    ];
    for (body, code, mentions) in cases {
        let (status, answer) = operator(&api, "POST", "/v1/plugins", Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(mentions)),
            "{answer}"
        );
    }
    // Larger than other routes take: still read, and refused for what it is.
    let big = vec![0u8; 3 * 1024 * 1024];
    let (status, answer) = operator(
        &api,
        "POST",
        "/v1/plugins",
        Some(package_body(probe_at("2.0.0"), &big)),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-plugin")),
        "{answer}"
    );
    assert_eq!(
        operator(&api, "GET", "/v1/plugins", None).await.1,
        json!([]),
        "nothing was installed"
    );
}

#[tokio::test]
async fn removing_a_version_waits_for_a_save_that_may_pin_it() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    harness
        .install_package(PROBE.package_with(|_| probe_at("1.1.0")))
        .await;
    // As a connection save in progress holds it, between resolving the
    // version and storing the connection.
    let saving = harness.services.tenancy().pins.clone();
    let saving = saving.read_owned().await;
    let remover = harness.services.tenancy();
    let removal = tokio::spawn(async move { remover.remove_plugin("probe", "1.1.0").await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!removal.is_finished(), "the removal waits for the save");
    assert!(harness.services.catalog.is_installed("probe", "1.1.0"));
    drop(saving);
    removal
        .await
        .expect("join")
        .expect("removed once the save is done");
    assert!(!harness.services.catalog.is_installed("probe", "1.1.0"));
}
