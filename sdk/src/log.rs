//! Logging. The host tags every line with the plugin, its version and the
//! invocation id, and bounds how much one invocation may log.

use crate::bindings::wasi::logging::logging::{Level, log};

const CONTEXT: &str = "plugin";

/// Log at trace level.
///
/// ```no_run
/// patchbay_sdk::log::trace("entering lookup");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, CONTEXT, message);
}

/// Log at debug level.
///
/// ```no_run
/// patchbay_sdk::log::debug("searching by phone");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, CONTEXT, message);
}

/// Log at info level.
///
/// ```no_run
/// patchbay_sdk::log::info("contact found");
/// ```
pub fn info(message: &str) {
    log(Level::Info, CONTEXT, message);
}

/// Log at warn level.
///
/// ```no_run
/// patchbay_sdk::log::warn("upstream returned more results than expected");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, CONTEXT, message);
}

/// Log at error level.
///
/// ```no_run
/// patchbay_sdk::log::error("upstream shape changed");
/// ```
pub fn error(message: &str) {
    log(Level::Error, CONTEXT, message);
}
