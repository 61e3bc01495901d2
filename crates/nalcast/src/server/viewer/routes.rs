//! The viewer routes (`/ws`, `/ws/raw`, and any path of the legacy port): the gate
//! a WebSocket passes before it becomes a viewer — Origin, viewer limits, handshake.
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{handover, Dialect};
use crate::server::limits::{Refused, ViewerSlot};
use crate::server::origin::{origin_allowed, refuse_origin};
use crate::server::websocket::handshake::{NotWebSocket, WsUpgrade};
use crate::server::{AppState, ForStream};

/// `GET /ws`: the framed protocol.
pub async fn framed(
    ws: WsUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ForStream(state): ForStream,
) -> Response {
    same_origin_only(ws, &headers, peer, state, Dialect::Framed)
}

/// `GET /ws/raw`: one NAL unit per message.
pub async fn raw(
    ws: WsUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ForStream(state): ForStream,
) -> Response {
    same_origin_only(ws, &headers, peer, state, Dialect::Raw)
}

/// `GET /ws/fmp4`: the framed protocol with fMP4 fragments, for Media Source
/// Extensions.
pub async fn fmp4(
    ws: WsUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ForStream(state): ForStream,
) -> Response {
    same_origin_only(ws, &headers, peer, state, Dialect::Fmp4)
}

/// The main port's rule: pages of the same origin (or allowed ones) only.
fn same_origin_only(
    ws: WsUpgrade,
    headers: &HeaderMap,
    peer: SocketAddr,
    state: AppState,
    dialect: Dialect,
) -> Response {
    if !origin_allowed(headers, &state.allow_origins, false) {
        return refuse_origin(headers);
    }
    admit(ws, peer, state, dialect)
}

/// Legacy listener, any path: raw WebSocket, or a hint for anything else.
pub async fn legacy(
    ForStream(state): ForStream,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WsUpgrade, NotWebSocket>,
) -> Response {
    match ws {
        Ok(_) if !origin_allowed(&headers, &state.allow_origins, true) => refuse_origin(&headers),
        Ok(ws) => admit(ws, peer, state, Dialect::Raw),
        // A handshake with a bad key: say so, as the main port does.
        Err(e) if e.is_bad_handshake() => e.into_response(),
        Err(_) => NotWebSocket::upgrade_required(
            "this port serves a WebSocket of raw H.264 NAL units; open the player on the main port\n",
        )
        .into_response(),
    }
}

/// Takes a viewer slot for `peer` (or refuses), answers the handshake and hands the
/// connection over; the slot is held until the viewer leaves.
fn admit(ws: WsUpgrade, peer: SocketAddr, state: AppState, dialect: Dialect) -> Response {
    let slot = match viewer_place(&state, peer) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let (response, connection) = ws.accept();
    handover::serve(connection, state, dialect, slot);
    response
}

/// A place for one more viewer of the request's stream from `peer` — within
/// `--max-viewers`, `--max-viewers-per-ip` and the stream's own `max-viewers` —
/// held as long as the slot; or why not, which answers the request. WebSocket and
/// MJPEG viewers take theirs here alike.
pub fn viewer_place(state: &AppState, peer: SocketAddr) -> Result<ViewerSlot, ViewerRefused> {
    let slot = state.limits.acquire(peer.ip()).map_err(|why| match why {
        Refused::Total => ViewerRefused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "max_viewers",
            text: "the server has as many viewers as it takes (--max-viewers)\n",
        },
        Refused::PerAddress => ViewerRefused {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: "max_viewers_per_ip",
            text: "too many viewers from your address (--max-viewers-per-ip)\n",
        },
    })?;
    match state.stream.seat() {
        Some(seat) => Ok(slot.with_seat(seat)),
        None => Err(ViewerRefused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "stream_max_viewers",
            text: "this stream has as many viewers as it takes (max-viewers in its [[stream]] table)\n",
        }),
    }
}

/// Why a viewer was refused: counted by its reason when answered.
#[derive(Debug)]
pub struct ViewerRefused {
    status: StatusCode,
    reason: &'static str,
    text: &'static str,
}

impl IntoResponse for ViewerRefused {
    fn into_response(self) -> Response {
        crate::server::origin::WS_REJECTED
            .count_as(self.reason)
            .increment(1);
        (self.status, self.text).into_response()
    }
}
