//! Workspace API tokens. A token is shown once, when it is issued; the host
//! keeps only its SHA-256 digest, so a copy of the database grants nothing.
//! Tokens are 256 random bits, so an unsalted digest is enough.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Every workspace token starts with this, so a leaked one is easy to spot
/// (secret scanners) and the host can tell it from the operator token.
pub const TOKEN_PREFIX: &str = "pbw_";

/// Longest label a token may carry.
pub const MAX_LABEL_CHARS: usize = 100;

/// A token as stored and listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceToken {
    /// Its id (`tok_` and 16 hex digits), which names it in lists and
    /// revocations; unique in its workspace.
    pub id: String,
    /// The id of the workspace it opens.
    pub workspace: String,
    /// What the tenant calls it ("contact-center prod").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When it was issued, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// What its holder may see of a caller-context lookup; tokens issued
    /// before profiles existed are `basic`.
    #[serde(default)]
    pub profile: patchbay_policy::lookup::Profile,
}

/// A token's digest, the only form the host keeps.
pub type TokenDigest = [u8; 32];

/// The SHA-256 digest of `token`, by which it is stored and found.
pub fn digest(token: &str) -> TokenDigest {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A fresh token and its id (the id names it in lists and revocations).
pub fn generate() -> Result<(String, secrecy::SecretString), getrandom::Error> {
    use base64::Engine as _;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    zeroize::Zeroize::zeroize(&mut secret);
    Ok((format!("tok_{}", hex::encode(id)), token.into()))
}

/// Why a label is refused, if it is.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
        return Err(format!("a label is 1-{MAX_LABEL_CHARS} characters"));
    }
    if label.chars().any(char::is_control) {
        return Err("a label holds no control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn generated_tokens_are_prefixed_unique_and_long() {
        let (id_a, a) = generate().expect("random");
        let (id_b, b) = generate().expect("random");
        assert_ne!(id_a, id_b);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with(TOKEN_PREFIX));
        // 32 bytes of base64url without padding.
        assert_eq!(a.expose_secret().len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(digest(a.expose_secret()), digest(b.expose_secret()));
    }

    #[test]
    fn labels_are_short_printable_text() {
        assert!(check_label("contact-center prod").is_ok());
        assert!(check_label("").is_err());
        assert!(check_label(&"x".repeat(MAX_LABEL_CHARS + 1)).is_err());
        assert!(check_label("a\nb").is_err());
    }
}
