//! `/api/stream`, `/healthz`, `/metrics`.
use nalcast_core::protocol::StreamState;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nalcast_sources::publish::Publisher;
use serde_json::json;

use super::{AppState, ForStream};
use crate::streams::Stream;

/// A stream without a frame for this long counts as unhealthy.
const HEALTHY_FRAME_AGE: Duration = Duration::from_secs(5);

/// `GET /api/stream` (the default stream) and `/streams/NAME/api/stream`: what is
/// being streamed and to how many viewers.
pub async fn stream(ForStream(s): ForStream) -> Json<serde_json::Value> {
    Json(details(&s.stream))
}

/// `GET /api/streams`: every stream, in order, with the same details.
pub async fn streams(State(s): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<_> = s.streams.all().iter().map(|st| details(st)).collect();
    Json(json!({ "streams": list }))
}

/// A stream's state and figures.
fn details(s: &Stream) -> serde_json::Value {
    let status = s.hub.status(std::time::Instant::now());
    let info = status.params.as_ref().map(|p| &p.info);
    let c = &s.hub.counters;
    let video = s.video();
    // An on-demand stream nobody watches has its source stopped: "idle".
    let state = if s.is_idle() {
        "idle"
    } else {
        status.status.name()
    };
    json!({
        "name": s.name(),
        "source": s.source_kind(),
        "on_demand": s.config.on_demand.is_some(),
        "state": state,
        "reason": status.status.reason(),
        "codec": info.map(|i| i.codec.clone()),
        "width": info.map(|i| i.width),
        "height": info.map(|i| i.height),
        "fps": info.and_then(|i| i.fps).unwrap_or(f64::from(video.fps)),
        "bitrate": video.bitrate,
        "keyframe_interval": video.keyframe_interval,
        "keyframes_on_demand": s.hub.keyframes_on_demand(),
        "baseline": info.map(|i| i.baseline_compatible),
        "viewers": status.viewers,
        "uptime_s": status.uptime.as_secs_f64(),
        "frames_in": c.frames_in.load(Ordering::Relaxed),
        "bytes_in": c.bytes_in.load(Ordering::Relaxed),
        "skips": c.skips.load(Ordering::Relaxed),
        "gop_frames": status.gop_frames,
        "publish": s.publishers.iter().map(|o| publisher(o)).collect::<Vec<_>>(),
    })
}

/// A `--publish` target's state; its URL without secrets.
fn publisher(o: &Publisher) -> serde_json::Value {
    let status = o.status();
    let since = status
        .since
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    json!({
        "url": o.target.shown(),
        "state": status.state.label(),
        "since": since,
        "restarts": status.restarts,
        "last_error": status.last_error,
    })
}

/// `GET /healthz`: 200 while frames flow in every stream, 503 with the reasons
/// otherwise (each naming its stream when there are several).
pub async fn healthz(State(s): State<AppState>) -> Response {
    let streams = s.streams.all();
    let unhealthy: Vec<String> = streams
        .iter()
        .filter_map(|st| {
            let why = unhealthy(st)?;
            Some(if streams.len() > 1 {
                format!("{}: {why}", st.name())
            } else {
                why
            })
        })
        .collect();
    if unhealthy.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", unhealthy.join("; ")),
        )
            .into_response()
    }
}

/// Why a stream is not healthy, if it is not: frames must flow, unless it is an
/// on-demand stream nobody watches.
fn unhealthy(s: &Stream) -> Option<String> {
    if s.is_idle() {
        return None;
    }
    let status = s.hub.status(std::time::Instant::now());
    let fresh = status
        .since_last_frame
        .is_some_and(|d| d < HEALTHY_FRAME_AGE);
    if fresh && status.status == StreamState::Live {
        return None;
    }
    Some(match status.status.reason() {
        Some(reason) => kind_of(reason).to_owned(),
        None => format!("no frame from the source ({})", status.status.name()),
    })
}

/// The kind of a failure, for the always-open /healthz: a reason up to its details,
/// which follow a colon or stand in parentheses (`RTSP camera error: <what the
/// camera answered>`, `offers no H.264 video (it offers: <its SDP's names>)`):
/// those may be chosen by whoever answers at the camera's address, and stay in
/// the log and the guarded /api/stream.
fn kind_of(reason: &str) -> &str {
    let end = reason.find([':', '(', '\n']).unwrap_or(reason.len());
    reason[..end].trim_end()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_gives_the_kind_of_a_failure_not_its_details() {
        for (reason, kind) in [
            ("RTSP camera error: 404", "RTSP camera error"),
            (
                "RTSP camera error: Expected RTSP/1.0; got \"banana\"",
                "RTSP camera error",
            ),
            (
                "the RTSP camera offers no H.264 video (it offers: video/<script>)",
                "the RTSP camera offers no H.264 video",
            ),
            (
                "cannot reach the RTSP camera: Connection refused (os error 111)",
                "cannot reach the RTSP camera",
            ),
            (
                "camera process exited with status 1",
                "camera process exited with status 1",
            ),
            ("no frame for 5 s", "no frame for 5 s"),
            ("line one\nline two", "line one"),
        ] {
            assert_eq!(kind_of(reason), kind, "{reason}");
        }
    }
}
