//! What every request passes first: the Host check against DNS rebinding, and the
//! client's address taken from a trusted reverse proxy.
use crate::common;

use crate::common::{http_request_on, status_of, Server, UPGRADE};

const REBIND: &str = "rebind.attacker.example";

#[tokio::test]
async fn a_rebound_name_gets_neither_page_nor_stream_on_either_port() {
    let server = Server::start(&[]);
    server.wait_healthy().await;
    let legacy = server.legacy.expect("legacy listener");
    let port = server.addr.port();
    let host = format!("{REBIND}:{port}");
    let origin = format!("http://{REBIND}:{port}");
    // The attacker's page is same-origin with itself: Origin and Host agree.
    let handshake: Vec<(&str, &str)> = UPGRADE
        .into_iter()
        .chain([("Host", host.as_str()), ("Origin", origin.as_str())])
        .collect();
    assert_eq!(status_of(server.addr, "GET", "/ws", &handshake).await, 403);
    assert_eq!(
        status_of(server.addr, "GET", "/ws/raw", &handshake).await,
        403
    );
    let legacy_host = format!("{REBIND}:{}", legacy.port());
    let legacy_handshake: Vec<(&str, &str)> = UPGRADE
        .into_iter()
        .chain([("Host", legacy_host.as_str()), ("Origin", origin.as_str())])
        .collect();
    assert_eq!(status_of(legacy, "GET", "/", &legacy_handshake).await, 403);
    for path in ["/", "/api/stream", "/metrics", "/healthz"] {
        assert_eq!(
            status_of(server.addr, "GET", path, &[("Host", &host)]).await,
            421,
            "{path}"
        );
    }
    // The page says what to do.
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (status, _, body) = http_request_on(tcp, &host, "/", &[]).await.expect("GET");
    assert_eq!(status, 421);
    assert!(body.contains(&format!("--public-host {REBIND}")), "{body}");

    // The names a user has are served: IP literals, localhost, this machine's name.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let hostname = hostname.trim();
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("{hostname}:{port}"),
        format!("{hostname}.local:{port}"),
    ] {
        assert_eq!(
            status_of(server.addr, "GET", "/", &[("Host", &name)]).await,
            200,
            "{name}"
        );
    }
    let (_, metrics) = common::http_get(server.addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nalcast_host_rejected_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_name_added_with_public_host_is_served() {
    let server = Server::start(&["--public-host", "camera.example.com"]);
    let port = server.addr.port();
    let host = format!("camera.example.com:{port}");
    let origin = format!("http://camera.example.com:{port}");
    let handshake: Vec<(&str, &str)> = UPGRADE
        .into_iter()
        .chain([("Host", host.as_str()), ("Origin", origin.as_str())])
        .collect();
    assert_eq!(status_of(server.addr, "GET", "/ws", &handshake).await, 101);
    assert_eq!(
        status_of(server.addr, "GET", "/", &[("Host", &host)]).await,
        200
    );
    assert_eq!(
        status_of(server.addr, "GET", "/", &[("Host", REBIND)]).await,
        421
    );
}

/// Two viewers through one proxy, forwarded for these client addresses.
async fn two_viewers_behind_a_proxy(server: &Server, clients: [&str; 2]) -> (u16, u16) {
    let [first_client, second_client] = clients;
    let first: Vec<(&str, &str)> = UPGRADE
        .into_iter()
        .chain([("X-Forwarded-For", first_client)])
        .collect();
    let second: Vec<(&str, &str)> = UPGRADE
        .into_iter()
        .chain([("X-Forwarded-For", second_client)])
        .collect();
    // The first viewer stays connected (its handshake's socket is kept by the
    // server until the viewer leaves) while the second asks.
    let mut held = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let first_status = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n", server.addr);
        for (k, v) in &first {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        held.write_all(req.as_bytes()).await.expect("send");
        let mut head = [0u8; 12];
        held.read_exact(&mut head).await.expect("status line");
        String::from_utf8_lossy(&head[9..12])
            .parse()
            .expect("status")
    };
    let second_status = status_of(server.addr, "GET", "/ws", &second).await;
    drop(held);
    (first_status, second_status)
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_count_the_real_clients() {
    let server = Server::start(&[
        "--max-viewers-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    assert_eq!(
        two_viewers_behind_a_proxy(&server, ["203.0.113.1", "198.51.100.2"]).await,
        (101, 101),
        "two clients behind the proxy are two addresses"
    );
    assert_eq!(
        two_viewers_behind_a_proxy(&server, ["203.0.113.9", "203.0.113.9"]).await,
        (101, 429),
        "the same client twice is over its limit"
    );
}

#[tokio::test]
async fn forwarding_headers_from_anyone_else_are_ignored() {
    let server = Server::start(&["--max-viewers-per-ip", "1"]);
    assert_eq!(
        two_viewers_behind_a_proxy(&server, ["203.0.113.1", "198.51.100.2"]).await,
        (101, 429),
        "a client cannot pick its own address with X-Forwarded-For"
    );
}

#[tokio::test]
async fn with_tls_the_plain_legacy_port_is_announced_as_such() {
    let dir = common::temp_dir("legacy-tls");
    let log = dir.join("nalcast.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "127.0.0.1:0"])
        .args(["--tls", "self-signed", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);
    assert!(server.https);
    // The warning is written before the address line the helper waited for.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("serves video over plain ws:// (unencrypted)")
            && text.contains("--legacy-listen off"),
        "{text}"
    );
}

/// The status of a raw request `head` (all of it up to the blank line).
async fn raw_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 10 s");
    common::status_code(&String::from_utf8_lossy(&answer))
        .unwrap_or_else(|| panic!("no status for {head:?}"))
}

/// Before: the first of two Host headers was checked (whatever came after it
/// might read the other), an absolute URL as the target named a host of its own,
/// and a request without Host was served unchecked.
#[tokio::test]
async fn one_host_header_and_a_path_as_target_or_400() {
    let server = Server::start(&[]);
    server.wait_healthy().await;
    let a = server.addr;
    let close = "Connection: close\r\n";
    assert_eq!(
        raw_status(a, &format!("GET / HTTP/1.1\r\nHost: {a}\r\n{close}\r\n")).await,
        200,
        "a request as browsers send it"
    );
    for head in [
        format!("GET / HTTP/1.1\r\nHost: {a}\r\nHost: {REBIND}\r\n{close}\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n{close}\r\n"),
        format!("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\n{close}\r\n"),
        format!("GET http://{REBIND}/api/stream HTTP/1.1\r\nHost: {a}\r\n{close}\r\n"),
        format!("GET / HTTP/1.1\r\n{close}\r\n"),
        "GET /api/stream HTTP/1.0\r\n\r\n".to_owned(),
    ] {
        assert_eq!(raw_status(a, &head).await, 400, "{head:?}");
    }
    let legacy = server.legacy.expect("legacy");
    assert_eq!(
        raw_status(legacy, &format!("GET / HTTP/1.1\r\n{close}\r\n")).await,
        400,
        "the legacy port too"
    );
}

/// Before: hyper buffered up to about 408 KB of an unfinished request head per
/// connection (4000 connections x 120 KB: 561 MB), and took 100 header lines.
#[tokio::test]
async fn request_heads_are_small_and_bounded() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&["--max-connections-per-ip", "1000"]);
    server.wait_healthy().await;
    let a = server.addr;
    let filler = "a".repeat(1000);
    let big: String = (0..20)
        .map(|i| format!("X-Filler-{i}: {filler}\r\n"))
        .collect();
    assert_eq!(
        raw_status(
            a,
            &format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n{big}\r\n")
        )
        .await,
        431,
        "a 20 KB head"
    );
    let many: String = (0..60).map(|i| format!("X-{i}: 1\r\n")).collect();
    assert_eq!(
        raw_status(
            a,
            &format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n{many}\r\n")
        )
        .await,
        431,
        "60 header lines"
    );
    // Hundreds of connections that send 100 KB of headers and never finish.
    let before = common::rss_kib(server.pid());
    let conns = 400;
    let mut held = Vec::new();
    for _ in 0..conns {
        let mut tcp = tokio::net::TcpStream::connect(a).await.expect("connect");
        let mut sent = tcp
            .write_all(format!("GET / HTTP/1.1\r\nHost: {a}\r\n").as_bytes())
            .await
            .is_ok();
        let line = format!("X-Filler: {filler}\r\n");
        for _ in 0..100 {
            // Writes fail once nalcast gives up on the head: that is the point.
            sent = sent
                && tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    tcp.write_all(line.as_bytes()),
                )
                .await
                .is_ok_and(|r| r.is_ok());
        }
        held.push(tcp);
    }
    let grown = common::rss_kib(server.pid()).saturating_sub(before);
    println!("{conns} unfinished 100 KB heads: resident memory grew by {grown} KiB");
    assert!(
        grown < (conns * 100 / 4) as u64,
        "{conns} unfinished heads grew nalcast by {grown} KiB"
    );
    drop(held);
    assert_eq!(
        raw_status(
            a,
            &format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n")
        )
        .await,
        200
    );
}
