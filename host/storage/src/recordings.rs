//! Recordings of connections' invocations, and the transcripts they keep.
//!
//! Trees (on the outbox's backend, so a transcript and its count are one
//! transaction):
//! - `recordings`: `scope` → the connection's [`RecordingState`] (JSON);
//! - `transcripts`: `scope | 0 | invocation id` → its summary (JSON), and
//!   `scope | 1 | invocation id` → the transcript (JSON).
//!
//! Whether a connection records is also kept in memory, so a call on a
//! connection that does not record (nearly all of them) costs one atomic
//! load, not a read of the store.

use crate::outbox::{OutboxBackend, Tree, TxError};
use crate::{Scope, StorageError, workspace_prefix};
use patchbay_policy::recording::{
    MAX_RECORDED_INVOCATIONS, Recording, RecordingRequest, TranscriptSummary,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A connection's recording, and how many transcripts it keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordingState {
    /// The recording, while it is on or until it is stopped.
    pub recording: Option<Recording>,
    /// Transcripts stored for the connection.
    pub kept: u32,
    /// When the last recording started (ms), kept after it stops: each new
    /// one starts later, so a call taken by an old recording is never saved
    /// into a new one, however quickly it was restarted.
    #[serde(default)]
    pub last_started_ms: u64,
}

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Keeping what it asks beside what is kept would pass the bound.
    #[error(
        "the connection keeps {kept} transcripts; with {asked} more it would pass {MAX_RECORDED_INVOCATIONS}: delete its transcripts first"
    )]
    TooMany {
        /// Transcripts kept.
        kept: u32,
        /// Invocations asked for.
        asked: u32,
    },
}

/// Recordings and transcripts.
pub struct Recordings {
    backend: Arc<dyn OutboxBackend>,
    /// Connections whose recording is on (perhaps past its end: the store
    /// decides), and how many.
    on: RwLock<HashSet<Scope>>,
    on_count: AtomicUsize,
    /// Held by every change (start, stop, take, save, clear, removal), so a
    /// change and the in-memory flag it sets are one step, never interleaved
    /// with another's.
    changing: Mutex<()>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recordings")
    }
}

/// Most transcripts one connection keeps at once.
pub const MAX_KEPT: u32 = MAX_RECORDED_INVOCATIONS;

fn transcript_key(scope: &Scope, part: u8, id: &str) -> Vec<u8> {
    let mut key = scope.prefix();
    key.push(part);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The keys starting with `prefix`: from it, to the first key past them.
fn range_of(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let to = crate::outbox::after_prefix(&prefix);
    (prefix, to)
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Backend(format!("recordings: {e}")))
}

fn parse<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StorageError::Backend(format!("recordings: a stored record does not read: {e}"))
    })
}

impl Recordings {
    /// Recordings on `backend`, with the connections that record read in.
    pub fn open(backend: Arc<dyn OutboxBackend>) -> Result<Self, StorageError> {
        let mut on = HashSet::new();
        let mut from = Vec::new();
        loop {
            // Every key: a scope's prefix starts with a 4-byte length.
            let batch = backend.scan(Tree::Recordings, &from, &[0xff; 5], 1_000)?;
            let last = batch.last().map(|(k, _)| k.clone());
            for (key, value) in &batch {
                let state: RecordingState = parse(value)?;
                if state.recording.is_some()
                    && let Some((scope, _)) = Scope::split_key(key)
                {
                    on.insert(scope);
                }
            }
            match last {
                Some(mut key) if batch.len() == 1_000 => {
                    key.push(0);
                    from = key;
                }
                _ => break,
            }
        }
        Ok(Self {
            backend,
            on_count: AtomicUsize::new(on.len()),
            on: RwLock::new(on),
            changing: Mutex::new(()),
        })
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn transact<T>(
        &self,
        body: impl FnMut(&dyn crate::outbox::Tx) -> Result<T, TxError>,
    ) -> Result<T, StorageError> {
        crate::outbox::transact(&*self.backend, body)
    }

    fn mark(&self, scope: &Scope, on: bool) {
        let mut set = self.on.write().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(scope.clone());
        } else {
            set.remove(scope);
        }
        self.on_count.store(set.len(), Ordering::Release);
    }

    fn state_in(tx: &dyn crate::outbox::Tx, scope: &Scope) -> Result<RecordingState, TxError> {
        match tx.get(Tree::Recordings, &scope.prefix())? {
            Some(bytes) => Ok(parse(&bytes)?),
            None => Ok(RecordingState::default()),
        }
    }

    /// `scope`'s recording and transcript count.
    pub fn state(&self, scope: &Scope) -> Result<RecordingState, StorageError> {
        match self.backend.get(Tree::Recordings, &scope.prefix())? {
            Some(bytes) => parse(&bytes),
            None => Ok(RecordingState::default()),
        }
    }

    /// Start recording `scope` as `request` asks, from `now_ms`, replacing
    /// any recording it had (its transcripts are kept). Durable when it
    /// returns.
    pub fn start(
        &self,
        scope: &Scope,
        request: RecordingRequest,
        now_ms: u64,
    ) -> Result<RecordingState, RecordingError> {
        let _changing = self.changing();
        let mut too_many = None;
        let state = self.transact(|tx| {
            let mut state = Self::state_in(tx, scope)?;
            too_many = None;
            if state.kept.saturating_add(request.max_invocations) > MAX_KEPT {
                too_many = Some(state.kept);
                return Ok(state);
            }
            let started = match state.last_started_ms {
                0 => now_ms,
                last => now_ms.max(last.saturating_add(1)),
            };
            state.recording = Some(Recording::start(request, started));
            state.last_started_ms = started;
            tx.insert(Tree::Recordings, &scope.prefix(), &json(&state)?)?;
            Ok(state)
        })?;
        if let Some(kept) = too_many {
            return Err(RecordingError::TooMany {
                kept,
                asked: request.max_invocations,
            });
        }
        self.backend.flush()?;
        self.mark(scope, true);
        Ok(state)
    }

    /// Stop recording `scope`; whether it was recording. Its transcripts are kept.
    pub fn stop(&self, scope: &Scope) -> Result<bool, StorageError> {
        let _changing = self.changing();
        let was = self.transact(|tx| {
            let mut state = Self::state_in(tx, scope)?;
            let was = state.recording.take().is_some();
            if was {
                Self::put(tx, scope, &state)?;
            }
            Ok(was)
        })?;
        self.backend.flush()?;
        self.mark(scope, false);
        Ok(was)
    }

    fn put(
        tx: &dyn crate::outbox::Tx,
        scope: &Scope,
        state: &RecordingState,
    ) -> Result<(), TxError> {
        if *state == RecordingState::default() {
            tx.remove(Tree::Recordings, &scope.prefix())
        } else {
            tx.insert(Tree::Recordings, &scope.prefix(), &json(state)?)
        }
    }

    /// Whether an invocation of `scope` starting at `now_ms` is recorded:
    /// the recording's start time when it is (and it counts against the
    /// recording's bound), to hand back to [`save`](Self::save). A
    /// connection that does not record costs one atomic load.
    pub fn take(&self, scope: &Scope, now_ms: u64) -> Result<Option<u64>, StorageError> {
        if !self.may_record(scope) {
            return Ok(None);
        }
        let _changing = self.changing();
        let (taken, ended) = self.transact(|tx| {
            let mut state = Self::state_in(tx, scope)?;
            let Some(recording) = &mut state.recording else {
                return Ok((None, true));
            };
            if !recording.active(now_ms) {
                return Ok((None, true));
            }
            recording.taken += 1;
            let ended = !recording.active(now_ms);
            let started = recording.started_at_ms;
            Self::put(tx, scope, &state)?;
            Ok((Some(started), ended))
        })?;
        if ended {
            // Past its count or its time: the next call skips the store.
            // The record stays, so the API shows how it ended.
            self.mark(scope, false);
        }
        Ok(taken)
    }

    /// Whether `scope` may be recording (the store decides, in
    /// [`take`](Self::take)): an atomic load when no connection records,
    /// and a set lookup when some do.
    pub fn may_record(&self, scope: &Scope) -> bool {
        self.on_count.load(Ordering::Acquire) > 0
            && self
                .on
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(scope)
    }

    /// Keep `transcript` (JSON) of invocation `id` for `scope`, with its
    /// summary, if the recording that took the call (started at `started`)
    /// is still the connection's: a call that outlived its recording (stopped,
    /// replaced, or gone with its connection or workspace) keeps nothing.
    /// Whether it was kept; durable when it returns.
    pub fn save(
        &self,
        scope: &Scope,
        started: u64,
        id: &str,
        summary: &TranscriptSummary,
        transcript: &[u8],
    ) -> Result<bool, StorageError> {
        let summary = json(summary)?;
        let _changing = self.changing();
        let kept = self.transact(|tx| {
            let mut state = Self::state_in(tx, scope)?;
            if state.recording.is_none_or(|r| r.started_at_ms != started) {
                return Ok(false);
            }
            if tx
                .get(Tree::Transcripts, &transcript_key(scope, 1, id))?
                .is_none()
            {
                state.kept = state.kept.saturating_add(1);
            }
            tx.insert(Tree::Transcripts, &transcript_key(scope, 0, id), &summary)?;
            tx.insert(Tree::Transcripts, &transcript_key(scope, 1, id), transcript)?;
            Self::put(tx, scope, &state)?;
            Ok(true)
        })?;
        // Committed: other connections' recorded calls need not wait for
        // this one's flush.
        drop(_changing);
        self.backend.flush()?;
        Ok(kept)
    }

    /// Summaries of `scope`'s transcripts, oldest first.
    pub fn list(&self, scope: &Scope) -> Result<Vec<TranscriptSummary>, StorageError> {
        let mut prefix = scope.prefix();
        prefix.push(0);
        let (from, to) = range_of(prefix);
        let entries = self
            .backend
            .scan(Tree::Transcripts, &from, &to, MAX_KEPT as usize * 2)?;
        let mut out: Vec<TranscriptSummary> = entries
            .iter()
            .map(|(_, v)| parse(v))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| (a.at_ms, &a.invocation_id).cmp(&(b.at_ms, &b.invocation_id)));
        Ok(out)
    }

    /// The transcript of invocation `id` of `scope` (JSON).
    pub fn get(&self, scope: &Scope, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend
            .get(Tree::Transcripts, &transcript_key(scope, 1, id))
    }

    /// Remove `scope`'s transcripts, and its recording with them when
    /// `recording` is set; how many transcripts went. Durable when it returns.
    pub fn clear(&self, scope: &Scope, recording: bool) -> Result<usize, StorageError> {
        let _changing = self.changing();
        let removed = self.remove_prefix(Tree::Transcripts, scope.prefix())?;
        self.transact(|tx| {
            let mut state = Self::state_in(tx, scope)?;
            state.kept = 0;
            if recording {
                // The connection goes: nothing of it stays.
                state = RecordingState::default();
            }
            Self::put(tx, scope, &state)?;
            Ok(())
        })?;
        self.backend.flush()?;
        if recording {
            self.mark(scope, false);
        }
        Ok(removed / 2)
    }

    /// Remove everything of `workspace`: its connections' recordings and
    /// transcripts. Durable when it returns.
    pub fn remove_workspace(&self, workspace: &str) -> Result<(), StorageError> {
        let _changing = self.changing();
        self.remove_prefix(Tree::Transcripts, workspace_prefix(workspace))?;
        self.remove_prefix(Tree::Recordings, workspace_prefix(workspace))?;
        self.backend.flush()?;
        let mut set = self.on.write().unwrap_or_else(|e| e.into_inner());
        set.retain(|scope| scope.workspace != workspace);
        self.on_count.store(set.len(), Ordering::Release);
        Ok(())
    }

    /// Remove every key of `tree` starting with `prefix`, in batches.
    fn remove_prefix(&self, tree: Tree, prefix: Vec<u8>) -> Result<usize, StorageError> {
        let (from, to) = range_of(prefix);
        let mut removed = 0;
        loop {
            let batch = self.backend.scan(tree, &from, &to, 256)?;
            if batch.is_empty() {
                return Ok(removed);
            }
            removed += batch.len();
            self.transact(|tx| {
                for (key, _) in &batch {
                    tx.remove(tree, key)?;
                }
                Ok(())
            })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryOutbox;

    fn scope(ws: &str, c: &str) -> Scope {
        Scope {
            workspace: ws.into(),
            connection: c.into(),
        }
    }

    fn summary(id: &str, at_ms: u64) -> TranscriptSummary {
        TranscriptSummary {
            invocation_id: id.into(),
            at_ms,
            operation: "op".into(),
            outcome: "ok".into(),
            requests: 0,
        }
    }

    fn taken(recordings: &Recordings, scope: &Scope, now: u64) -> Option<u64> {
        recordings.take(scope, now).expect("take")
    }

    #[test]
    fn a_recording_takes_its_count_then_stops_and_its_transcripts_stay_apart() {
        let backend: Arc<dyn OutboxBackend> = Arc::new(MemoryOutbox::default());
        let recordings = Recordings::open(backend.clone()).expect("open");
        let (a, b) = (scope("ws", "crm"), scope("ws", "crm2"));
        assert_eq!(
            taken(&recordings, &a, 0),
            None,
            "nothing records by default"
        );
        let request = RecordingRequest {
            max_invocations: 2,
            for_minutes: 1,
        };
        recordings.start(&a, request, 1_000).expect("start");
        assert_eq!(
            taken(&recordings, &b, 1_000),
            None,
            "only the connection asked for"
        );
        assert_eq!(taken(&recordings, &a, 1_000), Some(1_000));
        assert_eq!(taken(&recordings, &a, 1_001), Some(1_000));
        assert_eq!(taken(&recordings, &a, 1_002), None, "past its count");
        for (id, at) in [("id-2", 2), ("id-1", 1)] {
            let body = format!("{{\"n\":{at}}}");
            let kept = recordings
                .save(&a, 1_000, id, &summary(id, at), body.as_bytes())
                .expect("save");
            assert!(kept);
        }
        let listed: Vec<String> = recordings
            .list(&a)
            .expect("list")
            .into_iter()
            .map(|s| s.invocation_id)
            .collect();
        assert_eq!(listed, ["id-1", "id-2"], "oldest first");
        assert!(recordings.list(&b).expect("list").is_empty());
        assert_eq!(
            recordings.get(&a, "id-1").expect("get").expect("kept"),
            b"{\"n\":1}"
        );
        assert!(recordings.get(&b, "id-1").expect("get").is_none());
        assert_eq!(recordings.state(&a).expect("state").kept, 2);

        // Reopened: what is on is read back in.
        let again = Recordings::open(backend.clone()).expect("open");
        again.start(&b, request, 5_000).expect("start");
        let reopened = Recordings::open(backend).expect("open");
        assert_eq!(taken(&reopened, &b, 5_000), Some(5_000));
        assert_eq!(taken(&reopened, &b, 5_000 + 61_000), None, "past its time");

        assert_eq!(recordings.clear(&a, true).expect("clear"), 2);
        assert!(recordings.list(&a).expect("list").is_empty());
        assert_eq!(
            recordings.state(&a).expect("state"),
            RecordingState::default()
        );
    }

    #[test]
    fn a_call_that_outlives_its_recording_keeps_nothing() {
        let backend: Arc<dyn OutboxBackend> = Arc::new(MemoryOutbox::default());
        let recordings = Recordings::open(backend).expect("open");
        let a = scope("ws", "crm");
        let request = RecordingRequest {
            max_invocations: 5,
            for_minutes: 1,
        };
        recordings.start(&a, request, 10).expect("start");
        let started = taken(&recordings, &a, 10).expect("taken");
        // The connection is deleted (its data cleared) while the call runs.
        recordings.clear(&a, true).expect("clear");
        let kept = recordings
            .save(&a, started, "late", &summary("late", 10), b"{}")
            .expect("save");
        assert!(!kept);
        assert!(recordings.list(&a).expect("list").is_empty());
        assert_eq!(
            recordings.state(&a).expect("state"),
            RecordingState::default()
        );
        // A recording stopped and started anew within the same millisecond
        // is another: a call the first took keeps nothing in the second.
        recordings.start(&a, request, 20).expect("start");
        let first = taken(&recordings, &a, 20).expect("taken");
        recordings.stop(&a).expect("stop");
        recordings.start(&a, request, 20).expect("start");
        assert_eq!(taken(&recordings, &a, 20), Some(first + 1));
        let kept = recordings
            .save(&a, first, "late", &summary("late", 20), b"{}")
            .expect("save");
        assert!(!kept);
        assert_eq!(recordings.state(&a).expect("state").kept, 0);
    }

    #[test]
    fn a_recording_that_would_keep_too_many_is_refused_and_a_workspace_goes_whole() {
        let backend: Arc<dyn OutboxBackend> = Arc::new(MemoryOutbox::default());
        let recordings = Recordings::open(backend).expect("open");
        let a = scope("ws", "crm");
        let request = RecordingRequest {
            max_invocations: MAX_KEPT,
            for_minutes: 1,
        };
        recordings.start(&a, request, 0).expect("start");
        let started = taken(&recordings, &a, 0).expect("taken");
        recordings
            .save(&a, started, "x", &summary("x", 0), b"{}")
            .expect("save");
        let refused = recordings.start(&a, request, 0).expect_err("refused");
        assert!(
            refused.to_string().contains("delete its transcripts"),
            "{refused}"
        );
        let other = scope("ws-2", "crm");
        recordings.start(&other, request, 0).expect("start");
        recordings.remove_workspace("ws").expect("remove");
        assert!(recordings.list(&a).expect("list").is_empty());
        assert_eq!(
            recordings.state(&a).expect("state"),
            RecordingState::default()
        );
        assert_eq!(taken(&recordings, &a, 0), None);
        assert_eq!(
            taken(&recordings, &other, 0),
            Some(0),
            "another workspace is untouched"
        );
    }
}
