//! What a newcomer meets first (issue 28): errors that name the real cause and the
//! fix, logs fit for a file or the journal, the README's own commands.
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// nalcast with `args` (and no listener conflicts); its exit code and stderr.
fn nalcast_as(user: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(nalcast_bin());
            c
        }
        None => Command::new(nalcast_bin()),
    };
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .args(["--legacy-listen", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // An error at start-up ends the process at once; one still running after 10 s
    // did not see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    }
    (code, err)
}

/// Runs until `want` shows on stderr (or 15 s pass); everything it printed.
fn stderr_until(args: &[&str], want: &str) -> String {
    let mut child = Command::new(nalcast_bin())
        .args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(want) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn logs_to_a_file_have_no_colour_codes_and_read_as_sentences() {
    let log = stderr_until(&["--width", "640", "--height", "360"], "stream:");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is no terminal: {log:?}"
    );
    assert!(
        log.contains("stream: 640x360, Constrained Baseline profile (avc1.42C01E)"),
        "{log}"
    );
    assert!(!log.contains("None") && !log.contains("Some("), "{log}");
}

#[test]
fn a_file_that_is_not_h264_is_one_line_saying_what_it_is_and_what_to_run() {
    if !testkit::tools::require_ffmpeg("a_file_that_is_not_h264_is_one_line") {
        return;
    }
    let dir = temp_dir("not-h264");
    let mp4 = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
        ])
        .args(["-t", "1", "-c:v", "libx264", "-y"])
        .arg(&mp4)
        .status()
        .expect("ffmpeg runs");
    assert!(made.success());
    let (code, err) = nalcast_as(None, &["--source", &format!("file:{}", mp4.display())]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("is an MP4/QuickTime file, not a raw Annex-B H.264 stream"),
        "{err}"
    );
    assert!(err.contains("h264_mp4toannexb"), "{err}");
}

#[test]
fn an_unreadable_source_file_is_refused_at_start_like_a_missing_one() {
    let here = testkit::tools::runs("runuser", &["-u", "nobody", "--", "true"]);
    if !testkit::tools::require(
        "an_unreadable_source_file",
        "runuser (util-linux, as root)",
        here,
    ) {
        return;
    }
    let dir = temp_dir("unreadable");
    let file = dir.join("camera.h264");
    write_h264(&file, 320, 240, 30, 30);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let spec = format!("file:{}", file.display());
    let (code, err) = nalcast_as(Some("nobody"), &["--source", &spec]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read source file") && err.contains("Permission denied"),
        "{err}"
    );
    let (code, err) = nalcast_as(None, &["--source", "file:/nonexistent/camera.h264"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot open source file /nonexistent/camera.h264"),
        "{err}"
    );
}

#[test]
fn errors_name_the_cause_and_the_fix() {
    let here = testkit::tools::runs("runuser", &["-u", "nobody", "--", "true"]);
    if here {
        let (code, err) = nalcast_as(Some("nobody"), &["--listen", "127.0.0.1:81"]);
        assert!(code.is_some_and(|c| c != 0), "{err}");
        assert!(
            err.contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE"),
            "{err}"
        );
        assert!(!err.contains("another program"), "{err}");
    } else {
        assert!(!testkit::tools::all_required(), "runuser is missing");
    }
    let dir = temp_dir("toml-errors");
    let unquoted = dir.join("unquoted.toml");
    std::fs::write(&unquoted, "width = 640\nsource = test\n").expect("write");
    let (code, err) = nalcast_as(None, &["--config", &unquoted.display().to_string()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "line 2: the value of 'source' is text, and text goes in quotes: source = \"test\""
        ),
        "{err}"
    );
    let wrong_type = dir.join("wrong.toml");
    std::fs::write(&wrong_type, "fps = \"thirty\"\n").expect("write");
    let (code, err) = nalcast_as(None, &["--config", &wrong_type.display().to_string()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("fps = \"thirty\"") && err.contains("--fps takes FPS"),
        "{err}"
    );
    let (code, err) = nalcast_as(None, &["--port", "8080"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tip: nalcast has no --port: the port is part of --listen"),
        "{err}"
    );
}

/// The README's `make run ARGS="--source …"`: the Makefile passes the test pattern
/// only when ARGS names no source (clap refuses a second --source).
#[test]
fn make_run_takes_a_source_from_args() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = |args: &str| {
        let out = Command::new("make")
            .args(["-s", "-n", "-C", root, "run", &format!("ARGS={args}")])
            .output()
            .expect("make runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("target/release/nalcast"))
            .unwrap_or_default()
            .to_owned()
    };
    let own = run("--source 'exec:ffmpeg -f h264 -' --width 640");
    assert_eq!(own.matches("--source").count(), 1, "{own}");
    assert!(own.contains("exec:ffmpeg"), "{own}");
    let default = run("--width 640");
    assert!(default.contains("--source test --width 640"), "{default}");
}

/// The .deb says what else a user may want: ffmpeg, which USB webcams and
/// --publish run (a Pi camera needs only rpicam-apps).
#[test]
fn the_package_suggests_ffmpeg_and_says_what_needs_it() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let table: toml::Table = manifest.parse().expect("TOML");
    let deb = &table["package"]["metadata"]["deb"];
    let suggests = deb["suggests"].as_str().unwrap_or_default();
    assert!(
        suggests.split(',').any(|s| s.trim() == "ffmpeg"),
        "{suggests}"
    );
    let about = deb["extended-description"].as_str().unwrap_or_default();
    assert!(
        about.contains("USB webcams and --publish need ffmpeg"),
        "{about}"
    );
}

/// The HTTPS address a user is told to open by a --public-host name must not show
/// a name mismatch on top of the self-signed warning: the certificate carries it.
#[tokio::test]
async fn the_self_signed_certificate_covers_the_public_host_names() {
    let data = temp_dir("public-host-cert");
    let server = Server::start(&[
        "--tls",
        "self-signed",
        "--data-dir",
        &data.display().to_string(),
        "--public-host",
        "camera.example.test",
        "--width",
        "320",
        "--height",
        "240",
    ]);
    let tls = pinned_tls(&data.join("tls/self-signed.crt"));
    let stream = tls_connect(&tls, server.addr, "camera.example.test")
        .await
        .expect("the certificate is valid for camera.example.test");
    let (status, _, _) = http_request_on(stream, "camera.example.test", "/", &[])
        .await
        .expect("the page");
    assert_eq!(status, 200);
}

/// LL-HLS from another page (issue 28): CORS for the --allow-origin list only;
/// /hls and /hls/ lead to the playlist; --frame-ancestors lets a dashboard frame
/// the player page.
#[tokio::test]
async fn hls_answers_other_origins_on_the_list_and_the_page_may_be_framed_by_them() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--allow-origin",
        "http://dashboard.lan:8123",
        "--frame-ancestors",
        "http://dashboard.lan:8123",
    ]);
    server.wait_healthy().await;
    let ask = |origin: &'static str| {
        let addr = server.addr;
        async move {
            let (status, head, _) = http_request(addr, "/hls/index.m3u8", &[("Origin", origin)])
                .await
                .expect("playlist");
            (status, head.to_ascii_lowercase())
        }
    };
    let (status, head) = ask("http://dashboard.lan:8123").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("access-control-allow-origin: http://dashboard.lan:8123"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    let (_, head) = ask("http://evil.example").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    for path in ["/hls", "/hls/", "/hls?token=x"] {
        let (status, head, _) = http_request(server.addr, path, &[])
            .await
            .expect("redirect");
        assert_eq!(status, 307, "{path}: {head}");
        let want = if path.contains('?') {
            "location: /hls/index.m3u8?token=x"
        } else {
            "location: /hls/index.m3u8"
        };
        assert!(head.to_ascii_lowercase().contains(want), "{path}: {head}");
    }
    let (status, head, _) = http_request(server.addr, "/", &[]).await.expect("page");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("frame-ancestors 'self' http://dashboard.lan:8123"),
        "{head}"
    );
}

/// The start-up banner lists the addresses to open, not a placeholder.
#[test]
fn the_banner_lists_real_addresses_to_open() {
    let mut child = Command::new(nalcast_bin())
        .args(["--listen", "0.0.0.0:0", "--legacy-listen", "off"])
        .args(["--width", "320", "--height", "240"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Up to the HLS line, the last with the legacy port off; 10 s at most (the
    // server keeps stdout open).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut banner = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let last = line.contains("/hls/index.m3u8");
        banner.push(line);
        if last {
            break;
        }
    }
    let port = banner
        .iter()
        .find_map(|l| l.strip_prefix("listening on http://0.0.0.0:"))
        .map(|p| p.trim_end_matches('/').to_owned())
        .expect("the listening line");
    let _ = child.kill();
    let _ = child.wait();
    let text = banner.join("\n");
    assert!(
        text.contains(&format!("http://localhost:{port}/")),
        "{text}"
    );
    assert!(text.contains("/hls/index.m3u8"), "{text}");
    assert!(
        !text.contains('<'),
        "a placeholder instead of an address: {text}"
    );
}
