//! Signed plugin packages: what a signature says, how it is checked, and
//! which packages operator policy admits.
//!
//! A package is `plugin.toml` and `plugin.wasm`; its publisher signs it by
//! writing `plugin.sig` beside them: the plugin's id and version, the
//! publisher's name and ed25519 public key, the SHA-256 of both files, and an
//! ed25519 signature over all of that. Checking a signature needs nothing but
//! the package (integrity); admitting a package is the operator's decision
//! (trust): a signature by a key the operator trusts under that publisher
//! name, or any package at all where the operator allows unsigned ones.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// The file in a package directory that holds its signature.
pub const SIGNATURE_FILE: &str = "plugin.sig";

/// The `format` of a signature this host writes and reads.
pub const SIGNATURE_FORMAT: &str = "patchbay-package-signature/1";

/// The longest publisher name.
pub const MAX_PUBLISHER_LEN: usize = 100;

/// An ed25519 public key, written `ed25519:` and its 32 bytes in base64.
/// Only valid keys (points on the curve) are made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    const PREFIX: &'static str = "ed25519:";

    fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected \"ed25519:\" and the key's 32 bytes in base64";
        let Some(encoded) = text.trim().strip_prefix(Self::PREFIX) else {
            return Err(format!("not an ed25519 public key ({EXPECTED})"));
        };
        let bytes: [u8; 32] = BASE64
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("not an ed25519 public key ({EXPECTED})"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(|_| Self(bytes))
            .map_err(|_| "not a valid ed25519 public key (not a point on the curve)".to_owned())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PublicKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "an ed25519 public key: `ed25519:` and 32 bytes in base64",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PublicKey {}

/// A publisher's private signing key. Never printed: `Debug` shows only the
/// public half.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key whose 32-byte seed is `seed` (from a system random source).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key in a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), as
    /// [`to_pem`](Self::to_pem) and `openssl genpkey -algorithm ed25519` write it.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| format!("not an ed25519 private key in PKCS#8 PEM: {e}"))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, String> {
        self.0
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| format!("encoding the key: {e}"))
    }

    /// The public half, for operators to trust.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key())
    }
}

/// The SHA-256 of a package's two files, and the digest that names the
/// package as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksums {
    /// SHA-256 of `plugin.toml`.
    pub manifest: [u8; 32],
    /// SHA-256 of `plugin.wasm`.
    pub component: [u8; 32],
}

impl Checksums {
    /// The checksums of a package's manifest text and component bytes.
    pub fn of(manifest_text: &str, wasm: &[u8]) -> Self {
        Self {
            manifest: Sha256::digest(manifest_text.as_bytes()).into(),
            component: Sha256::digest(wasm).into(),
        }
    }

    /// The package's digest, `sha256:` and 64 hex digits: the SHA-256 of
    /// both files' checksums, so one value names exactly this manifest with
    /// exactly this component.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"patchbay-package/1\n");
        hash.update(hex(&self.manifest));
        hash.update(b"\n");
        hash.update(hex(&self.component));
        hash.update(b"\n");
        format!("sha256:{}", hex(&hash.finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who signed a package: the name the signature gives and the key that
/// made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Publisher {
    /// The publisher's name as the signature gives it.
    pub name: String,
    /// The key that made the signature.
    pub key: PublicKey,
}

/// `plugin.sig`: a publisher's signature of one package, as TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The signed plugin's id.
    pub plugin: String,
    /// The signed plugin's version.
    pub version: String,
    /// Who signs.
    pub publisher: String,
    /// The public half of the signing key.
    pub key: PublicKey,
    /// SHA-256 of `plugin.toml`, hex.
    pub manifest_sha256: String,
    /// SHA-256 of `plugin.wasm`, hex.
    pub component_sha256: String,
    /// The ed25519 signature of all of the above, base64.
    pub signature: String,
}

/// Why a signature does not hold, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `plugin.sig` is not a signature this host reads.
    #[error("plugin.sig: {0}")]
    Malformed(String),
    /// The signature is for another plugin or version than the manifest's.
    #[error(
        "plugin.sig signs {signed}, but plugin.toml is {manifest}: the signature belongs to another package"
    )]
    OtherPackage {
        /// What the signature names.
        signed: String,
        /// What the manifest declares.
        manifest: String,
    },
    /// A file changed after it was signed.
    #[error(
        "{file} does not match its signature: it was changed after {publisher:?} signed the package"
    )]
    Tampered {
        /// `plugin.toml` or `plugin.wasm`.
        file: &'static str,
        /// The publisher the signature names.
        publisher: String,
    },
    /// The signature is not the named key's signature of these contents.
    #[error("plugin.sig: the signature was not made by key {key} over this package")]
    BadSignature {
        /// The key the file names.
        key: PublicKey,
    },
    /// The publisher name cannot be signed.
    #[error("publisher name {0:?}: {1}")]
    Publisher(String, &'static str),
}

/// A publisher name: 1-100 characters, none of them control characters.
pub fn check_publisher(name: &str) -> Result<(), SignatureError> {
    let problem = if name.trim().is_empty() {
        Some("must not be blank")
    } else if name.chars().count() > MAX_PUBLISHER_LEN {
        Some("longer than 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else if name.trim() != name {
        Some("starts or ends with white space")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SignatureError::Publisher(name.to_owned(), problem)),
        None => Ok(()),
    }
}

impl Signature {
    /// `publisher`'s signature, made with `key`, of plugin `id` at `version`
    /// whose files are `manifest_text` and `wasm`.
    pub fn sign(
        key: &SecretKey,
        publisher: &str,
        (id, version): (&str, &str),
        manifest_text: &str,
        wasm: &[u8],
    ) -> Result<Self, SignatureError> {
        check_publisher(publisher)?;
        let sums = Checksums::of(manifest_text, wasm);
        let mut signature = Self {
            format: SIGNATURE_FORMAT.to_owned(),
            plugin: id.to_owned(),
            version: version.to_owned(),
            publisher: publisher.to_owned(),
            key: key.public_key(),
            manifest_sha256: hex(&sums.manifest),
            component_sha256: hex(&sums.component),
            signature: String::new(),
        };
        signature.signature = BASE64.encode(key.0.sign(&signature.statement()).to_bytes());
        Ok(signature)
    }

    /// Read `plugin.sig`'s text.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let signature: Self = toml::from_str(text)
            .map_err(|e| SignatureError::Malformed(e.to_string().trim_end().to_owned()))?;
        if signature.format != SIGNATURE_FORMAT {
            return Err(SignatureError::Malformed(format!(
                "format {:?} is not {SIGNATURE_FORMAT:?}",
                signature.format
            )));
        }
        check_publisher(&signature.publisher)?;
        Ok(signature)
    }

    /// The signature as `plugin.sig` holds it.
    pub fn to_toml(&self) -> String {
        // Only strings: serialising cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// What the key signs: every field but the signature, one per line.
    fn statement(&self) -> Vec<u8> {
        format!(
            "{}\nplugin {}\nversion {}\npublisher {}\nkey {}\nmanifest-sha256 {}\ncomponent-sha256 {}\n",
            self.format,
            self.plugin,
            self.version,
            self.publisher,
            self.key,
            self.manifest_sha256,
            self.component_sha256
        )
        .into_bytes()
    }

    /// Check that this is `publisher`'s signature of plugin `id` at
    /// `version` with exactly these files; the publisher when it is.
    pub fn verify(
        &self,
        (id, version): (&str, &str),
        manifest_text: &str,
        wasm: &[u8],
    ) -> Result<Publisher, SignatureError> {
        if self.plugin != id || self.version != version {
            return Err(SignatureError::OtherPackage {
                signed: format!("{}@{}", self.plugin, self.version),
                manifest: format!("{id}@{version}"),
            });
        }
        let sums = Checksums::of(manifest_text, wasm);
        for (file, signed, actual) in [
            ("plugin.toml", &self.manifest_sha256, &sums.manifest),
            ("plugin.wasm", &self.component_sha256, &sums.component),
        ] {
            if !signed.eq_ignore_ascii_case(&hex(actual)) {
                return Err(SignatureError::Tampered {
                    file,
                    publisher: self.publisher.clone(),
                });
            }
        }
        let bad = || SignatureError::BadSignature { key: self.key };
        let bytes: [u8; 64] = BASE64
            .decode(self.signature.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        self.key
            .verifying_key()
            .ok_or_else(bad)?
            .verify_strict(
                &self.statement(),
                &ed25519_dalek::Signature::from_bytes(&bytes),
            )
            .map_err(|_| bad())?;
        Ok(Publisher {
            name: self.publisher.clone(),
            key: self.key,
        })
    }
}

/// What is known of a package's origin: its digest, and its publisher when
/// it carries a signature that holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provenance {
    /// `sha256:` and the package's digest (see [`Checksums::digest`]).
    pub digest: String,
    /// Who signed it; `null` for an unsigned package.
    pub publisher: Option<Publisher>,
}

impl Provenance {
    /// The provenance of plugin `id` at `version` with these files and
    /// `plugin.sig` text (if any): a signature that does not hold for exactly
    /// these files is an error, never an unsigned package.
    pub fn of(
        (id, version): (&str, &str),
        manifest_text: &str,
        wasm: &[u8],
        signature: Option<&str>,
    ) -> Result<Self, SignatureError> {
        let publisher = match signature {
            Some(text) => {
                Some(Signature::parse(text)?.verify((id, version), manifest_text, wasm)?)
            }
            None => None,
        };
        Ok(Self {
            digest: Checksums::of(manifest_text, wasm).digest(),
            publisher,
        })
    }
}

/// A publisher the operator trusts: its name and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedPublisher {
    /// The name signatures by this key must give.
    pub name: String,
    /// The publisher's public key (`ed25519:…`).
    pub key: PublicKey,
}

/// Which packages the host installs: `[packages]` of operator policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackagePolicy {
    /// Install packages that carry no signature. Off by default: a package
    /// must be signed by a trusted publisher.
    pub allow_unsigned: bool,
    /// The publishers whose signed packages are installed.
    pub trusted_publishers: Vec<TrustedPublisher>,
}

/// Why operator policy refuses a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No `plugin.sig`, and unsigned packages are not allowed.
    #[error(
        "the package is not signed, and operator policy installs only packages signed by a trusted publisher (sign it with `patchbay plugin sign`, or set packages.allow_unsigned)"
    )]
    Unsigned,
    /// Signed, but not by a key the operator trusts under that name.
    #[error(
        "the package is signed by {name:?} with key {key}, which operator policy does not trust (packages.trusted_publishers)"
    )]
    Untrusted {
        /// The name the signature gives.
        name: String,
        /// The key that made it.
        key: PublicKey,
    },
}

impl PackagePolicy {
    /// Whether a package signed by `publisher` (checked already), or
    /// unsigned (`None`), may be installed. Where unsigned packages are
    /// allowed, so is one signed by a publisher nobody trusts: its signature
    /// proves no less than none.
    pub fn admit(&self, publisher: Option<&Publisher>) -> Result<(), TrustError> {
        match publisher {
            _ if self.allow_unsigned => Ok(()),
            None => Err(TrustError::Unsigned),
            Some(p) => {
                if self.trusts(p) {
                    Ok(())
                } else {
                    Err(TrustError::Untrusted {
                        name: p.name.clone(),
                        key: p.key,
                    })
                }
            }
        }
    }

    /// Whether `publisher`'s key is trusted under its name.
    pub fn trusts(&self, publisher: &Publisher) -> bool {
        self.trusted_publishers
            .iter()
            .any(|t| t.key == publisher.key && t.name == publisher.name)
    }

    /// Every entry the host cannot use, each named by its key.
    pub fn problems(&self) -> Vec<String> {
        self.trusted_publishers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                check_publisher(&t.name)
                    .err()
                    .map(|e| format!("packages.trusted_publishers[{i}].name: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "id = \"echo\"\nversion = \"1.2.3\"\n";
    const WASM: &[u8] = b"\0asm component bytes";

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn signed() -> Signature {
        Signature::sign(
            &key(1),
            "Acme Connectors",
            ("echo", "1.2.3"),
            MANIFEST,
            WASM,
        )
        .expect("sign")
    }

    #[test]
    fn a_signature_verifies_after_a_round_trip_through_its_file() {
        let text = signed().to_toml();
        let read = Signature::parse(&text).expect("parse");
        let publisher = read
            .verify(("echo", "1.2.3"), MANIFEST, WASM)
            .expect("verifies");
        assert_eq!(publisher.name, "Acme Connectors");
        assert_eq!(publisher.key, key(1).public_key());
    }

    #[test]
    fn a_changed_file_is_named() {
        let sig = signed();
        let manifest = sig.verify(("echo", "1.2.3"), "id = \"echo\"\n", WASM);
        assert!(
            matches!(
                manifest,
                Err(SignatureError::Tampered {
                    file: "plugin.toml",
                    ..
                })
            ),
            "{manifest:?}"
        );
        let component = sig.verify(("echo", "1.2.3"), MANIFEST, b"\0asm other");
        assert!(
            matches!(
                component,
                Err(SignatureError::Tampered {
                    file: "plugin.wasm",
                    ..
                })
            ),
            "{component:?}"
        );
        assert!(
            component
                .expect_err("refused")
                .to_string()
                .contains("plugin.wasm does not match its signature")
        );
    }

    #[test]
    fn edited_fields_or_another_key_break_the_signature() {
        // The checksums rewritten to match other files: the signature no longer holds.
        let mut sig = signed();
        let other = Checksums::of(MANIFEST, b"evil");
        sig.component_sha256 = hex(&other.component);
        assert!(matches!(
            sig.verify(("echo", "1.2.3"), MANIFEST, b"evil"),
            Err(SignatureError::BadSignature { .. })
        ));
        // The publisher renamed.
        let mut sig = signed();
        sig.publisher = "Patchbay".into();
        assert!(matches!(
            sig.verify(("echo", "1.2.3"), MANIFEST, WASM),
            Err(SignatureError::BadSignature { .. })
        ));
        // Another key claimed.
        let mut sig = signed();
        sig.key = key(2).public_key();
        assert!(matches!(
            sig.verify(("echo", "1.2.3"), MANIFEST, WASM),
            Err(SignatureError::BadSignature { .. })
        ));
        // Not base64, or not 64 bytes.
        for garbage in ["%%%", "AAAA"] {
            let mut sig = signed();
            sig.signature = garbage.into();
            assert!(matches!(
                sig.verify(("echo", "1.2.3"), MANIFEST, WASM),
                Err(SignatureError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn a_signature_of_another_plugin_or_version_is_refused() {
        let sig = signed();
        for (id, version) in [("echo", "1.2.4"), ("other", "1.2.3")] {
            let error = sig
                .verify((id, version), MANIFEST, WASM)
                .expect_err("refused");
            assert!(error.to_string().contains("signs echo@1.2.3"), "{error}");
        }
    }

    #[test]
    fn malformed_files_are_named() {
        let cases = [
            ("not toml at all [", "plugin.sig"),
            (
                "format = \"patchbay-package-signature/1\"\n",
                "missing field",
            ),
        ];
        for (text, needle) in cases {
            let error = Signature::parse(text).expect_err("refused").to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
        let mut sig = signed();
        sig.format = "patchbay-package-signature/9".into();
        let error = Signature::parse(&sig.to_toml())
            .expect_err("refused")
            .to_string();
        assert!(error.contains("is not"), "{error}");
        let text = signed().to_toml() + "extra = 1\n";
        assert!(
            Signature::parse(&text)
                .expect_err("refused")
                .to_string()
                .contains("extra")
        );
        let text = signed()
            .to_toml()
            .replace(&key(1).public_key().to_string(), "ed25519:AAAA");
        let error = Signature::parse(&text).expect_err("refused").to_string();
        assert!(error.contains("not an ed25519 public key"), "{error}");
    }

    #[test]
    fn publisher_names_are_checked() {
        for bad in ["", "  ", "a\nplugin evil", " padded", &"x".repeat(101)] {
            assert!(
                Signature::sign(&key(1), bad, ("echo", "1.2.3"), MANIFEST, WASM).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_publisher("Acme Connectors, Inc.").is_ok());
    }

    #[test]
    fn keys_round_trip_through_pem_and_text() {
        let secret = key(7);
        let pem = secret.to_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let read = SecretKey::from_pem(&pem).expect("read");
        assert_eq!(read.public_key(), secret.public_key());
        let text = secret.public_key().to_string();
        assert!(text.starts_with("ed25519:"));
        assert_eq!(text.parse::<PublicKey>(), Ok(secret.public_key()));
        assert!(
            SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        for bad in ["", "ed25519:", "rsa:AAAA", "ed25519:!!!!"] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
        // Debug never shows the secret half.
        assert!(!format!("{secret:?}").contains(pem.lines().nth(1).unwrap_or("-")));
    }

    #[test]
    fn the_digest_names_both_files() {
        let a = Checksums::of(MANIFEST, WASM).digest();
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert_ne!(a, Checksums::of(MANIFEST, b"other").digest());
        assert_ne!(a, Checksums::of("id = \"x\"", WASM).digest());
        assert_eq!(a, Checksums::of(MANIFEST, WASM).digest());
    }

    #[test]
    fn policy_admits_trusted_publishers_and_unsigned_packages_only_when_allowed() {
        let acme = Publisher {
            name: "Acme".into(),
            key: key(1).public_key(),
        };
        let strict = PackagePolicy::default();
        assert_eq!(strict.admit(None), Err(TrustError::Unsigned));
        assert!(matches!(
            strict.admit(Some(&acme)),
            Err(TrustError::Untrusted { .. })
        ));
        let trusting = PackagePolicy {
            allow_unsigned: false,
            trusted_publishers: vec![TrustedPublisher {
                name: "Acme".into(),
                key: key(1).public_key(),
            }],
        };
        assert_eq!(trusting.admit(Some(&acme)), Ok(()));
        // The trusted key under another name, or the name with another key.
        let renamed = Publisher {
            name: "Acme Two".into(),
            ..acme.clone()
        };
        let rekeyed = Publisher {
            key: key(2).public_key(),
            ..acme.clone()
        };
        assert!(trusting.admit(Some(&renamed)).is_err());
        assert!(trusting.admit(Some(&rekeyed)).is_err());
        assert_eq!(trusting.admit(None), Err(TrustError::Unsigned));
        let open = PackagePolicy {
            allow_unsigned: true,
            ..PackagePolicy::default()
        };
        assert_eq!(open.admit(None), Ok(()));
        // Where unsigned packages are allowed, a signature by an unknown key is
        // no reason to refuse (it is still shown, and still checked for tampering).
        assert_eq!(open.admit(Some(&acme)), Ok(()));
        assert!(!open.trusts(&acme));
    }
}
