//! Credentials at rest: sealed with XChaCha20-Poly1305 under the master key.
//!
//! A sealed value is `version (1) | key id (8) | nonce (24) | ciphertext+tag`.
//! The associated data is the value's storage key (workspace, connection and
//! credential name), so a sealed value copied to another connection's key does
//! not open. The key id tells which master key sealed a value, so a key
//! rotation can find what it has not re-sealed yet.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest as _;
use std::path::Path;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Environment variable holding the master key (32 bytes, base64).
pub const MASTER_KEY_ENV: &str = "PATCHBAY_MASTER_KEY";

/// Where a rotation keeps the new key until every value is sealed under it.
pub fn rotation_file(key_file: &Path) -> std::path::PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".next");
    name.into()
}

/// Why a master key could not be had, or a value could not be sealed or
/// opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// No usable master key (not base64, not 32 bytes, a key file that cannot
    /// be read or written, an unfinished rotation): why.
    #[error("master key: {0}")]
    Key(String),
    /// Too short to be a sealed value, or of an unknown format version.
    #[error("sealed value is malformed")]
    Malformed,
    /// Sealed under another master key, whose hex id this is.
    #[error("sealed value was sealed under another master key (id {0})")]
    OtherKey(String),
    /// Does not open under this key and binding: altered, or stored under
    /// another connection's or credential's key.
    #[error("sealed value does not open: it was altered or belongs to another key")]
    Tampered,
    /// Encryption failed, or there was no randomness for the nonce.
    #[error("could not seal: {0}")]
    Seal(String),
}

/// The key every credential is sealed under. Its bytes never leave this type.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    /// A master key from its 32 raw bytes; its id is a SHA-256 prefix of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::Key(format!(
                "must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| SealError::Key("must be 32 bytes".into()))?;
        let digest = sha2::Sha256::digest(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Self { cipher, id })
    }

    /// Parse the base64 text form (as in a key file or the environment).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::Key("is not valid base64".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key and its base64 text form.
    pub fn generate() -> Result<(Self, String), SealError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SealError::Key(format!("no randomness: {e}")))?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok((Self::from_bytes(&bytes)?, text))
    }

    /// The key from `PATCHBAY_MASTER_KEY` (`env`) if set, else from `file`,
    /// which is created with mode 0600 holding a fresh key on first start.
    pub fn load_or_create(file: &Path, env: Option<String>) -> Result<Self, SealError> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return Self::from_base64(&text)
                .map_err(|e| SealError::Key(format!("{MASTER_KEY_ENV} {e}")));
        }
        let next = rotation_file(file);
        if next.exists() {
            return Err(SealError::Key(format!(
                "a key rotation was interrupted ({} exists): run `patchbay secrets rotate-key` again to finish it",
                next.display()
            )));
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Self::from_base64(&text)
                .map_err(|e| SealError::Key(format!("{}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, text) = Self::generate()?;
                write_private(file, &text)
                    .map_err(|e| SealError::Key(format!("writing {}: {e}", file.display())))?;
                Ok(key)
            }
            Err(e) => Err(SealError::Key(format!("reading {}: {e}", file.display()))),
        }
    }

    /// Hex id of this key (a hash prefix, safe to show).
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// Whether `sealed` was sealed under this key (by the id in its header;
    /// opening it is what proves it).
    pub fn sealed_this(&self, sealed: &[u8]) -> bool {
        sealed.len() > KEY_ID_LEN && sealed[0] == VERSION && sealed[1..1 + KEY_ID_LEN] == self.id
    }

    /// Seal `plaintext` with a fresh random nonce, bound to `bound_to` (the
    /// value's storage key) as associated data.
    pub fn seal(&self, plaintext: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Seal(format!("no randomness: {e}")))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: bound_to,
                },
            )
            .map_err(|_| SealError::Seal("encryption failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Open a value [`seal`](Self::seal)ed under this key with the same
    /// `bound_to`.
    pub fn open(&self, sealed: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        if id != self.id {
            return Err(SealError::OtherKey(hex::encode(id)));
        }
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        self.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: bound_to,
                },
            )
            .map_err(|_| SealError::Tampered)
    }
}

/// Write `contents` to `path` readable by its owner only (mode 0600), synced
/// to disk before it returns: for keys and tokens.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate().expect("key").0
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_binding() {
        let key = key();
        let sealed = key.seal(b"hunter2", b"ws/conn/token").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open(&sealed, b"ws/conn/token").expect("open"),
            b"hunter2"
        );
    }

    #[test]
    fn a_value_moved_to_another_key_does_not_open() {
        let key = key();
        let sealed = key.seal(b"hunter2", b"ws-a/conn/token").expect("seal");
        assert!(matches!(
            key.open(&sealed, b"ws-b/conn/token"),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn another_master_key_is_told_apart() {
        let sealed = key().seal(b"hunter2", b"k").expect("seal");
        assert!(matches!(
            key().open(&sealed, b"k"),
            Err(SealError::OtherKey(_))
        ));
    }

    #[test]
    fn altered_or_truncated_values_are_refused() {
        let key = key();
        let mut sealed = key.seal(b"hunter2", b"k").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(key.open(&sealed, b"k"), Err(SealError::Tampered)));
        assert!(matches!(
            key.open(&sealed[..10], b"k"),
            Err(SealError::Malformed)
        ));
        assert!(matches!(key.open(b"", b"k"), Err(SealError::Malformed)));
    }

    #[test]
    fn the_key_file_is_created_private_once_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master.key");
        let first = MasterKey::load_or_create(&file, None).expect("create");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MasterKey::load_or_create(&file, None).expect("reuse");
        assert_eq!(first.id(), second.id());
        let sealed = first.seal(b"x", b"k").expect("seal");
        assert_eq!(second.open(&sealed, b"k").expect("open"), b"x");
    }

    #[test]
    fn the_environment_wins_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master.key");
        let (_, text) = MasterKey::generate().expect("key");
        let from_env = MasterKey::load_or_create(&file, Some(text)).expect("env key");
        assert!(
            !file.exists(),
            "no file is written when the key comes from the environment"
        );
        assert_eq!(from_env.id().len(), 16);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let error = MasterKey::load_or_create(&file, Some(short)).expect_err("short key");
        assert!(error.to_string().contains(MASTER_KEY_ENV), "{error}");
        assert!(error.to_string().contains("32 bytes"), "{error}");
        std::fs::write(&file, "not base64!").expect("write");
        let error = MasterKey::load_or_create(&file, None).expect_err("bad file");
        assert!(error.to_string().contains("master.key"), "{error}");
    }
}
