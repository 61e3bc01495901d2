//! Decisions about a camera, made from plain facts (pure): which of its formats,
//! size and rate to take, which H.264 encoder to use when it has no H.264, the
//! ffmpeg command line, and what ffmpeg's complaints mean.
use std::fmt;

use super::listing::{Coding, Encoders, Format, Fps};
use crate::{Orientation, VideoSettings};

/// The camera mode nalcast asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Mode {
    /// The format's name as the camera lists it (`H264`, `MJPG`, `yuyv422`).
    pub name: String,
    /// How it is coded.
    pub coding: Coding,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
}

/// Picks the camera mode for `want`: the best-ranked coding first (H.264, which
/// needs no encoding, then MJPEG, then raw), then within it the size nearest the
/// wanted one, preferring sizes that offer the wanted rate. `None` when the camera
/// offers nothing nalcast can use.
pub fn choose_mode(formats: &[Format], want: &VideoSettings) -> Option<Mode> {
    let wanted = (want.width, want.height);
    let fps = f64::from(want.fps);
    let mut best: Option<((u8, u64, bool), Mode)> = None;
    for format in formats {
        let Some(rank) = format.coding.rank() else {
            continue;
        };
        for size in &format.sizes {
            let (width, height) = size.closest(wanted);
            let distance =
                u64::from(width.abs_diff(wanted.0)) + u64::from(height.abs_diff(wanted.1));
            let key = (rank, distance, !size.rates().offers(fps));
            if best.as_ref().is_some_and(|(k, _)| *k <= key) {
                continue;
            }
            best = Some((
                key,
                Mode {
                    name: format.name.clone(),
                    coding: format.coding.clone(),
                    width,
                    height,
                    fps: size.rates().nearest(fps),
                },
            ));
        }
        // A format listed without sizes (some drivers) is taken at the wanted size.
        if format.sizes.is_empty() && best.as_ref().is_none_or(|(k, _)| k.0 > rank) {
            best = Some((
                (rank, 0, false),
                Mode {
                    name: format.name.clone(),
                    coding: format.coding.clone(),
                    width: want.width,
                    height: want.height,
                    fps,
                },
            ));
        }
    }
    best.map(|(_, mode)| mode)
}

/// How the camera's pictures become H.264.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// The camera's H.264, copied.
    Copy,
    /// The Raspberry Pi's hardware encoder (Pi 4 and earlier), `h264_v4l2m2m`.
    V4l2m2m,
    /// x264 in software.
    X264,
    /// OpenH264 in software.
    OpenH264,
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoder::Copy => "copied",
            Encoder::V4l2m2m => "encoded with h264_v4l2m2m (the Pi's hardware encoder)",
            Encoder::X264 => "encoded with libx264",
            Encoder::OpenH264 => "encoded with libopenh264",
        })
    }
}

/// What is known about the machine, for the encoder choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// The device-tree model (`Raspberry Pi 4 Model B Rev 1.4`), if any.
    pub model: Option<String>,
    /// Whether the Pi's encoder node (/dev/video11, bcm2835-codec-encode) exists.
    pub encoder_node: bool,
}

impl Machine {
    /// Whether this is a Raspberry Pi with the hardware H.264 encoder (a Pi 4 or
    /// earlier: the Pi 5 has none).
    pub fn has_pi_encoder(&self) -> bool {
        self.encoder_node
            && self
                .model
                .as_deref()
                .and_then(pi_generation)
                .is_some_and(|generation| generation <= 4)
    }
}

/// The Raspberry Pi generation a device-tree model names: `Raspberry Pi 4 Model B`
/// and `Raspberry Pi 400` are 4, `Raspberry Pi Compute Module 3 Plus` is 3,
/// `Raspberry Pi Zero 2 W` is 2 (its chip is a Pi 3's, with the encoder), `Raspberry
/// Pi Model B Plus` and `Raspberry Pi Zero W` are 1, `Raspberry Pi 5` and `500` are 5.
/// `None` for anything else.
pub fn pi_generation(model: &str) -> Option<u32> {
    let rest = model.trim().trim_end_matches('\0');
    let rest = rest.strip_prefix("Raspberry Pi")?;
    // "Rev 1.2" numbers the board revision, not the generation.
    let rest = rest.split(" Rev ").next().unwrap_or(rest);
    let generation = rest
        .split_whitespace()
        .find_map(|word| word.chars().next().filter(char::is_ascii_digit))
        .and_then(|digit| digit.to_digit(10));
    Some(generation.unwrap_or(1))
}

/// The encoder for a camera without H.264: the Pi's hardware encoder where there is
/// one and ffmpeg can drive it, else x264, else OpenH264.
pub fn choose_encoder(machine: &Machine, encoders: &Encoders) -> Result<Encoder, String> {
    if machine.has_pi_encoder() && encoders.h264_v4l2m2m {
        Ok(Encoder::V4l2m2m)
    } else if encoders.libx264 {
        Ok(Encoder::X264)
    } else if encoders.libopenh264 {
        Ok(Encoder::OpenH264)
    } else {
        Err("this ffmpeg has no H.264 encoder nalcast can use (libx264 or libopenh264; h264_v4l2m2m on a Raspberry Pi 4 or earlier): install Debian's or Raspberry Pi OS's ffmpeg (apt install ffmpeg)".into())
    }
}

/// ffmpeg's arguments to read `device` in `mode` and write Annex-B H.264 to stdout.
pub fn ffmpeg_args(
    device: &str,
    mode: &Mode,
    encoder: Encoder,
    v: &VideoSettings,
    turn: Orientation,
) -> Vec<String> {
    let mut args: Vec<String> = crate::FFMPEG_QUIET.map(str::to_owned).to_vec();
    args.extend(
        [
            "-f",
            "v4l2",
            "-input_format",
            mode.coding.input_format().unwrap_or("h264"),
            "-video_size",
            &format!("{}x{}", mode.width, mode.height),
            "-framerate",
            &Fps(mode.fps).to_string(),
            "-i",
            device,
            "-an",
        ]
        .into_iter()
        .map(str::to_owned),
    );
    let (bitrate, gop) = (v.bitrate.to_string(), v.keyframe_interval.to_string());
    let encode: Vec<&str> = match encoder {
        // Annex-B already (UVC H.264 is a byte stream): no bitstream filter, and the
        // hub puts the SPS and PPS in force before every keyframe itself, whether
        // the camera repeats them or not.
        Encoder::Copy => vec!["-c:v", "copy"],
        // ffmpeg 5.1 does not take `-profile:v baseline` for this encoder ("Unable
        // to parse option value"): 66 is Baseline, as rpicam-vid asks of the same
        // encoder. It requires yuv420p input and makes no B-frames.
        Encoder::V4l2m2m => vec![
            "-c:v",
            "h264_v4l2m2m",
            "-pix_fmt",
            "yuv420p",
            "-profile:v",
            "66",
            "-b:v",
            &bitrate,
            "-g",
            &gop,
            "-bf",
            "0",
        ],
        // Baseline needs 4:2:0; an MJPEG camera's pictures are usually 4:2:2.
        Encoder::X264 => vec![
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop,
            "-b:v",
            &bitrate,
            "-bf",
            "0",
        ],
        // OpenH264 makes Constrained Baseline by default.
        Encoder::OpenH264 => vec![
            "-c:v",
            "libopenh264",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop,
            "-b:v",
            &bitrate,
        ],
    };
    if encoder != Encoder::Copy {
        if let Some(filter) = turn.ffmpeg_filter() {
            args.extend(["-vf".to_owned(), filter]);
        }
    }
    args.extend(encode.into_iter().map(str::to_owned));
    // Each access unit out as soon as it is made, not when a buffer fills.
    args.extend(["-flush_packets", "1", "-f", "h264", "-"].map(str::to_owned));
    args
}

/// What went wrong with a camera, read from what ffmpeg or v4l2-ctl said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Another program streams from it (EBUSY).
    Busy,
    /// No permission to open it (EACCES).
    PermissionDenied,
    /// No such file (ENOENT).
    Missing,
    /// The device went away (ENODEV: unplugged while streaming).
    Gone,
    /// Not a V4L2 device at all (ENOTTY on its first ioctl).
    NotV4l2,
    /// A V4L2 device that captures no video (an encoder, a metadata node).
    NotCapture,
}

/// The failure named in `lines` (a tool's last stderr lines), if any is recognised.
pub fn classify(lines: &[String]) -> Option<Failure> {
    let said = |needle: &str| lines.iter().any(|l| l.contains(needle));
    [
        ("Device or resource busy", Failure::Busy),
        ("Permission denied", Failure::PermissionDenied),
        ("No such file or directory", Failure::Missing),
        ("No such device", Failure::Gone),
        ("Inappropriate ioctl for device", Failure::NotV4l2),
        ("Not a video capture device", Failure::NotCapture),
    ]
    .into_iter()
    .find_map(|(needle, failure)| said(needle).then_some(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4l2::listing::{parse_v4l2_ctl_formats, tests_data};

    fn settings(width: u32, height: u32, fps: u32) -> VideoSettings {
        VideoSettings {
            width,
            height,
            fps,
            ..VideoSettings::default()
        }
    }

    const PI4: &str = "Raspberry Pi 4 Model B Rev 1.4";

    fn pi4() -> Machine {
        Machine {
            model: Some(PI4.into()),
            encoder_node: true,
        }
    }

    /// Debian's ffmpeg on a PC lists h264_v4l2m2m too.
    const DEBIAN_FFMPEG: Encoders = Encoders {
        libx264: true,
        libopenh264: false,
        h264_v4l2m2m: true,
    };

    #[test]
    fn an_h264_camera_is_copied_at_the_wanted_size() {
        let formats = parse_v4l2_ctl_formats(tests_data::C920);
        let mode = choose_mode(&formats, &settings(1280, 720, 30)).expect("a mode");
        assert_eq!(
            (mode.name.as_str(), mode.width, mode.height, mode.fps),
            ("H264", 1280, 720, 30.0)
        );
        let args = ffmpeg_args(
            "/dev/video0",
            &mode,
            Encoder::Copy,
            &VideoSettings::default(),
            Orientation::default(),
        );
        let line = args.join(" ");
        assert!(
            line.contains(
                "-f v4l2 -input_format h264 -video_size 1280x720 -framerate 30 -i /dev/video0"
            ),
            "{line}"
        );
        assert!(
            line.ends_with("-c:v copy -flush_packets 1 -f h264 -"),
            "{line}"
        );
    }

    #[test]
    fn an_mjpeg_camera_on_a_pi_4_uses_the_hardware_encoder() {
        let formats = parse_v4l2_ctl_formats(tests_data::C270);
        let mode = choose_mode(&formats, &settings(1280, 720, 30)).expect("a mode");
        // YUYV has 1280x720 too, but only at 7.5 fps over USB 2: MJPEG first.
        assert_eq!(
            (mode.name.as_str(), mode.width, mode.fps),
            ("MJPG", 1280, 30.0)
        );
        let encoder = choose_encoder(&pi4(), &DEBIAN_FFMPEG).expect("an encoder");
        assert_eq!(encoder, Encoder::V4l2m2m);
        let v = VideoSettings::default();
        let line = ffmpeg_args("/dev/video0", &mode, encoder, &v, Orientation::default()).join(" ");
        assert!(
            line.contains("-input_format mjpeg -video_size 1280x720"),
            "{line}"
        );
        assert!(
            line.contains(
                "-c:v h264_v4l2m2m -pix_fmt yuv420p -profile:v 66 -b:v 3000000 -g 60 -bf 0"
            ),
            "{line}"
        );
    }

    #[test]
    fn an_mjpeg_camera_on_a_pc_or_a_pi_5_uses_x264() {
        let formats = parse_v4l2_ctl_formats(tests_data::C270);
        let mode = choose_mode(&formats, &settings(640, 480, 30)).expect("a mode");
        let pc = Machine::default();
        let pi5 = Machine {
            model: Some("Raspberry Pi 5 Model B Rev 1.0".into()),
            encoder_node: false,
        };
        let pi4_without_node = Machine {
            encoder_node: false,
            ..pi4()
        };
        for machine in [pc, pi5, pi4_without_node] {
            assert_eq!(
                choose_encoder(&machine, &DEBIAN_FFMPEG),
                Ok(Encoder::X264),
                "{machine:?}"
            );
        }
        let v = VideoSettings {
            bitrate: 800_000,
            keyframe_interval: 30,
            ..VideoSettings::default()
        };
        let line = ffmpeg_args(
            "/dev/video2",
            &mode,
            Encoder::X264,
            &v,
            Orientation::default(),
        )
        .join(" ");
        assert!(
            line.contains("-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p -g 30 -b:v 800000 -bf 0"),
            "{line}"
        );
        // A Pi 4 whose ffmpeg lacks h264_v4l2m2m falls back to software.
        let no_m2m = Encoders {
            h264_v4l2m2m: false,
            ..DEBIAN_FFMPEG
        };
        assert_eq!(choose_encoder(&pi4(), &no_m2m), Ok(Encoder::X264));
    }

    #[test]
    fn a_turned_picture_is_filtered_before_the_encoder() {
        let mode = Mode {
            coding: Coding::Mjpeg,
            name: "MJPG".into(),
            width: 640,
            height: 480,
            fps: 30.0,
        };
        let v = settings(640, 480, 30);
        let turned = |rotation, hflip, vflip| {
            let turn = Orientation {
                rotation,
                hflip,
                vflip,
            };
            ffmpeg_args("/dev/video0", &mode, Encoder::X264, &v, turn).join(" ")
        };
        assert!(!turned(0, false, false).contains("-vf"));
        assert!(turned(90, false, false).contains("-vf transpose=clock -c:v libx264"));
        assert!(turned(180, false, false).contains("-vf hflip,vflip "));
        assert!(turned(270, true, false).contains("-vf transpose=cclock,hflip "));
        assert!(turned(0, false, true).contains("-vf vflip "));
    }

    #[test]
    fn openh264_is_the_last_resort_and_none_is_an_error() {
        let only_openh264 = Encoders {
            libopenh264: true,
            ..Encoders::default()
        };
        assert_eq!(
            choose_encoder(&Machine::default(), &only_openh264),
            Ok(Encoder::OpenH264)
        );
        let err = choose_encoder(&Machine::default(), &Encoders::default()).unwrap_err();
        assert!(err.contains("apt install ffmpeg"), "{err}");
    }

    #[test]
    fn raw_is_taken_when_nothing_else_is_offered() {
        let text = "\tType: Video Capture\n\t[0]: 'YUYV' (YUYV 4:2:2)\n\t\tSize: Discrete 640x480\n\t\t\tInterval: Discrete 0.033s (30.000 fps)\n\t\tSize: Discrete 1280x720\n\t\t\tInterval: Discrete 0.133s (7.500 fps)\n";
        let formats = parse_v4l2_ctl_formats(text);
        // The wanted size wins over the wanted rate: the rate is the camera's best.
        let mode = choose_mode(&formats, &settings(1280, 720, 30)).expect("a mode");
        assert_eq!((mode.width, mode.fps), (1280, 7.5));
        assert_eq!(mode.coding.input_format(), Some("yuyv422"));
        // A size it lacks: the nearest.
        let mode = choose_mode(&formats, &settings(800, 600, 30)).expect("a mode");
        assert_eq!((mode.width, mode.height, mode.fps), (640, 480, 30.0));
        assert_eq!(choose_mode(&[], &VideoSettings::default()), None);
    }

    #[test]
    fn h264_is_preferred_even_at_another_size() {
        let text = "\tType: Video Capture\n\t[0]: 'MJPG' (Motion-JPEG, compressed)\n\t\tSize: Discrete 1280x720\n\t[1]: 'H264' (H.264, compressed)\n\t\tSize: Discrete 1920x1080\n";
        let mode =
            choose_mode(&parse_v4l2_ctl_formats(text), &settings(1280, 720, 30)).expect("a mode");
        assert_eq!((mode.name.as_str(), mode.width), ("H264", 1920));
    }

    #[test]
    fn pi_generations_come_from_the_model() {
        for (model, generation) in [
            ("Raspberry Pi 4 Model B Rev 1.4\0", Some(4)),
            ("Raspberry Pi 400 Rev 1.0", Some(4)),
            ("Raspberry Pi Compute Module 4 Rev 1.0", Some(4)),
            ("Raspberry Pi 3 Model B Plus Rev 1.3", Some(3)),
            ("Raspberry Pi Compute Module 3 Plus Rev 1.0", Some(3)),
            ("Raspberry Pi Zero 2 W Rev 1.0", Some(2)),
            ("Raspberry Pi Zero W Rev 1.1", Some(1)),
            ("Raspberry Pi Model B Rev 2", Some(1)),
            ("Raspberry Pi 5 Model B Rev 1.0", Some(5)),
            ("Raspberry Pi 500 Rev 1.0", Some(5)),
            ("Raspberry Pi Compute Module 5 Rev 1.0", Some(5)),
            ("Pine64 RockPro64 v2.1", None),
            ("", None),
        ] {
            assert_eq!(pi_generation(model), generation, "{model}");
        }
        let pi5 = Machine {
            model: Some("Raspberry Pi 5 Model B Rev 1.0".into()),
            encoder_node: true,
        };
        assert!(!pi5.has_pi_encoder() && pi4().has_pi_encoder());
    }

    #[test]
    fn ffmpeg_complaints_are_classified() {
        let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
        for (said, failure) in [
            (
                "[video4linux2,v4l2 @ 0x5581] ioctl(VIDIOC_S_FMT): Device or resource busy\n/dev/video0: Device or resource busy",
                Some(Failure::Busy),
            ),
            (
                "[video4linux2,v4l2 @ 0x5581] Cannot open video device /dev/video0: Permission denied",
                Some(Failure::PermissionDenied),
            ),
            (
                "[video4linux2,v4l2 @ 0x5581] Cannot open video device /dev/video7: No such file or directory",
                Some(Failure::Missing),
            ),
            (
                "[video4linux2,v4l2 @ 0x5581] ioctl(VIDIOC_DQBUF): No such device",
                Some(Failure::Gone),
            ),
            (
                "[video4linux2,v4l2 @ 0x5581] ioctl(VIDIOC_QUERYCAP): Inappropriate ioctl for device",
                Some(Failure::NotV4l2),
            ),
            ("[video4linux2,v4l2 @ 0x5581] Not a video capture device.", Some(Failure::NotCapture)),
            ("Conversion failed!", None),
        ] {
            assert_eq!(classify(&lines(said)), failure, "{said}");
        }
    }
}
