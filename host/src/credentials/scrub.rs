//! Replace secret values with `[REDACTED]` in text the host passes on: upstream
//! responses to a request that carried a credential (an upstream may echo a
//! header back), and error messages.

use bytes::Bytes;

pub const REDACTED: &[u8] = b"[REDACTED]";

/// Scrubs a set of secret strings from a body arriving in chunks. A secret
/// split across two chunks is still caught: the tail of each chunk that could
/// begin a secret is held back until the next chunk (or the end) decides it.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    needles: Vec<Vec<u8>>,
    longest: usize,
    held: Vec<u8>,
}

impl Scrubber {
    /// Secrets shorter than 4 bytes are not scrubbed: they would redact
    /// ordinary text, and no credential the host accepts is that short.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= 4)
            .map(String::into_bytes)
            .collect();
        // Longest first, so a secret containing another is redacted whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        let longest = needles.first().map_or(0, Vec::len);
        Self {
            needles,
            longest,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The next chunk, scrubbed, minus a tail that may begin a secret.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.needles.is_empty() {
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
            needles: self.needles.clone(),
            longest: self.longest,
            held: Vec::new(),
        };
        let mut out = copy.feed(text.as_bytes()).to_vec();
        out.extend_from_slice(&copy.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Emit scrubbed output for every match that starts before `upto`; keep the rest.
    fn drain(&mut self, upto: usize) -> Bytes {
        let buf = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < upto {
            match self.needles.iter().find(|n| buf[i..].starts_with(n)) {
                Some(needle) => {
                    out.extend_from_slice(REDACTED);
                    i += needle.len();
                }
                None => {
                    out.push(buf[i]);
                    i += 1;
                }
            }
        }
        self.held = buf[i.min(buf.len())..].to_vec();
        Bytes::from(out)
    }
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
}
