//! The integration test binary. One module per plugin (enforced below) plus
//! modules per host concern.

mod crm_transform;
mod fs_reader;
mod hubspot;
mod install;
mod kv;
mod misbehave;
mod tracing_tags;
mod wrong_export;

/// Every plugin crate must have a test module of the same name: adding a
/// plugin without tests fails to compile here.
macro_rules! require_test_module {
    ($name:ident) => {
        const _: () = {
            #[allow(unused_imports)]
            use crate::$name as _;
        };
    };
}
patchbay_tests::for_each_plugin!(require_test_module);
