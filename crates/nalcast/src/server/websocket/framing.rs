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

/// Continuation frame: the second and later fragments of a message.
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

/// Whether a client may send close `code` (RFC 6455 §7.4, and the codes IANA has
/// registered since): 1000–1003, 1007–1014 and the application ranges 3000–4999.
/// The rest (0–999, 1004 reserved, 1005 and 1006 which exist only inside endpoints,
/// 1015, unassigned 1016–2999, and 5000 up) never go on the wire: a client sending
/// one breaks the protocol, and nalcast must not echo it.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// One whole message from a client (fragments already put together).
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
    /// The client closes, with its close code if it gave one (always one that
    /// [`close_code_allowed`], so it may be echoed).
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

/// A text or binary message whose first fragments have arrived (RFC 6455 §5.4).
#[derive(Debug)]
struct Partial {
    opcode: u8,
    payload: Vec<u8>,
    /// How much of a text payload is known to be valid UTF-8, so a bad byte is
    /// refused in the fragment that brings it, and each byte is checked once.
    utf8_checked: usize,
}

impl Partial {
    /// Refuses text that can no longer become UTF-8, whatever fragments follow.
    fn check_utf8(&mut self) -> Result<(), FrameError> {
        if self.opcode != OP_TEXT {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.utf8_checked..]) {
            Ok(_) => self.utf8_checked = self.payload.len(),
            // Only a character cut at the end of the fragment: wait for the rest.
            Err(e) if e.error_len().is_none() => self.utf8_checked += e.valid_up_to(),
            Err(_) => return Err(refuse(CLOSE_INVALID_DATA, "text is not UTF-8")),
        }
        Ok(())
    }
}

/// Reassembles client messages from bytes arriving in chunks of any size.
#[derive(Debug)]
pub struct ClientParser {
    buf: Vec<u8>,
    max_payload: usize,
    partial: Option<Partial>,
}

impl ClientParser {
    /// A parser that refuses messages over `max_payload` bytes (all fragments
    /// together).
    pub fn new(max_payload: usize) -> Self {
        ClientParser {
            buf: Vec::new(),
            max_payload,
            partial: None,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `None` until one is complete, or why the client's
    /// bytes are refused (then the connection must be closed). Control frames may
    /// come between the fragments of a message, and are returned as they come.
    pub fn next_frame(&mut self) -> Result<Option<ClientFrame>, FrameError> {
        loop {
            let Some((fin, opcode, payload)) = self.next_wire_frame()? else {
                return Ok(None);
            };
            if let Some(message) = self.assemble(fin, opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// One frame off the wire, unmasked: (FIN, opcode, payload). Everything the
    /// header alone can tell is refused before the payload arrives.
    fn next_wire_frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, FrameError> {
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
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(refuse(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
        }
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
        if opcode & 0x08 != 0 {
            if len > 125 {
                return Err(refuse(CLOSE_PROTOCOL_ERROR, "control frame too long"));
            }
            if !fin {
                return Err(refuse(CLOSE_PROTOCOL_ERROR, "fragmented control frame"));
            }
        } else {
            match (opcode, &self.partial) {
                (OP_CONTINUATION, None) => {
                    return Err(refuse(
                        CLOSE_PROTOCOL_ERROR,
                        "continuation frame without a message to continue",
                    ))
                }
                (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(refuse(
                        CLOSE_PROTOCOL_ERROR,
                        "new message before the last one was finished",
                    ))
                }
                _ => {}
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.payload.len());
            if len.saturating_add(so_far as u64) > self.max_payload as u64 {
                return Err(refuse(CLOSE_TOO_BIG, "message too big"));
            }
        }
        // Below max_payload (data) or 125 (control): fits in usize.
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
        Ok(Some((fin, opcode, payload)))
    }

    /// Puts fragments together; a whole message when one is complete.
    fn assemble(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<ClientFrame>, FrameError> {
        let mut partial = match opcode {
            OP_PING => return Ok(Some(ClientFrame::Ping(payload))),
            OP_PONG => return Ok(Some(ClientFrame::Pong)),
            OP_CLOSE => return close_frame(&payload).map(Some),
            // next_wire_frame refused a continuation without a partial message.
            OP_CONTINUATION => match self.partial.take() {
                Some(mut partial) => {
                    partial.payload.extend_from_slice(&payload);
                    partial
                }
                None => return Err(refuse(CLOSE_PROTOCOL_ERROR, "continuation frame")),
            },
            _ => Partial {
                opcode,
                payload,
                utf8_checked: 0,
            },
        };
        if !fin {
            partial.check_utf8()?;
            self.partial = Some(partial);
            return Ok(None);
        }
        Ok(Some(match partial.opcode {
            OP_TEXT => ClientFrame::Text(
                String::from_utf8(partial.payload)
                    .map_err(|_| refuse(CLOSE_INVALID_DATA, "text is not UTF-8"))?,
            ),
            _ => ClientFrame::Binary(partial.payload),
        }))
    }
}

/// A close frame's payload: nothing, or a code a client may send and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<ClientFrame, FrameError> {
    match payload {
        [] => Ok(ClientFrame::Close(None)),
        [_] => Err(refuse(CLOSE_PROTOCOL_ERROR, "close frame of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(refuse(CLOSE_PROTOCOL_ERROR, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(refuse(CLOSE_INVALID_DATA, "close reason is not UTF-8"));
            }
            Ok(ClientFrame::Close(Some(code)))
        }
    }
}

/// Parses `input` fed in pieces ending at `cuts` (then the rest), up to and
/// including the first refusal; for tests and fuzzing.
#[cfg(any(test, fuzzing))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::websocket::client_frame;

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

    /// A masked client frame with a fixed mask.
    fn f(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(first_byte, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        f(0x88, &payload)
    }

    fn text(s: &str) -> Result<ClientFrame, u16> {
        Ok(ClientFrame::Text(s.into()))
    }

    fn ping(p: &[u8]) -> Result<ClientFrame, u16> {
        Ok(ClientFrame::Ping(p.to_vec()))
    }

    /// What a case is called, the client's bytes, and what the parser gives.
    type Case = (String, Vec<u8>, Vec<Result<ClientFrame, u16>>);

    /// The cases of the Autobahn test suite's fuzzingclient (numbered as there)
    /// that apply to a server that receives small control messages, as (what,
    /// bytes, messages the parser gives, then the close code it refuses with).
    /// Compression (12.x, 13.x) is never negotiated, so RSV1 is always refused.
    fn autobahn_cases() -> Vec<Case> {
        let (ce, ba) = (0xce, 0xba); // "κ" in UTF-8
        let mut cases: Vec<Case> = vec![
            // 1.x framing: sizes around the length encodings, up to the cap.
            ("1.1.1 empty text".into(), f(0x81, b""), vec![text("")]),
            (
                "1.2.1 empty binary".into(),
                f(0x82, b""),
                vec![Ok(ClientFrame::Binary(vec![]))],
            ),
            (
                "1.1.x text over the cap".into(),
                f(0x81, &[b'a'; 4097]),
                vec![Err(CLOSE_TOO_BIG)],
            ),
            (
                "9.1.x text of 64 KiB".into(),
                f(0x81, &[b'a'; 65536]),
                vec![Err(CLOSE_TOO_BIG)],
            ),
            // 2.x pings and pongs.
            ("2.1 ping, no payload".into(), f(0x89, b""), vec![ping(b"")]),
            (
                "2.2 ping, text payload".into(),
                f(0x89, b"Hello, world!"),
                vec![ping(b"Hello, world!")],
            ),
            (
                "2.3 ping, binary payload".into(),
                f(0x89, &[0, 0xff, 0xfe, 3]),
                vec![ping(&[0, 0xff, 0xfe, 3])],
            ),
            (
                "2.4 ping, 125 bytes".into(),
                f(0x89, &[0xfe; 125]),
                vec![ping(&[0xfe; 125])],
            ),
            (
                "2.5 ping, 126 bytes".into(),
                f(0x89, &[0xfe; 126]),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "2.7 unsolicited pong".into(),
                f(0x8a, b""),
                vec![Ok(ClientFrame::Pong)],
            ),
            (
                "2.8 unsolicited pong with payload".into(),
                f(0x8a, b"unsolicited"),
                vec![Ok(ClientFrame::Pong)],
            ),
            (
                "2.9 pong, then ping".into(),
                [f(0x8a, b"x"), f(0x89, b"y")].concat(),
                vec![Ok(ClientFrame::Pong), ping(b"y")],
            ),
            (
                "2.10 ten pings".into(),
                f(0x89, b"p").repeat(10),
                vec![ping(b"p"); 10],
            ),
            // 3.x reserved bits, with no extension negotiated.
            (
                "3.1 RSV1 text".into(),
                f(0xc1, b"x"),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "3.2 text, then RSV2 text".into(),
                [f(0x81, b"ok"), f(0xa1, b"x")].concat(),
                vec![text("ok"), Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "3.4 RSV1+RSV2 binary".into(),
                f(0xe2, b"x"),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "3.6 RSV2+RSV3 ping".into(),
                f(0xb9, b"x"),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "3.7 RSV1-3 close".into(),
                f(0xf8, b""),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            // Not in Autobahn (it always masks): RFC 6455 §5.1.
            (
                "unmasked text".into(),
                {
                    let mut b = f(0x81, b"hello");
                    b[1] &= 0x7f;
                    b
                },
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            // 5.x fragmentation.
            (
                "5.1 fragmented ping".into(),
                [f(0x09, b"frag1"), f(0x80, b"frag2")].concat(),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.2 fragmented pong".into(),
                [f(0x0a, b"frag1"), f(0x80, b"frag2")].concat(),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.x fragmented close".into(),
                f(0x08, &1000u16.to_be_bytes()),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.3 text in two fragments".into(),
                [f(0x01, b"frag1"), f(0x80, b"frag2")].concat(),
                vec![text("frag1frag2")],
            ),
            (
                "5.6 text in two fragments, a ping between".into(),
                [f(0x01, b"frag1"), f(0x89, b"ping"), f(0x80, b"frag2")].concat(),
                vec![ping(b"ping"), text("frag1frag2")],
            ),
            (
                "5.9 continuation (final) without a message".into(),
                [f(0x80, b"cont"), f(0x81, b"ok")].concat(),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.10 continuation (not final) without a message".into(),
                f(0x00, b"cont"),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.15 two fragments, then a stray continuation".into(),
                [
                    f(0x01, b"f1"),
                    f(0x80, b"f2"),
                    f(0x00, b"f3"),
                    f(0x81, b"f4"),
                ]
                .concat(),
                vec![text("f1f2"), Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.18 a new text frame where a continuation belongs".into(),
                [f(0x01, b"f1"), f(0x81, b"f2")].concat(),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "5.19 five fragments, two pings between".into(),
                [
                    f(0x01, b"a"),
                    f(0x00, b"b"),
                    f(0x89, b"p1"),
                    f(0x00, b"c"),
                    f(0x89, b"p2"),
                    f(0x00, b"d"),
                    f(0x80, b"e"),
                ]
                .concat(),
                vec![ping(b"p1"), ping(b"p2"), text("abcde")],
            ),
            (
                "5.x empty fragments".into(),
                [f(0x01, b""), f(0x00, b""), f(0x80, b"")].concat(),
                vec![text("")],
            ),
            (
                "5.x fragmented binary".into(),
                [f(0x02, &[1]), f(0x80, &[2])].concat(),
                vec![Ok(ClientFrame::Binary(vec![1, 2]))],
            ),
            (
                "5.x fragments over the cap together".into(),
                [f(0x01, &[b'a'; 3000]), f(0x80, &[b'a'; 3000])].concat(),
                vec![Err(CLOSE_TOO_BIG)],
            ),
            (
                "5.x fragments exactly at the cap".into(),
                [f(0x01, &[b'a'; 2048]), f(0x80, &[b'a'; 2048])].concat(),
                vec![Ok(ClientFrame::Text("a".repeat(4096)))],
            ),
            // 6.x UTF-8.
            (
                "6.2 valid UTF-8".into(),
                f(0x81, "κόσμε".as_bytes()),
                vec![text("κόσμε")],
            ),
            (
                "6.2.3 a character split between fragments".into(),
                [f(0x01, &[ce]), f(0x80, &[ba])].concat(),
                vec![text("κ")],
            ),
            (
                "6.3 invalid UTF-8".into(),
                f(0x81, &[ce, ba, 0xff]),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
            (
                "6.4.1 invalid in the first fragment: refused before the last".into(),
                f(0x01, &[ce, ba, 0xf4, 0x90, 0x80, 0x80]),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
            (
                "6.x a character cut by the end of the message".into(),
                [f(0x01, b"ok"), f(0x80, &[ce])].concat(),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
            (
                "6.x surrogate".into(),
                f(0x81, &[0xed, 0xa0, 0x80]),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
            (
                "6.x overlong NUL".into(),
                f(0x81, &[0xc0, 0x80]),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
            // 7.x closing.
            (
                "7.1.1 text, then close".into(),
                [f(0x81, b"hi"), close(1000, b"")].concat(),
                vec![text("hi"), Ok(ClientFrame::Close(Some(1000)))],
            ),
            (
                "7.1.5 a fragment, then close".into(),
                [f(0x01, b"fragment"), close(1000, b"")].concat(),
                vec![Ok(ClientFrame::Close(Some(1000)))],
            ),
            (
                "7.3.1 close without payload".into(),
                f(0x88, b""),
                vec![Ok(ClientFrame::Close(None))],
            ),
            (
                "7.3.2 close of one byte".into(),
                f(0x88, &[3]),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "7.3.4 close with a reason".into(),
                close(1000, b"Hello World!"),
                vec![Ok(ClientFrame::Close(Some(1000)))],
            ),
            (
                "7.3.5 close, 123-byte reason".into(),
                close(1000, &[b'*'; 123]),
                vec![Ok(ClientFrame::Close(Some(1000)))],
            ),
            (
                "7.3.6 close, 124-byte reason".into(),
                close(1000, &[b'*'; 124]),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ),
            (
                "7.5.1 close, reason not UTF-8".into(),
                close(1000, &[ce, ba, 0xff]),
                vec![Err(CLOSE_INVALID_DATA)],
            ),
        ];
        // 7.7.x: codes a client may send come through, to be echoed.
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            cases.push((
                format!("7.7 close code {code}"),
                close(code, b""),
                vec![Ok(ClientFrame::Close(Some(code)))],
            ));
        }
        // 7.9.x, 7.13.x: codes that must never be sent (nor echoed).
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            cases.push((
                format!("7.9 close code {code}"),
                close(code, b""),
                vec![Err(CLOSE_PROTOCOL_ERROR)],
            ));
        }
        // 4.x reserved opcodes, alone and after a good message.
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            cases.push((
                format!("4.x reserved opcode {op}"),
                [f(0x81, b"ok"), f(0x80 | op, b"x"), f(0x89, b"p")].concat(),
                vec![text("ok"), Err(CLOSE_PROTOCOL_ERROR)],
            ));
        }
        cases
    }

    #[test]
    fn autobahn_style_cases_give_the_right_messages_and_close_codes() {
        let mut wrong = Vec::new();
        for (what, bytes, expected) in autobahn_cases() {
            // 2.6, 2.11 and the "chopped" variants: the same, bytes split anywhere.
            for chunk in [1, 2, 5, bytes.len()] {
                let got: Vec<Result<ClientFrame, u16>> =
                    parse_in_pieces(&bytes, 4096, (chunk..bytes.len()).step_by(chunk.max(1)))
                        .into_iter()
                        .map(|r| r.map_err(|e| e.code))
                        .collect();
                if got != expected {
                    let mut line = format!(
                        "{what} (in pieces of {chunk}): got {got:?}, expected {expected:?}"
                    );
                    line.truncate(line.floor_char_boundary(300));
                    wrong.push(line);
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        // A huge announced length is refused before any of it arrives.
        let mut parser = ClientParser::new(4096);
        parser.push(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(parser.next_frame().map_err(|e| e.code), Err(CLOSE_TOO_BIG));
    }

    #[test]
    fn no_close_code_a_client_may_not_send_is_allowed() {
        for code in 0..=u16::MAX {
            let reserved = code < 1000
                || matches!(code, 1004..=1006 | 1015)
                || (1016..3000).contains(&code)
                || code >= 5000;
            assert_eq!(close_code_allowed(code), !reserved, "{code}");
        }
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
