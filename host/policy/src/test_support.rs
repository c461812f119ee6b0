//! Fixtures for the host crates' tests (the `test-support` feature): sample
//! manifests and schemas that several crates' tests build on.

use crate::manifest::Manifest;
use serde_json::{Value as Json, json};

/// The text of a manifest of plugin `crm` at `version` with one `find`
/// lookup, then `rest` (capabilities, limits) as TOML.
pub fn test_manifest_text(version: &str, rest: &str) -> String {
    format!(
        "id = \"crm\"\nversion = \"{version}\"\ncontract = \"0.1.0\"\nname = \"CRM\"\n\
         vendor = \"Tests\"\n[[operations]]\nname = \"find\"\nkind = \"lookup\"\n\
         input_schema = {{}}\noutput_schema = {{}}\n{rest}"
    )
}

/// [`test_manifest_text`], parsed.
pub fn test_manifest(version: &str, rest: &str) -> Manifest {
    Manifest::parse(&test_manifest_text(version, rest)).expect("test manifest")
}

/// A manifest asking for one of each capability: a plain and a templated
/// destination, KV and a bearer credential.
pub fn sample_manifest() -> Manifest {
    test_manifest(
        "1.0.0",
        r#"
[capabilities.http]
destinations = ["GET https://api.example.com/v1", "https://{{instance}}.example.com"]
[capabilities.kv]
max_keys = 10
max_total_bytes = 1000
max_value_bytes = 100
[[capabilities.credentials]]
name = "token"
kind = "bearer"
destinations = ["https://api.example.com/v1"]
"#,
    )
}

/// `$defs` d0..d{depth}, each d{i} a `combinator` of two references to d{i+1}.
pub fn ref_chain(combinator: &str, depth: usize) -> Json {
    let mut defs = serde_json::Map::new();
    for d in 0..depth {
        let next = json!({ "$ref": format!("#/$defs/d{}", d + 1) });
        defs.insert(format!("d{d}"), json!({ combinator: [next.clone(), next] }));
    }
    defs.insert(format!("d{depth}"), json!({ "type": "integer" }));
    json!({ "$defs": defs, "$ref": "#/$defs/d0" })
}
