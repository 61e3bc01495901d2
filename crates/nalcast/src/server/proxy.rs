//! Behind a reverse proxy (nginx, Caddy) every connection comes from the proxy:
//! without this, the per-address viewer limit would refuse the 101st viewer of the
//! whole internet, and logs, metrics and lock-outs would name the proxy. With
//! `--trusted-proxy CIDR`, the client address is taken from `Forwarded` or
//! `X-Forwarded-For`, and only when the connection comes from a trusted proxy:
//! anyone else could write those headers too.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in these networks (`10.0.0.5/32`, `192.168.0.0/16`, `::1/128`).
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; else
    /// the nearest address in the forwarding chain that is not a trusted proxy
    /// (read from the right: the left part is whatever the client claimed).
    /// `Forwarded` (RFC 7239) wins over `X-Forwarded-For`. The port is the peer's.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let chain = forwarded_for(headers);
        let chain = if chain.is_empty() {
            x_forwarded_for(headers)
        } else {
            chain
        };
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.trusts(*ip))
            .map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
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
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]);
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
            (
                proxy,
                headers(&[
                    ("forwarded", "for=198.51.100.3;proto=https"),
                    ("x-forwarded-for", "203.0.113.7"),
                ]),
                "198.51.100.3",
            ),
            (
                proxy,
                headers(&[("forwarded", "for=\"[2001:db8::7]:443\"")]),
                "2001:db8::7",
            ),
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
}
