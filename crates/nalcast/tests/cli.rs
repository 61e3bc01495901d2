//! The command line: help, clear one-line errors with exit code 2, every source kind.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use nalcast_core::protocol::ServerMessage;

fn nalcast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nalcast"))
        .args(args)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("runs")
}

#[test]
fn help_documents_every_option() {
    let out = nalcast(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--source",
        "--listen",
        "--legacy-listen",
        "--width",
        "--height",
        "--fps",
        "--bitrate",
        "--keyframe-interval",
        "--max-nal-size",
        "--stall-timeout",
        "--queue-max-bytes",
        "--queue-max-delay",
        "--viewer-timeout",
        "--send-buffer",
        "--max-viewers",
        "--max-viewers-per-ip",
        "--max-connections",
        "--max-connections-per-ip",
        "--viewer-threads",
        "--allow-origin",
        "--public-host",
        "--trusted-proxy",
        "--header-timeout",
        "--tls",
        "--tls-cert",
        "--tls-key",
        "--data-dir",
        "--auth",
        "--token",
        "--hash-password",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_configuration_exits_2_with_one_clear_line() {
    let dir = temp_dir("cli");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "fps = \"fast\"\n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--source".into(), "file:missing.h264".into()],
            "missing.h264",
        ),
        (
            vec!["--source".into(), "webcam".into()],
            "unknown source 'webcam'",
        ),
        (vec!["--width".into(), "1281".into()], "even"),
        (vec!["--fps".into(), "abc".into()], "invalid value 'abc'"),
        (
            vec!["--listen".into(), "localhost".into()],
            "--listen 'localhost'",
        ),
        (
            vec!["--config".into(), bad_toml.display().to_string()],
            "bad.toml",
        ),
        (
            vec!["--config".into(), "/nonexistent.toml".into()],
            "cannot read config file",
        ),
        (
            vec!["--source".into(), "rpicam".into()],
            "looked for rpicam-vid, libcamera-vid, raspivid",
        ),
        (vec!["--tls".into(), "yes".into()], "--tls 'yes'"),
        (
            vec!["--tls-cert".into(), "/etc/x.pem".into()],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec![
                "--tls-cert".into(),
                "/nonexistent/c.pem".into(),
                "--tls-key".into(),
                "/nonexistent/k.pem".into(),
            ],
            "cannot read TLS certificate /nonexistent/c.pem",
        ),
        (vec!["--auth".into(), "nopassword".into()], "USER:PASSWORD"),
        (vec!["--token".into(), "short".into()], "--token must be"),
        (
            vec!["--header-timeout".into(), "0".into()],
            "--header-timeout",
        ),
        (
            vec!["--trusted-proxy".into(), "proxy.lan".into()],
            "--trusted-proxy 'proxy.lan' is not an address or network",
        ),
        (
            vec!["--public-host".into(), "https://cam.example.com/".into()],
            "--public-host 'https://cam.example.com/' is not a host name",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nalcast(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        // clap adds a usage hint after its own errors; ours are a single line.
        if !needle.starts_with("invalid value") {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

async fn first_keyframe_size(server: &Server) -> (u32, u32) {
    let mut ws = connect(&server.url("/ws")).await;
    let mut size = None;
    loop {
        match next_framed(&mut ws, Duration::from_secs(10))
            .await
            .expect("message")
        {
            ServerMessage::StreamInfo(i) => size = Some((i.width, i.height)),
            ServerMessage::AccessUnit { .. } => return size.expect("stream-info first"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn file_source_plays_and_loops() {
    let dir = temp_dir("file");
    let file = dir.join("clip.h264");
    write_h264(&file, 320, 240, 10, 5);
    let server = Server::start(&[
        "--source",
        &format!("file:{}", file.display()),
        "--fps",
        "60",
    ]);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
    // 10 frames per pass: 35 frames means it looped.
    let mut ws = connect(&server.url("/ws/raw")).await;
    let mut slices = 0;
    while slices < 35 {
        let msg = next_binary(&mut ws, Duration::from_secs(5))
            .await
            .expect("looping frames");
        if matches!(raw_nal_type(&msg), 1 | 5) {
            slices += 1;
        }
    }
}

#[tokio::test]
async fn rpicam_source_runs_the_camera_app_with_the_right_flags() {
    let dir = temp_dir("rpicam");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 640, 480, 30, 10);
    let fake = dir.join("rpicam-vid");
    // A fake camera app: refuses wrong flags, otherwise plays the clip forever.
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nargs=\"$*\"\nfor want in '-t 0' '-n' '--codec h264' '--profile baseline' '--inline' '--low-latency' '--width 640' '--height 480' '--framerate 30' '--bitrate 800000' '--intra 10' '-o -'; do\n  case \"$args\" in *\"$want\"*) ;; *) echo \"fake rpicam-vid: missing $want in: $args\" >&2; exit 64;; esac\ndone\nwhile true; do cat {}; sleep 0.5; done\n",
            clip.display()
        ),
    )
    .expect("write fake");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let server = Server::start_with_env(
        &[
            "--source",
            "rpicam",
            "--width",
            "640",
            "--height",
            "480",
            "--bitrate",
            "800000",
            "--keyframe-interval",
            "10",
        ],
        &[("PATH", &path)],
    );
    assert_eq!(first_keyframe_size(&server).await, (640, 480));
}

#[tokio::test]
async fn exec_source_streams_a_commands_output() {
    let dir = temp_dir("exec");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 10, 5);
    let server = Server::start(&[
        "--source",
        &format!(
            "exec:while true; do cat {}; sleep 0.2; done",
            clip.display()
        ),
    ]);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
}

#[tokio::test]
async fn stdin_source_streams_what_is_piped_in() {
    let dir = temp_dir("stdin");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 10, 5);
    let input = std::fs::File::open(&clip).expect("clip");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args([
        "--source",
        "stdin",
        "--listen",
        "127.0.0.1:0",
        "--legacy-listen",
        "off",
    ])
    .env("RUST_LOG", "warn")
    .stdin(input)
    .stdout(std::process::Stdio::piped());
    let server = Server::from_command(cmd);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
}
