//! Recording a connection's invocations and replaying them offline: the
//! operator records a Zendesk connection through the API, its calls keep
//! transcripts (with no credential in them), and `patchbay plugin replay`
//! runs each again on the plugin directory, with no network, to the same
//! outcome, or says where it differs; a transcript becomes a kit fixture.

use crate::kit::package_dir;
use crate::spawn::{patchbay, run, text};
use base64::Engine as _;
use patchbay_tests::plugins::ZENDESK;
use patchbay_tests::{Harness, api_call, create_workspace, operator_call};
use serde_json::{Value, json};
use std::path::Path;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "zd-token-never-in-a-transcript-7f3a";
const CONNECTION: &str = "/v1/workspaces/acme/connections/desk";

fn ticket_input() -> Value {
    json!({
        "subject": "Caller asked for a refund", "comment": "Order 1234 arrived broken.",
        "public": false, "requester": { "name": "Ada Lovelace", "email": "ada@example.com" },
        "priority": "high", "tags": ["voice"]
    })
}

/// `POST …/operations/create-ticket` with an idempotency key.
async fn create_ticket(api: &str, key: &str) -> Value {
    let response = patchbay_tests::plain_http_client()
        .post(format!("{api}{CONNECTION}/operations/create-ticket"))
        .bearer_auth(patchbay_tests::OPERATOR_TOKEN)
        .header("idempotency-key", key)
        .json(&json!({ "input": ticket_input() }))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// `patchbay ARGS` against the API at `api` with `token`.
async fn cli(api: &str, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = patchbay(args);
    cmd.env("PATCHBAY_SERVER", api).env("PATCHBAY_TOKEN", token);
    run(cmd).await
}

/// `plugin replay FILE --plugin DIR --format json [extra]`: whether it
/// exited 0, and its JSON.
async fn replay(file: &Path, dir: &Path, extra: &[&str]) -> (bool, Value) {
    let mut args = vec![
        "plugin",
        "replay",
        file.to_str().expect("utf-8"),
        "--plugin",
        dir.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run(patchbay(&args)).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    (out.status.success(), report)
}

#[tokio::test]
async fn a_recorded_call_replays_offline_to_the_same_outcome_and_becomes_a_fixture() {
    let harness = Harness::new();
    harness.install(ZENDESK).await;
    let api = harness.serve_api().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "ticket": {
            "id": 35436, "url": "https://acme.zendesk.com/api/v2/tickets/35436.json",
            "status": "new", "subject": "Caller asked for a refund", "priority": "high",
            "requester_id": 20978392, "tags": ["voice"], "created_at": "2026-12-02T10:00:00Z"
        }, "audit": { "id": 1, "events": [] } })))
        .mount(&upstream)
        .await;
    create_workspace(&api, "acme").await;
    let (status, body) = operator_call(
        &api,
        "PUT",
        CONNECTION,
        Some(
            json!({ "plugin": "zendesk", "config": { "base_url": upstream.uri() },
            "grants": { "approve_all_requested": true } }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = operator_call(
        &api,
        "PUT",
        &format!("{CONNECTION}/credentials/api_token"),
        Some(json!({ "kind": "basic", "username": "agent@acme.test/token", "password": SECRET })),
    )
    .await;
    assert_eq!(status, 204);

    // Nothing is recorded until the operator asks.
    create_ticket(&api, "evt-0").await;
    let (_, listed) = operator_call(&api, "GET", &format!("{CONNECTION}/transcripts"), None).await;
    assert_eq!(listed["transcripts"], json!([]), "{listed}");

    // Only the operator starts a recording; another workspace sees nothing.
    let (_, token) =
        operator_call(&api, "POST", "/v1/workspaces/acme/tokens", Some(json!({}))).await;
    let token = token["token"].as_str().expect("token").to_owned();
    create_workspace(&api, "other").await;
    let (_, other) =
        operator_call(&api, "POST", "/v1/workspaces/other/tokens", Some(json!({}))).await;
    let other = other["token"].as_str().expect("token").to_owned();
    let ask = json!({ "max_invocations": 2, "for_minutes": 10 });
    let recording = format!("{CONNECTION}/recording");
    let (status, body) = api_call("PUT", &api, &recording, Some(&token), Some(ask)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("operator-only")),
        "{body}"
    );
    let (status, body) = operator_call(
        &api,
        "PUT",
        &recording,
        Some(json!({ "max_invocations": 0, "for_minutes": 10 })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-recording")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_invocations"),
        "{body}"
    );
    let out = cli(
        &api,
        patchbay_tests::OPERATOR_TOKEN,
        &[
            "connection",
            "record",
            "acme",
            "desk",
            "--max-invocations",
            "2",
            "--for-minutes",
            "10",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["recording"]["max_invocations"], 2, "{body}");

    // Recorded: a ticket created (KV miss, one request), the same key again
    // (served from KV, no request); the third call is past the count.
    let first = create_ticket(&api, "evt-9").await;
    let again = create_ticket(&api, "evt-9").await;
    assert_eq!(first["output"], again["output"]);
    create_ticket(&api, "evt-10").await;
    let (_, shown) = api_call("GET", &api, &recording, Some(&token), None).await;
    assert_eq!(
        (&shown["active"], &shown["transcripts"]),
        (&json!(false), &json!(2)),
        "{shown}"
    );

    let (status, listed) = api_call(
        "GET",
        &api,
        &format!("{CONNECTION}/transcripts"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let out = cli(&api, &token, &["connection", "transcripts", "acme", "desk"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        listed
    );
    // Stopping is the operator's too; the CLI says why it is refused.
    let out = cli(
        &api,
        &token,
        &["connection", "stop-recording", "acme", "desk"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("operator-only"),
        "{}",
        text(&out.stderr)
    );
    let summaries = listed["transcripts"].as_array().expect("list");
    assert_eq!(summaries.len(), 2, "{listed}");
    let ids: Vec<&str> = summaries
        .iter()
        .map(|s| s["invocation_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids[0], first["invocation_id"].as_str().expect("id"));
    let (status, _) = api_call(
        "GET",
        &api,
        "/v1/workspaces/acme/connections/desk/transcripts",
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 404, "another workspace's token sees no transcript");

    let scratch = tempfile::tempdir().expect("tmp");
    let dir = package_dir(ZENDESK, scratch.path());
    let mut files = Vec::new();
    for id in &ids {
        let response = patchbay_tests::plain_http_client()
            .get(format!("{api}{CONNECTION}/transcripts/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("transcript");
        assert_eq!(response.status(), 200);
        let raw = response.text().await.expect("text");
        // The CLI gets the same transcript, with the workspace's token.
        let out = cli(
            &api,
            &token,
            &["connection", "transcript", "acme", "desk", id],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let via_cli: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(via_cli, serde_json::from_str::<Value>(&raw).expect("json"));
        assert!(
            !raw.contains(SECRET),
            "a credential in the transcript: {raw}"
        );
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("agent@acme.test/token:{SECRET}"));
        assert!(
            !raw.contains(&basic),
            "the credential's header in the transcript: {raw}"
        );
        let transcript: Value = serde_json::from_str(&raw).expect("json");
        assert_eq!(transcript["format"], "patchbay-transcript/1");
        assert_eq!(transcript["operation"], "create-ticket");
        assert_eq!(transcript["idempotency_key"], "evt-9");
        let file = scratch.path().join(format!("{id}.json"));
        std::fs::write(&file, &raw).expect("write");
        files.push((file, transcript));
    }
    let (first_t, second_t) = (&files[0].1, &files[1].1);
    assert_eq!(
        first_t["http"].as_array().map(Vec::len),
        Some(1),
        "{first_t}"
    );
    let request = &first_t["http"][0]["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["body"]["ticket"]["subject"],
        "Caller asked for a refund"
    );
    assert_eq!(first_t["http"][0]["response"]["status"], 201);
    let ops: Vec<&str> = first_t["kv"]
        .as_array()
        .expect("kv")
        .iter()
        .map(|c| c["op"].as_str().expect("op"))
        .collect();
    assert_eq!(ops, ["get", "set"], "{first_t}");
    assert_eq!(second_t["http"], json!([]), "served from KV: {second_t}");
    let base_url_read = first_t["config_reads"]
        .as_array()
        .expect("config reads")
        .iter()
        .find(|r| r["key"] == "base_url")
        .cloned()
        .unwrap_or_else(|| panic!("no read of base_url: {first_t}"));
    assert!(
        base_url_read["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("http://127.0.0.1:"))
    );
    assert!(second_t["kv"][0]["result"].is_string(), "{second_t}");
    assert_eq!(first_t["output"], first["output"]);

    // Both replay offline to the recorded outcome (the upstream is gone).
    drop(upstream);
    for (file, _) in &files {
        let (passed, report) = replay(file, &dir, &[]).await;
        assert!(passed, "{report}");
        assert_eq!(report["report"]["passed"], true, "{report}");
    }

    // A replay whose outcome differs says where.
    let mut changed = first_t.clone();
    changed["output"]["status"] = json!("solved");
    let changed_file = scratch.path().join("changed.json");
    std::fs::write(&changed_file, changed.to_string()).expect("write");
    let (passed, report) = replay(&changed_file, &dir, &[]).await;
    assert!(!passed);
    assert!(
        report
            .to_string()
            .contains("/status: expected \\\"solved\\\""),
        "{report}"
    );

    // One command turns the transcript into a fixture the kit runs.
    let fixture = dir.join("fixtures").join("recorded-evt-9.json");
    let (passed, report) = replay(
        &files[1].0,
        &dir,
        &["--save-fixture", fixture.to_str().expect("utf-8")],
    )
    .await;
    assert!(passed, "{report}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("saved")).expect("json");
    assert!(!saved["kv"].as_object().expect("kv").is_empty(), "{saved}");
    let out = run(patchbay(&[
        "plugin",
        "test",
        dir.to_str().expect("utf-8"),
        "--format",
        "json",
    ]))
    .await;
    let kit: Value = serde_json::from_slice(&out.stdout).expect("report");
    let name = format!("create-ticket / recorded {}", ids[1]);
    let recorded = kit["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no check {name:?}: {kit}"));
    assert_eq!(recorded["status"], "pass", "{kit}");

    // Deleting the transcripts leaves the connection; deleting the
    // connection leaves nothing.
    let (status, deleted) =
        operator_call(&api, "DELETE", &format!("{CONNECTION}/transcripts"), None).await;
    assert_eq!((status, &deleted["deleted"]), (200, &json!(2)), "{deleted}");
    let (_, shown) = operator_call(&api, "GET", &recording, None).await;
    assert_eq!(shown["transcripts"], 0, "{shown}");
    let (status, _) = operator_call(&api, "DELETE", &recording, None).await;
    assert_eq!(status, 204, "the operator stops a recording");
    let (status, body) = operator_call(&api, "DELETE", &recording, None).await;
    assert_eq!(status, 404, "{body}");

    let again = json!({ "max_invocations": 5, "for_minutes": 10 });
    let (status, _) = operator_call(&api, "PUT", &recording, Some(again)).await;
    assert_eq!(status, 200);
    // Served from KV: the upstream is gone by now.
    create_ticket(&api, "evt-9").await;
    let (_, shown) = operator_call(&api, "GET", &recording, None).await;
    assert_eq!(shown["transcripts"], 1, "{shown}");
    let (status, _) = operator_call(&api, "DELETE", CONNECTION, None).await;
    assert_eq!(status, 204);
    let (status, _) = operator_call(
        &api,
        "PUT",
        CONNECTION,
        Some(
            json!({ "plugin": "zendesk", "config": { "base_url": "http://127.0.0.1:9" },
            "grants": { "approve_all_requested": true } }),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (_, shown) = operator_call(&api, "GET", &recording, None).await;
    assert_eq!(
        (&shown["active"], &shown["transcripts"]),
        (&json!(false), &json!(0)),
        "a connection made anew under the name inherits nothing: {shown}"
    );
    let (_, listed) = operator_call(&api, "GET", &format!("{CONNECTION}/transcripts"), None).await;
    assert_eq!(listed["transcripts"], json!([]), "{listed}");
}

/// The probe's manifest and component in a directory of their own.
fn probe_dir(parent: &Path) -> std::path::PathBuf {
    let dir = parent.join("probe");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("plugin.toml"),
        patchbay_tests::plugins::PROBE.manifest(),
    )
    .expect("manifest");
    std::fs::write(
        dir.join("plugin.wasm"),
        patchbay_tests::plugins::PROBE.wasm_bytes(),
    )
    .expect("wasm");
    dir
}

#[tokio::test]
async fn a_replay_serves_the_recorded_clock_and_random_values() {
    let harness = Harness::new();
    harness.install(patchbay_tests::plugins::PROBE).await;
    let api = harness.serve_api().await;
    create_workspace(&api, "acme").await;
    let connection = "/v1/workspaces/acme/connections/probe";
    let (status, body) = operator_call(
        &api,
        "PUT",
        connection,
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = operator_call(
        &api,
        "PUT",
        &format!("{connection}/recording"),
        Some(json!({ "max_invocations": 1, "for_minutes": 5 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, ran) = operator_call(
        &api,
        "POST",
        &format!("{connection}/operations/entropy"),
        Some(json!({ "input": {} })),
    )
    .await;
    assert_eq!(status, 200, "{ran}");
    let id = ran["invocation_id"].as_str().expect("id");
    let (status, transcript) =
        operator_call(&api, "GET", &format!("{connection}/transcripts/{id}"), None).await;
    assert_eq!(status, 200, "{transcript}");
    assert_eq!(transcript["output"], ran["output"]);
    assert!(
        !transcript["clocks"]["wall_ns"]
            .as_array()
            .expect("wall")
            .is_empty(),
        "{transcript}"
    );

    let scratch = tempfile::tempdir().expect("tmp");
    let dir = probe_dir(scratch.path());
    let file = scratch.path().join("entropy.json");
    std::fs::write(&file, transcript.to_string()).expect("write");
    // Run now, later, as often as wanted: the same clock and the same seeds.
    for _ in 0..2 {
        let (passed, report) = replay(&file, &dir, &[]).await;
        assert!(passed, "{report}");
    }

    // Another wall clock reading, or other random bytes, give another
    // output: the replay serves what the transcript holds, nothing else.
    let mut clock = transcript.clone();
    let first = clock["clocks"]["wall_ns"][0].as_u64().expect("ns");
    clock["clocks"]["wall_ns"][0] = json!(first + 1_000_000_000);
    std::fs::write(&file, clock.to_string()).expect("write");
    let (passed, report) = replay(&file, &dir, &[]).await;
    assert!(!passed, "{report}");
    assert!(report.to_string().contains("/now_ns"), "{report}");

    let mut random = transcript.clone();
    random["random"] = json!({ "secure": "", "insecure": "", "insecure_seed": "1" });
    std::fs::write(&file, random.to_string()).expect("write");
    let (passed, report) = replay(&file, &dir, &[]).await;
    assert!(!passed, "{report}");
    assert!(report.to_string().contains("/hash"), "{report}");
}
