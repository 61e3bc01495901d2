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

use super::AppState;

/// A stream without a frame for this long counts as unhealthy.
const HEALTHY_FRAME_AGE: Duration = Duration::from_secs(5);

/// `GET /api/stream`: what is being streamed and to how many viewers.
pub async fn stream(State(s): State<AppState>) -> Json<serde_json::Value> {
    let status = s.hub.status(std::time::Instant::now());
    let info = status.params.as_ref().map(|p| &p.info);
    let c = &s.hub.counters;
    Json(json!({
        "source": s.source,
        "state": status.status.name(),
        "reason": status.status.reason(),
        "codec": info.map(|i| i.codec.clone()),
        "width": info.map(|i| i.width),
        "height": info.map(|i| i.height),
        "fps": info.and_then(|i| i.fps).unwrap_or(f64::from(s.video.fps)),
        "bitrate": s.video.bitrate,
        "keyframe_interval": s.video.keyframe_interval,
        "keyframes_on_demand": s.hub.keyframes_on_demand(),
        "baseline": info.map(|i| i.baseline_compatible),
        "viewers": status.viewers,
        "uptime_s": status.uptime.as_secs_f64(),
        "frames_in": c.frames_in.load(Ordering::Relaxed),
        "bytes_in": c.bytes_in.load(Ordering::Relaxed),
        "skips": c.skips.load(Ordering::Relaxed),
        "gop_frames": status.gop_frames,
        "publish": s.publishers.iter().map(|o| publisher(o)).collect::<Vec<_>>(),
    }))
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

/// `GET /healthz`: 200 while frames flow, 503 with the reason otherwise.
pub async fn healthz(State(s): State<AppState>) -> Response {
    let status = s.hub.status(std::time::Instant::now());
    let fresh = status
        .since_last_frame
        .is_some_and(|d| d < HEALTHY_FRAME_AGE);
    if fresh && status.status == StreamState::Live {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let reason = match status.status.reason() {
            Some(reason) => kind_of(reason).to_owned(),
            None => format!("no frame from the source ({})", status.status.name()),
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {reason}\n"),
        )
            .into_response()
    }
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
