//! Outbound HTTP destination rules.
//!
//! Grammar: `[METHOD[,METHOD...] ]scheme://host[:port[-port]][/path-prefix]`.
//! `*.example.com` matches subdomains only; an internationalised name is
//! matched in its punycode form; an IP literal or a network written in
//! brackets (`[10.20.0.0/16]`, `[fd00::/8]`) matches requests to IP literals
//! inside it, and nothing else matches an IP. The port defaults from the
//! scheme; a range matches any port in it. The path prefix matches whole
//! segments of the normalised request path. An
//! entry may hold a template filled from the connection's config: `{{name}}`
//! as one whole host label, or `{{name}}` at the start standing for a whole
//! base URL (`{{base_url}}/crm/v3`). The filled rule is parsed and validated
//! like any other.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("missing scheme (write e.g. https://api.example.com)")]
    MissingScheme,
    #[error("unsupported scheme {0:?} (http or https)")]
    Scheme(String),
    #[error("unknown method {0:?}")]
    Method(String),
    #[error("invalid host {0:?}")]
    Host(String),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid path prefix {0:?}: {1}")]
    Path(String, &'static str),
    #[error("user info, query and fragment are not allowed in a destination")]
    ExtraParts,
    #[error("invalid template: {0}")]
    Template(String),
    #[error("template {{{{{0}}}}} has no value in the connection config")]
    MissingValue(String),
    #[error("template {{{{{name}}}}}: value {value:?} is not {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
}

/// One destination entry as declared in a manifest (possibly a template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    raw: String,
    methods: Option<Vec<String>>,
    url: String,
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Destination {
    /// Parse an entry; templates are checked for shape, and a template-free entry
    /// is fully validated now.
    pub fn parse(raw: &str) -> Result<Self, DestinationError> {
        let trimmed = raw.trim();
        let (methods, url) = match trimmed.split_once(' ') {
            Some((methods, url)) if !methods.contains("://") => {
                let methods = methods
                    .split(',')
                    .map(|m| {
                        let m = m.trim().to_ascii_uppercase();
                        if METHODS.contains(&m.as_str()) {
                            Ok(m)
                        } else {
                            Err(DestinationError::Method(m))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (Some(methods), url.trim())
            }
            _ => (None, trimmed),
        };
        let destination = Self {
            raw: trimmed.to_owned(),
            methods,
            url: url.to_owned(),
        };
        if destination.template_names().is_empty() {
            Rule::parse(url, destination.methods.clone())?;
        } else {
            // Fill every template with a harmless value to check the shape now, not at enable time.
            let sample: BTreeMap<String, String> = destination
                .template_names()
                .into_iter()
                .map(|name| {
                    let value = if url.starts_with("{{") {
                        "https://example.com"
                    } else {
                        "label"
                    };
                    (name, value.to_owned())
                })
                .collect();
            destination.fill(&sample)?;
        }
        Ok(destination)
    }

    /// Names of the `{{templates}}` in this entry.
    pub fn template_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.url.as_str();
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else {
                break;
            };
            names.push(rest[start + 2..start + end].trim().to_owned());
            rest = &rest[start + end + 2..];
        }
        names
    }

    /// Fill templates from `values` (the connection's config) and produce the rule.
    pub fn fill(&self, values: &BTreeMap<String, String>) -> Result<Rule, DestinationError> {
        Rule::parse(&self.filled_url(values)?, self.methods.clone())
    }

    /// The filled URL itself (for an endpoint the host calls, such as an OAuth2
    /// token URL), validated like a rule. Methods are not part of it.
    pub fn fill_url(&self, values: &BTreeMap<String, String>) -> Result<String, DestinationError> {
        let url = self.filled_url(values)?;
        Rule::parse(&url, None)?;
        Ok(url)
    }

    /// Whether the entry names methods (`GET,POST https://…`).
    pub fn has_methods(&self) -> bool {
        self.methods.is_some()
    }

    fn filled_url(&self, values: &BTreeMap<String, String>) -> Result<String, DestinationError> {
        let mut url = String::new();
        let mut rest = self.url.as_str();
        let mut first = true;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| DestinationError::Template("unclosed {{".into()))?
                + start;
            let name = rest[start + 2..end].trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(DestinationError::Template(format!("bad name {name:?}")));
            }
            let value = values
                .get(name)
                .ok_or_else(|| DestinationError::MissingValue(name.to_owned()))?;
            let whole_url = first && start == 0;
            if whole_url {
                check_base_url(name, value)?;
                url.push_str(value.trim_end_matches('/'));
            } else {
                // A label template must stand alone between dots in the host part.
                let before = &rest[..start];
                let after = &rest[end + 2..];
                let so_far = format!("{url}{before}");
                let in_host = so_far
                    .split_once("://")
                    .is_some_and(|(_, authority)| !authority.contains('/'));
                let label_start = so_far.ends_with("://") || so_far.ends_with('.');
                let label_end = after.is_empty() || after.starts_with(['.', ':', '/']);
                if !in_host || !label_start || !label_end {
                    return Err(DestinationError::Template(format!(
                        "{{{{{name}}}}} must be a whole host label or the whole base URL"
                    )));
                }
                if !is_dns_label(value) {
                    return Err(DestinationError::BadValue {
                        name: name.to_owned(),
                        value: value.clone(),
                        expected: "a single DNS label",
                    });
                }
                url.push_str(before);
                url.push_str(&value.to_ascii_lowercase());
            }
            rest = &rest[end + 2..];
            first = false;
        }
        url.push_str(rest);
        if url.contains("{{") || url.contains("}}") {
            return Err(DestinationError::Template("unbalanced braces".into()));
        }
        Ok(url)
    }
}

fn check_base_url(name: &str, value: &str) -> Result<(), DestinationError> {
    let bad = || DestinationError::BadValue {
        name: name.to_owned(),
        value: value.to_owned(),
        expected: "a base URL like https://host[:port][/path]",
    };
    Rule::parse(value, None).map(|_| ()).map_err(|_| bad())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
enum HostPattern {
    Exact(String),
    /// `*.suffix`: any host strictly below `suffix`.
    Subdomains(String),
    /// `[network/prefix]`: any IP literal inside the network.
    Network(ipnet::IpNet),
}

/// A concrete, filled destination rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    methods: Option<Vec<String>>,
    scheme: String,
    host: HostPattern,
    /// Inclusive range; one port is a range of one.
    ports: (u16, u16),
    /// Normalised, without trailing slash; empty means any path.
    path_prefix: String,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "http" { 80 } else { 443 }
}

impl Rule {
    fn parse(url: &str, methods: Option<Vec<String>>) -> Result<Self, DestinationError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(DestinationError::MissingScheme)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(DestinationError::Scheme(scheme));
        }
        if rest.contains(['@', '?', '#']) {
            return Err(DestinationError::ExtraParts);
        }
        // A bracketed host (IPv6, or a network) may hold a `/` of its own.
        let host_end = if rest.starts_with('[') {
            rest.find(']').unwrap_or(0)
        } else {
            0
        };
        let (authority, path) = match rest[host_end..].find('/') {
            Some(i) => rest.split_at(host_end + i),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| DestinationError::Host(authority.to_owned()))?;
        let ports = match port {
            Some(p) => parse_ports(p).ok_or_else(|| DestinationError::Port(p.to_owned()))?,
            None => (default_port(&scheme), default_port(&scheme)),
        };
        if host.contains('/') {
            let network = parse_network(host)?;
            return Ok(Self {
                methods,
                scheme,
                host: HostPattern::Network(network),
                ports,
                path_prefix: rule_path(path)?,
            });
        }
        let host = to_ascii_host(host)?;
        let host = normalise_host(&host).ok_or_else(|| DestinationError::Host(host.clone()))?;
        let host = match host.strip_prefix("*.") {
            Some(suffix) if suffix.contains('.') && !suffix.contains('*') => {
                HostPattern::Subdomains(suffix.to_owned())
            }
            Some(_) => {
                return Err(DestinationError::Host(format!(
                    "*.{host}: wildcard needs a domain with a dot"
                )));
            }
            None if host.contains('*') => return Err(DestinationError::Host(host)),
            None => HostPattern::Exact(host),
        };
        Ok(Self {
            methods,
            scheme,
            host,
            ports,
            path_prefix: rule_path(path)?,
        })
    }

    /// Whether a request with `method` to `scheme://authority/path` may go out.
    pub fn allows(
        &self,
        method: &str,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        path: &str,
    ) -> bool {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != self.scheme {
            return false;
        }
        let port = port.unwrap_or_else(|| default_port(&scheme));
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        let Some(host) = normalise_host(host) else {
            return false;
        };
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == *h,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostPattern::Network(network) => host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| network.contains(&ip)),
        };
        if !host_ok {
            return false;
        }
        if self.path_prefix.is_empty() {
            return true;
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        let Some(path) = normalise_path(path) else {
            return false;
        };
        path == self.path_prefix
            || path
                .strip_prefix(self.path_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `443` or `8000-8100` (inclusive; no zero, low before high).
fn parse_ports(text: &str) -> Option<(u16, u16)> {
    let one = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            (lo <= hi).then_some((lo, hi))
        }
        None => one(text).map(|p| (p, p)),
    }
}

/// A bracketed network: its address must be the network's own (no host bits).
fn parse_network(text: &str) -> Result<ipnet::IpNet, DestinationError> {
    let network: ipnet::IpNet = text.parse().map_err(|_| {
        DestinationError::Host(format!("[{text}]: not a network like [10.0.0.0/8]"))
    })?;
    if network.trunc() != network {
        return Err(DestinationError::Host(format!(
            "[{text}]: write the network address [{}]",
            network.trunc()
        )));
    }
    Ok(network)
}

/// An internationalised name in its ASCII (punycode) form; ASCII passes as is.
fn to_ascii_host(host: &str) -> Result<String, DestinationError> {
    if host.is_ascii() {
        return Ok(host.to_owned());
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", host),
    };
    idna::domain_to_ascii_strict(name)
        .map(|ascii| format!("{wildcard}{ascii}"))
        .map_err(|_| DestinationError::Host(format!("{host}: not a valid internationalised name")))
}

fn rule_path(path: &str) -> Result<String, DestinationError> {
    if path.is_empty() || path == "/" {
        return Ok(String::new());
    }
    let normalised = normalise_path(path).ok_or(DestinationError::Path(
        path.to_owned(),
        "it escapes the root or has bad percent-encoding",
    ))?;
    if normalised != path.trim_end_matches('/') {
        return Err(DestinationError::Path(
            path.to_owned(),
            "write it normalised (no `..`, `//` or percent-encoding)",
        ));
    }
    Ok(normalised)
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

/// Lowercase ASCII host without a trailing dot; `None` for anything else (a
/// non-ASCII host must be written in punycode, so look-alikes can't sneak in).
fn normalise_host(host: &str) -> Option<String> {
    // An IPv6 literal arrives bracketed from a URI authority (`[::1]`).
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || !host.is_ascii() {
        return None;
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host.to_ascii_lowercase());
    }
    let ok = host
        .split('.')
        .enumerate()
        .all(|(i, label)| (i == 0 && label == "*") || is_dns_label(label));
    ok.then(|| host.to_ascii_lowercase())
}

/// Percent-decode, then resolve `.`, `..` and empty segments. `None` when the
/// path escapes the root or its encoding is broken.
pub fn normalise_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Some(String::new());
    }
    Some(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(entry: &str) -> Rule {
        Destination::parse(entry)
            .expect("parses")
            .fill(&BTreeMap::new())
            .expect("fills")
    }

    fn allows(entry: &str, method: &str, url: &str) -> bool {
        let (scheme, rest) = url.split_once("://").expect("test url has scheme");
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        let (host, port) = split_host_port(authority).expect("test authority");
        rule(entry).allows(
            method,
            scheme,
            host,
            port.map(|p| p.parse().expect("port")),
            path,
        )
    }

    #[test]
    fn rule_matching_table() {
        let cases: &[(&str, &str, &str, bool)] = &[
            (
                "https://api.hubapi.com",
                "GET",
                "https://api.hubapi.com/crm/v3",
                true,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://API.HubApi.com/x",
                true,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://api.hubapi.com./x",
                true,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "http://api.hubapi.com/x",
                false,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://api.hubapi.com:8443/x",
                false,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://api.hubapi.com:443/x",
                true,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://evil.example/x",
                false,
            ),
            (
                "https://api.hubapi.com",
                "GET",
                "https://api.hubapi.com.evil.example/x",
                false,
            ),
            ("https://*.x.com", "GET", "https://a.x.com/", true),
            ("https://*.x.com", "GET", "https://a.b.x.com/", true),
            ("https://*.x.com", "GET", "https://x.com/", false),
            ("https://*.x.com", "GET", "https://evilx.com/", false),
            ("https://*.x.com", "GET", "https://.x.com/", false),
            (
                "http://127.0.0.1:8080",
                "GET",
                "http://127.0.0.1:8080/a",
                true,
            ),
            (
                "http://127.0.0.1:8080",
                "GET",
                "http://127.0.0.1:8081/a",
                false,
            ),
            ("https://a.com/crm/v3", "GET", "https://a.com/crm/v3", true),
            ("https://a.com/crm/v3", "GET", "https://a.com/crm/v3/", true),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3/objects",
                true,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3x",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3/../../admin",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/../admin",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com//crm//v3/ok",
                true,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm%2Fv3/ok",
                true,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3%2F..%2F..%2Fadmin",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3/%zz",
                false,
            ),
            ("https://a.com/crm/v3", "GET", "https://a.com/CRM/v3", false),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3?q=/admin",
                true,
            ),
            ("GET,HEAD https://a.com", "GET", "https://a.com/", true),
            ("GET,HEAD https://a.com", "head", "https://a.com/", true),
            ("GET,HEAD https://a.com", "POST", "https://a.com/", false),
            (
                "POST https://a.com/search",
                "POST",
                "https://a.com/search",
                true,
            ),
            (
                "POST https://a.com/search",
                "DELETE",
                "https://a.com/search",
                false,
            ),
            (
                "https://xn--bcher-kva.example",
                "GET",
                "https://xn--bcher-kva.example/",
                true,
            ),
            (
                "https://xn--bcher-kva.example",
                "GET",
                "https://bücher.example/",
                false,
            ),
            ("https://[::1]:9000", "GET", "https://[::1]:9000/", true),
            // Internationalised names match in punycode, however the rule was written.
            (
                "https://bücher.example",
                "GET",
                "https://xn--bcher-kva.example/",
                true,
            ),
            (
                "https://*.bücher.example",
                "GET",
                "https://shop.xn--bcher-kva.example/",
                true,
            ),
            (
                "https://bücher.example",
                "GET",
                "https://bucher.example/",
                false,
            ),
            // Port ranges, inclusive.
            (
                "https://a.com:8000-8100",
                "GET",
                "https://a.com:8000/",
                true,
            ),
            (
                "https://a.com:8000-8100",
                "GET",
                "https://a.com:8100/",
                true,
            ),
            (
                "https://a.com:8000-8100",
                "GET",
                "https://a.com:8101/",
                false,
            ),
            ("https://a.com:8000-8100", "GET", "https://a.com/", false),
            // Networks match IP literals inside them, never names.
            ("http://[10.20.0.0/16]", "GET", "http://10.20.3.4/x", true),
            ("http://[10.20.0.0/16]", "GET", "http://10.21.0.1/x", false),
            (
                "http://[10.20.0.0/16]:8080/api",
                "GET",
                "http://10.20.0.9:8080/api/v1",
                true,
            ),
            (
                "http://[10.20.0.0/16]:8080/api",
                "GET",
                "http://10.20.0.9:8080/admin",
                false,
            ),
            ("http://[fd00::/8]", "GET", "http://[fd12::1]/", true),
            ("http://[fd00::/8]", "GET", "http://[fe80::1]/", false),
            (
                "http://[10.20.0.0/16]",
                "GET",
                "http://internal.example/",
                false,
            ),
            // A name rule never matches an IP literal, even one it resolves to.
            ("https://a.com", "GET", "https://93.184.216.34/", false),
        ];
        for (entry, method, url, expected) in cases {
            assert_eq!(
                allows(entry, method, url),
                *expected,
                "{entry} vs {method} {url}"
            );
        }
    }

    #[test]
    fn refuses_malformed_entries_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("api.hubapi.com", "missing scheme"),
            ("ftp://a.com", "unsupported scheme"),
            ("https://api.hubapi.com@evil.example", "user info"),
            ("https://a.com?x=1", "user info, query"),
            ("https://a.com:99999", "invalid port"),
            ("https://a.com:0", "invalid port"),
            ("https://a.com:9000-8000", "invalid port"),
            ("https://a.com:1-", "invalid port"),
            ("https://[10.0.0.1/8]", "network address [10.0.0.0/8]"),
            ("https://[10.0.0.0/33]", "not a network"),
            ("https://bü cher.example", "internationalised"),
            ("https://*.com", "wildcard"),
            ("https://a.*.com", "invalid host"),
            ("https://a.com/x/../y", "normalised"),
            ("FETCH https://a.com", "unknown method"),
            ("https://{{a}}x.com", "whole host label"),
            ("https://{{}}.com", "bad name"),
            ("", "missing scheme"),
        ];
        for (entry, needle) in cases {
            let err = Destination::parse(entry).expect_err(entry).to_string();
            assert!(
                err.contains(needle),
                "{entry:?}: {err:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn fills_templates_from_config_and_validates_the_result() {
        let host = Destination::parse("https://{{instance}}.my.salesforce.com").expect("parses");
        let values = BTreeMap::from([("instance".to_owned(), "acme".to_owned())]);
        let rule = host.fill(&values).expect("fills");
        assert!(rule.allows("GET", "https", "acme.my.salesforce.com", None, "/"));
        assert!(!rule.allows("GET", "https", "evil.my.salesforce.com", None, "/"));

        let evil = BTreeMap::from([("instance".to_owned(), "evil.example/x".to_owned())]);
        assert!(matches!(
            host.fill(&evil),
            Err(DestinationError::BadValue { .. })
        ));
        assert!(matches!(
            host.fill(&BTreeMap::new()),
            Err(DestinationError::MissingValue(_))
        ));

        let base = Destination::parse("POST {{base_url}}/crm/v3").expect("parses");
        let values = BTreeMap::from([("base_url".to_owned(), "http://127.0.0.1:4000/".to_owned())]);
        let rule = base.fill(&values).expect("fills");
        assert!(rule.allows("POST", "http", "127.0.0.1", Some(4000), "/crm/v3/objects"));
        assert!(!rule.allows("GET", "http", "127.0.0.1", Some(4000), "/crm/v3/objects"));
        let bad = BTreeMap::from([(
            "base_url".to_owned(),
            "https://a.com@evil.example".to_owned(),
        )]);
        assert!(matches!(
            base.fill(&bad),
            Err(DestinationError::BadValue { .. })
        ));
    }

    #[test]
    fn matches_ipv6_hosts_written_with_or_without_brackets() {
        let rule = rule("https://[::1]:9000");
        assert!(rule.allows("GET", "https", "[::1]", Some(9000), "/"));
        assert!(rule.allows("GET", "https", "::1", Some(9000), "/"));
        assert!(!rule.allows("GET", "https", "[::2]", Some(9000), "/"));
    }

    #[test]
    fn empty_rule_list_denies_everything() {
        let rules: Vec<Rule> = Vec::new();
        assert!(
            !rules
                .iter()
                .any(|r| r.allows("GET", "https", "a.com", None, "/"))
        );
    }
}
