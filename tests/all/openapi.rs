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
