//! The still of a stream joined at any point of its GOP is the picture ffmpeg
//! decodes there: PSNR at least 35 dB against ffmpeg's decode of the same picture,
//! for Baseline and for Main and High with B-frames.
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use nalcast_core::ingest::Splitter;
use nalcast_core::SharedAu;
use nalcast_h264::PocCounter;
use nalcast_still::{Stills, Want};

const W: u32 = 320;
const H: u32 = 240;

/// 60 frames of ffmpeg's test source (with a moving counter) encoded as asked.
fn clip(x264: &[&str]) -> Vec<Arc<SharedAu>> {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size={W}x{H}:rate=30"),
            "-t",
            "2",
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(x264)
        .args(["-f", "h264", "-"])
        .output()
        .expect("ffmpeg runs (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut splitter = Splitter::new(1 << 22, &Default::default());
    let mut aus = Vec::new();
    splitter.push(&out.stdout, 0, &mut aus);
    splitter.end_of_access_unit(0, &mut aus);
    let now = Instant::now();
    aus.into_iter()
        .enumerate()
        .map(|(i, mut au)| {
            au.timestamp_us = i as u64;
            Arc::new(SharedAu::new(i as u32, au, now))
        })
        .collect()
}

/// ffmpeg's decode of display-order picture `index` of the clip `aus` came from, as RGB.
fn ffmpeg_picture(aus: &[Arc<SharedAu>], index: usize) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("nalcast-still-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("clip-{index}.h264"));
    let bytes: Vec<u8> = aus.iter().flat_map(|a| a.au.data.to_vec()).collect();
    std::fs::write(&path, bytes).expect("write");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i"])
        .arg(&path)
        .args(["-vf", &format!("select=eq(n\\,{index})"), "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert_eq!(
        out.stdout.len(),
        (W * H * 3) as usize,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// BT.601 luma of RGB pixels.
fn luma(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
}

fn decode_jpeg(bytes: &[u8]) -> Vec<u8> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    let pixels = d.decode().expect("a valid JPEG");
    let info = d.info().expect("info");
    assert_eq!((u32::from(info.width), u32::from(info.height)), (W, H));
    pixels
}

/// Joins at `joins` access units of the second GOP; checks each still.
fn check(name: &str, aus: &[Arc<SharedAu>]) {
    let gop_start = 30;
    // Display order within the GOP: rank by picture order count.
    let mut order = PocCounter::new();
    let pocs: Vec<i64> = aus[gop_start..]
        .iter()
        .map(|a| order.push(&a.au).expect("poc").poc)
        .collect();
    let mut stills = Stills::new();
    for upto in [
        gop_start,
        gop_start + 1,
        gop_start + 7,
        gop_start + 8,
        gop_start + 19,
    ] {
        let gop = &aus[gop_start..=upto];
        let jpeg = stills.jpeg(gop, Want::default()).expect("a still");
        let shown = pocs[..gop.len()].iter().copied().max().expect("a picture");
        let index = gop_start + pocs.iter().filter(|p| **p < shown).count();
        let expected = ffmpeg_picture(aus, index);
        let got = decode_jpeg(&jpeg.bytes);
        // Luma, as picture quality is usually measured: at the default quality the
        // test source's sharp coloured edges lose more in chroma (4:2:0, twice).
        let db = psnr(&luma(&got), &luma(&expected));
        assert!(
            db >= 35.0,
            "{name}: joined at {upto}, picture {index}: PSNR {db:.1} dB"
        );
        assert_eq!(
            jpeg.seq as usize,
            gop_start + pocs.iter().position(|p| *p == shown).expect("seq")
        );
    }
}

#[test]
fn baseline_stills_are_ffmpeg_s_pictures() {
    check("baseline", &clip(&["-profile:v", "baseline"]));
}

#[test]
fn main_and_high_stills_with_b_frames_are_ffmpeg_s_pictures() {
    check(
        "main",
        &clip(&["-profile:v", "main", "-bf", "3", "-b_strategy", "0"]),
    );
    check("high", &clip(&["-profile:v", "high", "-bf", "2"]));
}

#[test]
fn a_burst_of_requests_decodes_each_picture_once() {
    let aus = clip(&["-profile:v", "baseline"]);
    let mut stills = Stills::new();
    for _ in 0..50 {
        stills.jpeg(&aus[..10], Want::default()).expect("still");
    }
    assert_eq!(stills.decoded, 10);
    // The next picture decodes one access unit more, not the GOP again.
    stills.jpeg(&aus[..11], Want::default()).expect("still");
    assert_eq!(stills.decoded, 11);
    // A smaller size of the same picture is made from it, without decoding.
    let small = stills
        .jpeg(
            &aus[..11],
            Want {
                width: Some(160),
                ..Want::default()
            },
        )
        .expect("small");
    assert_eq!((small.width, small.height), (160, 120));
    assert_eq!(stills.decoded, 11);
}

#[test]
fn no_picture_before_a_keyframe() {
    let aus = clip(&["-profile:v", "baseline"]);
    let mut stills = Stills::new();
    assert_eq!(
        stills.jpeg(&[], Want::default()).err(),
        Some(nalcast_still::StillError::NoPicture)
    );
    assert_eq!(
        stills.jpeg(&aus[1..5], Want::default()).err(),
        Some(nalcast_still::StillError::NoPicture)
    );
}
