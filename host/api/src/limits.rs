//! The limits the server enforces on what a caller sends, written into the
//! API description from the same constants the checks use, so a generated
//! client knows them and the two cannot drift apart unnoticed (the tests
//! below hold each pattern against the check it describes).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, Schema};
use utoipa::openapi::{OpenApi, RefOr};

/// Largest request body any route accepts (an invocation's input is
/// further held to the operator's `max_input_bytes`).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Largest install request: a component of up to 64 MiB in base64, plus its manifest.
pub(crate) const MAX_INSTALL_BODY_BYTES: usize = 90 * 1024 * 1024;

/// Workspace ids, connection names, plugin ids and operation names
/// (`package::manifest::is_slug`): 1-64 lowercase letters, digits or inner dashes.
pub(super) const SLUG_PATTERN: &str = "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$";
pub(super) const SLUG_MAX: usize = 64;
/// Credential names: a slug that may also use `_` where it may use `-`.
pub(super) const CREDENTIAL_NAME_PATTERN: &str = "^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$";
/// Token ids as `tenancy::tokens::generate` makes them.
pub(super) const TOKEN_ID_PATTERN: &str = "^tok_[0-9a-f]{16}$";
/// A token label: 1-100 characters, none of them a control character.
pub(super) const LABEL_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// `GET …/audit?limit=`: records per page.
pub(super) const AUDIT_PAGE: std::ops::RangeInclusive<usize> = 1..=1000;

/// A string's limits: pattern, and length in characters.
struct StringLimit {
    pattern: &'static str,
    max_length: usize,
}

const SLUG: StringLimit = StringLimit {
    pattern: SLUG_PATTERN,
    max_length: SLUG_MAX,
};

/// The limit of the path parameter `name` on `path`, if it has one.
fn path_parameter(path: &str, name: &str) -> Option<StringLimit> {
    match name {
        "ws" | "name" | "op" => Some(SLUG),
        "id" if path.starts_with("/v1/plugins/") => Some(SLUG),
        "id" if path.contains("/tokens/") => Some(StringLimit {
            pattern: TOKEN_ID_PATTERN,
            max_length: 20,
        }),
        "credential" => Some(StringLimit {
            pattern: CREDENTIAL_NAME_PATTERN,
            max_length: SLUG_MAX,
        }),
        _ => None,
    }
}

/// The limit of property `property` of component schema `schema`.
fn body_property(schema: &str, property: &str) -> Option<StringLimit> {
    match (schema, property) {
        ("NewWorkspace", "id") => Some(SLUG),
        ("NewToken", "label") => Some(StringLimit {
            pattern: LABEL_PATTERN,
            max_length: patchbay_storage::tokens::MAX_LABEL_CHARS,
        }),
        _ => None,
    }
}

fn constrain(object: &mut Object, limit: &StringLimit) {
    object.pattern = Some(limit.pattern.to_owned());
    object.min_length = Some(1);
    object.max_length = Some(limit.max_length);
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Writes the limits into the description.
pub(super) struct DescribeLimits;

impl utoipa::Modify for DescribeLimits {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item) {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() else {
                        continue;
                    };
                    match parameter.parameter_in {
                        ParameterIn::Path => {
                            if let Some(limit) = path_parameter(path, &parameter.name) {
                                constrain(object, &limit);
                            }
                        }
                        ParameterIn::Query if parameter.name == "limit" => {
                            object.minimum = Some((*AUDIT_PAGE.start()).into());
                            object.maximum = Some((*AUDIT_PAGE.end()).into());
                            object.default = Some(serde_json::json!(100));
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(body) = components.schemas.get_mut("CredentialBody") {
            *body = RefOr::T(credential_body_schema());
        }
        for (name, schema) in components.schemas.iter_mut() {
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            for (property, value) in object.properties.iter_mut() {
                let Some(limit) = body_property(name, property) else {
                    continue;
                };
                match value {
                    RefOr::T(Schema::Object(inner)) => constrain(inner, &limit),
                    // `Option<String>`: a one-of of the string and null.
                    RefOr::T(Schema::OneOf(one_of)) => {
                        for item in one_of.items.iter_mut() {
                            if let RefOr::T(Schema::Object(inner)) = item
                                && inner.pattern.is_none()
                                && !matches!(
                                    inner.schema_type,
                                    utoipa::openapi::schema::SchemaType::Type(
                                        utoipa::openapi::schema::Type::Null
                                    )
                                )
                            {
                                constrain(inner, &limit);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A credential's body as `PUT …/credentials/{credential}` takes it, one
/// shape per kind: described here, parsed as `credentials::Secret` (whose
/// serde attributes these mirror; a test holds the two together).
#[derive(utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)] // only described, never built: `Secret` is what is parsed
pub(super) enum CredentialBody {
    /// Sent as the header the manifest names.
    ApiKeyHeader {
        #[schema(min_length = 1)]
        value: String,
    },
    /// Sent as the query parameter the manifest names.
    ApiKeyQuery {
        #[schema(min_length = 1)]
        value: String,
    },
    /// Sent as `Authorization: Bearer <token>`.
    Bearer {
        #[schema(min_length = 1)]
        token: String,
    },
    /// Sent as HTTP basic auth; the username holds no `:`.
    Basic {
        #[schema(min_length = 1, pattern = "^[^:]*$")]
        username: String,
        #[schema(min_length = 1)]
        password: String,
    },
    /// The host fetches access tokens from the manifest's token URL.
    Oauth2ClientCredentials {
        #[schema(min_length = 1)]
        client_id: String,
        #[schema(min_length = 1)]
        client_secret: String,
    },
    /// The host refreshes access tokens, storing a rotated refresh token.
    Oauth2RefreshToken {
        #[schema(min_length = 1)]
        client_id: String,
        #[serde(default)]
        client_secret: Option<String>,
        #[schema(min_length = 1)]
        refresh_token: String,
    },
}

/// `CredentialBody`'s schema, closed as `Secret` is: serde's
/// `deny_unknown_fields` on an enum is not carried into its variants'
/// schemas, so each shape refuses other properties here.
fn credential_body_schema() -> Schema {
    use utoipa::openapi::schema::AdditionalProperties;
    let mut schema = <CredentialBody as utoipa::PartialSchema>::schema();
    if let RefOr::T(Schema::OneOf(one_of)) = &mut schema {
        for shape in one_of.items.iter_mut() {
            if let RefOr::T(Schema::Object(object)) = shape {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
    match schema {
        RefOr::T(schema) => schema,
        RefOr::Ref(_) => Schema::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn matches(schema: Value, value: &str) -> bool {
        jsonschema::validator_for(&schema)
            .expect("schema")
            .is_valid(&json!(value))
    }

    fn string_schema(limit: &StringLimit) -> Value {
        json!({ "type": "string", "pattern": limit.pattern, "minLength": 1, "maxLength": limit.max_length })
    }

    /// Names at, under and over each edge of the rule.
    fn samples() -> Vec<String> {
        let mut out: Vec<String> = [
            "a",
            "acme",
            "a-b",
            "a--b",
            "a1",
            "9",
            "-a",
            "a-",
            "-",
            "",
            "A",
            "acme corp",
            "a_b",
            "_a",
            "a_",
            "a.b",
            "a/b",
            "é",
            "..",
            "a%2f",
        ]
        .map(String::from)
        .to_vec();
        out.push("a".repeat(SLUG_MAX));
        out.push("a".repeat(SLUG_MAX + 1));
        out.push(format!("a{}b", "-".repeat(SLUG_MAX - 2)));
        out
    }

    #[test]
    fn the_described_name_rules_are_the_enforced_ones() {
        use patchbay_tenancy::check_name;
        for sample in samples() {
            let described = matches(string_schema(&SLUG), &sample);
            assert_eq!(
                described,
                check_name("workspace", &sample).is_ok(),
                "{sample:?}"
            );
            assert_eq!(
                described,
                patchbay_policy::manifest::is_slug(&sample),
                "{sample:?}"
            );
            let credential = path_parameter("/x", "credential").expect("described");
            assert_eq!(
                matches(string_schema(&credential), &sample),
                patchbay_policy::manifest::is_slug(&sample.replace('_', "-")),
                "credential name {sample:?}"
            );
        }
    }

    #[test]
    fn the_described_label_rule_is_the_enforced_one() {
        use patchbay_storage::tokens::{MAX_LABEL_CHARS, check_label};
        let label = body_property("NewToken", "label").expect("described");
        for sample in [
            "prod".to_owned(),
            "contact-center prod ✓".to_owned(),
            String::new(),
            "a\nb".to_owned(),
            "a\u{1b}[31m".to_owned(),
            "a\u{85}".to_owned(),
            "é".repeat(MAX_LABEL_CHARS),
            "é".repeat(MAX_LABEL_CHARS + 1),
        ] {
            assert_eq!(
                matches(string_schema(&label), &sample),
                check_label(&sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn generated_token_ids_match_the_described_pattern() {
        let (id, _) = patchbay_storage::tokens::generate().expect("random");
        let limit = path_parameter("/v1/workspaces/{ws}/tokens/{id}", "id").expect("described");
        assert!(matches(string_schema(&limit), &id), "{id}");
    }

    /// Each described credential body parses as the `Secret` the route
    /// reads, and each body the description refuses, `Secret` refuses too.
    #[test]
    fn the_described_credential_bodies_are_the_parsed_ones() {
        use patchbay_egress::credentials::Secret;
        let schema = serde_json::to_value(credential_body_schema()).expect("json");
        let validator = jsonschema::validator_for(&schema).expect("schema");
        let kinds = schema["oneOf"].as_array().expect("one shape per kind");
        assert_eq!(kinds.len(), 6, "{schema}");
        for shape in kinds {
            let kind = shape["properties"]["kind"]["enum"][0]
                .as_str()
                .expect("kind");
            let required: Vec<&str> = shape["required"]
                .as_array()
                .expect("required")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut body = json!({ "kind": kind });
            for field in required.iter().filter(|f| **f != "kind") {
                body[field] = json!("v-1");
            }
            assert!(validator.is_valid(&body), "{body}");
            assert!(
                serde_json::from_value::<Secret>(body.clone()).is_ok(),
                "described but refused: {body}"
            );
            for missing in required.iter().filter(|f| **f != "kind") {
                let mut short = body.clone();
                short.as_object_mut().expect("object").remove(*missing);
                assert!(!validator.is_valid(&short), "{short}");
                assert!(
                    serde_json::from_value::<Secret>(short.clone()).is_err(),
                    "refused by the description, parsed: {short}"
                );
            }
            let mut extra = body.clone();
            extra["unknown"] = json!("x");
            assert!(!validator.is_valid(&extra), "{extra}");
            assert!(serde_json::from_value::<Secret>(extra).is_err());
        }
        let unknown = json!({ "kind": "digest", "token": "t" });
        assert!(!validator.is_valid(&unknown));
        assert!(serde_json::from_value::<Secret>(unknown).is_err());
    }
}
