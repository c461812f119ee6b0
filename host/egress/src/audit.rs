//! The audit trail of outbound requests: every attempt, allowed or not.
//!
//! Records are written by one background thread that group-commits: records
//! arriving within 10 ms of each other go out in one batch with one flush.
//! So a burst of requests costs one disk sync, a request never waits on the
//! disk, and a crash loses at most the last window of records. The same thread enforces
//! retention (age and count per workspace) periodically.

use patchbay_policy::clock::Clock;
use patchbay_policy::limits::Retention;
use patchbay_storage::StorageError;
use patchbay_storage::audit::{AuditCursor, AuditRecord, Decision, SharedAudit};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A page of a workspace's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// This page's records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Why a page of the audit trail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The `after` cursor is not one a previous page returned.
    #[error("invalid cursor {0:?}")]
    Cursor(String),
    /// The audit store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

enum Message {
    Record(String, AuditCursor, Vec<u8>),
    /// Answered once everything sent before it is durable.
    Sync(tokio::sync::oneshot::Sender<()>),
    Purge(tokio::sync::oneshot::Sender<Result<usize, StorageError>>),
}

/// Where outbound attempts are recorded.
pub struct AuditLog {
    store: SharedAudit,
    clock: Clock,
    retention: Retention,
    seq: AtomicU64,
    /// Attempts recorded, by decision (allowed, denied, held), for metrics.
    decisions: [AtomicU64; 3],
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer, to wake for a flush someone waits on.
    writer_thread: std::thread::Thread,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("retention", &self.retention)
            .finish()
    }
}

/// Most records written with one flush.
const MAX_BATCH: usize = 4096;

/// How long the writer gathers records before one flush: the most a crash
/// can lose of the trail, besides the flush itself. (Two seconds in unit
/// tests, so a flush that did not end the window early would show.)
const COMMIT_WINDOW: Duration = match cfg!(test) {
    true => Duration::from_secs(2),
    false => Duration::from_millis(10),
};

impl AuditLog {
    /// Start the log and its writer thread on `store`. `clock` stamps records
    /// and ages them; every `purge_every_secs` the writer removes what
    /// `retention` no longer keeps. Fails only if the thread cannot be spawned.
    pub fn start(store: SharedAudit, clock: Clock, retention: Retention) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let writer = {
            let (store, clock) = (store.clone(), clock.clone());
            std::thread::Builder::new()
                .name("patchbay-audit".into())
                .spawn(move || write_loop(&receiver, &store, &clock, retention))?
        };
        let writer_thread = writer.thread().clone();
        Ok(Self {
            store,
            clock,
            retention,
            // Unique within a millisecond across restarts, without a stored counter.
            seq: AtomicU64::new(fastrand::u64(..u64::MAX / 2)),
            decisions: Default::default(),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            writer_thread,
        })
    }

    /// The log's clock now, in milliseconds since the Unix epoch: the time new
    /// records are stamped with.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Attempts recorded since start, by decision.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        let n = |i: usize| self.decisions[i].load(Ordering::Relaxed);
        [("allowed", n(0)), ("denied", n(1)), ("held", n(2))]
    }

    /// Queue `record` for the next group commit.
    pub fn record(&self, record: &AuditRecord) {
        let index = match record.decision {
            Decision::Allowed => 0,
            Decision::Denied => 1,
            Decision::Held => 2,
        };
        self.decisions[index].fetch_add(1, Ordering::Relaxed);
        self.record_any(&record.workspace, record.at_ms, record);
    }

    /// Queue any record of `workspace` made at `at_ms` for the next group
    /// commit: a log kept for another kind of record (caller lookups) shares
    /// the writer, retention and paging of this one.
    pub fn record_any<T: Serialize>(&self, workspace: &str, at_ms: u64, record: &T) {
        let json = match serde_json::to_vec(record) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(target: "patchbay::audit", error = %e, "audit record not serialisable");
                return;
            }
        };
        let cursor = AuditCursor {
            at_ms,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        self.send(Message::Record(workspace.to_owned(), cursor, json));
    }

    /// Wait until every record queued so far is on disk.
    pub async fn flushed(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Message::Sync(tx));
        self.writer_thread.unpark();
        let _ = rx.await;
    }

    /// Enforce retention now (the writer also does it every `purge_every_secs`).
    pub async fn purge_now(&self) -> Result<usize, StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Message::Purge(tx));
        self.writer_thread.unpark();
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Backend("audit writer stopped".into())))
    }

    /// A page of `workspace`'s records with `from_ms <= at < to_ms`, oldest first.
    pub fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, AuditError> {
        let (records, next) = self.query_as(workspace, from_ms, to_ms, after, limit)?;
        Ok(AuditPage { records, next })
    }

    /// [`query`](Self::query) for records of any kind: the page's records
    /// read as `T` (one that does not read is left out), and the next cursor.
    pub fn query_as<T: DeserializeOwned>(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<T>, Option<String>), AuditError> {
        let after = match after {
            Some(text) => {
                Some(AuditCursor::decode(text).ok_or_else(|| AuditError::Cursor(text.to_owned()))?)
            }
            None => None,
        };
        let (stored, more) = self
            .store
            .query(workspace, from_ms, to_ms, after, limit.max(1))?;
        let next = if more {
            stored.last().map(|r| r.cursor.encode())
        } else {
            None
        };
        let records = stored
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.json).ok())
            .collect();
        Ok((records, next))
    }

    /// Remove every record of `workspace` (when the workspace is deleted).
    pub async fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        self.flushed().await;
        let (store, ws) = (self.store.clone(), workspace.to_owned());
        tokio::task::spawn_blocking(move || store.remove_workspace(&ws))
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))?
    }

    fn send(&self, message: Message) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = sender.as_ref()
            && sender.send(message).is_err()
        {
            tracing::error!(target: "patchbay::audit", "audit writer stopped; record lost");
        }
    }
}

impl Drop for AuditLog {
    /// Write out what is queued and stop the writer before the store closes.
    fn drop(&mut self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.writer_thread.unpark();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(
    receiver: &mpsc::Receiver<Message>,
    store: &SharedAudit,
    clock: &Clock,
    retention: Retention,
) {
    let purge_every = Duration::from_secs(u64::from(retention.purge_every_secs.max(1)));
    let mut last_purge = Instant::now();
    loop {
        let first = match receiver.recv_timeout(purge_every) {
            Ok(message) => Some(message),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let gathered = Gathered::after(first, receiver);
        if !gathered.records.is_empty()
            && let Err(e) = store.append(&gathered.records)
        {
            tracing::error!(target: "patchbay::audit", error = %e, records = gathered.records.len(),
                "audit records could not be written");
        }
        for reply in gathered.syncs {
            let _ = reply.send(());
        }
        if !gathered.purges.is_empty() || last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            let result = purge(store, clock, retention);
            for reply in gathered.purges {
                let _ = reply.send(match &result {
                    Ok(n) => Ok(*n),
                    Err(e) => Err(StorageError::Backend(e.to_string())),
                });
            }
        }
    }
}

/// What one flush writes and answers.
#[derive(Default)]
struct Gathered {
    records: Vec<(String, AuditCursor, Vec<u8>)>,
    syncs: Vec<tokio::sync::oneshot::Sender<()>>,
    purges: Vec<tokio::sync::oneshot::Sender<Result<usize, StorageError>>>,
}

impl Gathered {
    /// `first` and what follows it for up to [`COMMIT_WINDOW`], so a steady
    /// stream of requests costs one flush per window, not one per request.
    /// Records queued meanwhile do not wake the writer (a wake-up per record
    /// cost more than writing it); a flush or purge someone waits on does
    /// (its sender unparks the writer), and ends the window early.
    fn after(first: Option<Message>, receiver: &mpsc::Receiver<Message>) -> Self {
        let mut gathered = Self::default();
        let window_ends = Instant::now() + COMMIT_WINDOW;
        let (mut next, mut closed) = (first, false);
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Record(ws, cursor, json) => gathered.records.push((ws, cursor, json)),
                    Message::Sync(reply) => gathered.syncs.push(reply),
                    Message::Purge(reply) => gathered.purges.push(reply),
                }
                if gathered.records.len() < MAX_BATCH {
                    next = queued(receiver, &mut closed);
                }
            }
            let waiting = !gathered.syncs.is_empty() || !gathered.purges.is_empty();
            let left = window_ends.saturating_duration_since(Instant::now());
            // Once the log is closing, what was gathered is written now.
            if closed || waiting || gathered.records.len() >= MAX_BATCH || left.is_zero() {
                return gathered;
            }
            std::thread::park_timeout(left);
            next = queued(receiver, &mut closed);
        }
    }
}

/// The next message already queued, if any; `closed` is set once every
/// sender is gone.
fn queued(receiver: &mpsc::Receiver<Message>, closed: &mut bool) -> Option<Message> {
    match receiver.try_recv() {
        Ok(message) => Some(message),
        Err(mpsc::TryRecvError::Empty) => None,
        Err(mpsc::TryRecvError::Disconnected) => {
            *closed = true;
            None
        }
    }
}

/// Enforce `retention`: records past the age limit, and each workspace's
/// oldest past the count limit, are removed.
fn purge(store: &SharedAudit, clock: &Clock, retention: Retention) -> Result<usize, StorageError> {
    let max_age_ms = u64::from(retention.max_age_days) * 86_400_000;
    let result = store.purge(
        clock().saturating_sub(max_age_ms),
        retention.max_records_per_workspace,
    );
    if let Err(e) = &result {
        tracing::error!(target: "patchbay::audit", error = %e, "audit retention failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::call::CallId;
    use patchbay_storage::audit::{AuditStore, StoredRecord};
    use patchbay_storage::memory::MemoryAudit;
    use std::sync::Arc;

    const DAY_MS: u64 = 86_400_000;

    fn record(workspace: &str, at_ms: u64) -> AuditRecord {
        let call = CallId {
            workspace: workspace.into(),
            connection: "crm".into(),
            plugin: "crm".into(),
            version: "1.0.0".into(),
            operation: "find".into(),
            invocation_id: "inv".into(),
        };
        let uri: http::Uri = "https://api.example.com/v1/x".parse().expect("uri");
        AuditRecord::new(&call, at_ms, "GET", &uri)
    }

    #[tokio::test]
    async fn the_writer_enforces_retention_on_its_own_schedule() {
        let now = 10 * DAY_MS;
        let clock: Clock = Arc::new(move || now);
        let log = AuditLog::start(
            Arc::new(MemoryAudit::default()),
            clock,
            Retention {
                max_age_days: 1,
                max_records_per_workspace: 3,
                purge_every_secs: 1,
            },
        )
        .expect("writer");
        for i in 0..5 {
            log.record(&record("acme", now - 2 * DAY_MS + i));
            log.record(&record("beta", now - 1_000 + i));
        }
        log.flushed().await;
        let count = |ws: &str| {
            log.query(ws, 0, u64::MAX, None, 100)
                .expect("query")
                .records
                .len()
        };
        assert_eq!((count("acme"), count("beta")), (5, 5), "written first");
        // Nobody asks for a purge: the writer's own timer must do it. Bounded wait.
        let deadline = Instant::now() + Duration::from_secs(20);
        while (count("acme"), count("beta")) != (0, 3) {
            assert!(
                Instant::now() < deadline,
                "retention never ran: acme {} beta {}",
                count("acme"),
                count("beta")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kept = log.query("beta", 0, u64::MAX, None, 100).expect("query");
        assert_eq!(
            kept.records.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [now - 998, now - 997, now - 996],
            "the newest are kept"
        );
    }

    /// The memory store, counting the batches appended to it.
    #[derive(Default)]
    struct Batches {
        store: MemoryAudit,
        sizes: Mutex<Vec<usize>>,
    }

    impl AuditStore for Batches {
        fn append(&self, batch: &[(String, AuditCursor, Vec<u8>)]) -> Result<(), StorageError> {
            self.sizes.lock().expect("sizes").push(batch.len());
            self.store.append(batch)
        }
        fn query(
            &self,
            workspace: &str,
            from_ms: u64,
            to_ms: u64,
            after: Option<AuditCursor>,
            limit: usize,
        ) -> Result<(Vec<StoredRecord>, bool), StorageError> {
            self.store.query(workspace, from_ms, to_ms, after, limit)
        }
        fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError> {
            self.store.purge(before_ms, max_per_workspace)
        }
        fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
            self.store.remove_workspace(workspace)
        }
    }

    #[tokio::test]
    async fn a_burst_of_records_is_one_batch_and_a_flush_ends_the_window() {
        let store = Arc::new(Batches::default());
        let log = AuditLog::start(store.clone(), Arc::new(|| 1_000), Retention::default())
            .expect("writer");
        for i in 0..300 {
            log.record(&record("acme", 1_000 + i));
        }
        log.flushed().await;
        let sizes = store.sizes.lock().expect("sizes").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 300, "{sizes:?}");
        // The first record starts the window; the rest of the burst joins it
        // (a slow machine may split it once).
        assert!(sizes.len() <= 2, "{sizes:?}");
        for i in 0..3 {
            log.record(&record("acme", 2_000 + i));
        }
        // A flush someone waits on ends the (two-second, in tests) window at
        // once and is answered with everything queued before it.
        let started = Instant::now();
        log.flushed().await;
        assert!(
            started.elapsed() < COMMIT_WINDOW / 2,
            "{:?}",
            started.elapsed()
        );
        let page = log.query("acme", 2_000, u64::MAX, None, 10).expect("query");
        assert_eq!(page.records.len(), 3);
    }

    #[test]
    fn closing_the_log_writes_what_is_queued_without_waiting_out_the_window() {
        let store = Arc::new(Batches::default());
        let log = AuditLog::start(store.clone(), Arc::new(|| 1_000), Retention::default())
            .expect("writer");
        for i in 0..5 {
            log.record(&record("acme", 1_000 + i));
        }
        let started = Instant::now();
        drop(log);
        assert!(
            started.elapsed() < COMMIT_WINDOW / 2,
            "{:?}",
            started.elapsed()
        );
        let (kept, _) = store.query("acme", 0, u64::MAX, None, 10).expect("query");
        assert_eq!(kept.len(), 5);
    }
}
