//! Publishers: the stream sent on, unchanged, to media servers (`--publish URL`).
//!
//! (Not [`Hub::publish`], which takes an access unit *into* the hub.) `rtmp://` and
//! `rtmps://` targets (with a login where the server asks: [`rtmp_login`]) and
//! `rtsp://` ones are published by nalcast itself ([`rtmp`], [`rtsp`]): no process
//! holds their stream key or password on its command line. An `srt://` publisher
//! is an ffmpeg child fed the fMP4 the hub makes anyway
//! (init segment, then one `moof`+`mdat` per access unit, 90 kHz decode times from
//! capture times) on its standard input, copying it (`-c copy`, no re-encoding) to
//! the server as FLV over RTMP, RTSP, or MPEG-TS over SRT (an srt:// URL's query
//! string, passphrase and streamid, read from a pipe, not its command line:
//! [`PublishTarget::ffmpeg_output`]). It reads the hub through
//! an internal subscription ([`Hub::subscribe_internal`]): the same bounded queue a
//! viewer has, so a slow or stuck server costs it pictures (it resumes at the next
//! keyframe), never the hub or the viewers; and it is not counted as a viewer.
//!
//! A supervisor per publisher restarts it with capped exponential backoff, like
//! the source's, and an ffmpeg at once when the stream's parameters change (ffmpeg
//! reads one init segment per run; the RTMP client sends a new sequence header). Its state (`connecting`, `live`, `retrying`) and the last
//! failure are shown by `/api/stream` and `nalcast_publish_up`; the URL's user,
//! password, query string and RTMP stream key are not ([`PublishTarget`]).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::{Backoff, Retries};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::metric::{Series, StreamLabel};
use nalcast_core::Hub;

/// Whether each target receives the stream.
pub const PUBLISH_UP: Series = Series::gauge(
    "nalcast_publish_up",
    "1 while a --publish target receives the stream, by target (its place among the --publish URLs, from 0)",
)
.labelled("target", &[])
.per_stream();
/// ffmpeg restarts per target.
pub const PUBLISH_RESTARTS: Series = Series::counter(
    "nalcast_publish_restarts_total",
    "times a --publish target's ffmpeg was restarted (failures and parameter changes), by target",
)
.labelled("target", &[])
.per_stream();

mod child;
pub mod feed;
pub mod rtmp;
pub mod rtmp_login;
pub mod rtsp;
mod target;

pub use target::{BadTarget, FfmpegOutput, PublishTarget, RtmpEndpoint, RtspEndpoint, Scheme};

/// What a publisher is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// ffmpeg is starting, or waits for the stream or the server.
    Connecting,
    /// ffmpeg is sending pictures to the server.
    Live,
    /// ffmpeg failed; a new one starts after the backoff.
    Retrying,
}

impl State {
    /// As `/api/stream` names it.
    pub fn label(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Live => "live",
            State::Retrying => "retrying",
        }
    }
}

/// A publisher's state, for `/api/stream`.
#[derive(Clone, Debug)]
pub struct PublisherStatus {
    /// What it is doing.
    pub state: State,
    /// Since when.
    pub since: SystemTime,
    /// ffmpeg processes started after the first.
    pub restarts: u64,
    /// Why the last one ended (secrets scrubbed), once one has failed.
    pub last_error: Option<String>,
}

/// One `--publish` target and its state, shared by its supervisor and the API.
#[derive(Debug)]
pub struct Publisher {
    /// Where to.
    pub target: PublishTarget,
    /// Its number among the targets (the metrics' `target` label).
    pub index: usize,
    /// The stream it sends (the metrics' `stream` label).
    stream: StreamLabel,
    status: Mutex<PublisherStatus>,
}

impl Publisher {
    /// A publisher of `stream` that has not started.
    pub fn new(target: PublishTarget, index: usize, stream: StreamLabel) -> Arc<Publisher> {
        Arc::new(Publisher {
            target,
            index,
            stream,
            status: Mutex::new(PublisherStatus {
                state: State::Connecting,
                since: SystemTime::now(),
                restarts: 0,
                last_error: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PublisherStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of its state.
    pub fn status(&self) -> PublisherStatus {
        self.lock().clone()
    }

    fn label(&self) -> String {
        self.index.to_string()
    }

    /// Moves to `state` (the time only when it changes), with `nalcast_publish_up`.
    fn set_state(&self, state: State) {
        let mut status = self.lock();
        if status.state != state {
            status.state = state;
            status.since = SystemTime::now();
        }
        let up = if state == State::Live { 1.0 } else { 0.0 };
        PUBLISH_UP.gauge_as_in(&self.stream, self.label()).set(up);
    }

    fn failed(&self, reason: String) {
        {
            let mut status = self.lock();
            status.restarts += 1;
            status.last_error = Some(reason);
        }
        PUBLISH_RESTARTS
            .count_as_in(&self.stream, self.label())
            .increment(1);
        self.set_state(State::Retrying);
    }

    fn restarted(&self) {
        self.lock().restarts += 1;
        PUBLISH_RESTARTS
            .count_as_in(&self.stream, self.label())
            .increment(1);
        self.set_state(State::Connecting);
    }
}

/// How publishers run.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// The ffmpeg to run ([`preflight`] finds it).
    pub ffmpeg: PathBuf,
    /// When to restart ffmpeg after a failure.
    pub backoff: Backoff,
    /// ffmpeg that takes nothing from its input for this long is restarted (a
    /// server that accepted the connection but stopped reading).
    pub stall_timeout: Duration,
    /// An RTSP server that asks for Basic login gets the password (readable on the
    /// network): `--rtsp-allow-basic on`.
    pub allow_basic: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            ffmpeg: PathBuf::from("ffmpeg"),
            backoff: Backoff::default(),
            stall_timeout: Duration::from_secs(10),
            allow_basic: false,
        }
    }
}

/// Checks before start-up that ffmpeg is there and can write every target's
/// protocol; returns the ffmpeg to run. The message is one line for the user.
pub fn preflight(targets: &[PublishTarget]) -> Result<PathBuf, String> {
    let ffmpeg = PathBuf::from("ffmpeg");
    // rtmp://, rtmps:// and rtsp:// are nalcast's own (rtmp.rs, rtsp.rs).
    if !targets.iter().any(PublishTarget::needs_ffmpeg) {
        return Ok(ffmpeg);
    }
    let listing = protocols_of(&ffmpeg)?;
    let protocols = feed::output_protocols(&listing);
    for target in targets.iter().filter(|t| t.needs_ffmpeg()) {
        if let Some(needed) = target.scheme().ffmpeg_protocol() {
            if !protocols.iter().any(|p| p == needed) {
                return Err(format!(
                    "--publish {target}: this ffmpeg cannot write {needed}:// (not in `ffmpeg -protocols`); use an ffmpeg built with it, or another protocol"
                ));
            }
        }
    }
    Ok(ffmpeg)
}

fn protocols_of(ffmpeg: &Path) -> Result<String, String> {
    let out = std::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-protocols"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "--publish needs ffmpeg, which is not on the PATH: install it (e.g. apt install ffmpeg)"
                    .to_owned()
            }
            _ => format!("--publish needs ffmpeg, which cannot be run: {e}"),
        })?;
    if !out.status.success() {
        return Err(format!(
            "--publish needs ffmpeg, and `{} -protocols` failed ({})",
            ffmpeg.display(),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for the first queue item `accept` takes (a keyframe, mostly): what it
/// made of it, or `None` at shutdown (the hub closes every queue then, too).
pub(crate) async fn first_accepted<T>(
    queue: &nalcast_core::queue::ViewerQueue,
    shutdown: &mut watch::Receiver<bool>,
    mut accept: impl FnMut(&nalcast_core::queue::Item) -> Option<T>,
) -> Option<T> {
    loop {
        let item = tokio::select! {
            item = queue.next() => item,
            _ = shutdown_requested(shutdown) => return None,
        };
        if let Some(taken) = accept(&item?.0) {
            return Some(taken);
        }
    }
}

/// How long a publisher's connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to a media server, for nalcast's own RTMP and RTSP clients.
pub(crate) async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| {
        format!(
            "no connection to the server within {} s",
            CONNECT_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| format!("cannot connect to the server: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Writes `bufs` to a media server and flushes, failing when it takes nothing
/// for `stall` (a server that accepted the connection but stopped reading).
pub(crate) async fn send_within<S: tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
    bufs: &[impl AsRef<[u8]>],
    stall: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(stall, async {
        for buf in bufs {
            io.write_all(buf.as_ref()).await?;
        }
        io.flush().await
    })
    .await
    .map_err(|_| format!("the server took nothing for {} s", stall.as_secs()))?
    .map_err(|e| format!("sending to the server: {e}"))
}

/// Runs one session of nalcast's own clients until it ends or nalcast shuts down;
/// a failure's reason without the target's secrets.
pub(crate) async fn session_until_shutdown(
    publisher: &Publisher,
    session: impl std::future::Future<Output = Result<RunEnd, String>>,
    shutdown: &mut watch::Receiver<bool>,
) -> RunEnd {
    let ended = tokio::select! {
        r = session => r,
        _ = shutdown_requested(shutdown) => Ok(RunEnd::Shutdown),
    };
    match ended {
        Ok(end) => end,
        Err(why) => RunEnd::Failed(publisher.target.scrub(&why)),
    }
}

/// How one ffmpeg run ended.
#[derive(Debug)]
pub(crate) enum RunEnd {
    /// Shutdown: ffmpeg was stopped and reaped.
    Shutdown,
    /// The stream's parameters changed: start a new ffmpeg at once.
    NewParameters,
    /// ffmpeg failed or was stopped for stalling; why (secrets scrubbed).
    Failed(String),
}

/// Runs a publisher until `shutdown` turns true: ffmpeg after ffmpeg, with capped
/// exponential backoff between failures. Every ffmpeg is reaped before this returns.
pub async fn supervise(
    publisher: Arc<Publisher>,
    hub: Arc<Hub>,
    opts: PublishOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retries = Retries::new(opts.backoff);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        info!(publish = %publisher.target, "publishing");
        let target = &publisher.target;
        let ended = if let Some(endpoint) = target.rtmp_endpoint() {
            rtmp::run_once(&publisher, &hub, &opts, &endpoint, shutdown.clone()).await
        } else if let Some(endpoint) = target.rtsp_endpoint() {
            rtsp::run_once(&publisher, &hub, &opts, &endpoint, shutdown.clone()).await
        } else {
            child::run_once(&publisher, &hub, &opts, shutdown.clone()).await
        };
        retries.ended(started.elapsed());
        let backoff = match ended {
            RunEnd::Shutdown => break,
            RunEnd::NewParameters => {
                info!(publish = %publisher.target, "new stream parameters: publishing again");
                publisher.restarted();
                continue;
            }
            RunEnd::Failed(reason) => {
                if *shutdown.borrow() {
                    break;
                }
                let backoff = retries.next_delay();
                warn!(
                    publish = %publisher.target,
                    retry_in_ms = backoff.as_millis() as u64,
                    "publishing stopped: {reason}"
                );
                publisher.failed(reason);
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown_requested(&mut shutdown) => break,
        }
        publisher.set_state(State::Connecting);
    }
    PUBLISH_UP
        .gauge_as_in(&publisher.stream, publisher.label())
        .set(0.0);
}
