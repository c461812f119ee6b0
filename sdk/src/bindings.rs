//! The one `generate!` call. Vendors never see these types: the SDK wraps them.
#![allow(missing_docs, unreachable_pub)] // generated code

wit_bindgen::generate!({
    path: "../wit",
    world: "patchbay:connector/connector",
    generate_all,
    pub_export_macro: true,
    export_macro_name: "__patchbay_export",
    default_bindings_module: "::patchbay_sdk::__private::bindings_root",
    runtime_path: "::patchbay_sdk::__private::wit_bindgen::rt",
});

pub use __patchbay_export as export;
