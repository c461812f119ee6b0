//! HubSpot CRM connector.
//!
//! `find-contact` looks a caller up by phone or email with HubSpot's CRM v3
//! search API and returns the canonical [`Contact`]. The private-app token is
//! injected by the host; this code never sees it.

use patchbay_sdk::cx::Contact;
use patchbay_sdk::http::Request;
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
const PROPERTIES: [&str; 7] = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "company",
    "lastmodifieddate",
];

struct HubSpot;

impl Connector for HubSpot {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("find-contact", find_contact);
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
struct SearchResponse {
    results: Vec<HubSpotContact>,
}

#[derive(Deserialize)]
struct HubSpotContact {
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, Option<String>>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
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

    let base_url = config::get_or("base_url", DEFAULT_BASE_URL)?;
    let body = json!({
        "filterGroups": filter_groups,
        "properties": PROPERTIES,
        "sorts": [{ "propertyName": "lastmodifieddate", "direction": "DESCENDING" }],
        "limit": 1,
    });
    let response = Request::post(format!(
        "{}/crm/v3/objects/contacts/search",
        base_url.trim_end_matches('/')
    ))
    .header("accept", "application/json")
    .json(&body)?
    .timeout(Duration::from_secs(3))
    .send()?
    .error_for_status()?;
    let found: SearchResponse = response.json()?;
    let contact = found
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("no HubSpot contact matches"))?;
    Ok(to_canonical(contact))
}

fn to_canonical(mut c: HubSpotContact) -> Contact {
    let mut take = |key: &str| c.properties.remove(key).flatten().filter(|v| !v.is_empty());
    let phone = take("phone").or_else(|| take("mobilephone"));
    Contact {
        source: "hubspot".into(),
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
