//! The names this server answers to: a defence against DNS rebinding. A web page
//! on `rebind.attacker.example` can make its own name resolve to the camera's LAN
//! address; the browser then sends the attacker's name as `Host`, and the page,
//! being same-origin with itself, passes any Origin check. Serving only names we
//! expect (IP literals, localhost, this machine's names, the certificate's names
//! and `--public-host`) closes that door. A refused name gets a page that names
//! the flag to add, so a user who reaches the camera by an unforeseen name learns
//! the fix from the error.
use nalcast_core::metric::Series;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

/// Requests for a host name this server does not serve.
pub const HOST_REJECTED: Series = Series::counter(
    "nalcast_host_rejected_total",
    "requests for a host name this server does not serve (DNS rebinding defence)",
);

/// Refused names logged at most once each, up to this many names.
const WARNED_NAMES: usize = 64;

/// Which `Host` names are served.
#[derive(Debug, Default)]
pub struct HostPolicy {
    /// `--public-host '*'`: every name (the check is off).
    any: bool,
    /// Names served exactly (lower case, no trailing dot).
    names: HashSet<String>,
    /// `*.example.com` patterns, kept as `.example.com`.
    suffixes: Vec<String>,
    warned: Mutex<HashSet<String>>,
}

/// This machine's own names, as the system knows them.
#[derive(Debug, Default, Clone)]
pub struct HostNames {
    /// The host name (`/proc/sys/kernel/hostname`).
    pub hostname: Option<String>,
    /// DNS search domains (`search` and `domain` lines of /etc/resolv.conf).
    pub search_domains: Vec<String>,
}

impl HostNames {
    /// Reads the host name and the DNS search domains of this machine.
    pub fn current() -> HostNames {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        let search_domains = std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| search_domains(&text))
            .unwrap_or_default();
        HostNames {
            hostname,
            search_domains,
        }
    }
}

/// The `search` and `domain` entries of a resolv.conf.
fn search_domains(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search" | "domain") => Some(words),
                _ => None,
            }
        })
        .flatten()
        .map(normalise)
        .filter(|d| !d.is_empty())
        .collect()
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl HostPolicy {
    /// Serves IP literals, localhost, the machine's host name (alone, under
    /// `.local` and under each search domain), `certificate` names and `public`
    /// names (`*.example.com` patterns and `*` included).
    pub fn new(machine: &HostNames, certificate: &[String], public: &[String]) -> HostPolicy {
        let mut policy = HostPolicy::default();
        if let Some(host) = &machine.hostname {
            let host = normalise(host);
            // A host name given as a full name (pi.fritz.box) is reached by its
            // first label too, through the search domain.
            let short = host.split('.').next().unwrap_or(&host).to_owned();
            for base in [host, short] {
                policy.names.insert(format!("{base}.local"));
                for domain in &machine.search_domains {
                    policy.names.insert(format!("{base}.{domain}"));
                }
                policy.names.insert(base);
            }
        }
        for name in certificate.iter().chain(public) {
            let name = normalise(name);
            if name == "*" {
                policy.any = true;
            } else if let Some(domain) = name.strip_prefix("*.") {
                // A wildcard covers names under a domain only: `*cam.example.com`
                // (refused by the option's check) must not serve evilcam.example.com.
                if !domain.is_empty() && !domain.contains('*') {
                    policy.suffixes.push(format!(".{domain}"));
                }
            } else if !name.is_empty() && !name.contains('*') {
                policy.names.insert(name);
            }
        }
        policy
    }

    /// Whether a request with this `Host` header value is served.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = normalise(strip_port(host));
        if name.parse::<IpAddr>().is_ok() || is_bracketed_v6(&name) {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
            || self.suffixes.iter().any(|s| name.ends_with(s.as_str()))
    }

    /// Logs a refused name, once per name.
    fn note_refused(&self, name: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() < WARNED_NAMES && warned.insert(name.to_owned()) {
            warn!(
                host = name,
                "refused requests for a name this server does not know (DNS rebinding defence); \
                 if it is how users reach this camera, add --public-host {name}"
            );
        }
    }
}

/// `host` without a `:port`, keeping an IPv6 literal's brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.split_once(']') {
            Some((v6, rest)) if rest.is_empty() || is_port(rest) => &host[..v6.len() + 1],
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if is_port(&host[name.len()..]) || port.is_empty() => name,
        _ => host,
    }
}

/// `:8000`
fn is_port(text: &str) -> bool {
    text.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_bracketed_v6(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok())
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// What is wrong with a request's target and Host header, if anything: HTTP/1.1
/// asks for exactly one Host and an origin-form target (`/path`). With two Host
/// headers the check read the first and something behind nalcast might read the
/// other; an absolute-form target (`GET http://evil.example/ HTTP/1.1`) names a
/// host of its own beside the header; a request with no Host comes from no
/// browser and could not be checked at all.
fn malformed(req: &Request) -> Option<&'static str> {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Some("nalcast serves request targets like /path, not absolute URLs\n");
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), None) => None,
        (None, _) => Some("a request needs a Host header\n"),
        (Some(_), Some(_)) => Some("a request takes one Host header\n"),
    }
}

/// The middleware: requests for unknown names get 421 (403 for a WebSocket
/// handshake) with a page naming the fix; a request without exactly one Host
/// header, or with an absolute URL as its target, gets 400.
pub async fn check(State(policy): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    if let Some(why) = malformed(&req) {
        HOST_REJECTED.count().increment(1);
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            why,
        )
            .into_response();
    }
    let Some(host) = req.headers().get(header::HOST) else {
        return next.run(req).await;
    };
    let host = String::from_utf8_lossy(host.as_bytes()).into_owned();
    if policy.allows(&host) {
        return next.run(req).await;
    }
    let name = normalise(strip_port(&host));
    policy.note_refused(&name);
    HOST_REJECTED.count().increment(1);
    let status = if is_upgrade(req.headers()) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::MISDIRECTED_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "nalcast does not serve the name '{name}': it answers only to names it knows, so that \
             other web sites cannot reach the camera through your browser (DNS rebinding).\n\
             If this is how you reach this camera, restart nalcast with --public-host {name}\n"
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPolicy {
        let machine = HostNames {
            hostname: Some("RaspberryPi".into()),
            search_domains: search_domains(
                "# comment\nnameserver 192.168.1.1\nsearch fritz.box home.arpa.\n",
            ),
        };
        HostPolicy::new(
            &machine,
            &["cam.example.org".into(), "*.cams.example.net".into()],
            &["camera.lan".into()],
        )
    }

    #[test]
    fn expected_names_are_served_others_are_not() {
        let p = policy();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8000",
            "192.168.1.20:9000",
            "[::1]:8000",
            "[fe80::1]",
            "localhost:8000",
            "LOCALHOST",
            "app.localhost",
            "raspberrypi",
            "raspberrypi:8000",
            "raspberrypi.local",
            "RaspberryPi.Local.:8000",
            "raspberrypi.fritz.box",
            "raspberrypi.home.arpa",
            "cam.example.org",
            "a.cams.example.net",
            "camera.lan:8000",
        ] {
            assert!(p.allows(ok), "{ok} should be served");
        }
        for refused in [
            "rebind.attacker.example",
            "rebind.attacker.example:8000",
            "raspberrypi.attacker.example",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "cams.example.net.evil",
            "example.org",
            "camera.lan.evil",
            "[::1].evil",
            "",
        ] {
            assert!(!p.allows(refused), "{refused:?} should be refused");
        }
    }

    #[test]
    fn a_full_host_name_is_served_by_its_first_label_too() {
        let machine = HostNames {
            hostname: Some("pi.fritz.box".into()),
            search_domains: vec!["fritz.box".into()],
        };
        let p = HostPolicy::new(&machine, &[], &[]);
        for ok in ["pi.fritz.box", "pi", "pi.local"] {
            assert!(p.allows(ok), "{ok}");
        }
    }

    #[test]
    fn a_wildcard_covers_a_domain_only() {
        // Before: `*cam.example.com` also served evilcam.example.com.
        let p = HostPolicy::new(
            &HostNames::default(),
            &[],
            &["*cam.example.com".into(), "*.cams.example.net".into()],
        );
        for refused in [
            "evilcam.example.com",
            "cam.example.com",
            "x.cam.example.com",
            "evilcams.example.net",
            "cams.example.net",
        ] {
            assert!(!p.allows(refused), "{refused}");
        }
        assert!(p.allows("a.cams.example.net"));
    }

    #[test]
    fn a_star_turns_the_check_off() {
        let p = HostPolicy::new(&HostNames::default(), &[], &["*".into()]);
        assert!(p.allows("anything.example"));
    }
}
