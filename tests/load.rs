//! A bounded load generator for Patchbay's API, and the scenario the
//! performance figures are measured on: the real `patchbay` binary as a
//! process, the bundled HubSpot plugin, and a HubSpot-shaped upstream on a
//! loopback keep-alive port.
//!
//! The generator keeps one HTTP/1.1 keep-alive connection per worker (as a
//! contact center's integration layer does) and stops at whichever comes
//! first: the request count or the time limit. Nothing in it is timed
//! against a goal; it reports, and the benchmarks print the goals beside.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to call: one API route with a bearer token and a JSON body.
#[derive(Debug, Clone)]
pub struct Target {
    /// The API's address (plain HTTP on loopback or a private network).
    pub address: SocketAddr,
    /// The request path, e.g. `/v1/workspaces/acme/connections/crm/operations/find-contact`.
    pub path: String,
    /// The bearer token sent with every request.
    pub token: String,
    /// The request body.
    pub body: Bytes,
}

/// How much load, and for how long at most.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Requests in flight at once (one keep-alive connection each).
    pub concurrency: usize,
    /// Requests to send in all.
    pub requests: u64,
    /// The run stops here even if requests remain.
    pub time_limit: Duration,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered with a 2xx.
    pub succeeded: u64,
    /// Requests that failed, by what went wrong (`status 429`, `connection: …`).
    pub errors: BTreeMap<String, u64>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of every answered request, sorted.
    pub latencies: Vec<Duration>,
}

impl Report {
    /// Answered requests (of any status) per second.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0–100), or zero when nothing was answered.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    /// Failed requests in all.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The run, as lines for an operator.
    pub fn summary(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(what, n)| format!("{n} × {what}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "requests:   {} ok, {} failed in {:.2} s\n\
             throughput: {:.0} /s\n\
             latency:    p50 {} · p90 {} · p99 {} · max {}\n\
             errors:     {errors}",
            self.succeeded,
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            micros(self.percentile(50.0)),
            micros(self.percentile(90.0)),
            micros(self.percentile(99.0)),
            micros(self.latencies.last().copied().unwrap_or_default()),
        )
    }
}

/// A duration as `123 µs` or `1.23 ms`.
pub fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// Run `settings` worth of requests against `target`.
pub async fn run(target: &Target, settings: Settings) -> Report {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + settings.time_limit;
    let workers: Vec<_> = (0..settings.concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            let issued = issued.clone();
            tokio::spawn(worker(target, settings.requests, issued, stop_at))
        })
        .collect();
    let mut report = Report::default();
    for worker in workers {
        let part = worker.await.expect("load worker panicked");
        report.succeeded += part.succeeded;
        for (what, n) in part.errors {
            *report.errors.entry(what).or_default() += n;
        }
        report.latencies.extend(part.latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    report
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(address: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One keep-alive connection's share of the run.
async fn worker(target: Target, total: u64, issued: Arc<AtomicU64>, stop_at: Instant) -> Report {
    let mut report = Report::default();
    let authorization = format!("Bearer {}", target.token);
    let host = target.address.to_string();
    let mut sender: Option<Sender> = None;
    while Instant::now() < stop_at && issued.fetch_add(1, Ordering::Relaxed) < total {
        let started = Instant::now();
        let outcome = async {
            let ready = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connect(target.address).await?,
            };
            let mut ready = ready;
            ready
                .ready()
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let request = hyper::Request::post(target.path.as_str())
                .header(hyper::header::HOST, host.as_str())
                .header(hyper::header::AUTHORIZATION, authorization.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(target.body.clone()))
                .map_err(|e| e.to_string())?;
            let response = ready
                .send_request(request)
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            sender = Some(ready);
            Ok::<_, String>(status)
        }
        .await;
        match outcome {
            Ok(status) => {
                report.latencies.push(started.elapsed());
                if status.is_success() {
                    report.succeeded += 1;
                } else {
                    *report
                        .errors
                        .entry(format!("status {}", status.as_u16()))
                        .or_default() += 1;
                }
            }
            Err(what) => *report.errors.entry(what).or_default() += 1,
        }
    }
    report
}

/// CPU time and memory of a process, read from `/proc` (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// User plus system CPU time of every thread so far.
    pub cpu: Duration,
    /// Resident set size now.
    pub rss_bytes: u64,
    /// The largest resident set size so far.
    pub peak_rss_bytes: u64,
}

impl ProcessUsage {
    /// Read `pid`'s usage; `None` where `/proc` has no such process.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces), from field 3 on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(Self {
            cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64),
            rss_bytes: kib("VmRSS:")? * 1024,
            peak_rss_bytes: kib("VmHWM:")? * 1024,
        })
    }
}

/// The kernel's clock ticks per second, in which `/proc/PID/stat` counts CPU time.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A HubSpot search answer with one contact, as
/// `POST /crm/v3/objects/contacts/search` returns it (about 0.7 KiB).
pub fn hubspot_search_answer() -> Value {
    json!({
        "total": 1,
        "results": [{
            "id": "51",
            "properties": {
                "company": "Acme Plumbing & Heating",
                "createdate": "2026-03-04T09:12:45.120Z",
                "email": "dana.whitfield@acme-plumbing.example",
                "firstname": "Dana",
                "hs_object_id": "51",
                "lastmodifieddate": "2026-11-28T16:40:02.781Z",
                "lastname": "Whitfield",
                "mobilephone": "+15550100",
                "phone": "+15550100"
            },
            "createdAt": "2026-03-04T09:12:45.120Z",
            "updatedAt": "2026-11-28T16:40:02.781Z",
            "archived": false
        }]
    })
}

/// A HubSpot-shaped upstream on a loopback port: every request gets `answer`
/// on a keep-alive connection. Lean on purpose (no request recording or
/// matching), so the machine's cores go to the host under test.
pub struct Upstream {
    /// Where it listens.
    pub address: SocketAddr,
    /// Requests answered so far.
    pub served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Start answering every request with `answer` (JSON).
    pub async fn start(answer: Value) -> Self {
        Self::start_after(answer, Duration::ZERO).await
    }

    /// Like [`start`](Self::start), each answer sent `delay` after its
    /// request arrived (a slow upstream).
    pub async fn start_after(answer: Value, delay: Duration) -> Self {
        Self::routes_after(vec![("/".into(), answer)], delay).await
    }

    /// Answer each request with the JSON of the first route whose path
    /// prefix its path starts with (`{}` when none does).
    pub async fn routes(routes: Vec<(String, Value)>) -> Self {
        Self::routes_after(routes, Duration::ZERO).await
    }

    async fn routes_after(routes: Vec<(String, Value)>, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let address = listener.local_addr().expect("upstream address");
        let served = Arc::new(AtomicU64::new(0));
        let routes: Arc<Vec<(String, Bytes)>> = Arc::new(
            routes
                .into_iter()
                .map(|(prefix, answer)| (prefix, Bytes::from(answer.to_string())))
                .collect(),
        );
        let counter = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let routes = routes.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let body = routes
                                .iter()
                                .find(|(prefix, _)| {
                                    request.uri().path().starts_with(prefix.as_str())
                                })
                                .map_or_else(|| Bytes::from_static(b"{}"), |(_, b)| b.clone());
                            let counter = counter.clone();
                            async move {
                                let _ = request.into_body().collect().await;
                                counter.fetch_add(1, Ordering::Relaxed);
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                hyper::Response::builder()
                                    .header(
                                        hyper::header::CONTENT_TYPE,
                                        "application/json;charset=utf-8",
                                    )
                                    .body(Full::new(body))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            address,
            served,
            task,
        }
    }
}

/// A `patchbay serve` process on a loopback port, with its own data
/// directory; killed when dropped.
pub struct Server {
    child: Child,
    /// Where its API listens.
    pub address: SocketAddr,
    /// The operator token it was started with.
    pub operator_token: String,
    data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `binary serve` with a fresh data directory, loopback allowed as
    /// a destination, and `extra` arguments; waits until it listens.
    pub fn start(binary: &Path, extra: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("data directory");
        let operator_token = format!("pbo_{:032x}", fastrand::u128(..));
        Self::start_on(binary, data, &operator_token, extra)
    }

    /// [`start`](Self::start) on an existing data directory.
    pub fn start_on(
        binary: &Path,
        data: tempfile::TempDir,
        operator_token: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = server_command(binary, data.path(), operator_token, extra)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let address = listening_address(&mut child);
        Self {
            child,
            address,
            operator_token: operator_token.to_owned(),
            data: Some(data),
        }
    }

    /// Kill the server (as `kill -9`) and keep its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take().expect("the data directory")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `method path` as the operator, with a JSON `body` (if any): status and JSON answer.
    pub async fn operator_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        crate::api_call(
            method,
            &self.base_url(),
            path,
            Some(&self.operator_token),
            body,
        )
        .await
    }
}

/// `binary serve` on `data`, listening on a free loopback port, with
/// loopback allowed as a destination, warnings-only logs, and packages
/// installed whoever signed them (the scenario's are signed by the tests'
/// publisher, whom this server has no reason to trust).
pub fn server_command(binary: &Path, data: &Path, operator_token: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-unsigned",
        ])
        .args(extra)
        .env("PATCHBAY_DATA_DIR", data)
        .env("PATCHBAY_OPERATOR_TOKEN", operator_token)
        .env("RUST_LOG", "warn")
        .env_remove("PATCHBAY_POLICY")
        .env_remove("PATCHBAY_ALLOW_UNSIGNED")
        .env_remove("PATCHBAY_RATE_LIMIT")
        .env_remove("PATCHBAY_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Read the server's stderr until it says where it listens, then keep
/// draining it (a full pipe would stall the server) on a thread of its own.
pub fn listening_address(child: &mut Child) -> SocketAddr {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut said = Vec::new();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("patchbay listening on http://") {
                    break rest.trim().parse().expect("a socket address");
                }
                said.push(line);
            }
            _ => panic!("the server exited before listening:\n{}", said.join("\n")),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    address
}

/// Where the workspace, connection and token of the HubSpot scenario live.
pub const WORKSPACE: &str = "load";
/// The connection's name.
pub const CONNECTION: &str = "crm";

/// Set up the HubSpot scenario on `server`: a workspace, a HubSpot
/// connection pointed at `upstream` with every requested capability
/// approved and a private-app token set, and a workspace token. The target
/// looks a caller up by phone.
///
/// The connection runs [`UNPACED_VERSION`] of the bundled plugin: the same
/// component with the vendor's declared pace (HubSpot's 5 searches a second)
/// taken out of its manifest, so the run measures the host, not HubSpot's
/// limit. Every other part of the path (auth, sandbox, egress, audit) is
/// the same.
pub async fn hubspot_scenario(server: &Server, upstream: SocketAddr) -> Target {
    hubspot_connection(server, upstream, WORKSPACE, CONNECTION).await
}

/// [`hubspot_scenario`] in workspace `workspace` (created unless it exists),
/// on connection `name`.
pub async fn hubspot_connection(
    server: &Server,
    upstream: SocketAddr,
    workspace: &str,
    name: &str,
) -> Target {
    let (status, body) = server
        .operator_call("POST", "/v1/workspaces", Some(json!({ "id": workspace })))
        .await;
    assert!(
        status == 201 || status == 409,
        "creating the workspace: {body}"
    );
    install_unpaced_hubspot(server).await;
    let connection = format!("/v1/workspaces/{workspace}/connections/{name}");
    let (status, body) = server
        .operator_call(
            "PUT",
            &connection,
            Some(json!({
            "plugin": "hubspot",
            "version": UNPACED_VERSION,
            "config": { "base_url": format!("http://{upstream}") },
            "grants": { "approve_all_requested": true },
            })),
        )
        .await;
    assert_eq!(status, 200, "creating the connection: {body}");
    let (status, body) = server
        .operator_call(
            "PUT",
            &format!("{connection}/credentials/private_app_token"),
            Some(json!({ "kind": "bearer", "token": "pat-na1-load-test-token" })),
        )
        .await;
    assert_eq!(status, 204, "setting the credential: {body}");
    let (status, body) = server
        .operator_call(
            "POST",
            &format!("/v1/workspaces/{workspace}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "issuing a workspace token: {body}");
    Target {
        address: server.address,
        path: format!("{connection}/operations/find-contact"),
        token: body["token"].as_str().expect("token").to_owned(),
        body: Bytes::from(json!({ "input": { "phone": "+15550100" } }).to_string()),
    }
}

/// The version of the bundled HubSpot plugin the load scenario installs
/// with no declared pace.
pub const UNPACED_VERSION: &str = "0.1.0-unpaced";

/// Install the bundled HubSpot component as [`UNPACED_VERSION`], its
/// manifest without `rate_limit` (once: a second install is a 409).
async fn install_unpaced_hubspot(server: &Server) {
    use base64::Engine as _;
    let package = crate::plugins::HUBSPOT.package_with(|manifest| {
        crate::without_rate_limits(&manifest)
            .lines()
            .map(|l| match l.trim_start().starts_with("version =") {
                true => format!("version = \"{UNPACED_VERSION}\""),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let (status, body) = server
        .operator_call(
            "POST",
            "/v1/plugins",
            Some(json!({
                "manifest": package.manifest_text,
                "component": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
                "signature": package.signature,
            })),
        )
        .await;
    assert!(
        status == 201 || status == 409,
        "installing the unpaced HubSpot plugin: {status} {body}"
    );
}

/// The `patchbay` binary beside the running executable (Cargo puts every
/// binary of a profile in one directory).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable directory");
    // Benchmarks and tests run from target/<profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile directory")
    } else {
        dir
    };
    dir.join(name)
}
