//! The connection's non-secret settings (the manifest's `[capabilities.config]`
//! schema, filled in by the tenant). Credentials are never readable here: the
//! host injects them into outbound requests instead.

use crate::Error;
use crate::bindings::wasi::config::store;

/// The value of setting `key`, or `None` when the tenant left it unset.
///
/// ```no_run
/// let base = patchbay_sdk::config::get("base_url")?.unwrap_or_else(|| "https://api.example.com".into());
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
pub fn get(key: &str) -> Result<Option<String>, Error> {
    store::get(key).map_err(config_error)
}

/// The value of setting `key`, or `default` when unset.
///
/// ```no_run
/// let base = patchbay_sdk::config::get_or("base_url", "https://api.example.com")?;
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
pub fn get_or(key: &str, default: &str) -> Result<String, Error> {
    Ok(get(key)?.unwrap_or_else(|| default.to_owned()))
}

/// Setting `key` parsed as a `T` (a number, a flag...), or `default` when
/// unset; a value that does not parse is an [`Error::InvalidInput`] naming the
/// setting.
///
/// ```no_run
/// let timeout_ms: u64 = patchbay_sdk::config::parsed_or("request_timeout_ms", 3000)?;
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
pub fn parsed_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, Error> {
    match get(key)? {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            Error::invalid_input(format!(
                "setting {key}: {text:?} is not a valid {}",
                std::any::type_name::<T>()
            ))
        }),
    }
}

/// A URL setting `key` (or `default`), without a trailing `/`, ready for
/// `format!("{base}/path")`.
///
/// ```no_run
/// let base = patchbay_sdk::config::base_url_or("base_url", "https://api.example.com")?;
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
pub fn base_url_or(key: &str, default: &str) -> Result<String, Error> {
    Ok(get_or(key, default)?.trim_end_matches('/').to_owned())
}

/// Every setting of the connection, as (key, value) pairs.
///
/// ```no_run
/// for (key, value) in patchbay_sdk::config::all()? { let _ = (key, value); }
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
pub fn all() -> Result<Vec<(String, String)>, Error> {
    store::get_all().map_err(config_error)
}

fn config_error(e: store::Error) -> Error {
    match e {
        store::Error::Upstream(m) | store::Error::Io(m) => Error::Internal(format!("config: {m}")),
    }
}
