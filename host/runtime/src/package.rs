//! Plugin packages: a `plugin.toml` manifest plus a `plugin.wasm` component.
//! Installation validates both together; the store keeps installed versions
//! side by side under the data directory.

use crate::Runtime;
use crate::error::{InvokeError, LoadError};
use patchbay_policy::manifest::{Manifest, ManifestError};
use patchbay_policy::signing::{Provenance, SIGNATURE_FILE, SignatureError, TrustError};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    // No `#[source]`/`#[from]` on the cases below that print their cause:
    // a reporter that prints the source chain would print each cause twice.
    /// A file of the package could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// `plugin.toml` is not UTF-8, or manifest validation refuses it.
    #[error("plugin.toml: {0}")]
    Manifest(ManifestError),
    /// `plugin.wasm` cannot be loaded as a plugin.
    #[error("{0}")]
    Component(LoadError),
    /// The component failed when asked for its operation names (it trapped or
    /// ran out of time, say).
    #[error("the component could not report its operations: {0}")]
    Probe(InvokeError),
    /// The manifest declares other operations than the component implements:
    /// which are missing on each side.
    #[error("manifest and component disagree about operations: {0}")]
    OperationMismatch(String),
    /// This version of the plugin is installed already; an installed version
    /// is never replaced.
    #[error("plugin {id}@{version} is already installed")]
    AlreadyInstalled {
        /// The plugin's id.
        id: String,
        /// The version installed already.
        version: String,
    },
    /// No installed package matches the reference (`id` or `id@version`)
    /// given.
    #[error("plugin {0} is not installed")]
    NotInstalled(String),
    /// The package's signature does not hold (a file changed after
    /// signing, another package's signature, a malformed `plugin.sig`).
    #[error("{0}")]
    Signature(SignatureError),
    /// Operator policy does not install this package (unsigned, or signed
    /// by a publisher it does not trust).
    #[error("{0}")]
    Untrusted(TrustError),
    /// The plugin store on disk failed: what it was doing, and the I/O error.
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
#[derive(Clone)]
pub struct Package {
    /// `plugin.toml` as read.
    pub manifest_text: String,
    /// `plugin.wasm`: the component's bytes.
    pub wasm: Vec<u8>,
    /// `plugin.sig`'s text, when the package is signed.
    pub signature: Option<String>,
}

impl Package {
    /// The package's digest and, when its signature holds, its publisher
    /// (`manifest` is its parsed `plugin.toml`).
    pub fn provenance(&self, manifest: &Manifest) -> Result<Provenance, PackageError> {
        Provenance::of(
            (&manifest.id, &manifest.version.to_string()),
            &self.manifest_text,
            &self.wasm,
            self.signature.as_deref(),
        )
        .map_err(PackageError::Signature)
    }

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
        let signature = match dir.join(SIGNATURE_FILE).exists() {
            true => Some(String::from_utf8(read(SIGNATURE_FILE)?).map_err(|_| {
                PackageError::Signature(SignatureError::Malformed("not UTF-8".into()))
            })?),
            false => None,
        };
        Ok(Self {
            manifest_text,
            wasm: read("plugin.wasm")?,
            signature,
        })
    }
}

/// A package whose manifest and component were validated together.
pub struct Validated {
    /// The manifest, parsed and validated.
    pub manifest: Arc<Manifest>,
    /// The component, ready to run; its compiled artifact is cached, when
    /// the runtime has a cache directory.
    pub plugin: crate::LoadedPlugin,
    /// The package's digest and, when it is signed, its publisher.
    pub provenance: Provenance,
}

/// Validate everything about a package: the manifest on its own, its
/// signature (when it has one) against exactly these files, the component
/// against the connector world, and the two against each other. Whether the
/// publisher is trusted is the installer's question.
pub async fn validate(runtime: &Runtime, package: &Package) -> Result<Validated, PackageError> {
    let manifest = Arc::new(Manifest::parse(&package.manifest_text)?);
    let provenance = package.provenance(&manifest)?;
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
    Ok(Validated {
        manifest,
        plugin,
        provenance,
    })
}
