//! The `patchbay` binary, built inside the tests package so that process
//! tests can spawn it (`CARGO_BIN_EXE_patchbay-under-test`) next to the test
//! plugins. Like `host/patchbay/src/main.rs`, it is one call into the library.

fn main() -> std::process::ExitCode {
    patchbay::cli::main()
}
