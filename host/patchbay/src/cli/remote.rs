//! `patchbay workspace …` and `patchbay connection …`: the HTTP API from the
//! command line, against a running server. Every command is one API call;
//! its JSON answer is printed, and an error answer becomes a failing exit
//! with the API's code and message.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use std::process::ExitCode;

/// Where the server is and who is calling.
#[derive(Debug, clap::Args)]
pub(super) struct Server {
    /// The server's base URL.
    #[arg(
        long = "server",
        env = "PATCHBAY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    url: url::Url,
    /// The operator token or a workspace token. Prefer the environment: a
    /// flag shows in the process list.
    #[arg(long, env = "PATCHBAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Said when no token is given: the operator's token has another variable
/// on the server side, and a new operator looks for that name.
const TOKEN_REQUIRED: &str = "a token is required: set PATCHBAY_TOKEN (or pass --token) to a \
    workspace token (`pbw_…`), or to the operator token, which is the server's \
    PATCHBAY_OPERATOR_TOKEN or else the contents of <data-dir>/operator-token";

impl Server {
    fn token(&self) -> anyhow::Result<&str> {
        match self.token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => Ok(token),
            _ => bail!(TOKEN_REQUIRED),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum WorkspaceCommand {
    /// Create a workspace (operator).
    Create { id: String },
    /// List workspaces (operator).
    List,
    /// Delete a workspace and everything it owns (operator).
    Delete { id: String },
    /// Show a workspace and its settings.
    Show { id: String },
    /// The workspace's audit trail of outbound requests, oldest first, one page.
    Audit {
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Replace a workspace's settings; a setting not given is unset.
    Settings {
        id: String,
        /// Region (e.g. US, GB) in which caller numbers without a country code are read.
        #[arg(long)]
        default_region: Option<String>,
    },
    /// Issue, list or revoke the workspace's API tokens (operator).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Issue a token; it is printed this once and never again.
    Issue {
        workspace: String,
        #[arg(long)]
        label: Option<String>,
        /// What the token may see of caller lookups: basic (default), advanced or admin.
        #[arg(long, default_value = "basic")]
        profile: String,
    },
    List {
        workspace: String,
    },
    Revoke {
        workspace: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ConnectionCommand {
    /// Create or change a connection.
    Set(SetConnection),
    Get {
        workspace: String,
        name: String,
    },
    List {
        workspace: String,
    },
    Delete {
        workspace: String,
        name: String,
    },
    /// Set or remove one of the connection's credentials (write-only).
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Run one of the connection's operations.
    Invoke {
        workspace: String,
        name: String,
        operation: String,
        #[arg(long, default_value = "{}")]
        input: String,
    },
    /// Record the connection's next invocations for `plugin replay`
    /// (the operator token): at most N of them, for at most M minutes.
    Record {
        workspace: String,
        name: String,
        #[arg(long, value_name = "N")]
        max_invocations: u32,
        #[arg(long, value_name = "M")]
        for_minutes: u32,
    },
    /// Stop recording the connection (its transcripts are kept).
    StopRecording {
        workspace: String,
        name: String,
    },
    /// The transcripts the connection's recordings kept, oldest first.
    Transcripts {
        workspace: String,
        name: String,
    },
    /// One transcript (by invocation id), as `patchbay plugin replay` reads it.
    Transcript {
        workspace: String,
        name: String,
        id: String,
    },
}

/// `connection set`: the connection's plugin, settings, grants and limits.
#[derive(Debug, clap::Args)]
pub(super) struct SetConnection {
    workspace: String,
    name: String,
    /// The plugin id.
    #[arg(long)]
    plugin: String,
    /// A version, or `latest`.
    #[arg(long, default_value = "latest")]
    version: String,
    /// A setting, `key=value` (a string); repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Settings as one JSON object (for numbers, booleans, lists).
    #[arg(long, value_name = "JSON")]
    config_json: Option<String>,
    /// Approve everything the plugin's manifest asks for.
    #[arg(long, conflicts_with = "grants")]
    approve_all: bool,
    /// Explicit grants as JSON, e.g. `{"http": ["GET https://api.example.com"]}`.
    #[arg(long, value_name = "JSON")]
    grants: Option<String>,
    /// Tighter limits, e.g. `{"timeout_ms": 500}`.
    #[arg(long, value_name = "JSON")]
    limits: Option<String>,
    /// Save it disabled.
    #[arg(long)]
    disabled: bool,
    /// The capability diff an upgrade was refused with, to approve it.
    #[arg(long, value_name = "JSON")]
    approve_upgrade: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum CredentialCommand {
    /// Set a credential from an environment variable (never the command
    /// line, where other users could see it): the bare value for bearer and
    /// API-key kinds, else the JSON form, e.g.
    /// `{"kind":"basic","username":"u","password":"p"}`.
    Set {
        workspace: String,
        name: String,
        credential: String,
        #[arg(long, value_name = "ENV_VAR")]
        from_env: String,
    },
    Remove {
        workspace: String,
        name: String,
        credential: String,
    },
}

pub(super) async fn workspace(
    server: Server,
    command: WorkspaceCommand,
) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match command {
        WorkspaceCommand::Create { id } => (
            "POST",
            "/v1/workspaces".to_owned(),
            Some(json!({ "id": id })),
        ),
        WorkspaceCommand::List => ("GET", "/v1/workspaces".to_owned(), None),
        WorkspaceCommand::Delete { id } => {
            ("DELETE", format!("/v1/workspaces/{}", segment(&id)), None)
        }
        WorkspaceCommand::Audit { id, page } => (
            "GET",
            page.on(format!("/v1/workspaces/{}/audit", segment(&id))),
            None,
        ),
        WorkspaceCommand::Show { id } => ("GET", format!("/v1/workspaces/{}", segment(&id)), None),
        WorkspaceCommand::Settings { id, default_region } => (
            "PUT",
            format!("/v1/workspaces/{}/settings", segment(&id)),
            Some(json!({ "default_region": default_region })),
        ),
        WorkspaceCommand::Token { command } => match command {
            TokenCommand::Issue {
                workspace,
                label,
                profile,
            } => (
                "POST",
                format!("/v1/workspaces/{}/tokens", segment(&workspace)),
                Some(json!({ "label": label, "profile": profile })),
            ),
            TokenCommand::List { workspace } => (
                "GET",
                format!("/v1/workspaces/{}/tokens", segment(&workspace)),
                None,
            ),
            TokenCommand::Revoke { workspace, id } => (
                "DELETE",
                format!(
                    "/v1/workspaces/{}/tokens/{}",
                    segment(&workspace),
                    segment(&id)
                ),
                None,
            ),
        },
    };
    call(&server, method, &path, body).await
}

pub(super) async fn connection(
    server: Server,
    command: ConnectionCommand,
) -> anyhow::Result<ExitCode> {
    let at = |ws: &str, name: &str| {
        format!(
            "/v1/workspaces/{}/connections/{}",
            segment(ws),
            segment(name)
        )
    };
    let (method, path, body) = match command {
        ConnectionCommand::Set(set) => {
            let path = at(&set.workspace, &set.name);
            ("PUT", path, Some(set.body()?))
        }
        ConnectionCommand::Get { workspace, name } => ("GET", at(&workspace, &name), None),
        ConnectionCommand::List { workspace } => (
            "GET",
            format!("/v1/workspaces/{}/connections", segment(&workspace)),
            None,
        ),
        ConnectionCommand::Delete { workspace, name } => ("DELETE", at(&workspace, &name), None),
        ConnectionCommand::Credential { command } => match command {
            CredentialCommand::Set {
                workspace,
                name,
                credential,
                from_env,
            } => {
                let connection = at(&workspace, &name);
                let body = credential_body(&server, &connection, &credential, &from_env).await?;
                let path = format!("{connection}/credentials/{}", segment(&credential));
                ("PUT", path, Some(body))
            }
            CredentialCommand::Remove {
                workspace,
                name,
                credential,
            } => (
                "DELETE",
                format!(
                    "{}/credentials/{}",
                    at(&workspace, &name),
                    segment(&credential)
                ),
                None,
            ),
        },
        ConnectionCommand::Record {
            workspace,
            name,
            max_invocations,
            for_minutes,
        } => (
            "PUT",
            format!("{}/recording", at(&workspace, &name)),
            Some(json!({ "max_invocations": max_invocations, "for_minutes": for_minutes })),
        ),
        ConnectionCommand::StopRecording { workspace, name } => (
            "DELETE",
            format!("{}/recording", at(&workspace, &name)),
            None,
        ),
        ConnectionCommand::Transcripts { workspace, name } => (
            "GET",
            format!("{}/transcripts", at(&workspace, &name)),
            None,
        ),
        ConnectionCommand::Transcript {
            workspace,
            name,
            id,
        } => (
            "GET",
            format!("{}/transcripts/{}", at(&workspace, &name), segment(&id)),
            None,
        ),
        ConnectionCommand::Invoke {
            workspace,
            name,
            operation,
            input,
        } => (
            "POST",
            format!(
                "{}/operations/{}",
                at(&workspace, &name),
                segment(&operation)
            ),
            Some(json!({ "input": parse_json("--input", &input)? })),
        ),
    };
    call(&server, method, &path, body).await
}

impl SetConnection {
    /// The `PUT` body: settings from `--config-json` then each `--config`,
    /// the grants, and the optional limits and upgrade approval.
    fn body(self) -> anyhow::Result<Value> {
        let mut settings = match self.config_json {
            Some(text) => match parse_json("--config-json", &text)? {
                Value::Object(map) => map,
                _ => bail!("--config-json must be a JSON object"),
            },
            None => serde_json::Map::new(),
        };
        for pair in self.config {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    settings.insert(k.trim().to_owned(), Value::String(v.to_owned()));
                }
                _ => bail!("--config {pair:?}: expected KEY=VALUE"),
            }
        }
        let grants = match (self.approve_all, self.grants) {
            (true, _) => json!({ "approve_all_requested": true }),
            (false, Some(text)) => parse_json("--grants", &text)?,
            (false, None) => json!({}),
        };
        let mut body = json!({
            "plugin": self.plugin,
            "version": self.version,
            "config": settings,
            "grants": grants,
            "enabled": !self.disabled,
        });
        if let Some(text) = self.limits {
            body["limits"] = parse_json("--limits", &text)?;
        }
        if let Some(text) = self.approve_upgrade {
            body["approve_upgrade"] = parse_json("--approve-upgrade", &text)?;
        }
        Ok(body)
    }
}

/// A credential's `PUT` body from the variable `from_env`, read as the kind
/// the connection's plugin declares for `credential`.
async fn credential_body(
    server: &Server,
    connection: &str,
    credential: &str,
    from_env: &str,
) -> anyhow::Result<Value> {
    let value = std::env::var(from_env)
        .with_context(|| format!("--from-env {from_env}: the variable is not set"))?;
    let shown = fetch(server, connection).await?;
    let kind = shown["credentials"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == credential))
        .map(|c| c["kind"].clone())
        .with_context(|| {
            format!(
                "connection {:?} declares no credential {credential:?}",
                shown["name"].as_str().unwrap_or_default()
            )
        })?;
    let kind = serde_json::from_value(kind).context("the credential's kind")?;
    let secret = patchbay_egress::credentials::Secret::from_text(kind, value)
        .map_err(|e| anyhow::anyhow!("--from-env {from_env} {e}"))?;
    serde_json::to_value(&secret).context("the credential")
}

/// JSON given with `--json`, or read from `--file` (`-`: standard input).
#[derive(Debug, clap::Args)]
pub(super) struct JsonInput {
    /// A file holding it (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    file: Option<std::path::PathBuf>,
    /// The JSON itself.
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
}

impl JsonInput {
    /// The JSON, parsed; `what` names it in errors.
    pub(super) fn read(self, what: &str) -> anyhow::Result<Value> {
        let text = match (self.file, self.json) {
            (_, Some(text)) => text,
            (Some(path), None) if path.as_os_str() == "-" => {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            }
            (Some(path), None) => std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
            (None, None) => bail!("give {what} with --file FILE or --json JSON"),
        };
        parse_json(what, &text)
    }
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

/// A path segment, percent-encoded: whatever was typed stays one segment
/// (the server then refuses what is not a valid name).
pub(super) fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `GET path`'s answer, or an error naming what the server said.
async fn fetch(server: &Server, path: &str) -> anyhow::Result<Value> {
    let (status, answer) = send(server, "GET", path, None).await?;
    if !status.is_success() {
        bail!(
            "{} {}: {}",
            status.as_u16(),
            answer["code"].as_str().unwrap_or("error"),
            answer["message"].as_str().unwrap_or_default()
        );
    }
    Ok(answer)
}

/// One API call: the answer's JSON on stdout, or its error on stderr and a
/// failing exit.
pub(super) async fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let (status, answer) = send(server, method, path, body).await?;
    if status.is_success() {
        if !answer.is_null() {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let code = answer["code"].as_str().unwrap_or("error");
    let message = answer["message"].as_str().unwrap_or_default();
    eprintln!("error: {} {code}: {message}", status.as_u16());
    if let Some(details) = answer["details"].as_array() {
        for detail in details {
            eprintln!("  - {}", detail.as_str().unwrap_or_default());
        }
    }
    if !answer["diff"].is_null() {
        eprintln!("diff (approve with --approve-upgrade):\n{}", answer["diff"]);
    }
    Ok(ExitCode::FAILURE)
}

/// Send one request; the status and the answer's JSON (null when empty).
async fn send(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let token = server.token()?;
    let tls = patchbay_egress::tls_config().context("tls configuration")?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("building the http client")?;
    let url = server
        .url
        .join(path.trim_start_matches('/'))
        .with_context(|| format!("--server {} with {path}", server.url))?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).context("method")?;
    let mut request = client.request(method, url.clone()).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {url} (is patchbay serve running there?)"))?;
    let status = response.status();
    let bytes = response.bytes().await.context("reading the answer")?;
    let answer: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, answer))
}

#[derive(Debug, Subcommand)]
pub(super) enum LookupCommand {
    /// Create or replace a lookup from its JSON definition.
    Put {
        workspace: String,
        name: String,
        #[command(flatten)]
        definition: JsonInput,
    },
    Get {
        workspace: String,
        name: String,
    },
    List {
        workspace: String,
    },
    Delete {
        workspace: String,
        name: String,
    },
    /// Look a caller up: the record as the token's profile may see it.
    Run {
        workspace: String,
        name: String,
        /// The caller's number, in any common form.
        #[arg(long)]
        phone: String,
        #[arg(long)]
        email: Option<String>,
        /// Region (e.g. US) for a number without a country code.
        #[arg(long)]
        region: Option<String>,
        /// A profile below the token's, to see less.
        #[arg(long)]
        profile: Option<String>,
    },
    /// The workspace's trail of lookup runs, oldest first, one page.
    Runs {
        workspace: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Drop the results kept for a caller.
    Forget {
        workspace: String,
        name: String,
        /// The caller's number.
        phone: String,
        #[arg(long)]
        region: Option<String>,
    },
}

/// Which page of a trail: a time window, a cursor, a size.
#[derive(Debug, clap::Args)]
pub(super) struct PageArgs {
    /// From this time (ms since the Unix epoch).
    #[arg(long)]
    from: Option<u64>,
    /// Before this time (ms since the Unix epoch).
    #[arg(long)]
    to: Option<u64>,
    /// The `next` cursor of the previous page.
    #[arg(long)]
    after: Option<String>,
    /// Records per page (1-1000; the server's default is 100).
    #[arg(long)]
    limit: Option<usize>,
}

impl PageArgs {
    /// `path` with the page's query.
    fn on(&self, path: String) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("from", self.from.map(|v| v.to_string())),
            ("to", self.to.map(|v| v.to_string())),
            ("after", self.after.clone()),
            ("limit", self.limit.map(|v| v.to_string())),
        ] {
            if let Some(value) = value {
                query.append_pair(key, &value);
            }
        }
        let query = query.finish();
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }
}

/// `patchbay lookup …`: one API call each.
pub(super) async fn lookup(server: Server, command: LookupCommand) -> anyhow::Result<ExitCode> {
    let at =
        |ws: &str, name: &str| format!("/v1/workspaces/{}/lookups/{}", segment(ws), segment(name));
    let (method, path, body) = match command {
        LookupCommand::Put {
            workspace,
            name,
            definition,
        } => (
            "PUT",
            at(&workspace, &name),
            Some(definition.read("the definition")?),
        ),
        LookupCommand::Get { workspace, name } => ("GET", at(&workspace, &name), None),
        LookupCommand::List { workspace } => (
            "GET",
            format!("/v1/workspaces/{}/lookups", segment(&workspace)),
            None,
        ),
        LookupCommand::Delete { workspace, name } => ("DELETE", at(&workspace, &name), None),
        LookupCommand::Run {
            workspace,
            name,
            phone,
            email,
            region,
            profile,
        } => {
            let mut body = json!({ "phone": phone });
            for (key, value) in [
                ("email", email),
                ("default_region", region),
                ("profile", profile),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            ("POST", format!("{}/run", at(&workspace, &name)), Some(body))
        }
        LookupCommand::Runs { workspace, page } => (
            "GET",
            page.on(format!(
                "/v1/workspaces/{}/lookup-runs",
                segment(&workspace)
            )),
            None,
        ),
        LookupCommand::Forget {
            workspace,
            name,
            phone,
            region,
        } => {
            let mut path = format!("{}/cache/{}", at(&workspace, &name), segment(&phone));
            if let Some(region) = region {
                path.push_str(&format!("?default_region={}", segment(&region)));
            }
            ("DELETE", path, None)
        }
    };
    call(&server, method, &path, body).await
}
