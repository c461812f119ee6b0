//! In-memory audit trail.

use crate::StorageError;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// In-memory `AuditStore`, for unit tests only: records by (workspace,
/// time, sequence), so each workspace's are one ordered range as in sled.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<BTreeMap<(String, u64, u64), Vec<u8>>>,
}

impl MemoryAudit {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64, u64), Vec<u8>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::audit::AuditStore for MemoryAudit {
    fn append(
        &self,
        batch: &[(String, crate::audit::AuditCursor, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let mut records = self.records();
        for (workspace, cursor, json) in batch {
            records.insert((workspace.clone(), cursor.at_ms, cursor.seq), json.clone());
        }
        Ok(())
    }

    fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<crate::audit::AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<crate::audit::StoredRecord>, bool), StorageError> {
        use std::ops::Bound::{Excluded, Included};
        // An empty window, or a cursor at or past its end, leaves nothing to
        // read (and `range` panics on a start past its end).
        if to_ms <= from_ms || after.is_some_and(|c| c.at_ms >= to_ms) {
            return Ok((Vec::new(), false));
        }
        let ws = workspace.to_owned();
        let start = match after {
            Some(c) if c.at_ms >= from_ms => Excluded((ws.clone(), c.at_ms, c.seq)),
            _ => Included((ws.clone(), from_ms, 0)),
        };
        let records = self.records();
        let mut out = Vec::new();
        for ((_, at_ms, seq), json) in records.range((start, Excluded((ws, to_ms, 0)))) {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(crate::audit::StoredRecord {
                cursor: crate::audit::AuditCursor {
                    at_ms: *at_ms,
                    seq: *seq,
                },
                json: json.clone(),
            });
        }
        Ok((out, false))
    }

    fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError> {
        let mut records = self.records();
        let before = records.len();
        records.retain(|(_, at_ms, _), _| *at_ms >= before_ms);
        let mut per_workspace: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
        for key in records.keys() {
            per_workspace
                .entry(key.0.clone())
                .or_default()
                .push(key.clone());
        }
        for keys in per_workspace.values() {
            // Keys are in time order: the oldest go first.
            for key in keys
                .iter()
                .take(keys.len().saturating_sub(max_per_workspace))
            {
                records.remove(key);
            }
        }
        Ok(before - records.len())
    }

    fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError> {
        let mut records = self.records();
        let before = records.len();
        records.retain(|(ws, _, _), _| ws != workspace);
        Ok(before - records.len())
    }
}
