//! The WebSocket opening handshake (RFC 6455 §4.2): an axum extractor that checks
//! the request, and the 101 answer that hands the connection over.
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::OnUpgrade;

/// A WebSocket handshake request, checked; [`WsUpgrade::accept`] answers it.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake nalcast can take.
pub struct NotWebSocket(StatusCode, &'static str);

impl NotWebSocket {
    /// A plain HTTP request (426 with the version we speak), answered with `text`.
    pub fn upgrade_required(text: &'static str) -> Self {
        NotWebSocket(StatusCode::UPGRADE_REQUIRED, text)
    }

    /// Whether it was a handshake, only a malformed one (400).
    pub fn is_bad_handshake(&self) -> bool {
        self.0 == StatusCode::BAD_REQUEST
    }
}

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
        if parts.method != Method::GET
            || !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
            || !header_has(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13")
        {
            return Err(NotWebSocket::upgrade_required(
                "this address serves a WebSocket; open the player page instead\n",
            ));
        }
        let Some(key) = handshake_key(&parts.headers) else {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "WebSocket handshake needs one Sec-WebSocket-Key: the base64 of 16 bytes\n",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
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
    /// The 101 answer, and the connection it yields once sent.
    pub fn accept(self) -> (Response, OnUpgrade) {
        let accept = accept_key(self.key.as_bytes());
        let response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::UPGRADE, "websocket".to_owned()),
                (header::CONNECTION, "upgrade".to_owned()),
                (header::SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response();
        (response, self.on_upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
