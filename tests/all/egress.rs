//! Outbound requests: SSRF defence before connect, and size caps while streaming.
//! Every refused request is checked to have reached no upstream.

use patchbay::egress::resolve::StaticLookup;
use patchbay::policy::OperatorPolicy;
use patchbay::policy::limits::OperatorLimits;
use patchbay::policy::ssrf::AddressPolicy;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy(allowed: &[&str]) -> OperatorPolicy {
    OperatorPolicy {
        addresses: AddressPolicy {
            allowed_cidrs: allowed.iter().map(|c| c.parse().expect("cidr")).collect(),
        },
        ..OperatorPolicy::default()
    }
}

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/thing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("reached"))
        .mount(&server)
        .await;
    server
}

/// Fetch `{base}/allowed/thing` through the probe plugin, with `base` as the
/// connection's upstream setting (so the destination rule matches).
async fn fetch(harness: &Harness, base: &str) -> (Result<Value, InvokeError>, Vec<String>) {
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", base)]);
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{base}/allowed/thing") }),
        )
        .await;
    let reasons = outcome.denials.iter().map(|d| d.reason.clone()).collect();
    (outcome.result, reasons)
}

fn assert_refused(result: &Result<Value, InvokeError>) {
    assert!(
        matches!(
            result,
            Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn loopback_is_refused_unless_the_operator_allows_it() {
    let server = upstream().await;
    let refused = Harness::with_policy(policy(&[]));
    let (result, reasons) = fetch(&refused, &server.uri()).await;
    assert_refused(&result);
    assert!(
        reasons.iter().any(|r| r.contains("loopback")),
        "{reasons:?}"
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );

    let allowed = Harness::with_policy(policy(&["127.0.0.1/32"]));
    let (result, _) = fetch(&allowed, &server.uri()).await;
    assert_eq!(result.expect("allowed")["body"], "reached");
}

#[tokio::test]
async fn every_refused_address_class_is_refused_as_a_literal_before_connect() {
    // Nothing listens at these; a refusal must come from policy, before any connect.
    let literals = [
        "127.0.0.2",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fd00:ec2::254]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
        "[ff02::1]",
        "[2001:db8::1]",
    ];
    let harness = Harness::with_policy(policy(&["127.0.0.1/32"]));
    for literal in literals {
        let (result, reasons) = fetch(&harness, &format!("http://{literal}:9")).await;
        assert_refused(&result);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("operator policy does not allow it")),
            "{literal}: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn names_are_checked_on_what_they_resolve_to() {
    let server = upstream().await;
    let port = server.address().port();
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let lookup = StaticLookup::default().with("crm.test", vec![vec![loopback]]);

    let refused = Harness::with_lookup(policy(&[]), Arc::new(lookup.clone()));
    let (result, reasons) = fetch(&refused, &format!("http://crm.test:{port}")).await;
    assert_refused(&result);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("crm.test resolves only to refused addresses")),
        "{reasons:?}"
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );

    let allowed = Harness::with_lookup(policy(&["127.0.0.1/32"]), Arc::new(lookup));
    let (result, _) = fetch(&allowed, &format!("http://crm.test:{port}")).await;
    assert_eq!(result.expect("allowed")["body"], "reached");
}

#[tokio::test]
async fn a_name_that_rebinds_to_a_refused_address_is_refused() {
    // First answer: an allowed address (standing in for a public one). Second:
    // 127.0.0.2, which the operator did not allow. Each new connection resolves
    // again and every answer is checked, so the rebind gets nowhere.
    let first = upstream().await;
    let second = upstream().await;
    let lookup = StaticLookup::default().with(
        "rebind.test",
        vec![
            vec!["127.0.0.1".parse().expect("ip")],
            vec!["127.0.0.2".parse().expect("ip")],
        ],
    );
    let harness = Harness::with_lookup(policy(&["127.0.0.1/32"]), Arc::new(lookup));
    let (result, _) = fetch(
        &harness,
        &format!("http://rebind.test:{}", first.address().port()),
    )
    .await;
    assert_eq!(result.expect("first answer is allowed")["body"], "reached");
    let (result, reasons) = fetch(
        &harness,
        &format!("http://rebind.test:{}", second.address().port()),
    )
    .await;
    assert_refused(&result);
    assert!(
        reasons.iter().any(|r| r.contains("127.0.0.2")),
        "{reasons:?}"
    );
    assert!(
        second
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn user_info_in_the_url_is_refused() {
    let server = upstream().await;
    let harness = Harness::new();
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let url = server.uri().replace("http://", "http://user:pass@") + "/allowed/thing";
    let outcome = harness
        .invoke(&plugin, &binding, "fetch", json!({ "url": url }))
        .await;
    assert!(outcome.result.is_err(), "{:?}", outcome.result);
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn an_oversized_response_is_cut_off_with_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/allowed/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(64 * 1024)))
        .mount(&server)
        .await;
    let mut policy = policy(&["127.0.0.1/32"]);
    policy.limits = OperatorLimits {
        max_response_body_bytes: 8 * 1024,
        ..OperatorLimits::default()
    };
    let harness = Harness::with_policy(policy);
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let url = format!("{}/allowed/big", server.uri());
    let outcome = harness
        .invoke(&plugin, &binding, "fetch", json!({ "url": url }))
        .await;
    match outcome.result {
        Err(InvokeError::Plugin(PluginFailure::Upstream { message, .. })) => {
            assert!(message.contains("body size exceeds limit"), "{message}")
        }
        other => panic!("expected the body to be cut off, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_request_body_never_leaves_the_host() {
    let server = upstream().await;
    let mut policy = policy(&["127.0.0.1/32"]);
    policy.limits = OperatorLimits {
        max_request_body_bytes: 1024,
        ..OperatorLimits::default()
    };
    let harness = Harness::with_policy(policy);
    let plugin = harness.ensure(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "probe", &[("upstream", &server.uri())]);
    let url = format!("{}/allowed/thing", server.uri());
    let small = json!({ "url": url, "method": "POST", "body": "x".repeat(1000) });
    assert_eq!(
        harness
            .invoke(&plugin, &binding, "fetch", small)
            .await
            .result
            .expect("small")["status"],
        200
    );
    let big = json!({ "url": url, "method": "POST", "body": "x".repeat(4096) });
    let outcome = harness.invoke(&plugin, &binding, "fetch", big).await;
    match outcome.result {
        Err(InvokeError::Plugin(PluginFailure::Upstream { status: 0, message })) => {
            assert!(message.contains("RequestBodySize"), "{message}")
        }
        other => panic!("expected the request to be refused for its size, got {other:?}"),
    }
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        1,
        "only the small one went out"
    );
}

/// wasi-http adds no `Host` of its own and a plugin may not set one: the
/// upstream sees exactly one, the authority of the URL the gate checked.
#[tokio::test]
async fn the_upstream_sees_one_host_the_url_names() {
    let server = upstream().await;
    let harness = Harness::with_policy(policy(&["127.0.0.1/32"]));
    let (result, _) = fetch(&harness, &server.uri()).await;
    assert_eq!(result.expect("allowed")["body"], "reached");
    let received = server.received_requests().await.expect("recording");
    let hosts: Vec<&str> = received[0]
        .headers
        .get_all("host")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    let authority = server.uri().trim_start_matches("http://").to_owned();
    assert_eq!(hosts, [authority.as_str()]);
}

/// The egress derives `Host` from the URL; a caller that hands it one
/// (which could disagree with the URL) is refused before anything is sent.
#[tokio::test]
async fn the_egress_refuses_a_request_that_carries_a_host_header() {
    use http_body_util::BodyExt as _;
    use patchbay::egress::{Caller, Egress, EgressError, EgressLimits};
    use patchbay::policy::call::CallId;
    use patchbay::policy::http::Target;
    use patchbay::policy::rate::RateLimit;
    use patchbay::storage::Scope;
    use std::time::{Duration, Instant};

    let server = upstream().await;
    let harness = Harness::new();
    let egress = Egress::new(
        AddressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().expect("cidr")],
        },
        Arc::new(patchbay::egress::resolve::SystemLookup),
        EgressLimits::from_operator(&OperatorLimits::default()),
        harness.services.credentials.clone(),
        harness.services.audit.clone(),
    )
    .expect("egress");
    let url = format!("{}/allowed/thing", server.uri());
    let request = http::Request::get(url.as_str())
        .header("host", "elsewhere.example")
        .body(http_body_util::Empty::new().map_err(|never| match never {}))
        .expect("request");
    let call = Caller {
        deadline: Instant::now() + Duration::from_secs(5),
        id: Arc::new(CallId {
            workspace: "ws".into(),
            connection: "c".into(),
            plugin: "probe".into(),
            version: "1.0.0".into(),
            operation: "fetch".into(),
            invocation_id: "0af7651916cd43dd8448eb211c80319c".into(),
        }),
        scope: Arc::new(Scope {
            workspace: "ws".into(),
            connection: "c".into(),
        }),
        rate_limit: RateLimit {
            requests: 100,
            per_seconds: 1,
        },
        credential: None,
    };
    let target = Target::parse("GET", &url).expect("target");
    let sent = egress
        .send(request, target, Default::default(), &call)
        .await;
    assert!(
        matches!(&sent, Err(EgressError::InvalidRequest(reason)) if reason.contains("Host")),
        "{:?}",
        sent.map(|r| r.status())
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}
