//! The caller-context lookup, run on stored connections of the shipped
//! HubSpot, Stripe and Cal.com plugins, each against its vendor's mock on
//! loopback: parallel sources with deadlines, statuses, fallbacks,
//! precedence, the cache and its single flight, masking per profile.

use patchbay::egress::credentials::Secret;
use patchbay::lookup::{Lookups, SourceStatus};
use patchbay::policy::lookup::{LookupDefinition, Profile};
use patchbay::tenancy::service::{ConnectionRequest, Tenancy};
use patchbay_tests::{Harness, plugins, scope};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WS: &str = "acme";

/// A workspace with connections `crm` and `crm-backup` (HubSpot), `billing`
/// (Stripe) and `calendar` (Cal.com), each against a mock of its own.
struct Desk {
    harness: Harness,
    tenancy: Arc<Tenancy>,
    lookups: Lookups,
    crm: MockServer,
    backup: MockServer,
    stripe: MockServer,
    cal: MockServer,
}

impl Desk {
    async fn new() -> Self {
        let harness = Harness::new();
        for plugin in [plugins::HUBSPOT, plugins::STRIPE, plugins::CALCOM] {
            harness.ensure(plugin).await;
        }
        let tenancy = Arc::new(harness.services.tenancy());
        tenancy.create_workspace(WS).await.expect("workspace");
        let desk = Self {
            lookups: Lookups::new(tenancy.clone(), 1000, harness.services.lookup_runs.clone()),
            tenancy,
            crm: MockServer::start().await,
            backup: MockServer::start().await,
            stripe: MockServer::start().await,
            cal: MockServer::start().await,
            harness,
        };
        for (name, plugin, server, credential) in [
            ("crm", "hubspot", &desk.crm, "private_app_token"),
            ("crm-backup", "hubspot", &desk.backup, "private_app_token"),
            ("billing", "stripe", &desk.stripe, "secret_key"),
            ("calendar", "calcom", &desk.cal, "api_key"),
        ] {
            desk.connect(name, plugin, &server.uri(), true).await;
            desk.harness
                .services
                .credentials
                .set(
                    &scope(WS, name),
                    credential,
                    Secret::Bearer {
                        token: format!("key-{name}").into(),
                    },
                )
                .await
                .expect("credential");
        }
        desk
    }

    async fn connect(&self, name: &str, plugin: &str, base_url: &str, enabled: bool) {
        let request: ConnectionRequest = serde_json::from_value(json!({
            "plugin": plugin,
            "config": { "base_url": base_url },
            "grants": { "approve_all_requested": true },
            "enabled": enabled
        }))
        .expect("request");
        self.tenancy
            .put_connection(WS, name, request)
            .await
            .expect("connection");
    }

    async fn run(
        &self,
        definition: &LookupDefinition,
        phone: &str,
        email: Option<&str>,
    ) -> patchbay::lookup::Answer {
        self.lookups
            .run(WS, "caller", definition, phone, email, Some("US"))
            .await
            .expect("lookup")
    }
}

fn definition(extra: Value) -> LookupDefinition {
    let mut value = json!({
        "sources": [
            { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 },
            { "name": "billing", "connection": "billing", "operation": "payment-status", "provides": "payment", "deadline_ms": 2000 },
            { "name": "calendar", "connection": "calendar", "operation": "upcoming-appointments", "provides": "appointments",
              "input": { "email": "{email}", "days": 30 }, "deadline_ms": 2000 }
        ],
        "cache_ttl_seconds": 300
    });
    for (k, v) in extra.as_object().expect("object") {
        value[k] = v.clone();
    }
    let definition: LookupDefinition = serde_json::from_value(value).expect("definition");
    assert_eq!(definition.problems(), Vec::<String>::new());
    definition
}

fn hubspot_contact(id: &str, first: &str, email: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "total": 1,
        "results": [{
            "id": id,
            "properties": { "firstname": first, "lastname": "Lovelace", "email": email,
                "phone": "+16502530000", "company": "Analytical Engines", "lastmodifieddate": "2026-10-01T10:00:00Z" },
            "updatedAt": "2026-10-01T10:00:00.000Z", "archived": false
        }]
    }))
}

/// A HubSpot that finds Ada after `delay`.
async fn slow_crm(server: &MockServer, delay: Duration) {
    Mock::given(method("POST"))
        .respond_with(hubspot_contact("512", "Ada", "ada@example.com").set_delay(delay))
        .mount(server)
        .await;
}

async fn healthy_crm(server: &MockServer, first: &str) {
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .respond_with(hubspot_contact("512", first, "ada@example.com"))
        .mount(server)
        .await;
}

async fn healthy_stripe(server: &MockServer, delay: Duration) {
    Mock::given(method("GET"))
        .and(path("/v1/customers/search"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(delay)
                .set_body_json(json!({ "object": "search_result", "has_more": false, "data": [{
                    "id": "cus_1", "object": "customer", "balance": 1200, "currency": "usd", "created": 1,
                    "delinquent": false, "email": "ada@example.com", "name": "Ada Lovelace", "phone": "+16502530000",
                    "invoice_settings": { "default_payment_method": null }
                }] })),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "object": "list", "has_more": false, "data": [] })),
        )
        .mount(server)
        .await;
}

async fn healthy_cal(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v2/bookings"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "status": "success", "data": [{
            "id": 1, "uid": "bk_1", "title": "Consultation", "status": "accepted",
            "start": "2026-12-09T09:00:00.000Z", "end": "2026-12-09T09:30:00.000Z", "metadata": {}
        }] }),
        ))
        .mount(server)
        .await;
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

fn status_of(answer: &patchbay::lookup::Answer, name: &str) -> SourceStatus {
    answer
        .sources
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.status)
        .expect(name)
}

#[tokio::test]
async fn three_healthy_sources_make_one_caller_record() {
    let desk = Desk::new().await;
    healthy_crm(&desk.crm, "Ada").await;
    healthy_stripe(&desk.stripe, Duration::ZERO).await;
    healthy_cal(&desk.cal).await;
    let answer = desk
        .run(
            &definition(json!({})),
            "(650) 253-0000",
            Some("Ada@Example.com"),
        )
        .await;
    assert_eq!(answer.key, "+16502530000");
    assert!(!answer.cached);
    for name in ["crm", "billing", "calendar"] {
        assert_eq!(
            status_of(&answer, name),
            SourceStatus::Ok,
            "{name}: {:?}",
            answer.sources
        );
    }
    assert_eq!(answer.record["contact"]["first_name"], "Ada");
    assert_eq!(answer.record["payment"]["standing"], "current");
    assert_eq!(
        answer.record["payment"]["balance"],
        json!({ "amount_minor": 1200, "currency": "USD" })
    );
    assert_eq!(answer.record["next_appointment"]["id"], "bk_1");
    assert_eq!(answer.provenance["contact.first_name"], "crm");
    assert_eq!(answer.provenance["payment.balance"], "billing");
    assert_eq!(answer.provenance["next_appointment"], "calendar");
    // Sources were asked with the E.164 number and the caller's email.
    let searched: Value =
        serde_json::from_slice(&desk.crm.received_requests().await.expect("r")[0].body)
            .expect("json");
    assert_eq!(
        searched["filterGroups"][0]["filters"][0]["value"],
        "+16502530000"
    );
    let booked = &desk.cal.received_requests().await.expect("r")[0];
    assert!(
        booked
            .url
            .query()
            .unwrap_or("")
            .contains("attendeeEmail=ada%40example.com"),
        "{}",
        booked.url
    );
}

#[tokio::test]
async fn a_slow_source_times_out_and_the_others_are_returned() {
    let desk = Desk::new().await;
    healthy_crm(&desk.crm, "Ada").await;
    healthy_stripe(&desk.stripe, Duration::from_secs(5)).await;
    healthy_cal(&desk.cal).await;
    let mut def = definition(json!({}));
    def.sources[1].deadline_ms = 300;
    let started = Instant::now();
    let answer = desk
        .run(&def, "+16502530000", Some("ada@example.com"))
        .await;
    assert_eq!(status_of(&answer, "billing"), SourceStatus::Timeout);
    assert_eq!(status_of(&answer, "crm"), SourceStatus::Ok);
    assert!(answer.record.get("payment").is_none());
    assert_eq!(answer.record["contact"]["first_name"], "Ada");
    // Bounded by the deadlines, not by the slow upstream (a sanity bound, not a speed goal).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failing_source_is_an_error_with_its_code_and_the_others_answer() {
    let desk = Desk::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .mount(&desk.crm)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .mount(&desk.stripe)
        .await;
    healthy_cal(&desk.cal).await;
    let answer = desk
        .run(
            &definition(json!({})),
            "+16502530000",
            Some("ada@example.com"),
        )
        .await;
    let crm = answer
        .sources
        .iter()
        .find(|s| s.name == "crm")
        .expect("crm");
    assert_eq!(
        (crm.status, crm.code.as_deref()),
        (SourceStatus::Error, Some("upstream"))
    );
    let billing = answer
        .sources
        .iter()
        .find(|s| s.name == "billing")
        .expect("billing");
    assert_eq!(
        (billing.status, billing.code.as_deref()),
        (SourceStatus::Error, Some("rate-limited"))
    );
    assert_eq!(status_of(&answer, "calendar"), SourceStatus::Ok);
    assert_eq!(answer.record["next_appointment"]["id"], "bk_1");
    // A result with a failed source is not kept: the next run asks again.
    desk.run(
        &definition(json!({})),
        "+16502530000",
        Some("ada@example.com"),
    )
    .await;
    assert_eq!(requests(&desk.crm).await, 2);
}

#[tokio::test]
async fn the_secondary_crm_is_asked_only_when_the_primary_fails() {
    let desk = Desk::new().await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 },
        { "name": "backup", "connection": "crm-backup", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000, "fallback_for": "crm" }
    ], "cache_ttl_seconds": 0 }));
    healthy_crm(&desk.crm, "Ada").await;
    healthy_crm(&desk.backup, "Augusta").await;
    let answer = desk.run(&def, "+16502530000", None).await;
    assert_eq!(answer.record["contact"]["first_name"], "Ada");
    assert_eq!(answer.sources.len(), 1, "{:?}", answer.sources);
    assert_eq!(requests(&desk.backup).await, 0);

    desk.crm.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&desk.crm)
        .await;
    let answer = desk.run(&def, "+16502530000", None).await;
    assert_eq!(status_of(&answer, "crm"), SourceStatus::Error);
    assert_eq!(status_of(&answer, "backup"), SourceStatus::Ok);
    assert_eq!(answer.record["contact"]["first_name"], "Augusta");
    assert_eq!(answer.provenance["contact.first_name"], "backup");
}

#[tokio::test]
async fn precedence_picks_each_field_from_its_source() {
    let desk = Desk::new().await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 },
        { "name": "crm2", "connection": "crm-backup", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 }
    ], "precedence": { "contact.first_name": ["crm2"] } }));
    healthy_crm(&desk.crm, "Ada").await;
    Mock::given(method("POST"))
        .respond_with(hubspot_contact("77", "Augusta", "augusta@example.com"))
        .mount(&desk.backup)
        .await;
    let answer = desk.run(&def, "+16502530000", None).await;
    assert_eq!(answer.record["contact"]["first_name"], "Augusta");
    assert_eq!(answer.record["contact"]["email"], "ada@example.com");
    assert_eq!(answer.provenance["contact.first_name"], "crm2");
    assert_eq!(answer.provenance["contact.email"], "crm");
}

#[tokio::test]
async fn a_kept_result_asks_no_upstream_until_it_expires() {
    let desk = Desk::new().await;
    healthy_crm(&desk.crm, "Ada").await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 }
    ], "cache_ttl_seconds": 1 }));
    let first = desk.run(&def, "+16502530000", None).await;
    // The same caller written another way is the same key.
    let second = desk.run(&def, "650-253-0000", None).await;
    assert!(!first.cached && second.cached);
    assert_eq!(second.record, first.record);
    assert_eq!(requests(&desk.crm).await, 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let third = desk.run(&def, "+16502530000", None).await;
    assert!(!third.cached);
    assert_eq!(requests(&desk.crm).await, 2);
    // Dropped on request.
    desk.lookups
        .forget(WS, "caller", "(650) 253-0000", Some("US"))
        .expect("forget");
    assert!(!desk.run(&def, "+16502530000", None).await.cached);
    assert_eq!(requests(&desk.crm).await, 3);
}

#[tokio::test]
async fn a_run_in_flight_when_its_results_are_dropped_is_not_kept() {
    let desk = Desk::new().await;
    slow_crm(&desk.crm, Duration::from_millis(400)).await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 3000 }
    ] }));
    // The contact changes upstream while the run is in flight; the tenant
    // drops the kept result for the caller to have the new one asked for.
    let (first, ()) = tokio::join!(desk.run(&def, "+16502530000", None), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        desk.lookups
            .forget(WS, "caller", "+16502530000", None)
            .expect("forget");
    });
    assert!(!first.cached);
    let second = desk.run(&def, "+16502530000", None).await;
    assert!(
        !second.cached,
        "a result asked for before the drop was kept after it"
    );
    assert_eq!(requests(&desk.crm).await, 2);
    // Runs after the drop are kept again.
    assert!(desk.run(&def, "+16502530000", None).await.cached);

    // Another workspace's drops never stop this one's results being kept.
    let (third, ()) = tokio::join!(desk.run(&def, "+16502530001", None), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        desk.lookups
            .forget("elsewhere", "caller", "+16502530001", None)
            .expect("forget");
    });
    assert!(!third.cached);
    assert!(desk.run(&def, "+16502530001", None).await.cached);
}

#[tokio::test]
async fn concurrent_identical_lookups_share_one_run() {
    let desk = Desk::new().await;
    slow_crm(&desk.crm, Duration::from_millis(300)).await;
    healthy_stripe(&desk.stripe, Duration::from_millis(300)).await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 3000 },
        { "name": "billing", "connection": "billing", "operation": "payment-status", "provides": "payment", "deadline_ms": 3000 }
    ] }));
    let runs = (0..10).map(|_| desk.run(&def, "+16502530000", None));
    let answers = futures_util::future::join_all(runs).await;
    assert!(answers.iter().all(|a| a.record == answers[0].record));
    // Every caller waited for the sources: none was answered from the cache.
    assert!(
        answers.iter().all(|a| !a.cached),
        "a caller sharing the run read cached"
    );
    assert_eq!(requests(&desk.crm).await, 1);
    // Stripe: one search and one invoice list.
    assert_eq!(requests(&desk.stripe).await, 2);
    // Asked after it ended: from the cache.
    assert!(desk.run(&def, "+16502530000", None).await.cached);
}

#[tokio::test]
async fn a_disabled_connection_or_a_missing_email_is_skipped() {
    let desk = Desk::new().await;
    desk.connect("billing", "stripe", &desk.stripe.uri(), false)
        .await;
    healthy_crm(&desk.crm, "Ada").await;
    let answer = desk.run(&definition(json!({})), "+16502530000", None).await;
    let billing = answer
        .sources
        .iter()
        .find(|s| s.name == "billing")
        .expect("billing");
    assert_eq!(billing.status, SourceStatus::Skipped);
    assert!(
        billing
            .message
            .as_deref()
            .unwrap_or("")
            .contains("disabled"),
        "{billing:?}"
    );
    let calendar = answer
        .sources
        .iter()
        .find(|s| s.name == "calendar")
        .expect("calendar");
    assert_eq!(calendar.status, SourceStatus::Skipped);
    assert!(
        calendar
            .message
            .as_deref()
            .unwrap_or("")
            .contains("no email"),
        "{calendar:?}"
    );
    assert_eq!(requests(&desk.stripe).await + requests(&desk.cal).await, 0);
}

#[tokio::test]
async fn bad_numbers_and_emails_are_refused_before_any_source_runs() {
    let desk = Desk::new().await;
    let def = definition(json!({}));
    for (phone, email) in [
        ("call me", None),
        ("+1 555 0000", None),
        ("+16502530000", Some("not-an-email")),
    ] {
        let outcome = desk
            .lookups
            .run(WS, "caller", &def, phone, email, Some("US"))
            .await;
        assert!(outcome.is_err(), "{phone} {email:?}: {outcome:?}");
    }
    assert_eq!(requests(&desk.crm).await, 0);
}

#[tokio::test]
async fn each_profile_sees_its_share_of_the_record() {
    let desk = Desk::new().await;
    healthy_crm(&desk.crm, "Ada").await;
    healthy_stripe(&desk.stripe, Duration::ZERO).await;
    healthy_cal(&desk.cal).await;
    let answer = desk
        .run(
            &definition(json!({})),
            "+16502530000",
            Some("ada@example.com"),
        )
        .await;
    let basic = answer.masked(Profile::Basic);
    assert_eq!(basic.record["contact"]["email"], "a***@example.com");
    assert!(basic.record.get("payment").is_none());
    assert!(basic.record["contact"].get("company").is_none());
    assert_eq!(
        basic.record["next_appointment"],
        json!({ "starts_at": "2026-12-09T09:00:00.000Z" })
    );
    assert!(!basic.provenance.contains_key("payment.balance"));
    assert_eq!(basic.provenance["next_appointment"], "calendar");
    let advanced = answer.masked(Profile::Advanced);
    assert_eq!(advanced.record["contact"]["email"], "ada@example.com");
    assert_eq!(advanced.record["payment"]["standing"], "current");
    assert_eq!(advanced.record["next_appointment"]["title"], "Consultation");
    let admin = answer.masked(Profile::Admin);
    assert_eq!(admin.record["contact"]["id"], "512");
    assert_eq!(admin.record["payment"]["customer_id"], "cus_1");
}

#[tokio::test]
async fn a_source_behind_an_open_circuit_breaker_is_skipped() {
    let desk = Desk::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&desk.crm)
        .await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 3000 }
    ] }));
    // Failures open the breaker of (workspace, origin); then nothing is sent.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let answer = desk.run(&def, "+16502530000", None).await;
        let crm = answer.sources[0].clone();
        statuses.push(crm.status);
        if crm.status == SourceStatus::Skipped {
            assert!(
                crm.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("circuit breaker"),
                "{crm:?}"
            );
            break;
        }
        assert_eq!(crm.status, SourceStatus::Error, "{crm:?}");
    }
    assert_eq!(
        statuses.last(),
        Some(&SourceStatus::Skipped),
        "{statuses:?}"
    );
    let sent = requests(&desk.crm).await;
    let answer = desk.run(&def, "+16502530000", None).await;
    assert_eq!(answer.sources[0].status, SourceStatus::Skipped);
    assert_eq!(
        requests(&desk.crm).await,
        sent,
        "nothing reaches an upstream behind an open breaker"
    );
}

#[tokio::test]
async fn a_changed_connection_or_another_workspace_never_gets_a_kept_result() {
    let desk = Desk::new().await;
    healthy_crm(&desk.crm, "Ada").await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 }
    ] }));
    desk.run(&def, "+16502530000", None).await;
    assert!(desk.run(&def, "+16502530000", None).await.cached);
    // Re-pointing the connection (any save) makes the kept result unusable.
    desk.connect("crm", "hubspot", &desk.backup.uri(), true)
        .await;
    healthy_crm(&desk.backup, "Augusta").await;
    let after = desk.run(&def, "+16502530000", None).await;
    assert!(!after.cached);
    assert_eq!(after.record["contact"]["first_name"], "Augusta");

    // Another workspace with the same lookup name, definition and caller shares nothing.
    desk.tenancy
        .create_workspace("other")
        .await
        .expect("workspace");
    let request: ConnectionRequest = serde_json::from_value(json!({
        "plugin": "hubspot", "config": { "base_url": desk.crm.uri() },
        "grants": { "approve_all_requested": true }
    }))
    .expect("request");
    desk.tenancy
        .put_connection("other", "crm", request)
        .await
        .expect("connection");
    let theirs = desk
        .lookups
        .run("other", "caller", &def, "+16502530000", None, None)
        .await
        .expect("lookup");
    assert!(!theirs.cached);
    // Its credential is not set: the source is skipped, not served from acme's result.
    assert_eq!(
        theirs.sources[0].status,
        SourceStatus::Skipped,
        "{:?}",
        theirs.sources
    );
}

#[tokio::test]
async fn a_fallback_gets_only_what_is_left_of_the_largest_deadline() {
    let desk = Desk::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&desk.crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            hubspot_contact("77", "Augusta", "a@example.com").set_delay(Duration::from_secs(5)),
        )
        .mount(&desk.backup)
        .await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 400 },
        { "name": "backup", "connection": "crm-backup", "operation": "find-contact", "provides": "contact", "deadline_ms": 400, "fallback_for": "crm" }
    ], "cache_ttl_seconds": 0 }));
    let started = Instant::now();
    let answer = desk.run(&def, "+16502530000", None).await;
    assert_eq!(status_of(&answer, "crm"), SourceStatus::Timeout);
    assert_eq!(status_of(&answer, "backup"), SourceStatus::Timeout);
    // Within the largest deadline (400 ms) plus overhead, not the chain's sum (a sanity bound).
    assert!(
        started.elapsed() < Duration::from_millis(750),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_error_text_is_shown_to_admin_only() {
    let desk = Desk::new().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "error", "message": "Property values were not valid: ada@example.com",
            "category": "VALIDATION_ERROR"
        })))
        .mount(&desk.crm)
        .await;
    let def = definition(json!({ "sources": [
        { "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 }
    ] }));
    let answer = desk.run(&def, "+16502530000", None).await;
    let basic = answer.masked(Profile::Basic);
    assert_eq!(basic.sources[0].code.as_deref(), Some("upstream"));
    assert!(basic.sources[0].message.is_none(), "{:?}", basic.sources);
    assert!(
        !serde_json::to_string(&basic)
            .expect("json")
            .contains("ada@")
    );
    let admin = answer.masked(Profile::Admin);
    assert!(
        admin.sources[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("VALIDATION_ERROR")
    );
}

mod over_http {
    //! The lookup routes, black-box over HTTP.
    use super::*;
    use patchbay_tests::{api_call, create_workspace, operator_call};

    async fn desk() -> (Harness, String, MockServer) {
        let harness = Harness::new();
        harness.ensure(plugins::HUBSPOT).await;
        let api = harness.serve_api().await;
        assert_eq!(create_workspace(&api, WS).await.0, 201);
        let crm = MockServer::start().await;
        healthy_crm(&crm, "Ada").await;
        let (status, body) = operator_call(
            &api,
            "PUT",
            "/v1/workspaces/acme/connections/crm",
            Some(json!({ "plugin": "hubspot", "config": { "base_url": crm.uri() }, "grants": { "approve_all_requested": true } })),
        )
        .await;
        // Saved (200): it needs its credential, set next.
        assert_eq!(status, 200, "{body}");
        harness
            .services
            .credentials
            .set(
                &scope(WS, "crm"),
                "private_app_token",
                Secret::Bearer {
                    token: "pat-1".to_owned().into(),
                },
            )
            .await
            .expect("credential");
        (harness, api, crm)
    }

    fn crm_lookup() -> Value {
        json!({
            "sources": [{ "name": "crm", "connection": "crm", "operation": "find-contact", "provides": "contact", "deadline_ms": 2000 }],
            "cache_ttl_seconds": 60
        })
    }

    /// An admin token of a second workspace, `rival`.
    async fn rival_token(api: &str) -> String {
        assert_eq!(create_workspace(api, "rival").await.0, 201);
        let (status, body) = operator_call(
            api,
            "POST",
            "/v1/workspaces/rival/tokens",
            Some(json!({ "profile": "admin" })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    async fn token(api: &str, profile: &str) -> String {
        let (status, body) = operator_call(
            api,
            "POST",
            "/v1/workspaces/acme/tokens",
            Some(json!({ "profile": profile })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["profile"], profile);
        body["token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn define_run_and_mask_a_lookup_over_the_api() {
        let (_harness, api, crm) = desk().await;
        let path = "/v1/workspaces/acme/lookups/caller";
        let (status, body) = operator_call(&api, "PUT", path, Some(crm_lookup())).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["definition"]["sources"][0]["connection"], "crm");
        assert_eq!(
            operator_call(&api, "PUT", path, Some(crm_lookup())).await.0,
            200
        );
        let (status, body) = operator_call(&api, "GET", "/v1/workspaces/acme/lookups", None).await;
        assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(1)));

        let basic = token(&api, "basic").await;
        let run = format!("{path}/run");
        let (status, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&basic),
            Some(json!({ "phone": "(650) 253-0000", "default_region": "US" })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["key"], "+16502530000");
        assert_eq!(body["profile"], "basic");
        assert_eq!(body["record"]["contact"]["email"], "a***@example.com");
        assert!(body["record"]["contact"].get("company").is_none(), "{body}");
        assert_eq!(body["sources"][0]["status"], "ok");
        assert_eq!(body["provenance"]["contact.first_name"], "crm");

        // The second run is answered from the cache.
        let advanced = token(&api, "advanced").await;
        let (status, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&advanced),
            Some(json!({ "phone": "+16502530000" })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (
                body["cached"].clone(),
                body["record"]["contact"]["email"].clone()
            ),
            (json!(true), json!("ada@example.com"))
        );
        assert_eq!(crm.received_requests().await.expect("r").len(), 1);

        // A request may ask for less, never more.
        let (status, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&advanced),
            Some(json!({ "phone": "+16502530000", "profile": "basic" })),
        )
        .await;
        assert_eq!(
            (status, body["record"]["contact"]["email"].clone()),
            (200, json!("a***@example.com"))
        );
        let (status, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&basic),
            Some(json!({ "phone": "+16502530000", "profile": "admin" })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("profile-above-token")),
            "{body}"
        );

        // An unparseable number is a clear 400.
        let (status, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&basic),
            Some(json!({ "phone": "call me maybe" })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid-phone")),
            "{body}"
        );

        // Dropping the kept result makes the next run ask again.
        let (status, _) = operator_call(
            &api,
            "DELETE",
            &format!("{path}/cache/%2B16502530000"),
            None,
        )
        .await;
        assert_eq!(status, 204);
        let (_, body) = api_call(
            "POST",
            &api,
            &run,
            Some(&basic),
            Some(json!({ "phone": "+16502530000" })),
        )
        .await;
        assert_eq!(body["cached"], false);
        assert_eq!(crm.received_requests().await.expect("r").len(), 2);

        assert_eq!(operator_call(&api, "DELETE", path, None).await.0, 204);
        assert_eq!(operator_call(&api, "GET", path, None).await.0, 404);
    }

    #[tokio::test]
    async fn workspace_settings_give_lookups_their_default_region() {
        let (_harness, api, _crm) = desk().await;
        let path = "/v1/workspaces/acme/lookups/caller";
        assert_eq!(
            operator_call(&api, "PUT", path, Some(crm_lookup())).await.0,
            201
        );
        let basic = token(&api, "basic").await;
        let settings = "/v1/workspaces/acme/settings";
        let run = |phone: &'static str| {
            let (api, basic) = (api.clone(), basic.clone());
            async move {
                api_call(
                    "POST",
                    &api,
                    "/v1/workspaces/acme/lookups/caller/run",
                    Some(&basic),
                    Some(json!({ "phone": phone })),
                )
                .await
            }
        };
        // No region yet: a national number cannot be read.
        let (status, body) = run("(650) 253-0000").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid-phone"))
        );

        // A workspace token sets its own workspace's; the code is made canonical.
        let (status, body) = api_call(
            "PUT",
            &api,
            settings,
            Some(&basic),
            Some(json!({ "default_region": "us" })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["settings"]["default_region"], "US");
        let (_, shown) = operator_call(&api, "GET", "/v1/workspaces/acme", None).await;
        assert_eq!(shown["settings"]["default_region"], "US");
        let (status, body) = run("(650) 253-0000").await;
        assert_eq!(
            (status, body["key"].as_str()),
            (200, Some("+16502530000")),
            "{body}"
        );
        // A request's own region wins over the workspace's.
        let (status, body) = api_call(
            "POST",
            &api,
            "/v1/workspaces/acme/lookups/caller/run",
            Some(&basic),
            Some(json!({ "phone": "020 7946 0018", "default_region": "GB" })),
        )
        .await;
        assert_eq!(
            (status, body["key"].as_str()),
            (200, Some("+442079460018")),
            "{body}"
        );

        // Bad settings are refused naming the setting, and change nothing.
        for (bad, code) in [
            (json!({ "default_region": "XX" }), "invalid-settings"),
            (
                json!({ "default_region": "United States" }),
                "invalid-settings",
            ),
        ] {
            let (status, body) = operator_call(&api, "PUT", settings, Some(bad.clone())).await;
            assert_eq!((status, body["code"].as_str()), (422, Some(code)), "{bad}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("default_region"),
                "{body}"
            );
        }
        let (status, body) =
            operator_call(&api, "PUT", settings, Some(json!({ "region": "US" }))).await;
        assert!((400..500).contains(&status), "{status} {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("region"),
            "{body}"
        );
        let (_, shown) = operator_call(&api, "GET", "/v1/workspaces/acme", None).await;
        assert_eq!(shown["settings"]["default_region"], "US");

        // Another workspace's token cannot change them; unsetting works.
        let rival = rival_token(&api).await;
        let (status, _) = api_call(
            "PUT",
            &api,
            settings,
            Some(&rival),
            Some(json!({ "default_region": "DE" })),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(
            operator_call(&api, "PUT", settings, Some(json!({})))
                .await
                .0,
            200
        );
        let (_, shown) = operator_call(&api, "GET", "/v1/workspaces/acme", None).await;
        assert!(shown["settings"].get("default_region").is_none(), "{shown}");
        assert_eq!(
            operator_call(
                &api,
                "PUT",
                "/v1/workspaces/nobody/settings",
                Some(json!({}))
            )
            .await
            .0,
            404
        );
    }

    #[tokio::test]
    async fn every_run_is_on_the_workspaces_trail_with_names_never_values() {
        let (harness, api, _crm) = desk().await;
        let path = "/v1/workspaces/acme/lookups/caller";
        assert_eq!(
            operator_call(&api, "PUT", path, Some(crm_lookup())).await.0,
            201
        );
        let (_, issued) = operator_call(
            &api,
            "POST",
            "/v1/workspaces/acme/tokens",
            Some(json!({ "profile": "advanced" })),
        )
        .await;
        let (token_id, token) = (
            issued["id"].as_str().expect("id").to_owned(),
            issued["token"].as_str().expect("token").to_owned(),
        );
        for profile in ["advanced", "basic"] {
            let (status, body) = api_call(
                "POST",
                &api,
                &format!("{path}/run"),
                Some(&token),
                Some(json!({ "phone": "+16502530000", "profile": profile })),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        let trail = "/v1/workspaces/acme/lookup-runs";
        let (status, page) = api_call("GET", &api, trail, Some(&token), None).await;
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().expect("records");
        assert_eq!(records.len(), 2, "{page}");
        let first = &records[0];
        assert_eq!(first["workspace"], "acme");
        assert_eq!(first["lookup"], "caller");
        assert_eq!(first["token"], token_id.as_str());
        assert_eq!(first["profile"], "advanced");
        assert_eq!(first["cached"], false);
        assert_eq!(first["sources"], json!([{ "name": "crm", "status": "ok" }]));
        let fields: Vec<&str> = first["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            fields.contains(&"contact.email") && fields.contains(&"contact.company"),
            "{fields:?}"
        );
        assert_eq!(
            (records[1]["profile"].clone(), records[1]["cached"].clone()),
            (json!("basic"), json!(true))
        );
        assert!(
            !records[1]["fields"]
                .as_array()
                .expect("fields")
                .contains(&json!("contact.company"))
        );
        // Names, never values: neither the caller's number nor anything found.
        let text = page.to_string();
        for value in [
            "6502530000",
            "Ada",
            "ada@example.com",
            "a***@example.com",
            "Analytical",
        ] {
            assert!(!text.contains(value), "{value} is on the trail: {text}");
        }

        // Paging, and bad queries named.
        let (_, one) = operator_call(&api, "GET", &format!("{trail}?limit=1"), None).await;
        assert_eq!(one["records"].as_array().map(Vec::len), Some(1));
        let next = one["next"].as_str().expect("a next page");
        let (_, rest) =
            operator_call(&api, "GET", &format!("{trail}?limit=1&after={next}"), None).await;
        assert_eq!(rest["records"][0]["profile"], "basic");
        for bad in ["limit=0", "after=zz", "color=red"] {
            let (status, body) = operator_call(&api, "GET", &format!("{trail}?{bad}"), None).await;
            assert!(
                (400..500).contains(&status) && status != 404,
                "{bad}: {status} {body}"
            );
        }

        // Another workspace sees none of it; a deleted workspace leaves nothing behind.
        let rival = rival_token(&api).await;
        assert_eq!(
            api_call("GET", &api, trail, Some(&rival), None).await.0,
            404
        );
        let (_, theirs) = api_call(
            "GET",
            &api,
            "/v1/workspaces/rival/lookup-runs",
            Some(&rival),
            None,
        )
        .await;
        assert_eq!(theirs["records"], json!([]));
        assert_eq!(
            operator_call(&api, "DELETE", "/v1/workspaces/acme", None)
                .await
                .0,
            204
        );
        assert_eq!(operator_call(&api, "GET", trail, None).await.0, 404);
        let (left, _) = harness
            .services
            .lookup_runs
            .query_as::<Value>(WS, 0, u64::MAX, None, 10)
            .expect("the stored trail");
        assert!(
            left.is_empty(),
            "deleting the workspace left its trail: {left:?}"
        );
        assert_eq!(create_workspace(&api, WS).await.0, 201);
        let (status, page) = operator_call(&api, "GET", trail, None).await;
        assert_eq!((status, page["records"].clone()), (200, json!([])));
    }

    #[tokio::test]
    async fn another_workspaces_token_reaches_no_lookup_route() {
        let (_harness, api, crm) = desk().await;
        let path = "/v1/workspaces/acme/lookups/caller";
        assert_eq!(
            operator_call(&api, "PUT", path, Some(crm_lookup())).await.0,
            201
        );
        let rival = rival_token(&api).await;
        for (method, route, body) in [
            ("GET", "/v1/workspaces/acme/lookups".to_owned(), None),
            ("GET", path.to_owned(), None),
            ("PUT", path.to_owned(), Some(crm_lookup())),
            ("DELETE", path.to_owned(), None),
            (
                "POST",
                format!("{path}/run"),
                Some(json!({ "phone": "+16502530000" })),
            ),
            ("DELETE", format!("{path}/cache/%2B16502530000"), None),
        ] {
            let (status, answer) = api_call(method, &api, &route, Some(&rival), body).await;
            assert_eq!(status, 404, "{method} {route}: {answer}");
        }
        assert!(crm.received_requests().await.expect("r").is_empty());
        assert_eq!(operator_call(&api, "GET", path, None).await.0, 200);
    }

    #[tokio::test]
    async fn a_definition_naming_what_does_not_exist_is_refused_with_every_problem() {
        let (_harness, api, _crm) = desk().await;
        let (status, body) = operator_call(
            &api,
            "PUT",
            "/v1/workspaces/acme/lookups/caller",
            Some(json!({ "sources": [
                { "name": "crm", "connection": "crm", "operation": "find-deal", "provides": "contact", "deadline_ms": 2000 },
                { "name": "pay", "connection": "stripe", "operation": "payment-status", "provides": "payment", "deadline_ms": 1 }
            ] })),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid-lookup")),
            "{body}"
        );
        let details = body["details"].to_string();
        for needle in [
            "sources[1].deadline_ms",
            "sources[0].operation",
            "find-deal",
            "sources[1].connection",
            "stripe",
        ] {
            assert!(details.contains(needle), "{needle} in {details}");
        }
        assert_eq!(
            operator_call(&api, "GET", "/v1/workspaces/acme/lookups/caller", None)
                .await
                .0,
            404
        );
    }
}
