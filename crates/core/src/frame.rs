//! A published frame: one access unit, numbered, with its framed message built once.
use std::time::Instant;

use bytes::Bytes;
use nalcast_h264::AccessUnit;

use crate::protocol::{self, FLAG_CATCH_UP, FLAG_KEYFRAME};

/// One access unit as the hub shares it with every viewer (behind an `Arc`).
#[derive(Debug)]
pub struct Frame {
    /// Sequence number assigned by the hub, increasing across source restarts.
    pub seq: u32,
    /// The access unit.
    pub au: AccessUnit,
    /// The framed-protocol message for live delivery, built once for all viewers.
    pub framed: Bytes,
    /// When the hub received it (for the server-added latency histogram).
    pub published: Instant,
}

impl Frame {
    /// Wraps an access unit, building its framed message.
    pub fn new(seq: u32, au: AccessUnit, published: Instant) -> Self {
        let flags = if au.keyframe { FLAG_KEYFRAME } else { 0 };
        let framed = protocol::encode_access_unit(flags, seq, au.timestamp_us, &au.data);
        Frame {
            seq,
            au,
            framed,
            published,
        }
    }

    /// Whether this frame is a keyframe.
    pub fn keyframe(&self) -> bool {
        self.au.keyframe
    }

    /// Size of the access unit in bytes.
    pub fn len(&self) -> usize {
        self.au.data.len()
    }

    /// Whether the access unit is empty (never, for assembled frames).
    pub fn is_empty(&self) -> bool {
        self.au.data.is_empty()
    }

    /// The framed message with the catch-up flag set. Copies: only used when a
    /// viewer joins or resumes, never on the live path.
    pub fn framed_catch_up(&self) -> Bytes {
        let mut copy = self.framed.to_vec();
        copy[1] |= FLAG_CATCH_UP;
        Bytes::from(copy)
    }
}
