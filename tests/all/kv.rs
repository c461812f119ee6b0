//! The KV capability through a real plugin and the real sled store.

use patchbay::policy::limits::OperatorLimits;
use patchbay::runtime::{Binding, LoadedPlugin};
use patchbay_tests::{Harness, plugins::PROBE};
use serde_json::{Value, json};
use std::sync::Arc;

async fn run(
    harness: &Harness,
    plugin: &LoadedPlugin,
    binding: &Binding,
    steps: Value,
) -> Vec<Value> {
    let outcome = harness.invoke(plugin, binding, "kv", steps).await;
    let results = outcome.result.expect("kv script runs");
    results.as_array().expect("array").clone()
}

/// The probe installed under `limits`, bound to connection `conn-a` of `ws-1`.
async fn probe_with(limits: OperatorLimits) -> (Harness, Arc<LoadedPlugin>, Binding) {
    let harness = Harness::with_limits(limits);
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    (harness, plugin, binding)
}

fn ok(v: &Value) -> &Value {
    assert!(v["err"].is_null(), "unexpected error {v}");
    &v["ok"]
}

#[tokio::test]
async fn get_set_delete_list_and_increment() {
    let harness = Harness::new();
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([
            { "op": "set", "key": "call:1", "value": "ringing" },
            { "op": "set", "key": "call:2", "value": "answered" },
            { "op": "set", "key": "other", "value": "x" },
            { "op": "get", "key": "call:1" },
            { "op": "list", "prefix": "call:", "limit": 1 },
            { "op": "list", "prefix": "call:", "cursor": "call:1", "limit": 1 },
            { "op": "increment", "key": "calls", "delta": 2 },
            { "op": "increment", "key": "calls", "delta": 3 },
            { "op": "delete", "key": "call:1" },
            { "op": "delete", "key": "call:1" },
            { "op": "get", "key": "call:1" },
            { "op": "increment", "key": "other", "delta": 1 },
        ]),
    )
    .await;
    assert_eq!(ok(&r[3]), "ringing");
    assert_eq!(
        ok(&r[4]),
        &json!({ "keys": ["call:1"], "next_cursor": "call:1" })
    );
    assert_eq!(
        ok(&r[5]),
        &json!({ "keys": ["call:2"], "next_cursor": null })
    );
    assert_eq!(ok(&r[6]), 2);
    assert_eq!(ok(&r[7]), 5);
    assert_eq!(ok(&r[8]), true);
    assert_eq!(ok(&r[9]), false);
    assert_eq!(ok(&r[10]), &Value::Null);
    assert!(
        r[11]["err"]
            .as_str()
            .expect("error")
            .contains("NotAnInteger"),
        "{}",
        r[11]
    );
}

#[tokio::test]
async fn connections_never_share_keys() {
    let harness = Harness::new();
    let plugin = harness.install(PROBE).await;
    let a = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    let b = harness.binding(&plugin, "ws-1", "conn-b", &[]);
    let other_tenant = harness.binding(&plugin, "ws-2", "conn-a", &[]);
    run(
        &harness,
        &plugin,
        &a,
        json!([{ "op": "set", "key": "secret", "value": "a's" }]),
    )
    .await;
    for binding in [&b, &other_tenant] {
        let r = run(
            &harness,
            &plugin,
            binding,
            json!([{ "op": "get", "key": "secret" }, { "op": "list", "prefix": "", "limit": 100 }]),
        )
        .await;
        assert_eq!(ok(&r[0]), &Value::Null);
        assert_eq!(ok(&r[1])["keys"], json!([]));
    }
}

#[tokio::test]
async fn values_over_the_quota_and_bad_keys_are_refused() {
    let harness = Harness::new();
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([
            { "op": "set", "key": "big", "value": "x".repeat(1025) },
            { "op": "set", "key": "", "value": "x" },
            { "op": "set", "key": "k".repeat(513), "value": "x" },
            { "op": "set", "key": "zero-ttl", "value": "x", "ttl_ms": 0 },
            { "op": "get", "key": "big" },
        ]),
    )
    .await;
    assert!(
        r[0]["err"]
            .as_str()
            .expect("err")
            .starts_with("QuotaExceeded"),
        "{}",
        r[0]
    );
    assert!(
        r[1]["err"]
            .as_str()
            .expect("err")
            .starts_with("InvalidArgument"),
        "{}",
        r[1]
    );
    assert!(
        r[2]["err"]
            .as_str()
            .expect("err")
            .starts_with("InvalidArgument"),
        "{}",
        r[2]
    );
    assert!(
        r[3]["err"]
            .as_str()
            .expect("err")
            .starts_with("InvalidArgument"),
        "{}",
        r[3]
    );
    assert_eq!(ok(&r[4]), &Value::Null, "a refused write stores nothing");
}

#[tokio::test]
async fn kv_is_denied_with_an_error_value_when_not_declared() {
    let harness = Harness::new();
    let package = PROBE.package_with(|m| {
        let start = m.find("[capabilities.kv]").expect("kv section");
        let end = m[start..].find("\n\n").expect("section end") + start;
        format!("{}{}", &m[..start], &m[end..])
    });
    let installed = harness
        .services
        .catalog
        .install(package)
        .await
        .expect("install");
    let plugin = harness
        .services
        .catalog
        .get(&installed.id)
        .await
        .expect("loaded");
    let binding = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([{ "op": "get", "key": "k" }]),
    )
    .await;
    assert!(
        r[0]["err"]
            .as_str()
            .expect("err")
            .starts_with("AccessDenied"),
        "{}",
        r[0]
    );
}

#[tokio::test]
async fn written_values_survive_reopening_the_store() {
    let harness = Harness::new();
    let plugin = harness.install(PROBE).await;
    let binding = harness.binding(&plugin, "ws-1", "conn-a", &[]);
    run(
        &harness,
        &plugin,
        &binding,
        json!([{ "op": "set", "key": "kept", "value": "yes" }]),
    )
    .await;
    drop(plugin);
    let reopened = harness.reopen();
    let plugin = reopened
        .services
        .catalog
        .get("probe")
        .await
        .expect("still installed");
    let binding = reopened.binding(&plugin, "ws-1", "conn-a", &[]);
    let r = run(
        &reopened,
        &plugin,
        &binding,
        json!([{ "op": "get", "key": "kept" }]),
    )
    .await;
    assert_eq!(ok(&r[0]), "yes");
}

#[tokio::test]
async fn quotas_are_the_manifests_ask_capped_by_the_operator() {
    // The probe asks for 100 keys; the operator allows 2.
    let (harness, plugin, binding) = probe_with(OperatorLimits {
        max_kv_keys: 2,
        ..OperatorLimits::default()
    })
    .await;
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([
            { "op": "set", "key": "a", "value": "1" },
            { "op": "increment", "key": "b", "delta": 1 },
            { "op": "set", "key": "c", "value": "1" },
            { "op": "increment", "key": "d", "delta": 1 },
            { "op": "set", "key": "a", "value": "overwriting is fine" },
            { "op": "delete", "key": "b" },
            { "op": "set", "key": "c", "value": "room again" },
        ]),
    )
    .await;
    for refused in [&r[2], &r[3]] {
        let err = refused["err"].as_str().expect("refused");
        assert!(
            err.contains("QuotaExceeded") && err.contains("2 keys"),
            "{err}"
        );
    }
    for fine in [&r[0], &r[1], &r[4], &r[5], &r[6]] {
        ok(fine);
    }
    // Another connection has its own count.
    let other = harness.binding(&plugin, "ws-1", "conn-b", &[]);
    let r = run(
        &harness,
        &plugin,
        &other,
        json!([{ "op": "set", "key": "a", "value": "1" }]),
    )
    .await;
    ok(&r[0]);
}

#[tokio::test]
async fn expired_keys_are_purged_in_the_background() {
    let (harness, plugin, binding) = probe_with(OperatorLimits {
        kv_purge_every_secs: 1,
        ..OperatorLimits::default()
    })
    .await;
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([
            { "op": "set", "key": "session", "value": "x", "ttl_ms": 60_000 },
            { "op": "set", "key": "kept", "value": "y" },
        ]),
    )
    .await;
    ok(&r[0]);
    let scope = patchbay_tests::scope("ws-1", "conn-a");
    assert_eq!(harness.services.kv.usage(&scope).expect("usage").keys, 2);
    harness.advance_clock(std::time::Duration::from_secs(61));
    // Invisible at once...
    let r = run(
        &harness,
        &plugin,
        &binding,
        json!([{ "op": "get", "key": "session" }]),
    )
    .await;
    assert!(ok(&r[0]).is_null());
    // ...and removed by the purge thread within a few of its 1 s rounds.
    let mut keys = 2;
    for _ in 0..50 {
        keys = harness.services.kv.usage(&scope).expect("usage").keys;
        if keys == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(keys, 1, "the expired key was purged, the other kept");
}
