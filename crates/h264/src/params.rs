//! SPS/PPS parsing and the RFC 6381 codec string, all done by `h264-reader`: its
//! SPS parser, its profile and constraint flags, its codec string and its bit
//! reader for the leading ids of parameter sets and slice headers.
use bytes::Bytes;
use h264_reader::nal::sps::{Profile, SeqParameterSet};
use h264_reader::rbsp::{BitRead, BitReader, ByteReader};

use crate::poc::SpsDetails;
use crate::ParseError;

/// One SPS, parsed once: h264-reader's reading of it (which picture ordering
/// needs), what viewers are told and what packaging needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSps {
    /// h264-reader's reading.
    pub sps: SeqParameterSet,
    /// What a viewer needs to know.
    pub info: StreamInfo,
    /// What fMP4 packaging and picture ordering need.
    pub details: SpsDetails,
}

impl ParsedSps {
    /// Parses an SPS NAL unit (header byte first, no start code).
    pub fn parse(sps_nal: &[u8]) -> Result<ParsedSps, ParseError> {
        let sps = crate::poc::parse_sps(sps_nal)?;
        Ok(ParsedSps {
            info: StreamInfo::from_parsed(&sps)?,
            details: SpsDetails::from_parsed(&sps),
            sps,
        })
    }
}

/// What a viewer needs to know about a stream, from its SPS.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    /// Displayed width in pixels (cropping applied).
    pub width: u32,
    /// Displayed height in pixels (cropping applied).
    pub height: u32,
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, …).
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// `level_idc` (31 = level 3.1).
    pub level_idc: u8,
    /// RFC 6381 codec string, e.g. `avc1.42C01F`.
    pub codec: String,
    /// Frame rate from the VUI timing info, when present.
    pub fps: Option<f64>,
    /// Whether a Baseline-only decoder (Broadway.js) can play it: Baseline profile,
    /// or another profile whose constraint_set0 flag promises Baseline conformance.
    /// (constraint_set1 promises Main conformance, which a Baseline decoder cannot
    /// rely on: CABAC and B-frames stay allowed.)
    pub baseline_compatible: bool,
}

impl StreamInfo {
    /// Parses an SPS NAL unit (header byte first, no start code).
    pub fn from_sps(sps_nal: &[u8]) -> Result<StreamInfo, ParseError> {
        Ok(ParsedSps::parse(sps_nal)?.info)
    }

    fn from_parsed(sps: &SeqParameterSet) -> Result<StreamInfo, ParseError> {
        let bad = |what: String| ParseError::BadParameterSet(what);
        let (width, height) = sps
            .pixel_dimensions()
            .map_err(|e| bad(format!("SPS size: {e:?}")))?;
        let profile = sps.profile();
        let baseline_compatible =
            matches!(profile, Profile::Baseline | Profile::ConstrainedBaseline)
                || sps.constraint_flags.flag0();
        Ok(StreamInfo {
            width,
            height,
            profile_idc: profile.profile_idc(),
            constraint_flags: u8::from(sps.constraint_flags),
            level_idc: sps.level_idc,
            codec: sps.rfc6381().to_string(),
            fps: sps.fps().filter(|f| f.is_finite() && *f > 0.0),
            baseline_compatible,
        })
    }

    /// The profile's name, e.g. "Main" or "Constrained Baseline", as h264-reader
    /// tells it from profile_idc and the constraint flags.
    pub fn profile_name(&self) -> &'static str {
        match Profile::from_profile_idc(self.profile_idc.into(), self.constraint_flags.into()) {
            Profile::Baseline => "Baseline",
            Profile::ConstrainedBaseline => "Constrained Baseline",
            Profile::Main => "Main",
            Profile::Extended => "Extended",
            Profile::High => "High",
            Profile::ProgressiveHigh => "Progressive High",
            Profile::ConstrainedHigh => "Constrained High",
            Profile::High10 | Profile::High10Intra => "High 10",
            Profile::High422 | Profile::High422Intra => "High 4:2:2",
            Profile::High444 | Profile::High444Intra => "High 4:4:4",
            _ => "an unusual",
        }
    }

    /// A warning for streams that Broadway.js (Baseline only) cannot play.
    pub fn compatibility_warning(&self) -> Option<String> {
        if self.baseline_compatible {
            return None;
        }
        Some(format!(
            "the stream uses {} profile ({}): browsers with neither WebCodecs nor Media Source Extensions \
             (Broadway.js) cannot play it; such viewers need the HTTPS address (start nalcast with \
             --tls self-signed), or make the camera send Baseline (rpicam-vid --profile baseline, \
             ffmpeg -profile:v baseline)",
            self.profile_name(),
            self.codec
        ))
    }
}

/// The parameter sets in force, kept by id as the standard has them (a stream may
/// carry several SPS and PPS, e.g. one per picture size), and what the active one
/// says.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSets {
    /// Every SPS NAL unit seen (no start code), ordered by id; never empty.
    pub sps: Vec<Bytes>,
    /// Every PPS NAL unit seen (no start code), ordered by id; never empty.
    pub pps: Vec<Bytes>,
    /// Which of `sps` is active: the one the pictures since the last keyframe use
    /// (through the PPS their slices name).
    pub active: usize,
    /// Parsed from the active SPS.
    pub info: StreamInfo,
    /// Parsed from the active SPS, with `info`.
    pub details: SpsDetails,
    /// Every SPS of `sps` as h264-reader read it, in the same order (for picture
    /// ordering, which needs them all): each SPS is parsed once, when it comes.
    pub parsed: Vec<SeqParameterSet>,
}

impl ParamSets {
    /// Parameter sets of one SPS and its PPS list (the common case: a camera).
    pub fn single(sps: Bytes, pps: Vec<Bytes>) -> Result<ParamSets, ParseError> {
        let ParsedSps {
            sps: parsed,
            info,
            details,
        } = ParsedSps::parse(&sps)?;
        Ok(ParamSets {
            sps: vec![sps],
            pps,
            active: 0,
            info,
            details,
            parsed: vec![parsed],
        })
    }

    /// The active SPS NAL unit.
    pub fn active_sps(&self) -> &Bytes {
        &self.sps[self.active.min(self.sps.len().saturating_sub(1))]
    }

    /// Every SPS, the active one first (as an avcC lists them: readers take the
    /// first for the profile and size).
    pub fn sps_active_first(&self) -> impl Iterator<Item = &Bytes> {
        let active = self.active_sps();
        std::iter::once(active).chain(self.sps.iter().filter(move |s| !std::ptr::eq(*s, active)))
    }
}

/// Reads the RBSP of a NAL unit (header byte skipped, emulation prevention removed
/// as it goes), so reading the first fields touches only the first bytes.
pub(crate) fn rbsp_reader(nal: &[u8]) -> impl BitRead + '_ {
    BitReader::new(ByteReader::skipping_h264_header(nal))
}

/// `seq_parameter_set_id` of an SPS NAL unit.
pub(crate) fn sps_id(nal: &[u8]) -> Option<u32> {
    let mut r = rbsp_reader(nal);
    r.skip(24, "profile_idc, constraint flags, level_idc")
        .ok()?;
    r.read_ue("seq_parameter_set_id").ok().filter(|id| *id < 32)
}

/// `pic_parameter_set_id` and `seq_parameter_set_id` of a PPS NAL unit: which SPS
/// its pictures use.
pub(crate) fn pps_ids(nal: &[u8]) -> Option<(u32, u32)> {
    let mut r = rbsp_reader(nal);
    let pps = r
        .read_ue("pic_parameter_set_id")
        .ok()
        .filter(|id| *id < 256)?;
    let sps = r
        .read_ue("seq_parameter_set_id")
        .ok()
        .filter(|id| *id < 32)?;
    Some((pps, sps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::fixtures::*;

    // An SPS for 1280x720 Baseline level 3.1, written by hand from the spec's syntax:
    // profile 66, constraint 0xC0, level 31, sps_id 0, log2_max_frame_num-4 = 0,
    // poc type 2, max refs 1, gaps 0, width 80 MBs, height 45 MBs, frame_mbs_only 1,
    // direct_8x8 1, no cropping, no VUI.
    fn sps_720p() -> Vec<u8> {
        let mut bits = String::new();
        let ue = |v: u32| {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            format!("{}{:b}", "0".repeat(n as usize - 1), x)
        };
        bits += &ue(0); // sps id
        bits += &ue(0); // log2_max_frame_num_minus4
        bits += &ue(2); // pic_order_cnt_type
        bits += &ue(1); // max_num_ref_frames
        bits += "0"; // gaps
        bits += &ue(79); // pic_width_in_mbs_minus1
        bits += &ue(44); // pic_height_in_map_units_minus1
        bits += "1"; // frame_mbs_only
        bits += "1"; // direct_8x8_inference
        bits += "0"; // frame_cropping
        bits += "0"; // vui
        bits += "1"; // rbsp stop bit
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let mut out = vec![0x67, 66, 0xc0, 31];
        for chunk in bits.as_bytes().chunks(8) {
            out.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap_or("0"), 2).unwrap_or(0));
        }
        out
    }

    #[test]
    fn parses_size_profile_and_codec_string() {
        let info = StreamInfo::from_sps(&sps_720p()).expect("valid SPS");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.codec, "avc1.42C01F");
        assert!(info.baseline_compatible);
        assert!(info.compatibility_warning().is_none());
        assert_eq!(sps_id(&sps_720p()), Some(0));
    }

    /// SPS NAL units as x264 (ffmpeg -c:v libx264 -profile:v P -level L) writes
    /// them; the 42E01F one is x264's Baseline SPS with constraint_set2 added, as
    /// some hardware encoders send.
    #[test]
    fn profiles_and_baseline_compatibility_from_real_sps() {
        // (SPS, codec, profile, Broadway can play it, size)
        let cases = [
            (
                SPS_BASELINE_720P,
                "avc1.42C01F",
                "Constrained Baseline",
                true,
                (1280, 720),
            ),
            (
                SPS_BASELINE_720P_E0,
                "avc1.42E01F",
                "Constrained Baseline",
                true,
                (1280, 720),
            ),
            (SPS_MAIN_720P, "avc1.4D401F", "Main", false, (1280, 720)),
            (SPS_MAIN_360P, "avc1.4D401E", "Main", false, (640, 360)),
            (SPS_MAIN_720P_L40, "avc1.4D4028", "Main", false, (1280, 720)),
            (SPS_HIGH_1080P, "avc1.640028", "High", false, (1920, 1080)),
            (SPS_HIGH_720P, "avc1.64001F", "High", false, (1280, 720)),
            (
                SPS_HIGH_1080P_L50,
                "avc1.640032",
                "High",
                false,
                (1920, 1080),
            ),
        ];
        for (hex, codec, profile, baseline, size) in cases {
            let info = StreamInfo::from_sps(&unhex(hex)).expect(codec);
            assert_eq!(info.codec, codec);
            assert_eq!(info.profile_name(), profile, "{codec}");
            assert_eq!(info.baseline_compatible, baseline, "{codec}");
            match info.compatibility_warning() {
                None => assert!(baseline, "{codec}: no warning"),
                // It names the profile and both ways out.
                Some(w) => assert!(
                    !baseline
                        && w.contains(&format!("{profile} profile ({codec})"))
                        && w.contains("--tls self-signed")
                        && w.contains("--profile baseline"),
                    "{codec}: {w}"
                ),
            }
            assert_eq!((info.width, info.height), size, "{codec}");
            assert_eq!(sps_id(&unhex(hex)), Some(0), "{codec}");
        }
        // Main with constraint_set0 (Baseline-conformant content) is playable.
        let mut main = unhex(SPS_MAIN_720P);
        main[2] = 0xc0;
        assert!(
            StreamInfo::from_sps(&main)
                .expect("valid")
                .baseline_compatible
        );
    }

    #[test]
    fn garbage_sps_is_an_error_not_a_panic() {
        for bad in [
            &[0x67][..],
            &[0x67, 66],
            &[0x67, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(StreamInfo::from_sps(bad).is_err());
        }
    }
}
