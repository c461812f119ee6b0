//! Replace secret values with `[REDACTED]` in text the host passes on: upstream
//! responses to a request that carried a credential (an upstream may echo a
//! header back), and error messages.
//!
//! An echo may re-encode a secret, and encoders differ in which characters
//! they escape (JSON libraries escape `/`, `+` or `<` or not; URL encoders
//! each keep their own safe set). So matching runs on a decoded view of the
//! text: JSON escapes (`\/`, `\u002B`…), percent escapes and HTML numeric
//! references are decoded, whatever mix of them is used, and a match is
//! mapped back to the bytes it came from, which are replaced. The secret is
//! looked for in that view as itself, as hex, and as base64 or base64url at
//! any alignment inside a longer base64 text. Content codings are decoded
//! by the host before scrubbing, and partial content is refused for such
//! requests (see `egress`).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use std::sync::Arc;

/// What each secret value found is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Secrets shorter than this are not scrubbed: they would redact ordinary
/// text, and no credential the host accepts is that short.
const MIN_SECRET: usize = 4;

/// The longest escape one decoded byte can come from (`\u00XX`, `&#x00XX;`).
const LONGEST_ESCAPE: usize = 8;

/// Scrubs a set of secret strings from a body arriving in chunks. A secret
/// split across two chunks is still caught: the tail of each chunk that could
/// begin a secret is held back until the next chunk (or the end) decides it.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Every form of every secret, matched leftmost-longest in one pass.
    matcher: Option<Arc<AhoCorasick>>,
    /// The matcher could not be built: nothing may pass.
    broken: bool,
    /// Bytes of raw text the longest form can span.
    span: usize,
    held: Vec<u8>,
}

impl Scrubber {
    /// A scrubber looking for each of `secrets` in every form listed in the
    /// module docs; secrets under 4 bytes are skipped. If its matcher cannot
    /// be built it is [broken](Self::is_broken) and passes nothing on.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET)
            .flat_map(|s| forms(s.as_bytes()))
            .filter(|n| n.len() >= MIN_SECRET)
            .collect();
        needles.sort();
        needles.dedup();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        if needles.is_empty() {
            return Self::default();
        }
        // A contiguous NFA: its size grows with the needles' total length,
        // where a DFA's could grow by hundreds of bytes per needle byte.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(&needles);
        match matcher {
            Ok(matcher) => Self {
                matcher: Some(Arc::new(matcher)),
                broken: false,
                span: longest * LONGEST_ESCAPE,
                held: Vec::new(),
            },
            Err(error) => {
                tracing::error!(target: "patchbay::credentials", %error,
                    "could not build the scrubber: withholding what it guards");
                Self {
                    matcher: None,
                    broken: true,
                    span: 0,
                    held: Vec::new(),
                }
            }
        }
    }

    /// Whether it has nothing to look for (no secret long enough), so text
    /// passes through unchanged.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none() && !self.broken
    }

    /// Whether it could not be built; what it guards must not be passed on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The next chunk, scrubbed, minus a tail that may begin a secret.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.broken {
            return Bytes::new();
        }
        if self.matcher.is_none() {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        let safe = self.held.len().saturating_sub(self.span);
        self.drain(safe)
    }

    /// Whatever was held back, scrubbed.
    pub fn finish(&mut self) -> Bytes {
        if self.broken {
            return Bytes::from_static(REDACTED);
        }
        let all = self.held.len();
        self.drain(all)
    }

    /// Scrub one complete text.
    pub fn scrub_str(&self, text: &str) -> String {
        let mut copy = Self {
            matcher: self.matcher.clone(),
            broken: self.broken,
            span: self.span,
            held: Vec::new(),
        };
        let mut out = copy.feed(text.as_bytes()).to_vec();
        out.extend_from_slice(&copy.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Emit scrubbed output for every match that starts before `upto`; keep
    /// the rest. A match starting before `upto` is whole: at least `span`
    /// raw bytes follow `upto` unless this is the end.
    fn drain(&mut self, upto: usize) -> Bytes {
        let buf = std::mem::take(&mut self.held);
        let Some(matcher) = &self.matcher else {
            return Bytes::from(buf);
        };
        // Matches in the text as it is and in its decoded view: decoding can
        // also hide a secret (`%ab` read as one escape in `%abcdef`).
        // Text with no byte that can start an escape is its own decoded view.
        let view = buf
            .iter()
            .any(|b| matches!(b, b'%' | b'\\' | b'&'))
            .then(|| Decoded::of(&buf));
        let decoded = view.iter().flat_map(|view| {
            matcher
                .find_iter(&view.bytes)
                .map(|m| view.raw_range(m.start(), m.end()))
        });
        let mut ranges: Vec<(usize, usize)> = matcher
            .find_iter(&buf)
            .map(|m| (m.start(), m.end()))
            .chain(decoded)
            .filter(|(start, _)| *start < upto)
            .collect();
        ranges.sort_unstable();
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        for (start, end) in ranges {
            if end <= i {
                continue;
            }
            if start >= i {
                out.extend_from_slice(&buf[i..start]);
                out.extend_from_slice(REDACTED);
            }
            // Overlapping matches are one redaction.
            i = end;
        }
        if i < upto {
            out.extend_from_slice(&buf[i..upto]);
            i = upto;
        }
        self.held = buf[i.min(buf.len())..].to_vec();
        Bytes::from(out)
    }
}

/// Scrubbers built once per set of secrets and shared: building the matcher
/// (every form of every secret, in one automaton) costs far more than a
/// request, and a connection sends the same credential on every call.
///
/// Keyed by a digest of the secrets, so the cache holds no secret beyond
/// the matchers themselves; cleared whenever a stored credential changes,
/// and when it reaches [`MAX_MATCHERS`] sets (rotated OAuth2 access tokens
/// each make a new set).
#[derive(Debug, Default)]
pub struct Matchers {
    built: std::sync::Mutex<std::collections::HashMap<[u8; 32], Scrubber>>,
}

/// Sets of secrets whose matchers are kept at once.
pub const MAX_MATCHERS: usize = 4096;

impl Matchers {
    /// A scrubber for `secrets` (in any order), built at most once while
    /// they stay the same. A matcher that could not be built is not kept.
    pub fn scrubber(&self, mut secrets: Vec<String>) -> Scrubber {
        use sha2::Digest as _;
        secrets.sort_unstable();
        secrets.dedup();
        let mut digest = sha2::Sha256::new();
        for secret in &secrets {
            digest.update((secret.len() as u64).to_le_bytes());
            digest.update(secret.as_bytes());
        }
        let key: [u8; 32] = digest.finalize().into();
        if let Some(kept) = self.lock().get(&key) {
            return kept.clone();
        }
        let built = Scrubber::new(secrets);
        if !built.is_broken() {
            let mut kept = self.lock();
            if kept.len() >= MAX_MATCHERS {
                kept.clear();
            }
            kept.insert(key, built.clone());
        }
        built
    }

    /// Forget every matcher (a stored secret changed or was removed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many sets of secrets have a matcher kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no matcher is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Scrubber>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Text with its escapes decoded, and where each decoded byte came from.
struct Decoded {
    bytes: Vec<u8>,
    /// `origin[k]` is the raw offset of the escape that gave `bytes[k]`;
    /// one more entry holds the raw length.
    origin: Vec<usize>,
}

impl Decoded {
    fn of(raw: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(raw.len());
        let mut origin = Vec::with_capacity(raw.len() + 1);
        let mut i = 0;
        while i < raw.len() {
            let (decoded, used) = decode_one(&raw[i..]);
            let mut utf8 = [0u8; 4];
            let encoded: &[u8] = match decoded {
                Decode::Byte(b) => {
                    utf8[0] = b;
                    &utf8[..1]
                }
                Decode::Char(c) => c.encode_utf8(&mut utf8).as_bytes(),
            };
            for &b in encoded {
                bytes.push(b);
                origin.push(i);
            }
            i += used;
        }
        origin.push(raw.len());
        Self { bytes, origin }
    }

    /// The raw bytes that decoded bytes `start..end` came from.
    fn raw_range(&self, start: usize, end: usize) -> (usize, usize) {
        let raw_start = self.origin[start];
        // The end is where the escape after the last matched byte begins.
        let mut k = end;
        while k < self.origin.len() - 1 && self.origin[k] == self.origin[end - 1] {
            k += 1;
        }
        (raw_start, self.origin[k])
    }
}

enum Decode {
    Byte(u8),
    Char(char),
}

/// The first byte or character of `raw`, decoding one escape, and how many
/// raw bytes it took.
fn decode_one(raw: &[u8]) -> (Decode, usize) {
    let hex = |digits: &[u8]| -> Option<u32> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    match raw {
        [b'%', a, b, ..] => {
            if let Some(v) = hex(&[*a, *b]) {
                return (Decode::Byte(v as u8), 3);
            }
        }
        [b'\\', b'u', rest @ ..] if rest.len() >= 4 => {
            if let Some(c) = hex(&rest[..4]).and_then(char::from_u32) {
                return (Decode::Char(c), 6);
            }
        }
        [b'\\', c @ (b'/' | b'\\' | b'"' | b'\''), ..] => return (Decode::Byte(*c), 2),
        [b'&', b'#', rest @ ..] => {
            let (digits, radix_hex) = match rest {
                [b'x' | b'X', tail @ ..] => (tail, true),
                tail => (tail, false),
            };
            let len = digits
                .iter()
                .take(6)
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            if digits.get(len) == Some(&b';') {
                let text = std::str::from_utf8(&digits[..len]).unwrap_or("");
                let value = if radix_hex {
                    u32::from_str_radix(text, 16).ok()
                } else {
                    text.parse().ok()
                };
                if let Some(c) = value.and_then(char::from_u32) {
                    return (Decode::Char(c), 2 + usize::from(radix_hex) + len + 1);
                }
            }
        }
        _ => {}
    }
    (Decode::Byte(raw[0]), 1)
}

/// The forms a reflected `secret` is looked for in, in decoded text.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    // A form encoder's space.
    if secret.contains(&b' ') {
        out.push(
            secret
                .iter()
                .map(|&b| if b == b' ' { b'+' } else { b })
                .collect(),
        );
    }
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
    fn a_set_of_secrets_gets_one_matcher_whatever_the_order() {
        let matchers = Matchers::default();
        let a = matchers.scrubber(vec!["first-secret".into(), "second-secret".into()]);
        let b = matchers.scrubber(vec!["second-secret".into(), "first-secret".into()]);
        let same = |x: &Scrubber, y: &Scrubber| match (&x.matcher, &y.matcher) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        assert!(same(&a, &b), "built once");
        assert_eq!(matchers.len(), 1);
        let other = matchers.scrubber(vec!["first-secret".into()]);
        assert!(!same(&a, &other), "another set gets its own matcher");
        assert_eq!(matchers.len(), 2);
        // A shared matcher scrubs each body on its own.
        for mut scrubber in [a, b, other] {
            assert_eq!(
                streamed(&mut scrubber, &["x first-sec", "ret y"]),
                "x [REDACTED] y"
            );
        }
        matchers.clear();
        assert!(matchers.is_empty());
    }

    #[test]
    fn the_matcher_cache_is_bounded() {
        let matchers = Matchers::default();
        for i in 0..MAX_MATCHERS {
            matchers.scrubber(vec![format!("secret-{i}")]);
        }
        assert_eq!(matchers.len(), MAX_MATCHERS);
        let mut next = matchers.scrubber(vec!["one-more-secret".into()]);
        assert_eq!(matchers.len(), 1, "full: cleared, then the new set kept");
        assert_eq!(streamed(&mut next, &["one-more-secret"]), "[REDACTED]");
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
            // Encoders escaping only some characters, in any mix.
            "s3/cr\\u002Bet=v~al ue".to_owned(),
            "s3\\/cr%2bet&#61;v&#x7E;al%20ue".to_owned(),
            "s3%2Fcr+et=v~al%20ue".replace("+et", "%2Bet"),
            // base64 that is itself escaped on the way out.
            STANDARD
                .encode(secret)
                .replace('/', "\\/")
                .replace('+', "\\u002b"),
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
    fn escapes_that_are_not_well_formed_are_text() {
        let scrubber = Scrubber::new(["abcdef".to_owned()]);
        for text in [
            "%",
            "%4",
            "%zz",
            "\\u12",
            "\\uZZZZ",
            "&#;",
            "&#x;",
            "&#99999999;",
            "\\",
        ] {
            assert_eq!(scrubber.scrub_str(text), text);
            assert_eq!(
                scrubber.scrub_str(&format!("{text}abcdef")),
                format!("{text}[REDACTED]")
            );
        }
    }

    #[test]
    fn an_encoded_secret_split_across_chunks_is_caught() {
        let mut scrubber = Scrubber::new(["tok/en+1234".to_owned()]);
        let encoded = "tok%2Fen%2B1234";
        let (a, b) = encoded.split_at(6);
        assert_eq!(streamed(&mut scrubber, &["x=", a, b, ";"]), "x=[REDACTED];");
    }
}
