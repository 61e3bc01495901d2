//! nalcast under qemu-user, as `make dist-check` runs the Raspberry Pi builds: a
//! kernel that answers TCP_INFO short (qemu answers 4 bytes) used to make every
//! WebSocket viewer's task panic in nix. Here the host's own build runs under
//! qemu for its architecture: viewers get frames, nothing panics, and the metric
//! says the join measured write times instead.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use nalcast_core::protocol::ServerMessage;

#[tokio::test]
async fn under_qemu_user_viewers_get_frames_and_nothing_panics() {
    let qemu = format!("qemu-{}", std::env::consts::ARCH);
    let here = testkit::tools::runs(&qemu, &["--version"]);
    if !testkit::tools::require(
        "under_qemu_user_viewers_get_frames_and_nothing_panics",
        &format!("{qemu} (Debian's qemu-user)"),
        here,
    ) {
        return;
    }
    let log = temp_dir("qemu").join("stderr.log");
    let mut cmd = Command::new(&qemu);
    cmd.arg(nalcast_bin())
        .args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--width", "320", "--height", "240", "--fps", "15"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let server = Server::from_command(cmd);
    server.wait_healthy().await;
    for viewer in 0..2 {
        let mut ws = connect(&server.url("/ws")).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut frames = 0;
        while frames < 15 {
            assert!(
                Instant::now() < deadline,
                "viewer {viewer}: {frames} frames in 30 s under {qemu}"
            );
            if let Some(ServerMessage::AccessUnit { .. }) =
                next_framed(&mut ws, Duration::from_secs(10)).await
            {
                frames += 1;
            }
        }
    }
    let (status, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        metrics.contains("nalcast_tcp_info_unavailable_total 1"),
        "TCP_INFO answered short under {qemu}, counted once: {}",
        metrics
            .lines()
            .filter(|l| l.contains("tcp_info"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}
