//! LL-HLS for pages of other origins: an hls.js player on a dashboard reads the
//! playlist and parts across origins, which browsers allow only when the answer
//! names the page's origin. The same list as the WebSockets' (`--allow-origin`,
//! `*` for any) says which; other origins get no CORS headers (their reads fail in
//! the browser, as before).
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// Adds the CORS headers to /hls answers for an allowed Origin, and answers its
/// preflight requests.
pub async fn hls(State(allowed): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    cross_origin(&allowed, req, next, &HLS).await
}

/// The same for WHEP (a player on a dashboard, Mainsail or Fluidd on the printer's
/// own address, posts its offer across origins): POST and DELETE, the SDP's
/// Content-Type, and Location readable by the page.
pub async fn whep(State(allowed): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    cross_origin(&allowed, req, next, &WHEP).await
}

/// What an endpoint lets other origins do.
struct Rules {
    methods: &'static str,
    headers: &'static str,
    expose: Option<&'static str>,
}

const HLS: Rules = Rules {
    methods: "GET, OPTIONS",
    headers: "authorization, range",
    expose: None,
};

const WHEP: Rules = Rules {
    methods: "POST, DELETE, PATCH, OPTIONS",
    headers: "authorization, content-type",
    expose: Some("location"),
};

async fn cross_origin(allowed: &[String], req: Request, next: Next, rules: &Rules) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| {
            o.to_str().is_ok_and(|o| {
                allowed
                    .iter()
                    .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
            })
        })
        .cloned();
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS;
    let mut res = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    // The origin itself, not `*`: a player may send credentials (a token cookie).
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(expose) = rules.expose {
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(expose),
        );
    }
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(rules.methods),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(rules.headers),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    res
}

/// `/hls` and `/hls/`: the playlist is `/hls/index.m3u8` (its query, a token,
/// goes along).
pub async fn to_playlist(uri: Uri) -> Redirect {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::temporary(&format!("/hls/index.m3u8{query}"))
}
