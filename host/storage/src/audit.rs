//! The audit trail's storage: records kept per workspace in time order.
//!
//! Keys are `workspace (length-prefixed) | time ms (8, big-endian) | sequence
//! (8, big-endian)`, so one workspace's records form one contiguous,
//! time-ordered range and no query can reach another workspace's.

use super::StorageError;
pub(crate) use super::workspace_prefix;
use patchbay_policy::call::CallId;
use patchbay_policy::http::Target;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What happened to an outbound attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Sent upstream.
    Allowed,
    /// Refused by policy (destination rules, address policy, a managed header).
    Denied,
    /// Not sent, by the host's own protection: rate limit, open circuit, or
    /// a credential that cannot be used.
    Held,
}

/// One outbound attempt. Never holds a secret: the path's query values are
/// redacted, and only the credential's kind is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// When the attempt was made, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The workspace the call ran for.
    pub workspace: String,
    /// The connection, in that workspace, whose plugin made the request.
    pub connection: String,
    /// `id@version`.
    pub plugin: String,
    /// The invocation the request was made in (or for which the host fetched a token).
    pub invocation_id: String,
    /// The request's method, as sent.
    pub method: String,
    /// The URL's scheme, lowercase (`https`).
    pub scheme: String,
    /// The host as the client dials it: a lowercase DNS name (punycode) or
    /// an IP address; cut at 253 bytes when the URL did not parse.
    pub host: String,
    /// The destination port, explicit or the scheme's default.
    pub port: u16,
    /// Path, and query keys with their values redacted.
    pub path: String,
    /// The address (`ip:port`) the connection was actually made to, for an
    /// attempt that reached one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether it was sent, refused by policy, or held by the host.
    pub decision: Decision,
    /// Why it was denied or held; or the transport error of an allowed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The upstream's HTTP status; `None` when no response came (denied,
    /// held, or a transport error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes sent; 0 unless the attempt reached a connection.
    pub bytes_out: u64,
    /// Response body bytes received, decoded, as far as the body was read.
    pub bytes_in: u64,
    /// Milliseconds from sending to the response's headers, or to the failure;
    /// 0 for an attempt never sent.
    pub latency_ms: u64,
    /// 1 for the first attempt of a request, counting host retries.
    pub attempt: u32,
    /// The kind of credential the host added (`bearer`…), never its name or
    /// value; `None` when it added none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl AuditRecord {
    /// A record for `method uri`, to be completed by the caller. The host is
    /// recorded as the client would dial it (`127.1` is `127.0.0.1`).
    pub fn new(call: &CallId, at_ms: u64, method: &str, uri: &http::Uri) -> Self {
        if let Ok(target) = Target::parse(method, &uri.to_string()) {
            return Self::for_target(call, at_ms, &target);
        }
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        // Unparsed, so of any length: a DNS name is at most 253 bytes.
        let mut host = uri.host().unwrap_or("").to_ascii_lowercase();
        if patchbay_policy::text::truncate(&mut host, 253).is_some() {
            host.push('…');
        }
        Self::blank(
            call,
            at_ms,
            method,
            scheme,
            host,
            port,
            redact_query(uri.path(), uri.query()),
        )
    }

    /// A record for a request parsed by the gate.
    pub fn for_target(call: &CallId, at_ms: u64, target: &Target) -> Self {
        Self::blank(
            call,
            at_ms,
            &target.method,
            target.scheme().to_owned(),
            target.host.to_string(),
            target.port,
            redact_query(target.url.path(), target.url.query()),
        )
    }

    fn blank(
        call: &CallId,
        at_ms: u64,
        method: &str,
        scheme: String,
        host: String,
        port: u16,
        path: String,
    ) -> Self {
        Self {
            at_ms,
            workspace: call.workspace.clone(),
            connection: call.connection.clone(),
            plugin: call.plugin_version(),
            invocation_id: call.invocation_id.clone(),
            method: method.to_owned(),
            host,
            port,
            scheme,
            path,
            address: None,
            decision: Decision::Allowed,
            reason: None,
            status: None,
            bytes_out: 0,
            bytes_in: 0,
            latency_ms: 0,
            attempt: 1,
            credential: None,
        }
    }
}

/// Bytes of a path kept in a record (and in a log line or denial): a plugin
/// chooses its URLs, and must not make each refusal cost kilobytes.
pub const MAX_RECORDED_PATH: usize = 2048;

/// The path, with each query value replaced (values may carry personal data
/// or keys), cut at [`MAX_RECORDED_PATH`] bytes with a marker.
pub fn redact_query(path: &str, query: Option<&str>) -> String {
    let mut shown = redact_query_whole(path, query);
    if let Some(total) = patchbay_policy::text::truncate(&mut shown, MAX_RECORDED_PATH) {
        shown.push_str(&format!("…[{total} bytes]"));
    }
    shown
}

fn redact_query_whole(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => {
            let keys: Vec<String> = q
                .split('&')
                .map(|pair| format!("{}=REDACTED", pair.split('=').next().unwrap_or("")))
                .collect();
            format!("{path}?{}", keys.join("&"))
        }
        None => path.to_owned(),
    }
}

/// Where a page of records starts: the position just after the last one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    /// The record's time, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The writer's sequence number: orders records of the same millisecond
    /// and keeps their keys apart.
    pub seq: u64,
}

impl AuditCursor {
    /// The opaque text form handed to API clients.
    pub fn encode(&self) -> String {
        format!("{:016x}{:016x}", self.at_ms, self.seq)
    }

    /// Read [`encode`](Self::encode)'s text; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            at_ms: u64::from_str_radix(&text[..16], 16).ok()?,
            seq: u64::from_str_radix(&text[16..], 16).ok()?,
        })
    }
}

/// One stored record: its position and its serialised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Where the record sits, to resume a query after it.
    pub cursor: AuditCursor,
    /// The record as appended: an [`AuditRecord`] as JSON.
    pub json: Vec<u8>,
}

/// Where the audit trail is kept: per workspace, one time-ordered range of
/// records, read in pages and trimmed by age and count.
pub trait AuditStore: Send + Sync + 'static {
    /// Append records (workspace, time, sequence, JSON); durable when this returns.
    fn append(&self, batch: &[(String, AuditCursor, Vec<u8>)]) -> Result<(), StorageError>;
    /// Records of `workspace` with `from_ms <= time < to_ms`, oldest first,
    /// strictly after `after` when given; at most `limit`, plus whether more remain.
    fn query(
        &self,
        workspace: &str,
        from_ms: u64,
        to_ms: u64,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, bool), StorageError>;
    /// Remove records older than `before_ms`, and the oldest of any workspace
    /// holding more than `max_per_workspace`. How many were removed.
    fn purge(&self, before_ms: u64, max_per_workspace: usize) -> Result<usize, StorageError>;
    /// Remove every record of `workspace`.
    fn remove_workspace(&self, workspace: &str) -> Result<usize, StorageError>;
}

/// An audit store as the services share it.
pub type SharedAudit = Arc<dyn AuditStore>;

pub(crate) fn record_key(workspace: &str, cursor: AuditCursor) -> Vec<u8> {
    let mut out = workspace_prefix(workspace);
    out.extend_from_slice(&cursor.at_ms.to_be_bytes());
    out.extend_from_slice(&cursor.seq.to_be_bytes());
    out
}

/// The cursor at the end of a record key, given its workspace prefix length.
pub(crate) fn cursor_of(key: &[u8], prefix_len: usize) -> Option<AuditCursor> {
    let rest = key.get(prefix_len..)?;
    if rest.len() != 16 {
        return None;
    }
    Some(AuditCursor {
        at_ms: u64::from_be_bytes(rest[..8].try_into().ok()?),
        seq: u64::from_be_bytes(rest[8..].try_into().ok()?),
    })
}

#[cfg(test)]
pub(crate) mod contract_tests {
    //! The behaviour every `AuditStore` must have.
    use super::*;

    fn rec(ws: &str, at_ms: u64, seq: u64) -> (String, AuditCursor, Vec<u8>) {
        (
            ws.to_owned(),
            AuditCursor { at_ms, seq },
            format!("{{\"ws\":\"{ws}\",\"at\":{at_ms}}}").into_bytes(),
        )
    }

    pub(crate) fn run_all(store: &dyn AuditStore) {
        // "ws-a" and "ws-ab" would collide under a naive prefix.
        let batch: Vec<_> = (0..10)
            .map(|i| rec("ws-a", 1_000 + i * 10, i))
            .chain((0..3).map(|i| rec("ws-ab", 1_000 + i, 100 + i)))
            .collect();
        store.append(&batch).expect("append");

        let (page, more) = store.query("ws-a", 0, u64::MAX, None, 4).expect("query");
        assert_eq!(page.len(), 4);
        assert!(more);
        assert_eq!(page[0].cursor.at_ms, 1_000);
        let (rest, more) = store
            .query("ws-a", 0, u64::MAX, Some(page[3].cursor), 100)
            .expect("query");
        assert_eq!(rest.len(), 6);
        assert!(!more);
        assert!(
            rest.iter()
                .all(|r| String::from_utf8_lossy(&r.json).contains("\"ws-a\""))
        );

        let (window, _) = store.query("ws-a", 1_020, 1_050, None, 100).expect("query");
        let times: Vec<u64> = window.iter().map(|r| r.cursor.at_ms).collect();
        assert_eq!(times, [1_020, 1_030, 1_040]);
        // A cursor at or past the window's end: an empty page, not an error.
        for (at_ms, seq) in [(1_050, 0), (1_050, 5), (1_060, 6), (u64::MAX, u64::MAX)] {
            let after = Some(AuditCursor { at_ms, seq });
            assert_eq!(
                store
                    .query("ws-a", 1_020, 1_050, after, 100)
                    .expect("query"),
                (Vec::new(), false),
                "after {at_ms}/{seq}"
            );
        }

        // Age: everything before 1_030 goes, in every workspace.
        let removed = store.purge(1_030, usize::MAX).expect("purge");
        assert_eq!(removed, 3 + 3);
        assert!(
            store
                .query("ws-ab", 0, u64::MAX, None, 10)
                .expect("query")
                .0
                .is_empty()
        );
        // Count: ws-a keeps its newest 2.
        store.purge(0, 2).expect("purge");
        let (kept, _) = store.query("ws-a", 0, u64::MAX, None, 10).expect("query");
        let times: Vec<u64> = kept.iter().map(|r| r.cursor.at_ms).collect();
        assert_eq!(times, [1_080, 1_090]);

        store.append(&[rec("ws-b", 5, 500)]).expect("append");
        assert_eq!(store.remove_workspace("ws-a").expect("remove"), 2);
        assert!(
            store
                .query("ws-a", 0, u64::MAX, None, 10)
                .expect("query")
                .0
                .is_empty()
        );
        assert_eq!(
            store
                .query("ws-b", 0, u64::MAX, None, 10)
                .expect("query")
                .0
                .len(),
            1
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = AuditCursor {
            at_ms: 1_763_900_000_000,
            seq: 42,
        };
        assert_eq!(AuditCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(AuditCursor::decode("zz"), None);
        assert_eq!(AuditCursor::decode(&"g".repeat(32)), None);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_and_marked_and_query_values_redacted() {
        let long = format!("/{}", "a".repeat(10_000));
        let shown = redact_query(&long, Some("email=ada@example.com&k"));
        assert!(shown.len() < MAX_RECORDED_PATH + 32, "{}", shown.len());
        assert!(
            shown.ends_with(&format!(
                "…[{} bytes]",
                long.len() + "?email=REDACTED&k=REDACTED".len()
            )),
            "{shown}"
        );
        assert_eq!(
            redact_query("/v1/x", Some("email=ada@example.com&k")),
            "/v1/x?email=REDACTED&k=REDACTED"
        );
        let wide = "é".repeat(3_000);
        assert!(redact_query(&wide, None).contains('…'));
    }
}
