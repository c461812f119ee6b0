//! Transforms for the event flow: the shapes contact-center platforms and
//! helpdesks send, mapped to the CRM connectors' action inputs. Each runs in
//! the sandbox like any operation, with no capability at all; the host checks
//! its input against the schema before and its output against the
//! destination's input schema after.
//!
//! `call.ended` carries the CRM's own contact ids in `data.contact_ids` (a
//! contact-center platform learns them from the caller-context lookup when
//! the call comes in), so the CRM actions never have to search again.

use patchbay_sdk::{Connector, Context, Error, Operations, export_connector};
use serde_json::{Map, Value, json};

struct CxTransforms;

impl Connector for CxTransforms {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("call-to-hubspot-log", call_to_hubspot_log);
        ops.register("call-to-salesforce-log", call_to_salesforce_log);
        ops.register("case-to-hubspot-contact", case_to_hubspot_contact);
    }
}

export_connector!(CxTransforms);

/// What both CRMs are told about a call, read from a `call.ended` event.
struct Call<'a> {
    event: &'a Value,
    data: &'a Value,
}

impl<'a> Call<'a> {
    fn new(event: &'a Value) -> Self {
        Self {
            event,
            data: &event["data"],
        }
    }

    fn text(&self, field: &str) -> Option<String> {
        self.data[field]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    fn contact_id(&self, crm: &str) -> Result<String, Error> {
        self.data["contact_ids"][crm]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid_input(format!("data.contact_ids.{crm} is missing")))
    }

    fn direction(&self) -> String {
        self.text("direction").unwrap_or_else(|| "inbound".into())
    }

    /// When the call started: `data.started_at`, else when it ended
    /// (`occurred_at`) less its duration is unknown here, so `occurred_at`.
    fn started_at(&self) -> String {
        self.text("started_at")
            .or_else(|| self.event["occurred_at"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn duration(&self) -> Option<u64> {
        self.data["duration_s"].as_u64()
    }

    /// The call's id at the contact center: `data.call_id`, else the event's id.
    fn call_id(&self) -> String {
        self.text("call_id")
            .or_else(|| self.event["id"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A one-line title: "Inbound call from +1650…" / "Outbound call to …".
    fn title(&self) -> String {
        let direction = self.direction();
        let (word, party) = if direction == "outbound" {
            ("to", self.text("to"))
        } else {
            ("from", self.text("from"))
        };
        let mut title = format!("{}{} call", direction[..1].to_uppercase(), &direction[1..]);
        if let Some(party) = party {
            title.push_str(&format!(" {word} {party}"));
        }
        title
    }
}

/// `data.outcome` in HubSpot's call statuses (`completed` unless told).
fn hubspot_status(outcome: Option<&str>) -> &'static str {
    match outcome {
        Some("no_answer" | "no-answer" | "missed" | "abandoned") => "no_answer",
        Some("busy") => "busy",
        Some("failed" | "error") => "failed",
        Some("canceled" | "cancelled") => "canceled",
        _ => "completed",
    }
}

fn call_to_hubspot_log(_ctx: &Context, event: Value) -> Result<Value, Error> {
    let call = Call::new(&event);
    let mut out = Map::new();
    out.insert("contact_id".into(), json!(call.contact_id("hubspot")?));
    out.insert("direction".into(), json!(call.direction()));
    out.insert("started_at".into(), json!(call.started_at()));
    out.insert("title".into(), json!(call.title()));
    out.insert(
        "status".into(),
        json!(hubspot_status(call.text("outcome").as_deref())),
    );
    if let Some(seconds) = call.duration() {
        out.insert("duration_seconds".into(), json!(seconds));
    }
    for (from, to) in [
        ("summary", "notes"),
        ("from", "from_number"),
        ("to", "to_number"),
    ] {
        if let Some(value) = call.text(from) {
            out.insert(to.into(), json!(value));
        }
    }
    // HubSpot takes only https recordings; anything else is left out.
    if let Some(url) = call
        .text("recording_url")
        .filter(|u| u.starts_with("https://"))
    {
        out.insert("recording_url".into(), json!(url));
    }
    Ok(Value::Object(out))
}

fn call_to_salesforce_log(_ctx: &Context, event: Value) -> Result<Value, Error> {
    let call = Call::new(&event);
    let mut out = Map::new();
    out.insert("contact_id".into(), json!(call.contact_id("salesforce")?));
    out.insert("direction".into(), json!(call.direction()));
    out.insert("started_at".into(), json!(call.started_at()));
    out.insert("subject".into(), json!(call.title()));
    // Salesforce logs a Task once per call id, whatever the retries.
    out.insert("call_id".into(), json!(call.call_id()));
    if let Some(seconds) = call.duration() {
        out.insert("duration_seconds".into(), json!(seconds));
    }
    if let Some(summary) = call.text("summary") {
        out.insert("notes".into(), json!(summary));
    }
    if let Some(outcome) = call.text("outcome") {
        out.insert("disposition".into(), json!(outcome));
    }
    Ok(Value::Object(out))
}

/// A `case.*` event as a HubSpot upsert of the requester's contact, found by
/// the external id `{source}-{requester id}`, with the latest case's id and
/// status as contact properties.
fn case_to_hubspot_contact(_ctx: &Context, event: Value) -> Result<Value, Error> {
    let data = &event["data"];
    let field = |name: &str| data[name].as_str().unwrap_or_default().to_owned();
    let source = data["source"].as_str().unwrap_or("helpdesk");
    let mut attributes = Map::new();
    attributes.insert("last_case_id".into(), json!(field("case_id")));
    if let Some(status) = data["status"].as_str() {
        attributes.insert("last_case_status".into(), json!(status));
    }
    if let Some(updated) = data["updated_at"].as_str() {
        attributes.insert("last_case_updated_at".into(), json!(updated));
    }
    Ok(json!({
        "external_id": format!("{source}-{}", field("requester_id")),
        "contact": { "attributes": attributes }
    }))
}
