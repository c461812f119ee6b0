//! The one way tests run the `patchbay` binary as a process: the same
//! `main` as the shipped binary, built in this package
//! (`patchbay-under-test`), with none of the caller's Patchbay settings
//! leaking in from the environment.

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_patchbay-under-test");

/// `patchbay ARGS` with a clean environment: no server, token, key, log
/// format or policy setting from the caller, warnings-only logs, unsigned
/// packages allowed.
pub(crate) fn patchbay(args: &[&str]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(args);
    for name in [
        "PATCHBAY_DATA_DIR",
        "PATCHBAY_SERVER",
        "PATCHBAY_TOKEN",
        "PATCHBAY_OPERATOR_TOKEN",
        "PATCHBAY_MASTER_KEY",
        "PATCHBAY_ALLOW_CIDRS",
        "PATCHBAY_LOG_FORMAT",
        "PATCHBAY_POLICY",
        "PATCHBAY_RATE_LIMIT",
        "PATCHBAY_MAX_MEMORY_MB",
        "PATCHBAY_MAX_TIMEOUT_MS",
        "PATCHBAY_AUDIT_MAX_AGE_DAYS",
        "PATCHBAY_ALLOW_UNSIGNED",
    ] {
        cmd.env_remove(name);
    }
    // The test packages are signed by a key no spawned process is told to
    // trust; tests of package trust remove this.
    cmd.env("PATCHBAY_ALLOW_UNSIGNED", "true");
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// [`patchbay`] working on the data directory `data`.
pub(crate) fn patchbay_on(data: &Path, args: &[&str]) -> Command {
    let mut cmd = patchbay(args);
    cmd.env("PATCHBAY_DATA_DIR", data);
    cmd
}

/// Run `cmd` to its end off the async workers: its exit and output.
pub(crate) async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn patchbay"))
        .await
        .expect("join")
}

/// Output bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON a successful command printed.
pub(crate) fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// What a failing command said.
pub(crate) fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failing exit");
    text(&out.stderr)
}
