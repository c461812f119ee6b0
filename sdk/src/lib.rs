//! # Patchbay SDK
//!
//! Everything a vendor needs to write a Patchbay connector plugin in Rust: declare
//! operations with typed (serde) input and output, call upstream APIs over HTTP, keep
//! state in the connection's key-value store, read the connection's settings, and log.
//! The WebAssembly bindings are hidden; a connector reads as business logic.
//!
//! ```no_run
//! use patchbay_sdk::{Connector, Context, Error, Operations, export_connector};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Greet { name: String }
//!
//! #[derive(Serialize)]
//! struct Greeting { text: String }
//!
//! fn greet(_ctx: &Context, input: Greet) -> Result<Greeting, Error> {
//!     Ok(Greeting { text: format!("hello, {}", input.name) })
//! }
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn operations(ops: &mut Operations<'_>) {
//!         ops.register("greet", greet);
//!     }
//! }
//!
//! export_connector!(Hello);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`: the output is already a
//! component. Ship it as `plugin.wasm` beside a `plugin.toml` manifest that lists the
//! same operations and the capabilities they need.
#![deny(missing_docs)]

// Lets the generated bindings name this crate the same way from inside and outside it.
extern crate self as patchbay_sdk;

// The heap allocator needs raw pointers; the module's SAFETY comments give the argument.
#[allow(unsafe_code)]
pub mod alloc;
#[doc(hidden)]
pub mod bindings;
pub mod config;
pub mod cx;
mod error;
pub mod http;
pub mod kv;
pub mod log;
mod operations;
pub mod webhooks;

pub use error::Error;
pub use operations::{Connector, Context, Operations};

/// Items used by [`export_connector!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings as bindings_root;
    pub use crate::bindings::export;
    pub use crate::bindings::exports::patchbay::connector::operations::{
        Error as WitError, Guest, InvocationContext,
    };
    pub use crate::bindings::exports::patchbay::connector::webhooks::{
        Guest as WebhooksGuest, VerifiedWebhook, WebhookRequest,
    };
    pub use crate::operations::{invoke, operation_names};
    pub use crate::webhooks::verify;
    pub use wit_bindgen;
}

/// Export a type implementing [`Connector`] as this plugin's entry point.
///
/// Use it exactly once, at the root of the plugin crate.
///
/// ```no_run
/// struct MyConnector;
/// impl patchbay_sdk::Connector for MyConnector {
///     fn operations(_ops: &mut patchbay_sdk::Operations<'_>) {}
/// }
/// patchbay_sdk::export_connector!(MyConnector);
/// ```
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        const _: () = {
            struct __PatchbayExport;

            impl $crate::__private::Guest for __PatchbayExport {
                fn invoke(
                    context: $crate::__private::InvocationContext,
                    operation: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::__private::WitError>
                {
                    $crate::__private::invoke::<$connector>(context, &operation, &input)
                }

                fn names() -> ::std::vec::Vec<::std::string::String> {
                    $crate::__private::operation_names::<$connector>()
                }
            }

            impl $crate::__private::WebhooksGuest for __PatchbayExport {
                fn verify_webhook(
                    context: $crate::__private::InvocationContext,
                    request: $crate::__private::WebhookRequest,
                ) -> ::std::result::Result<
                    $crate::__private::VerifiedWebhook,
                    $crate::__private::WitError,
                > {
                    $crate::__private::verify::<$connector>(context, request)
                }
            }

            $crate::__private::export!(__PatchbayExport);
        };
    };
}
