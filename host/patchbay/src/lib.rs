//! Patchbay: a host for sandboxed WebAssembly connector plugins.
//!
//! This crate is the top of the host: the `patchbay` binary's CLI and the
//! wiring of services from a data directory. The layers below it are crates
//! of their own (see `host/README.md`); they are re-exported here under their
//! layer's name so one dependency reaches them all.

#![warn(missing_docs)]

pub mod bundled;
pub mod cli;
pub mod services;

pub use patchbay_api as api;
pub use patchbay_egress as egress;
pub use patchbay_events as events;
pub use patchbay_lookup as lookup;
pub use patchbay_policy as policy;
pub use patchbay_runtime as runtime;
pub use patchbay_storage as storage;
pub use patchbay_tenancy as tenancy;

/// The allocator of everything that links the host (the binary, the tests,
/// the benchmarks). Under load glibc's malloc made the async workers wait
/// on its arena locks (futex waits and wake-ups in the profile, memory freed
/// on another thread than it was allocated on); jemalloc's per-thread caches
/// avoid them: about a quarter less server CPU per invocation at
/// concurrency 50 (BENCHMARKS.md (j)).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(test)]
mod router_tests;

#[cfg(all(test, not(target_env = "msvc")))]
mod allocator_tests {
    #[test]
    fn the_host_allocates_through_jemalloc() {
        // This thread's own count of bytes allocated: other tests' threads
        // cannot move it.
        let allocated = tikv_jemalloc_ctl::thread::allocatedp::read().expect("jemalloc stats");
        let before = allocated.get();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = allocated.get();
        assert!(
            during >= before + (64 << 20),
            "64 MiB allocated did not go through jemalloc ({before} -> {during} bytes)"
        );
        drop(block);
    }
}
