//! One caller record from the sources' canonical answers.

use patchbay_policy::lookup::{LookupDefinition, Section};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// The merged record and, per field, the source it came from.
pub(crate) struct Merged {
    pub(crate) record: Json,
    pub(crate) provenance: BTreeMap<String, String>,
}

/// Merge `answers` (source name to its output) under `definition`'s
/// precedence: each contact and payment field from the first source in its
/// order that has it; appointments from every source, soonest first, and
/// the next one that is not cancelled or rejected.
pub(crate) fn merge(definition: &LookupDefinition, answers: &BTreeMap<String, Json>) -> Merged {
    let mut record = Map::new();
    let mut provenance = BTreeMap::new();
    for section in [Section::Contact, Section::Payment] {
        let mut fields = Map::new();
        for field in section.fields() {
            let winner = definition
                .order_for(section, Some(field))
                .into_iter()
                .find_map(|name| {
                    let value = answers.get(name)?.get(*field)?;
                    present(value).then(|| (name, value.clone()))
                });
            if let Some((name, value)) = winner {
                fields.insert((*field).to_owned(), value);
                provenance.insert(format!("{}.{field}", section.as_str()), name.to_owned());
            }
        }
        if !fields.is_empty() {
            record.insert(section.as_str().to_owned(), Json::Object(fields));
        }
    }

    let mut appointments: Vec<Json> = Vec::new();
    let mut from = Vec::new();
    for name in definition.order_for(Section::Appointments, None) {
        let Some(list) = answers
            .get(name)
            .and_then(|a| a.get("appointments"))
            .and_then(Json::as_array)
        else {
            continue;
        };
        if !list.is_empty() {
            from.push(name);
            appointments.extend(list.iter().cloned());
        }
    }
    // RFC 3339 times in UTC sort as text; the stable sort keeps source order for ties.
    appointments.sort_by(|a, b| starts(a).cmp(starts(b)));
    if let Some(next) = appointments.iter().find(|a| {
        !matches!(
            a.get("status").and_then(Json::as_str),
            Some("cancelled" | "rejected")
        )
    }) {
        record.insert("next_appointment".into(), next.clone());
        provenance.insert("next_appointment".into(), from.join(","));
    }
    if !appointments.is_empty() {
        record.insert("appointments".into(), Json::Array(appointments));
        provenance.insert("appointments".into(), from.join(","));
    }
    Merged {
        record: Json::Object(record),
        provenance,
    }
}

fn starts(appointment: &Json) -> &str {
    appointment
        .get("starts_at")
        .and_then(Json::as_str)
        .unwrap_or("")
}

/// Whether a field holds something: not null, not an empty string, list or object.
fn present(value: &Json) -> bool {
    match value {
        Json::Null => false,
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(precedence: Json) -> LookupDefinition {
        serde_json::from_value(json!({
            "sources": [
                { "name": "hubspot", "connection": "hs", "operation": "find-contact", "provides": "contact", "deadline_ms": 500 },
                { "name": "salesforce", "connection": "sf", "operation": "find-contact", "provides": "contact", "deadline_ms": 500 },
                { "name": "stripe", "connection": "st", "operation": "payment-status", "provides": "payment", "deadline_ms": 500 },
                { "name": "cal", "connection": "cal", "operation": "upcoming-appointments", "provides": "appointments", "deadline_ms": 500 },
                { "name": "cal2", "connection": "cal2", "operation": "upcoming-appointments", "provides": "appointments", "deadline_ms": 500 }
            ],
            "precedence": precedence
        }))
        .expect("definition")
    }

    fn answers() -> BTreeMap<String, Json> {
        BTreeMap::from([
            (
                "hubspot".into(),
                json!({ "id": "512", "source": "hubspot", "first_name": "Ada", "email": "ada@old.example", "company": "" }),
            ),
            (
                "salesforce".into(),
                json!({ "id": "003x", "source": "salesforce", "first_name": "Augusta", "last_name": "King", "email": "ada@new.example", "company": "Engines Ltd" }),
            ),
            (
                "stripe".into(),
                json!({ "customer_id": "cus_1", "standing": "past_due", "delinquent": true, "open_invoices": [] }),
            ),
            (
                "cal".into(),
                json!({ "source": "calcom", "appointments": [
                { "id": "b", "starts_at": "2026-12-09T10:00:00Z", "status": "confirmed" },
                { "id": "a", "starts_at": "2026-12-03T09:00:00Z", "status": "cancelled" }
            ] }),
            ),
            (
                "cal2".into(),
                json!({ "source": "calcom", "appointments": [
                { "id": "c", "starts_at": "2026-12-05T09:00:00Z", "status": "pending" }
            ] }),
            ),
        ])
    }

    #[test]
    fn fields_come_from_the_first_source_in_their_order_that_has_them() {
        let merged = merge(
            &definition(json!({ "contact.email": ["salesforce"] })),
            &answers(),
        );
        let contact = &merged.record["contact"];
        assert_eq!(contact["first_name"], "Ada");
        assert_eq!(contact["last_name"], "King");
        assert_eq!(contact["email"], "ada@new.example");
        // An empty value does not win over a present one.
        assert_eq!(contact["company"], "Engines Ltd");
        assert_eq!(merged.provenance["contact.first_name"], "hubspot");
        assert_eq!(merged.provenance["contact.email"], "salesforce");
        assert_eq!(merged.provenance["contact.company"], "salesforce");
        assert_eq!(merged.record["payment"]["standing"], "past_due");
        // An empty list is absent.
        assert!(merged.record["payment"].get("open_invoices").is_none());
        assert!(merged.record["contact"].get("source").is_none());

        let merged = merge(
            &definition(json!({ "contact": ["salesforce", "hubspot"] })),
            &answers(),
        );
        assert_eq!(merged.record["contact"]["first_name"], "Augusta");
    }

    #[test]
    fn appointments_from_every_source_soonest_first_and_the_next_one_not_cancelled() {
        let merged = merge(&definition(json!({})), &answers());
        let ids: Vec<&str> = merged.record["appointments"]
            .as_array()
            .expect("list")
            .iter()
            .map(|a| a["id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert_eq!(merged.record["next_appointment"]["id"], "c");
        assert_eq!(merged.provenance["appointments"], "cal,cal2");
    }

    #[test]
    fn no_answers_is_an_empty_record() {
        let merged = merge(&definition(json!({})), &BTreeMap::new());
        assert_eq!(merged.record, json!({}));
        assert!(merged.provenance.is_empty());
    }
}
