//! Snapshots over HTTP: a JPEG of the newest picture whose burned-in stamp reads
//! back as that picture's, a burst of requests making each picture once while the
//! stream's viewers keep every frame, and clear answers for what cannot be served.
use std::time::{Duration, Instant};

use nalcast_core::protocol::ServerMessage;
use nalcast_core::stamp::Stamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A GET: status, headers (lower-case names) and the body's bytes.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = status_code(&head).expect("status");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The stamp of a JPEG of the test pattern.
fn stamp_of(jpeg: &[u8]) -> Stamp {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    let rgb = d.decode().expect("a valid JPEG");
    let width = usize::from(d.info().expect("info").width);
    let luma: Vec<u8> = rgb
        .chunks(3)
        .map(|p| {
            (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])) as u8
        })
        .collect();
    Stamp::read(&luma, width, width).expect("the stamp reads back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_is_the_newest_picture_and_its_stamp_reads_back() {
    let server = Server::start(&[
        "--stream",
        "desk=test",
        "--stream",
        "door=test",
        "--width",
        "640",
        "--height",
        "360",
    ]);
    server.wait_healthy().await;
    // A viewer knows the newest access unit: its sequence number and capture time.
    let mut ws = connect(&server.url("/streams/door/ws")).await;
    let mut captured = std::collections::HashMap::new();
    let mut newest = 0;
    for _ in 0..30 {
        if let Some(ServerMessage::AccessUnit {
            seq, capture_us, ..
        }) = next_framed(&mut ws, Duration::from_secs(5)).await
        {
            captured.insert(seq, capture_us);
            newest = seq;
        }
    }
    let (status, headers, body) = get(server.addr, "/streams/door/snapshot.jpg").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    let seq: u32 = header(&headers, "x-picture-seq")
        .expect("seq")
        .parse()
        .expect("number");
    // The viewer's newest unit when the request went out, and what came after.
    while let Some(ServerMessage::AccessUnit {
        seq: s, capture_us, ..
    }) = next_framed(&mut ws, Duration::from_millis(200)).await
    {
        captured.insert(s, capture_us);
        if s >= seq {
            break;
        }
    }
    assert!(
        seq + 2 >= newest,
        "the snapshot shows #{seq}, the stream was at #{newest}"
    );
    let stamp = stamp_of(&body);
    let when = captured[&seq];
    assert_eq!(
        stamp.capture_us_near(when),
        when,
        "the stamp is the picture's own"
    );
    let age: u64 = header(&headers, "x-picture-age-ms")
        .expect("age")
        .parse()
        .expect("ms");
    assert!(age < 2000, "a live picture is young: {age} ms");
    assert!(header(&headers, "last-modified").is_some_and(|v| v.ends_with(" GMT")));

    // A smaller one keeps the aspect; bad sizes are a clear 400.
    let (status, _, small) = get(server.addr, "/snapshot.jpg?width=320&quality=50").await;
    assert_eq!(status, 200);
    let mut d = jpeg_decoder::Decoder::new(&small[..]);
    d.decode().expect("a valid JPEG");
    let info = d.info().expect("info");
    assert_eq!((info.width, info.height), (320, 180));
    assert_eq!(get(server.addr, "/snapshot.jpg?width=5").await.0, 400);
    assert_eq!(get(server.addr, "/snapshot.jpg?size=5").await.0, 400);
    assert_eq!(get(server.addr, "/streams/nope/snapshot.jpg").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_snapshot_requests_decodes_each_picture_once_and_viewers_keep_every_frame() {
    let server = Server::start(&["--width", "1280", "--height", "720", "--bitrate", "3000000"]);
    server.wait_healthy().await;
    let url = server.url("/ws");
    let viewer = tokio::spawn(async move {
        let mut ws = connect(&url).await;
        let (mut last, mut frames) = (None::<u32>, 0u32);
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            match next_framed(&mut ws, Duration::from_secs(2)).await {
                Some(ServerMessage::AccessUnit { seq, .. }) => {
                    if let Some(l) = last {
                        assert_eq!(seq, l + 1, "a viewer lost a frame to the snapshots");
                    }
                    last = Some(seq);
                    frames += 1;
                }
                Some(ServerMessage::Skipped { .. }) => panic!("a viewer skipped"),
                Some(_) => {}
                None => panic!("the viewer stalled"),
            }
        }
        frames
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Five bursts of 50 at once, half a second apart.
    let mut pictures = std::collections::HashSet::new();
    let mut served = 0;
    for _ in 0..5 {
        let burst: Vec<_> = (0..50)
            .map(|_| {
                let addr = server.addr;
                tokio::spawn(async move { get(addr, "/snapshot.jpg").await })
            })
            .collect();
        for r in burst {
            let (status, headers, _) = r.await.expect("request");
            assert_eq!(status, 200);
            served += 1;
            pictures.insert(header(&headers, "x-picture-seq").expect("seq").to_owned());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let frames = viewer.await.expect("viewer");
    assert!(
        frames >= 100,
        "the viewer kept its rate: {frames} frames in 4 s"
    );
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    let made: f64 = metrics
        .lines()
        .find(|l| l.starts_with("nalcast_snapshot_seconds_count{stream=\"camera\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the decode histogram");
    assert_eq!(served, 250);
    assert!(
        made as usize <= pictures.len(),
        "{made} stills made for {} distinct pictures served",
        pictures.len()
    );
}

/// Reads multipart/x-mixed-replace parts from `tcp` (after the response head):
/// the JPEGs, each with when its last byte came.
async fn read_parts(
    tcp: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    until: Instant,
) -> Vec<(Vec<u8>, Instant)> {
    let mut parts = Vec::new();
    let mut chunk = [0u8; 65536];
    while Instant::now() < until {
        // A part: "--boundary\r\n", headers, blank line, Content-Length bytes, "\r\n".
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                let start = head_end + 4;
                if buf.len() >= start + len + 2 {
                    parts.push((buf[start..start + len].to_vec(), Instant::now()));
                    buf.drain(..start + len + 2);
                    continue;
                }
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    parts
}

/// Opens an MJPEG stream; the socket and what came after the response head.
async fn open_mjpeg(
    addr: std::net::SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
) -> (tokio::net::TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("rcvbuf");
    }
    let mut tcp = socket.connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("multipart/x-mixed-replace; boundary=nalcastframe"),
        "{head}"
    );
    let rest = buf[head_end + 4..].to_vec();
    (tcp, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_viewers_get_the_configured_rate_and_a_stalled_one_is_not_buffered_for() {
    let server = Server::start(&[
        "--width",
        "640",
        "--height",
        "360",
        "--mjpeg-fps",
        "10",
        // Full size: the stamps are read back (their rows are 16 pixels high).
        "--mjpeg-width",
        "0",
    ]);
    server.wait_healthy().await;
    // ffmpeg, a real MJPEG client, reads mjpg-streamer's URL for 4 s of its own
    // arrival times (wall-clock timestamps) and decodes every picture without a word.
    let url = format!("http://{}/?action=stream", server.addr);
    let ffmpeg = tokio::task::spawn_blocking(move || {
        std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-use_wallclock_as_timestamps",
                "1",
                "-f",
                "mpjpeg",
            ])
            .args(["-i", &url, "-t", "4", "-f", "framemd5", "-"])
            .output()
            .expect("ffmpeg runs")
    });

    // The rate, counted by a reader of our own over 4 s.
    let (mut tcp, mut buf) = open_mjpeg(server.addr, "/mjpeg", None).await;
    let first = read_parts(&mut tcp, &mut buf, Instant::now() + Duration::from_secs(5)).await;
    assert!(!first.is_empty());
    let from = first[0].1;
    let counted = first
        .iter()
        .filter(|(_, at)| at.duration_since(from) < Duration::from_secs(4))
        .count();
    assert!(counted >= 38, "{counted} pictures in 4 s at --mjpeg-fps 10");
    let mut d = jpeg_decoder::Decoder::new(&first[0].0[..]);
    d.decode().expect("a JPEG");
    assert_eq!(d.info().map(|i| (i.width, i.height)), Some((640, 360)));

    let out = ffmpeg.await.expect("ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(
        out.status.success() && stderr.trim().is_empty() && frames >= 38,
        "ffmpeg: {frames} pictures in 4 s at --mjpeg-fps 10; {stderr}"
    );

    // A viewer that stops reading for 3 s gets, once it reads again, no more than
    // the kernel's buffers held before a live picture: nalcast queued nothing.
    let (mut stalled, mut buf) = open_mjpeg(server.addr, "/mjpeg", Some(4096)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = Instant::now();
    let parts = read_parts(&mut stalled, &mut buf, resumed + Duration::from_secs(3)).await;
    let now_us = nalcast_core::clock::wall_us();
    let fresh = parts.iter().position(|(jpeg, _)| {
        let stamp = stamp_of(jpeg);
        now_us.saturating_sub(stamp.capture_us_near(now_us)) < 3_000_000
            && stamp.capture_us_near(now_us) + 500_000 >= now_us.saturating_sub(3_000_000)
    });
    let stale_bytes: usize = parts[..fresh.unwrap_or(parts.len())]
        .iter()
        .map(|(j, _)| j.len())
        .sum();
    eprintln!(
        "STALL stale {stale_bytes} bytes in {:?} pictures of {}",
        fresh,
        parts.len()
    );
    assert!(fresh.is_some(), "a live picture after the stall");
    assert!(
        stale_bytes < 1 << 20,
        "{stale_bytes} bytes of old pictures were kept for a stalled viewer"
    );
}

/// Home Assistant's generic camera reads its stream source with PyAV.
const PYAV: &str = r#"
import sys, av
container = av.open(sys.argv[1], timeout=10)
video = container.streams.video[0]
pictures = 0
for frame in container.decode(video):
    pictures += 1
    if pictures == 30:
        break
print(pictures, frame.width, frame.height)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyav_opens_the_ll_hls_url_as_home_assistant_does() {
    let python = "/usr/bin/python3";
    let has_av = std::process::Command::new(python)
        .args(["-c", "import av"])
        .status()
        .is_ok_and(|s| s.success());
    if !testkit::tools::require(
        "pyav_opens_the_ll_hls_url_as_home_assistant_does",
        "PyAV (python3-av)",
        has_av,
    ) {
        return;
    }
    let server = Server::start(&[
        "--stream",
        "porch=test",
        "--stream",
        "garden=test",
        "--width",
        "640",
        "--height",
        "360",
    ]);
    server.wait_healthy().await;
    // As Home Assistant meets it: running for a while, the playlist holding whole
    // segments (FFmpeg's HLS reader takes segments, not LL-HLS parts).
    let path = "/streams/garden/hls/index.m3u8";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !http_get(server.addr, path)
        .await
        .is_ok_and(|(_, body)| body.contains("#EXTINF"))
    {
        assert!(
            Instant::now() < deadline,
            "no whole segment in the playlist"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("http://{}{path}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", PYAV, &url])
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyAV: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "30 640 360");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_viewer_takes_a_viewer_place_like_any_other() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--max-viewers-per-ip",
        "1",
    ]);
    server.wait_healthy().await;
    let (first, _) = open_mjpeg(server.addr, "/mjpeg", None).await;
    // The address's one place is taken: a second MJPEG viewer and a WebSocket
    // viewer are refused as any viewer over the limit is.
    assert_eq!(get(server.addr, "/?action=stream").await.0, 429);
    assert_eq!(status_of(server.addr, "GET", "/ws", &UPGRADE).await, 429);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(server.addr, "GET", "/ws", &UPGRADE).await != 101 {
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpg_streamer_s_urls_on_a_port_of_their_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--mjpg-streamer-listen",
        &listen,
    ]);
    server.wait_healthy().await;
    let addr: std::net::SocketAddr = listen.parse().expect("addr");
    let (status, headers, body) = get(addr, "/?action=snapshot").await;
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/jpeg"))
    );
    jpeg_decoder::Decoder::new(&body[..])
        .decode()
        .expect("a JPEG");
    let (mut tcp, mut buf) = open_mjpeg(addr, "/?action=stream", None).await;
    let parts = read_parts(&mut tcp, &mut buf, Instant::now() + Duration::from_secs(2)).await;
    assert!(parts.len() >= 5, "{} pictures in 2 s", parts.len());
    // Nothing else there: the player is on the main port.
    let (status, _, body) = get(addr, "/ws").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("main port"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_camera_is_lost_the_snapshot_is_its_last_picture_and_says_how_old() {
    let dir = temp_dir("snapshot-lost");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 30, 30);
    let (pid, dead) = (dir.join("camera.pid"), dir.join("dead"));
    // A camera that sends its pictures, then stays; once "dead", it fails to start.
    let source = format!(
        "exec:[ -e {dead} ] && exit 1; echo $$ > {pid}; cat {clip}; exec sleep 600",
        dead = dead.display(),
        pid = pid.display(),
        clip = clip.display()
    );
    let server = Server::start(&["--source", &source, "--stall-timeout", "30"]);
    server.wait_healthy().await;
    let (status, headers, _) = get(server.addr, "/snapshot.jpg").await;
    assert_eq!(status, 200);
    let seq = header(&headers, "x-picture-seq").expect("seq").to_owned();

    std::fs::write(&dead, "").expect("mark");
    let group = std::fs::read_to_string(&pid).expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", group.trim())])
        .status()
        .expect("kill");
    assert!(killed.success());
    let lost = Instant::now();
    let deadline = lost + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(server.addr, "/api/stream").await.expect("api");
        if body.contains("\"source-lost\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the camera was not seen lost: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, headers, body) = get(server.addr, "/snapshot.jpg").await;
    assert_eq!(status, 200, "the last picture, not an error");
    assert_eq!(header(&headers, "x-picture-seq"), Some(seq.as_str()));
    jpeg_decoder::Decoder::new(&body[..])
        .decode()
        .expect("a JPEG");
    let age: u128 = header(&headers, "x-picture-age-ms")
        .expect("age")
        .parse()
        .expect("ms");
    assert!(
        age >= lost.elapsed().as_millis().saturating_sub(100),
        "it says how old it is: {age} ms, the camera was lost {} ms ago",
        lost.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_picture_a_snapshot_is_a_clear_503_and_starts_an_on_demand_camera() {
    // A camera that takes a second to start (as a real one does): the test pattern
    // starts in milliseconds, sometimes before the first request is answered.
    let dir = temp_dir("snapshot-on-demand");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 30, 30);
    let camera = format!(
        "porch=exec:sleep 1; while true; do cat {}; done",
        clip.display()
    );
    let server = Server::start(&[
        "--stream",
        &camera,
        "--on-demand",
        "on",
        "--idle-timeout",
        "5",
    ]);
    // An idle on-demand camera has no picture: 503 saying so, with when to ask again.
    let (status, headers, body) = get(server.addr, "/streams/porch/snapshot.jpg").await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&body).contains("no picture yet"));
    // That request started the camera: a picture follows without a viewer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, headers, _) = get(server.addr, "/streams/porch/snapshot.jpg").await;
        if status == 200 {
            assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the camera never started for snapshots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
