//! The Origin check on WebSocket upgrades. Without it, any web page a visitor opens
//! could read the camera (cross-site WebSocket hijacking).
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nalcast_core::metric::Series;
use tracing::info;

/// WebSocket handshakes refused, by reason.
pub const WS_REJECTED: Series = Series::counter(
    "nalcast_ws_rejected_total",
    "WebSocket handshakes refused, by reason",
)
.labelled(
    "reason",
    &[
        "origin",
        "max_viewers",
        "max_viewers_per_ip",
        "stream_max_viewers",
    ],
);

/// Whether a browser page from `Origin` may open this WebSocket. Without the check,
/// any web page a visitor opens could read the camera (cross-site WebSocket
/// hijacking). Clients that send no Origin are not browsers and are let in.
/// On the main port the page must come from the same origin; on the legacy port
/// (which the original page reaches from another port) from the same host.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String], same_host_any_port: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(origin_authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if same_host_any_port {
        hostname(origin_authority).eq_ignore_ascii_case(hostname(host))
    } else {
        origin_authority.eq_ignore_ascii_case(host)
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn hostname(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The 403 for a refused Origin, counted and logged.
pub fn refuse_origin(headers: &HeaderMap) -> Response {
    WS_REJECTED.count_as("origin").increment(1);
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    info!(origin, "refused a WebSocket from another origin");
    (
        StatusCode::FORBIDDEN,
        "WebSocket from another origin refused (allow it with --allow-origin)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn same_origin_and_non_browsers_are_allowed_others_are_not() {
        let none: Vec<String> = Vec::new();
        let dashboard = vec!["http://dashboard.lan".to_owned()];
        let any = vec!["*".to_owned()];
        // (origin, host, legacy port, extra allowed origins, expected)
        type Case<'a> = (Option<&'a str>, &'a str, bool, &'a [String], bool);
        let cases: [Case; 12] = [
            (None, "pi:8000", false, &none, true),
            (Some("http://pi:8000"), "pi:8000", false, &none, true),
            (Some("https://PI:8000"), "pi:8000", false, &none, true),
            (Some("http://evil.example"), "pi:8000", false, &none, false),
            (Some("http://pi:8001"), "pi:8000", false, &none, false),
            (Some("null"), "pi:8000", false, &none, false),
            // Legacy port: the original page comes from port 8000 of the same host.
            (Some("http://pi:8000"), "pi:9000", true, &none, true),
            (Some("http://[::1]:8000"), "[::1]:9000", true, &none, true),
            (Some("http://evil:8000"), "pi:9000", true, &none, false),
            (
                Some("http://dashboard.lan"),
                "pi:8000",
                false,
                &dashboard,
                true,
            ),
            (
                Some("http://other.lan"),
                "pi:8000",
                false,
                &dashboard,
                false,
            ),
            (Some("http://any.where"), "pi:8000", false, &any, true),
        ];
        for (origin, host, legacy, allowed, expected) in cases {
            assert_eq!(
                origin_allowed(&headers(origin, host), allowed, legacy),
                expected,
                "{origin:?} on {host} (legacy {legacy})"
            );
        }
    }
}
