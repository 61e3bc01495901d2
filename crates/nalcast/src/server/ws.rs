//! WebSocket viewers: each runs its own task draining its own queue, so a slow
//! socket only ever delays itself.
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use nalcast_core::clock::{shutdown_requested, wall_us};
use nalcast_core::protocol::{self, ClientMessage, StreamInfoMsg};
use nalcast_core::viewer::Item;
use nalcast_core::Frame;
use nalcast_h264::{NalType, ParamSets};
use std::net::SocketAddr;
use tracing::{debug, info};

use super::limits::Refused;
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
const MAX_CLIENT_MESSAGES_PER_10S: u32 = 100;

fn upgrade(ws: WebSocketUpgrade, peer: SocketAddr, state: AppState, dialect: Dialect) -> Response {
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
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        // tungstenite zero-fills its whole read buffer on every read attempt, and the
        // viewer loop polls for client messages after every frame it sends: with the
        // 128 KiB default that memset was a fifth of the CPU at 1000 viewers (perf).
        .read_buffer_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let (tx, rx) = socket.split();
            serve_viewer(tx, rx, state, dialect).await;
            drop(slot);
        })
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
    ws: WebSocketUpgrade,
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
    ws: WebSocketUpgrade,
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
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(_) if !origin_allowed(&headers, &state.allow_origins, true) => refuse_origin(&headers),
        Ok(ws) => upgrade(ws, peer, state, Dialect::Raw),
        Err(_) => (
            StatusCode::UPGRADE_REQUIRED,
            "this port serves a WebSocket of raw H.264 NAL units; open the player on the main port\n",
        )
            .into_response(),
    }
}

/// Why a viewer's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Client,
    Stuck,
    Error,
    Protocol,
    Shutdown,
}

impl Ended {
    fn reason(self) -> &'static str {
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

/// The messages that carry one frame in `dialect`.
fn frame_messages(frame: &Frame, catch_up: bool, dialect: Dialect, out: &mut Vec<Bytes>) {
    match dialect {
        Dialect::Framed => out.push(if catch_up {
            frame.framed_catch_up()
        } else {
            frame.framed.clone()
        }),
        Dialect::Raw => {
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
                    out.push(frame.au.nal(i));
                }
            }
        }
    }
}

/// Drives one viewer: queue → socket, and the client's few control messages.
/// Generic over the socket halves so it can be tested without a network.
pub async fn serve_viewer<Tx, Rx, E>(mut tx: Tx, mut rx: Rx, state: AppState, dialect: Dialect)
where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
{
    let sub = state.hub.subscribe();
    let mut shutdown = state.shutdown.clone();
    info!(
        dialect = dialect.name(),
        viewers = state.hub.status().viewers,
        "viewer joined"
    );
    let mut sent_params: Option<Arc<ParamSets>> = None;
    let mut messages: Vec<Bytes> = Vec::with_capacity(8);
    let (mut window_start, mut window_count) = (Instant::now(), 0u32);
    let ended = loop {
        tokio::select! {
            next = sub.queue.next() => {
                let Some((item, queued_at)) = next else { break Ended::Shutdown };
                metrics::histogram!("nalcast_queue_delay_seconds").record(queued_at.elapsed().as_secs_f64());
                messages.clear();
                let mut live_frame = None;
                match (&item, dialect) {
                    (Item::Frame { frame, catch_up }, _) => {
                        if dialect == Dialect::Framed
                            && sent_params.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &frame.au.params))
                        {
                            messages.push(stream_info(&state, &frame.au.params));
                            sent_params = Some(frame.au.params.clone());
                        }
                        frame_messages(frame, *catch_up, dialect, &mut messages);
                        if !catch_up {
                            live_frame = Some(frame.published);
                        }
                    }
                    (Item::Skipped(n), Dialect::Framed) => messages.push(protocol::encode_skipped(*n)),
                    (Item::Status(s), Dialect::Framed) => messages.push(protocol::encode_status(s)),
                    _ => {}
                }
                match send_all(&mut tx, &messages, &state).await {
                    Ok(()) => {}
                    Err(e) => break e,
                }
                if let Some(published) = live_frame {
                    metrics::histogram!("nalcast_server_latency_seconds").record(published.elapsed().as_secs_f64());
                }
            }
            msg = rx.next() => {
                match msg {
                    None | Some(Err(_)) => break Ended::Client,
                    Some(Ok(Message::Close(_))) => break Ended::Client,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Text(text))) => {
                        if window_start.elapsed() > std::time::Duration::from_secs(10) {
                            (window_start, window_count) = (Instant::now(), 0);
                        }
                        window_count += 1;
                        if window_count > MAX_CLIENT_MESSAGES_PER_10S {
                            let _ = tx.send(close(1008, "too many messages")).await;
                            break Ended::Protocol;
                        }
                        match (dialect, protocol::parse_client(text.as_str())) {
                            (Dialect::Framed, Ok(ClientMessage::Ping { t })) => {
                                let pong = protocol::encode_pong(t, wall_us());
                                if let Err(e) = send_all(&mut tx, std::slice::from_ref(&pong), &state).await {
                                    break e;
                                }
                            }
                            (_, Ok(ClientMessage::Keyframe)) => state.hub.request_keyframe(),
                            // The original page's clients may send text we do not know; ignore it.
                            (Dialect::Raw, Err(_)) => {}
                            _ => {
                                let _ = tx.send(close(1003, "unsupported message")).await;
                                break Ended::Protocol;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let _ = tx.send(close(1003, "binary messages are not accepted")).await;
                        break Ended::Protocol;
                    }
                }
            }
            _ = shutdown_requested(&mut shutdown) => break Ended::Shutdown,
        }
    };
    if ended == Ended::Shutdown {
        let _ = tokio::time::timeout(
            state
                .viewer_timeout
                .min(std::time::Duration::from_millis(500)),
            tx.send(close(1001, "server shutting down")),
        )
        .await;
    }
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
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn send_all<Tx: Sink<Message> + Unpin>(
    tx: &mut Tx,
    messages: &[Bytes],
    state: &AppState,
) -> Result<(), Ended> {
    let started = Instant::now();
    for msg in messages {
        let len = msg.len() as u64;
        match tokio::time::timeout(state.viewer_timeout, tx.send(Message::Binary(msg.clone())))
            .await
        {
            Ok(Ok(())) => metrics::counter!("nalcast_bytes_out_total").increment(len),
            Ok(Err(_)) => return Err(Ended::Error),
            Err(_) => return Err(Ended::Stuck),
        }
        if started.elapsed() > state.viewer_timeout {
            return Err(Ended::Stuck);
        }
    }
    Ok(())
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
