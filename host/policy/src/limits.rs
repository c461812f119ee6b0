//! Resource limits: what a plugin asked for, capped by what the operator allows.

use crate::manifest::RequestedLimits;
use crate::rate::RateLimit;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The operator's ceilings, applied to every plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorLimits {
    /// Largest linear memory a plugin instance may grow to.
    pub max_memory_mb: u32,
    /// Longest an invocation may run, wall clock.
    pub max_timeout_ms: u32,
    /// Largest JSON input accepted for an invocation.
    pub max_input_bytes: usize,
    /// Largest JSON output a plugin may return.
    pub max_output_bytes: usize,
    /// Log text (wasi:logging plus stdout/stderr) kept per invocation.
    pub max_log_bytes: usize,
    /// Largest outbound request body a plugin may send.
    pub max_request_body_bytes: usize,
    /// Largest upstream response body a plugin may receive (checked while streaming).
    pub max_response_body_bytes: usize,
    /// Outbound requests one invocation may start (retries not counted).
    pub max_outbound_requests: usize,
    /// Rate per (workspace, upstream origin) when a plugin declares none, and
    /// the ceiling when it declares one.
    pub default_rate_limit: RateLimit,
    /// When to stop calling a failing upstream for a while (per workspace and origin).
    pub circuit_breaker: BreakerConfig,
    /// Outbound requests one connection may have in flight at once, across
    /// all its invocations (a request holds its slot until its body is read).
    pub max_concurrent_requests_per_connection: usize,
    /// Longest wait for a TCP (and TLS) connection to an upstream, within
    /// the call's deadline, so an unreachable upstream leaves time to retry.
    pub connect_timeout_ms: u32,
    /// Ceilings on what a manifest's `[capabilities.kv]` quota may ask, per connection.
    pub max_kv_keys: u64,
    /// Ceiling on a quota's `max_total_bytes`: keys and values together.
    pub max_kv_total_bytes: u64,
    /// Ceiling on a quota's `max_value_bytes`: one value.
    pub max_kv_value_bytes: u64,
    /// How often expired KV keys are removed (they are invisible at once).
    pub kv_purge_every_secs: u32,
    /// Plugin instances the host holds at once (the instance pool's size);
    /// a call beyond it is refused as `host-at-capacity` (503, Retry-After).
    pub max_instances: u32,
    /// Invocations one connection may run at once; more wait for a slot
    /// until their deadline, then are refused (429).
    pub max_concurrent_calls_per_connection: usize,
    /// Invocations one workspace may run at once, across its connections,
    /// so one busy tenant cannot take every instance and core.
    pub max_concurrent_calls_per_workspace: usize,
}

impl Default for OperatorLimits {
    fn default() -> Self {
        Self {
            max_memory_mb: 128,
            max_timeout_ms: 30_000,
            max_input_bytes: 1024 * 1024,
            max_output_bytes: 4 * 1024 * 1024,
            max_log_bytes: 64 * 1024,
            max_request_body_bytes: 4 * 1024 * 1024,
            max_response_body_bytes: 16 * 1024 * 1024,
            max_outbound_requests: 50,
            // Above what one workspace sends one origin even at a large
            // contact center's peak (thousands of seats, several look-ups
            // per call, bursts at the top of the hour), so pacing is the
            // operator's or the vendor's choice rather than a ceiling a new
            // host runs into (500/s capped one workspace below the host's
            // own throughput); it still stops a runaway plugin. Vendors
            // declare their upstream's real limit, which is stricter and wins.
            default_rate_limit: RateLimit {
                requests: 5_000,
                per_seconds: 1,
            },
            circuit_breaker: BreakerConfig::default(),
            max_concurrent_requests_per_connection: 16,
            connect_timeout_ms: 3_000,
            max_kv_keys: 100_000,
            max_kv_total_bytes: 64 * 1024 * 1024,
            max_kv_value_bytes: 1024 * 1024,
            kv_purge_every_secs: 60,
            max_instances: 1000,
            // A contact-center call mostly waits on its upstream: 32 in flight
            // per connection and 64 per workspace carry a busy tenant's bursts
            // while leaving most of the 1000-instance pool to everyone else.
            max_concurrent_calls_per_connection: 32,
            max_concurrent_calls_per_workspace: 64,
        }
    }
}

/// Limits in force for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline of one invocation.
    pub timeout: Duration,
    /// Largest JSON input accepted, in bytes.
    pub max_input_bytes: usize,
    /// Largest JSON output the plugin may return, in bytes.
    pub max_output_bytes: usize,
    /// Log text kept per invocation, in bytes.
    pub max_log_bytes: usize,
    /// Outbound requests one invocation may start (retries not counted).
    pub max_outbound_requests: usize,
    /// Outbound rate per (workspace, upstream origin): the stricter of the
    /// plugin's declared rate and the operator's.
    pub rate_limit: RateLimit,
}

/// What a connection holds its plugin to: at most the plugin's own limits
/// (its ask, capped by the operator), never more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Memory ceiling for this connection's calls, in MiB; `None` keeps the plugin's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Deadline of this connection's calls, in milliseconds; `None` keeps the plugin's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

impl ConnectionLimits {
    /// `limits`, tightened by this connection's settings (never loosened).
    pub fn tighten(&self, mut limits: EffectiveLimits) -> EffectiveLimits {
        if let Some(mb) = self.memory_mb {
            limits.memory_bytes = limits.memory_bytes.min((mb as usize) << 20);
        }
        if let Some(ms) = self.timeout_ms {
            limits.timeout = limits.timeout.min(Duration::from_millis(u64::from(ms)));
        }
        limits
    }

    /// Why these settings are refused for a plugin with `limits`, if they are:
    /// each must be at least 1 and at most what the plugin gets.
    pub fn problems(&self, limits: &EffectiveLimits) -> Vec<String> {
        let mut out = Vec::new();
        let plugin_mb = (limits.memory_bytes >> 20) as u32;
        if let Some(mb) = self.memory_mb
            && !(1..=plugin_mb).contains(&mb)
        {
            out.push(format!(
                "limits.memory_mb {mb} is outside 1-{plugin_mb} (what the plugin gets)"
            ));
        }
        let plugin_ms = limits.timeout.as_millis() as u32;
        if let Some(ms) = self.timeout_ms
            && !(1..=plugin_ms).contains(&ms)
        {
            out.push(format!(
                "limits.timeout_ms {ms} is outside 1-{plugin_ms} (what the plugin gets)"
            ));
        }
        out
    }
}

impl OperatorLimits {
    /// The plugin's ask, never above the operator's maximum.
    pub fn effective(
        &self,
        asked: &RequestedLimits,
        declared_rate: Option<RateLimit>,
    ) -> EffectiveLimits {
        EffectiveLimits {
            memory_bytes: (asked.memory_mb.min(self.max_memory_mb) as usize) << 20,
            timeout: Duration::from_millis(u64::from(asked.timeout_ms.min(self.max_timeout_ms))),
            max_input_bytes: self.max_input_bytes,
            max_output_bytes: self.max_output_bytes,
            max_log_bytes: self.max_log_bytes,
            max_outbound_requests: self.max_outbound_requests,
            rate_limit: RateLimit::effective(declared_rate, self.default_rate_limit),
        }
    }
}

impl OperatorLimits {
    /// A manifest's KV quota, capped by the operator's ceilings.
    pub fn kv_quota(&self, asked: &crate::manifest::KvQuota) -> crate::manifest::KvQuota {
        crate::manifest::KvQuota {
            max_keys: asked.max_keys.min(self.max_kv_keys),
            max_total_bytes: asked.max_total_bytes.min(self.max_kv_total_bytes),
            max_value_bytes: asked.max_value_bytes.min(self.max_kv_value_bytes),
        }
    }
}

/// When to stop calling a failing upstream: `failures` failed attempts within
/// `window_ms` open the breaker for `cool_down_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failed attempts within `window_ms` that open the breaker.
    pub failures: u32,
    /// How far back failures are counted, in milliseconds.
    pub window_ms: u64,
    /// How long an open breaker refuses requests before it lets one trial
    /// request through (half-open), in milliseconds.
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            window_ms: 30_000,
            cool_down_ms: 30_000,
        }
    }
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Records older than this many days are removed.
    pub max_age_days: u32,
    /// Per workspace, so one busy tenant cannot push out another's records.
    pub max_records_per_workspace: usize,
    /// How often the writer enforces retention.
    pub purge_every_secs: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: 30,
            max_records_per_workspace: 200_000,
            purge_every_secs: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_only_tightens_its_plugins_limits() {
        let plugin = OperatorLimits::default().effective(
            &RequestedLimits {
                memory_mb: 32,
                timeout_ms: 1_000,
            },
            None,
        );
        let cases = [
            (ConnectionLimits::default(), 32, 1_000),
            (
                ConnectionLimits {
                    memory_mb: Some(8),
                    timeout_ms: Some(200),
                },
                8,
                200,
            ),
            (
                ConnectionLimits {
                    memory_mb: Some(512),
                    timeout_ms: Some(60_000),
                },
                32,
                1_000,
            ),
        ];
        for (connection, mb, ms) in cases {
            let tight = connection.tighten(plugin);
            assert_eq!(tight.memory_bytes, mb << 20, "{connection:?}");
            assert_eq!(tight.timeout, Duration::from_millis(ms), "{connection:?}");
        }
    }

    #[test]
    fn connection_limits_outside_what_the_plugin_gets_are_refused() {
        let plugin = OperatorLimits::default().effective(
            &RequestedLimits {
                memory_mb: 32,
                timeout_ms: 1_000,
            },
            None,
        );
        let ok = ConnectionLimits {
            memory_mb: Some(32),
            timeout_ms: Some(1),
        };
        assert!(ok.problems(&plugin).is_empty());
        let bad = ConnectionLimits {
            memory_mb: Some(64),
            timeout_ms: Some(0),
        };
        let problems = bad.problems(&plugin).join("; ");
        assert!(
            problems.contains("memory_mb 64") && problems.contains("timeout_ms 0"),
            "{problems}"
        );
    }

    #[test]
    fn caps_the_plugins_ask_at_the_operator_maximum() {
        let operator = OperatorLimits {
            max_memory_mb: 64,
            max_timeout_ms: 2_000,
            ..OperatorLimits::default()
        };
        let cases = [
            (
                RequestedLimits {
                    memory_mb: 16,
                    timeout_ms: 500,
                },
                16 << 20,
                500,
            ),
            (
                RequestedLimits {
                    memory_mb: 512,
                    timeout_ms: 60_000,
                },
                64 << 20,
                2_000,
            ),
            (
                RequestedLimits {
                    memory_mb: 64,
                    timeout_ms: 2_000,
                },
                64 << 20,
                2_000,
            ),
        ];
        for (asked, memory, timeout_ms) in cases {
            let effective = operator.effective(&asked, None);
            assert_eq!(effective.memory_bytes, memory, "{asked:?}");
            assert_eq!(
                effective.timeout,
                Duration::from_millis(timeout_ms),
                "{asked:?}"
            );
        }
    }
}
