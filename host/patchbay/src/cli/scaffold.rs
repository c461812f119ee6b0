//! `patchbay plugin new` writes a standalone connector crate a vendor owns;
//! `patchbay plugin build` turns one into a validated package.
//!
//! Each template is a small, complete connector against a generic REST API
//! (`https://api.example.com`): one operation, its schemas, a bearer
//! credential the host adds, recorded fixtures that pass `plugin test` as
//! written, and a README saying what to change.

use crate::services::{Options, Services};
use anyhow::{Context as _, bail};
use patchbay_policy::OperatorPolicy;
use patchbay_policy::manifest::{Manifest, is_slug};
use patchbay_policy::signing::PackagePolicy;
use patchbay_runtime::package::Package;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the scaffolded plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Template {
    /// `find-contact`: a CRM contact by phone or email.
    Crm,
    /// `payment-status`: a customer's balance and overdue invoices.
    Payments,
    /// `upcoming-appointments`: an attendee's next bookings.
    Appointments,
    /// `echo`: no upstream at all.
    Blank,
}

/// The language a scaffold is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Lang {
    /// A crate with the Rust SDK.
    Rust,
    /// An `app.py` built with componentize-py.
    Python,
    /// An `app.js` built with componentize-js.
    Js,
}

/// The componentize-js release the JavaScript scaffold is written for.
pub(super) const COMPONENTIZE_JS: &str = "0.23.0";

/// The one command that installs it, from the npm registry, into the
/// plugin's directory.
fn componentize_js_install() -> String {
    format!("npm install --prefix .tools @bytecodealliance/componentize-js@{COMPONENTIZE_JS}")
}

/// The componentize-py release the Python scaffold is written for.
pub(super) const COMPONENTIZE_PY: &str = "0.25.1";

/// The one command that installs it, from PyPI, into the plugin's directory.
fn componentize_py_install() -> String {
    format!("python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY}")
}

/// The WebAssembly target plugins are built for.
const TARGET: &str = "wasm32-wasip2";

/// The SDK this binary was built with, when it is still where it was.
fn bundled_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
    sdk.join("Cargo.toml")
        .exists()
        .then(|| sdk.canonicalize().ok())
        .flatten()
}

/// Write the crate `name` under `parent` from `template`. The SDK comes from
/// `sdk_path`, else from this Patchbay checkout when it is present, else
/// from the registry by version.
pub(super) fn new(
    name: &str,
    (template, lang): (Template, Lang),
    parent: &Path,
    sdk_path: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    if lang != Lang::Rust && template != Template::Crm {
        bail!("the Python and JavaScript scaffolds have the crm template only (--template crm)");
    }
    if !is_slug(name) {
        bail!(
            "{name:?} cannot be a plugin id: lowercase letters, digits and dashes, starting with a letter"
        );
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already: nothing was written", dir.display());
    }
    let sdk = match sdk_path.map(Path::to_path_buf).or_else(bundled_sdk) {
        Some(path) => format!(
            "{{ path = {:?} }}",
            path.canonicalize()
                .with_context(|| format!("the SDK at {}", path.display()))?
        ),
        None => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let files: Vec<(String, String)> = match lang {
        Lang::Rust => COMMON
            .iter()
            .chain(template_files(template).iter())
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect(),
        Lang::Python => python_files(),
        Lang::Js => js_files(),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
    };
    for (path, text) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, fill(text))
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(dir)
}

/// Build the crate in `dir` for the plugin target (adding the target with
/// rustup when it is missing), copy the component to `dir/plugin.wasm`, and
/// validate the package exactly as install does. The package's size and
/// operations.
pub(super) async fn build(dir: &Path) -> anyhow::Result<(Manifest, usize)> {
    if !dir.join("Cargo.toml").exists() {
        if dir.join("app.py").exists() {
            return build_python(dir).await;
        }
        if dir.join("app.js").exists() {
            return build_js(dir).await;
        }
    }
    let cargo_toml = dir.join("Cargo.toml");
    let crate_name = crate_name(&cargo_toml)?;
    ensure_target()?;
    // From the crate's directory, so its .cargo/config.toml (the plugin
    // rustflags) applies.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&cargo_toml)
        .current_dir(dir)
        .status()
        .context("running cargo (is Rust installed? https://rustup.rs)")?;
    if !status.success() {
        bail!("cargo build failed ({status}): see its output above");
    }
    let target_dir = target_dir(dir)?;
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    let wasm = std::fs::read(&built)
        .with_context(|| format!("reading the built component {}", built.display()))?;
    std::fs::write(dir.join("plugin.wasm"), &wasm).context("writing plugin.wasm")?;
    // A stale signature would be refused at install: the package changed.
    let signature = dir.join(patchbay_policy::signing::SIGNATURE_FILE);
    if signature.exists() {
        std::fs::remove_file(&signature).context("removing the old plugin.sig")?;
        eprintln!(
            "removed plugin.sig: it signed the previous build (sign again with `patchbay plugin sign`)"
        );
    }
    let manifest = validate(dir).await?;
    Ok((manifest, wasm.len()))
}

/// Build `dir/app.py` with componentize-py against `dir/wit`: the tool from
/// `PATCHBAY_COMPONENTIZE_PY`, else `dir/.venv`, else the `PATH`.
async fn build_python(dir: &Path) -> anyhow::Result<(Manifest, usize)> {
    ensure_wit(dir)?;
    let tool = std::env::var_os("PATCHBAY_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = dir.join(".venv/bin/componentize-py");
            venv.exists().then_some(venv)
        })
        .unwrap_or_else(|| PathBuf::from("componentize-py"));
    let out = dir.join("plugin.wasm");
    let status = Command::new(&tool)
        .arg("-d")
        .arg(dir.join("wit"))
        .args(["-w", "connector", "componentize", "--python-path"])
        .arg(dir)
        .args(["app", "-o"])
        .arg(&out)
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "running {}: {e}; install it in the plugin's directory with `{}`",
                tool.display(),
                componentize_py_install()
            )
        })?;
    if !status.success() {
        bail!("componentize-py failed ({status}): see its output above");
    }
    built(dir).await
}

/// Build `dir/app.js` with componentize-js against `dir/wit`: the tool from
/// `PATCHBAY_COMPONENTIZE_JS`, else `dir/.tools`, else the `PATH`.
async fn build_js(dir: &Path) -> anyhow::Result<(Manifest, usize)> {
    ensure_wit(dir)?;
    let tool = std::env::var_os("PATCHBAY_COMPONENTIZE_JS")
        .map(PathBuf::from)
        .or_else(|| {
            let local = dir.join(".tools/node_modules/.bin/componentize-js");
            local.exists().then_some(local)
        })
        .unwrap_or_else(|| PathBuf::from("componentize-js"));
    // From the plugin's directory: componentize-js reads paths under its
    // working directory only.
    let status = Command::new(&tool)
        .current_dir(dir)
        .args([
            "app.js",
            "--wit",
            "wit",
            "-n",
            "connector",
            "-o",
            "plugin.wasm",
        ])
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "running {}: {e}; install it in the plugin's directory with `{}`",
                tool.display(),
                componentize_js_install()
            )
        })?;
    if !status.success() {
        bail!("componentize-js failed ({status}): see its output above");
    }
    built(dir).await
}

/// A Python or JavaScript plugin is built against `dir/wit`: when the
/// directory has none (an example copied on its own), the connector WIT this
/// binary runs is written there, and said so.
fn ensure_wit(dir: &Path) -> anyhow::Result<()> {
    if dir.join("wit").exists() {
        return Ok(());
    }
    for (path, text) in wit_files() {
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    eprintln!(
        "wrote {}: the connector WIT (patchbay:connector@0.1.1) this patchbay runs",
        dir.join("wit").display()
    );
    Ok(())
}

/// The component a language's tool wrote to `dir/plugin.wasm`, validated,
/// with a signature of the previous build removed.
async fn built(dir: &Path) -> anyhow::Result<(Manifest, usize)> {
    let size = std::fs::metadata(dir.join("plugin.wasm"))
        .context("reading plugin.wasm")?
        .len() as usize;
    let signature = dir.join(patchbay_policy::signing::SIGNATURE_FILE);
    if signature.exists() {
        std::fs::remove_file(&signature).context("removing the old plugin.sig")?;
        eprintln!(
            "removed plugin.sig: it signed the previous build (sign again with `patchbay plugin sign`)"
        );
    }
    Ok((validate(dir).await?, size))
}

/// The Python scaffold: the example under `examples/python-crm`, renamed,
/// with the connector WIT it is built against.
fn python_files() -> Vec<(String, String)> {
    let example = |text: &str| text.replace("python-crm", "{{name}}");
    let mut files = vec![
        (
            "app.py".to_owned(),
            example(include_str!("../../../../examples/python-crm/app.py")),
        ),
        (
            "plugin.toml".to_owned(),
            example(include_str!("../../../../examples/python-crm/plugin.toml"))
                .replace("Python CRM example", "{{name}}"),
        ),
        (
            "fixtures/find-contact.json".to_owned(),
            example(include_str!(
                "../../../../examples/python-crm/fixtures/find-contact.json"
            )),
        ),
        (
            "fixtures/nobody.json".to_owned(),
            example(include_str!(
                "../../../../examples/python-crm/fixtures/nobody.json"
            )),
        ),
        (
            "fixtures/echo.json".to_owned(),
            example(include_str!(
                "../../../../examples/python-crm/fixtures/echo.json"
            )),
        ),
        ("README.md".to_owned(), PYTHON_README.to_owned()),
        (
            ".gitignore".to_owned(),
            "/.venv\n/plugin.wasm\n__pycache__/\n".to_owned(),
        ),
    ];
    files.extend(wit_files());
    files
}

/// The connector WIT, under `wit/`.
fn wit_files() -> Vec<(String, String)> {
    crate::bundled::WIT_FILES
        .iter()
        .map(|(path, text)| (format!("wit/{path}"), (*text).to_owned()))
        .collect()
}

/// The JavaScript scaffold: the example under `examples/js-crm`, renamed,
/// with the connector WIT it is built against.
fn js_files() -> Vec<(String, String)> {
    let example = |text: &str| text.replace("js-crm", "{{name}}");
    let mut files = vec![
        (
            "app.js".to_owned(),
            example(include_str!("../../../../examples/js-crm/app.js")),
        ),
        (
            "plugin.toml".to_owned(),
            example(include_str!("../../../../examples/js-crm/plugin.toml"))
                .replace("JavaScript CRM example", "{{name}}"),
        ),
        (
            "fixtures/find-contact.json".to_owned(),
            example(include_str!(
                "../../../../examples/js-crm/fixtures/find-contact.json"
            )),
        ),
        (
            "fixtures/nobody.json".to_owned(),
            example(include_str!(
                "../../../../examples/js-crm/fixtures/nobody.json"
            )),
        ),
        (
            "fixtures/echo.json".to_owned(),
            example(include_str!(
                "../../../../examples/js-crm/fixtures/echo.json"
            )),
        ),
        ("README.md".to_owned(), JS_README.to_owned()),
        (
            ".gitignore".to_owned(),
            "/.tools\n/plugin.wasm\n".to_owned(),
        ),
    ];
    files.extend(wit_files());
    files
}

const JS_README: &str = r#"# {{name}}

A Patchbay connector plugin in JavaScript, built with componentize-js {{componentize_js}} against
the connector WIT in `wit/`.

```sh
npm install --prefix .tools @bytecodealliance/componentize-js@{{componentize_js}}   # once
patchbay plugin build     # componentize-js -> plugin.wasm, validated as install does
patchbay plugin test      # the conformance kit against fixtures/
patchbay plugin sign . --key ~/.patchbay/publisher.pem --publisher "Your Company"
```

Change `plugin.toml` (destinations, credential, schemas, limits; keep `memory_mb` at 128 or more
for the engine), `app.js` and `fixtures/` for your API. There is no file and no socket in the
sandbox: reach your API through `wasi:http` as `getJson` does, to the declared destinations only;
a request the host refuses comes back as `HTTP-request-denied`. Throw `{ tag: "not-found", val }`
(or another variant of the WIT's `error`) for errors callers act on; anything else thrown ends the
call with its text as the message.
"#;

const PYTHON_README: &str = r#"# {{name}}

A Patchbay connector plugin in Python, built with componentize-py {{componentize_py}} against the
connector WIT in `wit/`.

```sh
python3 -m venv .venv && .venv/bin/pip install componentize-py=={{componentize_py}}   # once
patchbay plugin build     # componentize-py -> plugin.wasm, validated as install does
patchbay plugin test      # the conformance kit against fixtures/
patchbay plugin sign . --key ~/.patchbay/publisher.pem --publisher "Your Company"
```

Change `plugin.toml` (destinations, credential, schemas, limits; keep `memory_mb` at 128 or more
for the interpreter), `app.py` and `fixtures/` for your API. There is no file and no socket in the
sandbox: reach your API through `wasi:http` as `get_json` does, to the declared destinations only.
An uncaught exception becomes the call's error message; raise `Err(types.Error_…)` for errors
callers act on.
"#;

/// Validate the package in `dir` as install does, in a scratch data directory.
async fn validate(dir: &Path) -> anyhow::Result<Manifest> {
    let scratch = tempfile::tempdir().context("making a scratch data directory")?;
    let policy = OperatorPolicy {
        packages: PackagePolicy {
            allow_unsigned: true,
            ..PackagePolicy::default()
        },
        ..OperatorPolicy::default()
    };
    let services = Services::open_with(
        scratch.path(),
        policy,
        Options {
            master_key: None,
            ..Options::default()
        },
    )?;
    let package = Package::read_dir(dir)?;
    let manifest = Manifest::parse(&package.manifest_text)?;
    services
        .catalog
        .install(package)
        .await
        .context("the built package is not one Patchbay installs")?;
    Ok(manifest)
}

/// `[package] name` of a Cargo.toml.
fn crate_name(cargo_toml: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(cargo_toml)
        .with_context(|| format!("reading {} (is this a plugin crate?)", cargo_toml.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", cargo_toml.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{} has no [package] name", cargo_toml.display()))
}

/// Where cargo puts the crate's build output.
fn target_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target directory")
}

/// Add the plugin target with rustup when the toolchain lacks it.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: cargo will say whether the target is there.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!(
        "the {TARGET} target is not installed: installing it with `rustup target add {TARGET}`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed: install the target and build again");
    }
    Ok(())
}

/// Files every template has.
const COMMON: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
patchbay-sdk = {{sdk}}
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true

# Its own workspace, wherever it lives.
[workspace]
"#,
    ),
    (
        ".cargo/config.toml",
        r#"# What Patchbay's own plugins build with: 4 MiB of initial memory (a call's heap
# need not grow memory; it counts against limits.memory_mb) and more inlining
# (fewer calls, each of which pays the sandbox's deadline check).
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=--initial-memory=4194304", "-C", "llvm-args=-inline-threshold=1000"]
"#,
    ),
    (".gitignore", "/target\n/plugin.wasm\n"),
];

fn template_files(template: Template) -> Vec<(&'static str, &'static str)> {
    match template {
        Template::Crm => vec![
            ("plugin.toml", CRM_MANIFEST),
            ("src/lib.rs", CRM_LIB),
            ("fixtures/find-by-phone.json", CRM_FOUND),
            ("fixtures/nobody.json", CRM_NOBODY),
            ("README.md", README),
        ],
        Template::Payments => vec![
            ("plugin.toml", PAYMENTS_MANIFEST),
            ("src/lib.rs", PAYMENTS_LIB),
            ("fixtures/overdue.json", PAYMENTS_OVERDUE),
            ("fixtures/unknown-customer.json", PAYMENTS_UNKNOWN),
            ("README.md", README),
        ],
        Template::Appointments => vec![
            ("plugin.toml", APPOINTMENTS_MANIFEST),
            ("src/lib.rs", APPOINTMENTS_LIB),
            ("fixtures/next-two.json", APPOINTMENTS_NEXT),
            ("README.md", README),
        ],
        Template::Blank => vec![
            ("plugin.toml", BLANK_MANIFEST),
            ("src/lib.rs", BLANK_LIB),
            ("fixtures/echo.json", BLANK_ECHO),
            ("README.md", README),
        ],
    }
}

const README: &str = r#"# {{name}}

A Patchbay connector plugin. It runs in Patchbay's sandbox: it reaches only the destinations
`plugin.toml` declares, the host adds the credential to those requests (this code never sees it),
and every call has the memory and time `[limits]` gives.

```sh
patchbay plugin build            # cargo build for wasm32-wasip2, copy to plugin.wasm, validate
patchbay plugin test             # the conformance kit, offline, against fixtures/
patchbay plugin keygen --out ~/.patchbay/publisher.pem   # once
patchbay plugin sign . --key ~/.patchbay/publisher.pem --publisher "Your Company"
```

Then give operators the directory (`plugin.toml`, `plugin.wasm`, `plugin.sig`) and your public
key; they install it with `patchbay plugin install DIR` or `POST /v1/plugins`.

What to change first:
- `plugin.toml`: the description, the config schema's `base_url` default (your API), the
  destinations (method and path prefix, nothing wider than you call), the credential's kind and
  destinations, `[limits]`, and each operation's input and output JSON Schemas;
- `src/lib.rs`: the request and the mapping of your API's answer;
- `fixtures/`: one JSON file per case, each with the exchanges your API really answers
  (method, URL, body; status, headers, body) and the output or error code expected. The kit also
  replays each successful case with a 401, 404, 429, 500, malformed JSON and a timeout in place
  of the first answer and checks the error your code returns for each.
"#;

const CRM_MANIFEST: &str = r#"id = "{{name}}"
version = "0.1.0"
contract = "0.1.1"
name = "{{name}}"
description = "Find a CRM contact by phone or email."
vendor = "Your Company"

[[operations]]
name = "find-contact"
kind = "lookup"
idempotent = true
input_schema = '''
{
  "type": "object",
  "properties": {
    "phone": { "type": "string", "minLength": 1, "maxLength": 64 },
    "email": { "type": "string", "minLength": 3, "maxLength": 254 }
  },
  "oneOf": [ { "required": ["phone"] }, { "required": ["email"] } ],
  "additionalProperties": false
}
'''
output_schema = '''
{
  "type": "object",
  "required": ["id", "source"],
  "additionalProperties": false,
  "properties": {
    "id": { "type": "string" },
    "source": { "const": "{{name}}" },
    "first_name": { "type": "string" },
    "last_name": { "type": "string" },
    "email": { "type": "string" },
    "phone": { "type": "string" },
    "company": { "type": "string" },
    "updated_at": { "type": "string" },
    "attributes": { "type": "object", "additionalProperties": { "type": "string" } }
  }
}
'''

[capabilities.http]
destinations = ["GET {{base_url}}/v1/contacts"]

[capabilities.config.schema]
type = "object"
additionalProperties = false
[capabilities.config.schema.properties.base_url]
type = "string"
format = "uri"
default = "https://api.example.com"
description = "The API's base URL"

[[capabilities.credentials]]
name = "api_token"
kind = "bearer"
description = "An API token with read access to contacts"
destinations = ["{{base_url}}/v1/"]

[limits]
memory_mb = 16
timeout_ms = 3000
"#;

const CRM_LIB: &str = r#"//! {{name}}: find a CRM contact by phone or email.

use patchbay_sdk::cx::Contact;
use patchbay_sdk::http::Request;
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::Deserialize;
use std::time::Duration;

const SOURCE: &str = "{{name}}";
const DEFAULT_BASE_URL: &str = "https://api.example.com";

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("find-contact", find_contact);
    }
}

export_connector!(Plugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindContact {
    phone: Option<String>,
    email: Option<String>,
}

/// The API's answer: a page of contacts.
#[derive(Deserialize)]
struct Page {
    data: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    updated_at: Option<String>,
}

fn find_contact(_ctx: &Context, input: FindContact) -> Result<Contact, Error> {
    let base_url = config::base_url_or("base_url", DEFAULT_BASE_URL)?;
    let (field, value) = match (input.phone, input.email) {
        (Some(phone), None) => ("phone", phone.trim().to_owned()),
        (None, Some(email)) => ("email", email.trim().to_lowercase()),
        _ => return Err(Error::invalid_input("give exactly one of phone and email")),
    };
    let page: Page = Request::get(format!("{base_url}/v1/contacts"))
        .query(&[(field, value.as_str()), ("limit", "1")])
        .header("accept", "application/json")
        .timeout(Duration::from_millis(2000))
        .send()?
        .error_for_status()?
        .json()?;
    let record = page
        .data
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("no contact has this {field}")))?;
    Ok(Contact {
        id: record.id,
        source: SOURCE.into(),
        first_name: record.first_name,
        last_name: record.last_name,
        email: record.email,
        phone: record.phone,
        company: record.company,
        updated_at: record.updated_at,
        attributes: Default::default(),
    })
}
"#;

const CRM_FOUND: &str = r#"{
  "name": "a caller found by phone",
  "operation": "find-contact",
  "input": { "phone": "+15551234567" },
  "exchanges": [
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/contacts?phone=%2B15551234567&limit=1" },
      "response": {
        "status": 200,
        "body": { "data": [ {
          "id": "c_512", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
          "phone": "+15551234567", "company": "Analytical Engines", "updated_at": "2026-10-01T10:00:00Z"
        } ] }
      }
    }
  ],
  "output": {
    "id": "c_512", "source": "{{name}}", "first_name": "Ada", "last_name": "Lovelace",
    "email": "ada@example.com", "phone": "+15551234567", "company": "Analytical Engines",
    "updated_at": "2026-10-01T10:00:00Z"
  }
}
"#;

const CRM_NOBODY: &str = r#"{
  "name": "nobody has the email",
  "operation": "find-contact",
  "input": { "email": "Nobody@Example.com" },
  "exchanges": [
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/contacts?email=nobody%40example.com&limit=1" },
      "response": { "status": 200, "body": { "data": [] } }
    }
  ],
  "error": "not-found"
}
"#;

const PAYMENTS_MANIFEST: &str = r#"id = "{{name}}"
version = "0.1.0"
contract = "0.1.1"
name = "{{name}}"
description = "A customer's balance and overdue invoices, found by email."
vendor = "Your Company"

[[operations]]
name = "payment-status"
kind = "lookup"
idempotent = true
input_schema = '''
{
  "type": "object",
  "required": ["email"],
  "properties": { "email": { "type": "string", "minLength": 3, "maxLength": 254 } },
  "additionalProperties": false
}
'''
output_schema = '''
{
  "type": "object",
  "required": ["customer_id", "currency", "balance_minor", "overdue"],
  "additionalProperties": false,
  "properties": {
    "customer_id": { "type": "string" },
    "currency": { "type": "string", "pattern": "^[a-z]{3}$" },
    "balance_minor": { "type": "integer" },
    "overdue": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["invoice_id", "amount_minor", "due_date"],
        "additionalProperties": false,
        "properties": {
          "invoice_id": { "type": "string" },
          "amount_minor": { "type": "integer" },
          "due_date": { "type": "string" }
        }
      }
    }
  }
}
'''

[capabilities.http]
destinations = ["GET {{base_url}}/v1/customers"]

[capabilities.config.schema]
type = "object"
additionalProperties = false
[capabilities.config.schema.properties.base_url]
type = "string"
format = "uri"
default = "https://api.example.com"
description = "The payments API's base URL"

[[capabilities.credentials]]
name = "secret_key"
kind = "bearer"
description = "A restricted key with read access to customers and invoices"
destinations = ["{{base_url}}/v1/"]

[limits]
memory_mb = 16
timeout_ms = 3000
"#;

const PAYMENTS_LIB: &str = r#"//! {{name}}: a customer's balance and overdue invoices.

use patchbay_sdk::http::Request;
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const DEFAULT_BASE_URL: &str = "https://api.example.com";

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("payment-status", payment_status);
    }
}

export_connector!(Plugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByEmail {
    email: String,
}

#[derive(Deserialize)]
struct Customers {
    data: Vec<Customer>,
}

#[derive(Deserialize)]
struct Customer {
    id: String,
    currency: String,
    /// Minor units (cents).
    balance: i64,
}

#[derive(Deserialize)]
struct Invoices {
    data: Vec<Invoice>,
}

#[derive(Deserialize)]
struct Invoice {
    id: String,
    amount_due: i64,
    due_date: String,
    status: String,
}

#[derive(Serialize)]
struct PaymentStatus {
    customer_id: String,
    currency: String,
    balance_minor: i64,
    overdue: Vec<Overdue>,
}

#[derive(Serialize)]
struct Overdue {
    invoice_id: String,
    amount_minor: i64,
    due_date: String,
}

fn get<T: serde::de::DeserializeOwned>(url: String, query: &[(&str, &str)]) -> Result<T, Error> {
    Request::get(url)
        .query(query)
        .header("accept", "application/json")
        .timeout(Duration::from_millis(1500))
        .send()?
        .error_for_status()?
        .json()
}

fn payment_status(_ctx: &Context, input: ByEmail) -> Result<PaymentStatus, Error> {
    let base_url = config::base_url_or("base_url", DEFAULT_BASE_URL)?;
    let email = input.email.trim().to_lowercase();
    let customers: Customers = get(format!("{base_url}/v1/customers"), &[("email", &email)])?;
    let customer = customers
        .data
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("no customer has this email"))?;
    let invoices: Invoices = get(
        format!("{base_url}/v1/customers/{}/invoices", customer.id),
        &[("status", "open")],
    )?;
    Ok(PaymentStatus {
        overdue: invoices
            .data
            .into_iter()
            .filter(|i| i.status == "past_due")
            .map(|i| Overdue {
                invoice_id: i.id,
                amount_minor: i.amount_due,
                due_date: i.due_date,
            })
            .collect(),
        customer_id: customer.id,
        currency: customer.currency,
        balance_minor: customer.balance,
    })
}
"#;

const PAYMENTS_OVERDUE: &str = r#"{
  "name": "a customer with one overdue invoice",
  "operation": "payment-status",
  "input": { "email": "Ada@Example.com" },
  "exchanges": [
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/customers?email=ada%40example.com" },
      "response": { "status": 200, "body": { "data": [ { "id": "cus_9", "currency": "usd", "balance": 4200 } ] } }
    },
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/customers/cus_9/invoices?status=open" },
      "response": {
        "status": 200,
        "body": { "data": [
          { "id": "in_1", "amount_due": 4200, "due_date": "2026-11-01", "status": "past_due" },
          { "id": "in_2", "amount_due": 1000, "due_date": "2027-01-01", "status": "open" }
        ] }
      }
    }
  ],
  "output": {
    "customer_id": "cus_9", "currency": "usd", "balance_minor": 4200,
    "overdue": [ { "invoice_id": "in_1", "amount_minor": 4200, "due_date": "2026-11-01" } ]
  }
}
"#;

const PAYMENTS_UNKNOWN: &str = r#"{
  "name": "no customer has the email",
  "operation": "payment-status",
  "input": { "email": "nobody@example.com" },
  "exchanges": [
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/customers?email=nobody%40example.com" },
      "response": { "status": 200, "body": { "data": [] } }
    }
  ],
  "error": "not-found"
}
"#;

const APPOINTMENTS_MANIFEST: &str = r#"id = "{{name}}"
version = "0.1.0"
contract = "0.1.1"
name = "{{name}}"
description = "An attendee's upcoming appointments."
vendor = "Your Company"

[[operations]]
name = "upcoming-appointments"
kind = "lookup"
idempotent = true
input_schema = '''
{
  "type": "object",
  "required": ["email"],
  "properties": {
    "email": { "type": "string", "minLength": 3, "maxLength": 254 },
    "limit": { "type": "integer", "minimum": 1, "maximum": 20 }
  },
  "additionalProperties": false
}
'''
output_schema = '''
{
  "type": "object",
  "required": ["appointments"],
  "additionalProperties": false,
  "properties": {
    "appointments": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["id", "starts_at", "title"],
        "additionalProperties": false,
        "properties": {
          "id": { "type": "string" },
          "starts_at": { "type": "string" },
          "title": { "type": "string" }
        }
      }
    }
  }
}
'''

[capabilities.http]
destinations = ["GET {{base_url}}/v1/bookings"]

[capabilities.config.schema]
type = "object"
additionalProperties = false
[capabilities.config.schema.properties.base_url]
type = "string"
format = "uri"
default = "https://api.example.com"
description = "The scheduling API's base URL"

[[capabilities.credentials]]
name = "api_key"
kind = "api_key_header"
header = "x-api-key"
description = "An API key with read access to bookings"
destinations = ["{{base_url}}/v1/"]

[limits]
memory_mb = 16
timeout_ms = 3000
"#;

const APPOINTMENTS_LIB: &str = r#"//! {{name}}: an attendee's upcoming appointments.

use patchbay_sdk::http::Request;
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const DEFAULT_BASE_URL: &str = "https://api.example.com";

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("upcoming-appointments", upcoming);
    }
}

export_connector!(Plugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upcoming {
    email: String,
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct Bookings {
    bookings: Vec<Booking>,
}

#[derive(Deserialize)]
struct Booking {
    id: String,
    start: String,
    title: String,
}

#[derive(Serialize)]
struct Appointments {
    appointments: Vec<Appointment>,
}

#[derive(Serialize)]
struct Appointment {
    id: String,
    starts_at: String,
    title: String,
}

fn upcoming(_ctx: &Context, input: Upcoming) -> Result<Appointments, Error> {
    let base_url = config::base_url_or("base_url", DEFAULT_BASE_URL)?;
    let limit = input.limit.unwrap_or(5).to_string();
    let email = input.email.trim().to_lowercase();
    let found: Bookings = Request::get(format!("{base_url}/v1/bookings"))
        .query(&[("attendee", email.as_str()), ("status", "upcoming"), ("limit", limit.as_str())])
        .header("accept", "application/json")
        .timeout(Duration::from_millis(2000))
        .send()?
        .error_for_status()?
        .json()?;
    Ok(Appointments {
        appointments: found
            .bookings
            .into_iter()
            .map(|b| Appointment {
                id: b.id,
                starts_at: b.start,
                title: b.title,
            })
            .collect(),
    })
}
"#;

const APPOINTMENTS_NEXT: &str = r#"{
  "name": "two bookings ahead",
  "operation": "upcoming-appointments",
  "input": { "email": "ada@example.com", "limit": 2 },
  "exchanges": [
    {
      "request": { "method": "GET", "url": "https://api.example.com/v1/bookings?attendee=ada%40example.com&status=upcoming&limit=2" },
      "response": {
        "status": 200,
        "body": { "bookings": [
          { "id": "b_1", "start": "2026-12-04T09:00:00Z", "title": "Annual review" },
          { "id": "b_2", "start": "2026-12-11T15:30:00Z", "title": "Follow-up" }
        ] }
      }
    }
  ],
  "output": { "appointments": [
    { "id": "b_1", "starts_at": "2026-12-04T09:00:00Z", "title": "Annual review" },
    { "id": "b_2", "starts_at": "2026-12-11T15:30:00Z", "title": "Follow-up" }
  ] }
}
"#;

const BLANK_MANIFEST: &str = r#"id = "{{name}}"
version = "0.1.0"
contract = "0.1.1"
name = "{{name}}"
description = "Echo the input back."
vendor = "Your Company"

[[operations]]
name = "echo"
kind = "transform"
idempotent = true
input_schema = '''
{ "type": "object", "required": ["text"], "properties": { "text": { "type": "string", "maxLength": 1000 } }, "additionalProperties": false }
'''
output_schema = '''
{ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } }, "additionalProperties": false }
'''

[limits]
memory_mb = 16
timeout_ms = 1000
"#;

const BLANK_LIB: &str = r#"//! {{name}}: echo the input back.

use patchbay_sdk::{Connector, Context, Error, Operations, export_connector};
use serde::{Deserialize, Serialize};

struct Plugin;

impl Connector for Plugin {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("echo", echo);
    }
}

export_connector!(Plugin);

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Text {
    text: String,
}

fn echo(_ctx: &Context, input: Text) -> Result<Text, Error> {
    Ok(input)
}
"#;

const BLANK_ECHO: &str = r#"{
  "name": "the text comes back",
  "operation": "echo",
  "input": { "text": "hello" },
  "output": { "text": "hello" }
}
"#;
