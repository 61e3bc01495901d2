//! The HTTP side: page, API, metrics and the WebSocket endpoints on one port, plus
//! the legacy raw listener.
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use nalcast_core::Hub;
use nalcast_sources::publish::Publisher;
use nalcast_sources::VideoSettings;
use tokio::sync::watch;

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
pub mod threads;
pub mod tls;
pub mod viewer;
pub mod websocket;

/// What every handler can see.
#[derive(Clone)]
pub struct AppState {
    /// The stream.
    pub hub: Arc<Hub>,
    /// The kind of source (test, file, exec, …) for the API and stream-info: never
    /// the command line or path, which may hold a camera password.
    pub source: String,
    /// Configured picture settings.
    pub video: VideoSettings,
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
    /// The `--publish` targets and their state.
    pub publishers: Arc<Vec<Arc<Publisher>>>,
    /// What HLS requests may hold at once.
    pub hls_budget: Arc<hls_budget::HlsBudget>,
}

impl AppState {
    /// A state with nalcast's defaults around `hub` (no credentials, extra origins
    /// or viewer threads) and the sender that shuts it down: for tests that drive
    /// the routes in-process, and for embedding.
    pub fn with_defaults(hub: Arc<Hub>, source: &str) -> (AppState, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        let state = AppState {
            hub,
            source: source.to_owned(),
            video: VideoSettings::default(),
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
            publishers: Arc::default(),
            hls_budget: hls_budget::HlsBudget::new(64, 64 << 20),
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
    let protected = Router::new()
        .route("/ws", get(viewer::routes::framed))
        .route("/ws/raw", get(viewer::routes::raw))
        .route("/ws/fmp4", get(viewer::routes::fmp4))
        .merge(hls)
        .route("/api/stream", get(api::stream))
        .route("/metrics", get(api::metrics))
        .route("/vendor/broadway/{file}", get(assets::broadway))
        .fallback(get(assets::page))
        .with_state(state);
    front.wrap(open.merge(guarded(protected, &auth)))
}

/// The legacy listener: a raw WebSocket on any path, every path guarded.
pub fn legacy_router(state: AppState, front: &Front) -> Router {
    let auth = state.auth.clone();
    front.wrap(guarded(
        Router::new()
            .fallback(viewer::routes::legacy)
            .with_state(state),
        &auth,
    ))
}
