//! The fMP4 packager on real x264 streams, read back by ffprobe and ffmpeg: every
//! packet present, decode times continuous, keyframes flagged, and (with B-frames)
//! the same pictures in the same order as decoding the raw stream.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nalcast_core::fmp4::{Packager, TIMESCALE};
use nalcast_core::ingest::{Splitter, DEFAULT_MAX_NAL_SIZE};
use nalcast_h264::AccessUnit;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nalcast-fmp4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `frames` of the test source encoded by x264 (cached by the test kit).
fn encode(size: &str, x264: &[&str], frames: u32) -> PathBuf {
    let frames = frames.to_string();
    let mut args = vec!["-frames:v", &frames, "-c:v", "libx264"];
    args.extend_from_slice(x264);
    testkit::x264::encode(&format!("testsrc2=size={size}:rate=30"), &args)
}

/// nalcast's own splitter, then capture times: 33 333 µs apart, or in bursts of
/// `burst` access units sharing one timestamp (as when one read holds several).
fn split(path: &Path, burst: u64) -> Vec<AccessUnit> {
    let bytes = std::fs::read(path).expect("read clip");
    let mut splitter = Splitter::new(DEFAULT_MAX_NAL_SIZE, &Default::default());
    let mut aus = Vec::new();
    splitter.push(&bytes, 0, &mut aus);
    splitter.end_of_access_unit(0, &mut aus);
    for (i, au) in aus.iter_mut().enumerate() {
        let i = i as u64;
        au.timestamp_us = 1_700_000_000_000_000 + (i - i % burst) * 33_333;
    }
    aus
}

/// One fragment's times as its boxes say (read back with mp4-atom).
struct Boxed {
    sequence: u32,
    tfdt: u64,
    duration: u32,
}

fn read_fragment(bytes: &[u8]) -> Boxed {
    use mp4_atom::{Decode, Moof};
    let moof = Moof::decode(&mut &bytes[..]).expect("moof");
    let traf = &moof.traf[0];
    let sample = traf.trun[0].samples.get(0).expect("one sample");
    Boxed {
        sequence: moof.mfhd.sequence_number,
        tfdt: traf.tfdt.as_ref().expect("tfdt").base_media_decode_time,
        duration: sample.duration.expect("duration"),
    }
}

/// Init segment and fragments of `aus` in one file, and each fragment's times.
fn package(aus: &[AccessUnit], name: &str) -> (PathBuf, Vec<Boxed>) {
    let mut packager = Packager::new();
    let mut file = Packager::init_segment(&aus[0].params)
        .expect("init")
        .to_vec();
    let mut boxed = Vec::new();
    for au in aus {
        let fragment = packager.fragment(au).expect("fragment");
        boxed.push(read_fragment(&fragment));
        file.extend_from_slice(&fragment);
    }
    assert_eq!(packager.poc_errors(), 0);
    let path = scratch(name);
    std::fs::write(&path, file).expect("write mp4");
    (path, boxed)
}

struct Packet {
    pts: i64,
    dts: i64,
    key: bool,
}

fn packets(path: &Path) -> Vec<Packet> {
    let csv = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_packets"])
        .args(["-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0"])
        .arg(path));
    csv.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f[i].parse::<i64>().unwrap_or_else(|_| panic!("{line}"));
            Packet {
                pts: num(0),
                dts: num(1),
                key: f[2].starts_with('K'),
            }
        })
        .collect()
}

/// Presentation time and MD5 of every decoded picture, in the decoder's output
/// order (which is picture order, whatever the container says).
fn decoded(path: &Path) -> Vec<(i64, String)> {
    let out = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        // The stream's own time base (90 kHz), not one rounded to the frame rate:
        // two pictures less than a frame interval apart must not share a time.
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1"])
        .args(["-f", "framemd5", "-"]));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f[2].parse().unwrap_or(-1), f[5].to_string())
        })
        .collect()
}

fn check(aus: &[AccessUnit], (mp4, boxed): &(PathBuf, Vec<Boxed>), raw: &Path, reordered: bool) {
    // The boxes: sequence numbers up by one, tfdt = previous tfdt + its duration.
    assert_eq!((boxed[0].sequence, boxed[0].tfdt), (1, 0));
    for (i, w) in boxed.windows(2).enumerate() {
        assert_eq!(w[1].sequence, w[0].sequence + 1, "mfhd at {i}");
        assert_eq!(
            w[1].tfdt,
            w[0].tfdt + u64::from(w[0].duration),
            "tfdt at {i}"
        );
    }
    // What ffprobe makes of them (its packet durations are not the trun's, so the
    // decode times are compared with the boxes instead).
    let p = packets(mp4);
    assert_eq!(p.len(), aus.len(), "every access unit is a packet");
    for (i, w) in p.windows(2).enumerate() {
        assert!(w[1].dts > w[0].dts, "dts strictly increasing at {i}");
        assert_eq!(
            w[1].dts - w[0].dts,
            i64::from(boxed[i].duration),
            "dts continuous at {i}"
        );
    }
    for (packet, au) in p.iter().zip(aus) {
        assert_eq!(packet.key, au.keyframe, "keyframe flags");
        assert!(packet.pts >= packet.dts, "presented after decoded");
    }
    let mut pts: Vec<i64> = p.iter().map(|p| p.pts).collect();
    pts.sort();
    pts.dedup();
    assert_eq!(
        pts.len(),
        p.len(),
        "no two pictures share a presentation time"
    );
    let in_decode_order = p.windows(2).all(|w| w[1].pts > w[0].pts);
    assert_eq!(
        !in_decode_order, reordered,
        "B-frames reorder, Baseline not"
    );
    let (ours, theirs) = (decoded(mp4), decoded(raw));
    assert_eq!(ours.len(), aus.len());
    let md5s = |d: &[(i64, String)]| d.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>();
    assert_eq!(
        md5s(&ours),
        md5s(&theirs),
        "same pictures as the raw stream"
    );
    // The decoder outputs pictures in picture order: their presentation times,
    // which are ours, must rise in that order.
    assert!(
        ours.windows(2).all(|w| w[1].0 > w[0].0),
        "presentation times follow picture order"
    );
}

#[test]
fn main_profile_with_b_frames_plays_in_display_order() {
    if !testkit::tools::require_ffmpeg("main_profile_with_b_frames_plays_in_display_order") {
        return;
    }
    let raw = encode(
        "320x240",
        &["-profile:v", "main", "-bf", "2", "-g", "30"],
        90,
    );
    for burst in [1, 3] {
        let aus = split(&raw, burst);
        assert_eq!(aus.len(), 90);
        let mp4 = package(&aus, &format!("main-{burst}.mp4"));
        check(&aus, &mp4, &raw, true);
    }
}

#[test]
fn high_profile_with_b_pyramid_plays_in_display_order() {
    if !testkit::tools::require_ffmpeg("high_profile_with_b_pyramid_plays_in_display_order") {
        return;
    }
    let raw = encode(
        "320x240",
        &[
            "-profile:v",
            "high",
            "-bf",
            "3",
            "-b_strategy",
            "0",
            "-g",
            "48",
        ],
        100,
    );
    let aus = split(&raw, 1);
    let mp4 = package(&aus, "high.mp4");
    check(&aus, &mp4, &raw, true);
}

#[test]
fn baseline_plays_in_decode_order_at_the_capture_rate() {
    if !testkit::tools::require_ffmpeg("baseline_plays_in_decode_order_at_the_capture_rate") {
        return;
    }
    let raw = encode("320x240", &["-profile:v", "baseline", "-g", "30"], 90);
    let aus = split(&raw, 1);
    let mp4 = package(&aus, "baseline.mp4");
    check(&aus, &mp4, &raw, false);
    let durations: Vec<u32> = mp4.1.iter().map(|b| b.duration).collect();
    assert_eq!(durations[0], TIMESCALE / 30, "first from the fps");
    // then the capture clock: 33 333 µs is 2999.97 ticks
    assert!(durations[1..].iter().all(|d| (2999..=3000).contains(d)));
    let span = u64::from(durations[1..].iter().sum::<u32>());
    assert!(
        span.abs_diff(89 * 33_333 * 9 / 100) <= 90,
        "the timeline keeps the capture clock within 1 ms: {span}"
    );
}

#[test]
fn resolution_change_keeps_decode_times_continuous() {
    if !testkit::tools::require_ffmpeg("resolution_change_keeps_decode_times_continuous") {
        return;
    }
    let a = std::fs::read(encode("320x240", &["-bf", "2", "-g", "15"], 30)).expect("clip a");
    let b = std::fs::read(encode(
        "640x360",
        &["-profile:v", "baseline", "-g", "15"],
        30,
    ))
    .expect("clip b");
    let joined = scratch("joined.h264");
    std::fs::write(&joined, [a, b].concat()).expect("write");
    let aus = split(&joined, 1);
    assert_eq!(aus.len(), 60);
    let mut packager = Packager::new();
    let mut inits = 0;
    let mut last = None;
    let mut timings = Vec::new();
    for au in &aus {
        if last
            .as_ref()
            .is_none_or(|p| !std::sync::Arc::ptr_eq(p, &au.params))
        {
            let init = Packager::init_segment(&au.params).expect("init");
            assert!(!init.is_empty());
            inits += 1;
            last = Some(au.params.clone());
        }
        packager.fragment(au).expect("fragment");
        timings.push(packager.last_timing().expect("timing"));
    }
    assert_eq!(inits, 2, "one init segment per parameter set");
    for w in timings.windows(2) {
        assert_eq!(
            w[1].decode_time,
            w[0].decode_time + u64::from(w[0].duration)
        );
    }
    let max_before = timings[..30]
        .iter()
        .map(|t| t.presentation_time())
        .max()
        .expect("timings");
    assert!(timings[30..]
        .iter()
        .all(|t| t.presentation_time() > max_before));
}
