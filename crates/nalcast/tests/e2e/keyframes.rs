//! Keyframe requests reach every source that can honour them (the test pattern makes
//! one at once) and are reported as unsupported for the others (a file, a camera
//! app or a command sends keyframes at its own interval): on the real binary.

use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use nalcast_core::protocol::{ServerMessage, FLAG_CATCH_UP, FLAG_KEYFRAME};
use tokio_tungstenite::tungstenite::Message;

const ASK: &str = r#"{"type":"keyframe"}"#;

/// The value of `nalcast_keyframe_requests_total{stream="camera",outcome="…"}`.
async fn requests(server: &Server, outcome: &str) -> u64 {
    let (status, body) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let series =
        format!("nalcast_keyframe_requests_total{{stream=\"camera\",outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .expect("a count")
}

/// Live access units (not catch-up) from now on: (seq, keyframe).
async fn next_live(ws: &mut Ws) -> (u32, bool) {
    loop {
        match next_framed(ws, Duration::from_secs(10)).await {
            Some(ServerMessage::AccessUnit { flags, seq, .. }) if flags & FLAG_CATCH_UP == 0 => {
                return (seq, flags & FLAG_KEYFRAME != 0)
            }
            Some(_) => {}
            None => panic!("the stream stopped"),
        }
    }
}

#[tokio::test]
async fn the_test_pattern_makes_a_keyframe_when_a_viewer_asks() {
    // One keyframe every 20 s by itself: any sooner one was asked for.
    let server = Server::start(&["--keyframe-interval", "600"]);
    server.wait_healthy().await;
    let mut ws = connect(&server.url("/ws")).await;
    // Past the join (which may ask for one itself) and the 1 s rate limit.
    for _ in 0..45 {
        next_live(&mut ws).await;
    }
    let sent_before = requests(&server, "sent").await;
    ws.send(Message::text(ASK)).await.expect("ask");
    let mut waited = 0;
    loop {
        let (_, key) = next_live(&mut ws).await;
        if key {
            break;
        }
        waited += 1;
        assert!(waited < 60, "no keyframe 60 frames after asking");
    }
    assert_eq!(requests(&server, "sent").await, sent_before + 1);
    assert_eq!(requests(&server, "unsupported").await, 0);
}

#[tokio::test]
async fn a_file_cannot_make_keyframes_and_the_request_is_counted_as_unsupported() {
    let dir = temp_dir("keyframes-file");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 90, 30);
    let source = format!("file:{}", clip.display());
    let server = Server::start(&["--source", &source]);
    server.wait_healthy().await;
    let (_, stream) = http_get(server.addr, "/api/stream").await.expect("api");
    assert!(
        stream.contains(r#""keyframes_on_demand":false"#),
        "{stream}"
    );
    let mut ws = connect(&server.url("/ws")).await;
    next_live(&mut ws).await;
    let before = requests(&server, "unsupported").await;
    ws.send(Message::text(ASK)).await.expect("ask");
    // Counted as soon as the server read it; the viewer keeps its stream.
    let counted = async {
        while requests(&server, "unsupported").await == before {
            next_live(&mut ws).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the request is counted as unsupported");
    assert_eq!(requests(&server, "sent").await, 0);
    next_live(&mut ws).await;
}
