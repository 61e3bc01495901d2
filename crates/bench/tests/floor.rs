//! nalcast-floor on a few connections: it runs, writes, and reports what it measured.
use std::process::Command;

#[test]
fn floor_reports_write_times_for_every_connection() {
    let out = Command::new(env!("CARGO_BIN_EXE_nalcast-floor"))
        .args(["--connections", "8", "--duration", "0.5", "--threads", "2"])
        .output()
        .expect("run nalcast-floor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("kernel floor: 8 connections, 12500 bytes each per frame, 2 writer threads, 15 frames: write returned after p50 "),
        "{line}"
    );
    assert!(line.contains("% within 1 ms"), "{line}");
}
