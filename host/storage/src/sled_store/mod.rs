//! The sled-backed stores (embedded, on disk under the data directory):
//! one sled instance, one module per kind of state, each behind its trait.

mod audit;
mod kv;
mod outbox;
mod secrets;
mod tenancy;

pub use audit::SledAudit;
pub use kv::SledKv;
pub use outbox::SledOutbox;
pub use secrets::SledSecrets;
pub use tenancy::SledTenancy;

use super::StorageError;
use std::path::Path;

pub(super) fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// A failed transaction's error: our own refusal, or sled's.
pub(super) fn transaction_error(
    e: sled::transaction::TransactionError<StorageError>,
) -> StorageError {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => backend(e),
    }
}

/// Remove every key under `prefix` in one batch; how many.
pub(super) fn remove_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<usize, StorageError> {
    let mut batch = sled::Batch::default();
    let mut removed = 0;
    for key in tree.scan_prefix(prefix).keys() {
        batch.remove(key.map_err(backend)?);
        removed += 1;
    }
    tree.apply_batch(batch).map_err(backend)?;
    Ok(removed)
}

/// The embedded database: one sled instance, one tree per kind of state.
#[derive(Debug, Clone)]
pub struct SledDb {
    db: sled::Db,
}

impl SledDb {
    /// Open the database in `dir`, creating it if it is not there.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        Ok(Self { db })
    }

    /// The audit trail, on its own tree.
    pub fn audit(&self) -> Result<SledAudit, StorageError> {
        Ok(SledAudit {
            tree: self.db.open_tree("audit").map_err(backend)?,
        })
    }

    /// The trail of caller lookups run, on its own tree.
    pub fn lookup_runs(&self) -> Result<SledAudit, StorageError> {
        Ok(SledAudit {
            tree: self.db.open_tree("lookup-runs").map_err(backend)?,
        })
    }

    /// Workspaces, connections and workspace tokens, on their trees.
    pub fn tenancy(&self) -> Result<SledTenancy, StorageError> {
        Ok(SledTenancy {
            workspaces: self.db.open_tree("workspaces").map_err(backend)?,
            connections: self.db.open_tree("connections").map_err(backend)?,
            tokens: self.db.open_tree("tokens").map_err(backend)?,
            token_digests: self.db.open_tree("token-digests").map_err(backend)?,
            lookups: self.db.open_tree("lookups").map_err(backend)?,
        })
    }

    /// The outbox (events, deliveries, queues, subscriptions), on its trees.
    pub fn outbox(&self) -> Result<SledOutbox, StorageError> {
        let trees = crate::outbox::Tree::ALL
            .iter()
            .map(|tree| self.db.open_tree(tree.name()).map_err(backend))
            .collect::<Result<_, _>>()?;
        Ok(SledOutbox {
            db: self.db.clone(),
            trees,
        })
    }

    /// Sealed credentials, on their own tree.
    pub fn secrets(&self) -> Result<SledSecrets, StorageError> {
        Ok(SledSecrets {
            tree: self.db.open_tree("secrets").map_err(backend)?,
        })
    }

    /// KV values and each scope's usage, on their trees.
    pub fn kv(&self) -> Result<SledKv, StorageError> {
        Ok(SledKv {
            tree: self.db.open_tree("kv").map_err(backend)?,
            usage: self.db.open_tree("kv-usage").map_err(backend)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sled_store_meets_the_tenancy_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        crate::tenancy::contract_tests::run_all(&db.tenancy().expect("trees"));
    }

    #[test]
    fn sled_store_meets_the_audit_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        crate::audit::contract_tests::run_all(&db.audit().expect("audit tree"));
    }

    #[test]
    fn sled_store_meets_the_secret_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        crate::secrets::contract_tests::run_all(&db.secrets().expect("secrets tree"));
    }

    #[test]
    fn sled_store_meets_the_outbox_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        let outbox = crate::outbox::Outbox::new(std::sync::Arc::new(db.outbox().expect("trees")));
        crate::outbox::contract_tests::run_all(&outbox);
    }

    #[test]
    fn sled_store_meets_the_kv_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::SledDb::open(dir.path()).expect("open");
        crate::contract_tests::run_all(&db.kv().expect("kv tree"));
    }
}
