//! Name resolution that refuses forbidden addresses.
//!
//! reqwest connects only to the addresses this resolver returns, so checking
//! them here, once, means a name cannot resolve to a public address for the
//! check and to loopback for the connection (DNS rebinding).

use patchbay_policy::ssrf::{AddressClass, AddressPolicy};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Looks names up. The system implementation asks the OS; tests supply their own.
pub trait NameLookup: Send + Sync + 'static {
    /// The addresses `host` resolves to, or why it does not resolve.
    fn lookup(
        &self,
        host: String,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A resolver answering from a table, for tests: each name maps to a sequence of
/// answers, one per look-up (the last repeats), so rebinding can be simulated.
#[derive(Debug, Default, Clone)]
pub struct StaticLookup {
    answers: Arc<Mutex<HashMap<String, Vec<Vec<IpAddr>>>>>,
}

impl StaticLookup {
    /// Answer look-ups of `host` (in any case) with `answers`, one per look-up
    /// in turn, the last one repeated.
    pub fn with(self, host: &str, answers: Vec<Vec<IpAddr>>) -> Self {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), answers);
        self
    }
}

impl NameLookup for StaticLookup {
    fn lookup(
        &self,
        host: String,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let mut table = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let answer = match table.get_mut(&host.to_ascii_lowercase()) {
            Some(seq) if seq.len() > 1 => Ok(seq.remove(0)),
            Some(seq) => Ok(seq.first().cloned().unwrap_or_default()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no such host {host}"),
            )),
        };
        Box::pin(async move { answer })
    }
}

/// Every address a name resolved to was refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses ({class} {ip})")]
pub struct RefusedAddress {
    /// The name looked up.
    pub host: String,
    /// The first address refused.
    pub ip: IpAddr,
    /// That address's class, which operator policy does not allow.
    pub class: AddressClass,
}

/// The resolver given to the shared client.
pub(crate) struct GuardedResolver {
    pub(crate) lookup: Arc<dyn NameLookup>,
    pub(crate) policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.lookup.lookup(host.clone());
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolved = lookup.await?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|ip| match policy.allows(*ip) {
                    Ok(()) => true,
                    Err(class) => {
                        refused.get_or_insert((*ip, class));
                        false
                    }
                })
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                let (ip, class) = refused.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host} has no addresses"),
                    )
                })?;
                return Err(Box::new(RefusedAddress { host, ip, class })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
