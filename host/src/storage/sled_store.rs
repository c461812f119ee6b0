//! The sled-backed stores (embedded, on disk under the data directory).

use super::secrets::SecretStore;
use super::{KeyList, KvStore, Scope, StorageError, add_to_stored, decode_value, encode_value};
use std::path::Path;

fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The embedded database: one sled instance, one tree per kind of state.
#[derive(Debug, Clone)]
pub struct SledDb {
    db: sled::Db,
}

impl SledDb {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        Ok(Self { db })
    }

    pub fn secrets(&self) -> Result<SledSecrets, StorageError> {
        Ok(SledSecrets {
            tree: self.db.open_tree("secrets").map_err(backend)?,
        })
    }

    pub fn kv(&self) -> Result<SledKv, StorageError> {
        Ok(SledKv {
            tree: self.db.open_tree("kv").map_err(backend)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SledKv {
    tree: sled::Tree,
}

impl KvStore for SledKv {
    fn get(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let stored = self.tree.get(scope.key(key)).map_err(backend)?;
        Ok(stored.and_then(|v| decode_value(&v, now_ms).map(<[u8]>::to_vec)))
    }

    fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StorageError> {
        self.tree
            .insert(scope.key(key), encode_value(value, expires_at_ms))
            .map_err(backend)?;
        Ok(())
    }

    fn delete(&self, scope: &Scope, key: &str, now_ms: u64) -> Result<bool, StorageError> {
        let old = self.tree.remove(scope.key(key)).map_err(backend)?;
        Ok(old.is_some_and(|v| decode_value(&v, now_ms).is_some()))
    }

    fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<KeyList, StorageError> {
        let base = scope.prefix().len();
        let mut keys = Vec::new();
        let mut more = false;
        let iter = match after {
            // Strictly after the cursor: start at cursor + NUL, the next possible key.
            Some(cursor) if cursor >= prefix => {
                let mut start = scope.key(cursor);
                start.push(0);
                self.tree.range(start..)
            }
            _ => self.tree.range(scope.key(prefix)..),
        };
        let full_prefix = scope.key(prefix);
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            if decode_value(&v, now_ms).is_none() {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&k[base..]).into_owned());
        }
        Ok(KeyList { keys, more })
    }

    fn increment(
        &self,
        scope: &Scope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> Result<i64, StorageError> {
        let k = scope.key(key);
        // Compare-and-swap loop: concurrent increments retry instead of losing updates.
        loop {
            let old = self.tree.get(&k).map_err(backend)?;
            let (next, stored) = add_to_stored(old.as_deref(), delta, now_ms)?;
            match self
                .tree
                .compare_and_swap(&k, old, Some(stored))
                .map_err(backend)?
            {
                Ok(()) => return Ok(next),
                Err(_) => continue,
            }
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.tree.flush().map(|_| ()).map_err(backend)
    }
}

/// Sealed credentials; every write is flushed before it is acknowledged.
#[derive(Debug, Clone)]
pub struct SledSecrets {
    tree: sled::Tree,
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn sled_store_meets_the_secret_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::secrets::contract_tests::run_all(&db.secrets().expect("secrets tree"));
    }

    #[test]
    fn sled_store_meets_the_kv_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        super::super::contract_tests::run_all(&db.kv().expect("kv tree"));
    }
}
