//! `/ws/fmp4` on the real binary: stream-info and an init segment, then one fMP4
//! fragment per access unit, from a keyframe, with sequence numbers and decode
//! times that never jump; what a viewer captures is a file ffprobe reads whole.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use nalcast_core::protocol::{ServerMessage, FLAG_CATCH_UP, FLAG_KEYFRAME};

/// What one viewer of `/ws/fmp4` got: its init segment and fragments, in order.
struct Capture {
    init: Vec<u8>,
    /// (flags, seq, moof + mdat)
    fragments: Vec<(u8, u32, Vec<u8>)>,
}

async fn capture(server: &Server, fragments: usize) -> Capture {
    let mut ws = connect(&server.url("/ws/fmp4")).await;
    let mut info = false;
    let mut init = None;
    let mut got = Vec::new();
    while got.len() < fragments {
        match next_framed(&mut ws, Duration::from_secs(10)).await {
            Some(ServerMessage::StreamInfo(_)) => info = true,
            Some(ServerMessage::InitSegment(data)) => {
                assert!(info, "the init segment follows a stream-info");
                assert!(init.is_none(), "one init segment while parameters stay");
                init = Some(data.to_vec());
            }
            Some(ServerMessage::Fragment {
                flags, seq, data, ..
            }) => {
                assert!(init.is_some(), "a fragment before the init segment");
                got.push((flags, seq, data.to_vec()));
            }
            Some(ServerMessage::AccessUnit { .. }) => panic!("Annex-B on /ws/fmp4"),
            Some(_) => {}
            None => panic!("the stream stopped after {} fragments", got.len()),
        }
    }
    Capture {
        init: init.expect("an init segment"),
        fragments: got,
    }
}

/// The type of the first box in `data`.
fn first_box(data: &[u8]) -> &str {
    std::str::from_utf8(&data[4..8]).unwrap_or("?")
}

/// A one-sample fragment's decode time (tfdt) and sample duration (trun).
fn timing(fragment: &[u8]) -> (u64, u64) {
    testkit::fmp4::fragment_timing(fragment).expect("a one-sample fragment")
}

/// ffprobe's packets of a file: (dts, keyframe).
fn packets(path: &std::path::Path) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=dts,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs (make test installs ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().expect("dts"), f[1].contains('K'))
        })
        .collect()
}

fn check(capture: &Capture, name: &str) {
    assert_eq!(first_box(&capture.init), "ftyp");
    let (first_flags, first_seq, _) = capture.fragments[0];
    assert!(
        first_flags & FLAG_KEYFRAME != 0,
        "{name}: starts at a keyframe"
    );
    for (i, (_, seq, data)) in capture.fragments.iter().enumerate() {
        assert_eq!(first_box(data), "moof", "{name}: fragment {i}");
        assert_eq!(*seq, first_seq + i as u32, "{name}: no sequence gap");
    }
    let dir = temp_dir(&format!("fmp4-{name}"));
    let file = dir.join("capture.mp4");
    let mut bytes = capture.init.clone();
    for (_, _, data) in &capture.fragments {
        bytes.extend_from_slice(data);
    }
    std::fs::write(&file, bytes).expect("write capture");
    let timings: Vec<(u64, u64)> = capture.fragments.iter().map(|f| timing(&f.2)).collect();
    for (i, pair) in timings.windows(2).enumerate() {
        let ((decode, duration), (next, _)) = (pair[0], pair[1]);
        assert!(duration > 0, "{name}: sample {i} has a duration");
        assert_eq!(
            decode + duration,
            next,
            "{name}: decode time continuous at {i}"
        );
    }
    let packets = packets(&file);
    assert_eq!(
        packets.len(),
        capture.fragments.len(),
        "{name}: every fragment read"
    );
    assert!(
        packets.windows(2).all(|p| p[0].0 < p[1].0),
        "{name}: ffprobe reads decode times in order"
    );
    let keys: Vec<bool> = packets.iter().map(|p| p.1).collect();
    let flagged: Vec<bool> = capture
        .fragments
        .iter()
        .map(|f| f.0 & FLAG_KEYFRAME != 0)
        .collect();
    assert_eq!(keys, flagged, "{name}: sync samples are the keyframes");
}

#[tokio::test]
async fn viewers_joining_anywhere_in_the_gop_get_a_playable_continuous_fmp4_stream() {
    let server = Server::start(&[
        "--keyframe-interval",
        "30",
        "--width",
        "320",
        "--height",
        "240",
    ]);
    server.wait_healthy().await;
    // One viewer across two GOPs; others join at different points of one.
    let first = capture(&server, 70).await;
    check(&first, "first");
    for n in 0..3 {
        let late = capture(&server, 35).await;
        check(&late, &format!("late-{n}"));
        let catch_up = late.fragments.iter().filter(|f| f.0 & FLAG_CATCH_UP != 0);
        assert!(catch_up.count() < 30, "catch-up never exceeds a GOP");
    }
}
