//! Publishing to `rtsp://` targets by nalcast itself: ANNOUNCE the stream (an SDP
//! with the SPS and PPS), SETUP its one track with RTP interleaved on the TCP
//! connection, RECORD, then RTP (RFC 6184: a NAL unit a packet, FU-A fragments
//! above [`MAX_PAYLOAD`]). No ffmpeg, so the URL's user and password are on no
//! command line. Digest (http-auth, as retina uses it) where the server asks for a
//! login; Basic, which sends the password readable by anyone on the network, only
//! with `--rtsp-allow-basic on`, as for RTSP cameras.
//!
//! Hand-written, the few requests a publisher makes: the RTSP crates here are
//! clients that play (retina) rather than record.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http_auth::{PasswordClient, PasswordParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::target::RtspEndpoint;
use super::{
    connect, first_accepted, send_within, session_until_shutdown, PublishOptions, Publisher,
    RunEnd, State,
};
use nalcast_core::fmp4::Packager;
use nalcast_core::queue::Item;
use nalcast_core::Hub;
use nalcast_h264::ParamSets;

/// RTP payload bytes at most: servers pass packets on to UDP readers as they are.
pub const MAX_PAYLOAD: usize = 1400;
/// The payload type announced.
const PT: u8 = 96;
/// How long connecting and each request may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A response's head and body, at most.
const MAX_RESPONSE: usize = 64 * 1024;
/// Keep-alive when the server names no session timeout (RFC 2326: 60 s).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The hub's access units as RTP packets, each framed for the TCP connection
/// (`$`, channel 0, length), from a keyframe on; after a gap nothing until the
/// next one. Keyframes carry the SPS and PPS in-band too (a server or player that
/// missed the SDP's, or a camera that changed them).
#[derive(Debug)]
pub struct RtpFeed {
    packager: Packager,
    started: bool,
    broken: bool,
    seq: u16,
    ssrc: u32,
}

impl RtpFeed {
    /// A feed whose packets carry `ssrc`.
    pub fn new(ssrc: u32) -> RtpFeed {
        RtpFeed {
            packager: Packager::new(),
            started: false,
            broken: false,
            seq: 0,
            ssrc,
        }
    }

    /// The interleaved frames to send for `item` (none: wait).
    pub fn next(&mut self, item: &Item) -> Vec<Bytes> {
        let au = match item {
            Item::Au { au, .. } => &au.au,
            Item::Skipped(_) => {
                self.broken = true;
                return Vec::new();
            }
            Item::Status(_) => return Vec::new(),
        };
        if (self.broken || !self.started) && !au.keyframe {
            return Vec::new();
        }
        let Ok(fragment) = self.packager.fragment(au) else {
            self.broken = true;
            return Vec::new();
        };
        let (Some(timing), Some(sample)) =
            (self.packager.last_timing(), Packager::sample_of(&fragment))
        else {
            self.broken = true;
            return Vec::new();
        };
        self.started = true;
        self.broken = false;
        // 90 kHz presentation time, wrapping as RTP time does.
        let time = timing.presentation_time() as u32;
        let mut nals: Vec<&[u8]> = Vec::new();
        if au.keyframe {
            nals.extend(au.params.sps_active_first().map(|s| &s[..]));
            nals.extend(au.params.pps.iter().map(|p| &p[..]));
        }
        let mut rest = &sample[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(nal) = rest.get(4..4 + n) else {
                break;
            };
            nals.push(nal);
            rest = &rest[4 + n..];
        }
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for nal in nals.into_iter().filter(|n| !n.is_empty()) {
            fragments(nal, &mut payloads);
        }
        let last = payloads.len().saturating_sub(1);
        payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                let frame = self.packet(time, i == last, payload);
                self.seq = self.seq.wrapping_add(1);
                frame
            })
            .collect()
    }

    fn packet(&self, time: u32, marker: bool, payload: &[u8]) -> Bytes {
        let len = 12 + payload.len();
        let mut b = BytesMut::with_capacity(4 + len);
        b.put_u8(b'$');
        b.put_u8(0);
        b.put_u16(len as u16);
        b.put_u8(0x80);
        b.put_u8(if marker { 0x80 | PT } else { PT });
        b.put_u16(self.seq);
        b.put_u32(time);
        b.put_u32(self.ssrc);
        b.put_slice(payload);
        b.freeze()
    }
}

/// `nal` as RTP payloads: itself when it fits, else FU-A fragments.
fn fragments(nal: &[u8], out: &mut Vec<Vec<u8>>) {
    if nal.len() <= MAX_PAYLOAD {
        out.push(nal.to_vec());
        return;
    }
    let header = nal[0];
    let indicator = (header & 0xe0) | 28;
    let kind = header & 0x1f;
    let chunks: Vec<&[u8]> = nal[1..].chunks(MAX_PAYLOAD - 2).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i == last { 0x40 } else { 0 };
        let mut p = Vec::with_capacity(2 + chunk.len());
        p.push(indicator);
        p.push(start | end | kind);
        p.extend_from_slice(chunk);
        out.push(p);
    }
}

/// The SDP announced: one H.264 track, its parameter sets.
pub fn sdp(params: &ParamSets, host: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sps = params.active_sps();
    let profile_level: String = sps
        .get(1..4)
        .map(|p| p.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_else(|| "42C01F".to_owned());
    let sets: Vec<String> = params
        .sps_active_first()
        .chain(params.pps.iter())
        .map(|s| b64.encode(&s[..]))
        .collect();
    let ip = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 0 0 IN {ip} {host}\r\ns=nalcast\r\nc=IN {ip} {host}\r\nt=0 0\r\n\
         m=video 0 RTP/AVP {PT}\r\na=rtpmap:{PT} H264/90000\r\n\
         a=fmtp:{PT} packetization-mode=1; profile-level-id={profile_level}; \
         sprop-parameter-sets={}\r\na=control:trackID=0\r\n",
        sets.join(",")
    )
}

/// Why a run failed, for the log and the API (the password never in it).
type Failure = String;

/// One RTSP session: connect, announce, record, send until a failure or shutdown.
pub(super) async fn run_once(
    publisher: &Arc<Publisher>,
    hub: &Arc<Hub>,
    opts: &PublishOptions,
    endpoint: &RtspEndpoint,
    mut shutdown: watch::Receiver<bool>,
) -> RunEnd {
    let subscription = hub.subscribe_internal(std::time::Instant::now());
    let queue = &subscription.queue;
    // Any number, different from run to run.
    let ssrc = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x6e61_6c63, |d| d.subsec_nanos() ^ std::process::id());
    let mut feed = RtpFeed::new(ssrc);
    // Announce once there is something to send: a keyframe and its parameter sets.
    let first = first_accepted(queue, &mut shutdown, |item| {
        let frames = feed.next(item);
        match item {
            Item::Au { au, .. } if !frames.is_empty() => Some((frames, au.au.params.clone())),
            _ => None,
        }
    })
    .await;
    let Some((first, params)) = first else {
        return RunEnd::Shutdown;
    };
    let session = async {
        let tcp = connect(&endpoint.host, endpoint.port).await?;
        let mut client = Client::new(tcp, endpoint, opts.allow_basic);
        let keepalive = client.record(&params, &endpoint.host).await?;
        client.send(&first, opts.stall_timeout).await?;
        publisher.set_state(State::Live);
        client
            .stream(queue, &mut feed, keepalive, opts.stall_timeout)
            .await
    };
    session_until_shutdown(publisher, session, &mut shutdown).await
}

/// A response: its status and headers (names in lower case).
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Client<'a, S> {
    io: S,
    endpoint: &'a RtspEndpoint,
    allow_basic: bool,
    cseq: u32,
    session: Option<String>,
    auth: Option<PasswordClient>,
    buf: BytesMut,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Client<'a, S> {
    fn new(io: S, endpoint: &'a RtspEndpoint, allow_basic: bool) -> Self {
        Client {
            io,
            endpoint,
            allow_basic,
            cseq: 0,
            session: None,
            auth: None,
            buf: BytesMut::new(),
        }
    }

    /// ANNOUNCE, SETUP, RECORD; returns how often to keep the session alive.
    async fn record(&mut self, params: &ParamSets, host: &str) -> Result<Duration, Failure> {
        let url = self.endpoint.url.clone();
        let sdp = sdp(params, host);
        self.call(
            "ANNOUNCE",
            &url,
            &[("Content-Type", "application/sdp")],
            sdp.as_bytes(),
        )
        .await?;
        let track = track_url(&url);
        let setup = self
            .call(
                "SETUP",
                &track,
                &[(
                    "Transport",
                    "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
                )],
                b"",
            )
            .await?;
        let session = setup
            .header("session")
            .ok_or("the server's SETUP answer has no session")?
            .to_owned();
        let mut parts = session.split(';');
        self.session = parts.next().map(|id| id.trim().to_owned());
        let keepalive = parts
            .filter_map(|p| p.trim().strip_prefix("timeout="))
            .find_map(|t| t.parse::<u64>().ok())
            .map_or(DEFAULT_KEEPALIVE, |t| Duration::from_secs((t / 2).max(5)));
        self.call("RECORD", &url, &[("Range", "npt=0.000-")], b"")
            .await?;
        Ok(keepalive)
    }

    /// A request and its answer, with the login when the server asks for one.
    async fn call(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let mut challenged = false;
        loop {
            let request = self.request(method, url, headers, body)?;
            tokio::time::timeout(SETUP_TIMEOUT, async {
                self.io.write_all(&request).await?;
                self.io.flush().await
            })
            .await
            .map_err(|_| {
                format!(
                    "{method}: the server took nothing for {} s",
                    SETUP_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("{method}: sending to the server: {e}"))?;
            let response = tokio::time::timeout(SETUP_TIMEOUT, self.response())
                .await
                .map_err(|_| {
                    format!(
                        "{method}: no answer from the server within {} s",
                        SETUP_TIMEOUT.as_secs()
                    )
                })??;
            match response.status {
                200..=299 => return Ok(response),
                401 if !challenged => {
                    challenged = true;
                    self.challenged(&response)?;
                }
                401 => {
                    return Err(format!(
                        "{method}: the server refused the user and password"
                    ))
                }
                status => {
                    return Err(format!(
                        "{method}: the server answered {status} {}",
                        response.reason
                    ))
                }
            }
        }
    }

    /// Takes the server's login challenge.
    fn challenged(&mut self, response: &Response) -> Result<(), Failure> {
        if self.endpoint.login.is_none() {
            return Err("the server asks for a login: give the user and password in the URL (rtsp://user:password@host/…)".into());
        }
        let challenges: Vec<&str> = response
            .headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        let client = PasswordClient::try_from(challenges.join(", ").as_str())
            .map_err(|e| format!("the server's login challenge: {e}"))?;
        if matches!(client, PasswordClient::Basic(_)) && !self.allow_basic {
            return Err("the server asks for Basic login, which sends the password readable by anyone on the network; nalcast sends it only with --rtsp-allow-basic on".into());
        }
        self.auth = Some(client);
        Ok(())
    }

    /// A request's bytes, with its CSeq, session and login.
    fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        self.cseq += 1;
        let mut head = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: nalcast/{}\r\n",
            self.cseq,
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(session) = &self.session {
            head.push_str(&format!("Session: {session}\r\n"));
        }
        if let (Some(auth), Some((user, password))) = (self.auth.as_mut(), &self.endpoint.login) {
            let value = auth
                .respond(&PasswordParams {
                    username: user,
                    password,
                    uri: url,
                    method,
                    body: Some(body),
                })
                .map_err(|e| format!("the login: {e}"))?;
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Reads the next response (skipping interleaved frames), head and body.
    async fn response(&mut self) -> Result<Response, Failure> {
        loop {
            if self.buf.first() == Some(&b'$') {
                if self.buf.len() >= 4 {
                    let len = 4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                    if self.buf.len() >= len {
                        let _ = self.buf.split_to(len);
                        continue;
                    }
                }
            } else if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let mut words = status_line.splitn(3, ' ');
                let (Some("RTSP/1.0"), Some(code)) = (words.next(), words.next()) else {
                    return Err(format!("not an RTSP answer: '{}'", truncate(status_line)));
                };
                let status = code
                    .parse()
                    .map_err(|_| format!("not an RTSP status: '{}'", truncate(code)))?;
                let reason = words.next().unwrap_or_default().to_owned();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let body_len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if body_len > MAX_RESPONSE {
                    return Err(format!("an RTSP answer with a body of {body_len} bytes"));
                }
                if self.buf.len() >= end + 4 + body_len {
                    let _ = self.buf.split_to(end + 4 + body_len);
                    return Ok(Response {
                        status,
                        reason,
                        headers,
                    });
                }
            }
            if self.buf.len() > MAX_RESPONSE * 2 {
                return Err("an RTSP answer larger than 128 KiB".into());
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("reading from the server: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// Writes frames, failing when the server takes nothing for `stall`.
    async fn send(&mut self, frames: &[Bytes], stall: Duration) -> Result<(), Failure> {
        send_within(&mut self.io, frames, stall).await
    }

    /// Sends the pictures as they come; what the server says (RTCP, answers to the
    /// keep-alives) is read and let go.
    async fn stream(
        &mut self,
        queue: &nalcast_core::queue::ViewerQueue,
        feed: &mut RtpFeed,
        keepalive: Duration,
        stall: Duration,
    ) -> Result<RunEnd, Failure> {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut ticks = tokio::time::interval(keepalive);
        ticks.tick().await;
        loop {
            tokio::select! {
                item = queue.next() => {
                    let Some((item, _)) = item else {
                        return Ok(RunEnd::Shutdown);
                    };
                    let frames = feed.next(&item);
                    self.send(&frames, stall).await?;
                }
                n = self.io.read(&mut scratch) => {
                    match n {
                        Ok(0) => return Err("the server closed the connection".into()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("reading from the server: {e}")),
                    }
                }
                _ = ticks.tick() => {
                    let url = self.endpoint.url.clone();
                    let ping = self.request("GET_PARAMETER", &url, &[], b"")?;
                    self.send(&[Bytes::from(ping)], stall).await?;
                }
            }
        }
    }
}

/// The track's URL (the SDP's `a=control`), before the query string if any.
fn track_url(url: &str) -> String {
    match url.split_once('?') {
        Some((path, query)) => format!("{}/trackID=0?{query}", path.trim_end_matches('/')),
        None => format!("{}/trackID=0", url.trim_end_matches('/')),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::rtmp::tests::items;

    /// An interleaved frame's RTP header fields and payload.
    fn rtp(frame: &[u8]) -> (bool, u16, u32, &[u8]) {
        assert_eq!(frame[0], b'$');
        assert_eq!(frame[1], 0, "channel 0");
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[2], frame[3]])),
            frame.len() - 4
        );
        let p = &frame[4..];
        assert_eq!(p[0], 0x80, "version 2, no padding, extension or CSRC");
        assert_eq!(p[1] & 0x7f, PT);
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let time = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        (p[1] & 0x80 != 0, seq, time, &p[12..])
    }

    #[test]
    fn the_track_url_keeps_the_query_last() {
        assert_eq!(track_url("rtsp://h/cam"), "rtsp://h/cam/trackID=0");
        assert_eq!(track_url("rtsp://h/cam/"), "rtsp://h/cam/trackID=0");
        assert_eq!(
            track_url("rtsp://h/cam?user=u&pass=p"),
            "rtsp://h/cam/trackID=0?user=u&pass=p"
        );
    }

    #[test]
    fn a_large_nal_unit_goes_in_fu_a_fragments_that_rebuild_it() {
        let mut nal = vec![0x65];
        nal.extend((0..3000u32).map(|i| i as u8));
        let mut out = Vec::new();
        fragments(&nal, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert_eq!(out[0][0], 0x60 | 28, "NRI kept, type FU-A");
        assert_eq!(out[0][1], 0x80 | 5, "start, the NAL unit's type");
        assert_eq!(out[1][1], 5);
        assert_eq!(out[2][1], 0x40 | 5, "end");
        let mut rebuilt = vec![(out[0][0] & 0xe0) | (out[0][1] & 0x1f)];
        for p in &out {
            rebuilt.extend_from_slice(&p[2..]);
        }
        assert_eq!(rebuilt, nal);
        let mut small = Vec::new();
        fragments(&[0x41, 1, 2, 3], &mut small);
        assert_eq!(small, vec![vec![0x41, 1, 2, 3]], "a small one as it is");
    }

    #[test]
    fn pictures_go_out_from_a_keyframe_with_its_parameter_sets_marked_at_their_end() {
        let items = items(6, |_| false);
        assert!(
            RtpFeed::new(7).next(&items[1]).is_empty(),
            "nothing before a keyframe"
        );
        let mut feed = RtpFeed::new(7);
        let key = feed.next(&items[0]);
        let parsed: Vec<_> = key.iter().map(|f| rtp(f)).collect();
        assert_eq!(parsed[0].3[0] & 0x1f, 7, "the SPS first");
        assert_eq!(parsed[1].3[0] & 0x1f, 8, "then the PPS");
        let markers: Vec<bool> = parsed.iter().map(|p| p.0).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert!(
            markers[markers.len() - 1],
            "the marker on the picture's last packet"
        );
        assert!(
            parsed.iter().all(|p| p.2 == parsed[0].2),
            "one timestamp a picture"
        );
        let mut seq = parsed.last().map(|p| p.1).expect("packets");
        let mut time = parsed[0].2;
        for item in &items[1..] {
            for frame in feed.next(item) {
                let (_, s, t, _) = rtp(&frame);
                assert_eq!(s, seq.wrapping_add(1), "sequence numbers in a row");
                seq = s;
                if t != time {
                    let step = t.wrapping_sub(time);
                    assert!(
                        (2990..=3010).contains(&step),
                        "{step}: not 33.3 ms at 90 kHz"
                    );
                    time = t;
                }
            }
        }
        assert!(feed.next(&Item::Skipped(2)).is_empty());
        assert!(
            feed.next(&items[3]).is_empty(),
            "after a gap, nothing until a keyframe"
        );
    }

    #[test]
    fn the_sdp_names_the_profile_and_carries_the_parameter_sets() {
        let Item::Au { au, .. } = &items(1, |_| true)[0] else {
            panic!("an access unit");
        };
        let sdp = sdp(&au.au.params, "::1");
        assert!(sdp.contains("c=IN IP6 ::1\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
        assert!(sdp.contains("profile-level-id=42C0"), "{sdp}");
        let b64 = base64::engine::general_purpose::STANDARD;
        let sets = sdp
            .split("sprop-parameter-sets=")
            .nth(1)
            .and_then(|r| r.split("\r\n").next())
            .expect("sprop-parameter-sets");
        let decoded: Vec<Vec<u8>> = sets
            .split(',')
            .map(|s| b64.decode(s).expect("base64"))
            .collect();
        assert_eq!(decoded[0][0] & 0x1f, 7);
        assert_eq!(decoded[1][0] & 0x1f, 8);
    }
}
