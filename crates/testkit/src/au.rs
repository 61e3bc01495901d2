//! Access units built by hand, for tests of what comes after the assembler.
use std::sync::Arc;

use bytes::Bytes;
use nalcast_h264::{AccessUnit, ParamSets, SpsDetails, StreamInfo};

use crate::fixtures::{unhex, PPS};

/// The parameter sets of an SPS given in hex, with the fixture PPS.
pub fn params(sps_hex: &str) -> Arc<ParamSets> {
    let sps = Bytes::from(unhex(sps_hex));
    Arc::new(ParamSets::single(sps, vec![Bytes::from_static(PPS)]).expect("a valid SPS"))
}

/// A NAL unit of `len` bytes: `header`, then `fill`.
pub fn nal(header: u8, len: usize, fill: u8) -> Vec<u8> {
    let mut v = vec![fill; len.max(1)];
    v[0] = header;
    v
}

/// An access unit of these NAL units (header byte first), Annex-B with 4-byte
/// start codes as the assembler makes them; checked for the assembler's
/// invariants.
pub fn access_unit<N: AsRef<[u8]>>(
    params: &Arc<ParamSets>,
    nals: &[N],
    keyframe: bool,
    timestamp_us: u64,
) -> AccessUnit {
    let mut data = Vec::new();
    let mut ranges = Vec::new();
    for n in nals {
        let start = data.len() as u32;
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(n.as_ref());
        ranges.push(start..data.len() as u32);
    }
    let au = AccessUnit {
        data: Bytes::from(data),
        nals: ranges,
        keyframe,
        params: params.clone(),
        timestamp_us,
    };
    au.check_invariants().expect("a well-formed access unit");
    au
}

/// A keyframe as the assembler makes one: AUD, SPS, PPS, an SEI and an IDR slice
/// of `slice_len` bytes (not decodable: for packaging and queue logic).
pub fn keyframe(params: &Arc<ParamSets>, timestamp_us: u64, slice_len: usize) -> AccessUnit {
    let mut nals = vec![vec![0x09, 0xf0]];
    nals.extend(params.sps.iter().chain(&params.pps).map(|p| p.to_vec()));
    nals.push(nal(0x06, 12, 0x05));
    nals.push(nal(0x65, slice_len, 0x88));
    access_unit(params, &nals, true, timestamp_us)
}

/// A delta frame: AUD and a P slice of `slice_len` bytes (`reference`: nal_ref_idc
/// 2, else 0, a disposable picture).
pub fn delta(
    params: &Arc<ParamSets>,
    timestamp_us: u64,
    slice_len: usize,
    reference: bool,
) -> AccessUnit {
    let header = if reference { 0x41 } else { 0x01 };
    access_unit(
        params,
        &[vec![0x09, 0x30], nal(header, slice_len, 0x9a)],
        false,
        timestamp_us,
    )
}

/// A [`keyframe`] or a reference [`delta`] frame.
pub fn frame(
    params: &Arc<ParamSets>,
    keyframe_: bool,
    timestamp_us: u64,
    slice_len: usize,
) -> AccessUnit {
    if keyframe_ {
        keyframe(params, timestamp_us, slice_len)
    } else {
        delta(params, timestamp_us, slice_len, true)
    }
}

/// An access unit of exactly `len` bytes (at least 5): one IDR or P slice NAL
/// unit, with stand-in parameter sets. Not well-formed (a keyframe carries no
/// SPS/PPS): for queue, cache and fan-out logic that counts bytes and never looks
/// inside.
pub fn sized(keyframe: bool, len: usize) -> AccessUnit {
    thread_local! {
        static STAND_IN: Arc<ParamSets> = Arc::new(ParamSets {
            sps: vec![Bytes::from_static(&[0x67])],
            pps: vec![Bytes::from_static(&[0x68])],
            active: 0,
            info: StreamInfo {
                width: 64,
                height: 64,
                profile_idc: 66,
                constraint_flags: 0xc0,
                level_idc: 31,
                codec: "avc1.42C01F".into(),
                fps: None,
                baseline_compatible: true,
            },
            details: SpsDetails {
                poc_type: 2,
                max_num_reorder_frames: None,
                max_num_ref_frames: 1,
                frame_mbs_only: true,
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
            },
            // The stand-in SPS is a bare header: nothing to read.
            parsed: Vec::new(),
        });
    }
    let len = len.max(5);
    let mut data = vec![0u8; len];
    data[3] = 1;
    data[4] = if keyframe { 0x65 } else { 0x41 };
    AccessUnit {
        data: Bytes::from(data),
        nals: std::iter::once(0..len as u32).collect(),
        keyframe,
        params: STAND_IN.with(Arc::clone),
        timestamp_us: 0,
    }
}
