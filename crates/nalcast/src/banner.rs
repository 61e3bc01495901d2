//! What nalcast prints when it starts: the addresses to open, each with what it is
//! for. The machine-read `listening on` line stays first and as it was (tests and
//! scripts find the port there).
use std::net::{IpAddr, SocketAddr};

/// What the banner is made from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The main listener's address as bound (0.0.0.0 / [::] for every address).
    pub listen: SocketAddr,
    /// Whether it speaks HTTPS.
    pub https: bool,
    /// This machine's addresses (loopback ones are left out of the network lines).
    pub addresses: Vec<IpAddr>,
    /// This machine's host name.
    pub hostname: Option<String>,
    /// `--public-host` names (patterns are not addresses and are left out).
    pub public_hosts: Vec<String>,
    /// LL-HLS is on.
    pub hls: bool,
    /// WebRTC (WHEP) is on: the page on plain HTTP plays through it first.
    pub webrtc: bool,
    /// The legacy raw WebSocket listener, if on.
    pub legacy: Option<SocketAddr>,
    /// The streams' names, the default one first.
    pub streams: Vec<String>,
}

/// Most streams the banner lists one by one.
const STREAMS_LISTED: usize = 8;

/// The lines after `listening on …`.
pub fn lines(f: &Facts) -> Vec<String> {
    let scheme = if f.https { "https" } else { "http" };
    let port = f.listen.port();
    let url = |host: &str| format!("{scheme}://{host}:{port}/");
    let literal = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let everywhere = f.listen.ip().is_unspecified();
    let network: Vec<String> = if everywhere {
        f.addresses
            .iter()
            .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
            .filter(|ip| f.listen.is_ipv6() || ip.is_ipv4())
            .map(literal)
            .collect()
    } else if f.listen.ip().is_loopback() {
        Vec::new()
    } else {
        vec![literal(&f.listen.ip())]
    };
    let mut out = vec!["open the player page:".to_owned()];
    let mut row = |address: String, what: &str| out.push(format!("  {address:<40} {what}"));
    if everywhere || f.listen.ip().is_loopback() {
        row(url("localhost"), "on this machine");
    }
    // The page's own choice on a plain-HTTP address (web/public/decoder-choice.js).
    let plain = match (f.https, f.webrtc) {
        (true, _) => "",
        (false, true) => {
            " (plain HTTP: WebRTC, else MSE or Broadway.js for Baseline; --tls self-signed for WebCodecs)"
        }
        (false, false) => {
            " (plain HTTP: MSE, or Broadway.js for Baseline; --tls self-signed for WebCodecs)"
        }
    };
    for host in &network {
        row(url(host), &format!("from the network{plain}"));
    }
    if everywhere {
        if let Some(name) = &f.hostname {
            row(
                url(&format!("{name}.local")),
                "from the network, by name (mDNS)",
            );
        }
    }
    for name in f.public_hosts.iter().filter(|n| !n.contains('*')) {
        row(url(name), "by its public name (--public-host)");
    }
    let host = network.first().map_or("localhost", String::as_str);
    if f.streams.len() > 1 {
        for name in f.streams.iter().take(STREAMS_LISTED) {
            row(
                format!("{scheme}://{host}:{port}/streams/{name}/"),
                &format!("camera {name} alone (the page above shows them all)"),
            );
        }
        if f.streams.len() > STREAMS_LISTED {
            row(
                format!("{scheme}://{host}:{port}/api/streams"),
                &format!("and {} more cameras", f.streams.len() - STREAMS_LISTED),
            );
        }
    }
    if f.hls {
        row(
            format!("{scheme}://{host}:{port}/hls/index.m3u8"),
            "LL-HLS: iPhones, VLC, hls.js pages",
        );
    }
    if let Some(legacy) = f.legacy {
        let host = if legacy.ip().is_unspecified() {
            network
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".into())
        } else {
            literal(&legacy.ip())
        };
        row(
            format!("ws://{host}:{}/", legacy.port()),
            "the original Broadway.js page's stream (raw NAL units)",
        );
    }
    out
}

pub(crate) fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// This machine's interface addresses (none where the system does not say).
pub fn machine_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            listen: "0.0.0.0:8000".parse().expect("addr"),
            https: false,
            addresses: vec![
                "127.0.0.1".parse().expect("ip"),
                "192.168.1.20".parse().expect("ip"),
                "10.0.0.5".parse().expect("ip"),
                "169.254.3.3".parse().expect("ip"),
                "fd00::20".parse().expect("ip"),
            ],
            hostname: Some("raspberrypi".into()),
            public_hosts: vec!["cam.example.com".into(), "*.example.org".into()],
            hls: true,
            webrtc: true,
            legacy: Some("0.0.0.0:9000".parse().expect("addr")),
            streams: vec!["camera".into()],
        }
    }

    #[test]
    fn every_address_to_open_with_what_it_is_for_and_no_placeholder() {
        let text = lines(&facts()).join("\n");
        for url in [
            "http://localhost:8000/",
            "http://192.168.1.20:8000/",
            "http://10.0.0.5:8000/",
            "http://raspberrypi.local:8000/",
            "http://cam.example.com:8000/",
            "http://192.168.1.20:8000/hls/index.m3u8",
            "ws://192.168.1.20:9000/",
        ] {
            assert!(text.contains(url), "{url} in:\n{text}");
        }
        for absent in ["169.254", "fd00::20", "127.0.0.1", "*.example.org", "<"] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        assert!(text.contains("--tls self-signed for WebCodecs"), "{text}");
        assert!(text.contains("plain HTTP: WebRTC, else MSE"), "{text}");
        let without_webrtc = lines(&Facts {
            webrtc: false,
            ..facts()
        })
        .join("\n");
        assert!(
            without_webrtc.contains("(plain HTTP: MSE, or Broadway.js")
                && !without_webrtc.contains("WebRTC"),
            "{without_webrtc}"
        );
    }

    #[test]
    fn an_https_server_bound_to_one_address_lists_that_one() {
        let f = Facts {
            listen: "192.168.1.20:8443".parse().expect("addr"),
            https: true,
            hls: false,
            legacy: None,
            ..facts()
        };
        let text = lines(&f).join("\n");
        assert!(text.contains("https://192.168.1.20:8443/"), "{text}");
        assert!(!text.contains("localhost"), "{text}");
        assert!(!text.contains("10.0.0.5"), "{text}");
        assert!(!text.contains("plain HTTP"), "{text}");
    }

    #[test]
    fn ipv6_everywhere_lists_v6_addresses_in_brackets() {
        let f = Facts {
            listen: "[::]:8000".parse().expect("addr"),
            ..facts()
        };
        let text = lines(&f).join("\n");
        assert!(text.contains("http://[fd00::20]:8000/"), "{text}");
    }

    #[test]
    fn several_cameras_are_listed_each_with_its_own_page() {
        let f = Facts {
            streams: vec!["garden".into(), "door".into()],
            ..facts()
        };
        let text = lines(&f).join("\n");
        assert!(
            text.contains("/streams/garden/") && text.contains("camera door alone"),
            "{text}"
        );
        let one = lines(&facts()).join("\n");
        assert!(!one.contains("/streams/"), "{one}");
    }

    #[test]
    fn this_machine_has_an_address() {
        assert!(machine_addresses().iter().any(IpAddr::is_loopback));
    }
}
