//! `--publish`: the stream reaches a real media server (nginx with its RTMP module),
//! with the camera's timing, comes back after the server restarts, and the URL's
//! secrets reach no one.
//!
//! The nginx tests are skipped (with a message) when nginx or its RTMP module is
//! missing, unless NALCAST_REQUIRE_ALL is set; `scripts/setup.sh --test` installs
//! both.
use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{http_get, Server};
use crate::nginx::{free_addr, process_settings, Nginx, NGINX};
use nalcast_core::protocol::ServerMessage;
use serde_json::Value;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Whether nginx with RTMP is here (the test kit's policy for a missing tool).
fn nginx_available(test: &str) -> bool {
    testkit::tools::require(
        test,
        &format!("{NGINX} and {RTMP_MODULE}"),
        Path::new(NGINX).exists() && Path::new(RTMP_MODULE).exists(),
    )
}

/// An nginx RTMP server run as our child, with the README's `rtmp { }` block
/// (players start at a keyframe: `wait_key`) in a config of its own in a temp dir,
/// on `addr` (or a free loopback port).
async fn start_rtmp(dir: &Path, addr: Option<SocketAddr>) -> Nginx {
    let addr = addr.unwrap_or_else(free_addr);
    let config = format!(
        "load_module {RTMP_MODULE};\n{}events {{ worker_connections 64; }}\n{rtmp}\n",
        process_settings(dir),
        // README's block, as a user copies it, on this test's port.
        rtmp = crate::docs::block("README.md", "nginx", "rtmp {")
            .replace("listen 1935;", &format!("listen {addr};")),
    );
    Nginx::run(dir, addr, &config).await
}

/// The RTMP URL of `path` on `nginx`.
fn rtmp_url(nginx: &Nginx, path: &str) -> String {
    format!("rtmp://{}/{path}", nginx.addr)
}

/// Stops `nginx` and starts it again on the same port.
async fn restart(mut nginx: Nginx) -> Nginx {
    nginx.stop();
    let (dir, addr) = (nginx.dir().to_owned(), nginx.addr);
    drop(nginx);
    start_rtmp(&dir, Some(addr)).await
}

/// nalcast with the test pattern, publishing to `url`, its log in `log`.
fn nalcast(url: &str, log: &Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--source", "test", "--publish", url])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    Server::from_command(cmd)
}

/// nalcast with the test pattern (and `extra` arguments), publishing to `url` given
/// in the environment (NALCAST_PUBLISH: on no command line), its log in `log`.
pub(crate) fn nalcast_publishing_from_env(url: &str, log: &Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--source", "test"])
        .args(extra)
        .env("NALCAST_PUBLISH", url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    Server::from_command(cmd)
}

async fn api(server: &Server) -> Value {
    let (status, body) = http_get(server.addr, "/api/stream").await.expect("api");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Waits until the first publish target's state is `state`; returns it.
async fn publish_state(server: &Server, state: &str, within: Duration) -> Value {
    api_publish_until(server, within, |p| p["state"] == state).await
}

/// Waits until the first publish target's entry in /api/stream is `wanted`.
pub(crate) async fn api_publish_until(
    server: &Server,
    within: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let api = api(server).await;
        let publish = api["publish"][0].clone();
        if wanted(&publish) {
            return publish;
        }
        assert!(
            Instant::now() < deadline,
            "publish state not as awaited within {within:?}: {publish}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a tool with a deadline: (success, stdout, stderr).
async fn run(program: &str, args: &[&str], within: Duration) -> (bool, String, String) {
    let out = tokio::time::timeout(
        within,
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} took more than {within:?}"))
    .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a player pulling the stream back sees: size, and pts of 2 s of packets.
struct Pulled {
    width: u64,
    height: u64,
    pts_ms: Vec<f64>,
}

async fn pull(url: &str) -> Pulled {
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height:packet=pts_time",
            "-read_intervals",
            "%+2",
            "-of",
            "json",
            url,
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(ok && err.trim().is_empty(), "ffprobe {url}: {err}");
    let v: Value = serde_json::from_str(&out).expect("ffprobe json");
    let stream = &v["streams"][0];
    let pts_ms = v["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    Pulled {
        width: stream["width"].as_u64().unwrap_or(0),
        height: stream["height"].as_u64().unwrap_or(0),
        pts_ms,
    }
}

/// The median time between pictures, ms.
fn median_interval(pts_ms: &[f64]) -> f64 {
    let mut deltas: Vec<f64> = pts_ms.windows(2).map(|w| w[1] - w[0]).collect();
    deltas.sort_by(f64::total_cmp);
    deltas.get(deltas.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn the_stream_reaches_nginx_with_camera_timing_and_returns_after_nginx_restarts() {
    let test = "the_stream_reaches_nginx_with_camera_timing_and_returns_after_nginx_restarts";
    if !nginx_available(test) {
        return;
    }
    let dir = common::temp_dir("publish-restart");
    let nginx = start_rtmp(&dir, None).await;
    let url = rtmp_url(&nginx, "live/cam");
    let started = Instant::now();
    let server = nalcast(&url, &dir.join("nalcast.log"));
    publish_state(&server, "live", Duration::from_secs(20)).await;
    eprintln!("publishing live {:?} after start", started.elapsed());

    // A publisher is no viewer.
    assert_eq!(api(&server).await["viewers"], 0);
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("nalcast_publish_up{stream=\"camera\",target=\"0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nalcast_viewers{stream=\"camera\"} 0"),
        "{metrics}"
    );

    // Pulled back: 1280x720 at the test pattern's 30 fps, not ffmpeg's invented 25.
    let pulled = pull(&url).await;
    assert_eq!((pulled.width, pulled.height), (1280, 720));
    assert!(
        pulled.pts_ms.len() >= 40,
        "{} packets in 2 s",
        pulled.pts_ms.len()
    );
    let interval = median_interval(&pulled.pts_ms);
    assert!(
        (31.0..=36.0).contains(&interval),
        "median picture interval {interval} ms, not 1/30 s: {:?}",
        pulled.pts_ms
    );
    // It decodes without an error, and the picture moves. (Pictures keep their own
    // times, capture jitter and all: without passthrough the null muxer would
    // round them onto a 30 fps grid and complain when two land on one tick.)
    let (ok, _, err) = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            &url,
            "-t",
            "2",
            "-fps_mode",
            "passthrough",
            "-f",
            "null",
            "-",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(ok && err.trim().is_empty(), "decoding errors: {err}");
    let (ok, hashes, err) = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            &url,
            "-frames:v",
            "10",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "{err}");
    let mut pictures: Vec<&str> = hashes
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next())
        .collect();
    assert_eq!(pictures.len(), 10, "{hashes}");
    pictures.sort_unstable();
    pictures.dedup();
    assert!(pictures.len() > 1, "the picture never changes: {hashes}");

    // The server goes away: nalcast says so, with why, and keeps trying.
    let mut nginx = nginx;
    nginx.stop();
    let retrying = publish_state(&server, "retrying", Duration::from_secs(20)).await;
    let error = retrying["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("the server"), "{retrying}");
    assert!(retrying["restarts"].as_u64() >= Some(1), "{retrying}");
    let (status, _) = http_get(server.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200, "a publisher's failure is not the camera's");

    // It comes back on the same port: the stream is there again.
    let back = Instant::now();
    let nginx = restart(nginx).await;
    publish_state(&server, "live", Duration::from_secs(30)).await;
    eprintln!("publishing live {:?} after nginx restarted", back.elapsed());
    let pulled = pull(&rtmp_url(&nginx, "live/cam")).await;
    assert_eq!((pulled.width, pulled.height), (1280, 720));
    assert!(!pulled.pts_ms.is_empty());
    eprintln!("pulled again {:?} after nginx restarted", back.elapsed());
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert!(
        !metrics.contains("nalcast_publish_restarts_total{stream=\"camera\",target=\"0\"} 0"),
        "{metrics}"
    );

    drop(server);
}

#[tokio::test]
async fn the_urls_user_password_and_keys_reach_no_api_page_metric_or_log() {
    let test = "the_urls_user_password_and_keys_reach_no_api_page_metric_or_log";
    if !nginx_available(test) {
        return;
    }
    let secrets = ["alice", "pa55word", "s3cr3tkey", "str3amname"];
    let dir = common::temp_dir("publish-secrets");
    let nginx = start_rtmp(&dir, None).await;
    let log = dir.join("nalcast.log");
    let url = format!(
        "rtmp://alice:pa55word@{}/live/str3amname?key=s3cr3tkey",
        nginx.addr
    );
    let server = nalcast(&url, &log);
    let live = publish_state(&server, "live", Duration::from_secs(20)).await;
    assert_eq!(
        live["url"],
        format!("rtmp://***@{}/live/***?***", nginx.addr)
    );
    // nalcast's own client (a login only where the server asks: nginx does not):
    // no process but nalcast (given the URL on its command line here) holds it.
    let others: Vec<String> = command_lines_holding("pa55word")
        .into_iter()
        .filter(|c| !c.starts_with(env!("CARGO_BIN_EXE_nalcast")))
        .collect();
    assert_eq!(others, Vec::<String>::new());
    // nginx takes the stream under its name (the query string is its arguments).
    let pulled = pull(&rtmp_url(&nginx, "live/str3amname")).await;
    assert!(!pulled.pts_ms.is_empty());

    // Failing: the reason is there, the secrets are not.
    let mut nginx = nginx;
    nginx.stop();
    let retrying = publish_state(&server, "retrying", Duration::from_secs(20)).await;
    assert!(
        !retrying["last_error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{retrying}"
    );
    let mut seen = Vec::new();
    for path in ["/api/stream", "/healthz", "/metrics", "/"] {
        let (_, body) = http_get(server.addr, path).await.expect(path);
        seen.push((path.to_owned(), body));
    }
    drop(server);
    let log = std::fs::read_to_string(&log).expect("log");
    seen.push(("the log".to_owned(), log));
    for (what, text) in &seen {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
}

/// The processes on this machine whose command line holds `text`.
pub(crate) fn command_lines_holding(text: &str) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(text))
        .collect()
}

/// Before: an ffmpeg per target carried the URL, stream key and all, on its
/// command line, which `ps` shows every local user. rtmp:// (and rtmps://) are
/// now published by nalcast itself.
#[tokio::test]
async fn an_rtmp_stream_key_is_on_no_command_line_and_the_stream_plays_whole() {
    let test = "an_rtmp_stream_key_is_on_no_command_line_and_the_stream_plays_whole";
    if !nginx_available(test) {
        return;
    }
    let key = "k3y-only-in-the-environment";
    let dir = common::temp_dir("publish-native");
    let nginx = start_rtmp(&dir, None).await;
    let log = dir.join("nalcast.log");
    let server = nalcast_publishing_from_env(&rtmp_url(&nginx, &format!("live/{key}")), &log, &[]);
    publish_state(&server, "live", Duration::from_secs(20)).await;
    // Live: the key is on no command line (nalcast's own has no --publish).
    assert_eq!(command_lines_holding(key), Vec::<String>::new());
    // What a player gets back from nginx: the test pattern's size, 30 pictures a
    // second, decoded without an error.
    let pulled = pull(&rtmp_url(&nginx, &format!("live/{key}"))).await;
    assert_eq!((pulled.width, pulled.height), (1280, 720));
    let interval = median_interval(&pulled.pts_ms);
    assert!(
        (30.0..=37.0).contains(&interval),
        "{interval} ms between pictures"
    );
    let url = rtmp_url(&nginx, &format!("live/{key}"));
    let (ok, _, err) = run(
        "ffmpeg",
        &["-v", "error", "-i", &url, "-t", "2", "-f", "null", "-"],
        Duration::from_secs(20),
    )
    .await;
    assert!(
        ok && err.trim().is_empty(),
        "decoding what nginx passes on: {err}"
    );
    drop(server);
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(!log.contains(key), "the key in the log: {log}");
}

/// Before: an ffmpeg carried the rtsp:// URL, user and password, on its command
/// line. Now nalcast publishes it itself: ANNOUNCE, RECORD, RTP over the TCP
/// connection, with a Digest login; GStreamer's RTSP server records what comes.
#[tokio::test]
async fn an_rtsp_login_is_on_no_command_line_and_the_server_records_every_picture() {
    let test = "an_rtsp_login_is_on_no_command_line_and_the_server_records_every_picture";
    if !crate::rtsp::gstreamer_ready(test) {
        return;
    }
    let password = "pa55-only-in-the-environment";
    let dir = common::temp_dir("publish-rtsp");
    let recorded = dir.join("recorded.h264");
    let _ = std::fs::remove_file(&recorded);
    let port = crate::rtsp::free_port();
    let server_side = crate::rtsp::Camera::start_recording(
        port,
        Some(("digest", &format!("publisher:{password}"))),
        Some(&recorded),
    );
    let log = dir.join("nalcast.log");
    let server = nalcast_publishing_from_env(
        &format!("rtsp://publisher:{password}@127.0.0.1:{port}/record"),
        &log,
        &[],
    );
    let live = publish_state(&server, "live", Duration::from_secs(20)).await;
    assert_eq!(live["url"], format!("rtsp://***@127.0.0.1:{port}/record"));
    // None but the server's own (the fixture is given the login to check).
    let holding: Vec<String> = command_lines_holding(password)
        .into_iter()
        .filter(|c| !c.contains("rtsp_server.py"))
        .collect();
    assert_eq!(holding, Vec::<String>::new());
    await_recorded_pictures(&recorded, 60).await;
    drop(server);
    drop(server_side);
    assert_recording_whole(&recorded, 60);
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(!log.contains(password), "the password in the log: {log}");
}

/// Waits until `recorded` holds `pictures` pictures (the server writes as they come).
async fn await_recorded_pictures(recorded: &Path, pictures: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
                recorded.to_str().expect("path"),
            ],
            Duration::from_secs(20),
        )
        .await;
        if out.trim().parse::<u32>().unwrap_or(0) >= pictures {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server recorded {out:?} pictures"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a server recorded (Annex B): decodable, at least `pictures` of them, and
/// none missing (frame_num, POC), as the corpus checks a raw viewer's capture.
pub(crate) fn assert_recording_whole(recorded: &Path, pictures: usize) {
    let file = std::fs::read(recorded).expect("the recording");
    // Slices and parameter sets, each set once before a picture (a server's parser
    // may repeat them from the SDP besides those sent in-band).
    let mut nals: Vec<bytes::Bytes> = Vec::new();
    let mut sets_since_slice: Vec<&[u8]> = Vec::new();
    for nal in testkit::annexb::split(&file) {
        match nal[0] & 0x1f {
            7 | 8 if sets_since_slice.contains(&nal) => continue,
            7 | 8 => sets_since_slice.push(nal),
            1..=5 => sets_since_slice.clear(),
            _ => continue,
        }
        nals.push(bytes::Bytes::from([&[0, 0, 0, 1][..], nal].concat()));
    }
    let seen =
        crate::corpus::check::check_capture(crate::corpus::check::Dialect::Raw, &nals, &[], false)
            .expect("a whole stream");
    assert!(seen.pictures >= pictures, "{} pictures", seen.pictures);
    crate::corpus::check::ffmpeg_decodes(recorded).expect("ffmpeg decodes the recording");
}

/// Before: an srt:// target's ffmpeg carried the URL on its command line,
/// passphrase and streamid with it. Now ffmpeg reads the query string from a pipe
/// of nalcast's (`-fpre`): a real SRT listener (ffmpeg's, which refuses a wrong or
/// missing passphrase) records every picture, and no command line but the
/// listener's own holds the passphrase or the streamid.
#[tokio::test]
async fn an_srt_passphrase_is_on_no_command_line_and_the_listener_records_every_picture() {
    let passphrase = "srt-pa55phrase-only-in-the-environment";
    let streamid = "publish:garden-only-in-the-environment";
    let dir = common::temp_dir("publish-srt");
    let recorded = dir.join("recorded.h264");
    let _ = std::fs::remove_file(&recorded);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let listener_url =
        format!("srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}&pbkeylen=16");
    let mut listener = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", &listener_url])
        .args(["-c", "copy", "-f", "h264"])
        .arg(&recorded)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("listener.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg listens");
    let log = dir.join("nalcast.log");
    let server = nalcast_publishing_from_env(
        &format!("srt://127.0.0.1:{port}?streamid={streamid}&passphrase={passphrase}&pbkeylen=16"),
        &log,
        &[],
    );
    let live = publish_state(&server, "live", Duration::from_secs(20)).await;
    assert_eq!(live["url"], format!("srt://127.0.0.1:{port}?***"));
    let ours = |secret: &str| -> Vec<String> {
        command_lines_holding(secret)
            .into_iter()
            .filter(|c| !c.contains("mode=listener"))
            .collect()
    };
    assert_eq!(ours(passphrase), Vec::<String>::new());
    assert_eq!(ours(streamid), Vec::<String>::new());
    let options_from = format!("-fpre /proc/{}/fd/", server.pid());
    assert!(
        command_lines_holding(&options_from)
            .iter()
            .any(|c| c.starts_with("ffmpeg ")),
        "nalcast's ffmpeg reads its options from nalcast's pipe"
    );
    await_recorded_pictures(&recorded, 60).await;
    drop(server);
    // ffmpeg goes with nalcast (reaped before nalcast exits).
    assert_eq!(command_lines_holding(&options_from), Vec::<String>::new());
    // The listener ends with the connection, its recording complete.
    tokio::time::timeout(Duration::from_secs(20), listener.wait())
        .await
        .expect("the listener ends when nalcast goes")
        .expect("reaped");
    assert_recording_whole(&recorded, 60);
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(
        !log.contains(passphrase),
        "the passphrase in the log: {log}"
    );
    assert!(!log.contains(streamid), "the streamid in the log: {log}");
}

/// A hostile RTMP server: the handshake, then messages that never end (60 chunk
/// streams in turn, each message declared 16 MB) instead of answering. nalcast
/// leaves it after 16 MiB whatever rml_rtmp would hold, says why, and its memory
/// stays small. (rml_rtmp alone also gave up on this flood, with an AMF error,
/// at 69 MiB resident: the bound is ours, not its internals'.)
#[tokio::test]
async fn a_server_flooding_the_rtmp_client_is_left_with_memory_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut c0c1 = vec![0u8; 1537];
                if tcp.read_exact(&mut c0c1).await.is_err() {
                    return;
                }
                // S0, S1 (no digest: the original handshake), S2 = C1.
                let mut hello = vec![3u8];
                hello.extend_from_slice(&[0u8; 1536]);
                hello.extend_from_slice(&c0c1[1..]);
                if tcp.write_all(&hello).await.is_err() {
                    return;
                }
                // 200 MiB at most, in 128-byte chunks of 60 messages declared
                // 16 MB each, taken in turn: none ever complete.
                let mut sent = 0usize;
                let mut batch = Vec::new();
                'flood: for round in 0.. {
                    for csid in 3u8..63 {
                        if round == 0 {
                            batch.extend_from_slice(&[
                                csid, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0,
                            ]);
                        } else {
                            batch.push(0xc0 | csid);
                        }
                        batch.extend_from_slice(&[0x41; 128]);
                    }
                    if tcp.write_all(&batch).await.is_err() {
                        return;
                    }
                    sent += batch.len();
                    batch.clear();
                    if sent > 200 << 20 {
                        break 'flood;
                    }
                }
                // Then hold the connection, saying nothing.
                let mut sink = [0u8; 4096];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let dir = common::temp_dir("publish-flood");
    let log = dir.join("nalcast.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--source", "test"])
        .env("NALCAST_PUBLISH", format!("rtmp://{addr}/live/cam"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);
    let left = api_publish_until(&server, Duration::from_secs(30), |p| {
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("more than a publisher ever needs"))
    })
    .await;
    assert!(left["restarts"].as_u64() >= Some(1), "{left}");
    let rss_mib = testkit::server::rss_kib(server.pid()) / 1024;
    assert!(rss_mib < 120, "nalcast holds {rss_mib} MiB");
    // Viewers are not the publisher's business: the stream plays on.
    let (status, _) = http_get(server.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
}

/// A TLS terminator in front of `backend` (as an RTMPS service has in front of its
/// RTMP servers), for `localhost`, with a certificate of its own; returns its
/// address and the certificate (PEM) for the client to trust.
async fn tls_front(backend: SocketAddr) -> (SocketAddr, String) {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let pem = cert.pem();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, pem)
}

/// rtmps://: TLS checked against the trusted certificates (here SSL_CERT_FILE),
/// the stream through to nginx; a server whose certificate is not trusted is
/// refused, and says why.
#[tokio::test]
async fn rtmps_publishes_through_tls_to_a_trusted_server_only() {
    let test = "rtmps_publishes_through_tls_to_a_trusted_server_only";
    if !nginx_available(test) {
        return;
    }
    let dir = common::temp_dir("publish-rtmps");
    let nginx = start_rtmp(&dir, None).await;
    let (front, pem) = tls_front(nginx.addr).await;
    let trusted = dir.join("trusted.pem");
    std::fs::write(&trusted, &pem).expect("write certificate");
    let url = format!("rtmps://localhost:{}/live/tls-cam", front.port());
    let start = |ca: &Path, log: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
        cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
            .args(["--source", "test"])
            .env("NALCAST_PUBLISH", &url)
            .env("SSL_CERT_FILE", ca)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"));
        Server::from_command(cmd)
    };
    let server = start(&trusted, &dir.join("trusted.log"));
    publish_state(&server, "live", Duration::from_secs(20)).await;
    let pulled = pull(&rtmp_url(&nginx, "live/tls-cam")).await;
    assert_eq!((pulled.width, pulled.height), (1280, 720));
    assert!(
        pulled.pts_ms.len() > 30,
        "{} pictures in 2 s",
        pulled.pts_ms.len()
    );
    drop(server);

    // Trusting another certificate (the system's, say): refused, with the reason.
    let other = dir.join("other.pem");
    let key = rcgen::KeyPair::generate().expect("key pair");
    let stranger = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    std::fs::write(&other, stranger.pem()).expect("write certificate");
    let server = start(&other, &dir.join("untrusted.log"));
    let refused = publish_state(&server, "retrying", Duration::from_secs(20)).await;
    let error = refused["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{refused}"
    );
}

#[tokio::test]
async fn publish_series_are_there_at_zero_and_bad_urls_are_refused() {
    // No picture ever comes, so ffmpeg is never started.
    let server = Server::start(&[
        "--source",
        "exec:sleep 60",
        "--publish",
        "rtmp://127.0.0.1:9/live/a",
        "--publish",
        "srt://127.0.0.1:9?streamid=b",
    ]);
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    for series in [
        "nalcast_publish_up{stream=\"camera\",target=\"0\"} 0",
        "nalcast_publish_up{stream=\"camera\",target=\"1\"} 0",
        "nalcast_publish_restarts_total{stream=\"camera\",target=\"0\"} 0",
        "nalcast_publish_restarts_total{stream=\"camera\",target=\"1\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    let publish = api(&server).await["publish"].clone();
    assert_eq!(publish[0]["state"], "connecting", "{publish}");
    assert_eq!(publish[1]["url"], "srt://127.0.0.1:9?***", "{publish}");
    assert_eq!(publish[0]["last_error"], Value::Null);

    for (url, needle) in [
        ("http://bob:hunter2@host/live", "unknown scheme 'http'"),
        ("rtmp://host", "no stream path"),
        ("live/cam", "not a URL"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nalcast"))
            .args(["--publish", url])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(needle), "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn a_stuck_server_costs_its_publisher_pictures_never_the_viewers() {
    let test = "a_stuck_server_costs_its_publisher_pictures_never_the_viewers";
    if !nginx_available(test) {
        return;
    }
    let dir = common::temp_dir("publish-stuck");
    let nginx = start_rtmp(&dir, None).await;
    let server = nalcast(&rtmp_url(&nginx, "live/cam"), &dir.join("nalcast.log"));
    publish_state(&server, "live", Duration::from_secs(20)).await;
    let mut ws = common::connect(&server.url("/ws")).await;
    // The viewer's first pictures (its catch-up burst) come before the server sticks.
    loop {
        match common::next_framed(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMessage::AccessUnit { .. }) => break,
            Some(_) => {}
            None => panic!("no picture for the viewer"),
        }
    }

    // nginx stops reading (SIGSTOP): ffmpeg's socket and pipe fill up.
    let status = Command::new("kill")
        .args(["-STOP", &nginx.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let viewer = tokio::spawn(async move {
        let (mut pictures, mut longest_gap, mut last) = (0u32, Duration::ZERO, Instant::now());
        while let Some(message) = common::next_framed(&mut ws, Duration::from_secs(5)).await {
            if let ServerMessage::AccessUnit { .. } = message {
                pictures += 1;
                longest_gap = longest_gap.max(last.elapsed());
                last = Instant::now();
            }
        }
        (pictures, longest_gap)
    });
    let started = Instant::now();
    let stuck = api_publish_until(&server, Duration::from_secs(30), |p| {
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("took nothing"))
    })
    .await;
    let stuck_for = started.elapsed();
    assert!(stuck["restarts"].as_u64() >= Some(1), "{stuck}");
    // Meanwhile the viewer got every picture, on time.
    drop(server);
    let (pictures, longest_gap) = viewer.await.expect("viewer task");
    let expected = stuck_for.as_secs_f64() * 30.0;
    assert!(
        f64::from(pictures) > expected * 0.9,
        "the viewer got {pictures} pictures in {stuck_for:?}"
    );
    assert!(
        longest_gap < Duration::from_millis(500),
        "the viewer waited {longest_gap:?} for a picture"
    );
}
