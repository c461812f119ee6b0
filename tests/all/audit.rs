//! The audit trail: every outbound attempt recorded durably, per workspace,
//! paged, and held to its retention.

use patchbay::egress::credentials::Secret;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::limits::Retention;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::storage::audit::{AuditRecord, Decision};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "bt-audit-5e6f7a8b9c";

fn harness(retention: Retention) -> Harness {
    Harness::with_policy(OperatorPolicy {
        addresses: AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        audit: retention,
        ..OperatorPolicy::default()
    })
}

async fn all_records(harness: &Harness, workspace: &str) -> Vec<AuditRecord> {
    harness.audit_records(workspace).await
}

/// An upstream answering 200 at `/allowed/n`.
async fn counting_upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/n"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// `times` GETs to `{server}/allowed/n?email=…` from a probe connection in `workspace`.
async fn fetch_times(harness: &Harness, server: &MockServer, workspace: &str, times: u32) {
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, workspace, "probe", &[("upstream", &server.uri())]);
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/n?email=ada@example.com", server.uri()), "times": times }),
        )
        .await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
}

#[tokio::test]
async fn every_attempt_is_recorded_with_what_happened() {
    let harness = harness(Retention::default());
    let server = MockServer::start().await;
    Mock::given(path("/allowed/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/allowed/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_string("twelve bytes"))
        .mount(&server)
        .await;
    let installed = harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    let binding = harness.binding(&installed, "ws-1", "crm", &[("upstream", &server.uri())]);
    harness
        .set_credential(
            "crm",
            "token",
            Secret::Bearer {
                token: TOKEN.into(),
            },
        )
        .await;
    let allowed = harness
        .invoke(
            &installed,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/flaky?email=ada@example.com&x=1", server.uri()), "body": "ping", "method": "PUT" }),
        )
        .await;
    assert_eq!(allowed.result.as_ref().expect("fetch")["status"], 200);
    let denied = harness
        .invoke(
            &installed,
            &binding,
            "fetch",
            json!({ "url": format!("{}/admin", server.uri()) }),
        )
        .await;
    assert!(denied.result.is_err());

    let records = all_records(&harness, "ws-1").await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let port = server.address().port();
    let (first, second, third) = (&records[0], &records[1], &records[2]);
    for record in [first, second] {
        assert_eq!(record.invocation_id, allowed.invocation_id);
        assert_eq!(
            (record.workspace.as_str(), record.connection.as_str()),
            ("ws-1", "crm")
        );
        assert_eq!(record.plugin, "probe@1.0.0");
        assert_eq!(
            (
                record.method.as_str(),
                record.scheme.as_str(),
                record.host.as_str(),
                record.port
            ),
            ("PUT", "http", "127.0.0.1", port)
        );
        assert_eq!(
            record.path, "/allowed/flaky?email=REDACTED&x=REDACTED",
            "query values are redacted"
        );
        assert_eq!(record.decision, Decision::Allowed);
        assert_eq!(record.bytes_out, 4);
        assert_eq!(record.credential.as_deref(), Some("bearer"));
    }
    assert_eq!((first.attempt, first.status), (1, Some(503)));
    assert_eq!((second.attempt, second.status), (2, Some(200)));
    assert_eq!(second.bytes_in, 12);
    assert!(first.at_ms <= second.at_ms);

    assert_eq!(third.invocation_id, denied.invocation_id);
    assert_eq!(third.decision, Decision::Denied);
    assert_eq!(third.path, "/admin");
    assert!(
        third
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no declared destination")),
        "{third:?}"
    );
    assert_eq!(third.status, None);
    let text = serde_json::to_string(&records).expect("json");
    assert!(
        !text.contains(TOKEN) && !text.contains("ada@example.com"),
        "{text}"
    );
}

#[tokio::test]
async fn held_requests_are_recorded_with_the_reason() {
    let harness = harness(Retention::default());
    let server = MockServer::start().await;
    let installed = harness
        .install_package(patchbay_tests::probe_with_bearer_credential())
        .await;
    // No credential set: the host holds the request back.
    let binding = harness.binding(&installed, "ws-1", "crm", &[("upstream", &server.uri())]);
    let outcome = harness
        .invoke(
            &installed,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/x", server.uri()), "method": "POST", "body": "x".repeat(500) }),
        )
        .await;
    assert_eq!(outcome.result.expect("fetch")["status"], 401);
    let records = all_records(&harness, "ws-1").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].decision, Decision::Held);
    // Nothing left the host: no bytes sent, whatever the body was.
    assert_eq!(records[0].bytes_out, 0, "{:?}", records[0]);
    assert!(
        records[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not set")),
        "{:?}",
        records[0]
    );
}

#[tokio::test]
async fn a_workspace_sees_only_its_own_records_page_by_page() {
    let harness = harness(Retention::default());
    let server = counting_upstream().await;
    fetch_times(&harness, &server, "ws-a", 5).await;
    fetch_times(&harness, &server, "ws-ab", 2).await;
    harness.services.audit.flushed().await;
    let audit = &harness.services.audit;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = audit
            .query("ws-a", 0, u64::MAX, after.as_deref(), 2)
            .expect("query");
        assert!(page.records.len() <= 2);
        seen.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "every record once, across pages");
    assert!(seen.iter().all(|r| r.workspace == "ws-a"));
    assert_eq!(all_records(&harness, "ws-ab").await.len(), 2);
    assert!(all_records(&harness, "ws-b").await.is_empty());
    // A time range.
    let last = seen.last().expect("records").at_ms;
    let window = audit
        .query("ws-a", last + 1, u64::MAX, None, 100)
        .expect("query");
    assert!(window.records.is_empty());
    assert!(
        audit
            .query("ws-a", 0, u64::MAX, Some("garbage"), 10)
            .is_err()
    );
}

#[tokio::test]
async fn retention_by_count_and_age_is_enforced() {
    let harness = harness(Retention {
        max_age_days: 1,
        max_records_per_workspace: 3,
        purge_every_secs: 3600,
    });
    let server = counting_upstream().await;
    fetch_times(&harness, &server, "ws-1", 5).await;
    fetch_times(&harness, &server, "ws-2", 2).await;
    harness.services.audit.flushed().await;
    let removed = harness.services.audit.purge_now().await.expect("purge");
    assert_eq!(removed, 2);
    let kept = all_records(&harness, "ws-1").await;
    assert_eq!(kept.len(), 3, "the newest three");
    assert_eq!(
        all_records(&harness, "ws-2").await.len(),
        2,
        "ws-2 untouched"
    );

    harness.advance_clock(Duration::from_secs(2 * 86_400));
    fetch_times(&harness, &server, "ws-2", 1).await;
    harness.services.audit.flushed().await;
    harness.services.audit.purge_now().await.expect("purge");
    assert!(
        all_records(&harness, "ws-1").await.is_empty(),
        "older than a day"
    );
    assert_eq!(
        all_records(&harness, "ws-2").await.len(),
        1,
        "the fresh one stays"
    );
}

#[tokio::test]
async fn records_survive_a_restart() {
    let harness = harness(Retention::default());
    let server = counting_upstream().await;
    fetch_times(&harness, &server, "ws-1", 3).await;
    // No explicit flush: stopping the services writes out what is queued.
    let harness = harness.reopen();
    assert_eq!(all_records(&harness, "ws-1").await.len(), 3);
}

#[tokio::test]
async fn refusals_past_the_per_call_limit_are_counted_not_recorded_one_by_one() {
    use patchbay::runtime::capabilities::http::MAX_RECORDED_DENIALS;
    let harness = harness(Retention::default());
    let server = counting_upstream().await;
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, "ws-loop", "probe", &[("upstream", &server.uri())]);
    // Two kinds of refusal: a destination never declared, and requests past
    // the per-call request cap (50 by default).
    for (url, times) in [
        (format!("{}/not-declared", server.uri()), 300),
        (format!("{}/allowed/n", server.uri()), 300),
    ] {
        let outcome = harness
            .invoke(
                &plugin,
                &binding,
                "fetch",
                json!({ "url": url, "times": times, "keep_going": true }),
            )
            .await;
        let output = outcome.result.expect("the plugin goes on past refusals");
        assert!(output["errors"].as_u64().unwrap_or(0) >= 250, "{output}");
        assert_eq!(outcome.denials.len(), MAX_RECORDED_DENIALS, "{url}");
    }
    let records = all_records(&harness, "ws-loop").await;
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r.decision == Decision::Denied)
        .collect();
    // Per call: the first refusals one by one, then one summary.
    assert_eq!(denied.len(), 2 * (MAX_RECORDED_DENIALS + 1), "{denied:#?}");
    let summaries: Vec<_> = denied
        .iter()
        .filter_map(|r| r.reason.as_deref())
        .filter(|r| r.contains("more requests refused in this invocation"))
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries[0].starts_with(&format!("{} more", 300 - MAX_RECORDED_DENIALS)),
        "{summaries:?}"
    );
    // Nothing refused reached the upstream; the 50 allowed ones did.
    assert_eq!(
        server.received_requests().await.expect("recorded").len(),
        50
    );
}
