//! Installing plugins: everything a package can get wrong is refused with a
//! message naming the field or import at fault, and nothing is half-installed.

use patchbay::runtime::package::{Package, PackageError};
use patchbay_tests::{Harness, plugins::HUBSPOT, plugins::PROBE, signed};

async fn refuse(harness: &Harness, package: Package) -> String {
    let err = harness
        .services
        .catalog
        .install(package)
        .await
        .expect_err("must be refused");
    assert!(
        harness.services.catalog.list().expect("list").is_empty(),
        "nothing installed after: {err}"
    );
    err.to_string()
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn installs_lists_inspects_and_removes() {
    let harness = Harness::new();
    let installed = harness
        .services
        .catalog
        .install(HUBSPOT.package())
        .await
        .expect("install");
    assert_eq!(
        (installed.id.as_str(), installed.version.as_str()),
        ("hubspot", "0.1.0")
    );
    let list = harness.services.catalog.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].operations,
        ["find-contact", "upsert-contact", "log-call"]
    );
    let manifest = harness
        .services
        .catalog
        .inspect("hubspot")
        .expect("inspect");
    assert_eq!(manifest.operations[0].name, "find-contact");
    harness
        .services
        .catalog
        .remove("hubspot@0.1.0")
        .expect("remove");
    assert!(harness.services.catalog.list().expect("list").is_empty());
    assert!(harness.services.catalog.get("hubspot").await.is_err());
}

#[tokio::test]
async fn versions_live_side_by_side() {
    let harness = Harness::new();
    harness
        .services
        .catalog
        .install(HUBSPOT.package())
        .await
        .expect("0.1.0");
    let newer =
        HUBSPOT.package_with(|m| m.replacen("version = \"0.1.0\"", "version = \"0.2.0\"", 1));
    harness
        .services
        .catalog
        .install(newer)
        .await
        .expect("0.2.0");
    let versions: Vec<String> = harness
        .services
        .catalog
        .list()
        .expect("list")
        .into_iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, ["0.2.0", "0.1.0"]);
    assert_eq!(
        harness
            .services
            .catalog
            .get("hubspot")
            .await
            .expect("newest")
            .manifest
            .version
            .to_string(),
        "0.2.0"
    );
    assert_eq!(
        harness
            .services
            .catalog
            .get("hubspot@0.1.0")
            .await
            .expect("pinned")
            .manifest
            .version
            .to_string(),
        "0.1.0"
    );
    harness
        .services
        .catalog
        .remove("hubspot@0.2.0")
        .expect("remove newer");
    assert_eq!(
        harness
            .services
            .catalog
            .get("hubspot")
            .await
            .expect("older")
            .manifest
            .version
            .to_string(),
        "0.1.0"
    );
}

#[tokio::test]
async fn installing_the_same_version_twice_is_refused() {
    let harness = Harness::new();
    harness
        .services
        .catalog
        .install(HUBSPOT.package())
        .await
        .expect("first");
    let err = harness
        .services
        .catalog
        .install(HUBSPOT.package())
        .await
        .expect_err("second");
    assert!(
        matches!(err, PackageError::AlreadyInstalled { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_bytes_that_are_not_a_component() {
    let harness = Harness::new();
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let message = refuse(
        &harness,
        signed(Package {
            manifest_text: HUBSPOT.manifest(),
            wasm: core_module,
            signature: None,
        }),
    )
    .await;
    assert_mentions(&message, &["core WebAssembly module", "wasm32-wasip2"]);
    let message = refuse(
        &harness,
        signed(Package {
            manifest_text: HUBSPOT.manifest(),
            wasm: b"MZ\x90\0".to_vec(),
            signature: None,
        }),
    )
    .await;
    assert_mentions(&message, &["not WebAssembly"]);
    let mut truncated = HUBSPOT.wasm_bytes();
    truncated.truncate(truncated.len() / 2);
    let message = refuse(
        &harness,
        signed(Package {
            manifest_text: HUBSPOT.manifest(),
            wasm: truncated,
            signature: None,
        }),
    )
    .await;
    assert_mentions(&message, &["not a valid component"]);
}

/// (case, how to break the manifest, what the error must mention)
type ManifestCase = (
    &'static str,
    Box<dyn Fn(String) -> String>,
    Vec<&'static str>,
);

#[tokio::test]
async fn refuses_manifest_mistakes_naming_the_field() {
    let harness = Harness::new();
    let cases: Vec<ManifestCase> = vec![
        (
            "bad semver",
            Box::new(|m| m.replacen("version = \"0.1.0\"", "version = \"1.0\"", 1)),
            vec!["`version`", "semver"],
        ),
        (
            "unsupported contract",
            Box::new(|m| m.replacen("contract = \"0.1.0\"", "contract = \"2.0.0\"", 1)),
            vec!["`contract`", "not supported"],
        ),
        (
            "bad id",
            Box::new(|m| m.replacen("id = \"hubspot\"", "id = \"Hub Spot\"", 1)),
            vec!["`id`"],
        ),
        (
            "unknown capability kind",
            Box::new(|m| format!("{m}\n[capabilities.sockets]\nallow = true\n")),
            vec!["sockets"],
        ),
        (
            "unknown operation kind",
            Box::new(|m| m.replacen("kind = \"lookup\"", "kind = \"query\"", 1)),
            vec!["query"],
        ),
        (
            "schema that is not JSON Schema",
            Box::new(|m| {
                m.replacen(
                    "\"type\": \"object\",\n  \"properties\": {\n    \"phone\"",
                    "\"type\": \"objekt\",\n  \"properties\": {\n    \"phone\"",
                    1,
                )
            }),
            vec!["operations[0].input_schema", "JSON Schema"],
        ),
        (
            "schema that is not JSON",
            Box::new(|m| m.replacen("input_schema = '''\n{", "input_schema = '''\n{{", 1)),
            vec!["operations[0].input_schema", "not valid JSON"],
        ),
        (
            "malformed destination",
            Box::new(|m| {
                m.replacen(
                    "\"GET {{base_url}}/crm/v3/objects/contacts\"",
                    "\"GET api.hubapi.com/crm\"",
                    1,
                )
            }),
            vec![
                "capabilities.http.destinations[0]",
                "api.hubapi.com/crm",
                "scheme",
            ],
        ),
        (
            "unknown credential kind",
            Box::new(|m| m.replacen("kind = \"bearer\"", "kind = \"kerberos\"", 1)),
            vec!["kerberos"],
        ),
        (
            "memory ask out of range",
            Box::new(|m| m.replacen("memory_mb = 16", "memory_mb = 0", 1)),
            vec!["limits.memory_mb"],
        ),
        (
            "operation declared but not implemented",
            Box::new(|m| m.replacen("name = \"find-contact\"", "name = \"find-deal\"", 1)),
            vec![
                "declared in plugin.toml but not implemented: find-deal",
                "implemented but not declared in plugin.toml: find-contact",
            ],
        ),
        (
            "not TOML",
            Box::new(|m| format!("{m}\n[[[broken")),
            vec!["not valid TOML"],
        ),
    ];
    for (case, edit, needles) in cases {
        let message = refuse(&harness, HUBSPOT.package_with(edit)).await;
        for needle in needles {
            assert!(
                message.contains(needle),
                "{case}: {message:?} should mention {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_compiled_artifact_is_cached_and_reused() {
    let harness = Harness::new();
    let cache = harness.dir.path().join("cache");
    harness
        .services
        .catalog
        .install(PROBE.package())
        .await
        .expect("install");
    let artifacts = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        std::fs::read_dir(&cache)
            .expect("cache dir")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path(),
                    e.metadata().expect("meta").modified().expect("mtime"),
                )
            })
            .collect()
    };
    let before = artifacts();
    assert_eq!(before.len(), 1);
    let hash = patchbay::runtime::cache::content_hash(&PROBE.wasm_bytes());
    let name = before[0]
        .0
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&hash) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A fresh process-equivalent (new services on the same directory) loads the artifact
    // instead of compiling again.
    let harness = harness.reopen();
    let plugin = harness.services.catalog.get("probe").await.expect("load");
    assert_eq!(plugin.content_hash, hash);
    assert_eq!(artifacts(), before, "no recompilation");
}
