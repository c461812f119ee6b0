//! Replace secret values with `[REDACTED]` in text the host passes on: upstream
//! responses to a request that carried a credential (an upstream may echo a
//! header back), and error messages.
//!
//! A reflected secret is caught in the forms an upstream commonly re-encodes
//! it in, not only byte for byte: percent-encoded (either hex case, `+` or
//! `%20` for a space), JSON-escaped (with `\/`, or with `\u00XX` escapes),
//! hex, and base64 (standard and URL-safe, at any alignment inside a longer
//! base64 text). Content codings are decoded by the host before scrubbing, and
//! partial content is refused for such requests (see `egress`).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use std::sync::Arc;

pub const REDACTED: &[u8] = b"[REDACTED]";

/// Secrets shorter than this are not scrubbed: they would redact ordinary
/// text, and no credential the host accepts is that short.
const MIN_SECRET: usize = 4;

/// Scrubs a set of secret strings from a body arriving in chunks. A secret
/// split across two chunks is still caught: the tail of each chunk that could
/// begin a secret is held back until the next chunk (or the end) decides it.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Every form of every secret, matched leftmost-longest in one pass.
    matcher: Option<Arc<AhoCorasick>>,
    longest: usize,
    held: Vec<u8>,
}

impl Scrubber {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET)
            .flat_map(|s| encodings(s.as_bytes()))
            .filter(|n| n.len() >= MIN_SECRET)
            .collect();
        needles.sort();
        needles.dedup();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = (!needles.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&needles)
                    .ok()
            })
            .flatten()
            .map(Arc::new);
        Self {
            matcher,
            longest,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The next chunk, scrubbed, minus a tail that may begin a secret.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.matcher.is_none() {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        let safe = self.held.len().saturating_sub(self.longest - 1);
        self.drain(safe)
    }

    /// Whatever was held back, scrubbed.
    pub fn finish(&mut self) -> Bytes {
        let all = self.held.len();
        self.drain(all)
    }

    /// Scrub one complete text.
    pub fn scrub_str(&self, text: &str) -> String {
        let mut copy = Self {
            matcher: self.matcher.clone(),
            longest: self.longest,
            held: Vec::new(),
        };
        let mut out = copy.feed(text.as_bytes()).to_vec();
        out.extend_from_slice(&copy.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Emit scrubbed output for every match that starts before `upto`; keep
    /// the rest. A match starting before `upto` is whole: at least
    /// `longest - 1` bytes follow `upto` unless this is the end.
    fn drain(&mut self, upto: usize) -> Bytes {
        let buf = std::mem::take(&mut self.held);
        let Some(matcher) = &self.matcher else {
            return Bytes::from(buf);
        };
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        for found in matcher.find_iter(&buf) {
            if found.start() >= upto {
                break;
            }
            out.extend_from_slice(&buf[i..found.start()]);
            out.extend_from_slice(REDACTED);
            i = found.end();
        }
        if i < upto {
            out.extend_from_slice(&buf[i..upto]);
            i = upto;
        }
        self.held = buf[i.min(buf.len())..].to_vec();
        Bytes::from(out)
    }
}

/// The forms a reflected `secret` commonly takes.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(secret);
    let mut out = vec![secret.to_vec()];
    // Percent-encoding, with the characters each common encoder leaves
    // alone (forms, RFC 3986, JavaScript, Python), in either hex case.
    for (safe, space) in PERCENT_STYLES {
        for upper in [true, false] {
            out.push(percent_encode(secret, safe, space, upper).into_bytes());
        }
    }
    // JSON string contents, as serde writes them, with `/` escaped (PHP), and
    // with every non-alphanumeric character as `\u00XX` (HTML-safe encoders).
    let json = serde_json::to_string(&text).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    out.push(json.replace('/', "\\/").into_bytes());
    for upper in [false, true] {
        let escaped: String = text
            .chars()
            .map(|c| match (c.is_ascii_alphanumeric(), upper) {
                (true, _) => c.to_string(),
                (false, false) => format!("\\u{:04x}", c as u32),
                (false, true) => format!("\\u{:04X}", c as u32),
            })
            .collect();
        out.push(escaped.into_bytes());
    }
    out.push(json.into_bytes());
    // Hex, either case.
    out.push(hex::encode(secret).into_bytes());
    out.push(hex::encode_upper(secret).into_bytes());
    // Base64 at each of the three alignments inside a longer text: only the
    // characters that depend on the secret's bytes alone.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for skip in 0..3usize {
            let mut padded = vec![0u8; skip];
            padded.extend_from_slice(secret);
            let encoded = engine.encode(&padded);
            // Characters covering only the leading pad, or mixing it in, go;
            // so do the last ones, which depend on what follows the secret.
            let first = if skip == 0 { 0 } else { (skip * 8).div_ceil(6) };
            let last = (padded.len() * 8) / 6;
            if last > first {
                out.push(encoded.as_bytes()[first..last].to_vec());
            }
        }
    }
    out
}

/// Characters left unescaped besides ASCII letters and digits, and what a
/// space becomes: `application/x-www-form-urlencoded`, RFC 3986 unreserved,
/// JavaScript's `encodeURIComponent`, Python's `quote`, and escape-everything.
const PERCENT_STYLES: [(&[u8], &str); 5] = [
    (b"*-._", "+"),
    (b"-._~", "%20"),
    (b"-_.!~*'()", "%20"),
    (b"_.-~/", "%20"),
    (b"", "%20"),
];

fn percent_encode(secret: &[u8], safe: &[u8], space: &str, upper: bool) -> String {
    let mut out = String::with_capacity(secret.len() * 3);
    for &b in secret {
        if b.is_ascii_alphanumeric() || safe.contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push_str(space);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(scrubber: &mut Scrubber, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&scrubber.feed(chunk.as_bytes()));
        }
        out.extend_from_slice(&scrubber.finish());
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn redacts_secrets_whole_or_split_across_chunks() {
        let cases: &[(&[&str], &str)] = &[
            (&["token=s3cr3t-value;"], "token=[REDACTED];"),
            (&["token=s3c", "r3t-va", "lue;"], "token=[REDACTED];"),
            (&["s3cr3t-value"], "[REDACTED]"),
            (
                &["s", "3", "cr3t-value", "s3cr3t-value"],
                "[REDACTED][REDACTED]",
            ),
            (&["nothing secret here"], "nothing secret here"),
            (&["s3cr3t-valu"], "s3cr3t-valu"),
            (&[""], ""),
        ];
        for (chunks, expected) in cases {
            let mut scrubber = Scrubber::new(["s3cr3t-value".to_owned()]);
            assert_eq!(streamed(&mut scrubber, chunks), *expected, "{chunks:?}");
        }
    }

    #[test]
    fn the_longest_secret_wins_when_one_contains_another() {
        let scrubber = Scrubber::new(["abcd".to_owned(), "abcdefgh".to_owned()]);
        assert_eq!(
            scrubber.scrub_str("xabcdefghx abcdx"),
            "x[REDACTED]x [REDACTED]x"
        );
    }

    #[test]
    fn very_short_values_are_not_treated_as_secrets() {
        let scrubber = Scrubber::new(["ab".to_owned()]);
        assert!(scrubber.is_empty());
        assert_eq!(scrubber.scrub_str("abab"), "abab");
    }

    #[test]
    fn redacts_the_common_re_encodings_of_a_secret() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let secret = "s3/cr+et=v~al ue";
        let scrubber = Scrubber::new([secret.to_owned()]);
        let json = serde_json::to_string(secret).expect("json");
        let mut cases: Vec<String> = vec![
            secret.to_owned(),
            json.trim_matches('"').replace('/', "\\/"),
            "s3\\u002fcr\\u002bet\\u003dv\\u007eal\\u0020ue".to_owned(),
            "s3\\u002Fcr\\u002Bet\\u003Dv\\u007Eal\\u0020ue".to_owned(),
            "s3%2Fcr%2Bet%3Dv%7Eal%20ue".to_owned(),
            "s3%2fcr%2bet%3dv%7eal%20ue".to_owned(),
            "s3%2Fcr%2Bet%3Dv%7Eal+ue".to_owned(),
            hex::encode(secret),
            hex::encode_upper(secret),
            STANDARD.encode(secret),
            URL_SAFE.encode(secret),
        ];
        // Inside a longer base64 text, at every alignment.
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            cases.push(STANDARD.encode(format!("{prefix}{secret}, and more")));
            cases.push(URL_SAFE.encode(format!("{prefix}{secret}!")));
        }
        for case in cases {
            let scrubbed = scrubber.scrub_str(&format!("before {case} after"));
            assert!(scrubbed.contains("[REDACTED]"), "{case}: {scrubbed}");
            // What is left of the secret's encoding is at most a few
            // characters at either edge: never a run that decodes to it.
            assert!(scrubbed.len() < case.len() + 20, "{case}: {scrubbed}");
        }
        // Ordinary text around is kept.
        assert_eq!(
            scrubber.scrub_str("nothing to see here"),
            "nothing to see here"
        );
    }

    #[test]
    fn an_encoded_secret_split_across_chunks_is_caught() {
        let mut scrubber = Scrubber::new(["tok/en+1234".to_owned()]);
        let encoded = "tok%2Fen%2B1234";
        let (a, b) = encoded.split_at(6);
        assert_eq!(streamed(&mut scrubber, &["x=", a, b, ";"]), "x=[REDACTED];");
    }
}
