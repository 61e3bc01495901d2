//! Stalled viewers must not hurt healthy ones, and source changes reach viewers.

use std::time::{Duration, Instant};

use crate::common::*;
use nalcast_core::protocol::{ServerMessage, FLAG_KEYFRAME};
use tokio::net::TcpSocket;

/// A viewer that completes the WebSocket handshake and then never reads, with a
/// tiny receive buffer so the server's writes back up quickly.
async fn stalled_viewer(
    addr: std::net::SocketAddr,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewers_are_isolated_resumed_or_dropped_and_memory_stays_bounded() {
    let server = Server::start(&[
        "--width",
        "640",
        "--height",
        "360",
        "--bitrate",
        "2000000",
        "--keyframe-interval",
        "15",
        "--queue-max-bytes",
        "262144",
        "--queue-max-delay",
        "300",
        "--viewer-timeout",
        "2",
    ]);
    server.wait_healthy().await;
    let rss_before = rss_kib(server.pid());
    let mut stalled = Vec::new();
    for i in 0..8 {
        stalled.push(stalled_viewer(server.addr, if i % 2 == 0 { "/ws" } else { "/ws/raw" }).await);
    }
    let mut healthy = Vec::new();
    for _ in 0..4 {
        healthy.push(connect(&server.url("/ws")).await);
    }
    // Each healthy viewer must see every frame, in order, with no long gaps, for 4 s.
    let run = Duration::from_secs(4);
    let tasks: Vec<_> = healthy
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let start = Instant::now();
                let (mut last_seq, mut frames, mut worst_gap, mut last_at) =
                    (None::<u32>, 0u32, Duration::ZERO, Instant::now());
                while start.elapsed() < run {
                    match next_framed(&mut ws, Duration::from_secs(2)).await {
                        Some(ServerMessage::AccessUnit { seq, .. }) => {
                            if let Some(prev) = last_seq {
                                assert_eq!(seq, prev + 1, "healthy viewer lost frames");
                                worst_gap = worst_gap.max(last_at.elapsed());
                            }
                            last_at = Instant::now();
                            last_seq = Some(seq);
                            frames += 1;
                        }
                        Some(ServerMessage::Skipped(n)) => {
                            panic!("healthy viewer skipped {n} frames")
                        }
                        Some(_) => {}
                        None => panic!("healthy viewer starved"),
                    }
                }
                (frames, worst_gap)
            })
        })
        .collect();
    for task in tasks {
        let (frames, worst_gap) = task.await.expect("viewer task");
        assert!(
            frames >= 90,
            "healthy viewer got {frames} frames in 4 s at 30 fps"
        );
        assert!(
            worst_gap < Duration::from_millis(500),
            "healthy viewer waited {worst_gap:?} for a frame"
        );
    }
    // The stalled viewers overflowed (counted skips) and, stuck past the timeout, were dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(server.addr, "/api/stream").await.expect("api");
        let api: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            api["skips"].as_u64().unwrap_or(0) > 0,
            "stalled viewers overflowed: {api}"
        );
        if api["viewers"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck viewers never disconnected: {api}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = rss_kib(server.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(stalled);
}

#[tokio::test]
async fn resolution_change_and_source_restart_reach_viewers_as_new_parameters_and_keyframe() {
    let dir = temp_dir("restart");
    let (a, b) = (dir.join("a.h264"), dir.join("b.h264"));
    write_h264(&a, 320, 240, 20, 10);
    write_h264(&b, 640, 480, 20, 10);
    let cmd = format!(
        "exec:cat {}; sleep 0.3; cat {}; sleep 0.3",
        a.display(),
        b.display()
    );
    let server = Server::start(&["--source", &cmd]);
    let mut ws = connect(&server.url("/ws")).await;
    // Expect: 320x240 → 640x480 (resolution change) → source lost → 320x240 again (restart),
    // and every stream-info followed by a keyframe.
    let mut sizes = Vec::new();
    let mut lost = false;
    let mut pending_info = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sizes.len() < 3 {
        assert!(Instant::now() < deadline, "saw only {sizes:?}");
        match next_framed(&mut ws, Duration::from_secs(5))
            .await
            .expect("message")
        {
            ServerMessage::StreamInfo(info) => {
                sizes.push((info.width, info.height));
                pending_info = true;
            }
            ServerMessage::AccessUnit { flags, data, .. } if pending_info => {
                assert!(
                    flags & FLAG_KEYFRAME != 0,
                    "new parameters are followed by a keyframe"
                );
                let types = nal_types(&data);
                assert_eq!(
                    &types[..2],
                    &[7, 8],
                    "keyframe starts with SPS, PPS: {types:?}"
                );
                pending_info = false;
            }
            ServerMessage::Status(s) if s.name() == "source-lost" => lost = true,
            _ => {}
        }
    }
    assert_eq!(sizes, [(320, 240), (640, 480), (320, 240)]);
    assert!(lost, "the restart was announced as source-lost");
}
