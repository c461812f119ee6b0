//! HubSpot CRM connector (CRM API v3).
//!
//! `find-contact` looks a caller up by phone or email, `upsert-contact`
//! creates or updates the contact holding the tenant's external id in one
//! atomic request, and `log-call` records a call engagement on a contact. The
//! private-app token is injected by the host; this code never sees it.
//! Sources are in this crate's README.

use patchbay_sdk::cx::{Contact, LoggedInteraction, UpsertedContact};
use patchbay_sdk::http::{Method, Request, Response};
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SOURCE: &str = "hubspot";
const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
const DEFAULT_TIMEOUT_MS: u64 = 3000;
const DEFAULT_EXTERNAL_ID_PROPERTY: &str = "external_id";
const CONTACTS: &str = "/crm/v3/objects/contacts";
const PROPERTIES: [&str; 7] = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "company",
    "lastmodifieddate",
];
/// HubSpot-defined association type of a call to a contact.
const CALL_TO_CONTACT: u32 = 194;

struct HubSpot;

impl Connector for HubSpot {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("find-contact", find_contact);
        ops.register("upsert-contact", upsert_contact);
        ops.register("log-call", log_call);
    }
}

export_connector!(HubSpot);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindContact {
    phone: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertInput {
    external_id: String,
    contact: ContactFields,
}

/// The canonical fields a caller may set, plus HubSpot properties by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactFields {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogCall {
    contact_id: String,
    direction: Direction,
    started_at: String,
    duration_seconds: Option<u64>,
    title: Option<String>,
    notes: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    status: Option<String>,
    recording_url: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Inbound,
    Outbound,
}

#[derive(Deserialize)]
struct SearchResponse {
    results: Vec<HubSpotObject>,
}

/// The batch upsert's answer: the records written, each saying whether it
/// is new, and (with a 207) the inputs refused.
#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    results: Vec<UpsertResult>,
    #[serde(default)]
    errors: Vec<BatchError>,
}

#[derive(Deserialize)]
struct UpsertResult {
    #[serde(flatten)]
    object: HubSpotObject,
    #[serde(default)]
    new: bool,
}

/// One refused input of a batch: HubSpot's error envelope.
#[derive(Deserialize)]
struct BatchError {
    category: Option<String>,
    message: Option<String>,
}

/// HubSpot's SimplePublicObject: property values are strings or null.
#[derive(Deserialize)]
struct HubSpotObject {
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, Option<String>>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
}

struct Api {
    base_url: String,
    timeout: Duration,
}

impl Api {
    fn from_config() -> Result<Self, Error> {
        Ok(Self {
            base_url: config::base_url_or("base_url", DEFAULT_BASE_URL)?,
            timeout: Duration::from_millis(config::parsed_or(
                "request_timeout_ms",
                DEFAULT_TIMEOUT_MS,
            )?),
        })
    }

    /// `method path` with a JSON `body`, HubSpot's errors mapped, the answer decoded.
    fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<T, Error> {
        checked(self.send_raw(method, path, body)?)?.json()
    }

    /// Contact `id` with only `property` read.
    fn property_of(&self, id: &str, property: &str) -> Result<Option<String>, Error> {
        let response = Request::get(format!("{}{CONTACTS}/{}", self.base_url, numeric_id(id)?))
            .query(&[("properties", property)])
            .header("accept", "application/json")
            .timeout(self.timeout)
            .send()?;
        let contact: HubSpotObject = checked(response)?.json()?;
        Ok(contact
            .properties
            .get(property)
            .cloned()
            .flatten()
            .filter(|v| !v.is_empty()))
    }

    fn send_raw(&self, method: Method, path: &str, body: &Value) -> Result<Response, Error> {
        Request::new(method, format!("{}{path}", self.base_url))
            .header("accept", "application/json")
            .json(body)?
            .timeout(self.timeout)
            .send()
    }

    /// The most recently changed contact matching any of `filter_groups`.
    fn search_one(&self, filter_groups: Value) -> Result<Option<HubSpotObject>, Error> {
        let body = json!({
            "filterGroups": filter_groups,
            "properties": PROPERTIES,
            "sorts": [{ "propertyName": "lastmodifieddate", "direction": "DESCENDING" }],
            "limit": 1,
        });
        let found: SearchResponse =
            self.send(Method::Post, &format!("{CONTACTS}/search"), &body)?;
        Ok(found.results.into_iter().next())
    }

    fn update(&self, id: &str, properties: &Map<String, Value>) -> Result<HubSpotObject, Error> {
        self.send(
            Method::Patch,
            &format!("{CONTACTS}/{}", numeric_id(id)?),
            &json!({ "properties": properties }),
        )
    }
}

fn find_contact(_ctx: &Context, input: FindContact) -> Result<Contact, Error> {
    let filter_groups = match (&input.phone, &input.email) {
        (Some(phone), None) if !phone.trim().is_empty() => {
            // A caller's number may be stored as the main or the mobile phone; groups are OR-ed.
            json!([
                { "filters": [{ "propertyName": "phone", "operator": "EQ", "value": phone.trim() }] },
                { "filters": [{ "propertyName": "mobilephone", "operator": "EQ", "value": phone.trim() }] },
            ])
        }
        (None, Some(email)) if !email.trim().is_empty() => json!([
            { "filters": [{ "propertyName": "email", "operator": "EQ", "value": email.trim().to_lowercase() }] },
        ]),
        _ => {
            return Err(Error::invalid_input(
                "give exactly one non-empty field: phone or email",
            ));
        }
    };
    let contact = Api::from_config()?
        .search_one(filter_groups)?
        .ok_or_else(|| Error::not_found("no HubSpot contact matches"))?;
    Ok(to_canonical(contact))
}

/// Create or update the contact whose external id property holds
/// `external_id`, in one request: HubSpot's batch upsert keyed by
/// `idProperty` (a unique-value property) is atomic, so a retried or
/// concurrent call can never make a second contact for one external id.
/// Email is unique too: when another contact already has the email, HubSpot
/// refuses the write naming that contact, which is then updated instead,
/// unless it holds a different external id.
fn upsert_contact(_ctx: &Context, input: UpsertInput) -> Result<UpsertedContact, Error> {
    let api = Api::from_config()?;
    let id_property = config::get_or("external_id_property", DEFAULT_EXTERNAL_ID_PROPERTY)?;
    let external_id = input.external_id.trim();
    if external_id.is_empty() {
        return Err(Error::invalid_input("external_id must not be blank"));
    }
    let mut properties = hubspot_properties(input.contact)?;
    properties.insert(id_property.clone(), json!(external_id));
    let body = json!({
        "inputs": [{ "idProperty": id_property, "id": external_id, "properties": properties }]
    });
    let response = api.send_raw(Method::Post, &format!("{CONTACTS}/batch/upsert"), &body)?;
    // A refused input comes back as a 409 (or another 4xx) or, from the batch
    // endpoint, inside a 207 multi-status answer's `errors`.
    if matches!(response.status(), 207 | 409)
        && let Some(id) = existing_id(&response)
    {
        return update_email_holder(&api, &id, (&id_property, external_id), &properties);
    }
    let answer: BatchAnswer = checked(response)?.json()?;
    if let Some(error) = answer.errors.first() {
        // The input was refused, not the request: a conflict is a 409, any
        // other refusal a 400, as HubSpot answers them for a single write.
        let conflict = matches!(
            error.category.as_deref(),
            Some("CONFLICT" | "OBJECT_ALREADY_EXISTS")
        );
        return Err(Error::Upstream {
            status: if conflict { 409 } else { 400 },
            message: batch_error(error),
        });
    }
    let result = answer
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("HubSpot's batch upsert answered without a result"))?;
    Ok(UpsertedContact {
        created: result.new,
        contact: to_canonical(result.object),
    })
}

/// The contact `id` that already has the email: updated with `properties`
/// unless it holds another external id (then nothing changes).
fn update_email_holder(
    api: &Api,
    id: &str,
    (id_property, external_id): (&str, &str),
    properties: &Map<String, Value>,
) -> Result<UpsertedContact, Error> {
    if let Some(held) = api.property_of(id, id_property)?
        && held != external_id
    {
        return Err(Error::Upstream {
            status: 409,
            message: format!(
                "contact {id} has this email and already holds {id_property} = {held:?}; nothing was changed"
            ),
        });
    }
    let updated = api.update(id, properties)?;
    Ok(UpsertedContact {
        contact: to_canonical(updated),
        created: false,
    })
}

fn log_call(_ctx: &Context, input: LogCall) -> Result<LoggedInteraction, Error> {
    let api = Api::from_config()?;
    let contact_id = numeric_id(&input.contact_id)?.to_owned();
    let mut properties = Map::new();
    let mut set = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            properties.insert(name.to_owned(), json!(value));
        }
    };
    set("hs_timestamp", Some(input.started_at));
    set(
        "hs_call_direction",
        Some(
            match input.direction {
                Direction::Inbound => "INBOUND",
                Direction::Outbound => "OUTBOUND",
            }
            .to_owned(),
        ),
    );
    // HubSpot counts call duration in milliseconds.
    set(
        "hs_call_duration",
        input
            .duration_seconds
            .map(|s| s.saturating_mul(1000).to_string()),
    );
    set("hs_call_title", input.title);
    set("hs_call_body", input.notes);
    set("hs_call_from_number", input.from_number);
    set("hs_call_to_number", input.to_number);
    set(
        "hs_call_status",
        Some(
            input
                .status
                .unwrap_or_else(|| "completed".into())
                .to_uppercase(),
        ),
    );
    set("hs_call_recording_url", input.recording_url);
    let body = json!({
        "properties": properties,
        "associations": [{
            "to": { "id": contact_id },
            "types": [{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": CALL_TO_CONTACT }]
        }]
    });
    let call: HubSpotObject = api.send(Method::Post, "/crm/v3/objects/calls", &body)?;
    Ok(LoggedInteraction {
        id: call.id,
        source: SOURCE.into(),
        contact_id,
    })
}

/// The canonical fields as HubSpot contact properties; `attributes` pass
/// through by property name.
fn hubspot_properties(fields: ContactFields) -> Result<Map<String, Value>, Error> {
    let mut properties = Map::new();
    for (name, value) in fields.attributes {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::invalid_input(format!(
                "attributes: {name:?} is not a HubSpot property name"
            )));
        }
        properties.insert(name, json!(value));
    }
    for (name, value) in [
        ("firstname", fields.first_name),
        ("lastname", fields.last_name),
        ("email", fields.email.map(|e| e.trim().to_lowercase())),
        ("phone", fields.phone),
        ("company", fields.company),
    ] {
        if let Some(value) = value {
            properties.insert(name.into(), json!(value));
        }
    }
    Ok(properties)
}

/// HubSpot object ids are numbers: anything else would change the path.
fn numeric_id(id: &str) -> Result<&str, Error> {
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(Error::invalid_input(format!(
            "{id:?} is not a HubSpot object id"
        )))
    }
}

/// The id in a 409's "… Existing ID: 37765128953" (both of HubSpot's shapes
/// of that answer carry it in a message).
fn existing_id(response: &Response) -> Option<String> {
    let body: Value = response.json().ok()?;
    let messages = std::iter::once(&body["message"]).chain(
        body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["message"]),
    );
    messages.filter_map(Value::as_str).find_map(|message| {
        let (_, after) = message.split_once("Existing ID: ")?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    })
}

/// HubSpot's errors mapped. A 429 without `Retry-After` waits by the limit
/// hit: an hour for the daily limit, ten seconds for the rolling ten-second one.
fn checked(response: Response) -> Result<Response, Error> {
    if response.status() == 429 && response.retry_after_ms().is_none() {
        let policy = response
            .json::<Value>()
            .ok()
            .and_then(|b| b["policyName"].as_str().map(str::to_owned));
        let retry_after_ms = match policy.as_deref() {
            Some("DAILY") => 3_600_000,
            Some("TEN_SECONDLY_ROLLING") => 10_000,
            _ => 1000,
        };
        return Err(Error::RateLimited { retry_after_ms });
    }
    response.error_for_status_with(hubspot_error)
}

/// One refused input of a batch as one line.
fn batch_error(error: &BatchError) -> String {
    [error.category.as_deref(), error.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ")
}

/// HubSpot's error envelope `{status, message, category | errorType,
/// correlationId}` as one line.
fn hubspot_error(response: &Response) -> Option<String> {
    let body: Value = response.json().ok()?;
    let kind = body["category"].as_str().or(body["errorType"].as_str());
    let mut text = [kind, body["message"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(id) = body["correlationId"].as_str() {
        text.push_str(&format!(" (correlation {id})"));
    }
    Some(text)
}

fn to_canonical(mut c: HubSpotObject) -> Contact {
    let mut take = |key: &str| c.properties.remove(key).flatten().filter(|v| !v.is_empty());
    let phone = take("phone").or_else(|| take("mobilephone"));
    Contact {
        source: SOURCE.into(),
        first_name: take("firstname"),
        last_name: take("lastname"),
        email: take("email"),
        phone,
        company: take("company"),
        updated_at: c.updated_at.take().or_else(|| take("lastmodifieddate")),
        attributes: BTreeMap::new(),
        id: c.id,
    }
}
