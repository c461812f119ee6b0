//! `patchbay secrets …`: offline maintenance of the sealed credentials.

use super::DataDir;
use anyhow::{Context as _, bail};
use clap::Subcommand;
use patchbay_egress::credentials::rotate::{KeySource, rotate};
use patchbay_egress::credentials::seal::{MASTER_KEY_ENV, MasterKey};
use patchbay_storage::sled_store::SledDb;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum SecretsCommand {
    /// Re-seal every stored credential under a new master key (stop the
    /// server first). With `<data-dir>/master.key` a new key is generated and
    /// replaces it; if a rotation was interrupted, this finishes it.
    RotateKey {
        #[command(flatten)]
        data: DataDir,
        /// When the current key is in PATCHBAY_MASTER_KEY: the environment
        /// variable holding the new key (base64 of 32 random bytes).
        #[arg(long, value_name = "ENV_VAR")]
        new_key_env: Option<String>,
    },
}

pub(super) fn run(command: SecretsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::RotateKey { data, new_key_env } => {
            let key_file = data.data_dir.join("master.key");
            let current = std::env::var(MASTER_KEY_ENV)
                .ok()
                .filter(|k| !k.trim().is_empty());
            let source = match (current, new_key_env) {
                (Some(current), Some(var)) => {
                    let new = std::env::var(&var)
                        .ok()
                        .filter(|k| !k.trim().is_empty())
                        .with_context(|| format!("--new-key-env {var}: the variable is not set"))?;
                    KeySource::Env { current, new }
                }
                (Some(_), None) => bail!(
                    "the master key comes from {MASTER_KEY_ENV}: put a new key (base64 of 32 random bytes) \
                     in another environment variable and name it with --new-key-env"
                ),
                (None, Some(_)) => bail!(
                    "--new-key-env is for a key kept in {MASTER_KEY_ENV}; this data directory keeps it in {}",
                    key_file.display()
                ),
                (None, None) => KeySource::File,
            };
            let from_env = matches!(source, KeySource::Env { .. });
            if !from_env && !key_file.exists() {
                bail!(
                    "no master key at {}: nothing is sealed yet",
                    key_file.display()
                );
            }
            let db = SledDb::open(&data.data_dir.join("db")).with_context(|| {
                format!(
                    "opening the database in {} (stop the patchbay server using it first)",
                    data.data_dir.display()
                )
            })?;
            let done = rotate(&db.secrets()?, &key_file, source)?;
            println!(
                "re-sealed {} credential(s) under the new key ({} already were)",
                done.resealed, done.already
            );
            if from_env {
                println!(
                    "now set {MASTER_KEY_ENV} to the new key before starting patchbay; the old key opens nothing"
                );
            } else {
                let key = std::fs::read_to_string(&key_file)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| MasterKey::from_base64(&t).map_err(anyhow::Error::from))?;
                println!("{} now holds key {}", key_file.display(), key.id());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
