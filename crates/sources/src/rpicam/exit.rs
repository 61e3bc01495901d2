//! Why the camera app stopped, read from the last lines it wrote to stderr, as one
//! line a user can act on.
//!
//! The messages are the apps' own. rpicam-apps and libcamera-apps end with
//! `ERROR: *** <what()> ***` for any exception (apps/rpicam_vid.cpp), e.g.
//! "no cameras available" and "failed to acquire camera <id>"
//! (core/rpicam_app.cpp), boost::program_options' "unrecognised option '<name>'",
//! "libav: no such profile <p>" (encoder/libav_encoder.cpp); before that libcamera
//! logs lines like `[0:00:52.24] [982]  INFO Camera camera.cpp:839 Pipeline
//! handler in use by another process`. raspivid (userland's raspicam) logs through
//! vcos (`mmal: Camera is not detected…`) and says "Invalid command line option
//! (<name>)" for an option it lacks.
use super::args::CliDialect;

/// The longest quote of the app's words that goes into the line.
const MAX_QUOTE: usize = 160;

/// What stopped the camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No camera detected (cable, camera not enabled).
    NoCamera,
    /// Another process holds the camera.
    Busy,
    /// The camera or encoder refused the size, rate or format.
    Unsupported,
    /// The app does not know an option nalcast passed.
    UnknownOption(String),
    /// The app cannot make the requested H.264 profile (rpicam-apps v1.4.1's libav
    /// encoder found no profiles on libx264, so `--profile baseline` fails there).
    ProfileRefused,
    /// A libcamera app on a system set to the legacy camera stack.
    LegacyStackOn,
    /// raspivid on a system set to the libcamera stack.
    LegacyStackOff,
    /// The camera devices are not open to nalcast's user.
    NoPermission,
}

/// A cause and the app's line that shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// What stopped the camera.
    pub cause: Cause,
    /// The app's own words (libcamera's time stamp and thread number trimmed).
    pub said: String,
}

/// Reads the cause from a line holding its phrase.
type Reading = fn(&str) -> Option<Cause>;

/// Phrases that show a cause, in the order they are looked for: an app that cannot
/// run at all says so before anything else goes wrong, and a busy device also makes
/// "failed to configure streams", which alone would mean an unsupported format.
const SIGNS: &[(&str, Reading)] = &[
    ("configured for the legacy camera stack", |line| {
        // rpicam-apps: "appears to be configured for…"; raspivid: "should be…".
        Some(if line.contains("should be configured") {
            Cause::LegacyStackOff
        } else {
            Cause::LegacyStackOn
        })
    }),
    ("unrecognised option", unknown_option),
    ("unknown option", unknown_option),
    ("Invalid command line option", unknown_option),
    ("no such profile", |_| Some(Cause::ProfileRefused)),
    ("Permission denied", |_| Some(Cause::NoPermission)),
    ("no cameras available", |_| Some(Cause::NoCamera)),
    ("selected camera is not available", |_| {
        Some(Cause::NoCamera)
    }),
    ("Camera is not detected", |_| Some(Cause::NoCamera)),
    ("Camera is not enabled in this build", |_| {
        Some(Cause::NoCamera)
    }),
    ("failed to acquire camera", |_| Some(Cause::Busy)),
    ("in use by another process", |_| Some(Cause::Busy)),
    ("Device or resource busy", |_| Some(Cause::Busy)),
    // raspivid: the GPU's camera component is taken ("failed to enable component: ENOSPC").
    ("ENOSPC", |_| Some(Cause::Busy)),
    ("failed to valid", |_| Some(Cause::Unsupported)),
    ("failed to configure streams", |_| Some(Cause::Unsupported)),
    ("failed to set capture format", |_| Some(Cause::Unsupported)),
    ("failed to set output format", |_| Some(Cause::Unsupported)),
    ("failed to set streamparm", |_| Some(Cause::Unsupported)),
    ("failed to set level", |_| Some(Cause::Unsupported)),
    ("no such level", |_| Some(Cause::Unsupported)),
    ("unable to open video codec", |_| Some(Cause::Unsupported)),
    ("format couldn't be set", |_| Some(Cause::Unsupported)),
    ("Unable to set format on video encoder", |_| {
        Some(Cause::Unsupported)
    }),
    ("Too many macroblocks/s requested", |_| {
        Some(Cause::Unsupported)
    }),
];

/// The option named in "unrecognised option '--low-latency'", "unknown option
/// --x" or "Invalid command line option (-fl)".
fn unknown_option(line: &str) -> Option<Cause> {
    let at = line.find("option")? + "option".len();
    let name = line[at..]
        .split_whitespace()
        .next()?
        .trim_matches(|c| matches!(c, '\'' | '"' | '(' | ')' | '*'));
    name.starts_with('-')
        .then(|| Cause::UnknownOption(name.to_owned()))
}

/// What stopped the app, from its last stderr lines (oldest first); `None` when
/// they show no known cause.
pub fn diagnose(stderr: &[String]) -> Option<Diagnosis> {
    SIGNS.iter().find_map(|(phrase, cause)| {
        stderr.iter().rev().find_map(|line| {
            if !line.contains(phrase) {
                return None;
            }
            Some(Diagnosis {
                cause: cause(line)?,
                said: quote(line),
            })
        })
    })
}

/// `line` without libcamera's `[0:00:52.077980292] [981] ` prefix, cut to
/// [`MAX_QUOTE`] characters.
pub fn quote(line: &str) -> String {
    let mut rest = line.trim();
    for _ in 0..2 {
        if rest.starts_with('[') {
            if let Some(end) = rest.find(']') {
                rest = rest[end + 1..].trim_start();
            }
        }
    }
    if rest.chars().count() > MAX_QUOTE {
        let cut: String = rest.chars().take(MAX_QUOTE).collect();
        format!("{cut}…")
    } else {
        rest.to_owned()
    }
}

impl Diagnosis {
    /// The one line for the log, the API and viewers, e.g. `camera: no camera
    /// found (rpicam-vid said: "ERROR: *** no cameras available ***"); check the
    /// ribbon cable and 'rpicam-hello --list-cameras'`.
    pub fn explain(&self, app: &str) -> String {
        let dialect = CliDialect::of(app);
        let said = format!("{app} said: \"{}\"", self.said);
        match &self.cause {
            Cause::NoCamera => {
                let check = match app {
                    "raspivid" => "'vcgencmd get_camera'".to_owned(),
                    _ => format!("'{}-hello --list-cameras'", app_family(app)),
                };
                format!("camera: no camera found ({said}); check the ribbon cable and {check}")
            }
            Cause::Busy => format!(
                "camera: camera busy, in use by another process ({said}); stop the other \
                 program ('sudo fuser -v /dev/media* /dev/video*' shows which)"
            ),
            Cause::Unsupported => format!(
                "camera: size or format not supported ({said}); try a smaller --width and \
                 --height or a lower --fps"
            ),
            Cause::UnknownOption(option) if dialect.optional(option) => format!(
                "camera: {app} does not know the option {option} ({said}); nalcast leaves it \
                 out from the next start"
            ),
            Cause::UnknownOption(option) => format!(
                "camera: {app} does not know the option {option} ({said}); update the camera \
                 app (rpicam-apps)"
            ),
            Cause::ProfileRefused => format!(
                "camera: {app} cannot make H.264 Baseline here ({said}); nalcast asks for no \
                 profile from the next start: the stream will be High profile, which the page \
                 plays only with WebCodecs, over HTTPS (--tls self-signed); updating \
                 rpicam-apps brings Baseline back"
            ),
            Cause::LegacyStackOn => format!(
                "camera: the legacy camera stack is on, {app} needs libcamera ({said}); turn \
                 off 'Legacy Camera' in raspi-config (start_x=1 in config.txt)"
            ),
            Cause::LegacyStackOff => format!(
                "camera: raspivid needs the legacy camera stack, which is off ({said}); install \
                 rpicam-apps (or libcamera-apps) or turn on 'Legacy Camera' in raspi-config"
            ),
            Cause::NoPermission => format!(
                "camera: no permission to use the camera devices ({said}); run nalcast as a \
                 user in the group video"
            ),
        }
    }
}

/// "rpicam" or "libcamera": the prefix of the app's sibling tools.
fn app_family(app: &str) -> &str {
    app.strip_suffix("-vid").unwrap_or(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn cause(text: &str) -> Option<Cause> {
        diagnose(&lines(text)).map(|d| d.cause)
    }

    #[test]
    fn no_camera_is_one_line_with_what_to_check() {
        let stderr = lines(
            "[0:00:01.557112345] [1017]  INFO Camera camera_manager.cpp:284 libcamera v0.2.0+120-eb00c13d\n\
             ERROR: *** no cameras available ***",
        );
        let d = diagnose(&stderr).expect("diagnosed");
        assert_eq!(d.cause, Cause::NoCamera);
        assert_eq!(
            d.explain("rpicam-vid"),
            "camera: no camera found (rpicam-vid said: \"ERROR: *** no cameras available ***\"); \
             check the ribbon cable and 'rpicam-hello --list-cameras'"
        );
        assert!(d
            .explain("libcamera-vid")
            .ends_with("'libcamera-hello --list-cameras'"));
        let raspivid = "mmal: Cannot read camera info, keeping the defaults for OV5647\n\
             mmal: mmal_vc_component_create: failed to create component 'vc.ril.camera' (1:ENOMEM)\n\
             mmal: mmal_component_create_core: could not create component 'vc.ril.camera' (1)\n\
             mmal: Failed to create camera component\n\
             mmal: main: Failed to create camera component\n\
             mmal: Camera is not detected. Please check carefully the camera module is installed correctly";
        let d = diagnose(&lines(raspivid)).expect("diagnosed");
        assert_eq!(d.cause, Cause::NoCamera);
        assert!(d.explain("raspivid").contains("'vcgencmd get_camera'"));
    }

    #[test]
    fn a_camera_in_use_is_busy_even_when_configuring_fails_after() {
        // rpicam-apps issue 496 and go2rtc issue 1184 show these.
        assert_eq!(
            cause(
                "[0:03:19.472244161] [3274]  INFO Camera camera.cpp:990 Pipeline handler in use by another process\n\
                 ERROR: *** failed to acquire camera /base/axi/pcie@120000/rp1/i2c@88000/imx708@1a ***"
            ),
            Some(Cause::Busy)
        );
        let d = diagnose(&lines(
            "[0:00:52.243006594] [982] ERROR V4L2 v4l2_videodevice.cpp:1047 /dev/video0[13:cap]: Unable to set format: Device or resource busy\n\
             ERROR: *** failed to configure streams ***",
        ))
        .expect("diagnosed");
        assert_eq!(d.cause, Cause::Busy);
        // The quote is the app's words without libcamera's time stamp and thread.
        assert_eq!(
            d.said,
            "ERROR V4L2 v4l2_videodevice.cpp:1047 /dev/video0[13:cap]: Unable to set format: Device or resource busy"
        );
        assert!(d.explain("rpicam-vid").starts_with("camera: camera busy"));
        assert_eq!(
            cause(
                "mmal: mmal_vc_component_enable: failed to enable component: ENOSPC\n\
                 mmal: camera component couldn't be enabled\n\
                 mmal: main: Failed to create camera component\n\
                 mmal: Failed to run camera app. Please check for firmware updates"
            ),
            Some(Cause::Busy)
        );
    }

    #[test]
    fn sizes_and_formats_the_camera_refuses() {
        for text in [
            "ERROR: *** failed to configure streams ***",
            "ERROR: *** failed to valid stream configurations ***",
            "ERROR: *** failed to set capture format ***",
            "ERROR: *** libav: unable to open video codec: -22 ***",
            "mmal: camera video format couldn't be set",
            "mmal: Too many macroblocks/s requested",
        ] {
            assert_eq!(cause(text), Some(Cause::Unsupported), "{text}");
        }
        let d = diagnose(&lines("ERROR: *** failed to configure streams ***")).expect("d");
        assert!(
            d.explain("rpicam-vid")
                .contains("smaller --width and --height"),
            "{}",
            d.explain("rpicam-vid")
        );
    }

    #[test]
    fn unknown_options_are_named_and_optional_ones_are_promised_to_go() {
        let d = diagnose(&lines("ERROR: *** unrecognised option '--low-latency' ***"))
            .expect("diagnosed");
        assert_eq!(d.cause, Cause::UnknownOption("--low-latency".into()));
        assert_eq!(
            d.explain("rpicam-vid"),
            "camera: rpicam-vid does not know the option --low-latency (rpicam-vid said: \
             \"ERROR: *** unrecognised option '--low-latency' ***\"); nalcast leaves it out \
             from the next start"
        );
        assert_eq!(
            cause("ERROR: *** unknown option --flush ***"),
            Some(Cause::UnknownOption("--flush".into()))
        );
        let d = diagnose(&lines("Invalid command line option (-fl)")).expect("diagnosed");
        assert_eq!(d.cause, Cause::UnknownOption("-fl".into()));
        assert!(d.explain("raspivid").contains("leaves it out"));
        let d = diagnose(&lines("ERROR: *** unrecognised option '--width' ***")).expect("d");
        assert!(d.explain("rpicam-vid").contains("update the camera app"));
    }

    #[test]
    fn the_other_causes() {
        let d = diagnose(&lines("ERROR: *** libav: no such profile baseline ***")).expect("d");
        assert_eq!(d.cause, Cause::ProfileRefused);
        assert!(d.explain("rpicam-vid").contains("WebCodecs, over HTTPS"));
        assert_eq!(
            cause("ERROR: the system appears to be configured for the legacy camera stack"),
            Some(Cause::LegacyStackOn)
        );
        assert_eq!(
            cause("ERROR: the system should be configured for the legacy camera stack"),
            Some(Cause::LegacyStackOff)
        );
        // libcamera's MediaDevice::open() logs the errno; enumeration then finds
        // nothing, which alone would read as "no camera".
        assert_eq!(
            cause(
                "[0:00:00.922634555] [1630] ERROR MediaDevice media_device.cpp:110 Failed to open media device at /dev/media0: Permission denied\n\
                 ERROR: *** no cameras available ***"
            ),
            Some(Cause::NoPermission)
        );
        assert_eq!(cause("ERROR: *** something new ***"), None);
        assert_eq!(cause(""), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let long = format!("ERROR: *** no cameras available {} ***", "x".repeat(400));
        let d = diagnose(&[long]).expect("diagnosed");
        assert_eq!(d.said.chars().count(), MAX_QUOTE + 1);
        assert!(d.said.ends_with('…'));
    }
}
