//! Installed plugins on disk: `<data>/plugins/<id>/<version>/{plugin.toml,plugin.wasm}`.
//! Versions of one plugin live side by side; a version is written to a temporary
//! directory and renamed into place, so a crash never leaves half a package.

use patchbay_policy::manifest::{Manifest, is_slug};
use patchbay_policy::signing::{Provenance, Publisher, SIGNATURE_FILE};
use patchbay_runtime::package::{Package, PackageError, Validated};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The installed plugin packages, each version in `<root>/<id>/<version>/`.
#[derive(Debug, Clone)]
pub struct PluginStore {
    root: PathBuf,
}

/// What `list` shows about an installed version.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstalledPlugin {
    /// The plugin's id.
    pub id: String,
    /// The version, as semver writes it.
    pub version: String,
    /// The plugin's name, for people.
    pub name: String,
    /// Who publishes it.
    pub vendor: String,
    /// What it does, for people; may be empty.
    pub description: String,
    /// The names of its operations.
    pub operations: Vec<String>,
    /// SHA-256 of `plugin.wasm`, hex.
    pub content_hash: String,
    /// The package's digest: `sha256:` over both files (what a signature
    /// covers).
    pub digest: String,
    /// Who signed the package; `null` when it is unsigned.
    pub publisher: Option<Publisher>,
}

/// One installed version as `plugin inspect` and
/// `GET /v1/plugins/{id}/{version}` show it: the whole manifest, and the
/// package's digest and publisher.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginVersion {
    /// The manifest, as validated.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Where the package comes from.
    pub package: Provenance,
}

fn store_error(context: &str, e: std::io::Error) -> PackageError {
    PackageError::Store(format!("{context}: {e}"))
}

impl PluginStore {
    /// The store under `root`, created if missing.
    pub fn open(root: PathBuf) -> Result<Self, PackageError> {
        std::fs::create_dir_all(&root)
            .map_err(|e| store_error(&format!("creating {}", root.display()), e))?;
        Ok(Self { root })
    }

    fn version_dir(&self, id: &str, version: &str) -> PathBuf {
        self.root.join(id).join(version)
    }

    /// Whether `id@version` is installed (its `plugin.wasm` is in place).
    pub fn contains(&self, id: &str, version: &str) -> bool {
        self.version_dir(id, version).join("plugin.wasm").exists()
    }

    /// Store a validated package.
    pub fn install(
        &self,
        package: &Package,
        validated: &Validated,
    ) -> Result<InstalledPlugin, PackageError> {
        let m = &validated.manifest;
        let version = m.version.to_string();
        if self.contains(&m.id, &version) {
            return Err(PackageError::AlreadyInstalled {
                id: m.id.clone(),
                version,
            });
        }
        let dir = self.version_dir(&m.id, &version);
        let parent = dir.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(|e| store_error("creating plugin directory", e))?;
        let tmp = parent.join(format!(".{version}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| store_error("creating staging directory", e))?;
        std::fs::write(tmp.join("plugin.toml"), &package.manifest_text)
            .map_err(|e| store_error("writing plugin.toml", e))?;
        std::fs::write(tmp.join("plugin.wasm"), &package.wasm)
            .map_err(|e| store_error("writing plugin.wasm", e))?;
        if let Some(signature) = &package.signature {
            std::fs::write(tmp.join(SIGNATURE_FILE), signature)
                .map_err(|e| store_error("writing plugin.sig", e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| store_error("moving package into place", e))?;
        Ok(describe(
            m,
            validated.plugin.content_hash.clone(),
            validated.provenance.clone(),
        ))
    }

    /// Read an installed version's package.
    pub fn read(&self, id: &str, version: &str) -> Result<Package, PackageError> {
        let dir = self.version_dir(id, version);
        if !self.contains(id, version) {
            return Err(PackageError::NotInstalled(format!("{id}@{version}")));
        }
        Package::read_dir(&dir)
    }

    /// Read an installed version with its manifest parsed and its signature
    /// checked against the files on disk: a package changed after it was
    /// installed is refused, naming it and the file that changed.
    pub fn read_checked(
        &self,
        id: &str,
        version: &str,
    ) -> Result<(Package, Manifest, Provenance), PackageError> {
        let package = self.read(id, version)?;
        let manifest = Manifest::parse(&package.manifest_text)?;
        let provenance = package
            .provenance(&manifest)
            .map_err(|e| PackageError::Store(format!("installed package {id}@{version}: {e}")))?;
        Ok((package, manifest, provenance))
    }

    /// Installed versions of `id`, newest first.
    pub fn versions(&self, id: &str) -> Vec<semver::Version> {
        let mut versions: Vec<semver::Version> = read_names(&self.root.join(id))
            .into_iter()
            .filter_map(|v| semver::Version::parse(&v).ok())
            .filter(|v| self.contains(id, &v.to_string()))
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        versions
    }

    /// Resolve `id` or `id@version` (no version: the newest installed).
    /// Anything but a slug id and a semver version is not installed, so no
    /// reference (`..`, `a/b`) ever reaches a path.
    pub fn resolve(&self, reference: &str) -> Result<(String, String), PackageError> {
        let (id, version) = reference.split_once('@').unwrap_or((reference, "0.0.0"));
        if !is_slug(id) || semver::Version::parse(version).is_err() {
            return Err(PackageError::NotInstalled(reference.to_owned()));
        }
        match reference.split_once('@') {
            Some((id, version)) => {
                if self.contains(id, version) {
                    Ok((id.to_owned(), version.to_owned()))
                } else {
                    Err(PackageError::NotInstalled(reference.to_owned()))
                }
            }
            None => self
                .versions(reference)
                .first()
                .map(|v| (reference.to_owned(), v.to_string()))
                .ok_or_else(|| PackageError::NotInstalled(reference.to_owned())),
        }
    }

    /// Every installed version.
    pub fn list(&self) -> Result<Vec<InstalledPlugin>, PackageError> {
        let mut out = Vec::new();
        for id in read_names(&self.root) {
            out.extend(self.list_versions(&id)?);
        }
        Ok(out)
    }

    /// Every installed version of `id`, newest first (reads only its packages).
    pub fn list_versions(&self, id: &str) -> Result<Vec<InstalledPlugin>, PackageError> {
        if !is_slug(id) {
            return Ok(Vec::new());
        }
        self.versions(id)
            .into_iter()
            .map(|version| {
                let (package, manifest, provenance) =
                    self.read_checked(id, &version.to_string())?;
                Ok(describe(
                    &manifest,
                    patchbay_runtime::cache::content_hash(&package.wasm),
                    provenance,
                ))
            })
            .collect()
    }

    /// Remove one version.
    pub fn remove(&self, id: &str, version: &str) -> Result<(), PackageError> {
        self.resolve(&format!("{id}@{version}"))?;
        if !self.contains(id, version) {
            return Err(PackageError::NotInstalled(format!("{id}@{version}")));
        }
        std::fs::remove_dir_all(self.version_dir(id, version))
            .map_err(|e| store_error("removing plugin", e))?;
        // Leave no empty id directory behind.
        let _ = std::fs::remove_dir(self.root.join(id));
        Ok(())
    }

    /// The directory the packages are under.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn read_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn describe(m: &Manifest, content_hash: String, provenance: Provenance) -> InstalledPlugin {
    InstalledPlugin {
        id: m.id.clone(),
        version: m.version.to_string(),
        name: m.name.clone(),
        vendor: m.vendor.clone(),
        description: m.description.clone(),
        operations: m.operations.iter().map(|o| o.name.clone()).collect(),
        content_hash,
        digest: provenance.digest,
        publisher: provenance.publisher,
    }
}
