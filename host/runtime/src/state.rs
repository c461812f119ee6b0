//! The data of one invocation's store. Built fresh for every call and dropped
//! after it, so nothing leaks between calls or tenants.

use crate::capabilities;
use crate::capabilities::config::ConfigValues;
use crate::capabilities::http::HttpCtx;
use crate::capabilities::kv::KvCtx;
use crate::capabilities::log::LogCtx;
use crate::limits::MemoryLimiter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

/// The data of one call's store: every capability's context for the call,
/// the resource table they share, and the memory limiter.
pub struct CallState {
    /// WASI with nothing inherited; stdout and stderr go to the call's log.
    pub wasi: WasiCtx,
    /// What the plugin holds (streams, requests, header collections), capped
    /// by its [`HostBudget`](crate::limits::HostBudget).
    pub table: ResourceTable,
    /// wasi:http, with the gate every outbound request passes.
    pub http: HttpCtx,
    /// The connection's non-secret settings, read through wasi:config.
    pub config: Arc<ConfigValues>,
    /// The connection's KV store, when granted.
    pub kv: KvCtx,
    /// The call's log sink, shared with the stdio pipes.
    pub log: LogCtx,
    /// Holds the call's linear memory to its limit.
    pub limiter: MemoryLimiter,
    /// Whether the guest computes or waits (see `off_the_workers_once_computing`).
    pub activity: Arc<Activity>,
}

/// Whether a call's guest code computes (runs without waiting on the host)
/// or waits (on its upstream, its KV, a slot): the call is resumed each time
/// what it waited for is ready, and its guest code passes an epoch check at
/// every tick it runs through.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Nanoseconds from `origin` to the call's latest resumption.
    resumed: AtomicU64,
    /// Set once, when the guest has run for [`Activity::RUN_BEFORE_COMPUTING`]
    /// since it was last resumed.
    computing: AtomicBool,
}

impl Activity {
    /// How long guest code may run since its call was last resumed before it
    /// counts as computing. A call that waits is resumed more often than this
    /// (its guest only parses what arrived, then waits again), however many
    /// ticks its waits span.
    pub const RUN_BEFORE_COMPUTING: Duration = Duration::from_micros(2_500);

    /// A call that has just started.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            resumed: AtomicU64::new(0),
            computing: AtomicBool::new(false),
        }
    }

    /// The call is being resumed (polled) now.
    pub fn resumed(&self) {
        let since = self.origin.elapsed().as_nanos() as u64;
        self.resumed.store(since, Ordering::Relaxed);
    }

    /// At an epoch tick reached in guest code: whether the guest computes,
    /// i.e. has run for [`RUN_BEFORE_COMPUTING`](Self::RUN_BEFORE_COMPUTING)
    /// since its call was last resumed. Once it does, it stays computing.
    pub fn computing_at_tick(&self) -> bool {
        if self.is_computing() {
            return true;
        }
        let resumed = Duration::from_nanos(self.resumed.load(Ordering::Relaxed));
        let running = self.origin.elapsed().saturating_sub(resumed);
        if running >= Self::RUN_BEFORE_COMPUTING {
            self.computing.store(true, Ordering::Relaxed);
        }
        running >= Self::RUN_BEFORE_COMPUTING
    }

    /// Whether the guest has been found computing.
    pub fn is_computing(&self) -> bool {
        self.computing.load(Ordering::Relaxed)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.gate,
        }
    }
}

/// Every capability a plugin can import, linked for [`CallState`]: this is
/// the whole of what a plugin can reach.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    capabilities::wasi::add_to_linker(linker)?;
    capabilities::http::add_to_linker(linker)?;
    capabilities::config::add_to_linker(linker, |state| {
        capabilities::config::WasiConfig::from(&*state.config)
    })?;
    capabilities::log::add_to_linker(linker, |state| &mut state.log)?;
    capabilities::kv::add_to_linker(linker, |state| &mut state.kv)?;
    Ok(())
}
