//! Operator policy from the command line: a TOML file (`--policy`), then
//! the flags for the knobs operators change most, which win over the file.

use anyhow::Context as _;
use clap::Subcommand;
use patchbay_policy::OperatorPolicy;
use patchbay_policy::rate::RateLimit;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(super) struct PolicyArgs {
    /// Operator policy as TOML: any of the keys `patchbay policy defaults`
    /// prints (see the README's "Operator policy"). Flags below win over it.
    #[arg(long = "policy", env = "PATCHBAY_POLICY", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A non-public address range plugins may reach (e.g. an on-premise CRM, or
    /// 127.0.0.1/32 for a local sandbox). Loopback, private, link-local and other
    /// special ranges are refused unless listed. Repeat, or comma-separate in the env.
    /// Replaces the policy file's `addresses.allowed_cidrs` when given.
    #[arg(
        long = "allow-cidr",
        env = "PATCHBAY_ALLOW_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    allow_cidr: Vec<ipnet::IpNet>,
    /// Requests per workspace to one upstream origin, `REQUESTS/SECONDS`
    /// (bursts up to REQUESTS), for plugins that declare no rate and as the
    /// ceiling for those that do [policy: limits.default_rate_limit; default 5000/1].
    #[arg(long, env = "PATCHBAY_RATE_LIMIT", value_name = "REQUESTS/SECONDS")]
    rate_limit: Option<RateLimit>,
    /// Largest memory a plugin instance may grow to [policy: limits.max_memory_mb].
    #[arg(long, env = "PATCHBAY_MAX_MEMORY_MB", value_name = "MB")]
    max_memory_mb: Option<u32>,
    /// Longest an invocation may run [policy: limits.max_timeout_ms].
    #[arg(long, env = "PATCHBAY_MAX_TIMEOUT_MS", value_name = "MS")]
    max_timeout_ms: Option<u32>,
    /// How long audit records are kept [policy: audit.max_age_days].
    #[arg(long, env = "PATCHBAY_AUDIT_MAX_AGE_DAYS", value_name = "DAYS")]
    audit_max_age_days: Option<u32>,
    /// Install plugin packages that are not signed by a trusted publisher,
    /// for development [policy: packages.allow_unsigned; default: refused].
    #[arg(long, env = "PATCHBAY_ALLOW_UNSIGNED")]
    allow_unsigned: bool,
}

impl PolicyArgs {
    /// The defaults, then the file, then the flags; refused with every
    /// problem named if the host cannot run with the result.
    pub(super) fn resolve(self) -> anyhow::Result<OperatorPolicy> {
        let mut policy = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading policy file {}", path.display()))?;
                OperatorPolicy::from_toml(&text)
                    .with_context(|| format!("policy file {}", path.display()))?
            }
            None => OperatorPolicy::default(),
        };
        if !self.allow_cidr.is_empty() {
            policy.addresses.allowed_cidrs = self.allow_cidr;
        }
        if let Some(rate) = self.rate_limit {
            policy.limits.default_rate_limit = rate;
        }
        if let Some(mb) = self.max_memory_mb {
            policy.limits.max_memory_mb = mb;
        }
        if let Some(ms) = self.max_timeout_ms {
            policy.limits.max_timeout_ms = ms;
        }
        if let Some(days) = self.audit_max_age_days {
            policy.audit.max_age_days = days;
        }
        if self.allow_unsigned {
            policy.packages.allow_unsigned = true;
        }
        let source = match &self.file {
            Some(path) => format!("operator policy (policy file {} and flags)", path.display()),
            None => "operator policy (flags)".to_owned(),
        };
        policy.check().context(source)?;
        Ok(policy)
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// Print the default operator policy as TOML: every key, with its default.
    Defaults,
    /// Check a policy file and flags, and print the policy they make.
    Check {
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

const HEADER: &str = "\
# Patchbay operator policy (`serve --policy FILE`). Every key is optional:
# a missing key keeps the default shown here; an unknown key is refused.
# Each key is described in the README, section \"Operator policy\".
";

pub(super) fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let policy = match command {
        PolicyCommand::Defaults => OperatorPolicy::default(),
        PolicyCommand::Check { policy } => policy.resolve()?,
    };
    print!("{HEADER}\n{}", policy.to_toml());
    Ok(ExitCode::SUCCESS)
}
