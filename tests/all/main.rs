//! The integration test binary. One module per plugin (enforced below) plus
//! modules per host concern.

mod api;
mod audit;
mod bad_input;
mod calcom;
mod capacity;
mod cli;
mod connection_status;
mod connections;
mod contract_0_1_0;
mod credentials;
mod crm_transform;
mod cx_transforms;
mod egress;
mod events;
mod fs_reader;
mod grants;
mod grow_memory;
mod guide;
mod hostile;
mod hubspot;
mod install;
mod invalid_json;
mod invocations;
mod isolation;
mod javascript;
mod kit;
mod kv;
mod languages;
mod layers;
mod load;
mod lookup;
mod loop_forever;
mod oauth2;
mod openapi;
mod oversized_output;
mod panic;
mod plugin_routes;
mod policy;
mod probe;
mod process;
mod python;
mod rate_limits;
mod recording;
mod reflection;
mod retries;
mod salesforce;
mod scaffold;
mod signing;
mod socket_user;
mod spawn;
mod ssrf_forms;
mod stack_overflow;
mod stripe;
mod tenancy;
mod tracing_tags;
mod trap;
mod upgrades;
mod webhooks;
mod wrong_export;
mod wrong_output;
mod zendesk;

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
