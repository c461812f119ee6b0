//! The per-call resource limiter, and the budget of what a call may hold on
//! the host's side of the sandbox.

use wasmtime::ResourceLimiter;

/// What one call may hold in host memory, outside its linear memory: the
/// entries of its resource table (header collections, requests, streams…)
/// and the bytes of each header collection. Derived from the plugin's memory
/// limit so that entries × bytes per collection stays near `memory_mb`: a
/// plugin cannot make the host hold more for it than it may hold itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBudget {
    /// Resource-table entries the call may hold at once: one per 64 KiB of its
    /// memory limit, at least 256 and at most 8192.
    pub resources: usize,
    /// Bytes one header collection may hold.
    pub field_bytes: usize,
}

/// Bytes one header collection may hold; real request headers stay far
/// below (servers commonly refuse more than 8–64 KiB of them).
const FIELD_BYTES: usize = 64 * 1024;
/// Every plugin gets at least this many live resources (an outbound request
/// takes about ten, and they are freed when it completes).
const MIN_RESOURCES: usize = 256;
/// Beyond this a plugin is leaking handles, whatever its memory.
const MAX_RESOURCES: usize = 8192;

impl HostBudget {
    /// The budget of a call whose memory limit is `memory_bytes`.
    pub fn for_memory(memory_bytes: usize) -> Self {
        Self {
            resources: (memory_bytes / FIELD_BYTES).clamp(MIN_RESOURCES, MAX_RESOURCES),
            field_bytes: FIELD_BYTES,
        }
    }

    /// The most host memory header collections of one call can take.
    pub fn max_bytes(&self) -> usize {
        self.resources * self.field_bytes
    }
}

/// Refuses memory growth past the plugin's cap and remembers that it did, so a
/// resulting trap can be reported as "memory limit exceeded".
#[derive(Debug)]
pub struct MemoryLimiter {
    /// The cap on all of the call's linear memories together.
    memory_bytes: usize,
    /// Bytes of linear memory the call holds, across its memories.
    used: usize,
    /// Set when a growth was refused, so the trap that follows is reported as
    /// the memory limit.
    pub memory_exceeded: bool,
}

/// Table elements a plugin may grow to (function tables of large Rust plugins
/// stay well under this).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    /// A limiter holding all of a call's linear memories together to
    /// `memory_bytes`.
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            used: 0,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    /// Counts every memory of the call: a component with several core
    /// modules must not get `memory_mb` for each.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_budget_follows_memory_with_a_floor_and_a_ceiling() {
        let mib = 1 << 20;
        let cases = [
            (mib, 256, 16 * mib),
            (16 * mib, 256, 16 * mib),
            (64 * mib, 1024, 64 * mib),
            (128 * mib, 2048, 128 * mib),
            (4096 * mib, 8192, 512 * mib),
        ];
        for (memory, resources, max_bytes) in cases {
            let budget = HostBudget::for_memory(memory);
            assert_eq!(budget.resources, resources, "{memory}");
            assert_eq!(budget.max_bytes(), max_bytes, "{memory}");
        }
    }

    #[test]
    fn the_memory_cap_holds_for_all_of_a_calls_memories_together() {
        let mib = 1 << 20;
        let mut limiter = MemoryLimiter::new(16 * mib);
        // Two memories created at 6 MiB each: 12 MiB in all.
        assert!(limiter.memory_growing(0, 6 * mib, None).expect("ok"));
        assert!(limiter.memory_growing(0, 6 * mib, None).expect("ok"));
        // Growing one to 10 MiB would make 16 MiB: still within.
        assert!(limiter.memory_growing(6 * mib, 10 * mib, None).expect("ok"));
        assert!(!limiter.memory_exceeded);
        // A third memory of any size is past the cap.
        assert!(!limiter.memory_growing(0, mib, None).expect("ok"));
        assert!(limiter.memory_exceeded);
    }
}
