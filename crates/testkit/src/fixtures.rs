//! Parameter sets as real encoders write them.

/// Bytes from hex digits, white space between them allowed (fixtures are written
/// the way `xxd -p` shows them); anything else is a broken fixture and panics.
pub fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "hex digits come in pairs: {hex}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or_default();
            u8::from_str_radix(text, 16)
                .unwrap_or_else(|e| panic!("bad hex {text:?} in {hex}: {e}"))
        })
        .collect()
}

/// x264's Constrained Baseline SPS for 1280x720 (`ffmpeg -c:v libx264 -profile:v
/// baseline`), id 0.
pub const SPS_BASELINE_720P: &str = "6742c01fd9005005bb0110000003001000000303c0f1832480";
/// The same with constraint_set2 set, as some hardware encoders send it: other
/// parameter sets, same picture.
pub const SPS_BASELINE_720P_E0: &str = "6742e01fd9005005bb0110000003001000000303c0f1832480";
/// x264's Main SPS for 1280x720, level 3.1.
pub const SPS_MAIN_720P: &str = "674d401feca02802dd8088000003000800000301e078c18cb0";
/// x264's Main SPS for 640x360, level 3.0.
pub const SPS_MAIN_360P: &str = "674d401eeca05017fcb80880000003008000001e078b16cb";
/// x264's Main SPS for 1280x720, level 4.0.
pub const SPS_MAIN_720P_L40: &str = "674d4028eca02802dd8088000003000800000301e078c18cb0";
/// x264's High SPS for 1920x1080, level 4.0.
pub const SPS_HIGH_1080P: &str = "67640028acd940780227e5c044000003000400000300f03c60c658";
/// x264's High SPS for 1280x720, level 3.1.
pub const SPS_HIGH_720P: &str = "6764001facd9405005bb0110000003001000000303c0f1831960";
/// x264's High SPS for 1920x1080, level 5.0.
pub const SPS_HIGH_1080P_L50: &str = "67640032acd940780227e5c044000003000400000300f03c60c658";
/// A PPS (id 0, referring to SPS 0) as x264 writes it for Baseline.
pub const PPS: &[u8] = &[0x68, 0xce, 0x38, 0x80];
