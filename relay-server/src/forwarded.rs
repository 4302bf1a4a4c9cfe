//! Who a request really came from when relay runs behind reverse proxies
//! (`--trusted-proxy CIDR`): which peers' `X-Forwarded-*` headers are
//! believed, and the visitor's address they carry. The headers the local
//! app gets are `relay_shared::http::add_forwarded`'s; the per-connection
//! facts are [`crate::listen::Visitor`]'s.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Most `X-Forwarded-For` entries looked at, from the right, when finding
/// the visitor's address: a chain longer than this many proxies is not a
/// real deployment, and a visitor cannot make each request cost more.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// The networks whose `X-Forwarded-*` headers are believed. Empty (the
/// default) trusts no one: every request's headers are replaced with what
/// relay saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4 address that
    /// arrived as IPv6 (`::ffff:a.b.c.d`, on a dual-stack listener) is
    /// compared as IPv4, as written in the CIDR.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The visitor's address: `peer` itself unless it is a trusted proxy;
    /// then the rightmost `X-Forwarded-For` address that is not a trusted
    /// proxy (the standard algorithm: entries left of it could have been
    /// written by the visitor). An entry that is not an address stops the
    /// walk at the last trusted hop, which is the nearest address known to
    /// be true; so does a chain of only trusted proxies (its leftmost).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut nearest = peer;
        // Header lines in order, entries right to left: the last line's
        // last entry is the hop nearest to us.
        let entries = headers
            .get_all(&XFF)
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
            .take(MAX_FORWARDED_HOPS);
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                return nearest;
            };
            if !self.contains(ip) {
                return ip;
            }
            nearest = ip;
        }
        nearest
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`203.0.113.7:5100`, `[2001:db8::1]:80`) as some proxies write it.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().expect("test CIDR")).collect())
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(XFF, HeaderValue::from_str(l).expect("test value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn an_untrusted_peer_is_the_visitor_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.2.3.4"]);
        assert_eq!(t.client_ip(ip("192.0.2.9"), &h), ip("192.0.2.9"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_visitor() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        // A visitor's forged entry on the left is passed over.
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.0.0.2"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.7"));
        // Across header lines, with ports and spaces.
        let h = xff(&["6.6.6.6", " 203.0.113.7:5100 ,10.1.1.1"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        let h = xff(&["[2001:db8::1]:80"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_or_only_proxies_stop_at_the_nearest_known_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.7, nonsense, 10.0.0.3"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.3"));
        let h = xff(&["10.0.0.5, 10.0.0.3"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.5"));
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_mapped_ipv4_peer_matches_an_ipv4_cidr() {
        let t = trusted(&["127.0.0.1/32"]);
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(!t.contains(ip("::1")));
    }

    #[test]
    fn a_long_chain_is_cut() {
        let t = trusted(&["10.0.0.0/8"]);
        let chain = vec!["10.0.0.9"; MAX_FORWARDED_HOPS + 5].join(", ");
        let h = xff(&[&format!("203.0.113.7, {chain}")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.9"));
    }
}
