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
///     amount_minor: 1999, currency: "EUR".into(), updated_at: None, failure_reason: None };
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
    /// `confirmed`, `cancelled`, `rescheduled`, ... as the source says.
    pub status: String,
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
