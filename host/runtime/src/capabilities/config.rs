//! `wasi:config/store`: the connection's non-secret settings, read-only.
//! Credentials never enter this map; the host injects them into requests.

use wasmtime::component::Linker;
pub use wasmtime_wasi_config::WasiConfig;

pub use wasmtime_wasi_config::WasiConfigVariables as ConfigValues;

/// Link `wasi:config/store` for a store whose data holds the settings where
/// `get` finds them.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiConfig<'_>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, get)
}
