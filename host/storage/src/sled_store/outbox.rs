//! The outbox's trees in sled.

use super::backend;
use crate::StorageError;
use crate::outbox::{Entries, OutboxBackend, Tree, Tx, TxBody, TxError};
use sled::Transactional as _;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

/// The outbox's trees, in the order of [`Tree::ALL`].
#[derive(Debug, Clone)]
pub struct SledOutbox {
    pub(super) db: sled::Db,
    pub(super) trees: Vec<sled::Tree>,
}

impl SledOutbox {
    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[index(tree)]
    }
}

fn index(tree: Tree) -> usize {
    Tree::ALL.iter().position(|t| *t == tree).unwrap_or(0)
}

/// One transaction's views of the trees.
struct Views<'a>(&'a [TransactionalTree]);

fn unabortable(e: UnabortableTransactionError) -> TxError {
    match e {
        UnabortableTransactionError::Conflict => TxError::Conflict,
        UnabortableTransactionError::Storage(e) => TxError::Failed(backend(e)),
    }
}

impl Tx for Views<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        self.0[index(tree)]
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(unabortable)
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        self.0[index(tree)]
            .insert(key, value)
            .map(drop)
            .map_err(unabortable)
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), TxError> {
        self.0[index(tree)]
            .remove(key)
            .map(drop)
            .map_err(unabortable)
    }
}

impl OutboxBackend for SledOutbox {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn transact(&self, body: &mut TxBody<'_>) -> Result<(), StorageError> {
        // sled runs the closure again after a conflict; it takes `Fn`, the
        // body is `FnMut`: one call at a time, so a cell lends it.
        let body = std::cell::RefCell::new(body);
        self.trees[..]
            .transaction(|views| {
                let mut body = body.borrow_mut();
                match body(&Views(views)) {
                    Ok(()) => Ok(()),
                    Err(TxError::Conflict) => Err(ConflictableTransactionError::Conflict),
                    Err(TxError::Failed(e)) => Err(ConflictableTransactionError::Abort(e)),
                }
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let tree = self.tree(tree);
        let range: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if to.is_empty() {
                Box::new(tree.range(from.to_vec()..))
            } else {
                Box::new(tree.range(from.to_vec()..to.to_vec()))
            };
        range
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(backend)
            })
            .collect()
    }

    fn next_id(&self) -> Result<u64, StorageError> {
        self.db.generate_id().map_err(backend)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(drop).map_err(backend)
    }
}
