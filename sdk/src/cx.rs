//! Canonical customer-experience types shared by Patchbay's connectors, so a
//! contact from HubSpot and one from Salesforce look the same to a tenant's
//! contact-center flow. Field names are snake_case in JSON; optional fields
//! are omitted when absent.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A person known to a system of record.
///
/// ```no_run
/// let c = patchbay_sdk::cx::Contact { id: "123".into(), source: "hubspot".into(), ..Default::default() };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The id in the source system.
    pub id: String,
    /// Which system it came from (`hubspot`, `salesforce`...).
    pub source: String,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Primary email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Primary phone number, as stored by the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Employer or account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// When the source last changed it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Source-specific fields worth passing on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Where a payment stands.
///
/// ```no_run
/// let s = patchbay_sdk::cx::PaymentState::Succeeded;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Created, not yet attempted.
    Pending,
    /// Waiting on the customer or the bank.
    Processing,
    /// Money moved.
    Succeeded,
    /// Attempted and refused.
    Failed,
    /// Returned in full or in part.
    Refunded,
    /// Cancelled before completion.
    Canceled,
}

/// The status of one payment.
///
/// ```no_run
/// use patchbay_sdk::cx::{PaymentStatus, PaymentState};
/// let p = PaymentStatus { id: "pi_1".into(), source: "stripe".into(), state: PaymentState::Pending,
///     amount_minor: 1999, currency: "EUR".into(), created_at: None, updated_at: None, failure_reason: None };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentStatus {
    /// The id in the payment system.
    pub id: String,
    /// Which system it came from.
    pub source: String,
    /// Where it stands.
    pub state: PaymentState,
    /// Amount in the currency's minor unit (cents).
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// A scheduled appointment.
///
/// ```no_run
/// let a = patchbay_sdk::cx::Appointment { id: "a1".into(), source: "calendly".into(),
///     starts_at: "2026-01-01T09:00:00Z".into(), ends_at: "2026-01-01T09:30:00Z".into(),
///     status: "confirmed".into(), ..Default::default() };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    /// The id in the scheduling system.
    pub id: String,
    /// Which system it came from.
    pub source: String,
    /// Start (RFC 3339).
    pub starts_at: String,
    /// End (RFC 3339).
    pub ends_at: String,
    /// `confirmed`, `pending` (awaiting the host's confirmation), `cancelled`
    /// or `rejected`; other words as the source says.
    pub status: String,
    /// What it is (the event's title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Where it takes place (address or meeting link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The contact it is with, by source id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
}

/// The channel of an interaction.
///
/// ```no_run
/// let c = patchbay_sdk::cx::Channel::Voice;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call.
    Voice,
    /// Email.
    Email,
    /// Web or in-app chat.
    Chat,
    /// SMS or messaging apps.
    Messaging,
    /// Anything else.
    Other,
}

/// One conversation between a customer and the business.
///
/// ```no_run
/// use patchbay_sdk::cx::{Interaction, Channel};
/// let i = Interaction { id: "call-1".into(), channel: Channel::Voice, inbound: true,
///     started_at: "2026-01-01T09:00:00Z".into(), ended_at: None, contact_id: None, summary: None };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The id in the contact-center platform.
    pub id: String,
    /// The channel.
    pub channel: Channel,
    /// Whether the customer started it.
    pub inbound: bool,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339), when over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The contact, by id in the system of record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// A short summary or disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// An amount of money in one currency.
///
/// ```no_run
/// let m = patchbay_sdk::cx::Money { amount_minor: 1250, currency: "EUR".into() };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor unit (cents).
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

/// Whether a customer is up to date with what they owe.
///
/// ```no_run
/// let s = patchbay_sdk::cx::Standing::PastDue;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Nothing overdue.
    Current,
    /// An invoice is past its due date, or an automatic payment failed.
    PastDue,
}

/// An invoice still waiting to be paid.
///
/// ```no_run
/// let i = patchbay_sdk::cx::OpenInvoice { id: "in_1".into(), amount_due_minor: 5000,
///     amount_remaining_minor: 5000, currency: "USD".into(), due_at: None, past_due: false, pay_url: None };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenInvoice {
    /// The id in the payment system.
    pub id: String,
    /// The invoice's total due, in minor units.
    pub amount_due_minor: i64,
    /// What is still unpaid, in minor units.
    pub amount_remaining_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// When it is due (RFC 3339); absent for invoices charged automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Whether the due date has passed.
    pub past_due: bool,
    /// Where the customer can pay it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_url: Option<String>,
}

/// A stored payment method, summarised so it can be read out to a caller:
/// never the full number, only the brand and the last four digits.
///
/// ```no_run
/// let m = patchbay_sdk::cx::PaymentMethodSummary { kind: "card".into(),
///     brand: Some("visa".into()), last4: Some("4242".into()) };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethodSummary {
    /// `card`, `sepa_debit`, `us_bank_account`... as the source says.
    pub kind: String,
    /// Card brand (`visa`, `mastercard`...) or bank name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// The last four digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

/// Where a customer stands with a payment system: what they owe, what is
/// overdue, how they pay.
///
/// ```no_run
/// use patchbay_sdk::cx::{PaymentAccount, Standing};
/// let a = PaymentAccount { source: "stripe".into(), customer_id: "cus_1".into(), name: None,
///     email: None, phone: None, standing: Standing::Current, delinquent: false, balance: None,
///     open_invoices: vec![], past_due: vec![], payment_method: None, matched_customers: 1 };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAccount {
    /// Which system it came from.
    pub source: String,
    /// The customer's id there.
    pub customer_id: String,
    /// The customer's name, as the payment system has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The customer's email, as the payment system has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The customer's phone, as the payment system has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Current or past due.
    pub standing: Standing,
    /// The payment system's own overdue flag (an automatic payment failed or a due date passed).
    pub delinquent: bool,
    /// Account balance not yet on an invoice: positive is owed by the customer, negative is credit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Money>,
    /// Invoices waiting to be paid, newest first.
    #[serde(default)]
    pub open_invoices: Vec<OpenInvoice>,
    /// What is past due, per currency.
    #[serde(default)]
    pub past_due: Vec<Money>,
    /// The default payment method, summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethodSummary>,
    /// How many customer records matched the lookup (this is the most recent).
    pub matched_customers: u32,
}

/// Recent payments of one customer.
///
/// ```no_run
/// let p = patchbay_sdk::cx::RecentPayments { source: "stripe".into(), customer_id: "cus_1".into(),
///     payments: vec![], has_more: false };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentPayments {
    /// Which system it came from.
    pub source: String,
    /// The customer's id there.
    pub customer_id: String,
    /// Newest first.
    pub payments: Vec<PaymentStatus>,
    /// Whether older payments exist beyond these.
    pub has_more: bool,
}

/// Appointments of one person, soonest first.
///
/// ```no_run
/// let a = patchbay_sdk::cx::Appointments { source: "calcom".into(), appointments: vec![] };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Appointments {
    /// Which system they came from.
    pub source: String,
    /// Soonest first.
    pub appointments: Vec<Appointment>,
}

/// A time that can be booked.
///
/// ```no_run
/// let s = patchbay_sdk::cx::Slot { starts_at: "2026-01-01T09:00:00Z".into(), ends_at: None };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Start (RFC 3339).
    pub starts_at: String,
    /// End (RFC 3339), when the source gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

/// Bookable times of one event type, soonest first.
///
/// ```no_run
/// let s = patchbay_sdk::cx::AvailableSlots { source: "calcom".into(), event_type: "42".into(),
///     time_zone: "UTC".into(), slots: vec![] };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableSlots {
    /// Which system they came from.
    pub source: String,
    /// The event type (service) they are for, by source id.
    pub event_type: String,
    /// The time zone the times are given in.
    pub time_zone: String,
    /// Soonest first.
    pub slots: Vec<Slot>,
}

/// The result of booking: the appointment, and whether this call created it
/// or found it already made by an earlier attempt with the same idempotency key.
///
/// ```no_run
/// let b = patchbay_sdk::cx::Booked { appointment: Default::default(), created: true };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booked {
    /// The appointment.
    pub appointment: Appointment,
    /// `false` when an earlier attempt had already booked it.
    pub created: bool,
}

/// The result of an upsert: the record as it now stands, and whether this
/// call created it (`false`: an existing one was updated).
///
/// ```no_run
/// let u = patchbay_sdk::cx::UpsertedContact { contact: Default::default(), created: false };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpsertedContact {
    /// The contact after the write.
    pub contact: Contact,
    /// `true` when this call created it.
    pub created: bool,
}

/// An interaction written to a system of record.
///
/// ```no_run
/// let l = patchbay_sdk::cx::LoggedInteraction { id: "9001".into(), source: "hubspot".into(),
///     contact_id: "512".into() };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedInteraction {
    /// Its id in the system of record (an engagement, a task...).
    pub id: String,
    /// Which system.
    pub source: String,
    /// The contact it is attached to.
    pub contact_id: String,
}
