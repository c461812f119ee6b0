//! `patchbay secrets rotate-key`: every stored credential re-sealed under a
//! new master key, safe against a crash at any point.
//!
//! With a key file, the new key is written beside it (`master.key.next`)
//! before anything is re-sealed; all values are re-sealed in one atomic
//! write; then the new key file is renamed over the old. A crash leaves
//! either the old state or an unfinished rotation that start-up refuses
//! (naming it) and that running the command again finishes. With the key in
//! `PATCHBAY_MASTER_KEY`, the operator supplies the new key the same way and
//! sets it in place of the old one afterwards.

use super::seal::{MasterKey, SealError, rotation_file};
use patchbay_storage::StorageError;
use patchbay_storage::secrets::SecretStore;
use std::path::Path;

/// Why a master-key rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A master key could not be read, generated or used.
    #[error(transparent)]
    Key(#[from] SealError),
    /// A stored value opens under neither the current key nor the new one; the
    /// rotation stops before writing anything.
    #[error(
        "credential {name:?} of {workspace}/{connection} does not open with the current key: {source}"
    )]
    Unopenable {
        /// The workspace of the connection that holds it.
        workspace: String,
        /// The connection that holds it.
        connection: String,
        /// The credential's name in that connection.
        name: String,
        /// Why it does not open under the current key.
        source: SealError,
    },
    /// The credential store could not be read or written.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The new key is the current one, or a key file cannot be read, written or
    /// moved into place: what, and why.
    #[error("{0}")]
    Usage(String),
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Values moved from the old key to the new.
    pub resealed: usize,
    /// Values already under the new key (a rotation run again).
    pub already: usize,
}

/// Re-seal every value in `store` sealed under `old` with `new`, all in one
/// atomic write. A value that opens with neither stops it before anything
/// is written.
pub fn reseal_all(
    store: &dyn SecretStore,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<Resealed, RotateError> {
    let mut out = Vec::new();
    let mut already = 0;
    for (scope, name, sealed) in store.all()? {
        let bound_to = scope.key(&name);
        if new.sealed_this(&sealed) && new.open(&sealed, &bound_to).is_ok() {
            already += 1;
            continue;
        }
        let mut plain = old
            .open(&sealed, &bound_to)
            .map_err(|source| RotateError::Unopenable {
                workspace: scope.workspace.clone(),
                connection: scope.connection.clone(),
                name: name.clone(),
                source,
            })?;
        let resealed = new.seal(&plain, &bound_to);
        zeroize::Zeroize::zeroize(&mut plain);
        out.push((scope, name, resealed?));
    }
    if !out.is_empty() {
        store.put_all(&out)?;
    }
    Ok(Resealed {
        resealed: out.len(),
        already,
    })
}

/// Where the current key comes from, and where the new one will.
pub enum KeySource {
    /// `<data>/master.key`: a new key is generated (or an interrupted
    /// rotation's `master.key.next` is picked up) and replaces it.
    File,
    /// `PATCHBAY_MASTER_KEY`, with the new key's base64 from the operator.
    Env {
        /// The current key (what `PATCHBAY_MASTER_KEY` holds now).
        current: String,
        /// The key to re-seal under; the operator sets it in place of the
        /// current one afterwards.
        new: String,
    },
}

/// Rotate the master key of the data directory whose credential store is
/// `store`: re-seal everything, then put the new key in place (file) or
/// leave that to the operator (environment).
pub fn rotate(
    store: &dyn SecretStore,
    key_file: &Path,
    source: KeySource,
) -> Result<Resealed, RotateError> {
    match source {
        KeySource::Env { current, new } => {
            let old = MasterKey::from_base64(&current)?;
            let new = MasterKey::from_base64(&new)?;
            if old.id() == new.id() {
                return Err(RotateError::Usage(
                    "the new master key is the current one".into(),
                ));
            }
            reseal_all(store, &old, &new)
        }
        KeySource::File => {
            let read = |path: &Path| -> Result<MasterKey, RotateError> {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| RotateError::Usage(format!("reading {}: {e}", path.display())))?;
                Ok(MasterKey::from_base64(&text)?)
            };
            let old = read(key_file)?;
            let next_file = rotation_file(key_file);
            let new = if next_file.exists() {
                read(&next_file)?
            } else {
                let (key, text) = MasterKey::generate()?;
                super::seal::write_private(&next_file, &text).map_err(|e| {
                    RotateError::Usage(format!("writing {}: {e}", next_file.display()))
                })?;
                key
            };
            let done = reseal_all(store, &old, &new)?;
            std::fs::rename(&next_file, key_file)
                .and_then(|()| sync_dir(key_file))
                .map_err(|e| {
                    RotateError::Usage(format!("moving {} into place: {e}", next_file.display()))
                })?;
            Ok(done)
        }
    }
}

/// Make a rename in `file`'s directory durable.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_storage::Scope;
    use patchbay_storage::memory::MemorySecrets;

    fn scope(ws: &str) -> Scope {
        Scope {
            workspace: ws.into(),
            connection: "crm".into(),
        }
    }

    fn key() -> MasterKey {
        MasterKey::generate().expect("key").0
    }

    fn put(store: &MemorySecrets, key: &MasterKey, ws: &str, value: &[u8]) {
        let s = scope(ws);
        let sealed = key.seal(value, &s.key("token")).expect("seal");
        store.put(&s, "token", &sealed).expect("put");
    }

    fn open(store: &MemorySecrets, key: &MasterKey, ws: &str) -> Result<Vec<u8>, SealError> {
        let s = scope(ws);
        let sealed = store.get(&s, "token").expect("get").expect("stored");
        key.open(&sealed, &s.key("token"))
    }

    #[test]
    fn every_value_moves_to_the_new_key_and_a_rerun_is_harmless() {
        let store = MemorySecrets::default();
        let (old, new) = (key(), key());
        put(&store, &old, "a", b"secret-a");
        put(&store, &old, "b", b"secret-b");
        let done = reseal_all(&store, &old, &new).expect("rotate");
        assert_eq!(
            done,
            Resealed {
                resealed: 2,
                already: 0
            }
        );
        assert_eq!(open(&store, &new, "a").expect("opens"), b"secret-a");
        assert_eq!(open(&store, &new, "b").expect("opens"), b"secret-b");
        assert!(
            open(&store, &old, "a").is_err(),
            "the old key opens nothing"
        );
        let again = reseal_all(&store, &old, &new).expect("rerun");
        assert_eq!(
            again,
            Resealed {
                resealed: 0,
                already: 2
            }
        );
    }

    #[test]
    fn a_value_under_neither_key_stops_the_rotation_before_any_write() {
        let store = MemorySecrets::default();
        let (old, new, stranger) = (key(), key(), key());
        put(&store, &old, "a", b"secret-a");
        put(&store, &stranger, "z", b"secret-z");
        let error = reseal_all(&store, &old, &new).expect_err("refused");
        assert!(
            error.to_string().contains("z/crm") && error.to_string().contains("token"),
            "{error}"
        );
        assert_eq!(
            open(&store, &old, "a").expect("untouched"),
            b"secret-a",
            "nothing was re-sealed"
        );
    }
}
