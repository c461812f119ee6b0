//! Concurrency caps: how many invocations one connection and one workspace
//! may run at once. A call beyond a cap waits for a slot until its deadline,
//! so a burst queues briefly instead of failing, and a tenant that keeps
//! every slot busy gets refusals rather than the host's cores and instances.

use crate::error::InvokeError;
use patchbay_storage::Scope;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SlotKey {
    Workspace(String),
    Connection(String, String),
}

type Open = Arc<Mutex<HashMap<SlotKey, Arc<Semaphore>>>>;

/// The semaphores of every workspace and connection with a call in flight
/// (an idle one holds no entry, so the map stays as small as the load).
#[derive(Debug)]
pub struct Slots {
    per_connection: usize,
    per_workspace: usize,
    open: Open,
}

/// A call's place in both its connection's and its workspace's cap, freed on drop.
#[derive(Debug)]
pub struct Slot {
    held: Vec<(SlotKey, Arc<Semaphore>, OwnedSemaphorePermit)>,
    open: Open,
}

impl Slots {
    /// Caps of `per_connection` calls at once per connection and
    /// `per_workspace` per workspace (0 counts as 1).
    pub fn new(per_connection: usize, per_workspace: usize) -> Self {
        Self {
            per_connection: per_connection.max(1),
            per_workspace: per_workspace.max(1),
            open: Arc::default(),
        }
    }

    /// Wait (until `deadline`) for a slot in `scope`'s connection, then in its
    /// workspace. Always in that order, so two calls never wait on each other's
    /// slots; and a connection's queue holds no workspace slot while it waits.
    pub async fn acquire(&self, scope: &Scope, deadline: Instant) -> Result<Slot, InvokeError> {
        let mut slot = Slot {
            held: Vec::with_capacity(2),
            open: self.open.clone(),
        };
        let wanted = [
            (
                SlotKey::Connection(scope.workspace.clone(), scope.connection.clone()),
                self.per_connection,
                format!(
                    "connection {:?} of workspace {:?}",
                    scope.connection, scope.workspace
                ),
            ),
            (
                SlotKey::Workspace(scope.workspace.clone()),
                self.per_workspace,
                format!("workspace {:?}", scope.workspace),
            ),
        ];
        for (key, limit, name) in wanted {
            let semaphore = self
                .lock()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone();
            let wait = semaphore.clone().acquire_owned();
            match tokio::time::timeout_at(deadline.into(), wait).await {
                Ok(Ok(permit)) => slot.held.push((key, semaphore, permit)),
                // Never closed; a timeout or a closed semaphore both mean no slot.
                _ => {
                    drop(semaphore);
                    return Err(InvokeError::TooManyCalls { scope: name, limit });
                }
            }
        }
        Ok(slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SlotKey, Arc<Semaphore>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scopes with a call in flight or waiting (for tests of the clean-up).
    pub fn open_scopes(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for (key, semaphore, permit) in self.held.drain(..) {
            drop(permit);
            // Clones are only taken under this lock: two references (the map's
            // and this one) mean nobody else runs or waits in this scope.
            if Arc::strong_count(&semaphore) == 2 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scope(workspace: &str, connection: &str) -> Scope {
        Scope {
            workspace: workspace.into(),
            connection: connection.into(),
        }
    }

    #[tokio::test]
    async fn caps_calls_per_connection_and_per_workspace() {
        // (per connection, per workspace, calls held as (ws, conn), the next call, admitted?)
        type Case<'a> = (
            usize,
            usize,
            &'a [(&'a str, &'a str)],
            (&'a str, &'a str),
            bool,
        );
        let cases: &[Case<'_>] = &[
            (2, 4, &[("a", "x")], ("a", "x"), true),
            (2, 4, &[("a", "x"), ("a", "x")], ("a", "x"), false),
            (2, 4, &[("a", "x"), ("a", "x")], ("a", "y"), true),
            (
                2,
                3,
                &[("a", "x"), ("a", "x"), ("a", "y")],
                ("a", "z"),
                false,
            ),
            (
                2,
                3,
                &[("a", "x"), ("a", "x"), ("a", "y")],
                ("b", "z"),
                true,
            ),
            (1, 1, &[("a", "x")], ("b", "x"), true),
        ];
        for (per_connection, per_workspace, held, next, admitted) in cases {
            let slots = Slots::new(*per_connection, *per_workspace);
            let far = Instant::now() + Duration::from_secs(5);
            let mut kept = Vec::new();
            for (ws, conn) in held.iter() {
                kept.push(slots.acquire(&scope(ws, conn), far).await.expect("held"));
            }
            let soon = Instant::now() + Duration::from_millis(20);
            let result = slots.acquire(&scope(next.0, next.1), soon).await;
            assert_eq!(result.is_ok(), *admitted, "{held:?} then {next:?}");
            if let Err(e) = result {
                assert!(matches!(e, InvokeError::TooManyCalls { .. }), "{e:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_slot_a_finished_call_frees() {
        let slots = Arc::new(Slots::new(1, 1));
        let first = slots
            .acquire(&scope("a", "x"), Instant::now() + Duration::from_secs(5))
            .await
            .expect("first");
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                slots.acquire(&scope("a", "x"), deadline).await.is_ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiting.await.expect("task"));
        assert_eq!(slots.open_scopes(), 0, "idle scopes hold no entry");
    }
}
