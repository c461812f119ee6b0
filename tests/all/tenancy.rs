//! Workspaces and connections: validation when saved, and deletion that
//! reaches everything a workspace owns (connections, credentials, KV, audit).

use patchbay::egress::credentials::Secret;
use patchbay::policy::grants::Grants;
use patchbay::runtime::LoadedPlugin;
use patchbay::storage::tenancy::Connection;
use patchbay::tenancy::service::{ConnectionRequest, TenancyError};
use patchbay_tests::{Harness, plugins::PROBE, scope};
use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(config: serde_json::Value) -> ConnectionRequest {
    serde_json::from_value(
        json!({ "plugin": "probe", "config": config, "grants": { "approve_all_requested": true } }),
    )
    .expect("request")
}

/// Give `connection` what its plugin would leave behind: a bearer
/// credential `token` with value `token_value`, and the KV key `k` = `v`.
async fn seed(
    harness: &Harness,
    plugin: &LoadedPlugin,
    connection: &Connection,
    token_value: &str,
) {
    let secret = Secret::Bearer {
        token: token_value.into(),
    };
    harness
        .services
        .credentials
        .set(&connection.scope(), "token", secret)
        .await
        .expect("credential");
    let binding =
        patchbay::runtime::Binding::for_connection(connection, &plugin.manifest).expect("binding");
    let script = json!([{ "op": "set", "key": "k", "value": "v" }]);
    assert!(
        harness
            .invoke(plugin, &binding, "kv", script)
            .await
            .result
            .is_ok()
    );
}

#[tokio::test]
async fn workspaces_and_connections_are_validated_when_saved() {
    let harness = Harness::new();
    harness.ensure(PROBE).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("acme").await.expect("create");
    assert!(matches!(
        tenancy.create_workspace("acme").await,
        Err(TenancyError::WorkspaceExists(_))
    ));
    for bad in ["../etc", "a%2Fb", "Acme", ""] {
        assert!(
            matches!(
                tenancy.create_workspace(bad).await,
                Err(TenancyError::Name(_))
            ),
            "{bad:?}"
        );
    }

    // `latest` is stored as the concrete version.
    let saved = tenancy
        .put_connection(
            "acme",
            "crm",
            request(json!({ "upstream": "http://127.0.0.1:9" })),
        )
        .await
        .expect("saved")
        .connection;
    assert_eq!(saved.version.to_string(), "1.0.0");
    assert_eq!(tenancy.connection("acme", "crm").expect("get"), saved);

    let bad_config = tenancy
        .put_connection("acme", "crm-2", request(json!({ "upstream": 5 })))
        .await;
    match bad_config {
        Err(TenancyError::Config(problems)) => {
            assert!(
                problems.iter().any(|p| p.contains("/upstream")),
                "{problems:?}"
            )
        }
        other => panic!("expected config errors, got {other:?}"),
    }
    let mut unknown_grant = request(json!({}));
    unknown_grant.grants = Grants {
        http: ["https://evil.example".to_owned()].into(),
        ..Grants::default()
    };
    assert!(matches!(
        tenancy.put_connection("acme", "crm-3", unknown_grant).await,
        Err(TenancyError::Grants(_))
    ));
    let mut unknown_version = request(json!({}));
    unknown_version.version = "9.9.9".into();
    assert!(matches!(
        tenancy
            .put_connection("acme", "crm-4", unknown_version)
            .await,
        Err(TenancyError::UnknownPlugin(_))
    ));
    assert!(matches!(
        tenancy
            .put_connection("nobody", "crm", request(json!({})))
            .await,
        Err(TenancyError::WorkspaceNotFound(_))
    ));
    // Nothing half-written: only the valid connection exists.
    let names: Vec<String> = tenancy
        .connections("acme")
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["crm"]);
}

#[tokio::test]
async fn deleting_a_workspace_removes_everything_it_owns() {
    let harness = Harness::new();
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let plugin = harness.ensure(PROBE).await;
    let tenancy = harness.services.tenancy();
    for ws in ["acme", "other"] {
        tenancy.create_workspace(ws).await.expect("create");
        let connection = tenancy
            .put_connection(ws, "crm", request(json!({ "upstream": server.uri() })))
            .await
            .expect("saved")
            .connection;
        harness
            .services
            .credentials
            .set(
                &connection.scope(),
                "token",
                Secret::Bearer {
                    token: "bt-0123456789".into(),
                },
            )
            .await
            .expect("credential");
        let binding = patchbay::runtime::Binding::for_connection(&connection, &plugin.manifest)
            .expect("binding");
        let kv = harness
            .invoke(
                &plugin,
                &binding,
                "kv",
                json!([{ "op": "set", "key": "k", "value": "v" }]),
            )
            .await;
        assert!(kv.result.is_ok());
        let fetched = harness
            .invoke(
                &plugin,
                &binding,
                "fetch",
                json!({ "url": format!("{}/allowed/x", server.uri()) }),
            )
            .await;
        assert!(fetched.result.is_ok());
    }
    harness.services.audit.flushed().await;

    tenancy.delete_workspace("acme").await.expect("delete");

    let gone = scope("acme", "crm");
    assert!(matches!(
        tenancy.connections("acme"),
        Err(TenancyError::WorkspaceNotFound(_))
    ));
    assert!(
        harness
            .services
            .credentials
            .describe(&gone)
            .expect("describe")
            .is_empty()
    );
    assert!(
        harness
            .services
            .kv
            .get(&gone, "k", 0)
            .expect("get")
            .is_none()
    );
    assert_eq!(harness.services.kv.usage(&gone).expect("usage").keys, 0);
    let audit = |ws: &str| {
        harness
            .services
            .audit
            .query(ws, 0, u64::MAX, None, 10)
            .expect("audit")
            .records
            .len()
    };
    assert_eq!(audit("acme"), 0);
    // The other workspace keeps all of its own.
    let kept = scope("other", "crm");
    assert_eq!(
        harness
            .services
            .credentials
            .describe(&kept)
            .expect("describe")
            .len(),
        1
    );
    assert!(
        harness
            .services
            .kv
            .get(&kept, "k", 0)
            .expect("get")
            .is_some()
    );
    assert_eq!(audit("other"), 1);
    assert_eq!(tenancy.connections("other").expect("list").len(), 1);
    assert!(matches!(
        tenancy.delete_workspace("acme").await,
        Err(TenancyError::WorkspaceNotFound(_))
    ));
}

#[tokio::test]
async fn a_recreated_workspace_or_connection_never_inherits_a_half_deleted_ones_data() {
    let harness = Harness::new();
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let plugin = harness.ensure(PROBE).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("acme").await.expect("create");
    let connection = tenancy
        .put_connection("acme", "crm", request(json!({ "upstream": server.uri() })))
        .await
        .expect("saved")
        .connection;
    seed(&harness, &plugin, &connection, "bt-left-behind-1").await;
    let credentials = &harness.services.credentials;
    let binding =
        patchbay::runtime::Binding::for_connection(&connection, &plugin.manifest).expect("binding");
    let url = json!({ "url": format!("{}/allowed/x", server.uri()) });
    assert!(
        harness
            .invoke(&plugin, &binding, "fetch", url)
            .await
            .result
            .is_ok()
    );
    harness.services.audit.flushed().await;

    // As if the process died right after removing the records, before the
    // data they owned: only the stores' own rows are gone.
    assert!(
        harness
            .services
            .tenancy_store
            .delete_connection("acme", "crm")
            .expect("row")
    );
    let scope = connection.scope();
    tenancy
        .put_connection("acme", "crm", request(json!({ "upstream": server.uri() })))
        .await
        .expect("saved again");
    assert!(
        credentials.describe(&scope).expect("describe").is_empty(),
        "no old credential"
    );
    assert!(
        harness
            .services
            .kv
            .get(&scope, "k", 0)
            .expect("get")
            .is_none(),
        "no old KV"
    );

    harness
        .services
        .tenancy_store
        .delete_workspace("acme")
        .expect("row");
    tenancy
        .create_workspace("acme")
        .await
        .expect("created again");
    let audit = harness
        .services
        .audit
        .query("acme", 0, u64::MAX, None, 10)
        .expect("audit");
    assert!(
        audit.records.is_empty(),
        "no old audit records: {:?}",
        audit.records
    );
}

#[tokio::test]
async fn deleting_a_connection_removes_its_credentials_and_kv_and_nothing_of_its_siblings() {
    let harness = Harness::new();
    let plugin = harness.ensure(PROBE).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("acme").await.expect("create");
    for name in ["crm", "crm-2"] {
        let connection = tenancy
            .put_connection("acme", name, request(json!({})))
            .await
            .expect("saved")
            .connection;
        let secret = Secret::Bearer {
            token: format!("bt-{name}-0123").into(),
        };
        harness
            .services
            .credentials
            .set(&connection.scope(), "token", secret)
            .await
            .expect("credential");
        let binding = patchbay::runtime::Binding::for_connection(&connection, &plugin.manifest)
            .expect("binding");
        let script = json!([{ "op": "set", "key": "k", "value": name }]);
        assert!(
            harness
                .invoke(&plugin, &binding, "kv", script)
                .await
                .result
                .is_ok()
        );
    }

    tenancy
        .delete_connection("acme", "crm")
        .await
        .expect("delete");

    let (gone, kept) = (scope("acme", "crm"), scope("acme", "crm-2"));
    let credentials = &harness.services.credentials;
    assert!(credentials.describe(&gone).expect("describe").is_empty());
    assert!(
        harness
            .services
            .kv
            .get(&gone, "k", 0)
            .expect("get")
            .is_none()
    );
    assert_eq!(harness.services.kv.usage(&gone).expect("usage").keys, 0);
    assert_eq!(credentials.describe(&kept).expect("describe").len(), 1);
    assert_eq!(
        harness
            .services
            .kv
            .get(&kept, "k", 0)
            .expect("get")
            .as_deref(),
        Some(&b"crm-2"[..])
    );
    assert!(matches!(
        tenancy.connection("acme", "crm"),
        Err(TenancyError::ConnectionNotFound(_))
    ));
    assert!(matches!(
        tenancy.connection("nobody", "crm"),
        Err(TenancyError::WorkspaceNotFound(_))
    ));
}

/// A connection moved to another plugin starts clean: the old plugin's
/// credentials are not sent by the new one, nor its KV data read by it.
/// Moving to another version of the same plugin keeps both.
#[tokio::test]
async fn a_connection_moved_to_another_plugin_keeps_none_of_the_old_ones_data() {
    let harness = Harness::new();
    let plugin = harness.ensure(PROBE).await;
    harness
        .install_package(PROBE.package_with(|m| m.replace("id = \"probe\"", "id = \"other\"")))
        .await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("acme").await.expect("create");
    let connection = tenancy
        .put_connection("acme", "crm", request(json!({})))
        .await
        .expect("saved")
        .connection;
    seed(&harness, &plugin, &connection, "bt-crm-0123").await;
    let credentials = &harness.services.credentials;

    // The same plugin again (a settings change): everything is kept.
    tenancy
        .put_connection(
            "acme",
            "crm",
            request(json!({ "upstream": "http://127.0.0.1:1" })),
        )
        .await
        .expect("saved");
    let crm = scope("acme", "crm");
    assert_eq!(credentials.describe(&crm).expect("describe").len(), 1);
    assert!(
        harness
            .services
            .kv
            .get(&crm, "k", 0)
            .expect("get")
            .is_some()
    );

    let moved: ConnectionRequest = serde_json::from_value(
        json!({ "plugin": "other", "grants": { "approve_all_requested": true } }),
    )
    .expect("request");
    tenancy
        .put_connection("acme", "crm", moved)
        .await
        .expect("moved to another plugin");
    assert!(credentials.describe(&crm).expect("describe").is_empty());
    assert!(
        harness
            .services
            .kv
            .get(&crm, "k", 0)
            .expect("get")
            .is_none()
    );
    assert_eq!(harness.services.kv.usage(&crm).expect("usage").keys, 0);
}
