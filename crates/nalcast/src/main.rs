//! The `nalcast` binary: parse the config once, start the source, serve viewers.
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use nalcast_core::hub::{Hub, HubConfig};
use nalcast_sources::{self as source, publish};
use tokio::sync::watch;
use tracing::{info, warn};

use nalcast::config::{Config, LoadError, Options};
use nalcast::server;
use nalcast::server::auth::Auth;

fn main() -> ExitCode {
    let options = match Options::load(std::env::args_os()) {
        Ok(o) => o,
        // --help, --version and mistyped flags, as clap shows them (with the
        // nearest flag where one is near), plus what a user coming from another
        // server may expect.
        Err(LoadError::Usage(e)) => {
            let _ = e.print();
            if let Some(hint) = nalcast::config::usage_hint(&e, std::env::args_os()) {
                eprintln!("{hint}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(LoadError::File(e)) => {
            eprintln!("nalcast: error: {e}");
            return ExitCode::from(2);
        }
    };
    if options.hash_password {
        return hash_password();
    }
    if options.list_cameras {
        return list_cameras(&options);
    }
    let config = match Config::resolve(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nalcast: error: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = match Auth::from_config(&config) {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("nalcast: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = source::preflight(&config.source) {
        eprintln!("nalcast: error: {e}");
        return ExitCode::from(2);
    }
    let publish_options = match publish::preflight(&config.publish) {
        Ok(ffmpeg) => publish::PublishOptions {
            ffmpeg,
            ..publish::PublishOptions::default()
        },
        Err(e) => {
            eprintln!("nalcast: error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; none in log files and the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    server::viewer::link::quiet_tcp_info_panics();
    // Certificate problems are configuration errors: report them before starting.
    let tls = match config
        .tls
        .as_ref()
        .map(|mode| server::tls::setup(mode, config.listen, &config.public_hosts))
    {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => {
            eprintln!("nalcast: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // After every configuration error, which must stay the only line printed.
    let fd_limit = raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nalcast: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, auth, tls, fd_limit, publish_options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nalcast: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--hash-password`: one line from standard input in, its argon2 hash out.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("nalcast: error: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    match server::auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nalcast: error: {e}");
            ExitCode::from(2)
        }
    }
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

/// Raises the soft limit on open files to the hard limit (every client connection
/// is a file descriptor, and a soft limit of 1024 is common); returns the limit in
/// force, if it can be read.
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // rlim_t is u64 on 64-bit Linux and u32 on 32-bit ARM (armhf).
    fn widen<T: Into<u64>>(v: T) -> u64 {
        v.into()
    }
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open-file limit: {e}");
            return None;
        }
    };
    if soft >= hard {
        info!("open-file limit {soft}");
        return Some(widen(soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!("open-file limit raised from {soft} to {hard}");
            Some(widen(hard))
        }
        Err(e) => {
            warn!("open-file limit stays at {soft}: cannot raise it to {hard}: {e}");
            Some(widen(soft))
        }
    }
}

/// Descriptors kept free for what nalcast opens besides connections: source
/// processes' pipes across restarts, certificate reloads, /proc reads.
const SPARE_FDS: u64 = 16;

/// `--max-connections`, lowered if need be so that connections cannot use up the
/// open-file limit (then new clients would wait in the accept queue until they
/// time out, instead of being refused at once).
fn connection_budget(max_connections: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return max_connections;
    };
    // Listeners, runtimes, viewer threads and the source are open by now.
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    let room = limit.saturating_sub(in_use + SPARE_FDS).max(1);
    let budget = usize::try_from(room).unwrap_or(usize::MAX);
    if budget < max_connections {
        warn!(
            "at most {budget} connections (not --max-connections {max_connections}): the open-file limit is {limit} and {in_use} descriptors are in use; raise the limit (e.g. LimitNOFILE= in the systemd unit) for more"
        );
        return budget;
    }
    max_connections
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deep accept queue: hundreds of viewers (re)connecting at once after a
        // network blip would otherwise wait for SYN retransmits (1 s and more).
        socket.listen(4096)
    };
    listen().map_err(|e| anyhow::anyhow!(bind_error(addr, what, &e)))
}

/// Why a listener could not be opened, and the fix, in one line.
fn bind_error(addr: SocketAddr, what: &str, e: &std::io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
            "cannot listen on {addr} (--{what}): ports below 1024 need root or the \
             CAP_NET_BIND_SERVICE capability (sudo setcap cap_net_bind_service=+ep \
             $(which nalcast)); or use a port from 1024 up, e.g. --{what} {}:8000",
            addr.ip()
        ),
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {addr} (--{what}): another program is using port {port}; \
             stop it, or choose another port with --{what}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr} (--{what}): this machine has no address {}; \
             use 0.0.0.0 for every address",
            addr.ip()
        ),
        _ => format!("cannot listen on {addr} (--{what}): {e}"),
    }
}

async fn run(
    config: Config,
    auth: Option<std::sync::Arc<Auth>>,
    tls: Option<server::tls::Tls>,
    fd_limit: Option<u64>,
    publish_options: publish::PublishOptions,
) -> anyhow::Result<()> {
    // Fine steps up to 25 ms, where the server-added delay and the kernel floor it is
    // compared with lie (1 ms with few viewers, 10-20 ms with a thousand): a
    // percentile read as a bucket's upper bound is at most 25 % high below 2 ms and
    // at most 17 % from there to 25 ms.
    let latency_buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_25, 0.001_5, 0.001_75, 0.002,
        0.002_25, 0.002_5, 0.002_75, 0.003, 0.003_5, 0.004, 0.004_5, 0.005, 0.005_5, 0.006, 0.007,
        0.008, 0.009, 0.01, 0.011, 0.012, 0.013_5, 0.015, 0.016_5, 0.018, 0.02, 0.022_5, 0.025,
        0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    server::series::register(config.publish.len());
    // Histograms keep every recorded sample until upkeep folds them in: without it
    // an unscraped nalcast grew by about 1 KB per viewer every second.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let hub = Hub::new(HubConfig {
        queue: config.queue,
        hls: if config.hls {
            HubConfig::default().hls
        } else {
            None
        },
        ..HubConfig::default()
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let viewer_threads = std::sync::Arc::new(
        server::threads::ViewerThreads::start(config.viewer_threads)
            .context("cannot start the viewer threads")?,
    );
    let certificate_names = tls.as_ref().map(|t| t.names.clone()).unwrap_or_default();
    let front = server::Front {
        hosts: std::sync::Arc::new(server::host::HostPolicy::new(
            &server::host::HostNames::current(),
            &certificate_names,
            &config.public_hosts,
        )),
        proxies: std::sync::Arc::new(server::proxy::TrustedProxies::new(
            config.trusted_proxies.clone(),
            config.proxy_header,
        )),
    };
    let main_listener = bind(config.listen, "listen").await?;
    let main_addr = main_listener.local_addr()?;
    let legacy = match config.legacy_listen {
        Some(addr) => Some(bind(addr, "legacy-listen").await?),
        None => None,
    };
    // Counted now that the listeners and viewer threads hold their descriptors.
    let connections = server::limits::ConnectionLimits::new(
        connection_budget(config.max_connections, fd_limit),
        config.max_connections_per_ip,
    );
    let state = server::AppState {
        hub: hub.clone(),
        source: config.source.kind().to_owned(),
        video: config.source_options.video,
        metrics,
        viewer_timeout: config.viewer_timeout,
        shutdown: shutdown_rx.clone(),
        allow_origins: std::sync::Arc::new(config.allow_origins.clone()),
        page_csp: std::sync::Arc::new(server::assets::content_security_policy(
            &config.frame_ancestors,
        )),
        limits: server::limits::ViewerLimits::new(config.max_viewers, config.max_viewers_per_ip)
            .holding_connections(&connections),
        viewer_threads,
        hls_budget: server::hls_budget::HlsBudget::new(
            config.max_hls_requests_per_ip,
            config.max_hls_memory,
        ),
        auth,
        publishers: std::sync::Arc::new(
            config
                .publish
                .iter()
                .enumerate()
                .map(|(i, target)| publish::Publisher::new(target.clone(), i))
                .collect(),
        ),
    };
    if state.auth.is_some() && config.tls.is_none() {
        warn!("credentials are checked but travel unencrypted: add --tls self-signed or --tls-cert/--tls-key");
    }

    let mut source_task = tokio::spawn(source::supervise(
        config.source.clone(),
        config.source_options.clone(),
        hub.clone(),
        shutdown_rx.clone(),
    ));

    // Publishers read the hub like viewers: started with it, stopped (their ffmpeg
    // reaped) at shutdown.
    let mut publishers = tokio::task::JoinSet::new();
    for o in state.publishers.iter() {
        publishers.spawn(publish::supervise(
            o.clone(),
            hub.clone(),
            publish_options.clone(),
            shutdown_rx.clone(),
        ));
    }

    let mut servers = tokio::task::JoinSet::new();
    let options = server::listen::ListenOptions {
        send_buffer: config.send_buffer,
        header_timeout: config.header_timeout,
        write_timeout: config.viewer_timeout,
        tls: None,
        connections,
        hosts: front.hosts.clone(),
    };
    servers.spawn(server::listen::serve(
        main_listener,
        server::router(state.clone(), &front),
        server::listen::ListenOptions {
            tls: tls.as_ref().map(|t| t.config.clone()),
            ..options.clone()
        },
        shutdown_rx.clone(),
    ));
    let legacy_addr = legacy.as_ref().map(|l| l.local_addr()).transpose()?;
    if let (Some(listener), Some(legacy_addr)) = (legacy, legacy_addr) {
        println!("legacy raw WebSocket on ws://{legacy_addr}/");
        if tls.is_some() {
            warn!(
                "the legacy port {legacy_addr} serves video over plain ws:// (unencrypted), as the original page expects: \
                 turn it off with --legacy-listen off unless that page is needed"
            );
        }
        if legacy_addr.ip().is_loopback() && !main_addr.ip().is_loopback() {
            warn!("the legacy port listens on {legacy_addr} only: the original page on other machines cannot reach it");
        }
        servers.spawn(server::listen::serve(
            listener,
            server::legacy_router(state.clone(), &front),
            options,
            shutdown_rx.clone(),
        ));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to find the port.
    println!("listening on {scheme}://{main_addr}/");
    let banner = nalcast::banner::Facts {
        listen: main_addr,
        https: tls.is_some(),
        addresses: nalcast::banner::machine_addresses(),
        hostname: server::host::HostNames::current().hostname,
        public_hosts: config.public_hosts.clone(),
        hls: config.hls,
        legacy: legacy_addr,
    };
    for line in nalcast::banner::lines(&banner) {
        println!("{line}");
    }
    if let Some(tls) = tls {
        let stop = shutdown_rx.clone();
        tokio::spawn(async move {
            server::tls::reload_on_change(&tls, std::time::Duration::from_secs(2), stop).await;
        });
    }
    info!(source = %config.source, "nalcast started");

    shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    hub.close_all();
    // Viewers get their close frames and the source stops its camera process; give
    // them a moment, never more than a second in all.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(800);
    let viewers_gone = tokio::time::timeout_at(deadline, async {
        while servers.join_next().await.is_some() {}
        while hub.status().viewers > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let publishers_stopped = tokio::time::timeout_at(deadline, async {
        while publishers.join_next().await.is_some() {}
    });
    let (viewers_gone, source_stopped, publishers_stopped) = tokio::join!(
        viewers_gone,
        tokio::time::timeout_at(deadline, &mut source_task),
        publishers_stopped
    );
    if publishers_stopped.is_err() {
        // Dropping them kills their ffmpeg (kill_on_drop, process group).
        warn!("some publishers did not stop in time");
        publishers.shutdown().await;
    }
    if viewers_gone.is_err() {
        warn!("some connections did not close in time");
    }
    if source_stopped.is_err() {
        warn!("the source did not stop in time");
        source_task.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
