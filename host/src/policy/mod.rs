//! Pure grant types: each answers `allows(...)` and knows nothing of wasmtime.

pub mod http;
pub mod limits;
