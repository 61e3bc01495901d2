//! `/hls/…`: Low-Latency HLS over HTTP, for Safari/iOS, VLC/ffplay, hls.js and any
//! HTTP cache or CDN in front (docs/scale-out.md). The playlist and its files come
//! from the hub's [`Hls`](nalcast_core::hls::Hls) stream; this module only answers,
//! waits (blocking playlist reload, preload hints) and sets the cache headers.
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nalcast_core::hls::{Hls, Wait};
use serde::Deserialize;

use super::AppState;

/// The longest a request waits for a part, a segment or a playlist version: the
/// spec's three target durations, after which 503 tells the client to try again.
const WAIT_MAX: Duration = Duration::from_secs(12);

/// Parts, segments and init segments never change under their names.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A playlist asked for by version (`_HLS_msn`) is that version for good; a cache
/// may keep it for a while.
const VERSIONED_PLAYLIST: &str = "public, max-age=6";
/// The plain playlist changes with every part.
const LIVE_PLAYLIST: &str = "public, max-age=1";

/// The `file` label values of `nalcast_hls_requests_total`.
pub const FILES: [&str; 4] = ["playlist", "part", "segment", "init"];

/// The blocking reload's query (RFC 8216bis 6.2.5.2).
#[derive(Debug, Deserialize)]
pub struct Reload {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<usize>,
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Waits until `ready` says Ready or Never, or WAIT_MAX passes.
async fn wait_for<T>(
    s: &AppState,
    mut ready: impl FnMut(&Hls) -> Result<T, Wait>,
) -> Result<T, Response> {
    let mut changes = s.hub.hls_changes();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        changes.borrow_and_update();
        match s.hub.with_hls(&mut ready) {
            None => return Err(text(StatusCode::NOT_FOUND, "HLS is off (--hls off)\n")),
            Some(Ok(v)) => return Ok(v),
            Some(Err(Wait::Never)) => {
                return Err(text(StatusCode::NOT_FOUND, "not in the playlist\n"))
            }
            Some(Err(Wait::Later | Wait::Ready)) => {}
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no new part in time: is the camera running?\n",
                ))
            }
        }
    }
}

/// `GET /hls/index.m3u8[?_HLS_msn=M[&_HLS_part=P]]`.
pub async fn playlist(State(s): State<AppState>, Query(q): Query<Reload>) -> Response {
    if q.part.is_some() && q.msn.is_none() {
        return text(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn\n");
    }
    if s.hub.with_hls(|_| ()).is_none() {
        return text(StatusCode::NOT_FOUND, "HLS is off (--hls off)\n");
    }
    let result = wait_for(&s, |hls| {
        if let Some(msn) = q.msn {
            match hls.has(msn, q.part) {
                Wait::Ready => {}
                other => return Err(other),
            }
        }
        hls.playlist().ok_or(Wait::Later)
    })
    .await;
    metrics::counter!("nalcast_hls_requests_total", "file" => "playlist").increment(1);
    match result {
        Ok(body) => {
            let cache = if q.msn.is_some() {
                VERSIONED_PLAYLIST
            } else {
                LIVE_PLAYLIST
            };
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/vnd.apple.mpegurl"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                body,
            )
                .into_response()
        }
        Err(r) if r.status() == StatusCode::NOT_FOUND && q.msn.is_some() => {
            // Too far ahead, by the spec's rule.
            text(
                StatusCode::BAD_REQUEST,
                "_HLS_msn is more than two segments ahead\n",
            )
        }
        Err(r) => r,
    }
}

/// What a file name under `/hls/<run>/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum File {
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

fn parse_file(name: &str) -> Option<File> {
    if let Some(n) = name
        .strip_prefix("init")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return n.parse().ok().map(File::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix('s') {
        return n.parse().ok().map(File::Segment);
    }
    let (msn, part) = stem.strip_prefix('p')?.split_once('.')?;
    Some(File::Part(msn.parse().ok()?, part.parse().ok()?))
}

/// `GET /hls/<run>/<init N.mp4 | sN.m4s | pN.I.m4s>`: waits for a part or segment
/// that is about to come (a preload hint).
pub async fn file(
    State(s): State<AppState>,
    Path((run, name)): Path<(String, String)>,
) -> Response {
    let Some(file) = parse_file(&name) else {
        return text(StatusCode::NOT_FOUND, "no such HLS file\n");
    };
    let label = match file {
        File::Init(_) => "init",
        File::Segment(_) => "segment",
        File::Part(..) => "part",
    };
    metrics::counter!("nalcast_hls_requests_total", "file" => label).increment(1);
    let result: Result<Bytes, Response> = wait_for(&s, |hls| {
        if hls.run() != run {
            return Err(Wait::Never);
        }
        match file {
            File::Init(id) => hls.init(id).map(|b| vec![b]).ok_or(Wait::Never),
            File::Segment(msn) => hls.segment(msn),
            File::Part(msn, i) => hls.part(msn, i).map(|b| vec![b]),
        }
    })
    .await
    // A segment's parts are joined here, outside the hub's lock.
    .map(|pieces| match <[Bytes; 1]>::try_from(pieces) {
        Ok([one]) => one,
        Err(pieces) => Bytes::from(pieces.concat()),
    });
    match result {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
                (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            ],
            bytes,
        )
            .into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file("init0.mp4"), Some(File::Init(0)));
        assert_eq!(parse_file("s12.m4s"), Some(File::Segment(12)));
        assert_eq!(parse_file("p12.3.m4s"), Some(File::Part(12, 3)));
        for bad in [
            "",
            "s.m4s",
            "p1.m4s",
            "p1.x.m4s",
            "init.mp4",
            "s1.mp4",
            "x1.m4s",
            "p-1.2.m4s",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }
}
