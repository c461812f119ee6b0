//! `wasi:config/store`: the connection's non-secret settings, read-only.
//! Credentials never enter this map; the host injects them into requests.

use crate::state::CallState;
use wasmtime::component::Linker;
use wasmtime_wasi_config::WasiConfig;

pub use wasmtime_wasi_config::WasiConfigVariables as ConfigValues;

pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, |state| WasiConfig::from(&*state.config))
}
