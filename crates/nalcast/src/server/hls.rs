//! `/hls/…`: Low-Latency HLS over HTTP, for Safari/iOS, VLC/ffplay, hls.js and any
//! HTTP cache or CDN in front (docs/scale-out.md). The playlist and its files come
//! from the hub's [`Hls`](nalcast_core::llhls::Hls) stream; this module only answers,
//! waits (blocking playlist reload, preload hints) and sets the cache headers.
//!
//! Every request a client can make up is a miss in a cache in front, passed on to
//! nalcast and held here while it waits: so only the names and query values the
//! playlist gives are answered, spelt as it spells them (`s7.m4s`, not `s07.m4s`
//! or `s+7.m4s`), within the live window; anything else is answered at once (400
//! or 404) instead of being waited for.
use nalcast_core::metric::Series;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Extension, Path};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nalcast_core::llhls::{Hls, Wait};

use super::{AppState, ForStream};

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
/// Everything, when nalcast asks for credentials: a shared cache keeping a copy
/// would hand it to clients that showed none (docs/scale-out.md says how to put a
/// protected stream behind a cache).
const PROTECTED: &str = "private, no-store";

/// The `file` label values of `nalcast_hls_requests_total`.
pub const FILES: [&str; 4] = ["playlist", "part", "segment", "init"];

/// HLS requests answered, by file.
pub const HLS_REQUESTS: Series = Series::counter(
    "nalcast_hls_requests_total",
    "HLS requests answered, by file: playlist, part, segment, init (with a cache in \
     front, about one per part and playlist version whatever the number of viewers)",
)
.labelled("file", &FILES)
.per_stream();

/// The blocking reload's query (RFC 8216bis 6.2.5.2).
#[derive(Debug, Default, PartialEq, Eq)]
struct Reload {
    msn: Option<u64>,
    part: Option<usize>,
}

/// The query parameter the token may come in (auth.rs takes it; allowed anywhere).
const TOKEN_PARAMETER: &str = "token";

/// A number as the playlist writes it: decimal digits, no sign, no leading zero.
fn canonical<T: std::str::FromStr>(text: &str) -> Option<T> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    (digits && (text == "0" || !text.starts_with('0')))
        .then(|| text.parse().ok())
        .flatten()
}

/// The parameters a playlist request may have: `_HLS_msn`, then optionally
/// `_HLS_part`, with canonical numbers, once each (and `token`). Anything else
/// (another parameter, `_HLS_skip`, which nalcast does not offer, a repeat, the
/// other order, `007`) is refused: each variant would be a cache miss held here.
fn parse_reload(query: Option<&str>) -> Result<Reload, &'static str> {
    let mut reload = Reload::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" if reload.msn.is_none() && reload.part.is_none() => {
                reload.msn = Some(canonical(value).ok_or("_HLS_msn must be a number\n")?);
            }
            "_HLS_part" if reload.part.is_none() => {
                reload.part = Some(canonical(value).ok_or("_HLS_part must be a number\n")?);
            }
            TOKEN_PARAMETER => {}
            _ => {
                return Err(
                    "the playlist takes _HLS_msn and _HLS_part (in that order, once each) only\n",
                )
            }
        }
    }
    if reload.part.is_some() && reload.msn.is_none() {
        return Err("_HLS_part needs _HLS_msn\n");
    }
    Ok(reload)
}

/// Whether a file request's query is empty (or only the token).
fn plain_query(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').all(|pair| {
        pair.is_empty() || pair.split_once('=').map_or(pair, |(k, _)| k) == TOKEN_PARAMETER
    })
}

/// The Cache-Control of an answer that would be `public`: `PROTECTED` when
/// nalcast asks for credentials.
fn cache_control(s: &AppState, public: &'static str) -> HeaderValue {
    HeaderValue::from_static(if s.auth.is_some() { PROTECTED } else { public })
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Waits until `ready` says Ready or Never, or WAIT_MAX passes.
async fn wait_for<T>(
    s: &AppState,
    mut ready: impl FnMut(&Hls) -> Result<T, Wait>,
) -> Result<T, Response> {
    s.stream.hub.wanted();
    let mut changes = s.stream.hub.hls_changes();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        changes.borrow_and_update();
        match s.stream.hub.with_hls(&mut ready) {
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
pub async fn playlist(ForStream(s): ForStream, uri: Uri) -> Response {
    let q = match parse_reload(uri.query()) {
        Ok(q) => q,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    match s
        .stream
        .hub
        .with_hls(|hls| q.msn.is_none_or(|m| hls.in_window(m, q.part)))
    {
        None => return text(StatusCode::NOT_FOUND, "HLS is off (--hls off)\n"),
        Some(false) => {
            return text(
                StatusCode::BAD_REQUEST,
                "_HLS_msn/_HLS_part name no part of the live window\n",
            )
        }
        Some(true) => {}
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
    HLS_REQUESTS
        .count_as_in(s.stream.hub.stream_label(), "playlist")
        .increment(1);
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
                    (header::CACHE_CONTROL, cache_control(&s, cache)),
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

/// The file a name stands for, when it is spelt as the playlist spells it.
fn parse_file(name: &str) -> Option<File> {
    if let Some(n) = name
        .strip_prefix("init")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return canonical(n).map(File::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix('s') {
        return canonical(n).map(File::Segment);
    }
    let (msn, part) = stem.strip_prefix('p')?.split_once('.')?;
    Some(File::Part(canonical(msn)?, canonical(part)?))
}

/// `GET /hls/<run>/<init N.mp4 | sN.m4s | pN.I.m4s>`: waits for a part or segment
/// that is about to come (a preload hint).
pub async fn file(
    ForStream(s): ForStream,
    Path((run, name)): Path<(String, String)>,
    uri: Uri,
    slot: Option<Extension<super::hls_budget::SlotHandle>>,
) -> Response {
    if !plain_query(uri.query()) {
        return text(StatusCode::BAD_REQUEST, "HLS files take no query\n");
    }
    let Some(file) = parse_file(&name) else {
        return text(StatusCode::NOT_FOUND, "no such HLS file\n");
    };
    let label = match file {
        File::Init(_) => "init",
        File::Segment(_) => "segment",
        File::Part(..) => "part",
    };
    HLS_REQUESTS
        .count_as_in(s.stream.hub.stream_label(), label)
        .increment(1);
    let result: Result<Vec<Bytes>, Response> = wait_for(&s, |hls| {
        if hls.run() != run {
            return Err(Wait::Never);
        }
        match file {
            File::Init(id) => hls.init(id).map(|b| vec![b]).ok_or(Wait::Never),
            File::Segment(msn) => hls.segment(msn),
            File::Part(msn, i) => hls.part(msn, i).map(|b| vec![b]),
        }
    })
    .await;
    match result {
        // A segment is sent as its parts, the very buffers every reader of them
        // shares: joining them made a copy per request (4000 slow readers, 2.31 GB).
        Ok(mut pieces) => {
            // Counted as the shared buffers they are, for as long as anything
            // (the connection's write queue too) holds them: see hls_budget.rs.
            if let Some(mut slot) = slot.and_then(|s| s.take()) {
                if let Err(over) = slot.hold(&pieces) {
                    return super::hls_budget::refused(over);
                }
                pieces = slot.attach(pieces);
            }
            let body = pieces_body(pieces);
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
                    (header::CACHE_CONTROL, cache_control(&s, IMMUTABLE)),
                ],
                body,
            )
                .into_response()
        }
        Err(r) => r,
    }
}

/// A body of `pieces` one after the other, shared, not copied; its length is
/// known (Content-Length), as a cache in front wants.
pub fn pieces_body(pieces: Vec<Bytes>) -> Body {
    let left = pieces.iter().map(|p| p.len() as u64).sum();
    Body::new(Pieces {
        pieces: pieces.into(),
        left,
    })
}

/// [`pieces_body`]'s body.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl HttpBody for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front();
        if let Some(piece) = &next {
            self.left -= piece.len() as u64;
        }
        std::task::Poll::Ready(next.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
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
        assert_eq!(parse_file("p0.0.m4s"), Some(File::Part(0, 0)));
        for bad in [
            "",
            "s.m4s",
            "p1.m4s",
            "p1.x.m4s",
            "init.mp4",
            "s1.mp4",
            "x1.m4s",
            "p-1.2.m4s",
            // Other spellings of names that exist: each would be a cache miss.
            "s+0.m4s",
            "s00000.m4s",
            "s012.m4s",
            "p12.03.m4s",
            "p+12.3.m4s",
            "init00.mp4",
            "s 1.m4s",
            "s18446744073709551616.m4s",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries() {
        let ok = |q: Option<&str>| parse_reload(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        assert_eq!(ok(None), Reload::default());
        assert_eq!(
            ok(Some("_HLS_msn=7")),
            Reload {
                msn: Some(7),
                part: None
            }
        );
        assert_eq!(
            ok(Some("_HLS_msn=7&_HLS_part=0")),
            Reload {
                msn: Some(7),
                part: Some(0)
            }
        );
        assert_eq!(ok(Some("token=abc&_HLS_msn=7")).msn, Some(7));
        for bad in [
            "_HLS_part=1",
            "_HLS_part=1&_HLS_msn=7",
            "_HLS_msn=7&_HLS_msn=7",
            "_HLS_msn=07",
            "_HLS_msn=+7",
            "_HLS_msn=",
            "_HLS_msn=7&_HLS_part=01",
            "_HLS_msn=7&_HLS_skip=YES",
            "_HLS_msn=7&x=1",
            "cachebuster=123",
            "_hls_msn=7",
        ] {
            assert!(parse_reload(Some(bad)).is_err(), "{bad}");
        }
        assert!(plain_query(None) && plain_query(Some("")) && plain_query(Some("token=x")));
        assert!(!plain_query(Some("v=2")) && !plain_query(Some("token=x&v=2")));
    }
}
