//! Sealed credentials in sled.

use super::backend;
use crate::secrets::SecretStore;
use crate::{Scope, StorageError};

/// Sealed credentials; every write is flushed before it is acknowledged.
#[derive(Debug, Clone)]
pub struct SledSecrets {
    pub(super) tree: sled::Tree,
}

impl SecretStore for SledSecrets {
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree
            .get(scope.key(name))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, scope: &Scope, name: &str, sealed: &[u8]) -> Result<(), StorageError> {
        self.tree.insert(scope.key(name), sealed).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }

    fn remove(&self, scope: &Scope, name: &str) -> Result<bool, StorageError> {
        let old = self.tree.remove(scope.key(name)).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(old.is_some())
    }

    fn names(&self, scope: &Scope) -> Result<Vec<String>, StorageError> {
        let prefix = scope.prefix();
        self.tree
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    fn all(&self) -> Result<Vec<(Scope, String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item.map_err(backend)?;
            if let Some((scope, name)) = Scope::split_key(&key) {
                out.push((scope, name, value.to_vec()));
            }
        }
        Ok(out)
    }

    fn put_all(&self, values: &[(Scope, String, Vec<u8>)]) -> Result<(), StorageError> {
        // One batch is applied atomically by sled, also across a crash.
        let mut batch = sled::Batch::default();
        for (scope, name, sealed) in values {
            batch.insert(scope.key(name), sealed.as_slice());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }
}
