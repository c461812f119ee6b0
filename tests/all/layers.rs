//! The host's layers, as `cargo tree` sees them: each crate depends only on
//! the layers below it, and the lower layers keep the machinery of the upper
//! ones out (no wasm engine in storage, no HTTP server in the runtime, no
//! host in the SDK). `host/README.md` draws the same picture.

use std::collections::BTreeSet;
use std::process::Command;

/// The host's crates, bottom first.
const LAYERS: &[&str] = &[
    "patchbay-policy",
    "patchbay-storage",
    "patchbay-egress",
    "patchbay-runtime",
    "patchbay-tenancy",
    "patchbay-lookup",
    "patchbay-events",
    "patchbay-api",
    "patchbay",
];

/// Layers that stand beside the one listed before them: neither uses the
/// other (the event flow stands beside the caller lookup, on the tenancy).
const SIDE_BY_SIDE: &[&str] = &["patchbay-events"];

/// Packages each crate must not depend on (normal dependencies, default
/// features), beyond the host crates above it.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "patchbay-policy",
        &[
            "tokio", "sled", "reqwest", "hyper", "wasmtime", "axum", "utoipa",
        ],
    ),
    (
        "patchbay-storage",
        &["tokio", "reqwest", "hyper", "wasmtime", "axum", "utoipa"],
    ),
    (
        "patchbay-egress",
        &[
            "wasmtime",
            "wasmtime-wasi",
            "wasmtime-wasi-http",
            "axum",
            "utoipa",
        ],
    ),
    ("patchbay-runtime", &["axum", "utoipa", "utoipa-axum"]),
    ("patchbay-tenancy", &["axum", "utoipa", "utoipa-axum"]),
    ("patchbay-lookup", &["axum", "utoipa", "utoipa-axum"]),
    ("patchbay-events", &["axum", "utoipa", "utoipa-axum"]),
    (
        "patchbay-sdk",
        &[
            "patchbay-policy",
            "patchbay-storage",
            "patchbay-egress",
            "patchbay-runtime",
            "patchbay-tenancy",
            "patchbay-lookup",
            "patchbay-events",
            "patchbay-api",
            "patchbay",
            "wasmtime",
        ],
    ),
];

/// Every package in `krate`'s normal dependency tree (itself included).
fn tree(krate: &str) -> BTreeSet<String> {
    cargo_tree(krate, &[])
}

/// `cargo tree` of `krate` (normal dependencies) with `extra` flags: the
/// package names it prints.
fn cargo_tree(krate: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", krate])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_layer_depends_only_on_the_layers_below_it() {
    for (index, krate) in LAYERS.iter().enumerate() {
        let packages = tree(krate);
        let above: Vec<&&str> = LAYERS[index + 1..]
            .iter()
            .filter(|upper| packages.contains(**upper))
            .collect();
        assert!(above.is_empty(), "{krate} depends on {above:?}, above it");
        if index > 0 {
            // The tree is really read: each layer reaches the one below
            // (a layer beside another reaches the one below both).
            let below = if SIDE_BY_SIDE.contains(krate) {
                LAYERS[index - 2]
            } else {
                LAYERS[index - 1]
            };
            assert!(packages.contains(below), "{krate}: {packages:?}");
        }
    }
}

#[test]
fn lower_layers_keep_the_upper_machinery_out() {
    for (krate, forbidden) in FORBIDDEN {
        let packages = tree(krate);
        assert!(
            packages.contains(*krate),
            "{krate}'s own tree: {packages:?}"
        );
        let found: Vec<&&str> = forbidden
            .iter()
            .filter(|name| packages.contains(**name))
            .collect();
        assert!(found.is_empty(), "{krate} depends on {found:?}");
    }
}

#[test]
fn the_host_readme_shows_the_direct_dependencies_cargo_tree_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../host/README.md"))
        .expect("host/README.md");
    let table = readme
        .lines()
        .skip_while(|line| !line.starts_with("| crate | uses directly |"))
        .take_while(|line| line.starts_with('|'));
    let mut rows = 0;
    for line in table {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, krate, uses, _] = cells[..] else {
            continue;
        };
        if !LAYERS.contains(&krate) {
            continue;
        }
        rows += 1;
        let shown: BTreeSet<String> = uses
            .split(',')
            .map(str::trim)
            .filter(|name| name.starts_with("patchbay"))
            .map(str::to_owned)
            .collect();
        let actual: BTreeSet<String> = cargo_tree(krate, &["--depth", "1"])
            .into_iter()
            .filter(|name| name.starts_with("patchbay") && name != krate)
            .collect();
        assert_eq!(shown, actual, "host/README.md's row for {krate}");
    }
    assert_eq!(rows, LAYERS.len(), "one row per layer in host/README.md");
}
