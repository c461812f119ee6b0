//! One module per capability a plugin can import; each owns its context, its
//! `Host` implementation and its `add_to_linker`. This is the only place the
//! linker is filled, so what a plugin can reach is exactly what is listed here.

pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod wasi;

use crate::state::CallState;
use wasmtime::component::Linker;

pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    Ok(())
}
