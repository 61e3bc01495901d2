//! The real server on a real port with real WebSocket clients (issue: hub and server).

use std::time::{Duration, Instant};

use crate::common::*;
use nalcast_core::protocol::{ServerMessage, FLAG_CATCH_UP, FLAG_KEYFRAME};
use nalcast_core::stamp::Stamp;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

const SMALL: &[&str] = &["--width", "320", "--height", "240", "--bitrate", "300000"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = SMALL.to_vec();
    v.extend_from_slice(extra);
    v
}

/// Joins `/ws` and checks the viewer starts with stream-info and a keyframe carrying SPS+PPS+IDR.
async fn join_framed(server: &Server) -> Duration {
    let t0 = Instant::now();
    let mut ws = connect(&server.url("/ws")).await;
    let mut saw_info = false;
    loop {
        match next_framed(&mut ws, Duration::from_secs(2))
            .await
            .expect("message")
        {
            ServerMessage::Status(_) => {}
            ServerMessage::StreamInfo(info) => {
                assert_eq!((info.width, info.height), (320, 240));
                assert!(info.codec.starts_with("avc1.42"), "{}", info.codec);
                saw_info = true;
            }
            ServerMessage::AccessUnit { flags, data, .. } => {
                let elapsed = t0.elapsed();
                assert!(saw_info, "stream-info precedes the first frame");
                assert!(flags & FLAG_KEYFRAME != 0, "first frame is a keyframe");
                let types = nal_types(&data);
                let first_vcl = types.iter().position(|t| *t == 5).expect("IDR slice");
                assert!(
                    types[..first_vcl].contains(&7) && types[..first_vcl].contains(&8),
                    "SPS and PPS before the IDR: {types:?}"
                );
                return elapsed;
            }
            other => panic!("unexpected first message {other:?}"),
        }
    }
}

/// Joins a raw endpoint and checks the first three messages are SPS, PPS, IDR.
async fn join_raw(url: &str) -> Duration {
    let t0 = Instant::now();
    let mut ws = connect(url).await;
    let mut types = Vec::new();
    while types.len() < 3 {
        let msg = next_binary(&mut ws, Duration::from_secs(2))
            .await
            .expect("raw message");
        types.push(raw_nal_type(&msg));
    }
    assert_eq!(types, [7, 8, 5], "first raw messages are SPS, PPS, IDR");
    t0.elapsed()
}

#[tokio::test]
async fn viewers_joining_anywhere_in_the_gop_start_with_a_keyframe_at_once() {
    // A 2 s GOP; keyframes on demand are rate-limited, so joins land mid-GOP too.
    let server = Server::start(&args(&["--keyframe-interval", "60"]));
    server.wait_healthy().await;
    let legacy = format!("ws://{}/", server.legacy.expect("legacy listener"));
    let mut watcher = connect(&server.url("/ws")).await;
    let mut worst = Duration::ZERO;
    let mut join_seqs = Vec::new();
    for round in 0..6 {
        // Let a varying number of frames pass between joins.
        let mut frames = 0;
        while frames < 5 + round * 4 {
            if let Some(ServerMessage::AccessUnit { seq, .. }) =
                next_framed(&mut watcher, Duration::from_secs(2)).await
            {
                frames += 1;
                if frames == 1 {
                    join_seqs.push(seq);
                }
            }
        }
        worst = worst.max(join_framed(&server).await);
        worst = worst.max(join_raw(&server.url("/ws/raw")).await);
        worst = worst.max(join_raw(&legacy).await);
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest join took {worst:?}"
    );
}

#[tokio::test]
async fn catch_up_frames_are_flagged_and_followed_by_live_ones() {
    let server = Server::start(&args(&["--keyframe-interval", "90"]));
    server.wait_healthy().await;
    // Wait until the GOP cache holds a few frames.
    let mut watcher = connect(&server.url("/ws")).await;
    let mut n = 0;
    while n < 10 {
        if let Some(ServerMessage::AccessUnit { .. }) =
            next_framed(&mut watcher, Duration::from_secs(2)).await
        {
            n += 1;
        }
    }
    let mut ws = connect(&server.url("/ws")).await;
    let mut flags_seen = Vec::new();
    let mut last_seq = None;
    while flags_seen.len() < 20 {
        if let Some(ServerMessage::AccessUnit { flags, seq, .. }) =
            next_framed(&mut ws, Duration::from_secs(2)).await
        {
            if let Some(prev) = last_seq {
                assert_eq!(seq, prev + 1, "no gaps for a healthy viewer");
            }
            last_seq = Some(seq);
            flags_seen.push(flags);
        }
    }
    assert!(
        flags_seen[0] & FLAG_CATCH_UP != 0,
        "the join burst is flagged catch-up"
    );
    assert_eq!(
        flags_seen.last().map(|f| f & FLAG_CATCH_UP),
        Some(0),
        "live frames are not"
    );
}

/// Decodes raw NAL messages with openh264 and returns the stamped frame numbers.
fn decode_raw(messages: &[bytes::Bytes]) -> Vec<u32> {
    let mut decoder = Decoder::new().expect("openh264 decoder");
    let mut frames = Vec::new();
    for msg in messages {
        match decoder.decode(msg) {
            Ok(Some(yuv)) => {
                let (w, _) = yuv.dimensions();
                let (stride, _, _) = yuv.strides();
                let stamp =
                    Stamp::read(yuv.y(), w, stride).expect("stamp readable in decoded frame");
                frames.push(stamp.frame);
            }
            Ok(None) => {}
            Err(e) => panic!("decoder error on message {} bytes: {e}", msg.len()),
        }
    }
    frames
}

#[tokio::test]
async fn raw_and_legacy_streams_decode_from_the_first_message() {
    let server = Server::start(&args(&["--keyframe-interval", "45"]));
    server.wait_healthy().await;
    let legacy = format!("ws://{}/any/path", server.legacy.expect("legacy listener"));
    for url in [server.url("/ws/raw"), legacy] {
        let mut ws = connect(&url).await;
        let mut messages = Vec::new();
        while messages.len() < 80 {
            messages.push(
                next_binary(&mut ws, Duration::from_secs(2))
                    .await
                    .expect("raw message"),
            );
        }
        // Every picture received decodes (a picture's first slice has first_mb_in_slice 0).
        let sent = messages
            .iter()
            .filter(|m| matches!(raw_nal_type(m), 1 | 5) && m[5] & 0x80 != 0)
            .count();
        let frames = decode_raw(&messages);
        assert!(frames.len() >= 60, "{url}: decoded {} frames", frames.len());
        assert!(
            frames.len() + 1 >= sent,
            "{url}: {sent} pictures sent, {} decoded",
            frames.len()
        );
        // In order; the encoder itself may skip a frame number under rate control.
        assert!(
            frames.windows(2).all(|w| w[1] > w[0]),
            "{url}: frames decode in order: {frames:?}"
        );
    }
}

#[tokio::test]
async fn legacy_port_explains_itself_to_plain_http() {
    let server = Server::start(SMALL);
    let (status, body) = http_get(server.legacy.expect("legacy"), "/")
        .await
        .expect("http");
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"), "{body}");
}

#[tokio::test]
async fn api_health_and_metrics_report_the_stream() {
    let server = Server::start(&args(&["--fps", "25", "--keyframe-interval", "50"]));
    server.wait_healthy().await;
    let mut v1 = connect(&server.url("/ws")).await;
    let mut v2 = connect(&server.url("/ws/raw")).await;
    next_binary(&mut v2, Duration::from_secs(2))
        .await
        .expect("frames flow");
    // Past the catch-up burst: two live delta frames (the server records the first
    // one's delay before it sends the second).
    let mut live_deltas = 0;
    while live_deltas < 2 {
        if let ServerMessage::AccessUnit { flags, .. } =
            next_framed(&mut v1, Duration::from_secs(5))
                .await
                .expect("frames flow")
        {
            if flags & (FLAG_CATCH_UP | FLAG_KEYFRAME) == 0 {
                live_deltas += 1;
            }
        }
    }
    let (status, body) = http_get(server.addr, "/api/stream").await.expect("api");
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(api["source"], "test");
    assert_eq!(api["state"], "live");
    assert_eq!(api["width"], 320);
    assert_eq!(api["height"], 240);
    assert!(
        api["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("avc1.42")),
        "{api}"
    );
    assert_eq!(api["fps"], 25.0);
    assert_eq!(api["bitrate"], 300000);
    assert_eq!(api["keyframe_interval"], 50);
    assert_eq!(api["viewers"], 2);
    assert!(api["uptime_s"].as_f64().is_some_and(|u| u > 0.0));

    let (status, body) = http_get(server.addr, "/healthz").await.expect("healthz");
    assert_eq!((status, body.trim()), (200, "ok"));

    let (status, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in:\n{metrics}"))
    };
    assert!(value("nalcast_frames_in_total{stream=\"camera\"}") > 0.0);
    assert!(value("nalcast_bytes_out_total{stream=\"camera\"}") > 0.0);
    assert_eq!(value("nalcast_viewers{stream=\"camera\"}"), 2.0);
    assert!(
        value("nalcast_server_latency_seconds_count{stream=\"camera\",frame=\"delta\"}") > 0.0,
        "{metrics}"
    );
    assert!(value("nalcast_queue_delay_seconds_count{stream=\"camera\"}") > 0.0);
}

#[tokio::test]
async fn healthz_reports_a_failing_source() {
    let server = Server::start(&["--source", "exec:echo camera unplugged >&2; exit 3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(server.addr, "/healthz").await.expect("healthz");
        assert_eq!(status, 503);
        if body.contains("exited") {
            assert!(
                body.contains("camera process exited with status 3"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "reason never reported: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = http_get(server.addr, "/api/stream").await.expect("api");
    let api: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(api["state"], "source-lost");
    assert!(
        api["reason"]
            .as_str()
            .is_some_and(|r| r == "camera process exited with status 3"),
        "{api}"
    );
}

#[tokio::test]
async fn sigterm_closes_viewers_and_exits_within_a_second() {
    let mut server = Server::start(SMALL);
    server.wait_healthy().await;
    let mut ws = connect(&server.url("/ws")).await;
    next_framed(&mut ws, Duration::from_secs(2))
        .await
        .expect("frames");
    let t0 = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    // The viewer sees a close frame with "going away".
    let mut close_code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = msg {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1001));
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still running after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn page_is_embedded_with_security_headers_and_etag() {
    let server = Server::start(SMALL);
    let (status, head, body) = http_request(server.addr, "/", &[]).await.expect("page");
    assert_eq!(status, 200);
    assert!(body.contains("page.js"), "{body}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .expect("etag")
        .to_owned();
    let (status, _, _) = http_request(server.addr, "/", &[("If-None-Match", &etag)])
        .await
        .expect("page");
    assert_eq!(status, 304);
    let (status, _, body) = http_request(server.addr, "/vendor/broadway/Decoder.js", &[])
        .await
        .expect("broadway");
    assert_eq!(status, 200);
    assert!(body.len() > 100_000, "Broadway's decoder is served");
}

/// Reads one server frame (unmasked) from a raw connection: (opcode, payload).
async fn read_server_frame<R: tokio::io::AsyncRead + Unpin>(tcp: &mut R) -> (u8, Vec<u8>) {
    testkit::websocket::read_server_frame(tcp)
        .await
        .expect("a server frame")
}

#[tokio::test]
async fn a_ping_sent_along_with_the_handshake_is_answered() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // Both ways a viewer can be carried: on a viewer thread, and on the main runtime.
    for threads in ["0", "2"] {
        let server = Server::start(&args(&["--viewer-threads", threads]));
        server.wait_healthy().await;
        let mut tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        // The handshake and a ping in one write: the ping reaches the server in the
        // same read as the request, before the connection becomes a WebSocket.
        let mut bytes = ws_handshake(server.addr);
        bytes.extend(testkit::websocket::client_frame(
            0x89,
            b"early",
            [1, 2, 3, 4],
        ));
        tcp.write_all(&bytes).await.expect("handshake and ping");
        let mut reader = tokio::io::BufReader::new(&mut tcp);
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("status line");
        assert!(line.starts_with("HTTP/1.1 101"), "{line}");
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).await.expect("header");
        }
        let pong = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let (opcode, payload) = read_server_frame(&mut reader).await;
                if opcode == 0xA {
                    return payload;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no pong with --viewer-threads {threads}"));
        assert_eq!(pong, b"early");
    }
}

#[tokio::test]
async fn every_metric_series_is_there_at_zero_before_anything_happens() {
    // A camera that sends nothing: no frame, no viewer, no disconnect yet.
    let server = Server::start(&["--source", "exec:sleep 60"]);
    let (status, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    // Every series of the book, each label value at 0 (a histogram's count), and
    // described. (--publish targets' series are numbered at start-up: publish.rs.)
    let mut expected = Vec::new();
    for series in nalcast::server::series::ALL {
        if series.label.is_some_and(|l| l.values.is_empty()) {
            continue;
        }
        expected.push(format!("# HELP {} ", series.name));
        let name = match series.kind {
            nalcast_core::metric::Kind::Histogram => format!("{}_count", series.name),
            _ => series.name.to_owned(),
        };
        // A per-stream series has the stream's label first: the one stream here is
        // "camera".
        let stream = if series.per_stream {
            "stream=\"camera\","
        } else {
            ""
        };
        match series.label {
            None if series.name == "nalcast_connections_open" => {
                expected.push(format!("{name} ")); // the scrape's own connection
            }
            None if series.per_stream => expected.push(format!("{name}{{stream=\"camera\"}} 0")),
            None => expected.push(format!("{name} 0")),
            Some(label) => {
                for value in label.values {
                    expected.push(format!("{name}{{{stream}{}=\"{value}\"}} 0", label.name));
                }
            }
        }
    }
    assert!(expected.len() > 40, "{expected:?}");
    for line in expected {
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line:?} missing from /metrics at start-up:\n{metrics}"
        );
    }
}
