//! A guard between retina and the camera: what the camera sends is bounded before
//! retina buffers it.
//!
//! retina (0.4) keeps reading until a message is complete, whatever its size: a
//! header block that never ends, a `Content-Length` of gigabytes, RTP that never
//! ends an access unit (its depacketizer keeps every fragment) all grew nalcast
//! until only the stall timeout or the memory limit stopped it (1.4 to 4.2 GB,
//! "allocation of 1073741824 bytes failed" under a 1.5 GB limit). retina offers no
//! cap in its API (its parser has one, unexposed), and this machine cannot send a
//! change upstream, so nalcast wraps the transport instead: retina connects to a
//! loopback port of the guard, the guard to the camera, and every byte from the
//! camera passes [`CameraStream`], which
//!
//! - allows an RTSP message head of [`MAX_HEAD`] bytes and a body of [`MAX_BODY`],
//! - counts the RTP bytes of each interleaved channel since its last access unit
//!   boundary (marker bit or new timestamp) against a limit from `--max-nal-size`,
//! - removes `Basic` challenges from `WWW-Authenticate` unless Basic is allowed (a
//!   camera asking for Basic only is refused before retina sends the password in
//!   the clear), and
//! - adds `source=<camera>` to a UDP `Transport` answer that lacks it (retina
//!   takes the RTP sender to be its RTSP peer, the guard).
//!
//! Past a limit the camera is dropped (both connections closed) and the source
//! fails with one line saying which limit.
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes of one RTSP message head (status line and headers) from a camera:
/// cameras send well under 2 KB.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most bytes of one RTSP message body (an SDP description: a few KB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a camera was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A message head longer than [`MAX_HEAD`].
    Head,
    /// A body longer than [`MAX_BODY`] (its announced length).
    Body(u64),
    /// More RTP bytes on one channel than the limit without an access unit ending.
    NoBoundary(usize),
    /// The camera asks for Basic authentication only, which is not allowed.
    BasicOnly,
    /// Not RTSP: a message that cannot be read.
    Garbled,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Head => write!(
                f,
                "the RTSP camera sent a message head over {} KiB: dropped",
                MAX_HEAD / 1024
            ),
            Violation::Body(n) => write!(
                f,
                "the RTSP camera announced a message body of {n} bytes (at most {} KiB): dropped",
                MAX_BODY / 1024
            ),
            Violation::NoBoundary(limit) => write!(
                f,
                "the RTSP camera sent over {} MiB of video without ending a picture (--max-nal-size): dropped",
                limit >> 20
            ),
            Violation::BasicOnly => f.write_str(
                "the RTSP camera asks for Basic authentication, which sends the password readable to anyone on the network: use Digest on the camera, or --rtsp-allow-basic on",
            ),
            Violation::Garbled => f.write_str("RTSP camera error: not an RTSP answer"),
        }
    }
}

/// What the guard reads from the camera, one state per message.
#[derive(Debug)]
enum State {
    /// Between messages.
    Idle,
    /// An RTSP message head so far.
    Head(Vec<u8>),
    /// Body bytes still to pass.
    Body(u64),
    /// An interleaved frame: `$`, then channel and length still being read.
    FrameHeader(Vec<u8>),
    /// An interleaved frame's payload: channel, bytes left, its first bytes (the
    /// RTP header) while fewer than 12 were seen.
    Frame {
        channel: u8,
        len: usize,
        left: usize,
        rtp: Vec<u8>,
    },
}

/// Bytes since an access unit boundary on one channel.
#[derive(Debug, Default)]
struct Unmarked {
    timestamp: Option<u32>,
    bytes: usize,
}

/// The camera-to-retina byte stream, checked and (in message heads) edited. Pure:
/// bytes in, bytes out or a violation.
#[derive(Debug)]
pub struct CameraStream {
    state: State,
    max_unmarked: usize,
    allow_basic: bool,
    camera: IpAddr,
    unmarked: HashMap<u8, Unmarked>,
}

impl CameraStream {
    /// A stream from the camera at `camera`: at most `max_unmarked` RTP bytes per
    /// channel without an access unit ending; Basic challenges kept if `allow_basic`.
    pub fn new(camera: IpAddr, max_unmarked: usize, allow_basic: bool) -> Self {
        CameraStream {
            state: State::Idle,
            max_unmarked,
            allow_basic,
            camera,
            unmarked: HashMap::new(),
        }
    }

    /// Takes `input` from the camera and appends what retina may read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        while !input.is_empty() {
            match &mut self.state {
                State::Idle => {
                    if input[0] == b'$' {
                        self.state = State::FrameHeader(Vec::with_capacity(4));
                    } else {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(head) => {
                    // Up to the end of the head, or all of the input.
                    let before = head.len();
                    head.extend_from_slice(input);
                    let end = find_end(head, before.saturating_sub(3));
                    let Some(end) = end else {
                        if head.len() > MAX_HEAD {
                            return Err(Violation::Head);
                        }
                        input = &[];
                        continue;
                    };
                    if end > MAX_HEAD {
                        return Err(Violation::Head);
                    }
                    let taken = end - before;
                    input = &input[taken..];
                    head.truncate(end);
                    let head = std::mem::take(head);
                    let (edited, body) = self.edit_head(&head)?;
                    out.extend_from_slice(&edited);
                    self.state = if body > 0 {
                        State::Body(body)
                    } else {
                        State::Idle
                    };
                }
                State::Body(left) => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Idle;
                    }
                }
                State::FrameHeader(header) => {
                    let n = (4 - header.len()).min(input.len());
                    header.extend_from_slice(&input[..n]);
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if header.len() == 4 {
                        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
                        let channel = header[1];
                        self.state = if len == 0 {
                            State::Idle
                        } else {
                            State::Frame {
                                channel,
                                len,
                                left: len,
                                rtp: Vec::with_capacity(12),
                            }
                        };
                    }
                }
                State::Frame {
                    channel,
                    len,
                    left,
                    rtp,
                } => {
                    let n = (*left).min(input.len());
                    if rtp.len() < 12 {
                        let k = (12 - rtp.len()).min(n);
                        rtp.extend_from_slice(&input[..k]);
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        let (channel, len, rtp) = (*channel, *len, std::mem::take(rtp));
                        self.state = State::Idle;
                        self.count(channel, len, &rtp)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts one interleaved frame's payload against its channel's limit.
    fn count(&mut self, channel: u8, len: usize, rtp: &[u8]) -> Result<(), Violation> {
        // RTP version 2, not RTCP (payload types 200-204 fill the second byte).
        let is_rtp = rtp.len() >= 12 && rtp[0] >> 6 == 2 && !(200..=204).contains(&rtp[1]);
        if !is_rtp {
            return Ok(());
        }
        let marker = rtp[1] & 0x80 != 0;
        let timestamp = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        let u = self.unmarked.entry(channel).or_default();
        if u.timestamp != Some(timestamp) {
            // A new access unit began: the previous one is over.
            u.timestamp = Some(timestamp);
            u.bytes = 0;
        }
        u.bytes += len;
        if u.bytes > self.max_unmarked {
            return Err(Violation::NoBoundary(self.max_unmarked));
        }
        if marker {
            u.bytes = 0;
            u.timestamp = None;
        }
        Ok(())
    }

    /// A complete head, as retina may read it, and its body's length.
    fn edit_head(&self, head: &[u8]) -> Result<(Vec<u8>, u64), Violation> {
        let text = std::str::from_utf8(head).map_err(|_| Violation::Garbled)?;
        let mut lines = text.split_inclusive('\n');
        let first = lines.next().unwrap_or_default();
        let status_401 =
            first.starts_with("RTSP/") && first.split_whitespace().nth(1) == Some("401");
        let mut out = String::with_capacity(text.len() + 32);
        out.push_str(first);
        let mut body = 0u64;
        let (mut challenges, mut basic_removed) = (0, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                out.push_str(line);
                continue;
            };
            let name_lower = name.trim().to_ascii_lowercase();
            let value_trim = value.trim();
            match name_lower.as_str() {
                "content-length" => {
                    body = value_trim.parse().map_err(|_| Violation::Garbled)?;
                    if body > MAX_BODY as u64 {
                        return Err(Violation::Body(body));
                    }
                }
                "www-authenticate" => {
                    let basic = value_trim
                        .get(..6)
                        .is_some_and(|s| s.eq_ignore_ascii_case("basic "))
                        || value_trim.eq_ignore_ascii_case("basic");
                    if basic && !self.allow_basic {
                        basic_removed = true;
                        continue;
                    }
                    challenges += 1;
                }
                "transport" => {
                    let lower = value_trim.to_ascii_lowercase();
                    if lower.contains("server_port=") && !lower.contains("source=") {
                        let line_end = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
                        out.push_str(&format!(
                            "{name}: {value_trim};source={}{line_end}",
                            self.camera
                        ));
                        continue;
                    }
                }
                _ => {}
            }
            out.push_str(line);
        }
        if status_401 && basic_removed && challenges == 0 {
            return Err(Violation::BasicOnly);
        }
        Ok((out.into_bytes(), body))
    }
}

/// Where a message head ends (the index after its blank line), searching from
/// `from`: CRLF CRLF, or LF LF from lenient cameras.
fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A running guard: the loopback address retina is to connect to, and why it
/// dropped the camera, once it did.
pub struct Guard {
    /// Retina's side.
    pub addr: SocketAddr,
    violation: Arc<Mutex<Option<Violation>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Guard {
    /// Connects to the camera `camera` (a connected stream) and listens on a
    /// loopback port for retina's one connection.
    pub async fn start(
        camera: TcpStream,
        max_unmarked: usize,
        allow_basic: bool,
    ) -> std::io::Result<Guard> {
        let camera_ip = camera.peer_addr()?.ip();
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let violation = Arc::new(Mutex::new(None));
        let seen = violation.clone();
        let task = tokio::spawn(async move {
            let Ok((retina, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let stream = CameraStream::new(camera_ip, max_unmarked, allow_basic);
            let _ = relay(camera, retina, stream, &seen).await;
        });
        Ok(Guard {
            addr,
            violation,
            task,
        })
    }

    /// Why the camera was dropped, if it was.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies retina's requests to the camera as they are, and the camera's bytes to
/// retina through `stream`, until either side closes or the camera breaks a limit.
async fn relay(
    camera: TcpStream,
    retina: TcpStream,
    mut stream: CameraStream,
    seen: &Mutex<Option<Violation>>,
) -> Result<(), Violation> {
    let (mut camera_read, mut camera_write) = camera.into_split();
    let (mut retina_read, mut retina_write) = retina.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut retina_read, &mut camera_write).await;
        let _ = camera_write.shutdown().await;
        Ok(())
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(buf.len());
        loop {
            let n = match camera_read.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            out.clear();
            if let Err(v) = stream.feed(&buf[..n], &mut out) {
                // Known before retina's side closes (when the halves drop), so the
                // source reports this, not retina's "EOF while expecting …".
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
                return Err(v);
            }
            if retina_write.write_all(&out).await.is_err() {
                return Ok(());
            }
        }
    };
    // Either side's end (or a violation) ends both: dropping the halves closes them.
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> CameraStream {
        CameraStream::new("192.0.2.9".parse().expect("ip"), 100_000, false)
    }

    /// Feeds `input` in pieces of `chunk` bytes: the output, or the violation.
    fn run(s: &mut CameraStream, input: &[u8], chunk: usize) -> Result<Vec<u8>, Violation> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            s.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    fn rtp_frame(channel: u8, marker: bool, timestamp: u32, payload: usize) -> Vec<u8> {
        let len = 12 + payload;
        let mut f = vec![b'$', channel];
        f.extend_from_slice(&u16::try_from(len).expect("fits").to_be_bytes());
        f.push(0x80);
        f.push(if marker { 0x80 | 96 } else { 96 });
        f.extend_from_slice(&[0, 1]);
        f.extend_from_slice(&timestamp.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1]);
        f.extend(std::iter::repeat_n(0x55, payload));
        f
    }

    #[test]
    fn ordinary_answers_and_video_pass_unchanged_in_any_pieces() {
        let mut input = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\no=- x".to_vec();
        for i in 0..50u32 {
            input.extend(rtp_frame(0, i % 5 == 4, i / 5, 1400));
            input.extend(rtp_frame(1, false, 0, 20)); // not RTP: RTCP-ish bytes
        }
        input.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n");
        for chunk in [1, 3, 7, 100, 5000, input.len()] {
            let out = run(&mut stream(), &input, chunk).expect("passes");
            assert_eq!(out, input, "in pieces of {chunk}");
        }
    }

    #[test]
    fn oversized_heads_bodies_and_endless_pictures_are_refused() {
        // A head that never ends.
        let mut endless = b"RTSP/1.0 200 OK\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'x', MAX_HEAD + 1));
        assert_eq!(run(&mut stream(), &endless, 4096), Err(Violation::Head));
        // A huge body announced.
        let big = format!(
            "RTSP/1.0 200 OK\r\nCSeq: 1\r\ncontent-length: {}\r\n\r\n",
            4u64 << 30
        );
        assert_eq!(
            run(&mut stream(), big.as_bytes(), 10),
            Err(Violation::Body(4 << 30))
        );
        // RTP that never ends a picture: one timestamp, no marker.
        let mut video = Vec::new();
        for _ in 0..100 {
            video.extend(rtp_frame(0, false, 7, 1400));
        }
        assert_eq!(
            run(&mut stream(), &video, 999),
            Err(Violation::NoBoundary(100_000))
        );
        // The same bytes as pictures that end pass.
        let mut video = Vec::new();
        for i in 0..100u32 {
            video.extend(rtp_frame(0, i % 10 == 9, i / 10, 1400));
        }
        assert!(run(&mut stream(), &video, 999).is_ok());
    }

    #[test]
    fn basic_challenges_are_removed_unless_allowed() {
        let both = b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc\"\r\n\r\n";
        let out = run(&mut stream(), both, 13).expect("digest stays");
        let text = String::from_utf8(out).expect("text");
        assert!(
            !text.contains("Basic") && text.contains("Digest realm"),
            "{text}"
        );
        let basic = b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n";
        assert_eq!(run(&mut stream(), basic, 13), Err(Violation::BasicOnly));
        let mut allowed = CameraStream::new("192.0.2.9".parse().expect("ip"), 100_000, true);
        assert_eq!(run(&mut allowed, basic, 13).expect("allowed"), basic);
    }

    #[test]
    fn a_udp_transport_answer_names_the_camera_as_the_source() {
        let setup = b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001\r\nSession: 1\r\n\r\n";
        let out = String::from_utf8(run(&mut stream(), setup, 9).expect("ok")).expect("text");
        assert!(
            out.contains("Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001;source=192.0.2.9\r\nSession: 1\r\n"),
            "{out}"
        );
        let tcp =
            b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n";
        assert_eq!(run(&mut stream(), tcp, 9).expect("ok"), tcp);
    }
}
