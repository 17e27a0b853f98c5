//! The address clients use to reach the gateway, for every link it writes.
//!
//! Decided by the handlers that write links, from the request's headers and peer:
//! `X-Forwarded-Proto`, `-Host` and `-Prefix` when the peer is a trusted proxy; else the
//! configured `public_url`; else `http://` (`https://` for a request that came over the
//! gateway's own TLS, [`OverTls`]) and the request's `Host`. A client outside the
//! trusted set cannot forge its links, and nothing that is not a valid authority or path ever
//! reaches one. Requests that write no link (most of them) never pay for it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{header, Extensions, HeaderMap};

/// An IP network, `10.0.0.0/8` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').map_or((s, None), |(ip, p)| (ip, Some(p)));
        let network: IpAddr = ip.trim().parse().map_err(|_| format!("`{s}` is not an IP address or network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}` has a bad prefix length"))?
            }
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    /// Whether this is every address (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask(u128::from(u32::from(n)), u128::from(u32::from(a)), self.prefix, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(u128::from(n), u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(network: u128, addr: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= 128 || (network >> shift) == (addr >> shift)
}

/// Marks a request that arrived over TLS on the gateway's own listener: its links default to
/// `https://`.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// How origins are decided.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    /// The configured public URL, without a trailing slash.
    pub configured: Option<String>,
    pub trusted_proxies: Vec<Cidr>,
}

impl OriginPolicy {
    /// Scheme, host and path prefix (no trailing slash) of the gateway as this client sees it,
    /// from a request's headers and extensions (its peer, whether it came over TLS).
    pub fn origin(&self, headers: &HeaderMap, extensions: &Extensions) -> String {
        self.url(headers, extensions, "")
    }

    /// The origin followed by `path`, made in one allocation.
    pub fn url(&self, headers: &HeaderMap, extensions: &Extensions, path: &str) -> String {
        let [scheme, host, prefix] = self.parts(headers, extensions);
        [scheme, host, prefix, path].concat()
    }

    /// The origin's pieces, borrowed from the policy or the request.
    fn parts<'a>(&'a self, headers: &'a HeaderMap, extensions: &Extensions) -> [&'a str; 3] {
        if peer(extensions).is_some_and(|ip| self.trusted_proxies.iter().any(|c| c.contains(ip))) {
            if let Some(forwarded) = forwarded_origin(headers) {
                return forwarded;
            }
        }
        if let Some(url) = &self.configured {
            return [url, "", ""];
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| valid_authority(h));
        let scheme = if extensions.get::<OverTls>().is_some() { "https://" } else { "http://" };
        [scheme, host.unwrap_or("localhost"), ""]
    }
}

fn valid_authority(host: &str) -> bool {
    !host.contains('@') && host.parse::<http::uri::Authority>().is_ok()
}

/// `X-Forwarded-Host` (first value), with `-Proto` (`http` or `https`) and `-Prefix`.
fn forwarded_origin(headers: &HeaderMap) -> Option<[&str; 3]> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host").filter(|h| valid_authority(h))?;
    let scheme = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https://",
        _ => "http://",
    };
    let prefix = first("x-forwarded-prefix")
        .filter(|p| p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok_and(|pq| pq.query().is_none()))
        .map_or("", |p| p.trim_end_matches('/'));
    Some([scheme, host, prefix])
}

/// The client's address, as the server records it (absent when served without one).
pub fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    /// A request's extensions as the server sets them: its peer (if any), and whether TLS.
    fn from(peer: Option<&str>, tls: bool) -> Extensions {
        let mut e = Extensions::new();
        if let Some(ip) = peer {
            e.insert(ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40000)));
        }
        if tls {
            e.insert(OverTls);
        }
        e
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!("::1/128".parse::<Cidr>().unwrap().contains("::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let policy = OriginPolicy { configured: None, trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()] };
        let h = headers(&[
            ("host", "gw:8774"),
            ("x-forwarded-host", "cloud.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/compute/"),
        ]);
        assert_eq!(policy.origin(&h, &from(Some("10.0.0.9"), false)), "https://cloud.example/compute");
        assert_eq!(policy.origin(&h, &from(Some("192.0.2.1"), false)), "http://gw:8774");
        assert_eq!(policy.origin(&h, &from(None, false)), "http://gw:8774");
        let configured = OriginPolicy { configured: Some("https://public".into()), ..policy.clone() };
        assert_eq!(configured.origin(&h, &from(Some("192.0.2.1"), false)), "https://public");
    }

    #[test]
    fn requests_over_tls_default_to_https() {
        let policy = OriginPolicy { configured: None, trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()] };
        let h = headers(&[("host", "gw:8774")]);
        assert_eq!(policy.origin(&h, &from(Some("192.0.2.1"), true)), "https://gw:8774");
        assert_eq!(policy.url(&h, &from(None, true), "/v2.1"), "https://gw:8774/v2.1");
        // What a trusted proxy or the configuration says still wins.
        let forwarded =
            headers(&[("host", "gw"), ("x-forwarded-host", "cloud.example"), ("x-forwarded-proto", "http")]);
        assert_eq!(policy.origin(&forwarded, &from(Some("10.0.0.9"), true)), "http://cloud.example");
        let configured = OriginPolicy { configured: Some("http://public".into()), ..policy };
        assert_eq!(configured.origin(&h, &from(None, true)), "http://public");
    }

    #[test]
    fn forged_values_never_reach_a_link() {
        let policy = OriginPolicy { configured: None, trusted_proxies: vec!["0.0.0.0/0".parse().unwrap()] };
        let peer = &from(Some("10.0.0.9"), false);
        let h = headers(&[("host", "gw"), ("x-forwarded-host", "evil/path"), ("x-forwarded-proto", "javascript")]);
        assert_eq!(policy.origin(&h, peer), "http://gw");
        let h = headers(&[
            ("host", "gw"),
            ("x-forwarded-host", "ok.example"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-prefix", "nope?x=1"),
        ]);
        assert_eq!(policy.origin(&h, peer), "http://ok.example");
        assert_eq!(policy.origin(&headers(&[("host", "user@evil")]), &from(None, false)), "http://localhost");
    }
}
