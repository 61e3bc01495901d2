//! A camera's address and password in the source's command line (or in what the
//! camera process prints) never reach anyone but the log, and reach the log masked.
use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{http_get, next_framed, Server};
use nalcast_core::protocol::ServerMessage;

const PASSWORD: &str = "hunter2secret";

#[tokio::test]
async fn a_failing_cameras_command_line_and_output_stay_out_of_healthz_api_and_viewers() {
    let dir = common::temp_dir("secrets");
    let log = dir.join("nalcast.log");
    // Fails the way ffmpeg does when an IP camera refuses it, echoing its URL.
    let source = format!(
        "exec:echo 'rtsp://admin:{PASSWORD}@192.0.2.7/live: 401 Unauthorized' >&2; exit 1 # ffmpeg -i rtsp://admin:{PASSWORD}@192.0.2.7/live"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "127.0.0.1:0"])
        .args(["--source", &source])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);

    // Wait until the failure is known.
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthz = loop {
        let (status, body) = http_get(server.addr, "/healthz").await.expect("healthz");
        if status == 503 && body.contains("exited") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no source-lost reason: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        healthz.contains("camera process exited with status 1"),
        "{healthz}"
    );
    let (_, api) = http_get(server.addr, "/api/stream").await.expect("api");
    let mut ws = common::connect(&server.url("/ws")).await;
    let status = loop {
        match next_framed(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMessage::Status(s)) if s.name() == "source-lost" => break s,
            Some(_) => {}
            None => panic!("no source-lost status within 10 s"),
        }
    };
    let reason = status.reason().unwrap_or_default().to_owned();
    assert!(reason.contains("camera process exited"), "{reason}");
    for (what, text) in [
        ("/healthz", &healthz),
        ("/api/stream", &api),
        ("status message", &reason),
    ] {
        for secret in [PASSWORD, "192.0.2.7", "ffmpeg", "401 Unauthorized"] {
            assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
        }
    }
    assert!(api.contains("\"source\":\"exec\""), "{api}");

    // The log keeps the details, with the password masked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("401 Unauthorized") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the camera's output is not in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(logged.contains("rtsp://admin:***@192.0.2.7"), "{logged}");
    assert!(
        !logged.contains(PASSWORD),
        "the log shows the password:\n{logged}"
    );
    // Said once, across the command's restarts: the password is on its command
    // line, for any user of the machine to read.
    assert_eq!(
        logged.matches("holds a URL's password").count(),
        1,
        "{logged}"
    );
}

/// Before: a camera password or a stream key could only be given to nalcast on
/// its command line (which every user of the machine can read in /proc) or in the
/// config file; the environment (NALCAST_SOURCE, NALCAST_PUBLISH) is readable by
/// nalcast's user only.
#[tokio::test]
async fn source_and_publish_secrets_can_come_from_the_environment() {
    let dir = common::temp_dir("secrets-env");
    let log = dir.join("nalcast.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let source = format!("rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live");
    let publish = format!(
        "rtmp://127.0.0.1:{port}/live/key-{PASSWORD} srt://127.0.0.1:{port}?passphrase={PASSWORD}"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .env("NALCAST_SOURCE", &source)
        .env("NALCAST_PUBLISH", &publish)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
        "nalcast's own command line"
    );
    let (status, body) = http_get(server.addr, "/api/stream").await.expect("api");
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(api["source"], "rtsp", "the source came from NALCAST_SOURCE");
    assert_eq!(
        api["publish"].as_array().map(Vec::len),
        Some(2),
        "both targets came from NALCAST_PUBLISH: {body}"
    );
    assert!(!body.contains(PASSWORD), "{body}");
}
