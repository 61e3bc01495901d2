//! Security against the real server: cross-site WebSocket hijacking, viewer limits,
//! rude clients, HTTPS/WSS, credentials and slowloris-style connections.

use std::time::{Duration, Instant};

use crate::common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error;

async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", o.parse().expect("origin"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn cross_origin_upgrades_are_refused_with_403_and_counted() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--allow-origin",
        "http://dashboard.lan:3000",
    ]);
    let legacy = server.legacy.expect("legacy");
    let own = format!("http://{}", server.addr);
    for path in ["/ws", "/ws/raw"] {
        let url = server.url(path);
        assert_eq!(
            upgrade_status(&url, Some("http://evil.example")).await,
            403,
            "{path}"
        );
        assert_eq!(
            upgrade_status(&url, Some(&own)).await,
            101,
            "{path} same origin"
        );
        assert_eq!(
            upgrade_status(&url, None).await,
            101,
            "{path} non-browser client"
        );
        assert_eq!(
            upgrade_status(&url, Some("http://dashboard.lan:3000")).await,
            101,
            "{path} allowed origin"
        );
    }
    // The legacy port takes pages from the same host (the original page is on another port).
    let legacy_url = format!("ws://{legacy}/");
    assert_eq!(upgrade_status(&legacy_url, Some(&own)).await, 101);
    assert_eq!(
        upgrade_status(&legacy_url, Some("http://evil.example:8000")).await,
        403
    );
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("nalcast_ws_rejected_total{reason=\"origin\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(refused, 3.0, "{metrics}");
}

async fn connect_from(local: &str, url: &str) -> Result<Ws, u16> {
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .expect("addr");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local"))
        .expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    match tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[tokio::test]
async fn viewer_limits_refuse_the_next_viewer_and_spare_the_others() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--max-viewers",
        "3",
        "--max-viewers-per-ip",
        "2",
    ]);
    server.wait_healthy().await;
    let url = server.url("/ws");
    let mut a1 = connect_from("127.0.0.1", &url).await.expect("first viewer");
    let _a2 = connect_from("127.0.0.1", &url)
        .await
        .expect("second viewer");
    assert_eq!(
        connect_from("127.0.0.1", &url).await.err(),
        Some(429),
        "third from one address"
    );
    let _b1 = connect_from("127.0.0.2", &url)
        .await
        .expect("other address");
    assert_eq!(
        connect_from("127.0.0.2", &url).await.err(),
        Some(503),
        "over the total"
    );
    // The admitted viewers are unaffected.
    for _ in 0..10 {
        assert!(next_framed(&mut a1, std::time::Duration::from_secs(2))
            .await
            .is_some());
    }
    // Leaving frees the slot.
    drop(a1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if connect_from("127.0.0.1", &url).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn oversized_garbage_and_chatty_clients_are_closed_alone() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(&["--width", "320", "--height", "240"]);
    server.wait_healthy().await;
    let mut bystander = connect(&server.url("/ws")).await;
    let cases: Vec<(&str, Vec<Message>)> = vec![
        ("oversized", vec![Message::text("x".repeat(10_000))]),
        ("binary", vec![Message::binary(vec![1u8, 2, 3])]),
        ("garbage text", vec![Message::text("hello?")]),
        (
            "too many",
            (0..150)
                .map(|_| Message::text(r#"{"type":"keyframe"}"#))
                .collect(),
        ),
    ];
    for (what, msgs) in cases {
        let mut ws = connect(&server.url("/ws")).await;
        for m in msgs {
            if ws.send(m).await.is_err() {
                break;
            }
        }
        // The server closes this connection...
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Close(_)) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        assert!(closed, "{what}: connection not closed");
        // ...and only this one.
        assert!(
            next_framed(&mut bystander, std::time::Duration::from_secs(2))
                .await
                .is_some(),
            "{what}: bystander hurt"
        );
    }
}

/// A client that pins the self-signed certificate gets HTTPS and WSS; one that does
/// not trust it is refused; the certificate survives a restart; plain HTTP on the
/// port is redirected.
#[tokio::test]
async fn https_and_wss_with_a_self_signed_certificate() {
    let data = temp_dir("tls-self-signed");
    let args = [
        "--width",
        "320",
        "--height",
        "240",
        "--tls",
        "self-signed",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ];
    let server = Server::start(&args);
    assert!(server.https, "listening on https://");
    let cert = data.join("tls/self-signed.crt");
    let tls = pinned_tls(&cert);

    let stream = tls_connect(&tls, server.addr, "localhost")
        .await
        .expect("TLS");
    assert_eq!(Some(peer_fingerprint(&stream)), server.fingerprint);
    let (status, _, body) = http_request_on(stream, "localhost", "/api/stream", &[])
        .await
        .expect("GET");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"codec\""), "{body}");

    let stream = tls_connect(&tls, server.addr, "localhost")
        .await
        .expect("TLS");
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WSS handshake");
    let mut keyframe = false;
    for _ in 0..10 {
        if let Some(nalcast_core::protocol::ServerMessage::AccessUnit { flags, .. }) =
            next_framed(&mut ws, Duration::from_secs(5)).await
        {
            keyframe |= flags & nalcast_core::protocol::FLAG_KEYFRAME != 0;
        }
    }
    assert!(keyframe, "frames arrive over WSS, starting with a keyframe");

    // A client that trusts another certificate (its own) does not get through.
    let other = temp_dir("tls-other");
    let stranger = Server::start(&[
        "--tls",
        "self-signed",
        "--data-dir",
        other.to_str().expect("utf-8"),
    ]);
    let err = tls_connect(
        &pinned_tls(&other.join("tls/self-signed.crt")),
        server.addr,
        "localhost",
    )
    .await
    .map(|_| ())
    .expect_err("an unknown certificate is refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    drop(stranger);

    // Plain HTTP on the HTTPS port is told where to go.
    let (status, head, _) = http_request(server.addr, "/?stats=1", &[])
        .await
        .expect("GET");
    assert_eq!(status, 308, "{head}");
    assert!(
        head.contains(&format!("location: https://{}/?stats=1", server.addr)),
        "{head}"
    );

    // The same certificate after a restart.
    let fingerprint = server.fingerprint.clone();
    drop(server);
    let again = Server::start(&args);
    assert_eq!(again.fingerprint, fingerprint);
}

fn write_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (c, k)
}

/// Certificates from files are reloaded when the files change (a renewal), without
/// a restart; a broken replacement keeps the old certificate in force.
#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change() {
    let dir = temp_dir("tls-reload");
    let (a_cert, a_key) = write_cert(&dir, "a");
    let (b_cert, b_key) = write_cert(&dir, "b");
    let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&a_cert, &cert).expect("copy");
    std::fs::copy(&a_key, &key).expect("copy");
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let seen = |pem: std::path::PathBuf| {
        let addr = server.addr;
        async move {
            tls_connect(&pinned_tls(&pem), addr, "localhost")
                .await
                .map(|s| peer_fingerprint(&s))
                .ok()
        }
    };
    let first = seen(a_cert.clone()).await.expect("serves certificate a");
    assert_eq!(Some(first.clone()), server.fingerprint);

    // A half-written renewal (new certificate, old key) is not taken.
    std::fs::copy(&b_cert, &cert).expect("copy");
    tokio::time::sleep(Duration::from_millis(2500)).await; // one reload check
    assert_eq!(
        seen(a_cert.clone()).await,
        Some(first.clone()),
        "old one kept"
    );

    std::fs::copy(&b_key, &key).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(fp) = seen(b_cert.clone()).await {
            assert_ne!(fp, first);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ws_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A TCP connection to `addr` from the loopback address `local`.
async fn tcp_from(local: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local address"))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// [`ws_status`] from the loopback address `local`.
async fn ws_status_from(local: &str, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("ws://IP:PORT/…");
    match tokio_tungstenite::client_async(req, tcp_from(local, addr).await).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// With --auth, the page, the WebSockets (both ports) and /metrics need the
/// password; /healthz does not.
#[tokio::test]
async fn basic_auth_guards_page_websockets_and_metrics() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--auth",
        "ann:pass word",
    ]);
    server.wait_healthy().await;
    let legacy = format!("ws://{}/", server.legacy.expect("legacy"));
    let good = basic("ann:pass word");
    // Each wrong request from an address of its own: one address repeating a
    // guess is locked out after five (auth_hardening.rs), which is not the point
    // here.
    let mut locals = (10..).map(|i| format!("127.0.1.{i}"));
    let mut local = || locals.next().expect("addresses");
    for wrong in [None, Some(basic("ann:wrong")), Some(basic("bob:pass word"))] {
        let headers: Vec<(&str, &str)> = wrong
            .iter()
            .map(|w| ("Authorization", w.as_str()))
            .collect();
        for path in ["/", "/metrics", "/api/stream", "/page.js"] {
            let (status, head, _) = http_request_on(
                tcp_from(&local(), server.addr).await,
                &server.addr.to_string(),
                path,
                &headers,
            )
            .await
            .expect("GET");
            assert_eq!(status, 401, "{path} with {wrong:?}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic"),
                "{head}"
            );
        }
        for url in [server.url("/ws"), server.url("/ws/raw"), legacy.clone()] {
            assert_eq!(ws_status_from(&local(), &url, &headers).await, 401, "{url}");
        }
    }
    let headers = [("Authorization", good.as_str())];
    for path in ["/", "/metrics", "/api/stream"] {
        let (status, _, _) = http_request(server.addr, path, &headers)
            .await
            .expect("GET");
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(ws_status(&server.url("/ws"), &headers).await, 101);
    assert_eq!(ws_status(&legacy, &headers).await, 101);
    let (status, _) = http_get(server.addr, "/healthz").await.expect("GET");
    assert_eq!(status, 200, "/healthz stays open for monitoring");
    let (_, _, metrics) = http_request(server.addr, "/metrics", &headers)
        .await
        .expect("GET");
    assert!(
        metrics.contains("nalcast_auth_failures_total"),
        "failures are counted"
    );
}

/// A password hash from `nalcast --hash-password` works in the config file.
#[tokio::test]
async fn hashed_password_from_the_config_file() {
    let hash = hash_password("correct horse");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = temp_dir("auth-config");
    let config = dir.join("nalcast.toml");
    std::fs::write(
        &config,
        format!("auth = \"ann:{hash}\"\nwidth = 320\nheight = 240\n"),
    )
    .expect("write");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let ok = basic("ann:correct horse");
    let bad = basic("ann:correct horse battery");
    let (status, _, _) = http_request(server.addr, "/api/stream", &[("Authorization", &ok)])
        .await
        .expect("GET");
    assert_eq!(status, 200);
    let (status, _, _) = http_request(server.addr, "/api/stream", &[("Authorization", &bad)])
        .await
        .expect("GET");
    assert_eq!(status, 401);
}

/// With --token: opening /?token= stores it in a cookie and drops it from the
/// address; the cookie, a Bearer header or ?token= let the WebSocket in.
#[tokio::test]
async fn token_via_query_cookie_or_header() {
    let token = "f3a9c1d27b6e4058a1b2";
    let server = Server::start(&["--width", "320", "--height", "240", "--token", token]);
    let (status, head, _) = http_request(
        server.addr,
        &format!("/?decoder=broadway&token={token}"),
        &[],
    )
    .await
    .expect("GET");
    assert_eq!(status, 303, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("location: /?decoder=broadway\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "set-cookie: nalcast_token={token}; path=/; httponly; samesite=strict"
        )),
        "{head}"
    );
    let cookie = format!("nalcast_token={token}");
    let bearer = format!("Bearer {token}");
    let (status, _, _) = http_request(server.addr, "/", &[("Cookie", &cookie)])
        .await
        .expect("GET");
    assert_eq!(status, 200);
    assert_eq!(
        ws_status(&server.url("/ws"), &[("Cookie", &cookie)]).await,
        101
    );
    assert_eq!(
        ws_status(&server.url("/ws"), &[("Authorization", &bearer)]).await,
        101
    );
    assert_eq!(
        ws_status(&server.url(&format!("/ws/raw?token={token}")), &[]).await,
        101
    );
    for bad in [
        vec![],
        vec![("Cookie", "nalcast_token=f3a9c1d27b6e4058a1b3")],
        vec![("Authorization", "Bearer nope")],
    ] {
        assert_eq!(ws_status(&server.url("/ws"), &bad).await, 401, "{bad:?}");
        let (status, _, _) = http_request(server.addr, "/metrics", &bad)
            .await
            .expect("GET");
        assert_eq!(status, 401, "{bad:?}");
    }
    let (status, _, _) = http_request(server.addr, "/?token=wrong-token-0000000", &[])
        .await
        .expect("GET");
    assert_eq!(status, 401);
}

/// Reads from `stream` until the server closes it; how long that took.
async fn time_to_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Sends a request's first line and then one header byte every 100 ms (flushed, so
/// each goes out in its own TLS record on HTTPS) for up to ten seconds.
async fn trickle_headers<W: tokio::io::AsyncWrite + Unpin>(mut w: W) {
    use tokio::io::AsyncWriteExt;
    if w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
        return;
    }
    for _ in 0..100 {
        if w.write_all(b"X").await.is_err() || w.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connections that send nothing, or headers a byte at a time, are dropped after
/// --header-timeout, on HTTP and HTTPS: on HTTPS both before the TLS handshake and
/// after it (a completed handshake, then headers withheld or trickled through TLS).
/// A viewer meanwhile keeps its stream.
#[tokio::test]
async fn silent_and_slow_clients_are_dropped_after_the_header_timeout() {
    let data = temp_dir("slowloris");
    for tls in [false, true] {
        let mut args = vec!["--width", "320", "--height", "240", "--header-timeout", "1"];
        if tls {
            args.extend([
                "--tls",
                "self-signed",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ]);
        }
        let server = Server::start(&args);
        let mut viewer = if tls {
            None
        } else {
            Some(connect(&server.url("/ws")).await)
        };
        // Connects and sends nothing (on HTTPS: not even a ClientHello).
        let mut silent = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let silent_closed = time_to_close(&mut silent, Duration::from_secs(5))
            .await
            .expect("a silent connection is dropped");
        assert!(
            silent_closed >= Duration::from_millis(900),
            "dropped only after the timeout ({silent_closed:?}, tls {tls})"
        );

        let (trickle_closed, withheld_closed) = if tls {
            let pinned = pinned_tls(&data.join("tls/self-signed.crt"));
            // The handshake completes; then the headers come a byte at a time...
            let stream = tls_connect(&pinned, server.addr, "localhost")
                .await
                .expect("TLS handshake");
            let (mut read, write) = tokio::io::split(stream);
            let (closed, ()) = tokio::join!(
                time_to_close(&mut read, Duration::from_secs(8)),
                trickle_headers(write)
            );
            // ...or not at all.
            let mut withheld = tls_connect(&pinned, server.addr, "localhost")
                .await
                .expect("TLS handshake");
            (
                closed,
                time_to_close(&mut withheld, Duration::from_secs(5)).await,
            )
        } else {
            let stream = tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect");
            let (mut read, write) = stream.into_split();
            let (closed, ()) = tokio::join!(
                time_to_close(&mut read, Duration::from_secs(8)),
                trickle_headers(write)
            );
            (closed, Some(silent_closed))
        };
        let trickle_closed = trickle_closed.expect("a trickling connection is dropped");
        assert!(
            trickle_closed >= Duration::from_millis(900),
            "trickle dropped only after the timeout ({trickle_closed:?}, tls {tls})"
        );
        let withheld_closed =
            withheld_closed.expect("a connection that withholds its request is dropped");
        assert!(
            withheld_closed >= Duration::from_millis(900),
            "dropped only after the timeout ({withheld_closed:?}, tls {tls})"
        );
        if let Some(ws) = viewer.as_mut() {
            assert!(
                next_framed(ws, Duration::from_secs(2)).await.is_some(),
                "viewer unaffected"
            );
        }
    }
}

/// Before: plain HTTP on the HTTPS port was redirected to whatever name its Host
/// header said (`Host: evil.example` -> `308 https://evil.example/`).
#[tokio::test]
async fn plain_http_on_the_tls_port_is_redirected_to_served_names_only() {
    let dir = temp_dir("tls-redirect");
    let server = Server::start(&[
        "--width",
        "160",
        "--height",
        "128",
        "--tls",
        "self-signed",
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ]);
    let served = server.addr.to_string();
    // (Host, expected status)
    for (host, expected) in [
        (served.as_str(), 308),
        ("localhost", 308),
        ("evil.example", 400),
        ("evil.example:443", 400),
    ] {
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let (status, head, _) = http_request_on(tcp, host, "/x", &[]).await.expect("GET");
        assert_eq!(status, expected, "Host: {host}: {head}");
        let location = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("location:"));
        match expected {
            308 => assert_eq!(
                location.map(|l| l[9..].trim()),
                Some(format!("https://{host}/x").as_str())
            ),
            _ => assert_eq!(location, None, "{head}"),
        }
    }
}

/// Before: the files were taken as seen before they loaded, so a pair caught
/// half-written (new certificate, old key) whose last write kept the time stamps
/// already seen was never tried again.
#[tokio::test]
async fn a_certificate_that_failed_to_load_is_tried_again() {
    let dir = temp_dir("tls-retry");
    let (a_cert, a_key) = write_cert(&dir, "a");
    let (b_cert, b_key) = write_cert(&dir, "b");
    let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&a_cert, &cert).expect("copy");
    std::fs::copy(&a_key, &key).expect("copy");
    let log = dir.join("nalcast.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--width", "160", "--height", "128", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);
    let first = server.fingerprint.clone().expect("a fingerprint");
    // The renewal's first half: the new certificate with the old key. Its failure
    // is the event awaited.
    let key_stamp = std::fs::metadata(&key)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::copy(&b_cert, &cert).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("TLS certificate not reloaded")
    {
        assert!(Instant::now() < deadline, "the broken pair was never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second half lands with the key's time stamp as it was.
    std::fs::write(&key, std::fs::read(&b_key).expect("key")).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&key)
        .and_then(|f| f.set_modified(key_stamp))
        .expect("set mtime");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = tls_connect(&pinned_tls(&b_cert), server.addr, "localhost")
            .await
            .map(|s| peer_fingerprint(&s))
            .ok();
        if let Some(fp) = now {
            assert_ne!(fp, first);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the completed pair was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
