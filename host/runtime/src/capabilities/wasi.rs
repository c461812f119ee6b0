//! The WASI interfaces a Rust `wasm32-wasip2` std component links against:
//! io, clocks, random, and the cli pieces std touches (environment, exit,
//! stdio, terminal). The context behind them is empty: no environment
//! variables, no arguments, no preopened directories, no sockets, and stdout/
//! stderr go to the invocation's log sink. Filesystem and sockets are never linked.

use crate::state::CallState;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::{cli, random};
use wasmtime_wasi::random::WasiRandom;

pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    // io (error, poll, streams), clocks, random, stdin/stdout/stderr.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(linker)?;
    let l = linker;
    random::insecure::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    Ok(())
}
