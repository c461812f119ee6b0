//! Test plugin whose component imports `wasi:sockets`: it installs, and no socket opens.

use patchbay_sdk::{Connector, Error, Operations, export_connector};

struct SocketUser;

impl Connector for SocketUser {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("connect", |_ctx, address: String| {
            std::net::TcpStream::connect(address)
                .map(|_| "connected".to_owned())
                .map_err(|e| Error::internal(e.to_string()))
        });
    }
}

export_connector!(SocketUser);
