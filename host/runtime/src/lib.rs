//! Loading plugins and running their operations in isolation.
//!
//! Validation and compilation happen once per plugin version (`load`); each
//! invocation then builds a fresh store from the pre-instantiated component,
//! with the plugin's memory cap and an epoch deadline, and drops it afterwards.

#![warn(missing_docs)]

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod engine;
pub mod error;
pub mod interface;
pub mod limits;
pub mod package;
pub mod record;
pub mod schema;
pub mod slots;
pub mod state;

use crate::bindings::{
    InvocationContext, OperationsIndices, PluginError, VerifiedWebhook, WebhookRequest,
    WebhooksIndices,
};
use crate::capabilities::http::RequestPolicy;
use crate::capabilities::signing::{SigningAccess, SigningCtx};
use crate::capabilities::{
    config::ConfigValues, http::HttpCtx, kv::KvAccess, kv::KvCtx, log::LogCtx, log::LogLine,
    log::LogSource,
};
use error::{InvokeError, LoadError, cap_message};
use limits::{HostBudget, MemoryLimiter};
use patchbay_egress::Egress;
use patchbay_egress::credentials::BoundCredential;
use patchbay_policy::call::CallId;
use patchbay_policy::clock::Clock;
use patchbay_policy::grants::Grants;
use patchbay_policy::http::Denial;
use patchbay_policy::http::{Destinations, Rule};
use patchbay_policy::limits::{ConnectionLimits, EffectiveLimits, OperatorLimits};
use patchbay_policy::manifest::{CredentialKind, Manifest, WebhookVerify};
use patchbay_policy::schema::{BoundedValidator, bounded_validator, schema_validator};
use patchbay_storage::tenancy::Connection;
use patchbay_storage::{Scope, SharedKv};
use schema::{input_problems, parsed_output};
use serde_json::Value as Json;
use slots::Slots;
use state::{Activity, CallState};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Instance, InstancePre, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::FieldMapError;

/// The host side of running plugins: one engine, one linker, shared by all.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    egress: Arc<Egress>,
    limits: OperatorLimits,
    kv: SharedKv,
    clock: Clock,
    cache_dir: Option<PathBuf>,
    slots: Slots,
    /// Calls running on threads of their own at once (see `off_the_workers`).
    threads: tokio::sync::Semaphore,
    counters: Arc<RuntimeCounters>,
}

/// Most calls that run on threads of their own at once. tokio's blocking
/// pool (`BLOCKING_THREADS`) must keep threads beyond these for storage and
/// schema checks, or the whole host would wait behind plugins.
pub const MAX_THREADED_CALLS: usize = 1536;

/// Threads the binary's runtime may start for blocking work: every threaded
/// call, and room for the host's own.
pub const BLOCKING_THREADS: usize = MAX_THREADED_CALLS + 512;

/// What the runtime counts for the operator's metrics.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Calls refused because every instance of the pool was in use.
    pub refused_at_capacity: AtomicU64,
    /// Calls refused because their connection or workspace ran its maximum
    /// of calls until their deadline.
    pub refused_too_many_calls: AtomicU64,
    /// Plugin calls whose guest code computed long enough to be moved off
    /// the async workers to a thread of their own.
    pub moved_off_workers: AtomicU64,
}

/// Longest webhook id a plugin may report (as Standard Webhooks allows).
pub const MAX_WEBHOOK_ID_BYTES: usize = 256;

/// A plugin version ready to run: validated, compiled, pre-instantiated.
pub struct LoadedPlugin {
    /// The manifest the component was validated against.
    pub manifest: Arc<Manifest>,
    /// SHA-256 of the component's bytes, hex: what the catalog shows and the
    /// compiled-plugin cache is keyed by.
    pub content_hash: String,
    /// What its manifest asks, under the operator's ceilings; a connection may
    /// tighten them further.
    pub limits: EffectiveLimits,
    pre: InstancePre<CallState>,
    operations: OperationsIndices,
    /// `None` for a plugin built against contract 0.1.0, which has no
    /// `webhooks` export.
    webhooks: Option<WebhooksIndices>,
    schemas: HashMap<String, OperationSchemas>,
    /// A fresh compile, written to the cache only once the whole package is
    /// accepted, so a refused package leaves nothing on disk.
    uncached: Option<cache::Pending>,
}

struct OperationSchemas {
    // Shared with the blocking thread a costly check runs on.
    input: Arc<BoundedValidator>,
    output: Arc<BoundedValidator>,
}

/// Where and with what grants a plugin runs: one connection in one workspace.
#[derive(Clone)]
pub struct Binding {
    /// The connection the calls run for: its KV keys, credentials and audit
    /// records are kept under it, its rate limits under its workspace.
    pub scope: Arc<Scope>,
    /// Non-secret settings, as the plugin reads them through wasi:config.
    pub config: Arc<ConfigValues>,
    /// Filled destination rules the manifest declares and the workspace approved.
    pub http_rules: Arc<[Rule]>,
    /// Declared but not approved: only to tell the plugin why it was refused.
    pub unapproved_rules: Arc<[Rule]>,
    /// Whether KV is requested and approved (the quota comes from the manifest).
    pub kv_granted: bool,
    /// Approved host-held credentials, bound to their filled destinations.
    pub credentials: Arc<[BoundCredential]>,
    /// Approved `webhook_secret` credentials, by name: never sent, only
    /// checked against by `verify-hmac` during a `verify-webhook` call.
    pub webhook_secrets: Arc<[String]>,
    /// What the connection holds the plugin to, below the plugin's own limits.
    pub limits: ConnectionLimits,
}

/// Settings as the plugin reads them through wasi:config: strings as they
/// are, anything else as its JSON text.
pub fn config_strings(config: &serde_json::Map<String, Json>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

impl Binding {
    /// What the runtime needs to run `connection` with `manifest`: its
    /// settings, grants and tighter limits applied.
    pub fn for_connection(connection: &Connection, manifest: &Manifest) -> Result<Self, String> {
        let mut binding = Self::from_manifest(
            manifest,
            connection.scope(),
            config_strings(&connection.config),
            &connection.grants,
        )?;
        binding.limits = connection.limits;
        Ok(binding)
    }

    /// Bind `manifest` for `scope` with `config` values and the workspace's
    /// `grants`: a capability is in the binding only if the manifest requests
    /// it and the grants approve it. Destination templates are filled from
    /// `config`, falling back to the config schema's defaults.
    pub fn from_manifest(
        manifest: &Manifest,
        scope: Scope,
        config: BTreeMap<String, String>,
        grants: &Grants,
    ) -> Result<Self, String> {
        let mut values = schema_defaults(manifest);
        values.extend(config);
        let mut approved = Vec::new();
        let mut unapproved = Vec::new();
        for destination in &manifest.capabilities.http {
            let rule = destination
                .fill(&values)
                .map_err(|e| format!("destination {destination}: {e}"))?;
            if grants.allows_destination(destination) {
                approved.push(rule);
            } else {
                unapproved.push(rule);
            }
        }
        let granted = || {
            manifest
                .capabilities
                .credentials
                .iter()
                .filter(|c| grants.allows_credential(&c.name))
        };
        let credentials = granted()
            .filter(|c| c.kind != CredentialKind::WebhookSecret)
            .map(|c| BoundCredential::bind(c, &values))
            .collect::<Result<Vec<_>, _>>()?;
        let webhook_secrets: Vec<String> = granted()
            .filter(|c| c.kind == CredentialKind::WebhookSecret)
            .map(|c| c.name.clone())
            .collect();
        Ok(Self {
            scope: Arc::new(scope),
            config: Arc::new(values.into_iter().collect()),
            http_rules: approved.into(),
            unapproved_rules: unapproved.into(),
            kv_granted: manifest.capabilities.kv.is_some() && grants.allows_kv(),
            credentials: credentials.into(),
            webhook_secrets: webhook_secrets.into(),
            limits: ConnectionLimits::default(),
        })
    }
}

/// Top-level `default`s of the config schema, as strings.
pub fn schema_defaults(manifest: &Manifest) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Json::Object(props)) = manifest
        .capabilities
        .config_schema
        .as_ref()
        .and_then(|s| s.get("properties"))
    {
        for (key, prop) in props {
            match prop.get("default") {
                Some(Json::String(s)) => {
                    out.insert(key.clone(), s.clone());
                }
                Some(other) if !other.is_null() => {
                    out.insert(key.clone(), other.to_string());
                }
                _ => {}
            }
        }
    }
    out
}

/// What a caller adds to a call besides its input.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Passed to the plugin (`invocation-context.idempotency-key`), so a
    /// retried delivery can be recognised upstream.
    pub idempotency_key: Option<String>,
    /// When the caller stops waiting. The call ends at this or at the
    /// plugin's own timeout, whichever comes first.
    pub deadline: Option<Instant>,
    /// Records the call's host calls, or plays a recorded call's clocks and
    /// random values back (see [`record`]).
    pub tape: Option<Arc<record::Tape>>,
}

impl CallOptions {
    /// The call's deadline from now, and `limits` with the timeout it leaves.
    fn within(&self, mut limits: EffectiveLimits) -> (Instant, EffectiveLimits) {
        let now = Instant::now();
        let mut deadline = now + limits.timeout;
        if let Some(caller) = self.deadline
            && caller < deadline
        {
            deadline = caller;
            limits.timeout = caller.saturating_duration_since(now);
        }
        (deadline, limits)
    }
}

/// What one call accumulates while it runs.
struct CallRecord {
    id: Arc<CallId>,
    log: LogCtx,
    denials: Vec<Denial>,
    suppressed_denials: usize,
    circuit_open: u32,
    circuit_retry_after: Option<Duration>,
    /// Whether a `verify-hmac` check matched during the call.
    verified: bool,
    /// Where the call's host calls are recorded, when they are.
    tape: Option<Arc<record::Tape>>,
}

/// The record of one invocation, successful or not.
#[derive(Debug)]
pub struct InvokeOutcome<T = Json> {
    /// The call's id, 32 hex digits: in its log lines and audit records, and
    /// sent upstream as the trace id.
    pub invocation_id: String,
    /// How long the whole call took, the wait for a slot and schema checks
    /// included.
    pub duration: Duration,
    /// The output (from [`Runtime::invoke`], parsed and checked against the
    /// operation's output schema), or why the call failed.
    pub result: Result<T, InvokeError>,
    /// The plugin's log lines (wasi:logging, stdout, stderr), up to the log
    /// budget.
    pub logs: Vec<LogLine>,
    /// Bytes of log text dropped past the budget.
    pub dropped_log_bytes: usize,
    /// The first refused requests, in full.
    pub denials: Vec<Denial>,
    /// Refused requests past those, only counted.
    pub suppressed_denials: usize,
    /// Requests not sent because their destination's circuit breaker was
    /// open (the plugin saw `destination-unavailable`).
    pub circuit_open: u32,
    /// The longest such a breaker said it would stay open.
    pub circuit_retry_after: Option<Duration>,
}

impl Runtime {
    /// The runtime under the operator's `limits`: a pooled engine with its
    /// epoch ticker, one linker holding every capability, and the concurrency
    /// caps. Requests go out through `egress`, KV to `kv`, whose expiries
    /// `clock` reckons; compiled artifacts are cached in `cache_dir` (`None`:
    /// compiled at every load). Fails if the engine cannot be set up.
    pub fn new(
        limits: OperatorLimits,
        egress: Arc<Egress>,
        kv: SharedKv,
        clock: Clock,
        cache_dir: Option<PathBuf>,
    ) -> wasmtime::Result<Self> {
        let engine = engine::build(&limits)?;
        engine::start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker)?;
        // Type-only interface: components import it for the shared error and context types.
        linker.instance("patchbay:connector/types@0.1.0")?;
        Ok(Self {
            engine,
            linker,
            egress,
            limits,
            kv,
            clock,
            cache_dir,
            slots: Slots::new(
                limits.max_concurrent_calls_per_connection,
                limits.max_concurrent_calls_per_workspace,
            ),
            threads: tokio::sync::Semaphore::new(
                (limits.max_instances as usize).clamp(1, MAX_THREADED_CALLS),
            ),
            counters: Arc::default(),
        })
    }

    /// Calls refused at capacity or at a concurrency cap, for metrics.
    pub fn counters(&self) -> &Arc<RuntimeCounters> {
        &self.counters
    }

    /// The egress every plugin's requests go through.
    pub fn egress(&self) -> &Arc<Egress> {
        &self.egress
    }

    /// Validate `wasm` against the connector world and compile it (or load the
    /// cached artifact). Its imports and exports are checked before anything
    /// is compiled: a refused component costs a parse, not a compile.
    pub fn load(&self, manifest: Arc<Manifest>, wasm: &[u8]) -> Result<LoadedPlugin, LoadError> {
        interface::check(wasm)?;
        let compiled = cache::compile(&self.engine, wasm, self.cache_dir.as_deref())?;
        let instance_pre = self
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let operations = OperationsIndices::new(&instance_pre)
            .map_err(|e| LoadError::Exports(format!("{e:#}")))?;
        let webhooks = WebhooksIndices::new(&instance_pre).ok();
        if webhooks.is_none()
            && manifest
                .webhook
                .as_ref()
                .is_some_and(|w| w.verify == WebhookVerify::Plugin)
        {
            return Err(LoadError::Exports(
                "the manifest says [webhook] verify = \"plugin\" but the component does not export patchbay:connector/webhooks (contract 0.1.1)".into(),
            ));
        }
        // Checked against on every connection save: bounded like the others.
        if let Some(schema) = &manifest.capabilities.config_schema {
            schema_validator(schema).map_err(|e| LoadError::Schema {
                operation: "(connection config)".into(),
                message: format!("config schema: {e}"),
            })?;
        }
        let mut schemas = HashMap::new();
        for op in &manifest.operations {
            let compile = |schema: &Json, which: &str| {
                bounded_validator(schema)
                    .map(Arc::new)
                    .map_err(|e| LoadError::Schema {
                        operation: op.name.clone(),
                        message: format!("{which} schema: {e}"),
                    })
            };
            schemas.insert(
                op.name.clone(),
                OperationSchemas {
                    input: compile(&op.input_schema, "input")?,
                    output: compile(&op.output_schema, "output")?,
                },
            );
        }
        Ok(LoadedPlugin {
            limits: self
                .limits
                .effective(&manifest.limits, manifest.capabilities.http_rate_limit),
            content_hash: cache::content_hash(wasm),
            manifest,
            pre: instance_pre,
            operations,
            webhooks,
            schemas,
            uncached: compiled.pending,
        })
    }

    /// Keep `plugin`'s compiled artifact in the cache, once its package is accepted.
    pub fn keep_compiled(&self, plugin: &mut LoadedPlugin) -> Result<(), LoadError> {
        match plugin.uncached.take() {
            Some(pending) => pending.write(),
            None => Ok(()),
        }
    }

    /// A fresh store for one call: its state, the memory limiter, and the
    /// epoch deadline that ends the call.
    #[allow(clippy::too_many_arguments)] // one call's parts, each used once
    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        limits: &EffectiveLimits,
        log: &LogCtx,
        deadline: Instant,
        id: &Arc<CallId>,
        tape: Option<&Arc<record::Tape>>,
    ) -> Store<CallState> {
        let state = self.call_state(plugin, binding, limits, log, deadline, id, tape);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // The deadline is checked at every tick guest code runs through, and
        // ends the call. Guest code that computes (see `Activity`: ticks
        // reached within one resumption of the call) is moved off the async
        // workers (`off_the_workers_once_computing`) and from then on yields
        // to the executor every few ticks; guest code that only waits on the
        // host is left where it is, however many ticks its waits span.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            if store.data().activity.computing_at_tick() {
                Ok(UpdateDeadline::Yield(engine::YIELD_EVERY_TICKS))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store
    }

    /// What one call's capabilities hold: WASI with stdio into the log, the
    /// HTTP gate, config, KV (when granted) and the call's budgets.
    #[allow(clippy::too_many_arguments)] // one call's parts, each used once
    fn call_state(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        limits: &EffectiveLimits,
        log: &LogCtx,
        deadline: Instant,
        id: &Arc<CallId>,
        tape: Option<&Arc<record::Tape>>,
    ) -> CallState {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(log.pipe(LogSource::Stdout))
            .stderr(log.pipe(LogSource::Stderr));
        capabilities::wasi::deny_files_and_sockets(&mut wasi);
        if let Some(tape) = tape {
            tape.configure(&mut wasi);
        }
        let budget = HostBudget::for_memory(limits.memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(budget.resources);
        let destinations = Destinations {
            approved: binding.http_rules.clone(),
            unapproved: binding.unapproved_rules.clone(),
            operator: self.egress.operator_destinations(),
        };
        let policy = RequestPolicy {
            id: id.clone(),
            scope: binding.scope.clone(),
            max_requests: limits.max_outbound_requests,
            rate_limit: limits.rate_limit,
            credentials: binding.credentials.clone(),
        };
        let mut http = HttpCtx::new(self.egress.clone(), destinations, deadline, policy);
        http.ctx.set_field_size_limit(budget.field_bytes);
        // A tape that plays a recording back only serves clocks and random
        // values (above); the capabilities record onto one that records.
        let recording = tape.filter(|t| t.records()).cloned();
        http.gate.tape = recording.clone();
        let mut kv = self.kv_ctx(plugin, binding, id);
        kv.tape = recording.clone();
        CallState {
            wasi: wasi.build(),
            table,
            http,
            config: capabilities::config::ConfigCtx {
                values: binding.config.clone(),
                tape: recording,
            },
            kv,
            log: log.clone(),
            signing: SigningCtx::denied(id.clone()),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            activity: Arc::default(),
        }
    }

    /// KV for one call: the connection's scope and the plugin's quota, when
    /// the manifest asks for KV and the workspace granted it.
    fn kv_ctx(&self, plugin: &LoadedPlugin, binding: &Binding, id: &Arc<CallId>) -> KvCtx {
        let access = match (&plugin.manifest.capabilities.kv, binding.kv_granted) {
            (Some(quota), true) => Some(KvAccess {
                store: self.kv.clone(),
                scope: binding.scope.clone(),
                quota: self.limits.kv_quota(quota),
                clock: self.clock.clone(),
            }),
            _ => None,
        };
        KvCtx {
            access,
            call: id.clone(),
            tape: None,
        }
    }

    /// The operation names the component itself reports.
    pub async fn operation_names(&self, plugin: &LoadedPlugin) -> Result<Vec<String>, InvokeError> {
        let binding = Binding {
            scope: Arc::new(Scope {
                workspace: String::new(),
                connection: String::new(),
            }),
            config: Arc::default(),
            http_rules: Arc::from(Vec::new()),
            unapproved_rules: Arc::from(Vec::new()),
            kv_granted: false,
            credentials: Arc::from(Vec::new()),
            webhook_secrets: Arc::from(Vec::new()),
            limits: ConnectionLimits::default(),
        };
        let id = call_id(plugin, &binding, "names", "install-check".into());
        let log = LogCtx::new(id.clone(), self.limits.max_log_bytes);
        let limits = plugin.limits;
        let deadline = Instant::now() + limits.timeout;
        let mut store = self.new_store(plugin, &binding, &limits, &log, deadline, &id, None);
        let activity = store.data().activity.clone();
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            plugin
                .operations
                .load(&mut store, &instance)?
                .call_names(&mut store)
                .await
        };
        let call = tokio::time::timeout(limits.timeout, call);
        match off_the_workers_once_computing(call, &activity, &self.counters).await {
            Ok(Ok(names)) => Ok(names),
            Ok(Err(e)) => Err(classify_trap(
                &e,
                &store,
                (&limits, self.limits.max_instances),
                &log,
            )),
            Err(_) => Err(InvokeError::Timeout(limits.timeout.as_millis() as u64)),
        }
    }

    /// Run `operation` of `plugin` on `input` for `binding`: input checked against
    /// the operation's schema, the call sandboxed, the output parsed and checked.
    /// The call's deadline starts now and covers all of it: waiting for a slot,
    /// both schema checks and the sandbox.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        operation: &str,
        input: Json,
        options: CallOptions,
    ) -> InvokeOutcome {
        self.recorded(plugin, binding, operation, async |record| {
            record.tape = options.tape.clone();
            let limits = binding.limits.tighten(plugin.limits);
            let (deadline, limits) = options.within(limits);
            let within = (deadline, limits.timeout);
            let schemas = plugin
                .schemas
                .get(operation)
                .ok_or_else(|| InvokeError::UnknownOperation(operation.to_owned()))?;
            // Not `input.to_string()`, which writes through a `fmt::Formatter`.
            let input_text = serde_json::to_string(&input)
                .map_err(|e| InvokeError::Host(format!("serialising the input: {e}")))?;
            check_input_size(plugin, &input_text)?;
            let slot = Arc::new(self.slot(binding, deadline).await?);
            let problems =
                input_problems(&schemas.input, input, input_text.len(), within, &slot).await?;
            if !problems.is_empty() {
                return Err(InvokeError::InvalidInput(problems));
            }
            let output = self
                .sandboxed(
                    plugin,
                    binding,
                    operation,
                    &input_text,
                    options.idempotency_key,
                    (&limits, deadline),
                    record,
                )
                .await?;
            drop(input_text);
            let (output, problems) = parsed_output(&schemas.output, output, within, &slot).await?;
            if !problems.is_empty() {
                return Err(InvokeError::OutputSchema(problems));
            }
            Ok(output)
        })
        .await
    }

    /// Only the sandboxed part of [`invoke`](Self::invoke): JSON text in, the
    /// plugin's text out, with every limit enforced but no schema checks. For
    /// callers that validated already, and for measuring the sandbox itself.
    pub async fn call_sandboxed(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        operation: &str,
        input: &str,
        options: CallOptions,
    ) -> InvokeOutcome<String> {
        self.recorded(plugin, binding, operation, async |record| {
            record.tape = options.tape.clone();
            let limits = binding.limits.tighten(plugin.limits);
            let (deadline, limits) = options.within(limits);
            if !plugin.schemas.contains_key(operation) {
                return Err(InvokeError::UnknownOperation(operation.to_owned()));
            }
            check_input_size(plugin, input)?;
            let _slot = self.slot(binding, deadline).await?;
            self.sandboxed(
                plugin,
                binding,
                operation,
                input,
                options.idempotency_key,
                (&limits, deadline),
                record,
            )
            .await
        })
        .await
    }

    /// A place within the connection's and the workspace's concurrency caps.
    async fn slot(&self, binding: &Binding, deadline: Instant) -> Result<slots::Slot, InvokeError> {
        let slot = self.slots.acquire(&binding.scope, deadline).await;
        if slot.is_err() {
            self.counters
                .refused_too_many_calls
                .fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// Give a call its id, log sink and denial list, and record what it did.
    /// A failure of the plugin or the host (a 5xx to the API caller) gets one
    /// warning line naming its classified reason, for the operator.
    async fn recorded<T>(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        operation: &str,
        call: impl AsyncFnOnce(&mut CallRecord) -> Result<T, InvokeError>,
    ) -> InvokeOutcome<T> {
        let started = Instant::now();
        let id = call_id(plugin, binding, operation, new_invocation_id());
        let mut record = CallRecord {
            log: LogCtx::new(id.clone(), self.limits.max_log_bytes),
            id,
            denials: Vec::new(),
            suppressed_denials: 0,
            circuit_open: 0,
            circuit_retry_after: None,
            verified: false,
            tape: None,
        };
        let result = call(&mut record).await;
        if let Err(error) = &result
            && let Some(reason) = error.failure_reason()
        {
            // Debug-formatted: the text may be the plugin's, and must not
            // start a line of the host's log.
            tracing::warn!(
                target: "patchbay::runtime",
                invocation_id = %record.id.invocation_id,
                plugin = %plugin.manifest.id,
                version = %plugin.manifest.version,
                reason,
                error = ?error.to_string(),
                "invocation failed"
            );
        }
        let (logs, dropped_log_bytes) = record.log.finish();
        InvokeOutcome {
            invocation_id: record.id.invocation_id.clone(),
            duration: started.elapsed(),
            result,
            logs,
            dropped_log_bytes,
            denials: record.denials,
            suppressed_denials: record.suppressed_denials,
            circuit_open: record.circuit_open,
            circuit_retry_after: record.circuit_retry_after,
        }
    }

    /// Verify a webhook with `plugin`'s `verify-webhook` export for
    /// `binding`, with `verify-hmac` granted for the binding's approved
    /// webhook secrets. A result from a call in which no check matched is
    /// refused as `unauthorized`, whatever the plugin answered: a plugin
    /// cannot accept a webhook it did not verify.
    pub async fn verify_webhook(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        request: WebhookRequest,
        options: CallOptions,
    ) -> InvokeOutcome<VerifiedWebhook> {
        // Verification has verify-hmac, config and logging, nothing else:
        // with no KV and no HTTP a plugin can neither keep a genuine
        // (message, signature) pair to replay later nor send one away.
        let binding = &Binding {
            http_rules: Arc::from(Vec::new()),
            unapproved_rules: Arc::from(Vec::new()),
            kv_granted: false,
            credentials: Arc::from(Vec::new()),
            ..binding.clone()
        };
        self.recorded(plugin, binding, "verify-webhook", async |record| {
            let Some(webhooks) = &plugin.webhooks else {
                return Err(InvokeError::UnknownOperation("verify-webhook".into()));
            };
            let limits = binding.limits.tighten(plugin.limits);
            let (deadline, limits) = options.within(limits);
            let _slot = self.slot(binding, deadline).await?;
            let signing = SigningAccess {
                credentials: self.egress.credentials().clone(),
                scope: binding.scope.clone(),
                allowed: binding.webhook_secrets.clone(),
            };
            let context = self.context(record, None);
            let verified = self
                .in_sandbox(
                    plugin,
                    binding,
                    (&limits, deadline),
                    record,
                    Some(signing),
                    async |store, instance| {
                        webhooks
                            .load(&mut *store, instance)?
                            .call_verify_webhook(&mut *store, &context, &request)
                            .await
                    },
                )
                .await;
            if !record.verified {
                // Whatever the plugin answered (events, or an error whose
                // text would reach an unauthenticated sender), nothing
                // vouched for this request.
                if verified.is_ok() {
                    tracing::warn!(target: "patchbay::runtime", invocation = %record.id,
                        "the plugin accepted a webhook without a matching verify-hmac: refused");
                }
                return Err(InvokeError::Plugin(
                    PluginError::Unauthorized(
                        "no verify-hmac check matched during the verification".into(),
                    )
                    .into(),
                ));
            }
            let verified = verified?;
            if verified
                .webhook_id
                .as_ref()
                .is_some_and(|id| id.len() > MAX_WEBHOOK_ID_BYTES)
            {
                return Err(InvokeError::InvalidOutput(format!(
                    "the webhook id is longer than {MAX_WEBHOOK_ID_BYTES} bytes"
                )));
            }
            let size: usize = verified
                .events
                .iter()
                .map(|e| {
                    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
                    e.data.len()
                        + e.type_.len()
                        + optional(&e.id)
                        + optional(&e.subject)
                        + optional(&e.occurred_at)
                })
                .sum();
            if size > plugin.limits.max_output_bytes {
                return Err(InvokeError::OutputTooLarge {
                    size,
                    max: plugin.limits.max_output_bytes,
                });
            }
            Ok(verified)
        })
        .await
    }

    /// What the plugin is told about the call it serves.
    fn context(&self, record: &CallRecord, idempotency_key: Option<String>) -> InvocationContext {
        InvocationContext {
            invocation_id: record.id.invocation_id.clone(),
            idempotency_key,
            workspace: record.id.workspace.clone(),
            connection: record.id.connection.clone(),
        }
    }

    /// One operation in the sandbox; its output held to the plugin's limit.
    #[allow(clippy::too_many_arguments)] // one call's parts, each used once
    async fn sandboxed(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        operation: &str,
        input: &str,
        idempotency_key: Option<String>,
        (limits, deadline): (&EffectiveLimits, Instant),
        record: &mut CallRecord,
    ) -> Result<String, InvokeError> {
        let context = self.context(record, idempotency_key);
        let output = self
            .in_sandbox(
                plugin,
                binding,
                (limits, deadline),
                record,
                None,
                async |store, instance| {
                    plugin
                        .operations
                        .load(&mut *store, instance)?
                        .call_invoke(&mut *store, &context, operation, input)
                        .await
                },
            )
            .await?;
        if output.len() > plugin.limits.max_output_bytes {
            return Err(InvokeError::OutputTooLarge {
                size: output.len(),
                max: plugin.limits.max_output_bytes,
            });
        }
        Ok(output)
    }

    /// A fresh instance in a fresh store, one call of an export, then
    /// everything is dropped. With `signing`, `verify-hmac` is granted for
    /// the call; whether one of its checks matched goes in `record`.
    async fn in_sandbox<T>(
        &self,
        plugin: &LoadedPlugin,
        binding: &Binding,
        (limits, deadline): (&EffectiveLimits, Instant),
        record: &mut CallRecord,
        signing: Option<SigningAccess>,
        call: impl AsyncFnOnce(
            &mut Store<CallState>,
            &Instance,
        ) -> wasmtime::Result<Result<T, PluginError>>,
    ) -> Result<T, InvokeError> {
        let mut store = self.new_store(
            plugin,
            binding,
            limits,
            &record.log,
            deadline,
            &record.id,
            record.tape.as_ref(),
        );
        store.data_mut().signing.access = signing;
        let activity = store.data().activity.clone();
        // Past the pool's size (or the threads kept for calls) the host is
        // at capacity: refused at once, never queued behind the blocking pool.
        let Ok(_thread) = self.threads.try_acquire() else {
            self.counters
                .refused_at_capacity
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "patchbay::runtime", invocation = %record.id,
                "host at capacity: every call thread is in use");
            return Err(InvokeError::AtCapacity(self.limits.max_instances));
        };
        let outcome = {
            let run = async {
                let instance = plugin.pre.instantiate_async(&mut store).await?;
                call(&mut store, &instance).await
            };
            let run = tokio::time::timeout_at(deadline.into(), run);
            off_the_workers_once_computing(run, &activity, &self.counters).await
        };
        (record.denials, record.suppressed_denials) = store.data().http.denials();
        (record.circuit_open, record.circuit_retry_after) = store.data().http.circuit_open();
        record.verified = store.data().signing.matched;
        match outcome {
            Err(_) => Err(InvokeError::Timeout(limits.timeout.as_millis() as u64)),
            Ok(Err(trap)) => {
                let error = classify_trap(
                    &trap,
                    &store,
                    (limits, self.limits.max_instances),
                    &record.log,
                );
                if let InvokeError::AtCapacity(_) = error {
                    self.counters
                        .refused_at_capacity
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(error)
            }
            Ok(Ok(Err(plugin_error))) => Err(InvokeError::Plugin(plugin_error.into())),
            Ok(Ok(Ok(output))) => Ok(output),
        }
    }
}

/// Run `call`, a plugin call, on the async worker that polls it for as long
/// as it only waits (on its upstream, its KV, a slot); once its guest code
/// computes (see [`Activity`]), run the rest to completion on a thread of
/// its own, when the executor has several workers, and count it in
/// `counters.moved_off_workers`.
///
/// Guest code thus holds an async worker (which the API, health checks and
/// I/O of every tenant share) for at most a few ticks per resumption, and
/// the OS scheduler shares the cores between plugins that compute; while a
/// lookup that mostly waits on its upstream costs no thread hand-off at all.
/// (A guest that alternates short computations with waits, each under two
/// ticks, stays on the workers: it yields at every wait.)
/// On a single-threaded executor (the CLI, some tests) the call stays in
/// place, where its epoch yields interleave it with other tasks.
async fn off_the_workers_once_computing<F: Future>(
    call: F,
    activity: &Activity,
    counters: &RuntimeCounters,
) -> F::Output {
    use std::task::Poll;
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::try_current()
        .ok()
        .filter(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        let moved = |call: std::pin::Pin<&mut F>, handle: &Handle| {
            counters.moved_off_workers.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(tokio::task::block_in_place(|| handle.block_on(call)))
        };
        activity.resumed();
        match &handle {
            Some(handle) if activity.is_computing() => moved(call.as_mut(), handle),
            Some(handle) => match call.as_mut().poll(cx) {
                Poll::Pending if activity.is_computing() => moved(call.as_mut(), handle),
                other => other,
            },
            None => call.as_mut().poll(cx),
        }
    })
    .await
}

fn check_input_size(plugin: &LoadedPlugin, input: &str) -> Result<(), InvokeError> {
    if input.len() > plugin.limits.max_input_bytes {
        return Err(InvokeError::InputTooLarge {
            size: input.len(),
            max: plugin.limits.max_input_bytes,
        });
    }
    Ok(())
}

/// The identity of a call of `operation` of `plugin` for `binding`.
fn call_id(
    plugin: &LoadedPlugin,
    binding: &Binding,
    operation: &str,
    invocation_id: String,
) -> Arc<CallId> {
    Arc::new(CallId {
        workspace: binding.scope.workspace.clone(),
        connection: binding.scope.connection.clone(),
        plugin: plugin.manifest.id.clone(),
        version: plugin.manifest.version.to_string(),
        operation: operation.to_owned(),
        invocation_id,
    })
}

/// What went wrong, from a trap and the store it left; `instances` is the
/// size of the instance pool, for a call it could not hold.
fn classify_trap(
    error: &wasmtime::Error,
    store: &Store<CallState>,
    (limits, instances): (&EffectiveLimits, u32),
    log: &LogCtx,
) -> InvokeError {
    log.flush_partial_lines();
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return InvokeError::AtCapacity(instances);
    }
    if store.data().limiter.memory_exceeded {
        return InvokeError::MemoryLimit(limits.memory_bytes);
    }
    let budget = HostBudget::for_memory(limits.memory_bytes);
    for cause in error.chain() {
        if let Some(ResourceTableError::Full) = cause.downcast_ref::<ResourceTableError>() {
            return InvokeError::HostResources(budget.resources);
        }
        if let Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields) =
            cause.downcast_ref::<FieldMapError>()
        {
            return InvokeError::HeaderFieldsTooLarge(budget.field_bytes);
        }
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Trap(format!("plugin called exit({})", exit.0));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Timeout(limits.timeout.as_millis() as u64),
        Some(Trap::StackOverflow) => InvokeError::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match panic_message(log) {
            Some(message) => InvokeError::Panic(cap_message(message)),
            None => InvokeError::Trap(Trap::UnreachableCodeReached.to_string()),
        },
        Some(trap) => InvokeError::Trap(trap.to_string()),
        None => InvokeError::Trap(cap_message(format!("{error:#}"))),
    }
}

/// Why the plugin's code failed, from what it printed to stderr before it
/// trapped: the exception of a Python traceback (componentize-py prints the
/// traceback, then its Rust runtime panics), the value a JavaScript plugin
/// threw (StarlingMonkey prints it and `Stack:` before it aborts), else the
/// message after Rust's panic hook's `panicked at <file>:<line>:<col>:`.
fn panic_message(log: &LogCtx) -> Option<String> {
    failure_message(&log.stderr_lines())
}

fn failure_message(lines: &[String]) -> Option<String> {
    let panic = lines.iter().rposition(|l| l.contains("panicked at"));
    let before_panic = &lines[..panic.unwrap_or(lines.len())];
    if let Some(traceback) = before_panic
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last):"))
    {
        // The exception is the last line of the traceback that is not one of
        // its indented frames: `ValueError: …`.
        if let Some(exception) = before_panic[traceback + 1..]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
        {
            return Some(exception.trim_end().to_owned());
        }
    }
    // StarlingMonkey (componentize-js) prints the uncaught value, then
    // `Stack:` and its frames, then aborts.
    if let Some(stack) = before_panic.iter().rposition(|l| l.trim_end() == "Stack:")
        && let Some(line) = before_panic[..stack]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
    {
        let thrown = line
            .split_once("(received `")
            .and_then(|(_, rest)| rest.rsplit_once("`)"))
            .map_or(line.as_str(), |(value, _)| value);
        return Some(thrown.trim().to_owned());
    }
    let at = panic?;
    let message = lines.get(at + 1).cloned().unwrap_or_default();
    Some(if message.is_empty() {
        lines[at].clone()
    } else {
        message
    })
}

#[cfg(test)]
mod failure_message_tests {
    use super::failure_message;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_python_traceback_gives_its_exception_and_a_rust_panic_its_message() {
        let python = lines(
            "Traceback (most recent call last):\n  File \"/0/app.py\", line 14, in invoke\n    raise ValueError(\"no\")\nValueError: the python plugin failed on purpose\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception",
        );
        assert_eq!(
            failure_message(&python).as_deref(),
            Some("ValueError: the python plugin failed on purpose")
        );
        let rust = lines("thread 'main' panicked at src/lib.rs:3:5:\nindex out of bounds");
        assert_eq!(
            failure_message(&rust).as_deref(),
            Some("index out of bounds")
        );
        let js = lines(
            "invalid variant tag value `undefined` (received `Error: the js plugin failed on purpose`) specified for `Error`\nStack:\n  export_operations_0_1_1$invoke@initializer.js:8323:17\n\nRedirecting call to abort() to mozalloc_abort",
        );
        assert_eq!(
            failure_message(&js).as_deref(),
            Some("Error: the js plugin failed on purpose")
        );
        let thrown = lines("TypeError: x is undefined\nStack:\n  invoke@app.js:3:9");
        assert_eq!(
            failure_message(&thrown).as_deref(),
            Some("TypeError: x is undefined")
        );
        assert_eq!(failure_message(&lines("just a log line")), None);
    }
}

/// 32 hex digits from the OS RNG: unique, and unguessable by other tenants.
fn new_invocation_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is unrecoverable for the process, but a call
        // still gets an id, and ids stay unique.
        return fallback_invocation_id();
    }
    hex::encode(bytes)
}

/// 32 hex digits from the wall clock (ns) and a process-wide counter: unique
/// within the process, and across restarts unless the clock goes back.
fn fallback_invocation_id() -> String {
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{nanos:016x}{:016x}",
        ISSUED.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod invocation_id_tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_32_hex_digits_and_unique_even_without_the_rng() {
        let ids: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..2_500)
                            .flat_map(|_| [new_invocation_id(), fallback_invocation_id()])
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect()
        });
        for id in &ids {
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        }
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "every id is unique");
    }
}
