//! WebRTC over WHEP, end to end with a third-party client: aiortc (PyPI; installed
//! into a venv of its own by scripts/setup-webrtc-client.sh) offers, nalcast
//! answers, aiortc decodes with FFmpeg. Checked as a viewer would see it: every
//! picture decoded with its stamp readable, stamps consecutive (no picture lost),
//! no RTP packet lost, the first picture live.
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// aiortc's Python, as scripts/setup-webrtc-client.sh installs it.
fn aiortc_python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("nalcast/aiortc-venv/bin/python")
}

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/webrtc/whep_client.py")
}

/// What the client saw.
#[derive(Debug)]
struct Played {
    json: serde_json::Value,
    stamps: Vec<Option<u64>>,
}

/// Plays `url` for `seconds` with aiortc; None when aiortc is missing (and allowed to be).
async fn play(test: &str, url: String, seconds: f64) -> Option<Played> {
    play_with(test, url, seconds, &[]).await
}

/// [`play`] with more of the client's options.
async fn play_with(test: &str, url: String, seconds: f64, options: &[&str]) -> Option<Played> {
    let python = aiortc_python();
    if !testkit::tools::require(
        test,
        "aiortc (scripts/setup-webrtc-client.sh)",
        python.exists(),
    ) {
        return None;
    }
    let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(client_script())
            .args([&url, "--seconds", &seconds.to_string()])
            .args(&options)
            .output()
            .expect("the WHEP client runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the WHEP client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("client JSON");
    let stamps = json["stamps"]
        .as_array()
        .expect("stamps")
        .iter()
        .map(|v| v.as_u64())
        .collect();
    Some(Played { json, stamps })
}

/// Pictures whose stamp is not the one after the previous picture's.
fn gaps(stamps: &[Option<u64>]) -> Vec<(Option<u64>, Option<u64>)> {
    stamps
        .windows(2)
        .filter(|w| !matches!(w, [Some(a), Some(b)] if *b == a + 1))
        .map(|w| (w[0], w[1]))
        .collect()
}

fn check_played(played: &Played, width: u64, height: u64, min_frames: usize) {
    let j = &played.json;
    assert_eq!(j["answer_has_h264"], true, "{j}");
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(width), Some(height))
    );
    assert!(
        played.stamps.len() >= min_frames,
        "{} pictures, wanted {min_frames}",
        played.stamps.len()
    );
    assert_eq!(
        gaps(&played.stamps),
        vec![],
        "pictures missing between these stamps"
    );
    assert_eq!(j["packets_lost"].as_u64(), Some(0), "{j}");
    assert!(j["packets_received"].as_u64().unwrap_or(0) > 0, "{j}");
    // DELETE ended the session.
    assert_eq!(j["delete_status"].as_u64(), Some(200), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_the_test_pattern_over_whep_from_a_live_keyframe_without_a_gap() {
    let server = Server::start(&["--width", "640", "--height", "360", "--bitrate", "1500000"]);
    server.wait_healthy().await;
    let Some(played) = play(
        "aiortc_plays_the_test_pattern_over_whep_from_a_live_keyframe_without_a_gap",
        format!("http://{}/whep", server.addr),
        3.0,
    )
    .await
    else {
        return;
    };
    check_played(&played, 640, 360, 60);
    // The test pattern makes keyframes on demand: the first picture is live, not
    // the start of the cached GOP.
    let age = played.json["first_stamp_age_ms"]
        .as_f64()
        .expect("first stamp");
    assert!(age < 1000.0, "the first picture was {age} ms old");
    assert!(
        played.json["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/streams/camera/whep/")),
        "{}",
        played.json
    );
    // The session is over (DELETE) and counted as played.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
        let ended = metrics.lines().any(|l| {
            l.starts_with("nalcast_webrtc_sessions_total{")
                && l.contains("result=\"connected\"")
                && l.ends_with(" 1")
        });
        let none_now = metrics
            .lines()
            .any(|l| l.starts_with("nalcast_webrtc_sessions{") && l.ends_with(" 0"));
        if ended && none_now {
            // What it sent is in the bytes written to viewers (3 s at 1.5 Mbit/s
            // is about 560 KB; no WebSocket viewer here).
            let out: f64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("nalcast_bytes_out_total{stream=\"camera\"} "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            assert!(out > 200_000.0, "bytes out {out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A lossy network: aiortc throws away every 20th RTP datagram before SRTP sees it.
/// Each loss is reported (NACK) and the packet sent again by nalcast's own sending
/// (sender.rs), so no picture is lost and none is decoded without its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_lost_on_the_way_are_sent_again_on_nack_and_no_picture_is_lost() {
    let server = Server::start(&["--width", "640", "--height", "360", "--bitrate", "1500000"]);
    server.wait_healthy().await;
    let Some(played) = play_with(
        "packets_lost_on_the_way_are_sent_again_on_nack_and_no_picture_is_lost",
        format!("http://{}/whep", server.addr),
        3.0,
        &["--drop-every", "20"],
    )
    .await
    else {
        return;
    };
    let j = &played.json;
    let dropped = j["dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 10, "only {dropped} packets thrown away: {j}");
    assert!(j["nacks"].as_u64().unwrap_or(0) > 0, "no NACK sent: {j}");
    assert!(
        played.stamps.len() >= 60,
        "{} pictures",
        played.stamps.len()
    );
    assert_eq!(
        gaps(&played.stamps),
        vec![],
        "pictures missing between these stamps: {j}"
    );
    // The receiver's count: every packet came, the last one thrown away perhaps
    // still on its way back when the count was read.
    assert!(j["packets_lost"].as_u64().is_some_and(|n| n <= 1), "{j}");
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    let resent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nalcast_webrtc_packets_resent_total{stream=\"camera\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        resent + 1 >= dropped,
        "{resent} packets sent again for {dropped} lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream() {
    if !testkit::tools::require_ffmpeg(
        "aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream",
    ) {
        return;
    }
    // A camera that cannot make keyframes on demand (an encoder in a pipe), Main
    // profile with B-frames, a keyframe every second: the viewer waits for one.
    let cam = "exec:ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
               -c:v libx264 -profile:v main -bf 2 -g 30 -tune zerolatency -f h264 -";
    let spec = format!("porch={cam}");
    let server = Server::start(&["--stream", "yard=test", "--stream", &spec]);
    server.wait_healthy().await;
    let Some(played) = play(
        "aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream",
        format!("http://{}/streams/porch/whep", server.addr),
        3.0,
    )
    .await
    else {
        return;
    };
    let j = &played.json;
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(
        played.stamps.len() >= 60,
        "{} pictures",
        played.stamps.len()
    );
    assert_eq!(j["packets_lost"].as_u64(), Some(0), "{j}");
    assert_eq!(j["delete_status"].as_u64(), Some(200), "{j}");
    assert!(
        j["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/streams/porch/whep/")),
        "{j}"
    );
}

/// Chromium's offer to receive video, cut to its H.264 payload types.
const OFFER: &str = "v=0\r\no=- 5161606966918190967 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 103 108 109\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:gOb6\r\na=ice-pwd:g6edhJb1XmmmzAcBWu7v7I+j\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 17:DA:9A:A9:C2:70:EC:C6:DE:26:5E:6F:55:B3:03:6A:2A:43:19:0D:1D:B9:AF:C1:EC:C9:57:A7:7C:0D:D9:00\r\n\
a=setup:actpass\r\na=mid:0\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 ccm fir\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
a=rtpmap:108 H264/90000\r\na=rtcp-fb:108 ccm fir\r\na=rtcp-fb:108 nack\r\na=rtcp-fb:108 nack pli\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:109 rtx/90000\r\na=fmtp:109 apt=108\r\n";

/// One HTTP/1.1 request with a body: (status, head, body).
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        status_code(head).unwrap_or(0),
        head.to_owned(),
        body.to_owned(),
    )
}

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

#[tokio::test]
async fn whep_answers_an_offer_and_refuses_what_it_cannot_serve_with_the_reason() {
    let server = Server::start(&["--allow-origin", "http://dash.lan:3000"]);
    server.wait_healthy().await;
    let addr = server.addr;
    // An offer: 201, the answer, the session's URL; DELETE ends it, once.
    let (status, head, answer) = send(addr, "POST", "/whep", &[SDP], OFFER).await;
    assert_eq!(status, 201, "{head}\n{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/sdp"),
        "{head}"
    );
    assert!(
        answer.contains("m=video 9") || answer.contains("m=video "),
        "{answer}"
    );
    assert!(
        answer.contains("a=ice-lite"),
        "nalcast is ICE-lite: {answer}"
    );
    assert!(answer.contains("a=candidate:"), "{answer}");
    assert!(answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains("playout-delay"), "{answer}");
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("Location")
        .trim()
        .to_owned();
    assert!(location.starts_with("/streams/camera/whep/"), "{location}");
    assert_eq!(send(addr, "PATCH", &location, &[], "").await.0, 405);
    // A MediaMTX-style player asks for ICE servers first: none needed, 204.
    assert_eq!(send(addr, "OPTIONS", "/whep", &[], "").await.0, 204);
    assert_eq!(send(addr, "DELETE", &location, &[], "").await.0, 200);
    assert_eq!(
        send(
            addr,
            "DELETE",
            "/whep/0123456789abcdef0123456789abcdef",
            &[],
            ""
        )
        .await
        .0,
        404
    );
    // Refusals, each with its reason.
    let (status, _, body) = send(
        addr,
        "POST",
        "/whep",
        &[("Content-Type", "text/plain")],
        OFFER,
    )
    .await;
    assert_eq!(
        (status, body.contains("application/sdp")),
        (415, true),
        "{body}"
    );
    let (status, _, body) = send(addr, "POST", "/whep", &[SDP], "hello").await;
    assert_eq!(status, 400, "{body}");
    let audio_only = OFFER.replace("m=video", "m=audio");
    let (status, _, body) = send(addr, "POST", "/whep", &[SDP], &audio_only).await;
    assert!(matches!(status, 400 | 406), "{status} {body}");
    let vp8_only = OFFER.replace("H264/90000", "VP8/90000");
    let (status, _, body) = send(addr, "POST", "/whep", &[SDP], &vp8_only).await;
    assert_eq!((status, body.contains("H.264")), (406, true), "{body}");
    let huge = "a".repeat(70 * 1024);
    assert_eq!(send(addr, "POST", "/whep", &[SDP], &huge).await.0, 413);
    // Another site's page may not open a session; an allowed one may, reading Location.
    let (status, _, _) = send(
        addr,
        "POST",
        "/whep",
        &[SDP, ("Origin", "http://evil.example")],
        OFFER,
    )
    .await;
    assert_eq!(status, 403);
    let (status, head, _) = send(
        addr,
        "OPTIONS",
        "/whep",
        &[
            ("Origin", "http://dash.lan:3000"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .await;
    let head = head.to_ascii_lowercase();
    assert_eq!(status, 204, "{head}");
    assert!(
        head.contains("access-control-allow-methods: post"),
        "{head}"
    );
    let (status, head, _) = send(
        addr,
        "POST",
        "/whep",
        &[SDP, ("Origin", "http://dash.lan:3000")],
        OFFER,
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-expose-headers: location"),
        "{head}"
    );
}

/// A player on another page with a token (--token on, its origin allowed): the
/// browser's preflight carries no credentials and must still be answered, for WHEP
/// and LL-HLS alike; the requests that follow are checked as before; a foreign
/// origin's preflight gets no CORS answer, and OPTIONS without a preflight's headers
/// is refused as any request without credentials.
#[tokio::test]
async fn a_cross_origin_player_with_a_token_gets_its_preflight_answered() {
    let server = Server::start(&[
        "--token",
        "s3cret-token-value",
        "--allow-origin",
        "http://dash.lan:3000",
    ]);
    server.wait_healthy().await;
    let addr = server.addr;
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| async move {
        let (status, head, _) = send(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
            ],
            "",
        )
        .await;
        (status, head.to_ascii_lowercase())
    };
    for (path, method) in [
        ("/whep", "POST"),
        ("/streams/camera/whep", "POST"),
        ("/hls/index.m3u8", "GET"),
    ] {
        let (status, head) = preflight(path, "http://dash.lan:3000", method).await;
        assert_eq!(status, 204, "{path}: {head}");
        assert!(
            head.contains("access-control-allow-origin: http://dash.lan:3000"),
            "{path}: {head}"
        );
        let (_, head) = preflight(path, "http://evil.example", method).await;
        assert!(
            !head.contains("access-control-allow-origin"),
            "{path}: {head}"
        );
    }
    let origin = ("Origin", "http://dash.lan:3000");
    let (status, _, _) = send(addr, "OPTIONS", "/whep", &[origin], "").await;
    assert_eq!(status, 401, "OPTIONS that is not a preflight");
    let (status, _, _) = send(addr, "POST", "/whep", &[SDP, origin], OFFER).await;
    assert_eq!(status, 401, "the offer itself without the token");
    let (status, head, _) = send(
        addr,
        "POST",
        "/whep?token=s3cret-token-value",
        &[SDP, origin],
        OFFER,
    )
    .await;
    assert_eq!(status, 201, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://dash.lan:3000"),
        "{head}"
    );
}

#[tokio::test]
async fn a_whep_session_is_a_viewer_within_the_viewer_limits_and_off_means_404() {
    let server = Server::start(&["--max-viewers-per-ip", "1"]);
    server.wait_healthy().await;
    let (status, _, body) = send(server.addr, "POST", "/whep", &[SDP], OFFER).await;
    assert_eq!(status, 201, "{body}");
    let (_, stream) = http_get(server.addr, "/api/stream").await.expect("api");
    assert!(stream.contains("\"viewers\":1"), "{stream}");
    // The one place of this address is taken by the session (not yet connected).
    let (status, _, body) = send(server.addr, "POST", "/whep", &[SDP], OFFER).await;
    assert_eq!(status, 429, "{body}");
    let off = Server::start(&["--webrtc", "off"]);
    let (status, _, body) = send(off.addr, "POST", "/whep", &[SDP], OFFER).await;
    assert_eq!(
        (status, body.contains("--webrtc off")),
        (404, true),
        "{body}"
    );
}
