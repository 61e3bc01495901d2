//! Named streams: `--stream NAME=SPEC` and the config file's `[[stream]]` tables,
//! each a camera with its own source, picture and publishing settings. The server
//! serves each at `/streams/NAME/` (docs/protocol.md); the first is also the
//! default stream, served at the URLs nalcast had before it held many.
use std::time::Duration;

use nalcast_sources::publish::PublishTarget;
use nalcast_sources::{RtspTransport, SourceOptions, SourceSpec, VideoSettings};
use serde::Deserialize;

/// The name the stream made from `--source` gets.
pub const DEFAULT_NAME: &str = "camera";

/// Longest stream name.
const MAX_NAME: usize = 32;

/// One stream, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Its name in URLs, the API, metrics and logs.
    pub name: String,
    /// Where its video comes from.
    pub source: SourceSpec,
    /// How its source is run.
    pub options: SourceOptions,
    /// Media servers it is sent on to.
    pub publish: Vec<PublishTarget>,
    /// LL-HLS for it.
    pub hls: bool,
    /// Started at the first viewer and stopped this long after the last one left;
    /// `None`: always running.
    pub on_demand: Option<Duration>,
    /// Most viewers of this stream at once (`--max-viewers` counts all streams').
    pub max_viewers: Option<usize>,
}

/// A `[[stream]]` table as written: the name and source, and any per-stream
/// setting that differs from the file's or the command line's.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StreamTable {
    /// The stream's name.
    pub name: Option<String>,
    /// As `--source`.
    pub source: Option<String>,
    /// As `--width`.
    pub width: Option<u32>,
    /// As `--height`.
    pub height: Option<u32>,
    /// As `--fps`.
    pub fps: Option<u32>,
    /// As `--bitrate`.
    pub bitrate: Option<u32>,
    /// As `--keyframe-interval`.
    pub keyframe_interval: Option<u32>,
    /// As `--rtsp-transport`.
    pub rtsp_transport: Option<String>,
    /// As `--hls`.
    pub hls: Option<String>,
    /// As `--publish`, for this stream.
    pub publish: Option<Vec<String>>,
    /// As `--on-demand`.
    pub on_demand: Option<String>,
    /// As `--idle-timeout`.
    pub idle_timeout: Option<f64>,
    /// As `--camera`.
    pub camera: Option<u32>,
    /// As `--rotation`.
    pub rotation: Option<u16>,
    /// As `--hflip`.
    pub hflip: Option<String>,
    /// As `--vflip`.
    pub vflip: Option<String>,
    /// Most viewers of this stream at once.
    pub max_viewers: Option<usize>,
}

/// What every stream takes unless its table says otherwise: the flags' values.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Source options (picture, transport, limits).
    pub options: SourceOptions,
    /// LL-HLS on or off.
    pub hls: bool,
    /// On demand, and the idle time before a stop.
    pub on_demand: Option<Duration>,
}

/// Whether `name` can name a stream: 1 to 32 of a-z A-Z 0-9 - _, starting with a
/// letter or digit, so that it is one URL path segment as it is, a metric label and
/// a file name, and never `.` or `..`.
pub fn check_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.len() > MAX_NAME || !first_ok || !all_ok {
        return Err(format!(
            "stream name '{}' is not 1 to {MAX_NAME} of the letters a-z A-Z, digits, - and _, starting with a letter or digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// `--stream NAME=SPEC`: the name and the source as text.
pub fn split_flag(value: &str) -> Result<(&str, &str), String> {
    match value.split_once('=') {
        Some((name, spec)) if !spec.is_empty() => Ok((name, spec)),
        _ => Err(format!(
            "--stream '{}' is not NAME=SOURCE (e.g. --stream garden=rtsp://camera.lan/live)",
            nalcast_sources::mask_credentials(value)
        )),
    }
}

/// Parses a source, its errors naming the stream.
fn source(name: &str, text: &str) -> Result<SourceSpec, String> {
    text.parse()
        .map_err(|e| format!("stream '{name}': source: {e}"))
}

/// The stream `--stream NAME=SPEC` asks for, with the flags' settings.
pub fn from_flag(value: &str, defaults: &Defaults) -> Result<StreamConfig, String> {
    let (name, spec) = split_flag(value)?;
    check_name(name)?;
    Ok(StreamConfig {
        name: name.to_owned(),
        source: source(name, spec)?,
        options: defaults.options.clone(),
        publish: Vec::new(),
        hls: defaults.hls,
        on_demand: defaults.on_demand,
        max_viewers: None,
    })
}

/// The stream a `[[stream]]` table asks for: the table's settings over the flags'.
pub fn from_table(table: &StreamTable, defaults: &Defaults) -> Result<StreamConfig, String> {
    let Some(name) = table.name.as_deref() else {
        return Err("a [[stream]] table has no name (name = \"garden\")".into());
    };
    check_name(name)?;
    let Some(spec) = table.source.as_deref() else {
        return Err(format!(
            "stream '{name}' has no source (source = \"rpicam\", \"usb\", \"rtsp://…\", …)"
        ));
    };
    let bad = |key: &str, why: String| format!("stream '{name}': {key}: {why}");
    let mut options = defaults.options.clone();
    let v = &mut options.video;
    let pick = |key: &str, given: Option<u32>, default: u32, lo: u32, hi: u32| {
        let value = given.unwrap_or(default);
        if (lo..=hi).contains(&value) {
            Ok(value)
        } else {
            Err(bad(key, format!("{value} is out of range ({lo} to {hi})")))
        }
    };
    *v = VideoSettings {
        width: pick("width", table.width, v.width, 16, 4096)?,
        height: pick("height", table.height, v.height, 16, 4096)?,
        fps: pick("fps", table.fps, v.fps, 1, 120)?,
        bitrate: pick("bitrate", table.bitrate, v.bitrate, 10_000, 100_000_000)?,
        keyframe_interval: pick(
            "keyframe-interval",
            table.keyframe_interval,
            v.keyframe_interval,
            1,
            10_000,
        )?,
    };
    if !v.width.is_multiple_of(2) || !v.height.is_multiple_of(2) {
        return Err(bad(
            "width, height",
            format!("must be even, got {}x{}", v.width, v.height),
        ));
    }
    if let Some(t) = &table.rtsp_transport {
        options.rtsp_transport = t
            .parse::<RtspTransport>()
            .map_err(|e| bad("rtsp-transport", e.to_string()))?;
    }
    let on_off = |key: &str, value: &Option<String>, default: bool| match value.as_deref() {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(bad(key, format!("'{other}' is not on or off"))),
    };
    let hls = on_off("hls", &table.hls, defaults.hls)?;
    if table.camera.is_some() {
        options.camera = table.camera;
    }
    let o = &mut options.orientation;
    o.rotation = table.rotation.unwrap_or(o.rotation);
    o.hflip = on_off("hflip", &table.hflip, o.hflip)?;
    o.vflip = on_off("vflip", &table.vflip, o.vflip)?;
    let idle = match table.idle_timeout {
        None => defaults.on_demand.unwrap_or(DEFAULT_IDLE),
        Some(s) => idle_timeout(s).map_err(|e| bad("idle-timeout", e))?,
    };
    let on_demand =
        on_off("on-demand", &table.on_demand, defaults.on_demand.is_some())?.then_some(idle);
    let publish = table
        .publish
        .iter()
        .flatten()
        .map(|url| {
            url.parse::<PublishTarget>()
                .map_err(|e| bad("publish", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if table.max_viewers == Some(0) {
        return Err(bad("max-viewers", "0 would let nobody watch".into()));
    }
    Ok(StreamConfig {
        name: name.to_owned(),
        source: source(name, spec)?,
        options,
        publish,
        hls,
        on_demand,
        max_viewers: table.max_viewers,
    })
}

/// How long an on-demand source runs on after its last viewer left, by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);

/// An idle time in seconds: 0 (stop at once) to a day.
pub fn idle_timeout(seconds: f64) -> Result<Duration, String> {
    if !(seconds.is_finite() && (0.0..=86_400.0).contains(&seconds)) {
        return Err(format!(
            "{seconds} must be a number of seconds from 0 to 86400"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Checks the camera choice and orientation against the kind of source: they are
/// asked of a camera app or of ffmpeg reading a camera, and mean nothing to a
/// stream that arrives encoded.
pub fn check_camera(stream: &StreamConfig) -> Result<(), String> {
    let o = stream.options.orientation;
    let (rpicam, v4l2) = match &stream.source {
        SourceSpec::Rpicam => (true, false),
        SourceSpec::V4l2(_) => (false, true),
        _ => (false, false),
    };
    let fail = |what: String| Err(format!("stream '{}': {what}", stream.name));
    if !matches!(o.rotation, 0 | 90 | 180 | 270) {
        return fail(format!("rotation {} is not 0, 90, 180 or 270", o.rotation));
    }
    if !(rpicam || v4l2) && (!o.is_identity() || stream.options.camera.is_some()) {
        return fail(format!(
            "camera, rotation, hflip and vflip are for rpicam and USB (v4l2) cameras, not a {} source",
            stream.source.kind()
        ));
    }
    if rpicam && matches!(o.rotation, 90 | 270) {
        return fail(
            "a Raspberry Pi camera turns by 0 or 180 degrees only (libcamera flips it both ways)"
                .into(),
        );
    }
    if v4l2 && stream.options.camera.is_some() {
        return fail(
            "camera is for rpicam; a USB camera is chosen by its device: v4l2:/dev/videoN (nalcast --list-cameras lists them)".into(),
        );
    }
    Ok(())
}

/// Refuses a second stream of the same name, and camera settings a stream's source
/// cannot take.
pub fn check_streams(streams: &[StreamConfig]) -> Result<(), String> {
    for (i, s) in streams.iter().enumerate() {
        check_camera(s)?;
        if streams[..i].iter().any(|t| t.name == s.name) {
            return Err(format!(
                "stream name '{}' is given twice: each stream needs its own name",
                s.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            options: SourceOptions::default(),
            hls: true,
            on_demand: None,
        }
    }

    #[test]
    fn names_are_one_safe_path_segment() {
        for good in ["garden", "cam-1", "Front_Door", "0", &"a".repeat(32)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "_x",
            "a/b",
            "a b",
            "a.b",
            "é",
            "a%2f",
            &"a".repeat(33),
        ] {
            let e = check_name(bad).expect_err(bad);
            assert!(e.contains("is not 1 to 32"), "{e}");
        }
    }

    #[test]
    fn a_flag_is_name_equals_source() {
        let s = from_flag("door=rtsp://u:secret@cam/live?x=1", &defaults()).expect("valid");
        assert_eq!(s.name, "door");
        assert_eq!(s.source.kind(), "rtsp");
        let e = from_flag("rtsp://u:secret@cam/live", &defaults()).expect_err("no name");
        assert!(e.contains("NAME=SOURCE"), "{e}");
        assert!(
            !e.contains("secret"),
            "the password must not be echoed: {e}"
        );
        let e = from_flag("door=", &defaults()).expect_err("no source");
        assert!(e.contains("NAME=SOURCE"), "{e}");
        let e = from_flag("door=camera9", &defaults()).expect_err("bad source");
        assert!(
            e.starts_with("stream 'door': source: unknown source"),
            "{e}"
        );
    }

    #[test]
    fn a_table_overrides_the_flags_settings() {
        let table = StreamTable {
            name: Some("pi".into()),
            source: Some("test".into()),
            width: Some(640),
            fps: Some(15),
            hls: Some("off".into()),
            on_demand: Some("on".into()),
            idle_timeout: Some(3.0),
            publish: Some(vec!["rtmp://m/live/key".into()]),
            ..StreamTable::default()
        };
        let s = from_table(&table, &defaults()).expect("valid");
        assert_eq!(s.options.video.width, 640);
        assert_eq!(s.options.video.height, VideoSettings::default().height);
        assert_eq!(s.options.video.fps, 15);
        assert!(!s.hls);
        assert_eq!(s.on_demand, Some(Duration::from_secs(3)));
        assert_eq!(s.publish.len(), 1);
    }

    #[test]
    fn bad_tables_are_one_line_errors_naming_the_stream() {
        let base = StreamTable {
            name: Some("pi".into()),
            source: Some("test".into()),
            ..StreamTable::default()
        };
        for (table, wanted) in [
            (
                StreamTable {
                    name: None,
                    ..base.clone()
                },
                "has no name",
            ),
            (
                StreamTable {
                    source: None,
                    ..base.clone()
                },
                "stream 'pi' has no source",
            ),
            (
                StreamTable {
                    width: Some(9000),
                    ..base.clone()
                },
                "stream 'pi': width: 9000 is out of range",
            ),
            (
                StreamTable {
                    width: Some(641),
                    ..base.clone()
                },
                "must be even",
            ),
            (
                StreamTable {
                    hls: Some("yes".into()),
                    ..base.clone()
                },
                "stream 'pi': hls: 'yes' is not on or off",
            ),
            (
                StreamTable {
                    idle_timeout: Some(-1.0),
                    ..base.clone()
                },
                "stream 'pi': idle-timeout",
            ),
            (
                StreamTable {
                    rtsp_transport: Some("sctp".into()),
                    ..base.clone()
                },
                "stream 'pi': rtsp-transport",
            ),
        ] {
            let e = from_table(&table, &defaults()).expect_err(wanted);
            assert!(e.contains(wanted), "{e} (wanted {wanted})");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn camera_settings_go_with_camera_sources_only() {
        let with = |source: &str, extra: fn(&mut StreamTable)| {
            let mut table = StreamTable {
                name: Some("c".into()),
                source: Some(source.into()),
                ..StreamTable::default()
            };
            extra(&mut table);
            from_table(&table, &defaults()).and_then(|s| check_streams(&[s]))
        };
        assert_eq!(with("rpicam", |t| t.camera = Some(1)), Ok(()));
        assert_eq!(with("rpicam", |t| t.rotation = Some(180)), Ok(()));
        assert_eq!(with("usb", |t| t.rotation = Some(90)), Ok(()));
        assert_eq!(
            with("v4l2:/dev/video2", |t| t.hflip = Some("on".into())),
            Ok(())
        );
        for (source, extra, wanted) in [
            (
                "rpicam",
                (|t: &mut StreamTable| t.rotation = Some(90)) as fn(&mut StreamTable),
                "0 or 180 degrees only",
            ),
            (
                "rpicam",
                |t| t.rotation = Some(45),
                "rotation 45 is not 0, 90, 180 or 270",
            ),
            ("usb", |t| t.camera = Some(1), "chosen by its device"),
            (
                "rtsp://cam/live",
                |t| t.vflip = Some("on".into()),
                "not a rtsp source",
            ),
            ("test", |t| t.camera = Some(0), "not a test source"),
        ] {
            let e = with(source, extra).expect_err(wanted);
            assert!(e.starts_with("stream 'c': ") && e.contains(wanted), "{e}");
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a = from_flag("a=test", &defaults()).expect("valid");
        let b = from_flag("b=test", &defaults()).expect("valid");
        assert_eq!(check_streams(&[a.clone(), b]), Ok(()));
        let e = check_streams(&[a.clone(), a]).expect_err("twice");
        assert!(e.contains("'a' is given twice"), "{e}");
    }
}
