//! Wiring: open a data directory and build everything that runs on it.

use anyhow::Context as _;
use patchbay_api::AppState;
use patchbay_egress::audit::AuditLog;
use patchbay_egress::credentials::Credentials;
use patchbay_egress::credentials::seal::{MASTER_KEY_ENV, MasterKey, write_private};
use patchbay_egress::resolve::{NameLookup, SystemLookup};
use patchbay_egress::{Egress, EgressLimits};
use patchbay_events::{EventSettings, Events};
use patchbay_policy::OperatorPolicy;
use patchbay_policy::clock::Clock;
use patchbay_runtime::Runtime;
use patchbay_storage::SharedKv;
use patchbay_storage::outbox::Outbox;
use patchbay_storage::purge::KvPurger;
use patchbay_storage::sled_store::SledDb;
use patchbay_storage::tenancy::SharedTenancy;
use patchbay_tenancy::catalog::Catalog;
use patchbay_tenancy::store::PluginStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything `serve` and `invoke` need, opened on one data directory.
pub struct Services {
    /// The data directory everything below lives in.
    pub data_dir: PathBuf,
    /// The sled database (`<data>/db`) the stores below share.
    pub db: SledDb,
    /// Plugins' key-value data, per connection.
    pub kv: SharedKv,
    /// The stored workspaces, connections and tokens (the service over them
    /// is [`Services::tenancy`]).
    pub tenancy_store: SharedTenancy,
    /// Connections' sealed credentials, and the OAuth2 tokens got with them.
    pub credentials: Arc<Credentials>,
    /// The audit trail of outbound requests, and its writer.
    pub audit: Arc<AuditLog>,
    /// The audit trail of caller lookups run, and its writer.
    pub lookup_runs: Arc<AuditLog>,
    /// Wall-clock time for expiry, retention and records (tests move it).
    pub clock: patchbay_policy::clock::Clock,
    /// The installed plugins, with the runtime and egress they run on.
    pub catalog: Arc<Catalog>,
    /// Shared by every `Tenancy` made from these services (see `Tenancy::pins`).
    plugin_pins: Arc<tokio::sync::RwLock<()>>,
    /// Shared by every `Tenancy` made from these services, like the pins.
    bindings: Arc<patchbay_tenancy::invoke::Bindings>,
    keyed: Arc<patchbay_tenancy::invoke::KeyedCalls>,
    recordings: Arc<patchbay_storage::recordings::Recordings>,
    /// The event flow: one per data directory, shared by every API state
    /// and dispatcher made from these services.
    pub events: Arc<Events>,
    /// Stops (and is waited for) when the services are dropped.
    _kv_purger: KvPurger,
}

/// What `Services` are built with besides the data directory and policy.
pub struct Options {
    /// How outbound host names are resolved (tests use a fixed table).
    pub lookup: Arc<dyn NameLookup>,
    /// Wall-clock time (tests use one they move).
    pub clock: Clock,
    /// The master key's base64 text; when `None`, `<data>/master.key` is read
    /// (or created with mode 0600 on first start).
    pub master_key: Option<String>,
    /// Where outbound requests go once checked: the network when `None`; a
    /// recording for the conformance kit.
    pub transport: Option<Arc<dyn patchbay_egress::Transport>>,
}

impl Default for Options {
    /// The system resolver and clock, and the master key from `PATCHBAY_MASTER_KEY` if set.
    fn default() -> Self {
        Self {
            lookup: Arc::new(SystemLookup),
            clock: patchbay_policy::clock::system(),
            master_key: std::env::var(MASTER_KEY_ENV).ok(),
            transport: None,
        }
    }
}

impl Services {
    /// Open (creating if needed) `data_dir`: the sled database, the plugin store
    /// and the compiled-plugin cache.
    pub fn open(data_dir: &Path, policy: OperatorPolicy) -> anyhow::Result<Self> {
        Self::open_with(data_dir, policy, Options::default())
    }

    /// [`open`](Self::open) with chosen resolver, clock and key (tests use a
    /// table of names and a clock they move).
    pub fn open_with(
        data_dir: &Path,
        policy: OperatorPolicy,
        options: Options,
    ) -> anyhow::Result<Self> {
        // Before anything is opened, so a bad value stops start-up naming its key.
        // In the message itself, not as context: callers print it with `{}` too.
        policy
            .check()
            .map_err(|e| anyhow::anyhow!("operator policy: {e}"))?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let db = SledDb::open(&data_dir.join("db")).with_context(|| {
            format!(
                "opening the database in {} (is another patchbay process using this data directory?)",
                data_dir.display()
            )
        })?;
        let kv: SharedKv = Arc::new(db.kv()?);
        let tenancy_store: SharedTenancy = Arc::new(db.tenancy()?);
        let kv_purger = KvPurger::start(
            kv.clone(),
            options.clock.clone(),
            std::time::Duration::from_secs(u64::from(policy.limits.kv_purge_every_secs.max(1))),
        )
        .context("starting the expired-key purge")?;
        let key = MasterKey::load_or_create(&data_dir.join("master.key"), options.master_key)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let credentials = Arc::new(
            Credentials::new(Arc::new(db.secrets()?), key, options.clock.clone())
                .map_err(|e| anyhow::anyhow!("opening stored credentials: {e}"))?,
        );
        let audit = Arc::new(
            AuditLog::start(Arc::new(db.audit()?), options.clock.clone(), policy.audit)
                .context("starting the audit writer")?,
        );
        let lookup_runs = Arc::new(
            AuditLog::start(
                Arc::new(db.lookup_runs()?),
                options.clock.clone(),
                policy.audit,
            )
            .context("starting the lookup audit writer")?,
        );
        let mut egress = egress(&policy, options.lookup, credentials.clone(), audit.clone())?;
        if let Some(transport) = options.transport {
            egress = egress.with_transport(transport);
        }
        let runtime = Runtime::new(
            policy.limits,
            Arc::new(egress),
            kv.clone(),
            options.clock.clone(),
            Some(data_dir.join("cache")),
        )
        .map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))?;
        let store = PluginStore::open(data_dir.join("plugins"))?;
        let outbox_backend: Arc<dyn patchbay_storage::outbox::OutboxBackend> =
            Arc::new(db.outbox()?);
        let recordings = Arc::new(
            patchbay_storage::recordings::Recordings::open(outbox_backend.clone())
                .context("reading the connections' recordings")?,
        );
        let outbox = Outbox::new(outbox_backend);
        // The bundled packages' publisher is this binary's own, trusted
        // beside the publishers operator policy names.
        let mut trust = policy.packages.clone();
        trust.trusted_publishers.push(crate::bundled::publisher());
        let catalog = Arc::new(Catalog::new(store, Arc::new(runtime), trust));
        let (plugin_pins, bindings, keyed) = (Arc::default(), Arc::default(), Arc::default());
        let tenancy = patchbay_tenancy::service::Tenancy {
            store: tenancy_store.clone(),
            catalog: catalog.clone(),
            credentials: credentials.clone(),
            kv: kv.clone(),
            audit: audit.clone(),
            clock: options.clock.clone(),
            pins: Arc::clone(&plugin_pins),
            bindings: Arc::clone(&bindings),
            keyed: Arc::clone(&keyed),
            recordings: recordings.clone(),
        };
        let events = Arc::new(Events::new(
            Arc::new(tenancy),
            outbox,
            options.clock.clone(),
            EventSettings {
                idempotency_window_ms: u64::from(policy.events.idempotency_window_hours)
                    * 3_600_000,
                lane_concurrency: policy.events.deliveries_per_destination as usize,
                webhooks: policy.webhooks,
            },
        ));
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            db,
            kv,
            tenancy_store,
            clock: options.clock,
            credentials,
            audit,
            lookup_runs,
            _kv_purger: kv_purger,
            plugin_pins,
            bindings,
            keyed,
            recordings,
            catalog,
            events,
        })
    }

    /// Workspaces and connections, with everything their deletion must reach.
    pub fn tenancy(&self) -> patchbay_tenancy::service::Tenancy {
        patchbay_tenancy::service::Tenancy {
            store: self.tenancy_store.clone(),
            catalog: self.catalog.clone(),
            credentials: self.credentials.clone(),
            kv: self.kv.clone(),
            audit: self.audit.clone(),
            clock: self.clock.clone(),
            pins: self.plugin_pins.clone(),
            bindings: self.bindings.clone(),
            keyed: self.keyed.clone(),
            recordings: self.recordings.clone(),
        }
    }

    /// What the API serves from, with the operator token it accepts.
    pub fn app_state(&self, operator_token: &str) -> AppState {
        let openapi = patchbay_api::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"describing the API failed: {e}\"}}"));
        let tenancy = Arc::new(self.tenancy());
        AppState {
            openapi: bytes::Bytes::from(openapi),
            catalog: self.catalog.clone(),
            tenancy: tenancy.clone(),
            lookups: Arc::new(patchbay_lookup::Lookups::new(
                tenancy,
                MAX_CACHED_LOOKUPS,
                self.lookup_runs.clone(),
            )),
            events: self.events.clone(),
            metrics: patchbay_api::metrics::MetricsSources {
                audit: self.audit.clone(),
                credentials: self.credentials.clone(),
                egress: self.catalog.runtime().egress().clone(),
                api: patchbay_api::metrics::ApiMetrics::default(),
                runtime: self.catalog.runtime().counters().clone(),
                events: self.events.clone(),
            },
            operator_token: patchbay_api::auth::digest(operator_token),
        }
    }
}

/// Caller-context lookup results kept in memory at most.
const MAX_CACHED_LOOKUPS: u64 = 100_000;

/// The one egress every plugin's requests leave through, under the
/// operator's address policy, limits and destination rules.
fn egress(
    policy: &OperatorPolicy,
    lookup: Arc<dyn NameLookup>,
    credentials: Arc<Credentials>,
    audit: Arc<AuditLog>,
) -> anyhow::Result<Egress> {
    // Checked with the rest of the policy before anything was opened.
    let operator_destinations = policy.destination_rules().map_err(anyhow::Error::msg)?;
    let limits = EgressLimits::from_operator(&policy.limits);
    let egress = Egress::new(policy.addresses.clone(), lookup, limits, credentials, audit)
        .map_err(|e| anyhow::anyhow!("building the outbound HTTP client: {e}"))?;
    Ok(match operator_destinations {
        Some(rules) => egress.with_operator_destinations(rules),
        None => egress,
    })
}

/// The operator token: from `PATCHBAY_OPERATOR_TOKEN`, else read from (or
/// generated into) `<data>/operator-token` with mode 0600. Returns the token
/// and, when it lives in a file, that file's path.
pub fn operator_token(
    data_dir: &Path,
    from_env: Option<String>,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_owned(), None));
    }
    let path = data_dir.join("operator-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_owned();
        if !token.is_empty() {
            return Ok((token, Some(path)));
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("generating the operator token: {e}"))?;
    let token = format!("pbo_{}", hex::encode(bytes));
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok((token, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_a_private_operator_token_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, path) = operator_token(dir.path(), None).expect("token");
        let path = path.expect("stored in a file");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let (second, _) = operator_token(dir.path(), None).expect("token");
        assert_eq!(first, second, "the token is kept across starts");
        let (from_env, none) = operator_token(dir.path(), Some("env-token".into())).expect("token");
        assert_eq!((from_env.as_str(), none), ("env-token", None));
    }
}
