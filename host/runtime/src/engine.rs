//! Engine configuration and the epoch ticker.

use patchbay_policy::limits::OperatorLimits;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Wasm stack available to a plugin; deeper recursion traps as a stack overflow.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Bytes of each reused linear memory kept mapped between calls.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// How many epoch ticks guest code found computing runs between yields to the
/// executor (on its own thread by then, or interleaved with other tasks on a
/// single-threaded executor), where its deadline future is checked too.
pub const YIELD_EVERY_TICKS: u64 = 2;

/// Per component: core instances, linear memories and tables.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// The engine every plugin runs on, under the operator's `limits`: the
/// component model, epoch interruption, copy-on-write memory images, and a
/// pooling allocator holding `max_instances` instances of at most
/// `max_memory_mb` each.
pub fn build(limits: &OperatorLimits) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Plugins use WASI 0.2 (sync ABI); the component-model-async machinery
    // costs about 3x per call and no plugin needs it.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(MAX_WASM_STACK + 1024 * 1024);
    config.memory_init_cow(true);

    // Concurrent plugin instances the pool holds; beyond that, instantiation
    // fails fast (as `host-at-capacity`) instead of exhausting the host.
    let instances = limits.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances);
    pool.total_core_instances(instances.saturating_mul(8));
    pool.total_memories(instances.saturating_mul(2));
    pool.total_tables(instances.saturating_mul(4));
    pool.total_stacks(instances);
    // One component may not take a share of the pool meant for many: Rust
    // components built for wasm32-wasip2 have one memory and a few core
    // instances.
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.max_memories_per_component(MAX_MEMORIES_PER_COMPONENT);
    pool.max_tables_per_component(MAX_TABLES_PER_COMPONENT);
    pool.max_memory_size((limits.max_memory_mb as usize) << 20);
    // Reset reused slots by rewriting only the pages a call touched (PAGEMAP_SCAN, Linux >= 6.7)
    // instead of unmapping them, so the next instance does not page-fault its way back in.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.linear_memory_keep_resident(KEEP_RESIDENT);
    pool.table_keep_resident(64 * 1024);
    pool.async_stack_keep_resident(MAX_WASM_STACK);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advance the engine's epoch every [`EPOCH_TICK`] on one thread, for as long as
/// the engine lives.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("patchbay-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
