//! Benchmark plugin: the `crm-normalize` transform behind a raw-JSON operation,
//! plus a no-op for measuring the per-call cost of the sandbox itself.

use patchbay_sdk::{Connector, Error, Operations, export_connector};

struct CrmTransform;

impl Connector for CrmTransform {
    fn operations(ops: &mut Operations<'_>) {
        ops.register_raw("noop", |_ctx, _input| Ok("null".to_owned()));
        ops.register_raw("normalize-contacts", |_ctx, input| {
            crm_normalize::transform(input).map_err(Error::invalid_input)
        });
    }
}

export_connector!(CrmTransform);
