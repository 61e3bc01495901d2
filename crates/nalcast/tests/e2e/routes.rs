//! The HTTP routes driven in-process (axum's `Router` with `oneshot`): what a route
//! answers depends only on the hub's state, so no binary, port or source is needed.
//! What needs the real binary (sockets, sources, signals) stays in the other tests.
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use nalcast::server::{self, AppState, Front};
use nalcast_core::Hub;
use nalcast_sources::SourceSpec;
use tower::ServiceExt;

/// GETs `path` from the main port's router: (status, body).
async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
    let mut request = Request::get(path)
        .header(header::HOST, "127.0.0.1:8000")
        .body(axum::body::Body::empty())
        .expect("request");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("peer");
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = server::router(state.clone(), &Front::default())
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn stream_json(state: &AppState) -> serde_json::Value {
    let (status, body) = get(state, "/api/stream").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).expect("/api/stream is JSON")
}

#[tokio::test]
async fn api_stream_says_whether_the_source_makes_keyframes_on_demand() {
    let hub = Hub::new(Default::default());
    let (state, _stop) = AppState::with_defaults(hub.clone(), SourceSpec::File("clip.h264".into()));
    assert_eq!(stream_json(&state).await["keyframes_on_demand"], false);
    hub.source_started(true);
    assert_eq!(stream_json(&state).await["keyframes_on_demand"], true);
    hub.source_lost("gone", std::time::Instant::now());
    let json = stream_json(&state).await;
    assert_eq!(json["keyframes_on_demand"], false);
    assert_eq!(json["state"], "source-lost");
    assert_eq!(json["source"], "file");
}

#[tokio::test]
async fn healthz_is_503_with_the_reason_until_frames_flow() {
    let hub = Hub::new(Default::default());
    let (state, _stop) = AppState::with_defaults(hub.clone(), SourceSpec::Test);
    let (status, _) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    hub.source_lost("camera unplugged", std::time::Instant::now());
    let (status, body) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("camera unplugged"), "{body}");
}

#[tokio::test]
async fn a_plain_get_of_a_websocket_route_is_told_to_open_the_page() {
    let (state, _stop) = AppState::with_defaults(Hub::new(Default::default()), SourceSpec::Test);
    for path in ["/ws", "/ws/raw"] {
        let (status, body) = get(&state, path).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "{path}");
        assert!(body.contains("open the player page"), "{path}: {body}");
    }
}

#[tokio::test]
async fn the_page_is_served_and_unknown_names_are_refused() {
    let (state, _stop) = AppState::with_defaults(Hub::new(Default::default()), SourceSpec::Test);
    let (status, body) = get(&state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<canvas") || body.contains("<script"),
        "{body}"
    );
    let router = server::router(state, &Front::default());
    let mut request = Request::get("/api/stream")
        .header(header::HOST, "evil.example")
        .body(axum::body::Body::empty())
        .expect("request");
    request.extensions_mut().insert(ConnectInfo(
        "127.0.0.1:1".parse::<SocketAddr>().expect("peer"),
    ));
    let response = router.oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
}
