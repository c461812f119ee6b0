//! `patchbay plugin keygen` and `patchbay plugin sign`: a publisher's side of
//! signed packages.

use anyhow::{Context as _, bail};
use patchbay_policy::manifest::Manifest;
use patchbay_policy::signing::{Checksums, SIGNATURE_FILE, SecretKey, Signature};
use std::io::Write as _;
use std::path::Path;

/// Write a new private key to `out` (never replacing a file) and print the
/// public key.
pub(super) fn keygen(out: &Path) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("reading system randomness: {e}"))?;
    let key = SecretKey::from_seed(seed);
    let pem = key.to_pem().map_err(anyhow::Error::msg)?;
    write_new_private(out, &pem)
        .with_context(|| format!("writing the private key to {}", out.display()))?;
    println!("{}", key.public_key());
    eprintln!(
        "private key written to {} (keep it secret); operators trust the public key above under your publisher name:\n  [[packages.trusted_publishers]]\n  name = \"YOUR NAME\"\n  key = \"{}\"",
        out.display(),
        key.public_key()
    );
    Ok(())
}

/// Create `path` readable by its owner only, refusing to replace a file.
fn write_new_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Sign the package in `dir` with the key in `key_file` as `publisher`:
/// writes `dir/plugin.sig` and prints the package's digest.
pub(super) fn sign(dir: &Path, key_file: &Path, publisher: &str) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading the key {}", key_file.display()))?;
    let key =
        SecretKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
    let manifest_path = dir.join("plugin.toml");
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest =
        Manifest::parse(&manifest_text).with_context(|| format!("{}", manifest_path.display()))?;
    let wasm_path = dir.join("plugin.wasm");
    let wasm =
        std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    if !wasm.starts_with(b"\0asm") {
        bail!(
            "{} is not WebAssembly: build the plugin first",
            wasm_path.display()
        );
    }
    let version = manifest.version.to_string();
    let signature = Signature::sign(
        &key,
        publisher,
        (&manifest.id, &version),
        &manifest_text,
        &wasm,
    )?;
    let path = dir.join(SIGNATURE_FILE);
    std::fs::write(&path, signature.to_toml())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "signed {}@{version} as {publisher:?}: {}",
        manifest.id,
        Checksums::of(&manifest_text, &wasm).digest()
    );
    Ok(())
}
