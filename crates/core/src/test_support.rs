//! Builders for unit tests: shared frames around the test kit's access units.
use std::sync::Arc;
use std::time::Instant;

use crate::SharedAu;

pub use testkit::au::sized as access_unit;

/// A frame numbered `seq` of exactly `len` bytes.
pub fn unit(seq: u32, keyframe: bool, len: usize) -> Arc<SharedAu> {
    Arc::new(SharedAu::new(
        seq,
        access_unit(keyframe, len),
        Instant::now(),
    ))
}
