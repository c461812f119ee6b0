//! The data of one invocation's store. Built fresh for every call and dropped
//! after it, so nothing leaks between calls or tenants.

use crate::capabilities;
use crate::capabilities::config::ConfigValues;
use crate::capabilities::http::HttpCtx;
use crate::capabilities::kv::KvCtx;
use crate::capabilities::log::LogCtx;
use crate::limits::MemoryLimiter;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
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
    /// Set once the guest has computed through an epoch tick without
    /// returning to the host: from then on the call runs on a thread of its
    /// own (see `Runtime::invoke`).
    pub computing: Arc<AtomicBool>,
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
