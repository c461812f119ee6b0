//! The operations' JSON Schemas: built at install with their cost bounded.
//!
//! What makes a schema expensive in jsonschema 0.61, and what closes it:
//! - a `pattern` a backtracking engine runs in exponential time: patterns run
//!   on the linear-time `regex` engine, and those that need backtracking
//!   (look-around, back-references) are refused at install;
//! - `$ref` chains through `anyOf`/`oneOf`/`allOf` that a small schema turns
//!   into millions of subschemas (20 levels of two branches: 2^20 evaluations
//!   per value, 12 s): the schema with its references expanded is limited to
//!   [`MAX_EXPANDED_SUBSCHEMAS`] at install;
//! - whatever cost remains (large outputs, recursive schemas): the runtime
//!   runs the check on a blocking thread raced against the call's deadline.

use crate::text::cap_message;
use serde_json::Value as Json;

/// Subschemas a schema may expand to once its local `$ref`s are inlined (a
/// reference back into its own expansion counted once). Hand-written
/// connector schemas stay in the hundreds.
pub const MAX_EXPANDED_SUBSCHEMAS: usize = 5_000;

/// Keywords not applied to an instance: data, or definitions that cost
/// something only where a `$ref` reaches them (and are counted there).
const NOT_APPLIED: &[&str] = &[
    "const",
    "enum",
    "default",
    "examples",
    "description",
    "title",
    "$defs",
    "definitions",
];

/// A validator for `schema`, refused when it could cost more than a call can
/// afford: see the module's notes.
pub fn schema_validator(schema: &Json) -> Result<jsonschema::Validator, String> {
    bounded_validator(schema).map(|bounded| bounded.validator)
}

/// A validator with the bound on its cost it was accepted under.
#[derive(Debug)]
pub struct BoundedValidator {
    /// The compiled schema.
    pub validator: jsonschema::Validator,
    /// Subschemas the schema expands to with its references inlined (at
    /// most [`MAX_EXPANDED_SUBSCHEMAS`]). One value node meets each at most
    /// once, so checking a document of `n` bytes (hence at most `n` nodes)
    /// costs at most `subschemas × n` subschema applications.
    pub subschemas: usize,
}

impl BoundedValidator {
    /// The most subschema applications checking a JSON text of `bytes`
    /// bytes can take.
    pub fn work_bound(&self, bytes: usize) -> usize {
        self.subschemas.max(1).saturating_mul(bytes.max(1))
    }
}

/// [`schema_validator`], with the cost bound it was accepted under.
pub fn bounded_validator(schema: &Json) -> Result<BoundedValidator, String> {
    // The cost bound below follows references as JSON pointers into this
    // document; anything the validator would resolve some other way could
    // hide an expansion from it, so it is refused.
    if let Some(problem) = unbounded_reference(schema, schema, true) {
        return Err(problem);
    }
    let mut expansion = Expansion::default();
    expand(schema, schema, &mut Vec::new(), &mut expansion);
    if expansion.count > MAX_EXPANDED_SUBSCHEMAS {
        return Err(format!(
            "expands to more than {MAX_EXPANDED_SUBSCHEMAS} subschemas through its $refs; \
             validating against it could take longer than any call"
        ));
    }
    for target in expansion.recursive {
        let Some(resolved) = target.strip_prefix('#').and_then(|p| schema.pointer(p)) else {
            continue;
        };
        if recursions(schema, resolved, target, &mut vec![target]) > 1 {
            return Err(format!(
                "recursive reference {target:?} can apply more than once to the same nested \
                 value: validation time would double with each level of nesting"
            ));
        }
    }
    let subschemas = expansion.count;
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map(|validator| BoundedValidator {
            validator,
            subschemas,
        })
        .map_err(|e| {
            let message = e.to_string();
            if message.contains("is not a \"regex\"") {
                format!(
                    "{message} (patterns run on a linear-time engine: look-around and back-references are not supported)"
                )
            } else {
                message
            }
        })
}

/// A reference the cost bound cannot follow: a dynamic or recursive
/// reference, a reference by anchor or URI, a pointer that does not resolve
/// (or is percent-encoded), or a nested `$id` (which re-bases the pointers
/// under it).
fn unbounded_reference(root: &Json, node: &Json, at_root: bool) -> Option<String> {
    match node {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$dynamicRef" | "$recursiveRef", _) => {
                        return Some(format!(
                            "{key} is not supported: write references as local JSON pointers (\"#/$defs/…\")"
                        ));
                    }
                    ("$id", Json::String(_)) if !at_root => {
                        return Some(
                            "$id inside a schema is not supported: keep one document, referenced by local JSON pointers".into(),
                        );
                    }
                    ("$ref", Json::String(target)) => {
                        let resolves = target
                            .strip_prefix('#')
                            .filter(|pointer| !pointer.contains('%'))
                            .is_some_and(|pointer| root.pointer(pointer).is_some());
                        if !resolves {
                            return Some(format!(
                                "$ref {:?} is not a local JSON pointer that resolves in the schema (\"#/$defs/…\")",
                                target.chars().take(64).collect::<String>()
                            ));
                        }
                    }
                    (keyword, _)
                        if NOT_APPLIED.contains(&keyword)
                            && keyword != "$defs"
                            && keyword != "definitions" => {}
                    _ => {
                        if let Some(problem) = unbounded_reference(root, value, false) {
                            return Some(problem);
                        }
                    }
                }
            }
            None
        }
        Json::Array(items) => items
            .iter()
            .find_map(|item| unbounded_reference(root, item, false)),
        _ => None,
    }
}

#[derive(Default)]
struct Expansion<'a> {
    count: usize,
    /// References met again inside their own expansion.
    recursive: Vec<&'a str>,
}

/// Count the subschemas of `node` with local `$ref`s inlined, stopping as
/// soon as the count passes the limit.
fn expand<'a>(root: &'a Json, node: &'a Json, refs: &mut Vec<&'a str>, out: &mut Expansion<'a>) {
    if out.count > MAX_EXPANDED_SUBSCHEMAS {
        return;
    }
    match node {
        Json::Object(map) => {
            out.count += 1;
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref" | "$dynamicRef" | "$recursiveRef", Json::String(target)) => {
                        let Some(pointer) = target.strip_prefix('#') else {
                            continue;
                        };
                        // A reference back into its own expansion is recursion
                        // over the instance, bounded by the instance itself.
                        if refs.contains(&target.as_str()) {
                            if !out.recursive.contains(&target.as_str()) {
                                out.recursive.push(target);
                            }
                            continue;
                        }
                        if let Some(resolved) = root.pointer(pointer) {
                            refs.push(target);
                            expand(root, resolved, refs, out);
                            refs.pop();
                        }
                    }
                    (keyword, _) if NOT_APPLIED.contains(&keyword) => {}
                    _ => expand(root, value, refs, out),
                }
            }
        }
        Json::Array(items) => {
            for item in items {
                expand(root, item, refs, out);
            }
        }
        _ => {}
    }
}

/// How many references to `target` one validation against `node` can follow
/// for the same nested value. Distinct `properties` (and `prefixItems`
/// positions) apply to distinct values, so they count as their maximum;
/// everything else (`anyOf` branches, `allOf`, overlapping patterns…) adds
/// up. More than one means the work doubles at each level of nesting.
fn recursions<'a>(root: &'a Json, node: &'a Json, target: &str, refs: &mut Vec<&'a str>) -> u64 {
    let sum = |nodes: &mut dyn Iterator<Item = &'a Json>, refs: &mut Vec<&'a str>| {
        nodes.fold(0u64, |n, child| {
            n.saturating_add(recursions(root, child, target, refs))
        })
    };
    match node {
        Json::Object(map) => {
            let mut total = 0u64;
            for (key, value) in map {
                let here = match (key.as_str(), value) {
                    ("$ref" | "$dynamicRef" | "$recursiveRef", Json::String(to)) => {
                        if to == target {
                            1
                        } else if refs.contains(&to.as_str()) {
                            0
                        } else if let Some(resolved) =
                            to.strip_prefix('#').and_then(|p| root.pointer(p))
                        {
                            refs.push(to);
                            let n = recursions(root, resolved, target, refs);
                            refs.pop();
                            n
                        } else {
                            0
                        }
                    }
                    (keyword, _) if NOT_APPLIED.contains(&keyword) => 0,
                    ("properties" | "prefixItems", Json::Object(_) | Json::Array(_)) => {
                        let children: Vec<&Json> = match value {
                            Json::Object(m) => m.values().collect(),
                            Json::Array(a) => a.iter().collect(),
                            _ => Vec::new(),
                        };
                        children
                            .into_iter()
                            .map(|child| recursions(root, child, target, refs))
                            .max()
                            .unwrap_or(0)
                    }
                    (_, Json::Object(m)) if !is_schema_object(key) => sum(&mut m.values(), refs),
                    (_, Json::Array(a)) => sum(&mut a.iter(), refs),
                    (_, child @ Json::Object(_)) => recursions(root, child, target, refs),
                    _ => 0,
                };
                total = total.saturating_add(here);
            }
            total
        }
        Json::Array(items) => sum(&mut items.iter(), refs),
        _ => 0,
    }
}

/// Keywords whose object value is itself one schema (rather than a map of them).
fn is_schema_object(keyword: &str) -> bool {
    !matches!(
        keyword,
        "patternProperties" | "dependentSchemas" | "dependencies"
    )
}

/// Every schema violation (the first 20), each naming where in the document it is.
pub fn schema_errors(validator: &jsonschema::Validator, value: &Json) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(20)
        .map(|e| {
            let at = e.instance_path().to_string();
            // A violation quotes the value at fault, which may be megabytes.
            cap_message(if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ref_chain;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const REF: &str = r##"{ "type": "array", "items": { "$ref": "#/$defs/node" } }"##;

    /// A recursive `node` whose `combinator` has `branches` (`$REF` stands for REF).
    fn recursive(combinator: &str, branches: &[&str]) -> Json {
        let branches: Vec<String> = branches.iter().map(|b| b.replace("$REF", REF)).collect();
        let text = format!(
            r##"{{ "$defs": {{ "node": {{ "{combinator}": [{}] }} }}, "$ref": "#/$defs/node" }}"##,
            branches.join(", ")
        );
        serde_json::from_str(&text).expect("schema")
    }

    #[test]
    fn refuses_schemas_that_expand_past_the_limit_or_need_backtracking() {
        let tree = json!({
            "$defs": { "node": { "type": "object", "properties": {
                "children": { "type": "array", "items": { "$ref": "#/$defs/node" } } } } },
            "$ref": "#/$defs/node"
        });
        let cases = [
            (json!({}), None),
            (
                json!({ "type": "string", "pattern": "^[a-z]+(-[a-z]+)*$" }),
                None,
            ),
            (json!({ "pattern": "^(a+)+$" }), None),
            (tree, None),
            (ref_chain("anyOf", 8), None),
            (recursive("anyOf", &["{ \"type\": \"string\" }", REF]), None),
            (
                recursive("anyOf", &[REF, REF]),
                Some("can apply more than once"),
            ),
            (
                recursive("allOf", &[REF, REF]),
                Some("can apply more than once"),
            ),
            (
                recursive("oneOf", &[REF, "{ \"not\": $REF }"]),
                Some("can apply more than once"),
            ),
            (ref_chain("anyOf", 20), Some("expands to more than")),
            (ref_chain("oneOf", 20), Some("expands to more than")),
            (ref_chain("allOf", 20), Some("expands to more than")),
            (json!({ "pattern": "^(?=a)(a+)+$" }), Some("look-around")),
            (json!({ "pattern": "^(a+)\\1$" }), Some("back-references")),
            (json!({ "type": "strin" }), Some("strin")),
        ];
        for (schema, refused) in cases {
            match (schema_validator(&schema), refused) {
                (Ok(_), None) => {}
                (Err(e), Some(expected)) => assert!(e.contains(expected), "{schema}: {e}"),
                (result, _) => panic!("{schema}: {:?}", result.map(|_| "built")),
            }
        }
    }

    #[test]
    fn the_cost_bound_counts_subschemas_with_references_inlined() {
        let cases = [
            (json!({}), 1),
            // The `properties` map counts as one too: the bound errs high.
            (
                json!({ "type": "object", "properties": { "a": { "type": "string" } } }),
                3,
            ),
            (
                json!({ "$defs": { "s": { "type": "string" } },
                        "properties": { "a": { "$ref": "#/$defs/s" }, "b": { "$ref": "#/$defs/s" } } }),
                // The root, the map, the two property schemas, and the
                // definition once per reference.
                6,
            ),
            // Each level: itself, and two references each expanding the next.
            (ref_chain("anyOf", 3), 30),
        ];
        for (schema, subschemas) in cases {
            let bounded = bounded_validator(&schema).expect("built");
            assert_eq!(bounded.subschemas, subschemas, "{schema}");
            assert_eq!(bounded.work_bound(100), subschemas * 100, "{schema}");
        }
    }

    #[test]
    fn a_schema_just_under_the_limit_validates_quickly() {
        // 2^10 paths (about 4000 subschemas): just under the limit (one
        // level deeper is refused), and cheap to check.
        assert!(schema_validator(&ref_chain("anyOf", 11)).is_err());
        let validator = schema_validator(&ref_chain("anyOf", 10)).expect("built");
        let started = Instant::now();
        assert_eq!(schema_errors(&validator, &json!("x")).len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn violations_name_where_and_are_capped() {
        let validator =
            schema_validator(&json!({ "items": { "type": "integer" } })).expect("built");
        let long = "v".repeat(100_000);
        let problems = schema_errors(&validator, &json!([1, long]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("at /1: "), "{}", &problems[0][..40]);
        assert!(problems[0].contains("[truncated"), "capped");
    }

    #[test]
    fn references_the_bound_cannot_follow_are_refused() {
        let refused = [
            json!({ "$defs": { "a": { "$anchor": "a", "type": "integer" } }, "$ref": "#a" }),
            json!({ "$defs": { "a": { "$id": "urn:x", "type": "integer" } }, "$ref": "urn:x" }),
            json!({ "$defs": { "a": { "type": "integer" } }, "$ref": "#/%24defs/a" }),
            json!({ "$ref": "#/$defs/missing" }),
            json!({ "$dynamicRef": "#node" }),
            json!({ "items": { "$recursiveRef": "#" } }),
            json!({ "$defs": { "a": { "anyOf": [{ "$ref": "https://example.com/s" }] } } }),
            json!({ "properties": { "x": { "$id": "urn:y", "type": "string" } } }),
        ];
        for schema in refused {
            let error = schema_validator(&schema)
                .err()
                .unwrap_or_else(|| panic!("{schema}: built"));
            assert!(error.contains("not"), "{schema}: {error}");
        }
        let fine = json!({
            "$id": "urn:root",
            "$defs": { "phone": { "type": "string" } },
            "properties": { "$ref": { "type": "string" }, "p": { "$ref": "#/$defs/phone" } }
        });
        schema_validator(&fine).expect("local pointers are fine");
    }
}
