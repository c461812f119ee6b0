//! Webhooks in (manifest: `[webhook] verify = "plugin"`, contract 0.1.1).
//!
//! The host calls [`Connector::webhook`](crate::Connector::webhook) for each
//! webhook sent to one of the plugin's connections. The plugin checks the
//! vendor's signature with [`verify_hmac`], whose secret stays with the host,
//! then maps the payload to [`Event`]s. The host refuses the result of a
//! call in which no `verify_hmac` matched, so forgetting the check fails
//! closed.
//!
//! ```no_run
//! use patchbay_sdk::webhooks::{Algorithm, Event, Verified, WebhookRequest, verify_hmac};
//! use patchbay_sdk::{Context, Error};
//!
//! fn webhook(_ctx: &Context, request: &WebhookRequest) -> Result<Verified, Error> {
//!     let signature = request.header("x-signature").ok_or_else(|| Error::unauthorized("unsigned"))?;
//!     let signature = patchbay_sdk::webhooks::hex_decode(signature)
//!         .ok_or_else(|| Error::unauthorized("the signature is not hex"))?;
//!     if !verify_hmac("signing_secret", Algorithm::Sha256, request.body(), &signature)? {
//!         return Err(Error::unauthorized("bad signature"));
//!     }
//!     let payload: serde_json::Value = request.json()?;
//!     Ok(Verified::new(None).with(Event::new("ticket.updated", &payload)?))
//! }
//! ```

use crate::Error;
use crate::bindings::exports::patchbay::connector::webhooks as wit;
use crate::bindings::patchbay::connector::signing;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A webhook as it arrived: headers, the raw body, when it was received.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    inner: wit::WebhookRequest,
}

impl WebhookRequest {
    /// The first value of header `name` (matched without regard to case).
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::webhooks::WebhookRequest) { let _ = r.header("x-signature"); }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, names in lowercase, in the order received.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::webhooks::WebhookRequest) { let _ = r.headers().count(); }
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The body exactly as sent: what a signature covers.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::webhooks::WebhookRequest) { let _ = r.body().len(); }
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// The body decoded as JSON; a body that does not decode is
    /// [`Error::InvalidInput`] naming the problem.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::webhooks::WebhookRequest) -> Result<(), patchbay_sdk::Error> {
    /// let payload: serde_json::Value = r.json()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.inner.body).map_err(|e| {
            Error::invalid_input(format!("the webhook body is not the JSON expected: {e}"))
        })
    }

    /// When the host received it, in milliseconds since the Unix epoch: what
    /// a scheme's replay window is reckoned from.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::webhooks::WebhookRequest) { let _ = r.received_at_ms(); }
    /// ```
    pub fn received_at_ms(&self) -> u64 {
        self.inner.received_at_ms
    }
}

/// The hash an HMAC is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// Whether `signature` (raw bytes) is the HMAC of `message` keyed with the
/// connection's webhook secret `credential` (a `webhook_secret` credential
/// the manifest declares). The host holds the secret and compares in
/// constant time. Outside a webhook verification, or for a credential not
/// declared, approved or set, it is [`Error::AccessDenied`].
///
/// ```no_run
/// # fn f(body: &[u8], signature: &[u8]) -> Result<bool, patchbay_sdk::Error> {
/// patchbay_sdk::webhooks::verify_hmac("signing_secret", patchbay_sdk::webhooks::Algorithm::Sha256, body, signature)
/// # }
/// ```
pub fn verify_hmac(
    credential: &str,
    algorithm: Algorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, Error> {
    let algorithm = match algorithm {
        Algorithm::Sha1 => signing::HmacAlgorithm::Sha1,
        Algorithm::Sha256 => signing::HmacAlgorithm::Sha256,
        Algorithm::Sha512 => signing::HmacAlgorithm::Sha512,
    };
    signing::verify_hmac(credential, algorithm, message, signature).map_err(Error::from)
}

/// One event a webhook becomes.
#[derive(Debug, Clone)]
pub struct Event {
    inner: wit::WebhookEvent,
}

impl Event {
    /// An event of `event_type` (e.g. `case.updated`) carrying `data`.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), patchbay_sdk::Error> {
    /// let event = patchbay_sdk::webhooks::Event::new("case.updated", &serde_json::json!({"id": "1"}))?;
    /// # Ok(()) }
    /// ```
    pub fn new(event_type: &str, data: &impl Serialize) -> Result<Self, Error> {
        let data = serde_json::to_string(data)
            .map_err(|e| Error::internal(format!("encoding the event's data: {e}")))?;
        Ok(Self {
            inner: wit::WebhookEvent {
                id: None,
                type_: event_type.to_owned(),
                subject: None,
                occurred_at: None,
                data,
            },
        })
    }

    /// Its id, stable across the sender's retries (the vendor's event id).
    /// Unset, the host derives one from the webhook's id and the event's place.
    ///
    /// ```no_run
    /// # fn f(e: patchbay_sdk::webhooks::Event) { let _ = e.id("evt_1"); }
    /// ```
    pub fn id(mut self, id: &str) -> Self {
        self.inner.id = Some(id.to_owned());
        self
    }

    /// What it is about (a ticket or customer id).
    ///
    /// ```no_run
    /// # fn f(e: patchbay_sdk::webhooks::Event) { let _ = e.subject("ticket:35436"); }
    /// ```
    pub fn subject(mut self, subject: &str) -> Self {
        self.inner.subject = Some(subject.to_owned());
        self
    }

    /// When it happened, RFC 3339; unset, when the webhook was received.
    ///
    /// ```no_run
    /// # fn f(e: patchbay_sdk::webhooks::Event) { let _ = e.occurred_at("2026-12-03T10:00:00Z"); }
    /// ```
    pub fn occurred_at(mut self, at: &str) -> Self {
        self.inner.occurred_at = Some(at.to_owned());
        self
    }
}

/// A verified webhook and the events it becomes.
#[derive(Debug, Clone)]
pub struct Verified {
    inner: wit::VerifiedWebhook,
}

impl Verified {
    /// A verified webhook with the sender's id for it (the same on every
    /// retry; the host drops repeats), and no events yet.
    ///
    /// ```no_run
    /// let v = patchbay_sdk::webhooks::Verified::new(Some("01HV…"));
    /// ```
    pub fn new(webhook_id: Option<&str>) -> Self {
        Self {
            inner: wit::VerifiedWebhook {
                webhook_id: webhook_id.map(str::to_owned),
                events: Vec::new(),
            },
        }
    }

    /// Add `event`.
    ///
    /// ```no_run
    /// # fn f(v: patchbay_sdk::webhooks::Verified, e: patchbay_sdk::webhooks::Event) { let _ = v.with(e); }
    /// ```
    pub fn with(mut self, event: Event) -> Self {
        self.inner.events.push(event.inner);
        self
    }
}

/// `text` as bytes when it is hexadecimal (either case), for signatures sent in hex.
///
/// ```no_run
/// assert_eq!(patchbay_sdk::webhooks::hex_decode("0aff"), Some(vec![0x0a, 0xff]));
/// ```
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.trim()).ok()
}

/// `text` as bytes when it is standard base64 (with padding), for
/// signatures sent in base64.
///
/// ```no_run
/// assert_eq!(patchbay_sdk::webhooks::base64_decode("aGk="), Some(b"hi".to_vec()));
/// ```
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

/// Entry point used by the export macro.
#[doc(hidden)]
pub fn verify<C: crate::Connector>(
    context: crate::bindings::patchbay::connector::types::InvocationContext,
    request: wit::WebhookRequest,
) -> Result<wit::VerifiedWebhook, crate::__private::WitError> {
    let context = crate::operations::context(context);
    C::webhook(&context, &WebhookRequest { inner: request })
        .map(|verified| verified.inner)
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hex_and_base64_and_refuses_what_is_neither() {
        assert_eq!(hex_decode("00Ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8h"), Some(b"hello!".to_vec()));
        assert_eq!(base64_decode("aA=="), Some(b"h".to_vec()));
        for bad in ["", "aGk", "a=Gk", "aGk=aGk=", "a===", "aG!="] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }
}
