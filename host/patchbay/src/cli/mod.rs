//! The `patchbay` command line.

mod events;
mod kit;
mod policy;
mod remote;
mod replay;
mod scaffold;
mod secrets;
mod signing;

use crate::services::{Services, operator_token};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use patchbay_policy::OperatorPolicy;
use patchbay_policy::grants::Grants;
use patchbay_policy::manifest::Manifest;
use patchbay_runtime::Binding;
use patchbay_runtime::package::Package;
use patchbay_storage::tenancy::Connection;
use patchbay_tenancy::invoke::Bound;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The `patchbay` command line: `serve`, local plugin commands, and the
/// remote commands that drive a running server.
#[derive(Debug, Parser)]
#[command(
    name = "patchbay",
    version,
    about = "Run sandboxed WebAssembly connector plugins for CX integrations",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DataDir {
    /// Directory holding the database, installed plugins and compiled cache.
    #[arg(long, env = "PATCHBAY_DATA_DIR", default_value = "patchbay-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the bundled plugins are installed on first start).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "PATCHBAY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        data: DataDir,
        /// Also install every plugin package (a directory with plugin.toml and plugin.wasm) found here.
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
        #[command(flatten)]
        policy: policy::PolicyArgs,
        /// How log lines are written to stderr: `text` for people, `json` (one
        /// object a line) for log shippers.
        #[arg(long, env = "PATCHBAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print or check operator policy (the `--policy` file of `serve`).
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Install, list, inspect and remove plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manage workspaces and their tokens on a running server.
    Workspace {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: remote::WorkspaceCommand,
    },
    /// Manage and invoke connections on a running server.
    Connection {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: remote::ConnectionCommand,
    },
    /// Define and run caller-context lookups on a running server.
    Lookup {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: remote::LookupCommand,
    },
    /// Send events to a running server.
    Events {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Route events: create, show, list and delete subscriptions.
    Subscription {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: events::SubscriptionCommand,
    },
    /// The dead-letter queue: list, show, replay and purge.
    DeadLetter {
        #[command(flatten)]
        server: remote::Server,
        #[command(subcommand)]
        command: events::DeadLetterCommand,
    },
    /// Maintain the sealed credentials (offline).
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Run one operation once, locally, without a server.
    Invoke {
        /// A plugin directory (plugin.toml + plugin.wasm) or an installed `id[@version]`.
        plugin: String,
        /// Operation name, as in plugin.toml.
        operation: String,
        /// Input JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// A connection setting, `key=value`; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A credential the plugin declares, read from an environment variable
        /// (never from the command line, where other users could see it): the
        /// plain value for bearer and API-key kinds, else the JSON form, e.g.
        /// `{"kind":"basic","username":"u","password":"p"}`. Stored sealed for
        /// the local connection. Repeat for more.
        #[arg(long = "credential", value_name = "NAME=ENV_VAR")]
        credentials: Vec<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        policy: policy::PolicyArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate and install a plugin directory (plugin.toml + plugin.wasm,
    /// and plugin.sig when signed). Only packages signed by a publisher
    /// operator policy trusts are installed, unless unsigned ones are allowed.
    Install {
        dir: PathBuf,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        policy: policy::PolicyArgs,
    },
    /// Write a new connector crate NAME (outside any Patchbay checkout) from
    /// a template: plugin.toml with one operation, its code, recorded
    /// fixtures that pass `plugin test`, and a README.
    New {
        /// The plugin's id and the crate's name (lowercase, digits, dashes).
        name: String,
        #[arg(long, value_enum, default_value = "crm")]
        template: scaffold::Template,
        /// `rust` (the SDK), `python` (componentize-py) or `js`
        /// (componentize-js); the last two have the crm template.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// The directory to write it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on the SDK at this path (default: the SDK of this Patchbay
        /// checkout when there is one, else the registry's by version).
        #[arg(long, value_name = "PATH")]
        sdk_path: Option<PathBuf>,
    },
    /// Build the plugin in DIR into DIR/plugin.wasm and validate the package
    /// exactly as install does: a Rust crate for wasm32-wasip2 (adding the
    /// target with rustup when missing), an app.py with componentize-py
    /// (PATCHBAY_COMPONENTIZE_PY, DIR/.venv, or the PATH), or an app.js with
    /// componentize-js (PATCHBAY_COMPONENTIZE_JS, DIR/.tools, or the PATH).
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Judge a plugin directory with the conformance kit, offline, in the
    /// real sandbox: the package installs; every fixture in DIR/fixtures/
    /// gives its expected output or error against its recorded exchanges;
    /// a 401, 404, 429, 500, malformed JSON and a timeout in place of each
    /// successful fixture's first answer give the matching errors; requests
    /// stay within the declared destinations (one never used is a warning)
    /// and calls within the declared time. Exits 1 when a check fails.
    Test {
        /// The plugin directory (plugin.toml, plugin.wasm, fixtures/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// `text` for people, `json` for CI.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// Run a recorded invocation again, offline, in the real sandbox, and
    /// compare its outcome with the recorded one: requests answered from
    /// the transcript, KV as the call found it, the recorded clocks and
    /// random values, the connection's settings and grants. Get transcripts
    /// from `GET /v1/workspaces/{ws}/connections/{name}/transcripts/{id}`
    /// once the operator records the connection (`PUT …/recording`).
    /// Exits 1 when the outcome differs.
    Replay {
        /// The transcript (JSON); `-` reads standard input.
        transcript: PathBuf,
        /// The plugin directory to run it on (plugin.toml, plugin.wasm).
        #[arg(long, default_value = ".")]
        plugin: PathBuf,
        /// Also write the case as a conformance-kit fixture to FILE (for
        /// example fixtures/incident-42.json); an existing file is kept.
        #[arg(long, value_name = "FILE")]
        save_fixture: Option<PathBuf>,
        /// `text` for people, `json` for CI.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// Make an ed25519 key pair for signing packages: the private key is
    /// written to FILE (PKCS#8 PEM, readable by you only), the public key
    /// printed, for operators to trust.
    Keygen {
        /// Where to write the private key; an existing file is never replaced.
        #[arg(long = "out", value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a plugin directory: writes DIR/plugin.sig, which covers
    /// plugin.toml and plugin.wasm exactly as they are.
    Sign {
        dir: PathBuf,
        /// The private key (PKCS#8 PEM, from `plugin keygen` or
        /// `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The publisher name operators trust the key under.
        #[arg(long, value_name = "NAME")]
        publisher: String,
    },
    /// List installed plugins and versions.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Show an installed plugin's manifest, with its package's digest and
    /// publisher under "package", as JSON.
    Inspect {
        /// `id` (newest version) or `id@version`.
        plugin: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove an installed version.
    Remove {
        /// `id@version` (or `id` for the newest).
        plugin: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Command::Serve { log_format, .. } => log_format,
        _ => LogFormat::Text,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(patchbay_runtime::BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if LOG_FORMAT.get() == Some(&LogFormat::Json) {
                tracing::error!(target: "patchbay", "{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The format chosen at start, so lines the server prints for people
/// (its address, where the token is) stay parseable in `json`.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// A start-up line for the operator: plain on stderr, or a log event when
/// every stderr line must be JSON.
fn announce(line: std::fmt::Arguments<'_>) {
    if LOG_FORMAT.get() == Some(&LogFormat::Json) {
        tracing::info!(target: "patchbay::startup", "{line}");
    } else {
        eprintln!("{line}");
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The start-up lines (the address, where the token is) show whatever
    // RUST_LOG says, as they do in text, where they bypass the log.
    if let Ok(startup) = "patchbay::startup=info".parse() {
        filter = filter.add_directive(startup);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = LOG_FORMAT.set(format);
    let _ = match format {
        // Colour codes only for a person at a terminal: in a file or a log
        // shipper they are noise that breaks searching and parsing.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            data,
            plugins_dir,
            policy,
            log_format: _,
        } => {
            serve(
                listen,
                &data.data_dir,
                plugins_dir.as_deref(),
                policy.resolve()?,
            )
            .await
        }
        Command::Policy { command } => policy::run(command),
        Command::Plugin { command } => plugin(command).await,
        Command::Secrets { command } => secrets::run(command),
        Command::Workspace { server, command } => remote::workspace(server, command).await,
        Command::Connection { server, command } => remote::connection(server, command).await,
        Command::Lookup { server, command } => remote::lookup(server, command).await,
        Command::Events { server, command } => events::events(server, command).await,
        Command::Subscription { server, command } => events::subscription(server, command).await,
        Command::DeadLetter { server, command } => events::dead_letter(server, command).await,
        Command::Invoke {
            plugin,
            operation,
            input,
            config,
            credentials,
            data,
            policy,
        } => {
            invoke(
                &plugin,
                &operation,
                &input,
                (&config, &credentials),
                &data.data_dir,
                policy.resolve()?,
            )
            .await
        }
    }
}

async fn serve(
    listen: SocketAddr,
    data_dir: &Path,
    plugins_dir: Option<&Path>,
    policy: OperatorPolicy,
) -> anyhow::Result<ExitCode> {
    let services = Services::open(data_dir, policy)?;
    let (token, token_path) =
        operator_token(data_dir, std::env::var("PATCHBAY_OPERATOR_TOKEN").ok())?;
    patchbay_api::auth::check_operator_token(&token).map_err(anyhow::Error::msg)?;
    match token_path {
        Some(path) => announce(format_args!("operator token: stored in {}", path.display())),
        None => announce(format_args!("operator token: from PATCHBAY_OPERATOR_TOKEN")),
    }
    for installed in services
        .catalog
        .install_missing(crate::bundled::packages())
        .await?
    {
        tracing::info!(plugin = %installed.id, version = %installed.version, "installed bundled plugin");
    }
    if let Some(dir) = plugins_dir {
        install_plugins_dir(&services, dir).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    announce(format_args!(
        "patchbay listening on http://{}",
        listener.local_addr()?
    ));
    let dispatcher = patchbay_events::dispatch::Dispatcher::start(services.events.clone());
    axum::serve(listener, patchbay_api::router(services.app_state(&token)))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // No request is taken any more: deliveries in flight get a grace to end
    // and be recorded; any still running are left in their queues, and
    // attempted again (same idempotency key) at the next start.
    announce(format_args!(
        "patchbay stopping: finishing deliveries in flight"
    ));
    dispatcher.shutdown(DELIVERY_GRACE).await;
    services.events.outbox().flush()?;
    services.kv.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// How long deliveries in flight get to end when the host stops.
const DELIVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Ctrl-C, or SIGTERM (what a process supervisor sends).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn install_plugins_dir(services: &Services, dir: &Path) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading plugins dir {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.join("plugin.toml").exists() {
            continue;
        }
        let package = Package::read_dir(&path)?;
        let manifest = Manifest::parse(&package.manifest_text)
            .with_context(|| format!("{}", path.display()))?;
        if services
            .catalog
            .is_installed(&manifest.id, &manifest.version.to_string())
        {
            continue;
        }
        let installed = services
            .catalog
            .install(package)
            .await
            .with_context(|| format!("installing {}", path.display()))?;
        tracing::info!(plugin = %installed.id, version = %installed.version, "installed plugin from plugins dir");
    }
    Ok(())
}

async fn plugin(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Install { dir, data, policy } => {
            let services = Services::open(&data.data_dir, policy.resolve()?)?;
            let package = Package::read_dir(&dir)?;
            let installed = services.catalog.install(package).await?;
            println!("installed {}@{}", installed.id, installed.version);
        }
        PluginCommand::New {
            name,
            template,
            lang,
            dir,
            sdk_path,
        } => {
            let written = scaffold::new(&name, (template, lang), &dir, sdk_path.as_deref())?;
            println!("{}", written.display());
            eprintln!(
                "wrote {} : next, `cd {}` and `patchbay plugin build`, then `patchbay plugin test`",
                written.display(),
                written.display()
            );
        }
        PluginCommand::Build { dir } => {
            let (manifest, size) = scaffold::build(&dir).await?;
            let operations: Vec<&str> = manifest
                .operations
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            println!(
                "built {}@{} ({} KiB) in {}: operations {}; valid",
                manifest.id,
                manifest.version,
                size.div_ceil(1024),
                dir.join("plugin.wasm").display(),
                operations.join(", ")
            );
        }
        PluginCommand::Test { dir, format } => {
            let report = kit::run(&dir).await?;
            match format {
                ReportFormat::Text => print!("{}", report.text()),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            if !report.passed {
                return Ok(ExitCode::from(1));
            }
        }
        PluginCommand::Replay {
            transcript,
            plugin,
            save_fixture,
            format,
        } => {
            let (report, notes) =
                replay::run(&transcript, &plugin, save_fixture.as_deref()).await?;
            match format {
                ReportFormat::Text => {
                    for note in &notes {
                        println!("{note}");
                    }
                    print!("{}", report.text());
                }
                ReportFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "notes": notes,
                        "report": report,
                    }))?
                ),
            }
            if !report.passed {
                return Ok(ExitCode::from(1));
            }
        }
        PluginCommand::Keygen { out } => signing::keygen(&out)?,
        PluginCommand::Sign {
            dir,
            key,
            publisher,
        } => signing::sign(&dir, &key, &publisher)?,
        PluginCommand::List { data } => {
            let services = Services::open(&data.data_dir, OperatorPolicy::default())?;
            let plugins = services.catalog.list()?;
            if plugins.is_empty() {
                println!("no plugins installed");
            }
            for p in plugins {
                let publisher = p.publisher.as_ref().map_or("unsigned", |p| p.name.as_str());
                println!(
                    "{}@{}\t{}\t{}\t{}\t{publisher}",
                    p.id,
                    p.version,
                    p.name,
                    p.vendor,
                    p.operations.join(","),
                );
            }
        }
        PluginCommand::Inspect { plugin, data } => {
            let services = Services::open(&data.data_dir, OperatorPolicy::default())?;
            let version = services.catalog.inspect_package(&plugin)?;
            println!("{}", serde_json::to_string_pretty(&version)?);
        }
        PluginCommand::Remove { plugin, data } => {
            let services = Services::open(&data.data_dir, OperatorPolicy::default())?;
            let manifest = services.catalog.inspect(&plugin)?;
            let (id, version) = (manifest.id.as_str(), manifest.version.to_string());
            services.tenancy().remove_plugin(id, &version).await?;
            println!("removed {id}@{version}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_config(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => bail!("--config {pair:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// `NAME=ENV_VAR` → the credential value held in `ENV_VAR`, typed by the manifest's kind.
fn read_credential(
    manifest: &patchbay_policy::manifest::Manifest,
    pair: &str,
) -> anyhow::Result<(String, patchbay_egress::credentials::Secret)> {
    let Some((name, var)) = pair.split_once('=') else {
        bail!("--credential {pair:?}: expected NAME=ENV_VAR");
    };
    let request = manifest
        .capabilities
        .credentials
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("--credential {name}: the plugin declares no such credential"))?;
    let value = std::env::var(var)
        .with_context(|| format!("--credential {name}: environment variable {var} is not set"))?;
    let secret = patchbay_egress::credentials::Secret::from_text(request.kind, value)
        .map_err(|e| anyhow::anyhow!("--credential {name}: {var} {e}"))?;
    Ok((name.to_owned(), secret))
}

/// The plugin `reference` names: a plugin directory (validated, not
/// installed), or an installed or bundled `id[@version]`.
async fn local_plugin(
    services: &Services,
    reference: &str,
) -> anyhow::Result<Arc<patchbay_runtime::LoadedPlugin>> {
    let path = Path::new(reference);
    if path.is_dir() {
        let package = Package::read_dir(path)?;
        let validated = patchbay_runtime::package::validate(services.catalog.runtime(), &package);
        return Ok(Arc::new(validated.await?.plugin));
    }
    services
        .catalog
        .install_missing(crate::bundled::packages())
        .await?;
    Ok(services.catalog.get(reference).await?)
}

async fn invoke(
    reference: &str,
    operation: &str,
    input: &str,
    (config, credentials): (&[String], &[String]),
    data_dir: &Path,
    policy: OperatorPolicy,
) -> anyhow::Result<ExitCode> {
    let input: serde_json::Value =
        serde_json::from_str(input).context("--input is not valid JSON")?;
    let config = parse_config(config)?;
    let services = Services::open(data_dir, policy)?;
    let plugin = local_plugin(&services, reference).await?;
    // Run as connection local/<plugin id>, every capability it asks for
    // granted, through the same path as a stored connection's calls.
    let connection = Connection {
        workspace: "local".into(),
        name: plugin.manifest.id.clone(),
        plugin: plugin.manifest.id.clone(),
        version: plugin.manifest.version.clone(),
        config: config
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
        grants: Grants::all_requested(),
        limits: Default::default(),
        enabled: true,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    for pair in credentials {
        let (name, secret) = read_credential(&plugin.manifest, pair)?;
        services
            .credentials
            .set(&connection.scope(), &name, secret)
            .await
            .with_context(|| format!("--credential {name}"))?;
    }
    let binding =
        Binding::for_connection(&connection, &plugin.manifest).map_err(anyhow::Error::msg)?;
    let bound = Bound {
        connection,
        plugin,
        binding,
    };
    let outcome = services
        .tenancy()
        .run(&bound, operation, input, Default::default())
        .await
        .outcome;
    match outcome.result {
        Ok(output) => {
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error} (invocation {})", outcome.invocation_id);
            Ok(ExitCode::FAILURE)
        }
    }
}
