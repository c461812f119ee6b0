//! `patchbay plugin replay TRANSCRIPT [--plugin DIR]`: run a recorded
//! invocation again, offline, in the real sandbox, and compare its outcome
//! with the recorded one. The plugin's requests are answered from the
//! transcript's exchanges, its KV starts as the recorded call found it, its
//! clocks and random values are the recorded ones, in order; the settings
//! and grants are the connection's. `--save-fixture FILE` writes the same
//! case as a conformance-kit fixture.

use super::kit::{self, Fixture, HostValues, RecordedExchange, RecordedRequest, RecordedResponse};
use anyhow::{Context as _, bail};
use patchbay_policy::manifest::Manifest;
use patchbay_policy::recording::{
    KvValue, REDACTED, RecordedExchange as Taped, TRANSCRIPT_FORMAT, Transcript,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Response headers a replay leaves out: the recorded body is served whole,
/// and may be written differently (JSON is written compactly).
const FRAMING_HEADERS: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Read the transcript at `path` (`-`: standard input).
pub(super) fn read(path: &Path) -> anyhow::Result<Transcript> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the transcript from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let transcript: Transcript = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Patchbay transcript", path.display()))?;
    if transcript.format != TRANSCRIPT_FORMAT {
        bail!(
            "{} is a {:?} transcript; this patchbay replays {TRANSCRIPT_FORMAT}",
            path.display(),
            transcript.format
        );
    }
    Ok(transcript)
}

/// The case `transcript` recorded, as a kit fixture for `manifest`'s plugin.
pub(super) fn fixture(transcript: &Transcript, manifest: &Manifest) -> Fixture {
    Fixture {
        name: Some(format!("replay of {}", transcript.invocation_id)),
        operation: transcript.operation.clone(),
        config: config(&transcript.config, manifest),
        grants: Some(transcript.grants.clone()),
        input: transcript.input.clone(),
        idempotency_key: transcript.idempotency_key.clone(),
        kv: kv_before(transcript),
        host: Some(HostValues {
            clocks: transcript.calls.clocks.clone(),
            random: transcript.calls.random.clone(),
        }),
        exchanges: transcript.calls.http.iter().filter_map(exchange).collect(),
        output: transcript.output.clone(),
        error: transcript.error.as_ref().map(|e| e.code.clone()),
        error_paths: BTreeMap::new(),
    }
}

/// Settings as the connection stores them: a value the config schema does
/// not type as a string is read back from its JSON text.
fn config(values: &BTreeMap<String, String>, manifest: &Manifest) -> Map<String, Value> {
    let schema = manifest.capabilities.config_schema.as_ref();
    values
        .iter()
        .map(|(key, text)| {
            let typed = schema
                .and_then(|s| s.pointer(&format!("/properties/{key}/type")))
                .and_then(Value::as_str);
            let value = match typed {
                Some("string") | None => Value::String(text.clone()),
                Some(_) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
            };
            (key.clone(), value)
        })
        .collect()
}

/// The KV keys the recorded call found, as far as its calls show them: a
/// key's first call tells what it held before (a `get`'s value, an
/// `increment`'s start, a key `list-keys` or `delete` found).
fn kv_before(transcript: &Transcript) -> BTreeMap<String, KvValue> {
    // Keys whose state before the call is settled; a key only listed so
    // far holds a placeholder that its first read, increment or deletion
    // replaces.
    let mut known = HashSet::new();
    let mut before = BTreeMap::new();
    for call in &transcript.calls.kv {
        if call.error.is_some() {
            continue;
        }
        if call.op == "list-keys" {
            for key in call.result.as_array().into_iter().flatten() {
                if let Some(key) = key.as_str()
                    && !known.contains(key)
                {
                    before
                        .entry(key.to_owned())
                        .or_insert_with(|| KvValue::Text(String::new()));
                }
            }
            continue;
        }
        // A value too large to keep leaves its key unsettled.
        if call.result.get("omitted").is_some() {
            continue;
        }
        if !known.insert(call.key.clone()) {
            continue;
        }
        match call.op.as_str() {
            "get" => match serde_json::from_value::<KvValue>(call.result.clone()) {
                Ok(value) => {
                    before.insert(call.key.clone(), value);
                }
                Err(_) => {
                    before.remove(&call.key);
                }
            },
            "delete" if call.result == Value::Bool(true) => {
                before
                    .entry(call.key.clone())
                    .or_insert_with(|| KvValue::Text(String::new()));
            }
            "delete" => {
                before.remove(&call.key);
            }
            "increment" => {
                if let (Some(now), Some(delta)) = (call.result.as_i64(), call.delta) {
                    let start = now.wrapping_sub(delta);
                    if start != 0 || before.contains_key(&call.key) {
                        before.insert(call.key.clone(), KvValue::Text(start.to_string()));
                    }
                }
            }
            // A write first: what it held before does not matter.
            _ => {}
        }
    }
    before
}

/// A recorded exchange as the kit replays it; `None` for a request the host
/// refused before sending (the replay's host decides those again).
fn exchange(taped: &Taped) -> Option<RecordedExchange> {
    let kept = |headers: &[(String, String)], leave_out: &[&str]| {
        headers
            .iter()
            .filter(|(n, v)| v != REDACTED && !leave_out.iter().any(|l| n.eq_ignore_ascii_case(l)))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let request = RecordedRequest {
        method: taped.request.method.clone(),
        url: redacted_as_any(&taped.request.url),
        headers: kept(&taped.request.headers, &[]),
        // A body with a redacted member is matched whatever it holds: the
        // replayed plugin sends the value it computes.
        body: taped
            .request
            .body
            .body
            .clone()
            .filter(|body| !body.to_string().contains(REDACTED)),
    };
    let response = match (&taped.response, taped.error.as_deref()) {
        (Some(response), _) => RecordedResponse {
            status: response.status,
            headers: kept(&response.headers, &FRAMING_HEADERS),
            body: response.body.body.clone(),
            body_text: response.body.body_text.clone(),
            body_base64: response.body.body_base64.clone(),
            ..RecordedResponse::default()
        },
        (None, Some("HTTP-request-denied" | "destination-IP-prohibited"))
        | (None, Some("HTTP-request-URI-invalid")) => return None,
        (None, Some("connection-timeout" | "connection-read-timeout")) => RecordedResponse {
            timeout: true,
            ..RecordedResponse::default()
        },
        (None, _) => RecordedResponse {
            unreachable: true,
            ..RecordedResponse::default()
        },
    };
    Some(RecordedExchange { request, response })
}

/// `url` with each query value the transcript redacted taking any value: the
/// replayed plugin sends the value it computes, which the recording never
/// had.
fn redacted_as_any(url: &str) -> String {
    let redacted = format!("={}", REDACTED.replace('[', "%5B").replace(']', "%5D"));
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.strip_suffix(redacted.as_str()) {
            Some(name) => format!("{name}=*"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// What a replay cannot reproduce exactly: bodies the transcript cut or that
/// failed part way.
fn inexact(transcript: &Transcript) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, e) in transcript.calls.http.iter().enumerate() {
        let at = format!("request {} ({} {})", i + 1, e.request.method, e.request.url);
        if e.request.body.truncated {
            notes.push(format!("{at}: its body was cut in the transcript"));
        }
        if let Some(response) = &e.response {
            if response.body.truncated {
                notes.push(format!(
                    "{at}: the response body was cut in the transcript; the replay serves what was kept"
                ));
            }
            if let Some(error) = &response.body_error {
                notes.push(format!(
                    "{at}: the response body failed part way ({error}); the replay serves it whole"
                ));
            }
        }
    }
    notes
}

/// `patchbay plugin replay`: the report, and whether the replay matched.
pub(super) async fn run(
    transcript_path: &Path,
    dir: &Path,
    save_fixture: Option<&Path>,
) -> anyhow::Result<(kit::Report, Vec<String>)> {
    let transcript = read(transcript_path)?;
    let manifest_path = dir.join("plugin.toml");
    let manifest = Manifest::parse(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{}", manifest_path.display()))?;
    if manifest.id != transcript.plugin {
        bail!(
            "the transcript is of plugin {:?}; {} holds {:?} (give the plugin's directory with --plugin)",
            transcript.plugin,
            dir.display(),
            manifest.id
        );
    }
    let fixture = fixture(&transcript, &manifest);
    let mut notes = vec![format!(
        "invocation {} of {} {} ({}), recorded at {} ms; replayed on {} {}",
        transcript.invocation_id,
        transcript.plugin,
        transcript.version,
        transcript.operation,
        transcript.at_ms,
        manifest.id,
        manifest.version
    )];
    notes.extend(inexact(&transcript));
    notes.extend(
        transcript
            .calls
            .truncated
            .iter()
            .map(|t| format!("the transcript left out {t}: the replay may differ there")),
    );
    if let Some(path) = save_fixture {
        let mut saved = fixture.clone();
        saved.name = Some(format!("recorded {}", transcript.invocation_id));
        let text = serde_json::to_string_pretty(&saved)? + "\n";
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .with_context(|| {
                format!("writing the fixture {} (it must not exist)", path.display())
            })?;
        notes.push(format!("fixture written to {}", path.display()));
    }
    let name = fixture
        .name
        .clone()
        .unwrap_or_else(|| transcript.invocation_id.clone());
    let report = kit::run_one(dir, &name, &fixture).await?;
    Ok((report, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::recording::{
        HostCalls, KvCall, RecordedRequest, RecordedResponse as TapedResponse,
    };
    use serde_json::json;

    fn call(op: &str, key: &str, result: Value, delta: Option<i64>) -> KvCall {
        KvCall {
            op: op.into(),
            key: key.into(),
            value: None,
            ttl_ms: None,
            delta,
            result,
            error: None,
        }
    }

    fn transcript(calls: HostCalls) -> Transcript {
        serde_json::from_value(json!({
            "format": TRANSCRIPT_FORMAT, "invocation_id": "i", "at_ms": 1, "duration_ms": 1,
            "workspace": "w", "connection": "c", "plugin": "p", "version": "1.0.0",
            "operation": "op", "input": {}
        }))
        .map(|mut t: Transcript| {
            t.calls = calls;
            t
        })
        .expect("a transcript")
    }

    #[test]
    fn the_kv_a_call_found_is_read_from_its_first_call_on_each_key() {
        let calls = HostCalls {
            kv: vec![
                call("get", "cached", json!("{\"id\":1}"), None),
                call("get", "cached", json!(null), None),
                call("get", "missing", json!(null), None),
                call("set", "written", json!(null), None),
                call("get", "written", json!("new"), None),
                call("increment", "counter", json!(7), Some(2)),
                call("increment", "fresh", json!(1), Some(1)),
                call("delete", "gone", json!(true), None),
                call("list-keys", "k:", json!(["k:1", "cached", "k:2"]), None),
                call("get", "k:2", json!("listed, then read"), None),
                call("get", "big", json!({"omitted": "too large to keep"}), None),
                call("get", "big", json!("read again, kept"), None),
            ],
            ..HostCalls::default()
        };
        let before = kv_before(&transcript(calls));
        let text = |s: &str| KvValue::Text(s.into());
        assert_eq!(before.get("cached"), Some(&text("{\"id\":1}")));
        assert_eq!(before.get("missing"), None, "found absent");
        assert_eq!(before.get("written"), None, "its first call wrote it");
        assert_eq!(before.get("counter"), Some(&text("5")));
        assert_eq!(before.get("fresh"), None, "an increment from nothing");
        assert_eq!(before.get("gone"), Some(&text("")));
        assert_eq!(before.get("k:1"), Some(&text("")));
        assert_eq!(
            before.get("k:2"),
            Some(&text("listed, then read")),
            "a listed key's read replaces its placeholder"
        );
        assert_eq!(
            before.get("big"),
            Some(&text("read again, kept")),
            "a value left out settles nothing"
        );
        assert_eq!(before.len(), 6);
    }

    #[test]
    fn a_redacted_query_value_takes_any_value_in_the_replay() {
        assert_eq!(
            redacted_as_any("https://x.test/a?q=ada&api_key=%5Bredacted%5D&n=1"),
            "https://x.test/a?q=ada&api_key=*&n=1"
        );
        assert_eq!(redacted_as_any("https://x.test/a"), "https://x.test/a");
    }

    #[test]
    fn exchanges_keep_answers_timeouts_and_unreachable_upstreams_and_drop_refusals() {
        let request = RecordedRequest {
            method: "GET".into(),
            url: "https://x.test/a".into(),
            headers: vec![
                ("Accept".into(), "application/json".into()),
                ("authorization".into(), REDACTED.into()),
            ],
            body: Default::default(),
        };
        let taped = |response: Option<TapedResponse>, error: Option<&str>| Taped {
            request: request.clone(),
            response,
            error: error.map(str::to_owned),
        };
        let answered = exchange(&taped(
            Some(TapedResponse {
                status: 200,
                headers: vec![
                    ("content-length".into(), "9".into()),
                    ("x-rate".into(), "9".into()),
                ],
                body: Default::default(),
                body_error: None,
            }),
            None,
        ))
        .expect("kept");
        assert_eq!(
            answered.request.headers.len(),
            1,
            "the redacted one is left out"
        );
        assert_eq!(answered.request.headers["accept"], "application/json");
        assert!(!answered.response.headers.contains_key("content-length"));
        assert_eq!(answered.response.headers["x-rate"], "9");
        assert!(
            exchange(&taped(None, Some("connection-timeout")))
                .expect("kept")
                .response
                .timeout
        );
        assert!(
            exchange(&taped(None, Some("connection-refused")))
                .expect("kept")
                .response
                .unreachable
        );
        assert!(exchange(&taped(None, Some("HTTP-request-denied"))).is_none());
    }
}
