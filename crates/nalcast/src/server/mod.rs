//! The HTTP side: page, API, metrics and the WebSocket endpoints on one port, plus
//! the legacy raw listener.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::middleware::map_request_with_state;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use nalcast_core::Hub;
use nalcast_sources::SourceSpec;
use tokio::sync::watch;
use tower::Layer;

use crate::streams::{Stream, Streams};

mod api;
pub mod assets;
pub mod auth;
pub mod cors;
pub mod hls;
pub mod hls_budget;
pub mod host;
pub mod limits;
pub mod listen;
pub mod origin;
pub mod progress;
pub mod proxy;
pub mod series;
pub mod snapshot;
pub mod threads;
pub mod tls;
pub mod viewer;
pub mod webrtc;
pub mod websocket;

/// What every handler can see.
#[derive(Clone)]
pub struct AppState {
    /// The stream the request is for: the default stream, or the one a
    /// `/streams/NAME/` URL names (see [`ForStream`]).
    pub stream: Arc<Stream>,
    /// Every stream.
    pub streams: Arc<Streams>,
    /// How MJPEG streams are made.
    pub mjpeg: crate::config::MjpegSettings,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Stuck-viewer timeout.
    pub viewer_timeout: Duration,
    /// Turns true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Extra origins allowed to open WebSockets and read LL-HLS (`*` for any).
    pub allow_origins: Arc<Vec<String>>,
    /// The page's Content-Security-Policy (its frame-ancestors from the options).
    pub page_csp: Arc<String>,
    /// Viewer slots.
    pub limits: limits::ViewerLimits,
    /// Where plain-TCP viewers run.
    pub viewer_threads: Arc<threads::ViewerThreads>,
    /// Credentials every request but the main port's /healthz must show, when configured.
    pub auth: Option<Arc<auth::Auth>>,
    /// What HLS requests may hold at once.
    pub hls_budget: Arc<hls_budget::HlsBudget>,
    /// WebRTC viewers (WHEP), unless `--webrtc off`.
    pub webrtc: Option<Arc<webrtc::WebRtc>>,
}

impl AppState {
    /// A state with nalcast's defaults around `hub` (no credentials, extra origins
    /// or viewer threads) and the sender that shuts it down: for tests that drive
    /// the routes in-process, and for embedding.
    pub fn with_defaults(hub: Arc<Hub>, source: SourceSpec) -> (AppState, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        let stream = Arc::new(Stream::around(
            crate::config::stream::DEFAULT_NAME,
            source,
            hub,
        ));
        let state = AppState {
            streams: Streams::new(vec![stream.clone()]),
            stream,
            mjpeg: crate::config::MjpegSettings::default(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            viewer_timeout: Duration::from_secs(10),
            shutdown,
            allow_origins: Arc::default(),
            page_csp: Arc::new(assets::content_security_policy(&[])),
            limits: limits::ViewerLimits::new(100, 100),
            viewer_threads: Arc::new(threads::ViewerThreads::none()),
            auth: None,
            hls_budget: hls_budget::HlsBudget::new(64, 64 << 20),
            webrtc: None,
        };
        (state, stop)
    }
}

/// Puts `router` behind the credentials, when there are any.
fn guarded(router: Router, auth: &Option<Arc<auth::Auth>>) -> Router {
    match auth {
        Some(auth) => router.layer(from_fn_with_state(auth.clone(), auth::require)),
        None => router,
    }
}

/// What every request passes before routing, on both listeners: the Host check
/// (DNS rebinding), then the client's address taken from trusted proxies.
#[derive(Clone, Default)]
pub struct Front {
    /// Names served.
    pub hosts: Arc<host::HostPolicy>,
    /// Proxies believed.
    pub proxies: Arc<proxy::TrustedProxies>,
}

impl Front {
    fn wrap(&self, router: Router) -> Router {
        router
            .layer(from_fn_with_state(self.proxies.clone(), proxy::resolve))
            .layer(from_fn_with_state(self.hosts.clone(), host::check))
    }
}

/// The main port's routes. Only `/healthz`, exactly that path, is open without
/// credentials (supervisors and load balancers probe it); it is routed beside the
/// guarded routes rather than excused inside the guard, so no other path or port
/// can pass for it.
pub fn router(state: AppState, front: &Front) -> Router {
    let auth = state.auth.clone();
    let open = Router::new()
        .route("/healthz", get(api::healthz))
        .with_state(state.clone());
    let protected = Router::new()
        .route("/api/streams", get(api::streams))
        .route("/metrics", get(api::metrics))
        .route("/vendor/broadway/{file}", get(assets::broadway))
        .fallback_service(per_stream(state.clone()))
        .with_state(state);
    front.wrap(open.merge(guarded(protected, &auth)))
}

/// The routes every stream has, at `/streams/NAME/…` and, for the default stream,
/// at the root: the page, the WebSocket endpoints, HLS and /api/stream.
fn per_stream(state: AppState) -> Router {
    let hls = Router::new()
        .route("/hls/index.m3u8", get(hls::playlist))
        .route("/hls/{run}/{file}", get(hls::file))
        .layer(from_fn_with_state(
            state.hls_budget.clone(),
            hls_budget::guard,
        ))
        .route("/hls", get(cors::to_playlist))
        .route("/hls/", get(cors::to_playlist))
        .layer(from_fn_with_state(state.allow_origins.clone(), cors::hls));
    let whep = Router::new()
        .route(
            "/whep",
            axum::routing::post(webrtc::offer).options(webrtc::options),
        )
        .route(
            "/whep/{id}",
            axum::routing::delete(webrtc::end).patch(webrtc::patch),
        )
        .layer(from_fn_with_state(state.allow_origins.clone(), cors::whep));
    let streams = state.streams.clone();
    let routes = Router::new()
        .route("/ws", get(viewer::routes::framed))
        .route("/ws/raw", get(viewer::routes::raw))
        .route("/ws/fmp4", get(viewer::routes::fmp4))
        .merge(whep)
        .merge(hls)
        .route("/api/stream", get(api::stream))
        .route("/snapshot.jpg", get(snapshot::jpeg))
        .route("/mjpeg", get(snapshot::mjpeg))
        .route("/", get(root))
        .fallback(get(assets::page))
        .with_state(state);
    by_stream(streams, routes)
}

/// `routes` for the stream each request names: the name is read, and taken off
/// the path, before `routes` route it.
fn by_stream(streams: Arc<Streams>, routes: Router) -> Router {
    Router::new().fallback_service(map_request_with_state(streams, named_stream).layer(routes))
}

/// `/`: the page, or mjpg-streamer's `/?action=snapshot` and `/?action=stream`,
/// so that nalcast can stand in for mjpg-streamer (OctoPrint's and Klipper's
/// webcam settings) with no setting changed.
async fn root(
    for_stream: ForStream,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    query: axum::extract::RawQuery,
    state: State<AppState>,
    named: Option<axum::Extension<Arc<Stream>>>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    match mjpg_streamer_action(for_stream, peer, query).await {
        Ok(answer) => answer,
        Err(()) => assets::page(state, named, uri, headers).await,
    }
}

/// mjpg-streamer's `?action=snapshot` or `?action=stream`, when the query is one.
async fn mjpg_streamer_action(
    for_stream: ForStream,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    query: axum::extract::RawQuery,
) -> Result<Response, ()> {
    match query.0.as_deref() {
        Some("action=snapshot") => {
            Ok(snapshot::jpeg(for_stream, Ok(axum::extract::Query(Default::default()))).await)
        }
        Some("action=stream") => Ok(snapshot::mjpeg(for_stream, peer).await),
        _ => Err(()),
    }
}

/// `/streams/NAME/REST`: the stream called NAME, for the routes as `/REST`.
/// `/streams/NAME` is redirected to `/streams/NAME/`, so that the page's relative
/// URLs stay under it; any other path is the default stream's.
async fn named_stream(
    State(streams): State<Arc<Streams>>,
    mut request: Request,
) -> Result<Request, Response> {
    let Some(rest) = request.uri().path().strip_prefix("/streams/") else {
        return Ok(request);
    };
    let (name, tail) = match rest.split_once('/') {
        Some((name, tail)) => (name, tail),
        None if rest.is_empty() => return Err(Redirect::permanent("/").into_response()),
        None => return Err(Redirect::permanent(&format!("/streams/{rest}/")).into_response()),
    };
    let Some(stream) = streams.get(name) else {
        return Err((
            StatusCode::NOT_FOUND,
            "no stream of that name: /api/streams lists them\n",
        )
            .into_response());
    };
    let path_and_query = match request.uri().query() {
        Some(q) => format!("/{tail}?{q}"),
        None => format!("/{tail}"),
    };
    let Ok(uri) = path_and_query.parse::<Uri>() else {
        return Err((StatusCode::BAD_REQUEST, "bad path\n").into_response());
    };
    *request.uri_mut() = uri;
    request.extensions_mut().insert(stream);
    Ok(request)
}

/// A handler's state for the stream the request is for: the one
/// [`named_stream`] found, else the default stream.
pub struct ForStream(pub AppState);

impl FromRequestParts<AppState> for ForStream {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut state = state.clone();
        state.stream = match parts.extensions.get::<Arc<Stream>>() {
            Some(stream) => stream.clone(),
            None => state.streams.default_stream(),
        };
        Ok(ForStream(state))
    }
}

/// `--mjpg-streamer-listen`: mjpg-streamer's `/?action=stream` and
/// `/?action=snapshot` for the default stream, guarded as the main port is; any
/// other request is told what the port is for.
pub fn mjpg_streamer_router(state: AppState, front: &Front) -> Router {
    let auth = state.auth.clone();
    let routes = Router::new()
        .route("/", get(mjpg_streamer))
        .fallback(|| async { not_mjpg_streamer() })
        .with_state(state);
    front.wrap(guarded(routes, &auth))
}

async fn mjpg_streamer(
    for_stream: ForStream,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    query: axum::extract::RawQuery,
) -> Response {
    mjpg_streamer_action(for_stream, peer, query)
        .await
        .unwrap_or_else(|()| not_mjpg_streamer())
}

fn not_mjpg_streamer() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this port serves mjpg-streamer's /?action=stream and /?action=snapshot; the player is on the main port\n",
    )
        .into_response()
}

/// The legacy listener: a raw WebSocket on any path, every path guarded.
pub fn legacy_router(state: AppState, front: &Front) -> Router {
    let auth = state.auth.clone();
    let streams = state.streams.clone();
    let routes = Router::new()
        .fallback(viewer::routes::legacy)
        .with_state(state);
    front.wrap(guarded(by_stream(streams, routes), &auth))
}
