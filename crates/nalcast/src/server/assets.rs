//! The player page and Broadway.js, embedded in release builds (read from disk in
//! debug builds, so the page can be edited without rebuilding). ETags let browsers
//! revalidate cheaply. build.rs refuses to build without Broadway.js.
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

use super::AppState;
use crate::streams::Stream;

#[derive(RustEmbed)]
#[folder = "../../web/public/"]
struct Page;

#[derive(RustEmbed)]
#[folder = "../../web/node_modules/broadway-player/Player/"]
#[include = "Decoder.js"]
#[include = "YUVCanvas.js"]
#[include = "Player.js"]
struct Broadway;

/// The page loads only its own scripts (no inline code, no eval: Broadway.js's
/// asm.js decoder runs without 'unsafe-eval', checked by the browser tests), talks
/// only to its own origin, and can be framed only by its own origin and those
/// `--frame-ancestors` names (a dashboard). `media-src blob:`: the Media Source
/// Extensions player plays from a MediaSource's blob: URL.
pub fn content_security_policy(frame_ancestors: &[String]) -> String {
    let mut ancestors = "'self'".to_owned();
    for origin in frame_ancestors {
        ancestors.push(' ');
        ancestors.push_str(origin);
    }
    format!(
        "default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; \
         img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; frame-ancestors {ancestors}"
    )
}

fn respond(file: EmbeddedFile, headers: &HeaderMap, csp: &str) -> Response {
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mime = file.metadata.mimetype().to_owned();
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_SECURITY_POLICY, csp.to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
        file.data,
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /` and the page's files. `/` is the grid of every stream when there are
/// several (grid.html), else the player; `/streams/NAME/` is always that stream's
/// player.
pub async fn page(
    State(state): State<AppState>,
    named: Option<Extension<Arc<Stream>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    let name = match path {
        "" if named.is_none() && state.streams.all().len() > 1 => "grid.html",
        "" => "index.html",
        path => path,
    };
    match Page::get(name) {
        Some(file) => respond(file, &headers, &state.page_csp),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `GET /vendor/broadway/{file}`: Broadway.js from the npm package.
pub async fn broadway(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    match Broadway::get(&file) {
        Some(f) => respond(f, &headers, &state.page_csp),
        None => (
            StatusCode::NOT_FOUND,
            "Broadway.js is not installed: run `make setup` (npm ci in web/) and rebuild\n",
        )
            .into_response(),
    }
}
