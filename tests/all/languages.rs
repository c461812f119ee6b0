//! What every example plugin in another language must do, whatever the
//! language: pass the conformance kit, and in the sandbox look up over
//! `wasi:http` with the host's credential, cache in KV, report not-found,
//! echo, and get `access-denied` for a destination the workspace did not
//! approve (a loopback listener sees nothing).

use crate::spawn::{patchbay, run, text};
use patchbay::policy::grants::Grants;
use patchbay::runtime::package::Package;
use patchbay_tests::Harness;
use serde_json::json;
use std::path::{Path, PathBuf};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example in `example` (its plugin.toml and fixtures) with the built
/// component `wasm` passes `patchbay plugin test`, every error path included.
pub(crate) async fn passes_the_kit(example: &Path, wasm: Vec<u8>) {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join(example.file_name().expect("name"));
    std::fs::create_dir_all(dir.join("fixtures")).expect("mkdir");
    std::fs::copy(example.join("plugin.toml"), dir.join("plugin.toml")).expect("manifest");
    for entry in std::fs::read_dir(example.join("fixtures")).expect("fixtures") {
        let path = entry.expect("entry").path();
        std::fs::copy(
            &path,
            dir.join("fixtures").join(path.file_name().expect("name")),
        )
        .expect("fixture");
    }
    std::fs::write(dir.join("plugin.wasm"), wasm).expect("wasm");
    let out = run(patchbay(&[
        "plugin",
        "test",
        dir.to_str().expect("utf-8"),
        "--format",
        "json",
    ]))
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["summary"]["warn"], 0, "{report}");
    // The six error paths of the one successful lookup, as for Rust plugins.
    assert_eq!(
        report["checks"].to_string().matches(" -> ").count(),
        6,
        "{report}"
    );
}

/// The example's `find-contact` and `echo`, its output tagged `source`.
pub(crate) async fn looks_up_caches_and_is_refused_elsewhere(package: Package, source: &str) {
    let harness = Harness::new();
    let plugin = harness.install_package(package).await;
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(query_param("email", "ada@example.com"))
        .and(header("authorization", "Bearer tok-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{ "id": 512, "first_name": "Ada", "email": "ada@example.com" }]
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(query_param("email", "nobody@example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": [] })))
        .mount(&upstream)
        .await;
    let uri = upstream.uri();
    let binding = harness.binding(&plugin, "ws-1", "py", &[("base_url", uri.as_str())]);
    harness
        .set_credential(
            "py",
            "api_token",
            patchbay::egress::credentials::Secret::Bearer {
                token: "tok-123".into(),
            },
        )
        .await;
    // Twice: the second answer comes from KV, not the upstream (`expect(1)`).
    for _ in 0..2 {
        let output = harness
            .invoke(
                &plugin,
                &binding,
                "find-contact",
                json!({ "email": "Ada@Example.com" }),
            )
            .await
            .result
            .expect("found");
        assert_eq!(
            output,
            json!({ "id": "512", "source": source, "first_name": "Ada", "email": "ada@example.com" })
        );
    }
    let missing = harness
        .invoke(
            &plugin,
            &binding,
            "find-contact",
            json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!(missing.result.expect_err("nobody").code(), "not-found");
    let echoed = harness
        .invoke(&plugin, &binding, "echo", json!({ "text": "hi" }))
        .await;
    assert_eq!(echoed.result.expect("echo"), json!({ "text": "hi" }));

    // The destination not approved (KV still is): refused by the host, an
    // error the plugin reports as access-denied, and nothing reaches the
    // listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let elsewhere = format!("http://{}", listener.local_addr().expect("addr"));
    let refused = harness.binding_with_grants(
        &plugin,
        "ws-1",
        "py-refused",
        &[("base_url", elsewhere.as_str())],
        &Grants {
            kv: true,
            ..Grants::default()
        },
    );
    let outcome = harness
        .invoke(
            &plugin,
            &refused,
            "find-contact",
            json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(outcome.result.expect_err("refused").code(), "access-denied");
    assert!(!outcome.denials.is_empty(), "the host recorded the refusal");
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
}
