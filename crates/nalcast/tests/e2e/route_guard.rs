//! Which requests pass the credentials check, on both listeners: every route, every
//! method, every spelling of a path an attacker might try. Only the main port's
//! exact `/healthz` is open; the legacy port has no open path at all.
use crate::common;

use std::net::SocketAddr;

use crate::common::{Server, UPGRADE};

const TOKEN: &str = "route-guard-token-0123456789";

async fn status(addr: SocketAddr, method: &str, target: &str, extra: &[(&str, &str)]) -> u16 {
    common::status_of(addr, method, target, extra).await
}

/// Paths tried on both listeners: the routes, and spellings that must not pass for
/// the open one (case, trailing slash, percent-encoding, dot segments, queries).
const PATHS: [&str; 22] = [
    "/",
    "/index.html",
    "/page.js",
    "/ws",
    "/ws/raw",
    "/ws/",
    "/WS",
    "/ws?healthz",
    "/api/stream",
    "/metrics",
    "/vendor/broadway/Decoder.js",
    "/healthz",
    "/healthz?x",
    "/healthz?token=wrong",
    "/HEALTHZ",
    "/healthz/",
    "/%68ealthz",
    "/healthz%2F",
    "//healthz",
    "/healthz/../ws",
    "/./healthz",
    "/nothing-here",
];

/// The one request path that is open without credentials on the main port.
fn open_on_main(path: &str) -> bool {
    path == "/healthz" || path.starts_with("/healthz?")
}

async fn check_all(server: &Server, credentials: &[(&str, &str)], kind: &str) {
    let legacy = server.legacy.expect("legacy listener");
    let mut failures = Vec::new();
    for (listener, addr) in [("main", server.addr), ("legacy", legacy)] {
        for path in PATHS {
            for method in ["GET", "HEAD", "OPTIONS", "POST", "UPGRADE"] {
                let mut headers: Vec<(&str, &str)> = credentials.to_vec();
                let method = if method == "UPGRADE" {
                    headers.extend(UPGRADE);
                    "GET"
                } else {
                    method
                };
                let got = status(addr, method, path, &headers).await;
                let open = listener == "main" && open_on_main(path);
                let upgrade = headers.len() > credentials.len();
                let ok = if credentials.is_empty() && !open {
                    got == 401
                } else {
                    got != 401
                };
                if !ok {
                    failures.push(format!(
                        "{listener} {method}{} {path} -> {got}",
                        if upgrade { " (WebSocket upgrade)" } else { "" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{kind}: {} requests answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn with_a_token_only_the_main_ports_exact_healthz_is_open() {
    let server = Server::start(&["--token", TOKEN]);
    server.wait_healthy().await;
    check_all(&server, &[], "no credentials").await;
    let bearer = format!("Bearer {TOKEN}");
    check_all(&server, &[("Authorization", &bearer)], "bearer token").await;
}

#[tokio::test]
async fn with_a_password_only_the_main_ports_exact_healthz_is_open() {
    let server = Server::start(&["--auth", "admin:correct horse"]);
    server.wait_healthy().await;
    check_all(&server, &[], "no credentials").await;
    // base64("admin:correct horse")
    let basic = "Basic YWRtaW46Y29ycmVjdCBob3JzZQ==";
    check_all(&server, &[("Authorization", basic)], "basic").await;
}

#[tokio::test]
async fn the_original_page_streams_from_the_legacy_port_with_a_token_in_the_query() {
    let server = Server::start(&["--token", TOKEN]);
    let legacy = server.legacy.expect("legacy listener");
    let with_token = format!("/?token={TOKEN}");
    // The WebSocket handshake is taken as it is: no cookie redirect.
    assert_eq!(status(legacy, "GET", &with_token, &UPGRADE).await, 101);
    assert_eq!(
        status(server.addr, "GET", &format!("/ws?token={TOKEN}"), &UPGRADE).await,
        101
    );
    // Opening the page with ?token= still moves the token into a cookie.
    assert_eq!(status(server.addr, "GET", &with_token, &[]).await, 303);
    assert_eq!(status(legacy, "GET", "/?token=wrong", &UPGRADE).await, 401);
}
