//! Events as they enter the host, and which subscriptions they match: the
//! envelope and its checks, event-type patterns, and field filters. Pure:
//! the event flow (acceptance, fan-out, delivery) is built on these.
//!
//! A type pattern is an exact type (`call.ended`), a prefix with a final
//! `*` segment (`call.*` matches `call.ended` and `call.transfer.started`,
//! not `call` itself), or `*` for every type.
//!
//! A filter is a list of conditions that must all hold. Each names a field
//! of the envelope by a dotted path (`type`, `source`, `subject`,
//! `data.customer.tier`, `data.items.0.sku`: a number segment indexes an
//! array) and a test: `eq` (equal JSON; numbers compare by value at any
//! depth, `1` equals `1.0`), `in` (equal to one of a list), `exists` (`true`: present and not
//! null; `false`: absent or null), and `gt`, `gte`, `lt`, `lte` against a
//! number (a field that is not a number never passes).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Longest event id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest event type, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest `source` or `subject`, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 32;
/// Most values in one `in` list.
pub const MAX_IN_VALUES: usize = 100;
/// Most segments in a field path.
pub const MAX_PATH_SEGMENTS: usize = 16;

/// An event: what happened, where, about whom, and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unique per source system; resubmitting it creates nothing new.
    pub id: String,
    /// Dotted lowercase words, e.g. `call.ended`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The system it came from, e.g. `cc-hub`.
    pub source: String,
    /// When it happened: RFC 3339 (`2026-12-02T10:00:00Z`).
    pub occurred_at: String,
    /// Whom it is about (a customer id, a phone number), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The event's own data.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Json,
}

impl Event {
    /// Everything wrong with the envelope, each naming its field; empty when
    /// it may be accepted.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_id(&self.id) {
            problems.push(format!(
                "id: 1-{MAX_ID_BYTES} characters among letters, digits and . _ : -"
            ));
        }
        if !is_type(&self.kind) {
            problems.push(format!(
                "type: dotted lowercase words (e.g. call.ended), at most {MAX_TYPE_BYTES} characters"
            ));
        }
        if self.source.trim().is_empty()
            || self.source.len() > MAX_TEXT_BYTES
            || self.source.chars().any(char::is_control)
        {
            problems.push(format!(
                "source: 1-{MAX_TEXT_BYTES} characters, no control characters"
            ));
        }
        if let Some(subject) = &self.subject
            && (subject.len() > MAX_TEXT_BYTES || subject.chars().any(char::is_control))
        {
            problems.push(format!(
                "subject: at most {MAX_TEXT_BYTES} characters, no control characters"
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.occurred_at).is_err() {
            problems.push(
                "occurred_at: an RFC 3339 time with its offset (e.g. 2026-12-02T10:00:00Z)".into(),
            );
        }
        problems
    }

    /// The envelope as JSON, for filters to read (`type`, `data.…`).
    fn as_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }
}

/// Whether `id` is an acceptable event id.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Whether `kind` is an acceptable event type: dotted words of lowercase
/// letters, digits, `_` and `-`.
pub fn is_type(kind: &str) -> bool {
    kind.len() <= MAX_TYPE_BYTES && kind.split('.').all(is_type_word)
}

fn is_type_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why a type pattern is not one (see the module's documentation).
pub fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern == "*" {
        return None;
    }
    let fixed = pattern.strip_suffix(".*").unwrap_or(pattern);
    if pattern.len() <= MAX_TYPE_BYTES && fixed.split('.').all(is_type_word) {
        None
    } else {
        Some(format!(
            "{pattern:?} is not an event type, a prefix ending in .* (call.*), or *"
        ))
    }
}

/// Whether event type `kind` matches `pattern`.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => kind
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
        None => pattern == kind,
    }
}

/// One condition of a filter, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A dotted path into the envelope (`data.customer.tier`).
    pub field: String,
    /// `eq`, `in`, `exists`, `gt`, `gte`, `lt` or `lte`.
    pub op: String,
    /// What the test compares against (`exists` takes `true` or `false`,
    /// `true` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub value: Option<Json>,
}

/// Everything wrong with `filter`, each naming the condition; empty when
/// it may be saved.
pub fn filter_problems(filter: &[Condition]) -> Vec<String> {
    let mut problems = Vec::new();
    if filter.len() > MAX_CONDITIONS {
        problems.push(format!("filter: at most {MAX_CONDITIONS} conditions"));
    }
    for (i, condition) in filter.iter().enumerate() {
        let at = format!("filter[{i}]");
        if !is_path(&condition.field) {
            problems.push(format!(
                "{at}.field: a dotted path of 1-{MAX_PATH_SEGMENTS} names (e.g. data.customer.tier)"
            ));
        }
        let value = condition.value.as_ref();
        let problem = match condition.op.as_str() {
            "eq" if value.is_none() => Some("eq needs a value"),
            "in" => match value {
                Some(Json::Array(values)) if values.len() <= MAX_IN_VALUES => None,
                _ => Some("in needs a list of at most 100 values"),
            },
            "exists" => match value {
                None | Some(Json::Bool(_)) => None,
                _ => Some("exists takes true or false"),
            },
            "gt" | "gte" | "lt" | "lte" if !value.is_some_and(Json::is_number) => {
                Some("a comparison needs a number")
            }
            "eq" | "gt" | "gte" | "lt" | "lte" => None,
            _ => Some("op must be eq, in, exists, gt, gte, lt or lte"),
        };
        if let Some(problem) = problem {
            problems.push(format!("{at}: {problem}"));
        }
    }
    problems
}

/// Whether `event` passes every condition of `filter` (an empty filter
/// passes everything). A condition [`filter_problems`] refuses never passes.
pub fn passes(filter: &[Condition], event: &Event) -> bool {
    if filter.is_empty() {
        return true;
    }
    passes_envelope(filter, &event.as_json())
}

/// [`passes`] on an event already turned into JSON (one conversion for
/// every subscription an event is matched against).
pub fn passes_envelope(filter: &[Condition], envelope: &Json) -> bool {
    filter.iter().all(|c| holds(c, field(envelope, &c.field)))
}

/// Most type patterns in a subscription.
pub const MAX_TYPES: usize = 20;

/// A plugin operation on a stored connection of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The connection's name.
    pub connection: String,
    /// The operation of the connection's plugin.
    pub operation: String,
}

/// Which events go where: the types and filter an event must match, the
/// operation that receives it, an optional transform on the way, and how
/// deliveries are retried and paced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Event type patterns (`call.ended`, `call.*`, `*`); an event matching
    /// any of them is considered.
    pub types: Vec<String>,
    /// Conditions the event must all meet (see the module's documentation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Condition>,
    /// The operation (an `action`) each matching event is delivered to.
    pub destination: Endpoint,
    /// A `transform` operation that maps the event to the destination's
    /// input; without one the destination receives the event envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Endpoint>,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: crate::delivery::RetryPolicy,
    /// At most this many deliveries started per window; the rest wait
    /// (without using an attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::rate::RateLimit>,
    /// A disabled subscription matches nothing; its pending deliveries wait.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl Subscription {
    /// Everything wrong with the subscription as written, each naming its
    /// field; empty when it may be saved. (Whether its connections and
    /// operations exist is the tenancy's to check.)
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.types.is_empty() || self.types.len() > MAX_TYPES {
            problems.push(format!("types: 1-{MAX_TYPES} event type patterns"));
        }
        for (i, pattern) in self.types.iter().enumerate() {
            if let Some(problem) = pattern_problem(pattern) {
                problems.push(format!("types[{i}]: {problem}"));
            }
        }
        problems.extend(filter_problems(&self.filter));
        for (at, endpoint) in std::iter::once(("destination", &self.destination))
            .chain(self.transform.as_ref().map(|t| ("transform", t)))
        {
            if endpoint.connection.is_empty() {
                problems.push(format!("{at}.connection: a connection name"));
            }
            if endpoint.operation.is_empty() || endpoint.operation.len() > MAX_TEXT_BYTES {
                problems.push(format!("{at}.operation: an operation name"));
            }
        }
        problems.extend(
            self.retry
                .problems()
                .into_iter()
                .map(|p| format!("retry.{p}")),
        );
        if let Some(limit) = self.rate_limit
            && (limit.validate().is_none() || limit.per_seconds > 86_400)
        {
            problems.push(
                "rate_limit: requests and per_seconds above 0, per_seconds at most 86400".into(),
            );
        }
        problems
    }

    /// Whether an event of type `kind`, as JSON `envelope`, is to be
    /// delivered: enabled, a type pattern matches, the filter passes.
    pub fn matches(&self, kind: &str, envelope: &Json) -> bool {
        self.enabled
            && self.types.iter().any(|p| type_matches(p, kind))
            && passes_envelope(&self.filter, envelope)
    }
}

/// Whether `path` is a dotted path of 1 to [`MAX_PATH_SEGMENTS`] names.
fn is_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').count() <= MAX_PATH_SEGMENTS
        && path.split('.').all(|s| !s.is_empty())
}

fn field<'a>(envelope: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(envelope, |at, segment| match at {
        Json::Object(map) => map.get(segment),
        Json::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn holds(condition: &Condition, found: Option<&Json>) -> bool {
    if !is_path(&condition.field) {
        return false;
    }
    let value = condition.value.as_ref();
    let present = found.filter(|v| !v.is_null());
    match condition.op.as_str() {
        "exists" => {
            let wanted = value.and_then(Json::as_bool).unwrap_or(true);
            present.is_some() == wanted
        }
        "eq" => match (present, value) {
            (Some(found), Some(value)) => same(found, value),
            _ => false,
        },
        "in" => match (present, value) {
            (Some(found), Some(Json::Array(values))) => values.iter().any(|v| same(found, v)),
            _ => false,
        },
        op @ ("gt" | "gte" | "lt" | "lte") => {
            let (Some(found), Some(bound)) =
                (present.and_then(Json::as_f64), value.and_then(Json::as_f64))
            else {
                return false;
            };
            match op {
                "gt" => found > bound,
                "gte" => found >= bound,
                "lt" => found < bound,
                _ => found <= bound,
            }
        }
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`1` is `1.0`), at any
/// depth; whole numbers exactly, whatever their size.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                // One negative, one above i64::MAX.
                false
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subscription(value: Json) -> Subscription {
        serde_json::from_value(value).expect("subscription")
    }

    #[test]
    fn a_subscription_matches_by_type_filter_and_enabled() {
        let mut sub = subscription(json!({
            "types": ["call.*", "case.closed"],
            "filter": [{"field": "data.duration_s", "op": "gte", "value": 10}],
            "destination": {"connection": "crm", "operation": "log-call"}
        }));
        assert!(sub.problems().is_empty(), "{:?}", sub.problems());
        assert_eq!(sub.retry, crate::delivery::RetryPolicy::default());
        let long = event(json!({"duration_s": 30}));
        let envelope = serde_json::to_value(&long).expect("json");
        assert!(sub.matches("call.ended", &envelope));
        assert!(sub.matches("case.closed", &envelope));
        assert!(!sub.matches("case.opened", &envelope), "no pattern matches");
        let short = serde_json::to_value(event(json!({"duration_s": 3}))).expect("json");
        assert!(!sub.matches("call.ended", &short), "the filter fails");
        sub.enabled = false;
        assert!(!sub.matches("call.ended", &envelope), "disabled");
    }

    #[test]
    fn a_subscriptions_problems_name_each_field() {
        let sub = subscription(json!({
            "types": ["Call.Ended", "*"],
            "filter": [{"field": "data..x", "op": "eq", "value": 1}],
            "destination": {"connection": "", "operation": "log-call"},
            "transform": {"connection": "maps", "operation": ""},
            "retry": {"max_attempts": 0},
            "rate_limit": {"requests": 0, "per_seconds": 1}
        }));
        let problems = sub.problems().join("\n");
        for field in [
            "types[0]",
            "filter[0].field",
            "destination.connection",
            "transform.operation",
            "retry.max_attempts",
            "rate_limit",
        ] {
            assert!(
                problems.contains(field),
                "{field} not named in:\n{problems}"
            );
        }
        assert!(!problems.contains("types[1]"), "* is a pattern");
        let none = subscription(json!({
            "types": [], "destination": {"connection": "crm", "operation": "x"}
        }));
        assert!(none.problems().iter().any(|p| p.starts_with("types:")));
        let unknown = serde_json::from_value::<Subscription>(json!({
            "types": ["*"], "destination": {"connection": "crm", "operation": "x"},
            "retries": 3
        }));
        assert!(unknown.is_err(), "an unknown field is refused, not ignored");
    }

    fn event(data: Json) -> Event {
        serde_json::from_value(json!({
            "id": "evt_01HZX", "type": "call.ended", "source": "cc-hub",
            "occurred_at": "2026-12-02T10:00:00Z", "subject": "+16502530000", "data": data
        }))
        .expect("event")
    }

    fn condition(field: &str, op: &str, value: Option<Json>) -> Condition {
        Condition {
            field: field.into(),
            op: op.into(),
            value,
        }
    }

    #[test]
    fn a_well_formed_envelope_has_no_problems_and_each_bad_field_is_named() {
        assert_eq!(event(json!({})).problems(), Vec::<String>::new());
        for (field, value, named) in [
            ("id", json!(""), "id:"),
            ("id", json!("evt 1"), "id:"),
            ("id", json!("e".repeat(129)), "id:"),
            ("type", json!("Call.Ended"), "type:"),
            ("type", json!("call..ended"), "type:"),
            ("type", json!(""), "type:"),
            ("source", json!(" "), "source:"),
            ("source", json!("hub\u{7}"), "source:"),
            ("subject", json!("x".repeat(257)), "subject:"),
            ("occurred_at", json!("yesterday"), "occurred_at:"),
            ("occurred_at", json!("2026-12-02T10:00:00"), "occurred_at:"),
        ] {
            let mut raw = serde_json::to_value(event(json!({}))).expect("json");
            raw[field] = value.clone();
            let bad: Event = serde_json::from_value(raw).expect("shape");
            let problems = bad.problems();
            assert!(
                problems.len() == 1 && problems[0].starts_with(named),
                "{field} = {value}: {problems:?}"
            );
        }
        for time in [
            "2026-12-02T10:00:00+01:00",
            "2026-12-02T10:00:00.123-08:00",
            "2026-12-02T10:00:00z",
        ] {
            let mut ok = event(json!({}));
            ok.occurred_at = time.into();
            assert_eq!(ok.problems(), Vec::<String>::new(), "{time}");
        }
        // Unknown envelope fields are refused, not dropped.
        assert!(
            serde_json::from_value::<Event>(json!({
                "id": "e", "type": "a", "source": "s", "occurred_at": "2026-12-02T10:00:00Z", "extra": 1
            }))
            .is_err()
        );
    }

    #[test]
    fn type_patterns_match_exactly_by_prefix_or_everything() {
        for (pattern, kind, matches) in [
            ("call.ended", "call.ended", true),
            ("call.ended", "call.ended.late", false),
            ("call.*", "call.ended", true),
            ("call.*", "call.transfer.started", true),
            ("call.*", "call", false),
            ("call.*", "callback.ended", false),
            ("*", "case.updated", true),
        ] {
            assert_eq!(type_matches(pattern, kind), matches, "{pattern} ~ {kind}");
        }
        for good in ["*", "call.*", "call.ended", "case"] {
            assert_eq!(pattern_problem(good), None, "{good}");
        }
        for bad in ["", "call.", "*.ended", "call*", "Call.*", "call.**"] {
            assert!(pattern_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn filters_test_fields_of_the_envelope_and_its_data() {
        let e = event(
            json!({ "duration_seconds": 95, "agent": { "team": "billing" }, "tags": ["vip", "callback"], "note": null }),
        );
        for (c, expected) in [
            (condition("type", "eq", Some(json!("call.ended"))), true),
            (
                condition("source", "in", Some(json!(["crm", "cc-hub"]))),
                true,
            ),
            (condition("source", "in", Some(json!(["crm"]))), false),
            (condition("subject", "exists", None), true),
            (condition("data.missing", "exists", None), false),
            (
                condition("data.missing", "exists", Some(json!(false))),
                true,
            ),
            (condition("data.note", "exists", None), false),
            (
                condition("data.agent.team", "eq", Some(json!("billing"))),
                true,
            ),
            (condition("data.tags.0", "eq", Some(json!("vip"))), true),
            (condition("data.tags.5", "exists", None), false),
            (
                condition("data.agent", "eq", Some(json!({ "team": "billing" }))),
                true,
            ),
            (
                condition("data.tags", "eq", Some(json!(["vip", "callback"]))),
                true,
            ),
            (condition("data.tags", "eq", Some(json!(["vip"]))), false),
            (
                condition("data.duration_seconds", "eq", Some(json!(95.0))),
                true,
            ),
            (
                condition("data.duration_seconds", "gt", Some(json!(60))),
                true,
            ),
            (
                condition("data.duration_seconds", "gte", Some(json!(95))),
                true,
            ),
            (
                condition("data.duration_seconds", "lt", Some(json!(95))),
                false,
            ),
            (
                condition("data.duration_seconds", "lte", Some(json!(95.5))),
                true,
            ),
            // A field that is not a number never passes a comparison.
            (condition("data.agent.team", "gt", Some(json!(0))), false),
            (condition("data.missing", "lt", Some(json!(1000))), false),
        ] {
            assert_eq!(
                filter_problems(std::slice::from_ref(&c)),
                Vec::<String>::new()
            );
            assert_eq!(passes(std::slice::from_ref(&c), &e), expected, "{c:?}");
        }
        // All conditions must hold; none at all passes everything.
        let both = [
            condition("data.duration_seconds", "gt", Some(json!(60))),
            condition("data.agent.team", "eq", Some(json!("sales"))),
        ];
        assert!(!passes(&both, &e));
        assert!(passes(&[], &e));
    }

    #[test]
    fn numbers_compare_by_value_at_any_depth_and_exactly_when_whole() {
        assert!(same(&json!({ "n": 1 }), &json!({ "n": 1.0 })));
        assert!(same(&json!([1, [2.0]]), &json!([1.0, [2]])));
        assert!(!same(&json!(u64::MAX), &json!(u64::MAX - 1)));
        assert!(same(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!same(&json!(-1), &json!(u64::MAX)));
        assert!(!same(&json!({ "n": 1 }), &json!({ "n": 1, "m": 2 })));
    }

    #[test]
    fn bad_filters_are_refused_naming_each_condition() {
        let filter = [
            condition("", "eq", Some(json!(1))),
            condition("data.x", "eq", None),
            condition("data.x", "in", Some(json!("vip"))),
            condition("data.x", "gt", Some(json!("10"))),
            condition("data.x", "exists", Some(json!("yes"))),
            condition("data.x", "matches", Some(json!(".*"))),
            condition("data..x", "eq", Some(json!(1))),
        ];
        let problems = filter_problems(&filter);
        assert_eq!(problems.len(), 7, "{problems:?}");
        for (i, problem) in problems.iter().enumerate() {
            assert!(problem.starts_with(&format!("filter[{i}]")), "{problem}");
        }
        let too_many = vec![condition("type", "exists", None); MAX_CONDITIONS + 1];
        assert!(filter_problems(&too_many)[0].starts_with("filter:"));
        let long_in = [condition(
            "type",
            "in",
            Some(json!(vec![1; MAX_IN_VALUES + 1])),
        )];
        assert_eq!(filter_problems(&long_in).len(), 1);
        // A refused condition never passes, whatever the event.
        assert!(!passes(&filter[5..6], &event(json!({ "x": 1 }))));
        for path in ["", "data..x"] {
            let absent = [condition(path, "exists", Some(json!(false)))];
            assert!(!passes(&absent, &event(json!({}))), "{path:?}");
        }
    }
}
