//! Hosts that WHATWG URL parsing turns into IPv4 addresses (`127.1`,
//! `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.0.0.1.`…) are those addresses
//! everywhere: in the destination rules, the address policy and the audit
//! trail. Only loopback is exercised end to end here, against a listener that
//! must see no connection; other ranges are covered by the pure table tests
//! beside `policy::http::Target`.

use patchbay::egress::credentials::Secret;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay::storage::audit::Decision;
use patchbay_tests::Harness;
use patchbay_tests::plugins::{HUBSPOT, PROBE};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Spellings of 127.0.0.1 (and of 0.0.0.0, which Linux also connects to locally).
const LOOPBACK_FORMS: &[&str] = &[
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0x7f.1",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "0177.1",
    "017700000001",
    "127.000.000.001",
    "127.0.0.1.",
    "2130706433.",
    "127%2E0%2E0%2E1",
    "0",
    "0x0",
    "0.0.0.0",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
];

/// A loopback listener that counts the connections it is offered.
async fn listener() -> (u16, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, seen)
}

fn no_cidrs() -> Harness {
    Harness::with_policy(OperatorPolicy::default())
}

#[tokio::test]
async fn loopback_in_any_spelling_is_refused_before_connecting_and_audited_as_the_address() {
    let (port, seen) = listener().await;
    let harness = no_cidrs();
    let plugin = harness.ensure(PROBE).await;
    for (i, form) in LOOPBACK_FORMS.iter().enumerate() {
        let workspace = format!("ws-{i}");
        // The form as the connection's upstream (so the destination rule is
        // written in it too), and as the request only, under a canonical rule.
        let mut upstreams = vec![(format!("http://127.0.0.1:{port}"), false)];
        // A rule cannot be written percent-encoded (it is refused at install).
        if !form.contains('%') {
            upstreams.push((format!("http://{form}:{port}"), true));
        }
        for (upstream, form_is_rule) in upstreams {
            let binding = harness.binding(&plugin, &workspace, "probe", &[("upstream", &upstream)]);
            let outcome = harness
                .invoke(
                    &plugin,
                    &binding,
                    "fetch",
                    json!({ "url": format!("http://{form}:{port}/allowed/x") }),
                )
                .await;
            assert!(
                outcome.result.is_err(),
                "{form} under {upstream}: {:?}",
                outcome.result
            );
            if outcome.denials.is_empty()
                && matches!(
                    outcome.result,
                    Err(InvokeError::Plugin(PluginFailure::InvalidInput { .. }))
                )
            {
                // Refused by the plugin's own HTTP types before a request
                // existed (`%` in an authority): nothing to send, nothing sent.
                continue;
            }
            let reasons: Vec<_> = outcome.denials.iter().map(|d| d.reason.as_str()).collect();
            assert!(
                // Written as the rule, the form matches it and its address is
                // refused. Under the canonical rule, a spelling of another
                // address (0.0.0.0, an IPv6 form) matches no destination.
                reasons
                    .iter()
                    .any(|r| r.contains("operator policy does not allow it")
                        || (!form_is_rule && r.contains("no declared destination matches"))),
                "{form} under {upstream}: {reasons:?} {:?}",
                outcome.result
            );
            assert!(
                matches!(
                    outcome.result,
                    Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
                ),
                "{form} under {upstream}: {:?}",
                outcome.result
            );
        }
        let trail = harness.audit_records(&workspace).await;
        assert!(
            !trail.is_empty() || form.contains('%'),
            "{form}: nothing audited"
        );
        for record in trail {
            assert_eq!(record.decision, Decision::Denied, "{form}: {record:?}");
            assert!(
                ["127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "::7f00:1"]
                    .contains(&record.host.as_str()),
                "{form} audited as {}",
                record.host
            );
            assert_eq!(record.bytes_out, 0, "{form}");
        }
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused form reached the listener"
    );
}

#[tokio::test]
async fn a_tenant_base_url_in_a_non_canonical_form_sends_the_credential_nowhere() {
    let (port, seen) = listener().await;
    let harness = no_cidrs();
    let plugin = harness.install(HUBSPOT).await;
    for (i, form) in ["127.1", "2130706433", "0x7f.1", "127.0.0.1."]
        .iter()
        .enumerate()
    {
        let connection = format!("hubspot-{i}");
        let binding = harness.binding(
            &plugin,
            "ws-1",
            &connection,
            &[("base_url", &format!("http://{form}:{port}"))],
        );
        harness
            .set_credential(
                &connection,
                "private_app_token",
                Secret::Bearer {
                    token: "pat-na1-loopback-probe".into(),
                },
            )
            .await;
        let outcome = harness
            .invoke(
                &plugin,
                &binding,
                "find-contact",
                json!({ "phone": "+15551234" }),
            )
            .await;
        assert!(outcome.result.is_err(), "{form}: {:?}", outcome.result);
        assert!(
            outcome
                .denials
                .iter()
                .any(|d| d.reason.contains("loopback")),
            "{form}: {:?}",
            outcome.denials
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_allowed_range_is_reached_in_any_spelling_and_audited_canonically() {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("reached"))
        .mount(&server)
        .await;
    let port = server.address().port();
    let harness = Harness::with_policy(OperatorPolicy {
        addresses: AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        ..OperatorPolicy::default()
    });
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(
        &plugin,
        "ws-1",
        "probe",
        &[("upstream", &format!("http://127.1:{port}"))],
    );
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("http://0x7f000001:{port}/allowed/x") }),
        )
        .await;
    assert_eq!(outcome.result.expect("allowed")["body"], "reached");
    let trail = harness.audit_records("ws-1").await;
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].host, "127.0.0.1");
    assert_eq!(
        trail[0].address.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}
