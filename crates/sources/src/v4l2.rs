//! USB webcams and other V4L2 capture devices (`--source v4l2:/dev/video0`,
//! `--source usb`), read by an ffmpeg child whose stdout feeds the hub like any byte
//! source's.
//!
//! A camera that makes H.264 itself (a Logitech C920 of the UVC H.264 kind) is
//! streamed as it comes (`-c:v copy`); one that sends MJPEG or raw frames (most
//! webcams, e.g. a C270) is encoded: on a Raspberry Pi 4 or earlier with the Pi's
//! hardware encoder (`h264_v4l2m2m`), elsewhere with libx264, else libopenh264.
//! The camera's formats and sizes come from `v4l2-ctl --list-formats-ext` where
//! v4l-utils is installed, else from `ffmpeg -list_formats`.
//!
//! Tools are found on `PATH` (`ffmpeg`, `v4l2-ctl`) and a device is any path, so
//! tests run fake tools against a file standing in for /dev/video0.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

use crate::frame_end::FrameEnds;
use crate::{exec, Orientation, SourceError, SourceOptions, VideoSettings};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::Hub;

mod choice;
mod listing;

pub use choice::{
    choose_encoder, choose_mode, classify, ffmpeg_args, pi_generation, Encoder, Failure, Machine,
    Mode,
};
pub use listing::{
    parse_ffmpeg_encoders, parse_ffmpeg_formats, parse_v4l2_ctl_devices, parse_v4l2_ctl_formats,
    Card, Coding, Encoders, Format, Fps, FrameSize, Rates,
};

/// Which camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// This device node (any path: tests use a plain file).
    Path(PathBuf),
    /// The first USB capture device with a format nalcast can use (`--source usb`).
    FirstUsb,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Path(p) => write!(f, "v4l2:{}", p.display()),
            Device::FirstUsb => write!(f, "usb"),
        }
    }
}

/// How long a listing tool may take before it is given up on (a wedged driver).
const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The line `--list-cameras` and `--source usb` give when there is no camera.
pub const NO_CAMERAS: &str = "no cameras found: no /dev/video* capture device";

/// A capture device and what it offers.
#[derive(Clone, Debug, PartialEq)]
pub struct Camera {
    /// Its device node.
    pub path: PathBuf,
    /// Its card name (`HD Pro Webcam C920`), if known.
    pub name: String,
    /// Where it is attached (`usb-0000:00:14.0-1`), if known.
    pub bus: String,
    /// Whether it is on USB; `None` when nothing says.
    pub usb: Option<bool>,
    /// Its video capture formats.
    pub formats: Vec<Format>,
}

/// The tools found on `PATH`.
struct Tools {
    ffmpeg: Option<PathBuf>,
    v4l2_ctl: Option<PathBuf>,
}

impl Tools {
    fn find() -> Tools {
        Tools {
            ffmpeg: find_on_path("ffmpeg"),
            v4l2_ctl: find_on_path("v4l2-ctl"),
        }
    }

    fn ffmpeg_for(&self, what: &str) -> Result<&Path, String> {
        self.ffmpeg.as_deref().ok_or_else(|| {
            format!(
                "{what} needs ffmpeg, which is not on the PATH: install it (apt install ffmpeg)"
            )
        })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a tool printed.
struct ToolOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs a listing tool to its end, or kills it after [`TOOL_TIMEOUT`].
fn run_tool(program: &Path, args: &[&str]) -> Result<ToolOutput, String> {
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // stderr on its own thread, so that a full stderr pipe cannot stall stdout.
        let errors = std::thread::spawn(move || read_all(stderr));
        let out = read_all(stdout);
        let err = errors.join().unwrap_or_default();
        let status = child.wait();
        let _ = done.send((status, out, err));
    });
    match finished.recv_timeout(TOOL_TIMEOUT) {
        Ok((status, stdout, stderr)) => Ok(ToolOutput {
            success: status.is_ok_and(|s| s.success()),
            stdout,
            stderr,
        }),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!(
                "{name} {} did not answer within {} s",
                args.join(" "),
                TOOL_TIMEOUT.as_secs()
            ))
        }
    }
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last non-empty line a tool printed, for an error message.
fn last_line(out: &ToolOutput) -> String {
    out.stderr
        .lines()
        .chain(out.stdout.lines())
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_owned()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// The video capture formats of `device`, from v4l2-ctl if it is installed, else ffmpeg.
fn formats_of(tools: &Tools, device: &Path) -> Result<Vec<Format>, String> {
    let shown = device.display();
    let path = device.to_string_lossy();
    if let Some(v4l2_ctl) = &tools.v4l2_ctl {
        let out = run_tool(v4l2_ctl, &["--list-formats-ext", "-d", &path])?;
        if !out.success {
            let said = lines(&format!("{}\n{}", out.stderr, out.stdout));
            return Err(match classify(&said) {
                Some(failure) => failure_message(failure, device),
                None => format!(
                    "v4l2-ctl cannot list the formats of {shown}: {}",
                    last_line(&out)
                ),
            });
        }
        return Ok(parse_v4l2_ctl_formats(&out.stdout));
    }
    let ffmpeg = tools.ffmpeg_for("listing a camera's formats")?;
    let out = run_tool(
        ffmpeg,
        &[
            "-hide_banner",
            "-nostdin",
            "-f",
            "v4l2",
            "-list_formats",
            "all",
            "-i",
            &path,
        ],
    )?;
    // ffmpeg lists on stderr and always exits with 1 ("Immediate exit requested").
    let formats = parse_ffmpeg_formats(&out.stderr);
    if formats.is_empty() {
        if let Some(failure) = classify(&lines(&out.stderr)) {
            return Err(failure_message(failure, device));
        }
    }
    Ok(formats)
}

/// `/dev/video*` in number order.
fn video_nodes() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, path)| path).collect()
}

/// Orders device paths by their name's text, then its trailing number (video2
/// before video10).
fn node_order(path: &Path) -> (String, u64) {
    let text = path.to_string_lossy();
    let digits = text.len() - text.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = text.split_at(text.len() - digits);
    (stem.to_owned(), number.parse().unwrap_or(0))
}

/// Every V4L2 device that captures video in some format, in device-number order.
/// `Err` with a line for the user when there is none.
fn cameras(tools: &Tools) -> Result<Vec<Camera>, String> {
    let mut cameras = Vec::new();
    if let Some(v4l2_ctl) = &tools.v4l2_ctl {
        // Exits with 1 when there is no device at all; its listing is what counts.
        let out = run_tool(v4l2_ctl, &["--list-devices"])?;
        for card in parse_v4l2_ctl_devices(&out.stdout) {
            for device in &card.devices {
                let path = PathBuf::from(device);
                let Ok(formats) = formats_of(tools, &path) else {
                    continue;
                };
                if formats.is_empty() {
                    continue;
                }
                cameras.push(Camera {
                    path,
                    name: card.name.clone(),
                    bus: card.bus.clone(),
                    usb: (!card.bus.is_empty()).then(|| card.is_usb()),
                    formats,
                });
            }
        }
    } else {
        let nodes = video_nodes();
        if nodes.is_empty() {
            return Err(NO_CAMERAS.into());
        }
        tools.ffmpeg_for("listing cameras (without v4l2-ctl, from v4l-utils)")?;
        for path in nodes {
            let Ok(formats) = formats_of(tools, &path) else {
                continue;
            };
            if formats.is_empty() {
                continue;
            }
            let sysfs = path
                .file_name()
                .map(|n| Path::new("/sys/class/video4linux").join(n));
            let name = sysfs
                .as_ref()
                .and_then(|dir| std::fs::read_to_string(dir.join("name")).ok())
                .map(|n| n.trim().to_owned())
                .unwrap_or_default();
            // The device's sysfs path runs through its USB port, if it has one.
            let usb = sysfs
                .and_then(|dir| std::fs::canonicalize(dir.join("device")).ok())
                .map(|real| real.to_string_lossy().contains("/usb"));
            cameras.push(Camera {
                path,
                name,
                bus: String::new(),
                usb,
                formats,
            });
        }
    }
    if cameras.is_empty() {
        return Err(no_cameras_reason());
    }
    cameras.sort_by_key(|c| node_order(&c.path));
    Ok(cameras)
}

/// Why no camera was listed: none there, or one nalcast may not open.
fn no_cameras_reason() -> String {
    let nodes = video_nodes();
    for node in &nodes {
        if let Err(e) = open_device(node) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return format!("no cameras found: {}", permission_denied(node));
            }
        }
    }
    match nodes.len() {
        0 => NO_CAMERAS.into(),
        n => format!(
            "no cameras found: none of the {n} /dev/video* devices captures video (codec or metadata nodes only)"
        ),
    }
}

/// The camera `--source usb` takes among `cameras`: the first on USB (or where
/// nothing says) with a format nalcast can use.
fn first_usb<'a>(cameras: &'a [Camera], want: &VideoSettings) -> Option<&'a Camera> {
    cameras
        .iter()
        .find(|c| c.usb != Some(false) && choose_mode(&c.formats, want).is_some())
}

/// Opens the device as ffmpeg will (read-write), without blocking on it.
fn open_device(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// Checks that the device is there and may be opened; one line for the user if not.
fn check_device(path: &Path) -> Result<(), String> {
    let Err(e) = open_device(path) else {
        return Ok(());
    };
    let failure = match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::NotFound, _) => Some(Failure::Missing),
        (std::io::ErrorKind::PermissionDenied, _) => Some(Failure::PermissionDenied),
        (_, Some(nix::libc::EBUSY)) => Some(Failure::Busy),
        (_, Some(nix::libc::ENODEV | nix::libc::ENXIO)) => Some(Failure::Gone),
        _ => None,
    };
    Err(match failure {
        Some(failure) => failure_message(failure, path),
        None => format!("cannot open camera {}: {e}", path.display()),
    })
}

/// The line for the user about `failure` of the camera at `path`.
pub fn failure_message(failure: Failure, path: &Path) -> String {
    let p = path.display();
    match failure {
        Failure::Busy => format!(
            "camera {p} is busy: another program is using it (close it; `fuser -v {p}` names it)"
        ),
        Failure::PermissionDenied => permission_denied(path),
        Failure::Missing => format!(
            "camera {p} not found: no such device (is it plugged in? `nalcast --list-cameras` lists the cameras)"
        ),
        Failure::Gone => format!("camera {p} went away (unplugged?)"),
        Failure::NotV4l2 => format!(
            "{p} is not a V4L2 camera (`nalcast --list-cameras` lists the cameras)"
        ),
        Failure::NotCapture => format!(
            "{p} captures no video: it is a codec or metadata node (`nalcast --list-cameras` lists the cameras)"
        ),
    }
}

/// Permission denied on `path`: names the group that owns it when the user is not
/// in it (the usual case: cameras belong to the group video).
fn permission_denied(path: &Path) -> String {
    use nix::unistd::{getegid, geteuid, getgroups, Gid, Group, User};
    use std::os::unix::fs::MetadataExt;
    let p = path.display();
    let uid = geteuid();
    let user = User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let owner = std::fs::metadata(path).ok().map(|m| Gid::from_raw(m.gid()));
    let member =
        |gid: Gid| gid == getegid() || getgroups().is_ok_and(|groups| groups.contains(&gid));
    match owner {
        Some(gid) if !member(gid) => {
            let group = Group::from_gid(gid)
                .ok()
                .flatten()
                .map_or_else(|| gid.to_string(), |g| g.name);
            format!(
                "no permission to open camera {p}: user {user} is not in the group {group} (sudo usermod -aG {group} {user}, then log in again)"
            )
        }
        _ => {
            format!("no permission to open camera {p} (user {user}; check its mode with ls -l {p})")
        }
    }
}

/// The Pi model and its encoder node, for the encoder choice.
fn machine() -> Machine {
    let model = [
        "/proc/device-tree/model",
        "/sys/firmware/devicetree/base/model",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|m| m.trim_end_matches('\0').trim().to_owned());
    Machine {
        model,
        encoder_node: Path::new("/dev/video11").exists(),
    }
}

fn encoders(ffmpeg: &Path) -> Result<Encoders, String> {
    let out = run_tool(ffmpeg, &["-hide_banner", "-encoders"])?;
    Ok(parse_ffmpeg_encoders(&out.stdout))
}

/// How one run reads the camera.
struct Plan {
    ffmpeg: PathBuf,
    device: PathBuf,
    mode: Mode,
    encoder: Encoder,
    args: Vec<String>,
}

/// `H264 1280x720 at 30 fps, copied`.
fn describe(mode: &Mode, encoder: &str) -> String {
    format!(
        "{} {}x{} at {} fps, {encoder}",
        mode.name,
        mode.width,
        mode.height,
        Fps(mode.fps)
    )
}

/// The line when a camera has no format nalcast takes.
fn no_usable_format(path: &Path, formats: &[Format]) -> String {
    let offered: Vec<&str> = formats.iter().map(|f| f.name.as_str()).collect();
    let offered = if offered.is_empty() {
        "nothing".to_owned()
    } else {
        offered.join(", ")
    };
    format!(
        "camera {} offers no format nalcast can use (H.264, MJPEG or raw YUV); it offers {offered}",
        path.display()
    )
}

/// Finds the camera, picks its mode and the encoder, and builds ffmpeg's command
/// line. Every error is one line for the user.
fn plan(device: &Device, want: &VideoSettings, turn: Orientation) -> Result<Plan, String> {
    let tools = Tools::find();
    let ffmpeg = tools
        .ffmpeg_for(&format!("--source {device}"))?
        .to_path_buf();
    let (path, formats) = match device {
        Device::Path(path) => {
            check_device(path)?;
            (path.clone(), formats_of(&tools, path)?)
        }
        Device::FirstUsb => {
            let cameras = cameras(&tools)?;
            let camera = first_usb(&cameras, want).ok_or_else(|| {
                format!(
                    "no USB camera found: {} capture device(s), none on USB with H.264, MJPEG or raw video (`nalcast --list-cameras` lists them; choose one with --source v4l2:DEVICE)",
                    cameras.len()
                )
            })?;
            check_device(&camera.path)?;
            (camera.path.clone(), camera.formats.clone())
        }
    };
    let mode = choose_mode(&formats, want).ok_or_else(|| no_usable_format(&path, &formats))?;
    // A camera's own H.264 is sent as it is, unless it is to be turned: then it is
    // decoded and encoded again, which costs what an MJPEG camera costs.
    let encoder = if mode.coding == Coding::H264 && turn.is_identity() {
        Encoder::Copy
    } else {
        choose_encoder(&machine(), &encoders(&ffmpeg)?)
            .map_err(|e| format!("camera {} sends {}: {e}", path.display(), mode.name))?
    };
    let args = ffmpeg_args(&path.to_string_lossy(), &mode, encoder, want, turn);
    Ok(Plan {
        ffmpeg,
        device: path,
        mode,
        encoder,
        args,
    })
}

/// Checks before start-up what can be checked: ffmpeg is installed, the camera is
/// there and may be opened, it offers a format nalcast can use, and an encoder is
/// at hand if that format is not H.264. A busy camera is found only when ffmpeg
/// starts reading it; the supervisor then retries.
pub fn preflight(device: &Device) -> Result<(), String> {
    // The format chosen depends on the size asked for, but whether there is one
    // and whether it needs an encoder do not.
    plan(device, &VideoSettings::default(), Orientation::default()).map(|_| ())
}

/// Runs the camera once through ffmpeg, until it stops or `shutdown` turns true.
pub async fn run(
    device: &Device,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
    ends: &mut FrameEnds,
) -> Result<(), SourceError> {
    let (d, want, turn) = (device.clone(), opts.video, opts.orientation);
    let planning = tokio::task::spawn_blocking(move || plan(&d, &want, turn));
    let plan = tokio::select! {
        planned = planning => planned
            .map_err(|e| SourceError::Retry(format!("the camera check failed: {e}")))?
            .map_err(SourceError::Retry)?,
        _ = shutdown_requested(&mut shutdown) => return Ok(()),
    };
    info!(
        camera = %plan.device.display(),
        "{}",
        describe(&plan.mode, &plan.encoder.to_string())
    );
    let description = format!("{} {}", plan.ffmpeg.display(), plan.args.join(" "));
    let mut command = tokio::process::Command::new(&plan.ffmpeg);
    command.args(&plan.args);
    let path = plan.device;
    let explain = move |lines: &[String]| classify(lines).map(|f| failure_message(f, &path));
    exec::run_child_explained(command, &description, opts, hub, shutdown, ends, &explain).await
}

/// `--list-cameras`: every capture device with its formats and sizes, and what
/// nalcast would stream from it with `want`. `Err` is one line for the user, as
/// when there is no camera ([`NO_CAMERAS`]).
pub fn list_cameras(want: &VideoSettings) -> Result<String, String> {
    use std::fmt::Write;
    let tools = Tools::find();
    let cameras = cameras(&tools)?;
    // Asked once, and only if a camera needs an encoder.
    let mut encoder: Option<Result<Encoder, String>> = None;
    let mut encoder_for = || {
        encoder
            .get_or_insert_with(|| {
                let ffmpeg = tools.ffmpeg_for("encoding to H.264")?;
                choose_encoder(&machine(), &encoders(ffmpeg)?)
            })
            .clone()
    };
    let usb = first_usb(&cameras, want).map(|c| c.path.clone());
    let mut text = String::new();
    for camera in &cameras {
        let _ = write!(text, "{}", camera.path.display());
        match (camera.name.is_empty(), camera.bus.is_empty()) {
            (false, false) => {
                let _ = write!(text, ": {} ({})", camera.name, camera.bus);
            }
            (false, true) => {
                let _ = write!(text, ": {}", camera.name);
            }
            _ => {}
        }
        if usb.as_ref() == Some(&camera.path) {
            text.push_str("  [--source usb]");
        }
        text.push('\n');
        for format in &camera.formats {
            let sizes: Vec<String> = format.sizes.iter().map(ToString::to_string).collect();
            let _ = write!(
                text,
                "  {} ({}): {}",
                format.name,
                format.description,
                sizes.join(" ")
            );
            if format.coding == Coding::Other {
                text.push_str("  (not used by nalcast)");
            }
            text.push('\n');
        }
        let wanted = format!(
            "--width {} --height {} --fps {}",
            want.width, want.height, want.fps
        );
        let line = match choose_mode(&camera.formats, want) {
            None => "no format nalcast can use".to_owned(),
            Some(mode) if mode.coding == Coding::H264 => {
                describe(&mode, &Encoder::Copy.to_string())
            }
            Some(mode) => match encoder_for() {
                Ok(encoder) => describe(&mode, &encoder.to_string()),
                Err(e) => describe(&mode, &format!("to be encoded, but {e}")),
            },
        };
        let _ = writeln!(text, "  nalcast takes (with {wanted}): {line}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(path: &str, usb: Option<bool>, formats: &str) -> Camera {
        Camera {
            path: PathBuf::from(path),
            name: String::new(),
            bus: String::new(),
            usb,
            formats: parse_v4l2_ctl_formats(formats),
        }
    }

    #[test]
    fn usb_takes_the_first_usable_usb_camera() {
        let usable = listing::tests_data::C270;
        let unusable = "\tType: Video Capture\n\t[0]: 'GRBG' (8-bit Bayer GRGR/BGBG)\n\t\tSize: Discrete 640x480\n";
        let cameras = [
            camera("/dev/video0", Some(false), usable),
            camera("/dev/video2", Some(true), unusable),
            camera("/dev/video4", Some(true), usable),
            camera("/dev/video6", None, usable),
        ];
        let want = VideoSettings::default();
        assert_eq!(
            first_usb(&cameras, &want).map(|c| c.path.clone()),
            Some(PathBuf::from("/dev/video4"))
        );
        assert_eq!(
            first_usb(&cameras[3..], &want).map(|c| c.path.clone()),
            Some(PathBuf::from("/dev/video6")),
            "a camera whose bus is unknown may be the one"
        );
        assert!(first_usb(&cameras[..2], &want).is_none());
    }

    #[test]
    fn device_nodes_sort_by_number() {
        let mut paths = ["/dev/video10", "/dev/video2", "/dev/video0"].map(PathBuf::from);
        paths.sort_by_key(|p| node_order(p));
        assert_eq!(
            paths.map(|p| p.display().to_string()),
            ["/dev/video0", "/dev/video2", "/dev/video10"]
        );
    }

    #[test]
    fn a_missing_device_is_one_line_naming_it() {
        let err = check_device(Path::new("/nonexistent/video0")).unwrap_err();
        assert!(
            err.starts_with("camera /nonexistent/video0 not found"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_camera_without_usable_formats_says_what_it_offers() {
        let formats = parse_v4l2_ctl_formats(
            "\tType: Video Capture\n\t[0]: 'GRBG' (8-bit Bayer)\n\t\tSize: Discrete 640x480\n",
        );
        let line = no_usable_format(Path::new("/dev/video0"), &formats);
        assert!(line.ends_with("it offers GRBG"), "{line}");
    }
}
