//! Plugins written in Python (componentize-py against Patchbay's WIT):
//! the example under `examples/python-crm` builds, installs and passes the
//! same conformance kit as the Rust plugins, and in the sandbox it looks up
//! over `wasi:http` with the host's credential, caches in KV, reports
//! not-found, and gets `access-denied` for a refused destination. Its
//! runtime's file and socket imports lead nowhere, and an uncaught Python
//! exception becomes the error's message.
//!
//! The toolchain is installed from PyPI on first use, into the tests'
//! scratch directory: `pip install componentize-py==COMPONENTIZE_PY`.

use crate::languages;
use crate::spawn::{patchbay, run, text};
use patchbay::runtime::package::Package;
use patchbay_tests::{Harness, signed};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The componentize-py release the example is built with (the one
/// `patchbay plugin new --lang python` names).
const COMPONENTIZE_PY: &str = "0.25.1";

use languages::repo;

/// `componentize-py`, installed once into a virtual environment under the
/// tests' scratch directory.
fn componentize_py() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("toolchains")
            .join(format!("componentize-py-{COMPONENTIZE_PY}"));
        let tool = venv.join("bin/componentize-py");
        if !tool.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 (3.10 or newer) is needed to build Python plugins");
            assert!(status.success(), "python3 -m venv failed");
            let status = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
                .status()
                .expect("pip");
            assert!(status.success(), "pip install componentize-py failed");
        }
        tool
    })
}

/// Build the Python app in `app_dir` (its module `app`) into a component.
fn componentize(app_dir: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new(componentize_py())
        .arg("-d")
        .arg(repo().join("wit"))
        .args(["-w", "connector", "componentize", "--python-path"])
        .arg(app_dir)
        .args(["app", "-o"])
        .arg(out)
        .status()
        .expect("componentize-py");
    assert!(
        status.success(),
        "componentize-py failed on {}",
        app_dir.display()
    );
    std::fs::read(out).expect("component")
}

/// The example's component, built once for all the tests here.
fn example_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-crm.wasm");
        componentize(&repo().join("examples/python-crm"), &out)
    })
}

fn example_package() -> Package {
    let manifest =
        std::fs::read_to_string(repo().join("examples/python-crm/plugin.toml")).expect("manifest");
    signed(Package {
        manifest_text: manifest,
        wasm: example_wasm().to_vec(),
        signature: None,
    })
}

#[tokio::test]
async fn the_python_example_passes_the_conformance_kit() {
    let wasm = tokio::task::spawn_blocking(|| example_wasm().to_vec())
        .await
        .expect("build");
    languages::passes_the_kit(&repo().join("examples/python-crm"), wasm).await;
}

#[tokio::test]
async fn a_python_lookup_uses_the_hosts_credential_caches_in_kv_and_is_refused_elsewhere() {
    let package = tokio::task::spawn_blocking(example_package)
        .await
        .expect("build");
    languages::looks_up_caches_and_is_refused_elsewhere(package, "python-crm").await;
}

#[tokio::test]
async fn python_files_and_sockets_lead_nowhere_and_an_exception_is_the_message() {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        work.path().join("app.py"),
        r#"
import socket
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import patchbay_connector_types as types

class Operations(exports.Operations):
    def invoke(self, context, operation, input):
        if operation == "boom":
            raise ValueError("the python plugin failed on purpose")
        if operation == "read-file":
            with open("/etc/passwd") as f:
                return '{"read": true}'
        if operation == "connect":
            socket.create_connection(("127.0.0.1", int(input)), timeout=1)
            return '{"connected": true}'
        raise Err(types.Error_Unsupported(operation))

    def names(self):
        return ["boom", "read-file", "connect"]

class Webhooks(exports.Webhooks):
    def verify_webhook(self, context, request):
        raise Err(types.Error_Unsupported("no webhooks"))
"#,
    )
    .expect("app.py");
    let app = work.path().to_path_buf();
    let wasm = tokio::task::spawn_blocking(move || componentize(&app, &app.join("plugin.wasm")))
        .await
        .expect("build");
    let manifest = r#"id = "py-hostile"
version = "0.1.0"
contract = "0.1.1"
name = "Python, trying the sandbox"
vendor = "Tests"
[[operations]]
name = "boom"
kind = "transform"
input_schema = '{"type": "object"}'
output_schema = '{"type": "object"}'
[[operations]]
name = "read-file"
kind = "transform"
input_schema = '{"type": "object"}'
output_schema = '{"type": "object"}'
[[operations]]
name = "connect"
kind = "transform"
input_schema = '{"type": "integer"}'
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
    let binding = harness.binding(&plugin, "ws-1", "hostile", &[]);
    let boom = harness.invoke(&plugin, &binding, "boom", json!({})).await;
    let error = boom.result.expect_err("raised");
    assert!(
        error
            .to_string()
            .contains("ValueError: the python plugin failed on purpose"),
        "{error}"
    );
    let read = harness
        .invoke(&plugin, &binding, "read-file", json!({}))
        .await;
    let error = read.result.expect_err("no file");
    assert!(error.to_string().contains("Error"), "{error}");
    assert!(!error.to_string().contains("root:"), "{error}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let connect = harness
        .invoke(&plugin, &binding, "connect", json!(port))
        .await;
    let error = connect.result.expect_err("no socket");
    assert!(error.to_string().contains("Error"), "{error}");
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
}

#[tokio::test]
async fn plugin_new_lang_python_builds_and_passes_the_kit() {
    let tool = tokio::task::spawn_blocking(|| componentize_py().to_path_buf())
        .await
        .expect("toolchain");
    let work = tempfile::tempdir().expect("tempdir");
    let at = work.path().to_str().expect("utf-8");
    let out = run(patchbay(&[
        "plugin", "new", "py-acme", "--lang", "python", "--dir", at,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = work.path().join("py-acme");
    for file in [
        "app.py",
        "plugin.toml",
        "README.md",
        "wit/world.wit",
        "fixtures/find-contact.json",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    // Without the toolchain, build says how to install it.
    let mut build = patchbay(&["plugin", "build"]);
    build
        .current_dir(&dir)
        .env("PATCHBAY_COMPONENTIZE_PY", work.path().join("no-such-tool"));
    let out = run(build).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pip install componentize-py==0.25.1"),
        "{}",
        text(&out.stderr)
    );
    let mut build = patchbay(&["plugin", "build"]);
    build
        .current_dir(&dir)
        .env("PATCHBAY_COMPONENTIZE_PY", &tool);
    let out = run(build).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("py-acme@0.1.0"),
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

    // The Python scaffold has the crm template only.
    let out = run(patchbay(&[
        "plugin",
        "new",
        "py-pay",
        "--lang",
        "python",
        "--template",
        "payments",
        "--dir",
        at,
    ]))
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("crm template only"),
        "{}",
        text(&out.stderr)
    );
}
