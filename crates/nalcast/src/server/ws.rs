//! WebSocket viewers: each runs its own task draining its own queue, so a slow
//! socket only ever delays itself. The framing is nalcast's own
//! (`nalcast_core::websocket`): every frame's shared payload goes out beside a tiny
//! header in one vectored write, never copied per viewer.
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use nalcast_core::clock::{shutdown_requested, wall_us};
use nalcast_core::protocol::{self, ClientMessage, StreamInfoMsg};
use nalcast_core::viewer::{Item, WakeGroup};
use nalcast_core::websocket::{self as wsf, ClientFrame, ClientParser, Header};
use nalcast_core::Frame;
use nalcast_h264::{NalType, ParamSets};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::limits::{Refused, Slot};
use super::AppState;

/// The two dialects (docs/protocol.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// One message per access unit with a header, plus stream-info, skipped, status, pong.
    Framed,
    /// One Annex-B NAL unit per message, as the original design sends.
    Raw,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Framed => "framed",
            Dialect::Raw => "raw",
        }
    }
}

/// Clients only send small control messages.
const MAX_CLIENT_MESSAGE: usize = 4096;
/// The page pings every 2 s and sometimes asks for a keyframe: this is generous.
/// Every message counts, WebSocket pings and pongs too (each ping costs a pong).
const MAX_CLIENT_MESSAGES_PER_10S: u32 = 100;
/// Most queue items written in one go (one system call) to a viewer that is behind;
/// the rest go in the next write.
const MAX_BATCH_ITEMS: usize = 32;

/// A WebSocket handshake request (RFC 6455 §4.2), checked; answering it hands the
/// connection to a viewer task.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket handshake nalcast can take.
pub struct NotWebSocket(StatusCode, &'static str);

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotWebSocket> {
        let upgrade_required = NotWebSocket(
            StatusCode::UPGRADE_REQUIRED,
            "this address serves a WebSocket; open the player page instead\n",
        );
        if parts.method != Method::GET
            || !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
            || !header_has(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13")
        {
            return Err(upgrade_required);
        }
        let Some(key) = handshake_key(&parts.headers) else {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "WebSocket handshake needs one Sec-WebSocket-Key: the base64 of 16 bytes\n",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "this connection cannot be upgraded\n",
            ));
        };
        Ok(WsUpgrade { key, on_upgrade })
    }
}

/// The handshake's `Sec-WebSocket-Key` when it is what RFC 6455 §4.1 asks: one
/// header, the base64 of 16 bytes. Anything else is not a WebSocket client.
fn handshake_key(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return None;
    };
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .ok()?;
    (nonce.len() == 16).then(|| key.clone())
}

/// `Sec-WebSocket-Accept` for a handshake key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

impl WsUpgrade {
    /// Answers 101 and serves the upgraded connection as a viewer; `slot` is held
    /// until the viewer leaves.
    fn accept(self, state: AppState, dialect: Dialect, slot: Slot) -> Response {
        let accept = accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return debug!("WebSocket upgrade failed: {e}"),
            };
            // Plain TCP moves to a viewer thread (see threads.rs); TLS stays here.
            let tcp = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => parts
                    .io
                    .into_inner()
                    .into_std()
                    .map(|tcp| (tcp, parts.read_buf)),
                Err(upgraded) => {
                    serve_viewer(TokioIo::new(upgraded), state, dialect, &[], None).await;
                    return drop(slot);
                }
            };
            let (tcp, early) = match tcp {
                Ok(moving) => moving,
                Err(e) => return debug!("cannot hand the viewer to a viewer thread: {e}"),
            };
            let threads = state.viewer_threads.clone();
            threads.spawn(move |wake| async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => serve_viewer(tcp, state, dialect, &early, wake).await,
                    Err(e) => debug!("cannot register the viewer's socket: {e}"),
                }
                drop(slot);
            });
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::UPGRADE, "websocket".to_owned()),
                (header::CONNECTION, "upgrade".to_owned()),
                (header::SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response()
    }
}

fn upgrade(ws: WsUpgrade, peer: SocketAddr, state: AppState, dialect: Dialect) -> Response {
    let slot = match state.limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let (status, reason, text) = match why {
                Refused::Total => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "max-viewers",
                    "the server has as many viewers as it takes (--max-viewers)\n",
                ),
                Refused::PerAddress => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "max-viewers-per-ip",
                    "too many viewers from your address (--max-viewers-per-ip)\n",
                ),
            };
            metrics::counter!("nalcast_ws_rejected_total", "reason" => reason).increment(1);
            return (status, text).into_response();
        }
    };
    ws.accept(state, dialect, slot)
}

/// Whether a browser page from `Origin` may open this WebSocket. Without the check,
/// any web page a visitor opens could read the camera (cross-site WebSocket
/// hijacking). Clients that send no Origin are not browsers and are let in.
/// On the main port the page must come from the same origin; on the legacy port
/// (which the original page reaches from another port) from the same host.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String], same_host_any_port: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(origin_authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if same_host_any_port {
        hostname(origin_authority).eq_ignore_ascii_case(hostname(host))
    } else {
        origin_authority.eq_ignore_ascii_case(host)
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn hostname(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn refuse_origin(headers: &HeaderMap) -> Response {
    metrics::counter!("nalcast_ws_rejected_total", "reason" => "origin").increment(1);
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    info!(origin, "refused a WebSocket from another origin");
    (
        StatusCode::FORBIDDEN,
        "WebSocket from another origin refused (allow it with --allow-origin)\n",
    )
        .into_response()
}

/// `GET /ws`: the framed protocol.
pub async fn framed(
    ws: WsUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    if !origin_allowed(&headers, &state.allow_origins, false) {
        return refuse_origin(&headers);
    }
    upgrade(ws, peer, state, Dialect::Framed)
}

/// `GET /ws/raw`: one NAL unit per message.
pub async fn raw(
    ws: WsUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    if !origin_allowed(&headers, &state.allow_origins, false) {
        return refuse_origin(&headers);
    }
    upgrade(ws, peer, state, Dialect::Raw)
}

/// Legacy listener, any path: raw WebSocket, or a hint for anything else.
pub async fn legacy(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WsUpgrade, NotWebSocket>,
) -> Response {
    match ws {
        Ok(_) if !origin_allowed(&headers, &state.allow_origins, true) => refuse_origin(&headers),
        Ok(ws) => upgrade(ws, peer, state, Dialect::Raw),
        // A handshake with a bad key: say so, as the main port does.
        Err(e) if e.0 == StatusCode::BAD_REQUEST => e.into_response(),
        Err(_) => NotWebSocket(
            StatusCode::UPGRADE_REQUIRED,
            "this port serves a WebSocket of raw H.264 NAL units; open the player on the main port\n",
        )
            .into_response(),
    }
}

/// Why a viewer's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    Client,
    Stuck,
    Error,
    Protocol,
    Shutdown,
}

impl Ended {
    /// The labels of `nalcast_disconnects_total`, one per way a viewer can end.
    pub(super) const REASONS: [&'static str; 5] = [
        Ended::Client.reason(),
        Ended::Stuck.reason(),
        Ended::Error.reason(),
        Ended::Protocol.reason(),
        Ended::Shutdown.reason(),
    ];

    const fn reason(self) -> &'static str {
        match self {
            Ended::Client => "client closed",
            Ended::Stuck => "stuck",
            Ended::Error => "socket error",
            Ended::Protocol => "protocol violation",
            Ended::Shutdown => "shutdown",
        }
    }
}

fn stream_info(state: &AppState, params: &ParamSets) -> Bytes {
    let i = &params.info;
    protocol::encode_stream_info(&StreamInfoMsg {
        codec: i.codec.clone(),
        width: i.width,
        height: i.height,
        fps: i.fps.or(Some(f64::from(state.video.fps))),
        source: state.source.clone(),
        baseline: i.baseline_compatible,
    })
}

/// Messages on their way to one viewer, written together in one vectored write.
#[derive(Default)]
struct Batch {
    messages: Vec<(Header, Bytes)>,
    /// When the live frames in this batch were published, and whether they are
    /// keyframes (for the latency histogram).
    live: Vec<(Instant, bool)>,
}

impl Batch {
    fn clear(&mut self) {
        self.messages.clear();
        self.live.clear();
    }

    /// A batch of one message.
    fn one(opcode: u8, payload: Bytes) -> Self {
        let mut batch = Batch::default();
        batch.push(opcode, payload);
        batch
    }

    fn push(&mut self, opcode: u8, payload: Bytes) {
        self.messages
            .push((Header::new(opcode, payload.len()), payload));
    }

    fn bytes(&self) -> u64 {
        self.messages
            .iter()
            .map(|(h, p)| (h.as_bytes().len() + p.len()) as u64)
            .sum()
    }

    /// Adds the messages that carry `item` in `dialect`.
    fn add(
        &mut self,
        item: &Item,
        dialect: Dialect,
        sent_params: &mut Option<Arc<ParamSets>>,
        state: &AppState,
    ) {
        match (item, dialect) {
            (Item::Frame { frame, catch_up }, Dialect::Framed) => {
                if sent_params
                    .as_ref()
                    .is_none_or(|p| !Arc::ptr_eq(p, &frame.au.params))
                {
                    self.push(wsf::OP_BINARY, stream_info(state, &frame.au.params));
                    *sent_params = Some(frame.au.params.clone());
                }
                let message = if *catch_up {
                    frame.framed_catch_up()
                } else {
                    frame.framed.clone()
                };
                self.push(wsf::OP_BINARY, message);
                self.note_live(frame, *catch_up);
            }
            (Item::Frame { frame, catch_up }, Dialect::Raw) => {
                for i in 0..frame.au.nals.len() {
                    // Broadway.js needs only parameter sets and slices.
                    if matches!(
                        frame.au.nal_type(i),
                        Some(
                            NalType::Sps
                                | NalType::Pps
                                | NalType::Idr
                                | NalType::Slice
                                | NalType::Partition
                        )
                    ) {
                        self.push(wsf::OP_BINARY, frame.au.nal(i));
                    }
                }
                self.note_live(frame, *catch_up);
            }
            (Item::Skipped(n), Dialect::Framed) => {
                self.push(wsf::OP_BINARY, protocol::encode_skipped(*n))
            }
            (Item::Status(s), Dialect::Framed) => {
                self.push(wsf::OP_BINARY, protocol::encode_status(s))
            }
            (Item::Skipped(_) | Item::Status(_), Dialect::Raw) => {}
        }
    }

    fn note_live(&mut self, frame: &Frame, catch_up: bool) {
        if !catch_up {
            self.live.push((frame.published, frame.keyframe()));
        }
    }

    /// Writes everything, however the socket splits it.
    async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.messages.len() * 2);
        for (header, payload) in &self.messages {
            slices.push(IoSlice::new(header.as_bytes()));
            if !payload.is_empty() {
                slices.push(IoSlice::new(payload));
            }
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = w.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        w.flush().await
    }
}

/// Per-viewer handles to the hot-path metrics (a registry lookup per use would cost
/// more than the measurement).
struct ViewerMetrics {
    queue_delay: metrics::Histogram,
    /// Server-added delay of keyframes (large: their time is mostly the copy into
    /// the socket) and of the other frames, apart.
    latency_key: metrics::Histogram,
    latency_delta: metrics::Histogram,
    bytes_out: metrics::Counter,
}

impl ViewerMetrics {
    fn new() -> Self {
        ViewerMetrics {
            queue_delay: metrics::histogram!("nalcast_queue_delay_seconds"),
            latency_key: metrics::histogram!("nalcast_server_latency_seconds", "frame" => "key"),
            latency_delta: metrics::histogram!("nalcast_server_latency_seconds", "frame" => "delta"),
            bytes_out: metrics::counter!("nalcast_bytes_out_total"),
        }
    }
}

/// Sends `batch` within the viewer timeout.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    batch: &Batch,
    state: &AppState,
) -> Result<(), Ended> {
    match tokio::time::timeout(state.viewer_timeout, batch.write_to(w)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::Error),
        Err(_) => Err(Ended::Stuck),
    }
}

/// A close frame with `code` and `reason`.
fn close_batch(code: u16, reason: &str) -> Batch {
    Batch::one(wsf::OP_CLOSE, Bytes::from(wsf::close_payload(code, reason)))
}

/// What the client's messages ask of the viewer loop.
enum Reply {
    Nothing,
    Send(Batch),
    End(Ended, Option<Batch>),
}

/// How many messages the client sent in the current 10-second window.
struct MessageRate {
    start: Instant,
    count: u32,
}

impl MessageRate {
    fn new(now: Instant) -> Self {
        MessageRate {
            start: now,
            count: 0,
        }
    }

    /// Counts one message arriving at `now`; false once the window holds more than
    /// the client may send.
    fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(10) {
            *self = MessageRate::new(now);
        }
        self.count = self.count.saturating_add(1);
        self.count <= MAX_CLIENT_MESSAGES_PER_10S
    }
}

/// Handles one message from the client, arrived at `now`.
fn on_client_frame(
    frame: ClientFrame,
    dialect: Dialect,
    state: &AppState,
    rate: &mut MessageRate,
    now: Instant,
) -> Reply {
    if let ClientFrame::Close(code) = frame {
        // The parser let through only codes that may go on the wire; an empty close
        // is answered with an empty one (1005 "no code" is never sent).
        let echo = match code {
            Some(code) => close_batch(code, ""),
            None => Batch::one(wsf::OP_CLOSE, Bytes::new()),
        };
        return Reply::End(Ended::Client, Some(echo));
    }
    if !rate.allow(now) {
        return Reply::End(
            Ended::Protocol,
            Some(close_batch(wsf::CLOSE_POLICY, "too many messages")),
        );
    }
    let text = match frame {
        ClientFrame::Ping(payload) => {
            return Reply::Send(Batch::one(wsf::OP_PONG, Bytes::from(payload)))
        }
        ClientFrame::Pong | ClientFrame::Close(_) => return Reply::Nothing,
        ClientFrame::Binary(_) => {
            return Reply::End(
                Ended::Protocol,
                Some(close_batch(
                    wsf::CLOSE_UNSUPPORTED,
                    "binary messages are not accepted",
                )),
            )
        }
        ClientFrame::Text(text) => text,
    };
    match (dialect, protocol::parse_client(&text)) {
        (Dialect::Framed, Ok(ClientMessage::Ping { t })) => Reply::Send(Batch::one(
            wsf::OP_BINARY,
            protocol::encode_pong(t, wall_us()),
        )),
        (_, Ok(ClientMessage::Keyframe)) => {
            state.hub.request_keyframe();
            Reply::Nothing
        }
        // The original page's clients may send text we do not know; ignore it.
        (Dialect::Raw, Err(_)) => Reply::Nothing,
        _ => Reply::End(
            Ended::Protocol,
            Some(close_batch(wsf::CLOSE_UNSUPPORTED, "unsupported message")),
        ),
    }
}

/// Reads what the client sent: first `early`, then from the connection.
async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8],
    early: &mut &[u8],
) -> std::io::Result<usize> {
    if early.is_empty() {
        return io.read(buf).await;
    }
    let n = early.len().min(buf.len());
    buf[..n].copy_from_slice(&early[..n]);
    *early = &early[n..];
    Ok(n)
}

/// Drives one viewer: queue → socket, and the client's few control messages.
/// Generic over the connection so it can be tested without a network.
/// `early` holds what the client sent right behind its handshake; `wake` is the
/// wake group of the viewer thread the task runs on.
pub async fn serve_viewer<IO>(
    mut io: IO,
    state: AppState,
    dialect: Dialect,
    early: &[u8],
    wake: Option<Arc<WakeGroup>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let sub = state.hub.subscribe();
    if let Some(group) = wake {
        sub.queue.join_wake_group(group);
    }
    let mut shutdown = state.shutdown.clone();
    info!(
        dialect = dialect.name(),
        viewers = state.hub.status().viewers,
        "viewer joined"
    );
    let m = ViewerMetrics::new();
    let mut sent_params: Option<Arc<ParamSets>> = None;
    let mut batch = Batch::default();
    let mut items = Vec::with_capacity(MAX_BATCH_ITEMS);
    let mut parser = ClientParser::new(MAX_CLIENT_MESSAGE);
    let mut early = early;
    let mut read_buf = [0u8; 1024];
    let mut rate = MessageRate::new(Instant::now());
    let ended = 'serve: loop {
        tokio::select! {
            more = sub.queue.next_batch(MAX_BATCH_ITEMS, &mut items) => {
                if !more { break Ended::Shutdown }
                batch.clear();
                // A viewer that is behind gets what is queued in few writes; what
                // does not fit in this batch stays queued for the next.
                for (item, queued_at) in items.drain(..) {
                    m.queue_delay.record(queued_at.elapsed().as_secs_f64());
                    batch.add(&item, dialect, &mut sent_params, &state);
                }
                if let Err(e) = send(&mut io, &batch, &state).await {
                    break e;
                }
                m.bytes_out.increment(batch.bytes());
                for &(published, key) in &batch.live {
                    let h = if key { &m.latency_key } else { &m.latency_delta };
                    h.record(published.elapsed().as_secs_f64());
                }
            }
            read = read_some(&mut io, &mut read_buf, &mut early) => {
                let n = match read {
                    Ok(0) | Err(_) => break Ended::Client,
                    Ok(n) => n,
                };
                parser.push(&read_buf[..n]);
                loop {
                    let reply = match parser.next_frame() {
                        Ok(None) => break,
                        Ok(Some(frame)) => {
                            on_client_frame(frame, dialect, &state, &mut rate, Instant::now())
                        }
                        Err(e) => {
                            debug!(dialect = dialect.name(), "client broke the protocol: {e}");
                            Reply::End(Ended::Protocol, Some(close_batch(e.code, e.reason)))
                        }
                    };
                    match reply {
                        Reply::Nothing => {}
                        Reply::Send(b) => {
                            if let Err(e) = send(&mut io, &b, &state).await {
                                break 'serve e;
                            }
                        }
                        Reply::End(why, close) => {
                            if let Some(b) = close {
                                let _ = tokio::time::timeout(Duration::from_millis(500), b.write_to(&mut io)).await;
                            }
                            break 'serve why;
                        }
                    }
                }
            }
            _ = shutdown_requested(&mut shutdown) => break Ended::Shutdown,
        }
    };
    if ended == Ended::Shutdown {
        let bye = close_batch(wsf::CLOSE_GOING_AWAY, "server shutting down");
        let _ = tokio::time::timeout(
            state.viewer_timeout.min(Duration::from_millis(500)),
            bye.write_to(&mut io),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), io.shutdown()).await;
    let lost = sub.queue.lock().total_lost;
    drop(sub);
    metrics::counter!("nalcast_disconnects_total", "reason" => ended.reason()).increment(1);
    if ended != Ended::Client {
        info!(
            dialect = dialect.name(),
            reason = ended.reason(),
            frames_lost = lost,
            "viewer left"
        );
    } else {
        debug!(dialect = dialect.name(), frames_lost = lost, "viewer left");
    }
    if matches!(ended, Ended::Protocol | Ended::Client) {
        drain_until_closed(&mut io).await;
    }
}

/// How long a closed viewer's connection is read after the close frame and FIN.
const LINGER: Duration = Duration::from_secs(1);

/// Reads and drops what the client still sends until it closes its side too (RFC
/// 6455 §7.1.1: the server closes TCP first, then the client). Closing a socket
/// with unread input sends a reset, and a reset can destroy the close frame on its
/// way, so the client would see no close code (without this wait, a client that
/// sent 150 pings or an oversized message lost the close frame in 10 of 12 runs of
/// tests/websocket_protocol.rs).
async fn drain_until_closed<R: AsyncRead + Unpin>(io: &mut R) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn same_origin_and_non_browsers_are_allowed_others_are_not() {
        let none: Vec<String> = Vec::new();
        let dashboard = vec!["http://dashboard.lan".to_owned()];
        let any = vec!["*".to_owned()];
        // (origin, host, legacy port, extra allowed origins, expected)
        type Case<'a> = (Option<&'a str>, &'a str, bool, &'a [String], bool);
        let cases: [Case; 12] = [
            (None, "pi:8000", false, &none, true),
            (Some("http://pi:8000"), "pi:8000", false, &none, true),
            (Some("https://PI:8000"), "pi:8000", false, &none, true),
            (Some("http://evil.example"), "pi:8000", false, &none, false),
            (Some("http://pi:8001"), "pi:8000", false, &none, false),
            (Some("null"), "pi:8000", false, &none, false),
            // Legacy port: the original page comes from port 8000 of the same host.
            (Some("http://pi:8000"), "pi:9000", true, &none, true),
            (Some("http://[::1]:8000"), "[::1]:9000", true, &none, true),
            (Some("http://evil:8000"), "pi:9000", true, &none, false),
            (
                Some("http://dashboard.lan"),
                "pi:8000",
                false,
                &dashboard,
                true,
            ),
            (
                Some("http://other.lan"),
                "pi:8000",
                false,
                &dashboard,
                false,
            ),
            (Some("http://any.where"), "pi:8000", false, &any, true),
        ];
        for (origin, host, legacy, allowed, expected) in cases {
            assert_eq!(
                origin_allowed(&headers(origin, host), allowed, legacy),
                expected,
                "{origin:?} on {host} (legacy {legacy})"
            );
        }
    }
}
#[cfg(test)]
mod connection_tests {
    use super::*;
    use nalcast_core::websocket::client_frame;
    use tokio::io::DuplexStream;

    #[tokio::test]
    async fn handshakes_with_a_missing_or_malformed_key_get_400() {
        let good = "dGhlIHNhbXBsZSBub25jZQ==";
        // (Sec-WebSocket-Key headers, accepted)
        let cases: [(&[&str], bool); 8] = [
            (&[good], true),
            (&[], false),
            (&[""], false),
            (&["not base64!"], false),
            (&["AAAAAAAAAAAAAAAAAAAA"], false),     // 15 bytes
            (&["AAAAAAAAAAAAAAAAAAAAAAA="], false), // 17 bytes
            (&["dGhlIHNhbXBsZSBub25jZQ"], false),   // padding missing
            (&[good, good], false),
        ];
        for (keys, accepted) in cases {
            let mut request = axum::http::Request::get("/ws")
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_VERSION, "13");
            for key in keys {
                request = request.header(header::SEC_WEBSOCKET_KEY, *key);
            }
            let (mut parts, ()) = request.body(()).expect("request").into_parts();
            let Err(NotWebSocket(status, text)) =
                WsUpgrade::from_request_parts(&mut parts, &()).await
            else {
                panic!("a request without a connection cannot be upgraded");
            };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{keys:?}");
            // Past the key check, only the missing connection stops it.
            assert_eq!(
                text.contains("cannot be upgraded"),
                accepted,
                "{keys:?}: {text}"
            );
        }
    }

    #[test]
    fn every_client_message_counts_against_the_rate_limit_per_window() {
        let start = Instant::now();
        let mut rate = MessageRate::new(start);
        for _ in 0..MAX_CLIENT_MESSAGES_PER_10S {
            assert!(rate.allow(start + Duration::from_secs(9)));
        }
        assert!(!rate.allow(start + Duration::from_secs(9)));
        // A new window starts 10 s after the last one began.
        assert!(rate.allow(start + Duration::from_secs(10)));
    }

    /// The close frame a reply ends with: (code, if any).
    fn close_code_of(reply: &Reply) -> Option<Option<u16>> {
        let Reply::End(_, Some(batch)) = reply else {
            return None;
        };
        let (header, payload) = batch.messages.first()?;
        assert_eq!(header.as_bytes()[0], 0x80 | wsf::OP_CLOSE);
        Some(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
    }

    #[tokio::test]
    async fn closes_are_echoed_and_pings_are_rate_limited() {
        let (state, _shutdown) = state();
        let now = Instant::now();
        let mut rate = MessageRate::new(now);
        let mut on = |frame| on_client_frame(frame, Dialect::Framed, &state, &mut rate, now);
        assert_eq!(
            close_code_of(&on(ClientFrame::Close(Some(4000)))),
            Some(Some(4000))
        );
        assert_eq!(close_code_of(&on(ClientFrame::Close(None))), Some(None));
        for _ in 0..MAX_CLIENT_MESSAGES_PER_10S - 1 {
            assert!(matches!(
                on(ClientFrame::Ping(b"p".to_vec())),
                Reply::Send(_)
            ));
        }
        assert!(matches!(on(ClientFrame::Pong), Reply::Nothing));
        let over = on(ClientFrame::Ping(b"p".to_vec()));
        assert_eq!(close_code_of(&over), Some(Some(wsf::CLOSE_POLICY)));
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn state() -> (AppState, tokio::sync::watch::Sender<bool>) {
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        let state = AppState {
            hub: nalcast_core::Hub::new(Default::default()),
            source: "test".into(),
            video: Default::default(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            viewer_timeout: Duration::from_secs(2),
            shutdown,
            allow_origins: Arc::default(),
            limits: super::super::limits::ViewerLimits::new(10, 10),
            viewer_threads: Arc::new(
                super::super::threads::ViewerThreads::start(0).expect("no threads"),
            ),
            auth: None,
        };
        (state, tx)
    }

    /// Reads one server frame: (opcode, payload). Server frames are never masked.
    async fn read_frame(io: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.expect("frame header");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => usize::from(io.read_u16().await.expect("len")),
            127 => io.read_u64().await.expect("len") as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.expect("payload");
        (head[0], payload)
    }

    #[tokio::test]
    async fn pings_are_answered_and_binary_messages_close_the_connection() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (state, _shutdown) = state();
        let viewer = tokio::spawn(serve_viewer(server, state, Dialect::Framed, &[], None));
        // The status of the (not yet started) source comes first.
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!((op, payload[0]), (0x82, protocol::MSG_STATUS));
        client
            .write_all(&client_frame(0x89, b"hi", [1, 2, 3, 4]))
            .await
            .expect("ping");
        assert_eq!(read_frame(&mut client).await, (0x8A, b"hi".to_vec()));
        let ping = br#"{"type":"ping","t":12.5}"#;
        // Split mid-frame: the parser waits for the rest.
        let bytes = client_frame(0x81, ping, [5, 6, 7, 8]);
        client.write_all(&bytes[..5]).await.expect("part");
        client.write_all(&bytes[5..]).await.expect("rest");
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!((op, payload[0]), (0x82, protocol::MSG_PONG));
        client
            .write_all(&client_frame(0x82, &[1, 2, 3], [0; 4]))
            .await
            .expect("binary");
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1003);
        viewer.await.expect("the viewer task ends");
    }
}
