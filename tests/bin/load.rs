//! `patchbay-load`: a bounded load test of Patchbay's invocation API.
//!
//! With no `--api`, it measures the reference scenario on this machine: it
//! starts a HubSpot-shaped upstream on loopback, the `patchbay` binary as a
//! server (fresh data directory, bundled plugins), a HubSpot connection and a
//! workspace token, then runs the load. With `--api`, it loads a running
//! server instead (plain HTTP), and reports the server's CPU and memory when
//! `--pid` names its process on this machine.
//!
//! It prints throughput, latency percentiles, errors, and the server's
//! resident memory and CPU time per invocation. Every run is bounded by
//! `--requests` and `--seconds`.

use clap::Parser;
use patchbay_tests::load::{self, ProcessUsage, Server, Settings, Target, Upstream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "patchbay-load", about)]
struct Args {
    /// Requests in flight at once, one keep-alive connection each.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Requests to send (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Stop after this many seconds even if requests remain.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Requests sent first and not counted (the server's caches, the
    /// upstream connections, the instance pool).
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// The `patchbay` binary to start for the reference scenario [default:
    /// the one beside this program].
    #[arg(long, conflicts_with = "api")]
    server_binary: Option<PathBuf>,
    /// An argument for `patchbay serve` in the reference scenario (repeat
    /// for several), e.g. `--server-arg=--rate-limit=1000/1`.
    #[arg(
        long = "server-arg",
        conflicts_with = "api",
        allow_hyphen_values = true
    )]
    server_args: Vec<String>,
    /// Load a running server at this address (`http://HOST:PORT`) instead.
    #[arg(long, requires_all = ["token", "path"])]
    api: Option<String>,
    /// With `--api`: the bearer token to send.
    #[arg(long, env = "PATCHBAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With `--api`: the route to call, e.g.
    /// `/v1/workspaces/acme/connections/crm/operations/find-contact`.
    #[arg(long)]
    path: Option<String>,
    /// With `--api`: the JSON body to send.
    #[arg(long, default_value = r#"{"input":{"phone":"+15550100"}}"#)]
    body: String,
    /// With `--api`: the server's process id, to report its memory and CPU.
    #[arg(long)]
    pid: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("patchbay-load: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let settings = Settings {
        concurrency: args.concurrency.max(1),
        requests: args.requests,
        time_limit: Duration::from_secs(args.seconds),
    };
    // Kept alive for the run when this program started them.
    let mut started: Option<(Upstream, Server)> = None;
    let (target, pid) = match &args.api {
        Some(api) => {
            let url = url::Url::parse(api).map_err(|e| format!("--api {api:?}: {e}"))?;
            if url.scheme() != "http" {
                return Err(format!("--api {api:?}: only plain http is supported"));
            }
            let address = url
                .socket_addrs(|| Some(80))
                .map_err(|e| format!("--api {api:?}: {e}"))?
                .into_iter()
                .next()
                .ok_or_else(|| format!("--api {api:?}: no address"))?;
            let target = Target {
                address,
                path: args.path.clone().unwrap_or_default(),
                token: args.token.clone().unwrap_or_default(),
                body: args.body.clone().into(),
            };
            (target, args.pid)
        }
        None => {
            let binary = args
                .server_binary
                .clone()
                .unwrap_or_else(|| load::sibling_binary("patchbay"));
            if !binary.exists() {
                return Err(format!(
                    "no server binary at {} (build it with `cargo build --release -p patchbay`, or give --server-binary)",
                    binary.display()
                ));
            }
            let upstream = Upstream::start(load::hubspot_search_answer()).await;
            let extra: Vec<&str> = args.server_args.iter().map(String::as_str).collect();
            let server = Server::start(&binary, &extra);
            let target = load::hubspot_scenario(&server, upstream.address).await;
            let pid = server.pid();
            println!(
                "scenario:   HubSpot find-contact on {} (server pid {pid}), upstream on {}",
                server.base_url(),
                upstream.address
            );
            started = Some((upstream, server));
            (target, Some(pid))
        }
    };
    println!(
        "load:       {} requests (after {} warm-up), {} at once, at most {} s",
        settings.requests, args.warmup, settings.concurrency, args.seconds
    );
    if args.warmup > 0 {
        let warmup = load::run(
            &target,
            Settings {
                requests: args.warmup,
                ..settings
            },
        )
        .await;
        if warmup.succeeded == 0 {
            return Err(format!(
                "no request of the warm-up succeeded: {}",
                warmup.summary()
            ));
        }
    }
    let before = pid.and_then(ProcessUsage::of);
    let report = load::run(&target, settings).await;
    let after = pid.and_then(ProcessUsage::of);
    println!("{}", report.summary());
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = after.cpu.saturating_sub(before.cpu);
        let answered = report.latencies.len().max(1) as u32;
        println!(
            "server:     {} CPU per request ({:.2} s in all, {:.0} % of one core); RSS {:.1} MiB (was {:.1}, peak {:.1})",
            load::micros(cpu / answered),
            cpu.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / report.elapsed.as_secs_f64().max(1e-9),
            mib(after.rss_bytes),
            mib(before.rss_bytes),
            mib(after.peak_rss_bytes),
        );
    }
    drop(started);
    if report.succeeded == 0 {
        return Err("no request succeeded".into());
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
