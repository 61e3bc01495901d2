//! Many cameras in one nalcast: each named stream at /streams/NAME/, the first
//! also at the plain URLs and on the legacy port.
use std::time::Duration;

use crate::common::*;
use nalcast_core::protocol::ServerMessage;

/// The source kind the first stream-info of `url` names, and its picture width.
async fn stream_info(url: &str) -> (String, u32) {
    let mut ws = connect(url).await;
    loop {
        match next_framed(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMessage::StreamInfo(info)) => return (info.source, info.width),
            Some(_) => {}
            None => panic!("{url}: no stream-info"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_has_its_own_urls_and_the_first_keeps_the_plain_ones() {
    let dir = temp_dir("streams-routes");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 30, 10);
    let file = format!("door=file:{}", clip.display());
    let server = Server::start(&[
        "--stream",
        "garden=test",
        "--stream",
        &file,
        "--width",
        "640",
        "--height",
        "360",
    ]);
    server.wait_healthy().await;

    // The list, in the configured order, each with its name and state.
    let (status, body) = http_get(server.addr, "/api/streams").await.expect("list");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let names: Vec<_> = list["streams"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["source"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(names, [("garden", "test"), ("door", "file")], "{body}");

    // Each stream's own WebSocket, and the plain URL for the first.
    assert_eq!(
        stream_info(&server.url("/streams/door/ws")).await,
        ("file".into(), 320)
    );
    assert_eq!(
        stream_info(&server.url("/streams/garden/ws")).await,
        ("test".into(), 640)
    );
    assert_eq!(stream_info(&server.url("/ws")).await, ("test".into(), 640));
    let (status, body) = http_get(server.addr, "/streams/door/api/stream")
        .await
        .expect("one");
    assert_eq!(status, 200);
    let door: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(door["name"], "door", "{body}");

    // The legacy port serves the first stream as the original page expects; a
    // stream's name there picks it.
    let legacy = server.legacy.expect("legacy port");
    let mut ws = connect(&format!("ws://{legacy}/")).await;
    let first = next_binary(&mut ws, Duration::from_secs(10))
        .await
        .expect("a NAL unit");
    assert_eq!(raw_nal_type(&first), 7, "an SPS first");

    // The page at a stream's own URL, which must end in a slash for the page's
    // relative URLs; an unknown name is a 404 saying where the names are.
    assert_eq!(
        status_of(server.addr, "GET", "/streams/door/", &[]).await,
        200
    );
    let (status, head, _) = http_request(server.addr, "/streams/door", &[])
        .await
        .expect("redirect");
    assert_eq!(status, 308, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: /streams/door/"),
        "{head}"
    );
    let (status, body) = http_get(server.addr, "/streams/nope/ws")
        .await
        .expect("404");
    assert_eq!(status, 404);
    assert!(body.contains("/api/streams"), "{body}");
    assert_eq!(
        status_of(server.addr, "GET", "/streams/door/hls/index.m3u8", &[]).await,
        200
    );
}
