//! Verifying webhooks signed by the Standard Webhooks scheme
//! (<https://www.standardwebhooks.com/>): an HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the endpoint's secret,
//! sent base64-encoded as `v1,<signature>` in `webhook-signature`, several
//! space-separated while a secret is rotated. A timestamp more than the
//! tolerance (five minutes) away from now is refused, so a captured request
//! cannot be replayed later. Comparisons are constant-time.
//!
//! Pure: the caller reads the headers and the raw body (never a re-serialised
//! one: the signature covers the bytes as sent) and supplies the clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a webhook's timestamp may be from now, either way, in seconds.
pub const TOLERANCE_SECS: u64 = 5 * 60;
/// The prefix of a Standard Webhooks secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest `webhook-id` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most signatures read from one `webhook-signature` header.
pub const MAX_SIGNATURES: usize = 16;

/// Why a webhook was refused. The sender is told none of this (a bad
/// signature gets a bare 401); it is for the host's log and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A required header is absent or empty.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// `webhook-id` is longer than [`MAX_ID_BYTES`], or holds a `.` (the
    /// specification forbids it: the signed content is dot-separated).
    #[error("the webhook-id header is longer than {MAX_ID_BYTES} bytes or holds a dot")]
    Id,
    /// `webhook-timestamp` is not whole seconds since the Unix epoch.
    #[error("the webhook-timestamp header is not a number of seconds")]
    Timestamp,
    /// The timestamp is more than [`TOLERANCE_SECS`] before now.
    #[error("the webhook is {0} s old, more than the {TOLERANCE_SECS} s allowed")]
    TooOld(u64),
    /// The timestamp is more than [`TOLERANCE_SECS`] after now.
    #[error("the webhook is dated {0} s ahead, more than the {TOLERANCE_SECS} s allowed")]
    TooNew(u64),
    /// No `v1` signature matches any of the secrets.
    #[error("no signature matches")]
    Signature,
}

/// Why a secret's text could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not base64 (after an optional `whsec_`).
    #[error("the secret is not base64 (optionally after whsec_)")]
    Encoding,
    /// Too short to be a key: under 24 bytes decoded, the scheme's own
    /// minimum. (Its libraries take shorter legacy secrets; this host does not
    /// accept them for endpoints it verifies.)
    #[error("the secret is {0} bytes, shorter than the 24 a signing key needs")]
    TooShort(usize),
    /// Longer than the scheme allows (64 bytes decoded).
    #[error("the secret is {0} bytes, longer than the 64 the scheme allows")]
    TooLong(usize),
}

/// The key in a secret's text form (`whsec_` + base64, or the base64 alone).
pub fn decode_secret(text: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = text.trim();
    let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::Encoding)?;
    match key.len() {
        n if n < 24 => Err(SecretError::TooShort(n)),
        n if n > 64 => Err(SecretError::TooLong(n)),
        _ => Ok(key),
    }
}

/// The headers of a webhook, as received.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    /// `webhook-id`: the message's id, the same on every retry.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`: seconds since the Unix epoch.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`: space-separated `v1,<base64>` entries.
    pub signature: Option<&'a str>,
}

/// Verify a webhook's `body` (the raw bytes) and `headers` against `keys`
/// (any one may match: rotation) at `now_secs`; its id when it is genuine.
pub fn verify<'a>(
    keys: &[Vec<u8>],
    headers: Headers<'a>,
    body: &[u8],
    now_secs: u64,
) -> Result<&'a str, Refusal> {
    let present = |value: Option<&'a str>, name| {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(Refusal::Missing(name))
    };
    let id = present(headers.id, "webhook-id")?;
    let timestamp_text = present(headers.timestamp, "webhook-timestamp")?;
    let signatures = present(headers.signature, "webhook-signature")?;
    if id.len() > MAX_ID_BYTES || id.contains('.') {
        return Err(Refusal::Id);
    }
    if !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Timestamp);
    }
    let timestamp: u64 = timestamp_text.parse().map_err(|_| Refusal::Timestamp)?;
    if now_secs > timestamp && now_secs - timestamp > TOLERANCE_SECS {
        return Err(Refusal::TooOld(now_secs - timestamp));
    }
    if timestamp > now_secs && timestamp - now_secs > TOLERANCE_SECS {
        return Err(Refusal::TooNew(timestamp - now_secs));
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .take(MAX_SIGNATURES)
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    for key in keys {
        let expected = mac(key, id, timestamp_text, body);
        // `verify_slice` compares in constant time.
        if candidates
            .iter()
            .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
        {
            return Ok(id);
        }
    }
    Err(Refusal::Signature)
}

/// The `webhook-signature` entry for a message: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = mac(key, id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hash an HMAC is built on, for vendors' own schemes (`verify-hmac`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA1: still used by some vendors (Twilio).
    Sha1,
    /// HMAC-SHA256: most vendors (Zendesk, Stripe, Standard Webhooks).
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// Whether `signature` is the HMAC of `message` keyed with `key`, compared
/// in constant time (a wrong length is simply no match).
pub fn hmac_matches(
    algorithm: HmacAlgorithm,
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    fn check<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        // HMAC takes a key of any length.
        let mut mac = <M as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(message);
        mac.verify_slice(signature).is_ok()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => check::<Hmac<sha1::Sha1>>(key, message, signature),
        HmacAlgorithm::Sha256 => check::<Hmac<Sha256>>(key, message, signature),
        HmacAlgorithm::Sha512 => check::<Hmac<sha2::Sha512>>(key, message, signature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn hmac_checks_match_the_rfc_vectors_and_nothing_else() {
        // RFC 2202 and RFC 4231, test case 2.
        let (key, message) = (
            b"Jefe".as_slice(),
            b"what do ya want for nothing?".as_slice(),
        );
        let cases = [
            (
                HmacAlgorithm::Sha1,
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                HmacAlgorithm::Sha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                HmacAlgorithm::Sha512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
        ];
        for (algorithm, expected) in cases {
            let tag = hex(expected);
            assert!(hmac_matches(algorithm, key, message, &tag), "{algorithm:?}");
            assert!(
                !hmac_matches(algorithm, b"Jeff", message, &tag),
                "{algorithm:?} other key"
            );
            assert!(!hmac_matches(
                algorithm,
                key,
                b"what do ya want for nothing!",
                &tag
            ));
            assert!(
                !hmac_matches(algorithm, key, message, &tag[..tag.len() - 1]),
                "truncated"
            );
            assert!(!hmac_matches(algorithm, key, message, &[]), "empty");
        }
    }

    // The specification's published example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(signature: &'static str) -> Headers<'static> {
        Headers {
            id: Some(ID),
            timestamp: Some("1614265330"),
            signature: Some(signature),
        }
    }

    fn key() -> Vec<u8> {
        decode_secret(SECRET).expect("secret")
    }

    #[test]
    fn the_specifications_test_vector_signs_and_verifies() {
        assert_eq!(sign(&key(), ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(
            verify(&[key()], headers(SIGNATURE), BODY, TIMESTAMP),
            Ok(ID)
        );
        // The secret without its prefix is the same key.
        let bare = decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("bare");
        assert_eq!(bare, key());
    }

    #[test]
    fn a_tampered_or_reserialised_body_is_refused() {
        for body in [
            br#"{"test": 2432232315}"#.as_slice(),
            br#"{"test":2432232314}"#,
            br#"{ "test": 2432232314 }"#,
            b"",
        ] {
            assert_eq!(
                verify(&[key()], headers(SIGNATURE), body, TIMESTAMP),
                Err(Refusal::Signature),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Another id or timestamp under the same signature.
        let mut other = headers(SIGNATURE);
        other.id = Some("msg_other");
        assert_eq!(
            verify(&[key()], other, BODY, TIMESTAMP),
            Err(Refusal::Signature)
        );
        let mut later = headers(SIGNATURE);
        later.timestamp = Some("1614265331");
        assert_eq!(
            verify(&[key()], later, BODY, TIMESTAMP),
            Err(Refusal::Signature)
        );
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        let at = |offset: i64| TIMESTAMP.checked_add_signed(offset).expect("time");
        assert_eq!(verify(&[key()], headers(SIGNATURE), BODY, at(299)), Ok(ID));
        assert_eq!(verify(&[key()], headers(SIGNATURE), BODY, at(-299)), Ok(ID));
        assert_eq!(verify(&[key()], headers(SIGNATURE), BODY, at(300)), Ok(ID));
        assert_eq!(verify(&[key()], headers(SIGNATURE), BODY, at(-300)), Ok(ID));
        assert_eq!(
            verify(&[key()], headers(SIGNATURE), BODY, at(301)),
            Err(Refusal::TooOld(301))
        );
        // Now is 301 s before the webhook's time: dated ahead.
        assert_eq!(
            verify(&[key()], headers(SIGNATURE), BODY, at(-301)),
            Err(Refusal::TooNew(301))
        );
    }

    #[test]
    fn one_good_signature_in_a_rotation_list_is_enough_and_any_key_may_match() {
        let other = decode_secret("whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==").expect("other");
        let list = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1a,xyz {SIGNATURE}");
        let list: &'static str = Box::leak(list.into_boxed_str());
        assert_eq!(verify(&[key()], headers(list), BODY, TIMESTAMP), Ok(ID));
        // The endpoint's old and new keys: either verifies.
        assert_eq!(
            verify(&[other.clone(), key()], headers(SIGNATURE), BODY, TIMESTAMP),
            Ok(ID)
        );
        assert_eq!(
            verify(&[other], headers(SIGNATURE), BODY, TIMESTAMP),
            Err(Refusal::Signature)
        );
        // Only v1 entries count; garbage is not a match.
        for bad in [
            "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,not base64",
            "v1,",
        ] {
            assert_eq!(
                verify(&[key()], headers(bad), BODY, TIMESTAMP),
                Err(Refusal::Signature),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&[], headers(SIGNATURE), BODY, TIMESTAMP),
            Err(Refusal::Signature)
        );
        // Other schemes' entries do not use up the signatures read; past
        // the sixteenth v1 entry, none is read.
        let noisy = format!("{} {SIGNATURE}", "v1a,x ".repeat(40));
        let noisy: &'static str = Box::leak(noisy.into_boxed_str());
        assert_eq!(verify(&[key()], headers(noisy), BODY, TIMESTAMP), Ok(ID));
        let late = format!("{} {SIGNATURE}", "v1,AAAA ".repeat(MAX_SIGNATURES));
        let late: &'static str = Box::leak(late.into_boxed_str());
        assert_eq!(
            verify(&[key()], headers(late), BODY, TIMESTAMP),
            Err(Refusal::Signature)
        );
    }

    #[test]
    fn each_missing_or_malformed_header_is_named() {
        for (name, edit) in [
            ("webhook-id", 0),
            ("webhook-timestamp", 1),
            ("webhook-signature", 2),
        ] {
            for value in [None, Some(""), Some("  ")] {
                let mut h = headers(SIGNATURE);
                match edit {
                    0 => h.id = value,
                    1 => h.timestamp = value,
                    _ => h.signature = value,
                }
                assert_eq!(
                    verify(&[key()], h, BODY, TIMESTAMP),
                    Err(Refusal::Missing(name))
                );
            }
        }
        for bad in [
            "-5",
            "1614265330.5",
            "1e9",
            "99999999999999999999999",
            "abc",
        ] {
            let mut h = headers(SIGNATURE);
            h.timestamp = Some(bad);
            assert_eq!(
                verify(&[key()], h, BODY, TIMESTAMP),
                Err(Refusal::Timestamp),
                "{bad}"
            );
        }
        let long: &'static str = Box::leak("m".repeat(MAX_ID_BYTES + 1).into_boxed_str());
        for id in [long, "msg.1"] {
            let mut h = headers(SIGNATURE);
            h.id = Some(id);
            assert_eq!(
                verify(&[key()], h, BODY, TIMESTAMP),
                Err(Refusal::Id),
                "{id}"
            );
        }
    }

    #[test]
    fn secrets_are_checked() {
        assert_eq!(
            decode_secret("whsec_not base64!"),
            Err(SecretError::Encoding)
        );
        assert_eq!(
            decode_secret("whsec_c2hvcnQ="),
            Err(SecretError::TooShort(5))
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(decode_secret(&long), Err(SecretError::TooLong(65)));
        assert_eq!(decode_secret(SECRET).map(|k| k.len()), Ok(24));
    }
}
