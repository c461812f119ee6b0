//! `wasi:config/store`: the connection's non-secret settings, read-only.
//! Credentials never enter this map; the host injects them into requests.
//! When the call is recorded, every read goes on its tape.

use crate::bindings::wasi::config::store::{Error, Host, add_to_linker as add_store};
use crate::record::Tape;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The settings a connection's plugin reads, by key; `get-all` lists them in
/// key order.
pub type ConfigValues = BTreeMap<String, String>;

/// One call's view of the settings.
pub struct ConfigCtx {
    /// The connection's settings.
    pub values: Arc<ConfigValues>,
    /// Where the call's reads are recorded, when they are.
    pub tape: Option<Arc<Tape>>,
}

impl Host for ConfigCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        let value = self.values.get(&key).cloned();
        if let Some(tape) = &self.tape {
            tape.config_read(&key, value.as_deref());
        }
        Ok(Ok(value))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        if let Some(tape) = &self.tape {
            tape.config_read("*", None);
        }
        Ok(Ok(self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

struct ConfigCap;

impl HasData for ConfigCap {
    type Data<'a> = &'a mut ConfigCtx;
}

/// Link `wasi:config/store` for a store whose data holds the call's settings
/// where `get` finds them.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ConfigCtx,
) -> wasmtime::Result<()> {
    add_store::<T, ConfigCap>(linker, get)
}
