//! Plugins written in JavaScript (componentize-js against Patchbay's WIT):
//! the example under `examples/js-crm` passes the same conformance kit as
//! the Rust and Python plugins and does the same lookups in the sandbox; its
//! runtime's file and socket imports lead nowhere, and a thrown error
//! becomes the call's message.
//!
//! The toolchain is installed from the npm registry on first use, into the
//! tests' scratch directory: `npm install @bytecodealliance/componentize-js@COMPONENTIZE_JS`.

use crate::languages::{self, repo};
use patchbay::runtime::package::Package;
use patchbay_tests::{Harness, signed};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The componentize-js release the example is built with.
const COMPONENTIZE_JS: &str = "0.23.0";

/// `componentize-js`, installed once under the tests' scratch directory.
fn componentize_js() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("toolchains")
            .join(format!("componentize-js-{COMPONENTIZE_JS}"));
        let tool = prefix.join("node_modules/.bin/componentize-js");
        if !tool.exists() {
            std::fs::create_dir_all(&prefix).expect("toolchain directory");
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&prefix)
                .arg(format!(
                    "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
                ))
                .status()
                .expect("npm (Node.js 18 or newer) is needed to build JavaScript plugins");
            assert!(status.success(), "npm install componentize-js failed");
        }
        tool
    })
}

/// Build `source` (one ES module) into a component, in a directory of its
/// own holding the WIT (componentize-js reads paths under its working
/// directory only).
fn componentize(source: &str) -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("app.js"), source).expect("app.js");
    copy_wit(&repo().join("wit"), &work.path().join("wit"));
    let status = Command::new(componentize_js())
        .current_dir(work.path())
        .args([
            "app.js",
            "--wit",
            "wit",
            "-n",
            "connector",
            "-o",
            "plugin.wasm",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("componentize-js");
    assert!(status.success(), "componentize-js failed");
    std::fs::read(work.path().join("plugin.wasm")).expect("component")
}

/// The connector WIT without the frozen 0.1.0 contract.
fn copy_wit(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("wit") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if path.is_dir() {
            if name != "v0.1.0" {
                copy_wit(&path, &to.join(name));
            }
        } else {
            std::fs::copy(&path, to.join(name)).expect("copy");
        }
    }
}

/// The example's component, built once for all the tests here.
fn example_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let source =
            std::fs::read_to_string(repo().join("examples/js-crm/app.js")).expect("app.js");
        componentize(&source)
    })
}

#[tokio::test]
async fn the_javascript_example_passes_the_conformance_kit() {
    let wasm = tokio::task::spawn_blocking(|| example_wasm().to_vec())
        .await
        .expect("build");
    languages::passes_the_kit(&repo().join("examples/js-crm"), wasm).await;
}

#[tokio::test]
async fn a_javascript_lookup_uses_the_hosts_credential_caches_in_kv_and_is_refused_elsewhere() {
    let package = tokio::task::spawn_blocking(|| {
        signed(Package {
            manifest_text: std::fs::read_to_string(repo().join("examples/js-crm/plugin.toml"))
                .expect("manifest"),
            wasm: example_wasm().to_vec(),
            signature: None,
        })
    })
    .await
    .expect("build");
    languages::looks_up_caches_and_is_refused_elsewhere(package, "js-crm").await;
}

#[tokio::test]
async fn a_thrown_error_is_the_message_and_a_thrown_variant_is_that_error() {
    let wasm = tokio::task::spawn_blocking(|| {
        componentize(
            r#"
export const operations = {
  invoke(context, operation, input) {
    if (operation === "boom") throw new Error("the js plugin failed on purpose");
    if (operation === "not-found") throw { tag: "not-found", val: "no such caller" };
    return input;
  },
  names() { return ["boom", "not-found", "echo"]; },
};
export const webhooks = {
  verifyWebhook(context, request) { throw { tag: "unsupported", val: "no webhooks" }; },
};
"#,
        )
    })
    .await
    .expect("build");
    let manifest = r#"id = "js-probe"
version = "0.1.0"
contract = "0.1.1"
name = "JavaScript errors"
vendor = "Tests"
[[operations]]
name = "boom"
kind = "transform"
input_schema = '{"type": "object"}'
output_schema = '{"type": "object"}'
[[operations]]
name = "not-found"
kind = "lookup"
input_schema = '{"type": "object"}'
output_schema = '{"type": "object"}'
[[operations]]
name = "echo"
kind = "transform"
input_schema = '{"type": "object"}'
output_schema = '{"type": "object"}'
[limits]
memory_mb = 128
timeout_ms = 5000
"#;
    let harness = Harness::new();
    let plugin = harness
        .install_package(signed(Package {
            manifest_text: manifest.into(),
            wasm,
            signature: None,
        }))
        .await;
    let binding = harness.binding(&plugin, "ws-1", "js", &[]);
    let boom = harness.invoke(&plugin, &binding, "boom", json!({})).await;
    let error = boom.result.expect_err("thrown");
    assert!(
        error
            .to_string()
            .contains("Error: the js plugin failed on purpose"),
        "{error}"
    );
    let missing = harness
        .invoke(&plugin, &binding, "not-found", json!({}))
        .await;
    assert_eq!(missing.result.expect_err("not found").code(), "not-found");
    let echoed = harness
        .invoke(&plugin, &binding, "echo", json!({ "a": 1 }))
        .await;
    assert_eq!(echoed.result.expect("echo"), json!({ "a": 1 }));
}

#[tokio::test]
async fn plugin_new_lang_js_builds_and_passes_the_kit() {
    use crate::spawn::{patchbay, run, text};
    let tool = tokio::task::spawn_blocking(|| componentize_js().to_path_buf())
        .await
        .expect("toolchain");
    let work = tempfile::tempdir().expect("tempdir");
    let at = work.path().to_str().expect("utf-8");
    let out = run(patchbay(&[
        "plugin", "new", "js-acme", "--lang", "js", "--dir", at,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = work.path().join("js-acme");
    for file in [
        "app.js",
        "plugin.toml",
        "README.md",
        "wit/world.wit",
        "fixtures/nobody.json",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    let mut build = patchbay(&["plugin", "build"]);
    build
        .current_dir(&dir)
        .env("PATCHBAY_COMPONENTIZE_JS", work.path().join("no-such-tool"));
    let out = run(build).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("npm install --prefix .tools @bytecodealliance/componentize-js@0.23.0"),
        "{}",
        text(&out.stderr)
    );
    // A directory without the WIT (an example copied on its own) gets the
    // one this patchbay runs.
    std::fs::remove_dir_all(dir.join("wit")).expect("rm wit");
    let mut build = patchbay(&["plugin", "build"]);
    build
        .current_dir(&dir)
        .env("PATCHBAY_COMPONENTIZE_JS", &tool);
    let out = run(build).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the connector WIT"),
        "{}",
        text(&out.stderr)
    );
    assert!(dir.join("wit/world.wit").exists());
    assert!(
        text(&out.stdout).contains("js-acme@0.1.0"),
        "{}",
        text(&out.stdout)
    );
    let out = run(patchbay(&[
        "plugin",
        "test",
        dir.to_str().expect("utf-8"),
        "--format",
        "json",
    ]))
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert!(out.status.success(), "{report}");
    assert_eq!(report["summary"]["warn"], 0, "{report}");
}
