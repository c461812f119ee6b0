//! Compiled-plugin cache: a component is compiled once and its artifact kept on
//! disk, keyed by the component's content hash and the engine's compatibility
//! hash, so a host upgrade or a config change never loads a stale artifact.

use crate::error::LoadError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// SHA-256 of the component bytes, hex.
pub fn content_hash(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// A component ready to link, and (when it was compiled just now) the
/// artifact to keep once its package is accepted.
pub struct Compiled {
    /// Compiled, or loaded from the cache, and ready to link.
    pub component: Component,
    /// The artifact to write to the cache once the package is accepted; `None`
    /// when it came from the cache or there is no cache directory.
    pub pending: Option<Pending>,
}

/// A fresh compile not yet in the cache: written only by [`Pending::write`],
/// so a package refused after compiling leaves nothing on disk.
pub struct Pending {
    component: Component,
    path: PathBuf,
}

/// Compile `wasm`, or load its cached artifact from `dir` when present.
pub fn compile(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> Result<Compiled, LoadError> {
    let fresh = || Component::new(engine, wasm).map_err(|e| LoadError::Invalid(format!("{e:#}")));
    let Some(dir) = dir else {
        return Ok(Compiled {
            component: fresh()?,
            pending: None,
        });
    };
    let path: PathBuf = dir.join(format!(
        "{}-{}.cwasm",
        content_hash(wasm),
        engine_hash(engine)
    ));
    if path.exists() {
        match load_artifact(engine, &path) {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    pending: None,
                });
            }
            Err(e) => {
                tracing::warn!(target: "patchbay::runtime", path = %path.display(), error = %e, "discarding unreadable compiled artifact")
            }
        }
    }
    let component = fresh()?;
    Ok(Compiled {
        pending: Some(Pending {
            component: component.clone(),
            path,
        }),
        component,
    })
}

impl Pending {
    /// Write the artifact into the cache.
    pub fn write(self) -> Result<(), LoadError> {
        let Self { component, path } = self;
        let artifact = component
            .serialize()
            .map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LoadError::Cache(format!("creating {}: {e}", dir.display())))?;
        }
        // Write then rename, so a crash never leaves a truncated artifact under the final name.
        // Unique per write: two installs of one component in one process
        // must not write the same temporary file.
        let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::write(&tmp, &artifact)
            .map_err(|e| LoadError::Cache(format!("writing {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LoadError::Cache(format!("renaming {}: {e}", tmp.display())))?;
        Ok(())
    }
}

#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that deserialized bytes came from `serialize` of a
    // compatible engine. Only this process writes into the cache directory (inside
    // the operator's data dir), by atomic rename, under a name that includes the
    // content hash and the engine's compatibility hash; wasmtime re-checks the
    // engine compatibility header on load.
    unsafe { Component::deserialize_file(engine, path) }
}
