//! Four cameras of four kinds in one nalcast — the test pattern, a file, a pipe
//! from ffmpeg (`exec:`) and an RTSP camera (GStreamer's RTSP server) — each
//! watched on every endpoint at a random point of its GOP and checked as the
//! corpus checks a viewer (decodable from the first picture, no reference frame
//! missing, no unexplained sequence gap, ffmpeg decodes it without a word), and
//! its LL-HLS played by ffmpeg; then one source killed while the other three
//! streams' viewers keep their full rate; then a reload (SIGHUP) adding a fifth
//! stream and removing one while a viewer of an untouched stream loses no frame.
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nalcast_core::protocol::ServerMessage;

use crate::common::*;
use crate::corpus::check::{check_capture, ffmpeg_decodes, Dialect};
use crate::corpus::picture_start;
use crate::rtsp::{free_port, gstreamer_ready, Camera};

const FPS: f64 = 30.0;

/// Reads `url` from `delay` on until two keyframes and five more pictures have
/// come (or 10 s): every binary message and when it came.
async fn capture(
    url: String,
    dialect: Dialect,
    delay: Duration,
) -> Result<(Vec<Bytes>, Vec<Instant>), String> {
    tokio::time::sleep(delay).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("{url}: cannot connect: {e}"))?;
    let (mut messages, mut arrivals) = (Vec::new(), Vec::new());
    let (mut keyframes, mut after) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = next_binary(&mut ws, left)
            .await
            .ok_or_else(|| format!("{url}: stopped after {} messages", messages.len()))?;
        let (starts, key) = picture_start(dialect, &msg);
        if starts {
            if keyframes >= 2 && after >= 5 {
                return Ok((messages, arrivals));
            }
            if key {
                keyframes += 1;
                after = 0;
            } else {
                after += 1;
            }
        }
        messages.push(msg);
        arrivals.push(Instant::now());
    }
}

/// Checks one capture and has ffmpeg decode it; the failures, if any.
fn judge(
    label: &str,
    dialect: Dialect,
    messages: &[Bytes],
    arrivals: &[Instant],
    dir: &Path,
) -> Vec<String> {
    let seen = match check_capture(dialect, messages, arrivals, false) {
        Ok(seen) => seen,
        Err(e) => return vec![format!("{label}: {e}")],
    };
    let mut files = Vec::new();
    if dialect == Dialect::Fmp4 {
        for (k, piece) in seen.mp4.iter().enumerate() {
            files.push((
                dir.join(format!("{label}-{k}.mp4").replace('/', "_")),
                piece.clone(),
            ));
        }
    } else {
        files.push((
            dir.join(format!("{label}.h264").replace('/', "_")),
            seen.annexb.clone(),
        ));
    }
    files
        .into_iter()
        .filter_map(|(path, bytes)| {
            std::fs::write(&path, bytes).expect("write capture");
            ffmpeg_decodes(&path).err().map(|e| format!("{label}: {e}"))
        })
        .collect()
}

/// A framed viewer's live pictures before and after `split` (from its first
/// live picture), up to `run`; fails on a sequence gap or a skip.
async fn rates(url: String, split: Instant, run: Duration) -> Result<(f64, f64), String> {
    let mut ws = connect(&url).await;
    let mut last = None::<u32>;
    let mut live: Vec<Instant> = Vec::new();
    let until = Instant::now() + run;
    while Instant::now() < until {
        match next_framed(&mut ws, Duration::from_secs(2)).await {
            Some(ServerMessage::AccessUnit { seq, flags, .. }) => {
                if let Some(l) = last {
                    if seq != l + 1 {
                        return Err(format!("{url}: sequence {l} then {seq}"));
                    }
                }
                last = Some(seq);
                // The join's catch-up burst is not the live rate.
                if flags & nalcast_core::protocol::FLAG_CATCH_UP == 0 {
                    live.push(Instant::now());
                }
            }
            Some(ServerMessage::Skipped { .. }) => return Err(format!("{url}: skipped frames")),
            Some(_) => {}
            None => return Err(format!("{url}: no frame for 2 s")),
        }
    }
    let rate = |from: Instant, to: Instant| {
        let n = live.iter().filter(|t| **t >= from && **t < to).count();
        n as f64 / to.saturating_duration_since(from).as_secs_f64()
    };
    let first = *live.first().ok_or("no live picture")?;
    Ok((rate(first, split), rate(split, until)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_kinds_of_camera_play_on_every_endpoint_and_one_dying_harms_no_other() {
    if !gstreamer_ready("four_kinds_of_camera_play_on_every_endpoint_and_one_dying_harms_no_other")
    {
        return;
    }
    let dir = temp_dir("four-streams");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 60, 15);
    let piped = dir.join("piped.h264");
    write_h264(&piped, 320, 240, 60, 20);
    let pid_file = dir.join("pipe.pid");
    let camera = Camera::start(free_port(), None);
    let streams = [
        "pattern=test".to_owned(),
        format!("clip=file:{}", clip.display()),
        format!(
            // As the corpus pipes a camera-like stream: ffmpeg paces it (a raw
            // H.264 input cannot -stream_loop: it would end after one pass).
            "pipe=exec:echo $$ > {}; while :; do cat {}; done | ffmpeg -hide_banner -loglevel error -re -f h264 -i - -c copy -f h264 -",
            pid_file.display(),
            piped.display()
        ),
        format!("ipcam={}", camera.url("/baseline")),
    ];
    // In a settings file, so that a reload can change them.
    let settings = |streams: &[String]| -> String {
        let mut text =
            "width = 320\nheight = 240\nkeyframe-interval = 15\nbitrate = 300000\n".to_owned();
        for s in streams {
            let (name, source) = s.split_once('=').expect("NAME=SPEC");
            text.push_str(&format!(
                "\n[[stream]]\nname = \"{name}\"\nsource = '{source}'\n"
            ));
        }
        text
    };
    let config = dir.join("nalcast.toml");
    std::fs::write(&config, settings(&streams)).expect("settings");
    let args = ["--config", config.to_str().expect("utf-8")];
    let server = Server::start(&args);
    // /healthz is 200 once every stream has frames.
    server.wait_healthy().await;

    // Every endpoint of every stream (and the legacy port, the first's), joined at
    // a random moment of the GOP.
    let mut rng = testkit::rng::Rng(0x5eed_4ca5);
    let legacy = server.legacy.expect("legacy port");
    let mut tasks = Vec::new();
    for name in ["pattern", "clip", "pipe", "ipcam"] {
        let mut endpoints = vec![
            (
                "ws",
                Dialect::Framed,
                server.url(&format!("/streams/{name}/ws")),
            ),
            (
                "raw",
                Dialect::Raw,
                server.url(&format!("/streams/{name}/ws/raw")),
            ),
            (
                "fmp4",
                Dialect::Fmp4,
                server.url(&format!("/streams/{name}/ws/fmp4")),
            ),
        ];
        if name == "pattern" {
            endpoints.push(("legacy", Dialect::Raw, format!("ws://{legacy}/")));
            endpoints.push(("plain-ws", Dialect::Framed, server.url("/ws")));
        }
        for (endpoint, dialect, url) in endpoints {
            let delay = Duration::from_secs_f64(rng.unit() * 1.0);
            let label = format!("{name}-{endpoint}");
            tasks.push((label, dialect, tokio::spawn(capture(url, dialect, delay))));
        }
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for (label, dialect, task) in tasks {
        match task.await.expect("capture task") {
            Ok((messages, arrivals)) => {
                checked += 1;
                failures.extend(judge(&label, dialect, &messages, &arrivals, &dir));
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 14);

    // And each stream's LL-HLS, as ffmpeg plays it: 2 s of pictures, not a word.
    let hls: Vec<_> = ["pattern", "clip", "pipe", "ipcam"]
        .into_iter()
        .map(|name| {
            let url = format!("http://{}/streams/{name}/hls/index.m3u8", server.addr);
            let task = tokio::task::spawn_blocking(move || {
                std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-i", &url, "-t", "2", "-f", "framemd5", "-"])
                    .output()
                    .expect("ffmpeg runs")
            });
            (name, task)
        })
        .collect();
    for (name, task) in hls {
        let out = task.await.expect("ffmpeg task");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let pictures = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        assert!(
            out.status.success() && stderr.trim().is_empty() && pictures >= 45,
            "{name}'s HLS: {pictures} pictures in 2 s; ffmpeg: {stderr}"
        );
    }

    // The pipe's camera process dies: the other three streams' viewers keep every
    // frame (no gap, no skip) at the rate they had before, while nalcast restarts it.
    // (The test pattern makes about 26 of its 30 frames a second at this size and
    // bitrate: openh264 skips some to keep the bitrate. The viewers get each one.)
    let split = Instant::now() + Duration::from_millis(1500);
    let watchers: Vec<_> = ["pattern", "clip", "ipcam"]
        .into_iter()
        .map(|name| {
            let url = server.url(&format!("/streams/{name}/ws"));
            (
                name,
                tokio::spawn(rates(url, split, Duration::from_secs(5))),
            )
        })
        .collect();
    tokio::time::sleep_until(split.into()).await;
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    let restarts: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("nalcast_source_restarts_total"))
        .collect();
    let pid = std::fs::read_to_string(&pid_file).expect("the pipe's pid");
    // The shell leads the source's process group: the whole pipeline dies.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", pid.trim())])
        .status()
        .expect("kill");
    assert!(
        killed.success(),
        "the pipe's process {pid} was gone already: {restarts:?}"
    );
    assert!(
        restarts.contains(&"nalcast_source_restarts_total{stream=\"pipe\"} 0"),
        "no source restarted before the kill: {restarts:?}"
    );
    let mut seen = Vec::new();
    for (name, task) in watchers {
        let (before, after) = task
            .await
            .expect("watcher")
            .unwrap_or_else(|e| panic!("{e}"));
        seen.push(format!("{name} {before:.1} -> {after:.1} fps"));
        assert!(
            before >= 0.8 * FPS && after >= 0.9 * before,
            "{name} fell from {before:.1} to {after:.1} fps while another stream's source died ({seen:?})"
        );
    }
    eprintln!("frame rates before and after the pipe's source died: {seen:?}");
    // And the pipe comes back by itself.
    let (mut ws, mut live) = (connect(&server.url("/streams/pipe/ws")).await, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live && Instant::now() < deadline {
        live = matches!(
            next_framed(&mut ws, Duration::from_secs(5)).await,
            Some(ServerMessage::AccessUnit { flags, .. }) if flags & nalcast_core::protocol::FLAG_CATCH_UP == 0
        );
    }
    assert!(live, "the pipe's source was restarted");

    // A reload adds a fifth stream and removes one; a viewer of a stream it leaves
    // alone loses no frame (every sequence number, no skip) across it.
    let split = Instant::now() + Duration::from_millis(1500);
    let untouched = tokio::spawn(rates(
        server.url("/streams/ipcam/ws"),
        split,
        Duration::from_secs(4),
    ));
    tokio::time::sleep_until(split.into()).await;
    let mut next = streams.to_vec();
    next.retain(|s| !s.starts_with("clip="));
    next.push("fifth=test".to_owned());
    std::fs::write(&config, settings(&next)).expect("settings");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let (before, after) = untouched
        .await
        .expect("watcher")
        .unwrap_or_else(|e| panic!("across the reload: {e}"));
    assert!(
        after >= 0.9 * before,
        "ipcam fell from {before:.1} to {after:.1} fps across the reload"
    );
    let (_, list) = http_get(server.addr, "/api/streams").await.expect("list");
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let names: Vec<&str> = list["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["pattern", "pipe", "ipcam", "fifth"]);
    let mut fifth = connect(&server.url("/streams/fifth/ws")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut plays = false;
    while !plays && Instant::now() < deadline {
        plays = matches!(
            next_framed(&mut fifth, Duration::from_secs(5)).await,
            Some(ServerMessage::AccessUnit { .. })
        );
    }
    assert!(plays, "the fifth stream plays");
}
