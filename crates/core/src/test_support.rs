//! Builders for unit tests.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nalcast_h264::{AccessUnit, ParamSets, StreamInfo};

use crate::SharedAu;

/// A fake access unit of `len` bytes (not decodable; for queue logic only).
pub fn access_unit(keyframe: bool, len: usize) -> AccessUnit {
    thread_local! {
        static PARAMS: Arc<ParamSets> = Arc::new(ParamSets {
            sps: Bytes::from_static(&[0x67]),
            pps: vec![Bytes::from_static(&[0x68])],
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
        params: PARAMS.with(|p| p.clone()),
        timestamp_us: 0,
    }
}

/// A frame numbered `seq`.
pub fn unit(seq: u32, keyframe: bool, len: usize) -> Arc<SharedAu> {
    Arc::new(SharedAu::new(
        seq,
        access_unit(keyframe, len),
        Instant::now(),
    ))
}
