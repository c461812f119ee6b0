//! Compiles every plugin (the shipped ones and the test ones) to a component
//! and generates one constant per plugin, plus `for_each_plugin!`, which the
//! test binary uses to require a test module per plugin.

use std::fmt::Write as _;

fn main() {
    let root = patchbay_build::workspace_root();
    let mut dirs = patchbay_build::crates_in(&root.join("plugins"));
    dirs.extend(patchbay_build::crates_in(
        &root.join("tests").join("plugins"),
    ));
    // Code compiled into a test plugin from outside its own directory.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("tests").join("crm-normalize").display()
    );
    let plugins = patchbay_build::build_plugins(&dirs);

    let mut code = String::new();
    let mut names = Vec::new();
    for plugin in &plugins {
        let ident = plugin.name.replace('-', "_");
        writeln!(
            code,
            "pub const {}: TestPlugin = TestPlugin {{ name: {:?}, dir: {:?}, wasm: {:?} }};",
            ident.to_uppercase(),
            plugin.name,
            plugin.dir,
            plugin.wasm
        )
        .expect("writing to a String");
        names.push(ident);
    }
    writeln!(
        code,
        "#[macro_export]\nmacro_rules! for_each_plugin {{ ($m:ident) => {{ {} }} }}",
        names
            .iter()
            .map(|n| format!("$m!({n});"))
            .collect::<String>()
    )
    .expect("writing to a String");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(out.join("plugins.rs"), code).expect("writing plugins.rs");
}
