//! Caller-context lookups, the pure part: a workspace's definition of which
//! connections to ask about an inbound caller and how to merge their
//! answers, and what each permission profile may see of the merged record.
//! Running a lookup is the `patchbay-lookup` crate's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, BTreeSet};

/// Most sources one lookup may ask.
pub const MAX_SOURCES: usize = 8;
/// Shortest and longest deadline of one source, in milliseconds.
pub const DEADLINE_MS: std::ops::RangeInclusive<u32> = 10..=30_000;
/// Longest a result may be cached, in seconds.
pub const MAX_CACHE_TTL_SECONDS: u32 = 86_400;
/// Largest input template of one source, serialised.
const MAX_INPUT_BYTES: usize = 4096;
/// The caller's details a source's input may use, as `"{phone}"` or `"{email}"`.
pub const PLACEHOLDERS: [&str; 2] = ["phone", "email"];

/// A named lookup: the sources to ask, how their answers merge, how long the
/// result is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LookupDefinition {
    /// The connections to ask, at most [`MAX_SOURCES`].
    pub sources: Vec<LookupSource>,
    /// For a section (`contact`) or one field (`contact.email`), the sources
    /// whose answer wins, first to last; unlisted sources follow in
    /// definition order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub precedence: BTreeMap<String, Vec<String>>,
    /// How long a result is kept, in seconds; 0 keeps nothing.
    #[serde(default)]
    pub cache_ttl_seconds: u32,
}

/// One connection a lookup asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LookupSource {
    /// Its name in this lookup (a slug): the provenance of fields and the
    /// per-source statuses use it.
    pub name: String,
    /// The workspace's connection to ask.
    pub connection: String,
    /// The operation to run on it.
    pub operation: String,
    /// Which part of the caller record its answer fills.
    pub provides: Section,
    /// The operation's input; a string that is exactly `"{phone}"` (the
    /// caller's number in E.164) or `"{email}"` is replaced by that value.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default = "phone_input")]
    pub input: Json,
    /// How long to wait for it, in milliseconds.
    pub deadline_ms: u32,
    /// Ask this source only when the named one ends in an error, a timeout
    /// or is skipped (a fallback CRM behind the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_for: Option<String>,
}

fn phone_input() -> Json {
    serde_json::json!({ "phone": "{phone}" })
}

/// A part of the caller record, and the canonical answer that fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// A `cx::Contact` (CRM).
    Contact,
    /// A `cx::PaymentAccount` (payments).
    Payment,
    /// A `cx::Appointments` (scheduling).
    Appointments,
}

impl Section {
    /// Its name in the record and in precedence keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Payment => "payment",
            Self::Appointments => "appointments",
        }
    }

    /// The fields a precedence rule may name in this section.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Contact => &[
                "id",
                "first_name",
                "last_name",
                "email",
                "phone",
                "company",
                "updated_at",
                "attributes",
            ],
            Self::Payment => &[
                "customer_id",
                "standing",
                "delinquent",
                "balance",
                "past_due",
                "open_invoices",
                "payment_method",
            ],
            Self::Appointments => &[],
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Contact, Self::Payment, Self::Appointments]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl LookupDefinition {
    /// Everything wrong with the definition, each naming where.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.sources.is_empty() || self.sources.len() > MAX_SOURCES {
            problems.push(format!("sources: give 1 to {MAX_SOURCES} sources"));
        }
        if self.cache_ttl_seconds > MAX_CACHE_TTL_SECONDS {
            problems.push(format!(
                "cache_ttl_seconds: at most {MAX_CACHE_TTL_SECONDS}"
            ));
        }
        let mut names = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            if !crate::manifest::is_slug(&source.name) {
                problems.push(format!(
                    "{at}.name: {:?} must be 1-64 lowercase letters, digits or inner dashes",
                    source.name
                ));
            } else if !names.insert(source.name.as_str()) {
                problems.push(format!("{at}.name: {:?} is used twice", source.name));
            }
            if !crate::manifest::is_slug(&source.connection) {
                problems.push(format!(
                    "{at}.connection: {:?} is not a connection name",
                    source.connection
                ));
            }
            if !crate::manifest::is_slug(&source.operation) {
                problems.push(format!(
                    "{at}.operation: {:?} is not an operation name",
                    source.operation
                ));
            }
            if !DEADLINE_MS.contains(&source.deadline_ms) {
                problems.push(format!(
                    "{at}.deadline_ms: between {} and {}",
                    DEADLINE_MS.start(),
                    DEADLINE_MS.end()
                ));
            }
            problems.extend(input_problems(&at, &source.input));
        }
        problems.extend(self.fallback_problems());
        problems.extend(self.precedence_problems());
        problems
    }

    fn source(&self, name: &str) -> Option<&LookupSource> {
        self.sources.iter().find(|s| s.name == name)
    }

    fn fallback_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut taken = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let Some(primary) = &source.fallback_for else {
                continue;
            };
            let at = format!("sources[{i}].fallback_for");
            match self.source(primary) {
                None => problems.push(format!("{at}: no source is named {primary:?}")),
                Some(p) if p.provides != source.provides => problems.push(format!(
                    "{at}: {primary:?} provides {}, this source {}",
                    p.provides.as_str(),
                    source.provides.as_str()
                )),
                Some(_) if !taken.insert(primary.as_str()) => {
                    problems.push(format!("{at}: {primary:?} already has a fallback"))
                }
                Some(_) => {}
            }
            // Follow the chain back: it must reach a source asked first.
            let mut seen = BTreeSet::from([source.name.as_str()]);
            let mut at_source = primary.as_str();
            while let Some(next) = self.source(at_source) {
                if !seen.insert(next.name.as_str()) {
                    problems.push(format!("{at}: the fallbacks form a cycle"));
                    break;
                }
                match &next.fallback_for {
                    Some(up) => at_source = up,
                    None => break,
                }
            }
        }
        problems
    }

    fn precedence_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, order) in &self.precedence {
            let at = format!("precedence[{key:?}]");
            let (section, field) = match key.split_once('.') {
                Some((section, field)) => (section, Some(field)),
                None => (key.as_str(), None),
            };
            let Some(section) = Section::parse(section) else {
                problems.push(format!(
                    "{at}: {section:?} is not a section (contact, payment, appointments)"
                ));
                continue;
            };
            if let Some(field) = field
                && !section.fields().contains(&field)
            {
                problems.push(format!(
                    "{at}: {section} has no field {field:?}",
                    section = section.as_str()
                ));
            }
            for name in order {
                match self.source(name) {
                    None => problems.push(format!("{at}: no source is named {name:?}")),
                    Some(s) if s.provides != section => problems.push(format!(
                        "{at}: {name:?} provides {}, not {}",
                        s.provides.as_str(),
                        section.as_str()
                    )),
                    Some(_) => {}
                }
            }
        }
        problems
    }

    /// The sources providing `section`, in the order their answers win for
    /// `field` (or the whole section).
    pub fn order_for(&self, section: Section, field: Option<&str>) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::new();
        let keyed = field.map(|f| format!("{}.{f}", section.as_str()));
        for key in keyed.iter().map(String::as_str).chain([section.as_str()]) {
            for name in self.precedence.get(key).into_iter().flatten() {
                if !order.contains(&name.as_str()) {
                    order.push(name);
                }
            }
        }
        for source in &self.sources {
            if source.provides == section && !order.contains(&source.name.as_str()) {
                order.push(&source.name);
            }
        }
        order
    }
}

fn input_problems(at: &str, input: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    if !input.is_object() {
        problems.push(format!("{at}.input: must be a JSON object"));
    }
    if serde_json::to_string(input).map_or(true, |s| s.len() > MAX_INPUT_BYTES) {
        problems.push(format!("{at}.input: at most {MAX_INPUT_BYTES} bytes"));
    }
    let mut strings = Vec::new();
    collect_strings(input, &mut strings);
    for text in strings {
        if let Some(name) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
            && !PLACEHOLDERS.contains(&name)
        {
            problems.push(format!(
                "{at}.input: {text:?} is not a placeholder ({{phone}} or {{email}})"
            ));
        }
    }
    problems
}

fn collect_strings<'a>(value: &'a Json, out: &mut Vec<&'a str>) {
    match value {
        Json::String(s) => out.push(s),
        Json::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Json::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// `template` with `"{phone}"` and `"{email}"` replaced by the caller's
/// values; `Err(name)` when it needs one the request did not give.
pub fn fill_input(
    template: &Json,
    phone: Option<&str>,
    email: Option<&str>,
) -> Result<Json, &'static str> {
    Ok(match template {
        Json::String(s) if s == "{phone}" => Json::String(phone.ok_or("phone")?.to_owned()),
        Json::String(s) if s == "{email}" => Json::String(email.ok_or("email")?.to_owned()),
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|v| fill_input(v, phone, email))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| Ok::<_, &'static str>((k.clone(), fill_input(v, phone, email)?)))
                .collect::<Result<Map<_, _>, _>>()?,
        ),
        other => other.clone(),
    })
}

/// What a caller of the lookup API may see: a workspace token carries one;
/// a request may ask for a lower one, never a higher.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Name, phone, masked email, next appointment time.
    #[default]
    Basic,
    /// Also company, balance and payment status, appointment details.
    Advanced,
    /// Every field that is not sensitive.
    Admin,
}

impl Profile {
    /// Its name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Advanced => "advanced",
            Self::Admin => "admin",
        }
    }
}

/// How a field is shown to a profile that may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// As it is.
    Clear,
    /// Below `clear_from`, masked (`a***@example.com`); from it, as it is.
    MaskedBelow(Profile),
}

/// Who sees each field of the caller record: the least profile, and how.
/// A field not in the table is `admin` only; sensitive fields
/// ([`is_sensitive_key`], card numbers) are never shown.
const FIELD_ACCESS: &[(&str, Profile, Shown)] = &[
    ("contact.first_name", Profile::Basic, Shown::Clear),
    ("contact.last_name", Profile::Basic, Shown::Clear),
    ("contact.phone", Profile::Basic, Shown::Clear),
    (
        "contact.email",
        Profile::Basic,
        Shown::MaskedBelow(Profile::Advanced),
    ),
    ("contact.company", Profile::Advanced, Shown::Clear),
    ("payment.standing", Profile::Advanced, Shown::Clear),
    ("payment.delinquent", Profile::Advanced, Shown::Clear),
    ("payment.balance", Profile::Advanced, Shown::Clear),
    ("payment.past_due", Profile::Advanced, Shown::Clear),
    ("next_appointment.starts_at", Profile::Basic, Shown::Clear),
    ("next_appointment.ends_at", Profile::Advanced, Shown::Clear),
    ("next_appointment.status", Profile::Advanced, Shown::Clear),
    ("next_appointment.title", Profile::Advanced, Shown::Clear),
    ("next_appointment.location", Profile::Advanced, Shown::Clear),
    ("appointments", Profile::Advanced, Shown::Clear),
];

/// Key names whose values are never returned: secrets, national ids, full
/// card and bank numbers.
pub fn is_sensitive_key(key: &str) -> bool {
    // Compared without separators or case: `national_id`, `nationalId` and
    // `National-ID` are one key.
    const WORDS: [&str; 16] = [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "ssn",
        "socialsecurity",
        "nationalid",
        "taxid",
        "passport",
        "iban",
        "accountnumber",
        "cardnumber",
        "cvv",
        "cvc",
        "routingnumber",
    ];
    let key: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    key == "pan" || WORDS.iter().any(|w| key.contains(w))
}

/// Whether `text` holds a full payment card number anywhere in it: a run
/// of 13-19 digits (spaces or dashes between them allowed) passing the Luhn
/// check.
pub fn contains_card_number(text: &str) -> bool {
    let mut digits: Vec<u32> = Vec::new();
    let mut runs: Vec<Vec<u32>> = Vec::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c.to_digit(10).unwrap_or(0)),
            ' ' | '-' if !digits.is_empty() => {}
            _ => {
                if !digits.is_empty() {
                    runs.push(std::mem::take(&mut digits));
                }
            }
        }
    }
    runs.push(digits);
    runs.iter()
        .any(|run| (13..=19).any(|len| run.len() >= len && run.windows(len).any(luhn)))
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => *d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `text` is a full payment card number (13-19 digits, spaces or
/// dashes allowed, passing the Luhn check).
pub fn looks_like_card_number(text: &str) -> bool {
    let digits: Vec<u32> = text
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_digit(10))
        .collect::<Option<_>>()
        .unwrap_or_default();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// `a***@example.com`: the first character of the local part, then the domain.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// The caller record as `profile` may see it: fields above the profile
/// removed, masked ones masked, sensitive ones removed whatever the
/// profile. Also the dotted names of the top-level fields returned (for
/// the audit: names, never values).
pub fn mask_record(record: &Json, profile: Profile) -> (Json, Vec<String>) {
    let mut out = Map::new();
    let mut returned = Vec::new();
    let Some(sections) = record.as_object() else {
        return (Json::Object(out), returned);
    };
    for (section, value) in sections {
        match value {
            Json::Object(fields) => {
                let mut kept = Map::new();
                for (field, value) in fields {
                    let path = format!("{section}.{field}");
                    if let Some(shown) = shown(&path, profile, value) {
                        kept.insert(field.clone(), shown);
                        returned.push(path);
                    }
                }
                if !kept.is_empty() {
                    out.insert(section.clone(), Json::Object(kept));
                }
            }
            // Each appointment is shown as the next one is.
            Json::Array(items) if section == "appointments" => {
                let kept: Vec<Json> = items
                    .iter()
                    .filter_map(|item| {
                        let fields = item.as_object()?;
                        let kept: Map<String, Json> = fields
                            .iter()
                            .filter_map(|(field, value)| {
                                let path = format!("next_appointment.{field}");
                                Some((field.clone(), shown(&path, profile, value)?))
                            })
                            .collect();
                        (!kept.is_empty()).then_some(Json::Object(kept))
                    })
                    .collect();
                if profile >= Profile::Advanced && !kept.is_empty() {
                    out.insert(section.clone(), Json::Array(kept));
                    returned.push(section.clone());
                }
            }
            other => {
                if let Some(shown) = shown(section, profile, other) {
                    out.insert(section.clone(), shown);
                    returned.push(section.clone());
                }
            }
        }
    }
    (Json::Object(out), returned)
}

fn shown(path: &str, profile: Profile, value: &Json) -> Option<Json> {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    if is_sensitive_key(leaf) {
        return None;
    }
    let (least, how) = FIELD_ACCESS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, least, how)| (*least, *how))
        .unwrap_or((Profile::Admin, Shown::Clear));
    if profile < least {
        return None;
    }
    let value = without_sensitive(value)?;
    match (how, &value) {
        (Shown::MaskedBelow(clear_from), Json::String(s)) if profile < clear_from => {
            Some(Json::String(mask_email(s)))
        }
        // Anything but a string where a masked one belongs is not shown masked: not shown.
        (Shown::MaskedBelow(clear_from), _) if profile < clear_from => None,
        _ => Some(value),
    }
}

/// `value` with sensitive keys and card numbers removed at any depth;
/// `None` when `value` itself is a card number.
fn without_sensitive(value: &Json) -> Option<Json> {
    match value {
        Json::String(s) if contains_card_number(s) => None,
        Json::Number(n) if contains_card_number(&n.to_string()) => None,
        Json::Array(items) => Some(Json::Array(
            items.iter().filter_map(without_sensitive).collect(),
        )),
        Json::Object(map) => Some(Json::Object(
            map.iter()
                .filter(|(k, _)| !is_sensitive_key(k))
                .filter_map(|(k, v)| Some((k.clone(), without_sensitive(v)?)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(value: Json) -> LookupDefinition {
        serde_json::from_value(value).expect("definition")
    }

    fn three_sources() -> LookupDefinition {
        definition(json!({
            "sources": [
                { "name": "crm", "connection": "hubspot-main", "operation": "find-contact", "provides": "contact", "deadline_ms": 800 },
                { "name": "crm-backup", "connection": "sf", "operation": "find-contact", "provides": "contact", "deadline_ms": 800, "fallback_for": "crm" },
                { "name": "billing", "connection": "stripe", "operation": "payment-status", "provides": "payment", "deadline_ms": 600 },
                { "name": "calendar", "connection": "cal", "operation": "upcoming-appointments", "provides": "appointments",
                  "input": { "email": "{email}", "days": 30 }, "deadline_ms": 600 }
            ],
            "precedence": { "contact.email": ["crm-backup", "crm"] },
            "cache_ttl_seconds": 60
        }))
    }

    #[test]
    fn a_sound_definition_has_no_problems_and_orders_its_sources() {
        let def = three_sources();
        assert_eq!(def.problems(), Vec::<String>::new());
        assert_eq!(
            def.order_for(Section::Contact, Some("email")),
            ["crm-backup", "crm"]
        );
        assert_eq!(
            def.order_for(Section::Contact, Some("phone")),
            ["crm", "crm-backup"]
        );
        assert_eq!(def.sources[0].input, json!({ "phone": "{phone}" }));
    }

    #[test]
    fn every_mistake_is_named() {
        let def = definition(json!({
            "sources": [
                { "name": "Crm", "connection": "a/b", "operation": "find contact", "provides": "contact", "deadline_ms": 5 },
                { "name": "x", "connection": "c", "operation": "op", "provides": "payment", "deadline_ms": 100,
                  "fallback_for": "y", "input": { "q": "{ssn}" } },
                { "name": "y", "connection": "c", "operation": "op", "provides": "payment", "deadline_ms": 100, "fallback_for": "x" },
                { "name": "z", "connection": "c", "operation": "op", "provides": "contact", "deadline_ms": 100, "fallback_for": "nobody", "input": [1] }
            ],
            "precedence": { "contact.fax": ["x"], "billing": [], "payment": ["ghost"] },
            "cache_ttl_seconds": 100000
        }));
        let problems = def.problems().join("\n");
        for needle in [
            "sources[0].name",
            "sources[0].connection",
            "sources[0].operation",
            "sources[0].deadline_ms",
            "sources[1].input: \"{ssn}\" is not a placeholder",
            "the fallbacks form a cycle",
            "sources[3].fallback_for: no source is named \"nobody\"",
            "sources[3].input: must be a JSON object",
            "precedence[\"contact.fax\"]: contact has no field \"fax\"",
            "precedence[\"contact.fax\"]: \"x\" provides payment, not contact",
            "precedence[\"billing\"]: \"billing\" is not a section",
            "precedence[\"payment\"]: no source is named \"ghost\"",
            "cache_ttl_seconds",
        ] {
            assert!(problems.contains(needle), "{needle} in\n{problems}");
        }
        let empty = definition(json!({ "sources": [] }));
        assert!(empty.problems()[0].contains("1 to 8"));
        assert!(
            serde_json::from_value::<LookupDefinition>(json!({ "sources": [], "extra": 1 }))
                .is_err()
        );
    }

    #[test]
    fn placeholders_are_filled_or_name_what_is_missing() {
        let template =
            json!({ "phone": "{phone}", "who": ["{email}"], "days": 3, "note": "{phone} later" });
        assert_eq!(
            fill_input(&template, Some("+15551234567"), Some("a@b.c")),
            Ok(
                json!({ "phone": "+15551234567", "who": ["a@b.c"], "days": 3, "note": "{phone} later" })
            )
        );
        assert_eq!(fill_input(&template, Some("+1"), None), Err("email"));
    }

    fn record() -> Json {
        json!({
            "contact": {
                "id": "512", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                "phone": "+15551234567", "company": "Analytical Engines", "updated_at": "2026-10-01",
                "attributes": { "tier": "gold", "ssn": "078-05-1120", "note": "4242 4242 4242 4242", "api_token": "x" }
            },
            "payment": {
                "standing": "past_due", "balance": { "amount_minor": 2500, "currency": "USD" },
                "payment_method": { "kind": "card", "brand": "visa", "last4": "4242" },
                "card_number": "4242424242424242"
            },
            "next_appointment": { "starts_at": "2026-12-03T09:00:00Z", "title": "Consultation" },
            "appointments": [{ "starts_at": "2026-12-03T09:00:00Z", "title": "Consultation" }]
        })
    }

    #[test]
    fn each_profile_sees_its_fields_and_nobody_sees_sensitive_ones() {
        let (basic, names) = mask_record(&record(), Profile::Basic);
        assert_eq!(
            basic,
            json!({
                "contact": { "first_name": "Ada", "last_name": "Lovelace", "email": "a***@example.com", "phone": "+15551234567" },
                "next_appointment": { "starts_at": "2026-12-03T09:00:00Z" }
            })
        );
        assert!(
            names.contains(&"contact.email".to_owned())
                && !names.contains(&"contact.company".to_owned())
        );

        let (advanced, _) = mask_record(&record(), Profile::Advanced);
        assert_eq!(advanced["contact"]["email"], "ada@example.com");
        assert_eq!(advanced["contact"]["company"], "Analytical Engines");
        assert_eq!(
            advanced["payment"],
            json!({ "standing": "past_due", "balance": { "amount_minor": 2500, "currency": "USD" } })
        );
        assert_eq!(advanced["appointments"][0]["title"], "Consultation");
        assert!(advanced["contact"].get("id").is_none());

        let (admin, names) = mask_record(&record(), Profile::Admin);
        assert_eq!(admin["contact"]["id"], "512");
        assert_eq!(admin["contact"]["attributes"], json!({ "tier": "gold" }));
        assert_eq!(admin["payment"]["payment_method"]["last4"], "4242");
        assert!(admin["payment"].get("card_number").is_none());
        assert!(!names.iter().any(|n| n.contains("card_number")));
    }

    #[test]
    fn sensitive_keys_in_any_case_and_card_numbers_anywhere_are_dropped() {
        for key in [
            "nationalId",
            "National-ID",
            "cardNumber",
            "bankAccountNumber",
            "socialSecurityNumber",
            "taxId",
            "api_key",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        assert!(!is_sensitive_key("first_name"));
        let record = json!({
            "contact": { "attributes": { "note": "card 4242 4242 4242 4242 on file", "pin": 4242424242424242u64, "tier": "gold" } },
            "appointments": [{ "starts_at": "2026-12-03T09:00:00Z", "title": "Consultation", "contact_id": "512" }]
        });
        let (admin, _) = mask_record(&record, Profile::Admin);
        assert_eq!(admin["contact"]["attributes"], json!({ "tier": "gold" }));
        let (advanced, _) = mask_record(&record, Profile::Advanced);
        // Appointments follow the next appointment's rules: no contact id below admin.
        assert_eq!(
            advanced["appointments"],
            json!([{ "starts_at": "2026-12-03T09:00:00Z", "title": "Consultation" }])
        );
        let (basic, _) = mask_record(
            &json!({ "contact": { "email": ["ada@example.com"] }, "appointments": [{ "starts_at": "x" }] }),
            Profile::Basic,
        );
        assert_eq!(basic, json!({}));
    }

    #[test]
    fn card_numbers_are_told_from_other_digits() {
        assert!(looks_like_card_number("4242 4242 4242 4242"));
        assert!(looks_like_card_number("5555-5555-5555-4444"));
        assert!(!looks_like_card_number("4242 4242 4242 4241"));
        assert!(!looks_like_card_number("+15551234567"));
        assert!(!looks_like_card_number("4242"));
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_email("nope"), "***");
        assert!(Profile::Basic < Profile::Advanced && Profile::Advanced < Profile::Admin);
    }
}
