//! `--source v4l2:DEVICE`, `--source usb` and `--list-cameras` against fake
//! cameras: there is no camera hardware here, so a fake `v4l2-ctl` and a fake
//! `ffmpeg` come first on nalcast's PATH, and a plain file stands in for each
//! /dev/video node.
//!
//! The fakes check their arguments as the real tools would (an unknown device, a
//! format or size the camera does not offer, a busy camera: the real tools' own
//! error lines) and record them. Then the fake ffmpeg becomes the camera: for the
//! H.264 camera (a Logitech C920, H.264 over UVC) it plays an H.264 clip whose SPS
//! and PPS come once, at its start; for the MJPEG camera (a C270) it makes real
//! MJPEG from a test source. Either is piped into the REAL ffmpeg with the output
//! arguments nalcast chose, so the copy and the x264 encoding nalcast asks for are
//! what actually runs. Viewers on /ws must get decodable pictures.
use crate::common;
use crate::corpus::{check, streams};

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{connect, next_binary, temp_dir, write_h264, Server};
use bytes::Bytes;
use check::{check_capture, ffmpeg_decodes, Dialect};
use nalcast_core::protocol::{self, ServerMessage};

/// `v4l2-ctl --list-formats-ext` of a Logitech C920 (the H.264 kind), abridged.
const C920_FORMATS: &str = "ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'YUYV' (YUYV 4:2:2)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.042s (24.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.100s (10.000 fps)
\t[1]: 'H264' (H.264, compressed)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.042s (24.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1920x1080
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t[2]: 'MJPG' (Motion-JPEG, compressed)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1920x1080
\t\t\tInterval: Discrete 0.033s (30.000 fps)
";

/// A cheap UVC webcam (a Logitech C270): MJPEG and YUYV only.
const C270_FORMATS: &str = "ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'YUYV' (YUYV 4:2:2)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.133s (7.500 fps)
\t[1]: 'MJPG' (Motion-JPEG, compressed)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.033s (30.000 fps)
";

/// A UVC camera's second node: metadata, no video.
const METADATA_FORMATS: &str = "ioctl: VIDIOC_ENUM_FMT\n\tType: Video Capture\n\n";

/// The fake v4l2-ctl: `--list-devices` names the device files that exist, grouped
/// by card; `--list-formats-ext -d DEV` prints the camera's listing. Anything else
/// is refused.
const FAKE_V4L2_CTL: &str = r#"#!/usr/bin/python3
import os, sys
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0])))
DEV = ROOT + "/dev"
CARDS = [
    ("HD Pro Webcam C920", "usb-0000:00:14.0-1", ["video0", "video1"]),
    ("UVC Camera (046d:0825)", "usb-0000:00:14.0-2", ["video2", "video3"]),
]
args = sys.argv[1:]
if args == ["--list-devices"]:
    shown = 0
    for name, bus, nodes in CARDS:
        present = [n for n in nodes if os.path.exists(f"{DEV}/{n}")]
        if present:
            print(f"{name} ({bus}):")
            for n in present:
                print(f"\t{DEV}/{n}")
            print()
            shown += 1
    if not shown:
        sys.stderr.write("Cannot open device /dev/video0, exiting.\n")
        sys.exit(1)
    sys.exit(0)
if len(args) == 3 and args[:2] == ["--list-formats-ext", "-d"]:
    dev = args[2]
    if not os.path.exists(dev):
        sys.stderr.write(f"Cannot open device {dev}, exiting.\n")
        sys.exit(1)
    node = os.path.basename(dev)
    listing = os.path.join(ROOT, "formats", node)
    if not os.path.exists(listing):
        sys.stderr.write(f"{dev}: not a v4l2 node\n")
        sys.exit(1)
    sys.stdout.write(open(listing).read())
    sys.exit(0)
sys.stderr.write("fake v4l2-ctl: unexpected arguments: " + " ".join(args) + "\n")
sys.exit(64)
"#;

/// The fake ffmpeg. `-encoders` is the real one's answer; `-list_formats` prints
/// the camera's formats as ffmpeg does (on stderr, exit status 1); reading
/// `-f v4l2 … -i DEV` checks the device, format, size and rate, records the
/// arguments in ffmpeg-args.log, then pipes a picture source in that format into
/// the real ffmpeg with nalcast's output arguments.
const FAKE_FFMPEG: &str = r#"#!/usr/bin/python3
import os, shlex, sys
REAL = "/usr/bin/ffmpeg"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0])))
DEV = ROOT + "/dev"
PREFIX = "[video4linux2,v4l2 @ 0x55d0c8e4a8c0] "
# node: {ffmpeg input format: (v4l2 listing kind, description, sizes)}
CAMERAS = {
    "video0": {"yuyv422": ("Raw", "YUYV 4:2:2", ["640x480", "1280x720"]),
               "h264": ("Compressed", "H.264", ["640x480", "1280x720", "1920x1080"]),
               "mjpeg": ("Compressed", "Motion-JPEG", ["640x480", "1280x720", "1920x1080"])},
    "video2": {"yuyv422": ("Raw", "YUYV 4:2:2", ["640x480", "1280x720"]),
               "mjpeg": ("Compressed", "Motion-JPEG", ["640x480", "1280x720"])},
}
NO_VALUE = {"-hide_banner", "-nostdin", "-nostats", "-an", "-y", "-re"}

def fail(*lines, status=1):
    sys.stderr.write("".join(line + "\n" for line in lines))
    sys.exit(status)

args = sys.argv[1:]
if args == ["-hide_banner", "-encoders"]:
    os.execv(REAL, [REAL] + args)
if "-i" not in args:
    fail("fake ffmpeg: no -i in: " + " ".join(args), status=64)
at = args.index("-i")
before, dev, after = args[:at], args[at + 1], args[at + 2:]
opts, i = {}, 0
while i < len(before):
    if before[i] in NO_VALUE:
        opts[before[i]] = True
        i += 1
    else:
        opts[before[i]] = before[i + 1] if i + 1 < len(before) else None
        i += 2
if opts.get("-f") != "v4l2":
    fail("fake ffmpeg: expected -f v4l2 before -i, got: " + " ".join(before), status=64)
# As ffmpeg's v4l2 input: open, then VIDIOC_QUERYCAP.
if not os.path.exists(dev):
    fail(f"{PREFIX}Cannot open video device {dev}: No such file or directory",
         f"{dev}: No such file or directory")
if not os.access(dev, os.R_OK | os.W_OK):
    fail(f"{PREFIX}Cannot open video device {dev}: Permission denied", f"{dev}: Permission denied")
camera = CAMERAS.get(os.path.basename(dev))
if camera is None or os.path.dirname(dev) != DEV:
    fail(f"{PREFIX}ioctl(VIDIOC_QUERYCAP): Inappropriate ioctl for device",
         f"{dev}: Inappropriate ioctl for device")
if opts.get("-list_formats") == "all":
    for name, (kind, description, sizes) in camera.items():
        label = "Raw       :" if kind == "Raw" else "Compressed:"
        sys.stderr.write(f"{PREFIX}{label} {name:>11} : {description:>20} : {' '.join(sizes)}\n")
    fail(f"{dev}: Immediate exit requested")
with open(ROOT + "/ffmpeg-args.log", "a") as log:
    log.write(" ".join(args) + "\n")
if os.path.exists(dev + ".busy"):
    fail(f"{dev}: Device or resource busy")
fmt, size, rate = opts.get("-input_format"), opts.get("-video_size"), opts.get("-framerate")
if fmt not in camera:
    fail(f"{PREFIX}Cannot find a proper format for codec '{fmt}' (id 27), pixel format 'none' (id -1)",
         f"{dev}: Invalid argument")
if size not in camera[fmt][2] or rate != "30":
    fail(f"fake ffmpeg: this camera has no {fmt} at {size} and {rate} fps", status=64)
keep = [a for a in before if a in ("-hide_banner", "-nostdin", "-nostats")]
keep += ["-loglevel", opts.get("-loglevel", "info")]
quiet = [REAL, "-hide_banner", "-nostdin", "-loglevel", "error"]
if fmt == "h264":
    # The camera's own H.264: a clip with SPS and PPS at its start only, looped.
    clip = shlex.quote(ROOT + "/camera.h264")
    source = (f"while :; do /bin/cat {clip} || exit; done | "
              + shlex.join(quiet + ["-re", "-fpsprobesize", "0", "-framerate", rate, "-f", "h264",
                                    "-i", "-", "-c", "copy", "-flush_packets", "1", "-f", "h264", "-"]))
else:
    out = ["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "5", "-f", "mjpeg", "-"]
    if fmt != "mjpeg":
        out = ["-pix_fmt", fmt, "-f", "rawvideo", "-"]
    source = shlex.join(quiet + ["-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"] + out)
# ffmpeg's v4l2 input knows the camera's frame rate; on a raw H.264 pipe ffmpeg
# would analyse 5 s of stream to find it (-fpsprobesize 0: no analysis).
camera_input = ["-fpsprobesize", "0", "-framerate", rate, "-f", "mjpeg" if fmt == "mjpeg" else "h264", "-i", "-"]
if fmt not in ("h264", "mjpeg"):
    camera_input = ["-f", "rawvideo", "-pix_fmt", fmt, "-video_size", size, "-framerate", rate, "-i", "-"]
os.execv("/bin/sh", ["sh", "-c", source + " | exec " + shlex.join([REAL] + keep + camera_input + after)])
"#;

/// A directory with fake tools in `bin/`, fake device nodes in `dev/`, the
/// cameras' listings in `formats/` and the H.264 camera's clip.
struct Fakes {
    root: PathBuf,
}

impl Fakes {
    /// `tools`: which fakes to put in `bin/` ("v4l2-ctl", "ffmpeg"); `nodes`: which
    /// device files to make (video0, video1: the C920; video2, video3: the C270).
    fn new(name: &str, tools: &[&str], nodes: &[&str]) -> Fakes {
        let root = temp_dir(&format!("v4l2-{name}"));
        for dir in ["bin", "dev", "formats"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        for tool in tools {
            let script = match *tool {
                "v4l2-ctl" => FAKE_V4L2_CTL,
                "ffmpeg" => FAKE_FFMPEG,
                other => panic!("no fake {other}"),
            };
            let path = root.join("bin").join(tool);
            std::fs::write(&path, script).expect("write fake");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        for (node, listing) in [
            ("video0", C920_FORMATS),
            ("video1", METADATA_FORMATS),
            ("video2", C270_FORMATS),
            ("video3", METADATA_FORMATS),
        ] {
            std::fs::write(root.join("formats").join(node), listing).expect("write listing");
        }
        for node in nodes {
            std::fs::write(root.join("dev").join(node), "").expect("write node");
        }
        Fakes { root }
    }

    fn device(&self, node: &str) -> PathBuf {
        self.root.join("dev").join(node)
    }

    /// The PATH nalcast gets: the fakes alone (the fakes call the real ffmpeg by
    /// its full path), so a v4l2-ctl installed on this machine is never used.
    fn path(&self) -> String {
        self.root.join("bin").display().to_string()
    }

    /// What the fake ffmpeg was asked to read the camera with, one run per line.
    fn ffmpeg_runs(&self) -> String {
        std::fs::read_to_string(self.root.join("ffmpeg-args.log")).unwrap_or_default()
    }

    /// The H.264 camera's clip: 640x480, 90 pictures with a keyframe every 30, the
    /// SPS and PPS before the first keyframe only (as cameras that send them once do).
    fn write_h264_clip(&self) {
        let full = self.root.join("full.h264");
        write_h264(&full, 640, 480, 90, 30);
        let mut seen_idr = false;
        let mut clip = Vec::new();
        for nal in streams::split_annexb(&std::fs::read(&full).expect("clip")) {
            let kind = nal[0] & 0x1f;
            if seen_idr && matches!(kind, 7 | 8) {
                continue;
            }
            seen_idr |= kind == 5;
            clip.extend_from_slice(&[0, 0, 0, 1]);
            clip.extend_from_slice(&nal);
        }
        let kinds: Vec<u8> = streams::split_annexb(&clip)
            .iter()
            .map(|n| n[0] & 0x1f)
            .collect();
        let count = |kind: u8| kinds.iter().filter(|k| **k == kind).count();
        assert!(
            count(7) == 1 && count(8) == 1 && count(5) >= 2,
            "the clip needs keyframes without SPS and PPS: {kinds:?}"
        );
        std::fs::write(self.root.join("camera.h264"), clip).expect("write clip");
    }
}

/// Runs nalcast to its end with `args` and the fakes' PATH: (exit status, stdout, stderr).
fn nalcast_once(fakes: &Fakes, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nalcast"))
        .args(args)
        .env("PATH", fakes.path())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts nalcast on the fakes; its stderr lines (the log) come through the receiver.
fn start(fakes: &Fakes, args: &[&str]) -> (Server, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(args)
        .env("PATH", fakes.path())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = Server::from_command(cmd);
    let stderr = server.child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("nalcast: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (server, rx)
}

/// Waits for a log line containing `needle`.
fn await_log(log: &mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {within:?}"),
        }
    }
}

/// Reads /ws until `pictures` access units have come; every binary message.
async fn watch(ws: &mut common::Ws, pictures: usize, within: Duration) -> Vec<Bytes> {
    let deadline = Instant::now() + within;
    let (mut messages, mut seen) = (Vec::new(), 0);
    while seen < pictures {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = next_binary(ws, left).await else {
            panic!("only {seen} of {pictures} pictures within {within:?}");
        };
        if let Ok(ServerMessage::AccessUnit { .. }) = protocol::decode(&msg) {
            seen += 1;
        }
        messages.push(msg);
    }
    messages
}

/// Checks a capture as the corpus test does (a keyframe first, every keyframe led
/// by SPS and PPS, no reference picture missing) and decodes it with ffmpeg;
/// returns the last stream-info's (codec, width, height).
fn assert_decodes(name: &str, messages: &[Bytes]) -> (String, u32, u32) {
    let seen = check_capture(Dialect::Framed, messages, &[], false)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = temp_dir(&format!("v4l2-capture-{name}")).join("capture.h264");
    std::fs::write(&file, &seen.annexb).expect("write capture");
    ffmpeg_decodes(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
    messages
        .iter()
        .filter_map(|m| match protocol::decode(m) {
            Ok(ServerMessage::StreamInfo(i)) => Some((i.codec, i.width, i.height)),
            _ => None,
        })
        .last()
        .expect("a stream-info")
}

#[tokio::test]
async fn an_h264_webcam_is_streamed_as_it_comes_and_joins_mid_stream_decode() {
    let fakes = Fakes::new("h264", &["v4l2-ctl", "ffmpeg"], &["video0", "video1"]);
    fakes.write_h264_clip();
    let (server, _log) = start(
        &fakes,
        &["--source", "usb", "--width", "640", "--height", "480"],
    );
    let mut first = connect(&server.url("/ws")).await;
    // Three GOPs: two keyframes whose SPS and PPS the camera did not repeat.
    let messages = watch(&mut first, 100, Duration::from_secs(20)).await;
    let (_, width, height) = assert_decodes("h264-first", &messages);
    assert_eq!((width, height), (640, 480));
    // A viewer joining now starts at the current GOP's keyframe, with the SPS and
    // PPS the camera sent once, long before.
    let mut late = connect(&server.url("/ws")).await;
    let messages = watch(&mut late, 40, Duration::from_secs(10)).await;
    assert_decodes("h264-late", &messages);
    let runs = fakes.ffmpeg_runs();
    let run = runs.lines().next().expect("ffmpeg ran");
    let device = fakes.device("video0").display().to_string();
    assert!(
        run.contains(&format!(
            "-f v4l2 -input_format h264 -video_size 640x480 -framerate 30 -i {device}"
        )),
        "{run}"
    );
    assert!(
        run.contains("-c:v copy") && !run.contains("libx264"),
        "{run}"
    );
}

#[tokio::test]
async fn an_mjpeg_webcam_is_encoded_with_x264_and_decodes() {
    // No v4l2-ctl: the formats come from ffmpeg's own listing.
    let fakes = Fakes::new("mjpeg", &["ffmpeg"], &["video2", "video3"]);
    let device = fakes.device("video2").display().to_string();
    let (server, _log) = start(
        &fakes,
        &[
            "--source",
            &format!("v4l2:{device}"),
            "--width",
            "640",
            "--height",
            "480",
            "--bitrate",
            "1000000",
            "--keyframe-interval",
            "30",
        ],
    );
    let mut ws = connect(&server.url("/ws")).await;
    let messages = watch(&mut ws, 70, Duration::from_secs(20)).await;
    let (codec, width, height) = assert_decodes("mjpeg", &messages);
    assert_eq!((width, height), (640, 480));
    assert!(codec.starts_with("avc1.42"), "Baseline: {codec}");
    let runs = fakes.ffmpeg_runs();
    let run = runs.lines().next().expect("ffmpeg ran");
    assert!(
        run.contains(&format!(
            "-f v4l2 -input_format mjpeg -video_size 640x480 -framerate 30 -i {device}"
        )),
        "{run}"
    );
    assert!(
        run.contains("-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p -g 30 -b:v 1000000 -bf 0"),
        "{run}"
    );
}

#[test]
fn list_cameras_shows_each_camera_with_formats_sizes_and_what_nalcast_takes() {
    let fakes = Fakes::new(
        "list",
        &["v4l2-ctl", "ffmpeg"],
        &["video0", "video1", "video2", "video3"],
    );
    let (status, out, err) = nalcast_once(&fakes, &["--list-cameras"]);
    assert_eq!(status, Some(0), "{err}");
    let c920 = fakes.device("video0").display().to_string();
    let c270 = fakes.device("video2").display().to_string();
    for needle in [
        format!("{c920}: HD Pro Webcam C920 (usb-0000:00:14.0-1)  [--source usb]\n"),
        "  H264 (H.264, compressed): 640x480@30 1280x720@30 1920x1080@30\n".into(),
        "  YUYV (YUYV 4:2:2): 640x480@30 1280x720@10\n".into(),
        "  nalcast takes (with --width 1280 --height 720 --fps 30): H264 1280x720 at 30 fps, copied\n"
            .into(),
        format!("{c270}: UVC Camera (046d:0825) (usb-0000:00:14.0-2)\n"),
        "  MJPG (Motion-JPEG, compressed): 640x480@30 1280x720@30\n".into(),
        "  nalcast takes (with --width 1280 --height 720 --fps 30): MJPG 1280x720 at 30 fps, encoded with libx264\n"
            .into(),
    ] {
        assert!(out.contains(&needle), "{needle:?} missing in:\n{out}");
    }
    // The metadata nodes capture no video: not cameras.
    for node in ["video1", "video3"] {
        let path = fakes.device(node).display().to_string();
        assert!(!out.contains(&format!("{path}:")), "{out}");
    }
    // With other settings, the choice follows them.
    let (_, out, _) = nalcast_once(
        &fakes,
        &["--list-cameras", "--width", "640", "--height", "480"],
    );
    assert!(out.contains("H264 640x480 at 30 fps, copied"), "{out}");
}

#[test]
fn no_camera_is_one_line_and_a_failure() {
    // Without v4l2-ctl nalcast looks at /dev/video* itself: only meaningful where
    // there is none, as on this build machine.
    if std::fs::read_dir("/dev")
        .expect("/dev")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("video"))
    {
        eprintln!(
            "SKIPPED no_camera_is_one_line_and_a_failure: this machine has /dev/video* devices"
        );
        return;
    }
    let fakes = Fakes::new("none", &["ffmpeg"], &[]);
    let (status, out, err) = nalcast_once(&fakes, &["--list-cameras"]);
    assert_eq!(status, Some(1), "{out}{err}");
    assert_eq!(
        err,
        "nalcast: no cameras found: no /dev/video* capture device\n"
    );
    assert!(out.is_empty(), "{out}");
    let (status, _, err) = nalcast_once(&fakes, &["--source", "usb"]);
    assert_eq!(status, Some(2));
    assert_eq!(
        err,
        "nalcast: error: no cameras found: no /dev/video* capture device\n"
    );
    // v4l2-ctl finding no device says the same.
    let fakes = Fakes::new("none-v4l2-ctl", &["v4l2-ctl", "ffmpeg"], &[]);
    let (status, _, err) = nalcast_once(&fakes, &["--list-cameras"]);
    assert_eq!(
        (status, err.as_str()),
        (
            Some(1),
            "nalcast: no cameras found: no /dev/video* capture device\n"
        )
    );
}

/// The user nalcast runs as in the permission test: `nobody` when the tests run as
/// root (root may open anything), else the user itself.
fn as_unprivileged(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if nix::unistd::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
}

#[test]
fn camera_errors_are_one_line_with_exit_status_2() {
    let fakes = Fakes::new("errors", &["v4l2-ctl", "ffmpeg"], &["video0", "video1"]);
    let missing = fakes.device("video9").display().to_string();
    let (status, _, err) = nalcast_once(&fakes, &["--source", &format!("v4l2:{missing}")]);
    assert_eq!(status, Some(2), "{err}");
    assert_eq!(
        err,
        format!("nalcast: error: camera {missing} not found: no such device (is it plugged in? `nalcast --list-cameras` lists the cameras)\n")
    );

    // No ffmpeg on the PATH (v4l2-ctl alone).
    let no_ffmpeg = Fakes::new("no-ffmpeg", &["v4l2-ctl"], &["video0"]);
    let device = no_ffmpeg.device("video0").display().to_string();
    let (status, _, err) = nalcast_once(&no_ffmpeg, &["--source", &format!("v4l2:{device}")]);
    assert_eq!(status, Some(2), "{err}");
    assert_eq!(
        err,
        format!("nalcast: error: --source v4l2:{device} needs ffmpeg, which is not on the PATH: install it (apt install ffmpeg)\n")
    );

    // A camera the user may not open: as on most systems, it belongs to the group
    // video, which the user is not in.
    let device = fakes.device("video0");
    let root = nix::unistd::geteuid().is_root();
    if root {
        let video = nix::unistd::Group::from_name("video")
            .expect("group lookup")
            .expect("a group video");
        std::os::unix::fs::chown(&device, None, Some(video.gid.as_raw())).expect("chgrp video");
        std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    } else {
        std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args(["--source", &format!("v4l2:{}", device.display())])
        .env("PATH", fakes.path());
    as_unprivileged(&mut cmd);
    let out = cmd.output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "nalcast: error: no permission to open camera {}",
            device.display()
        )),
        "{err}"
    );
    if root {
        assert!(
            err.contains(": user nobody is not in the group video (sudo usermod -aG video nobody, then log in again)"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_busy_camera_is_one_log_line_and_plays_once_freed() {
    let fakes = Fakes::new("busy", &["v4l2-ctl", "ffmpeg"], &["video0", "video1"]);
    fakes.write_h264_clip();
    let device = fakes.device("video0");
    let busy = PathBuf::from(format!("{}.busy", device.display()));
    std::fs::write(&busy, "").expect("mark busy");
    let (server, log) = start(
        &fakes,
        &[
            "--source",
            &format!("v4l2:{}", device.display()),
            "--width",
            "640",
            "--height",
            "480",
        ],
    );
    let expected = format!(
        "camera {} is busy: another program is using it (close it; `fuser -v {}` names it)",
        device.display(),
        device.display()
    );
    let line = await_log(&log, "source lost", Duration::from_secs(10));
    assert!(line.contains(&expected), "{line}");
    // Viewers are told the reason too.
    let mut ws = connect(&server.url("/ws")).await;
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = next_binary(&mut ws, Duration::from_secs(10))
                .await
                .expect("a message");
            if let Ok(ServerMessage::Status(s)) = protocol::decode(&msg) {
                if s.name() == "source-lost" {
                    return s.reason().unwrap_or_default().to_owned();
                }
            }
        }
    })
    .await
    .expect("a source-lost status");
    assert_eq!(told, expected);
    // The other program lets go: the next retry plays.
    std::fs::remove_file(&busy).expect("free the camera");
    let messages = watch(&mut ws, 30, Duration::from_secs(20)).await;
    assert_decodes("busy-then-free", &messages);
}

/// Not a test of nalcast: the fakes refuse what the real tools would refuse, so a
/// wrong choice by nalcast cannot pass unnoticed.
#[test]
fn the_fakes_refuse_what_the_real_tools_refuse() {
    let fakes = Fakes::new("fakes", &["v4l2-ctl", "ffmpeg"], &["video2"]);
    let run = |tool: &str, args: &[&str]| {
        let out = Command::new(fakes.root.join("bin").join(tool))
            .args(args)
            .output()
            .expect("fake runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let c270 = fakes.device("video2").display().to_string();
    // The C270 has no H.264.
    let (status, err) = run(
        "ffmpeg",
        &[
            "-f",
            "v4l2",
            "-input_format",
            "h264",
            "-video_size",
            "640x480",
            "-framerate",
            "30",
            "-i",
            &c270,
            "-f",
            "h264",
            "-",
        ],
    );
    assert_eq!(status, Some(1));
    assert!(
        err.contains("Cannot find a proper format for codec 'h264'"),
        "{err}"
    );
    // Nor MJPEG at 1920x1080.
    let (status, _) = run(
        "ffmpeg",
        &[
            "-f",
            "v4l2",
            "-input_format",
            "mjpeg",
            "-video_size",
            "1920x1080",
            "-framerate",
            "30",
            "-i",
            &c270,
            "-f",
            "h264",
            "-",
        ],
    );
    assert_eq!(status, Some(64));
    assert_eq!(run("v4l2-ctl", &["--list-formats"]).0, Some(64));
    assert_eq!(run("ffmpeg", &["-version"]).0, Some(64));
    assert!(Path::new(&c270).exists());
}
