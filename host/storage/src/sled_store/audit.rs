//! The audit trail in sled.

use super::{backend, remove_prefix};
use crate::audit::{AuditCursor, AuditStore, StoredRecord, cursor_of, record_key};
use crate::{StorageError, workspace_prefix};

/// The audit trail, one time-ordered range per workspace.
#[derive(Debug, Clone)]
pub struct SledAudit {
    pub(super) tree: sled::Tree,
}

impl SledAudit {
    /// Remove the records of one workspace that are before `before_ms` or
    /// beyond the newest `keep`.
    fn purge_workspace(
        &self,
        prefix: &[u8],
        before_ms: u64,
        keep: usize,
    ) -> Result<usize, StorageError> {
        let mut doomed = Vec::new();
        let mut total = 0usize;
        for key in self.tree.scan_prefix(prefix).keys() {
            let key = key.map_err(backend)?;
            total += 1;
            if cursor_of(&key, prefix.len()).is_some_and(|c| c.at_ms < before_ms) {
                doomed.push(key);
            }
        }
        let over = total.saturating_sub(keep).saturating_sub(doomed.len());
        if over > 0 {
            // The oldest beyond the age cut, in key (time) order.
            let skip = doomed.len();
            for key in self.tree.scan_prefix(prefix).keys().skip(skip).take(over) {
                doomed.push(key.map_err(backend)?);
            }
        }
        let mut batch = sled::Batch::default();
        for key in &doomed {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        Ok(doomed.len())
    }
}

impl AuditStore for SledAudit {
    fn append(&self, records: &[(String, AuditCursor, Vec<u8>)]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (workspace, cursor, json) in records {
            batch.insert(record_key(workspace, *cursor), json.as_slice());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        Ok(())
    }

    fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, bool), StorageError> {
        let prefix = workspace_prefix(workspace);
        let start = match after {
            Some(c) if c.at_ms >= from_ms => {
                let mut key = record_key(workspace, c);
                key.push(0);
                key
            }
            _ => record_key(
                workspace,
                AuditCursor {
                    at_ms: from_ms,
                    seq: 0,
                },
            ),
        };
        let end = record_key(
            workspace,
            AuditCursor {
                at_ms: to_ms,
                seq: 0,
            },
        );
        let mut out = Vec::new();
        for item in self.tree.range(start..end) {
            let (key, value) = item.map_err(backend)?;
            let Some(cursor) = cursor_of(&key, prefix.len()) else {
                continue;
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(StoredRecord {
                cursor,
                json: value.to_vec(),
            });
        }
        Ok((out, false))
    }

    fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut next: Vec<u8> = Vec::new();
        // Visit each workspace's range once, jumping from one to the next.
        while let Some(item) = self.tree.range(next.clone()..).next() {
            let (key, _) = item.map_err(backend)?;
            let Some(len) = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                break;
            };
            let prefix = key[..(4 + len as usize).min(key.len())].to_vec();
            removed += self.purge_workspace(&prefix, before_ms, max_per_workspace)?;
            next = prefix;
            next.extend_from_slice(&[0xff; 17]);
        }
        if removed > 0 {
            self.tree.flush().map_err(backend)?;
        }
        Ok(removed)
    }

    fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        let removed = remove_prefix(&self.tree, &workspace_prefix(workspace))?;
        self.tree.flush().map_err(backend)?;
        Ok(removed)
    }
}
