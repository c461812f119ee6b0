//! Operator policy through the real binary: `serve --policy FILE` refuses a
//! file it cannot use before it opens anything, naming the file and the key;
//! flags win over the file; `policy defaults` prints every key; and a
//! server started with a file runs under it.

use patchbay::policy::OperatorPolicy;
use patchbay::policy::rate::RateLimit;
use patchbay_tests::{OPERATOR_TOKEN, create_workspace, operator_call as call, plugins::PROBE};
use serde_json::json;
use std::io::{BufRead, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The binary with `args` and a clean environment, holding the operator token.
fn patchbay(args: &[&str]) -> Command {
    let mut cmd = crate::spawn::patchbay(args);
    cmd.env("PATCHBAY_OPERATOR_TOKEN", OPERATOR_TOKEN);
    cmd
}

/// Run to its end, within 60 s (a `serve` that starts instead of refusing
/// is killed and fails the test): exit success, stdout, stderr.
async fn finish(mut cmd: Command) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn patchbay");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("patchbay kept running instead of exiting");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        (status.success(), out, err)
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn serve_refuses_a_policy_it_cannot_use_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    let file_text = file.to_str().expect("utf-8 path").to_owned();
    // (policy file text or None for no file at all, extra flags, what stderr must name)
    let cases: [(Option<&str>, &[&str], &[&str]); 9] = [
        (
            Some("[limits\nmax_memory_mb = 1"),
            &[],
            &["TOML parse error at line 1"],
        ),
        (Some("pace = 5"), &[], &["unknown field `pace`"]),
        (
            Some("[limits]\nmax_memroy_mb = 64"),
            &[],
            &["unknown field `max_memroy_mb`"],
        ),
        (
            Some("[audit]\nmax_age_days = \"forever\""),
            &[],
            &["max_age_days", "line 2"],
        ),
        (
            Some("[limits]\ndefault_rate_limit = { requests = 0, per_seconds = 1 }"),
            &[],
            &["limits.default_rate_limit.requests must be at least 1"],
        ),
        (
            Some("[addresses]\nallowed_cidrs = [\"10.0.0.0/33\"]"),
            &[],
            &["allowed_cidrs"],
        ),
        (None, &[], &["reading policy file"]),
        (
            Some("[limits]\nmax_timeout_ms = 5000"),
            &["--max-timeout-ms", "0"],
            &["limits.max_timeout_ms must be at least 1"],
        ),
        (
            Some(""),
            &["--rate-limit", "0/1"],
            &["--rate-limit", "\"0/1\" is not a rate"],
        ),
    ];
    for (text, flags, named) in cases {
        let _ = std::fs::remove_file(&file);
        if let Some(text) = text {
            std::fs::write(&file, text).expect("write policy");
        }
        let data = dir.path().join("data");
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            &file_text,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(flags);
        let (ok, _, stderr) = finish(patchbay(&args)).await;
        let label = format!("{text:?} {flags:?}");
        assert!(!ok, "{label}: serve started");
        for phrase in named {
            assert!(
                stderr.contains(phrase),
                "{label}: {phrase:?} not in {stderr}"
            );
        }
        // Flag errors come from the argument parser; every other one names the file.
        if !flags.contains(&"--rate-limit") {
            assert!(stderr.contains(&file_text), "{label}: {stderr}");
        }
        assert!(
            !data.exists(),
            "{label}: the data directory was opened before the policy was checked"
        );
    }
}

#[tokio::test]
async fn policy_defaults_prints_every_key_and_flags_win_over_the_file() {
    let (ok, defaults, stderr) = finish(patchbay(&["policy", "defaults"])).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        OperatorPolicy::from_toml(&defaults),
        Ok(OperatorPolicy::default()),
        "{defaults}"
    );
    for key in [
        "default_rate_limit",
        "max_memory_mb",
        "allowed_cidrs",
        "max_records_per_workspace",
        "destinations",
    ] {
        assert!(defaults.contains(key), "{key} missing: {defaults}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[limits]\ndefault_rate_limit = { requests = 50, per_seconds = 10 }\n\
         [addresses]\nallowed_cidrs = [\"192.168.0.0/16\"]\n[audit]\nmax_age_days = 7\n",
    )
    .expect("write");
    let (ok, checked, stderr) = finish(patchbay(&[
        "policy",
        "check",
        "--policy",
        file.to_str().expect("utf-8 path"),
        "--rate-limit",
        "20/2",
        "--allow-cidr",
        "10.0.0.0/8",
    ]))
    .await;
    assert!(ok, "{stderr}");
    let policy = OperatorPolicy::from_toml(&checked).expect("check prints a policy");
    assert_eq!(
        policy.limits.default_rate_limit,
        RateLimit {
            requests: 20,
            per_seconds: 2
        },
        "the flag wins over the file"
    );
    let cidrs: Vec<String> = policy
        .addresses
        .allowed_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cidrs,
        ["10.0.0.0/8"],
        "--allow-cidr replaces the file's list"
    );
    assert_eq!(policy.audit.max_age_days, 7, "the file's own keys stay");
    assert_eq!(
        policy.limits.max_memory_mb,
        OperatorPolicy::default().limits.max_memory_mb,
        "keys nobody set keep their defaults"
    );
}

/// `serve` on `data` with `args`, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(args: Vec<String>) -> Server {
    let mut child = patchbay(&["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchbay serve");
    let stderr = child.stderr.take().expect("stderr");
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("serve printed its address before exiting")
                .expect("read");
            if let Some(rest) = line.strip_prefix("patchbay listening on ") {
                break rest.trim().to_owned();
            }
        };
        // Keep draining, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        base
    })
    .await
    .expect("join");
    Server { child, base }
}

#[tokio::test]
async fn a_server_runs_under_its_policy_file() {
    let upstream = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&upstream)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let packages = dir.path().join("packages");
    PROBE.write_dir(&packages);
    let file = dir.path().join("policy.toml");
    // Loopback reachable and a pace of 2 per 10 s, from the file alone.
    std::fs::write(
        &file,
        "[limits]\ndefault_rate_limit = { requests = 2, per_seconds = 10 }\n\
         [addresses]\nallowed_cidrs = [\"127.0.0.1/32\"]\n",
    )
    .expect("write");
    let path_arg = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let server = serve(vec![
        "--policy".into(),
        path_arg(&file),
        "--data-dir".into(),
        path_arg(&dir.path().join("data")),
        "--plugins-dir".into(),
        path_arg(&packages),
    ])
    .await;
    let api = &server.base;
    create_workspace(api, "acme").await;
    let (status, body) = call(
        api,
        "PUT",
        "/v1/workspaces/acme/connections/crm",
        Some(json!({ "plugin": "probe", "config": { "upstream": upstream.uri() }, "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        api,
        "POST",
        "/v1/workspaces/acme/connections/crm/operations/fetch",
        Some(json!({ "input": { "url": format!("{}/allowed/x", upstream.uri()), "times": 5 } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["status"], 429, "the pace held: {body}");
    assert_eq!(
        upstream.received_requests().await.expect("recording").len(),
        2,
        "the file's pace of 2 per 10 s let two through"
    );
}
