//! Client addresses: which address a request comes from, and how addresses are grouped for
//! limits.
//!
//! - [`AddressGroup`]: an IPv4 address, or an IPv6 address's /64 — one subscriber usually holds
//!   a whole /64, so limiting single IPv6 addresses would limit nothing.
//! - [`TrustedProxies`]: the configured proxy addresses (`--trusted-proxies`). Only a request
//!   whose peer is one of them may say, in `Forwarded` (RFC 7239) or else `X-Forwarded-For`,
//!   whom it forwards for; anyone else could claim any address. The chain is read from the
//!   right, skipping trusted proxies: the first address that is not one is the client.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

/// What per-address limits count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressGroup {
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl AddressGroup {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6(prefix)
            }
        }
    }
}

/// Networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks, e.g.
    /// `10.0.0.0/8, 127.0.0.1, fd00::/8`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("`{item}` is not an IP address or network"))?;
            let addr = addr.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{item}`: the prefix length must be a number from 0 to {max}"))?,
                None => max,
            };
            networks.push((addr, bits));
        }
        Ok(Self(networks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, bits)| same_prefix(*net, ip, *bits))
    }

    /// The client's address: `peer` itself unless `peer` is a trusted proxy, in which case the
    /// forwarding chain is followed as far as trusted proxies reach. An entry that is not an
    /// address (`unknown`, an obfuscated name, garbage) ends the walk at the hop that sent it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            let Some(ip) = hop else {
                return client;
            };
            client = *ip;
            if !self.contains(*ip) {
                return client;
            }
        }
        client
    }
}

fn same_prefix(net: IpAddr, ip: IpAddr, bits: u8) -> bool {
    let (net, ip, width) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(n.to_bits()), u128::from(i.to_bits()), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
        _ => return false,
    };
    let bits = u32::from(bits);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (ip >> shift)
}

/// The forwarding chain, client first: from every `Forwarded` header's `for=` parameters, or,
/// when there is none, from `X-Forwarded-For`. `None` marks an entry that is no address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all("forwarded")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| parse_node(value.trim().trim_matches('"')))
            })
        })
        .map(Option::flatten)
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(|node| parse_node(node.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:8080` or a bare IPv6 address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, _port) = rest.split_once(']')?;
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64_bit_prefix() {
        assert_eq!(AddressGroup::of(ip("2001:db8:1:2::1")), AddressGroup::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(AddressGroup::of(ip("2001:db8:1:2::1")), AddressGroup::of(ip("2001:db8:1:3::1")));
        assert_eq!(AddressGroup::of(ip("::ffff:192.0.2.1")), AddressGroup::of(ip("192.0.2.1")));
        assert_ne!(AddressGroup::of(ip("192.0.2.1")), AddressGroup::of(ip("192.0.2.2")));
    }

    #[test]
    fn networks_are_matched_by_prefix() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1 ,fd00::/8").unwrap();
        assert!(proxies.contains(ip("10.1.2.3")));
        assert!(proxies.contains(ip("127.0.0.1")));
        assert!(proxies.contains(ip("::ffff:127.0.0.1")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(!proxies.contains(ip("fe80::1")));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let claim = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(proxies.client_ip(ip("198.51.100.1"), &claim), ip("198.51.100.1"), "an untrusted peer's claim");
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &claim), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::default().client_ip(ip("10.0.0.2"), &claim), ip("10.0.0.2"), "nothing trusted");
    }

    #[test]
    fn the_chain_is_read_from_the_right_past_trusted_hops_only() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client put a fake address first; the proxies appended what they saw.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &spoofed), ip("203.0.113.9"));
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.7")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &all_trusted), ip("10.0.0.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), &garbage),
            ip("10.0.0.2"),
            "a hop that is no address stops the walk"
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_its_forms_are_understood() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let both = headers(&[
            ("forwarded", "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.5"),
            ("x-forwarded-for", "198.51.100.3"),
        ]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &both), ip("2001:db8::7"));
        let with_port = headers(&[("forwarded", "For=192.0.2.60:8080;by=10.0.0.1")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &with_port), ip("192.0.2.60"));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &unknown), ip("10.0.0.2"));
    }
}
