//! `--source rtsp://…` against a real RTSP server: GStreamer's, run by
//! tests/fixtures/rtsp_server.py as a stand-in IP camera on loopback. Viewers on /ws
//! get decodable pictures with no reference frame missing, from Baseline and High
//! cameras, over TCP and UDP; a camera that restarts plays again without viewers
//! reconnecting; wrong credentials give one clear line and the password appears
//! nowhere.
//!
//! Skipped, with a message, when GStreamer's RTSP server is not installed
//! (`scripts/setup.sh --test` installs it), unless NALCAST_REQUIRE_ALL is set.
use crate::common;
use crate::corpus::check;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{connect, http_get, next_binary, temp_dir, Server};
use bytes::Bytes;
use check::{check_capture, ffmpeg_decodes, Dialect};
use nalcast_core::protocol::{self, ServerMessage};

const PYTHON: &str = "/usr/bin/python3";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_server.py")
}

/// Whether GStreamer's RTSP server and the encoders are here (the test kit's
/// policy for a missing tool).
pub(crate) fn gstreamer_ready(test: &str) -> bool {
    let probe = "import gi; gi.require_version('Gst', '1.0'); \
        gi.require_version('GstRtspServer', '1.0'); \
        from gi.repository import Gst, GstRtspServer; Gst.init(None); \
        assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'x265enc', 'videotestsrc'))";
    let ok = Command::new(PYTHON)
        .args(["-c", probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    testkit::tools::require(
        test,
        "GStreamer's RTSP server with x264enc and x265enc (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly,bad})",
        ok,
    )
}

/// A loopback port nobody listens on (for the camera, which must keep it across
/// restarts).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The stand-in camera, killed on drop.
pub(crate) struct Camera {
    child: Child,
    port: u16,
}

impl Camera {
    /// Starts the RTSP server on `port` and waits until it listens. `auth` is
    /// ("basic" | "digest", "user:password").
    pub(crate) fn start(port: u16, auth: Option<(&str, &str)>) -> Camera {
        Camera::start_recording(port, auth, None)
    }

    /// [`Camera::start`], also taking a published stream on `/record` into
    /// `record` (Annex-B) when given: a media server that records.
    pub(crate) fn start_recording(
        port: u16,
        auth: Option<(&str, &str)>,
        record: Option<&Path>,
    ) -> Camera {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(fixture()).arg(port.to_string());
        if let Some((method, user_pass)) = auth {
            cmd.args(["--auth", method, user_pass]);
        }
        if let Some(file) = record {
            cmd.arg("--record").arg(file);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the RTSP server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        assert!(
            line.starts_with("ready "),
            "RTSP server did not start: {line:?}"
        );
        Camera { child, port }
    }

    pub(crate) fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }

    /// Stops it the hard way, as a camera losing power would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nalcast with `args`, its log (at info, so that nothing hides there) in `log`.
fn start_nalcast(args: &[&str], log: &Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    Server::from_command(cmd)
}

/// Reads /ws until `pictures` access units have come; returns every binary message
/// and when the first picture came.
async fn watch(ws: &mut common::Ws, pictures: usize, within: Duration) -> (Vec<Bytes>, Instant) {
    let deadline = Instant::now() + within;
    let (mut messages, mut seen, mut first) = (Vec::new(), 0, None);
    while seen < pictures {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = next_binary(ws, left).await else {
            panic!("only {seen} of {pictures} pictures within {within:?}");
        };
        if let Ok(ServerMessage::AccessUnit { .. }) = protocol::decode(&msg) {
            seen += 1;
            first.get_or_insert_with(Instant::now);
        }
        messages.push(msg);
    }
    (messages, first.expect("a picture"))
}

/// Checks a capture the way the corpus test does (frame_num and sequence
/// continuity, keyframes led by SPS and PPS) and decodes it with ffmpeg.
fn assert_decodes(name: &str, messages: &[Bytes]) -> usize {
    let seen = check_capture(Dialect::Framed, messages, &[], false)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = temp_dir(&format!("rtsp-capture-{name}")).join("capture.h264");
    std::fs::write(&file, &seen.annexb).expect("write capture");
    ffmpeg_decodes(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
    seen.pictures
}

/// Polls `what` (an HTTP path) until its body satisfies `done`.
async fn await_body(server: &Server, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = http_get(server.addr, path).await.expect(path);
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn baseline_and_high_cameras_decode_on_ws_over_tcp_and_udp() {
    if !gstreamer_ready("baseline_and_high_cameras_decode_on_ws_over_tcp_and_udp") {
        return;
    }
    let camera = Camera::start(free_port(), None);
    let dir = temp_dir("rtsp-profiles");
    for (mount, transport, codec) in [
        ("/baseline", "tcp", "avc1.42"),
        ("/high", "tcp", "avc1.64"),
        ("/baseline", "udp", "avc1.42"),
    ] {
        let name = format!("{}-{transport}", &mount[1..]);
        let started = Instant::now();
        let url = camera.url(mount);
        let server = start_nalcast(
            &["--source", &url, "--rtsp-transport", transport],
            &dir.join(format!("{name}.log")),
        );
        let mut ws = connect(&server.url("/ws")).await;
        let (messages, first) = watch(&mut ws, 60, Duration::from_secs(20)).await;
        eprintln!(
            "{name}: first picture {} ms after nalcast started",
            first.duration_since(started).as_millis()
        );
        let pictures = assert_decodes(&name, &messages);
        assert!(pictures >= 60, "{name}: {pictures} pictures");
        let (_, api) = http_get(server.addr, "/api/stream").await.expect("api");
        let api: serde_json::Value = serde_json::from_str(&api).expect("json");
        assert_eq!(api["source"], "rtsp", "{api}");
        assert!(
            api["codec"].as_str().is_some_and(|c| c.starts_with(codec)),
            "{name}: {api}"
        );
        assert_eq!(
            (api["width"].as_u64(), api["height"].as_u64()),
            (Some(320), Some(240))
        );
    }
}

#[tokio::test]
async fn a_restarted_camera_plays_again_without_viewers_reconnecting() {
    if !gstreamer_ready("a_restarted_camera_plays_again_without_viewers_reconnecting") {
        return;
    }
    let port = free_port();
    let camera = Camera::start(port, None);
    let dir = temp_dir("rtsp-restart");
    let server = start_nalcast(&["--source", &camera.url("/baseline")], &dir.join("log"));
    let mut ws = connect(&server.url("/ws")).await;
    let (mut messages, _) = watch(&mut ws, 20, Duration::from_secs(20)).await;

    camera.kill();
    // The viewer hears that the camera is gone…
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = next_binary(&mut ws, left)
            .await
            .expect("source-lost status");
        let lost = matches!(protocol::decode(&msg),
            Ok(ServerMessage::Status(ref s)) if s.name() == "source-lost");
        messages.push(msg);
        if lost {
            break;
        }
    }
    // …and, on the same connection, gets pictures again once it is back.
    let restarted = Instant::now();
    let camera = Camera::start(port, None);
    let (after, first) = watch(&mut ws, 40, Duration::from_secs(20)).await;
    eprintln!(
        "restart: first picture {} ms after the camera listened again",
        first.duration_since(restarted).as_millis()
    );
    messages.extend(after);
    let pictures = assert_decodes("restart", &messages);
    assert!(pictures >= 60, "{pictures} pictures");
    drop(camera);
}

#[tokio::test]
async fn wrong_credentials_are_one_clear_line_and_no_password_shows_anywhere() {
    if !gstreamer_ready("wrong_credentials_are_one_clear_line_and_no_password_shows_anywhere") {
        return;
    }
    // A password with characters that must be percent-encoded in the URL.
    let camera = Camera::start(free_port(), Some(("digest", "admin:s3cr@t w/rd%")));
    let dir = temp_dir("rtsp-credentials");
    let secrets = ["s3cr", "Wr0ng", "admin"];

    let log = dir.join("wrong.log");
    let wrong = format!(
        "rtsp://admin:Wr0ng%40pass@127.0.0.1:{}/baseline",
        camera.port
    );
    let server = start_nalcast(&["--source", &wrong], &log);
    let mut ws = connect(&server.url("/ws")).await;
    let reason = "RTSP camera refused the credentials";
    let health = await_body(&server, "/healthz", |b| b.contains(reason)).await;
    let api = await_body(&server, "/api/stream", |b| b.contains(reason)).await;
    let metrics = http_get(server.addr, "/metrics").await.expect("metrics").1;
    let page = http_get(server.addr, "/").await.expect("page").1;
    let mut status = None;
    while status.is_none() {
        let msg = next_binary(&mut ws, Duration::from_secs(10))
            .await
            .expect("a status message");
        if let Ok(ServerMessage::Status(s)) = protocol::decode(&msg) {
            status = s.reason().filter(|r| *r == reason).map(str::to_owned);
        }
    }
    // Refused credentials are retried at the longest backoff (10 s), not every
    // 250 ms: no second attempt follows soon.
    let second_attempt = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches("starting source").count() > 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(second_attempt.is_err(), "retried at once after a 401");
    drop(ws);
    drop(server);
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(reason)).collect();
    assert_eq!(lines.len(), 1, "one line per refusal: {text}");
    assert!(lines[0].contains("rtsp://***@127.0.0.1"), "{}", lines[0]);
    for (what, text) in [
        ("log", text.as_str()),
        ("/healthz", &health),
        ("/api/stream", &api),
        ("/metrics", &metrics),
        ("page", &page),
    ] {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
        }
    }

    // The right password, percent-encoded, plays.
    let right = format!(
        "rtsp://admin:s3cr%40t%20w%2Frd%25@127.0.0.1:{}/baseline",
        camera.port
    );
    let log = dir.join("right.log");
    let server = start_nalcast(&["--source", &right], &log);
    let mut ws = connect(&server.url("/ws")).await;
    let (messages, _) = watch(&mut ws, 30, Duration::from_secs(20)).await;
    assert_decodes("credentials", &messages);
    for msg in &messages {
        for secret in secrets {
            let leaked = msg.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!leaked, "a /ws message (stream-info?) shows {secret:?}");
        }
    }
    drop(ws);
    drop(server);
    let text = std::fs::read_to_string(&log).expect("log");
    for secret in secrets {
        assert!(!text.contains(secret), "log shows {secret:?}: {text}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_nalcast"))
        .args(["--source", &right, "--help"])
        .output()
        .expect("--help");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("s3cr"));
}

#[tokio::test]
async fn cameras_that_cannot_play_say_why_in_one_line() {
    if !gstreamer_ready("cameras_that_cannot_play_say_why_in_one_line") {
        return;
    }
    let camera = Camera::start(free_port(), None);
    let dir = temp_dir("rtsp-errors");
    let nobody = format!("rtsp://127.0.0.1:{}/live", free_port());
    for (name, url, reason) in [
        (
            "h265",
            camera.url("/h265"),
            "the RTSP camera offers no H.264 video (it offers: video/h265)",
        ),
        (
            "missing",
            camera.url("/nothing-here"),
            "RTSP camera error: 404",
        ),
        (
            "unreachable",
            nobody,
            "cannot reach the RTSP camera: Connection refused",
        ),
    ] {
        let server = start_nalcast(&["--source", &url], &dir.join(format!("{name}.log")));
        let api = await_body(&server, "/api/stream", |b| b.contains("source-lost")).await;
        let api: serde_json::Value = serde_json::from_str(&api).expect("json");
        let got = api["reason"].as_str().unwrap_or_default();
        assert!(
            got.to_lowercase().starts_with(&reason.to_lowercase()),
            "{name}: {got}"
        );
        assert!(
            !got.contains('\n') && !got.contains("127.0.0.1"),
            "{name}: {got}"
        );
    }
}

#[tokio::test]
async fn a_server_answering_garbage_is_a_clear_error_not_a_crash() {
    // No GStreamer needed: a TCP server that answers every request with rubbish.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let rubbish = b"\x00\xffRTSP/7.3 banana\r\n\xfe\xfe: \x01\r\n\r\n$\x09\xff\xff";
                    if tcp.write_all(rubbish).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let dir = temp_dir("rtsp-garbage");
    let url = format!("rtsp://user:pw@127.0.0.1:{port}/live");
    let server = start_nalcast(&["--source", &url], &dir.join("log"));
    let api = await_body(&server, "/api/stream", |b| b.contains("source-lost")).await;
    let api: serde_json::Value = serde_json::from_str(&api).expect("json");
    let reason = api["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("RTSP camera error: "), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
    // Still serving, and still trying. The always-open /healthz says the kind of
    // failure only: before, it repeated what the "camera" answered.
    let (status, body) = http_get(server.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 503);
    assert_eq!(body, "unhealthy: RTSP camera error\n", "{reason}");
    let text = await_log(&dir.join("log"), |t| {
        t.matches("starting source").count() >= 2
    })
    .await;
    assert!(
        !text.contains("panicked") && !text.contains("pw@"),
        "{text}"
    );
}

/// Polls a log file until `done` holds for its text.
async fn await_log(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "log never got there: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a hostile "camera" does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Answers DESCRIBE with a head that never ends.
    EndlessHead,
    /// Answers DESCRIBE with a body of gigabytes.
    BigBody,
    /// Plays, then sends RTP that never ends a picture (FU-A without an end).
    NoBoundary,
    /// Asks for Basic authentication only.
    BasicOnly,
}

/// Bytes a hostile camera sends at most per connection: more than the guard's
/// limits allow, and enough to show in nalcast's memory when nothing stops it.
const HOSTILE_BYTES: usize = 320 << 20;

/// A hostile RTSP server on a loopback port (no GStreamer: a few lines of RTSP);
/// the requests it got, to check what nalcast sent.
async fn hostile_camera(mode: Hostile) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    seen.lock().expect("lock").push(request.clone());
                    let method = request.split_whitespace().next().unwrap_or("").to_owned();
                    let url = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let cseq = request
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq:").or_else(|| l.strip_prefix("Cseq:")))
                        .unwrap_or("1")
                        .trim()
                        .to_owned();
                    let ok = |extra: &str, body: &str| {
                        format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let answer = match (mode, method.as_str()) {
                        (Hostile::BasicOnly, _) => format!(
                            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n"
                        ),
                        (Hostile::EndlessHead, "DESCRIBE") => {
                            let _ = tcp
                                .write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n").as_bytes())
                                .await;
                            let line = format!("X-Junk: {}\r\n", "a".repeat(1000));
                            let unit = line.repeat(64).into_bytes();
                            send_until(&mut tcp, &unit).await;
                            return;
                        }
                        (Hostile::BigBody, "DESCRIBE") => {
                            let _ = tcp
                                .write_all(
                                    format!(
                                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: 4294967296\r\n\r\n"
                                    )
                                    .as_bytes(),
                                )
                                .await;
                            send_until(&mut tcp, &vec![b'v'; 64 * 1024]).await;
                            return;
                        }
                        (_, "DESCRIBE") => {
                            let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n";
                            ok(
                                &format!("Content-Base: {url}/\r\nContent-Type: application/sdp\r\n"),
                                sdp,
                            )
                        }
                        (_, "SETUP") => ok(
                            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 1234;timeout=60\r\n",
                            "",
                        ),
                        (_, "PLAY") => {
                            let _ = tcp
                                .write_all(ok("Session: 1234\r\n", "").as_bytes())
                                .await;
                            // One FU-A fragment after another, never the end one.
                            let mut sent = 0;
                            let mut seq = 0u16;
                            while sent < HOSTILE_BYTES {
                                let mut unit = Vec::with_capacity(64 * 1420);
                                for _ in 0..64 {
                                    let payload = 1400;
                                    let len = 12 + 2 + payload;
                                    unit.extend_from_slice(&[b'$', 0]);
                                    unit.extend_from_slice(
                                        &u16::try_from(len).expect("len").to_be_bytes(),
                                    );
                                    unit.extend_from_slice(&[0x80, 96]);
                                    unit.extend_from_slice(&seq.to_be_bytes());
                                    unit.extend_from_slice(&7u32.to_be_bytes());
                                    unit.extend_from_slice(&[0, 0, 0, 1]);
                                    // FU-A of an IDR slice: the start bit once, never the end bit.
                                    unit.extend_from_slice(&[0x7c, if seq == 0 { 0x85 } else { 0x05 }]);
                                    unit.extend(std::iter::repeat_n(0x11, payload));
                                    seq = seq.wrapping_add(1);
                                }
                                if tcp.write_all(&unit).await.is_err() {
                                    return;
                                }
                                sent += unit.len();
                            }
                            // Then hold the connection, silent.
                            let _ = tcp.read(&mut chunk).await;
                            return;
                        }
                        _ => ok("Public: DESCRIBE, SETUP, PLAY, TEARDOWN\r\n", ""),
                    };
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, requests)
}

/// Writes `unit` again and again, up to [`HOSTILE_BYTES`], then holds the
/// connection open without a word (until the other side closes it).
async fn send_until(tcp: &mut tokio::net::TcpStream, unit: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sent = 0;
    while sent < HOSTILE_BYTES {
        if tcp.write_all(unit).await.is_err() {
            return;
        }
        sent += unit.len();
    }
    let mut rest = [0u8; 64];
    let _ = tcp.read(&mut rest).await;
}

/// Before: retina buffered whatever the camera sent until a message was complete
/// (1.4 to 4.2 GB; under a 1.5 GB limit nalcast aborted), and sent the password as
/// Basic when that was all the camera asked for.
#[tokio::test]
async fn a_hostile_camera_is_dropped_before_nalcast_buffers_it() {
    let dir = temp_dir("rtsp-hostile");
    for (mode, reason) in [
        (
            Hostile::EndlessHead,
            "the RTSP camera sent a message head over 64 KiB",
        ),
        (
            Hostile::BigBody,
            "the RTSP camera announced a message body of 4294967296 bytes",
        ),
        (
            Hostile::NoBoundary,
            "the RTSP camera sent over 16 MiB of video without ending a picture",
        ),
        (
            Hostile::BasicOnly,
            "the RTSP camera asks for Basic authentication",
        ),
    ] {
        let (port, requests) = hostile_camera(mode).await;
        let log = dir.join(format!("{mode:?}.log"));
        let url = format!("rtsp://ann:secret@127.0.0.1:{port}/live");
        let server = start_nalcast(&["--source", &url], &log);
        let api = await_body(&server, "/api/stream", |b| b.contains(reason)).await;
        assert!(api.contains("source-lost"), "{mode:?}: {api}");
        let rss_mib = common::rss_kib(server.pid()) / 1024;
        println!("{mode:?}: nalcast resident {rss_mib} MiB");
        assert!(
            rss_mib < 100,
            "{mode:?}: nalcast holds {rss_mib} MiB of what the camera sent"
        );
        // Dropped with one line per attempt: the reason, nothing of retina's.
        let text = await_log(&log, |t| t.contains(reason)).await;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("RTSP"))
            .collect();
        assert!(
            !lines.is_empty() && lines.iter().all(|l| l.contains(reason)),
            "{mode:?}: {lines:#?}"
        );
        assert!(!text.contains("secret"), "{mode:?}: {text}");
        let got = requests.lock().expect("lock").clone();
        assert!(
            got.iter().all(|r| !r.contains("Authorization: Basic")),
            "{mode:?}: the password went out as Basic: {got:?}"
        );
    }
}
