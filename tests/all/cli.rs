//! The `patchbay` binary's local commands (`plugin`, `invoke`, `secrets`),
//! run as real processes on a data directory.

use crate::spawn::{patchbay_on as patchbay, run, text};
use patchbay::bundled::BUNDLED;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The bundled HubSpot plugin written out as a plugin directory.
fn hubspot_dir(parent: &Path) -> std::path::PathBuf {
    let (manifest, wasm, _) = BUNDLED
        .iter()
        .find(|(m, _, _)| m.contains("id = \"hubspot\""))
        .expect("hubspot is bundled");
    let dir = parent.join("hubspot");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.toml"), manifest).expect("manifest");
    std::fs::write(dir.join("plugin.wasm"), wasm).expect("wasm");
    dir
}

#[tokio::test]
async fn help_lists_the_commands() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = run(patchbay(data.path(), &["--help"])).await;
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["serve", "plugin", "invoke"] {
        assert!(help.contains(command), "{help}");
    }
}

#[tokio::test]
async fn installs_lists_inspects_and_removes_a_plugin_directory() {
    let data = tempfile::tempdir().expect("tempdir");
    let pkg = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(pkg.path());
    let dir = dir.to_str().expect("utf-8 path");

    let out = run(patchbay(data.path(), &["plugin", "install", dir])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "installed hubspot@0.1.0");

    let out = run(patchbay(data.path(), &["plugin", "list"])).await;
    assert!(
        text(&out.stdout).starts_with("hubspot@0.1.0\tHubSpot"),
        "{}",
        text(&out.stdout)
    );

    let out = run(patchbay(data.path(), &["plugin", "inspect", "hubspot"])).await;
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    assert_eq!(manifest["operations"][0]["name"], "find-contact");

    let out = run(patchbay(data.path(), &["plugin", "install", dir])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already installed"),
        "{}",
        text(&out.stderr)
    );

    let out = run(patchbay(
        data.path(),
        &["plugin", "remove", "hubspot@0.1.0"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(patchbay(data.path(), &["plugin", "list"])).await;
    assert_eq!(text(&out.stdout).trim(), "no plugins installed");
}

#[tokio::test]
async fn a_bad_package_fails_with_the_reason_on_stderr() {
    let data = tempfile::tempdir().expect("tempdir");
    let pkg = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(pkg.path());
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).expect("read");
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"one\""),
    )
    .expect("write");
    let out = run(patchbay(
        data.path(),
        &["plugin", "install", dir.to_str().expect("utf-8")],
    ))
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("`version`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn invokes_a_bundled_plugin_once_against_a_local_upstream() {
    let data = tempfile::tempdir().expect("tempdir");
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .and(header("authorization", "Bearer pat-cli-0123456789"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{ "id": "7", "properties": { "firstname": "Grace" } }]
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    let base = format!("base_url={}", upstream.uri());
    let args = [
        "invoke",
        "hubspot",
        "find-contact",
        "--input",
        r#"{"phone":"+1555"}"#,
        "--config",
        &base,
        "--credential",
        "private_app_token=HUBSPOT_TOKEN",
        "--allow-cidr",
        "127.0.0.1/32",
    ];
    let mut cmd = patchbay(data.path(), &args);
    cmd.env("HUBSPOT_TOKEN", "pat-cli-0123456789");
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let output: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        output,
        json!({ "id": "7", "source": "hubspot", "first_name": "Grace" })
    );
}

#[tokio::test]
async fn invokes_straight_from_a_plugin_directory_without_installing() {
    let data = tempfile::tempdir().expect("tempdir");
    let pkg = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(pkg.path());
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).expect("read");
    // A version that is not bundled, to prove the directory itself is what runs.
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.9.0\""),
    )
    .expect("write");
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": [] })))
        .expect(1)
        .mount(&upstream)
        .await;
    let base = format!("base_url={}", upstream.uri());
    let dir = dir.to_str().expect("utf-8");
    let args = [
        "invoke",
        dir,
        "find-contact",
        "--input",
        r#"{"email":"a@b.co"}"#,
        "--config",
        &base,
        "--credential",
        "private_app_token=HUBSPOT_TOKEN",
        "--allow-cidr",
        "127.0.0.1/32",
    ];
    let mut cmd = patchbay(data.path(), &args);
    cmd.env("HUBSPOT_TOKEN", "pat-cli-0123456789");
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("pat-cli-0123456789"));
    assert!(
        text(&out.stderr).contains("not found: no HubSpot contact matches"),
        "{}",
        text(&out.stderr)
    );
    let out = run(patchbay(data.path(), &["plugin", "list"])).await;
    assert_eq!(
        text(&out.stdout).trim(),
        "no plugins installed",
        "invoking a directory installs nothing"
    );
}

#[tokio::test]
async fn a_loopback_upstream_is_refused_unless_allowed() {
    let data = tempfile::tempdir().expect("tempdir");
    let upstream = MockServer::start().await;
    let base = format!("base_url={}", upstream.uri());
    let args = [
        "invoke",
        "hubspot",
        "find-contact",
        "--input",
        r#"{"phone":"+1555"}"#,
        "--config",
        &base,
    ];
    let out = run(patchbay(data.path(), &args)).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("access denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        upstream
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn invoke_reports_bad_input_and_plugin_errors_with_a_failing_exit() {
    let data = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 3] = [
        (
            &["invoke", "hubspot", "find-contact", "--input", "{not json"],
            "--input is not valid JSON",
        ),
        (
            &[
                "invoke",
                "hubspot",
                "find-contact",
                "--input",
                r#"{"phone": 5}"#,
            ],
            "does not match the operation's schema",
        ),
        (
            &["invoke", "no-such-plugin", "op"],
            "no-such-plugin is not installed",
        ),
    ];
    for (args, expected) in cases {
        let out = run(patchbay(data.path(), args)).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn serve_answers_healthz_installs_plugins_and_keeps_a_private_operator_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::tempdir().expect("tempdir");
    let extra = tempfile::tempdir().expect("tempdir");
    let dir = hubspot_dir(extra.path());
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).expect("read");
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.9.0\""),
    )
    .expect("write");
    let plugins_dir = extra.path().to_str().expect("utf-8");
    let mut child = patchbay(
        data.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--plugins-dir",
            plugins_dir,
        ],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let address = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("serve printed its address before exiting")
                .expect("read");
            if let Some(rest) = line.strip_prefix("patchbay listening on http://") {
                return rest.trim().to_owned();
            }
        }
    })
    .await
    .expect("join");

    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    })
    .await
    .expect("join");
    let _ = child.kill();
    let _ = child.wait();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
    let token = data.path().join("operator-token");
    assert_eq!(
        std::fs::metadata(&token)
            .expect("token file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        data.path()
            .join("plugins/hubspot/0.1.0/plugin.wasm")
            .exists(),
        "bundled plugin installed on start"
    );
    assert!(
        data.path()
            .join("plugins/hubspot/0.1.0/plugin.sig")
            .exists(),
        "with its signature"
    );
}

#[tokio::test]
async fn a_credential_must_come_from_a_set_environment_variable() {
    let data = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "private_app_token=PATCHBAY_TEST_UNSET_VAR",
            "PATCHBAY_TEST_UNSET_VAR is not set",
        ),
        ("no_such=HOME", "declares no such credential"),
        ("private_app_token", "expected NAME=ENV_VAR"),
    ];
    for (flag, needle) in cases {
        let args = [
            "invoke",
            "hubspot",
            "find-contact",
            "--input",
            r#"{"phone":"+1555"}"#,
            "--credential",
            flag,
        ];
        let mut cmd = patchbay(data.path(), &args);
        cmd.env_remove("PATCHBAY_TEST_UNSET_VAR");
        let out = run(cmd).await;
        assert!(!out.status.success(), "{flag}");
        assert!(
            text(&out.stderr).contains(needle),
            "{flag}: {}",
            text(&out.stderr)
        );
    }
}

/// `invoke hubspot find-contact` against `upstream`, with the stored
/// credential (and first storing `token`'s value, if given).
fn hubspot_invoke(data: &Path, upstream: &MockServer, token: Option<&str>) -> Command {
    let base = format!("base_url={}", upstream.uri());
    let mut args = vec![
        "invoke",
        "hubspot",
        "find-contact",
        "--input",
        r#"{"phone":"+1555"}"#,
        "--config",
        &base,
        "--allow-cidr",
        "127.0.0.1/32",
    ];
    if token.is_some() {
        args.extend(["--credential", "private_app_token=HUBSPOT_TOKEN"]);
    }
    let mut cmd = patchbay(data, &args);
    cmd.env_remove("PATCHBAY_MASTER_KEY");
    if let Some(token) = token {
        cmd.env("HUBSPOT_TOKEN", token);
    }
    cmd
}

async fn upstream_expecting_bearer(token: &str) -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{ "id": "7", "properties": { "firstname": "Grace" } }]
        })))
        .mount(&upstream)
        .await;
    upstream
}

/// A data directory holding `token` as HubSpot's credential (stored by a
/// first invocation), and an upstream that wants exactly it.
async fn with_stored_hubspot_token(token: &str) -> (tempfile::TempDir, MockServer) {
    let data = tempfile::tempdir().expect("tempdir");
    let upstream = upstream_expecting_bearer(token).await;
    let out = run(hubspot_invoke(data.path(), &upstream, Some(token))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    (data, upstream)
}

#[tokio::test]
async fn rotate_key_reseals_every_credential_under_a_new_private_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let (data, upstream) = with_stored_hubspot_token("pat-rotate-0123456789").await;
    let key_file = data.path().join("master.key");
    let old_key = std::fs::read_to_string(&key_file).expect("key");

    let mut rotate = patchbay(data.path(), &["secrets", "rotate-key"]);
    rotate.env_remove("PATCHBAY_MASTER_KEY");
    let out = run(rotate).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("re-sealed 1 credential"),
        "{}",
        text(&out.stdout)
    );
    let new_key = std::fs::read_to_string(&key_file).expect("key");
    assert_ne!(old_key, new_key);
    assert_eq!(
        std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!data.path().join("master.key.next").exists());

    // The stored credential opens under the new key and still reaches the upstream.
    let out = run(hubspot_invoke(data.path(), &upstream, None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // And not under the old one.
    let mut old = hubspot_invoke(data.path(), &upstream, None);
    old.env("PATCHBAY_MASTER_KEY", old_key.trim());
    let out = run(old).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another master key"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_interrupted_rotation_stops_start_up_until_it_is_finished() {
    let (data, upstream) = with_stored_hubspot_token("pat-interrupted-42").await;
    // As if a rotation died right after writing its new key.
    let (_, next_key) = patchbay::egress::credentials::seal::MasterKey::generate().expect("key");
    std::fs::write(data.path().join("master.key.next"), &next_key).expect("write");

    let out = run(hubspot_invoke(data.path(), &upstream, None)).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rotate-key") && text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    let mut rotate = patchbay(data.path(), &["secrets", "rotate-key"]);
    rotate.env_remove("PATCHBAY_MASTER_KEY");
    let out = run(rotate).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(data.path().join("master.key")).expect("key"),
        next_key,
        "the rotation finished with the key it had started with"
    );
    let out = run(hubspot_invoke(data.path(), &upstream, None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn rotating_a_key_kept_in_the_environment_needs_the_new_key_named() {
    let data = tempfile::tempdir().expect("tempdir");
    let (_, current) = patchbay::egress::credentials::seal::MasterKey::generate().expect("key");
    let mut cmd = patchbay(data.path(), &["secrets", "rotate-key"]);
    cmd.env("PATCHBAY_MASTER_KEY", &current);
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--new-key-env"),
        "{}",
        text(&out.stderr)
    );

    let (_, next) = patchbay::egress::credentials::seal::MasterKey::generate().expect("key");
    let mut cmd = patchbay(
        data.path(),
        &["secrets", "rotate-key", "--new-key-env", "NEXT_KEY"],
    );
    cmd.env("PATCHBAY_MASTER_KEY", &current)
        .env("NEXT_KEY", &next);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("now set PATCHBAY_MASTER_KEY"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !data.path().join("master.key").exists(),
        "no key file is written"
    );
}
