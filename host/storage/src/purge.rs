//! Background removal of expired KV keys. They are invisible the moment they
//! expire; this frees their space (and quota) on a schedule, off the
//! request path, in bounded batches.

use super::SharedKv;
use patchbay_policy::clock::Clock;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Keys removed per batch; a pass runs batches until one comes back short.
const BATCH: usize = 10_000;

/// The purge thread; dropping it stops the thread and waits for it.
pub struct KvPurger {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for KvPurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KvPurger")
    }
}

impl KvPurger {
    /// Start the thread: every `every`, remove the keys of `store` expired by
    /// `clock`'s time, in batches of 10 000 until one comes back short. Fails
    /// only when the thread cannot be spawned.
    pub fn start(store: SharedKv, clock: Clock, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("patchbay-kv-purge".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                loop {
                    let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let (stopped, _) = wake
                        .wait_timeout_while(stopped, every, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    purge_pass(&store, &clock);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn purge_pass(store: &SharedKv, clock: &Clock) {
    loop {
        match store.purge_expired(clock(), BATCH) {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(target: "patchbay::kv", removed = n, "purged expired keys");
                }
                if n < BATCH {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(target: "patchbay::kv", error = %e, "purging expired keys failed");
                return;
            }
        }
    }
}

impl Drop for KvPurger {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
