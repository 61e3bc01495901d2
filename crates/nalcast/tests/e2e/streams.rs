//! Many cameras in one nalcast: each named stream at /streams/NAME/, the first
//! also at the plain URLs and on the legacy port.
use std::time::Duration;

use crate::common::*;
use nalcast_core::protocol::ServerMessage;

/// The source kind the first stream-info of `url` names, and its picture width.
async fn stream_info(url: &str) -> (String, u32) {
    let mut ws = connect(url).await;
    loop {
        match next_framed(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMessage::StreamInfo(info)) => return (info.source, info.width),
            Some(_) => {}
            None => panic!("{url}: no stream-info"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_has_its_own_urls_and_the_first_keeps_the_plain_ones() {
    let dir = temp_dir("streams-routes");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 30, 10);
    let file = format!("door=file:{}", clip.display());
    let server = Server::start(&[
        "--stream",
        "garden=test",
        "--stream",
        &file,
        "--width",
        "640",
        "--height",
        "360",
    ]);
    server.wait_healthy().await;

    // The list, in the configured order, each with its name and state.
    let (status, body) = http_get(server.addr, "/api/streams").await.expect("list");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let names: Vec<_> = list["streams"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["source"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(names, [("garden", "test"), ("door", "file")], "{body}");

    // Each stream's own WebSocket, and the plain URL for the first.
    assert_eq!(
        stream_info(&server.url("/streams/door/ws")).await,
        ("file".into(), 320)
    );
    assert_eq!(
        stream_info(&server.url("/streams/garden/ws")).await,
        ("test".into(), 640)
    );
    assert_eq!(stream_info(&server.url("/ws")).await, ("test".into(), 640));
    let (status, body) = http_get(server.addr, "/streams/door/api/stream")
        .await
        .expect("one");
    assert_eq!(status, 200);
    let door: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(door["name"], "door", "{body}");

    // The legacy port serves the first stream as the original page expects; a
    // stream's name there picks it.
    let legacy = server.legacy.expect("legacy port");
    let mut ws = connect(&format!("ws://{legacy}/")).await;
    let first = next_binary(&mut ws, Duration::from_secs(10))
        .await
        .expect("a NAL unit");
    assert_eq!(raw_nal_type(&first), 7, "an SPS first");

    // The page at a stream's own URL, which must end in a slash for the page's
    // relative URLs; an unknown name is a 404 saying where the names are.
    assert_eq!(
        status_of(server.addr, "GET", "/streams/door/", &[]).await,
        200
    );
    let (status, head, _) = http_request(server.addr, "/streams/door", &[])
        .await
        .expect("redirect");
    assert_eq!(status, 308, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: /streams/door/"),
        "{head}"
    );
    let (status, body) = http_get(server.addr, "/streams/nope/ws")
        .await
        .expect("404");
    assert_eq!(status, 404);
    assert!(body.contains("/api/streams"), "{body}");
    assert_eq!(
        status_of(server.addr, "GET", "/streams/door/hls/index.m3u8", &[]).await,
        200
    );
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The state /api/streams gives stream `name`.
async fn state_of(server: &Server, name: &str) -> String {
    let (_, body) = http_get(server.addr, "/api/streams").await.expect("list");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    list["streams"]
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `what` holds, for at most `secs`.
async fn eventually(secs: u64, what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !holds().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_source_runs_only_while_someone_watches() {
    let dir = temp_dir("streams-on-demand");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 30, 10);
    let pid_file = dir.join("camera.pid");
    let config = dir.join("nalcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"always\"\nsource = \"test\"\n\n\
             [[stream]]\nname = \"porch\"\nsource = \"exec:echo $$ > {pid}; exec ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -f h264 -i {clip} -c copy -f h264 -\"\n\
             on-demand = \"on\"\nidle-timeout = 1\n",
            pid = pid_file.display(),
            clip = clip.display()
        ),
    )
    .expect("config");
    let server = Server::start(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--width",
        "320",
        "--height",
        "240",
    ]);
    server.wait_healthy().await;
    assert_eq!(state_of(&server, "porch").await, "idle");
    assert!(
        !pid_file.exists(),
        "no camera process before the first viewer"
    );

    // The first viewer starts the camera: "starting", then pictures.
    let mut ws = connect(&server.url("/streams/porch/ws")).await;
    let mut saw_starting = false;
    loop {
        match next_framed(&mut ws, Duration::from_secs(15)).await {
            Some(ServerMessage::Status(state)) => saw_starting |= state.name() == "starting",
            Some(ServerMessage::AccessUnit { .. }) => break,
            Some(_) => {}
            None => panic!("no picture from the on-demand stream"),
        }
    }
    assert!(saw_starting, "the viewer is told the camera is starting");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the camera process wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(pid));
    assert_eq!(state_of(&server, "porch").await, "live");

    // The last viewer leaves: the camera process ends after the idle time.
    drop(ws);
    eventually(10, "the camera process to end", async || !alive(pid)).await;
    assert_eq!(state_of(&server, "porch").await, "idle");
    let (status, _) = http_get(server.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200, "an idle on-demand stream is healthy");

    // The next viewer starts it again, from a fresh picture (nothing stale cached).
    std::fs::remove_file(&pid_file).expect("remove pid file");
    let mut ws = connect(&server.url("/streams/porch/ws")).await;
    loop {
        match next_framed(&mut ws, Duration::from_secs(15)).await {
            Some(ServerMessage::AccessUnit { flags, .. }) => {
                assert!(
                    flags & nalcast_core::protocol::FLAG_KEYFRAME != 0,
                    "a keyframe first"
                );
                break;
            }
            Some(_) => {}
            None => panic!("no picture after the restart"),
        }
    }
    let again: u32 = std::fs::read_to_string(&pid_file)
        .expect("a new camera process")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(again, pid);
}

/// The names /api/streams lists, in order.
async fn names(server: &Server) -> Vec<String> {
    let (_, body) = http_get(server.addr, "/api/streams").await.expect("list");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    list["streams"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn streams_file(streams: &[(&str, &str)]) -> String {
    streams
        .iter()
        .map(|(name, extra)| format!("[[stream]]\nname = \"{name}\"\nsource = \"test\"\n{extra}\n"))
        .collect()
}

fn hang_up(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_restarts_streams_and_the_others_lose_no_frame() {
    let dir = temp_dir("streams-reload");
    let config = dir.join("nalcast.toml");
    let top = "width = 320\nheight = 240\nbitrate = 200000\n\n";
    std::fs::write(
        &config,
        format!(
            "{top}{}",
            streams_file(&[("steady", ""), ("tuned", ""), ("leaving", "")])
        ),
    )
    .expect("config");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    server.wait_healthy().await;

    // A viewer of the stream the reload leaves alone counts every frame.
    let mut steady = connect(&server.url("/streams/steady/ws")).await;
    let mut leaving = connect(&server.url("/streams/leaving/ws")).await;
    let watch = tokio::spawn(async move {
        let (mut last, mut frames) = (None::<u32>, 0u32);
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            match next_framed(&mut steady, Duration::from_secs(2)).await {
                Some(ServerMessage::AccessUnit { seq, .. }) => {
                    if let Some(l) = last {
                        assert_eq!(seq, l + 1, "a frame of the untouched stream was lost");
                    }
                    last = Some(seq);
                    frames += 1;
                }
                Some(ServerMessage::Skipped { .. }) => panic!("the untouched stream skipped"),
                Some(ServerMessage::Status(s)) => assert_eq!(s.name(), "live", "status {s:?}"),
                Some(_) => {}
                None => panic!("the untouched stream stopped"),
            }
        }
        frames
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Added, removed, changed: the running set follows the file.
    std::fs::write(
        &config,
        format!(
            "{top}{}",
            streams_file(&[("steady", ""), ("tuned", "fps = 10"), ("arriving", "")])
        ),
    )
    .expect("config");
    hang_up(&server);
    eventually(10, "the new list", async || {
        names(&server).await == ["steady", "tuned", "arriving"]
    })
    .await;
    // The removed stream's viewer hears why, then the connection ends.
    let mut told = None;
    while let Some(msg) = next_framed(&mut leaving, Duration::from_secs(5)).await {
        if let ServerMessage::Status(s) = msg {
            told = s.reason().map(str::to_owned);
        }
    }
    let told = told.expect("a status with the reason");
    assert!(told.contains("removed from nalcast's settings"), "{told}");
    let (status, _) = http_get(server.addr, "/streams/leaving/api/stream")
        .await
        .expect("gone");
    assert_eq!(status, 404);
    let (_, tuned) = http_get(server.addr, "/streams/tuned/api/stream")
        .await
        .expect("tuned");
    assert!(tuned.contains("\"fps\":10"), "{tuned}");
    assert_eq!(
        stream_info(&server.url("/streams/arriving/ws")).await,
        ("test".into(), 320)
    );

    let frames = watch.await.expect("the untouched stream's viewer");
    assert!(
        frames >= 80,
        "the untouched stream kept its rate: {frames} frames in 4 s"
    );

    // Settings that do not check out are refused, and the streams run on.
    std::fs::write(
        &config,
        format!("{top}{}", streams_file(&[("steady", "width = 9000")])),
    )
    .expect("config");
    hang_up(&server);
    eventually(10, "the reload to be refused", async || {
        let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
        metrics.contains("nalcast_reloads_total{result=\"refused\"} 1")
    })
    .await;
    assert_eq!(names(&server).await, ["steady", "tuned", "arriving"]);
    assert_eq!(
        stream_info(&server.url("/streams/tuned/ws")).await,
        ("test".into(), 320)
    );
}

#[test]
fn check_lists_the_streams_or_says_what_is_wrong_in_one_line() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(nalcast_bin())
            .args(args)
            .arg("--check")
            .output()
            .expect("nalcast runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&[
        "--stream",
        "door=rpicam",
        "--stream",
        "desk=usb",
        "--on-demand",
        "on",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stdout,
        "settings ok: 2 stream(s)\n  door: rpicam, on demand\n  desk: v4l2, on demand\n"
    );
    let (code, stdout, stderr) = run(&["--stream", "door=rpicam", "--stream", "door=usb"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(
        stderr,
        "nalcast: error: stream name 'door' is given twice: each stream needs its own name\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_s_own_viewer_limit_holds_and_leaves_the_others_open() {
    let dir = temp_dir("streams-limits");
    let config = dir.join("nalcast.toml");
    std::fs::write(
        &config,
        "width = 320\nheight = 240\n\n[[stream]]\nname = \"small\"\nsource = \"test\"\nmax-viewers = 2\n\n\
         [[stream]]\nname = \"big\"\nsource = \"test\"\n",
    )
    .expect("config");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    server.wait_healthy().await;
    let first = connect(&server.url("/streams/small/ws")).await;
    let _second = connect(&server.url("/streams/small/ws")).await;
    let status = status_of(server.addr, "GET", "/streams/small/ws", &UPGRADE).await;
    assert_eq!(status, 503, "a third viewer of a stream limited to two");
    // The other stream and the server's limits are not touched by it.
    let big = server.url("/streams/big/ws");
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(connect(&big).await);
    }
    // The refusal is counted by its reason (read before the polling below, whose
    // attempts while the place is being given back are refusals too).
    let (_, metrics) = http_get(server.addr, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("nalcast_ws_rejected_total{reason=\"stream_max_viewers\"} 1"),
        "{metrics}"
    );
    // A place comes free when a viewer leaves.
    drop(first);
    eventually(5, "a place for a new viewer", async || {
        status_of(server.addr, "GET", "/streams/small/ws", &UPGRADE).await == 101
    })
    .await;
}
