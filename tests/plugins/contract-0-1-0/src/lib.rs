//! Test plugin: a connector built against the frozen 0.1.0 contract with
//! wit-bindgen directly (as a vendor's plugin from before 0.1.1 was), so it
//! exports `operations@0.1.0` only and imports `kv@0.1.0`.
#![allow(unsafe_code)] // the export glue wit-bindgen generates in this crate is unsafe by nature

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "patchbay:connector/connector@0.1.0",
    generate_all,
});

use exports::patchbay::connector::operations::{Error, Guest, InvocationContext};
use patchbay::connector::kv;

struct Legacy;

impl Guest for Legacy {
    fn invoke(
        context: InvocationContext,
        operation: String,
        input: String,
    ) -> Result<String, Error> {
        if operation != "echo" {
            return Err(Error::Unsupported(format!("no operation {operation:?}")));
        }
        let count = kv::increment("calls", 1).map_err(|e| Error::Internal(format!("{e:?}")))?;
        Ok(format!(
            "{{\"echo\":{input},\"kv\":{count},\"connection\":{:?}}}",
            context.connection
        ))
    }

    fn names() -> Vec<String> {
        vec!["echo".into()]
    }
}

export!(Legacy);
