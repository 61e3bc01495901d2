//! The server side of WebSocket framing (RFC 6455 §5), without I/O: headers for the
//! frames nalcast sends, and a parser for the few small frames clients send.
//!
//! Hand-written rather than taken from tungstenite, for speed: nalcast sends every
//! video frame to every viewer. Writing a 2–10 byte header beside the shared,
//! reference-counted payload (one `writev`) avoids copying each payload into every
//! connection's buffer, and lets one system call carry several messages; with
//! tungstenite that copy, its read-buffer zeroing and its split-socket locking
//! were about a fifth of nalcast's CPU at 1000 viewers (perf; see
//! docs/architecture.md). The handshake stays with the HTTP layer.

/// Continuation frame (fragmented message): not accepted from clients.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a kind of message the endpoint does not accept.
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close code: text that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: policy violation (e.g. too many messages).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The header of one unfragmented, unmasked server-to-client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// A final frame of `opcode` carrying `payload_len` bytes.
    pub fn new(opcode: u8, payload_len: usize) -> Header {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | (opcode & 0x0f);
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Header { bytes, len }
    }

    /// The encoded header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The payload of a close frame: the code, then a short UTF-8 reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // Control frames carry at most 125 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// One whole message from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The client closes, with its close code if it gave one.
    Close(Option<u16>),
}

/// Bytes from a client that break the protocol or nalcast's limits; the connection
/// is closed with `code`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close code {code})")]
pub struct FrameError {
    /// Close code to send.
    pub code: u16,
    /// Why, for the close frame and the log.
    pub reason: &'static str,
}

fn refuse(code: u16, reason: &'static str) -> FrameError {
    FrameError { code, reason }
}

/// Reassembles client frames from bytes arriving in chunks of any size.
#[derive(Debug)]
pub struct ClientParser {
    buf: Vec<u8>,
    max_payload: usize,
}

impl ClientParser {
    /// A parser that refuses payloads over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        ClientParser {
            buf: Vec::new(),
            max_payload,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` until one is complete, or why the client's
    /// bytes are refused (then the connection must be closed).
    pub fn next_frame(&mut self) -> Result<Option<ClientFrame>, FrameError> {
        let [b0, b1, ..] = self.buf[..] else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(refuse(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(refuse(CLOSE_PROTOCOL_ERROR, "client frames must be masked"));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (len, header) = match b1 & 0x7f {
            126 => match self.buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match self.buf.get(2..10) {
                Some(b) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(b);
                    (u64::from_be_bytes(n), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        match opcode {
            OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            OP_CONTINUATION => {
                return Err(refuse(
                    CLOSE_UNSUPPORTED,
                    "fragmented messages are not accepted",
                ))
            }
            _ => return Err(refuse(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
        }
        let control = opcode & 0x08 != 0;
        if control && len > 125 {
            return Err(refuse(CLOSE_PROTOCOL_ERROR, "control frame too long"));
        }
        if !fin {
            return Err(refuse(
                CLOSE_UNSUPPORTED,
                "fragmented messages are not accepted",
            ));
        }
        if len > self.max_payload as u64 {
            return Err(refuse(CLOSE_TOO_BIG, "message too big"));
        }
        let len = len as usize;
        let total = header + 4 + len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.buf[header..header + 4]);
        let mut payload: Vec<u8> = self.buf[header + 4..total].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        self.buf.drain(..total);
        Ok(Some(match opcode {
            OP_TEXT => ClientFrame::Text(
                String::from_utf8(payload)
                    .map_err(|_| refuse(CLOSE_INVALID_DATA, "text is not UTF-8"))?,
            ),
            OP_BINARY => ClientFrame::Binary(payload),
            OP_PING => ClientFrame::Ping(payload),
            OP_PONG => ClientFrame::Pong,
            _ => match payload[..] {
                [] => ClientFrame::Close(None),
                [hi, lo, ..] => ClientFrame::Close(Some(u16::from_be_bytes([hi, lo]))),
                [_] => return Err(refuse(CLOSE_PROTOCOL_ERROR, "close frame of one byte")),
            },
        }))
    }
}

/// Parses `input` fed in pieces ending at `cuts` (then the rest), up to and
/// including the first refusal; for tests and fuzzing.
pub fn parse_in_pieces(
    input: &[u8],
    max_payload: usize,
    cuts: impl IntoIterator<Item = usize>,
) -> Vec<Result<ClientFrame, FrameError>> {
    let mut parser = ClientParser::new(max_payload);
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(input.len())) {
        let end = cut.clamp(start, input.len());
        parser.push(&input[start..end]);
        start = end;
        loop {
            match parser.next_frame() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Encodes a masked client frame (what browsers send); for tests and fuzzing.
pub fn client_frame(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        assert_eq!(Header::new(OP_BINARY, 0).as_bytes(), [0x82, 0]);
        assert_eq!(Header::new(OP_BINARY, 125).as_bytes(), [0x82, 125]);
        assert_eq!(Header::new(OP_TEXT, 126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(
            Header::new(OP_BINARY, 65535).as_bytes(),
            [0x82, 126, 0xff, 0xff]
        );
        assert_eq!(
            Header::new(OP_BINARY, 65536).as_bytes(),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(Header::new(OP_CLOSE, 2).as_bytes(), [0x88, 2]);
    }

    #[test]
    fn close_reasons_are_cut_to_fit_a_control_frame() {
        let long = "é".repeat(100);
        let p = close_payload(CLOSE_GOING_AWAY, &long);
        assert!(p.len() <= 125);
        assert_eq!(&p[..2], &[0x03, 0xe9]);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    fn parse_all(bytes: &[u8], chunk: usize) -> Vec<Result<ClientFrame, FrameError>> {
        parse_in_pieces(
            bytes,
            4096,
            (chunk.max(1)..bytes.len()).step_by(chunk.max(1)),
        )
    }

    #[test]
    fn frames_are_unmasked_and_split_anywhere() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut bytes = client_frame(0x81, br#"{"type":"ping","t":1}"#, mask);
        bytes.extend(client_frame(0x89, b"hi", mask));
        bytes.extend(client_frame(0x81, &[b'x'; 300], mask));
        bytes.extend(client_frame(0x8A, b"", mask));
        bytes.extend(client_frame(0x88, &close_payload(1000, "bye"), mask));
        let expected = vec![
            Ok(ClientFrame::Text(r#"{"type":"ping","t":1}"#.into())),
            Ok(ClientFrame::Ping(b"hi".to_vec())),
            Ok(ClientFrame::Text("x".repeat(300))),
            Ok(ClientFrame::Pong),
            Ok(ClientFrame::Close(Some(1000))),
        ];
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            assert_eq!(parse_all(&bytes, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn rule_breaking_frames_are_refused_with_the_right_close_code() {
        let mask = [1, 2, 3, 4];
        let mut unmasked = client_frame(0x81, b"hello", mask);
        unmasked[1] &= 0x7f;
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, CLOSE_PROTOCOL_ERROR),
            (client_frame(0xC1, b"rsv", mask), CLOSE_PROTOCOL_ERROR),
            (client_frame(0x83, b"op3", mask), CLOSE_PROTOCOL_ERROR),
            (client_frame(0x01, b"part", mask), CLOSE_UNSUPPORTED),
            (client_frame(0x80, b"cont", mask), CLOSE_UNSUPPORTED),
            (client_frame(0x89, &[0u8; 126], mask), CLOSE_PROTOCOL_ERROR),
            (client_frame(0x81, &[b'a'; 5000], mask), CLOSE_TOO_BIG),
            (client_frame(0x81, &[0xff, 0xfe], mask), CLOSE_INVALID_DATA),
            (client_frame(0x88, &[3], mask), CLOSE_PROTOCOL_ERROR),
        ];
        for (bytes, code) in cases {
            let got = parse_all(&bytes, 5);
            assert!(
                matches!(got.last(), Some(Err(e)) if e.code == code),
                "{:02x?}: {got:?}",
                &bytes[..2]
            );
        }
        // A huge announced length is refused before any of it arrives.
        let mut parser = ClientParser::new(4096);
        parser.push(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(parser.next_frame().map_err(|e| e.code), Err(CLOSE_TOO_BIG));
    }

    proptest::proptest! {
        /// Any bytes, split anywhere: the same frames and the same refusal.
        #[test]
        fn any_bytes_split_anywhere_parse_the_same(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            chunk in 1usize..40,
        ) {
            proptest::prop_assert_eq!(parse_all(&input, chunk), parse_all(&input, input.len()));
        }

        /// Masked text frames of any content come back as they were sent.
        #[test]
        fn text_round_trips(text in "\\PC{0,300}", mask in proptest::prelude::any::<[u8; 4]>()) {
            let bytes = client_frame(0x81, text.as_bytes(), mask);
            proptest::prop_assert_eq!(parse_all(&bytes, 3), vec![Ok(ClientFrame::Text(text))]);
        }
    }
}
