//! nalcast's framed WebSocket protocol (docs/protocol.md): encoding for the server,
//! decoding for the load generator and tests. Pure functions, no I/O.
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Message type: stream-info (JSON).
pub const MSG_STREAM_INFO: u8 = 0x01;
/// Message type: one access unit.
pub const MSG_ACCESS_UNIT: u8 = 0x02;
/// Message type: frames were skipped.
pub const MSG_SKIPPED: u8 = 0x03;
/// Message type: status (JSON).
pub const MSG_STATUS: u8 = 0x04;
/// Message type: pong.
pub const MSG_PONG: u8 = 0x05;
/// Message type (`/ws/fmp4`): an fMP4 init segment (ftyp + moov).
pub const MSG_INIT_SEGMENT: u8 = 0x06;
/// Message type (`/ws/fmp4`): one access unit as an fMP4 fragment (moof + mdat).
pub const MSG_FRAGMENT: u8 = 0x07;

/// Access-unit flag: the frame is a keyframe (IDR).
pub const FLAG_KEYFRAME: u8 = 0x01;
/// Access-unit flag: the frame comes from the GOP cache, not live.
pub const FLAG_CATCH_UP: u8 = 0x02;

/// Length of the access-unit header.
pub const AU_HEADER_LEN: usize = 14;

/// Body of a stream-info message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamInfoMsg {
    /// RFC 6381 codec string.
    pub codec: String,
    /// Displayed width in pixels.
    pub width: u32,
    /// Displayed height in pixels.
    pub height: u32,
    /// Frame rate, when known.
    pub fps: Option<f64>,
    /// Source description.
    pub source: String,
    /// Whether a Baseline-only decoder (Broadway.js) can play the stream: the one
    /// judge of it (nalcast_h264's `StreamInfo`); the page does not judge again.
    pub baseline: bool,
    /// The profile's name for people ("Main", "Constrained Baseline").
    #[serde(default)]
    pub profile: String,
}

/// The stream's state, as viewers are told it (a status message) and `/api/stream`
/// and `/healthz` show it. Its names are spelt here only ([`StreamState::name`]),
/// and the page reads them from the wire (docs/protocol.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StatusBody", try_from = "StatusBody")]
pub enum StreamState {
    /// No picture yet since the server started.
    Starting,
    /// Pictures are flowing.
    Live,
    /// The source is gone (crashed, ended, stalled), and why; it is being restarted.
    SourceLost(String),
}

impl StreamState {
    /// The state's name on the wire and in the API: `starting`, `live`, `source-lost`.
    pub fn name(&self) -> &'static str {
        match self {
            StreamState::Starting => "starting",
            StreamState::Live => "live",
            StreamState::SourceLost(_) => "source-lost",
        }
    }

    /// Why the source is lost, when it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StreamState::SourceLost(reason) => Some(reason),
            _ => None,
        }
    }
}

/// A status message's JSON body: `{"state": …, "reason": …}`.
#[derive(Serialize, Deserialize)]
struct StatusBody {
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<StreamState> for StatusBody {
    fn from(state: StreamState) -> Self {
        StatusBody {
            state: state.name().to_owned(),
            reason: state.reason().map(str::to_owned),
        }
    }
}

impl TryFrom<StatusBody> for StreamState {
    type Error = String;

    fn try_from(body: StatusBody) -> Result<Self, String> {
        let lost = StreamState::SourceLost(body.reason.unwrap_or_default());
        [StreamState::Starting, StreamState::Live, lost]
            .into_iter()
            .find(|s| s.name() == body.state)
            .ok_or_else(|| format!("unknown stream state {:?}", body.state))
    }
}

fn json_message(kind: u8, body: &impl Serialize) -> Bytes {
    let mut out = vec![kind];
    // Serialising these plain structs cannot fail; fall back to an empty object anyway.
    if serde_json::to_writer(&mut out, body).is_err() {
        out.truncate(1);
        out.extend_from_slice(b"{}");
    }
    Bytes::from(out)
}

/// Encodes a stream-info message.
pub fn encode_stream_info(info: &StreamInfoMsg) -> Bytes {
    json_message(MSG_STREAM_INFO, info)
}

/// Encodes a status message.
pub fn encode_status(status: &StreamState) -> Bytes {
    json_message(MSG_STATUS, status)
}

/// Encodes an access-unit message: header followed by the Annex-B bytes.
pub fn encode_access_unit(flags: u8, seq: u32, capture_us: u64, annexb: &[u8]) -> Bytes {
    unit_message(MSG_ACCESS_UNIT, flags, seq, capture_us, annexb)
}

/// Encodes a fragment message: the access-unit header followed by one fMP4
/// fragment (moof + mdat) carrying the access unit.
pub fn encode_fragment(flags: u8, seq: u32, capture_us: u64, fragment: &[u8]) -> Bytes {
    unit_message(MSG_FRAGMENT, flags, seq, capture_us, fragment)
}

fn unit_message(kind: u8, flags: u8, seq: u32, capture_us: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(AU_HEADER_LEN + payload.len());
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32_le(seq);
    out.put_u64_le(capture_us);
    out.put_slice(payload);
    out.freeze()
}

/// An access-unit or fragment message with the catch-up flag set. Copies: only for
/// viewers that join or resume, never on the live path.
pub fn with_catch_up(message: &Bytes) -> Bytes {
    let mut copy = message.to_vec();
    if let Some(flags) = copy.get_mut(1) {
        *flags |= FLAG_CATCH_UP;
    }
    Bytes::from(copy)
}

/// Encodes an init-segment message.
pub fn encode_init_segment(init: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + init.len());
    out.put_u8(MSG_INIT_SEGMENT);
    out.put_slice(init);
    out.freeze()
}

/// Encodes a skipped message.
pub fn encode_skipped(frames: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(5);
    out.put_u8(MSG_SKIPPED);
    out.put_u32_le(frames);
    out.freeze()
}

/// Encodes a pong answering a ping that carried `t`.
pub fn encode_pong(t: f64, server_us: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(17);
    out.put_u8(MSG_PONG);
    out.put_f64_le(t);
    out.put_u64_le(server_us);
    out.freeze()
}

/// A decoded server message.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// Stream parameters.
    StreamInfo(StreamInfoMsg),
    /// One access unit.
    AccessUnit {
        /// Flags (`FLAG_*`).
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Capture time, µs since the epoch.
        capture_us: u64,
        /// The Annex-B bytes.
        data: Bytes,
    },
    /// An fMP4 init segment (`/ws/fmp4`).
    InitSegment(Bytes),
    /// One access unit as an fMP4 fragment (`/ws/fmp4`).
    Fragment {
        /// Flags (`FLAG_*`).
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Capture time, µs since the epoch.
        capture_us: u64,
        /// moof + mdat.
        data: Bytes,
    },
    /// Frames were dropped.
    Skipped(u32),
    /// Source state.
    Status(StreamState),
    /// Answer to a ping.
    Pong {
        /// The client's value, echoed.
        t: f64,
        /// Server time, µs since the epoch.
        server_us: u64,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    /// The message was empty.
    #[error("empty message")]
    Empty,
    /// The message is shorter than its type requires.
    #[error("message type {kind:#04x} too short: {len} bytes")]
    TooShort {
        /// Message type.
        kind: u8,
        /// Actual length.
        len: usize,
    },
    /// Unknown message type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// Malformed JSON body.
    #[error("bad JSON in message type {kind:#04x}: {error}")]
    BadJson {
        /// Message type.
        kind: u8,
        /// The parser's complaint.
        error: String,
    },
}

fn need(msg: &Bytes, len: usize) -> Result<(), ProtocolError> {
    if msg.len() < len {
        return Err(ProtocolError::TooShort {
            kind: msg[0],
            len: msg.len(),
        });
    }
    Ok(())
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn json<T: for<'a> Deserialize<'a>>(kind: u8, body: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError::BadJson {
        kind,
        error: e.to_string(),
    })
}

/// Decodes one server message (zero-copy for access units).
pub fn decode(msg: &Bytes) -> Result<ServerMessage, ProtocolError> {
    let kind = *msg.first().ok_or(ProtocolError::Empty)?;
    match kind {
        MSG_STREAM_INFO => Ok(ServerMessage::StreamInfo(json(kind, &msg[1..])?)),
        MSG_STATUS => Ok(ServerMessage::Status(json(kind, &msg[1..])?)),
        MSG_ACCESS_UNIT => {
            need(msg, AU_HEADER_LEN)?;
            Ok(ServerMessage::AccessUnit {
                flags: msg[1],
                seq: le_u32(&msg[2..]),
                capture_us: le_u64(&msg[6..]),
                data: msg.slice(AU_HEADER_LEN..),
            })
        }
        MSG_FRAGMENT => {
            need(msg, AU_HEADER_LEN)?;
            Ok(ServerMessage::Fragment {
                flags: msg[1],
                seq: le_u32(&msg[2..]),
                capture_us: le_u64(&msg[6..]),
                data: msg.slice(AU_HEADER_LEN..),
            })
        }
        MSG_INIT_SEGMENT => Ok(ServerMessage::InitSegment(msg.slice(1..))),
        MSG_SKIPPED => {
            need(msg, 5)?;
            Ok(ServerMessage::Skipped(le_u32(&msg[1..])))
        }
        MSG_PONG => {
            need(msg, 17)?;
            Ok(ServerMessage::Pong {
                t: f64::from_bits(le_u64(&msg[1..])),
                server_us: le_u64(&msg[9..]),
            })
        }
        other => Err(ProtocolError::UnknownType(other)),
    }
}

/// A message a client may send on `/ws`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Clock probe, answered with a pong.
    Ping {
        /// The client's value to echo (usually its clock in ms).
        t: f64,
    },
    /// Ask for a keyframe.
    Keyframe,
}

/// Parses a client's text message.
pub fn parse_client(text: &str) -> Result<ClientMessage, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_unit_round_trips() {
        let msg = encode_access_unit(
            FLAG_KEYFRAME,
            42,
            1_700_000_000_000_123,
            &[0, 0, 0, 1, 0x65],
        );
        assert_eq!(msg.len(), AU_HEADER_LEN + 5);
        match decode(&msg) {
            Ok(ServerMessage::AccessUnit {
                flags,
                seq,
                capture_us,
                data,
            }) => {
                assert_eq!(
                    (flags, seq, capture_us),
                    (FLAG_KEYFRAME, 42, 1_700_000_000_000_123)
                );
                assert_eq!(&data[..], &[0, 0, 0, 1, 0x65]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_messages_round_trip() {
        let info = StreamInfoMsg {
            codec: "avc1.42C01F".into(),
            width: 1280,
            height: 720,
            fps: Some(30.0),
            source: "test".into(),
            baseline: true,
            profile: "Constrained Baseline".into(),
        };
        assert_eq!(
            decode(&encode_stream_info(&info)),
            Ok(ServerMessage::StreamInfo(info))
        );
        assert_eq!(decode(&encode_skipped(9)), Ok(ServerMessage::Skipped(9)));
        assert_eq!(
            decode(&encode_pong(1.5, 77)),
            Ok(ServerMessage::Pong {
                t: 1.5,
                server_us: 77
            })
        );
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        assert_eq!(decode(&Bytes::new()), Err(ProtocolError::Empty));
        assert!(matches!(
            decode(&Bytes::from_static(&[2, 1, 2])),
            Err(ProtocolError::TooShort { .. })
        ));
        assert!(matches!(
            decode(&Bytes::from_static(&[1, b'{'])),
            Err(ProtocolError::BadJson { .. })
        ));
        assert_eq!(
            decode(&Bytes::from_static(&[0x7f])),
            Err(ProtocolError::UnknownType(0x7f))
        );
    }

    #[test]
    fn client_messages_parse() {
        assert_eq!(
            parse_client(r#"{"type":"ping","t":12.5}"#).ok(),
            Some(ClientMessage::Ping { t: 12.5 })
        );
        assert_eq!(
            parse_client(r#"{"type":"keyframe"}"#).ok(),
            Some(ClientMessage::Keyframe)
        );
        assert!(parse_client("hello").is_err());
    }
}
