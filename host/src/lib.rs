//! Patchbay: a host for sandboxed WebAssembly connector plugins.

mod bindings;

pub mod api;
pub mod audit;
pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod credentials;
pub mod egress;
pub mod metrics;
pub mod package;
pub mod policy;
pub mod runtime;
pub mod services;
pub mod storage;
pub mod tenancy;

#[cfg(test)]
mod test_support;
