//! The one invocation path. The API, the CLI's `invoke`, and the coming
//! caller-context lookup and event delivery all run an operation through
//! here: workspace, connection, operation and input in; the output or a
//! typed error, the invocation id and timings out.
//!
//! A connection's binding (templates filled, destination rules parsed,
//! credentials bound) is built once per revision of the connection and
//! cached: a call reuses it while the stored connection is the one it was
//! built from, and any change (its settings, grants, limits or pinned plugin
//! version) builds it anew.

use crate::service::{Tenancy, TenancyError};
use patchbay_egress::credentials::CredentialInfo;
use patchbay_runtime::bindings::{VerifiedWebhook, WebhookRequest};
use patchbay_runtime::error::{InvokeError, PluginFailure};
use patchbay_runtime::{Binding, CallOptions, InvokeOutcome, LoadedPlugin};
use patchbay_storage::tenancy::Connection;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One operation to run on a stored connection.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The workspace that owns the connection.
    pub workspace: String,
    /// The connection's name in the workspace.
    pub connection: String,
    /// The plugin operation to run.
    pub operation: String,
    /// The operation's input, checked against its input schema.
    pub input: Json,
    /// Passed to the plugin, so a retried delivery can be recognised upstream.
    pub idempotency_key: Option<String>,
    /// When the caller stops waiting; the plugin's own timeout applies too.
    pub deadline: Option<Instant>,
    /// Plays a recorded call's clocks and random values back (a replay);
    /// `None` for every call from production.
    pub tape: Option<Arc<patchbay_runtime::record::Tape>>,
}

/// Why an operation could not be started.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// No such workspace or connection, or the store failed.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The connection exists but is switched off.
    #[error("connection {0:?} is disabled")]
    Disabled(String),
    /// Another call on the connection with the same idempotency key was
    /// still running when this one stopped waiting for it.
    #[error("a call with idempotency key {0:?} is still running on this connection")]
    KeyInUse(String),
    /// The connection's settings no longer fill its plugin's destination
    /// templates (a host bug: settings are checked when saved).
    #[error("the connection cannot be bound: {0}")]
    Binding(String),
}

/// A finished call: the runtime's outcome, and when the call failed, what
/// the host did that explains it.
#[derive(Debug)]
pub struct Invoked {
    /// Output or error, invocation id, duration, logs and refused requests.
    pub outcome: InvokeOutcome,
    /// Empty when the call succeeded or the host had no part in its failure.
    pub explanation: Explanation,
}

/// What the host did that made a call fail, in words the tenant can act on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Requests the host refused, each with the fix (approve the
    /// destination, or the operator's address policy).
    pub refused: Vec<String>,
    /// Declared credentials the host could not send (not set, or refused for
    /// good), each naming the credential and how to set it.
    pub unusable_credentials: Vec<String>,
    /// The plugin reported a 401 while a credential was unusable: the
    /// refusal is the host's (no credential was sent), not the upstream's.
    pub credential_unavailable: bool,
}

/// A connection ready to run: the record it was built from, its pinned
/// plugin version and its binding.
#[derive(Clone)]
pub struct Bound {
    /// The stored connection this was built from.
    pub connection: Connection,
    /// The plugin version the connection pins.
    pub plugin: Arc<LoadedPlugin>,
    /// What the runtime runs the connection with.
    pub binding: Binding,
}

/// Bindings per connection, each kept for the revision it was built from.
#[derive(Default)]
pub struct Bindings {
    /// By workspace, then connection name: a lookup borrows both names, so
    /// the per-call path allocates nothing to find a binding.
    bound: RwLock<HashMap<String, HashMap<String, Arc<Bound>>>>,
    /// Bindings built (not taken from the cache), for tests and metrics.
    built: AtomicU64,
    /// Bumped by every `forget`: a binding built while a connection was
    /// changed or deleted is not kept (it would never be used, and a deleted
    /// connection's entry would hold its plugin in memory).
    generation: AtomicU64,
}

type ByWorkspace = HashMap<String, HashMap<String, Arc<Bound>>>;

impl Bindings {
    /// How many bindings were built rather than reused.
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// Forget `workspace`'s connection `name` (it was changed or deleted).
    pub fn forget(&self, workspace: &str, name: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut map = self.write();
        if let Some(connections) = map.get_mut(workspace) {
            connections.remove(name);
            if connections.is_empty() {
                map.remove(workspace);
            }
        }
    }

    /// Forget every connection of `workspace`.
    pub fn forget_workspace(&self, workspace: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.write().remove(workspace);
    }

    /// The cached binding of `connection`, if it was built from this revision.
    fn current(&self, connection: &Connection) -> Option<Arc<Bound>> {
        let map = self.bound.read().unwrap_or_else(|e| e.into_inner());
        map.get(&connection.workspace)?
            .get(&connection.name)
            .filter(|b| b.connection == *connection)
            .cloned()
    }

    /// Keep `bound`, built from what was read at `generation`, unless a
    /// connection was forgotten since.
    fn keep(&self, bound: Arc<Bound>, generation: u64) {
        self.built.fetch_add(1, Ordering::Relaxed);
        let mut map = self.write();
        if self.generation.load(Ordering::SeqCst) == generation {
            map.entry(bound.connection.workspace.clone())
                .or_default()
                .insert(bound.connection.name.clone(), bound);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByWorkspace> {
        self.bound.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Calls on one connection that carry the same idempotency key run one at
/// a time. A vendor without idempotency of its own (Cal.com) is made
/// idempotent by a plugin that looks for what an earlier attempt did before
/// acting; two first attempts running together would both look, find
/// nothing, and both act. Waiting costs no slot: the sandbox is made after.
#[derive(Default)]
pub struct KeyedCalls {
    /// By (workspace, connection, key); an entry lives while a call holds or
    /// waits for it.
    held: std::sync::Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>,
}

type KeyId = (String, String, String);

impl KeyedCalls {
    /// Wait until no other call on `workspace`'s `connection` holds `key`,
    /// and hold it.
    pub async fn hold(&self, workspace: &str, connection: &str, key: &str) -> KeyHeld<'_> {
        let id = (workspace.to_owned(), connection.to_owned(), key.to_owned());
        let lock = self.map().entry(id.clone()).or_default().clone();
        // Made before waiting, so a waiter given up on (cancelled) still
        // forgets the key when it is the last to use it.
        let mut held = KeyHeld {
            calls: self,
            lock: Some(lock.clone()),
            guard: None,
            id,
        };
        // Declared after `held`: dropped first when the wait is cancelled.
        let acquire = lock.lock_owned();
        held.guard = Some(acquire.await);
        held
    }

    /// Keys held or waited for now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A key held by one call; released (and forgotten when nobody waits) on drop.
pub struct KeyHeld<'a> {
    calls: &'a KeyedCalls,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    id: KeyId,
}

impl Drop for KeyHeld<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.lock.take());
        let mut map = self.calls.map();
        // Waiters clone the lock under the map's lock: one reference left is the map's own.
        if map
            .get(&self.id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.id);
        }
    }
}

impl Tenancy {
    /// Run `invocation` on its stored connection: the one path every caller
    /// takes.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Invoked, InvocationError> {
        let bound = self
            .bound(&invocation.workspace, &invocation.connection)
            .await?;
        // Held until the call ends: a second call with this key waits (at
        // most its own deadline, or one plugin time limit), then finds what
        // the first did (the plugin looks before it acts).
        let _one_at_a_time = match &invocation.idempotency_key {
            Some(key) => {
                let limit = Duration::from_millis(bound.plugin.manifest.limits.timeout_ms.into());
                let until = match invocation.deadline {
                    Some(deadline) => deadline.min(Instant::now() + limit),
                    None => Instant::now() + limit,
                };
                let held = self
                    .keyed
                    .hold(&invocation.workspace, &invocation.connection, key);
                match tokio::time::timeout_at(until.into(), held).await {
                    Ok(held) => Some(held),
                    Err(_) => return Err(InvocationError::KeyInUse(key.clone())),
                }
            }
            None => None,
        };
        let options = CallOptions {
            idempotency_key: invocation.idempotency_key,
            deadline: invocation.deadline,
            tape: invocation.tape,
        };
        Ok(self
            .run(&bound, &invocation.operation, invocation.input, options)
            .await)
    }

    /// `workspace`'s connection `name`, ready to run: its binding is reused
    /// while the stored connection is unchanged.
    pub async fn bound(&self, workspace: &str, name: &str) -> Result<Arc<Bound>, InvocationError> {
        let generation = self.bindings.generation.load(Ordering::SeqCst);
        let connection = self.connection(workspace, name)?;
        if !connection.enabled {
            return Err(InvocationError::Disabled(name.to_owned()));
        }
        if let Some(bound) = self.bindings.current(&connection) {
            return Ok(bound);
        }
        let plugin = self.plugin_of(&connection).await?;
        let binding = Binding::for_connection(&connection, &plugin.manifest)
            .map_err(InvocationError::Binding)?;
        let bound = Arc::new(Bound {
            connection,
            plugin,
            binding,
        });
        self.bindings.keep(bound.clone(), generation);
        Ok(bound)
    }

    /// Run `operation` on a connection made ready (stored, or one the CLI
    /// binds from flags), and explain a failure the host caused.
    pub async fn run(
        &self,
        bound: &Bound,
        operation: &str,
        input: Json,
        mut options: CallOptions,
    ) -> Invoked {
        let taping = match options.tape {
            Some(_) => None,
            None => self.taping(bound, &input, &options.idempotency_key).await,
        };
        if let Some(taping) = &taping {
            options.tape = Some(taping.tape.clone());
        }
        let outcome = self
            .catalog
            .runtime()
            .invoke(&bound.plugin, &bound.binding, operation, input, options)
            .await;
        if let Some(taping) = taping {
            self.keep_transcript(bound, operation, taping, &outcome)
                .await;
        }
        let explanation = match &outcome.result {
            Ok(_) => Explanation::default(),
            Err(error) => self.explain(bound, error, &outcome),
        };
        Invoked {
            outcome,
            explanation,
        }
    }

    /// Verify a webhook sent to `bound` with its plugin's `verify-webhook`
    /// export, under the same limits, slots and deadline as an operation.
    pub async fn verify_webhook(
        &self,
        bound: &Bound,
        request: WebhookRequest,
        deadline: Option<Instant>,
    ) -> InvokeOutcome<VerifiedWebhook> {
        let options = CallOptions {
            idempotency_key: None,
            deadline,
            tape: None,
        };
        self.catalog
            .runtime()
            .verify_webhook(&bound.plugin, &bound.binding, request, options)
            .await
    }

    /// Why a call failed, when the host, not the upstream, caused it: the
    /// requests it refused, and credentials it could not send.
    fn explain(&self, bound: &Bound, error: &InvokeError, outcome: &InvokeOutcome) -> Explanation {
        let manifest = &bound.plugin.manifest;
        // Unreadable credential state (logged) explains nothing, and must not
        // replace the call's own error.
        let unusable_credentials = self
            .declared_credentials(&bound.connection, manifest)
            .map(|stored| crate::status::unusable_credentials(&bound.connection, manifest, &stored))
            .unwrap_or_else(|e| {
                tracing::warn!(target: "patchbay::credentials", error = %e,
                    "reading credential state to explain a failed call");
                Vec::new()
            });
        let unauthorized = matches!(
            error,
            InvokeError::Plugin(PluginFailure::Unauthorized { .. })
        );
        Explanation {
            refused: crate::status::explain_denials(&bound.connection, manifest, &outcome.denials),
            credential_unavailable: unauthorized && !unusable_credentials.is_empty(),
            unusable_credentials,
        }
    }

    /// Every credential `manifest` declares for `connection`: set or not,
    /// never a value; then any stored that it no longer declares.
    pub fn declared_credentials(
        &self,
        connection: &Connection,
        manifest: &patchbay_policy::manifest::Manifest,
    ) -> Result<Vec<CredentialInfo>, patchbay_egress::credentials::CredentialError> {
        let mut stored = self.credentials.describe(&connection.scope())?;
        let mut credentials: Vec<CredentialInfo> = manifest
            .capabilities
            .credentials
            .iter()
            .map(
                |declared| match stored.iter().position(|s| s.name == declared.name) {
                    Some(i) => stored.swap_remove(i),
                    None => CredentialInfo {
                        name: declared.name.clone(),
                        kind: declared.kind.as_str(),
                        set: false,
                        needs_attention: None,
                    },
                },
            )
            .collect();
        credentials.extend(stored);
        Ok(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedCalls;
    use std::time::Duration;

    #[tokio::test]
    async fn a_key_is_held_by_one_call_at_a_time_and_forgotten_after() {
        let calls = KeyedCalls::default();
        let first = calls.hold("ws", "cal", "k-1").await;
        // Another key, another connection, another workspace: no wait.
        let _other_key = calls.hold("ws", "cal", "k-2").await;
        let _other_connection = calls.hold("ws", "crm", "k-1").await;
        let _other_workspace = calls.hold("ws-2", "cal", "k-1").await;
        // The same key waits while the first holds it.
        let second = calls.hold("ws", "cal", "k-1");
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a second call with the key ran while the first held it"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the key is free once the first call ends");
        assert_eq!(calls.len(), 4);
        drop(second);
        assert_eq!(
            calls.len(),
            3,
            "a key nobody holds or waits for is forgotten"
        );
    }

    #[tokio::test]
    async fn a_waiter_given_up_on_after_the_key_was_released_leaves_nothing_behind() {
        let calls = KeyedCalls::default();
        let first = calls.hold("ws", "cal", "k").await;
        let mut waiter = Box::pin(calls.hold("ws", "cal", "k"));
        assert!(
            tokio::time::timeout(Duration::from_millis(5), &mut waiter)
                .await
                .is_err()
        );
        // Released while the waiter is queued, then the waiter is dropped
        // before it runs again (its caller went away).
        drop(first);
        drop(waiter);
        assert!(calls.is_empty(), "a key nobody will release is kept");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let calls = KeyedCalls::default();
        let first = calls.hold("ws", "cal", "k").await;
        let waited =
            tokio::time::timeout(Duration::from_millis(20), calls.hold("ws", "cal", "k")).await;
        assert!(waited.is_err());
        drop(first);
        assert!(calls.is_empty());
    }
}
