//! An access unit as the hub publishes it: numbered, with its protocol message
//! built once for every viewer.
//!
//! Words, as the code uses them: an *access unit* (`au`) is one coded picture with
//! its NAL units — what a camera calls a frame; a *message* is one message of the
//! WebSocket protocol (core/protocol.rs); a *WebSocket frame* is RFC 6455's unit
//! on the wire (the server's websocket/framing.rs), and only that is called a frame
//! in code. "Frames" in metric names and logs mean pictures, as users count them.
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use nalcast_h264::{AccessUnit, ParamSets};

use crate::protocol::{self, FLAG_KEYFRAME};

/// One access unit as the hub shares it with every viewer (behind an `Arc`).
#[derive(Debug)]
pub struct SharedAu {
    /// Sequence number assigned by the hub, increasing across source restarts.
    pub seq: u32,
    /// The access unit.
    pub au: AccessUnit,
    /// The framed-protocol message for live delivery, built once for all viewers.
    pub message: Bytes,
    /// When the hub received it (for the server-added latency histogram).
    pub published: Instant,
    /// The same access unit for `/ws/fmp4` viewers, when it could be packaged.
    pub fmp4: Option<Fmp4Unit>,
    /// Its RTP payloads (RFC 6184 packets), made the first time a WebRTC viewer
    /// needs them: packetized once for every viewer, each viewer sending the same
    /// shared bytes under its own sequence numbers.
    rtp: OnceLock<Arc<[Arc<[u8]>]>>,
}

/// An access unit's messages for `/ws/fmp4` (fragmented MP4 for Media Source
/// Extensions), built once by the hub for every such viewer.
#[derive(Clone, Debug)]
pub struct Fmp4Unit {
    /// The init-segment message for the parameter sets in force: the same `Bytes`
    /// for every access unit that uses them.
    pub init: Bytes,
    /// The fragment message (moof + mdat) for live delivery.
    pub message: Bytes,
}

impl Fmp4Unit {
    /// The init segment itself (ftyp + moov), without the message header: a slice
    /// of the shared message, not a copy.
    pub fn init_segment(&self) -> Bytes {
        self.init.slice(self.init.len().min(1)..)
    }

    /// The fragment itself (moof + mdat), without the message header: a slice of
    /// the shared message, not a copy.
    pub fn fragment(&self) -> Bytes {
        self.message
            .slice(self.message.len().min(protocol::AU_HEADER_LEN)..)
    }
}

impl SharedAu {
    /// Wraps an access unit, building its framed message.
    pub fn new(seq: u32, au: AccessUnit, published: Instant) -> Self {
        let flags = if au.keyframe { FLAG_KEYFRAME } else { 0 };
        let message = protocol::encode_access_unit(flags, seq, au.timestamp_us, &au.data);
        SharedAu {
            seq,
            au,
            message,
            published,
            fmp4: None,
            rtp: OnceLock::new(),
        }
    }

    /// The same, with its `/ws/fmp4` messages.
    pub fn with_fmp4(mut self, fmp4: Fmp4Unit) -> Self {
        self.fmp4 = Some(fmp4);
        self
    }

    /// The access unit's RTP payloads, made by `packetize` from its Annex-B bytes
    /// the first time anyone asks; the same shared slices for everyone after.
    pub fn rtp_payloads(
        &self,
        packetize: impl FnOnce(&[u8]) -> Vec<Arc<[u8]>>,
    ) -> Arc<[Arc<[u8]>]> {
        self.rtp
            .get_or_init(|| packetize(&self.au.data).into())
            .clone()
    }

    /// Whether this access unit is a keyframe.
    pub fn keyframe(&self) -> bool {
        self.au.keyframe
    }

    /// The parameter sets it is decoded with.
    pub fn params(&self) -> &Arc<ParamSets> {
        &self.au.params
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
    pub fn message_catch_up(&self) -> Bytes {
        protocol::with_catch_up(&self.message)
    }
}
