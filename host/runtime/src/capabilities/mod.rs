//! One module per capability a plugin can import; each owns its context, its
//! `Host` implementation and its `add_to_linker`. This is the only place the
//! linker is filled (through `state::add_to_linker`), so what a plugin can
//! reach is exactly what is listed here.
//!
//! Each `add_to_linker` is generic over the store's data type, as wasmtime's
//! own `wasi-config` and `wasi-keyvalue` are: it takes a getter for its
//! context, so no capability knows the runtime's per-call state. The
//! runtime's `CallState` wires them together (`state::add_to_linker`).
pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod signing;
pub mod wasi;
