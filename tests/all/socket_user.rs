//! A component that imports wasi:sockets (as Python's runtime does)
//! installs, and no socket opens: a listener on loopback sees no connection.

use patchbay_tests::{Harness, plugins::SOCKET_USER};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_plugin_importing_sockets_installs_and_connects_nowhere() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("addr").to_string();
    let harness = Harness::new();
    let plugin = harness.install(SOCKET_USER).await;
    let binding = harness.binding(&plugin, "ws-1", "net", &[]);
    for target in [address.as_str(), "localhost:80", "[::1]:443"] {
        let outcome = harness
            .invoke(&plugin, &binding, "connect", json!(target))
            .await;
        let error = outcome.result.expect_err("no socket opens");
        assert_eq!(error.code(), "plugin-failed", "{target}: {error}");
    }
    // Give a connection that got through time to arrive: none did.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the loopback listener saw a connection"
    );
}
