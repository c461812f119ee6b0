//! The installed plugins, ready to run: the on-disk store plus a cache of
//! loaded (compiled, pre-instantiated) versions, so a version is validated and
//! compiled once and every invocation after that only instantiates.

use crate::store::{InstalledPlugin, PluginStore, PluginVersion};
use patchbay_policy::manifest::Manifest;
use patchbay_policy::signing::PackagePolicy;
use patchbay_runtime::package::{Package, PackageError, validate};
use patchbay_runtime::{LoadedPlugin, Runtime};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The installed plugins: the on-disk store, and each version loaded
/// (validated, compiled, pre-instantiated) once and kept for the calls
/// after.
pub struct Catalog {
    store: PluginStore,
    runtime: Arc<Runtime>,
    trust: PackagePolicy,
    loaded: RwLock<HashMap<(String, String), Arc<LoadedPlugin>>>,
}

impl Catalog {
    /// A catalog of the packages in `store`, loaded into `runtime` as they are
    /// installed or first asked for; `trust` decides which new packages are
    /// installed.
    pub fn new(store: PluginStore, runtime: Arc<Runtime>, trust: PackagePolicy) -> Self {
        Self {
            store,
            runtime,
            trust,
            loaded: RwLock::default(),
        }
    }

    /// The runtime the plugins are loaded into and run on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Install a package: its signature checked and its publisher admitted
    /// by operator policy before the component is compiled, then validated.
    pub async fn install(&self, package: Package) -> Result<InstalledPlugin, PackageError> {
        let manifest = Manifest::parse(&package.manifest_text)?;
        let provenance = package.provenance(&manifest)?;
        self.trust
            .admit(provenance.publisher.as_ref())
            .map_err(PackageError::Untrusted)?;
        let validated = validate(&self.runtime, &package).await?;
        let installed = self.store.install(&package, &validated)?;
        let key = (installed.id.clone(), installed.version.clone());
        self.loaded_mut().insert(key, Arc::new(validated.plugin));
        Ok(installed)
    }

    /// Install each of `packages` whose version is not installed yet (the
    /// binary's bundled plugins at start-up); returns those installed now.
    pub async fn install_missing(
        &self,
        packages: impl IntoIterator<Item = Package>,
    ) -> Result<Vec<InstalledPlugin>, PackageError> {
        let mut installed = Vec::new();
        for package in packages {
            let manifest = Manifest::parse(&package.manifest_text)?;
            if !self
                .store
                .contains(&manifest.id, &manifest.version.to_string())
            {
                installed.push(self.install(package).await?);
            }
        }
        Ok(installed)
    }

    /// Every installed version, by id, each id's newest first; reads every
    /// package.
    pub fn list(&self) -> Result<Vec<InstalledPlugin>, PackageError> {
        self.store.list()
    }

    /// Every installed version of `id`, newest first.
    pub fn list_versions(&self, id: &str) -> Result<Vec<InstalledPlugin>, PackageError> {
        self.store.list_versions(id)
    }

    /// The manifest of `id` or `id@version`.
    pub fn inspect(&self, reference: &str) -> Result<Manifest, PackageError> {
        let (id, version) = self.store.resolve(reference)?;
        let package = self.store.read(&id, &version)?;
        Ok(Manifest::parse(&package.manifest_text)?)
    }

    /// The manifest of `id` or `id@version` with the package's digest and
    /// publisher, its signature checked against the files on disk.
    pub fn inspect_package(&self, reference: &str) -> Result<PluginVersion, PackageError> {
        let (id, version) = self.store.resolve(reference)?;
        let (_, manifest, package) = self.store.read_checked(&id, &version)?;
        Ok(PluginVersion { manifest, package })
    }

    /// Remove `id@version` (`id` alone: its newest version) from the disk and
    /// the loaded plugins; the id and version removed. Whether a connection
    /// pins it is for the caller to check first
    /// ([`Tenancy::remove_plugin`](crate::service::Tenancy::remove_plugin) does).
    pub fn remove(&self, reference: &str) -> Result<(String, String), PackageError> {
        let (id, version) = self.store.resolve(reference)?;
        self.store.remove(&id, &version)?;
        self.loaded_mut().remove(&(id.clone(), version.clone()));
        Ok((id, version))
    }

    /// The runnable plugin for `id` or `id@version`, loading it on first use.
    pub async fn get(&self, reference: &str) -> Result<Arc<LoadedPlugin>, PackageError> {
        // A pinned version already loaded is served without touching the disk:
        // this runs on every invocation.
        if let Some((id, version)) = reference.split_once('@')
            && let Some(plugin) = self.cached(&(id.to_owned(), version.to_owned()))
        {
            return Ok(plugin);
        }
        let key = self.store.resolve(reference)?;
        if let Some(plugin) = self.cached(&key) {
            return Ok(plugin);
        }
        let package = self.store.read(&key.0, &key.1)?;
        let validated = validate(&self.runtime, &package).await?;
        let plugin = Arc::new(validated.plugin);
        self.loaded_mut().insert(key, plugin.clone());
        Ok(plugin)
    }

    fn cached(&self, key: &(String, String)) -> Option<Arc<LoadedPlugin>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Whether `id@version` is installed.
    pub fn is_installed(&self, id: &str, version: &str) -> bool {
        self.store.contains(id, version)
    }

    fn loaded_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Arc<LoadedPlugin>>> {
        self.loaded.write().unwrap_or_else(|e| e.into_inner())
    }
}
