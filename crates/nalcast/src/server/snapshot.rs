//! `GET /snapshot.jpg` (the default stream) and `/streams/NAME/snapshot.jpg`: the
//! newest picture as a JPEG, for Home Assistant's generic camera, OctoPrint and
//! anything else that polls a still. `?width=` scales it (the aspect kept),
//! `?quality=` sets the JPEG quality.
//!
//! Decoding is bounded per stream: one decode at a time (nalcast-still keeps one
//! decoder per stream and makes each picture once, however many ask), at most
//! [`MAX_WAITING`] requests waiting behind it, and more get 429, so a flood of
//! snapshot requests costs a stream one decode per new picture and never starves
//! its viewers.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nalcast_core::metric::Series;
use nalcast_still::{Jpeg, StillError, Want};
use serde::Deserialize;
use tokio::sync::watch;

use super::limits::ViewerSlot;
use super::ForStream;
use crate::config::MjpegSettings;
use crate::streams::{Seat, Stream};

/// Snapshot requests, by result.
pub const SNAPSHOTS: Series = Series::counter(
    "nalcast_snapshots_total",
    "snapshot requests, by result: ok, no_picture (nothing to show yet), busy (too many waiting), failed",
)
.labelled("result", &["ok", "no_picture", "busy", "failed"])
.per_stream();
/// Time to make a still that was not already made.
pub const SNAPSHOT_SECONDS: Series = Series::histogram(
    "nalcast_snapshot_seconds",
    "time to decode and encode a snapshot not already made",
)
.per_stream();

/// Requests that may wait for a stream's decoder; more are refused.
pub const MAX_WAITING: usize = 64;

/// Viewers of MJPEG streams now.
pub const MJPEG_VIEWERS: Series =
    Series::gauge("nalcast_mjpeg_viewers", "viewers of MJPEG streams").per_stream();
/// Pictures made for MJPEG streams (each once, however many watch).
pub const MJPEG_FRAMES: Series = Series::counter(
    "nalcast_mjpeg_frames_total",
    "pictures made for MJPEG streams, each once however many watch",
)
.per_stream();

/// `?width=&quality=`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StillQuery {
    width: Option<u32>,
    quality: Option<u8>,
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// `GET /snapshot.jpg[?width=W][&quality=Q]`.
pub async fn jpeg(
    ForStream(s): ForStream,
    query: Result<Query<StillQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return text(
            StatusCode::BAD_REQUEST,
            "the query takes width (16 to 4096) and quality (1 to 100)\n",
        );
    };
    let width_ok = q.width.is_none_or(|w| (16..=4096).contains(&w));
    let quality_ok = q.quality.is_none_or(|v| (1..=100).contains(&v));
    if !width_ok || !quality_ok {
        return text(
            StatusCode::BAD_REQUEST,
            "width is 16 to 4096 pixels, quality 1 to 100\n",
        );
    }
    let want = Want {
        width: q.width,
        quality: q.quality.unwrap_or(nalcast_still::DEFAULT_QUALITY),
    };
    let stream = s.stream.clone();
    let label = stream.hub.stream_label().clone();
    // A source started on demand starts for a snapshot too.
    stream.hub.wanted();
    let Some(waiting) = Seat::take(&stream.stills.waiting, MAX_WAITING) else {
        SNAPSHOTS.count_as_in(&label, "busy").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many snapshot requests for this stream at once\n",
        )
            .into_response();
    };
    let Made {
        result,
        decoded,
        took,
    } = make(&stream, want, Some(waiting)).await;
    if decoded {
        SNAPSHOT_SECONDS
            .observe_in(&label)
            .record(took.as_secs_f64());
    }
    let jpeg = match result {
        Ok(jpeg) => jpeg,
        Err(StillError::NoPicture) => {
            SNAPSHOTS.count_as_in(&label, "no_picture").increment(1);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::RETRY_AFTER, "1"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                "no picture yet: the camera is starting\n",
            )
                .into_response();
        }
        Err(e) => {
            SNAPSHOTS.count_as_in(&label, "failed").increment(1);
            tracing::warn!(stream = stream.name(), "snapshot failed: {e}");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the picture cannot be made\n",
            );
        }
    };
    SNAPSHOTS.count_as_in(&label, "ok").increment(1);
    let captured = UNIX_EPOCH + Duration::from_micros(jpeg.capture_us);
    let age_ms = SystemTime::now()
        .duration_since(captured)
        .unwrap_or_default()
        .as_millis();
    let header_value =
        |v: String| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""));
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::LAST_MODIFIED,
                header_value(httpdate::fmt_http_date(captured)),
            ),
        ],
        jpeg.bytes,
    )
        .into_response();
    // How old the picture is: a few frames while the camera runs; while it is
    // lost, how long ago it last sent one.
    let headers = response.headers_mut();
    headers.insert("x-picture-age-ms", HeaderValue::from(age_ms as u64));
    // The access unit it shows: the sequence number of the framed protocol.
    headers.insert("x-picture-seq", HeaderValue::from(jpeg.seq));
    response
}

/// A still of the stream's newest picture, and whether it had to be made.
struct Made {
    result: Result<Jpeg, StillError>,
    /// Access units were decoded for it (it was not made already).
    decoded: bool,
    /// How long it took, waiting for the decoder left out.
    took: Duration,
}

/// The stream's newest picture as `want` asks, made on a blocking thread: one
/// decode at a time per stream, the GOP taken once the decoder is free, so a
/// request that waited gets the newest picture. `hold` (a place in the queue for
/// the decoder) is held until the work is done, also if the request goes away.
async fn make(stream: &Arc<Stream>, want: Want, hold: Option<Seat>) -> Made {
    let (stills, hub) = (stream.stills.stills.clone(), stream.hub.clone());
    let made = tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let mut stills = stills.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let before = stills.decoded;
        let result = stills.jpeg(&hub.gop(), want);
        Made {
            result,
            decoded: stills.decoded > before,
            took: started.elapsed(),
        }
    })
    .await;
    made.unwrap_or_else(|_| Made {
        result: Err(StillError::Decode("the decoder stopped".into())),
        decoded: false,
        took: Duration::ZERO,
    })
}

/// The boundary between MJPEG parts.
const BOUNDARY: &str = "nalcastframe";

/// `GET /mjpeg` (and mjpg-streamer's `/?action=stream`): the stream as
/// multipart/x-mixed-replace JPEGs at `--mjpeg-fps`, made once for every MJPEG
/// viewer of the stream and only while one watches. A slow viewer gets the newest
/// picture when it can take one, never a backlog.
pub async fn mjpeg(
    ForStream(s): ForStream,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    // A viewer like any other: the same limits, its place held while it watches.
    let slot = match super::viewer::routes::viewer_place(&s, peer) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let stream = s.stream.clone();
    let pictures = feed(&stream, s.mjpeg);
    let viewer = MjpegViewer::new(stream.hub.stream_label().clone(), slot);
    let parts = futures_util::stream::unfold(
        (pictures, viewer, true),
        |(mut pictures, viewer, first)| async move {
            // The newest picture at once if there is one, then each new one.
            if !first || pictures.borrow().is_none() {
                pictures.changed().await.ok()?;
            }
            let jpeg = pictures.borrow_and_update().clone()?;
            let mut part = format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.bytes.len()
            )
            .into_bytes();
            part.extend_from_slice(&jpeg.bytes);
            part.extend_from_slice(b"\r\n");
            let part = Ok::<_, std::convert::Infallible>(bytes::Bytes::from(part));
            Some((part, (pictures, viewer, false)))
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("multipart/x-mixed-replace; boundary=nalcastframe"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        axum::body::Body::from_stream(parts),
    )
        .into_response()
}

/// An MJPEG viewer while it lasts: counted, and holding its viewer slot.
struct MjpegViewer(
    nalcast_core::metric::StreamLabel,
    #[allow(dead_code)] ViewerSlot,
);

impl MjpegViewer {
    fn new(label: nalcast_core::metric::StreamLabel, slot: ViewerSlot) -> Self {
        MJPEG_VIEWERS.gauge_in(&label).increment(1.0);
        MjpegViewer(label, slot)
    }
}

impl Drop for MjpegViewer {
    fn drop(&mut self) {
        MJPEG_VIEWERS.gauge_in(&self.0).decrement(1.0);
    }
}

/// The stream's MJPEG pictures: its running feed, or a new one.
fn feed(stream: &Arc<Stream>, settings: MjpegSettings) -> watch::Receiver<Option<Jpeg>> {
    let mut slot = stream
        .stills
        .mjpeg
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = slot.as_ref() {
        return sender.subscribe();
    }
    let (sender, receiver) = watch::channel(None);
    *slot = Some(sender.clone());
    drop(slot);
    tokio::spawn(make_pictures(stream.clone(), sender, settings));
    receiver
}

/// Makes a JPEG of each new picture, at most `settings.fps` a second, until no
/// MJPEG viewer is left.
async fn make_pictures(
    stream: Arc<Stream>,
    sender: watch::Sender<Option<Jpeg>>,
    settings: MjpegSettings,
) {
    let label = stream.hub.stream_label().clone();
    let want = Want {
        width: settings.width,
        quality: settings.quality,
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(settings.fps.max(1)),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = None;
    loop {
        tick.tick().await;
        {
            // Nobody left: the feed ends (under the lock, so no viewer joins it now).
            let mut slot = stream
                .stills
                .mjpeg
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if sender.receiver_count() == 0 {
                *slot = None;
                return;
            }
        }
        stream.hub.wanted();
        if let Ok(jpeg) = make(&stream, want, None).await.result {
            if last != Some(jpeg.seq) {
                last = Some(jpeg.seq);
                MJPEG_FRAMES.count_in(&label).increment(1);
                sender.send_replace(Some(jpeg));
            }
        }
    }
}
