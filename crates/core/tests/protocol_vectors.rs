//! The framed dialect against the byte vectors the page's tests also use
//! (docs/protocol-vectors.json, checked by web/test/unit/protocol.test.mjs): every server
//! message encodes to its bytes and decodes back to its fields, every invalid one is
//! refused for its reason, every client message the page sends parses.
use bytes::Bytes;
use nalcast_core::protocol::{
    decode, encode_access_unit, encode_fragment, encode_init_segment, encode_pong, encode_skipped,
    encode_status, encode_stream_info, parse_client, ClientMessage, ProtocolError, ServerMessage,
    StreamInfoMsg, StreamState, FLAG_CATCH_UP, FLAG_KEYFRAME,
};
use serde::Deserialize;
use testkit::fixtures::unhex;

// include_str! makes cargo rebuild the test when the vectors change.
const VECTORS: &str = include_str!("../../../docs/protocol-vectors.json");

#[derive(Deserialize)]
struct Vectors {
    server: Vec<ServerVector>,
    invalid: Vec<InvalidVector>,
    client: Vec<ClientVector>,
    /// The messages only `/ws/fmp4` sends.
    fmp4: Fmp4Vectors,
}

#[derive(Deserialize)]
struct Fmp4Vectors {
    server: Vec<ServerVector>,
    invalid: Vec<InvalidVector>,
}

#[derive(Deserialize)]
struct ServerVector {
    name: String,
    hex: String,
    message: Fields,
}

/// A server message's fields as the vectors spell them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Fields {
    StreamInfo { info: StreamInfoMsg },
    AccessUnit(Unit),
    Skipped { frames: u32 },
    Status { status: StreamState },
    Pong { t: f64, server_us: u64 },
    InitSegment { data: String },
    Fragment(Unit),
}

/// The fields of an access-unit or fragment message.
#[derive(Deserialize)]
struct Unit {
    keyframe: bool,
    catch_up: bool,
    seq: u32,
    capture_us: u64,
    data: String,
}

impl Unit {
    /// (flags, seq, capture time, payload)
    fn parts(self) -> (u8, u32, u64, Bytes) {
        let mut flags = 0;
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        if self.catch_up {
            flags |= FLAG_CATCH_UP;
        }
        (
            flags,
            self.seq,
            self.capture_us,
            Bytes::from(unhex(&self.data)),
        )
    }
}

#[derive(Deserialize)]
struct InvalidVector {
    name: String,
    hex: String,
    error: String,
}

#[derive(Deserialize)]
struct ClientVector {
    name: String,
    text: String,
    message: ClientFields,
}

/// A client message's fields as the vectors spell them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFields {
    Ping { t: f64 },
    Keyframe,
}

fn vectors() -> Vectors {
    match serde_json::from_str(VECTORS) {
        Ok(v) => v,
        Err(e) => panic!("docs/protocol-vectors.json: {e}"),
    }
}

/// The message's encoding by protocol.rs, and what decoding its bytes must give.
fn encode(fields: Fields) -> (Bytes, ServerMessage) {
    match fields {
        Fields::StreamInfo { info } => (encode_stream_info(&info), ServerMessage::StreamInfo(info)),
        Fields::AccessUnit(unit) => {
            let (flags, seq, capture_us, data) = unit.parts();
            let message = ServerMessage::AccessUnit {
                flags,
                seq,
                capture_us,
                data: data.clone(),
            };
            (encode_access_unit(flags, seq, capture_us, &data), message)
        }
        Fields::InitSegment { data } => {
            let data = Bytes::from(unhex(&data));
            (encode_init_segment(&data), ServerMessage::InitSegment(data))
        }
        Fields::Fragment(unit) => {
            let (flags, seq, capture_us, data) = unit.parts();
            let message = ServerMessage::Fragment {
                flags,
                seq,
                capture_us,
                data: data.clone(),
            };
            (encode_fragment(flags, seq, capture_us, &data), message)
        }
        Fields::Skipped { frames } => (encode_skipped(frames), ServerMessage::Skipped(frames)),
        Fields::Status { status } => (encode_status(&status), ServerMessage::Status(status)),
        Fields::Pong { t, server_us } => (
            encode_pong(t, server_us),
            ServerMessage::Pong { t, server_us },
        ),
    }
}

/// The vectors' name for why a message was refused (the page reports the same names).
fn error_name(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::Empty => "empty",
        ProtocolError::TooShort { .. } => "too-short",
        ProtocolError::UnknownType(_) => "unknown-type",
        ProtocolError::BadJson { .. } => "bad-json",
    }
}

#[test]
fn server_messages_encode_to_their_bytes_and_decode_to_their_fields() {
    let vectors = vectors();
    assert!(!vectors.server.is_empty() && !vectors.fmp4.server.is_empty());
    for v in vectors.server.into_iter().chain(vectors.fmp4.server) {
        let bytes = Bytes::from(unhex(&v.hex));
        let (encoded, message) = encode(v.message);
        assert_eq!(encoded, bytes, "encoding {}", v.name);
        assert_eq!(decode(&bytes), Ok(message), "decoding {}", v.name);
    }
}

#[test]
fn invalid_messages_are_refused_for_their_reason() {
    let vectors = vectors();
    assert!(!vectors.invalid.is_empty());
    for v in vectors.invalid.into_iter().chain(vectors.fmp4.invalid) {
        let bytes = Bytes::from(unhex(&v.hex));
        match decode(&bytes) {
            Err(e) => assert_eq!(error_name(&e), v.error, "{}: {e}", v.name),
            Ok(m) => panic!("{}: decoded as {m:?}", v.name),
        }
    }
}

#[test]
fn client_messages_the_page_sends_parse() {
    let vectors = vectors();
    let (mut pings, mut keyframes) = (0, 0);
    for v in vectors.client {
        let expected = match v.message {
            ClientFields::Ping { t } => {
                pings += 1;
                ClientMessage::Ping { t }
            }
            ClientFields::Keyframe => {
                keyframes += 1;
                ClientMessage::Keyframe
            }
        };
        match parse_client(&v.text) {
            Ok(parsed) => assert_eq!(parsed, expected, "{}", v.name),
            Err(e) => panic!("{}: {e}", v.name),
        }
    }
    assert!(
        pings > 0 && keyframes > 0,
        "every client message has a vector"
    );
}
