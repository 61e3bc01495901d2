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
