//! Zendesk Support connector.
//!
//! `create-ticket` and `update-ticket` are actions made idempotent by the
//! invocation's key: creation sends Zendesk's own `Idempotency-Key`, and both
//! remember in the connection's KV which ticket a key already produced, so a
//! retried delivery answers with that ticket instead of acting twice.
//! Webhooks are verified with Zendesk's scheme (base64 HMAC-SHA256 of the
//! signature timestamp followed by the body) through the host, which holds
//! the signing secret, and ticket events become `case.*` events. The API
//! token is added by the host; this code never sees a secret. Sources are in
//! this crate's README.

use patchbay_sdk::http::{Method, Request, Response};
use patchbay_sdk::webhooks::{self, Algorithm, Event, Verified, WebhookRequest};
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector, kv};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Duration;

const SOURCE: &str = "zendesk";
const DEFAULT_TIMEOUT_MS: u64 = 5000;
const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// The `webhook_secret` credential the manifest declares.
const SIGNING_SECRET: &str = "webhook_signing_secret";
/// How long a key's ticket is remembered: longer than any retry policy runs.
const KEY_TTL_MS: u64 = 30 * 24 * 3_600_000;

struct Zendesk;

impl Connector for Zendesk {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("create-ticket", create_ticket);
        ops.register("update-ticket", update_ticket);
    }

    fn webhook(_ctx: &Context, request: &WebhookRequest) -> Result<Verified, Error> {
        verify_webhook(request)
    }
}

export_connector!(Zendesk);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    subject: String,
    comment: String,
    public: Option<bool>,
    requester: Option<Requester>,
    requester_id: Option<String>,
    priority: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    external_id: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Requester {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInput {
    ticket_id: String,
    status: Option<String>,
    priority: Option<String>,
    comment: Option<String>,
    public: Option<bool>,
    #[serde(default)]
    add_tags: Vec<String>,
}

/// What both actions answer.
#[derive(Serialize, Deserialize)]
struct TicketRef {
    id: String,
    source: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// Zendesk's `{"ticket": {...}}` envelope, with the fields read here.
#[derive(Deserialize)]
struct TicketEnvelope {
    ticket: Ticket,
}

#[derive(Deserialize)]
struct Ticket {
    id: u64,
    status: String,
    url: Option<String>,
}

impl From<Ticket> for TicketRef {
    fn from(t: Ticket) -> Self {
        Self {
            id: t.id.to_string(),
            source: SOURCE.into(),
            status: t.status,
            url: t.url,
        }
    }
}

struct Api {
    base_url: String,
    timeout: Duration,
}

impl Api {
    fn from_config() -> Result<Self, Error> {
        let base_url = config::get("base_url")?
            .ok_or_else(|| Error::invalid_input("the connection has no base_url"))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(config::parsed_or(
                "request_timeout_ms",
                DEFAULT_TIMEOUT_MS,
            )?),
        })
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Result<TicketRef, Error> {
        let mut request = Request::new(method, format!("{}{path}", self.base_url))
            .header("accept", "application/json")
            .timeout(self.timeout)
            .json(body)?;
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let envelope: TicketEnvelope = checked(request.send()?)?.json()?;
        Ok(envelope.ticket.into())
    }
}

/// The ticket an earlier call with this key made, if one did.
fn remembered(operation: &str, key: Option<&str>) -> Result<Option<TicketRef>, Error> {
    let Some(key) = key else { return Ok(None) };
    match kv::get(&format!("{operation}:{key}"))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("a remembered ticket does not read: {e}"))),
        None => Ok(None),
    }
}

fn remember(operation: &str, key: Option<&str>, ticket: &TicketRef) -> Result<(), Error> {
    if let Some(key) = key {
        let value = serde_json::to_vec(ticket).map_err(|e| Error::internal(e.to_string()))?;
        kv::set(&format!("{operation}:{key}"), &value, Some(KEY_TTL_MS))?;
    }
    Ok(())
}

fn create_ticket(ctx: &Context, input: CreateInput) -> Result<TicketRef, Error> {
    let key = ctx.idempotency_key();
    if let Some(done) = remembered("create", key)? {
        return Ok(done);
    }
    let mut ticket = Map::new();
    ticket.insert("subject".into(), json!(input.subject));
    ticket.insert(
        "comment".into(),
        json!({ "body": input.comment, "public": input.public.unwrap_or(true) }),
    );
    if let Some(requester) = input.requester {
        ticket.insert("requester".into(), json!(requester));
    }
    if let Some(id) = input.requester_id {
        ticket.insert("requester_id".into(), json!(numeric(&id)?));
    }
    for (field, value) in [
        ("priority", input.priority),
        ("type", input.kind),
        ("external_id", input.external_id),
    ] {
        if let Some(value) = value {
            ticket.insert(field.into(), json!(value));
        }
    }
    if !input.tags.is_empty() {
        ticket.insert("tags".into(), json!(input.tags));
    }
    let api = Api::from_config()?;
    let created = api.send(
        Method::Post,
        "/api/v2/tickets",
        &json!({ "ticket": ticket }),
        key,
    )?;
    remember("create", key, &created)?;
    Ok(created)
}

fn update_ticket(ctx: &Context, input: UpdateInput) -> Result<TicketRef, Error> {
    let key = ctx.idempotency_key();
    if let Some(done) = remembered("update", key)? {
        return Ok(done);
    }
    let id = numeric(&input.ticket_id)?;
    let mut ticket = Map::new();
    for (field, value) in [("status", input.status), ("priority", input.priority)] {
        if let Some(value) = value {
            ticket.insert(field.into(), json!(value));
        }
    }
    if let Some(body) = input.comment {
        ticket.insert(
            "comment".into(),
            json!({ "body": body, "public": input.public.unwrap_or(false) }),
        );
    }
    if !input.add_tags.is_empty() {
        ticket.insert("additional_tags".into(), json!(input.add_tags));
    }
    let api = Api::from_config()?;
    // Zendesk takes no idempotency key on updates: the KV record is what
    // keeps a retried update from commenting twice.
    let updated = api.send(
        Method::Put,
        &format!("/api/v2/tickets/{id}"),
        &json!({ "ticket": ticket }),
        None,
    )?;
    remember("update", key, &updated)?;
    Ok(updated)
}

/// Zendesk ids are numbers: anything else would change the path.
fn numeric(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::invalid_input(format!("{id:?} is not a Zendesk id")))
}

/// Zendesk's errors mapped: `{"error": "RecordNotFound", "description": …}`
/// and `{"error": "RecordInvalid", "details": {…}}`; a 429's `Retry-After` is
/// honoured by the SDK.
fn checked(response: Response) -> Result<Response, Error> {
    if response.status() == 422 || response.status() == 400 {
        let detail = zendesk_error(&response).unwrap_or_default();
        return Err(Error::invalid_input(format!(
            "Zendesk refused the request ({}): {detail}",
            response.status()
        )));
    }
    response.error_for_status_with(zendesk_error)
}

fn zendesk_error(response: &Response) -> Option<String> {
    let body: Value = response.json().ok()?;
    let error = match &body["error"] {
        Value::String(s) => Some(s.clone()),
        // OAuth-style and some older endpoints nest it.
        Value::Object(o) => o.get("title").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let mut text = [error, body["description"].as_str().map(str::to_owned)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(details) = body["details"].as_object() {
        let described: Vec<String> = details
            .iter()
            .flat_map(|(field, problems)| {
                problems
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["description"].as_str())
                    .map(move |d| format!("{field}: {d}"))
            })
            .collect();
        if !described.is_empty() {
            text.push_str(&format!(" ({})", described.join("; ")));
        }
    }
    (!text.is_empty()).then_some(text)
}

/// Verify a Zendesk webhook and map a ticket event to a `case.*` event.
fn verify_webhook(request: &WebhookRequest) -> Result<Verified, Error> {
    let signature = request
        .header("x-zendesk-webhook-signature")
        .ok_or_else(|| Error::unauthorized("no X-Zendesk-Webhook-Signature header"))?;
    let timestamp = request
        .header("x-zendesk-webhook-signature-timestamp")
        .ok_or_else(|| Error::unauthorized("no X-Zendesk-Webhook-Signature-Timestamp header"))?;
    let signature = webhooks::base64_decode(signature)
        .ok_or_else(|| Error::unauthorized("the signature is not base64"))?;
    // Zendesk's webhook guide signs the timestamp followed by the body; the
    // worked example of its event-connector guide signs the body followed by
    // the timestamp. Either, with the secret, proves the sender.
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(request.body());
    let mut genuine =
        webhooks::verify_hmac(SIGNING_SECRET, Algorithm::Sha256, &message, &signature)?;
    if !genuine {
        let mut reversed = request.body().to_vec();
        reversed.extend_from_slice(timestamp.as_bytes());
        genuine = webhooks::verify_hmac(SIGNING_SECRET, Algorithm::Sha256, &reversed, &signature)?;
    }
    if !genuine {
        return Err(Error::unauthorized("the signature does not match"));
    }
    // Checked after the signature, so a forged timestamp is never trusted.
    let signed_at = rfc3339_secs(timestamp)
        .ok_or_else(|| Error::unauthorized("the signature timestamp is not an RFC 3339 time"))?;
    let now = (request.received_at_ms() / 1000) as i64;
    let tolerance: u64 = config::parsed_or("signature_tolerance_secs", DEFAULT_TOLERANCE_SECS)?;
    if now.abs_diff(signed_at) > tolerance {
        return Err(Error::unauthorized(
            "the signature timestamp is outside the window",
        ));
    }
    let payload: Value = request.json()?;
    // An event webhook's payload has its event id; a trigger's custom body
    // may not, and then the signature is its id: unlike the unsigned
    // invocation-id header, a replay cannot change it.
    let signature_id: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    let webhook_id = payload["id"].as_str().unwrap_or(&signature_id);
    let mut verified = Verified::new(Some(webhook_id));
    if let Some(event) = case_event(&payload)? {
        verified = verified.with(event);
    }
    Ok(verified)
}

/// A `zen:event-type:ticket.*` event, or a trigger's `{"ticket": {…}}`
/// body, as `case.created`, `case.updated` or `case.deleted`; `None` for
/// other Zendesk events (users, organisations…).
fn case_event(payload: &Value) -> Result<Option<Event>, Error> {
    let ticket_id = &payload["ticket"]["id"];
    if payload["type"].is_null() && (ticket_id.is_string() || ticket_id.is_number()) {
        return trigger_event(payload).map(Some);
    }
    let Some(kind) = payload["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("zen:event-type:ticket."))
    else {
        return Ok(None);
    };
    let case_type = match kind {
        "created" => "case.created",
        "soft_deleted" | "permanently_deleted" => "case.deleted",
        _ => "case.updated",
    };
    let detail = &payload["detail"];
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        _ => None,
    };
    let mut data = Map::new();
    data.insert("source".into(), json!(SOURCE));
    data.insert("change".into(), json!(kind));
    for field in [
        "id",
        "subject",
        "requester_id",
        "assignee_id",
        "group_id",
        "organization_id",
        "external_id",
        "created_at",
        "updated_at",
    ] {
        if let Some(value) = text(&detail[field]) {
            let name = if field == "id" { "case_id" } else { field };
            data.insert(name.into(), value);
        }
    }
    // Zendesk writes these in capitals in events (OPEN, LOW); canonical is lowercase.
    for field in ["status", "priority", "type"] {
        if let Some(value) = detail[field].as_str().filter(|v| !v.is_empty()) {
            data.insert(field.into(), json!(value.to_lowercase()));
        }
    }
    if let Some(tags) = detail["tags"].as_array() {
        data.insert("tags".into(), json!(tags));
    }
    if !payload["event"].is_null() {
        data.insert("event".into(), payload["event"].clone());
    }
    let mut event = Event::new(case_type, &data)?;
    if let Some(id) = payload["id"].as_str() {
        event = event.id(id);
    }
    if let Some(subject) = payload["subject"].as_str() {
        event = event.subject(subject);
    }
    if let Some(time) = payload["time"].as_str() {
        event = event.occurred_at(time);
    }
    Ok(Some(event))
}

/// A trigger's webhook body, as this crate's README suggests writing it with
/// Zendesk's placeholders: `{"event": "created" | "updated" | "deleted",
/// "ticket": {"id", "subject", "status", "priority", "requester_id",
/// "updated_at"}}`.
fn trigger_event(payload: &Value) -> Result<Event, Error> {
    let ticket = &payload["ticket"];
    let case_type = match payload["event"].as_str() {
        Some("created") => "case.created",
        Some("deleted") => "case.deleted",
        _ => "case.updated",
    };
    let text = |v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() && s != "-" => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut data = Map::new();
    data.insert("source".into(), json!(SOURCE));
    data.insert("change".into(), json!("trigger"));
    for (from, to) in [
        ("id", "case_id"),
        ("subject", "subject"),
        ("requester_id", "requester_id"),
        ("assignee_id", "assignee_id"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
    ] {
        if let Some(value) = text(&ticket[from]) {
            data.insert(to.into(), json!(value));
        }
    }
    // Placeholders render display names (Open, High); canonical is lowercase.
    for field in ["status", "priority", "type"] {
        if let Some(value) = text(&ticket[field]) {
            data.insert(field.into(), json!(value.to_lowercase()));
        }
    }
    let mut event = Event::new(case_type, &data)?;
    if let Some(id) = text(&ticket["id"]) {
        event = event.subject(&format!("zen:ticket:{id}"));
    }
    Ok(event)
}

/// Seconds since the Unix epoch of an RFC 3339 time in UTC (`Z`) or with an
/// offset, fractions ignored.
fn rfc3339_secs(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    if !text.is_ascii() {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}
