//! Compiles the bundled plugins (`plugins/*`) and embeds them in the binary, so
//! `patchbay serve` has them with no extra step.

use std::fmt::Write as _;

fn main() {
    let root = patchbay_build::workspace_root();
    let plugins = patchbay_build::build_plugins(&patchbay_build::crates_in(&root.join("plugins")));
    let mut code = String::from(
        "/// Bundled plugins: (manifest text, component bytes).\npub const BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for plugin in plugins {
        writeln!(
            code,
            "    (include_str!({:?}), include_bytes!({:?})),",
            plugin.dir.join("plugin.toml"),
            plugin.wasm
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(out.join("bundled.rs"), code).expect("writing bundled.rs");
}
