//! Recording a connection's invocations: turned on by the operator for a
//! bounded count and time, each recorded call keeps a transcript of its host
//! calls (see `patchbay_policy::recording`) that `patchbay plugin replay`
//! runs again offline.

use crate::invoke::Bound;
use crate::service::{Tenancy, TenancyError};
use patchbay_policy::recording::{
    Body, HostCalls, MAX_STORED_TRANSCRIPT_BYTES, REDACTED, RecordedError, RecordingRequest,
    Redactor, TRANSCRIPT_FORMAT, Transcript, TranscriptSummary,
};
use patchbay_runtime::InvokeOutcome;
use patchbay_runtime::record::Tape;
use patchbay_storage::Scope;
use patchbay_storage::recordings::{RecordingError, RecordingState};
use serde_json::Value as Json;
use std::sync::Arc;

/// Why a recording request failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No such workspace or connection, or the store failed.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The request is out of bounds; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

impl From<RecordingError> for RecordError {
    fn from(e: RecordingError) -> Self {
        match e {
            RecordingError::Storage(e) => Self::Tenancy(e.into()),
            too_many @ RecordingError::TooMany { .. } => Self::Invalid(too_many.to_string()),
        }
    }
}

/// What a call being recorded needs kept until it ends.
pub(crate) struct Taping {
    pub(crate) tape: Arc<Tape>,
    input: Json,
    idempotency_key: Option<String>,
    at_ms: u64,
    /// The recording that took the call: its transcript goes to it only.
    recording_started: u64,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, patchbay_storage::StorageError> + Send + 'static,
) -> Result<T, TenancyError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TenancyError::Storage(e.to_string()))?
        .map_err(TenancyError::from)
}

impl Tenancy {
    /// Start recording `workspace`'s connection `name` as `request` asks.
    pub async fn start_recording(
        &self,
        workspace: &str,
        name: &str,
        request: RecordingRequest,
    ) -> Result<RecordingState, RecordError> {
        request.check().map_err(RecordError::Invalid)?;
        let scope = self.connection(workspace, name)?.scope();
        let (recordings, now) = (self.recordings.clone(), (self.clock)());
        tokio::task::spawn_blocking(move || recordings.start(&scope, request, now))
            .await
            .map_err(|e| TenancyError::Storage(e.to_string()))?
            .map_err(RecordError::from)
    }

    /// Stop recording the connection; whether it was recording.
    pub async fn stop_recording(&self, workspace: &str, name: &str) -> Result<bool, TenancyError> {
        let scope = self.connection(workspace, name)?.scope();
        let recordings = self.recordings.clone();
        blocking(move || recordings.stop(&scope)).await
    }

    /// The connection's recording (whether it records now, at `now`) and
    /// how many transcripts it keeps.
    pub async fn recording(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<(RecordingState, bool), TenancyError> {
        let scope = self.connection(workspace, name)?.scope();
        let (recordings, now) = (self.recordings.clone(), (self.clock)());
        let state = blocking(move || recordings.state(&scope)).await?;
        let active = state.recording.as_ref().is_some_and(|r| r.active(now));
        Ok((state, active))
    }

    /// Summaries of the connection's transcripts, oldest first.
    pub async fn transcripts(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Vec<TranscriptSummary>, TenancyError> {
        let scope = self.connection(workspace, name)?.scope();
        let recordings = self.recordings.clone();
        blocking(move || recordings.list(&scope)).await
    }

    /// The transcript of invocation `id` of the connection (JSON text).
    pub async fn transcript(
        &self,
        workspace: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, TenancyError> {
        let scope = self.connection(workspace, name)?.scope();
        let (recordings, id) = (self.recordings.clone(), id.to_owned());
        blocking(move || recordings.get(&scope, &id)).await
    }

    /// Delete the connection's transcripts (its recording goes on, if on);
    /// how many went.
    pub async fn delete_transcripts(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<usize, TenancyError> {
        let scope = self.connection(workspace, name)?.scope();
        let recordings = self.recordings.clone();
        blocking(move || recordings.clear(&scope, false)).await
    }

    /// A tape for a call on `bound`, when its connection records now.
    pub(crate) async fn taping(
        &self,
        bound: &Bound,
        input: &Json,
        idempotency_key: &Option<String>,
    ) -> Option<Taping> {
        // The path of nearly every call: one atomic load, nothing allocated.
        if !self.recordings.may_record(&bound.binding.scope) {
            return None;
        }
        let scope: Scope = (*bound.binding.scope).clone();
        let (recordings, now) = (self.recordings.clone(), (self.clock)());
        let recording_started = match blocking(move || recordings.take(&scope, now)).await {
            Ok(Some(started)) => started,
            Ok(None) => return None,
            Err(e) => {
                // Recording is for debugging: the call goes on unrecorded.
                tracing::warn!(target: "patchbay::recording", error = %e,
                    "could not tell whether the call is recorded; it is not");
                return None;
            }
        };
        let manifest = &bound.plugin.manifest;
        let headers = manifest
            .capabilities
            .credentials
            .iter()
            .filter_map(|c| c.header.as_deref());
        let redactor = Redactor::new(&manifest.recording.redact, headers);
        let mut input = input.clone();
        redactor.json(&mut input);
        Some(Taping {
            tape: Tape::recording(redactor),
            input,
            idempotency_key: idempotency_key.clone(),
            at_ms: now,
            recording_started,
        })
    }

    /// Keep the transcript of a recorded call that ended with `outcome`.
    pub(crate) async fn keep_transcript(
        &self,
        bound: &Bound,
        operation: &str,
        taping: Taping,
        outcome: &InvokeOutcome,
    ) {
        let manifest = &bound.plugin.manifest;
        let mut config = patchbay_runtime::schema_defaults(manifest);
        config.extend(patchbay_runtime::config_strings(&bound.connection.config));
        let (output, error) = match &outcome.result {
            Ok(output) => (Some(output.clone()), None),
            Err(e) => (
                None,
                Some(RecordedError {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                }),
            ),
        };
        let transcript = Transcript {
            format: TRANSCRIPT_FORMAT.to_owned(),
            invocation_id: outcome.invocation_id.clone(),
            at_ms: taping.at_ms,
            duration_ms: outcome.duration.as_millis() as u64,
            workspace: bound.connection.workspace.clone(),
            connection: bound.connection.name.clone(),
            plugin: manifest.id.clone(),
            version: manifest.version.to_string(),
            operation: operation.to_owned(),
            input: taping.input,
            idempotency_key: taping.idempotency_key,
            config,
            grants: bound.connection.grants.clone(),
            output,
            error,
            calls: HostCalls::default(),
        };
        // Redacting and writing up to a few MiB: off the async workers.
        let tape = taping.tape;
        let written = tokio::task::spawn_blocking(move || finish(transcript, &tape)).await;
        let Ok(Some((summary, text))) = written else {
            return;
        };
        // A connection deleted (or deleted and made anew) while the call ran
        // keeps nothing: its data went with it.
        let (store, recordings) = (self.store.clone(), self.recordings.clone());
        let connection = &bound.connection;
        let (workspace, name, created) = (
            connection.workspace.clone(),
            connection.name.clone(),
            connection.created_at_ms,
        );
        let (scope, id, started) = (
            connection.scope(),
            outcome.invocation_id.clone(),
            taping.recording_started,
        );
        let saved = blocking(move || {
            let same = store
                .get_connection(&workspace, &name)?
                .is_some_and(|now| now.created_at_ms == created);
            if !same {
                return Ok(false);
            }
            recordings.save(&scope, started, &id, &summary, &text)
        });
        if let Err(e) = saved.await {
            tracing::warn!(target: "patchbay::recording", error = %e,
                invocation_id = %outcome.invocation_id, "a transcript could not be kept");
        }
    }
}

/// The transcript with the tape's host calls, redacted, and written as it is
/// stored (its bodies left out when it would pass
/// [`MAX_STORED_TRANSCRIPT_BYTES`]); `None` when it cannot be written.
fn finish(mut transcript: Transcript, tape: &Tape) -> Option<(TranscriptSummary, Vec<u8>)> {
    let redactor = tape.redactor();
    for (key, value) in transcript.config.iter_mut() {
        if redactor.is_secret_field(key) {
            *value = REDACTED.to_owned();
        }
    }
    if let Some(output) = &mut transcript.output {
        redactor.json(output);
    }
    transcript.calls = tape.take();
    let summary = transcript.summary();
    let write = |t: &Transcript| {
        serde_json::to_vec(t)
            .map_err(|e| {
                tracing::warn!(target: "patchbay::recording", error = %e,
                    "a transcript could not be written");
            })
            .ok()
    };
    let mut text = write(&transcript)?;
    if text.len() > MAX_STORED_TRANSCRIPT_BYTES {
        // Escaping can make what was kept grow: the bodies go first.
        for exchange in &mut transcript.calls.http {
            exchange.request.body = Body {
                truncated: true,
                ..Body::default()
            };
            if let Some(response) = &mut exchange.response {
                response.body = Body {
                    truncated: true,
                    ..Body::default()
                };
            }
        }
        transcript.calls.truncated.push(format!(
            "every body: the transcript as written passed {MAX_STORED_TRANSCRIPT_BYTES} bytes"
        ));
        text = write(&transcript)?;
        if text.len() > MAX_STORED_TRANSCRIPT_BYTES {
            tracing::warn!(target: "patchbay::recording", invocation_id = %transcript.invocation_id,
                bytes = text.len(), "a transcript too large to keep, even without its bodies");
            return None;
        }
    }
    Some((summary, text))
}
