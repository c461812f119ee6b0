//! The real binary as separate processes: `patchbay serve` killed with
//! SIGKILL and restarted loses nothing it acknowledged, and the CLI's
//! workspace and connection commands drive a running server.

use crate::spawn::{patchbay, run, stderr, stdout_json};
use patchbay_tests::{
    OPERATOR_TOKEN, PROBE_BEARER_CREDENTIAL, api_call, operator_call as operator, plugins::PROBE,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use wiremock::matchers::{header, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A `patchbay serve` process; killed with SIGKILL when dropped.
struct Server {
    child: Child,
    base: String,
    /// Everything it writes to stderr (its logs, at trace level for Patchbay).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Start the server on `data` with the plugin packages under `plugins`,
    /// and wait until it listens.
    async fn start(data: &Path, plugins: &Path) -> Self {
        let mut child = patchbay(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-cidr",
            "127.0.0.1/32",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins-dir")
        .arg(plugins)
        .env("PATCHBAY_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("RUST_LOG", "warn,patchbay=trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchbay serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        let base = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let keep = move |line: &str| {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(line);
                log.push('\n');
            };
            let address = loop {
                let line = lines
                    .next()
                    .expect("serve printed its address before exiting")
                    .expect("read");
                keep(&line);
                if let Some(rest) = line.strip_prefix("patchbay listening on ") {
                    break rest.trim().to_owned();
                }
            };
            // Keep draining, so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| keep(&l)));
            address
        })
        .await
        .expect("join");
        Self { child, base, log }
    }

    /// SIGTERM, as a process supervisor stops it; waits (at most 30 s) for
    /// it to exit. Its exit status and what it logged.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (status, log)
    }

    /// SIGKILL: no shutdown path runs. Returns what it logged.
    fn kill(mut self) -> String {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The probe package, declaring a bearer credential for its upstream,
/// written under `parent`.
fn probe_packages(parent: &Path) -> PathBuf {
    let dir = parent.join("probe");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let manifest = format!("{}{PROBE_BEARER_CREDENTIAL}", PROBE.manifest());
    std::fs::write(dir.join("plugin.toml"), manifest).expect("manifest");
    std::fs::write(dir.join("plugin.wasm"), PROBE.wasm_bytes()).expect("wasm");
    parent.to_path_buf()
}

async fn invoke(base: &str, token: &str, op: &str, input: Value) -> (u16, Value) {
    api_call(
        "POST",
        base,
        &format!("/v1/workspaces/acme/connections/crm/operations/{op}"),
        Some(token),
        Some(json!({ "input": input })),
    )
    .await
}

#[tokio::test]
async fn everything_acknowledged_survives_kill_9() {
    let upstream = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .and(header("authorization", "Bearer durable-bearer-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let plugins = probe_packages(packages.path());

    let server = Server::start(data.path(), &plugins).await;
    let api = server.base.clone();
    let (status, _) = patchbay_tests::create_workspace(&api, "acme").await;
    assert_eq!(status, 201);
    let (status, body) = operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "config": { "upstream": upstream.uri() }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = operator(
        &api,
        "PUT",
        "/v1/workspaces/acme/connections/crm/credentials/token",
        Some(json!({ "kind": "bearer", "token": "durable-bearer-1" })),
    )
    .await;
    assert_eq!(status, 204);
    let (status, issued) =
        operator(&api, "POST", "/v1/workspaces/acme/tokens", Some(json!({}))).await;
    assert_eq!(status, 201);
    let token = issued["token"].as_str().expect("token").to_owned();
    let (status, body) = invoke(
        &api,
        &token,
        "kv",
        json!([
            { "op": "set", "key": "caller:1", "value": "durable" },
            { "op": "increment", "key": "calls", "delta": 3 }
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Acknowledged: now the process dies without any chance to flush.
    let mut logged = server.kill();

    let server = Server::start(data.path(), &plugins).await;
    let api = server.base.clone();
    let (_, workspaces) = operator(&api, "GET", "/v1/workspaces", None).await;
    assert_eq!(workspaces[0]["id"], "acme", "{workspaces}");
    let (status, connection) = api_call(
        "GET",
        &api,
        "/v1/workspaces/acme/connections/crm",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "the workspace token survived: {connection}");
    assert_eq!(connection["config"]["upstream"], upstream.uri());
    assert_eq!(connection["credentials"][0]["set"], true, "{connection}");
    let (status, kv) = invoke(
        &api,
        &token,
        "kv",
        json!([{ "op": "get", "key": "caller:1" }, { "op": "get", "key": "calls" }]),
    )
    .await;
    assert_eq!(status, 200, "{kv}");
    assert_eq!(kv["output"][0]["ok"], "durable", "{kv}");
    assert_eq!(kv["output"][1]["ok"], "3", "{kv}");
    // The credential opens after the restart and is sent.
    let (status, fetched) = invoke(
        &api,
        &token,
        "fetch",
        json!({ "url": format!("{}/allowed/x", upstream.uri()) }),
    )
    .await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["output"]["status"], 200, "{fetched}");
    logged.push_str(&server.kill());
    assert!(
        logged.contains("patchbay listening"),
        "the logs were captured"
    );
    for secret in ["durable-bearer-1", &token[4..]] {
        assert!(!logged.contains(secret), "{secret:?} in the server's logs");
    }
}

/// Run the CLI with `args` (split at spaces) against `server` with `token`.
async fn cli(server: &Server, token: &str, args: &str) -> Output {
    cli_with(server, token, args, &[]).await
}

/// [`cli`] with extra environment variables.
async fn cli_with(server: &Server, token: &str, args: &str, env: &[(&str, &str)]) -> Output {
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut cmd = patchbay(&args);
    cmd.envs(env.iter().copied())
        .env("PATCHBAY_SERVER", &server.base)
        .env("PATCHBAY_TOKEN", token);
    run(cmd).await
}

#[tokio::test]
async fn the_cli_drives_workspaces_and_connections_on_a_running_server() {
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), &probe_packages(packages.path())).await;
    let op = OPERATOR_TOKEN;

    let created = stdout_json(&cli(&server, op, "workspace create acme").await);
    assert_eq!(created["id"], "acme");
    let listed = stdout_json(&cli(&server, op, "workspace list").await);
    assert_eq!(listed[0]["id"], "acme");
    let issued = stdout_json(&cli(&server, op, "workspace token issue acme --label cli").await);
    let token = issued["token"].as_str().expect("token").to_owned();

    // The tenant's own token drives its connections.
    let set =
        "connection set acme crm --plugin probe --config upstream=http://127.0.0.1:9 --approve-all";
    let saved = stdout_json(&cli(&server, &token, set).await);
    // Its credential is not set yet, and the status says so.
    assert_eq!(
        (saved["version"].as_str(), saved["status"].as_str()),
        (Some("1.0.0"), Some("needs-attention"))
    );
    assert!(
        saved["reason"]
            .as_str()
            .is_some_and(|r| r.contains("credential token is not set")),
        "{saved}"
    );
    let shown = stdout_json(&cli(&server, &token, "connection get acme crm").await);
    assert_eq!(shown["config"]["upstream"], "http://127.0.0.1:9");
    assert_eq!(shown["credentials"][0]["set"], false);

    // Credentials come from the environment, typed by what the plugin declares.
    let secret = "cli-bearer-0123456789";
    let set_token = "connection credential set acme crm token --from-env PB_SECRET";
    let out = cli_with(&server, &token, set_token, &[("PB_SECRET", secret)]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(secret), "{printed}");
    let shown = stdout_json(&cli(&server, &token, "connection get acme crm").await);
    assert_eq!(shown["credentials"][0]["set"], true, "{shown}");
    assert_eq!(shown["status"], "ok", "{shown}");
    assert!(!shown.to_string().contains(secret));
    let basic = r#"{"kind":"basic","username":"u","password":"p-1"}"#;
    let wrong = stderr(&cli_with(&server, &token, set_token, &[("PB_SECRET", basic)]).await);
    assert!(wrong.contains("is a basic, not a bearer"), "{wrong}");
    let unset = stderr(&cli(&server, &token, set_token).await);
    assert!(
        unset.contains("PB_SECRET: the variable is not set"),
        "{unset}"
    );
    let removed = cli(
        &server,
        &token,
        "connection credential remove acme crm token",
    )
    .await;
    assert!(removed.status.success());
    let shown = stdout_json(&cli(&server, &token, "connection get acme crm").await);
    assert_eq!(shown["credentials"][0]["set"], false);
    let all = stdout_json(&cli(&server, &token, "connection list acme").await);
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    let ran = stdout_json(
        &cli(
            &server,
            &token,
            "connection invoke acme crm context --input {}",
        )
        .await,
    );
    assert_eq!(ran["output"]["workspace"], "acme", "{ran}");

    // Failures exit non-zero with the API's status, code and details.
    let bad = stderr(
        &cli(
            &server,
            &token,
            r#"connection set acme crm-2 --plugin probe --config-json {"upstream":7}"#,
        )
        .await,
    );
    assert!(
        bad.contains("422 invalid-config") && bad.contains("/upstream"),
        "{bad}"
    );
    let refused = stderr(&cli(&server, &token, "workspace list").await);
    assert!(refused.contains("403 operator-only"), "{refused}");
    let hidden = stderr(&cli(&server, &token, "connection list other").await);
    assert!(hidden.contains("404"), "{hidden}");
    let malformed = stderr(
        &cli(
            &server,
            &token,
            "connection invoke acme crm context --input {",
        )
        .await,
    );
    assert!(
        malformed.contains("--input is not valid JSON"),
        "{malformed}"
    );

    let tokens = stdout_json(&cli(&server, op, "workspace token list acme").await);
    let id = tokens[0]["id"].as_str().expect("id").to_owned();
    assert!(
        cli(&server, op, &format!("workspace token revoke acme {id}"))
            .await
            .status
            .success()
    );
    let revoked = stderr(&cli(&server, &token, "connection list acme").await);
    assert!(revoked.contains("401"), "{revoked}");

    assert!(
        cli(&server, op, "connection delete acme crm")
            .await
            .status
            .success()
    );
    assert!(
        cli(&server, op, "workspace delete acme")
            .await
            .status
            .success()
    );
    let listed = stdout_json(&cli(&server, op, "workspace list").await);
    assert_eq!(listed, json!([]));
}

/// `patchbay serve` with `args` and `env` on a fresh data directory, stderr
/// piped: its stderr lines up to and including the one that names the
/// address it listens on (or all of them, if it exits first), and the child.
async fn serve_until_listening(
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<String>, Option<Child>) {
    let mut child = patchbay(&["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchbay serve");
    let stderr = child.stderr.take().expect("stderr");
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.contains("patchbay listening on");
            out.push(line);
            if done {
                break;
            }
        }
        out
    })
    .await
    .expect("join");
    let listening = lines
        .last()
        .is_some_and(|l| l.contains("patchbay listening on"));
    if listening {
        (lines, Some(child))
    } else {
        let _ = child.wait();
        (lines, None)
    }
}

/// Colour codes only on a terminal: a piped stderr (a file, a log shipper)
/// gets none. `--log-format json` makes every stderr line one JSON object.
#[tokio::test]
async fn serve_logs_are_plain_when_piped_and_json_when_asked() {
    // In json the start-up lines are log events; they show even when
    // RUST_LOG asks for warnings only (here: but the install lines).
    for (format, args, filter) in [
        ("text", &[][..], "info"),
        (
            "json",
            &["--log-format", "json"][..],
            "warn,patchbay::cli=info",
        ),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let (lines, child) = serve_until_listening(
            data.path(),
            args,
            &[
                ("PATCHBAY_OPERATOR_TOKEN", OPERATOR_TOKEN),
                ("RUST_LOG", filter),
            ],
        )
        .await;
        let mut child = child.unwrap_or_else(|| panic!("{format}: serve exited: {lines:#?}"));
        let _ = child.kill();
        let _ = child.wait();
        // The bundled plugins are installed on first start, each with a log line.
        assert!(
            lines.iter().any(|l| l.contains("installed bundled plugin")),
            "{format}: {lines:#?}"
        );
        for line in &lines {
            assert!(!line.contains('\u{1b}'), "{format}: ESC in {line:?}");
        }
        if format == "json" {
            for line in &lines {
                let parsed: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    parsed["level"].is_string() && parsed["fields"].is_object(),
                    "{line}"
                );
            }
        }
    }
}

/// An operator token short enough to guess is refused at start, saying why.
#[tokio::test]
async fn serve_refuses_a_short_operator_token() {
    for (token, refused) in [
        ("short", true),
        ("pbo_0123456789abcdef0123456789a", true), // 31 characters
        ("pbo_0123456789abcdef0123456789ab", false), // 32
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let (lines, child) = serve_until_listening(
            data.path(),
            &[],
            &[("PATCHBAY_OPERATOR_TOKEN", token), ("RUST_LOG", "warn")],
        )
        .await;
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
            assert!(!refused, "{token:?} was accepted: {lines:#?}");
        } else {
            assert!(refused, "{token:?} was refused: {lines:#?}");
            let said = lines.join("\n");
            assert!(said.contains("at least 32"), "{said}");
        }
    }
}

/// Without a token, the CLI says which variables hold one: its own, and the
/// server's for the operator token.
#[tokio::test]
async fn the_cli_names_both_token_variables_when_none_is_given() {
    let mut cmd = patchbay(&["workspace", "list"]);
    cmd.env("PATCHBAY_SERVER", "http://127.0.0.1:9");
    let out = run(cmd).await;
    let said = stderr(&out);
    for name in ["PATCHBAY_TOKEN", "PATCHBAY_OPERATOR_TOKEN", "--token"] {
        assert!(said.contains(name), "{name} in {said}");
    }
}

#[tokio::test]
async fn the_cli_defines_and_runs_a_caller_lookup_and_the_run_is_audited_by_name() {
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), &probe_packages(packages.path())).await;
    let op = OPERATOR_TOKEN;
    let crm = MockServer::start().await;
    Mock::given(path("/crm/v3/objects/contacts/search"))
        .and(header("authorization", "Bearer pat-cli-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 1,
            "results": [{ "id": "512", "properties": {
                "firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com",
                "phone": "+16502530000", "company": "Analytical Engines" } }]
        })))
        .mount(&crm)
        .await;

    assert!(
        cli(&server, op, "workspace create acme")
            .await
            .status
            .success()
    );
    let set = format!(
        "connection set acme crm --plugin hubspot --config base_url={} --approve-all",
        crm.uri()
    );
    assert!(cli(&server, op, &set).await.status.success());
    let credential = "connection credential set acme crm private_app_token --from-env PB_PAT";
    assert!(
        cli_with(&server, op, credential, &[("PB_PAT", "pat-cli-1")])
            .await
            .status
            .success()
    );

    let definition = packages.path().join("caller.json");
    std::fs::write(
        &definition,
        json!({ "sources": [{ "name": "crm", "connection": "crm", "operation": "find-contact",
                              "provides": "contact", "deadline_ms": 3000 }],
                "cache_ttl_seconds": 60 })
        .to_string(),
    )
    .expect("write");
    let put = format!("lookup put acme caller --file {}", definition.display());
    let saved = stdout_json(&cli(&server, op, &put).await);
    assert_eq!(saved["name"], "caller", "{saved}");
    let listed = stdout_json(&cli(&server, op, "lookup list acme").await);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let issued = stdout_json(
        &cli(
            &server,
            op,
            "workspace token issue acme --label desk --profile advanced",
        )
        .await,
    );
    assert_eq!(issued["profile"], "advanced");
    let desk = issued["token"].as_str().expect("token").to_owned();
    let ran = stdout_json(
        &cli(
            &server,
            &desk,
            "lookup run acme caller --phone 650-253-0000 --region US",
        )
        .await,
    );
    assert_eq!(ran["key"], "+16502530000", "{ran}");
    assert_eq!(ran["record"]["contact"]["company"], "Analytical Engines");
    assert_eq!(ran["sources"][0]["status"], "ok");
    let lower = stdout_json(
        &cli(
            &server,
            &desk,
            "lookup run acme caller --phone +16502530000 --profile basic",
        )
        .await,
    );
    assert_eq!(
        (
            lower["cached"].clone(),
            lower["record"]["contact"]["email"].clone()
        ),
        (json!(true), json!("a***@example.com"))
    );
    let refused = stderr(
        &cli(
            &server,
            &desk,
            "lookup run acme caller --phone +16502530000 --profile admin",
        )
        .await,
    );
    assert!(refused.contains("profile-above-token"), "{refused}");
    assert!(
        cli(
            &server,
            &desk,
            "lookup forget acme caller 650-253-0000 --region US"
        )
        .await
        .status
        .success()
    );
    // With the workspace's default region, a national number needs none.
    let set = stdout_json(
        &cli(
            &server,
            &desk,
            "workspace settings acme --default-region us",
        )
        .await,
    );
    assert_eq!(set["settings"]["default_region"], "US", "{set}");
    let shown = stdout_json(&cli(&server, op, "workspace show acme").await);
    assert_eq!(shown["settings"]["default_region"], "US", "{shown}");
    let national = stdout_json(
        &cli(
            &server,
            &desk,
            "lookup run acme caller --phone 650-253-0000",
        )
        .await,
    );
    assert_eq!(
        (national["key"].clone(), national["cached"].clone()),
        (json!("+16502530000"), json!(false))
    );
    // The trail of runs, a page at a time, and the outbound audit beside it.
    let page = stdout_json(&cli(&server, &desk, "lookup runs acme --limit 2").await);
    assert_eq!(page["records"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["records"][0]["token"], issued["id"]);
    let next = page["next"].as_str().expect("a third run").to_owned();
    let rest = stdout_json(&cli(&server, &desk, &format!("lookup runs acme --after {next}")).await);
    assert_eq!(rest["records"].as_array().map(Vec::len), Some(1), "{rest}");
    let outbound = stdout_json(&cli(&server, op, "workspace audit acme --limit 1").await);
    assert_eq!(outbound["records"][0]["connection"], "crm", "{outbound}");
    assert!(
        cli(&server, op, "lookup delete acme caller")
            .await
            .status
            .success()
    );
    let gone = stderr(&cli(&server, op, "lookup get acme caller").await);
    assert!(gone.contains("not-found"), "{gone}");

    // Each run is in the audit log: who asked and which fields went back,
    // by name, never their values.
    let log = server.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let runs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("caller lookup"))
        .collect();
    assert_eq!(runs.len(), 3, "{log}");
    assert!(
        runs[0].contains("contact.company") && runs[0].contains("crm=ok"),
        "{}",
        runs[0]
    );
    assert!(runs[1].contains("cached=true"), "{}", runs[1]);
    assert!(
        !runs.iter().any(|l| l.contains("Ada") || l.contains("ada@")),
        "{runs:?}"
    );
}

/// The idempotency keys of the deliveries `server` received.
async fn delivered_keys(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key"))
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// Workspace `acme` with connection `crm`: the probe against `upstream`,
/// its bearer credential set; as the operator.
async fn route_calls_to(api: &str, upstream: &str) {
    let (status, _) = patchbay_tests::create_workspace(api, "acme").await;
    assert_eq!(status, 201);
    let (status, body) = operator(
        api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(
            json!({ "plugin": "probe", "config": { "upstream": upstream },
            "grants": { "approve_all_requested": true } }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = operator(
        api,
        "PUT",
        "/v1/workspaces/acme/connections/crm/credentials/token",
        Some(json!({ "kind": "bearer", "token": "delivery-bearer" })),
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_cli_routes_events_and_works_the_dead_letter_queue() {
    let crm = MockServer::start().await;
    Mock::given(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&crm)
        .await;
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), &probe_packages(packages.path())).await;
    route_calls_to(&server.base, &crm.uri()).await;
    let op = OPERATOR_TOKEN;
    let files = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, value: Value| {
        let at = files.path().join(name);
        std::fs::write(&at, value.to_string()).expect("write");
        at.display().to_string()
    };
    let sub = write(
        "sub.json",
        json!({ "types": ["call.*"], "destination": { "connection": "crm", "operation": "deliver" } }),
    );
    let saved = stdout_json(
        &cli(
            &server,
            op,
            &format!("subscription put acme to-crm --file {sub}"),
        )
        .await,
    );
    assert_eq!(saved["name"], "to-crm");
    let listed = stdout_json(&cli(&server, op, "subscription list acme").await);
    assert_eq!(listed[0]["destination"]["operation"], "deliver");
    let event = write(
        "event.json",
        json!({ "id": "cli-1", "type": "call.ended", "source": "cc-hub", "occurred_at": "2026-12-02T10:00:00Z" }),
    );
    let published =
        stdout_json(&cli(&server, op, &format!("events publish acme --file {event}")).await);
    assert_eq!(published["accepted"][0]["deliveries"], 1);

    // A 404 is dead-lettered at once; the CLI lists, shows, replays, purges.
    let mut dead = Value::Null;
    for _ in 0..200 {
        dead = stdout_json(&cli(&server, op, "dead-letter list acme --code not-found").await);
        if dead["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = dead["items"][0]["id"].to_string();
    let shown = stdout_json(&cli(&server, op, &format!("dead-letter show acme {id}")).await);
    assert_eq!(shown["event"]["id"], "cli-1");
    let out = cli(&server, op, &format!("dead-letter replay acme {id}")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&server, op, "dead-letter purge acme").await;
    assert!(!out.status.success(), "purging everything needs a filter");
    assert!(stderr(&out).contains("takes a filter"), "{}", stderr(&out));
    let out = cli(&server, op, "dead-letter show acme 999999").await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404 not-found"), "{}", stderr(&out));
    // Replayed, it fails again (still 404) and comes back; then purged by filter.
    for _ in 0..200 {
        let d = stdout_json(&cli(&server, op, "dead-letter list acme").await);
        if d["items"][0]["tries"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let purged =
        stdout_json(&cli(&server, op, "dead-letter purge acme --subscription to-crm").await);
    assert_eq!(purged["count"], 1, "{purged}");
    // The dead-letter alert: set (a secret made and printed once), shown, removed.
    let set = stdout_json(
        &cli(
            &server,
            op,
            "dead-letter alert set acme --url https://pager.example/hooks --threshold 5",
        )
        .await,
    );
    assert!(
        set["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{set}"
    );
    let shown = stdout_json(&cli(&server, op, "dead-letter alert show acme").await);
    assert_eq!(
        (
            shown["url"].as_str(),
            shown["threshold"].as_u64(),
            shown.get("secret")
        ),
        (Some("https://pager.example/hooks"), Some(5), None),
        "{shown}"
    );
    let out = cli(
        &server,
        op,
        "dead-letter alert set acme --url ftp://x --threshold 0",
    )
    .await;
    assert!(
        stderr(&out).contains("422 invalid-alert"),
        "{}",
        stderr(&out)
    );
    assert!(
        cli(&server, op, "dead-letter alert delete acme")
            .await
            .status
            .success()
    );
    let out = cli(&server, op, "dead-letter alert show acme").await;
    assert!(stderr(&out).contains("404 not-found"), "{}", stderr(&out));
    let out = cli(&server, op, "subscription delete acme to-crm").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout_json(&cli(&server, op, "subscription list acme").await),
        json!([])
    );
}

/// Events published, acknowledged or not, across SIGKILLs at random
/// moments: every one is delivered, each under its own key, and every
/// repeated attempt carries the same key as the first.
#[tokio::test]
async fn every_accepted_event_is_delivered_across_kill_9() {
    const EVENTS: usize = 10_000;
    const BATCH: usize = 500;
    const KILLS: usize = 5;
    let started = std::time::Instant::now();
    let crm = MockServer::start().await;
    Mock::given(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&crm)
        .await;
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let plugins = probe_packages(packages.path());
    let mut server = Server::start(data.path(), &plugins).await;
    route_calls_to(&server.base, &crm.uri()).await;
    let (status, body) = operator(
        &server.base,
        "PUT",
        "/v1/workspaces/acme/subscriptions/to-crm",
        Some(json!({ "types": ["call.*"],
            "destination": { "connection": "crm", "operation": "deliver" },
            "retry": { "max_attempts": 100, "max_age_secs": 3600, "backoff_base_ms": 20, "backoff_cap_ms": 500 } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let batches: Vec<Value> = (0..EVENTS / BATCH)
        .map(|b| {
            Value::Array(
                (b * BATCH..(b + 1) * BATCH)
                    .map(|n| {
                        json!({ "id": format!("e{n}"), "type": "call.ended", "source": "cc-hub",
                        "occurred_at": "2026-12-02T10:00:00Z", "data": { "n": n } })
                    })
                    .collect(),
            )
        })
        .collect();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(vec![false; batches.len()]));
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("kill moments seeded with {seed}");
    // Publish what is not acknowledged yet, until the server goes away.
    let publish = |base: String| {
        let (batches, acknowledged) = (batches.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for (i, batch) in batches.into_iter().enumerate() {
                if acknowledged.lock().expect("lock")[i] {
                    continue;
                }
                let sent = patchbay_tests::plain_http_client()
                    .post(format!("{base}/v1/workspaces/acme/events"))
                    .bearer_auth(OPERATOR_TOKEN)
                    .json(&batch)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => {
                        acknowledged.lock().expect("lock")[i] = true;
                    }
                    Ok(r) => panic!("publishing answered {}", r.status()),
                    Err(_) => return, // killed: the rest waits for the next start
                }
            }
        })
    };
    for _ in 0..KILLS {
        let publishing = publish(server.base.clone());
        // A random moment: while publishing, or while delivering.
        tokio::time::sleep(std::time::Duration::from_millis(rng.u64(200..1500))).await;
        server.kill();
        let _ = publishing.await;
        server = Server::start(data.path(), &plugins).await;
    }
    // The client sends again whatever was never acknowledged.
    publish(server.base.clone()).await.expect("publish");
    assert!(
        acknowledged.lock().expect("lock").iter().all(|a| *a),
        "every batch acknowledged after the last start"
    );
    let expected: std::collections::BTreeSet<String> =
        (0..EVENTS).map(|n| format!("e{n}:to-crm")).collect();
    let mut distinct = std::collections::BTreeSet::new();
    while started.elapsed() < std::time::Duration::from_secs(240) {
        let keys = delivered_keys(&crm).await;
        distinct = keys.iter().cloned().collect();
        if distinct.len() >= EVENTS {
            assert!(
                keys.iter().all(|k| expected.contains(k)),
                "a delivery carried a key no event has"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        distinct.len(),
        EVENTS,
        "{} of {EVENTS} events delivered in {:?} (seed {seed})",
        distinct.len(),
        started.elapsed()
    );
    assert_eq!(distinct, expected);
    let (_, sub) = operator(
        &server.base,
        "GET",
        "/v1/workspaces/acme/subscriptions/to-crm",
        None,
    )
    .await;
    assert_eq!(sub["depth"]["dead"], 0, "{sub}");
    println!(
        "{EVENTS} events, {} delivery requests, {KILLS} kills, {:?}",
        delivered_keys(&crm).await.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_finishes_deliveries_in_flight_and_loses_none() {
    let crm = MockServer::start().await;
    Mock::given(path("/allowed/deliveries"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_millis(800)))
        .mount(&crm)
        .await;
    let data = tempfile::tempdir().expect("tempdir");
    let packages = tempfile::tempdir().expect("tempdir");
    let plugins = probe_packages(packages.path());
    let server = Server::start(data.path(), &plugins).await;
    route_calls_to(&server.base, &crm.uri()).await;
    let (status, body) = operator(
        &server.base,
        "PUT",
        "/v1/workspaces/acme/subscriptions/to-crm",
        Some(json!({ "types": ["call.*"],
            "destination": { "connection": "crm", "operation": "deliver" } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let batch: Vec<Value> = (0..40)
        .map(|n| {
            json!({ "id": format!("t{n}"), "type": "call.ended", "source": "cc-hub",
            "occurred_at": "2026-12-02T10:00:00Z" })
        })
        .collect();
    let (status, _) = operator(
        &server.base,
        "POST",
        "/v1/workspaces/acme/events",
        Some(Value::Array(batch)),
    )
    .await;
    assert_eq!(status, 202);
    // Deliveries are in flight (each answer takes 0.8 s) when the stop comes.
    for _ in 0..200 {
        if !delivered_keys(&crm).await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, log) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("patchbay stopping"), "{log}");
    let before = delivered_keys(&crm).await.len();
    assert!(
        (1..40).contains(&before),
        "{before} attempted before the stop"
    );
    // What was not delivered is delivered by the next start, every event once at least.
    let server = Server::start(data.path(), &plugins).await;
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..400 {
        distinct = delivered_keys(&crm).await.into_iter().collect();
        if distinct.len() == 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(distinct.len(), 40, "{distinct:?}");
    // The last requests arrived; their answers take 0.8 s to come back.
    let subscription = "/v1/workspaces/acme/subscriptions/to-crm";
    let mut sub = Value::Null;
    for _ in 0..200 {
        (_, sub) = operator(&server.base, "GET", subscription, None).await;
        if sub["depth"]["pending"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(sub["depth"], json!({ "pending": 0, "dead": 0 }), "{sub}");
    // Those that ended before the stop were recorded then: not sent again.
    let sent = delivered_keys(&crm).await.len();
    assert!(
        sent < 40 + before,
        "{sent} requests for 40 events, {before} before the stop"
    );
}
