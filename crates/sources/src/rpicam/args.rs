//! The camera app's command line: H.264 on stdout, forever, no preview, with the
//! options the installed version has.
//!
//! Where the options come from (raspberrypi/rpicam-apps, `core/options.cpp` and
//! `core/video_options.hpp`; the apps were libcamera-apps and `libcamera-vid`
//! until v1.4.0 (2023-11, commit 0ca9f41), which kept `libcamera-*` symlinks
//! until v1.8.0 (2025-07, commit 057add6)):
//! - `--timeout/-t`, `--nopreview/-n`, `--output/-o`, `--width`, `--height`,
//!   `--framerate`, `--flush` (fflush after every write to stdout: without it a
//!   pipe's stdio buffer holds back whole frames) are in the first commit
//!   (2021-01); `--denoise` since 2021-02 (0d9ed30); `--bitrate/-b`, `--profile`,
//!   `--level`, `--intra/-g`, `--inline`, `--codec` are in the video options as
//!   reorganised in 2021-07 (56ae02a). Raspberry Pi OS Bullseye's first
//!   libcamera-vid (2021-11) has every one of them.
//! - `--low-latency` arrived in v1.6.0 (2025-01, commit 6287bff "libav: Add a
//!   low latency encode option"), and until v1.8.1 only in builds with libav
//!   (`#if LIBAV_PRESENT`). It switches libx264 to `preset=ultrafast,
//!   tune=zerolatency` with slice threads instead of frame threads and one
//!   B-frame: it matters only where libav encodes (a Pi 5), and every older app
//!   exits on it ("unrecognised option '--low-latency'").
//!
//! raspivid (raspberrypi/userland, `host_applications/linux/apps/raspicam/`) has
//! its own abbreviations: `-ih` inline headers (2013), `-fl` flush (2015-08,
//! d2b1326), `-lev` level (2016-06, 8daf8dd), `-pf`, `-g`, `-fps`, `-w`, `-h`,
//! `-b`, `-n`, `-t`, `-o`; no denoise option.
use super::help::Listing;
use crate::{Orientation, VideoSettings};

/// Which command-line dialect an app speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CliDialect {
    /// rpicam-vid and libcamera-vid (boost::program_options).
    Libcamera,
    /// raspivid (the legacy camera stack's MMAL app).
    Raspivid,
}

impl CliDialect {
    /// The dialect of an app, by its file name.
    pub fn of(app_name: &str) -> CliDialect {
        if app_name == "raspivid" {
            CliDialect::Raspivid
        } else {
            CliDialect::Libcamera
        }
    }

    /// The options every version of the app has (the Bullseye libcamera-vid of
    /// 2021-11; raspivid since 2016): what is passed when `--help` gives nothing.
    pub fn assumed_listing(self) -> Listing {
        match self {
            CliDialect::Libcamera => Listing::of(&LIBCAMERA_SINCE_2021),
            CliDialect::Raspivid => Listing::of(&RASPIVID_SINCE_2016),
        }
    }

    /// The options nalcast may leave out when an app turns out not to take them
    /// after all; without the others there is no stream to speak of.
    pub fn optional(self, option: &str) -> bool {
        match self {
            CliDialect::Libcamera => matches!(
                option,
                "--low-latency" | "--flush" | "--denoise" | "--level" | "--profile" | "--codec"
            ),
            CliDialect::Raspivid => matches!(option, "-fl" | "-lev" | "-pf"),
        }
    }
}

/// The options of Bullseye's first libcamera-vid (2021-11) that nalcast uses.
const LIBCAMERA_SINCE_2021: [&str; 22] = [
    "--rotation",
    "--hflip",
    "--vflip",
    "-t",
    "--timeout",
    "-n",
    "--nopreview",
    "-o",
    "--output",
    "--codec",
    "--profile",
    "--level",
    "--inline",
    "--flush",
    "--denoise",
    "--width",
    "--height",
    "--framerate",
    "-b",
    "--bitrate",
    "-g",
    "--intra",
];

/// The options of raspivid since 2016 that nalcast uses.
const RASPIVID_SINCE_2016: [&str; 15] = [
    "-t", "-n", "-o", "-pf", "-lev", "-ih", "-fl", "-w", "-h", "-fps", "-b", "-g", "-rot", "-hf",
    "-vf",
];

/// What to ask of the camera besides the picture settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    /// Ask for H.264 Baseline (`--profile baseline`): the page's software decoder
    /// (Broadway, over plain HTTP) decodes nothing else.
    pub baseline: bool,
    /// Which camera (`--camera N`, raspivid's `-cs N`); None: the app's default.
    pub camera: Option<u32>,
    /// Rotation and mirroring: rpicam-vid's `--rotation` (0 or 180: libcamera
    /// turns by flipping both ways), `--hflip`, `--vflip`; raspivid's `-rot`
    /// (also 90 and 270), `-hf`, `-vf`. Every version of both apps has them.
    pub orientation: Orientation,
}

/// H.264 level 4's limit in macroblocks per second (1920x1088 at 30 fps is 244800).
const LEVEL_4_MB_PER_S: u64 = 245_760;

/// Whether the picture size and rate need level 4.2 (522240 macroblocks/s): the
/// hardware encoders take 4, 4.1 and 4.2 and start at level 4, which stops 1080p
/// at 30 fps. The Raspberry Pi camera documentation's high-frame-rate recipe sets
/// `--level 4.2` for the same reason; raspivid raises it by itself ("Too many
/// macroblocks/s: Increasing H264 Level to 4.2").
fn needs_level_4_2(v: &VideoSettings) -> bool {
    let mbs = u64::from(v.width.div_ceil(16)) * u64::from(v.height.div_ceil(16));
    mbs * u64::from(v.fps) > LEVEL_4_MB_PER_S
}

/// The command line for an app of `dialect` that accepts the options in `listing`.
pub fn camera_args(
    dialect: CliDialect,
    listing: &Listing,
    v: &VideoSettings,
    wants: Wants,
) -> Vec<String> {
    // Run forever with no preview window: every version has `-t` and `-n`, so
    // they go in even when the listing could not be read.
    let mut args: Vec<String> = ["-t", "0", "-n"].map(str::to_owned).to_vec();
    let mut put = |option: &str, value: Option<String>| {
        if listing.has(option) {
            args.push(option.to_owned());
            args.extend(value);
        }
    };
    let level = needs_level_4_2(v).then(|| "4.2".to_owned());
    match dialect {
        CliDialect::Libcamera => {
            put("--codec", Some("h264".into()));
            if wants.baseline {
                // The hardware encoder maps "baseline" to V4L2's Baseline profile;
                // libav (a Pi 5) looks it up among the codec's profiles
                // (encoder/libav_encoder.cpp, encoderOptionsGeneral) and libx264
                // then turns off B-frames and CABAC.
                put("--profile", Some("baseline".into()));
            }
            put("--inline", None);
            put("--flush", None);
            put("--low-latency", None);
            // Colour denoise: "auto" means cdn_fast for video, done in software on
            // the CPU on the Pi 4 and older (the camera documentation turns it off
            // to keep high frame rates); spatial denoise stays on (unlike "off"),
            // so the encoder is not fed more noise to spend bits on.
            put("--denoise", Some("cdn_off".into()));
            put("--width", Some(v.width.to_string()));
            put("--height", Some(v.height.to_string()));
            put("--framerate", Some(v.fps.to_string()));
            put("--bitrate", Some(v.bitrate.to_string()));
            put("--intra", Some(v.keyframe_interval.to_string()));
            if level.is_some() {
                put("--level", level);
            }
            let o = wants.orientation;
            if o.rotation != 0 {
                put("--rotation", Some(o.rotation.to_string()));
            }
            if o.hflip {
                put("--hflip", None);
            }
            if o.vflip {
                put("--vflip", None);
            }
        }
        CliDialect::Raspivid => {
            if wants.baseline {
                put("-pf", Some("baseline".into()));
            }
            put("-ih", None);
            put("-fl", None);
            put("-w", Some(v.width.to_string()));
            put("-h", Some(v.height.to_string()));
            put("-fps", Some(v.fps.to_string()));
            put("-b", Some(v.bitrate.to_string()));
            put("-g", Some(v.keyframe_interval.to_string()));
            if level.is_some() {
                put("-lev", level);
            }
            let o = wants.orientation;
            if o.rotation != 0 {
                put("-rot", Some(o.rotation.to_string()));
            }
            if o.hflip {
                put("-hf", None);
            }
            if o.vflip {
                put("-vf", None);
            }
        }
    }
    // The camera asked for goes in even when the listing does not show the option:
    // an app that cannot choose then says so, rather than streaming another camera.
    if let Some(n) = wants.camera {
        let option = match dialect {
            CliDialect::Libcamera => "--camera",
            CliDialect::Raspivid => "-cs",
        };
        args.extend([option.to_owned(), n.to_string()]);
    }
    args.extend(["-o", "-"].map(str::to_owned));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASELINE: Wants = Wants {
        baseline: true,
        camera: None,
        orientation: Orientation {
            rotation: 0,
            hflip: false,
            vflip: false,
        },
    };

    fn line(dialect: CliDialect, listing: &Listing, v: &VideoSettings, wants: Wants) -> String {
        camera_args(dialect, listing, v, wants).join(" ")
    }

    /// rpicam-vid v1.6.0 and later: --low-latency is there.
    fn current() -> Listing {
        let mut names = LIBCAMERA_SINCE_2021.to_vec();
        names.push("--low-latency");
        Listing::of(&names)
    }

    #[test]
    fn the_camera_and_its_turn_are_asked_in_each_dialect() {
        let v = VideoSettings::default();
        let wants = Wants {
            camera: Some(1),
            orientation: Orientation {
                rotation: 180,
                hflip: true,
                vflip: false,
            },
            ..BASELINE
        };
        let line = line(CliDialect::Libcamera, &current(), &v, wants);
        assert!(line.contains(" --rotation 180 --hflip "), "{line}");
        assert!(line.ends_with(" --camera 1 -o -"), "{line}");
        assert!(!line.contains("--vflip"), "{line}");
        let raspivid = CliDialect::Raspivid.assumed_listing();
        let wants = Wants {
            orientation: Orientation {
                rotation: 270,
                hflip: false,
                vflip: true,
            },
            ..wants
        };
        let line = super::camera_args(CliDialect::Raspivid, &raspivid, &v, wants).join(" ");
        assert!(line.contains(" -rot 270 -vf "), "{line}");
        assert!(line.ends_with(" -cs 1 -o -"), "{line}");
        // An app whose listing lacks --camera is still asked: it says it cannot,
        // rather than streaming the first camera.
        let old = Listing::of(&LIBCAMERA_SINCE_2021);
        let line = super::camera_args(
            CliDialect::Libcamera,
            &old,
            &v,
            Wants {
                camera: Some(1),
                ..BASELINE
            },
        )
        .join(" ");
        assert!(line.contains(" --camera 1 "), "{line}");
    }

    #[test]
    fn a_current_rpicam_vid_gets_everything_including_low_latency() {
        let got = line(
            CliDialect::Libcamera,
            &current(),
            &VideoSettings::default(),
            BASELINE,
        );
        assert_eq!(
            got,
            "-t 0 -n --codec h264 --profile baseline --inline --flush --low-latency \
             --denoise cdn_off --width 1280 --height 720 --framerate 30 --bitrate 3000000 \
             --intra 60 -o -"
        );
    }

    #[test]
    fn an_app_without_low_latency_or_flush_is_not_given_them() {
        let v = VideoSettings::default();
        let assumed = line(
            CliDialect::Libcamera,
            &CliDialect::Libcamera.assumed_listing(),
            &v,
            BASELINE,
        );
        assert!(!assumed.contains("--low-latency"), "{assumed}");
        assert!(
            assumed.contains("--inline --flush --denoise cdn_off"),
            "{assumed}"
        );
        let mut bare = CliDialect::Libcamera.assumed_listing();
        for gone in ["--flush", "--denoise", "--codec"] {
            bare.forget(gone);
        }
        let got = line(CliDialect::Libcamera, &bare, &v, BASELINE);
        assert_eq!(
            got,
            "-t 0 -n --profile baseline --inline --width 1280 --height 720 --framerate 30 \
             --bitrate 3000000 --intra 60 -o -"
        );
    }

    #[test]
    fn without_baseline_no_profile_is_asked_for() {
        let got = line(
            CliDialect::Libcamera,
            &current(),
            &VideoSettings::default(),
            Wants {
                baseline: false,
                ..BASELINE
            },
        );
        assert!(!got.contains("--profile"), "{got}");
        let got = line(
            CliDialect::Raspivid,
            &CliDialect::Raspivid.assumed_listing(),
            &VideoSettings::default(),
            Wants {
                baseline: false,
                ..BASELINE
            },
        );
        assert!(!got.contains("-pf"), "{got}");
    }

    #[test]
    fn raspivid_gets_its_own_abbreviations() {
        let got = line(
            CliDialect::Raspivid,
            &CliDialect::Raspivid.assumed_listing(),
            &VideoSettings::default(),
            BASELINE,
        );
        assert_eq!(
            got,
            "-t 0 -n -pf baseline -ih -fl -w 1280 -h 720 -fps 30 -b 3000000 -g 60 -o -"
        );
    }

    #[test]
    fn level_4_2_only_above_level_4s_macroblock_rate() {
        let at = |width, height, fps| VideoSettings {
            width,
            height,
            fps,
            ..VideoSettings::default()
        };
        for (v, needed) in [
            (at(1920, 1080, 30), false),
            (at(1920, 1080, 31), true),
            (at(1920, 1080, 50), true),
            (at(1280, 720, 60), false),
            (at(1280, 720, 120), true),
            (at(640, 480, 90), false),
        ] {
            assert_eq!(needs_level_4_2(&v), needed, "{v:?}");
            let got = line(CliDialect::Libcamera, &current(), &v, BASELINE);
            assert_eq!(got.contains("--level 4.2"), needed, "{got}");
            let got = line(
                CliDialect::Raspivid,
                &CliDialect::Raspivid.assumed_listing(),
                &v,
                BASELINE,
            );
            assert_eq!(got.contains("-lev 4.2"), needed, "{got}");
        }
    }

    #[test]
    fn dialect_follows_the_app_name() {
        assert_eq!(CliDialect::of("raspivid"), CliDialect::Raspivid);
        assert_eq!(CliDialect::of("rpicam-vid"), CliDialect::Libcamera);
        assert_eq!(CliDialect::of("libcamera-vid"), CliDialect::Libcamera);
        assert!(CliDialect::Libcamera.optional("--low-latency"));
        assert!(!CliDialect::Libcamera.optional("--width"));
        assert!(CliDialect::Raspivid.optional("-fl"));
        assert!(!CliDialect::Raspivid.optional("-ih"));
    }
}
