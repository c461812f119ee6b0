//! Stripe connector.
//!
//! `payment-status` finds a caller's Stripe customer by email or phone
//! (Customer Search) and says where they stand: open and past-due invoices,
//! the balance, and the default payment method as brand and last four digits
//! only. `recent-payments` lists a customer's latest PaymentIntents. The
//! secret key is added by the host; this code never sees it. Sources are in
//! this crate's README.

use patchbay_sdk::cx::{
    Money, OpenInvoice, PaymentAccount, PaymentMethodSummary, PaymentState, PaymentStatus,
    RecentPayments, Standing,
};
use patchbay_sdk::http::{Request, Response};
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SOURCE: &str = "stripe";
const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// The API version these shapes were written against; a connection may pin another.
const DEFAULT_STRIPE_VERSION: &str = "2025-09-30.clover";
const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// Customers one search looks at (several Stripe customers often share an email).
const SEARCH_LIMIT: &str = "10";
/// Open invoices read per call: Stripe's largest page.
const INVOICE_LIMIT: &str = "100";
/// Pages of open invoices read at most (500 invoices).
const MAX_INVOICE_PAGES: usize = 5;

struct Stripe;

impl Connector for Stripe {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("payment-status", payment_status);
        ops.register("recent-payments", recent_payments);
    }
}

export_connector!(Stripe);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerKey {
    email: Option<String>,
    phone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentInput {
    customer_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    limit: Option<u32>,
}

/// Stripe's list and search envelope (`object: "list"` or `"search_result"`).
#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct Customer {
    id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    balance: i64,
    currency: Option<String>,
    #[serde(default)]
    delinquent: Option<bool>,
    #[serde(default)]
    created: i64,
    invoice_settings: Option<InvoiceSettings>,
}

#[derive(Deserialize)]
struct InvoiceSettings {
    /// An id, or the object when expanded.
    default_payment_method: Option<Value>,
}

#[derive(Deserialize)]
struct Invoice {
    id: String,
    #[serde(default)]
    amount_due: i64,
    #[serde(default)]
    amount_remaining: i64,
    currency: String,
    due_date: Option<i64>,
    hosted_invoice_url: Option<String>,
    /// Automatic payment attempts made (an open invoice with attempts is one whose charge failed).
    #[serde(default)]
    attempt_count: u32,
    collection_method: Option<String>,
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    created: i64,
    last_payment_error: Option<PaymentError>,
}

#[derive(Deserialize)]
struct PaymentError {
    message: Option<String>,
    code: Option<String>,
}

/// The connection's Stripe settings.
struct Api {
    base_url: String,
    version: String,
    timeout: Duration,
}

impl Api {
    fn from_config() -> Result<Self, Error> {
        let timeout_ms = config::parsed_or("request_timeout_ms", DEFAULT_TIMEOUT_MS)?;
        Ok(Self {
            base_url: config::base_url_or("base_url", DEFAULT_BASE_URL)?,
            version: config::get_or("stripe_version", DEFAULT_STRIPE_VERSION)?,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// `GET path?query`, Stripe's errors mapped, the body decoded.
    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, Error> {
        Request::get(format!("{}{path}", self.base_url))
            .query(query)
            .header("accept", "application/json")
            .header("stripe-version", &self.version)
            .timeout(self.timeout)
            .send()?
            .error_for_status_with(stripe_error)?
            .json()
    }

    /// The most recently created customer matching `key`, and how many matched.
    fn find_customer(&self, key: &CustomerKey) -> Result<(Customer, u32), Error> {
        let query = match (nonempty(&key.email), nonempty(&key.phone)) {
            // Stripe's `:` match is case-insensitive already.
            (Some(email), None) => clause("email", email)?,
            (None, Some(phone)) => clause("phone", phone)?,
            _ => {
                return Err(Error::invalid_input(
                    "give exactly one non-empty field: email or phone",
                ));
            }
        };
        let page: Page<Customer> = self.get(
            "/v1/customers/search",
            &[("query", &query), ("limit", SEARCH_LIMIT)],
        )?;
        // A `:` match finds the query's words in order, so `ada@x.com` also
        // matches `ada@x.com.evil`: keep only the records that are the caller.
        let same: Vec<Customer> = page
            .data
            .into_iter()
            .filter(|c| match (nonempty(&key.email), nonempty(&key.phone)) {
                (Some(email), _) => c
                    .email
                    .as_deref()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case(email)),
                (_, Some(phone)) => c
                    .phone
                    .as_deref()
                    .is_some_and(|p| dialable(p) == dialable(phone)),
                _ => false,
            })
            .collect();
        let matched = u32::try_from(same.len()).unwrap_or(u32::MAX);
        let newest = same
            .into_iter()
            .max_by_key(|c| c.created)
            .ok_or_else(|| Error::not_found("no Stripe customer matches"))?;
        Ok((newest, matched))
    }

    /// Every open invoice of `customer`, newest first, following Stripe's
    /// pages up to [`MAX_INVOICE_PAGES`].
    fn open_invoices(&self, customer: &str) -> Result<Vec<Invoice>, Error> {
        let mut all: Vec<Invoice> = Vec::new();
        for _ in 0..MAX_INVOICE_PAGES {
            let after = all.last().map(|i| i.id.clone());
            let mut query = vec![
                ("customer", customer),
                ("status", "open"),
                ("limit", INVOICE_LIMIT),
            ];
            if let Some(after) = &after {
                query.push(("starting_after", after));
            }
            let page: Page<Invoice> = self.get("/v1/invoices", &query)?;
            all.extend(page.data);
            if !page.has_more {
                return Ok(all);
            }
        }
        Err(Error::Upstream {
            status: 200,
            message: format!(
                "more than {} open invoices: too many to total in one call",
                MAX_INVOICE_PAGES * 100
            ),
        })
    }

    fn payment_method(
        &self,
        customer: &str,
        method: Option<Value>,
    ) -> Result<Option<PaymentMethodSummary>, Error> {
        let object = match method {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(id)) => {
                let path = format!(
                    "/v1/customers/{}/payment_methods/{}",
                    stripe_id(customer)?,
                    stripe_id(&id)?
                );
                match self.get::<Value>(&path, &[]) {
                    Ok(object) => object,
                    // Detached since the customer record was read.
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Some(expanded) => expanded,
        };
        Ok(summarise_method(&object))
    }
}

fn payment_status(_ctx: &Context, key: CustomerKey) -> Result<PaymentAccount, Error> {
    let api = Api::from_config()?;
    let (customer, matched_customers) = api.find_customer(&key)?;
    let invoices = api.open_invoices(&customer.id)?;
    let now = unix_now();
    let mut past_due: BTreeMap<String, i64> = BTreeMap::new();
    let open_invoices: Vec<OpenInvoice> = invoices
        .into_iter()
        .map(|invoice| {
            let currency = invoice.currency.to_uppercase();
            // A sent invoice is overdue past its due date; one charged
            // automatically has none, and is overdue once a charge failed.
            let overdue = match invoice.due_date {
                Some(due) => due < now,
                None => {
                    invoice.collection_method.as_deref() == Some("charge_automatically")
                        && invoice.attempt_count > 0
                }
            };
            if overdue {
                *past_due.entry(currency.clone()).or_default() += invoice.amount_remaining;
            }
            OpenInvoice {
                id: invoice.id,
                amount_due_minor: invoice.amount_due,
                amount_remaining_minor: invoice.amount_remaining,
                currency,
                due_at: invoice.due_date.map(rfc3339),
                past_due: overdue,
                pay_url: invoice.hosted_invoice_url,
            }
        })
        .collect();
    let delinquent = customer.delinquent.unwrap_or(false);
    let payment_method = api.payment_method(
        &customer.id,
        customer
            .invoice_settings
            .and_then(|s| s.default_payment_method),
    )?;
    Ok(PaymentAccount {
        source: SOURCE.into(),
        standing: if delinquent || !past_due.is_empty() {
            Standing::PastDue
        } else {
            Standing::Current
        },
        delinquent,
        balance: customer.currency.map(|currency| Money {
            amount_minor: customer.balance,
            currency: currency.to_uppercase(),
        }),
        open_invoices,
        past_due: past_due
            .into_iter()
            .map(|(currency, amount_minor)| Money {
                amount_minor,
                currency,
            })
            .collect(),
        payment_method,
        matched_customers,
        customer_id: customer.id,
        name: customer.name,
        email: customer.email,
        phone: customer.phone,
    })
}

fn recent_payments(_ctx: &Context, input: RecentInput) -> Result<RecentPayments, Error> {
    let api = Api::from_config()?;
    let customer_id = match (input.customer_id, input.email, input.phone) {
        (Some(id), None, None) => stripe_id(&id)?.to_owned(),
        (None, email, phone) => api.find_customer(&CustomerKey { email, phone })?.0.id,
        _ => {
            return Err(Error::invalid_input(
                "give customer_id, or one of email and phone",
            ));
        }
    };
    let limit = input.limit.unwrap_or(5).clamp(1, 100).to_string();
    let page: Page<PaymentIntent> = api.get(
        "/v1/payment_intents",
        &[("customer", &customer_id), ("limit", &limit)],
    )?;
    Ok(RecentPayments {
        source: SOURCE.into(),
        payments: page.data.into_iter().map(to_payment_status).collect(),
        has_more: page.has_more,
        customer_id,
    })
}

fn to_payment_status(intent: PaymentIntent) -> PaymentStatus {
    let failed = intent.last_payment_error.is_some();
    let state = match intent.status.as_str() {
        // Stripe returns a PaymentIntent to this status after a failed attempt.
        "requires_payment_method" if failed => PaymentState::Failed,
        "requires_payment_method" | "requires_confirmation" => PaymentState::Pending,
        "succeeded" => PaymentState::Succeeded,
        "canceled" => PaymentState::Canceled,
        // requires_action, processing, requires_capture, and any status added later.
        _ => PaymentState::Processing,
    };
    PaymentStatus {
        id: intent.id,
        source: SOURCE.into(),
        state,
        amount_minor: intent.amount,
        currency: intent.currency.to_uppercase(),
        created_at: Some(rfc3339(intent.created)),
        updated_at: None,
        failure_reason: intent.last_payment_error.and_then(|e| e.message.or(e.code)),
    }
}

/// Brand and last four digits of a PaymentMethod object, whatever its type
/// (`card`, `sepa_debit`, `us_bank_account`...): nothing else is kept.
fn summarise_method(object: &Value) -> Option<PaymentMethodSummary> {
    let kind = object.get("type")?.as_str()?;
    let details = object.get(kind);
    let text = |field: &str| {
        details
            .and_then(|d| d.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(PaymentMethodSummary {
        kind: kind.to_owned(),
        brand: text("brand").or_else(|| text("bank_name")),
        last4: text("last4"),
    })
}

/// A Customer Search clause `field:"value"`, the value escaped so it stays
/// one string whatever it holds (Stripe escapes a quote with a backslash).
fn clause(field: &str, value: &str) -> Result<String, Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_input(format!(
            "{field}: control characters are not allowed"
        )));
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if c == '"' || c == '\\' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Ok(format!("{field}:\"{escaped}\""))
}

/// An id Stripe gave (`cus_…`, `pm_…`): letters, digits and underscores only,
/// so it is safe as a path segment.
fn stripe_id(id: &str) -> Result<&str, Error> {
    let valid = !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(id)
    } else {
        Err(Error::invalid_input(format!("{id:?} is not a Stripe id")))
    }
}

/// A number as it is dialled: its digits, and a leading `+`.
fn dialable(phone: &str) -> String {
    let phone = phone.trim();
    let plus = if phone.starts_with('+') { "+" } else { "" };
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    format!("{plus}{digits}")
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Stripe's error body `{"error": {"type", "code", "message"}}` as one line,
/// with the request id Stripe support asks for.
fn stripe_error(response: &Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<String>,
        message: Option<String>,
    }
    let request_id = response.header("request-id").map(str::to_owned);
    let detail = response.json::<Body>().ok().map(|b| b.error);
    let mut text = String::new();
    if let Some(d) = detail {
        for part in [d.kind, d.code].into_iter().flatten() {
            text.push_str(&part);
            text.push_str(": ");
        }
        text.push_str(d.message.as_deref().unwrap_or(""));
    }
    if let Some(id) = request_id {
        text.push_str(&format!(" (request {id})"));
    }
    Some(text)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}
