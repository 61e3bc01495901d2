//! Publishing to `rtmp://` and `rtmps://` targets by nalcast itself: no ffmpeg, so
//! the stream key is in no process's command line (`ps` shows every local user
//! every process's arguments), and a Pi runs one process less per target.
//!
//! rml_rtmp does the protocol (handshake, chunking, the connect / createStream /
//! publish commands and their answers); TLS is rustls with the system's trusted
//! certificates (rustls-native-certs). What is ours is the FLV video (pure, [`TagFeed`]): an AVC
//! sequence header (the avcC) before the first picture and again when the
//! parameter sets change, then one tag per access unit in AVCC form, timed by the
//! same packager the fMP4 paths use (decode time from the capture time, the
//! composition offset where B-frames reorder).
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::rtmp_login::{refused_without_login, RtmpLogin};
use super::target::RtmpEndpoint;
use super::{
    connect, first_accepted, send_within, session_until_shutdown, PublishOptions, Publisher,
    RunEnd, State,
};
use nalcast_core::fmp4::Packager;
use nalcast_core::queue::Item;
use nalcast_core::Hub;
use nalcast_h264::ParamSets;

/// How long connecting, the handshake and the publish request may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// FLV: codec 7 (AVC) with frame type 1 (key) or 2 (inter).
const KEY_AVC: u8 = 0x17;
const INTER_AVC: u8 = 0x27;
/// AVCPacketType: 0 the sequence header, 1 NAL units.
const SEQUENCE_HEADER: u8 = 0;
const NALUS: u8 = 1;

/// One FLV video tag's body, with its RTMP timestamp (the decode time, ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The tag's body: FLV video header and the avcC or the AVCC access unit.
    pub data: Bytes,
    /// The decode time, ms from the session's first picture.
    pub timestamp_ms: u32,
    /// A keyframe (or the sequence header).
    pub keyframe: bool,
}

/// The hub's access units as FLV video tags, from a keyframe on; after a gap (an
/// overflow, a picture that could not be packaged) nothing until the next one.
#[derive(Debug, Default)]
pub struct TagFeed {
    packager: Packager,
    /// The parameter sets of the last sequence header sent.
    params: Option<Arc<ParamSets>>,
    broken: bool,
}

impl TagFeed {
    /// A feed that has sent nothing yet.
    pub fn new() -> TagFeed {
        TagFeed {
            packager: Packager::new(),
            ..TagFeed::default()
        }
    }

    /// The parameter sets of the stream being sent, once it has begun.
    pub fn params(&self) -> Option<&Arc<ParamSets>> {
        self.params.as_ref()
    }

    /// The tags to send for `item` (none: wait).
    pub fn next(&mut self, item: &Item) -> Vec<Tag> {
        let au = match item {
            Item::Au { au, .. } => &au.au,
            Item::Skipped(_) => {
                // The queue resumes at a keyframe by itself.
                self.broken = true;
                return Vec::new();
            }
            Item::Status(_) => return Vec::new(),
        };
        if (self.broken || self.params.is_none()) && !au.keyframe {
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
        let timestamp_ms = (timing.decode_time / 90) as u32;
        let mut tags = Vec::with_capacity(2);
        let new_params = !self
            .params
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &au.params) || **p == *au.params);
        if new_params {
            // Before its first picture, and at a keyframe with new SPS/PPS.
            let Ok(config) = Packager::decoder_configuration(&au.params) else {
                self.broken = true;
                return Vec::new();
            };
            tags.push(Tag {
                data: body(KEY_AVC, SEQUENCE_HEADER, 0, &config),
                timestamp_ms,
                keyframe: true,
            });
            self.params = Some(au.params.clone());
        }
        self.broken = false;
        let cts_ms = timing.composition_offset / 90;
        let kind = if au.keyframe { KEY_AVC } else { INTER_AVC };
        tags.push(Tag {
            data: body(kind, NALUS, cts_ms, &sample),
            timestamp_ms,
            keyframe: au.keyframe,
        });
        tags
    }
}

/// An FLV AVC video tag body: frame type and codec, packet type, composition time
/// (signed 24 bits, ms), payload.
fn body(kind: u8, packet: u8, cts_ms: i32, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(kind);
    b.put_u8(packet);
    let cts = cts_ms.clamp(-(1 << 23), (1 << 23) - 1);
    b.put_slice(&cts.to_be_bytes()[1..]);
    b.put_slice(payload);
    b.freeze()
}

/// Why a run failed, for the log and the API (the stream key never in it).
type Failure = String;

/// One RTMP session: connect, publish, send until a failure, new parameters or
/// shutdown.
pub(super) async fn run_once(
    publisher: &Arc<Publisher>,
    hub: &Arc<Hub>,
    opts: &PublishOptions,
    endpoint: &RtmpEndpoint,
    mut shutdown: watch::Receiver<bool>,
) -> RunEnd {
    let subscription = hub.subscribe_internal(std::time::Instant::now());
    let queue = &subscription.queue;
    let mut feed = TagFeed::new();
    // Connect once there is something to send: a keyframe.
    let first = first_accepted(queue, &mut shutdown, |item| {
        Some(feed.next(item)).filter(|tags| !tags.is_empty())
    })
    .await;
    let Some(first) = first else {
        return RunEnd::Shutdown;
    };
    let session = async {
        let mut login = endpoint
            .login
            .as_ref()
            .map(|(user, password)| RtmpLogin::new(user, password));
        loop {
            // A server that wants a login refuses the connect, saying how; each
            // step of the login is a new connection (rtmp_login.rs).
            let query = login
                .as_mut()
                .map_or("", RtmpLogin::next_connect)
                .to_owned();
            let tcp = connect(&endpoint.host, endpoint.port).await?;
            let first = first.clone();
            let ended = if endpoint.tls {
                let tls = tls_connect(tcp, &endpoint.host).await?;
                publish(
                    tls, publisher, queue, &mut feed, first, opts, endpoint, &query,
                )
                .await?
            } else {
                publish(
                    tcp, publisher, queue, &mut feed, first, opts, endpoint, &query,
                )
                .await?
            };
            match (ended, login.as_mut()) {
                (Ok(end), _) => return Ok(end),
                (Err(refusal), Some(login)) => {
                    login.refused(&refusal, &endpoint.app, client_nonce())?;
                }
                (Err(refusal), None) => {
                    return Err(refused_without_login(&refusal, &endpoint.app));
                }
            }
        }
    };
    session_until_shutdown(publisher, session, &mut shutdown).await
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's (Debian: ca-certificates), or SSL_CERT_FILE / SSL_CERT_DIR's.
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "no trusted certificates to check the server's with (install ca-certificates, or set SSL_CERT_FILE)"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS with the server: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| format!("'{host}' is not a host name TLS can check"))?;
    tokio::time::timeout(
        SETUP_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("no TLS handshake within {} s", SETUP_TIMEOUT.as_secs()))?
    .map_err(|e| format!("TLS with the server: {e}"))
}

/// A fresh client challenge for a login.
fn client_nonce() -> u32 {
    ring::rand::generate::<[u8; 4]>(&ring::rand::SystemRandom::new())
        .map(|r| u32::from_be_bytes(r.expose()))
        .unwrap_or_else(|_| std::process::id() ^ 0x5a5a_5a5a)
}

/// The RTMP session over `io`: handshake, connect (`query` appended to the
/// application and tcUrl: a login's), publish, then the tags. `Ok(Err(why))`: the
/// server refused the connect, saying `why`.
#[allow(clippy::too_many_arguments)]
async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    publisher: &Arc<Publisher>,
    queue: &nalcast_core::queue::ViewerQueue,
    feed: &mut TagFeed,
    first: Vec<Tag>,
    opts: &PublishOptions,
    endpoint: &RtmpEndpoint,
    query: &str,
) -> Result<Result<RunEnd, String>, Failure> {
    let mut buf = vec![0u8; 16 * 1024];
    // What the server sent: rml_rtmp holds a message until its last chunk, so a
    // hostile server could make it hold much; a real one sends a few bytes a
    // second (acknowledgements, pings, status).
    let mut received = 0usize;
    let setup = async {
        let leftover = handshake(&mut io, &mut buf).await?;
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("{}{query}", endpoint.tc_url));
        let (mut session, results) =
            ClientSession::new(config).map_err(|e| format!("RTMP: {e}"))?;
        send_results(&mut io, results).await?;
        let connect = session
            .request_connection(format!("{}{query}", endpoint.app))
            .map_err(|e| format!("RTMP: {e}"))?;
        send_results(&mut io, vec![connect]).await?;
        let mut pending = leftover;
        let mut asked_to_publish = false;
        loop {
            let results = session
                .handle_input(&pending)
                .map_err(|e| format!("RTMP: {e}"))?;
            for result in results {
                match result {
                    ClientSessionResult::OutboundResponse(packet) => {
                        io.write_all(&packet.bytes)
                            .await
                            .map_err(|e| format!("sending to the server: {e}"))?;
                    }
                    ClientSessionResult::RaisedEvent(event) => match event {
                        ClientSessionEvent::ConnectionRequestAccepted if !asked_to_publish => {
                            asked_to_publish = true;
                            let ask = session
                                .request_publishing(
                                    endpoint.stream.clone(),
                                    PublishRequestType::Live,
                                )
                                .map_err(|e| format!("RTMP: {e}"))?;
                            send_results(&mut io, vec![ask]).await?;
                        }
                        ClientSessionEvent::ConnectionRequestRejected { description } => {
                            return Ok(Err(description));
                        }
                        ClientSessionEvent::PublishRequestAccepted => return Ok(Ok(session)),
                        ClientSessionEvent::UnhandleableOnStatusCode { code }
                            if ends_publishing(&code) =>
                        {
                            return Err(format!("the server refused publishing: {code}"));
                        }
                        _ => {}
                    },
                    ClientSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            io.flush()
                .await
                .map_err(|e| format!("sending to the server: {e}"))?;
            let n = io
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading from the server: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection while setting up".into());
            }
            count_from_server(&mut received, n)?;
            pending = buf[..n].to_vec();
        }
    };
    let mut session = match tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| {
            format!(
                "the server did not accept publishing within {} s",
                SETUP_TIMEOUT.as_secs()
            )
        })?? {
        Ok(session) => session,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(params) = feed.params() {
        // onMetaData, as ffmpeg's FLV sends it: servers show and pass on the size
        // and frame rate.
        let mut meta = StreamMetadata::new();
        meta.video_width = Some(params.info.width);
        meta.video_height = Some(params.info.height);
        meta.video_codec_id = Some(7);
        meta.video_frame_rate = params.info.fps.map(|f| f as f32);
        meta.encoder = Some(concat!("nalcast ", env!("CARGO_PKG_VERSION")).to_owned());
        let sent = session
            .publish_metadata(&meta)
            .map_err(|e| format!("RTMP: {e}"))?;
        send_results(&mut io, vec![sent]).await?;
    }
    send_tags(&mut io, &mut session, first, opts.stall_timeout).await?;
    publisher.set_state(State::Live);
    loop {
        tokio::select! {
            item = queue.next() => {
                let Some((item, _)) = item else {
                    let _ = stop(&mut io, &mut session).await;
                    return Ok(Ok(RunEnd::Shutdown));
                };
                let tags = feed.next(&item);
                send_tags(&mut io, &mut session, tags, opts.stall_timeout).await?;
            }
            n = io.read(&mut buf) => {
                let n = n.map_err(|e| format!("reading from the server: {e}"))?;
                if n == 0 {
                    return Err("the server closed the connection".into());
                }
                count_from_server(&mut received, n)?;
                // Acknowledgements, pings, status: answered where the session says.
                let results = session
                    .handle_input(&buf[..n])
                    .map_err(|e| format!("RTMP: {e}"))?;
                for result in results {
                    match result {
                        ClientSessionResult::OutboundResponse(packet) => {
                            send_within(&mut io, &[&packet.bytes], opts.stall_timeout).await?;
                        }
                        ClientSessionResult::RaisedEvent(
                            ClientSessionEvent::UnhandleableOnStatusCode { code },
                        ) if ends_publishing(&code) => {
                            return Err(format!("the server ended publishing: {code}"))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Bytes a server may send in one session: days of acknowledgements and pings,
/// and a bound on what rml_rtmp may be made to hold.
const MAX_FROM_SERVER: usize = 16 << 20;

/// Counts `n` more bytes from the server; an error past [`MAX_FROM_SERVER`] (the
/// supervisor connects again).
fn count_from_server(received: &mut usize, n: usize) -> Result<(), Failure> {
    *received = received.saturating_add(n);
    if *received > MAX_FROM_SERVER {
        return Err(format!(
            "the server sent more than a publisher ever needs ({} MiB in one session)",
            MAX_FROM_SERVER >> 20
        ));
    }
    Ok(())
}

/// Whether an onStatus code the session does not handle itself says publishing
/// failed or ended ("NetStream.Publish.BadName", "….Denied", "NetConnection.Connect.Closed");
/// others ("NetStream.Data.Start", a server's own notices) are let go.
fn ends_publishing(code: &str) -> bool {
    [
        "Fail",
        "Error",
        "BadName",
        "Denied",
        "Reject",
        "Closed",
        "Unpublish",
        "Idle",
    ]
    .iter()
    .any(|word| code.contains(word))
}

/// The client's side of the handshake; returns bytes that came after it.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut [u8],
) -> Result<Vec<u8>, Failure> {
    let mut hs = Handshake::new(PeerType::Client);
    let hello = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("RTMP handshake: {e:?}"))?;
    io.write_all(&hello)
        .await
        .map_err(|e| format!("sending to the server: {e}"))?;
    loop {
        let n = io
            .read(buf)
            .await
            .map_err(|e| format!("reading from the server: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection in the RTMP handshake".into());
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| format!("RTMP handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("sending to the server: {e}"))?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes)
                    .await
                    .map_err(|e| format!("sending to the server: {e}"))?;
                return Ok(remaining_bytes);
            }
        }
    }
}

async fn send_results<S: AsyncWrite + Unpin>(
    io: &mut S,
    results: Vec<ClientSessionResult>,
) -> Result<(), Failure> {
    for result in results {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            io.write_all(&packet.bytes)
                .await
                .map_err(|e| format!("sending to the server: {e}"))?;
        }
    }
    io.flush()
        .await
        .map_err(|e| format!("sending to the server: {e}"))
}

async fn send_tags<S: AsyncWrite + Unpin>(
    io: &mut S,
    session: &mut ClientSession,
    tags: Vec<Tag>,
    stall: Duration,
) -> Result<(), Failure> {
    for tag in tags {
        let packet = session
            .publish_video_data(tag.data, RtmpTimestamp::new(tag.timestamp_ms), false)
            .map_err(|e| format!("RTMP: {e}"))?;
        if let ClientSessionResult::OutboundResponse(packet) = packet {
            send_within(io, &[&packet.bytes], stall).await?;
        }
    }
    Ok(())
}

/// Tells the server the stream ends (best effort, briefly).
async fn stop<S: AsyncWrite + Unpin>(io: &mut S, session: &mut ClientSession) -> Option<()> {
    let results = session.stop_publishing().ok()?;
    tokio::time::timeout(Duration::from_millis(500), send_results(io, results))
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_pattern::TestPattern;
    use crate::VideoSettings;
    use nalcast_core::ingest::Splitter;
    use nalcast_core::metric::StreamLabel;
    use nalcast_core::shared::SharedAu;

    /// `count` frames of the test pattern, 30 fps, keyframes where `key` says, as
    /// the hub shares them.
    pub(crate) fn items(count: usize, key: impl Fn(usize) -> bool) -> Vec<Item> {
        let mut pattern = TestPattern::new(&VideoSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate: 500_000,
            keyframe_interval: 600,
        })
        .expect("encoder");
        let mut splitter = Splitter::new(1 << 20, &StreamLabel::default());
        let mut aus = Vec::new();
        for i in 0..count {
            let at = 1_000_000 + i as u64 * 33_333;
            let frame = pattern.next_frame(at, i == 0 || key(i)).expect("frame");
            splitter.push(frame, at, &mut aus);
            splitter.end_of_access_unit(at, &mut aus);
        }
        aus.into_iter()
            .enumerate()
            .map(|(i, au)| Item::Au {
                au: Arc::new(SharedAu::new(i as u32, au, Instant::now())),
                catch_up: false,
            })
            .collect()
    }

    /// The NAL unit lengths of an AVCC payload, checking they fill it exactly.
    fn avcc_lengths(mut payload: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !payload.is_empty() {
            let n = u32::from_be_bytes(payload[..4].try_into().expect("length")) as usize;
            assert!(4 + n <= payload.len(), "a NAL unit of {n} bytes overruns");
            out.push(n);
            payload = &payload[4 + n..];
        }
        out
    }

    #[test]
    fn a_sequence_header_then_a_tag_per_picture_timed_by_capture() {
        let items = items(10, |_| false);
        let mut feed = TagFeed::new();
        let first = feed.next(&items[0]);
        assert_eq!(first.len(), 2, "the sequence header and the keyframe");
        let header = &first[0].data;
        assert_eq!(&header[..5], &[KEY_AVC, SEQUENCE_HEADER, 0, 0, 0]);
        // AVCDecoderConfigurationRecord: version 1, the SPS's profile, 4-byte lengths.
        assert_eq!(header[5], 1);
        assert_eq!(header[6], 66, "the test pattern's Constrained Baseline");
        assert_eq!(header[9] & 0x03, 3);
        let key = &first[1];
        assert!(key.keyframe);
        assert_eq!(&key.data[..5], &[KEY_AVC, NALUS, 0, 0, 0]);
        assert!(!avcc_lengths(&key.data[5..]).is_empty());
        let mut last = key.timestamp_ms;
        for (i, item) in items.iter().enumerate().skip(1) {
            let tags = feed.next(item);
            assert_eq!(tags.len(), 1, "picture {i}");
            let tag = &tags[0];
            assert_eq!(&tag.data[..2], &[INTER_AVC, NALUS]);
            assert!(!avcc_lengths(&tag.data[5..]).is_empty());
            let step = tag.timestamp_ms - last;
            assert!(
                (32..=34).contains(&step),
                "picture {i}: {step} ms after the last"
            );
            last = tag.timestamp_ms;
        }
    }

    #[test]
    fn after_a_gap_nothing_until_the_next_keyframe_and_no_new_header_for_the_same_sets() {
        let items = items(8, |i| i == 5);
        let mut feed = TagFeed::new();
        assert_eq!(feed.next(&items[0]).len(), 2);
        assert_eq!(feed.next(&items[1]).len(), 1);
        assert!(feed.next(&Item::Skipped(3)).is_empty());
        for item in &items[2..5] {
            assert!(
                feed.next(item).is_empty(),
                "a picture after the gap, before a keyframe"
            );
        }
        let resumed = feed.next(&items[5]);
        assert_eq!(resumed.len(), 1, "the keyframe, without a second header");
        assert!(resumed[0].keyframe);
        assert_eq!(feed.next(&items[6]).len(), 1);
    }

    #[test]
    fn a_feed_waits_for_a_keyframe_to_begin() {
        let items = items(3, |_| false);
        let mut feed = TagFeed::new();
        assert!(feed.next(&items[1]).is_empty());
        assert!(feed.next(&items[2]).is_empty());
    }

    #[test]
    fn a_server_sending_more_than_a_publisher_needs_is_left() {
        let mut received = 0;
        assert!(count_from_server(&mut received, MAX_FROM_SERVER).is_ok());
        let err = count_from_server(&mut received, 1).expect_err("past the bound");
        assert!(err.contains("16 MiB"), "{err}");
    }

    #[test]
    fn only_a_status_that_says_so_ends_publishing() {
        for code in [
            "NetStream.Publish.BadName",
            "NetStream.Publish.Denied",
            "NetStream.Publish.Failed",
            "NetConnection.Connect.Closed",
            "NetStream.Unpublish.Success",
        ] {
            assert!(ends_publishing(code), "{code}");
        }
        for code in ["NetStream.Data.Start", "NetStream.Publish.Notify"] {
            assert!(!ends_publishing(code), "{code}");
        }
    }

    #[test]
    fn the_composition_offset_is_signed_24_bits() {
        assert_eq!(&body(INTER_AVC, NALUS, 66, b"")[2..5], &[0, 0, 66]);
        assert_eq!(&body(INTER_AVC, NALUS, -1, b"")[2..5], &[0xff, 0xff, 0xff]);
        assert_eq!(
            &body(INTER_AVC, NALUS, 1 << 30, b"")[2..5],
            &[0x7f, 0xff, 0xff]
        );
    }
}
