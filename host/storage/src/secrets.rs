//! Sealed credential values, one per (workspace, connection, credential name).
//!
//! Backends store opaque sealed bytes; sealing and opening happen above them
//! (in `credentials`), so no backend ever holds a secret in the clear.

use super::{Scope, StorageError};
use std::sync::Arc;

/// Where sealed credential values are kept, one per (scope, credential
/// name). Values are opaque: sealed and opened by the caller.
pub trait SecretStore: Send + Sync + 'static {
    /// The sealed value stored under `name`; `None` when there is none.
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Store `sealed` under `name`; durable on disk when this returns.
    fn put(&self, scope: &Scope, name: &str, sealed: &[u8]) -> Result<(), StorageError>;
    /// Remove `name`; durable when this returns. Whether it existed.
    fn remove(&self, scope: &Scope, name: &str) -> Result<bool, StorageError>;
    /// Names stored for `scope`, sorted.
    fn names(&self, scope: &Scope) -> Result<Vec<String>, StorageError>;
    /// Every stored value with its scope and name (start-up checks, key rotation).
    fn all(&self) -> Result<Vec<(Scope, String, Vec<u8>)>, StorageError>;
    /// Store all of `values` at once: after a crash either every one is
    /// written or none is (key rotation). Durable when this returns.
    fn put_all(&self, values: &[(Scope, String, Vec<u8>)]) -> Result<(), StorageError>;
}

/// A secret store as the services share it.
pub type SharedSecrets = Arc<dyn SecretStore>;

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The behaviour every `SecretStore` must have, run against each implementation.
    use super::*;
    use crate::scope;

    pub(crate) fn run_all(store: &dyn SecretStore) {
        let a = scope("ws-a", "crm");
        let b = scope("ws-b", "crm");
        // Names chosen so a naive concatenation would collide.
        let c = scope("ws-a", "c");
        let d = scope("ws-ac", "");
        store.put(&a, "token", b"sealed-a").expect("put");
        store.put(&c, "rm", b"sealed-c").expect("put");
        assert_eq!(store.get(&b, "token").expect("get"), None);
        assert_eq!(store.get(&d, "crm").expect("get"), None);
        assert!(store.names(&b).expect("names").is_empty());
        assert_eq!(store.names(&a).expect("names"), ["token"]);
        store.put(&a, "api_key", b"k").expect("put");
        assert_eq!(store.names(&a).expect("names"), ["api_key", "token"]);
        store.put(&a, "token", b"sealed-a2").expect("overwrite");
        assert_eq!(
            store.get(&a, "token").expect("get").as_deref(),
            Some(&b"sealed-a2"[..])
        );
        let mut all: Vec<(String, String, String)> = store
            .all()
            .expect("all")
            .into_iter()
            .map(|(s, n, _)| (s.workspace, s.connection, n))
            .collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("ws-a".into(), "c".into(), "rm".into()),
                ("ws-a".into(), "crm".into(), "api_key".into()),
                ("ws-a".into(), "crm".into(), "token".into()),
            ]
        );
        store
            .put_all(&[
                (a.clone(), "token".into(), b"v2-a".to_vec()),
                (c.clone(), "rm".into(), b"v2-c".to_vec()),
            ])
            .expect("put all");
        assert_eq!(
            store.get(&a, "token").expect("get").as_deref(),
            Some(&b"v2-a"[..])
        );
        assert_eq!(
            store.get(&c, "rm").expect("get").as_deref(),
            Some(&b"v2-c"[..])
        );
        assert!(store.remove(&a, "token").expect("remove"));
        assert!(!store.remove(&a, "token").expect("remove again"));
        assert_eq!(store.get(&a, "token").expect("get"), None);
        assert_eq!(
            store.get(&c, "rm").expect("get").as_deref(),
            Some(&b"v2-c"[..])
        );
    }
}
