//! Webhooks in: `POST /v1/hooks/{workspace}/{connection}`.
//!
//! A webhook is verified before anything trusts it: by the host with the
//! Standard Webhooks scheme, or by the plugin's `verify-webhook` export for
//! a vendor's own scheme (the secret stays with the host; see
//! `patchbay:connector/signing`). A genuine one becomes zero or more events
//! that enter the workspace's event flow exactly as published ones do, in
//! one transaction with the webhook's id, so a resent webhook creates
//! nothing. Anything untrusted (an unknown connection, a plugin that takes
//! no webhooks, a secret not set, a bad signature) is one refusal, so the
//! sender learns nothing about which it was; the reason goes to the log.

use crate::{Events, EventsError, blocking};
use patchbay_egress::credentials::CredentialError;
use patchbay_policy::delivery::WebhookPolicy;
use patchbay_policy::manifest::WebhookVerify;
use patchbay_policy::webhook::{self as standard, Headers};
use patchbay_runtime::bindings::{VerifiedWebhook, WebhookEvent, WebhookRequest};
use patchbay_runtime::error::{InvokeError, PluginFailure};
use patchbay_storage::outbox::Accepted;
use patchbay_tenancy::invoke::{Bound, InvocationError};
use patchbay_tenancy::service::TenancyError;
use serde::Serialize;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};

/// A webhook as it arrived.
#[derive(Debug, Clone)]
pub struct IncomingWebhook {
    /// Header names in lowercase, values as sent (values that are not
    /// UTF-8 are left out: no scheme signs with them).
    pub headers: Vec<(String, String)>,
    /// The raw body, never re-serialised: a signature covers these bytes.
    pub body: Vec<u8>,
}

impl IncomingWebhook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection that takes webhooks, found before a body is read.
pub struct WebhookTarget {
    workspace: String,
    connection: String,
    bound: std::sync::Arc<Bound>,
    spec: patchbay_policy::manifest::WebhookSpec,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("workspace", &self.workspace)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// A webhook taken in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Received {
    /// The sender's id for it, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// Whether its id was taken before (within the dedupe window): nothing
    /// new was created.
    pub duplicate: bool,
    /// The events it became (none for a duplicate).
    pub events: Vec<Accepted>,
}

/// Why a webhook was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Not trusted: the sender gets a bare 401. The reason is for the log only.
    #[error("refused: {0}")]
    Refused(String),
    /// Genuine, but what it maps to is not events: each problem (422).
    #[error("{}", .0.join("; "))]
    InvalidEvents(Vec<String>),
    /// It cannot be verified now (the host is busy, the plugin ran out of
    /// time): 503, so the sender tries again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The connection takes no more webhooks this second: 429, to be sent
    /// again after this long.
    #[error("too many webhooks; retry after {0:?}")]
    TooMany(std::time::Duration),
    /// The plugin failed, or the store did: 500, so the sender tries again.
    #[error("failed: {0}")]
    Failed(String),
}

impl WebhookError {
    /// A short word for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::InvalidEvents(_) => "invalid",
            Self::Unavailable(_) => "unavailable",
            Self::TooMany(_) => "limited",
            Self::Failed(_) => "failed",
        }
    }
}

impl From<EventsError> for WebhookError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::InvalidBody(p) | EventsError::InvalidEvents(p) => Self::InvalidEvents(p),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl Events {
    /// The operator's webhook settings.
    pub fn webhook_policy(&self) -> WebhookPolicy {
        self.settings.webhooks
    }

    /// Where a webhook to `workspace`'s `connection` would go: refused (or
    /// held to the connection's rate) before its body is read, so a sender
    /// without a target costs the host a lookup, never a body's memory.
    pub async fn webhook_target(
        &self,
        workspace: &str,
        connection: &str,
    ) -> Result<WebhookTarget, WebhookError> {
        let result = self.find_target(workspace, connection).await;
        if let Err(error) = &result {
            self.count_webhook(workspace, connection, Err(error));
        }
        result
    }

    async fn find_target(
        &self,
        workspace: &str,
        connection: &str,
    ) -> Result<WebhookTarget, WebhookError> {
        if !self.settings.webhooks.enabled {
            return Err(WebhookError::Refused(
                "webhooks are turned off by operator policy".into(),
            ));
        }
        let bound = match self.tenancy.bound(workspace, connection).await {
            Ok(bound) => bound,
            Err(InvocationError::Tenancy(TenancyError::Storage(e))) => {
                return Err(WebhookError::Failed(e));
            }
            Err(InvocationError::Tenancy(e)) => return Err(WebhookError::Refused(e.to_string())),
            Err(InvocationError::Disabled(_)) => {
                return Err(WebhookError::Refused("the connection is disabled".into()));
            }
            Err(e) => return Err(WebhookError::Failed(e.to_string())),
        };
        let Some(spec) = bound.plugin.manifest.webhook.clone() else {
            return Err(WebhookError::Refused(format!(
                "plugin {} takes no webhooks",
                bound.plugin.manifest.id
            )));
        };
        // Only for connections that take webhooks: a sender's made-up names
        // never become keys.
        if let Err(wait) = self.webhook_rate.check(workspace, connection) {
            return Err(WebhookError::TooMany(wait));
        }
        Ok(WebhookTarget {
            workspace: workspace.to_owned(),
            connection: connection.to_owned(),
            bound,
            spec,
        })
    }

    /// Verify `webhook`, sent to `target`, and accept the events it becomes,
    /// with its id, on disk before this returns. Counted in the metrics by
    /// outcome; a refusal's reason is logged, never told.
    pub async fn receive_webhook(
        &self,
        target: WebhookTarget,
        webhook: IncomingWebhook,
    ) -> Result<Received, WebhookError> {
        let result = self.take_webhook(&target, webhook).await;
        self.count_webhook(&target.workspace, &target.connection, result.as_ref());
        result
    }

    fn count_webhook(
        &self,
        workspace: &str,
        connection: &str,
        result: Result<&Received, &WebhookError>,
    ) {
        let outcome = match result {
            Ok(received) if received.duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(e) => e.outcome(),
        };
        if let Err(error) = result {
            // Debug-formatted: names come from the request line.
            tracing::info!(target: "patchbay::webhooks", workspace = ?workspace,
                connection = ?connection, outcome, reason = ?error.to_string(), "webhook not taken");
        }
        let known = result.is_ok() || self.tenancy.workspace(workspace).is_ok();
        self.metrics
            .count_webhook(known.then_some(workspace), outcome);
    }

    async fn take_webhook(
        &self,
        target: &WebhookTarget,
        webhook: IncomingWebhook,
    ) -> Result<Received, WebhookError> {
        let policy = self.settings.webhooks;
        if webhook.body.len() > policy.max_body_bytes() {
            return Err(WebhookError::Refused("the body is over the limit".into()));
        }
        let (workspace, connection) = (target.workspace.as_str(), target.connection.as_str());
        let received_ms = self.now_ms();
        let verified = match target.spec.verify {
            WebhookVerify::StandardWebhooks => {
                let secret = target.spec.secret.as_deref().unwrap_or_default();
                self.verify_standard(&target.bound, secret, &webhook, received_ms)?
            }
            WebhookVerify::Plugin => {
                self.verify_by_plugin(&target.bound, webhook, received_ms)
                    .await?
            }
        };
        if verified.events.len() > policy.max_events_per_webhook as usize {
            return Err(WebhookError::InvalidEvents(vec![format!(
                "the webhook maps to {} events; at most {} are taken",
                verified.events.len(),
                policy.max_events_per_webhook
            )]));
        }
        let items = envelopes(connection, &verified, received_ms)?;
        let webhook_id = verified.webhook_id;
        let events = if items.is_empty() {
            Vec::new()
        } else {
            self.prepare(workspace, items, true).await?
        };
        let outbox = self.outbox.clone();
        let (ws, conn, id) = (
            workspace.to_owned(),
            connection.to_owned(),
            webhook_id.clone(),
        );
        let accepted = blocking(move || match &id {
            Some(id) => outbox.accept_webhook(&ws, (&conn, id), &events, received_ms),
            None => outbox.accept(&ws, &events, received_ms).map(Some),
        })
        .await?;
        Ok(match accepted {
            Some(events) => {
                self.accepted(&events);
                Received {
                    webhook_id,
                    duplicate: false,
                    events,
                }
            }
            None => Received {
                webhook_id,
                duplicate: true,
                events: Vec::new(),
            },
        })
    }

    /// The Standard Webhooks scheme, checked by the host with the
    /// connection's `secret` credential; the payload's `type`, `timestamp`
    /// and `data` make one event.
    fn verify_standard(
        &self,
        bound: &Bound,
        secret: &str,
        webhook: &IncomingWebhook,
        received_ms: u64,
    ) -> Result<VerifiedWebhook, WebhookError> {
        if !bound.binding.webhook_secrets.iter().any(|s| s == secret) {
            return Err(WebhookError::Refused(format!(
                "webhook secret {secret:?} is not approved for this connection"
            )));
        }
        let key = self
            .tenancy
            .credentials
            .with_webhook_secret(&bound.connection.scope(), secret, standard::decode_secret)
            .map_err(|e| match e {
                CredentialError::WrongKind { .. } => WebhookError::Refused(e.to_string()),
                e => WebhookError::Failed(e.to_string()),
            })?
            .ok_or_else(|| WebhookError::Refused(format!("webhook secret {secret:?} is not set")))?
            .map_err(|e| WebhookError::Refused(format!("webhook secret {secret:?}: {e}")))?;
        let headers = Headers {
            id: webhook.header("webhook-id"),
            timestamp: webhook.header("webhook-timestamp"),
            signature: webhook.header("webhook-signature"),
        };
        let id = standard::verify(&[key], headers, &webhook.body, received_ms / 1000)
            .map_err(|e| WebhookError::Refused(e.to_string()))?;
        let payload: Json = serde_json::from_slice(&webhook.body)
            .map_err(|e| WebhookError::InvalidEvents(vec![format!("the body is not JSON: {e}")]))?;
        let Some(kind) = payload.get("type").and_then(Json::as_str) else {
            return Err(WebhookError::InvalidEvents(vec![
                "type: a Standard Webhooks payload names its event type".into(),
            ]));
        };
        let data = payload
            .get("data")
            .cloned()
            .unwrap_or_else(|| payload.clone());
        let occurred_at = payload
            .get("timestamp")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .or_else(|| {
                let secs = headers.timestamp?.trim().parse::<i64>().ok()?;
                chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339())
            });
        Ok(VerifiedWebhook {
            webhook_id: Some(id.to_owned()),
            events: vec![WebhookEvent {
                id: None,
                type_: kind.to_owned(),
                subject: None,
                occurred_at,
                data: data.to_string(),
            }],
        })
    }

    /// The plugin's own scheme, through its `verify-webhook` export.
    async fn verify_by_plugin(
        &self,
        bound: &Bound,
        webhook: IncomingWebhook,
        received_ms: u64,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let request = WebhookRequest {
            headers: webhook.headers,
            body: webhook.body,
            received_at_ms: received_ms,
        };
        let outcome = self.tenancy.verify_webhook(bound, request, None).await;
        outcome.result.map_err(|error| match error {
            InvokeError::Plugin(
                PluginFailure::Unauthorized { message, .. }
                | PluginFailure::AccessDenied { message, .. },
            ) => WebhookError::Refused(format!("the plugin refused it: {message}")),
            InvokeError::Plugin(PluginFailure::InvalidInput { message, .. }) => {
                WebhookError::InvalidEvents(vec![message])
            }
            error @ (InvokeError::TooManyCalls { .. }
            | InvokeError::AtCapacity(_)
            | InvokeError::Timeout(_)) => WebhookError::Unavailable(error.to_string()),
            // Genuine, but too much for the plugin's limits: sending it
            // again would fail the same way.
            error @ (InvokeError::OutputTooLarge { .. }
            | InvokeError::InvalidOutput(_)
            | InvokeError::MemoryLimit(_)) => WebhookError::InvalidEvents(vec![error.to_string()]),
            error => WebhookError::Failed(format!("invocation {}: {error}", outcome.invocation_id)),
        })
    }
}

/// Each connection's webhook rate (`webhooks.per_connection_per_second`).
#[derive(Debug)]
pub(crate) struct WebhookRate {
    limiter: governor::DefaultKeyedRateLimiter<(String, String)>,
}

impl WebhookRate {
    pub(crate) fn new(per_second: u32) -> Self {
        let n = std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_second(n)),
        }
    }

    /// Take one of the connection's places this second, or how long until one.
    fn check(&self, workspace: &str, connection: &str) -> Result<(), std::time::Duration> {
        use governor::clock::{Clock as _, DefaultClock};
        let key = (workspace.to_owned(), connection.to_owned());
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forget connections that have been quiet for a while.
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The events of `verified` as envelopes for the event flow. An event
/// without an id gets one derived from the webhook's id and its place (the
/// same on every resend), else a fresh one; every id is prefixed by the
/// connection, so two senders never collide.
fn envelopes(
    connection: &str,
    verified: &VerifiedWebhook,
    received_ms: u64,
) -> Result<Vec<Json>, WebhookError> {
    let received_at = chrono::DateTime::from_timestamp_millis(received_ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut items = Vec::with_capacity(verified.events.len());
    for (i, event) in verified.events.iter().enumerate() {
        let data: Json = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(e) => {
                problems.push(format!("events[{i}].data: not JSON: {e}"));
                continue;
            }
        };
        let own = event.id.as_deref().map(|id| format!("{connection}:{id}"));
        let id = own.or_else(|| {
            verified
                .webhook_id
                .as_deref()
                .map(|w| derived_id(connection, w, i))
        });
        let mut envelope = json!({
            "type": event.type_,
            "source": format!("webhook:{connection}"),
            "occurred_at": event.occurred_at.clone().unwrap_or_else(|| received_at.clone()),
            "data": data,
        });
        if let Some(id) = id {
            envelope["id"] = Json::String(id);
        }
        if let Some(subject) = &event.subject {
            envelope["subject"] = Json::String(subject.clone());
        }
        items.push(envelope);
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(WebhookError::InvalidEvents(problems))
    }
}

/// `{connection}:wh_` and 32 hex digits of a digest of the webhook's id and
/// the event's place in it: stable across resends, whatever the id holds.
fn derived_id(connection: &str, webhook_id: &str, index: usize) -> String {
    let mut digest = Sha256::new();
    digest.update(connection.as_bytes());
    digest.update([0]);
    digest.update(webhook_id.as_bytes());
    digest.update([0]);
    digest.update(index.to_be_bytes());
    format!("{connection}:wh_{}", &hex::encode(digest.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(webhook_id: Option<&str>, events: Vec<(Option<&str>, &str)>) -> VerifiedWebhook {
        VerifiedWebhook {
            webhook_id: webhook_id.map(str::to_owned),
            events: events
                .into_iter()
                .map(|(id, data)| WebhookEvent {
                    id: id.map(str::to_owned),
                    type_: "case.updated".into(),
                    subject: Some("ticket:1".into()),
                    occurred_at: None,
                    data: data.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn ids_are_the_vendors_or_derived_from_the_webhook_and_stable() {
        let v = verified(
            Some("wh-1"),
            vec![(Some("E1"), "{}"), (None, "{}"), (None, "[]")],
        );
        let items = envelopes("desk", &v, 1_764_000_000_000).expect("envelopes");
        assert_eq!(items[0]["id"], "desk:E1");
        let derived = items[1]["id"].as_str().expect("id");
        assert!(derived.starts_with("desk:wh_") && derived.len() == "desk:wh_".len() + 32);
        assert_ne!(items[1]["id"], items[2]["id"], "each place its own id");
        let again = envelopes("desk", &v, 1_764_000_999_000).expect("envelopes");
        assert_eq!(items[1]["id"], again[1]["id"], "the same on a resend");
        let other = envelopes("desk-2", &v, 1_764_000_000_000).expect("envelopes");
        assert_ne!(
            items[1]["id"], other[1]["id"],
            "another connection, another id"
        );
        assert_eq!(items[0]["source"], "webhook:desk");
        assert_eq!(items[0]["subject"], "ticket:1");
        assert_eq!(items[0]["occurred_at"], "2025-11-24T16:00:00.000Z");
        let anonymous = envelopes("desk", &verified(None, vec![(None, "{}")]), 0).expect("ok");
        assert!(
            anonymous[0].get("id").is_none(),
            "left to the event flow to generate"
        );
    }

    #[test]
    fn event_data_that_is_not_json_is_named() {
        let v = verified(Some("w"), vec![(None, "{}"), (None, "{nope")]);
        match envelopes("desk", &v, 0) {
            Err(WebhookError::InvalidEvents(problems)) => {
                assert_eq!(problems.len(), 1);
                assert!(problems[0].starts_with("events[1].data"), "{problems:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
