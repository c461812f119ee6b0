//! Plugin packages: a `plugin.toml` manifest plus a `plugin.wasm` component.
//! Installation validates both together; the store keeps installed versions
//! side by side under the data directory.

use crate::Runtime;
use crate::error::{InvokeError, LoadError};
use patchbay_policy::manifest::{Manifest, ManifestError};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    // No `#[source]`/`#[from]` on the cases below that print their cause:
    // a reporter that prints the source chain would print each cause twice.
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("plugin.toml: {0}")]
    Manifest(ManifestError),
    #[error("{0}")]
    Component(LoadError),
    #[error("the component could not report its operations: {0}")]
    Probe(InvokeError),
    #[error("manifest and component disagree about operations: {0}")]
    OperationMismatch(String),
    #[error("plugin {id}@{version} is already installed")]
    AlreadyInstalled { id: String, version: String },
    #[error("plugin {0} is not installed")]
    NotInstalled(String),
    #[error("plugin store: {0}")]
    Store(String),
}

impl From<ManifestError> for PackageError {
    fn from(e: ManifestError) -> Self {
        Self::Manifest(e)
    }
}

impl From<LoadError> for PackageError {
    fn from(e: LoadError) -> Self {
        Self::Component(e)
    }
}

/// A package read from disk or memory, not yet validated.
pub struct Package {
    pub manifest_text: String,
    pub wasm: Vec<u8>,
}

impl Package {
    /// Read `plugin.toml` and `plugin.wasm` from `dir`.
    pub fn read_dir(dir: &Path) -> Result<Self, PackageError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| PackageError::Read {
                path: path.display().to_string(),
                error,
            })
        };
        let manifest = read("plugin.toml")?;
        let manifest_text = String::from_utf8(manifest).map_err(|_| {
            PackageError::Manifest(ManifestError::Syntax("plugin.toml is not UTF-8".into()))
        })?;
        Ok(Self {
            manifest_text,
            wasm: read("plugin.wasm")?,
        })
    }
}

/// A package whose manifest and component were validated together.
pub struct Validated {
    pub manifest: Arc<Manifest>,
    pub plugin: crate::LoadedPlugin,
}

/// Validate everything about a package: the manifest on its own, the component
/// against the connector world, and the two against each other.
pub async fn validate(runtime: &Runtime, package: &Package) -> Result<Validated, PackageError> {
    let manifest = Arc::new(Manifest::parse(&package.manifest_text)?);
    let mut plugin = runtime.load(manifest.clone(), &package.wasm)?;
    let reported: BTreeSet<String> = runtime
        .operation_names(&plugin)
        .await
        .map_err(PackageError::Probe)?
        .into_iter()
        .collect();
    let declared: BTreeSet<String> = manifest
        .operations
        .iter()
        .map(|op| op.name.clone())
        .collect();
    let missing: Vec<_> = declared.difference(&reported).cloned().collect();
    let undeclared: Vec<_> = reported.difference(&declared).cloned().collect();
    if !missing.is_empty() || !undeclared.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "declared in plugin.toml but not implemented: {}",
                missing.join(", ")
            ));
        }
        if !undeclared.is_empty() {
            parts.push(format!(
                "implemented but not declared in plugin.toml: {}",
                undeclared.join(", ")
            ));
        }
        return Err(PackageError::OperationMismatch(parts.join("; ")));
    }
    // Only now, with nothing left to refuse, is the compiled artifact kept.
    runtime.keep_compiled(&mut plugin)?;
    Ok(Validated { manifest, plugin })
}
