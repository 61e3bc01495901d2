//! Cross-site WebSocket hijacking: a page from another origin must not read the camera.
mod common;

use common::*;
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
