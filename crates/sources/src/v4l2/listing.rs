//! What V4L2 tools say about cameras, parsed: `v4l2-ctl --list-devices`,
//! `v4l2-ctl --list-formats-ext`, `ffmpeg -f v4l2 -list_formats all` and
//! `ffmpeg -encoders`. Pure text in, plain values out; nothing here runs a tool.
use std::fmt;

/// How a format's pictures are coded, as far as nalcast cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coding {
    /// H.264: streamed as the camera makes it.
    H264,
    /// Motion JPEG: decoded and encoded to H.264.
    Mjpeg,
    /// Uncompressed pictures, with ffmpeg's name for the pixel format (`yuyv422`).
    Raw(String),
    /// Something nalcast does not take (Bayer, HEVC, metadata, a format ffmpeg lacks).
    Other,
}

impl Coding {
    /// Preference: H.264 (no encoding), then MJPEG (small over USB), then raw.
    pub fn rank(&self) -> Option<u8> {
        match self {
            Coding::H264 => Some(0),
            Coding::Mjpeg => Some(1),
            Coding::Raw(_) => Some(2),
            Coding::Other => None,
        }
    }

    /// The value of ffmpeg's `-input_format` for it.
    pub fn input_format(&self) -> Option<&str> {
        match self {
            Coding::H264 => Some("h264"),
            Coding::Mjpeg => Some("mjpeg"),
            Coding::Raw(pix_fmt) => Some(pix_fmt),
            Coding::Other => None,
        }
    }

    /// From a V4L2 FourCC, as v4l2-ctl prints it. Raw formats are those ffmpeg's
    /// v4l2 input maps to a pixel format (a common subset).
    fn from_fourcc(fourcc: &str) -> Coding {
        let raw = |name: &str| Coding::Raw(name.to_owned());
        match fourcc {
            "H264" => Coding::H264,
            "MJPG" | "JPEG" => Coding::Mjpeg,
            "YUYV" => raw("yuyv422"),
            "UYVY" => raw("uyvy422"),
            "YVYU" => raw("yvyu422"),
            "NV12" => raw("nv12"),
            "NV21" => raw("nv21"),
            "YU12" => raw("yuv420p"),
            "422P" => raw("yuv422p"),
            "GREY" => raw("gray"),
            "RGB3" => raw("rgb24"),
            "BGR3" => raw("bgr24"),
            _ => Coding::Other,
        }
    }

    /// From ffmpeg's name in a `-list_formats` line (`h264`, `mjpeg`, `yuyv422`).
    fn from_ffmpeg(compressed: bool, name: &str) -> Coding {
        match (compressed, name) {
            (_, "Unsupported") => Coding::Other,
            (true, "h264") => Coding::H264,
            (true, "mjpeg") => Coding::Mjpeg,
            (true, _) => Coding::Other,
            (false, pix_fmt) => Coding::Raw(pix_fmt.to_owned()),
        }
    }
}

/// Frame rates offered for one size.
#[derive(Clone, Debug, PartialEq)]
pub enum Rates {
    /// Not reported (ffmpeg's listing has no rates).
    Unknown,
    /// These rates, in frames per second.
    Listed(Vec<f64>),
    /// Any rate from the first to the second.
    Range(f64, f64),
}

impl Rates {
    /// Whether `fps` can be had (within half a frame per second: 29.97 is 30).
    pub fn offers(&self, fps: f64) -> bool {
        match self {
            Rates::Unknown => true,
            Rates::Listed(rates) => rates.iter().any(|r| (r - fps).abs() < 0.5),
            Rates::Range(lo, hi) => fps > lo - 0.5 && fps < hi + 0.5,
        }
    }

    /// The highest rate offered, if known.
    pub fn max(&self) -> Option<f64> {
        match self {
            Rates::Unknown => None,
            Rates::Listed(rates) => rates.iter().copied().reduce(f64::max),
            Rates::Range(_, hi) => Some(*hi),
        }
    }

    /// The rate to ask for when `fps` is wanted: `fps` if offered, else the highest
    /// rate below it, else the lowest above it.
    pub fn nearest(&self, fps: f64) -> f64 {
        match self {
            Rates::Unknown => fps,
            Rates::Range(lo, hi) => fps.clamp(*lo, *hi),
            Rates::Listed(rates) => {
                if self.offers(fps) {
                    return fps;
                }
                let below = rates.iter().copied().filter(|r| *r < fps).reduce(f64::max);
                let above = rates.iter().copied().filter(|r| *r > fps).reduce(f64::min);
                below.or(above).unwrap_or(fps)
            }
        }
    }

    fn add(&mut self, more: Rates) {
        *self = match (std::mem::replace(self, Rates::Unknown), more) {
            (Rates::Listed(mut a), Rates::Listed(b)) => {
                a.extend(b);
                Rates::Listed(a)
            }
            (Rates::Unknown, more) => more,
            (kept, _) => kept,
        };
    }
}

/// One size (or range of sizes) a format comes in.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameSize {
    /// Exactly this size.
    Discrete {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Rates at this size.
        rates: Rates,
    },
    /// Any size from `min` to `max` in steps of `step` (width, height each).
    Stepwise {
        /// Smallest width and height.
        min: (u32, u32),
        /// Largest width and height.
        max: (u32, u32),
        /// Step of width and height.
        step: (u32, u32),
        /// Rates at these sizes.
        rates: Rates,
    },
}

impl FrameSize {
    /// The rates at this size.
    pub fn rates(&self) -> &Rates {
        match self {
            FrameSize::Discrete { rates, .. } | FrameSize::Stepwise { rates, .. } => rates,
        }
    }

    fn rates_mut(&mut self) -> &mut Rates {
        match self {
            FrameSize::Discrete { rates, .. } | FrameSize::Stepwise { rates, .. } => rates,
        }
    }

    /// The size in this entry closest to `want` (width, height), exact if it has it.
    pub fn closest(&self, want: (u32, u32)) -> (u32, u32) {
        match self {
            FrameSize::Discrete { width, height, .. } => (*width, *height),
            FrameSize::Stepwise { min, max, step, .. } => {
                let fit = |want: u32, min: u32, max: u32, step: u32| {
                    let step = step.max(1);
                    let clamped = want.clamp(min, max.max(min));
                    min + (clamped - min) / step * step
                };
                (
                    fit(want.0, min.0, max.0, step.0),
                    fit(want.1, min.1, max.1, step.1),
                )
            }
        }
    }
}

impl fmt::Display for FrameSize {
    /// `1280x720@30`, or `320x240-1920x1080` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameSize::Discrete { width, height, .. } => write!(f, "{width}x{height}")?,
            FrameSize::Stepwise { min, max, .. } => {
                write!(f, "{}x{}-{}x{}", min.0, min.1, max.0, max.1)?
            }
        }
        if let Some(max) = self.rates().max() {
            write!(f, "@{}", Fps(max))?;
        }
        Ok(())
    }
}

/// A frame rate as people write it: `30`, `7.5`.
pub struct Fps(pub f64);

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounded = (self.0 * 100.0).round() / 100.0;
        write!(f, "{rounded}")
    }
}

/// One format a camera offers.
#[derive(Clone, Debug, PartialEq)]
pub struct Format {
    /// The camera's name for it: the FourCC from v4l2-ctl (`YUYV`), or ffmpeg's
    /// name (`yuyv422`).
    pub name: String,
    /// Its description (`Motion-JPEG, compressed`).
    pub description: String,
    /// How it is coded.
    pub coding: Coding,
    /// Sizes, in the order listed.
    pub sizes: Vec<FrameSize>,
}

/// `v4l2-ctl --list-formats-ext -d DEV`: the single-planar video capture formats,
/// the only kind ffmpeg's v4l2 input reads. Both layouts are read: v4l-utils 1.14+
/// (`[0]: 'YUYV' (YUYV 4:2:2)`) and older (`Pixel Format: 'YUYV'` / `Name : …`).
pub fn parse_v4l2_ctl_formats(text: &str) -> Vec<Format> {
    let mut formats: Vec<Format> = Vec::new();
    // Whether the section being read is "Video Capture" (not output, metadata or
    // multiplanar).
    let mut capture = false;
    // Whether the last format line started a format we keep.
    let mut keeping = false;
    for line in text.lines().map(str::trim) {
        let (key, value) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        if key == "Type" {
            capture = value == "Video Capture";
        } else if let Some(fourcc) = format_line(line) {
            keeping = capture;
            if keeping {
                formats.push(Format {
                    coding: Coding::from_fourcc(&fourcc),
                    name: fourcc,
                    description: parenthesised(line).unwrap_or_default(),
                    sizes: Vec::new(),
                });
            }
        } else if !keeping {
            continue;
        } else if key == "Name" {
            if let Some(format) = formats.last_mut() {
                format.description = value.to_owned();
            }
        } else if key == "Size" {
            if let (Some(format), Some(size)) = (formats.last_mut(), parse_size(value)) {
                format.sizes.push(size);
            }
        } else if key == "Interval" {
            let size = formats.last_mut().and_then(|f| f.sizes.last_mut());
            if let (Some(size), Some(rates)) = (size, parse_interval(value)) {
                size.rates_mut().add(rates);
            }
        }
    }
    formats
}

/// The FourCC of a line that starts a format: `[0]: 'YUYV' (…)` or
/// `Pixel Format: 'YUYV' (compressed)`.
fn format_line(line: &str) -> Option<String> {
    let rest = if line.starts_with('[') {
        line.split_once("]:")?.1
    } else {
        line.strip_prefix("Pixel Format")?
            .trim_start()
            .strip_prefix(':')?
    };
    let rest = rest.trim_start().strip_prefix('\'')?;
    let (fourcc, _) = rest.split_once('\'')?;
    Some(fourcc.trim().to_owned())
}

/// The text in the outermost parentheses after the FourCC: `(Motion-JPEG, compressed)`.
fn parenthesised(line: &str) -> Option<String> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    (close > open).then(|| line[open + 1..close].to_owned())
}

/// `Discrete 640x480`, `Stepwise 32x32 - 1920x1080 with step 2/2` or
/// `Continuous 32x32 - 1920x1080`.
fn parse_size(value: &str) -> Option<FrameSize> {
    let (kind, rest) = value.split_once(' ')?;
    match kind {
        "Discrete" => {
            let (width, height) = parse_wxh(rest.split_whitespace().next()?)?;
            Some(FrameSize::Discrete {
                width,
                height,
                rates: Rates::Unknown,
            })
        }
        "Stepwise" | "Continuous" => {
            let mut words = rest.split_whitespace();
            let min = parse_wxh(words.next()?)?;
            let _dash = words.next()?;
            let max = parse_wxh(words.next()?)?;
            let step = match rest.split_once("with step ") {
                Some((_, s)) => {
                    let (w, h) = s.trim().split_once('/')?;
                    (w.trim().parse().ok()?, h.trim().parse().ok()?)
                }
                None => (1, 1),
            };
            Some(FrameSize::Stepwise {
                min,
                max,
                step,
                rates: Rates::Unknown,
            })
        }
        _ => None,
    }
}

fn parse_wxh(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// `Discrete 0.033s (30.000 fps)` or `Stepwise 0.033s - 1.000s with step 0.000s
/// (1.000-30.000 fps)`: the rates in the parentheses.
fn parse_interval(value: &str) -> Option<Rates> {
    let inside = parenthesised(value)?;
    let fps = inside.strip_suffix("fps")?.trim();
    match fps.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi): (f64, f64) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (lo.is_finite() && hi.is_finite()).then_some(Rates::Range(lo, hi))
        }
        None => {
            let rate: f64 = fps.parse().ok()?;
            rate.is_finite().then(|| Rates::Listed(vec![rate]))
        }
    }
}

/// `ffmpeg -f v4l2 -list_formats all -i DEV` (its stderr): lines like
/// `[video4linux2,v4l2 @ 0x…] Compressed:       mjpeg :          Motion-JPEG : 640x480 1280x720`
/// or `Raw : yuyv422 : YUYV 4:2:2 : {32-1920, 2}x{32-1080, 2}`. No rates: ffmpeg does
/// not list them.
pub fn parse_ffmpeg_formats(text: &str) -> Vec<Format> {
    let mut formats = Vec::new();
    for line in text.lines() {
        // Everything after the "[video4linux2,v4l2 @ 0x…]" prefix.
        let body = match line.find("] ") {
            Some(at) if line.starts_with('[') => &line[at + 2..],
            _ => line,
        };
        // "Compressed:" has no space before its colon, "Raw       :" has.
        let body = body.trim_start();
        let (compressed, rest) = if let Some(rest) = body.strip_prefix("Compressed") {
            (true, rest)
        } else if let Some(rest) = body.strip_prefix("Raw") {
            (false, rest)
        } else if let Some(rest) = body.strip_prefix("C ") {
            (true, rest)
        } else if let Some(rest) = body.strip_prefix("R ") {
            (false, rest)
        } else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let mut fields = rest.splitn(3, " : ");
        let (Some(name), Some(description), Some(sizes)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let sizes = sizes.trim_start();
        let sizes = sizes.strip_prefix("Emulated :").unwrap_or(sizes);
        let name = name.trim();
        formats.push(Format {
            coding: Coding::from_ffmpeg(compressed, name),
            name: name.to_owned(),
            description: description.trim().to_owned(),
            sizes: parse_ffmpeg_sizes(sizes),
        });
    }
    formats
}

/// ` 640x480 1280x720` and `{32-1920, 2}x{32-1080, 2}` entries.
fn parse_ffmpeg_sizes(text: &str) -> Vec<FrameSize> {
    let mut sizes = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.starts_with('{') {
            // {min-max, step}x{min-max, step}
            let Some(end) = rest.find("}x{").and_then(|x| {
                let close = rest[x + 3..].find('}')?;
                Some(x + 3 + close + 1)
            }) else {
                break;
            };
            if let Some(size) = parse_ffmpeg_range(&rest[..end]) {
                sizes.push(size);
            }
            rest = rest[end..].trim_start();
        } else {
            let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if let Some((width, height)) = parse_wxh(word) {
                sizes.push(FrameSize::Discrete {
                    width,
                    height,
                    rates: Rates::Unknown,
                });
            }
            rest = tail.trim_start();
        }
    }
    sizes
}

fn parse_ffmpeg_range(text: &str) -> Option<FrameSize> {
    let (w, h) = text.split_once("}x{")?;
    let part = |p: &str| -> Option<(u32, u32, u32)> {
        let p = p.trim_matches(|c| c == '{' || c == '}');
        let (range, step) = p.split_once(',')?;
        let (lo, hi) = range.split_once('-')?;
        Some((
            lo.trim().parse().ok()?,
            hi.trim().parse().ok()?,
            step.trim().parse().ok()?,
        ))
    };
    let (w, h) = (part(w)?, part(h)?);
    Some(FrameSize::Stepwise {
        min: (w.0, h.0),
        max: (w.1, h.1),
        step: (w.2, h.2),
        rates: Rates::Unknown,
    })
}

/// One group of `v4l2-ctl --list-devices`: a card and its device nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The card's name (`HD Pro Webcam C920`).
    pub name: String,
    /// Where it is attached (`usb-0000:00:14.0-1`, `platform:bcm2835-codec`).
    pub bus: String,
    /// Its video device nodes, in the order listed (`/dev/media*` left out).
    pub devices: Vec<String>,
}

impl Card {
    /// Whether the card is on a USB bus.
    pub fn is_usb(&self) -> bool {
        self.bus.starts_with("usb-")
    }
}

/// `v4l2-ctl --list-devices`:
///
/// ```text
/// HD Pro Webcam C920 (usb-0000:00:14.0-1):
///         /dev/video0
///         /dev/video1
///         /dev/media0
/// ```
pub fn parse_v4l2_ctl_devices(text: &str) -> Vec<Card> {
    let mut cards: Vec<Card> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            // "\t/dev/video0" or "\t/dev/video0 <- /dev/v4l/by-id/…"
            let Some(path) = line.split_whitespace().next() else {
                continue;
            };
            let is_video = path
                .rsplit('/')
                .next()
                .and_then(|name| name.strip_prefix("video"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if let (Some(card), true) = (cards.last_mut(), is_video) {
                card.devices.push(path.to_owned());
            }
        } else if let Some(head) = line.trim_end().strip_suffix(':') {
            let (name, bus) = match (head.rfind(" ("), head.ends_with(')')) {
                (Some(open), true) => (&head[..open], &head[open + 2..head.len() - 1]),
                _ => (head, ""),
            };
            cards.push(Card {
                name: name.trim().to_owned(),
                bus: bus.to_owned(),
                devices: Vec::new(),
            });
        }
    }
    cards
}

/// The H.264 encoders nalcast can use that an ffmpeg has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoders {
    /// `libx264` (x264, software).
    pub libx264: bool,
    /// `libopenh264` (Cisco's OpenH264, software).
    pub libopenh264: bool,
    /// `h264_v4l2m2m` (a V4L2 memory-to-memory hardware encoder).
    pub h264_v4l2m2m: bool,
}

/// `ffmpeg -encoders`: lines like ` V....D libx264   libx264 H.264 / AVC …`.
pub fn parse_ffmpeg_encoders(text: &str) -> Encoders {
    let mut found = Encoders::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(flags), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !flags.starts_with('V') || flags.len() != 6 {
            continue;
        }
        match name {
            "libx264" => found.libx264 = true,
            "libopenh264" => found.libopenh264 = true,
            "h264_v4l2m2m" => found.h264_v4l2m2m = true,
            _ => {}
        }
    }
    found
}

/// Camera listings as v4l2-ctl prints them, for tests.
#[cfg(test)]
pub(crate) mod tests_data {
    /// A Logitech C920 (the model with H.264 over UVC), as v4l-utils 1.22 lists it
    /// (abridged: fewer sizes).
    pub const C920: &str = "ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'YUYV' (YUYV 4:2:2)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.042s (24.000 fps)
\t\t\tInterval: Discrete 0.050s (20.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.100s (10.000 fps)
\t\t\tInterval: Discrete 0.133s (7.500 fps)
\t\tSize: Discrete 1920x1080
\t\t\tInterval: Discrete 0.200s (5.000 fps)
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

    /// A cheap UVC webcam (Logitech C270: MJPEG and YUYV, no H.264), abridged.
    pub const C270: &str = "ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'YUYV' (YUYV 4:2:2)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.067s (15.000 fps)
\t\tSize: Discrete 800x600
\t\t\tInterval: Discrete 0.050s (20.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.133s (7.500 fps)
\t[1]: 'MJPG' (Motion-JPEG, compressed)
\t\tSize: Discrete 640x480
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.067s (15.000 fps)
\t\tSize: Discrete 800x600
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\tSize: Discrete 1280x720
\t\t\tInterval: Discrete 0.033s (30.000 fps)
\t\t\tInterval: Discrete 0.067s (15.000 fps)
";
}

#[cfg(test)]
mod tests {
    use super::tests_data::C920;
    use super::*;

    #[test]
    fn a_c920_listing_gives_three_formats_with_sizes_and_rates() {
        let formats = parse_v4l2_ctl_formats(C920);
        let names: Vec<_> = formats.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["YUYV", "H264", "MJPG"]);
        assert_eq!(formats[0].coding, Coding::Raw("yuyv422".into()));
        assert_eq!(formats[1].coding, Coding::H264);
        assert_eq!(formats[2].coding, Coding::Mjpeg);
        assert_eq!(formats[2].description, "Motion-JPEG, compressed");
        assert_eq!(
            formats[0].sizes[1],
            FrameSize::Discrete {
                width: 1280,
                height: 720,
                rates: Rates::Listed(vec![10.0, 7.5])
            }
        );
        let shown: Vec<_> = formats[0].sizes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["640x480@30", "1280x720@10", "1920x1080@5"]);
    }

    #[test]
    fn old_v4l2_ctl_layout_and_stepwise_sizes_are_read() {
        let old = "ioctl: VIDIOC_ENUM_FMT
\tIndex       : 0
\tType        : Video Capture
\tPixel Format: 'MJPG' (compressed)
\tName        : MJPEG
\t\tSize: Discrete 960x720
\t\t\tInterval: Discrete 0.100s (10.000 fps)

\tIndex       : 1
\tType        : Video Capture
\tPixel Format: 'YUYV'
\tName        : YUV 4:2:2 (YUYV)
\t\tSize: Stepwise 32x32 - 1920x1080 with step 2/2
\t\t\tInterval: Stepwise 0.033s - 1.000s with step 0.000s (1.000-30.000 fps)
";
        let formats = parse_v4l2_ctl_formats(old);
        assert_eq!(formats.len(), 2);
        assert_eq!(
            (formats[0].name.as_str(), formats[0].description.as_str()),
            ("MJPG", "MJPEG")
        );
        assert_eq!(formats[1].description, "YUV 4:2:2 (YUYV)");
        assert_eq!(
            formats[1].sizes,
            [FrameSize::Stepwise {
                min: (32, 32),
                max: (1920, 1080),
                step: (2, 2),
                rates: Rates::Range(1.0, 30.0)
            }]
        );
        assert_eq!(formats[1].sizes[0].closest((1281, 721)), (1280, 720));
        assert_eq!(formats[1].sizes[0].closest((4000, 8)), (1920, 32));
    }

    #[test]
    fn multiplanar_and_metadata_sections_are_left_out() {
        // A Pi's codec node (memory-to-memory, multiplanar): ffmpeg's v4l2 input
        // cannot read it, and its H.264 is not a camera's.
        let m2m = "ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture Multiplanar

\t[0]: 'H264' (H.264, compressed)
\t\tSize: Stepwise 32x32 - 1920x1920 with step 2/2
";
        assert!(parse_v4l2_ctl_formats(m2m).is_empty());
        // A UVC camera's second node holds metadata only.
        assert!(
            parse_v4l2_ctl_formats("ioctl: VIDIOC_ENUM_FMT\n\tType: Video Capture\n\n").is_empty()
        );
    }

    #[test]
    fn an_ffmpeg_listing_is_read() {
        let text = "[video4linux2,v4l2 @ 0x55d0c8e4a8c0] Raw       :     yuyv422 :           YUYV 4:2:2 : 640x480 160x120 1280x720
[video4linux2,v4l2 @ 0x55d0c8e4a8c0] Compressed:       mjpeg :          Motion-JPEG : 640x480 1280x720 1920x1080
[video4linux2,v4l2 @ 0x55d0c8e4a8c0] Compressed:        h264 :                H.264 : 640x480 1920x1080
[video4linux2,v4l2 @ 0x55d0c8e4a8c0] Raw       :     nv12 :           Y/UV 4:2:0 : {32-1920, 2}x{32-1080, 2}
[video4linux2,v4l2 @ 0x55d0c8e4a8c0] Compressed: Unsupported :                 HEVC : 1920x1080
/dev/video0: Immediate exit requested
";
        let formats = parse_ffmpeg_formats(text);
        let codings: Vec<_> = formats.iter().map(|f| f.coding.clone()).collect();
        assert_eq!(
            codings,
            [
                Coding::Raw("yuyv422".into()),
                Coding::Mjpeg,
                Coding::H264,
                Coding::Raw("nv12".into()),
                Coding::Other
            ]
        );
        assert_eq!(formats[1].description, "Motion-JPEG");
        assert_eq!(formats[0].sizes.len(), 3);
        assert_eq!(
            formats[3].sizes,
            [FrameSize::Stepwise {
                min: (32, 32),
                max: (1920, 1080),
                step: (2, 2),
                rates: Rates::Unknown
            }]
        );
        // Old ffmpeg's short layout.
        let old = "[video4linux2 @ 0x160f8c0] C : mjpeg : MJPEG : 640x480 160x90";
        assert_eq!(parse_ffmpeg_formats(old)[0].coding, Coding::Mjpeg);
    }

    #[test]
    fn devices_are_grouped_by_card_with_their_bus() {
        let text = "bcm2835-codec-decode (platform:bcm2835-codec):
\t/dev/video10
\t/dev/video11
\t/dev/media2

HD Pro Webcam C920 (usb-0000:01:00.0-1.3):
\t/dev/video0 <- /dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0
\t/dev/video1
\t/dev/media4

";
        let cards = parse_v4l2_ctl_devices(text);
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[1].name, "HD Pro Webcam C920");
        assert_eq!(cards[1].bus, "usb-0000:01:00.0-1.3");
        assert_eq!(cards[1].devices, ["/dev/video0", "/dev/video1"]);
        assert!(cards[1].is_usb() && !cards[0].is_usb());
    }

    #[test]
    fn encoders_are_found_by_name() {
        let text = " V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V..... h264_v4l2m2m         V4L2 mem2mem H.264 encoder wrapper (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
";
        assert_eq!(
            parse_ffmpeg_encoders(text),
            Encoders {
                libx264: true,
                libopenh264: false,
                h264_v4l2m2m: true
            }
        );
    }

    #[test]
    fn rates_pick_the_nearest_offered() {
        let listed = Rates::Listed(vec![30.0, 15.0, 7.5]);
        assert!(listed.offers(29.97));
        assert_eq!(listed.nearest(25.0), 15.0);
        assert_eq!(listed.nearest(5.0), 7.5);
        assert_eq!(Rates::Range(1.0, 30.0).nearest(60.0), 30.0);
        assert_eq!(Rates::Unknown.nearest(25.0), 25.0);
        assert_eq!(Fps(7.5).to_string(), "7.5");
        assert_eq!(Fps(30.000).to_string(), "30");
    }

    #[test]
    fn rubbish_never_panics() {
        for text in [
            "",
            "[",
            "[0]: '",
            "Size: Discrete x",
            "Size: Stepwise 1x1 - ",
            "Interval: Discrete (fps)",
            "\t/dev/video0",
            "(:",
            "[x] Raw : a : b : {1-2, 3}x{",
            "[x] Raw : a : b : {}x{}",
            " V..... ",
        ] {
            let _ = parse_v4l2_ctl_formats(text);
            let _ = parse_ffmpeg_formats(text);
            let _ = parse_v4l2_ctl_devices(text);
            let _ = parse_ffmpeg_encoders(text);
        }
    }
}
