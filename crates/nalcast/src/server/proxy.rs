//! Behind a reverse proxy (nginx, Caddy) every connection comes from the proxy:
//! without this, the per-address viewer limit would refuse the 101st viewer of the
//! whole internet, and logs, metrics and lock-outs would name the proxy. With
//! `--trusted-proxy CIDR`, the client address is taken from one forwarding header,
//! the one `--proxy-header` names, and only when the connection comes from a
//! trusted proxy: anyone else could write those headers too.
//!
//! One header, never a choice between several: a proxy overwrites or appends to the
//! header it is configured for and passes every other one through as the client
//! wrote it. nginx's usual `proxy_add_x_forwarded_for` leaves a client's own
//! `Forwarded` untouched, and when that one was preferred a client behind nginx
//! picked its own address (6121 guesses in 5 s without a lock-out, the owner locked
//! out by a forged address, 120 viewers past a limit of 100).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The forwarding header a trusted proxy writes (`--proxy-header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For`: the rightmost address that is not a trusted proxy.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): its `for=` addresses, read the same way.
    Forwarded,
    /// `X-Real-IP`: one address, which the proxy sets (nginx's realip style).
    XRealIp,
}

impl ProxyHeader {
    /// The values `--proxy-header` takes.
    pub const NAMES: [&'static str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

    /// The header's name, as `--proxy-header` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => Self::NAMES[0],
            ProxyHeader::Forwarded => Self::NAMES[1],
            ProxyHeader::XRealIp => Self::NAMES[2],
        }
    }
}

impl std::str::FromStr for ProxyHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            ProxyHeader::XForwardedFor,
            ProxyHeader::Forwarded,
            ProxyHeader::XRealIp,
        ]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "--proxy-header '{s}' is not one of {}",
                Self::NAMES.join(", ")
            )
        })
    }
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ProxyHeader,
}

impl TrustedProxies {
    /// Proxies in these networks (`10.0.0.5/32`, `192.168.0.0/16`, `::1/128`),
    /// which write `header`.
    pub fn new(networks: Vec<IpNet>, header: ProxyHeader) -> Self {
        TrustedProxies { networks, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; else
    /// the nearest address in the forwarding chain of the configured header that
    /// is not a trusted proxy (read from the right: the left part is whatever the
    /// client claimed). Every other forwarding header is the client's own word
    /// and ignored. The port is the peer's.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let chain = match self.header {
            ProxyHeader::XForwardedFor => x_forwarded_for(headers),
            ProxyHeader::Forwarded => forwarded_for(headers),
            ProxyHeader::XRealIp => x_real_ip(headers),
        };
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.trusts(*ip))
            .map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
    }
}

/// The address of a single `X-Real-IP` header; none when there are several (the
/// proxy sets one: a second one came from elsewhere).
fn x_real_ip(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut values = headers.get_all("x-real-ip").iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| parse_node(v.trim()))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Addresses in `X-Forwarded-For` headers, in order (unparsable entries end the
/// chain: nothing left of them can be placed).
fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| parse_node(e.trim()));
    chain_from_right(entries)
}

/// The `for=` addresses of `Forwarded` headers (RFC 7239), in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let entries = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim().trim_matches('"')))
            })
        });
    chain_from_right(entries)
}

/// Keeps the rightmost run of parsable addresses.
fn chain_from_right(entries: impl Iterator<Item = Option<IpAddr>>) -> Vec<IpAddr> {
    let entries: Vec<Option<IpAddr>> = entries.collect();
    let start = entries
        .iter()
        .rposition(Option::is_none)
        .map_or(0, |i| i + 1);
    entries[start..].iter().flatten().copied().collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    node.strip_prefix('[')?
        .split_once(']')?
        .0
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The middleware: replaces the connection's address with the client's before
/// anything else (limits, credentials, logs) looks at it.
pub async fn resolve(
    State(proxies): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(&ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = proxies.client(peer, req.headers());
        if client != peer {
            req.extensions_mut().insert(ConnectInfo(client));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let proxies = TrustedProxies::new(
            vec![
                "10.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
            ProxyHeader::XForwardedFor,
        );
        let proxy: SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let stranger: SocketAddr = "192.0.2.9:4000".parse().expect("addr");
        let v6_proxy: SocketAddr = "[::1]:4000".parse().expect("addr");
        let mapped_proxy: SocketAddr = "[::ffff:10.0.0.5]:4000".parse().expect("addr");
        // (peer, headers, expected client ip)
        let cases: Vec<(SocketAddr, HeaderMap, &str)> = vec![
            (
                proxy,
                headers(&[("x-forwarded-for", "203.0.113.7")]),
                "203.0.113.7",
            ),
            (
                stranger,
                headers(&[("x-forwarded-for", "203.0.113.7")]),
                "192.0.2.9",
            ),
            (proxy, headers(&[]), "10.0.0.5"),
            // A client's own claim stands left of what the proxy appended.
            (
                proxy,
                headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]),
                "203.0.113.7",
            ),
            // A chain of trusted proxies is walked through.
            (
                proxy,
                headers(&[("x-forwarded-for", "203.0.113.7, 10.1.1.1")]),
                "203.0.113.7",
            ),
            (
                proxy,
                headers(&[
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-forwarded-for", "10.1.1.1"),
                ]),
                "203.0.113.7",
            ),
            // A client's own Forwarded (passed through by a proxy that writes
            // X-Forwarded-For) is never believed.
            (
                proxy,
                headers(&[
                    ("forwarded", "for=198.51.100.3;proto=https"),
                    ("x-forwarded-for", "203.0.113.7"),
                ]),
                "203.0.113.7",
            ),
            (
                proxy,
                headers(&[("forwarded", "for=\"[2001:db8::7]:443\"")]),
                "10.0.0.5",
            ),
            (proxy, headers(&[("x-real-ip", "198.51.100.3")]), "10.0.0.5"),
            (
                v6_proxy,
                headers(&[("x-forwarded-for", "203.0.113.7:5555")]),
                "203.0.113.7",
            ),
            (
                mapped_proxy,
                headers(&[("x-forwarded-for", "::ffff:203.0.113.7")]),
                "203.0.113.7",
            ),
            // Garbage right of the client: nothing to believe, the proxy it is.
            (
                proxy,
                headers(&[("x-forwarded-for", "203.0.113.7, unknown")]),
                "10.0.0.5",
            ),
            (
                proxy,
                headers(&[("x-forwarded-for", "10.2.2.2")]),
                "10.0.0.5",
            ),
        ];
        for (peer, h, expected) in cases {
            let got = proxies.client(peer, &h);
            assert_eq!(got.ip().to_string(), expected, "{peer} {h:?}");
            assert_eq!(got.port(), peer.port());
        }
        assert_eq!(
            TrustedProxies::default()
                .client(proxy, &headers(&[("x-forwarded-for", "203.0.113.7")])),
            proxy
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let nets = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let forged = headers(&[
            ("forwarded", "for=198.51.100.3"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "192.0.2.44"),
        ]);
        // (header, expected client ip)
        for (header, expected) in [
            (ProxyHeader::XForwardedFor, "203.0.113.7"),
            (ProxyHeader::Forwarded, "198.51.100.3"),
            (ProxyHeader::XRealIp, "192.0.2.44"),
        ] {
            let proxies = TrustedProxies::new(nets.clone(), header);
            assert_eq!(
                proxies.client(proxy, &forged).ip().to_string(),
                expected,
                "{header:?}"
            );
            assert_eq!(header.name().parse::<ProxyHeader>(), Ok(header));
        }
        let real_ip = TrustedProxies::new(nets, ProxyHeader::XRealIp);
        let twice = headers(&[("x-real-ip", "192.0.2.44"), ("x-real-ip", "192.0.2.45")]);
        assert_eq!(
            real_ip.client(proxy, &twice),
            proxy,
            "two X-Real-IP: neither"
        );
        assert!("via".parse::<ProxyHeader>().is_err());
    }
}
