//! The Raspberry Pi camera apps: which one exists and the flags that make it stream
//! Baseline H.264 with inline SPS/PPS, low latency, no preview, forever, to stdout.
use std::path::{Path, PathBuf};

use super::VideoSettings;

/// Camera apps in order of preference (newest first).
pub const CAMERA_APPS: [&str; 3] = ["rpicam-vid", "libcamera-vid", "raspivid"];

/// Finds the first camera app on `PATH`.
pub fn find_camera_app() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for app in CAMERA_APPS {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(app);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no Raspberry Pi camera app found: looked for {} on PATH (install rpicam-apps, or use --source exec:COMMAND)",
        CAMERA_APPS.join(", ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command-line arguments for `app` (judged by its file name).
pub fn camera_args(app: &Path, v: &VideoSettings) -> Vec<String> {
    let name = app.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (w, h, fps, b, g) = (
        v.width.to_string(),
        v.height.to_string(),
        v.fps.to_string(),
        v.bitrate.to_string(),
        v.keyframe_interval.to_string(),
    );
    let args: Vec<&str> = if name == "raspivid" {
        vec![
            "-t", "0", "-n", "-pf", "baseline", "-ih", "-w", &w, "-h", &h, "-fps", &fps, "-b", &b,
            "-g", &g, "-o", "-",
        ]
    } else {
        vec![
            "-t",
            "0",
            "-n",
            "--codec",
            "h264",
            "--profile",
            "baseline",
            "--inline",
            "--low-latency",
            "--width",
            &w,
            "--height",
            &h,
            "--framerate",
            &fps,
            "--bitrate",
            &b,
            "--intra",
            &g,
            "-o",
            "-",
        ]
    };
    args.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpicam_vid_gets_baseline_inline_low_latency_flags() {
        let args = camera_args(Path::new("/usr/bin/rpicam-vid"), &VideoSettings::default());
        let line = args.join(" ");
        for flag in [
            "-t 0",
            "-n",
            "--codec h264",
            "--profile baseline",
            "--inline",
            "--low-latency",
            "--width 1280",
            "--height 720",
            "--framerate 30",
            "--bitrate 3000000",
            "--intra 60",
            "-o -",
        ] {
            assert!(line.contains(flag), "{flag} missing in {line}");
        }
    }

    #[test]
    fn raspivid_gets_its_own_flag_names() {
        let line =
            camera_args(Path::new("/opt/vc/bin/raspivid"), &VideoSettings::default()).join(" ");
        assert!(
            line.contains("-pf baseline -ih -w 1280 -h 720 -fps 30"),
            "{line}"
        );
    }
}
