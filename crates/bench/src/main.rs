//! nalcast-bench: opens N WebSocket viewers against a live H.264 endpoint and
//! measures what each one experiences. Works with nalcast's framed `/ws` and with
//! any raw one-NAL-per-message endpoint.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use nalcast::server::viewer::session::SERVER_LATENCY;
use nalcast_core::clock::wall_us;
use nalcast_core::protocol::{self, ServerMessage, FLAG_CATCH_UP, FLAG_KEYFRAME};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

mod live;
mod metrics;
mod proc_sampler;
mod stats;

use live::{JoinBound, Received};
use stats::Summary;

/// The margin the slow-link target adds to a join's best possible time to live.
const LIVE_BOUND_MARGIN_MS: f64 = 150.0;

/// Which wire format the endpoint speaks.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Dialect {
    /// nalcast's framed protocol (docs/protocol.md).
    Framed,
    /// One Annex-B NAL unit per binary message.
    Raw,
}

/// Load generator for WebSocket H.264 streaming servers.
#[derive(Parser, Debug, Clone)]
#[command(name = "nalcast-bench", version, about)]
struct Args {
    /// WebSocket URL, e.g. ws://127.0.0.1:8000/ws or ws://127.0.0.1:9000/.
    #[arg(long)]
    url: String,
    /// Wire format of the endpoint.
    #[arg(long, value_enum, default_value = "framed")]
    dialect: Dialect,
    /// Number of viewers that read normally.
    #[arg(long, default_value_t = 1)]
    viewers: usize,
    /// Number of extra viewers that stop reading (small receive buffer).
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// How long each viewer stays, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Spread viewer connections over this many seconds (random join points).
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Viewers join one after another, each alone: viewer i connects at
    /// i × (duration + ramp) plus its random point within the ramp.
    #[arg(long)]
    sequential: bool,
    /// A viewer is live once every frame from then on arrives within this many
    /// milliseconds of its capture (framed dialect).
    #[arg(long, value_name = "MS", default_value_t = 100.0)]
    live_within_ms: f64,
    /// ...and that stretch lasted at least this long, to the last frame received, so
    /// a viewer that got only its last few frames in time before the end is not live.
    #[arg(long, value_name = "MS", default_value_t = 1000.0)]
    live_hold_ms: f64,
    /// The rate, Mbit/s, of the shaped loopback the viewers and the server share
    /// (scripts/slow-link.sh): judge each join's time to live against min(its GOP's
    /// bytes so far / the link's spare rate, time to the next keyframe) + 150 ms. The
    /// spare rate is the link's TCP goodput (93.6 % of it: headers, and ACKs through
    /// the same shaper) less the stream's rate measured over whole GOPs.
    #[arg(long, value_name = "MBIT")]
    link_mbit: Option<f64>,
    /// Put every access unit each viewer received (arrival, capture-to-arrival,
    /// size, flags) into the JSON, for a closer look at joins.
    #[arg(long)]
    frame_log: bool,
    /// Source frame rate, to judge each viewer's frame rate against.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Server process id, to sample its CPU and memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Write the full results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A label for the scenario in the summary.
    #[arg(long, default_value = "run")]
    name: String,
    /// Instead of measuring, record what one viewer receives to this file (raw dialect: an Annex-B clip).
    #[arg(long)]
    record: Option<PathBuf>,
    /// nalcast's /metrics URL, to report the server-added delay it measured during the run.
    #[arg(long)]
    metrics: Option<String>,
    /// For wss:// and https:// URLs: trust exactly this certificate (PEM), e.g. the
    /// one nalcast made in DATA_DIR/tls/self-signed.crt.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

/// What one viewer saw.
#[derive(Debug, Default, Serialize, Clone)]
pub struct ViewerResult {
    /// When the viewer started connecting, seconds after the first viewer's schedule began.
    pub joined_at_s: f64,
    /// TCP connect to first decodable frame (SPS+PPS+IDR), ms.
    pub ttff_ms: Option<f64>,
    /// TCP connect to the first frame from which every later one arrived within
    /// `--live-within-ms` of its capture (framed dialect); `None`: never.
    pub live_after_ms: Option<f64>,
    /// What the join could have achieved (with `--link-mbit`).
    pub live_bound: Option<JoinBound>,
    /// Whether `live_after_ms` met `live_bound` (never live: no).
    pub live_in_bound: Option<bool>,
    /// The last frame later than `--live-within-ms`: [arrival ms, capture-to-arrival
    /// ms] (a missing frame's is infinite: null).
    pub last_late: Option<[f64; 2]>,
    /// Every access unit received (with `--frame-log`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frame_log: Vec<Received>,
    /// Frames received.
    pub frames: u64,
    /// Frames received after the first decodable one, per second.
    pub fps: f64,
    /// Longest wait between two frames, ms.
    pub max_gap_ms: f64,
    /// Bytes received.
    pub bytes: u64,
    /// Frames the server reported skipped or that were missing from the sequence.
    pub lost: u64,
    /// Capture-to-arrival delays of live frames, ms (framed protocol only).
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
    /// Why the viewer ended early, if it did.
    pub error: Option<String>,
}

/// How a viewer judges when it is live.
#[derive(Clone, Copy, Debug)]
struct LiveOpts {
    within_ms: f64,
    hold_ms: f64,
    /// TCP payload rate of a shaped link, bit/s.
    goodput_bps: Option<f64>,
    /// Keep what was received in the result.
    frame_log: bool,
}

struct Tracker {
    start: Instant,
    start_wall_us: u64,
    dialect: Dialect,
    live: LiveOpts,
    received: Vec<Received>,
    result: ViewerResult,
    first_at: Option<Instant>,
    last_frame_at: Option<Instant>,
    last_seq: Option<u32>,
    raw_seen: [bool; 3],
}

impl Tracker {
    fn new(start: Instant, dialect: Dialect, live: LiveOpts) -> Self {
        Tracker {
            start,
            start_wall_us: wall_us(),
            dialect,
            live,
            received: Vec::new(),
            result: ViewerResult::default(),
            first_at: None,
            last_frame_at: None,
            last_seq: None,
            raw_seen: [false; 3],
        }
    }

    fn frame(&mut self, now: Instant) {
        if let Some(prev) = self.last_frame_at {
            let gap = now.duration_since(prev).as_secs_f64() * 1000.0;
            self.result.max_gap_ms = self.result.max_gap_ms.max(gap);
        }
        self.last_frame_at = Some(now);
        self.result.frames += 1;
    }

    fn decodable(&mut self, now: Instant) {
        if self.first_at.is_none() {
            self.first_at = Some(now);
            self.result.ttff_ms = Some(now.duration_since(self.start).as_secs_f64() * 1000.0);
        }
    }

    fn on_message(&mut self, msg: &Bytes, now: Instant) -> anyhow::Result<()> {
        self.result.bytes += msg.len() as u64;
        match self.dialect {
            Dialect::Framed => match protocol::decode(msg)? {
                ServerMessage::AccessUnit {
                    flags,
                    seq,
                    capture_us,
                    ..
                } => {
                    if flags & FLAG_KEYFRAME != 0 {
                        self.decodable(now);
                    }
                    if self.first_at.is_none() {
                        return Ok(());
                    }
                    let missing = self
                        .last_seq
                        .map_or(0, |prev| seq.wrapping_sub(prev).saturating_sub(1));
                    self.result.lost += u64::from(missing);
                    self.last_seq = Some(seq);
                    self.frame(now);
                    let delay = wall_us().saturating_sub(capture_us) as f64 / 1000.0;
                    if flags & FLAG_CATCH_UP == 0 {
                        self.result.latencies_ms.push(delay);
                    }
                    self.received.push(Received {
                        at_ms: now.duration_since(self.start).as_secs_f64() * 1000.0,
                        latency_ms: delay,
                        seq,
                        capture_us,
                        bytes: msg.len() as u64 + live::ws_header_len(msg.len()),
                        keyframe: flags & FLAG_KEYFRAME != 0,
                        catch_up: flags & FLAG_CATCH_UP != 0,
                        missing_before: missing,
                    });
                }
                ServerMessage::Skipped(_) => {
                    // Counted through the sequence gap when the stream resumes.
                }
                _ => {}
            },
            Dialect::Raw => {
                let nal_type = msg.get(4).map(|b| b & 0x1f).unwrap_or(0);
                match nal_type {
                    7 => self.raw_seen[0] = true,
                    8 => self.raw_seen[1] = true,
                    5 => {
                        if self.raw_seen[0] && self.raw_seen[1] {
                            self.decodable(now);
                        }
                        // Count a frame per first slice (first_mb_in_slice == 0 starts with bit 1).
                        if msg.get(5).is_some_and(|b| b & 0x80 != 0) && self.first_at.is_some() {
                            self.frame(now);
                        }
                    }
                    1 if self.first_at.is_some() && msg.get(5).is_some_and(|b| b & 0x80 != 0) => {
                        self.frame(now)
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, end: Instant) -> ViewerResult {
        if let Some(first) = self.first_at {
            let secs = end.duration_since(first).as_secs_f64();
            if secs > 0.0 {
                self.result.fps = self.result.frames.saturating_sub(1) as f64 / secs;
            }
        }
        if self.dialect == Dialect::Framed {
            let arrivals = live::arrivals(&self.received);
            let live_after = live::live_after(&arrivals, self.live.within_ms, self.live.hold_ms);
            self.result.live_after_ms = live_after;
            self.result.last_late =
                live::last_late(&arrivals, self.live.within_ms).map(|(at, late)| [at, late]);
            if let Some(goodput) = self.live.goodput_bps {
                let bound = live::join_bound(
                    self.start_wall_us,
                    &self.received,
                    goodput,
                    LIVE_BOUND_MARGIN_MS,
                );
                self.result.live_in_bound = bound
                    .as_ref()
                    .map(|b| live_after.is_some_and(|t| t <= b.bound_ms));
                self.result.live_bound = bound;
            }
            if self.live.frame_log {
                self.result.frame_log = self.received;
            }
        }
        self.result
    }
}

async fn run_viewer(
    url: String,
    tls: Option<tokio_rustls::TlsConnector>,
    dialect: Dialect,
    duration: Duration,
    live: LiveOpts,
    run_start: Instant,
) -> ViewerResult {
    let start = Instant::now();
    let mut tracker = Tracker::new(start, dialect, live);
    tracker.result.joined_at_s = start.duration_since(run_start).as_secs_f64();
    let connected = match &tls {
        None => tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        .map(|r| {
            r.map(|(ws, _)| Viewer::Plain(Box::new(ws)))
                .map_err(|e| e.to_string())
        }),
        Some(tls) => tokio::time::timeout(Duration::from_secs(10), wss_connect(&url, tls))
            .await
            .map(|r| {
                r.map(|ws| Viewer::Tls(Box::new(ws)))
                    .map_err(|e| format!("{e:#}"))
            }),
    };
    match connected {
        Ok(Ok(Viewer::Plain(ws))) => watch(*ws, &mut tracker, start + duration).await,
        Ok(Ok(Viewer::Tls(ws))) => watch(*ws, &mut tracker, start + duration).await,
        Ok(Err(e)) => {
            tracker.result.error = Some(format!("connect: {e}"));
            return tracker.result;
        }
        Err(_) => {
            tracker.result.error = Some("connect timed out".into());
            return tracker.result;
        }
    }
    tracker.finish(Instant::now())
}

/// A viewer's connection: plain `ws://` or `wss://`.
enum Viewer {
    Plain(Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>),
    Tls(Box<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// A TLS client that trusts exactly the certificate in `pem` (the server's
/// self-signed one, pinned): what a browser does once the user accepted it.
fn pinned_tls(pem: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pem)
        .with_context(|| format!("cannot read the certificate {}", pem.display()))?
    {
        roots
            .add(cert.with_context(|| format!("bad PEM in {}", pem.display()))?)
            .context("the certificate cannot be trusted")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// The HOST:PORT at the start of a URL without its scheme, and its first address.
async fn resolve_authority(rest: &str) -> anyhow::Result<(&str, SocketAddr)> {
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .context("cannot resolve host")?;
    Ok((authority, addr))
}

/// Opens a `wss://` URL over a TLS connection checked against the pinned certificate.
async fn wss_connect(
    url: &str,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>
{
    let rest = url
        .strip_prefix("wss://")
        .context("--ca is for wss:// URLs")?;
    let (authority, addr) = resolve_authority(rest).await?;
    let name = metrics::tls_name(authority)?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// Reads a viewer's messages until `end` into `tracker`.
async fn watch<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    tracker: &mut Tracker,
    end: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match tokio::time::timeout(end - now, ws.next()).await {
            Err(_) => break,
            Ok(None) => {
                tracker.result.error = Some("server closed the connection".into());
                break;
            }
            Ok(Some(Err(e))) => {
                tracker.result.error = Some(e.to_string());
                break;
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Err(e) = tracker.on_message(&b, Instant::now()) {
                    tracker.result.error = Some(format!("bad message: {e}"));
                    break;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                tracker.result.error = Some(format!("closed by server: {frame:?}"));
                break;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    let _ = ws.close(None).await;
}

/// Writes every binary message received for `duration` to `path` as it arrives
/// (`-` for stdout), so a recording of `/ws/raw` is also a live Annex-B stream.
async fn record(url: &str, path: &std::path::Path, duration: Duration) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect")?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if path.as_os_str() == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?,
        )
    };
    let mut total = 0usize;
    let end = Instant::now() + duration;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                out.write_all(&b).await?;
                out.flush().await?;
                total += b.len();
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("recording failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    eprintln!("recorded {total} bytes to {}", path.display());
    Ok(())
}

/// A viewer that handshakes and then never reads.
async fn stalled_viewer(url: String, duration: Duration) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("ws://")
        .context("stalled viewers need a ws:// URL")?;
    let (_, addr) = resolve_authority(rest).await?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(4096)?;
    let stream: TcpStream = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream).await?;
    tokio::time::sleep(duration).await;
    drop(ws);
    Ok(())
}

/// Spreads `n` joins over `ramp`, deterministic but irregular (golden-ratio
/// sequence); join i within a slot of its own that starts at i × `slot` (zero: all
/// joins within the same ramp).
fn join_offsets(n: usize, ramp: Duration, slot: Duration) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            slot.saturating_mul(i as u32) + ramp.mul_f64((i as f64 * 0.618_033_988_75).fract())
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.duration.is_finite()
        && args.duration > 0.0
        && args.ramp.is_finite()
        && args.ramp >= 0.0)
    {
        bail!("--duration must be > 0 and --ramp >= 0");
    }
    if !(args.live_within_ms >= 0.0 && args.live_hold_ms >= 0.0) {
        bail!("--live-within-ms and --live-hold-ms must be >= 0");
    }
    if args.link_mbit.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--link-mbit must be > 0");
    }
    let live = LiveOpts {
        within_ms: args.live_within_ms,
        hold_ms: args.live_hold_ms,
        goodput_bps: args.link_mbit.map(|r| r * 1e6 * live::TCP_GOODPUT_SHARE),
        frame_log: args.frame_log,
    };
    let duration = Duration::from_secs_f64(args.duration);
    let ramp = Duration::from_secs_f64(args.ramp);
    let slot = if args.sequential {
        duration + ramp
    } else {
        Duration::ZERO
    };
    let offsets = join_offsets(args.viewers, ramp, slot);
    // Until the last viewer has joined (the whole run, less one viewer's stay).
    let joins_until = offsets.iter().copied().max().unwrap_or_default().max(ramp);
    if let Some(path) = &args.record {
        return record(&args.url, path, duration).await;
    }
    let tls = args.ca.as_deref().map(pinned_tls).transpose()?;
    if args.url.starts_with("wss://") && tls.is_none() {
        bail!("a wss:// URL needs --ca PEM (the server's certificate)");
    }
    let metrics_before = match &args.metrics {
        Some(url) => Some(metrics::fetch_metrics(url, tls.as_ref()).await?),
        None => None,
    };
    // The server's histogram again once every viewer has joined and caught up
    // (a quarter into the run, at least 2 s after the last join), for steady-state
    // figures without the joins' catch-up bursts.
    let steady_at = joins_until + Duration::from_secs(2).max(duration / 4);
    let metrics_steady = match (&args.metrics, steady_at < joins_until + duration) {
        (Some(url), true) => {
            let (url, tls) = (url.clone(), tls.clone());
            Some(tokio::spawn(async move {
                tokio::time::sleep(steady_at).await;
                metrics::fetch_metrics(&url, tls.as_ref()).await
            }))
        }
        _ => None,
    };
    let sampler = args
        .pid
        .map(|pid| proc_sampler::start(pid, Duration::from_millis(500)));
    let mut stalled = Vec::new();
    for _ in 0..args.stalled {
        stalled.push(tokio::spawn(stalled_viewer(
            args.url.clone(),
            duration + joins_until,
        )));
    }
    let mut viewers = Vec::new();
    let run_start = Instant::now();
    for offset in offsets {
        let (url, dialect, tls) = (args.url.clone(), args.dialect, tls.clone());
        viewers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            run_viewer(url, tls, dialect, duration, live, run_start).await
        }));
    }
    let mut results = Vec::new();
    for v in viewers {
        results.push(v.await.context("viewer task")?);
    }
    let mut stalled_errors = 0;
    for s in stalled {
        if !matches!(s.await, Ok(Ok(()))) {
            stalled_errors += 1;
        }
    }
    let samples = match sampler {
        Some(s) => s.stop().await,
        None => Vec::new(),
    };
    let mut summary = Summary::new(&args.name, args.fps, &results, &samples, stalled_errors);
    if let (Some(url), Some(before)) = (&args.metrics, &metrics_before) {
        let latency = |text: &str| metrics::parse_histogram(text, SERVER_LATENCY.name);
        let after = latency(&metrics::fetch_metrics(url, tls.as_ref()).await?);
        let before = latency(before);
        let steady = match metrics_steady {
            Some(task) => latency(&task.await.context("metrics task")??),
            None => before.clone(),
        };
        summary.server_latency_ms = [
            metrics::percentile_ms(&steady, &after, 50.0),
            metrics::percentile_ms(&steady, &after, 99.0),
            metrics::percentile_ms(&before, &after, 99.0),
        ];
        summary.server_within_1ms_pct = metrics::share_within_ms(&steady, &after, 1.0);
    }
    println!("{}", summary.markdown());
    if let (Some(rate), Some([met, judged])) = (args.link_mbit, summary.live_in_bound) {
        println!(
            "live within min(GOP bytes so far / spare rate, next keyframe) + {LIVE_BOUND_MARGIN_MS} ms on {rate} Mbit/s: {met} of {judged} joins"
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "name": args.name,
            "url": args.url,
            "dialect": args.dialect,
            "viewers": args.viewers,
            "stalled": args.stalled,
            "duration_s": args.duration,
            "summary": summary,
            "samples": samples,
            "per_viewer": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
