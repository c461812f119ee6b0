//! A vendor's first ten minutes: `plugin new` from each template, `plugin
//! build`, and the conformance kit passing on what was written, with no
//! Patchbay checkout inside the crate.

use crate::spawn::{patchbay, run, text};
use std::path::{Path, PathBuf};

/// One target directory for every vendor crate the tests build (the
/// templates here, the guide's): the SDK and its dependencies build once.
/// Each test names its crates apart, so no two write the same artifact.
pub(crate) fn vendor_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("vendor-crates")
}

#[tokio::test]
async fn every_template_builds_into_a_valid_package_that_passes_the_kit() {
    let work = tempfile::tempdir().expect("tempdir");
    let target = vendor_target();
    for template in ["crm", "payments", "appointments", "blank"] {
        let name = format!("vendor-{template}");
        let out = run(patchbay(&[
            "plugin",
            "new",
            &name,
            "--template",
            template,
            "--dir",
            work.path().to_str().expect("utf-8"),
        ]))
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let dir = work.path().join(&name);
        assert_eq!(text(&out.stdout).trim(), dir.display().to_string());
        for file in [
            "Cargo.toml",
            "plugin.toml",
            "src/lib.rs",
            "README.md",
            ".cargo/config.toml",
        ] {
            assert!(dir.join(file).exists(), "{template}: {file}");
        }
        let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            cargo_toml.contains("patchbay-sdk = { path = "),
            "{cargo_toml}"
        );
        assert!(
            cargo_toml.contains("[workspace]"),
            "a workspace of its own: {cargo_toml}"
        );

        let mut build = patchbay(&["plugin", "build"]);
        build.current_dir(&dir).env("CARGO_TARGET_DIR", &target);
        let out = run(build).await;
        assert!(out.status.success(), "{template}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
        let wasm = std::fs::read(dir.join("plugin.wasm")).expect("plugin.wasm");
        assert!(wasm.starts_with(b"\0asm"));

        let out = run(patchbay(&[
            "plugin",
            "test",
            dir.to_str().expect("utf-8"),
            "--format",
            "json",
        ]))
        .await;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        assert!(out.status.success(), "{template}: {report}");
        assert_eq!(report["summary"]["warn"], 0, "{template}: {report}");
        let error_paths = if template == "blank" { 0 } else { 6 };
        let names = report["checks"].to_string();
        assert_eq!(
            names.matches(" -> ").count(),
            error_paths,
            "{template}: {report}"
        );
    }
}

#[tokio::test]
async fn new_refuses_a_bad_name_and_never_writes_over_a_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let at = work.path().to_str().expect("utf-8");
    let out = run(patchbay(&["plugin", "new", "Bad Name", "--dir", at])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be a plugin id"),
        "{}",
        text(&out.stderr)
    );

    std::fs::create_dir(work.path().join("taken")).expect("mkdir");
    std::fs::write(work.path().join("taken/keep.txt"), "mine").expect("write");
    let out = run(patchbay(&["plugin", "new", "taken", "--dir", at])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("exists already"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(work.path().join("taken"))
            .expect("dir")
            .count(),
        1,
        "nothing was written"
    );

    // The SDK by a path the vendor names.
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let out = run(patchbay(&[
        "plugin",
        "new",
        "mine",
        "--template",
        "blank",
        "--dir",
        at,
        "--sdk-path",
        sdk.to_str().expect("utf-8"),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cargo_toml = std::fs::read_to_string(work.path().join("mine/Cargo.toml")).expect("read");
    let canonical = sdk.canonicalize().expect("sdk");
    assert!(
        cargo_toml.contains(&format!("{:?}", canonical)),
        "{cargo_toml}"
    );

    // Building a directory that is not a crate says so.
    let out = run({
        let mut cmd = patchbay(&["plugin", "build"]);
        cmd.current_dir(work.path().join("taken"));
        cmd
    })
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is this a plugin crate?"),
        "{}",
        text(&out.stderr)
    );
}
