//! The event flow. Events are accepted for a workspace (one or a batch),
//! matched against its subscriptions, and written with one delivery per
//! matching subscription to the outbox in one flushed transaction before
//! the caller is answered. The [`dispatch`] loop then delivers each through
//! the one invocation path (`Tenancy::invoke`): the subscription's
//! transform first when it has one, then its destination operation, with
//! the idempotency key `{event id}:{subscription}` on every attempt.
//!
//! Each destination (a connection) has its own queue and its own share of
//! concurrent deliveries, so a slow or failing destination never holds up
//! another. Failed attempts are retried by the subscription's policy
//! ([`patchbay_policy::delivery`]); what cannot succeed, or runs out of
//! attempts, goes to the dead-letter queue, from which it can be inspected,
//! replayed and purged.
//!
//! Ordering: none is guaranteed between events. Within one destination,
//! first attempts start in acceptance order, up to the destination's
//! concurrency at once; a retried delivery goes back in its queue by its
//! next attempt's time, so it can land after events accepted later.
//! Delivery is at least once: a delivery interrupted by a crash is
//! attempted again with the same idempotency key.

#![warn(missing_docs)]

pub mod alerts;
pub mod classify;
pub mod dispatch;
pub mod metrics;
pub mod webhooks;

use patchbay_policy::clock::Clock;
use patchbay_policy::events::{Event, Subscription};
use patchbay_policy::manifest::OperationKind;
use patchbay_storage::StorageError;
use patchbay_storage::outbox::{Accepted, Delivery, Depth, NewDelivery, NewEvent, Outbox};
use patchbay_tenancy::service::{Tenancy, TenancyError};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most events in one batch.
pub const MAX_BATCH: usize = 500;

/// Most subscriptions one workspace may have (an event fans out to at most
/// this many deliveries).
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// How the event flow runs; the operator's to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    /// How long an accepted event id is remembered (resubmitting it creates
    /// nothing), at least; ids with a delivery still open are remembered
    /// until it closes.
    pub idempotency_window_ms: u64,
    /// Deliveries to one destination in flight at once.
    pub lane_concurrency: usize,
    /// Webhooks in: on or off, body size, dedupe window, events per webhook.
    pub webhooks: patchbay_policy::delivery::WebhookPolicy,
}

impl Default for EventSettings {
    /// A day's idempotency window; 16 deliveries per destination at once
    /// (the egress's own cap on one connection's requests in flight).
    fn default() -> Self {
        Self {
            idempotency_window_ms: 24 * 3_600_000,
            lane_concurrency: 16,
            webhooks: patchbay_policy::delivery::WebhookPolicy::default(),
        }
    }
}

/// Why an event-flow request failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// No such workspace or connection, a bad name, or the store failed.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The body is not events (not an object or an array of them, unknown
    /// or mistyped fields): each problem, naming the event. Nothing was written.
    #[error("{}", .0.join("; "))]
    InvalidBody(Vec<String>),
    /// The events are refused: every problem, each naming the event and
    /// field. Nothing was written.
    #[error("{}", .0.join("; "))]
    InvalidEvents(Vec<String>),
    /// The subscription is refused: every problem, each naming its field.
    #[error("{}", .0.join("; "))]
    InvalidSubscription(Vec<String>),
    /// A listing's cursor or filter is not one this host gave or takes.
    #[error("{0}")]
    InvalidQuery(String),
    /// No subscription of this name.
    #[error("subscription {0:?} not found")]
    SubscriptionNotFound(String),
    /// No dead-lettered delivery of this id.
    #[error("dead letter {0:?} not found")]
    DeadLetterNotFound(String),
    /// The workspace has no dead-letter alert.
    #[error("the workspace has no dead-letter alert")]
    AlertNotSet,
    /// The dead-letter alert is refused: every problem, each naming its field.
    #[error("{}", .0.join("; "))]
    InvalidAlert(Vec<String>),
    /// The outbox failed.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for EventsError {
    fn from(e: StorageError) -> Self {
        EventsError::Storage(e.to_string())
    }
}

/// A subscription as stored: its name and definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredSubscription {
    /// Its name in the workspace.
    pub name: String,
    /// What it matches and where it delivers.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// Its deliveries waiting and dead-lettered now.
    pub depth: Depth,
}

/// Which dead letters a listing, replay or purge covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// Only those whose last error had this code.
    pub code: Option<String>,
    /// Only those dead-lettered at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only those dead-lettered before this time.
    pub until_ms: Option<u64>,
}

impl DeadFilter {
    fn keeps(&self, delivery: &Delivery) -> bool {
        let Some(dead) = &delivery.dead else {
            return false;
        };
        self.subscription
            .as_ref()
            .is_none_or(|s| *s == delivery.subscription)
            && self.code.as_ref().is_none_or(|c| *c == dead.code)
            && self.since_ms.is_none_or(|t| dead.at_ms >= t)
            && self.until_ms.is_none_or(|t| dead.at_ms < t)
    }
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadPage {
    /// Oldest first.
    pub items: Vec<Delivery>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A dead letter with the event it was to deliver.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetterDetail {
    /// The delivery: its attempts, each with its time and error.
    pub delivery: Delivery,
    /// The event, as accepted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Json,
}

/// Most dead letters one replay or purge of a filter covers.
pub const MAX_BULK: usize = 1_000;

/// A workspace's subscriptions: each by name, with when a subscription of
/// that name was last deleted (a delivery made before then is not its own).
type Subscriptions = Arc<Vec<(String, Arc<Subscription>, Option<u64>)>>;

/// The event flow of every workspace.
pub struct Events {
    tenancy: Arc<Tenancy>,
    outbox: Outbox,
    clock: Clock,
    settings: EventSettings,
    /// Each workspace's subscriptions, as last read; dropped on every change.
    subscriptions: RwLock<HashMap<String, Subscriptions>>,
    /// Bumped by every change of any subscription: a read that began
    /// before a change is not kept (it could hold a deleted subscription).
    generation: std::sync::atomic::AtomicU64,
    /// Woken when there is something new to deliver.
    wake: Arc<tokio::sync::Notify>,
    /// Counters and histograms per subscription.
    pub metrics: metrics::DeliveryMetrics,
    /// Workspaces whose dead-letter alert to look at, and those raised.
    alerts: alerts::Alerts,
    /// Each connection's webhook rate.
    webhook_rate: webhooks::WebhookRate,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `N` bytes from the OS's generator; without one (logged), the clock and a
/// counter, which still make ids unique in this process.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        tracing::error!(target: "patchbay::events", "no OS randomness; ids from the clock and a counter");
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let fallback = [t.to_be_bytes(), n.to_be_bytes()].concat();
        for (byte, from) in bytes.iter_mut().zip(fallback) {
            *byte = from;
        }
    }
    bytes
}

/// `evt_` and 24 random hex digits: an id for an event sent without one.
fn generated_id() -> String {
    format!("evt_{}", hex::encode(random_bytes::<12>()))
}

/// Blocking storage work, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, EventsError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(EventsError::Storage(format!("storage task failed: {e}"))),
    }
}

impl Events {
    /// The event flow on `outbox`, delivering through `tenancy`.
    pub fn new(
        tenancy: Arc<Tenancy>,
        outbox: Outbox,
        clock: Clock,
        settings: EventSettings,
    ) -> Self {
        Self {
            tenancy,
            outbox,
            clock,
            settings,
            subscriptions: RwLock::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
            wake: Arc::default(),
            metrics: metrics::DeliveryMetrics::default(),
            alerts: alerts::Alerts::default(),
            webhook_rate: webhooks::WebhookRate::new(settings.webhooks.per_connection_per_second),
        }
    }

    /// The outbox the flow keeps its state in.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The settings it runs with.
    pub fn settings(&self) -> EventSettings {
        self.settings
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Accept `body` (one event, or an array of up to [`MAX_BATCH`]) for
    /// `workspace`: each checked, given an id when it has none, matched
    /// against the workspace's enabled subscriptions, and written with its
    /// deliveries, all on disk before this returns. Any refused event
    /// refuses the whole batch, naming each problem.
    pub async fn publish(&self, workspace: &str, body: Json) -> Result<Vec<Accepted>, EventsError> {
        self.tenancy.workspace(workspace)?;
        let (items, batch) = match body {
            Json::Array(items) => (items, true),
            one => (vec![one], false),
        };
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(EventsError::InvalidEvents(vec![format!(
                "a batch holds 1-{MAX_BATCH} events; this one holds {}",
                items.len()
            )]));
        }
        let accepted = self.prepare(workspace, items, batch).await?;
        let outbox = self.outbox.clone();
        let ws = workspace.to_owned();
        let now = self.now_ms();
        let result = blocking(move || outbox.accept(&ws, &accepted, now)).await?;
        self.accepted(&result);
        Ok(result)
    }

    /// Wake the dispatcher when `accepted` created deliveries.
    fn accepted(&self, accepted: &[Accepted]) {
        if accepted.iter().any(|a| a.deliveries > 0) {
            self.wake.notify_one();
        }
    }

    /// Check `items` (events as JSON; `batch` when they came as an array),
    /// give each an id when it has none, and match them against the
    /// workspace's enabled subscriptions: what to accept, or every problem.
    async fn prepare(
        &self,
        workspace: &str,
        items: Vec<Json>,
        batch: bool,
    ) -> Result<Vec<NewEvent>, EventsError> {
        let subscriptions = self.subscriptions_of(workspace).await?;
        let (mut shape, mut problems) = (Vec::new(), Vec::new());
        let mut accepted = Vec::with_capacity(items.len());
        for (i, mut item) in items.into_iter().enumerate() {
            let at = if batch {
                format!("events[{i}]")
            } else {
                "event".to_owned()
            };
            let Json::Object(fields) = &mut item else {
                shape.push(format!("{at}: an event is a JSON object"));
                continue;
            };
            if !fields.contains_key("id") {
                fields.insert("id".into(), Json::String(generated_id()));
            }
            let event: Event = match serde_json::from_value(item) {
                Ok(event) => event,
                Err(e) => {
                    shape.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let own = event.problems();
            if !own.is_empty() {
                problems.extend(own.into_iter().map(|p| format!("{at}.{p}")));
                continue;
            }
            let envelope = serde_json::to_value(&event).unwrap_or(Json::Null);
            let deliveries = subscriptions
                .iter()
                .filter(|(_, s, _)| s.matches(&event.kind, &envelope))
                .map(|(name, s, _)| NewDelivery {
                    subscription: name.clone(),
                    destination: s.destination.connection.clone(),
                })
                .collect();
            accepted.push(NewEvent {
                id: event.id,
                body: serde_json::to_vec(&envelope).unwrap_or_default(),
                deliveries,
            });
        }
        if !shape.is_empty() {
            return Err(EventsError::InvalidBody(shape));
        }
        if !problems.is_empty() {
            return Err(EventsError::InvalidEvents(problems));
        }
        Ok(accepted)
    }

    /// `workspace`'s subscriptions, from the cache or the store.
    async fn subscriptions_of(&self, workspace: &str) -> Result<Subscriptions, EventsError> {
        if let Some(cached) = self.read_cache().get(workspace) {
            return Ok(cached.clone());
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let outbox = self.outbox.clone();
        let ws = workspace.to_owned();
        // Read with each name's last deletion, so the delivery path checks
        // it in memory.
        let stored = blocking(move || {
            outbox
                .subscriptions(&ws)?
                .into_iter()
                .map(|(name, json)| {
                    let deleted_at = outbox.subscription_deleted_at(&ws, &name)?;
                    Ok((name, json, deleted_at))
                })
                .collect::<Result<Vec<_>, StorageError>>()
        })
        .await?;
        let mut parsed = Vec::with_capacity(stored.len());
        for (name, json, deleted_at) in stored {
            match serde_json::from_slice::<Subscription>(&json) {
                Ok(subscription) => parsed.push((name, Arc::new(subscription), deleted_at)),
                Err(e) => {
                    return Err(EventsError::Storage(format!(
                        "subscription {name:?} does not read: {e}"
                    )));
                }
            }
        }
        let parsed = Arc::new(parsed);
        let mut cache = self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            cache.insert(workspace.to_owned(), parsed.clone());
        }
        Ok(parsed)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Subscriptions>> {
        self.subscriptions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_subscriptions(&self, workspace: &str) {
        let mut cache = self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.remove(workspace);
    }

    /// `workspace`'s subscription `name`, when it exists, with when a
    /// subscription of that name was last deleted.
    pub(crate) async fn find_subscription(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<(Arc<Subscription>, Option<u64>)>, EventsError> {
        Ok(self
            .subscriptions_of(workspace)
            .await?
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, s, deleted_at)| (s.clone(), *deleted_at)))
    }

    /// Check that `endpoint`'s connection exists and its plugin has the
    /// operation, of `kind`: problems, each naming `at`.
    async fn endpoint_problems(
        &self,
        workspace: &str,
        at: &str,
        endpoint: &patchbay_policy::events::Endpoint,
        kind: OperationKind,
    ) -> Result<Vec<String>, EventsError> {
        if let Err(e) = patchbay_tenancy::check_name("connection", &endpoint.connection) {
            return Ok(vec![format!("{at}.connection: {e}")]);
        }
        let connection = match self.tenancy.connection(workspace, &endpoint.connection) {
            Ok(connection) => connection,
            Err(TenancyError::ConnectionNotFound(name)) => {
                return Ok(vec![format!(
                    "{at}.connection: the workspace has no connection {name:?}"
                )]);
            }
            Err(e) => return Err(e.into()),
        };
        let plugin = self.tenancy.plugin_of(&connection).await?;
        let kind_name = |k: OperationKind| match k {
            OperationKind::Lookup => "a lookup",
            OperationKind::Action => "an action",
            OperationKind::Transform => "a transform",
        };
        Ok(match plugin.manifest.operation(&endpoint.operation) {
            None => vec![format!(
                "{at}.operation: {} has no operation {:?}",
                connection.pinned(),
                endpoint.operation
            )],
            Some(op) if op.kind != kind => vec![format!(
                "{at}.operation: {:?} is {} operation; a {at} must be {}",
                endpoint.operation,
                kind_name(op.kind),
                kind_name(kind)
            )],
            Some(_) => Vec::new(),
        })
    }

    /// Create or replace `workspace`'s subscription `name`; whether it is
    /// new. Its connections must exist, the destination operation be an
    /// `action` and the transform a `transform`.
    pub async fn put_subscription(
        &self,
        workspace: &str,
        name: &str,
        subscription: Subscription,
    ) -> Result<(StoredSubscription, bool), EventsError> {
        self.tenancy.workspace(workspace)?;
        patchbay_tenancy::check_name("subscription", name).map_err(TenancyError::from)?;
        let mut problems = subscription.problems();
        if problems.is_empty() {
            problems.extend(
                self.endpoint_problems(
                    workspace,
                    "destination",
                    &subscription.destination,
                    OperationKind::Action,
                )
                .await?,
            );
            if let Some(transform) = &subscription.transform {
                problems.extend(
                    self.endpoint_problems(
                        workspace,
                        "transform",
                        transform,
                        OperationKind::Transform,
                    )
                    .await?,
                );
            }
        }
        let existing = self.subscriptions_of(workspace).await?;
        if existing.len() >= MAX_SUBSCRIPTIONS && !existing.iter().any(|(n, ..)| n == name) {
            problems.push(format!(
                "the workspace has {MAX_SUBSCRIPTIONS} subscriptions, the most it may have"
            ));
        }
        if !problems.is_empty() {
            return Err(EventsError::InvalidSubscription(problems));
        }
        let json =
            serde_json::to_vec(&subscription).map_err(|e| EventsError::Storage(e.to_string()))?;
        let outbox = self.outbox.clone();
        let (ws, n) = (workspace.to_owned(), name.to_owned());
        let created = blocking(move || outbox.put_subscription(&ws, &n, &json)).await?;
        self.forget_subscriptions(workspace);
        // Deliveries held while it was disabled may go now.
        self.wake.notify_one();
        let depth = self.depth(workspace, name)?;
        Ok((
            StoredSubscription {
                name: name.to_owned(),
                subscription,
                depth,
            },
            created,
        ))
    }

    fn depth(&self, workspace: &str, name: &str) -> Result<Depth, EventsError> {
        Ok(self
            .outbox
            .depths(workspace)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .unwrap_or_default())
    }

    /// `workspace`'s subscription `name`.
    pub async fn subscription(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<StoredSubscription, EventsError> {
        self.tenancy.workspace(workspace)?;
        let (subscription, _) = self
            .find_subscription(workspace, name)
            .await?
            .ok_or_else(|| EventsError::SubscriptionNotFound(name.to_owned()))?;
        Ok(StoredSubscription {
            name: name.to_owned(),
            subscription: (*subscription).clone(),
            depth: self.depth(workspace, name)?,
        })
    }

    /// Every subscription of `workspace`, by name.
    pub async fn subscriptions(
        &self,
        workspace: &str,
    ) -> Result<Vec<StoredSubscription>, EventsError> {
        self.tenancy.workspace(workspace)?;
        let depths: HashMap<String, Depth> = self.outbox.depths(workspace)?.into_iter().collect();
        Ok(self
            .subscriptions_of(workspace)
            .await?
            .iter()
            .map(|(name, s, _)| StoredSubscription {
                name: name.clone(),
                subscription: (**s).clone(),
                depth: depths.get(name).copied().unwrap_or_default(),
            })
            .collect())
    }

    /// Remove `workspace`'s subscription `name`. Its pending deliveries go
    /// to the dead-letter queue when they come due (nothing is dropped
    /// unseen); its dead letters stay until purged.
    pub async fn delete_subscription(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<(), EventsError> {
        self.tenancy.workspace(workspace)?;
        let outbox = self.outbox.clone();
        let (ws, n) = (workspace.to_owned(), name.to_owned());
        let now = self.now_ms();
        let removed = blocking(move || outbox.delete_subscription(&ws, &n, now)).await?;
        self.forget_subscriptions(workspace);
        self.metrics.remove_subscription(workspace, name);
        if removed {
            self.wake.notify_one();
            Ok(())
        } else {
            Err(EventsError::SubscriptionNotFound(name.to_owned()))
        }
    }

    /// `workspace`'s dead letters that `filter` keeps, oldest first, after
    /// the cursor `after` (a page's `next`), at most `limit`.
    pub async fn dead_letters(
        &self,
        workspace: &str,
        filter: DeadFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadPage, EventsError> {
        self.tenancy.workspace(workspace)?;
        let after = match after {
            None => None,
            Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
                EventsError::InvalidQuery(format!(
                    "after: {cursor:?} is not a cursor this listing gave"
                ))
            })?),
        };
        let outbox = self.outbox.clone();
        let ws = workspace.to_owned();
        let (items, more) = blocking(move || {
            outbox.dead_letters(&ws, after, limit, &|d: &Delivery| filter.keeps(d))
        })
        .await?;
        let next = match items.last() {
            Some(last) if more => last
                .dead
                .as_ref()
                .map(|d| format!("{}-{}", d.at_ms, last.id)),
            _ => None,
        };
        Ok(DeadPage { items, next })
    }

    /// A dead letter with its event.
    pub async fn dead_letter(
        &self,
        workspace: &str,
        id: &str,
    ) -> Result<DeadLetterDetail, EventsError> {
        self.tenancy.workspace(workspace)?;
        let missing = || EventsError::DeadLetterNotFound(id.to_owned());
        let number: u64 = id.parse().map_err(|_| missing())?;
        let delivery = self
            .outbox
            .delivery(workspace, number)?
            .filter(|d| d.dead.is_some())
            .ok_or_else(missing)?;
        let event = self
            .outbox
            .event(workspace, &delivery.event_id)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Json::Null);
        Ok(DeadLetterDetail { delivery, event })
    }

    /// Put dead letter `id` back in its destination's queue, due now, with a
    /// fresh round of attempts.
    pub async fn replay(&self, workspace: &str, id: &str) -> Result<(), EventsError> {
        self.tenancy.workspace(workspace)?;
        let missing = || EventsError::DeadLetterNotFound(id.to_owned());
        let number: u64 = id.parse().map_err(|_| missing())?;
        let outbox = self.outbox.clone();
        let (ws, now) = (workspace.to_owned(), self.now_ms());
        let replayed = blocking(move || {
            let replayed = outbox.replay(&ws, number, now)?;
            outbox.flush()?;
            Ok(replayed)
        });
        if replayed.await? {
            self.wake.notify_one();
            self.alerts.check_soon(workspace);
            Ok(())
        } else {
            Err(missing())
        }
    }

    /// Replay up to [`MAX_BULK`] dead letters that `filter` keeps; how many.
    pub async fn replay_matching(
        &self,
        workspace: &str,
        filter: DeadFilter,
    ) -> Result<usize, EventsError> {
        let n = self
            .bulk(workspace, filter, |outbox, ws, id, now| {
                outbox.replay(ws, id, now)
            })
            .await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// Remove dead letter `id` for good.
    pub async fn purge(&self, workspace: &str, id: &str) -> Result<(), EventsError> {
        self.tenancy.workspace(workspace)?;
        let missing = || EventsError::DeadLetterNotFound(id.to_owned());
        let number: u64 = id.parse().map_err(|_| missing())?;
        let outbox = self.outbox.clone();
        let ws = workspace.to_owned();
        let purged = blocking(move || {
            let purged = outbox.purge_dead(&ws, number)?;
            outbox.flush()?;
            Ok(purged)
        });
        if purged.await? {
            self.alerts.check_soon(workspace);
            Ok(())
        } else {
            Err(missing())
        }
    }

    /// Remove up to [`MAX_BULK`] dead letters that `filter` keeps; how many.
    pub async fn purge_matching(
        &self,
        workspace: &str,
        filter: DeadFilter,
    ) -> Result<usize, EventsError> {
        self.bulk(workspace, filter, |outbox, ws, id, _| {
            outbox.purge_dead(ws, id)
        })
        .await
    }

    async fn bulk(
        &self,
        workspace: &str,
        filter: DeadFilter,
        each: fn(&Outbox, &str, u64, u64) -> Result<bool, StorageError>,
    ) -> Result<usize, EventsError> {
        self.tenancy.workspace(workspace)?;
        let outbox = self.outbox.clone();
        let (ws, now) = (workspace.to_owned(), self.now_ms());
        let done = blocking(move || {
            let (items, _) =
                outbox.dead_letters(&ws, None, MAX_BULK, &|d: &Delivery| filter.keeps(d))?;
            let mut done = 0;
            for delivery in items {
                if each(&outbox, &ws, delivery.id, now)? {
                    done += 1;
                }
            }
            outbox.flush()?;
            Ok(done)
        })
        .await?;
        self.alerts.check_soon(workspace);
        Ok(done)
    }

    /// Drop everything of a deleted workspace.
    pub async fn remove_workspace(&self, workspace: &str) -> Result<(), EventsError> {
        let outbox = self.outbox.clone();
        let ws = workspace.to_owned();
        blocking(move || outbox.remove_workspace(&ws)).await?;
        self.forget_subscriptions(workspace);
        self.metrics.remove_workspace(workspace);
        self.remove_alert_of(workspace).await
    }

    /// Look at `workspace`'s dead-letter alert soon: a delivery was just
    /// dead-lettered.
    pub(crate) fn dead_lettered(&self, workspace: &str) {
        self.alerts.check_soon(workspace);
    }

    /// Forget event ids past the idempotency window (a bounded pass); how many.
    pub async fn purge_expired_ids(&self, max: usize) -> Result<usize, EventsError> {
        let outbox = self.outbox.clone();
        let now = self.now_ms();
        let window = self.settings.idempotency_window_ms;
        let receipts = u64::from(self.settings.webhooks.dedupe_window_hours) * 3_600_000;
        blocking(move || {
            Ok(outbox.purge_events(now, window, max)?
                + outbox.purge_receipts(now, receipts, max)?)
        })
        .await
    }
}

/// `{dead-lettered at}-{id}` back to its numbers.
fn parse_cursor(cursor: &str) -> Option<(u64, u64)> {
    let (at, id) = cursor.split_once('-')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}
