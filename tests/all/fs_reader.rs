//! A component that imports wasi:filesystem is refused at install.

use patchbay::runtime::error::LoadError;
use patchbay::runtime::package::PackageError;
use patchbay_tests::{Harness, plugins::FS_READER, plugins::PROBE};
use std::path::Path;

#[tokio::test]
async fn a_filesystem_import_is_refused_naming_the_import() {
    let harness = Harness::new();
    let err = harness
        .services
        .catalog
        .install(FS_READER.package())
        .await
        .expect_err("must be refused");
    match &err {
        PackageError::Component(LoadError::ForbiddenImport(name)) => {
            assert!(name.starts_with("wasi:filesystem/"), "{name}");
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
        ("forbidden import", FS_READER.package()),
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
