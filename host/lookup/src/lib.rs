//! The caller-context lookup: when a call comes in, ask a workspace's CRM,
//! payment and scheduling connections about the caller at once, each within
//! its own deadline, and merge their answers into one caller record.
//!
//! - Every source runs on the host's one invocation path
//!   ([`Tenancy::invoke`]): a fresh sandbox, its limits, egress and audit.
//! - Sources run in parallel; a fallback source runs when its primary ends
//!   in an error, a timeout or is skipped. The answer comes within the
//!   longest chain of deadlines, whatever the sources do.
//! - The caller's number is normalised to E.164 first; it is the cache key
//!   and what sources are asked with.
//! - Results are kept in memory only (never written to disk), per
//!   (workspace, lookup, number, email), for the lookup's TTL; concurrent
//!   identical lookups share one run. Only a result in which every source
//!   answered (found or not found) is kept.
//! - Masking by permission profile is the caller's last step
//!   ([`Answer::masked`]), applied to what the plugins returned.

#![warn(missing_docs)]

mod merge;
pub mod phone;
mod run;

pub use phone::{PhoneError, normalise};
pub use run::{
    Answer, LookupError, Lookups, MaskedAnswer, RunPage, RunRecord, RunSource, SourceReport,
    SourceStatus,
};
