//! Compiles plugin crates to `wasm32-wasip2` components from a build script.
//!
//! Used by `host/patchbay/build.rs` (the bundled plugins) and `tests/build.rs` (bundled and
//! test plugins). It installs the wasm target when missing, so a fresh machine
//! needs nothing but the pinned toolchain, and runs a nested cargo in its own
//! target directory so it never waits on the outer build's lock.

#![warn(missing_docs)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

/// A plugin crate compiled to a component.
#[derive(Debug, Clone)]
pub struct BuiltPlugin {
    /// Crate name, e.g. `hubspot`.
    pub name: String,
    /// The crate's directory (holds `plugin.toml`).
    pub dir: PathBuf,
    /// The compiled component.
    pub wasm: PathBuf,
}

/// The workspace root, found from the calling crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("rust-toolchain.toml").exists())
        .expect("workspace root holds rust-toolchain.toml")
        .to_path_buf()
}

/// Every crate directory directly under `dir` (each holding a `Cargo.toml`), sorted.
pub fn crates_in(dir: &Path) -> Vec<PathBuf> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").exists())
        .collect();
    crates.sort();
    crates
}

/// Build the given plugin crates (directories) for `wasm32-wasip2` and return where
/// each component landed. Panics with a readable message on failure: this runs
/// in a build script, where a panic is how errors are reported.
pub fn build_plugins(crate_dirs: &[PathBuf]) -> Vec<BuiltPlugin> {
    let root = workspace_root();
    for dir in [root.join("sdk"), root.join("wit"), root.join("Cargo.lock")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for dir in crate_dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    ensure_target_installed();

    let target_dir = root.join("target").join("plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    let mut plugins = Vec::new();
    for dir in crate_dirs {
        let name = crate_name(dir);
        cmd.arg("-p").arg(&name);
        let wasm = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", name.replace('-', "_")));
        plugins.push(BuiltPlugin {
            name,
            dir: dir.clone(),
            wasm,
        });
    }
    scrub_outer_build_env(&mut cmd);
    let status = cmd.status().expect("running cargo to build plugins");
    assert!(
        status.success(),
        "building plugins for {TARGET} failed (see the cargo output above)"
    );
    for plugin in &plugins {
        assert!(
            plugin.wasm.exists(),
            "expected {} after the build",
            plugin.wasm.display()
        );
    }
    plugins
}

fn crate_name(dir: &Path) -> String {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("reading {}/Cargo.toml: {e}", dir.display()));
    manifest
        .lines()
        .find_map(|line| {
            let rest = line
                .trim()
                .strip_prefix("name")?
                .trim_start()
                .strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no package name in {}/Cargo.toml", dir.display()))
}

/// The outer cargo passes settings meant for the host build; the nested wasm build
/// must not inherit them (flags, target dir, profile overrides), except the
/// jobserver so both builds share the machine's cores.
fn scrub_outer_build_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE")
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_HTTP_");
        let outer = key.starts_with("CARGO_")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if outer && !keep {
            cmd.env_remove(key);
        }
    }
}

fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    // rust-toolchain.toml lists the target, but rustup only adds targets when it installs the
    // toolchain; add it here so a machine that already had 1.95.0 still builds.
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .unwrap_or_else(|e| {
            panic!("the {TARGET} target is missing and rustup could not be run to add it: {e}")
        });
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}
