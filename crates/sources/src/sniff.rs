//! What a source's first bytes are, when they are not Annex-B H.264: a container
//! (MP4, Matroska, MPEG-TS, AVI, FLV), MJPEG, or H.265. Fed to the H.264 parser,
//! those make a flood of "bad input" lines; told apart here, they make one line
//! that says what the input is and what to run instead.

/// A format nalcast does not take as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// MP4 or QuickTime (an `ftyp`, `moov`, `mdat`, `free` or `wide` box first).
    Mp4,
    /// Matroska or WebM (an EBML header).
    Matroska,
    /// MPEG transport stream (sync bytes every 188).
    MpegTs,
    /// AVI (RIFF … AVI).
    Avi,
    /// Flash video.
    Flv,
    /// JPEG pictures (a USB camera's MJPEG).
    Mjpeg,
    /// H.265 (HEVC) in Annex-B: its parameter sets' headers.
    H265,
}

impl Foreign {
    /// What it is and what to do, for a person: one line.
    pub fn advice(self, what: &str) -> String {
        let convert = "-c:v copy -bsf:v h264_mp4toannexb -f h264";
        match self {
            Foreign::Mp4 | Foreign::Matroska | Foreign::MpegTs | Foreign::Avi | Foreign::Flv => {
                format!(
                    "{what} is {}, not a raw Annex-B H.264 stream: play it through ffmpeg \
                     (--source 'exec:ffmpeg -re -stream_loop -1 -i FILE {convert} -') or \
                     convert it once (ffmpeg -i FILE {convert} FILE.h264), then --source file:FILE.h264",
                    self.name()
                )
            }
            Foreign::Mjpeg => format!(
                "{what} is MJPEG (JPEG pictures), not H.264: for a USB camera use --source usb \
                 (nalcast encodes MJPEG with ffmpeg), or encode it yourself \
                 (--source 'exec:ffmpeg … -c:v libx264 -tune zerolatency -f h264 -')"
            ),
            Foreign::H265 => format!(
                "{what} is H.265 (HEVC), which nalcast does not serve: make the camera or \
                 encoder send H.264 (rpicam-vid --codec h264; ffmpeg -c:v libx264)"
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Foreign::Mp4 => "an MP4/QuickTime file",
            Foreign::Matroska => "a Matroska/WebM file",
            Foreign::MpegTs => "an MPEG transport stream",
            Foreign::Avi => "an AVI file",
            Foreign::Flv => "a Flash video",
            Foreign::Mjpeg => "MJPEG",
            Foreign::H265 => "H.265",
        }
    }
}

/// Bytes enough to tell: a few MPEG-TS packets, an MP4 box header.
pub const SNIFF_BYTES: usize = 3 * 188 + 1;

/// The format of a stream beginning with `first` (as much of it as there is, up
/// to [`SNIFF_BYTES`]), if it is one nalcast does not take; `None` for H.264 and
/// for anything not recognised (the parser then says what it finds).
pub fn foreign(first: &[u8]) -> Option<Foreign> {
    let at = |i: usize, bytes: &[u8]| first.get(i..i + bytes.len()) == Some(bytes);
    if ["ftyp", "moov", "mdat", "free", "wide"]
        .iter()
        .any(|b| at(4, b.as_bytes()))
    {
        return Some(Foreign::Mp4);
    }
    if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(Foreign::Matroska);
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return Some(Foreign::Avi);
    }
    if at(0, b"FLV") {
        return Some(Foreign::Flv);
    }
    if at(0, &[0xff, 0xd8, 0xff]) {
        return Some(Foreign::Mjpeg);
    }
    if first.len() > 2 * 188 && first[0] == 0x47 && first[188] == 0x47 && first[376] == 0x47 {
        return Some(Foreign::MpegTs);
    }
    // The first NAL unit: H.265's VPS, SPS and PPS headers (types 32-34, layer 0,
    // temporal id 1) read as H.264 types 0, 2 and 4, which no encoder starts with.
    let start = first.windows(3).position(|w| w == [0, 0, 1])?;
    let header = first.get(start + 3..start + 5)?;
    (matches!(header[0], 0x40 | 0x42 | 0x44) && header[1] == 0x01).then_some(Foreign::H265)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_pictures_and_hevc_are_told_apart_from_h264() {
        let mut ts = vec![0u8; 600];
        for i in [0, 188, 376, 564] {
            ts[i] = 0x47;
        }
        let cases: [(&[u8], Option<Foreign>); 9] = [
            (
                b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
                Some(Foreign::Mp4),
            ),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", Some(Foreign::Matroska)),
            (b"RIFF\x00\x10\x00\x00AVI LIST", Some(Foreign::Avi)),
            (b"FLV\x01\x05", Some(Foreign::Flv)),
            (b"\xff\xd8\xff\xe0\x00\x10JFIF", Some(Foreign::Mjpeg)),
            (&ts, Some(Foreign::MpegTs)),
            (
                b"\x00\x00\x00\x01\x40\x01\x0c\x01\xff\xff",
                Some(Foreign::H265),
            ),
            (b"\x00\x00\x00\x01\x67\x42\xc0\x1f\xd9", None),
            (b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(foreign(bytes), want, "{bytes:02x?}");
        }
        assert!(Foreign::Mp4.advice("x").contains("h264_mp4toannexb"));
    }
}
