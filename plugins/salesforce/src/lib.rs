//! Salesforce connector (REST API).
//!
//! `find-contact` looks a caller up with a SOQL query in which every value
//! is an escaped string literal, `upsert-contact` writes a Contact by the
//! org's external id field, and `log-call` records a call as a Task. The
//! host gets OAuth2 tokens (client credentials, against the org's My Domain)
//! and adds them; this code never sees them. Sources are in this crate's
//! README.

use patchbay_sdk::cx::{Contact, LoggedInteraction, UpsertedContact};
use patchbay_sdk::http::{Method, Request, Response};
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SOURCE: &str = "salesforce";
const DEFAULT_API_VERSION: &str = "v67.0";
const DEFAULT_TIMEOUT_MS: u64 = 5000;
const CONTACT_FIELDS: &str =
    "Id, FirstName, LastName, Email, Phone, MobilePhone, Account.Name, LastModifiedDate";
/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Waits for Salesforce's `REQUEST_LIMIT_EXCEEDED`: the 24-hour allocation
/// spent, or too many long-running requests at once.
const DAILY_LIMIT_WAIT_MS: u64 = 3_600_000;
const CONCURRENCY_LIMIT_WAIT_MS: u64 = 10_000;

struct Salesforce;

impl Connector for Salesforce {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("find-contact", find_contact);
        ops.register("upsert-contact", upsert_contact);
        ops.register("log-call", log_call);
    }
}

export_connector!(Salesforce);

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactFields {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile_phone: Option<String>,
    /// Other Contact fields by API name (`Title`, `Preferred_Language__c`).
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogCall {
    contact_id: String,
    direction: String,
    started_at: String,
    duration_seconds: Option<u64>,
    subject: Option<String>,
    notes: Option<String>,
    disposition: Option<String>,
    call_id: Option<String>,
}

#[derive(Deserialize)]
struct QueryResult<T> {
    records: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SfContact {
    id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile_phone: Option<String>,
    account: Option<Account>,
    last_modified_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Account {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdOnly {
    id: String,
}

/// What a create or an upsert answers.
#[derive(Deserialize)]
struct SaveResult {
    id: String,
}

struct Api {
    /// `{instance_url}/services/data/{version}`.
    data_url: String,
    timeout: Duration,
}

impl Api {
    fn from_config() -> Result<Self, Error> {
        let instance = config::get("instance_url")?.ok_or_else(|| {
            Error::invalid_input(
                "setting instance_url is required (https://<MyDomain>.my.salesforce.com)",
            )
        })?;
        let version = config::get_or("api_version", DEFAULT_API_VERSION)?;
        Ok(Self {
            data_url: format!(
                "{}/services/data/{}",
                instance.trim_end_matches('/'),
                version.trim()
            ),
            timeout: Duration::from_millis(config::parsed_or(
                "request_timeout_ms",
                DEFAULT_TIMEOUT_MS,
            )?),
        })
    }

    fn request(&self, method: Method, path: &str) -> Request {
        Request::new(method, format!("{}{path}", self.data_url))
            .header("accept", "application/json")
            .timeout(self.timeout)
    }

    /// Run a SOQL query and decode its records.
    fn query<T: DeserializeOwned>(&self, soql: &str) -> Result<Vec<T>, Error> {
        let response = self
            .request(Method::Get, "/query")
            .query(&[("q", soql)])
            .send()?;
        // The query resource always exists: a 404 is the instance URL or
        // the API version, not a missing record.
        if response.status() == 404 {
            return Err(Error::Upstream {
                status: 404,
                message: format!(
                    "no query resource at {}/query (check the settings instance_url and api_version): {}",
                    self.data_url,
                    salesforce_error(&response).unwrap_or_default()
                ),
            });
        }
        Ok(checked(response)?.json::<QueryResult<T>>()?.records)
    }

    fn contact(&self, id: &str) -> Result<Option<SfContact>, Error> {
        let soql = format!(
            "SELECT {CONTACT_FIELDS} FROM Contact WHERE Id = {} LIMIT 1",
            literal(id)?
        );
        Ok(self.query(&soql)?.into_iter().next())
    }
}

fn find_contact(_ctx: &Context, input: FindContact) -> Result<Contact, Error> {
    let condition = match (nonempty(&input.phone), nonempty(&input.email)) {
        (Some(phone), None) => {
            let phone = literal(phone)?;
            format!("Phone = {phone} OR MobilePhone = {phone}")
        }
        (None, Some(email)) => format!("Email = {}", literal(email)?),
        _ => {
            return Err(Error::invalid_input(
                "give exactly one non-empty field: phone or email",
            ));
        }
    };
    let soql = format!(
        "SELECT {CONTACT_FIELDS} FROM Contact WHERE {condition} ORDER BY LastModifiedDate DESC LIMIT 1"
    );
    let found: Vec<SfContact> = Api::from_config()?.query(&soql)?;
    found
        .into_iter()
        .next()
        .map(to_canonical)
        .ok_or_else(|| Error::not_found("no Salesforce contact matches"))
}

/// `PATCH /sobjects/Contact/{field}/{value}`: Salesforce creates the
/// Contact when no record holds the value (201) and updates the one that
/// does (200; 204 before API 46.0), all in one request.
fn upsert_contact(_ctx: &Context, input: UpsertInput) -> Result<UpsertedContact, Error> {
    let api = Api::from_config()?;
    let field = config::get("external_id_field")?.ok_or_else(|| {
        Error::invalid_input(
            "setting external_id_field (an External ID field of Contact) is required to upsert",
        )
    })?;
    let external_id = input.external_id.trim();
    // Salesforce does not match a value holding a slash, even encoded.
    if external_id.is_empty() || external_id.contains('/') {
        return Err(Error::invalid_input(
            "external_id must be non-empty and hold no '/'",
        ));
    }
    let body = Value::Object(salesforce_fields(input.contact)?);
    let field = api_name(field.trim())?.to_owned();
    let path = format!(
        "/sobjects/Contact/{}/{}",
        utf8_percent_encode(&field, SEGMENT),
        utf8_percent_encode(external_id, SEGMENT)
    );
    let response = api.request(Method::Patch, &path).json(&body)?.send()?;
    let (id, created) = match response.status() {
        300 => {
            return Err(Error::Upstream {
                status: 300,
                message: format!(
                    "several Contacts hold {field} = {external_id:?}; nothing was written"
                ),
            });
        }
        404 => {
            return Err(Error::Upstream {
                status: 404,
                message: format!(
                    "{field} is not an External ID field of Contact (setting external_id_field): {}",
                    salesforce_error(&response).unwrap_or_default()
                ),
            });
        }
        204 => (None, false),
        status => {
            // 201 is a create, 200 an update, whatever the body says.
            let saved: SaveResult = checked(response)?.json()?;
            (Some(saved.id), status == 201)
        }
    };
    let record = match id {
        Some(id) => api.contact(&id)?,
        None => {
            let soql = format!(
                "SELECT {CONTACT_FIELDS} FROM Contact WHERE {} = {} LIMIT 1",
                api_name(&field)?,
                literal(external_id)?
            );
            api.query(&soql)?.into_iter().next()
        }
    }
    .ok_or_else(|| Error::internal("the upserted Contact could not be read back"))?;
    Ok(UpsertedContact {
        contact: to_canonical(record),
        created,
    })
}

/// A Task with `TaskSubtype = Call` on the contact. With a call id (or the
/// invocation's idempotency key) in `CallObject`, a retried call finds the
/// Task it made instead of logging the call twice.
fn log_call(ctx: &Context, input: LogCall) -> Result<LoggedInteraction, Error> {
    let api = Api::from_config()?;
    let contact_id = salesforce_id(&input.contact_id)?;
    let call_id = input
        .call_id
        .clone()
        .or_else(|| ctx.idempotency_key().map(str::to_owned));
    if let Some(call_id) = &call_id {
        let soql = format!(
            "SELECT Id FROM Task WHERE CallObject = {} AND WhoId = {} LIMIT 1",
            literal(call_id)?,
            literal(contact_id)?
        );
        if let Some(task) = api.query::<IdOnly>(&soql)?.into_iter().next() {
            return Ok(LoggedInteraction {
                id: task.id,
                source: SOURCE.into(),
                contact_id: contact_id.to_owned(),
            });
        }
    }
    let call_type = match input.direction.as_str() {
        "inbound" => "Inbound",
        "outbound" => "Outbound",
        _ => "Internal",
    };
    let mut task = json!({
        "Subject": input.subject.unwrap_or_else(|| format!("{call_type} call")),
        "WhoId": contact_id,
        "TaskSubtype": "Call",
        "Status": "Completed",
        "CallType": call_type,
        // The Task's date; Salesforce keeps only the day.
        "ActivityDate": input.started_at.get(..10).unwrap_or_default(),
    });
    for (field, value) in [
        (
            "CallDurationInSeconds",
            input.duration_seconds.map(|s| json!(s)),
        ),
        ("Description", input.notes.map(|n| json!(n))),
        ("CallDisposition", input.disposition.map(|d| json!(d))),
        ("CallObject", call_id.map(|c| json!(c))),
    ] {
        if let Some(value) = value {
            task[field] = value;
        }
    }
    let response = api
        .request(Method::Post, "/sobjects/Task")
        .json(&task)?
        .send()?;
    let saved: SaveResult = checked(response)?.json()?;
    Ok(LoggedInteraction {
        id: saved.id,
        source: SOURCE.into(),
        contact_id: contact_id.to_owned(),
    })
}

fn salesforce_fields(fields: ContactFields) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for (name, value) in fields.attributes {
        out.insert(api_name(&name)?.to_owned(), value);
    }
    for (name, value) in [
        ("FirstName", fields.first_name),
        ("LastName", fields.last_name),
        ("Email", fields.email.map(|e| e.trim().to_owned())),
        ("Phone", fields.phone),
        ("MobilePhone", fields.mobile_phone),
    ] {
        if let Some(value) = value {
            out.insert(name.to_owned(), json!(value));
        }
    }
    Ok(out)
}

/// `value` as a SOQL string literal: quoted, with backslash, quotes and
/// control characters escaped, so nothing in it is read as SOQL.
fn literal(value: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                return Err(Error::invalid_input(format!(
                    "control character U+{:04X} is not allowed",
                    u32::from(c)
                )));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// A field's API name: letters, digits and underscores, starting with a letter.
fn api_name(name: &str) -> Result<&str, Error> {
    let mut bytes = name.bytes();
    let valid = name.len() <= 80
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(Error::invalid_input(format!(
            "{name:?} is not a Salesforce field API name"
        )))
    }
}

/// A record id: 15 or 18 letters and digits.
fn salesforce_id(id: &str) -> Result<&str, Error> {
    let valid = (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(id)
    } else {
        Err(Error::invalid_input(format!(
            "{id:?} is not a Salesforce id"
        )))
    }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Salesforce's errors mapped. Its body is an array of `{message, errorCode,
/// fields}`; `REQUEST_LIMIT_EXCEEDED` comes as a 403 and is a rate limit.
fn checked(response: Response) -> Result<Response, Error> {
    if response.status() == 403
        && let Some(message) = limit_exceeded(&response)
    {
        let wait = if message.contains("ConcurrentRequests") {
            CONCURRENCY_LIMIT_WAIT_MS
        } else {
            DAILY_LIMIT_WAIT_MS
        };
        return Err(Error::RateLimited {
            retry_after_ms: response.retry_after_ms().unwrap_or(wait),
        });
    }
    response.error_for_status_with(salesforce_error)
}

#[derive(Deserialize)]
struct ApiError {
    message: Option<String>,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

fn api_errors(response: &Response) -> Vec<ApiError> {
    match response.json::<Value>() {
        Ok(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        Ok(object @ Value::Object(_)) => serde_json::from_value(object).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn limit_exceeded(response: &Response) -> Option<String> {
    api_errors(response)
        .into_iter()
        .find(|e| e.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED"))
        .map(|e| e.message.unwrap_or_default())
}

fn salesforce_error(response: &Response) -> Option<String> {
    let text = api_errors(response)
        .into_iter()
        .map(|e| {
            [e.error_code, e.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(text)
}

/// Salesforce writes offsets without a colon (`…000+0000`); RFC 3339 wants
/// one (`…000+00:00`), or `Z` for UTC.
fn rfc3339_offset(date: &str) -> String {
    let offset = date.get(date.len().saturating_sub(5)..).unwrap_or("");
    let time = &date[..date.len() - offset.len()];
    let bytes = offset.as_bytes();
    let numeric = bytes.len() == 5
        && (bytes[0] == b'+' || bytes[0] == b'-')
        && bytes[1..].iter().all(u8::is_ascii_digit);
    match (numeric, offset.get(1..)) {
        (true, Some("0000")) => format!("{time}Z"),
        (true, _) => format!("{time}{}:{}", &offset[..3], &offset[3..]),
        (false, _) => date.to_owned(),
    }
}

fn to_canonical(c: SfContact) -> Contact {
    let nonblank = |v: Option<String>| v.filter(|s| !s.is_empty());
    Contact {
        source: SOURCE.into(),
        first_name: nonblank(c.first_name),
        last_name: nonblank(c.last_name),
        email: nonblank(c.email),
        phone: nonblank(c.phone).or_else(|| nonblank(c.mobile_phone)),
        company: c.account.and_then(|a| nonblank(a.name)),
        updated_at: c.last_modified_date.map(|d| rfc3339_offset(&d)),
        attributes: BTreeMap::new(),
        id: c.id,
    }
}
