//! A HubSpot-style contact search page to canonical contacts. Compiled into the
//! `crm-transform` plugin and natively into the benchmark, so the two numbers
//! compare only where the same code runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The canonical contact shape (the same JSON as `patchbay_sdk::cx::Contact`;
/// this crate stays free of the SDK so it also links natively).
#[derive(Debug, Serialize)]
pub struct Contact {
    pub id: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Page {
    results: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, Option<String>>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
    #[serde(default)]
    archived: bool,
}

/// Keep live records, map them to canonical contacts, normalise email case and
/// phone punctuation, and carry the lifecycle stage as an attribute.
pub fn transform(input: &str) -> Result<String, String> {
    let page: Page = serde_json::from_str(input).map_err(|e| e.to_string())?;
    let contacts: Vec<Contact> = page
        .results
        .into_iter()
        .filter(|r| !r.archived)
        .map(|mut r| {
            let mut take = |k: &str| r.properties.remove(k).flatten().filter(|v| !v.is_empty());
            let phone = take("phone").or_else(|| take("mobilephone")).map(|p| {
                let digits: String = p.chars().filter(|c| c.is_ascii_digit()).collect();
                if p.trim_start().starts_with('+') {
                    format!("+{digits}")
                } else {
                    digits
                }
            });
            let mut attributes = BTreeMap::new();
            if let Some(stage) = take("lifecyclestage") {
                attributes.insert("lifecycle_stage".to_owned(), stage);
            }
            Contact {
                source: "hubspot".into(),
                first_name: take("firstname"),
                last_name: take("lastname"),
                email: take("email").map(|e| e.to_lowercase()),
                phone,
                company: take("company"),
                updated_at: r.updated_at.take(),
                attributes,
                id: r.id,
            }
        })
        .collect();
    serde_json::to_string(&contacts).map_err(|e| e.to_string())
}
