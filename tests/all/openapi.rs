//! `GET /openapi.json` against the routes: every route the README documents
//! is described, every described route is documented, and every described
//! route is served (none falls through to the router's "no route").

use patchbay_tests::{Harness, OPERATOR_TOKEN, api_call};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Every `METHOD /path` the README's backticks name (`GET`/`DELETE /x`
/// names both methods); query strings dropped.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut out = BTreeSet::new();
    let spans: Vec<&str> = readme.split('`').collect();
    // Inside backticks are the odd pieces.
    for (i, span) in spans.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let Some((method, path)) = span.split_once(' ') else {
            continue;
        };
        if !METHODS.contains(&method) || !path.starts_with('/') {
            continue;
        }
        let path = path.split('?').next().unwrap_or(path).to_owned();
        out.insert((method.to_owned(), path.clone()));
        // `GET`/`DELETE /x`: methods alone in the spans just before, joined by "/".
        let mut j = i;
        while j >= 2 && spans[j - 1] == "/" && METHODS.contains(&spans[j - 2]) {
            out.insert((spans[j - 2].to_owned(), path.clone()));
            j -= 2;
        }
    }
    out
}

fn described_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_description_matches_the_routes_and_the_readme() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let (status, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{spec}"
    );
    assert!(spec["components"]["securitySchemes"]["operator"].is_object());

    let described = described_routes(&spec);
    let documented = readme_routes();
    assert!(
        documented.len() > 20,
        "the README parse found routes: {documented:?}"
    );
    let undescribed: Vec<_> = documented.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "in the README, missing from /openapi.json: {undescribed:?}"
    );
    let undocumented: Vec<_> = described.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "in /openapi.json, missing from the README: {undocumented:?}"
    );

    for (method, path) in &described {
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let body = matches!(method.as_str(), "POST" | "PUT").then(|| json!({}));
        let (status, answer) = api_call(method, &api, &concrete, Some(OPERATOR_TOKEN), body).await;
        assert_ne!(status, 405, "{method} {path} is described but not served");
        assert_ne!(
            answer["code"], "no-route",
            "{method} {path} is described but not served"
        );
    }

    // And what is not a route says so in the error shape.
    let (status, answer) = api_call("GET", &api, "/v1/nothing", Some(OPERATOR_TOKEN), None).await;
    assert_eq!((status, answer["code"].as_str()), (404, Some("no-route")));
}

/// Check `answer` against `schema` (a component name) of `spec`: the
/// description says what the API really sends.
fn conforms(spec: &Value, schema: &str, answer: &Value) {
    let mut document = spec.clone();
    document["$ref"] = json!(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::validator_for(&document).expect("the description is a schema");
    let problems: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{schema}: {problems:?}\n{answer}");
}

#[tokio::test]
async fn answers_match_their_described_schemas() {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    let (_, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    let op = Some(OPERATOR_TOKEN);
    let (_, workspace) = api_call(
        "POST",
        &api,
        "/v1/workspaces",
        op,
        Some(json!({ "id": "acme" })),
    )
    .await;
    conforms(&spec, "Workspace", &workspace);
    let (_, saved) = api_call(
        "PUT",
        &api,
        "/v1/workspaces/acme/connections/crm",
        op,
        Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true }, "limits": { "timeout_ms": 500 } })),
    )
    .await;
    conforms(&spec, "ConnectionView", &saved);
    api_call(
        "PUT",
        &api,
        "/v1/workspaces/acme/connections/crm/credentials/token",
        op,
        Some(json!({ "kind": "bearer", "token": "t-schema-1" })),
    )
    .await;
    let (_, shown) = api_call("GET", &api, "/v1/workspaces/acme/connections/crm", op, None).await;
    assert_eq!(shown["credentials"][0]["set"], true);
    conforms(&spec, "ConnectionView", &shown);
    let (_, issued) = api_call(
        "POST",
        &api,
        "/v1/workspaces/acme/tokens",
        op,
        Some(json!({ "label": "x" })),
    )
    .await;
    conforms(&spec, "IssuedToken", &issued);
    let (_, listed) = api_call("GET", &api, "/v1/workspaces/acme/tokens", op, None).await;
    conforms(&spec, "WorkspaceToken", &listed[0]);
    let (_, plugins) = api_call("GET", &api, "/v1/plugins", op, None).await;
    conforms(&spec, "InstalledPlugin", &plugins[0]);
    let (_, versions) = api_call("GET", &api, "/v1/plugins/probe", op, None).await;
    conforms(&spec, "PluginVersions", &versions);
    let (_, manifest) = api_call("GET", &api, "/v1/plugins/probe/1.0.0", op, None).await;
    assert_eq!(manifest["capabilities"]["credentials"][0]["kind"], "bearer");
    conforms(&spec, "Manifest", &manifest);
    let (_, output) = api_call(
        "POST",
        &api,
        "/v1/workspaces/acme/connections/crm/operations/fetch",
        op,
        Some(json!({ "input": { "url": "http://127.0.0.1:9/allowed/x" } })),
    )
    .await;
    conforms(&spec, "ErrorBody", &output);
    let (_, page) = api_call("GET", &api, "/v1/workspaces/acme/audit", op, None).await;
    assert!(
        !page["records"].as_array().expect("records").is_empty(),
        "{page}"
    );
    conforms(&spec, "AuditPage", &page);
    let (_, ran) = api_call(
        "POST",
        &api,
        "/v1/workspaces/acme/connections/crm/operations/echo",
        op,
        Some(json!({ "input": { "a": 1 } })),
    )
    .await;
    conforms(&spec, "InvokeResponse", &ran);
}

/// The official JSON Schema of OpenAPI 3.1 documents (OAI, 2022-10-07,
/// Apache-2.0), vendored because tests reach no network.
const OAS_31_SCHEMA: &str = include_str!("../openapi/oas-3.1-schema-2022-10-07.json");

/// Every `$ref` in `value`, with where it was found.
fn refs<'v>(value: &'v Value, at: String, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref"
                    && let Some(target) = inner.as_str()
                {
                    out.push((at.clone(), target));
                }
                refs(inner, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                refs(inner, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_description_is_a_valid_openapi_3_1_document() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let (status, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    assert_eq!(status, 200);

    // 1. The official schema of OpenAPI 3.1 documents accepts it.
    let official: Value = serde_json::from_str(OAS_31_SCHEMA).expect("vendored schema");
    let validator = jsonschema::validator_for(&official).expect("the official schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&spec)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // The schema does not look inside Schema Objects: each must be JSON Schema 2020-12.
    for (name, schema) in spec["components"]["schemas"].as_object().expect("schemas") {
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("components/schemas/{name} is no JSON Schema: {e}");
        }
    }

    // 2. What the schema cannot say: operation ids are unique, every path
    // parameter is declared (required, in path) and every declared one is
    // in the path, and every `$ref` resolves.
    let mut ids = BTreeSet::new();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, operation) in item.as_object().expect("path item") {
            let Some(id) = operation["operationId"].as_str() else {
                panic!("{method} {path} has no operationId");
            };
            assert!(
                ids.insert(id.to_owned()),
                "operationId {id:?} is used twice"
            );
            operations += 1;
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{method} {path}: {p}");
                    p["name"].as_str().expect("name")
                })
                .collect();
            assert_eq!(declared, in_template, "{method} {path}");
        }
    }
    assert!(operations > 20, "{operations}");
    let mut found = Vec::new();
    refs(&spec, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, target) in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {target} points outside the document"));
        assert!(
            spec.pointer(pointer).is_some(),
            "{at}: {target} resolves to nothing"
        );
    }
}

/// The limits `/openapi.json` states are the ones the server holds to: a
/// value at each described limit is accepted, one past it refused.
#[tokio::test]
async fn the_described_limits_are_the_enforced_ones() {
    let harness = Harness::new();
    harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let api = harness.serve_api().await;
    let (_, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    let op = Some(OPERATOR_TOKEN);
    let schemas = &spec["components"]["schemas"];
    let max = |v: &Value| v["maxLength"].as_u64().expect("maxLength") as usize;

    // Workspace ids.
    let id = &schemas["NewWorkspace"]["properties"]["id"];
    assert!(id["pattern"].is_string(), "{id}");
    let at = "w".repeat(max(id));
    let (status, _) = patchbay_tests::create_workspace(&api, &at).await;
    assert_eq!(status, 201, "an id at maxLength");
    let (status, answer) = patchbay_tests::create_workspace(&api, &format!("{at}w")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid-name"))
    );
    let (status, _) = patchbay_tests::create_workspace(&api, "-acme").await;
    assert_eq!(status, 422, "outside the pattern");
    patchbay_tests::create_workspace(&api, "acme").await;

    // Connection names: the path parameter's schema.
    let name = spec["paths"]["/v1/workspaces/{ws}/connections/{name}"]["put"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "name")
        .expect("name")["schema"]
        .clone();
    let save = |name: String| {
        let api = api.clone();
        async move {
            api_call(
                "PUT",
                &api,
                &format!("/v1/workspaces/acme/connections/{name}"),
                op,
                Some(json!({ "plugin": "probe", "grants": { "approve_all_requested": true } })),
            )
            .await
        }
    };
    assert_eq!(save("c".repeat(max(&name))).await.0, 200);
    assert_eq!(save("c".repeat(max(&name) + 1)).await.0, 422);

    // Token labels.
    let label = &schemas["NewToken"]["properties"]["label"];
    let label_max = label["maxLength"]
        .as_u64()
        .or_else(|| {
            label["oneOf"]
                .as_array()?
                .iter()
                .find_map(|s| s["maxLength"].as_u64())
        })
        .unwrap_or_else(|| panic!("label has a maxLength: {label}")) as usize;
    let issue = |label: String| {
        let api = api.clone();
        async move {
            api_call(
                "POST",
                &api,
                "/v1/workspaces/acme/tokens",
                op,
                Some(json!({ "label": label })),
            )
            .await
            .0
        }
    };
    assert_eq!(issue("é".repeat(label_max)).await, 201);
    assert_eq!(issue("é".repeat(label_max + 1)).await, 422);

    // The audit page size.
    let limit = spec["paths"]["/v1/workspaces/{ws}/audit"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit")["schema"]
        .clone();
    let (low, high) = (
        limit["minimum"].as_u64().expect("minimum"),
        limit["maximum"].as_u64().expect("maximum"),
    );
    for (value, status) in [(low, 200), (high, 200), (low - 1, 422), (high + 1, 422)] {
        let (got, _) = api_call(
            "GET",
            &api,
            &format!("/v1/workspaces/acme/audit?limit={value}"),
            op,
            None,
        )
        .await;
        assert_eq!(got, status, "limit={value}");
    }

    // Credential bodies: the described bearer shape is taken, a body missing
    // its required field refused.
    let bearer = schemas["CredentialBody"]["oneOf"]
        .as_array()
        .expect("one shape per kind")
        .iter()
        .find(|s| s["properties"]["kind"]["enum"][0] == "bearer")
        .expect("bearer")
        .clone();
    let required: BTreeSet<&str> = bearer["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, BTreeSet::from(["kind", "token"]), "{bearer}");
    let path = "/v1/workspaces/acme/connections/crm/credentials/token";
    save("crm".into()).await;
    let (status, _) = api_call(
        "PUT",
        &api,
        path,
        op,
        Some(json!({ "kind": "bearer", "token": "t-1" })),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = api_call("PUT", &api, path, op, Some(json!({ "kind": "bearer" }))).await;
    assert_eq!(status, 422);
}

/// `/metrics` is described with the content type it is served with.
#[tokio::test]
async fn metrics_are_described_as_the_content_type_they_are_served_as() {
    let harness = Harness::new();
    let api = harness.serve_api().await;
    let (_, spec) = api_call("GET", &api, "/openapi.json", None, None).await;
    let described: Vec<&String> = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        .as_object()
        .expect("content")
        .keys()
        .collect();
    let response = patchbay_tests::plain_http_client()
        .get(format!("{api}/metrics"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let served = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    let media_type = served.split(';').next().unwrap_or("").trim();
    assert_eq!(described, [media_type], "served as {served}");
    assert!(
        response.text().await.expect("body").ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF"
    );
}
