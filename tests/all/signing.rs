//! Signed packages: unsigned and untrusted packages refused by default, a
//! package changed after signing refused naming the file (at install, and
//! on disk after install), publisher and digest shown; the bundled plugins
//! signed in the build; the publisher's CLI (keygen, sign) and the
//! operator's (install under a policy that trusts the key).

use crate::spawn::{patchbay_on, run, text};
use base64::Engine as _;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::signing::{Checksums, PackagePolicy, SecretKey};
use patchbay::runtime::package::{Package, PackageError};
use patchbay_tests::plugins::{PROBE, TRAP};
use patchbay_tests::{Harness, TEST_PUBLISHER, operator_call as operator, signed_by};
use serde_json::json;

fn unsigned(package: Package) -> Package {
    Package {
        signature: None,
        ..package
    }
}

async fn refusal(harness: &Harness, package: Package) -> PackageError {
    match harness.services.catalog.install(package).await {
        Ok(installed) => panic!("installed {installed:?}"),
        Err(error) => error,
    }
}

/// Files under the data directory's compiled-artifact cache.
fn cached_artifacts(harness: &Harness) -> usize {
    std::fs::read_dir(harness.dir.path().join("cache"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn unsigned_packages_are_refused_by_default_and_installed_only_where_allowed() {
    let harness = Harness::new();
    let error = refusal(&harness, unsigned(TRAP.package())).await;
    assert!(matches!(error, PackageError::Untrusted(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("not signed")
            && message.contains("patchbay plugin sign")
            && message.contains("packages.allow_unsigned"),
        "{message}"
    );
    assert!(harness.services.catalog.list().expect("list").is_empty());
    assert_eq!(cached_artifacts(&harness), 0, "nothing was compiled");

    let open = Harness::with_policy(OperatorPolicy {
        packages: PackagePolicy {
            allow_unsigned: true,
            ..PackagePolicy::default()
        },
        ..OperatorPolicy::default()
    });
    let package = unsigned(TRAP.package());
    let digest = Checksums::of(&package.manifest_text, &package.wasm).digest();
    let installed = open
        .services
        .catalog
        .install(package)
        .await
        .expect("install");
    assert_eq!(installed.publisher, None);
    assert_eq!(installed.digest, digest);
}

#[tokio::test]
async fn a_package_signed_by_a_publisher_nobody_trusts_is_refused_naming_it() {
    let harness = Harness::new();
    let stranger = SecretKey::from_seed([99; 32]);
    let cases = [
        (
            signed_by(TRAP.package(), &stranger, "Stranger Ltd"),
            "Stranger Ltd",
        ),
        // The trusted publisher's name with another key.
        (
            signed_by(TRAP.package(), &stranger, TEST_PUBLISHER),
            TEST_PUBLISHER,
        ),
    ];
    for (package, name) in cases {
        let error = refusal(&harness, package).await;
        let message = error.to_string();
        assert!(
            matches!(error, PackageError::Untrusted(_))
                && message.contains(name)
                && message.contains(&stranger.public_key().to_string())
                && message.contains("packages.trusted_publishers"),
            "{message}"
        );
    }
    assert_eq!(cached_artifacts(&harness), 0, "nothing was compiled");
}

#[tokio::test]
async fn a_package_changed_after_signing_is_refused_naming_the_file() {
    let harness = Harness::new();
    let package = TRAP.package();
    let cases = [
        (
            Package {
                wasm: PROBE.wasm_bytes(),
                ..package.clone()
            },
            "plugin.wasm does not match its signature",
        ),
        (
            Package {
                manifest_text: format!("{}\n# edited after signing\n", package.manifest_text),
                ..package.clone()
            },
            "plugin.toml does not match its signature",
        ),
        (
            Package {
                manifest_text: package
                    .manifest_text
                    .replacen("version = \"", "version = \"9", 1),
                ..package.clone()
            },
            "the signature belongs to another package",
        ),
        (
            Package {
                signature: package
                    .signature
                    .as_ref()
                    .map(|s| s.replace("format", "formt")),
                ..package.clone()
            },
            "plugin.sig",
        ),
    ];
    for (package, needle) in cases {
        let error = refusal(&harness, package).await;
        assert!(matches!(error, PackageError::Signature(_)), "{error:?}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    assert!(harness.services.catalog.list().expect("list").is_empty());
    assert_eq!(cached_artifacts(&harness), 0, "nothing was compiled");
}

#[tokio::test]
async fn a_package_changed_on_disk_after_install_is_refused_when_loaded() {
    let harness = Harness::new();
    let installed = harness
        .services
        .catalog
        .install(TRAP.package())
        .await
        .expect("install");
    let reference = format!("{}@{}", installed.id, installed.version);
    let harness = harness.reopen();
    let wasm = harness
        .dir
        .path()
        .join("plugins")
        .join(&installed.id)
        .join(&installed.version)
        .join("plugin.wasm");
    std::fs::write(&wasm, PROBE.wasm_bytes()).expect("tamper");
    let error = harness
        .services
        .catalog
        .get(&reference)
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("plugin.wasm does not match its signature"),
        "{error}"
    );
    let error = harness
        .services
        .catalog
        .inspect_package(&reference)
        .expect_err("refused");
    assert!(
        error.to_string().contains(&reference)
            && error.to_string().contains("does not match its signature"),
        "{error}"
    );
}

#[tokio::test]
async fn the_bundled_plugins_are_signed_in_the_build_and_trusted_by_their_binary_only() {
    let harness = Harness::new();
    let installed = harness
        .services
        .catalog
        .install_missing(patchbay::bundled::packages())
        .await
        .expect("bundled install under the default policy");
    assert!(installed.len() >= 4, "{installed:?}");
    for plugin in &installed {
        let publisher = plugin.publisher.as_ref().expect("signed");
        assert_eq!(publisher.name, patchbay::bundled::PUBLISHER);
        assert_eq!(publisher.key, patchbay::bundled::publisher().key);
    }
    // A policy that does not name this build's key does not trust them.
    let hubspot = patchbay::bundled::packages()
        .find(|p| p.manifest_text.contains("id = \"hubspot\""))
        .expect("hubspot is bundled");
    let mut other_policy = PackagePolicy::default();
    other_policy
        .trusted_publishers
        .push(patchbay_tests::test_publisher());
    let manifest =
        patchbay::policy::manifest::Manifest::parse(&hubspot.manifest_text).expect("manifest");
    let publisher = hubspot
        .provenance(&manifest)
        .expect("signature holds")
        .publisher
        .expect("signed");
    assert!(!other_policy.trusts(&publisher));
}

#[tokio::test]
async fn the_api_installs_signed_packages_and_shows_publisher_and_digest() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let body = |package: &Package| {
        json!({
            "manifest": package.manifest_text,
            "component": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
            "signature": package.signature,
        })
    };
    let package = TRAP.package();
    let (status, answer) = operator(
        &api,
        "POST",
        "/v1/plugins",
        Some(body(&unsigned(package.clone()))),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("untrusted-package")),
        "{answer}"
    );
    let tampered = Package {
        wasm: PROBE.wasm_bytes(),
        ..package.clone()
    };
    let (status, answer) = operator(&api, "POST", "/v1/plugins", Some(body(&tampered))).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-signature")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("plugin.wasm does not match its signature")),
        "{answer}"
    );

    let (status, installed) = operator(&api, "POST", "/v1/plugins", Some(body(&package))).await;
    assert_eq!(status, 201, "{installed}");
    let digest = Checksums::of(&package.manifest_text, &package.wasm).digest();
    let key = patchbay_tests::test_publisher_key()
        .public_key()
        .to_string();
    assert_eq!(installed["digest"], digest.as_str());
    assert_eq!(
        installed["publisher"],
        json!({ "name": TEST_PUBLISHER, "key": key })
    );
    let path = format!(
        "/v1/plugins/{}/{}",
        installed["id"].as_str().expect("id"),
        installed["version"].as_str().expect("version")
    );
    let (status, shown) = operator(&api, "GET", &path, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["package"]["digest"], digest.as_str());
    assert_eq!(shown["package"]["publisher"]["name"], TEST_PUBLISHER);
    assert_eq!(
        shown["id"], installed["id"],
        "the manifest's fields are still at the top"
    );
    let (_, listed) = operator(&api, "GET", "/v1/plugins", None).await;
    assert_eq!(listed[0]["publisher"]["key"], key.as_str());
}

#[tokio::test]
async fn a_publisher_makes_a_key_signs_and_an_operator_installs_what_it_trusts() {
    use std::os::unix::fs::PermissionsExt as _;
    let work = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let strict = |args: &[&str]| {
        let mut cmd = patchbay_on(data.path(), args);
        cmd.env_remove("PATCHBAY_ALLOW_UNSIGNED");
        cmd
    };
    let key_file = work.path().join("acme.pem");
    let key_path = key_file.to_str().expect("utf-8");
    let out = run(strict(&["plugin", "keygen", "--out", key_path])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public_key = text(&out.stdout).trim().to_owned();
    assert!(public_key.starts_with("ed25519:"), "{public_key}");
    let mode = std::fs::metadata(&key_file)
        .expect("key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&key_file).expect("pem");
    assert!(
        !text(&out.stdout).contains(pem.lines().nth(1).expect("body")),
        "the secret is not printed"
    );
    // An existing key is never replaced.
    let out = run(strict(&["plugin", "keygen", "--out", key_path])).await;
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&key_file).expect("pem"), pem);

    // An unsigned directory is refused by default.
    let dir = TRAP.write_dir(work.path());
    std::fs::remove_file(dir.join("plugin.sig")).expect("unsign");
    let dir_path = dir.to_str().expect("utf-8");
    let out = run(strict(&["plugin", "install", dir_path])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not signed"),
        "{}",
        text(&out.stderr)
    );

    let out = run(strict(&[
        "plugin",
        "sign",
        dir_path,
        "--key",
        key_path,
        "--publisher",
        "Acme Connectors",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sha256:"),
        "{}",
        text(&out.stdout)
    );
    assert!(dir.join("plugin.sig").exists());

    // Signed, but by a key this operator does not trust yet.
    let out = run(strict(&["plugin", "install", dir_path])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Acme Connectors") && text(&out.stderr).contains(&public_key),
        "{}",
        text(&out.stderr)
    );

    let policy = work.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[packages.trusted_publishers]]\nname = \"Acme Connectors\"\nkey = \"{public_key}\"\n"
        ),
    )
    .expect("policy");
    let policy_path = policy.to_str().expect("utf-8");
    // The key file a publisher would never send: a plugin.sig edited by hand
    // cannot carry the package past the check.
    let wasm = std::fs::read(dir.join("plugin.wasm")).expect("wasm");
    std::fs::write(dir.join("plugin.wasm"), PROBE.wasm_bytes()).expect("tamper");
    let out = run(strict(&[
        "plugin",
        "install",
        dir_path,
        "--policy",
        policy_path,
    ]))
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("plugin.wasm does not match its signature"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.join("plugin.wasm"), wasm).expect("restore");

    let out = run(strict(&[
        "plugin",
        "install",
        dir_path,
        "--policy",
        policy_path,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(strict(&["plugin", "list"])).await;
    assert!(
        text(&out.stdout).contains("\tAcme Connectors"),
        "{}",
        text(&out.stdout)
    );
    let out = run(strict(&["plugin", "inspect", "trap"])).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["package"]["publisher"]["name"], "Acme Connectors");
    assert_eq!(shown["package"]["publisher"]["key"], public_key.as_str());
    assert!(
        shown["package"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
}
