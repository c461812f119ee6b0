//! The delivery loop: takes due deliveries from each destination's queue,
//! up to the destination's concurrency, and runs each through the
//! invocation path; records how it ended.
//!
//! Which deliveries are in flight is known only in memory: after a crash
//! they are still in their queues and are attempted again, with the same
//! idempotency key (at least once).

use crate::classify::{Failed, invoke_failure, start_failure};
use crate::metrics::Counted;
use crate::{Events, EventsError};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use patchbay_policy::delivery::{Failure, Next};
use patchbay_policy::events::Subscription;
use patchbay_policy::rate::RateLimit;
use patchbay_storage::outbox::{Attempt, Delivery, Lane, Queued, Settle};
use patchbay_tenancy::invoke::Invocation;
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Longest the loop sleeps with nothing due: new work wakes it sooner.
const IDLE: Duration = Duration::from_secs(1);
/// How long a disabled subscription's deliveries wait before a new look.
const DISABLED_WAIT_MS: u64 = 5_000;
/// How long a delivery waits after the store failed while attempting it.
const STORAGE_WAIT_MS: u64 = 1_000;
/// How often event ids past the idempotency window are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Most ids forgotten per pass.
const PURGE_MAX: usize = 10_000;

/// A subscription's limiter, with the limit it was made for, and the
/// next slot not yet promised to a delivery put back to wait.
type Gate = (RateLimit, Arc<DefaultDirectRateLimiter>, Instant);

/// Per-subscription rate limiters, made anew when the limit changes.
#[derive(Default)]
struct RateGates {
    gates: Mutex<HashMap<(String, String), Gate>>,
}

impl RateGates {
    /// `Ok` to go now; otherwise how long this delivery is to wait. Each
    /// one put back is promised a slot of its own, one period after the
    /// last promised: a backlog comes due spread over the slots instead of
    /// all at the next one (and all but one put back again).
    fn check(&self, workspace: &str, subscription: &str, limit: RateLimit) -> Result<(), Duration> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let key = (workspace.to_owned(), subscription.to_owned());
        let now = Instant::now();
        let gate = match gates.get_mut(&key) {
            Some(gate) if gate.0 == limit => gate,
            _ => {
                let Some(quota) = quota(limit) else {
                    return Ok(());
                };
                gates.insert(
                    key.clone(),
                    (limit, Arc::new(RateLimiter::direct(quota)), now),
                );
                match gates.get_mut(&key) {
                    Some(gate) => gate,
                    None => return Ok(()),
                }
            }
        };
        match gate.1.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let earliest = now + not_until.wait_time_from(DefaultClock::default().now());
                let slot = earliest.max(gate.2);
                gate.2 = slot + limit.period();
                Err(slot - now)
            }
        }
    }

    /// Forget the limiters of subscriptions that no longer exist.
    fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(ws, sub), _| keep(ws, sub));
    }
}

/// `requests` per `per_seconds`, in bursts of up to `requests`.
fn quota(limit: RateLimit) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.requests)?;
    Some(Quota::with_period(limit.period())?.allow_burst(burst))
}

/// Which delivery each running task makes.
type Making = HashMap<tokio::task::Id, (Lane, u64)>;

/// How an attempt ended, to be recorded, and who waits for it.
type Recording = (String, u64, Settle, tokio::sync::oneshot::Sender<bool>);

/// Most attempts' ends recorded in one transaction.
const RECORD_BATCH: usize = 256;

/// Records attempts' ends in group commits: every end that arrived while
/// the last transaction ran goes into the next one.
async fn recorder(events: Arc<Events>, mut ends: tokio::sync::mpsc::UnboundedReceiver<Recording>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while ends.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        // The transaction runs on a blocking thread: sled calls stay off the
        // async workers, which the API and every other delivery share.
        let taken = std::mem::take(&mut batch);
        let owner = events.clone();
        let written = tokio::task::spawn_blocking(move || {
            let recorded = record_batch(&owner, &taken);
            (taken, recorded)
        })
        .await;
        let (taken, recorded) = match written {
            Ok(done) => done,
            Err(e) => {
                // A host bug; the senders were dropped with the batch, so each
                // delivery counts as not recorded and is attempted again.
                tracing::error!(target: "patchbay::events", error = %e,
                    "the recording task failed; those deliveries will be attempted again");
                continue;
            }
        };
        for ((workspace, _, settle, done), recorded) in taken.into_iter().zip(recorded) {
            if recorded && matches!(settle, Settle::Dead { .. }) {
                events.dead_lettered(&workspace);
            }
            let _ = done.send(recorded);
        }
    }
}

/// Record `batch` in one transaction; whether each was recorded.
fn record_batch(events: &Events, batch: &[Recording]) -> Vec<bool> {
    let outcomes: Vec<(&str, u64, &Settle)> = batch
        .iter()
        .map(|(ws, id, settle, _)| (ws.as_str(), *id, settle))
        .collect();
    let now = events.now_ms();
    match events.outbox.settle_many(&outcomes, now) {
        Ok(_) => vec![true; outcomes.len()],
        // One record that does not read fails the whole transaction:
        // each alone, so only what cannot be recorded is left out.
        Err(e) => {
            tracing::error!(target: "patchbay::events", error = %e, deliveries = batch.len(),
                "recording delivery attempts together failed; recording each alone");
            outcomes
                .iter()
                .map(|(ws, id, settle)| match events.outbox.settle(ws, *id, settle, now) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(target: "patchbay::events", error = %e, workspace = ws,
                            delivery = id, "recording a delivery attempt failed; it will be attempted again");
                        false
                    }
                })
                .collect()
        }
    }
}

/// The running delivery loop.
pub struct Dispatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

impl Dispatcher {
    /// Start delivering `events`' outbox on the current runtime.
    pub fn start(events: Arc<Events>) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(events, stopped));
        Self { stop, task }
    }

    /// Stop taking deliveries, wait up to `grace` for those in flight to
    /// end and be recorded; any still running then are left in their queues
    /// (attempted again at the next start, with the same key).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            // Dropping the loop's task set aborts the deliveries still running.
            task.abort();
            let _ = task.await;
        }
    }
}

async fn run(events: Arc<Events>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let gates = RateGates::default();
    let (ends, received) = tokio::sync::mpsc::unbounded_channel();
    let recording = tokio::spawn(recorder(events.clone(), received));
    let context = Arc::new(Context { gates, ends });
    let upkeep = tokio::spawn(upkeep(events.clone(), context.clone()));
    let alerts = tokio::spawn(crate::alerts::watch(events.clone()));
    let mut in_flight: HashMap<Lane, HashSet<u64>> = HashMap::new();
    let mut tasks: JoinSet<(Lane, u64)> = JoinSet::new();
    // Which delivery each task makes, so one that panicked frees its place.
    let mut making = Making::new();
    let concurrency = events.settings.lane_concurrency.max(1);
    loop {
        if *stopped.borrow() {
            break;
        }
        let now = events.now_ms();
        let mut wake_in = IDLE;
        match start_due(
            &events,
            &context,
            &mut in_flight,
            (&mut tasks, &mut making),
            concurrency,
            now,
        ) {
            Ok(Some(soonest)) => {
                wake_in = wake_in.min(Duration::from_millis(soonest.saturating_sub(now)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(target: "patchbay::events", error = %e,
                    "reading the delivery queues failed; trying again shortly");
            }
        }
        tokio::select! {
            _ = events.wake.notified() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                finished(&mut in_flight, &mut making, done)
            }
            _ = tokio::time::sleep(wake_in) => {}
            // The handle dropped without a word stops the loop too.
            changed = stopped.changed() => if changed.is_err() { break },
        }
        while let Some(done) = tasks.try_join_next_with_id() {
            finished(&mut in_flight, &mut making, done);
        }
    }
    // Stopping: what is in flight may finish within the caller's grace;
    // past it this task is aborted, and what still runs with it (left in
    // its queue).
    while let Some(done) = tasks.join_next_with_id().await {
        finished(&mut in_flight, &mut making, done);
    }
    upkeep.abort();
    alerts.abort();
    drop(context);
    let _ = recording.await;
}

/// What every delivery task shares: the rate limiters, and the way to the
/// recorder.
struct Context {
    gates: RateGates,
    ends: tokio::sync::mpsc::UnboundedSender<Recording>,
}

fn finished(
    in_flight: &mut HashMap<Lane, HashSet<u64>>,
    making: &mut Making,
    done: Result<(tokio::task::Id, (Lane, u64)), tokio::task::JoinError>,
) {
    let task = match &done {
        Ok((task, _)) => *task,
        Err(e) => {
            // A host bug; the delivery stays in its queue and is tried again.
            tracing::error!(target: "patchbay::events", error = %e, "a delivery task failed");
            e.id()
        }
    };
    if let Some((lane, id)) = making.remove(&task)
        && let Some(ids) = in_flight.get_mut(&lane)
    {
        ids.remove(&id);
        if ids.is_empty() {
            in_flight.remove(&lane);
        }
    }
}

/// Now and then: forget event ids past the idempotency window (until none
/// is left to forget) and the rate limiters of deleted subscriptions. Off
/// the delivery loop, so a long pass delays no delivery.
async fn upkeep(events: Arc<Events>, context: Arc<Context>) {
    loop {
        tokio::time::sleep(PURGE_EVERY).await;
        loop {
            match events.purge_expired_ids(PURGE_MAX).await {
                Ok(n) if n == PURGE_MAX => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(target: "patchbay::events", error = %e,
                        "forgetting event ids past the idempotency window failed");
                    break;
                }
            }
        }
        events.webhook_rate.prune();
        let outbox = events.outbox.clone();
        context.gates.retain(|ws, sub| {
            // Kept unless the store says for sure that it is gone.
            !matches!(outbox.subscription(ws, sub), Ok(None))
        });
    }
}

/// Start every due delivery a destination has room for; the soonest time a
/// queued delivery not yet started comes due.
fn start_due(
    events: &Arc<Events>,
    context: &Arc<Context>,
    in_flight: &mut HashMap<Lane, HashSet<u64>>,
    (tasks, making): (&mut JoinSet<(Lane, u64)>, &mut Making),
    concurrency: usize,
    now: u64,
) -> Result<Option<u64>, EventsError> {
    let mut soonest: Option<u64> = None;
    for lane in events.outbox.lanes()? {
        let busy = in_flight.get(&lane).map_or(0, HashSet::len);
        let free = concurrency.saturating_sub(busy);
        // The busy ones are at most `busy` of the first entries; one more
        // than the room shows when the next comes due.
        let queued = events.outbox.queued(&lane, busy + free + 1)?;
        let mut started = 0;
        for entry in queued {
            if in_flight
                .get(&lane)
                .is_some_and(|ids| ids.contains(&entry.id))
            {
                continue;
            }
            if entry.due_ms > now {
                soonest = Some(soonest.map_or(entry.due_ms, |s| s.min(entry.due_ms)));
                break;
            }
            if started == free {
                break;
            }
            started += 1;
            in_flight.entry(lane.clone()).or_default().insert(entry.id);
            let (events, context, lane) = (events.clone(), context.clone(), lane.clone());
            let lane_of_task = lane.clone();
            let task = tasks.spawn(async move {
                deliver(&events, &context, &lane, entry).await;
                (lane, entry.id)
            });
            making.insert(task.id(), (lane_of_task, entry.id));
        }
    }
    Ok(soonest)
}

/// One attempt at delivery `id`, and its record.
async fn deliver(events: &Events, context: &Context, lane: &Lane, entry: Queued) {
    let (workspace, id) = (lane.workspace.as_str(), entry.id);
    let outbox = &events.outbox;
    let delivery = match outbox.delivery(workspace, id) {
        Ok(Some(delivery)) if delivery.dead.is_none() => delivery,
        Ok(_) => {
            // Settled meanwhile, or a queue entry a removal cut short left
            // behind: dropped, or it would be started again and again.
            if let Err(e) = outbox.drop_stale_entry(lane, entry) {
                tracing::error!(target: "patchbay::events", error = %e, delivery = id,
                    "dropping a stale queue entry failed");
                tokio::time::sleep(Duration::from_millis(STORAGE_WAIT_MS)).await;
            }
            return;
        }
        Err(e) => {
            tracing::error!(target: "patchbay::events", error = %e, delivery = id,
                "reading a delivery failed");
            defer(events, context, workspace, id, STORAGE_WAIT_MS).await;
            return;
        }
    };
    // A delivery made before its subscription's name was last deleted
    // belongs to the deleted one, never to one created again under the name.
    let found = events
        .find_subscription(workspace, &delivery.subscription)
        .await
        .map(|found| {
            found.and_then(|(subscription, deleted_at)| {
                let older = deleted_at.is_some_and(|at| delivery.created_ms <= at);
                (!older).then_some(subscription)
            })
        });
    let subscription = match found {
        Ok(Some(subscription)) => subscription,
        Ok(None) => {
            let attempt = attempt(
                events,
                "subscription-not-found",
                format!("subscription {:?} was deleted", delivery.subscription),
                true,
                None,
            );
            let reason = "its subscription was deleted".to_owned();
            events
                .metrics
                .count(workspace, &delivery.subscription, Counted::DeadLettered);
            record(
                events,
                context,
                workspace,
                id,
                Settle::Dead { attempt, reason },
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::error!(target: "patchbay::events", error = %e, workspace,
                subscription = %delivery.subscription, "reading a subscription failed");
            defer(events, context, workspace, id, STORAGE_WAIT_MS).await;
            return;
        }
    };
    if subscription.destination.connection != delivery.destination {
        // The subscription now points elsewhere: its deliveries follow, in
        // their new destination's queue (and its share of deliveries).
        let destination = subscription.destination.connection.clone();
        let due_ms = events.now_ms();
        record(
            events,
            context,
            workspace,
            id,
            Settle::Requeue {
                destination,
                due_ms,
            },
        )
        .await;
        events.wake.notify_one();
        return;
    }
    if !subscription.enabled {
        defer(events, context, workspace, id, DISABLED_WAIT_MS).await;
        return;
    }
    if let Some(limit) = subscription.rate_limit
        && let Err(wait) = context
            .gates
            .check(workspace, &delivery.subscription, limit)
    {
        events
            .metrics
            .count(workspace, &delivery.subscription, Counted::Deferred);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX / 2);
        defer(events, context, workspace, id, wait_ms.max(1)).await;
        return;
    }
    let outcome = attempt_once(events, workspace, &delivery, &subscription).await;
    let now = events.now_ms();
    let settle = match outcome {
        Ok(()) => {
            let latency = Duration::from_millis(now.saturating_sub(delivery.created_ms));
            events.metrics.count(
                workspace,
                &delivery.subscription,
                Counted::Delivered(latency),
            );
            tracing::debug!(target: "patchbay::events", workspace, delivery = id,
                subscription = %delivery.subscription, "delivered");
            Settle::Delivered
        }
        Err(failed) => {
            let age = Duration::from_millis(now.saturating_sub(delivery.since_ms));
            let next = subscription.retry.after_failure(
                delivery.attempts + 1,
                age,
                &failed.failure,
                fastrand::f64(),
            );
            tracing::info!(target: "patchbay::events", workspace, delivery = id,
                subscription = %delivery.subscription, code = %failed.code,
                next = ?next, "delivery attempt failed");
            let held = matches!(failed.failure, Failure::CircuitOpen(_));
            match next {
                Next::Retry { after, counts } => {
                    let counted = if held {
                        Counted::Held
                    } else {
                        Counted::Retried
                    };
                    events
                        .metrics
                        .count(workspace, &delivery.subscription, counted);
                    let attempt = attempt(
                        events,
                        &failed.code,
                        failed.message,
                        counts,
                        failed.invocation_id,
                    );
                    let due_ms = now + u64::try_from(after.as_millis()).unwrap_or(u64::MAX / 2);
                    Settle::Retry { attempt, due_ms }
                }
                Next::DeadLetter(reason) => {
                    events
                        .metrics
                        .count(workspace, &delivery.subscription, Counted::DeadLettered);
                    let attempt = attempt(
                        events,
                        &failed.code,
                        failed.message,
                        !held,
                        failed.invocation_id,
                    );
                    Settle::Dead { attempt, reason }
                }
            }
        }
    };
    record(events, context, workspace, id, settle).await;
}

fn attempt(
    events: &Events,
    code: &str,
    message: String,
    counted: bool,
    invocation_id: Option<String>,
) -> Attempt {
    Attempt {
        at_ms: events.now_ms(),
        code: code.to_owned(),
        message,
        counted,
        invocation_id,
    }
}

/// Put delivery `id` back in its queue, due in `wait_ms`, without an attempt.
async fn defer(events: &Events, context: &Context, workspace: &str, id: u64, wait_ms: u64) {
    let due_ms = events.now_ms().saturating_add(wait_ms);
    record(events, context, workspace, id, Settle::Defer { due_ms }).await;
}

/// Record how an attempt ended, in the recorder's next group commit, and
/// wait until it is (the delivery counts as in flight until then, so it is
/// not started again). A failure to record is logged: the delivery stays in
/// its queue and is attempted again (at least once).
async fn record(events: &Events, context: &Context, workspace: &str, id: u64, settle: Settle) {
    let (done, recorded) = tokio::sync::oneshot::channel();
    match context.ends.send((workspace.to_owned(), id, settle, done)) {
        Ok(()) => {
            let _ = recorded.await;
        }
        // No recorder (the loop is stopping): record it alone.
        Err(tokio::sync::mpsc::error::SendError((_, _, settle, _))) => {
            if let Err(e) = events
                .outbox
                .settle(workspace, id, &settle, events.now_ms())
            {
                tracing::error!(target: "patchbay::events", error = %e, workspace, delivery = id,
                    "recording a delivery attempt failed; it will be attempted again");
            }
        }
    }
}

/// The transform (when the subscription has one) and the destination call.
async fn attempt_once(
    events: &Events,
    workspace: &str,
    delivery: &Delivery,
    subscription: &Subscription,
) -> Result<(), Failed> {
    let missing = || Failed {
        failure: Failure::Permanent("event-not-found".into()),
        code: "event-not-found".into(),
        message: format!("event {:?} is no longer stored", delivery.event_id),
        invocation_id: None,
    };
    let stored = events
        .outbox
        .event(workspace, &delivery.event_id)
        .map_err(|e| Failed {
            failure: Failure::Transient,
            code: "host".into(),
            message: e.to_string(),
            invocation_id: None,
        })?
        .ok_or_else(missing)?;
    let mut input: Json = serde_json::from_slice(&stored).map_err(|_| missing())?;
    let key = delivery.idempotency_key();
    if let Some(transform) = &subscription.transform {
        input = call(events, workspace, transform, input, &key)
            .await
            .map_err(|mut failed| {
                failed.message = format!("transform {}: {}", transform.operation, failed.message);
                failed
            })?;
    }
    call(events, workspace, &subscription.destination, input, &key).await?;
    Ok(())
}

async fn call(
    events: &Events,
    workspace: &str,
    endpoint: &patchbay_policy::events::Endpoint,
    input: Json,
    key: &str,
) -> Result<Json, Failed> {
    let invocation = Invocation {
        workspace: workspace.to_owned(),
        connection: endpoint.connection.clone(),
        operation: endpoint.operation.clone(),
        input,
        idempotency_key: Some(key.to_owned()),
        deadline: None,
        tape: None,
    };
    let invoked = events
        .tenancy
        .invoke(invocation)
        .await
        .map_err(|e| start_failure(&e))?;
    match &invoked.outcome.result {
        Ok(output) => Ok(output.clone()),
        Err(error) => Err(invoke_failure(error, &invoked)),
    }
}
