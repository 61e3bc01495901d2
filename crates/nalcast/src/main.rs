//! The `nalcast` binary: parse the config once, start the source, serve viewers.
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::hub::{Hub, HubConfig};
use nalcast_core::source;
use tokio::sync::watch;
use tracing::{debug, info, warn};

mod config;
mod server;

use config::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nalcast: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = source::preflight(&config.source) {
        eprintln!("nalcast: error: {e}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nalcast: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    listen().with_context(|| {
        format!("cannot listen on {addr} ({what}); is another program using it? choose another with --{what}")
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    let latency_buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5,
    ];
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let hub = Hub::new(HubConfig {
        queue: config.queue,
        ..HubConfig::default()
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = server::AppState {
        hub: hub.clone(),
        source: config.source.to_string(),
        video: config.source_options.video,
        metrics,
        viewer_timeout: config.viewer_timeout,
        shutdown: shutdown_rx.clone(),
        allow_origins: std::sync::Arc::new(config.allow_origins.clone()),
        limits: server::limits::ViewerLimits::new(config.max_viewers, config.max_viewers_per_ip),
    };

    let main_listener = bind(config.listen, "listen").await?;
    let main_addr = main_listener.local_addr()?;
    let legacy = match config.legacy_listen {
        Some(addr) => Some(bind(addr, "legacy-listen").await?),
        None => None,
    };

    let source_task = tokio::spawn(source::supervise(
        config.source.clone(),
        config.source_options.clone(),
        hub.clone(),
        shutdown_rx.clone(),
    ));

    let mut servers = tokio::task::JoinSet::new();
    let send_buffer = config.send_buffer;
    let serve = |listener: tokio::net::TcpListener, app: axum::Router| {
        let mut stop = shutdown_rx.clone();
        async move {
            axum::serve(
                listener.tap_io(move |tcp| tune_socket(tcp, send_buffer)),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown_requested(&mut stop).await })
            .await
        }
    };
    servers.spawn(serve(main_listener, server::router(state.clone())));
    if let Some(listener) = legacy {
        println!("legacy raw WebSocket on ws://{}/", listener.local_addr()?);
        servers.spawn(serve(listener, server::legacy_router(state.clone())));
    }
    // Tests and scripts read this line to find the port.
    println!("listening on http://{main_addr}/");
    if main_addr.ip().is_unspecified() {
        println!(
            "open http://localhost:{port}/ on this machine, or http://<this machine's address>:{port}/ on the network",
            port = main_addr.port()
        );
    }
    info!(source = %config.source, "nalcast started");

    shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    hub.close_all();
    // Viewers get their close frames; give them a moment, never more than a second.
    let drained = tokio::time::timeout(std::time::Duration::from_millis(800), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("some connections did not close in time");
    }
    source_task.abort();
    let _ = source_task.await;
    Ok(())
}

/// Every connection: no Nagle delay (frames go out at once), and a bounded kernel
/// send buffer, so a slow viewer shows up in its queue (and gets skipped to the
/// next keyframe) instead of hiding seconds of video in the kernel.
fn tune_socket(tcp: &mut tokio::net::TcpStream, send_buffer: usize) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
        debug!("cannot set the socket send buffer: {e}");
    }
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
