//! WebRTC over WHEP, end to end with a third-party client: aiortc (PyPI; installed
//! into a venv of its own by scripts/setup-webrtc-client.sh) offers, nalcast
//! answers, aiortc decodes with FFmpeg. Checked as a viewer would see it: every
//! picture decoded with its stamp readable, stamps consecutive (no picture lost),
//! no RTP packet lost, the first picture live.
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// aiortc's Python, as scripts/setup-webrtc-client.sh installs it.
fn aiortc_python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("nalcast/aiortc-venv/bin/python")
}

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/webrtc/whep_client.py")
}

/// What the client saw.
#[derive(Debug)]
struct Played {
    json: serde_json::Value,
    stamps: Vec<Option<u64>>,
}

/// Plays `url` for `seconds` with aiortc; None when aiortc is missing (and allowed to be).
async fn play(test: &str, url: String, seconds: f64) -> Option<Played> {
    let python = aiortc_python();
    if !testkit::tools::require(
        test,
        "aiortc (scripts/setup-webrtc-client.sh)",
        python.exists(),
    ) {
        return None;
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(client_script())
            .args([&url, "--seconds", &seconds.to_string()])
            .output()
            .expect("the WHEP client runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the WHEP client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("client JSON");
    let stamps = json["stamps"]
        .as_array()
        .expect("stamps")
        .iter()
        .map(|v| v.as_u64())
        .collect();
    Some(Played { json, stamps })
}

/// Pictures whose stamp is not the one after the previous picture's.
fn gaps(stamps: &[Option<u64>]) -> Vec<(Option<u64>, Option<u64>)> {
    stamps
        .windows(2)
        .filter(|w| !matches!(w, [Some(a), Some(b)] if *b == a + 1))
        .map(|w| (w[0], w[1]))
        .collect()
}

fn check_played(played: &Played, width: u64, height: u64, min_frames: usize) {
    let j = &played.json;
    assert_eq!(j["answer_has_h264"], true, "{j}");
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(width), Some(height))
    );
    assert!(
        played.stamps.len() >= min_frames,
        "{} pictures, wanted {min_frames}",
        played.stamps.len()
    );
    assert_eq!(
        gaps(&played.stamps),
        vec![],
        "pictures missing between these stamps"
    );
    assert_eq!(j["packets_lost"].as_u64(), Some(0), "{j}");
    assert!(j["packets_received"].as_u64().unwrap_or(0) > 0, "{j}");
    // DELETE ended the session.
    assert_eq!(j["delete_status"].as_u64(), Some(200), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_the_test_pattern_over_whep_from_a_live_keyframe_without_a_gap() {
    let server = Server::start(&["--width", "640", "--height", "360", "--bitrate", "1500000"]);
    server.wait_healthy().await;
    let Some(played) = play(
        "aiortc_plays_the_test_pattern_over_whep_from_a_live_keyframe_without_a_gap",
        format!("http://{}/whep", server.addr),
        3.0,
    )
    .await
    else {
        return;
    };
    check_played(&played, 640, 360, 60);
    // The test pattern makes keyframes on demand: the first picture is live, not
    // the start of the cached GOP.
    let age = played.json["first_stamp_age_ms"]
        .as_f64()
        .expect("first stamp");
    assert!(age < 1000.0, "the first picture was {age} ms old");
    assert!(
        played.json["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/streams/camera/whep/")),
        "{}",
        played.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream() {
    if !testkit::tools::require_ffmpeg(
        "aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream",
    ) {
        return;
    }
    // A camera that cannot make keyframes on demand (an encoder in a pipe), Main
    // profile with B-frames, a keyframe every second: the viewer waits for one.
    let cam = "exec:ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
               -c:v libx264 -profile:v main -bf 2 -g 30 -tune zerolatency -f h264 -";
    let spec = format!("porch={cam}");
    let server = Server::start(&["--stream", "yard=test", "--stream", &spec]);
    server.wait_healthy().await;
    let Some(played) = play(
        "aiortc_plays_a_main_profile_camera_with_b_frames_of_a_named_stream",
        format!("http://{}/streams/porch/whep", server.addr),
        3.0,
    )
    .await
    else {
        return;
    };
    let j = &played.json;
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(
        played.stamps.len() >= 60,
        "{} pictures",
        played.stamps.len()
    );
    assert_eq!(j["packets_lost"].as_u64(), Some(0), "{j}");
    assert_eq!(j["delete_status"].as_u64(), Some(200), "{j}");
    assert!(
        j["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/streams/porch/whep/")),
        "{j}"
    );
}
