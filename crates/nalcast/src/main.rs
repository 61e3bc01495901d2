//! The `nalcast` binary: parse the config once, start the source, serve viewers.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nalcast_sources::{self as source, publish};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use nalcast::config::{Config, LoadError, Options};
use nalcast::server;
use nalcast::server::auth::Auth;
use nalcast::streams::{Fleet, Streams};

fn main() -> ExitCode {
    match start() {
        Ok(status) => status,
        // The one place nalcast reports why it stops: one line, and the status.
        Err(Fatal { message, status }) => {
            eprintln!("nalcast: error: {message}");
            ExitCode::from(status)
        }
    }
}

/// Why nalcast stops: one line for the user, and the exit status (2 for what the
/// configuration or the command line got wrong, 1 for what went wrong while
/// running).
struct Fatal {
    message: String,
    status: u8,
}

impl Fatal {
    /// A configuration error: status 2.
    fn config(e: impl std::fmt::Display) -> Fatal {
        Fatal {
            message: e.to_string(),
            status: 2,
        }
    }

    /// A failure while starting or serving: status 1.
    fn runtime(e: &anyhow::Error) -> Fatal {
        Fatal {
            message: format!("{e:#}"),
            status: 1,
        }
    }
}

/// Reads the configuration, checks everything that can be checked before anything
/// starts (each a configuration error), then serves until a signal.
fn start() -> Result<ExitCode, Fatal> {
    let options = match Options::load(std::env::args_os()) {
        Ok(o) => o,
        Err(LoadError::Usage(e)) => return Ok(usage(&e)),
        Err(LoadError::File(e)) => return Err(Fatal::config(e)),
    };
    if options.hash_password {
        return hash_password();
    }
    if options.list_cameras {
        return Ok(list_cameras(&options));
    }
    let check = options.check;
    let config = Config::resolve(options).map_err(Fatal::config)?;
    let auth = Auth::from_config(&config).map_err(Fatal::config)?;
    if check {
        println!("settings ok: {} stream(s)", config.streams.len());
        for s in &config.streams {
            let on_demand = if s.on_demand.is_some() {
                ", on demand"
            } else {
                ""
            };
            println!("  {}: {}{on_demand}", s.name, s.source.kind());
        }
        return Ok(ExitCode::SUCCESS);
    }
    for stream in &config.streams {
        source::preflight(&stream.source).map_err(|e| match config.streams.len() {
            1 => Fatal::config(e),
            _ => Fatal::config(format!("stream '{}': {e}", stream.name)),
        })?;
    }
    let targets: Vec<_> = config
        .streams
        .iter()
        .flat_map(|s| s.publish.iter().cloned())
        .collect();
    let publish_options = publish::PublishOptions {
        ffmpeg: publish::preflight(&targets).map_err(Fatal::config)?,
        ..publish::PublishOptions::default()
    };
    init_logging();
    server::viewer::link::quiet_tcp_info_panics();
    // Certificate problems are configuration errors: report them before starting.
    let tls = config
        .tls
        .as_ref()
        .map(|mode| server::tls::setup(mode, config.listen, &config.public_hosts))
        .transpose()
        .map_err(|e| Fatal::config(format!("{e:#}")))?;
    // After every configuration error, which must stay the only line printed.
    let fd_limit = server::limits::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(|e| Fatal::runtime(&e))?;
    runtime
        .block_on(run(config, auth, tls, fd_limit, publish_options))
        .map_err(|e| Fatal::runtime(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// --help, --version and mistyped flags, as clap shows them (with the nearest flag
/// where one is near), plus what a user coming from another server may expect.
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if let Some(hint) = nalcast::config::usage_hint(e, std::env::args_os()) {
        eprintln!("{hint}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; none in log files and the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `--hash-password`: one line from standard input in, its argon2 hash out.
fn hash_password() -> Result<ExitCode, Fatal> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Fatal::config(format!("cannot read the password from standard input: {e}")))?;
    let hash =
        server::auth::hash_password(line.trim_end_matches(['\r', '\n'])).map_err(Fatal::config)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `--list-cameras`: the cameras and what nalcast would take from each, at the
/// size and rate the options ask for; status 1 when there is none.
fn list_cameras(options: &Options) -> ExitCode {
    let want = source::VideoSettings {
        width: options.width,
        height: options.height,
        fps: options.fps,
        bitrate: options.bitrate,
        keyframe_interval: options.keyframe_interval,
    };
    match source::v4l2::list_cameras(&want) {
        Ok(listing) => {
            print!("{listing}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nalcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The composition root: metrics, hub, limits and state, then the source, the
/// publishers and the listeners, each started with the shutdown signal; then wait.
async fn run(
    config: Config,
    auth: Option<Arc<Auth>>,
    tls: Option<server::tls::Tls>,
    fd_limit: Option<u64>,
    publish_options: publish::PublishOptions,
) -> anyhow::Result<()> {
    // Before anything is announced: a SIGHUP from then on reloads, never kills.
    let mut signals = Signals::new();
    let metrics = server::series::install()?;
    let mut fleet = Fleet::start(
        &config.streams,
        config.queue,
        publish_options,
        server::series::register_stream,
    );
    let streams = fleet.streams();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let front = front(&config, tls.as_ref());
    let main_listener = server::listen::bind(config.listen, "listen").await?;
    let main_addr = main_listener.local_addr()?;
    let legacy = match config.legacy_listen {
        Some(addr) => Some(server::listen::bind(addr, "legacy-listen").await?),
        None => None,
    };
    let legacy_addr = legacy.as_ref().map(|l| l.local_addr()).transpose()?;
    let mjpg_streamer = match config.mjpg_streamer_listen {
        Some(addr) => Some(server::listen::bind(addr, "mjpg-streamer-listen").await?),
        None => None,
    };
    let webrtc = match &config.webrtc {
        Some(settings) => match server::webrtc::WebRtc::start(settings).await {
            Ok(webrtc) => {
                println!(
                    "WebRTC (WHEP) viewers on UDP port {}: POST an SDP offer to /whep",
                    webrtc.port()
                );
                Some(webrtc)
            }
            Err(e) if settings.optional() => {
                warn!("WebRTC is off: {e:#}; give --webrtc HOST:PORT (a free UDP port) or --webrtc off");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let viewer_threads = server::threads::ViewerThreads::start(config.viewer_threads)
        .context("cannot start the viewer threads")?;
    // Counted now that the listeners and viewer threads hold their descriptors.
    let connections = server::limits::ConnectionLimits::new(
        server::limits::connection_budget(config.max_connections, fd_limit),
        config.max_connections_per_ip,
    );
    let mut state = app_state(
        &config,
        &streams,
        metrics,
        auth,
        viewer_threads,
        &connections,
        &shutdown,
    );
    state.webrtc = webrtc;

    let options = server::listen::ListenOptions {
        send_buffer: config.send_buffer,
        header_timeout: config.header_timeout,
        write_timeout: config.viewer_timeout,
        tls: None,
        connections,
        hosts: front.hosts.clone(),
    };
    let mut servers = JoinSet::new();
    servers.spawn(server::listen::serve(
        main_listener,
        server::router(state.clone(), &front),
        server::listen::ListenOptions {
            tls: tls.as_ref().map(|t| t.config.clone()),
            ..options.clone()
        },
        shutdown.clone(),
    ));
    if let Some(listener) = mjpg_streamer {
        println!(
            "mjpg-streamer's URLs on http://{}/?action=stream",
            listener.local_addr()?
        );
        servers.spawn(server::listen::serve(
            listener,
            server::mjpg_streamer_router(state.clone(), &front),
            options.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listener) = legacy {
        servers.spawn(server::listen::serve(
            listener,
            server::legacy_router(state.clone(), &front),
            options,
            shutdown.clone(),
        ));
    }
    announce(
        &config,
        main_addr,
        legacy_addr,
        tls.is_some(),
        state.webrtc.is_some(),
    );
    if let Some(tls) = tls {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            server::tls::reload_on_change(&tls, Duration::from_secs(2), stop).await;
        });
    }
    info!(streams = streams.all().len(), "nalcast started");

    while signals.next().await == Signal::Reload {
        nalcast::streams::reload(&mut fleet, &config).await;
    }
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    stop(&streams, servers, fleet).await;
    Ok(())
}

/// Who may ask: the host names answered, and the proxies believed.
fn front(config: &Config, tls: Option<&server::tls::Tls>) -> server::Front {
    let certificate_names = tls.map(|t| t.names.clone()).unwrap_or_default();
    server::Front {
        hosts: Arc::new(server::host::HostPolicy::new(
            &server::host::HostNames::current(),
            &certificate_names,
            &config.public_hosts,
        )),
        proxies: Arc::new(server::proxy::TrustedProxies::new(
            config.trusted_proxies.clone(),
            config.proxy_header,
        )),
    }
}

/// What every request handler shares.
fn app_state(
    config: &Config,
    streams: &Arc<Streams>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    auth: Option<Arc<Auth>>,
    viewer_threads: server::threads::ViewerThreads,
    connections: &server::limits::ConnectionLimits,
    shutdown: &watch::Receiver<bool>,
) -> server::AppState {
    if auth.is_some() && config.tls.is_none() {
        warn!("credentials are checked but travel unencrypted: add --tls self-signed or --tls-cert/--tls-key");
    }
    server::AppState {
        mjpeg: config.mjpeg,
        stream: streams.default_stream(),
        streams: streams.clone(),
        metrics,
        viewer_timeout: config.viewer_timeout,
        shutdown: shutdown.clone(),
        allow_origins: Arc::new(config.allow_origins.clone()),
        page_csp: Arc::new(server::assets::content_security_policy(
            &config.frame_ancestors,
        )),
        limits: server::limits::ViewerLimits::new(config.max_viewers, config.max_viewers_per_ip)
            .holding_connections(connections),
        viewer_threads: Arc::new(viewer_threads),
        hls_budget: server::hls_budget::HlsBudget::new(
            config.max_hls_requests_per_ip,
            config.max_hls_memory,
        ),
        auth,
        webrtc: None,
    }
}

/// The start-up lines: where to look, and what is exposed that should not be.
fn announce(
    config: &Config,
    main_addr: SocketAddr,
    legacy: Option<SocketAddr>,
    https: bool,
    webrtc: bool,
) {
    if let Some(legacy_addr) = legacy {
        println!("legacy raw WebSocket on ws://{legacy_addr}/");
        if https {
            warn!(
                "the legacy port {legacy_addr} serves video over plain ws:// (unencrypted), as the original page expects: \
                 turn it off with --legacy-listen off unless that page is needed"
            );
        }
        if legacy_addr.ip().is_loopback() && !main_addr.ip().is_loopback() {
            warn!("the legacy port listens on {legacy_addr} only: the original page on other machines cannot reach it");
        }
    }
    let scheme = if https { "https" } else { "http" };
    // Tests and scripts read this line to find the port.
    println!("listening on {scheme}://{main_addr}/");
    let banner = nalcast::banner::Facts {
        listen: main_addr,
        https,
        addresses: nalcast::banner::machine_addresses(),
        hostname: server::host::HostNames::current().hostname,
        public_hosts: config.public_hosts.clone(),
        hls: config.default_stream().hls,
        webrtc,
        legacy,
        streams: config.streams.iter().map(|s| s.name.clone()).collect(),
    };
    for line in nalcast::banner::lines(&banner) {
        println!("{line}");
    }
}

/// Viewers get their close frames and the sources stop their camera processes;
/// give them a moment, never more than a second in all.
async fn stop(streams: &Streams, mut servers: JoinSet<()>, fleet: Fleet) {
    let grace = Duration::from_millis(800);
    let deadline = tokio::time::Instant::now() + grace;
    let viewers_gone = tokio::time::timeout_at(deadline, async {
        while servers.join_next().await.is_some() {}
        let viewers = || {
            streams
                .all()
                .iter()
                .map(|s| s.hub.status(std::time::Instant::now()).viewers)
                .sum::<usize>()
        };
        while viewers() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (viewers_gone, ()) = tokio::join!(viewers_gone, fleet.stop(grace));
    if viewers_gone.is_err() {
        warn!("some connections did not close in time");
    }
}

/// What a signal asks of nalcast.
#[derive(PartialEq, Eq)]
enum Signal {
    /// SIGHUP: read the settings again.
    Reload,
    /// SIGTERM or Ctrl-C: stop.
    Stop,
}

/// The signals nalcast acts on.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        let term = async {
            match &mut self.term {
                Some(term) => term.recv().await,
                None => std::future::pending().await,
            }
        };
        let hup = async {
            match &mut self.hup {
                Some(hup) => hup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            _ = term => Signal::Stop,
            _ = hup => Signal::Reload,
        }
    }
}
