//! The conformance kit (`patchbay plugin test`), run as a vendor runs it:
//! the binary on a plugin directory, offline. HubSpot's own fixtures pass;
//! each kind of mistake a vendor can make fails (or warns) naming it.

use crate::spawn::{patchbay, run, text};
use patchbay_tests::TestPlugin;
use patchbay_tests::plugins::{CALCOM, CX_TRANSFORMS, HUBSPOT, SALESFORCE, STRIPE, ZENDESK};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A copy of the HubSpot plugin directory (manifest, component, fixtures)
/// under `parent`, for a test to break.
fn hubspot_dir(parent: &Path) -> PathBuf {
    package_dir(HUBSPOT, parent)
}

/// A copy of `plugin`'s directory as a vendor has it after building:
/// manifest, component and fixtures.
pub(crate) fn package_dir(plugin: TestPlugin, parent: &Path) -> PathBuf {
    let dir = parent.join(plugin.name);
    let fixtures = dir.join("fixtures");
    std::fs::create_dir_all(&fixtures).expect("mkdir");
    std::fs::write(dir.join("plugin.toml"), plugin.manifest()).expect("manifest");
    std::fs::write(dir.join("plugin.wasm"), plugin.wasm_bytes()).expect("wasm");
    let shipped = Path::new(plugin.dir).join("fixtures");
    for entry in std::fs::read_dir(shipped).expect("the plugin ships fixtures") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, fixtures.join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

/// `plugin test DIR --format json`: whether it exited 0, and the report.
async fn kit(dir: &Path) -> (bool, Value) {
    let out = run(patchbay(&[
        "plugin",
        "test",
        dir.to_str().expect("utf-8"),
        "--format",
        "json",
    ]))
    .await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.success(), report["passed"] == true, "{report}");
    (out.status.success(), report)
}

/// The checks of `report` with `status`, each as "name: details".
fn with_status(report: &Value, status: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| format!("{}: {}", c["name"].as_str().unwrap_or(""), c["details"]))
        .collect()
}

fn edit_fixture(dir: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("fixtures").join(file);
    let mut fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut fixture);
    std::fs::write(&path, fixture.to_string()).expect("write");
}

#[tokio::test]
async fn hubspot_passes_its_fixtures_and_every_generated_error_path() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(work.path());
    let (passed, report) = kit(&dir).await;
    assert!(passed, "{}", with_status(&report, "fail").join("\n"));
    assert!(with_status(&report, "warn").is_empty(), "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for path in [
        "[401 -> upstream-unauthorized]",
        "[404 -> not-found]",
        "[429 -> rate-limited]",
        "[500 -> upstream]",
        "[malformed-json -> upstream]",
        "[timeout -> timeout]",
    ] {
        let runs = names.iter().filter(|n| n.ends_with(path)).count();
        // One per successful fixture with a recording (four ship).
        assert_eq!(runs, 4, "{path}: {names:?}");
    }
    assert_eq!(report["plugin"], "hubspot");

    // The text report, for people, says the same.
    let out = run(patchbay(&["plugin", "test", dir.to_str().expect("utf-8")])).await;
    assert!(out.status.success());
    let report = text(&out.stdout);
    assert!(
        report.contains("PASS  find-contact / a caller found by phone"),
        "{report}"
    );
    assert!(report.trim_end().ends_with("0 failed"), "{report}");
}

#[tokio::test]
async fn every_bundled_plugin_passes_the_kit_with_its_own_fixtures() {
    let bundled = [HUBSPOT, STRIPE, CALCOM, SALESFORCE, ZENDESK, CX_TRANSFORMS];
    // Every crate under plugins/ is one of them: a new one needs fixtures too.
    let crates = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins"))
        .expect("plugins/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().join("plugin.toml").exists())
        })
        .count();
    assert_eq!(crates, bundled.len());
    let work = tempfile::tempdir().expect("tempdir");
    for plugin in bundled {
        let (passed, report) = kit(&package_dir(plugin, work.path())).await;
        assert!(
            passed,
            "{}: {}",
            plugin.name,
            with_status(&report, "fail").join("\n")
        );
        assert!(
            with_status(&report, "warn").is_empty(),
            "{}: {}",
            plugin.name,
            with_status(&report, "warn").join("\n")
        );
    }
}

#[tokio::test]
async fn an_output_other_than_the_fixtures_fails_naming_the_field() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(work.path());
    edit_fixture(&dir, "find-contact-by-phone.json", |f| {
        f["output"]["first_name"] = json!("Augusta");
    });
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("/first_name")
            && failed[0].contains("Augusta")
            && failed[0].contains("Ada"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_request_the_recording_lacks_fails_naming_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(work.path());
    edit_fixture(&dir, "log-call.json", |f| {
        f["exchanges"][0]["request"]["url"] = json!("https://api.hubapi.com/crm/v3/objects/notes");
    });
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail").join("\n");
    assert!(
        failed.contains("sent a request the recording does not have: POST https://api.hubapi.com/crm/v3/objects/calls"),
        "{failed}"
    );
}

#[tokio::test]
async fn an_error_mapped_to_another_variant_fails_naming_both() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(work.path());
    // Say a 404 should be an upstream error: the plugin answers not-found.
    edit_fixture(&dir, "log-call.json", |f| {
        f["error_paths"] = json!({ "404": "upstream", "timeout": "skip" });
    });
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("[404 -> upstream]")
            && failed[0].contains("expected the error upstream, got not-found"),
        "{failed:?}"
    );
    let names = report["checks"].to_string();
    assert!(
        !names.contains("log-call / an inbound call logged on the contact [timeout"),
        "skipped"
    );
}

#[tokio::test]
async fn package_mistakes_and_unused_destinations_are_reported() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(work.path());
    let manifest = HUBSPOT.manifest();

    // A declared destination nothing uses: a warning, not a failure.
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace(
            "  \"POST {{base_url}}/crm/v3/objects/calls\",",
            "  \"POST {{base_url}}/crm/v3/objects/calls\",\n  \"DELETE {{base_url}}/crm/v3/objects/deals\",",
        ),
    )
    .expect("write");
    let (passed, report) = kit(&dir).await;
    assert!(passed, "{report}");
    let warned = with_status(&report, "warn");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("DELETE {{base_url}}/crm/v3/objects/deals"),
        "{warned:?}"
    );

    // A request no declared destination allows: refused by the host, and
    // the case fails naming it.
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("  \"POST {{base_url}}/crm/v3/objects/calls\",\n", ""),
    )
    .expect("write");
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail");
    assert!(
        failed.iter().any(
            |f| f.starts_with("log-call / an inbound call logged on the contact:")
                && f.contains("no declared destination allows")
                && f.contains("crm/v3/objects/calls")
        ),
        "{failed:?}"
    );

    // An operation declared but not exported fails the package check.
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "{manifest}\n[[operations]]\nname = \"merge-contacts\"\nkind = \"action\"\ninput_schema = '{{\"type\": \"object\"}}'\noutput_schema = '{{\"type\": \"object\"}}'\n"
        ),
    )
    .expect("write");
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail").join("\n");
    assert!(
        failed.contains("declared in plugin.toml but not implemented: merge-contacts"),
        "{failed}"
    );

    // A manifest that does not parse, and a fixture that is not one.
    std::fs::write(dir.join("plugin.toml"), "id = ").expect("write");
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    assert!(
        with_status(&report, "fail")[0].contains("manifest and schemas are valid"),
        "{report}"
    );
    std::fs::write(dir.join("plugin.toml"), &manifest).expect("write");
    std::fs::write(
        dir.join("fixtures/broken.json"),
        r#"{"operation": "find-contact"}"#,
    )
    .expect("write");
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    let failed = with_status(&report, "fail").join("\n");
    assert!(
        failed.contains("fixture broken.json")
            && failed.contains("exactly one of `output` and `error`"),
        "{failed}"
    );

    // No component: told to build it; no fixtures: a failure that says so.
    std::fs::remove_file(dir.join("plugin.wasm")).expect("rm");
    let out = run(patchbay(&["plugin", "test", dir.to_str().expect("utf-8")])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("build the plugin first"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.join("plugin.wasm"), HUBSPOT.wasm_bytes()).expect("wasm");
    std::fs::remove_dir_all(dir.join("fixtures")).expect("rm");
    let (passed, report) = kit(&dir).await;
    assert!(!passed);
    assert!(
        with_status(&report, "fail")
            .join("\n")
            .contains("no fixtures"),
        "{report}"
    );
}
