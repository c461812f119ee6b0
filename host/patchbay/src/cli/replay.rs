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
    let mut known = HashSet::new();
    let mut before = BTreeMap::new();
    for call in &transcript.calls.kv {
        if call.error.is_some() {
            continue;
        }
        match call.op.as_str() {
            "list-keys" => {
                for key in call.result.as_array().into_iter().flatten() {
                    if let Some(key) = key.as_str()
                        && known.insert(key.to_owned())
                    {
                        before.insert(key.to_owned(), KvValue::Text(String::new()));
                    }
                }
            }
            _ if !known.insert(call.key.clone()) => {}
            "get" => {
                if let Ok(value) = serde_json::from_value::<KvValue>(call.result.clone()) {
                    before.insert(call.key.clone(), value);
                }
            }
            "delete" if call.result == Value::Bool(true) => {
                before.insert(call.key.clone(), KvValue::Text(String::new()));
            }
            "increment" => {
                if let (Some(now), Some(delta)) = (call.result.as_i64(), call.delta) {
                    let start = now.wrapping_sub(delta);
                    if start != 0 {
                        before.insert(call.key.clone(), KvValue::Text(start.to_string()));
                    }
                }
            }
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
        url: taped.request.url.clone(),
        headers: kept(&taped.request.headers, &[]),
        body: taped.request.body.body.clone(),
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
