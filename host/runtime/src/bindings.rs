//! The one `bindgen!` call for the connector world. Everything else imports the
//! generated types from here.
#![allow(missing_docs, unreachable_pub)] // generated code

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "patchbay:connector/connector",
    imports: {
        // KV goes to sled, whose I/O stays off the executor threads.
        "patchbay:connector/kv": async,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

pub use self::exports::patchbay::connector::operations::{
    Error as PluginError, GuestIndices as OperationsIndices,
};
pub use self::exports::patchbay::connector::webhooks::{
    GuestIndices as WebhooksIndices, VerifiedWebhook, WebhookEvent, WebhookRequest,
};
pub use self::patchbay::connector::types::InvocationContext;
