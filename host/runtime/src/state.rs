//! The data of one invocation's store. Built fresh for every call and dropped
//! after it, so nothing leaks between calls or tenants.

use crate::capabilities;
use crate::capabilities::config::ConfigCtx;
use crate::capabilities::http::HttpCtx;
use crate::capabilities::kv::KvCtx;
use crate::capabilities::log::LogCtx;
use crate::capabilities::signing::SigningCtx;
use crate::limits::MemoryLimiter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
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
    pub config: ConfigCtx,
    /// The connection's KV store, when granted.
    pub kv: KvCtx,
    /// The call's log sink, shared with the stdio pipes.
    pub log: LogCtx,
    /// HMAC checks with the connection's webhook secrets: only while
    /// verifying a webhook.
    pub signing: SigningCtx,
    /// Holds the call's linear memory to its limit.
    pub limiter: MemoryLimiter,
    /// Whether the guest computes or waits (see `off_the_workers_once_computing`).
    pub activity: Arc<Activity>,
}

/// Whether a call's guest code computes (runs without waiting on the host)
/// or waits (on its upstream, its KV, a slot). The call is resumed (polled)
/// each time what it waited for is ready; its guest code reaches the epoch
/// callback at every tick it runs through. A guest computes when, within one
/// resumption, it reaches two ticks with at least
/// [`Activity::RUN_BEFORE_COMPUTING`] of its thread's CPU time between them,
/// or [`Activity::TICKS_BEFORE_COMPUTING`] ticks whatever the CPU (a thread
/// starved of CPU by a busy machine or a quota is still moved in bounded
/// time). A call that waits is resumed between ticks however long its waits
/// span, and CPU time (unlike wall time) does not count the time a busy
/// machine preempts the thread. Costs one atomic add per resumption and one
/// clock read per tick reached.
#[derive(Debug, Default)]
pub struct Activity {
    /// Resumptions so far.
    resumed: AtomicU64,
    /// The resumption of the last tick reached, how many ticks it has
    /// reached, and the thread's CPU time (ns) at its last tick.
    tick_resumption: AtomicU64,
    ticks: AtomicU64,
    tick_cpu: AtomicU64,
    /// Set once, when the guest is found computing.
    computing: AtomicBool,
}

impl Activity {
    /// CPU time between two ticks of one resumption that makes a guest
    /// computing: half a tick.
    pub const RUN_BEFORE_COMPUTING: Duration =
        Duration::from_micros(crate::engine::EPOCH_TICK.as_micros() as u64 / 2);

    /// Ticks reached within one resumption that make a guest computing
    /// whatever CPU time its thread got.
    pub const TICKS_BEFORE_COMPUTING: u64 = 3;

    /// The call is being resumed (polled) now.
    pub fn resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
    }

    /// At an epoch tick reached in guest code (on the thread that resumed
    /// the call): whether the guest computes. Once it does, it stays so.
    pub fn computing_at_tick(&self) -> bool {
        if self.is_computing() {
            return true;
        }
        // Offset by one so the first tick never matches the initial zero.
        let resumption = self.resumed.load(Ordering::Relaxed) + 1;
        let cpu = thread_cpu_ns();
        let same = self.tick_resumption.swap(resumption, Ordering::Relaxed) == resumption;
        let used = cpu.saturating_sub(self.tick_cpu.swap(cpu, Ordering::Relaxed));
        let ticks = match same {
            true => self.ticks.fetch_add(1, Ordering::Relaxed) + 1,
            false => {
                self.ticks.store(1, Ordering::Relaxed);
                1
            }
        };
        let computing = same
            && (used >= Self::RUN_BEFORE_COMPUTING.as_nanos() as u64
                || ticks >= Self::TICKS_BEFORE_COMPUTING);
        if computing {
            self.computing.store(true, Ordering::Relaxed);
        }
        computing
    }

    /// Whether the guest has been found computing.
    pub fn is_computing(&self) -> bool {
        self.computing.load(Ordering::Relaxed)
    }
}

/// CPU time the calling thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
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
    capabilities::config::add_to_linker(linker, |state| &mut state.config)?;
    capabilities::log::add_to_linker(linker, |state| &mut state.log)?;
    capabilities::kv::add_to_linker(linker, |state| &mut state.kv)?;
    capabilities::signing::add_to_linker(linker, |state| &mut state.signing)?;
    Ok(())
}
