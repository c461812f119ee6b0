//! The outbox: accepted events, their deliveries, each destination's queue,
//! the dead-letter queue, and event subscriptions.
//!
//! Accepting a batch of events and fanning each out to its deliveries is one
//! transaction, flushed to disk before [`Outbox::accept`] returns, so an
//! event the API acknowledged is never lost and never half fanned out. Every
//! later change of a delivery (settled, rescheduled, dead-lettered,
//! replayed, purged) is one transaction too: its record, its place in a
//! queue and the counters move together.
//!
//! Trees, and their keys (`ws` is the workspace, length-prefixed, as in
//! every store; `name` parts are length-prefixed too):
//! - `events`: `ws | event id` → accepted at (8) · deliveries still open (4)
//!   · the event's JSON (dropped when none is open). Kept while a delivery
//!   is open, and for at least the idempotency window after acceptance.
//! - `deliveries`: `ws | delivery id (8)` → the [`Delivery`] record (JSON).
//! - `due`: `ws | destination | due at (8) | delivery id (8)` → empty. One
//!   range per destination (a connection), in due-time order: the
//!   destination's queue.
//! - `dead`: `ws | dead-lettered at (8) | delivery id (8)` → empty.
//! - `counts`: `ws | subscription | shard (1)` → pending (8) · dead (8); a
//!   subscription's depth is the sum of its shards.
//! - `subscriptions`: `ws | name` → the subscription (JSON, the caller's).
//!
//! The logic is written once over [`OutboxBackend`]'s transaction and scan;
//! the sled and in-memory backends only provide trees.

use crate::{StorageError, workspace_prefix};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most attempts a delivery's history keeps (the newest); `tries` counts all.
pub const MAX_HISTORY: usize = 50;

/// The trees the outbox keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Accepted events.
    Events,
    /// Delivery records.
    Deliveries,
    /// Each destination's queue, by due time.
    Due,
    /// The dead-letter queue, by time.
    Dead,
    /// Pending and dead deliveries per subscription.
    Counts,
    /// Subscriptions.
    Subscriptions,
    /// Ids of webhooks taken in, by workspace and connection: a repeat is
    /// a duplicate.
    Receipts,
    /// Each workspace's event-flow settings (the dead-letter alert), by name.
    Settings,
    /// Connections' recordings (see `recordings`).
    Recordings,
    /// Recorded invocations' transcripts.
    Transcripts,
}

impl Tree {
    /// Every tree, for backends that open them all.
    pub const ALL: [Tree; 10] = [
        Tree::Events,
        Tree::Deliveries,
        Tree::Due,
        Tree::Dead,
        Tree::Counts,
        Tree::Subscriptions,
        Tree::Receipts,
        Tree::Settings,
        Tree::Recordings,
        Tree::Transcripts,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Events => "outbox-events",
            Tree::Deliveries => "outbox-deliveries",
            Tree::Due => "outbox-due",
            Tree::Dead => "outbox-dead",
            Tree::Counts => "outbox-counts",
            Tree::Subscriptions => "subscriptions",
            Tree::Receipts => "webhook-receipts",
            Tree::Settings => "outbox-settings",
            Tree::Recordings => "recordings",
            Tree::Transcripts => "transcripts",
        }
    }
}

/// Why a transaction's body stopped: a failure to report, or (sled only) a
/// conflict with another transaction, after which the body is run again.
#[derive(Debug)]
pub enum TxError {
    /// Report this and undo the transaction.
    Failed(StorageError),
    /// Another transaction got there first: run the body again.
    Conflict,
}

impl From<StorageError> for TxError {
    fn from(e: StorageError) -> Self {
        TxError::Failed(e)
    }
}

/// Reads and writes inside one transaction; a read sees the transaction's
/// own writes.
pub trait Tx {
    /// The value at `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxError>;
    /// Set `key` to `value`.
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxError>;
    /// Remove `key`.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), TxError>;
}

/// Entries of a scan: `(key, value)`, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The body of a transaction; it may run more than once.
pub type TxBody<'a> = dyn FnMut(&dyn Tx) -> Result<(), TxError> + 'a;

/// What a backend provides: atomic transactions over the trees, ordered
/// scans outside them, unique ids, and a flush to disk.
pub trait OutboxBackend: Send + Sync + 'static {
    /// The value at `key`, outside any transaction.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Run `body` as one transaction: all its writes happen, or none.
    fn transact(&self, body: &mut TxBody<'_>) -> Result<(), StorageError>;
    /// Up to `limit` entries of `tree` with `from <= key < to`, in key order.
    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Entries, StorageError>;
    /// A number never handed out before, by this database, even across restarts.
    fn next_id(&self) -> Result<u64, StorageError>;
    /// Write everything done so far to disk.
    fn flush(&self) -> Result<(), StorageError>;
}

/// One delivery to make of an event being accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The subscription it is for.
    pub subscription: String,
    /// The connection it goes to: its queue.
    pub destination: String,
}

/// An event to accept, with the deliveries it fans out to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's id, unique in the workspace.
    pub id: String,
    /// The event as JSON.
    pub body: Vec<u8>,
    /// One per matching subscription (none is fine: kept for idempotency).
    pub deliveries: Vec<NewDelivery>,
}

/// What became of one event offered to [`Outbox::accept`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// The event's id.
    pub id: String,
    /// Whether the id was already accepted (within the idempotency window,
    /// or still being delivered): nothing new was created.
    pub duplicate: bool,
    /// Deliveries created for it (0 for a duplicate).
    pub deliveries: usize,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// When it ended, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The error code (`upstream`, `rate-limited`, `timeout`…).
    pub code: String,
    /// What went wrong, as the invocation reported it.
    pub message: String,
    /// Whether it used up one of the subscription's attempts (an attempt
    /// held by an open circuit breaker does not).
    pub counted: bool,
    /// The invocation that made it, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// Why and when a delivery was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Why it will not be tried again.
    pub reason: String,
    /// The last attempt's error code.
    pub code: String,
}

/// A delivery of one event to one subscription's destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Unique in the database.
    pub id: u64,
    /// The workspace it belongs to.
    pub workspace: String,
    /// The event delivered.
    pub event_id: String,
    /// The subscription it is for.
    pub subscription: String,
    /// The connection it goes to.
    pub destination: String,
    /// When the event was accepted, in ms since the Unix epoch.
    pub created_ms: u64,
    /// When the current round of attempts began (acceptance, or the last
    /// replay from the dead-letter queue): the subscription's `max_age_secs`
    /// counts from here.
    pub since_ms: u64,
    /// When the next attempt is due (pending deliveries).
    pub due_ms: u64,
    /// Attempts of this round that counted against the subscription's limit.
    pub attempts: u32,
    /// Every attempt ever made, counted or not.
    pub tries: u32,
    /// The newest attempts, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<Attempt>,
    /// Set while it is in the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<DeadLetter>,
}

impl Delivery {
    /// The idempotency key every attempt carries: `{event id}:{subscription}`.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.event_id, self.subscription)
    }

    fn record(&mut self, attempt: Attempt) {
        if attempt.counted {
            self.attempts = self.attempts.saturating_add(1);
        }
        self.tries = self.tries.saturating_add(1);
        self.history.push(attempt);
        if self.history.len() > MAX_HISTORY {
            let over = self.history.len() - MAX_HISTORY;
            self.history.drain(..over);
        }
    }
}

/// How an attempt at a delivery ended, and what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// It was delivered: the delivery is done and forgotten.
    Delivered,
    /// It failed and is tried again at `due_ms`.
    Retry {
        /// The failed attempt.
        attempt: Attempt,
        /// When to try again.
        due_ms: u64,
    },
    /// It was not attempted (the subscription's rate limit): try at `due_ms`.
    Defer {
        /// When to try.
        due_ms: u64,
    },
    /// Its subscription now delivers to another connection: into that
    /// queue, due at `due_ms`, without an attempt.
    Requeue {
        /// The connection it goes to now.
        destination: String,
        /// When to try.
        due_ms: u64,
    },
    /// It failed for good: into the dead-letter queue.
    Dead {
        /// The failed attempt.
        attempt: Attempt,
        /// Why it is not retried.
        reason: String,
    },
}

/// A destination's queue: one connection in one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    /// The workspace.
    pub workspace: String,
    /// The connection deliveries go to.
    pub destination: String,
}

/// An entry of a destination's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// When the delivery is due.
    pub due_ms: u64,
    /// The delivery.
    pub id: u64,
}

/// Pending and dead-lettered deliveries of one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Depth {
    /// Waiting for their next attempt (or being attempted).
    pub pending: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// The outbox, on a backend.
#[derive(Clone)]
pub struct Outbox {
    backend: Arc<dyn OutboxBackend>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

fn name_part(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

fn named_key(workspace: &str, name: &str) -> Vec<u8> {
    let mut key = workspace_prefix(workspace);
    name_part(&mut key, name);
    key
}

fn delivery_key(workspace: &str, id: u64) -> Vec<u8> {
    let mut key = workspace_prefix(workspace);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn lane_prefix(workspace: &str, destination: &str) -> Vec<u8> {
    named_key(workspace, destination)
}

fn due_key(workspace: &str, destination: &str, due_ms: u64, id: u64) -> Vec<u8> {
    let mut key = lane_prefix(workspace, destination);
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn dead_key(workspace: &str, at_ms: u64, id: u64) -> Vec<u8> {
    let mut key = workspace_prefix(workspace);
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Run `body` as one transaction of `backend` (again after a conflict) and
/// hand back what its last run returned.
pub(crate) fn transact<T>(
    backend: &dyn OutboxBackend,
    mut body: impl FnMut(&dyn Tx) -> Result<T, TxError>,
) -> Result<T, StorageError> {
    let mut out = None;
    backend.transact(&mut |tx| {
        out = Some(body(tx)?);
        Ok(())
    })?;
    out.ok_or_else(|| StorageError::Backend("a transaction ended without a result".into()))
}

/// The smallest key greater than every key that starts with `prefix`
/// (empty: no upper bound).
pub(crate) fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// Two big-endian `u64`s at the end of a key.
fn tail_pair(key: &[u8]) -> Option<(u64, u64)> {
    let n = key.len();
    let first = u64::from_be_bytes(key.get(n.checked_sub(16)?..n - 8)?.try_into().ok()?);
    let second = u64::from_be_bytes(key.get(n - 8..)?.try_into().ok()?);
    Some((first, second))
}

/// `(name, rest)` of a length-prefixed name at the start of `bytes`.
fn split_name(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?.to_owned();
    Some((name, &bytes[4 + len..]))
}

/// The setting recording when subscription `name` was deleted (a name no
/// other setting has: subscription names are slugs).
fn tombstone_name(name: &str) -> String {
    format!("subscription-deleted/{name}")
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Backend(format!("outbox: a stored {what} does not read"))
}

/// An accepted event's stored state.
struct EventState {
    accepted_ms: u64,
    open: u32,
    body: Vec<u8>,
}

impl EventState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.body.len());
        out.extend_from_slice(&self.accepted_ms.to_be_bytes());
        out.extend_from_slice(&self.open.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(stored: &[u8]) -> Result<Self, StorageError> {
        let head = |r: std::ops::Range<usize>| stored.get(r).ok_or_else(|| corrupt("event"));
        Ok(Self {
            accepted_ms: u64::from_be_bytes(head(0..8)?.try_into().map_err(|_| corrupt("event"))?),
            open: u32::from_be_bytes(head(8..12)?.try_into().map_err(|_| corrupt("event"))?),
            body: stored[12..].to_vec(),
        })
    }
}

fn encode_depth(depth: Depth) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&depth.pending.to_be_bytes());
    out[8..].copy_from_slice(&depth.dead.to_be_bytes());
    out
}

fn decode_depth(stored: Option<&[u8]>) -> Depth {
    let Some(stored) = stored.filter(|s| s.len() == 16) else {
        return Depth::default();
    };
    let word =
        |r: std::ops::Range<usize>| u64::from_be_bytes(stored[r].try_into().unwrap_or([0; 8]));
    Depth {
        pending: word(0..8),
        dead: word(8..16),
    }
}

fn read_delivery(stored: &[u8]) -> Result<Delivery, StorageError> {
    serde_json::from_slice(stored).map_err(|_| corrupt("delivery"))
}

fn write_delivery(delivery: &Delivery) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(delivery).map_err(|e| StorageError::Backend(e.to_string()))
}

/// `(workspace, subscription)`.
type SubscriptionId = (String, String);

/// Shards of each subscription's depth: deliveries settling at once update
/// different keys, so their transactions rarely conflict (sled runs a
/// conflicting one again).
const COUNT_SHARDS: u64 = 16;

/// Add `pending` and `dead` (either may be negative) to a subscription's
/// depth, in the shard of delivery `id`.
fn adjust(
    tx: &dyn Tx,
    workspace: &str,
    subscription: &str,
    id: u64,
    (pending, dead): (i64, i64),
) -> Result<(), TxError> {
    let mut key = named_key(workspace, subscription);
    key.push((id % COUNT_SHARDS) as u8);
    let mut depth = decode_depth(tx.get(Tree::Counts, &key)?.as_deref());
    depth.pending = depth.pending.saturating_add_signed(pending);
    depth.dead = depth.dead.saturating_add_signed(dead);
    if depth == Depth::default() {
        tx.remove(Tree::Counts, &key)
    } else {
        tx.insert(Tree::Counts, &key, &encode_depth(depth))
    }
}

/// One delivery's attempt ended (see [`Outbox::settle`]).
fn settle_one(
    tx: &dyn Tx,
    workspace: &str,
    id: u64,
    outcome: &Settle,
    now_ms: u64,
) -> Result<bool, TxError> {
    let key = delivery_key(workspace, id);
    let Some(stored) = tx.get(Tree::Deliveries, &key)? else {
        return Ok(false);
    };
    let mut delivery = read_delivery(&stored)?;
    if delivery.dead.is_some() {
        return Ok(false);
    }
    tx.remove(
        Tree::Due,
        &due_key(workspace, &delivery.destination, delivery.due_ms, id),
    )?;
    match outcome {
        Settle::Delivered => {
            tx.remove(Tree::Deliveries, &key)?;
            adjust(tx, workspace, &delivery.subscription, id, (-1, 0))?;
            close_one(tx, workspace, &delivery.event_id)?;
            return Ok(true);
        }
        Settle::Retry { attempt, due_ms } => {
            delivery.record(attempt.clone());
            delivery.due_ms = *due_ms;
        }
        Settle::Defer { due_ms } => delivery.due_ms = *due_ms,
        Settle::Requeue {
            destination,
            due_ms,
        } => {
            delivery.destination.clone_from(destination);
            delivery.due_ms = *due_ms;
        }
        Settle::Dead { attempt, reason } => {
            delivery.record(attempt.clone());
            delivery.dead = Some(DeadLetter {
                at_ms: now_ms,
                reason: reason.clone(),
                code: attempt.code.clone(),
            });
            tx.insert(Tree::Dead, &dead_key(workspace, now_ms, id), &[])?;
            adjust(tx, workspace, &delivery.subscription, id, (-1, 1))?;
        }
    }
    if delivery.dead.is_none() {
        tx.insert(
            Tree::Due,
            &due_key(workspace, &delivery.destination, delivery.due_ms, id),
            &[],
        )?;
    }
    tx.insert(Tree::Deliveries, &key, &write_delivery(&delivery)?)?;
    Ok(true)
}

/// Take delivery `id` out of the dead-letter queue: its key and record (no
/// longer marked dead), or `None` when it is not dead-lettered.
fn take_dead(
    tx: &dyn Tx,
    workspace: &str,
    id: u64,
) -> Result<Option<(Vec<u8>, Delivery)>, TxError> {
    let key = delivery_key(workspace, id);
    let Some(stored) = tx.get(Tree::Deliveries, &key)? else {
        return Ok(None);
    };
    let mut delivery = read_delivery(&stored)?;
    let Some(dead) = delivery.dead.take() else {
        return Ok(None);
    };
    tx.remove(Tree::Dead, &dead_key(workspace, dead.at_ms, id))?;
    Ok(Some((key, delivery)))
}

/// One fewer open delivery of `event_id`; its JSON is dropped with the last.
fn close_one(tx: &dyn Tx, workspace: &str, event_id: &str) -> Result<(), TxError> {
    let key = named_key(workspace, event_id);
    if let Some(stored) = tx.get(Tree::Events, &key)? {
        let mut state = EventState::decode(&stored)?;
        state.open = state.open.saturating_sub(1);
        if state.open == 0 {
            state.body.clear();
        }
        tx.insert(Tree::Events, &key, &state.encode())?;
    }
    Ok(())
}

impl Outbox {
    /// The outbox on `backend`.
    pub fn new(backend: Arc<dyn OutboxBackend>) -> Self {
        Self { backend }
    }

    /// Run `body` as one transaction (again after a conflict) and hand back
    /// what its last run returned.
    fn transact<T>(
        &self,
        body: impl FnMut(&dyn Tx) -> Result<T, TxError>,
    ) -> Result<T, StorageError> {
        transact(&*self.backend, body)
    }

    /// Remove `keys` from `tree` in one transaction.
    fn remove_keys<'k>(
        &self,
        tree: Tree,
        keys: impl Iterator<Item = &'k Vec<u8>> + Clone,
    ) -> Result<(), StorageError> {
        self.transact(|tx| keys.clone().try_for_each(|key| tx.remove(tree, key)))
    }

    /// Accept `events` for `workspace` at `now_ms`, each with its
    /// deliveries, due at once: all in one transaction, on disk before this
    /// returns. An id already accepted (and not yet forgotten, see
    /// [`purge_events`](Self::purge_events)) creates nothing, whether
    /// earlier or earlier in the same batch.
    pub fn accept(
        &self,
        workspace: &str,
        events: &[NewEvent],
        now_ms: u64,
    ) -> Result<Vec<Accepted>, StorageError> {
        self.accept_with(workspace, None, events, now_ms)
            .map(|accepted| accepted.unwrap_or_default())
    }

    /// [`accept`](Self::accept) the events of webhook `webhook_id` sent to
    /// `workspace`'s `connection`, and remember its id in the same
    /// transaction; `None` (nothing written) when the id was taken before
    /// and not yet forgotten (see [`purge_receipts`](Self::purge_receipts)).
    pub fn accept_webhook(
        &self,
        workspace: &str,
        (connection, webhook_id): (&str, &str),
        events: &[NewEvent],
        now_ms: u64,
    ) -> Result<Option<Vec<Accepted>>, StorageError> {
        let mut key = workspace_prefix(workspace);
        name_part(&mut key, connection);
        name_part(&mut key, webhook_id);
        self.accept_with(workspace, Some(&key), events, now_ms)
    }

    fn accept_with(
        &self,
        workspace: &str,
        receipt: Option<&[u8]>,
        events: &[NewEvent],
        now_ms: u64,
    ) -> Result<Option<Vec<Accepted>>, StorageError> {
        // Ids are drawn outside the transaction (its body may run again).
        let mut ids = Vec::new();
        for _ in events.iter().flat_map(|e| &e.deliveries) {
            ids.push(self.backend.next_id()?);
        }
        let accepted = self.transact(|tx| {
            if let Some(receipt) = receipt {
                if tx.get(Tree::Receipts, receipt)?.is_some() {
                    return Ok(None);
                }
                tx.insert(Tree::Receipts, receipt, &now_ms.to_be_bytes())?;
            }
            let mut accepted = Vec::with_capacity(events.len());
            let mut ids = ids.iter().copied();
            for event in events {
                let key = named_key(workspace, &event.id);
                if tx.get(Tree::Events, &key)?.is_some() {
                    // Its ids stay unused: harmless, they are never reused.
                    ids.by_ref().take(event.deliveries.len()).for_each(drop);
                    accepted.push(Accepted {
                        id: event.id.clone(),
                        duplicate: true,
                        deliveries: 0,
                    });
                    continue;
                }
                let state = EventState {
                    accepted_ms: now_ms,
                    open: u32::try_from(event.deliveries.len()).unwrap_or(u32::MAX),
                    body: if event.deliveries.is_empty() {
                        Vec::new()
                    } else {
                        event.body.clone()
                    },
                };
                tx.insert(Tree::Events, &key, &state.encode())?;
                for new in &event.deliveries {
                    let id = ids
                        .next()
                        .ok_or_else(|| StorageError::Backend("outbox: ids ran out".into()))?;
                    let delivery = Delivery {
                        id,
                        workspace: workspace.to_owned(),
                        event_id: event.id.clone(),
                        subscription: new.subscription.clone(),
                        destination: new.destination.clone(),
                        created_ms: now_ms,
                        since_ms: now_ms,
                        due_ms: now_ms,
                        attempts: 0,
                        tries: 0,
                        history: Vec::new(),
                        dead: None,
                    };
                    tx.insert(
                        Tree::Deliveries,
                        &delivery_key(workspace, id),
                        &write_delivery(&delivery)?,
                    )?;
                    tx.insert(
                        Tree::Due,
                        &due_key(workspace, &new.destination, now_ms, id),
                        &[],
                    )?;
                    adjust(tx, workspace, &new.subscription, id, (1, 0))?;
                }
                accepted.push(Accepted {
                    id: event.id.clone(),
                    duplicate: false,
                    deliveries: event.deliveries.len(),
                });
            }
            Ok(Some(accepted))
        })?;
        self.backend.flush()?;
        Ok(accepted)
    }

    /// The JSON of an event with a delivery still open (pending or dead).
    pub fn event(&self, workspace: &str, event_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self
            .backend
            .get(Tree::Events, &named_key(workspace, event_id))?
        {
            Some(stored) => {
                let state = EventState::decode(&stored)?;
                Ok((!state.body.is_empty()).then_some(state.body))
            }
            None => Ok(None),
        }
    }

    /// A delivery, pending or dead-lettered.
    pub fn delivery(&self, workspace: &str, id: u64) -> Result<Option<Delivery>, StorageError> {
        match self
            .backend
            .get(Tree::Deliveries, &delivery_key(workspace, id))?
        {
            Some(stored) => Ok(Some(read_delivery(&stored)?)),
            None => Ok(None),
        }
    }

    /// Every destination with a pending delivery.
    pub fn lanes(&self) -> Result<Vec<Lane>, StorageError> {
        let mut lanes = Vec::new();
        let mut from = Vec::new();
        loop {
            let Some((key, _)) = self
                .backend
                .scan(Tree::Due, &from, &[], 1)?
                .into_iter()
                .next()
            else {
                return Ok(lanes);
            };
            let (workspace, rest) = split_name(&key).ok_or_else(|| corrupt("queue key"))?;
            let (destination, _) = split_name(rest).ok_or_else(|| corrupt("queue key"))?;
            from = after_prefix(&lane_prefix(&workspace, &destination));
            lanes.push(Lane {
                workspace,
                destination,
            });
            if from.is_empty() {
                return Ok(lanes);
            }
        }
    }

    /// The first `limit` entries of a destination's queue, soonest due first.
    pub fn queued(&self, lane: &Lane, limit: usize) -> Result<Vec<Queued>, StorageError> {
        let prefix = lane_prefix(&lane.workspace, &lane.destination);
        let entries = self
            .backend
            .scan(Tree::Due, &prefix, &after_prefix(&prefix), limit)?;
        entries
            .into_iter()
            .map(|(key, _)| {
                let (due_ms, id) = tail_pair(&key).ok_or_else(|| corrupt("queue key"))?;
                Ok(Queued { due_ms, id })
            })
            .collect()
    }

    /// Record how an attempt at `id` ended, at `now_ms`. `false` when the
    /// delivery is no longer pending (purged, or its workspace removed).
    pub fn settle(
        &self,
        workspace: &str,
        id: u64,
        outcome: &Settle,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let settled = self.settle_many(&[(workspace, id, outcome)], now_ms)?;
        Ok(settled.first().copied().unwrap_or(false))
    }

    /// [`settle`](Self::settle) many deliveries in one transaction (a group
    /// commit: what each attempt's end costs the store is shared); for each,
    /// whether it was still pending.
    pub fn settle_many(
        &self,
        outcomes: &[(&str, u64, &Settle)],
        now_ms: u64,
    ) -> Result<Vec<bool>, StorageError> {
        self.transact(|tx| {
            outcomes
                .iter()
                .map(|(workspace, id, outcome)| settle_one(tx, workspace, *id, outcome, now_ms))
                .collect()
        })
    }

    /// Remove a queue entry whose delivery is gone (left by a removal cut
    /// short); `false` when the delivery still exists (nothing is removed).
    pub fn drop_stale_entry(&self, lane: &Lane, entry: Queued) -> Result<bool, StorageError> {
        let delivery = delivery_key(&lane.workspace, entry.id);
        let queued = due_key(&lane.workspace, &lane.destination, entry.due_ms, entry.id);
        self.transact(|tx| {
            if tx.get(Tree::Deliveries, &delivery)?.is_some() {
                return Ok(false);
            }
            tx.remove(Tree::Due, &queued)?;
            Ok(true)
        })
    }

    /// Dead-lettered deliveries of `workspace`, oldest first, strictly after
    /// `after` (a `(dead-lettered at, id)` cursor), those `keep` accepts, at
    /// most `limit`; and whether more were left unread.
    pub fn dead_letters(
        &self,
        workspace: &str,
        after: Option<(u64, u64)>,
        limit: usize,
        keep: &dyn Fn(&Delivery) -> bool,
    ) -> Result<(Vec<Delivery>, bool), StorageError> {
        let prefix = workspace_prefix(workspace);
        let end = after_prefix(&prefix);
        let mut from = match after {
            Some((at_ms, id)) => after_prefix(&dead_key(workspace, at_ms, id)),
            None => prefix,
        };
        let mut found = Vec::new();
        const CHUNK: usize = 256;
        loop {
            let keys = self.backend.scan(Tree::Dead, &from, &end, CHUNK)?;
            let exhausted = keys.len() < CHUNK;
            for (key, _) in &keys {
                let (_, id) = tail_pair(key).ok_or_else(|| corrupt("dead-letter key"))?;
                if let Some(delivery) = self.delivery(workspace, id)?
                    && delivery.dead.is_some()
                    && keep(&delivery)
                {
                    if found.len() == limit {
                        return Ok((found, true));
                    }
                    found.push(delivery);
                }
            }
            match keys.last() {
                Some((key, _)) if !exhausted => from = after_prefix(key),
                _ => return Ok((found, false)),
            }
        }
    }

    /// Put a dead-lettered delivery back in its queue, due at `now_ms`, with
    /// a fresh round of attempts (its history is kept). `false` when it is
    /// not in the dead-letter queue.
    pub fn replay(&self, workspace: &str, id: u64, now_ms: u64) -> Result<bool, StorageError> {
        self.transact(|tx| {
            let Some((key, mut delivery)) = take_dead(tx, workspace, id)? else {
                return Ok(false);
            };
            delivery.attempts = 0;
            delivery.since_ms = now_ms;
            delivery.due_ms = now_ms;
            tx.insert(
                Tree::Due,
                &due_key(workspace, &delivery.destination, now_ms, id),
                &[],
            )?;
            tx.insert(Tree::Deliveries, &key, &write_delivery(&delivery)?)?;
            adjust(tx, workspace, &delivery.subscription, id, (1, -1))?;
            Ok(true)
        })
    }

    /// Remove a dead-lettered delivery for good. `false` when it is not in
    /// the dead-letter queue.
    pub fn purge_dead(&self, workspace: &str, id: u64) -> Result<bool, StorageError> {
        self.transact(|tx| {
            let Some((key, delivery)) = take_dead(tx, workspace, id)? else {
                return Ok(false);
            };
            tx.remove(Tree::Deliveries, &key)?;
            adjust(tx, workspace, &delivery.subscription, id, (0, -1))?;
            close_one(tx, workspace, &delivery.event_id)?;
            Ok(true)
        })
    }

    /// Pending and dead deliveries per subscription of `workspace`, by name.
    pub fn depths(&self, workspace: &str) -> Result<Vec<(String, Depth)>, StorageError> {
        let prefix = workspace_prefix(workspace);
        Ok(self
            .sum_depths(&prefix)?
            .into_iter()
            .map(|((_, name), depth)| (name, depth))
            .collect())
    }

    /// Every workspace's depths, for metrics: `(workspace, subscription, depth)`.
    pub fn all_depths(&self) -> Result<Vec<(String, String, Depth)>, StorageError> {
        Ok(self
            .sum_depths(&[])?
            .into_iter()
            .map(|((workspace, name), depth)| (workspace, name, depth))
            .collect())
    }

    /// The shards under `prefix` summed per (workspace, subscription), in order.
    fn sum_depths(&self, prefix: &[u8]) -> Result<Vec<(SubscriptionId, Depth)>, StorageError> {
        let entries = self
            .backend
            .scan(Tree::Counts, prefix, &after_prefix(prefix), usize::MAX)?;
        let mut sums: Vec<(SubscriptionId, Depth)> = Vec::new();
        for (key, value) in entries {
            let (workspace, rest) = split_name(&key).ok_or_else(|| corrupt("count key"))?;
            let (name, _) = split_name(rest).ok_or_else(|| corrupt("count key"))?;
            let depth = decode_depth(Some(&value));
            match sums.last_mut() {
                Some((last, sum)) if last.0 == workspace && last.1 == name => {
                    sum.pending += depth.pending;
                    sum.dead += depth.dead;
                }
                _ => sums.push(((workspace, name), depth)),
            }
        }
        Ok(sums)
    }

    /// Forget, at `now_ms`, up to `max` events accepted before
    /// `now_ms - window_ms` with no delivery open: their ids may be accepted
    /// again. How many were forgotten.
    pub fn purge_events(
        &self,
        now_ms: u64,
        window_ms: u64,
        max: usize,
    ) -> Result<usize, StorageError> {
        let cut = now_ms.saturating_sub(window_ms);
        // Still unopened and old: nothing reopens a stored event.
        self.remove_where(Tree::Events, max, |value| {
            let state = EventState::decode(value)?;
            Ok(state.open == 0 && state.accepted_ms < cut)
        })
    }

    /// Forget, at `now_ms`, up to `max` webhook ids taken before
    /// `now_ms - window_ms`: a webhook sent again with one of them is taken
    /// as new. How many were forgotten.
    pub fn purge_receipts(
        &self,
        now_ms: u64,
        window_ms: u64,
        max: usize,
    ) -> Result<usize, StorageError> {
        let cut = now_ms.saturating_sub(window_ms);
        self.remove_where(Tree::Receipts, max, |value| {
            let taken = <[u8; 8]>::try_from(value)
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt("webhook receipt"))?;
            Ok(taken < cut)
        })
    }

    /// Remove up to `max` entries of `tree` whose value `doomed` says to,
    /// scanning in chunks, then removing in transactions of 256. How many went.
    fn remove_where(
        &self,
        tree: Tree,
        max: usize,
        doomed: impl Fn(&[u8]) -> Result<bool, StorageError>,
    ) -> Result<usize, StorageError> {
        const CHUNK: usize = 1024;
        let mut keys = Vec::new();
        let mut from = Vec::new();
        'scan: loop {
            let entries = self.backend.scan(tree, &from, &[], CHUNK)?;
            let exhausted = entries.len() < CHUNK;
            for (key, value) in &entries {
                if doomed(value)? {
                    keys.push(key.clone());
                    if keys.len() == max {
                        break 'scan;
                    }
                }
            }
            match entries.last() {
                Some((key, _)) if !exhausted => from = after_prefix(key),
                _ => break,
            }
        }
        for chunk in keys.chunks(256) {
            self.remove_keys(tree, chunk.iter())?;
        }
        Ok(keys.len())
    }

    /// Store `workspace`'s subscription `name` (its JSON); whether it is new.
    pub fn put_subscription(
        &self,
        workspace: &str,
        name: &str,
        json: &[u8],
    ) -> Result<bool, StorageError> {
        let key = named_key(workspace, name);
        let created = self.transact(|tx| {
            let created = tx.get(Tree::Subscriptions, &key)?.is_none();
            tx.insert(Tree::Subscriptions, &key, json)?;
            Ok(created)
        })?;
        self.backend.flush()?;
        Ok(created)
    }

    /// `workspace`'s subscription `name`, as stored.
    pub fn subscription(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend
            .get(Tree::Subscriptions, &named_key(workspace, name))
    }

    /// Every subscription of `workspace`, by name.
    pub fn subscriptions(&self, workspace: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let prefix = workspace_prefix(workspace);
        let entries = self.backend.scan(
            Tree::Subscriptions,
            &prefix,
            &after_prefix(&prefix),
            usize::MAX,
        )?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let (name, _) =
                    split_name(&key[prefix.len()..]).ok_or_else(|| corrupt("subscription key"))?;
                Ok((name, value))
            })
            .collect()
    }

    /// Remove `workspace`'s subscription `name`; whether it was there. Its
    /// pending and dead deliveries stay (the caller decides their fate).
    pub fn delete_subscription(
        &self,
        workspace: &str,
        name: &str,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let key = named_key(workspace, name);
        let tombstone = named_key(workspace, &tombstone_name(name));
        let removed = self.transact(|tx| {
            let removed = tx.get(Tree::Subscriptions, &key)?.is_some();
            tx.remove(Tree::Subscriptions, &key)?;
            if removed {
                tx.insert(Tree::Settings, &tombstone, &now_ms.to_be_bytes())?;
            }
            Ok(removed)
        })?;
        self.backend.flush()?;
        Ok(removed)
    }

    /// When `workspace`'s subscription `name` was last deleted, if ever: a
    /// delivery made before then belongs to that subscription, not to one
    /// created again under the name.
    pub fn subscription_deleted_at(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<u64>, StorageError> {
        self.backend
            .get(Tree::Settings, &named_key(workspace, &tombstone_name(name)))?
            .map(|v| {
                <[u8; 8]>::try_from(v.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt("subscription tombstone"))
            })
            .transpose()
    }

    /// Remove everything of `workspace`: subscriptions, events, deliveries,
    /// queues. How many entries went.
    pub fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        let prefix = workspace_prefix(workspace);
        let end = after_prefix(&prefix);
        let mut removed = 0;
        // Queue entries first: one left behind by a crash part-way would
        // name a delivery already gone (the dispatcher drops such entries).
        for tree in [
            Tree::Due,
            Tree::Dead,
            Tree::Deliveries,
            Tree::Events,
            Tree::Counts,
            Tree::Subscriptions,
            Tree::Receipts,
            Tree::Settings,
        ] {
            loop {
                let entries = self.backend.scan(tree, &prefix, &end, 512)?;
                if entries.is_empty() {
                    break;
                }
                self.remove_keys(tree, entries.iter().map(|(key, _)| key))?;
                removed += entries.len();
            }
        }
        self.backend.flush()?;
        Ok(removed)
    }

    /// Store `workspace`'s setting `name` (its JSON), on disk when this returns.
    pub fn put_setting(
        &self,
        workspace: &str,
        name: &str,
        json: &[u8],
    ) -> Result<(), StorageError> {
        let key = named_key(workspace, name);
        self.transact(|tx| tx.insert(Tree::Settings, &key, json))?;
        self.backend.flush()
    }

    /// `workspace`'s setting `name`, as stored.
    pub fn setting(&self, workspace: &str, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend
            .get(Tree::Settings, &named_key(workspace, name))
    }

    /// Remove `workspace`'s setting `name`; whether it was there.
    pub fn delete_setting(&self, workspace: &str, name: &str) -> Result<bool, StorageError> {
        let key = named_key(workspace, name);
        let removed = self.transact(|tx| {
            let removed = tx.get(Tree::Settings, &key)?.is_some();
            tx.remove(Tree::Settings, &key)?;
            Ok(removed)
        })?;
        self.backend.flush()?;
        Ok(removed)
    }

    /// Every workspace holding a setting `name`, with it.
    pub fn settings_named(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let entries = self.backend.scan(Tree::Settings, &[], &[], usize::MAX)?;
        let mut out = Vec::new();
        for (key, value) in entries {
            let (workspace, rest) = split_name(&key).ok_or_else(|| corrupt("setting key"))?;
            let (setting, _) = split_name(rest).ok_or_else(|| corrupt("setting key"))?;
            if setting == name {
                out.push((workspace, value));
            }
        }
        Ok(out)
    }

    /// Write everything to disk.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.backend.flush()
    }
}

#[cfg(test)]
pub(crate) mod contract_tests {
    use super::*;

    pub(crate) fn run_all(outbox: &Outbox) {
        accepting_fans_out_and_is_idempotent(outbox);
        each_destination_has_its_own_queue_in_due_order(outbox);
        settling_moves_a_delivery_and_its_counts_together(outbox);
        dead_letters_are_listed_replayed_and_purged(outbox);
        events_are_forgotten_after_the_window_and_only_when_closed(outbox);
        subscriptions_are_kept_per_workspace(outbox);
        a_removed_workspace_leaves_nothing_and_touches_no_other(outbox);
        a_webhook_id_is_taken_once_per_connection_until_forgotten(outbox);
        settings_are_kept_per_workspace_and_name(outbox);
    }

    fn settings_are_kept_per_workspace_and_name(outbox: &Outbox) {
        outbox.put_setting("set-a", "alert", b"1").expect("put");
        outbox.put_setting("set-b", "alert", b"2").expect("put");
        outbox.put_setting("set-a", "other", b"3").expect("put");
        assert_eq!(
            outbox.setting("set-a", "alert").expect("get").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(outbox.setting("set-c", "alert").expect("get"), None);
        let mut named = outbox.settings_named("alert").expect("named");
        named.sort();
        assert_eq!(
            named,
            [
                ("set-a".to_owned(), b"1".to_vec()),
                ("set-b".to_owned(), b"2".to_vec())
            ]
        );
        assert!(outbox.delete_setting("set-a", "alert").expect("delete"));
        assert!(!outbox.delete_setting("set-a", "alert").expect("again"));
        outbox.remove_workspace("set-b").expect("remove");
        assert_eq!(outbox.setting("set-b", "alert").expect("get"), None);
        assert_eq!(
            outbox.setting("set-a", "other").expect("get").as_deref(),
            Some(&b"3"[..])
        );
    }

    fn a_webhook_id_is_taken_once_per_connection_until_forgotten(outbox: &Outbox) {
        let ws = "hooks";
        let first = outbox
            .accept_webhook(
                ws,
                ("desk", "wh-1"),
                &[event("wh-1-0", &[("s", "crm")])],
                1_000,
            )
            .expect("accept");
        assert_eq!(first.map(|a| a.len()), Some(1));
        // The same id again, even with other events: nothing is written.
        let again = outbox
            .accept_webhook(
                ws,
                ("desk", "wh-1"),
                &[event("other", &[("s", "crm")])],
                2_000,
            )
            .expect("accept");
        assert_eq!(again, None);
        assert!(outbox.event(ws, "other").expect("read").is_none());
        // Another connection, or another workspace, has its own ids.
        for (w, c) in [(ws, "desk-2"), ("hooks-2", "desk")] {
            let own = outbox
                .accept_webhook(w, (c, "wh-1"), &[event("e", &[])], 2_000)
                .expect("accept");
            assert!(own.is_some(), "{w}/{c}");
        }
        // Forgotten after the window: taken as new.
        assert_eq!(outbox.purge_receipts(2_500, 1_000, 100).expect("purge"), 1);
        let later = outbox
            .accept_webhook(ws, ("desk", "wh-1"), &[event("wh-1-later", &[])], 3_000)
            .expect("accept");
        assert!(later.is_some());
        assert_eq!(outbox.purge_receipts(3_000, 1_000, 100).expect("purge"), 0);
        outbox.remove_workspace("hooks-2").expect("remove");
        let after = outbox
            .accept_webhook("hooks-2", ("desk", "wh-1"), &[event("e", &[])], 3_000)
            .expect("accept");
        assert!(after.is_some(), "a removed workspace's receipts go with it");
    }

    fn event(id: &str, to: &[(&str, &str)]) -> NewEvent {
        NewEvent {
            id: id.into(),
            body: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
            deliveries: to
                .iter()
                .map(|(subscription, destination)| NewDelivery {
                    subscription: (*subscription).into(),
                    destination: (*destination).into(),
                })
                .collect(),
        }
    }

    fn lane(workspace: &str, destination: &str) -> Lane {
        Lane {
            workspace: workspace.into(),
            destination: destination.into(),
        }
    }

    fn attempt(at_ms: u64, code: &str, counted: bool) -> Attempt {
        Attempt {
            at_ms,
            code: code.into(),
            message: format!("{code} at {at_ms}"),
            counted,
            invocation_id: None,
        }
    }

    fn depth_of(outbox: &Outbox, workspace: &str, subscription: &str) -> Depth {
        outbox
            .depths(workspace)
            .expect("depths")
            .into_iter()
            .find(|(name, _)| name == subscription)
            .map(|(_, depth)| depth)
            .unwrap_or_default()
    }

    fn accepting_fans_out_and_is_idempotent(outbox: &Outbox) {
        let ws = "accept";
        let first = outbox
            .accept(
                ws,
                &[
                    event("e-1", &[("to-crm", "crm"), ("to-desk", "desk")]),
                    event("e-2", &[]),
                    // The same id again in the same batch: one acceptance.
                    event("e-1", &[("to-crm", "crm")]),
                ],
                1_000,
            )
            .expect("accept");
        let shape: Vec<_> = first
            .iter()
            .map(|a| (a.id.as_str(), a.duplicate, a.deliveries))
            .collect();
        assert_eq!(
            shape,
            [("e-1", false, 2), ("e-2", false, 0), ("e-1", true, 0)]
        );
        let again = outbox
            .accept(ws, &[event("e-1", &[("to-crm", "crm")])], 2_000)
            .expect("accept again");
        assert!(again[0].duplicate && again[0].deliveries == 0);
        assert_eq!(
            outbox.event(ws, "e-1").expect("read").as_deref(),
            Some(br#"{"id":"e-1"}"#.as_slice())
        );
        // An event with no delivery keeps no body, only its id.
        assert_eq!(outbox.event(ws, "e-2").expect("read"), None);
        assert_eq!(
            depth_of(outbox, ws, "to-crm"),
            Depth {
                pending: 1,
                dead: 0
            }
        );
        assert_eq!(
            depth_of(outbox, ws, "to-desk"),
            Depth {
                pending: 1,
                dead: 0
            }
        );
        let queued = outbox.queued(&lane(ws, "crm"), 10).expect("queued");
        assert_eq!(queued.len(), 1);
        let delivery = outbox
            .delivery(ws, queued[0].id)
            .expect("read")
            .expect("stored");
        assert_eq!(delivery.idempotency_key(), "e-1:to-crm");
        assert_eq!(
            (delivery.created_ms, delivery.due_ms, delivery.attempts),
            (1_000, 1_000, 0)
        );
        // Another workspace's same id is its own event.
        let other = outbox
            .accept("accept-2", &[event("e-1", &[("to-crm", "crm")])], 1_000)
            .expect("accept");
        assert!(!other[0].duplicate);
        // Nothing of one workspace is visible from another.
        assert_eq!(
            outbox.delivery("accept-2", delivery.id).expect("read"),
            None
        );
    }

    fn each_destination_has_its_own_queue_in_due_order(outbox: &Outbox) {
        let ws = "lanes";
        outbox
            .accept(ws, &[event("a", &[("s", "slow")])], 300)
            .expect("accept");
        outbox
            .accept(ws, &[event("b", &[("s", "slow"), ("t", "fast")])], 100)
            .expect("accept");
        outbox
            .accept(ws, &[event("c", &[("s", "slow")])], 200)
            .expect("accept");
        let lanes = outbox.lanes().expect("lanes");
        assert!(lanes.contains(&lane(ws, "slow")) && lanes.contains(&lane(ws, "fast")));
        let slow: Vec<u64> = outbox
            .queued(&lane(ws, "slow"), 10)
            .expect("queued")
            .iter()
            .map(|q| q.due_ms)
            .collect();
        assert_eq!(slow, [100, 200, 300], "a queue is in due-time order");
        assert_eq!(
            outbox.queued(&lane(ws, "slow"), 2).expect("queued").len(),
            2
        );
        assert_eq!(
            outbox.queued(&lane(ws, "fast"), 10).expect("queued").len(),
            1
        );
        // A name that is a prefix of another is still its own queue.
        outbox
            .accept(ws, &[event("d", &[("s", "slowest")])], 50)
            .expect("accept");
        assert_eq!(
            outbox.queued(&lane(ws, "slow"), 10).expect("queued").len(),
            3
        );
        assert_eq!(
            outbox
                .queued(&lane(ws, "slowest"), 10)
                .expect("queued")
                .len(),
            1
        );
    }

    fn settling_moves_a_delivery_and_its_counts_together(outbox: &Outbox) {
        let ws = "settle";
        outbox
            .accept(ws, &[event("e", &[("s", "crm"), ("s2", "crm")])], 1_000)
            .expect("accept");
        let queued = outbox.queued(&lane(ws, "crm"), 10).expect("queued");
        let (first, second) = (queued[0].id, queued[1].id);
        // A failed attempt: moved to its new time, the attempt recorded.
        let retry = Settle::Retry {
            attempt: attempt(1_100, "upstream", true),
            due_ms: 5_000,
        };
        assert!(outbox.settle(ws, first, &retry, 1_100).expect("settle"));
        let moved = outbox.delivery(ws, first).expect("read").expect("stored");
        assert_eq!((moved.due_ms, moved.attempts, moved.tries), (5_000, 1, 1));
        let order: Vec<u64> = outbox
            .queued(&lane(ws, "crm"), 10)
            .expect("queued")
            .iter()
            .map(|q| q.id)
            .collect();
        assert_eq!(order, [second, first]);
        // Held by a breaker: recorded, not counted.
        let held = Settle::Retry {
            attempt: attempt(5_000, "circuit-open", false),
            due_ms: 6_000,
        };
        outbox.settle(ws, first, &held, 5_000).expect("settle");
        let held = outbox.delivery(ws, first).expect("read").expect("stored");
        assert_eq!((held.attempts, held.tries, held.history.len()), (1, 2, 2));
        // Deferred: no attempt at all.
        outbox
            .settle(ws, first, &Settle::Defer { due_ms: 7_000 }, 6_000)
            .expect("settle");
        let deferred = outbox.delivery(ws, first).expect("read").expect("stored");
        assert_eq!((deferred.due_ms, deferred.tries), (7_000, 2));
        // Delivered: gone, counts down, the event's body kept for the other.
        assert!(
            outbox
                .settle(ws, first, &Settle::Delivered, 7_000)
                .expect("settle")
        );
        assert_eq!(outbox.delivery(ws, first).expect("read"), None);
        assert_eq!(depth_of(outbox, ws, "s"), Depth::default());
        assert!(outbox.event(ws, "e").expect("read").is_some());
        // Settling it again finds nothing.
        assert!(
            !outbox
                .settle(ws, first, &Settle::Delivered, 7_000)
                .expect("settle")
        );
        // The last one delivered: the body goes, the id stays for idempotency.
        outbox
            .settle(ws, second, &Settle::Delivered, 7_000)
            .expect("settle");
        assert_eq!(outbox.event(ws, "e").expect("read"), None);
        assert!(
            outbox
                .accept(ws, &[event("e", &[])], 8_000)
                .expect("accept")[0]
                .duplicate
        );
        assert!(
            outbox
                .queued(&lane(ws, "crm"), 10)
                .expect("queued")
                .is_empty()
        );
        // Several at once, in one transaction: each as if alone; one that is
        // gone reads false without stopping the rest.
        outbox
            .accept(
                ws,
                &[event("g1", &[("s", "crm")]), event("g2", &[("s", "crm")])],
                9_000,
            )
            .expect("accept");
        let ids: Vec<u64> = outbox
            .queued(&lane(ws, "crm"), 10)
            .expect("queued")
            .iter()
            .map(|q| q.id)
            .collect();
        let later = Settle::Retry {
            attempt: attempt(9_100, "upstream", true),
            due_ms: 20_000,
        };
        let settled = outbox
            .settle_many(
                &[
                    (ws, ids[0], &Settle::Delivered),
                    (ws, 999_999, &Settle::Delivered),
                    (ws, ids[1], &later),
                ],
                9_100,
            )
            .expect("settle many");
        assert_eq!(settled, [true, false, true]);
        assert_eq!(outbox.delivery(ws, ids[0]).expect("read"), None);
        assert_eq!(
            outbox
                .delivery(ws, ids[1])
                .expect("read")
                .expect("stored")
                .due_ms,
            20_000
        );
        assert_eq!(
            depth_of(outbox, ws, "s"),
            Depth {
                pending: 1,
                dead: 0
            }
        );
        outbox
            .settle(ws, ids[1], &Settle::Delivered, 9_200)
            .expect("settle");
        // Requeued: into another destination's queue, no attempt made.
        outbox
            .accept(ws, &[event("moved", &[("s", "crm")])], 9_300)
            .expect("accept");
        let moved = outbox.queued(&lane(ws, "crm"), 1).expect("queued")[0];
        let requeue = Settle::Requeue {
            destination: "crm-2".into(),
            due_ms: 9_400,
        };
        assert!(
            outbox
                .settle(ws, moved.id, &requeue, 9_300)
                .expect("settle")
        );
        assert!(
            outbox
                .queued(&lane(ws, "crm"), 10)
                .expect("queued")
                .is_empty()
        );
        let there = outbox.queued(&lane(ws, "crm-2"), 10).expect("queued");
        assert_eq!((there.len(), there[0].due_ms), (1, 9_400));
        let record = outbox
            .delivery(ws, moved.id)
            .expect("read")
            .expect("stored");
        assert_eq!((record.destination.as_str(), record.tries), ("crm-2", 0));
        // A queue entry of a delivery that exists is not dropped as stale.
        assert!(
            !outbox
                .drop_stale_entry(&lane(ws, "crm-2"), there[0])
                .expect("drop")
        );
        outbox
            .settle(ws, moved.id, &Settle::Delivered, 9_500)
            .expect("settle");
        // A long history keeps its newest attempts.
        outbox
            .accept(ws, &[event("long", &[("s", "crm")])], 0)
            .expect("accept");
        let id = outbox.queued(&lane(ws, "crm"), 1).expect("queued")[0].id;
        for n in 0..(MAX_HISTORY as u64 + 5) {
            let retry = Settle::Retry {
                attempt: attempt(n, "upstream", true),
                due_ms: n + 1,
            };
            outbox.settle(ws, id, &retry, n).expect("settle");
        }
        let long = outbox.delivery(ws, id).expect("read").expect("stored");
        assert_eq!(long.history.len(), MAX_HISTORY);
        assert_eq!(long.tries as usize, MAX_HISTORY + 5);
        assert_eq!(
            long.history[0].at_ms, 5,
            "the oldest attempts are dropped first"
        );
    }

    fn dead_letters_are_listed_replayed_and_purged(outbox: &Outbox) {
        let ws = "dead";
        outbox
            .accept(
                ws,
                &[
                    event("x", &[("s", "crm")]),
                    event("y", &[("s", "crm"), ("t", "desk")]),
                ],
                1_000,
            )
            .expect("accept");
        let crm = outbox.queued(&lane(ws, "crm"), 10).expect("queued");
        let desk = outbox.queued(&lane(ws, "desk"), 10).expect("queued");
        for (n, id) in [crm[0].id, crm[1].id, desk[0].id].into_iter().enumerate() {
            let dead = Settle::Dead {
                attempt: attempt(
                    2_000 + n as u64,
                    if n == 2 { "not-found" } else { "invalid-input" },
                    true,
                ),
                reason: "not retried".into(),
            };
            assert!(
                outbox
                    .settle(ws, id, &dead, 2_000 + n as u64)
                    .expect("settle")
            );
        }
        assert!(
            outbox
                .queued(&lane(ws, "crm"), 10)
                .expect("queued")
                .is_empty()
        );
        assert_eq!(
            depth_of(outbox, ws, "s"),
            Depth {
                pending: 0,
                dead: 2
            }
        );
        // A dead delivery is not settled again (a late worker's answer).
        assert!(
            !outbox
                .settle(ws, crm[0].id, &Settle::Delivered, 3_000)
                .expect("settle")
        );
        let all = |_: &Delivery| true;
        let (listed, more) = outbox.dead_letters(ws, None, 10, &all).expect("list");
        assert!(!more);
        let ids: Vec<u64> = listed.iter().map(|d| d.id).collect();
        assert_eq!(ids, [crm[0].id, crm[1].id, desk[0].id], "oldest first");
        // Paged by cursor, and filtered.
        let (page, more) = outbox.dead_letters(ws, None, 1, &all).expect("list");
        assert!(more && page.len() == 1);
        let dead = page[0].dead.as_ref().expect("dead");
        let (rest, _) = outbox
            .dead_letters(ws, Some((dead.at_ms, page[0].id)), 10, &all)
            .expect("list");
        assert_eq!(rest.len(), 2);
        let not_found = |d: &Delivery| d.dead.as_ref().is_some_and(|x| x.code == "not-found");
        let (found, _) = outbox.dead_letters(ws, None, 10, &not_found).expect("list");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subscription, "t");
        // The event stays readable while a delivery of it is dead.
        assert!(outbox.event(ws, "x").expect("read").is_some());
        // Replayed: back in its queue, due now, a fresh round, history kept.
        assert!(outbox.replay(ws, crm[0].id, 9_000).expect("replay"));
        assert!(
            !outbox.replay(ws, crm[0].id, 9_000).expect("replay"),
            "only a dead one replays"
        );
        let back = outbox
            .delivery(ws, crm[0].id)
            .expect("read")
            .expect("stored");
        assert_eq!(
            (back.attempts, back.since_ms, back.due_ms, back.tries),
            (0, 9_000, 9_000, 1)
        );
        assert!(back.dead.is_none());
        assert_eq!(
            outbox.queued(&lane(ws, "crm"), 10).expect("queued")[0].id,
            crm[0].id
        );
        assert_eq!(
            depth_of(outbox, ws, "s"),
            Depth {
                pending: 1,
                dead: 1
            }
        );
        // Purged: gone for good; a pending one is not purged.
        assert!(!outbox.purge_dead(ws, crm[0].id).expect("purge"));
        assert!(outbox.purge_dead(ws, crm[1].id).expect("purge"));
        assert_eq!(outbox.delivery(ws, crm[1].id).expect("read"), None);
        assert_eq!(
            depth_of(outbox, ws, "s"),
            Depth {
                pending: 1,
                dead: 0
            }
        );
        let (left, _) = outbox.dead_letters(ws, None, 10, &all).expect("list");
        assert_eq!(left.len(), 1);
        // y's other delivery (desk) is still dead: y's body is kept.
        assert!(outbox.event(ws, "y").expect("read").is_some());
        assert!(outbox.purge_dead(ws, desk[0].id).expect("purge"));
        assert_eq!(outbox.event(ws, "y").expect("read"), None);
    }

    fn events_are_forgotten_after_the_window_and_only_when_closed(outbox: &Outbox) {
        let ws = "window";
        outbox
            .accept(
                ws,
                &[event("done", &[]), event("open", &[("s", "crm")])],
                1_000,
            )
            .expect("accept");
        outbox
            .accept(ws, &[event("young", &[])], 9_000)
            .expect("accept");
        // Window 5 s at 10 s: "done" is old and closed; "open" is old but
        // still has a pending delivery; "young" is inside the window.
        let forgotten = outbox.purge_events(10_000, 5_000, 100).expect("purge");
        assert!(forgotten >= 1);
        let again = outbox
            .accept(
                ws,
                &[event("done", &[]), event("open", &[]), event("young", &[])],
                10_000,
            )
            .expect("accept");
        let duplicate: Vec<bool> = again.iter().map(|a| a.duplicate).collect();
        assert_eq!(duplicate, [false, true, true]);
        assert!(outbox.event(ws, "open").expect("read").is_some());
    }

    fn subscriptions_are_kept_per_workspace(outbox: &Outbox) {
        assert!(
            outbox
                .put_subscription("subs", "calls", b"{\"v\":1}")
                .expect("put")
        );
        assert!(
            !outbox
                .put_subscription("subs", "calls", b"{\"v\":2}")
                .expect("put")
        );
        outbox
            .put_subscription("subs", "cases", b"{}")
            .expect("put");
        outbox
            .put_subscription("subs-2", "calls", b"{\"other\":true}")
            .expect("put");
        assert_eq!(
            outbox
                .subscription("subs", "calls")
                .expect("get")
                .as_deref(),
            Some(b"{\"v\":2}".as_slice())
        );
        let names: Vec<String> = outbox
            .subscriptions("subs")
            .expect("list")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["calls", "cases"]);
        assert_eq!(
            outbox
                .subscription_deleted_at("subs", "calls")
                .expect("never"),
            None
        );
        assert!(
            outbox
                .delete_subscription("subs", "calls", 7_000)
                .expect("delete")
        );
        assert!(
            !outbox
                .delete_subscription("subs", "calls", 8_000)
                .expect("delete")
        );
        assert_eq!(outbox.subscription("subs", "calls").expect("get"), None);
        assert_eq!(
            outbox
                .subscription_deleted_at("subs", "calls")
                .expect("tombstone"),
            Some(7_000),
            "the deletion's time, not a later no-op's"
        );
        assert_eq!(
            outbox
                .subscription_deleted_at("subs-2", "calls")
                .expect("other"),
            None
        );
        assert!(
            outbox
                .subscription("subs-2", "calls")
                .expect("get")
                .is_some()
        );
    }

    fn a_removed_workspace_leaves_nothing_and_touches_no_other(outbox: &Outbox) {
        for ws in ["gone", "kept"] {
            outbox.put_subscription(ws, "s", b"{}").expect("put");
            outbox
                .accept(
                    ws,
                    &[event("e", &[("s", "crm")]), event("f", &[("s", "crm")])],
                    1_000,
                )
                .expect("accept");
            let id = outbox.queued(&lane(ws, "crm"), 1).expect("queued")[0].id;
            let dead = Settle::Dead {
                attempt: attempt(1_500, "invalid-input", true),
                reason: "not retried".into(),
            };
            outbox.settle(ws, id, &dead, 1_500).expect("settle");
        }
        assert!(outbox.remove_workspace("gone").expect("remove") > 0);
        assert!(outbox.subscriptions("gone").expect("list").is_empty());
        assert!(outbox.depths("gone").expect("depths").is_empty());
        assert!(
            outbox
                .queued(&lane("gone", "crm"), 10)
                .expect("queued")
                .is_empty()
        );
        assert!(
            outbox
                .dead_letters("gone", None, 10, &|_| true)
                .expect("list")
                .0
                .is_empty()
        );
        assert!(
            !outbox
                .lanes()
                .expect("lanes")
                .contains(&lane("gone", "crm"))
        );
        assert!(
            !outbox
                .accept("gone", &[event("e", &[])], 2_000)
                .expect("accept")[0]
                .duplicate
        );
        assert_eq!(outbox.subscriptions("kept").expect("list").len(), 1);
        assert_eq!(
            depth_of(outbox, "kept", "s"),
            Depth {
                pending: 1,
                dead: 1
            }
        );
        assert_eq!(
            outbox
                .queued(&lane("kept", "crm"), 10)
                .expect("queued")
                .len(),
            1
        );
    }
}
