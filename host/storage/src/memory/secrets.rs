//! In-memory sealed credentials.

use crate::{Scope, StorageError};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// In-memory `SecretStore`, for unit tests only.
#[derive(Debug, Default)]
pub struct MemorySecrets {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemorySecrets {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::secrets::SecretStore for MemorySecrets {
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map().get(&scope.key(name)).cloned())
    }

    fn put(&self, scope: &Scope, name: &str, sealed: &[u8]) -> Result<(), StorageError> {
        self.map().insert(scope.key(name), sealed.to_vec());
        Ok(())
    }

    fn put_all(&self, values: &[(Scope, String, Vec<u8>)]) -> Result<(), StorageError> {
        let mut map = self.map();
        for (scope, name, sealed) in values {
            map.insert(scope.key(name), sealed.clone());
        }
        Ok(())
    }

    fn remove(&self, scope: &Scope, name: &str) -> Result<bool, StorageError> {
        Ok(self.map().remove(&scope.key(name)).is_some())
    }

    fn names(&self, scope: &Scope) -> Result<Vec<String>, StorageError> {
        let prefix = scope.prefix();
        Ok(self
            .map()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    fn all(&self) -> Result<Vec<(Scope, String, Vec<u8>)>, StorageError> {
        Ok(self
            .map()
            .iter()
            .filter_map(|(k, v)| Scope::split_key(k).map(|(s, n)| (s, n, v.clone())))
            .collect())
    }
}
