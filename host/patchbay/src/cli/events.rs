//! `patchbay events …`, `patchbay subscription …`, `patchbay dead-letter …`:
//! the event flow on a running server, one API call each.

use super::remote::{JsonInput, Server, call, segment};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(super) enum EventsCommand {
    /// Send one event, or a JSON array of up to 500: printed back with each
    /// id, whether it was a duplicate, and the deliveries made.
    Publish {
        workspace: String,
        #[command(flatten)]
        events: JsonInput,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum SubscriptionCommand {
    /// Create or replace a subscription from its JSON definition.
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
}

/// Which dead letters.
#[derive(Debug, Default, clap::Args)]
pub(super) struct DeadFilterArgs {
    /// Only this subscription's.
    #[arg(long)]
    subscription: Option<String>,
    /// Only those whose last error had this code (`upstream`, `not-found`…).
    #[arg(long)]
    code: Option<String>,
    /// Dead-lettered at or after this time (ms since the Unix epoch).
    #[arg(long)]
    since: Option<u64>,
    /// Dead-lettered before this time (ms since the Unix epoch).
    #[arg(long)]
    until: Option<u64>,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum DeadLetterCommand {
    /// Dead letters, oldest first, one page.
    List {
        workspace: String,
        #[command(flatten)]
        filter: DeadFilterArgs,
        /// The `next` cursor of the previous page.
        #[arg(long)]
        after: Option<String>,
        /// Per page (1-1000; the server's default is 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One dead letter: its event and every attempt.
    Show { workspace: String, id: String },
    /// Put one dead letter (by id) or up to 1000 matching back in their queues.
    Replay {
        workspace: String,
        /// One dead letter; without it, those the filter matches.
        id: Option<String>,
        #[command(flatten)]
        filter: DeadFilterArgs,
    },
    /// Remove one dead letter (by id) or up to 1000 matching, for good.
    Purge {
        workspace: String,
        id: Option<String>,
        #[command(flatten)]
        filter: DeadFilterArgs,
    },
    /// The workspace's dead-letter alert: a signed POST to `--url` when
    /// its dead letters reach `--threshold`.
    #[command(subcommand)]
    Alert(AlertCommand),
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum AlertCommand {
    /// Set it; without `--secret` one is made and printed, once.
    Set {
        workspace: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        threshold: u64,
        /// The signing secret (`whsec_…`).
        #[arg(long)]
        secret: Option<String>,
    },
    /// Show it (never its secret), the dead letters now, and whether it is raised.
    Show { workspace: String },
    /// Remove it.
    Delete { workspace: String },
}

impl DeadFilterArgs {
    fn is_empty(&self) -> bool {
        self.subscription.is_none()
            && self.code.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// `path` with the filter (and `extra` pairs) as its query.
    fn on(&self, path: String, extra: &[(&str, Option<String>)]) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let pairs = [
            ("subscription", self.subscription.clone()),
            ("code", self.code.clone()),
            ("since", self.since.map(|v| v.to_string())),
            ("until", self.until.map(|v| v.to_string())),
        ];
        for (key, value) in pairs.iter().chain(extra) {
            if let Some(value) = value {
                query.append_pair(key, value);
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

fn under(workspace: &str, rest: &str) -> String {
    format!("/v1/workspaces/{}/{rest}", segment(workspace))
}

pub(super) async fn events(server: Server, command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Publish { workspace, events } => {
            let body = events.read("the event(s)")?;
            call(&server, "POST", &under(&workspace, "events"), Some(body)).await
        }
    }
}

pub(super) async fn subscription(
    server: Server,
    command: SubscriptionCommand,
) -> anyhow::Result<ExitCode> {
    let at = |ws: &str, name: &str| under(ws, &format!("subscriptions/{}", segment(name)));
    let (method, path, body) = match command {
        SubscriptionCommand::Put {
            workspace,
            name,
            definition,
        } => (
            "PUT",
            at(&workspace, &name),
            Some(definition.read("the definition")?),
        ),
        SubscriptionCommand::Get { workspace, name } => ("GET", at(&workspace, &name), None),
        SubscriptionCommand::List { workspace } => {
            ("GET", under(&workspace, "subscriptions"), None)
        }
        SubscriptionCommand::Delete { workspace, name } => ("DELETE", at(&workspace, &name), None),
    };
    call(&server, method, &path, body).await
}

pub(super) async fn dead_letter(
    server: Server,
    command: DeadLetterCommand,
) -> anyhow::Result<ExitCode> {
    let one = |ws: &str, id: &str| under(ws, &format!("dead-letters/{}", segment(id)));
    let alert = |ws: &str| under(ws, "dead-letter-alert");
    let (method, path) = match command {
        DeadLetterCommand::Alert(AlertCommand::Set {
            workspace,
            url,
            threshold,
            secret,
        }) => {
            let mut body = serde_json::json!({ "url": url, "threshold": threshold });
            if let Some(secret) = secret {
                body["secret"] = secret.into();
            }
            return call(&server, "PUT", &alert(&workspace), Some(body)).await;
        }
        DeadLetterCommand::Alert(AlertCommand::Show { workspace }) => ("GET", alert(&workspace)),
        DeadLetterCommand::Alert(AlertCommand::Delete { workspace }) => {
            ("DELETE", alert(&workspace))
        }
        DeadLetterCommand::List {
            workspace,
            filter,
            after,
            limit,
        } => (
            "GET",
            filter.on(
                under(&workspace, "dead-letters"),
                &[("after", after), ("limit", limit.map(|l| l.to_string()))],
            ),
        ),
        DeadLetterCommand::Show { workspace, id } => ("GET", one(&workspace, &id)),
        DeadLetterCommand::Replay {
            workspace,
            id,
            filter,
        } => match id {
            Some(id) if filter.is_empty() => ("POST", format!("{}/replay", one(&workspace, &id))),
            Some(_) => anyhow::bail!("give an id or a filter, not both"),
            None => (
                "POST",
                filter.on(under(&workspace, "dead-letters/replay"), &[]),
            ),
        },
        DeadLetterCommand::Purge {
            workspace,
            id,
            filter,
        } => match id {
            Some(id) if filter.is_empty() => ("DELETE", one(&workspace, &id)),
            Some(_) => anyhow::bail!("give an id or a filter, not both"),
            None if filter.is_empty() => anyhow::bail!(
                "purging every dead letter takes a filter (--subscription, --code, --since or --until)"
            ),
            None => ("DELETE", filter.on(under(&workspace, "dead-letters"), &[])),
        },
    };
    call(&server, method, &path, None).await
}
