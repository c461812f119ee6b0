//! A component that imports wasi:filesystem (as Python's and JavaScript's
//! runtimes do) installs, and every file access fails: nothing is behind the
//! interface. A component importing an interface outside the world is still
//! refused at install, before anything is compiled.

use patchbay::runtime::error::LoadError;
use patchbay::runtime::package::{Package, PackageError};
use patchbay_tests::{Harness, plugins::FS_READER, plugins::PROBE};
use serde_json::json;
use std::path::Path;

/// `FS_READER` with its filesystem import renamed to one outside the world
/// (same length, every occurrence, so the component stays well formed).
pub(crate) fn with_forbidden_import() -> Package {
    let from = b"wasi:filesystem/preopens@0.2.";
    let to = b"wasi:filesystem/preopenx@0.2.";
    let mut wasm = FS_READER.wasm_bytes();
    let mut i = 0;
    while i + from.len() <= wasm.len() {
        if &wasm[i..i + from.len()] == from {
            wasm[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    patchbay_tests::signed(Package {
        wasm,
        ..FS_READER.package()
    })
}

#[tokio::test]
async fn a_plugin_importing_the_filesystem_installs_and_reads_nothing() {
    let harness = Harness::new();
    let plugin = harness.install(FS_READER).await;
    let binding = harness.binding(&plugin, "ws-1", "fs", &[]);
    // The host's own files, relative paths, the working directory, and the
    // data directory by its real path.
    let data = harness.dir.path().join("master.key");
    for path in [
        "/etc/passwd",
        "/",
        ".",
        "plugin.toml",
        "../../etc/hostname",
        data.to_str().expect("utf-8"),
    ] {
        let outcome = harness.invoke(&plugin, &binding, "read", json!(path)).await;
        let error = outcome.result.expect_err("no file is readable");
        assert_eq!(error.code(), "plugin-failed", "{path}: {error}");
        assert!(!error.to_string().contains("root:"), "{path}: {error}");
    }
}

#[tokio::test]
async fn an_import_outside_the_world_is_refused_naming_it() {
    let harness = Harness::new();
    let err = harness
        .services
        .catalog
        .install(with_forbidden_import())
        .await
        .expect_err("must be refused");
    match &err {
        PackageError::Component(LoadError::ForbiddenImport(name)) => {
            assert!(name.starts_with("wasi:filesystem/preopenx"), "{name}");
        }
        other => panic!("expected a forbidden import, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("outside the patchbay:connector world"),
        "{err}"
    );
    assert!(
        harness.services.catalog.list().expect("list").is_empty(),
        "nothing was installed"
    );
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_refused_package_leaves_nothing_on_disk() {
    // Refused before compiling (its imports), and refused after (its
    // manifest names an operation the component lacks).
    let cases = [
        ("forbidden import", with_forbidden_import()),
        (
            "operation mismatch",
            PROBE.package_with(|m| {
                format!("{m}\n[[operations]]\nname = \"missing\"\nkind = \"lookup\"\ninput_schema = {{ }}\noutput_schema = {{ }}\n")
            }),
        ),
    ];
    for (case, package) in cases {
        let harness = Harness::new();
        let data = harness.dir.path();
        harness
            .services
            .catalog
            .install(package)
            .await
            .expect_err("must be refused");
        assert!(
            files_under(&data.join("cache")).is_empty(),
            "{case}: a compiled artifact was kept"
        );
        assert!(
            files_under(&data.join("plugins")).is_empty(),
            "{case}: a package was kept"
        );
    }
    // An accepted package's artifact is kept, for the next start.
    let harness = Harness::new();
    harness.install(PROBE).await;
    assert_eq!(files_under(&harness.dir.path().join("cache")).len(), 1);
}

#[tokio::test]
async fn the_cli_prints_an_install_refusal_once() {
    let packages = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let dir = FS_READER.write_dir(packages.path());
    let package = with_forbidden_import();
    std::fs::write(dir.join("plugin.wasm"), &package.wasm).expect("wasm");
    std::fs::write(dir.join("plugin.sig"), package.signature.expect("signed")).expect("sig");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay-under-test"));
    cmd.args(["plugin", "install", dir.to_str().expect("utf-8")])
        .env("PATCHBAY_DATA_DIR", data.path())
        .env("PATCHBAY_ALLOW_UNSIGNED", "true")
        .env("RUST_LOG", "warn");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("spawn"))
        .await
        .expect("join");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("outside the patchbay:connector world")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        files_under(&data.path().join("cache")).is_empty(),
        "no artifact kept"
    );
}
