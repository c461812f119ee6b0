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
use std::net::IpAddr;

/// Why a destination entry, a filled template or a request URL is refused;
/// the message names the part at fault, for a vendor's manifest error or a
/// plugin's denied request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// No `scheme://` before the host.
    #[error("missing scheme (write e.g. https://api.example.com)")]
    MissingScheme,
    /// A scheme other than `http` or `https`.
    #[error("unsupported scheme {0:?} (http or https)")]
    Scheme(String),
    /// A method outside GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS.
    #[error("unknown method {0:?}")]
    Method(String),
    /// Neither a DNS name nor an IP address or network, or a wildcard
    /// out of place; the text says which.
    #[error("invalid host {0:?}")]
    Host(String),
    /// A port or port range that is not a number, is zero, or runs high to low.
    #[error("invalid port {0:?}")]
    Port(String),
    /// A path prefix that escapes the root, is badly percent-encoded or is
    /// not written normalised: the prefix, and why.
    #[error("invalid path prefix {0:?}: {1}")]
    Path(String, &'static str),
    /// User info, a query or a fragment, which a destination never holds (and
    /// a request URL never holds user info).
    #[error("user info, query and fragment are not allowed in a destination")]
    ExtraParts,
    /// A request URL the URL parser refuses; the parser's reason.
    #[error("invalid URL: {0}")]
    Url(String),
    /// A `{{template}}` of the wrong shape: unclosed, a bad name, unbalanced
    /// braces, or neither a whole host label nor the whole base URL.
    #[error("invalid template: {0}")]
    Template(String),
    /// A template whose name the connection's config does not set.
    #[error("template {{{{{0}}}}} has no value in the connection config")]
    MissingValue(String),
    /// A config value that cannot fill its template.
    #[error("template {{{{{name}}}}}: value {value:?} is not {expected}")]
    BadValue {
        /// The template's name.
        name: String,
        /// The config value given.
        value: String,
        /// What the template needs (`a single DNS label`, a base URL).
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
                match parse_host(suffix)? {
                    TargetHost::Name(name) => HostPattern::Subdomains(name),
                    TargetHost::Ip(_) => {
                        return Err(DestinationError::Host(format!(
                            "*.{suffix}: a wildcard needs a domain, not an IP address"
                        )));
                    }
                }
            }
            Some(_) => {
                return Err(DestinationError::Host(format!(
                    "{host}: wildcard needs a domain with a dot"
                )));
            }
            None if host.contains('*') => return Err(DestinationError::Host(host)),
            // `127.1`, `0x7f000001` and the like are the IP addresses the
            // client would dial: such a rule is that address, never a name.
            None => match parse_host(&host)? {
                TargetHost::Name(name) => HostPattern::Exact(name),
                TargetHost::Ip(ip) => HostPattern::Network(ipnet::IpNet::from(ip)),
            },
        };
        Ok(Self {
            methods,
            scheme,
            host,
            ports,
            path_prefix: rule_path(path)?,
        })
    }

    /// The one address this rule names, when it names exactly one
    /// (`http://10.0.0.5:8080`, `http://127.1`), for a status check
    /// against the address policy before any call.
    pub fn single_address(&self) -> Option<IpAddr> {
        match &self.host {
            HostPattern::Network(net) if net.prefix_len() == net.max_prefix_len() => {
                Some(net.addr())
            }
            _ => None,
        }
    }

    /// Whether a request to `target` may go out.
    pub fn allows(&self, target: &Target) -> bool {
        if let Some(methods) = &self.methods
            && !methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&target.method))
        {
            return false;
        }
        if target.scheme() != self.scheme {
            return false;
        }
        if target.port < self.ports.0 || target.port > self.ports.1 {
            return false;
        }
        let host_ok = match (&self.host, &target.host) {
            (HostPattern::Exact(h), TargetHost::Name(name)) => name == h,
            (HostPattern::Subdomains(suffix), TargetHost::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Network(network), TargetHost::Ip(ip)) => network.contains(ip),
            // A name rule never matches an address, nor a network a name.
            _ => false,
        };
        if !host_ok {
            return false;
        }
        if self.path_prefix.is_empty() {
            return true;
        }
        let Some(path) = normalise_path(target.path()) else {
            return false;
        };
        path == self.path_prefix
            || path
                .strip_prefix(self.path_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// A request's host as the HTTP client will dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A DNS name: lowercase ASCII (punycode), without a trailing dot.
    Name(String),
    /// An address, however it was written (`127.1`, `0x7f000001`, `[::ffff:7f00:1]`…).
    Ip(IpAddr),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parse a host exactly as WHATWG URL parsing does (the parser the HTTP
/// client uses): every form that the client would dial as an IPv4 address
/// (decimal, hex, octal, shortened, a trailing dot) comes out as that address.
pub fn parse_host(host: &str) -> Result<TargetHost, DestinationError> {
    let bad = |why: &str| DestinationError::Host(format!("{host}: {why}"));
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(TargetHost::Ip(ip));
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => Ok(TargetHost::Ip(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(TargetHost::Ip(IpAddr::V6(ip))),
        Ok(url::Host::Domain(name)) => normalise_host(&name)
            .map(TargetHost::Name)
            .ok_or_else(|| bad("not a valid DNS name")),
        Err(e) => Err(bad(&format!("neither a DNS name nor an IP address ({e})"))),
    }
}

/// One outbound request's destination, parsed once. Every decision about the
/// request (destination rules, credentials, the address policy, the audit
/// record) is made on this value, and the client is handed this same URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request's method, uppercase.
    pub method: String,
    /// The URL as the client sends it.
    pub url: url::Url,
    /// The host the client will dial, parsed as the client parses it.
    pub host: TargetHost,
    /// Explicit, or the scheme's default.
    pub port: u16,
}

impl Target {
    /// Parse `url` (http or https, a host, no user info) for a `method` request.
    pub fn parse(method: &str, url: &str) -> Result<Self, DestinationError> {
        let url = url::Url::parse(url).map_err(|e| DestinationError::Url(e.to_string()))?;
        Self::from_url(method, url)
    }

    /// [`parse`](Self::parse) for a URL already parsed (an OAuth2 token
    /// endpoint): http or https, a host, no user info.
    pub fn from_url(method: &str, url: url::Url) -> Result<Self, DestinationError> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(DestinationError::Scheme(scheme.to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DestinationError::ExtraParts);
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => {
                TargetHost::Name(normalise_host(name).ok_or_else(|| {
                    DestinationError::Host(format!("{name}: not a valid DNS name"))
                })?)
            }
            Some(url::Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
            None => return Err(DestinationError::Host("the URL has no host".into())),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or_else(|| default_port(scheme));
        Ok(Self {
            method: method.to_ascii_uppercase(),
            host,
            port,
            url,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The path as the client sends it: percent-encoded, not normalised.
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// `scheme://host:port`, canonical: rate limits and breakers are kept per origin.
    pub fn origin(&self) -> String {
        match self.host {
            TargetHost::Ip(IpAddr::V6(ip)) => format!("{}://[{ip}]:{}", self.scheme(), self.port),
            ref host => format!("{}://{host}:{}", self.scheme(), self.port),
        }
    }

    /// The address to check before connecting, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            TargetHost::Ip(ip) => Some(ip),
            TargetHost::Name(_) => None,
        }
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
/// path escapes the root or its encoding is broken. An encoded `/` or `\`
/// stays encoded, inside its segment: the client sends it so, and an
/// upstream reads it as part of that segment, never as a separator.
pub fn normalise_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if byte == b'/' || byte == b'\\' {
                decoded.push(b'%');
                decoded.extend(hex.iter().map(u8::to_ascii_uppercase));
            } else {
                decoded.push(byte);
            }
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

/// The destination rules one call's requests are held to, handed to its
/// HTTP gate once: those the workspace approved, those it did not (only to
/// say why a request was refused), and the operator's.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// Declared by the manifest and approved by the workspace, templates filled.
    pub approved: std::sync::Arc<[Rule]>,
    /// Declared but not approved.
    pub unapproved: std::sync::Arc<[Rule]>,
    /// When set, a request must also match one of these (operator policy).
    pub operator: Option<std::sync::Arc<[Rule]>>,
}

/// Whether the destination rules let a request through, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An approved rule matches, and operator policy allows it.
    Allowed,
    /// An approved rule matches, but no rule of the operator's does.
    RefusedByOperator,
    /// Only a rule the workspace has not approved matches.
    Unapproved,
    /// The plugin declares no destinations at all.
    NoneDeclared,
    /// No declared rule matches.
    NoMatch,
}

impl Verdict {
    /// Why a request was refused, as the plugin and the audit trail read it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::RefusedByOperator => "operator policy does not allow this destination",
            Self::Unapproved => "the destination is declared but the workspace has not approved it",
            Self::NoneDeclared => "the plugin declares no HTTP destinations",
            Self::NoMatch => "no declared destination matches",
        }
    }
}

impl Destinations {
    /// No destinations at all: every request is refused.
    pub fn none() -> Self {
        Self {
            approved: std::sync::Arc::from(Vec::new()),
            unapproved: std::sync::Arc::from(Vec::new()),
            operator: None,
        }
    }

    /// The verdict on `target`: each list of rules is walked at most once.
    pub fn verdict(&self, target: &Target) -> Verdict {
        let matches = |rules: &[Rule]| rules.iter().any(|rule| rule.allows(target));
        if matches(&self.approved) {
            if operator_allows(self.operator.as_deref(), target) {
                Verdict::Allowed
            } else {
                Verdict::RefusedByOperator
            }
        } else if matches(&self.unapproved) {
            Verdict::Unapproved
        } else if self.approved.is_empty() && self.unapproved.is_empty() {
            Verdict::NoneDeclared
        } else {
            Verdict::NoMatch
        }
    }
}

/// Whether the operator's destination rules let a request to `target`
/// through: any target when the operator set none (`None`), else only one
/// a rule matches. Plugins' requests and the host's own token requests are
/// held to it alike.
pub fn operator_allows(operator: Option<&[Rule]>, target: &Target) -> bool {
    operator.is_none_or(|rules| rules.iter().any(|rule| rule.allows(target)))
}

/// A refused request, kept for the invocation's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    /// The method the plugin used.
    pub method: String,
    /// The URL as logs show it: query values redacted, host and path cut to size.
    pub url: String,
    /// Why it was refused, for the tenant and the operator.
    pub reason: String,
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

    /// A request whose URL does not parse is refused before any rule.
    fn allows(entry: &str, method: &str, url: &str) -> bool {
        Target::parse(method, url).is_ok_and(|t| rule(entry).allows(&t))
    }

    fn target(method: &str, url: &str) -> Target {
        Target::parse(method, url).expect("test url parses")
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
            // An encoded slash is part of its segment, as the upstream reads it.
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm%2Fv3/ok",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/x%2F..%2Fcrm/v3/o",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/x%5C..%5Ccrm/v3/o",
                false,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3/group%2Fproject",
                true,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/%63rm/v3/o",
                true,
            ),
            (
                "https://a.com/crm/v3",
                "GET",
                "https://a.com/crm/v3/%+F",
                false,
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
            // The client dials the punycode form, so that is what is matched.
            (
                "https://xn--bcher-kva.example",
                "GET",
                "https://bücher.example/",
                true,
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
        assert!(rule.allows(&target("GET", "https://acme.my.salesforce.com/")));
        assert!(!rule.allows(&target("GET", "https://evil.my.salesforce.com/")));

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
        assert!(rule.allows(&target("POST", "http://127.0.0.1:4000/crm/v3/objects")));
        assert!(!rule.allows(&target("GET", "http://127.0.0.1:4000/crm/v3/objects")));
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
    fn matches_ipv6_hosts_in_any_spelling() {
        let rule = rule("https://[::1]:9000");
        assert!(rule.allows(&target("GET", "https://[::1]:9000/")));
        assert!(rule.allows(&target("GET", "https://[0:0:0:0:0:0:0:1]:9000/")));
        assert!(!rule.allows(&target("GET", "https://[::2]:9000/")));
    }

    #[test]
    fn empty_rule_list_denies_everything() {
        let rules: Vec<Rule> = Vec::new();
        assert!(
            !rules
                .iter()
                .any(|r| r.allows(&target("GET", "https://a.com/")))
        );
    }

    /// Every way WHATWG URL parsing lets one write `ip` as a host.
    fn ipv4_spellings(ip: std::net::Ipv4Addr) -> Vec<String> {
        let [a, b, c, d] = ip.octets();
        let n = u32::from(ip);
        let low16 = (u32::from(c) << 8) | u32::from(d);
        let low24 = (u32::from(b) << 16) | low16;
        vec![
            ip.to_string(),
            format!("{n}"),
            format!("0x{n:x}"),
            format!("0X{n:08X}"),
            format!("0{n:o}"),
            format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
            format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
            format!("{a:04o}.{b:04o}.{c:04o}.{d:04o}"),
            format!("{a}.{b}.{low16}"),
            format!("{a}.{low24}"),
            format!("0x{a:x}.{low24}"),
            format!("{a}.0x{b:x}.{low16}"),
            format!("{ip}."),
            format!("{n}."),
            format!("{a}%2E{b}%2E{c}%2E{d}"),
            format!("{a}\u{3002}{b}\u{3002}{c}\u{3002}{d}"),
            ip.to_string()
                .chars()
                .map(|ch| match ch.to_digit(10) {
                    Some(digit) => char::from_u32(0xFF10 + digit).unwrap_or(ch),
                    None => ch,
                })
                .collect(),
        ]
    }

    #[test]
    fn non_canonical_ipv4_hosts_are_the_address_they_mean_and_refused_as_such() {
        use crate::ssrf::{AddressClass, AddressPolicy};
        let refused: &[(&str, AddressClass)] = &[
            ("127.0.0.1", AddressClass::Loopback),
            ("127.1.2.3", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("10.0.0.1", AddressClass::Private),
            ("192.168.1.20", AddressClass::Private),
            ("172.16.0.5", AddressClass::Private),
            ("100.100.100.200", AddressClass::SharedAddressSpace),
            ("0.0.0.0", AddressClass::Unspecified),
        ];
        let policy = AddressPolicy::default();
        for (ip, class) in refused {
            let ip: std::net::Ipv4Addr = ip.parse().expect("test ip");
            for form in ipv4_spellings(ip) {
                let url = format!("http://{form}:8080/x");
                let parsed = Target::parse("GET", &url).expect(&url);
                assert_eq!(parsed.host, TargetHost::Ip(ip.into()), "{url}");
                assert_eq!(policy.allows(ip.into()), Err(*class), "{url}");
                assert_eq!(
                    parsed.url.host_str(),
                    Some(ip.to_string().as_str()),
                    "{url}"
                );
                // A rule written the same way is that address: it matches the
                // canonical form, and never a name. (A percent-encoded host is
                // refused in a rule instead.)
                let written = Destination::parse(&format!("http://{form}:8080"));
                if form.contains('%') {
                    assert!(written.is_err(), "{form}");
                    continue;
                }
                let rule = written.expect(&form).fill(&BTreeMap::new()).expect(&form);
                assert!(
                    rule.allows(&target("GET", &format!("http://{ip}:8080/x"))),
                    "{form}"
                );
                assert!(
                    !rule.allows(&target("GET", "http://example.com:8080/x")),
                    "{form}"
                );
            }
        }
    }

    #[test]
    fn ipv6_spellings_of_internal_addresses_are_refused() {
        use crate::ssrf::AddressPolicy;
        let forms = [
            "[::1]",
            "[0:0:0:0:0:0:0:1]",
            "[0000:0000::0001]",
            "[::]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::FFFF:7F00:0001]",
            "[::127.0.0.1]",
            "[::ffff:169.254.169.254]",
            "[::ffff:a9fe:a9fe]",
            "[::ffff:10.0.0.1]",
            "[64:ff9b::127.0.0.1]",
            "[64:ff9b::a9fe:a9fe]",
            "[2002:7f00:1::]",
            "[2002:a9fe:a9fe::1]",
            "[fe80::1]",
            "[FE80::a9fe:a9fe]",
            "[fd00:ec2::254]",
            "[fc00::1]",
            "[ff02::1]",
        ];
        let policy = AddressPolicy::default();
        for form in forms {
            let url = format!("http://{form}:8080/x");
            let target = Target::parse("GET", &url).expect(&url);
            let ip = target.ip().expect("an IPv6 host is an address");
            assert!(policy.allows(ip).is_err(), "{url} parsed to {ip}, allowed");
        }
    }

    #[test]
    fn one_origin_however_the_host_is_written() {
        for url in ["https://A.com/x", "https://a.com./y", "https://a.com:443/"] {
            assert_eq!(target("GET", url).origin(), "https://a.com:443", "{url}");
        }
        assert_eq!(
            target("GET", "http://[::1]:8080/").origin(),
            "http://[::1]:8080"
        );
        assert_eq!(
            target("GET", "http://127.1:8080/").origin(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn hosts_that_are_neither_names_nor_addresses_are_refused() {
        for host in [
            "1.2.3.4.5",
            "256.0.0.1",
            "0x100000000",
            "1.2.3.08",
            "example.0x10",
            "a..b",
        ] {
            assert!(
                Destination::parse(&format!("http://{host}")).is_err(),
                "rule {host} should be refused"
            );
            assert!(
                Target::parse("GET", &format!("http://{host}/")).is_err(),
                "request to {host} should be refused"
            );
        }
        assert!(Destination::parse("https://*.127.1").is_err());
        assert!(Target::parse("GET", "http://user:pw@example.com/").is_err());
        assert!(Target::parse("GET", "ftp://example.com/").is_err());
        assert!(Target::parse("GET", "http://[fe80::1%25eth0]/").is_err());
    }
}
