//! The per-call resource limiter.

use wasmtime::ResourceLimiter;

/// Refuses memory growth past the plugin's cap and remembers that it did, so a
/// resulting trap can be reported as "memory limit exceeded".
#[derive(Debug)]
pub struct CallLimiter {
    memory_bytes: usize,
    pub memory_exceeded: bool,
}

/// Table elements a plugin may grow to (function tables of large Rust plugins
/// stay well under this).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl CallLimiter {
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
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
