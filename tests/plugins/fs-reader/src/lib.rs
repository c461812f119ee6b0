//! Test plugin whose component imports `wasi:filesystem`: it installs, and every read fails.

use patchbay_sdk::{Connector, Error, Operations, export_connector};

struct FsReader;

impl Connector for FsReader {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("read", |_ctx, path: String| {
            std::fs::read_to_string(path).map_err(|e| Error::internal(e.to_string()))
        });
    }
}

export_connector!(FsReader);
