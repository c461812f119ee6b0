//! Compiles the bundled plugins (`plugins/*`), signs each package, and embeds
//! them in the binary, so `patchbay serve` has them with no extra step.
//!
//! The signing key is made for this build and never written anywhere: only
//! its public half goes into the binary, which trusts it for the bundled
//! packages. Nobody, not even whoever ran the build, can sign another package
//! with it afterwards.

use patchbay_policy::manifest::Manifest;
use patchbay_policy::signing::{SecretKey, Signature};
use std::fmt::Write as _;

/// The publisher name the bundled packages are signed under.
const PUBLISHER: &str = "Patchbay (bundled)";

fn main() {
    let root = patchbay_build::workspace_root();
    let plugins = patchbay_build::build_plugins(&patchbay_build::crates_in(&root.join("plugins")));
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("a random signing key for the bundled plugins");
    let key = SecretKey::from_seed(seed);
    let mut code = format!(
        "/// The publisher the bundled packages are signed by.\npub const PUBLISHER: &str = {PUBLISHER:?};\n\
         /// This build's key for the bundled packages (its private half is gone).\npub const PUBLISHER_KEY: &str = {:?};\n\
         /// Bundled plugins: (manifest text, component bytes, plugin.sig text).\npub const BUNDLED: &[(&str, &[u8], &str)] = &[\n",
        key.public_key().to_string()
    );
    for plugin in plugins {
        let manifest_path = plugin.dir.join("plugin.toml");
        let manifest_text = std::fs::read_to_string(&manifest_path).expect("reading plugin.toml");
        let manifest = Manifest::parse(&manifest_text)
            .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
        let wasm = std::fs::read(&plugin.wasm).expect("reading the built component");
        let signature = Signature::sign(
            &key,
            PUBLISHER,
            (&manifest.id, &manifest.version.to_string()),
            &manifest_text,
            &wasm,
        )
        .expect("signing a bundled plugin");
        writeln!(
            code,
            "    (include_str!({:?}), include_bytes!({:?}), {:?}),",
            manifest_path,
            plugin.wasm,
            signature.to_toml()
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    // The contract, for `plugin new --lang python` to put beside the app.
    code.push_str("/// The connector WIT (path under wit/, text), for scaffolds.\npub const WIT_FILES: &[(&str, &str)] = &[\n");
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut files = Vec::new();
    let mut stack = vec![wit.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading wit/") {
            let path = entry.expect("wit entry").path();
            if path.is_dir() {
                // The frozen 0.1.0 contract is for the host, not new plugins.
                if path.file_name().is_some_and(|n| n != "v0.1.0") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "wit") {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let relative = path.strip_prefix(&wit).expect("under wit/");
        writeln!(
            code,
            "    ({:?}, include_str!({:?})),",
            relative.display().to_string(),
            path
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(out.join("bundled.rs"), code).expect("writing bundled.rs");
}
