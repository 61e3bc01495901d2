//! WebRTC viewers over WHEP (RFC 9725): a page on plain HTTP — no WebCodecs there —
//! POSTs an SDP offer to `/whep` (or `/streams/NAME/whep`), gets the answer and a
//! session URL, and plays the stream with the browser's own WebRTC decoder at
//! WebCodecs' latency. DELETE on the session URL ends it.
//!
//! The stack is str0m: sans-IO like the rest of the pipeline (time and datagrams
//! passed in, nothing spawned behind our back), with its pure-Rust crypto backend
//! (`rust-crypto`: DTLS by dimpl, SRTP by RustCrypto's AES), so the ARM packages
//! build with no C library to cross-compile but aws-lc's certificate maker, which
//! str0m's rust-crypto backend still links for making the DTLS certificate. SRTP
//! sealing, the per-packet cost, is ring's (srtp.rs); a viewer's packets leave in
//! runs, one system call for many (outbox.rs).
//!
//! One UDP port serves every viewer: a socket per local address (so each datagram's
//! destination is known, as ICE needs), a receiving task per socket that hands each
//! datagram to its session by (local, remote) address, learnt from the first STUN
//! request's user name. nalcast is ICE-lite (RFC 8445 §2.5): it offers host
//! candidates (and `--webrtc-public-ip` ones) and answers the viewer's checks; it
//! makes no checks of its own, so a viewer's hidden mDNS candidates do not matter.
//! Each session is a task of its own (session.rs) with its own hub subscription, so
//! one slow or lossy viewer never holds up another.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nalcast_core::metric::Series;
use str0m::config::DtlsCert;
use str0m::{Candidate, IceCreds};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::config::WebRtcSettings;
use crate::server::origin::{origin_allowed, refuse_origin};
use crate::server::viewer::routes::viewer_place;
use crate::server::ForStream;

mod nomination;
mod outbox;
mod sender;
mod session;
mod srtp;

/// WebRTC viewers now (also counted in `nalcast_viewers`).
pub const SESSIONS: Series =
    Series::gauge("nalcast_webrtc_sessions", "WebRTC (WHEP) sessions now").per_stream();
/// Sessions that ended, by how far they got.
pub const SESSIONS_ENDED: Series = Series::counter(
    "nalcast_webrtc_sessions_total",
    "WebRTC (WHEP) sessions ended, by result: connected (played), unconnected (no ICE and DTLS within 15 s, or an error before)",
)
.labelled("result", &["connected", "unconnected"])
.per_stream();
/// Keyframe requests (PLI, FIR) from WebRTC viewers.
pub const VIEWER_KEYFRAME_REQUESTS: Series = Series::counter(
    "nalcast_webrtc_keyframe_requests_total",
    "keyframe requests (PLI or FIR) from WebRTC viewers whose decoder lost a reference",
)
.per_stream();
/// RTP packets sent again on a WebRTC viewer's NACK.
pub const PACKETS_RESENT: Series = Series::counter(
    "nalcast_webrtc_packets_resent_total",
    "RTP packets sent again because a WebRTC viewer reported them lost (NACK)",
)
.per_stream();

/// Largest SDP offer taken (a browser's is 3-6 KB).
const MAX_OFFER: usize = 64 * 1024;
/// Datagrams waiting for one session's task; more are dropped, as a network would.
const INBOX: usize = 256;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// (local, remote) paths one session may be reached by: a viewer's candidates
/// (host, server-reflexive, relayed; IPv4 and IPv6) times nalcast's addresses
/// are a handful.
const MAX_PATHS: usize = 16;

/// One datagram for a session.
struct Datagram {
    at: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    contents: Vec<u8>,
}

/// A bound UDP socket and the address it is bound to.
#[derive(Clone)]
struct Bound {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

/// What the receiving tasks know of a session.
struct Handle {
    inbox: mpsc::Sender<Datagram>,
    stop: Arc<Notify>,
    ufrag: String,
    /// Paths learnt for it (`Registry::by_path`), at most `MAX_PATHS`.
    paths: usize,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Handle>,
    /// Local ICE user fragment → session id.
    by_ufrag: HashMap<String, String>,
    /// (local, remote) address → session id, once a STUN request named the session.
    by_path: HashMap<(SocketAddr, SocketAddr), String>,
}

/// The WebRTC side: the sockets, the certificate and the sessions.
pub struct WebRtc {
    sockets: Vec<Bound>,
    candidates: Vec<Candidate>,
    cert: DtlsCert,
    sessions: Mutex<Registry>,
}

impl WebRtc {
    /// Binds the UDP port (on every address of the machine when the host is
    /// unspecified) and starts receiving.
    pub async fn start(settings: &WebRtcSettings) -> anyhow::Result<Arc<WebRtc>> {
        use anyhow::Context;
        srtp::provider().install_process_default();
        let addresses: Vec<IpAddr> = if settings.listen.ip().is_unspecified() {
            let want_v6 = settings.listen.is_ipv6();
            crate::banner::machine_addresses()
                .into_iter()
                .filter(|ip| ip.is_ipv4() || want_v6)
                .filter(|ip| !crate::banner::is_link_local(ip))
                .collect()
        } else {
            vec![settings.listen.ip()]
        };
        let mut sockets = Vec::new();
        let mut port = settings.listen.port();
        for ip in addresses {
            let socket = UdpSocket::bind(SocketAddr::new(ip, port))
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for WebRTC on UDP {} (--webrtc)",
                        SocketAddr::new(ip, port)
                    )
                })?;
            let local = socket.local_addr()?;
            // Port 0: the first socket's port for every address.
            port = local.port();
            sockets.push(Bound {
                socket: Arc::new(socket),
                local,
            });
        }
        anyhow::ensure!(
            !sockets.is_empty(),
            "no address to listen for WebRTC on (--webrtc {})",
            settings.listen
        );
        let mut candidates = Vec::new();
        for bound in &sockets {
            candidates.push(
                Candidate::host(bound.local, "udp")
                    .map_err(|e| anyhow::anyhow!("WebRTC candidate {}: {e}", bound.local))?,
            );
        }
        for ip in &settings.public_ips {
            let Some(base) = sockets
                .iter()
                .find(|b| b.local.is_ipv4() == ip.is_ipv4() && !b.local.ip().is_loopback())
            else {
                anyhow::bail!(
                    "--webrtc-public-ip {ip}: no local address of its IP version to forward to"
                );
            };
            candidates.push(
                Candidate::server_reflexive(SocketAddr::new(*ip, port), base.local, "udp")
                    .map_err(|e| anyhow::anyhow!("--webrtc-public-ip {ip}: {e}"))?,
            );
        }
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .context("cannot make the WebRTC (DTLS) certificate")?;
        let webrtc = Arc::new(WebRtc {
            sockets,
            candidates,
            cert,
            sessions: Mutex::default(),
        });
        for bound in &webrtc.sockets {
            tokio::spawn(receive(webrtc.clone(), bound.clone()));
        }
        Ok(webrtc)
    }

    /// The UDP port viewers reach.
    pub fn port(&self) -> u16 {
        self.sockets[0].local.port()
    }

    /// The addresses offered to viewers.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.candidates.iter().map(|c| c.addr()).collect()
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        self.registry().by_id.len()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket bound to `local`, for sending.
    fn socket_for(&self, local: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.sockets
            .iter()
            .find(|b| b.local == local)
            .map(|b| &b.socket)
    }

    /// Hands a datagram to its session: by its path once known, else by the user
    /// name of a STUN binding request. Anything else is dropped.
    fn route(&self, datagram: Datagram) {
        let key = (datagram.local, datagram.remote);
        let mut registry = self.registry();
        let id = match registry.by_path.get(&key) {
            Some(id) => id.clone(),
            None => {
                let Some(ufrag) = stun_user(&datagram.contents) else {
                    return;
                };
                let Some(id) = registry.by_ufrag.get(&ufrag).cloned() else {
                    return;
                };
                // A viewer checks from a few addresses (its candidates); one that
                // sends checks from ever new (spoofed) ones does not grow the map.
                let Some(handle) = registry.by_id.get_mut(&id) else {
                    return;
                };
                if handle.paths >= MAX_PATHS {
                    return;
                }
                handle.paths += 1;
                registry.by_path.insert(key, id.clone());
                id
            }
        };
        if let Some(handle) = registry.by_id.get(&id) {
            // Full: the session's task is behind; drop, as a congested link would.
            let _ = handle.inbox.try_send(datagram);
        }
    }

    fn forget(&self, id: &str) {
        let mut registry = self.registry();
        if let Some(handle) = registry.by_id.remove(id) {
            registry.by_ufrag.remove(&handle.ufrag);
        }
        registry.by_path.retain(|_, v| v != id);
    }

    /// Ends a session; false when there is none by that id.
    fn stop(&self, id: &str) -> bool {
        match self.registry().by_id.get(id) {
            Some(handle) => {
                handle.stop.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Whether a datagram may be STUN: STUN messages start with two zero bits (RFC
/// 7983's demultiplexing), DTLS, RTP and RTCP do not.
fn may_be_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b >> 6 == 0)
}

/// The local user fragment a STUN binding request names (`local:remote`).
fn stun_user(datagram: &[u8]) -> Option<String> {
    if !may_be_stun(datagram) {
        return None;
    }
    let message = str0m::ice::StunMessage::parse(datagram).ok()?;
    if !message.is_binding_request() {
        return None;
    }
    let (local, _) = message.split_username()?;
    Some(local.to_owned())
}

async fn receive(webrtc: Arc<WebRtc>, bound: Bound) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match bound.socket.recv_from(&mut buf).await {
            Ok((n, remote)) => webrtc.route(Datagram {
                at: Instant::now(),
                local: bound.local,
                remote,
                contents: buf[..n].to_vec(),
            }),
            // ICMP errors from a viewer that went away surface here; not fatal.
            Err(e) => {
                debug!("WebRTC socket {}: {e}", bound.local);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A WHEP refusal: status and a line saying why.
fn refuse(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `POST /whep`: an SDP offer in, the answer out (201, with the session's URL in
/// Location). A WHEP session is a viewer: the same Origin check and viewer places
/// as a WebSocket.
pub async fn offer(
    ForStream(state): ForStream,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webrtc) = state.webrtc.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "WebRTC is off on this server (--webrtc off)\n",
        );
    };
    if !origin_allowed(&headers, &state.allow_origins, false) {
        return refuse_origin(&headers);
    }
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !sdp_type {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer is an SDP document: Content-Type: application/sdp\n",
        );
    }
    if body.len() > MAX_OFFER {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the SDP offer is too large\n",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8\n");
    };
    let slot = match viewer_place(&state, peer) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let ice = IceCreds::new();
    let id = session_id();
    let stream_name = state.stream.config.name.clone();
    let answer = match session::Session::open(&webrtc, &state, text, ice.clone(), slot) {
        Ok((session, answer)) => {
            let (inbox, rx) = mpsc::channel(INBOX);
            let stop = Arc::new(Notify::new());
            {
                let mut registry = webrtc.registry();
                registry.by_ufrag.insert(ice.ufrag.clone(), id.clone());
                registry.by_id.insert(
                    id.clone(),
                    Handle {
                        inbox,
                        stop: stop.clone(),
                        ufrag: ice.ufrag.clone(),
                        paths: 0,
                    },
                );
            }
            info!(viewer = %peer, stream = %stream_name, "WebRTC viewer offered");
            let webrtc = webrtc.clone();
            let id = id.clone();
            let shutdown = state.shutdown.clone();
            tokio::spawn(async move {
                session.run(&webrtc, rx, stop, shutdown).await;
                webrtc.forget(&id);
            });
            answer
        }
        Err(refusal) => {
            warn!(viewer = %peer, "WebRTC offer refused: {}", refusal.text.trim_end());
            return refuse(refusal.status, refusal.text);
        }
    };
    let location = format!("/streams/{stream_name}/whep/{id}");
    let mut res = (StatusCode::CREATED, answer).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `DELETE /whep/{id}`: ends the session.
pub async fn end(ForStream(state): ForStream, Path(id): Path<String>) -> Response {
    match state.webrtc.as_ref() {
        Some(webrtc) if webrtc.stop(&id) => StatusCode::OK.into_response(),
        _ => refuse(StatusCode::NOT_FOUND, "no such WebRTC session\n"),
    }
}

/// `OPTIONS /whep`: what MediaMTX's player (and players made after it, such as
/// Mainsail's) asks first, for ICE servers in `Link` headers. nalcast needs none:
/// its candidates are in the answer.
pub async fn options() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    res
}

/// `PATCH /whep/{id}`: trickle ICE is not needed (nalcast's candidates are all in
/// the answer, and as ICE-lite it learns the viewer's from its checks): 405, which
/// RFC 9725 lets a server answer.
pub async fn patch() -> Response {
    let mut res = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "this server takes no trickled ICE candidates: they are not needed\n",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    res
}

/// 128 random bits, hex: a session URL nobody can guess.
fn session_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system's random source failing is not recoverable in any useful way; a
    // time-based id would still be unique, which is all the registry needs.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// WebRTC on a free loopback port, for tests.
#[cfg(test)]
async fn on_loopback() -> Arc<WebRtc> {
    WebRtc::start(&WebRtcSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        public_ips: Vec::new(),
    })
    .await
    .expect("WebRTC on loopback")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request (RFC 8489) as an ICE check has it: USERNAME, PRIORITY
    /// and MESSAGE-INTEGRITY (not verified here: the session's str0m does that).
    fn binding_request(username: &str) -> Vec<u8> {
        fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        let mut attrs = Vec::new();
        attribute(&mut attrs, 0x0006, username.as_bytes());
        attribute(&mut attrs, 0x0024, &[0x6e, 0, 0x1e, 0xff]);
        attribute(&mut attrs, 0x0008, &[0x55; 20]);
        let mut out = vec![0x00, 0x01];
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&attrs);
        out
    }

    #[test]
    fn a_stun_request_names_its_session_by_the_local_user_fragment() {
        assert_eq!(
            stun_user(&binding_request("abcd:wxyz")).as_deref(),
            Some("abcd")
        );
        // DTLS (first byte 20..63) and RTP (128..191) are not STUN; nor is rubbish.
        assert_eq!(stun_user(&[22, 254, 253, 0, 0]), None);
        assert_eq!(stun_user(&[0x80, 96, 0, 1]), None);
        assert_eq!(stun_user(&[0, 1, 0]), None);
        assert_eq!(stun_user(&[]), None);
    }

    /// A session's checks from ever new addresses (spoofed) stop being learnt at
    /// MAX_PATHS: the routing map does not grow with them; known paths still route.
    #[tokio::test]
    async fn a_session_learns_a_bounded_number_of_paths() {
        let webrtc = on_loopback().await;
        let (inbox, mut rx) = mpsc::channel(1024);
        webrtc.registry().by_id.insert(
            "s1".into(),
            Handle {
                inbox,
                stop: Arc::new(Notify::new()),
                ufrag: "abcd".into(),
                paths: 0,
            },
        );
        webrtc
            .registry()
            .by_ufrag
            .insert("abcd".into(), "s1".into());
        let local = webrtc.addresses()[0];
        let check = |port: u16| Datagram {
            at: Instant::now(),
            local,
            remote: SocketAddr::from(([192, 0, 2, 1], port)),
            contents: binding_request("abcd:wxyz"),
        };
        for port in 1000..1100 {
            webrtc.route(check(port));
        }
        assert_eq!(webrtc.registry().by_path.len(), MAX_PATHS);
        let mut routed = 0;
        while rx.try_recv().is_ok() {
            routed += 1;
        }
        assert_eq!(routed, MAX_PATHS);
        webrtc.route(check(1000));
        assert!(rx.try_recv().is_ok(), "a known path still routes");
        webrtc.forget("s1");
        assert!(webrtc.registry().by_path.is_empty());
    }

    #[test]
    fn session_ids_are_long_and_differ() {
        let (a, b) = (session_id(), session_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
