//! The outbox's trees in memory: a transaction writes to an overlay that is
//! applied whole when its body succeeds, or dropped.

use crate::StorageError;
use crate::outbox::{Entries, OutboxBackend, Tree, Tx, TxBody, TxError};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

type Trees = HashMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;
/// A transaction's writes; `None` removes.
type Writes = BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>;

/// The outbox's trees, in memory.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    trees: Mutex<Trees>,
    ids: AtomicU64,
}

impl MemoryOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transaction: reads see its own writes first, then the trees.
struct Overlay<'a> {
    base: &'a Trees,
    writes: RefCell<Writes>,
}

impl Tx for Overlay<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        if let Some(written) = self.writes.borrow().get(&(tree, key.to_vec())) {
            return Ok(written.clone());
        }
        Ok(self.base.get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxError> {
        self.writes
            .borrow_mut()
            .insert((tree, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), TxError> {
        self.writes.borrow_mut().insert((tree, key.to_vec()), None);
        Ok(())
    }
}

impl OutboxBackend for MemoryOutbox {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn transact(&self, body: &mut TxBody<'_>) -> Result<(), StorageError> {
        let mut trees = self.lock();
        let writes = {
            let overlay = Overlay {
                base: &trees,
                writes: RefCell::default(),
            };
            match body(&overlay) {
                Ok(()) => overlay.writes.into_inner(),
                Err(TxError::Failed(e)) => return Err(e),
                Err(TxError::Conflict) => {
                    return Err(StorageError::Backend(
                        "a memory transaction reported a conflict".into(),
                    ));
                }
            }
        };
        for ((tree, key), value) in writes {
            let tree = trees.entry(tree).or_default();
            match value {
                Some(value) => tree.insert(key, value),
                None => tree.remove(&key),
            };
        }
        Ok(())
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let trees = self.lock();
        let Some(tree) = trees.get(&tree) else {
            return Ok(Vec::new());
        };
        let entries = tree.range(from.to_vec()..);
        Ok(entries
            .take_while(|(k, _)| to.is_empty() || k.as_slice() < to)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn next_id(&self) -> Result<u64, StorageError> {
        Ok(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
