//! RFC 6455 against the real binary over real TCP: the handshake key, and the
//! Autobahn-style client cases that apply to a server receiving only small control
//! messages, each asserting the exact close code nalcast sends (docs/protocol.md,
//! "Close codes"). The parser's own table of cases is in nalcast_core::websocket.
use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::Server;
use nalcast_core::protocol::MSG_PONG;
use testkit::websocket::client_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A raw WebSocket client: what the server sent past the response head, and the
/// socket.
struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// Sends a handshake for `path` with `keys` as Sec-WebSocket-Key headers; the
/// response's status, its head, and the connection.
async fn handshake(addr: SocketAddr, path: &str, keys: &[&str]) -> (u16, String, Client) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    );
    for key in keys {
        req.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("handshake");
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = common::status_code(&head).unwrap_or(0);
    buf.drain(..end);
    (status, head, Client { tcp, buf })
}

async fn open(addr: SocketAddr, path: &str) -> Client {
    let (status, head, client) = handshake(addr, path, &[GOOD_KEY]).await;
    assert_eq!(status, 101, "{head}");
    client
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed (refusing an earlier frame): fine.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// The next server frame (opcode, payload); `None` when the connection ends.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16384];
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Skips video until the server's close frame; its payload.
    async fn close_payload(&mut self, what: &str) -> Vec<u8> {
        let wait = async {
            while let Some((op, payload)) = self.frame().await {
                if op == 0x88 {
                    return payload;
                }
            }
            panic!("{what}: connection ended without a close frame");
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("{what}: no close frame within 5 s"))
    }

    /// The close code the server sent (`None` for an empty close frame).
    async fn close_code(&mut self, what: &str) -> Option<u16> {
        let payload = self.close_payload(what).await;
        assert_ne!(payload.len(), 1, "a close payload of one byte");
        if let Some(reason) = payload.get(2..) {
            assert!(std::str::from_utf8(reason).is_ok(), "reason not UTF-8");
        }
        payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// After its close frame the server ends the connection.
    async fn assert_ends(&mut self) {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while self.frame().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "connection still open 5 s after the close");
    }
}

/// One unmasked server frame at the start of `buf`: ((opcode byte, payload), bytes used).
fn parse_server_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let [b0, b1, ..] = buf[..] else { return None };
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, header) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(buf.get(2..10)?);
            (usize::try_from(u64::from_be_bytes(n)).expect("length"), 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some(((b0, payload), header + len))
}

/// A masked client frame.
fn f(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first_byte, payload, [0x11, 0x22, 0x33, 0x44])
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    f(0x88, &payload)
}

fn start() -> Server {
    Server::start(&["--width", "160", "--height", "128", "--fps", "10"])
}

#[tokio::test]
async fn handshakes_without_a_proper_key_get_400_on_both_ports() {
    let server = start();
    server.wait_healthy().await;
    let legacy = server.legacy.expect("legacy listener");
    for (addr, path) in [
        (server.addr, "/ws"),
        (server.addr, "/ws/raw"),
        (legacy, "/"),
    ] {
        let cases: [(&[&str], u16); 7] = [
            (&[GOOD_KEY], 101),
            (&[], 400),
            (&[""], 400),
            (&["not a key"], 400),
            (&["AAAAAAAAAAAAAAAAAAAA"], 400),             // 15 bytes
            (&["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], 400), // 24 bytes
            (&[GOOD_KEY, GOOD_KEY], 400),
        ];
        for (keys, expected) in cases {
            let (status, head, _) = handshake(addr, path, keys).await;
            assert_eq!(status, expected, "{path} {keys:?}: {head}");
            if status == 101 {
                assert!(
                    head.to_ascii_lowercase()
                        .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
                    "{head}"
                );
            }
        }
    }
}

/// Autobahn 7.x: what the client's close frame holds decides what comes back.
#[tokio::test]
async fn close_frames_are_echoed_only_when_valid() {
    let server = start();
    server.wait_healthy().await;
    let mut cases: Vec<(String, Vec<u8>, Option<u16>)> = vec![
        ("7.3.1 empty close".into(), f(0x88, b""), None),
        ("7.3.2 close of one byte".into(), f(0x88, &[3]), Some(1002)),
        (
            "7.3.4 close with a reason".into(),
            close(1000, b"bye"),
            Some(1000),
        ),
        (
            "7.3.6 close, 124-byte reason".into(),
            close(1000, &[b'*'; 124]),
            Some(1002),
        ),
        (
            "7.5.1 reason not UTF-8".into(),
            close(1000, &[0xce, 0xba, 0xff]),
            Some(1007),
        ),
        (
            "5.x fragmented close".into(),
            f(0x08, &1000u16.to_be_bytes()),
            Some(1002),
        ),
    ];
    for code in [1000, 1001, 1003, 1011, 3000, 4999] {
        cases.push((format!("7.7 code {code}"), close(code, b""), Some(code)));
    }
    // Never on the wire, so never echoed: answered with 1002.
    for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000, 65535] {
        cases.push((format!("7.9 code {code}"), close(code, b""), Some(1002)));
    }
    for (what, bytes, expected) in cases {
        let mut ws = open(server.addr, "/ws").await;
        ws.send(&bytes).await;
        assert_eq!(ws.close_code(&what).await, expected, "{what}");
        ws.assert_ends().await;
    }
}

/// Every refusal closes with the code docs/protocol.md gives for it.
#[tokio::test]
async fn broken_or_unwanted_messages_close_with_the_documented_code() {
    let server = start();
    server.wait_healthy().await;
    let mut unmasked = f(0x81, br#"{"type":"keyframe"}"#);
    unmasked[1] &= 0x7f;
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("unmasked", "/ws", unmasked, 1002),
        ("3.1 RSV1", "/ws", f(0xc1, b"x"), 1002),
        ("4.1.1 reserved opcode 3", "/ws", f(0x83, b""), 1002),
        ("4.2.1 reserved opcode 11", "/ws", f(0x8b, b""), 1002),
        ("2.5 ping of 126 bytes", "/ws", f(0x89, &[0; 126]), 1002),
        (
            "5.1 fragmented ping",
            "/ws",
            [f(0x09, b"a"), f(0x80, b"b")].concat(),
            1002,
        ),
        ("5.9 continuation first", "/ws", f(0x80, b"cont"), 1002),
        (
            "5.18 new message mid-message",
            "/ws",
            [f(0x01, b"{"), f(0x81, b"}")].concat(),
            1002,
        ),
        ("oversized", "/ws", f(0x81, &[b'x'; 10_000]), 1009),
        (
            "fragments over the cap",
            "/ws",
            [f(0x01, &[b' '; 3000]), f(0x80, &[b' '; 3000])].concat(),
            1009,
        ),
        (
            "6.3 text not UTF-8",
            "/ws",
            f(0x81, &[0xce, 0xba, 0xff]),
            1007,
        ),
        (
            "6.4 text not UTF-8, first fragment",
            "/ws",
            f(0x01, &[0xff]),
            1007,
        ),
        ("binary", "/ws", f(0x82, &[1, 2, 3]), 1003),
        ("binary on raw", "/ws/raw", f(0x82, &[1, 2, 3]), 1003),
        ("unknown text", "/ws", f(0x81, b"hello?"), 1003),
        ("too many pings", "/ws", f(0x89, b"p").repeat(150), 1008),
        (
            "too many messages",
            "/ws",
            f(0x81, br#"{"type":"keyframe"}"#).repeat(150),
            1008,
        ),
    ];
    for (what, path, bytes, expected) in cases {
        let mut ws = open(server.addr, path).await;
        ws.send(&bytes).await;
        assert_eq!(ws.close_code(what).await, Some(expected), "{what}");
        ws.assert_ends().await;
    }
    // The legacy port speaks the same protocol.
    let mut ws = open(server.legacy.expect("legacy"), "/").await;
    ws.send(&close(1005, b"")).await;
    assert_eq!(ws.close_code("legacy").await, Some(1002), "legacy: 1005");
}

/// Autobahn 5.6/5.19: a fragmented text message with pings between its fragments.
#[tokio::test]
async fn fragmented_messages_are_put_together() {
    let server = start();
    server.wait_healthy().await;
    let mut ws = open(server.addr, "/ws").await;
    let message = br#"{"type":"ping","t":42.5}"#;
    let (a, rest) = message.split_at(5);
    let (b, c) = rest.split_at(9);
    let bytes = [
        f(0x01, a),
        f(0x89, b"between"),
        f(0x00, b),
        f(0x89, b""),
        f(0x80, c),
    ]
    .concat();
    // One byte at a time, as a slow network might deliver it.
    for byte in bytes {
        ws.send(&[byte]).await;
    }
    let (mut pongs, mut framed_pong) = (Vec::new(), None);
    let wait = async {
        while let Some((op, payload)) = ws.frame().await {
            match op {
                0x8a => pongs.push(payload),
                0x82 if payload.first() == Some(&MSG_PONG) => {
                    framed_pong = Some(payload);
                    return;
                }
                0x88 => panic!("closed: {payload:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a pong within 5 s");
    assert_eq!(pongs, vec![b"between".to_vec(), Vec::new()]);
    let framed_pong = framed_pong.expect("framed pong");
    assert_eq!(&framed_pong[1..9], &42.5f64.to_le_bytes());
    // A clean close after all that.
    ws.send(&close(1000, b"done")).await;
    assert_eq!(ws.close_code("after fragments").await, Some(1000));
    ws.assert_ends().await;
}
