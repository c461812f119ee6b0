//! The Stripe connector against a mock on loopback that answers with
//! Stripe's shapes: the search and list envelopes, customers, invoices,
//! payment methods, payment intents, and Stripe's error bodies.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Vendor, plugins::STRIPE, query_value};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const SECRET_KEY: &str = "sk_test_51HxAbCdEfGhIjKlMnOpQrStUv";
const VERSION: &str = "2025-09-30.clover";
const SEARCH: &str = "/v1/customers/search";

struct Stripe(Vendor);

impl std::ops::Deref for Stripe {
    type Target = Vendor;
    fn deref(&self) -> &Vendor {
        &self.0
    }
}

impl Stripe {
    async fn new() -> Self {
        Self::with_config(&[]).await
    }

    async fn with_config(config: &[(&str, &str)]) -> Self {
        let key = Secret::Bearer {
            token: SECRET_KEY.into(),
        };
        Self(Vendor::start(STRIPE, "stripe-main", ("secret_key", key), config).await)
    }

    /// Mount `response` for `GET route`, checking what every Stripe request
    /// carries: the host's bearer key and the pinned version.
    async fn answer(&self, route: &str, response: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path(route))
            .and(header(
                "authorization",
                format!("Bearer {SECRET_KEY}").as_str(),
            ))
            .and(header("stripe-version", VERSION))
            .respond_with(response.insert_header("request-id", "req_8dWjXyZ"))
            .mount(&self.upstream)
            .await;
    }

    /// Customer Search finds `record`, who has no open invoices.
    async fn found_without_invoices(&self, record: Value) {
        self.answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![record])),
        )
        .await;
        self.answer(
            "/v1/invoices",
            ResponseTemplate::new(200).set_body_json(list("/v1/invoices", vec![], false)),
        )
        .await;
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn customer(id: &str, created: i64, default_pm: Value) -> Value {
    json!({
        "id": id, "object": "customer", "address": null, "balance": 2500, "created": created,
        "currency": "usd", "default_source": null, "delinquent": false, "description": null,
        "email": "ada@example.com", "invoice_prefix": "4F3E2D1C", "livemode": false,
        "invoice_settings": { "custom_fields": null, "default_payment_method": default_pm, "footer": null, "rendering_options": null },
        "metadata": {}, "name": "Ada Lovelace", "phone": "+15551234567", "preferred_locales": [],
        "shipping": null, "tax_exempt": "none", "test_clock": null
    })
}

fn search_result(customers: Vec<Value>) -> Value {
    json!({ "object": "search_result", "url": SEARCH, "has_more": false, "next_page": null, "data": customers })
}

fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}

fn invoice(id: &str, due_date: Value, remaining: i64, currency: &str) -> Value {
    let method = if due_date.is_null() {
        "charge_automatically"
    } else {
        "send_invoice"
    };
    json!({
        "id": id, "object": "invoice", "status": "open", "amount_due": remaining + 1000,
        "amount_paid": 1000, "amount_remaining": remaining, "currency": currency,
        "customer": "cus_NffrFeUfNV2Hib", "due_date": due_date, "collection_method": method,
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_1/{id}"),
        "invoice_pdf": format!("https://pay.stripe.com/invoice/acct_1/{id}/pdf"),
        "attempt_count": 0, "attempted": false, "created": 1_700_000_000, "livemode": false
    })
}

fn card_method() -> Value {
    json!({
        "id": "pm_1Q0PsIJvEtkwdCNYMSaVuRz6", "object": "payment_method", "type": "card",
        "allow_redisplay": "unspecified",
        "billing_details": { "address": null, "email": "ada@example.com", "name": "Ada Lovelace", "phone": null },
        "card": {
            "brand": "visa", "checks": { "address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass" },
            "country": "US", "display_brand": "visa", "exp_month": 8, "exp_year": 2030,
            "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit", "last4": "4242"
        },
        "created": 1_700_000_000, "customer": "cus_NffrFeUfNV2Hib", "livemode": false, "metadata": {}
    })
}

#[tokio::test]
async fn payment_status_reports_open_and_past_due_invoices_balance_and_card() {
    let stripe = Stripe::new().await;
    let overdue = now() - 86_400 * 3;
    let later = now() + 86_400 * 10;
    Mock::given(method("GET"))
        .and(path(SEARCH))
        .and(query_param("query", "email:\"Ada@Example.com\""))
        .and(query_param("limit", "10"))
        .and(header(
            "authorization",
            format!("Bearer {SECRET_KEY}").as_str(),
        ))
        .and(header("stripe-version", VERSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(search_result(vec![
            customer("cus_Old000000000", 1_600_000_000, json!(null)),
            customer(
                "cus_NffrFeUfNV2Hib",
                1_700_000_000,
                json!("pm_1Q0PsIJvEtkwdCNYMSaVuRz6"),
            ),
        ])))
        .expect(1)
        .mount(&stripe.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .and(query_param("customer", "cus_NffrFeUfNV2Hib"))
        .and(query_param("status", "open"))
        .and(query_param("limit", "100"))
        .and(header("stripe-version", VERSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(
            "/v1/invoices",
            vec![
                invoice("in_overdue1", json!(overdue), 4900, "usd"),
                invoice("in_overdue2", json!(overdue - 100), 1000, "eur"),
                invoice("in_notyet", json!(later), 700, "usd"),
                invoice("in_auto", json!(null), 300, "usd"),
            ],
            false,
        )))
        .expect(1)
        .mount(&stripe.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v1/customers/cus_NffrFeUfNV2Hib/payment_methods/pm_1Q0PsIJvEtkwdCNYMSaVuRz6",
        ))
        .and(header(
            "authorization",
            format!("Bearer {SECRET_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(card_method()))
        .expect(1)
        .mount(&stripe.upstream)
        .await;

    let output = stripe
        .call("payment-status", json!({ "email": " Ada@Example.com " }))
        .await
        .expect("payment status");
    assert_eq!(output["source"], "stripe");
    assert_eq!(output["customer_id"], "cus_NffrFeUfNV2Hib");
    assert_eq!(output["matched_customers"], 2);
    assert_eq!(output["standing"], "past_due");
    assert_eq!(output["delinquent"], false);
    assert_eq!(
        output["balance"],
        json!({ "amount_minor": 2500, "currency": "USD" })
    );
    assert_eq!(
        output["past_due"],
        json!([{ "amount_minor": 1000, "currency": "EUR" }, { "amount_minor": 4900, "currency": "USD" }])
    );
    let invoices = output["open_invoices"].as_array().expect("invoices");
    let flags: Vec<(&str, bool, bool)> = invoices
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or(""),
                i["past_due"] == true,
                i.get("due_at").is_some(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("in_overdue1", true, true),
            ("in_overdue2", true, true),
            ("in_notyet", false, true),
            ("in_auto", false, false)
        ]
    );
    assert_eq!(
        invoices[0]["pay_url"],
        "https://invoice.stripe.com/i/acct_1/in_overdue1"
    );
    assert_eq!(invoices[0]["amount_due_minor"], 5900);
    assert!(invoices[0]["due_at"].as_str().expect("due").ends_with('Z'));
    // Brand and last four only: no expiry, fingerprint or billing details.
    assert_eq!(
        output["payment_method"],
        json!({ "kind": "card", "brand": "visa", "last4": "4242" })
    );
}

#[tokio::test]
async fn a_customer_in_good_standing_with_no_payment_method() {
    let stripe = Stripe::new().await;
    let mut record = customer("cus_Good", 1_700_000_000, json!(null));
    record["balance"] = json!(-500);
    stripe.found_without_invoices(record).await;
    let output = stripe
        .call("payment-status", json!({ "phone": "+15551234567" }))
        .await
        .expect("payment status");
    assert_eq!(output["standing"], "current");
    assert_eq!(
        output["balance"],
        json!({ "amount_minor": -500, "currency": "USD" })
    );
    assert_eq!(output["open_invoices"], json!([]));
    assert!(output.get("payment_method").is_none(), "{output}");
    let searched = stripe.requests("GET", SEARCH).await;
    assert_eq!(
        query_value(&searched[0], "query").unwrap_or_default(),
        "phone:\"+15551234567\""
    );
}

#[tokio::test]
async fn stripes_delinquent_flag_alone_makes_the_customer_past_due() {
    let stripe = Stripe::new().await;
    let mut record = customer("cus_Late", 1_700_000_000, json!(null));
    record["delinquent"] = json!(true);
    stripe.found_without_invoices(record).await;
    let output = stripe
        .call("payment-status", json!({ "email": "ada@example.com" }))
        .await
        .expect("payment status");
    assert_eq!(
        (output["standing"].clone(), output["delinquent"].clone()),
        (json!("past_due"), json!(true))
    );
}

#[tokio::test]
async fn quotes_and_backslashes_in_the_input_stay_data_in_the_search_query() {
    let stripe = Stripe::new().await;
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![])),
        )
        .await;
    let attacks = [
        (
            r#"x" OR email:"victim@example.com"#,
            r#"email:"x\" OR email:\"victim@example.com""#,
        ),
        (r#"a\" OR -email:"b"#, r#"email:"a\\\" OR -email:\"b""#),
        (r#"xy\"#, r#"email:"xy\\""#),
    ];
    for (email, _) in attacks {
        let outcome = stripe
            .call("payment-status", json!({ "email": email }))
            .await;
        assert!(
            matches!(
                outcome,
                Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
            ),
            "{email}: {outcome:?}"
        );
    }
    let sent: Vec<String> = stripe
        .requests("GET", SEARCH)
        .await
        .iter()
        .map(|r| query_value(r, "query").unwrap_or_default())
        .collect();
    let expected: Vec<String> = attacks.iter().map(|(_, q)| q.to_string()).collect();
    assert_eq!(sent, expected);

    // A control character could end the clause in ways the docs do not define: refused.
    let outcome = stripe
        .call("payment-status", json!({ "email": "a\nb@example.com" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::InvalidInput { .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(stripe.requests("GET", SEARCH).await.len(), attacks.len());
}

#[tokio::test]
async fn no_matching_customer_is_not_found() {
    let stripe = Stripe::new().await;
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![])),
        )
        .await;
    for (operation, input) in [
        ("payment-status", json!({ "email": "nobody@example.com" })),
        ("recent-payments", json!({ "phone": "+15550000000" })),
    ] {
        let outcome = stripe.call(operation, input).await;
        assert!(
            matches!(
                outcome,
                Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
            ),
            "{operation}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_payment_method_detached_since_is_left_out() {
    let stripe = Stripe::new().await;
    stripe
        .found_without_invoices(customer("cus_X", 1, json!("pm_Gone")))
        .await;
    stripe
        .answer(
            "/v1/customers/cus_X/payment_methods/pm_Gone",
            stripe_error(
                404,
                "invalid_request_error",
                Some("resource_missing"),
                "No such PaymentMethod: 'pm_Gone'",
            ),
        )
        .await;
    let output = stripe
        .call("payment-status", json!({ "email": "ada@example.com" }))
        .await
        .expect("payment status");
    assert!(output.get("payment_method").is_none(), "{output}");
}

fn payment_intent(id: &str, status: &str, error: Value) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 2000, "amount_capturable": 0,
        "amount_received": if status == "succeeded" { 2000 } else { 0 }, "capture_method": "automatic",
        "client_secret": format!("{id}_secret_abc"), "confirmation_method": "automatic",
        "created": 1_700_000_000, "currency": "gbp", "customer": "cus_NffrFeUfNV2Hib",
        "last_payment_error": error, "latest_charge": null, "livemode": false, "metadata": {},
        "payment_method": null, "payment_method_types": ["card"], "status": status
    })
}

#[tokio::test]
async fn recent_payments_map_every_payment_intent_status() {
    let stripe = Stripe::new().await;
    let declined = json!({ "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds." });
    let intents = vec![
        payment_intent("pi_1", "succeeded", json!(null)),
        payment_intent("pi_2", "requires_payment_method", declined),
        payment_intent("pi_3", "requires_payment_method", json!(null)),
        payment_intent("pi_4", "requires_confirmation", json!(null)),
        payment_intent("pi_5", "requires_action", json!(null)),
        payment_intent("pi_6", "processing", json!(null)),
        payment_intent("pi_7", "requires_capture", json!(null)),
        payment_intent("pi_8", "canceled", json!(null)),
    ];
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents"))
        .and(query_param("customer", "cus_NffrFeUfNV2Hib"))
        .and(query_param("limit", "8"))
        .and(header("stripe-version", VERSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(
            "/v1/payment_intents",
            intents,
            true,
        )))
        .expect(1)
        .mount(&stripe.upstream)
        .await;
    let output = stripe
        .call(
            "recent-payments",
            json!({ "customer_id": "cus_NffrFeUfNV2Hib", "limit": 8 }),
        )
        .await
        .expect("recent payments");
    assert_eq!(output["has_more"], true);
    let states: Vec<&str> = output["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .map(|p| p["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        states,
        [
            "succeeded",
            "failed",
            "pending",
            "pending",
            "processing",
            "processing",
            "processing",
            "canceled"
        ]
    );
    let failed = &output["payments"][1];
    assert_eq!(
        failed["failure_reason"],
        "Your card has insufficient funds."
    );
    assert_eq!(failed["amount_minor"], 2000);
    assert_eq!(failed["currency"], "GBP");
    assert_eq!(failed["created_at"], "2023-11-14T22:13:20Z");
    assert!(stripe.requests("GET", SEARCH).await.is_empty());
}

#[tokio::test]
async fn recent_payments_by_email_search_first() {
    let stripe = Stripe::new().await;
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![customer(
                "cus_Q",
                5,
                json!(null),
            )])),
        )
        .await;
    stripe
        .answer(
            "/v1/payment_intents",
            ResponseTemplate::new(200).set_body_json(list("/v1/payment_intents", vec![], false)),
        )
        .await;
    let output = stripe
        .call("recent-payments", json!({ "email": "ada@example.com" }))
        .await
        .expect("recent payments");
    assert_eq!(
        output,
        json!({ "source": "stripe", "customer_id": "cus_Q", "payments": [], "has_more": false })
    );
    let listed = stripe.requests("GET", "/v1/payment_intents").await;
    assert_eq!(
        (
            query_value(&listed[0], "customer").unwrap_or_default(),
            query_value(&listed[0], "limit").unwrap_or_default()
        ),
        ("cus_Q".into(), "5".into())
    );
}

/// A Stripe error answer: `{"error": {type, code, message, param, doc_url}}`.
fn stripe_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> ResponseTemplate {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!(
            "https://docs.stripe.com/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

#[tokio::test]
async fn stripes_errors_become_typed_errors_with_stripes_explanation() {
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        (
            "400",
            stripe_error(
                400,
                "invalid_request_error",
                Some("parameter_invalid_string"),
                "Invalid string: query is malformed",
            ),
        ),
        (
            "401",
            stripe_error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided: sk_test_****uv",
            ),
        ),
        (
            "403",
            stripe_error(
                403,
                "invalid_request_error",
                Some("secret_key_required"),
                "The provided key 'rk_test_***' does not have the required permissions for this endpoint",
            ),
        ),
        (
            "404",
            stripe_error(
                404,
                "invalid_request_error",
                Some("resource_missing"),
                "Unrecognized request URL (GET: /v1/customers/search).",
            ),
        ),
        (
            "429",
            stripe_error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
            )
            .insert_header("retry-after", "2")
            .insert_header("stripe-should-retry", "true"),
        ),
        (
            "429 without retry-after",
            stripe_error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
            ),
        ),
        (
            "500",
            stripe_error(500, "api_error", None, "An unknown error occurred"),
        ),
        (
            "503",
            ResponseTemplate::new(503).set_body_string("upstream connect error"),
        ),
        (
            "malformed",
            ResponseTemplate::new(200)
                .set_body_string("{\"object\": \"search_result\", \"data\": ["),
        ),
        (
            "wrong shape",
            ResponseTemplate::new(200)
                .set_body_json(json!({ "object": "search_result", "data": "none" })),
        ),
    ];
    for (case, response) in cases {
        let stripe = Stripe::new().await;
        stripe.answer(SEARCH, response).await;
        let failure = stripe
            .failure(
                "payment-status",
                json!({ "email": "ada@example.com" }),
                case,
            )
            .await;
        match (case, &failure) {
            (
                "400",
                PluginFailure::Upstream {
                    status: 400,
                    message,
                },
            ) => {
                assert!(
                    message.contains("parameter_invalid_string")
                        && message.contains("query is malformed")
                        && message.contains("req_8dWjXyZ"),
                    "{message}"
                )
            }
            ("401", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("Invalid API Key"), "{message}")
            }
            ("403", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("required permissions"), "{message}")
            }
            ("404", PluginFailure::NotFound { .. }) => {}
            (
                "429",
                PluginFailure::RateLimited {
                    retry_after_ms: 2000,
                },
            ) => {}
            (
                "429 without retry-after",
                PluginFailure::RateLimited {
                    retry_after_ms: 1000,
                },
            ) => {}
            (
                "500",
                PluginFailure::Upstream {
                    status: 500,
                    message,
                },
            ) => assert!(message.contains("api_error"), "{message}"),
            ("503", PluginFailure::Upstream { status: 503, .. }) => {}
            (
                "malformed" | "wrong shape",
                PluginFailure::Upstream {
                    status: 200,
                    message,
                },
            ) => {
                assert!(
                    message.contains("not the expected JSON"),
                    "{case}: {message}"
                )
            }
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_stripe_is_a_timeout() {
    let stripe = Stripe::with_config(&[("request_timeout_ms", "300")]).await;
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200)
                .set_body_json(search_result(vec![]))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .await;
    let started = std::time::Instant::now();
    let outcome = stripe
        .call("payment-status", json!({ "email": "ada@example.com" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::Timeout { .. }))
        ),
        "{outcome:?}"
    );
    // Bounded by the request timeout, not the upstream's delay (not a timing goal: a sanity bound).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_stripe() {
    let stripe = Stripe::new().await;
    stripe
        .assert_schema_refuses(&[
            ("payment-status", json!({})),
            (
                "payment-status",
                json!({ "email": "a@b.c", "phone": "+1555" }),
            ),
            ("payment-status", json!({ "customer_id": "cus_1" })),
            (
                "recent-payments",
                json!({ "customer_id": "cus_1/../../v1/charges" }),
            ),
            (
                "recent-payments",
                json!({ "customer_id": "cus_1", "limit": 1000 }),
            ),
            (
                "recent-payments",
                json!({ "customer_id": "cus_1", "email": "a@b.c" }),
            ),
        ])
        .await;
}

#[tokio::test]
async fn only_the_callers_own_record_counts_not_a_near_match() {
    let stripe = Stripe::new().await;
    // Stripe's `:` finds the words in order: these all match `ada@example.com`.
    let mut longer = customer("cus_Longer", 1_800_000_000, json!(null));
    longer["email"] = json!("ada@example.com.attacker.example");
    let mut other = customer("cus_Other", 1_900_000_000, json!(null));
    other["email"] = json!("ADA@example.com");
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![longer, other])),
        )
        .await;
    stripe
        .answer(
            "/v1/invoices",
            ResponseTemplate::new(200).set_body_json(list("/v1/invoices", vec![], false)),
        )
        .await;
    let output = stripe
        .call("payment-status", json!({ "email": "ada@example.com" }))
        .await
        .expect("payment status");
    assert_eq!(output["customer_id"], "cus_Other");
    assert_eq!(output["matched_customers"], 1);

    // A phone is compared as dialled.
    let stripe = Stripe::new().await;
    let mut near = customer("cus_Near", 1, json!(null));
    near["phone"] = json!("+1 555 123 45678");
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![near])),
        )
        .await;
    let outcome = stripe
        .call("payment-status", json!({ "phone": "+15551234567" }))
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::NotFound { .. }))
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_failed_automatic_charge_is_past_due_and_every_page_of_invoices_counts() {
    let stripe = Stripe::new().await;
    stripe
        .answer(
            SEARCH,
            ResponseTemplate::new(200).set_body_json(search_result(vec![customer(
                "cus_P",
                1,
                json!(null),
            )])),
        )
        .await;
    let mut failed = invoice("in_failed", json!(null), 1500, "usd");
    failed["attempt_count"] = json!(2);
    failed["attempted"] = json!(true);
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .and(query_param("starting_after", "in_first"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(
            "/v1/invoices",
            vec![failed],
            false,
        )))
        .with_priority(1)
        .mount(&stripe.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(
            "/v1/invoices",
            vec![invoice("in_first", json!(null), 300, "usd")],
            true,
        )))
        .with_priority(2)
        .mount(&stripe.upstream)
        .await;
    let output = stripe
        .call("payment-status", json!({ "email": "ada@example.com" }))
        .await
        .expect("payment status");
    assert_eq!(output["standing"], "past_due");
    assert_eq!(
        output["past_due"],
        json!([{ "amount_minor": 1500, "currency": "USD" }])
    );
    assert_eq!(output["open_invoices"].as_array().map(Vec::len), Some(2));
    assert_eq!(stripe.requests("GET", "/v1/invoices").await.len(), 2);
}
