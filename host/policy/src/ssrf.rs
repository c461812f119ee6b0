//! Which IP addresses outbound requests may connect to.
//!
//! Every address a request would connect to, whether written as a literal or
//! produced by DNS, is classified here; only public unicast addresses pass,
//! unless the operator explicitly allows a CIDR (an on-premise CRM; tests allow
//! 127.0.0.1/32). An allowed CIDR matches the address exactly as resolved: an
//! IPv4-mapped IPv6 address is not its IPv4 address.

use crate::http::TargetHost;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address: public, or the reason it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressClass {
    /// Public unicast: the only class allowed without an operator CIDR.
    Public,
    /// 127.0.0.0/8 and ::1.
    Loopback,
    /// RFC 1918.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    /// 169.254.0.0/16 and fe80::/10, cloud metadata endpoints included.
    LinkLocal,
    /// 0.0.0.0/8 and ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 and 3fff::/20.
    Documentation,
    /// ::ffff:0:0/96.
    Ipv4Mapped,
    /// ::/96 (deprecated IPv4-compatible addresses).
    Ipv4Compatible,
    /// 64:ff9b::/96 and 64:ff9b:1::/48.
    Nat64,
    /// 2002::/16.
    SixToFour,
    /// 2001::/32.
    Teredo,
    /// fc00::/7, AWS's fd00:ec2::254 metadata endpoint included.
    UniqueLocal,
    /// Reserved, benchmarking, IETF protocol assignments and other special ranges.
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// A range table, parsed once: classification runs for every outbound request.
type Table = std::sync::LazyLock<Vec<(IpNet, AddressClass)>>;

fn parse_table(rows: &[(&str, AddressClass)]) -> Vec<(IpNet, AddressClass)> {
    rows.iter()
        .map(|(net, class)| (net.parse().expect("constant CIDR parses"), *class))
        .collect()
}

fn lookup(table: &Table, ip: IpAddr) -> AddressClass {
    table
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map_or(AddressClass::Public, |(_, class)| *class)
}

static V4: Table = std::sync::LazyLock::new(|| {
    parse_table(&[
        ("0.0.0.0/8", AddressClass::Unspecified),
        ("127.0.0.0/8", AddressClass::Loopback),
        ("10.0.0.0/8", AddressClass::Private),
        ("172.16.0.0/12", AddressClass::Private),
        ("192.168.0.0/16", AddressClass::Private),
        ("100.64.0.0/10", AddressClass::SharedAddressSpace),
        ("169.254.0.0/16", AddressClass::LinkLocal),
        ("192.0.0.0/24", AddressClass::Reserved),
        ("192.0.2.0/24", AddressClass::Documentation),
        ("198.51.100.0/24", AddressClass::Documentation),
        ("203.0.113.0/24", AddressClass::Documentation),
        ("192.88.99.0/24", AddressClass::Reserved),
        ("198.18.0.0/15", AddressClass::Reserved),
        ("224.0.0.0/4", AddressClass::Multicast),
        ("255.255.255.255/32", AddressClass::Broadcast),
        ("240.0.0.0/4", AddressClass::Reserved),
    ])
});

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    lookup(&V4, IpAddr::V4(ip))
}

// Order matters: Teredo and documentation sit inside the wider 2001::/23.
static V6: Table = std::sync::LazyLock::new(|| {
    parse_table(&[
        ("::ffff:0:0/96", AddressClass::Ipv4Mapped),
        ("::/96", AddressClass::Ipv4Compatible),
        ("64:ff9b::/96", AddressClass::Nat64),
        ("64:ff9b:1::/48", AddressClass::Nat64),
        ("100::/64", AddressClass::Reserved),
        ("2001::/32", AddressClass::Teredo),
        ("2001:db8::/32", AddressClass::Documentation),
        ("3fff::/20", AddressClass::Documentation),
        ("2001::/23", AddressClass::Reserved),
        ("2002::/16", AddressClass::SixToFour),
        ("fc00::/7", AddressClass::UniqueLocal),
        ("fe80::/10", AddressClass::LinkLocal),
        ("fec0::/10", AddressClass::Reserved),
        ("ff00::/8", AddressClass::Multicast),
    ])
});

static GLOBAL_UNICAST: std::sync::LazyLock<IpNet> =
    std::sync::LazyLock::new(|| "2000::/3".parse().expect("constant CIDR parses"));

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let addr = IpAddr::V6(ip);
    let class = lookup(&V6, addr);
    // Only the global unicast block 2000::/3 is public; anything else unlisted is reserved.
    if class == AddressClass::Public && !GLOBAL_UNICAST.contains(&addr) {
        return AddressClass::Reserved;
    }
    class
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Operator egress policy: the CIDRs allowed even though they are not public.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressPolicy {
    /// Networks allowed although not public (an on-premise system). An
    /// address matches as resolved: `::ffff:10.0.0.1` is not in `10.0.0.0/8`.
    pub allowed_cidrs: Vec<IpNet>,
}

impl AddressPolicy {
    /// Check a request's host before anything is sent: an address here,
    /// a name as it resolves (in the resolver).
    pub fn allows_host(&self, host: &TargetHost) -> Result<(), (IpAddr, AddressClass)> {
        match host {
            TargetHost::Ip(ip) => self.allows(*ip).map_err(|class| (*ip, class)),
            TargetHost::Name(_) => Ok(()),
        }
    }

    /// Allow connecting to `ip`? `Err` carries the class that refused it.
    pub fn allows(&self, ip: IpAddr) -> Result<(), AddressClass> {
        if self.allowed_cidrs.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Public => Ok(()),
            refused => Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_special_range() {
        let cases: &[(&str, AddressClass)] = &[
            ("8.8.8.8", AddressClass::Public),
            ("93.184.216.34", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.255.254", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("100.127.255.254", AddressClass::SharedAddressSpace),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("255.255.255.255", AddressClass::Broadcast),
            ("224.0.0.1", AddressClass::Multicast),
            ("239.255.255.250", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("192.0.2.1", AddressClass::Documentation),
            ("198.51.100.7", AddressClass::Documentation),
            ("203.0.113.9", AddressClass::Documentation),
            ("2001:db8::1", AddressClass::Documentation),
            ("::ffff:127.0.0.1", AddressClass::Ipv4Mapped),
            ("::ffff:8.8.8.8", AddressClass::Ipv4Mapped),
            ("::127.0.0.1", AddressClass::Ipv4Compatible),
            ("64:ff9b::7f00:1", AddressClass::Nat64),
            ("64:ff9b:1::1", AddressClass::Nat64),
            ("2002:7f00:1::1", AddressClass::SixToFour),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", AddressClass::Teredo),
            ("fd00:ec2::254", AddressClass::UniqueLocal),
            ("fc00::1", AddressClass::UniqueLocal),
            ("240.0.0.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("192.0.0.8", AddressClass::Reserved),
            ("100::1", AddressClass::Reserved),
            ("fec0::1", AddressClass::Reserved),
            ("4000::1", AddressClass::Reserved),
        ];
        for (ip, expected) in cases {
            let ip: IpAddr = ip.parse().expect(ip);
            assert_eq!(classify(ip), *expected, "{ip}");
        }
    }

    #[test]
    fn operator_cidrs_allow_exactly_what_they_name() {
        let policy = AddressPolicy {
            allowed_cidrs: vec![
                "127.0.0.1/32".parse().expect("cidr"),
                "10.20.0.0/16".parse().expect("cidr"),
            ],
        };
        let allowed = ["127.0.0.1", "10.20.3.4", "8.8.8.8"];
        let refused = [
            "127.0.0.2",
            "10.21.0.1",
            "::ffff:127.0.0.1",
            "::1",
            "169.254.169.254",
        ];
        for ip in allowed {
            assert_eq!(policy.allows(ip.parse().expect(ip)), Ok(()), "{ip}");
        }
        for ip in refused {
            assert!(policy.allows(ip.parse().expect(ip)).is_err(), "{ip}");
        }
        assert_eq!(
            AddressPolicy::default().allows("127.0.0.1".parse().expect("ip")),
            Err(AddressClass::Loopback),
            "loopback is refused unless allowed"
        );
    }
}
