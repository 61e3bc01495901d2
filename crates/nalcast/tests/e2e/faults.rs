//! Fault injection: the source crashes, hangs or sends rubbish; viewers vanish
//! mid-message, reset, or come and go in a burst. Healthy viewers must not notice
//! more than a "source lost" notice and a fresh keyframe, and nothing may leak.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use nalcast_core::protocol::{ServerMessage, FLAG_KEYFRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits for a source-lost notice whose reason contains `needle`, then for a keyframe.
async fn lost_then_back(ws: &mut Ws, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lost = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "no source-lost ({needle}) followed by a keyframe"
        );
        match next_framed(ws, Duration::from_secs(10))
            .await
            .expect("viewer stays connected")
        {
            ServerMessage::Status(s) if s.name() == "source-lost" => {
                let reason = s.reason().unwrap_or_default().to_owned();
                if reason.contains(needle) {
                    lost = true;
                }
            }
            ServerMessage::AccessUnit { flags, .. } if lost && flags & FLAG_KEYFRAME != 0 => return,
            _ => {}
        }
    }
}

fn looping_clip(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 15, 5);
    (dir, clip)
}

#[tokio::test]
async fn source_killed_with_sigkill_is_restarted_and_viewers_get_the_picture_back() {
    let (dir, clip) = looping_clip("sigkill");
    let pidfile = dir.join("pid");
    let cmd = format!(
        "exec:echo $$ > {}; while true; do cat {}; sleep 0.2; done",
        pidfile.display(),
        clip.display()
    );
    let server = Server::start(&["--source", &cmd]);
    server.wait_healthy().await;
    let mut ws = connect(&server.url("/ws")).await;
    next_framed(&mut ws, Duration::from_secs(5))
        .await
        .expect("frames");
    let pid = wait_for_pid(&pidfile).await;
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill")
        .success());
    lost_then_back(&mut ws, "camera process was killed by signal 9").await;
    server.wait_healthy().await;
}

/// A process's start time (in clock ticks since boot), which tells it apart from a
/// later process that got the same pid; None once it is gone.
fn start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[tokio::test]
async fn hanging_source_is_restarted_after_the_stall_timeout_and_its_processes_are_gone() {
    let (dir, clip) = looping_clip("hang");
    let pids = dir.join("pids");
    // Plays the clip once, then hangs in a grandchild process that keeps stdout
    // open; every run appends that grandchild's pid.
    let cmd = format!(
        "exec:cat {}; sleep 987.6543 & echo $! >> {}; wait",
        clip.display(),
        pids.display()
    );
    let server = Server::start(&["--source", &cmd, "--stall-timeout", "1"]);
    let mut ws = connect(&server.url("/ws")).await;
    // The first run's grandchild, while it hangs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, started) = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        if let Some(pid) = text.lines().next() {
            if let Some(started) = start_time(pid) {
                break (pid.to_owned(), started);
            }
        }
        assert!(Instant::now() < deadline, "the source never hung");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    lost_then_back(&mut ws, "no data for 1").await;
    // That process was killed with its group, not left behind: it is gone (or a
    // zombie waiting for init, or its pid belongs to a newer process).
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(&first).is_some_and(|s| s != 'Z') && start_time(&first) == Some(started) {
        assert!(
            Instant::now() < deadline,
            "the hung process {first} of the first run was left behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn garbage_then_valid_h264_recovers_and_is_counted() {
    let (_dir, clip) = looping_clip("garbage");
    let cmd = format!(
        "exec:head -c 200000 /dev/urandom; while true; do cat {}; head -c 3000 /dev/urandom; sleep 0.2; done",
        clip.display()
    );
    let server = Server::start(&["--source", &cmd]);
    let mut ws = connect(&server.url("/ws")).await;
    let mut keyframes = 0;
    while keyframes < 3 {
        if let Some(ServerMessage::AccessUnit { flags, .. }) =
            next_framed(&mut ws, Duration::from_secs(10)).await
        {
            if flags & FLAG_KEYFRAME != 0 {
                keyframes += 1;
            }
        }
    }
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    let errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("nalcast_stream_errors_total{stream=\"camera\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(errors > 0.0, "stream errors counted:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_viewers_leave_nothing_behind_and_others_see_every_frame() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--bitrate",
        "600000",
        "--max-viewers-per-ip",
        "1000",
    ]);
    server.wait_healthy().await;
    let pid = server.pid();
    // A healthy viewer, checked for gaps throughout.
    let mut healthy = connect(&server.url("/ws")).await;
    next_framed(&mut healthy, Duration::from_secs(5))
        .await
        .expect("frames");
    let fds_before = fd_count(pid);
    let addr = server.addr;
    let watcher = tokio::spawn(async move {
        let (mut last, mut frames) = (None::<u32>, 0);
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            match next_framed(&mut healthy, Duration::from_secs(2)).await {
                Some(ServerMessage::AccessUnit { seq, .. }) => {
                    if let Some(prev) = last {
                        assert_eq!(seq, prev + 1, "healthy viewer lost frames");
                    }
                    last = Some(seq);
                    frames += 1;
                }
                Some(ServerMessage::Skipped(n)) => panic!("healthy viewer skipped {n}"),
                Some(_) => {}
                None => panic!("healthy viewer starved"),
            }
        }
        frames
    });
    // 200 viewers join in a burst; some read a little, some reset, some just go.
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => {
                    let mut ws = connect(&format!("ws://{addr}/ws")).await;
                    let _ = ws.next().await;
                    drop(ws); // no close frame
                }
                1 => {
                    let mut ws = connect(&format!("ws://{addr}/ws/raw")).await;
                    let _ = ws.next().await;
                    let _ = ws.close(None).await;
                }
                _ => {
                    // Raw TCP: handshake, read part of a message, then reset the connection.
                    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    tcp.write_all(&ws_handshake(addr)).await.expect("handshake");
                    let mut buf = [0u8; 300];
                    let _ = tcp.read(&mut buf).await;
                    socket2::SockRef::from(&tcp)
                        .set_linger(Some(Duration::ZERO))
                        .expect("linger");
                    drop(tcp); // RST
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("burst viewer");
    }
    assert!(watcher.await.expect("watcher") >= 90);
    // Nobody is left (the healthy viewer has finished too) and no descriptor leaked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(server.addr, "/api/stream").await.expect("api");
        let api: serde_json::Value = serde_json::from_str(&body).expect("json");
        let fds = fd_count(pid);
        if api["viewers"].as_u64() <= Some(1) && fds <= fds_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "viewers {} fds {fds} (before {fds_before})",
            api["viewers"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The PID a source's shell wrote, once it is all there (the shell truncates the file
/// before writing, so a read can find it empty).
async fn wait_for_pid(pidfile: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pid = std::fs::read_to_string(pidfile).unwrap_or_default();
        if pid.ends_with('\n') && !pid.trim().is_empty() {
            return pid.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the source wrote no PID to {pidfile:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state letter of a process from /proc (R, S, Z, ...), or None once it is gone.
fn process_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[tokio::test]
async fn shutdown_kills_and_reaps_the_source_process() {
    let (dir, clip) = looping_clip("shutdown");
    let pidfile = dir.join("pid");
    // The camera app stand-in: a shell (nalcast's child) that starts children of its own.
    let cmd = format!(
        "exec:echo $$ > {}; while true; do cat {}; sleep 0.2; done",
        pidfile.display(),
        clip.display()
    );
    let mut server = Server::start(&["--source", &cmd]);
    server.wait_healthy().await;
    let pid = wait_for_pid(&pidfile).await;
    // Any live state counts: under load the shell is often in D (waiting on the
    // disk for the clip) or the like, which CI once caught.
    let state = process_state(&pid);
    assert!(
        matches!(state, Some(c) if c != 'Z' && c != 'X'),
        "source process {pid} should run before the stop: state {state:?}"
    );
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "nalcast did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not even a zombie: nalcast waited for it before exiting (an orphaned zombie
    // would only be reaped by init, which containers do not always have).
    assert_eq!(
        process_state(&pid),
        None,
        "source process {pid} outlived nalcast"
    );
}

#[tokio::test]
async fn source_sending_only_rubbish_is_restarted_after_the_stall_timeout() {
    let (_dir, clip) = looping_clip("rubbish");
    // One clip, then a steady trickle of bytes that never form a frame.
    let cmd = format!(
        "exec:cat {}; while true; do head -c 2000 /dev/urandom; sleep 0.05; done",
        clip.display()
    );
    let server = Server::start(&["--source", &cmd, "--stall-timeout", "1"]);
    let mut ws = connect(&server.url("/ws")).await;
    lost_then_back(&mut ws, "no frame for 1").await;
}
