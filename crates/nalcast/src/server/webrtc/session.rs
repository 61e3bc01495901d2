//! One WebRTC viewer: its str0m `Rtc` driven by datagrams and timeouts, its own hub
//! subscription, and the rule for the first picture.
//!
//! Live from the first picture: a browser shows what it decodes at once (playout
//! delay 0 is offered), so the cached GOP is not sent — its first pictures would be
//! old. When the connection is up the session starts at a keyframe that is live:
//! one that came while ICE and DTLS were being set up, or the cached one when
//! the hub took it at most 100 ms ago; otherwise it waits for the next keyframe, which
//! the source is asked for at once when it can make them (the test pattern, a Pi
//! camera) — never a picture decoded without its reference.
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use nalcast_core::hub::Subscription;
use nalcast_core::queue::Item;
use nalcast_core::SharedAu;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::{Extension, ExtensionValues, RawPacket, RtpWrite};
use str0m::{Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info};

use super::nomination::EarlyNomination;
use super::outbox::Outbox;
use super::sender::{self, Sender};
use super::{Datagram, WebRtc};
use crate::server::limits::ViewerSlot;
use crate::server::viewer::session::BYTES_OUT;
use crate::server::AppState;

/// A viewer whose connection is not up by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The cached keyframe is live enough when the hub took it at most this long ago:
/// shown some tens of milliseconds later, its picture is still under the 200 ms a
/// live picture may be old.
const FRESH_KEYFRAME: Duration = Duration::from_millis(100);
/// RTP packets kept per session for retransmission (NACK): a large keyframe's
/// packets and about 2 s of a 3 Mbit/s stream; str0m's default of 1000 held 1.5 MiB
/// per viewer.
const SEND_BUFFER: usize = 600;
/// The RTP header extension ids nalcast uses (the offer's own ids win).
const MID_ID: u8 = 4;
/// The RTP header extension id offered for playout-delay when the offer has none.
const PLAYOUT_DELAY_ID: u8 = 12;

/// Why an offer was refused.
pub struct Refusal {
    pub status: StatusCode,
    pub text: &'static str,
}

pub struct Session {
    rtc: Rtc,
    mid: Mid,
    pt: Pt,
    sub: Subscription,
    state: AppState,
    /// Held for the session's life: its viewer place.
    _slot: ViewerSlot,
    /// When the offer was answered: RTP time 0, and the start of the connect timeout.
    epoch: Instant,
    /// The next RTP sequence number (str0m's extended 64-bit form).
    seq: u64,
    connected: bool,
    /// Sends nothing until a keyframe (at the start, and after a keyframe request).
    waiting_for_keyframe: bool,
    /// Datagrams to send, in runs.
    outbox: Outbox,
    /// nalcast's address and the viewer's, as str0m last sent DTLS or media on.
    path: Option<(SocketAddr, SocketAddr)>,
    /// The sequence numbers written through str0m before `sender` took over.
    through_str0m: Range<u64>,
    /// nalcast's own sending of the packets once it has the keys (sender.rs).
    sender: Option<Sender>,
    /// `nalcast_bytes_out_total` of the stream: WebRTC viewers' bytes count too.
    bytes_out: metrics::Counter,
    /// The viewer's first check nominates its path (nomination.rs).
    early_nomination: EarlyNomination,
}

impl Session {
    /// Answers `offer`: an `Rtc` with nalcast's candidates, H.264 only, ICE-lite.
    pub fn open(
        webrtc: &WebRtc,
        state: &AppState,
        offer: &str,
        ice: IceCreds,
        slot: ViewerSlot,
    ) -> Result<(Session, String), Refusal> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|_| Refusal {
            status: StatusCode::BAD_REQUEST,
            text: "the body is not an SDP offer nalcast can read\n",
        })?;
        let now = Instant::now();
        let early_nomination = EarlyNomination::new(ice.pass.clone());
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_local_ice_credentials(ice)
            .set_dtls_cert(webrtc.cert.clone())
            .clear_codecs()
            .enable_h264(true)
            // Only the extensions used: the stream's mid (BUNDLE) and playout-delay.
            // No transport-wide congestion control: nalcast does no bandwidth
            // estimation (the camera's rate is what it is), and the browser's
            // per-packet feedback cost a tenth of the sending CPU.
            .clear_extension_map()
            .set_extension(MID_ID, Extension::RtpMid)
            .set_extension(PLAYOUT_DELAY_ID, Extension::PlayoutDelay)
            .set_send_buffer_video(SEND_BUFFER)
            // The viewer's RTCP as parsed packets: its NACKs are answered by
            // sender.rs once str0m no longer sends the media.
            .enable_raw_packets(true)
            // RTP written directly: each access unit is packetized once for all
            // viewers (SharedAu::rtp_payloads), not by each viewer's str0m again.
            .set_rtp_mode(true)
            .build(now);
        for candidate in &webrtc.candidates {
            rtc.add_local_candidate(candidate.clone());
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|_| Refusal {
            status: StatusCode::BAD_REQUEST,
            text: "the SDP offer cannot be answered (it needs a video media section nalcast may send on)\n",
        })?;
        // str0m tells of the offer's media sections only once connected; the
        // answer names the video section now.
        let answer = answer.to_sdp_string();
        let no_video = || {
            Refusal {
            status: StatusCode::NOT_ACCEPTABLE,
            text: "the offer has no H.264 video nalcast can send (a recvonly video section with H.264, packetization-mode 1)\n",
        }
        };
        let mid = video_mid(&answer).ok_or_else(no_video)?;
        let pt = choose_pt(&mut rtc, mid).ok_or_else(no_video)?;
        let sub = state.stream.hub.subscribe(now);
        Ok((
            Session {
                rtc,
                mid,
                pt,
                sub,
                state: state.clone(),
                _slot: slot,
                epoch: now,
                // Random-ish start, as RFC 3550 asks: the low bits of the clock.
                seq: u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .subsec_nanos()
                        & 0x7fff,
                ),
                connected: false,
                waiting_for_keyframe: true,
                outbox: Outbox::default(),
                early_nomination,
                path: None,
                through_str0m: 0..0,
                sender: None,
                bytes_out: BYTES_OUT.count_in(state.stream.hub.stream_label()),
            },
            answer,
        ))
    }

    /// Runs the session until the viewer leaves, DELETEs it, or nalcast stops.
    pub async fn run(
        mut self,
        webrtc: &WebRtc,
        mut inbox: mpsc::Receiver<Datagram>,
        stop: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let label = self.state.stream.hub.stream_label().clone();
        super::SESSIONS.gauge_in(&label).increment(1.0);
        let mut batch = Vec::new();
        let give_up = tokio::time::Instant::from_std(self.epoch + CONNECT_TIMEOUT);
        // str0m is driven after what concerns it (a datagram, its timeout, media
        // written through it); pictures nalcast sends itself only need the outbox
        // sent.
        let mut timeout = Instant::now();
        let mut drive = true;
        let why = loop {
            if std::mem::take(&mut drive) {
                timeout = match self.drive(webrtc) {
                    Ok(Some(t)) => t,
                    Ok(None) => break "the connection ended",
                    Err(e) => {
                        debug!("WebRTC session: {e}");
                        break "WebRTC error";
                    }
                };
            }
            let connected = self.connected;
            tokio::select! {
                datagram = inbox.recv() => match datagram {
                    Some(d) => {
                        let contents = self.early_nomination.pass(d.contents);
                        let input = Receive::new(Protocol::Udp, d.remote, d.local, &contents)
                            .map(|r| Input::Receive(d.at, r));
                        if let Ok(input) = input {
                            if let Err(e) = self.rtc.handle_input(input) {
                                debug!("WebRTC input: {e}");
                            }
                        }
                    }
                    None => break "closed",
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout)) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        debug!("WebRTC timeout: {e}");
                    }
                }
                more = self.sub.queue.next_batch(32, usize::MAX, &mut batch), if connected => {
                    if !more {
                        break "the stream ended";
                    }
                    self.send(webrtc, batch.drain(..).filter_map(|(item, _)| match item {
                        Item::Au { au, .. } => Some(au),
                        _ => None,
                    }));
                    if self.sender.is_some() {
                        self.flush(webrtc);
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(give_up), if !connected => break "no connection within 15 s",
                _ = stop.notified() => break "the viewer ended the session",
                _ = shutdown.changed() => break "nalcast stops",
            }
            drive = true;
        };
        info!(
            stream = %self.state.stream.config.name,
            // Who sealed the packets (sender.rs): str0m when the viewer chose an
            // SRTP profile other than AES-GCM, or left before its first picture.
            sealed_by = if self.sender.is_some() { "nalcast" } else { "str0m" },
            "WebRTC viewer left: {why}"
        );
        super::SESSIONS.gauge_in(&label).decrement(1.0);
        let result = if self.connected {
            "connected"
        } else {
            "unconnected"
        };
        super::SESSIONS_ENDED
            .count_as_in(&label, result)
            .increment(1);
        // The goodbye (RTCP BYE, DTLS close_notify), sent at once: the viewer learns
        // the session is over rather than waiting for silence to tell it.
        if self.rtc.close().is_ok() {
            let _ = self.drive(webrtc);
        }
    }

    /// Sends what str0m has to send and handles its events; the next timeout, or
    /// None once the connection is over.
    fn drive(&mut self, webrtc: &WebRtc) -> Result<Option<Instant>, str0m::RtcError> {
        if self.sender.is_none() {
            sender::arm();
        }
        let next = loop {
            if !self.rtc.is_alive() {
                break Ok(None);
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break Ok(Some(t)),
                Ok(Output::Transmit(t)) => {
                    // The path str0m sends DTLS and media on (the nominated pair);
                    // not STUN, whose answers go to whichever pair was checked.
                    if t.contents.first().is_some_and(|b| (20..192).contains(b)) {
                        self.path = Some((t.source, t.destination));
                    }
                    self.outbox
                        .push(webrtc, t.source, t.destination, &t.contents)
                }
                Ok(Output::Event(event)) => self.event(webrtc, event),
                Err(e) => break Err(e),
            }
        };
        if self.sender.is_none() {
            self.take_over();
        }
        self.flush(webrtc);
        next
    }

    /// Sends the outbox's run and counts the bytes.
    fn flush(&mut self, webrtc: &WebRtc) {
        self.outbox.flush(webrtc);
        self.bytes_out
            .increment(std::mem::take(&mut self.outbox.sent));
    }

    /// After the first packets str0m sealed: nalcast sends the rest itself
    /// (sender.rs) when the cipher showed it the keys.
    fn take_over(&mut self) {
        let Some(captured) = sender::take() else {
            return;
        };
        let ssrc = {
            let mut api = self.rtc.direct_api();
            api.stream_tx_by_mid(self.mid, None).map(|tx| *tx.ssrc())
        };
        let Some(ssrc) = ssrc else {
            return;
        };
        self.sender = Sender::new(
            captured,
            *self.pt,
            ssrc,
            self.through_str0m.clone(),
            SEND_BUFFER,
        );
    }

    fn event(&mut self, webrtc: &WebRtc, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                info!(
                    stream = %self.state.stream.config.name,
                    after_ms = self.epoch.elapsed().as_millis() as u64,
                    "WebRTC viewer connected"
                );
                self.start(webrtc);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.rtc.disconnect();
            }
            // The viewer's decoder lost its reference (losses NACK did not mend):
            // P-frames are useless to it until a keyframe comes.
            Event::KeyframeRequest(_) if !self.waiting_for_keyframe => {
                super::VIEWER_KEYFRAME_REQUESTS
                    .count_in(self.state.stream.hub.stream_label())
                    .increment(1);
                self.waiting_for_keyframe = true;
                self.state.stream.hub.request_keyframe(Instant::now());
            }
            Event::RawPacket(raw) => {
                if let (RawPacket::RtcpRx(Rtcp::Nack(nack)), Some(sender), Some(path)) =
                    (raw.as_ref(), self.sender.as_mut(), self.path)
                {
                    if *nack.ssrc != sender.ssrc() {
                        return;
                    }
                    let asked = nack.reports.iter().flat_map(|entry| {
                        let lost = (0..16u16).filter(|bit| entry.blp & (1 << bit) != 0);
                        std::iter::once(entry.pid)
                            .chain(lost.map(|bit| entry.pid.wrapping_add(bit + 1)))
                    });
                    let resent =
                        sender.resend(&mut self.outbox, webrtc, path, asked, Instant::now());
                    super::PACKETS_RESENT
                        .count_in(self.state.stream.hub.stream_label())
                        .increment(u64::from(resent));
                }
            }
            _ => {}
        }
    }

    /// The connection is up: start at a live keyframe (module comment).
    fn start(&mut self, webrtc: &WebRtc) {
        // The queued access units (the cached GOP, then what came since), whether
        // each was of the catch-up.
        let mut units: Vec<(Arc<SharedAu>, bool)> = Vec::new();
        {
            let mut queue = self.sub.queue.lock();
            while let Some((item, _)) = queue.pop() {
                if let Item::Au { au, catch_up } = item {
                    units.push((au, catch_up));
                }
            }
        }
        match units.iter().rposition(|(au, _)| au.keyframe()) {
            Some(k) if !units[k].1 || units[k].0.published.elapsed() <= FRESH_KEYFRAME => {
                self.send(webrtc, units.drain(k..).map(|(au, _)| au));
            }
            _ => {
                self.waiting_for_keyframe = true;
                self.state.stream.hub.request_keyframe(Instant::now());
            }
        }
    }

    /// Sends access units, none before a keyframe when one is awaited.
    fn send(&mut self, webrtc: &WebRtc, units: impl IntoIterator<Item = Arc<SharedAu>>) {
        for au in units {
            if self.waiting_for_keyframe {
                if !au.keyframe() {
                    continue;
                }
                self.waiting_for_keyframe = false;
            }
            let since = au.published.saturating_duration_since(self.epoch);
            // 90 kHz RTP time, wrapping as RTP time does.
            let time = ((since.as_micros() as u64).saturating_mul(9) / 100) as u32;
            let packets = au.rtp_payloads(packetize);
            if let (Some(sender), Some(path)) = (self.sender.as_mut(), self.path) {
                for (i, payload) in packets.iter().enumerate() {
                    let marker = i + 1 == packets.len();
                    sender.send(
                        &mut self.outbox,
                        webrtc,
                        path,
                        self.seq,
                        time,
                        marker,
                        payload,
                    );
                    self.seq += 1;
                }
                continue;
            }
            if self.through_str0m.is_empty() {
                self.through_str0m = self.seq..self.seq;
            }
            self.through_str0m.end = self.seq + packets.len() as u64;
            let mut api = self.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return;
            };
            let ext = ExtensionValues {
                play_delay_min: Some(MediaTime::ZERO),
                play_delay_max: Some(MediaTime::ZERO),
                ..Default::default()
            };
            for (i, payload) in packets.iter().enumerate() {
                let write = RtpWrite::new(
                    self.pt,
                    self.seq.into(),
                    time,
                    au.published,
                    payload.clone(),
                )
                .marker(i + 1 == packets.len())
                .nackable(true)
                .ext_vals(ext.clone());
                tx.write_rtp(write);
                self.seq += 1;
            }
        }
    }
}

/// RTP payload bytes at most: a datagram of str0m's 1150 target with the RTP
/// header, its extensions and the SRTP tag.
const RTP_PAYLOAD: usize = 1100;

/// An access unit's RTP payloads (RFC 6184, packetization-mode 1: parameter sets in
/// a STAP-A, large NAL units in FU-A fragments), by str0m's packetizer. A stream
/// nalcast cannot packetize has no payloads, and its viewers get nothing of it.
fn packetize(annexb: &[u8]) -> Vec<Arc<[u8]>> {
    use str0m::unversioned::{H264Packetizer, Packetizer};
    match H264Packetizer::default().packetize(RTP_PAYLOAD, annexb) {
        Ok(packets) => packets.into_iter().map(Arc::from).collect(),
        Err(e) => {
            debug!("WebRTC: cannot packetize an access unit: {e}");
            Vec::new()
        }
    }
}

/// The mid of the first video section an SDP answer accepts (port not 0).
fn video_mid(answer: &str) -> Option<Mid> {
    let mut in_video = false;
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ") && !m.starts_with("video 0 ");
        } else if let Some(mid) = line.strip_prefix("a=mid:").filter(|_| in_video) {
            return Some(Mid::from(mid.trim()));
        }
    }
    None
}

/// The payload type to send H.264 with: packetization-mode 1 (FU-A, needed for
/// pictures larger than a datagram), with retransmission if offered.
fn choose_pt(rtc: &mut Rtc, mid: Mid) -> Option<Pt> {
    let offered = rtc.media(mid)?.remote_pts().to_vec();
    let mut best: Option<(u8, Pt)> = None;
    for params in rtc.codec_config().params() {
        let spec = params.spec();
        if !offered.contains(&params.pt())
            || spec.codec != Codec::H264
            || spec.format.packetization_mode != Some(1)
        {
            continue;
        }
        let score = u8::from(params.resend().is_some()) * 2 + u8::from(params.fb_nack());
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, params.pt()));
        }
    }
    best.map(|(_, pt)| pt)
}
