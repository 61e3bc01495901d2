//! nalcast's I/O edges: the video sources and their supervisor on the way in, the
//! publishers (`--publish`) on the way out.
//!
//! Every source ends up giving access units to the hub (`nalcast_core`, the pure
//! pipeline, which imports nothing from here); the supervisor restarts a failed
//! source with capped backoff while the hub keeps its viewers. This crate holds what
//! talks to the world: child processes (rpicam-vid, ffmpeg, v4l2-ctl), RTSP cameras
//! through retina, the test pattern's openh264 encoder.
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use backoff::{Backoff, Retries};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::metric::Series;
use nalcast_core::Hub;

/// What every ffmpeg nalcast runs is told first: no banner, no keyboard, no
/// statistics, warnings and errors only (they become log lines and failure reasons).
pub(crate) const FFMPEG_QUIET: [&str; 5] = [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-loglevel",
    "warning",
];

/// Source restarts.
pub const SOURCE_RESTARTS: Series = Series::counter(
    "nalcast_source_restarts_total",
    "times the source was restarted",
)
.per_stream();

pub mod backoff;
pub mod exec;
pub mod file;
pub mod frame_end;
pub mod pattern;
pub mod publish;
pub mod rpicam;
pub mod rtsp;
pub mod rtsp_guard;
pub mod sniff;
pub mod test_pattern;
pub mod v4l2;
pub mod writer;

pub use rtsp::{RtspTransport, RtspUrl};

/// Where video comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in test pattern, encoded with openh264.
    Test,
    /// An Annex-B .h264 file, paced at the configured frame rate, looping.
    File(PathBuf),
    /// A shell command writing Annex-B H.264 to its stdout.
    Exec(String),
    /// Annex-B H.264 on nalcast's standard input.
    Stdin,
    /// The Raspberry Pi camera app found on this machine.
    Rpicam,
    /// An IP camera over RTSP (its credentials never print).
    Rtsp(RtspUrl),
    /// A USB webcam or other V4L2 capture device, read by ffmpeg.
    V4l2(v4l2::Device),
}

/// A `--source` value that could not be understood. Its text is masked: an
/// address that fails to parse may still hold a password.
#[derive(Debug, thiserror::Error)]
pub enum BadSourceSpec {
    /// Not a kind of source nalcast knows.
    #[error("unknown source '{0}': expected test, file:PATH, exec:COMMAND, stdin, rpicam, usb, v4l2:DEVICE or rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH")]
    Unknown(String),
    /// An `rtsp://` address that cannot be used.
    #[error("bad RTSP source '{0}': {1}")]
    Rtsp(String, rtsp::BadRtspUrl),
}

impl FromStr for SourceSpec {
    type Err = BadSourceSpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSourceSpec::Unknown(mask_credentials(s));
        match s {
            "test" => Ok(SourceSpec::Test),
            "stdin" | "-" => Ok(SourceSpec::Stdin),
            "rpicam" => Ok(SourceSpec::Rpicam),
            "usb" => Ok(SourceSpec::V4l2(v4l2::Device::FirstUsb)),
            _ => {
                if let Some(path) = s.strip_prefix("file:") {
                    if path.is_empty() {
                        return Err(bad());
                    }
                    Ok(SourceSpec::File(PathBuf::from(path)))
                } else if let Some(cmd) = s.strip_prefix("exec:") {
                    if cmd.trim().is_empty() {
                        return Err(bad());
                    }
                    Ok(SourceSpec::Exec(cmd.to_owned()))
                } else if let Some(device) = s.strip_prefix("v4l2:") {
                    if device.is_empty() {
                        return Err(bad());
                    }
                    Ok(SourceSpec::V4l2(v4l2::Device::Path(PathBuf::from(device))))
                } else if s.starts_with("rtsp://") || s.starts_with("rtsps://") {
                    RtspUrl::parse(s)
                        .map(SourceSpec::Rtsp)
                        .map_err(|e| BadSourceSpec::Rtsp(mask_credentials(s), e))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// Prints the spec as given, with passwords in URLs masked (`rtsp://admin:***@cam`):
/// this is what goes into the log.
impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Test => write!(f, "test"),
            SourceSpec::File(p) => write!(f, "file:{}", p.display()),
            SourceSpec::Exec(c) => write!(f, "exec:{}", mask_credentials(c)),
            SourceSpec::Stdin => write!(f, "stdin"),
            SourceSpec::Rpicam => write!(f, "rpicam"),
            SourceSpec::Rtsp(url) => write!(f, "{url}"),
            SourceSpec::V4l2(device) => write!(f, "{device}"),
        }
    }
}

impl SourceSpec {
    /// The kind of source alone ("exec", "file", …): what the API and viewers are
    /// told. A command line or path can hold a camera's address and password.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Test => "test",
            SourceSpec::File(_) => "file",
            SourceSpec::Exec(_) => "exec",
            SourceSpec::Stdin => "stdin",
            SourceSpec::Rpicam => "rpicam",
            SourceSpec::Rtsp(_) => "rtsp",
            SourceSpec::V4l2(_) => "v4l2",
        }
    }

    /// Whether the source makes a keyframe when a viewer needs one. Only the test
    /// pattern owns its encoder; a camera app, a command or a file sends keyframes
    /// at its own interval (rpicam-vid has no way to ask for one while it runs).
    pub fn keyframes_on_demand(&self) -> bool {
        matches!(self, SourceSpec::Test)
    }
}

/// `text` with the password of every `scheme://user:password@host` masked
/// (`user:***@`), and a lone `scheme://secret@host` user part too, for logs.
pub fn mask_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', whitespace or quote; userinfo at its last '@'.
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(userinfo_end) => {
                match after[..userinfo_end].split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str("***"),
                }
                out.push_str(&after[userinfo_end..end]);
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Picture settings for sources that encode (test, rpicam) or pace (file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Frames between keyframes.
    pub keyframe_interval: u32,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate: 3_000_000,
            keyframe_interval: 60,
        }
    }
}

/// Everything a source needs besides the hub.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOptions {
    /// Picture settings.
    pub video: VideoSettings,
    /// NAL units larger than this are dropped.
    pub max_nal_size: usize,
    /// A source that delivers no data for this long is restarted.
    pub stall_timeout: Duration,
    /// When to restart a source that stopped.
    pub backoff: Backoff,
    /// How an RTSP camera sends its packets.
    pub rtsp_transport: RtspTransport,
    /// Whether an RTSP camera may have the password as HTTP Basic (readable on
    /// the network) when it offers nothing better.
    pub rtsp_allow_basic: bool,
    /// Which of the machine's cameras (`rpicam-vid --camera N`); None: the app's
    /// default, the first.
    pub camera: Option<u32>,
    /// Which way the camera's picture is turned.
    pub orientation: Orientation,
}

/// Which way a camera's picture is turned: rotated clockwise, then mirrored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Orientation {
    /// Degrees clockwise: 0, 90, 180 or 270.
    pub rotation: u16,
    /// Mirrored left to right.
    pub hflip: bool,
    /// Mirrored top to bottom.
    pub vflip: bool,
}

impl Orientation {
    /// Whether the picture is left as the camera makes it.
    pub fn is_identity(&self) -> bool {
        *self == Orientation::default()
    }

    /// ffmpeg's video filter for it, when it turns the picture at all.
    pub fn ffmpeg_filter(&self) -> Option<String> {
        let mut steps: Vec<&str> = match self.rotation {
            90 => vec!["transpose=clock"],
            180 => vec!["hflip", "vflip"],
            270 => vec!["transpose=cclock"],
            _ => vec![],
        };
        if self.hflip {
            steps.push("hflip");
        }
        if self.vflip {
            steps.push("vflip");
        }
        (!steps.is_empty()).then(|| steps.join(","))
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            video: VideoSettings::default(),
            max_nal_size: nalcast_core::ingest::DEFAULT_MAX_NAL_SIZE,
            stall_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            rtsp_transport: RtspTransport::default(),
            rtsp_allow_basic: false,
            camera: None,
            orientation: Orientation::default(),
        }
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Worth restarting (crash, stall, end of stream).
    #[error("{0}")]
    Retry(String),
    /// Restarting cannot help (stdin ended).
    #[error("{0}")]
    Final(String),
    /// Refused by the other side (a camera rejecting the credentials): retried at
    /// the longest backoff only, since it will not change its mind soon and cameras
    /// lock accounts out after a burst of failed logins.
    #[error("{0}")]
    Refused(String),
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        SourceError::Retry(e.to_string())
    }
}

/// Checks, before start-up, what can be checked: the file exists, the camera app is
/// installed. The message is one line for the user.
pub fn preflight(spec: &SourceSpec) -> Result<(), String> {
    match spec {
        SourceSpec::File(path) => {
            // Opened and read, not only looked at: a file nalcast cannot read is as
            // much a mistake as a missing one, and its first bytes say whether it
            // is H.264 at all.
            let shown = path.display();
            match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => {
                    return Err(format!("source file {shown} is not a regular file"))
                }
                Err(e) => return Err(format!("cannot open source file {shown}: {e}")),
                Ok(_) => {}
            }
            let mut first = Vec::with_capacity(crate::sniff::SNIFF_BYTES);
            std::fs::File::open(path)
                .and_then(|f| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(f, crate::sniff::SNIFF_BYTES as u64),
                        &mut first,
                    )
                })
                .map_err(|e| format!("cannot read source file {shown}: {e}"))?;
            match crate::sniff::foreign(&first) {
                Some(format) => Err(format.advice(&format!("source file {shown}"))),
                None => Ok(()),
            }
        }
        SourceSpec::Rpicam => rpicam::find_camera_app().map(|_| ()),
        SourceSpec::V4l2(device) => v4l2::preflight(device),
        _ => Ok(()),
    }
}

/// Runs a source once, until it stops or `shutdown` turns true (then `Ok`). Child
/// processes are killed and reaped before this returns, so none outlives nalcast,
/// not even as a zombie.
async fn run_once(
    spec: &SourceSpec,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    shutdown: &watch::Receiver<bool>,
    learned: &mut Learned,
) -> Result<(), SourceError> {
    let mut stop = shutdown.clone();
    let ends = &mut learned.frame_ends;
    match spec {
        SourceSpec::Exec(cmd) => {
            if !learned.said_password_in_argv && mask_credentials(cmd) != *cmd {
                learned.said_password_in_argv = true;
                warn!(
                    "the exec: command holds a URL's password, which every user of this \
                     machine can read in its command line (ps): give it to the command \
                     through nalcast's environment instead (a script reading it from a \
                     variable, set in the service's EnvironmentFile), or, for an RTSP \
                     camera, use --source rtsp://, which nalcast reads itself"
                );
            }
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(cmd);
            exec::run_child(c, cmd, opts, hub, stop, ends).await
        }
        SourceSpec::Rpicam => learned.camera.run(opts, hub, stop, ends).await,
        SourceSpec::Test => until_shutdown(test_pattern::run(opts, hub), &mut stop).await,
        SourceSpec::File(path) => until_shutdown(file::run(path, opts, hub), &mut stop).await,
        SourceSpec::Stdin => until_shutdown(exec::run_stdin(opts, hub, ends), &mut stop).await,
        SourceSpec::Rtsp(url) => {
            until_shutdown(rtsp::run(url, opts.rtsp_transport, opts, hub), &mut stop).await
        }
        SourceSpec::V4l2(device) => v4l2::run(device, opts, hub, stop, ends).await,
    }
}

/// What a source's supervisor learns of it and keeps across its restarts.
#[derive(Default)]
struct Learned {
    /// What the camera app accepts, learnt at its first start.
    camera: rpicam::CameraApp,
    /// How a byte source's writer writes its frames.
    frame_ends: frame_end::FrameEnds,
    /// Whether the warning about a password on an `exec:` command line was given.
    said_password_in_argv: bool,
}

/// Runs an in-process source until it stops, or until shutdown (then `Ok`): these
/// hold nothing outside the process, so dropping them is all the stopping they need.
async fn until_shutdown(
    run: impl std::future::Future<Output = Result<(), SourceError>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SourceError> {
    tokio::select! {
        r = run => r,
        _ = shutdown_requested(stop) => Ok(()),
    }
}

/// Runs a source until `shutdown` turns true, restarting it with capped
/// exponential backoff whenever it stops. Viewers stay connected throughout.
pub async fn supervise(
    spec: SourceSpec,
    opts: SourceOptions,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retries = Retries::new(opts.backoff);
    let mut learned = Learned::default();
    loop {
        let started = Instant::now();
        info!(source = %spec, "starting source");
        hub.source_started(spec.keyframes_on_demand());
        let result = run_once(&spec, &opts, &hub, &shutdown, &mut learned).await;
        if *shutdown.borrow() {
            return;
        }
        retries.ended(started.elapsed());
        let (reason, last, backoff) = match result {
            Ok(()) => ("source ended".to_owned(), false, retries.next_delay()),
            Err(SourceError::Retry(r)) => (r, false, retries.next_delay()),
            Err(SourceError::Final(r)) => (r, true, Duration::ZERO),
            Err(SourceError::Refused(r)) => (r, false, retries.longest()),
        };
        SOURCE_RESTARTS.count_in(hub.stream_label()).increment(1);
        hub.source_lost(&reason, std::time::Instant::now());
        if last {
            warn!(source = %spec, "source stopped for good: {reason}");
            return;
        }
        warn!(source = %spec, retry_in_ms = backoff.as_millis() as u64, "source lost: {reason}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown_requested(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse_and_print() {
        for s in [
            "test",
            "file:/tmp/a.h264",
            "exec:ffmpeg -i x -f h264 -",
            "stdin",
            "rpicam",
            "usb",
            "v4l2:/dev/video0",
        ] {
            let spec: SourceSpec = s.parse().expect("valid spec");
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!("usb".parse::<SourceSpec>().expect("usb").kind(), "v4l2");
        for bad in [
            "", "camera", "file:", "exec:  ", "http://x", "v4l2:", "v4l2",
        ] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        for (given, masked) in [
            (
                "ffmpeg -i rtsp://admin:pass@cam/live -c copy -f h264 -",
                "ffmpeg -i rtsp://admin:***@cam/live -c copy -f h264 -",
            ),
            (
                "a 'rtsp://u:p@w@10.0.0.2:554/s' b",
                "a 'rtsp://u:***@10.0.0.2:554/s' b",
            ),
            (
                "srt://token@host:9000 and http://x:y@h",
                "srt://***@host:9000 and http://x:***@h",
            ),
            (
                "rtsp://cam/live and user:pass@host",
                "rtsp://cam/live and user:pass@host",
            ),
            ("no url at all", "no url at all"),
            ("ends with scheme://", "ends with scheme://"),
        ] {
            assert_eq!(mask_credentials(given), masked);
        }
        let spec: SourceSpec = "exec:ffmpeg -i rtsp://admin:pass@cam/x -f h264 -"
            .parse()
            .expect("spec");
        assert!(!spec.to_string().contains("pass@"), "{spec}");
        assert_eq!(spec.kind(), "exec");
    }

    #[test]
    fn rtsp_sources_parse_and_never_print_credentials() {
        let spec: SourceSpec = "rtsp://admin:p%40ss%25w0rd!@cam.lan:8554/live"
            .parse()
            .expect("valid spec");
        assert_eq!(spec.kind(), "rtsp");
        assert!(!spec.keyframes_on_demand());
        for shown in [spec.to_string(), format!("{spec:?}")] {
            assert!(shown.contains("***@cam.lan:8554/live"), "{shown}");
            assert!(
                !shown.contains("admin") && !shown.contains("p%40ss") && !shown.contains("p@ss"),
                "{shown}"
            );
        }
        let plain: SourceSpec = "rtsp://cam.lan/live".parse().expect("valid spec");
        assert_eq!(plain.to_string(), "rtsp://cam.lan/live");
        for bad in [
            "rtsps://admin:secret@cam/live",
            "rtsp://admin:secret@/live",
            "rtsp://admin:secret@[::1/live",
            "rtsp://admin:%FFsecret@cam/live",
        ] {
            let e = bad.parse::<SourceSpec>().expect_err(bad).to_string();
            assert!(e.starts_with("bad RTSP source"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let e = "rtspx://admin:secret@cam"
            .parse::<SourceSpec>()
            .expect_err("unknown")
            .to_string();
        assert!(
            e.starts_with("unknown source") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_fails_preflight_with_its_name() {
        let err = preflight(&SourceSpec::File("/nonexistent/x.h264".into())).unwrap_err();
        assert!(err.contains("/nonexistent/x.h264"), "{err}");
    }
}
