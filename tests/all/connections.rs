//! Transport limits per connection: requests in flight at once, and a connect
//! timeout shorter than the call, against real loopback sockets.

use patchbay::policy::limits::OperatorLimits;
use patchbay::storage::audit::AuditRecord;
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP/1.1 server that holds every request for `hold` before
/// answering, and remembers the most it ever held at once.
async fn holding_server(hold: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (base, seen)
}

async fn fetch_concurrently(harness: &Harness, base: &str, connections: &[&str]) {
    let plugin = harness.ensure(PROBE).await;
    let calls = connections.iter().map(|connection| {
        let binding = harness.binding(&plugin, "ws-1", connection, &[("upstream", base)]);
        let plugin = plugin.clone();
        async move {
            harness
                .invoke(
                    &plugin,
                    &binding,
                    "fetch",
                    json!({ "url": format!("{base}/allowed/x") }),
                )
                .await
        }
    });
    for outcome in futures_util::future::join_all(calls).await {
        assert_eq!(
            outcome.result.as_ref().expect("fetch")["status"],
            200,
            "{:?}",
            outcome.result
        );
    }
}

#[tokio::test]
async fn a_connection_has_at_most_its_cap_of_requests_in_flight() {
    let harness = Harness::with_limits(OperatorLimits {
        max_concurrent_requests_per_connection: 1,
        ..OperatorLimits::default()
    });
    let (base, most) = holding_server(Duration::from_millis(200)).await;
    fetch_concurrently(&harness, &base, &["crm", "crm", "crm"]).await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "one at a time for one connection"
    );

    // The cap is per connection: three connections may each have one in flight.
    let (base, most) = holding_server(Duration::from_millis(400)).await;
    fetch_concurrently(&harness, &base, &["crm-a", "crm-b", "crm-c"]).await;
    assert!(
        most.load(Ordering::SeqCst) >= 2,
        "connections do not share the cap"
    );
}

#[tokio::test]
async fn an_unanswered_connect_times_out_and_leaves_time_to_retry() {
    let harness = Harness::with_limits(OperatorLimits {
        connect_timeout_ms: 100,
        ..OperatorLimits::default()
    });
    // A listener that never accepts, with its queue filled: the kernel drops
    // further SYNs, so a connect hangs until the client gives up.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let base = format!("http://{addr}");
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &base)]);
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{base}/allowed/x") }),
        )
        .await;
    assert!(outcome.result.is_err(), "{:?}", outcome.result);
    harness.services.audit.flushed().await;
    let records: Vec<AuditRecord> = harness
        .services
        .audit
        .query("ws-1", 0, u64::MAX, None, 100)
        .expect("query")
        .records;
    // Each attempt gave up on connecting well before the call's 1 s deadline,
    // so the host had time to retry the GET.
    assert!(records.len() >= 2, "{records:#?}");
    for record in &records {
        assert_eq!(record.status, None);
        assert!(
            record
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("connect")),
            "{record:?}"
        );
    }
    drop(fillers);
}
