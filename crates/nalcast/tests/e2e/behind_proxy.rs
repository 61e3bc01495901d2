//! nalcast behind a real nginx with the configuration docs/security.md shows, and
//! with the usual one (`proxy_add_x_forwarded_for`, other headers passed on as
//! they came): clients (each from its own loopback address) forge every
//! forwarding header they can think of, and nalcast still counts them by the
//! address nginx saw.
//!
//! Skipped (with a message) where nginx is missing, unless NALCAST_REQUIRE_ALL is
//! set; `scripts/setup.sh --test` installs it.
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{connect_from, http_request_on, Server, UPGRADE};
use crate::nginx::{free_addr, process_settings, Nginx, NGINX};

/// The nginx block of docs/security.md, between its markers.
fn documented_nginx_block() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(&path).expect("docs/security.md");
    let start = doc
        .find("<!-- nginx-proxy:start -->")
        .expect("docs/security.md marks its nginx block");
    let block = &doc[start..];
    let block = &block[block.find("```nginx").expect("an nginx fence") + "```nginx".len()..];
    block[..block.find("```").expect("the fence ends")].to_owned()
}

/// How nginx is configured.
#[derive(Debug, Clone, Copy)]
enum Config {
    /// docs/security.md's block: X-Forwarded-For overwritten, the others cleared.
    Documented,
    /// The usual one found in guides: the client's X-Forwarded-For appended to,
    /// every other header passed on as the client wrote it.
    Usual,
}

impl Config {
    const ALL: [Config; 2] = [Config::Documented, Config::Usual];

    fn block(self) -> String {
        let documented = documented_nginx_block();
        match self {
            Config::Documented => documented,
            Config::Usual => documented
                .lines()
                .filter(|l| !l.contains("\"\";") && !l.trim_start().starts_with('#'))
                .map(|l| l.replace("$remote_addr", "$proxy_add_x_forwarded_for"))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// nginx as our child, proxying to nalcast at `upstream` with `config`'s block
/// (its TLS lines dropped, its listen address a free loopback port).
async fn start_proxy(dir: &Path, upstream: SocketAddr, config: Config) -> Nginx {
    let addr = free_addr();
    let block: String = config
        .block()
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_"))
        .map(|l| {
            l.replace("listen 443 ssl;", &format!("listen {addr};"))
                .replace("127.0.0.1:8000", &upstream.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        block.contains(&format!("listen {addr};")) && block.contains(&upstream.to_string()),
        "the documented block changed shape: {block}"
    );
    let config = format!(
        "{}events {{ worker_connections 256; }}\nhttp {{\naccess_log off;\n{block}\n}}\n",
        process_settings(dir)
    );
    Nginx::run(dir, addr, &config).await
}

/// Every forwarding header a client could forge, claiming `claimed`.
fn forged(claimed: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Forwarded", format!("for={claimed}")),
        ("X-Forwarded-For", claimed.to_owned()),
        ("X-Real-IP", claimed.to_owned()),
    ]
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// GET `path` through `nginx` from `local`, with `headers`: the status.
async fn get(nginx: &Nginx, local: &str, path: &str, headers: &[(&str, String)]) -> u16 {
    let stream = connect_from(local, nginx.addr).await.expect("connect");
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = http_request_on(stream, "127.0.0.1", path, &headers)
        .await
        .expect("GET through nginx");
    status
}

fn nginx_available(test: &str) -> bool {
    testkit::tools::require(test, NGINX, Path::new(NGINX).exists())
}

/// Before: nalcast preferred `Forwarded`, which the usual nginx configuration
/// passes on as the client wrote it; each guess from a new claimed address was a
/// fresh address (no lock-out), and claiming the owner's address locked the owner
/// out.
#[tokio::test]
async fn forged_forwarding_headers_through_nginx_change_no_lock_out() {
    let test = "forged_forwarding_headers_through_nginx_change_no_lock_out";
    if !nginx_available(test) {
        return;
    }
    for config in Config::ALL {
        let dir = crate::common::temp_dir(&format!("behind-nginx-auth-{config:?}"));
        let server = Server::start(&[
            "--width",
            "160",
            "--height",
            "128",
            "--auth",
            "ann:right password",
            "--trusted-proxy",
            "127.0.0.1",
        ]);
        server.wait_healthy().await;
        let nginx = start_proxy(&dir, server.addr, config).await;
        let (attacker, owner) = ("127.0.0.7", "127.0.0.9");
        let right = basic("ann:right password");
        assert_eq!(
            get(
                &nginx,
                owner,
                "/api/stream",
                &[("Authorization", right.clone())]
            )
            .await,
            200,
            "{config:?}: the configuration passes requests: {}",
            nginx.log()
        );
        // The attacker claims a new address with every guess, and then the owner's.
        for i in 0..5 {
            let mut headers = forged(&format!("198.51.100.{i}"));
            headers.push(("Authorization", basic(&format!("ann:guess {i}"))));
            assert_eq!(
                get(&nginx, attacker, "/api/stream", &headers).await,
                401,
                "{config:?}"
            );
        }
        let mut headers = forged(owner);
        headers.push(("Authorization", basic("ann:guess 5")));
        assert_eq!(
            get(&nginx, attacker, "/api/stream", &headers).await,
            429,
            "{config:?}: five guesses from one real address lock that address out"
        );
        let mut headers = forged("203.0.113.50");
        headers.push(("Authorization", basic("ann:guess 6")));
        assert_eq!(
            get(&nginx, attacker, "/api/stream", &headers).await,
            429,
            "{config:?}: whatever it claims"
        );
        // The owner's own slip is counted as the owner's, not the attacker's.
        assert_eq!(
            get(
                &nginx,
                owner,
                "/api/stream",
                &[("Authorization", basic("ann:typo"))]
            )
            .await,
            401,
            "{config:?}: the owner, whose address the attacker claimed, is not locked out"
        );
        assert_eq!(
            get(&nginx, owner, "/api/stream", &[("Authorization", right)]).await,
            200,
            "{config:?}"
        );
    }
}

/// Sends a WebSocket handshake for `/ws` through `nginx` from `local` and returns
/// the status and the connection (held open: a viewer while it is).
async fn viewer(
    nginx: &Nginx,
    local: &str,
    headers: &[(&str, String)],
) -> (u16, tokio::net::TcpStream) {
    let mut tcp = connect_from(local, nginx.addr).await.expect("connect");
    let mut req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_owned();
    for (k, v) in UPGRADE {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("an answer within 10 s")
        .expect("status line");
    let status = String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status");
    (status, tcp)
}

/// Before: a client through nginx claiming a new `Forwarded` address per viewer got
/// past the per-address viewer limit (120 viewers with a limit of 100).
#[tokio::test]
async fn forged_forwarding_headers_through_nginx_change_no_viewer_limit() {
    let test = "forged_forwarding_headers_through_nginx_change_no_viewer_limit";
    if !nginx_available(test) {
        return;
    }
    for config in Config::ALL {
        let dir = crate::common::temp_dir(&format!("behind-nginx-viewers-{config:?}"));
        let server = Server::start(&[
            "--width",
            "160",
            "--height",
            "128",
            "--max-viewers-per-ip",
            "1",
            "--trusted-proxy",
            "127.0.0.1",
        ]);
        server.wait_healthy().await;
        let nginx = start_proxy(&dir, server.addr, config).await;
        let (first, _held) = viewer(&nginx, "127.0.0.7", &forged("203.0.113.1")).await;
        assert_eq!(first, 101, "{config:?}: {}", nginx.log());
        let (second, _) = viewer(&nginx, "127.0.0.7", &forged("198.51.100.2")).await;
        assert_eq!(
            second, 429,
            "{config:?}: a second viewer from the same client, claiming another address"
        );
        let (other, _other_held) = viewer(&nginx, "127.0.0.8", &forged("203.0.113.1")).await;
        assert_eq!(
            other, 101,
            "{config:?}: another client, even claiming the first one's address"
        );
    }
}
