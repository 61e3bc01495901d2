//! WebRTC (WHEP) viewers for load tests. Each viewer is a str0m `Rtc` of its own,
//! the offering (ICE-controlling) side, with one UDP socket: it POSTs a recvonly
//! H.264 offer carrying its host candidate, takes the answer, checks the server's
//! candidates, sets up DTLS-SRTP and receives the stream as frames (str0m
//! depacketizes). Viewers join one every `--ramp-ms`; once every viewer has its
//! first frame or has failed, the tool measures `--duration` seconds, DELETEs every
//! session, listens `--linger-ms` more for RTP the server still sends, and prints a
//! markdown table like nalcast-bench's (the whole results as JSON with `--json`).
//! It exits non-zero when a viewer did not connect or got no frames.
//!
//!   nalcast-whep-load --url http://127.0.0.1:8000/whep --viewers 100 --duration 20

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, LOCATION};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use str0m::change::SdpAnswer;
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaData, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, RtcConfig};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest read: a run of datagrams joined by GRO (each about 1150 bytes).
const MAX_DATAGRAM: usize = 65_536;
/// RTP arriving this long after the DELETE was answered counts as sent after it.
const DELETE_GRACE: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
#[command(
    name = "nalcast-whep-load",
    version,
    about = "WHEP load generator: N str0m WebRTC viewers, connect and first-frame times, frame rates, gaps"
)]
struct Args {
    /// The WHEP endpoint, http://HOST:PORT/whep or http://HOST:PORT/streams/NAME/whep.
    #[arg(long)]
    url: String,
    /// Viewers.
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Seconds to measure, from when every viewer has its first frame (or failed, or
    /// --connect-timeout passed).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// A new viewer every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    ramp_ms: u64,
    /// A viewer not connected (ICE and DTLS) this many seconds after its POST has failed.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// After the DELETE, listen this long for RTP the server should no longer send.
    #[arg(long, default_value_t = 1000)]
    linger_ms: u64,
    /// Each viewer socket's receive buffer, bytes (SO_RCVBUF, capped by the kernel's
    /// net.core.rmem_max; 0: the system's default). One thread serving hundreds of
    /// viewers reads each socket later than a viewer with a CPU of its own would, so
    /// a larger buffer keeps the load generator's own lateness from losing packets.
    #[arg(long, default_value_t = 0)]
    recv_buffer: usize,
    /// The source's frame rate, to count from RTP times the frames that never came.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Receive with UDP GRO off (each datagram on its own). On: a run of the server's
    /// datagrams sent with UDP segmentation stays one buffer to the viewer's socket,
    /// split here. On loopback the kernel does the receiving side's work in the
    /// sender's time, so without GRO the server's CPU includes its viewers' kernel
    /// receiving, datagram by datagram (a TCP viewer's receiving is of 64 KiB
    /// segments on loopback).
    #[arg(long)]
    no_gro: bool,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Server process id, for its CPU over the measured window (from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Write the summary and every viewer's results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A label for the scenario in the table.
    #[arg(long, default_value = "whep")]
    name: String,
}

/// What every viewer shares.
struct Ctx {
    /// HOST:PORT of the HTTP server.
    authority: String,
    /// The offer's path.
    path: String,
    /// The address the viewers' sockets bind to (the one the server is reached from).
    local_ip: IpAddr,
    /// One DTLS certificate for all viewers: making one per viewer is not what is measured.
    cert: DtlsCert,
    connect_timeout: Duration,
    linger: Duration,
    /// SO_RCVBUF of each viewer's socket (0: the default).
    recv_buffer: usize,
    /// UDP GRO on the viewers' sockets.
    gro: bool,
    /// The source's frame rate.
    fps: f64,
}

/// The measured window, once every viewer is under way or has failed.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Tells the main task a viewer is under way (its first frame came, or
/// `--connect-timeout` passed) or failed, once (at the latest when its task ends).
struct Settle(Option<mpsc::Sender<()>>);

impl Settle {
    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.done();
    }
}

/// What one viewer saw.
#[derive(Debug, Default, Serialize)]
struct ViewerResult {
    /// Join order.
    index: usize,
    /// POST start to str0m's Connected (ICE and DTLS up), ms.
    connect_ms: Option<f64>,
    /// POST start to the first frame, ms.
    first_frame_ms: Option<f64>,
    /// Whether the first frame held an IDR picture.
    first_frame_keyframe: Option<bool>,
    /// Frames (access units) received over the whole session.
    frames: u64,
    /// Frame payload bytes over the whole session.
    bytes: u64,
    /// Frames received within the measured window.
    window_frames: u64,
    /// Frame payload bytes within the window.
    window_bytes: u64,
    /// UDP payload bytes within the window (RTP, RTCP, STUN, DTLS).
    window_datagram_bytes: u64,
    /// Frames with an IDR picture within the window.
    window_keyframes: u64,
    /// Longest wait for a frame within the window, ms (from the frame before).
    max_gap_ms: f64,
    /// Frames str0m marked not contiguous with the previous one (a gap it could
    /// not mend with NACKs).
    non_contiguous: u64,
    /// RTP sequence numbers skipped between consecutive frames.
    rtp_missing: u64,
    /// Frames missing by the RTP times of consecutive frames at `--fps`: the server
    /// skipped them, the source was late, or every packet of theirs was lost.
    time_skipped: u64,
    /// Errors str0m returned for a datagram or a timeout.
    input_errors: u64,
    /// HTTP status of the DELETE.
    delete_status: Option<u16>,
    /// The server said goodbye (DTLS close_notify): str0m's Closed event.
    server_closed: bool,
    /// DTLS datagrams (an alert: the goodbye) received after the DELETE was answered.
    dtls_after_delete: u64,
    /// RTP datagrams received more than 100 ms after the DELETE was answered.
    rtp_after_delete: u64,
    /// Why the viewer failed, if it did.
    error: Option<String>,
}

/// A viewer's connection state between events.
struct Viewer {
    result: ViewerResult,
    started: Instant,
    window: Option<Window>,
    last_frame_at: Option<Instant>,
    last_seq: Option<u64>,
    /// The last frame's RTP time, s.
    last_time: Option<f64>,
    /// The source's frame rate.
    fps: f64,
    disconnected: bool,
    /// The session's path, once the POST was answered, until it is DELETEd.
    session: Option<String>,
}

impl Viewer {
    fn event(&mut self, event: Event, settle: &mut Settle) {
        match event {
            Event::Connected => self.result.connect_ms = Some(ms(self.started.elapsed())),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.disconnected = true;
            }
            Event::Closed => self.result.server_closed = true,
            Event::MediaData(data) => {
                self.frame(&data, Instant::now());
                settle.done();
            }
            _ => {}
        }
    }

    fn frame(&mut self, data: &MediaData, now: Instant) {
        let r = &mut self.result;
        let keyframe = has_idr(&data.data);
        r.frames += 1;
        r.bytes += data.data.len() as u64;
        if r.first_frame_ms.is_none() {
            r.first_frame_ms = Some(ms(now.duration_since(self.started)));
            r.first_frame_keyframe = Some(keyframe);
        }
        if !data.contiguous {
            r.non_contiguous += 1;
        }
        let (first, last) = (**data.seq_range.start(), **data.seq_range.end());
        if let Some(prev) = self.last_seq {
            r.rtp_missing += first.saturating_sub(prev + 1);
        }
        self.last_seq = Some(self.last_seq.map_or(last, |p| p.max(last)));
        let time = data.time.numer() as f64 / f64::from(data.time.denom().max(1));
        if let Some(prev) = self.last_time {
            let frames = ((time - prev) * self.fps).round();
            if frames > 1.0 {
                r.time_skipped += frames as u64 - 1;
            }
        }
        self.last_time = Some(time);
        if self.window.is_some_and(|w| now >= w.start && now < w.end) {
            r.window_frames += 1;
            r.window_bytes += data.data.len() as u64;
            r.window_keyframes += u64::from(keyframe);
            if let Some(prev) = self.last_frame_at {
                r.max_gap_ms = r.max_gap_ms.max(ms(now.duration_since(prev)));
            }
        }
        self.last_frame_at = Some(now);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether an Annex-B access unit holds an IDR slice (NAL type 5).
fn has_idr(au: &[u8]) -> bool {
    au.windows(4)
        .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

/// An HTTP response.
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One HTTP/1.1 request on a connection of its own.
async fn http(authority: &str, method: Method, path: &str, sdp: Option<String>) -> Result<Reply> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority);
    if sdp.is_some() {
        req = req.header(CONTENT_TYPE, "application/sdp");
    }
    let req = req.body(Full::new(Bytes::from(sdp.unwrap_or_default())))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The path a Location names, relative to the offer's path.
fn resolve_location(authority: &str, offer_path: &str, location: &str) -> Result<String> {
    if location.starts_with('/') {
        return Ok(location.to_owned());
    }
    if let Some(rest) = location.strip_prefix("http://") {
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host != authority {
            bail!("the session is on another server: {location}");
        }
        return Ok(format!("/{path}"));
    }
    let dir = &offer_path[..offer_path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{dir}{location}"))
}

/// Runs one viewer from its offer to after its DELETE.
async fn run_viewer(
    ctx: Arc<Ctx>,
    index: usize,
    window_rx: watch::Receiver<Option<Window>>,
    mut settle: Settle,
) -> ViewerResult {
    let mut viewer = Viewer {
        result: ViewerResult {
            index,
            ..ViewerResult::default()
        },
        started: Instant::now(),
        window: None,
        last_frame_at: None,
        last_seq: None,
        last_time: None,
        fps: ctx.fps,
        disconnected: false,
        session: None,
    };
    if let Err(e) = drive(&ctx, &mut viewer, window_rx, &mut settle).await {
        viewer.result.error = Some(format!("{e:#}"));
        // A viewer that gives up still ends its session, as a page would.
        if let Some(path) = viewer.session.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                http(&ctx.authority, Method::DELETE, &path, None),
            )
            .await;
        }
    }
    viewer.result
}

async fn drive(
    ctx: &Ctx,
    viewer: &mut Viewer,
    mut window_rx: watch::Receiver<Option<Window>>,
    settle: &mut Settle,
) -> Result<()> {
    let socket = bind_udp(SocketAddr::new(ctx.local_ip, 0), ctx.recv_buffer, ctx.gro)
        .context("bind a UDP socket")?;
    let local = socket.local_addr()?;
    let mut rtc = RtcConfig::new()
        .set_dtls_cert(ctx.cert.clone())
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host(local, "udp").map_err(|e| anyhow!("host candidate {local}: {e}"))?,
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("str0m made no offer")?;

    viewer.started = Instant::now();
    let posted = tokio::time::timeout(
        ctx.connect_timeout,
        http(
            &ctx.authority,
            Method::POST,
            &ctx.path,
            Some(offer.to_sdp_string()),
        ),
    )
    .await
    .context("POST timed out")?
    .context("POST")?;
    let Reply {
        status,
        location,
        body,
    } = posted;
    if status != 201 {
        bail!("POST: HTTP {status}: {}", body.trim_end());
    }
    let location = location.context("201 without Location")?;
    let session = resolve_location(&ctx.authority, &ctx.path, &location)?;
    viewer.session = Some(session.clone());
    let answer = SdpAnswer::from_sdp_string(&body).context("the answer is not SDP")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .context("accept the answer")?;

    let connect_deadline = viewer.started + ctx.connect_timeout;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut delete: Option<JoinHandle<Result<Reply>>> = None;
    let mut deleted_at: Option<Instant> = None;
    loop {
        // Everything str0m has to send and tell, up to its next timeout.
        let mut wake = Instant::now() + Duration::from_secs(3600);
        while rtc.is_alive() {
            match rtc.poll_output().context("str0m")? {
                Output::Timeout(t) => {
                    wake = t;
                    break;
                }
                Output::Transmit(t) => {
                    // A full socket buffer drops it, as the network would.
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => viewer.event(e, settle),
            }
        }
        let now = Instant::now();
        if !rtc.is_alive() && delete.is_none() && deleted_at.is_none() {
            bail!("the server closed the connection");
        }
        if let Some(at) = deleted_at {
            wake = wake.min(at + ctx.linger);
        }
        if viewer.disconnected && delete.is_none() && deleted_at.is_none() {
            bail!("ICE disconnected");
        }
        if settle.0.is_some() {
            if now < connect_deadline {
                wake = wake.min(connect_deadline);
            } else if viewer.result.connect_ms.is_none() {
                bail!(
                    "not connected {} s after the POST",
                    ctx.connect_timeout.as_secs_f64()
                );
            } else {
                // Connected but no frame yet: the run need not wait for it.
                settle.done();
            }
        }
        match (viewer.window, &delete, deleted_at) {
            (Some(w), None, None) if now >= w.end => {
                viewer.session = None;
                let (authority, path) = (ctx.authority.clone(), session.clone());
                delete = Some(tokio::spawn(async move {
                    http(&authority, Method::DELETE, &path, None).await
                }));
            }
            (Some(w), None, None) => wake = wake.min(w.end),
            (_, _, Some(at)) if now >= at + ctx.linger => return Ok(()),
            _ => {}
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
        tokio::select! {
            received = recv_segments(&socket, &mut buf) => {
                // ICMP errors surface here on some systems: not the viewer's end.
                let Ok((n, source, segment)) = received else { continue };
                let now = Instant::now();
                for contents in buf[..n].chunks(segment.max(1)) {
                    if viewer.window.is_some_and(|w| now >= w.start && now < w.end) {
                        viewer.result.window_datagram_bytes += contents.len() as u64;
                    }
                    if let Some(at) = deleted_at {
                        // RTP/SRTP (RFC 7983: first byte 128..=191; RFC 5761: RTCP's
                        // second byte 192..=223).
                        let rtp = contents.first().is_some_and(|b| (128..=191).contains(b))
                            && contents.get(1).is_some_and(|pt| !(192..=223).contains(pt));
                        if rtp && now > at + DELETE_GRACE {
                            viewer.result.rtp_after_delete += 1;
                        }
                        if contents.first().is_some_and(|b| (20..=63).contains(b)) {
                            viewer.result.dtls_after_delete += 1;
                        }
                    }
                    if !rtc.is_alive() {
                        continue;
                    }
                    match Receive::new(Protocol::Udp, source, local, contents) {
                        Ok(r) => {
                            if rtc.handle_input(Input::Receive(now, r)).is_err() {
                                viewer.result.input_errors += 1;
                            }
                        }
                        Err(_) => viewer.result.input_errors += 1,
                    }
                }
            }
            _ = sleep => {
                if rtc.is_alive() && rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                    viewer.result.input_errors += 1;
                }
            }
            changed = window_rx.changed(), if viewer.window.is_none() => {
                if changed.is_err() {
                    bail!("the run ended");
                }
                viewer.window = *window_rx.borrow();
            }
            done = async {
                match delete.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                delete = None;
                deleted_at = Some(Instant::now());
                match done {
                    Ok(Ok(reply)) => viewer.result.delete_status = Some(reply.status),
                    Ok(Err(e)) => viewer.result.error = Some(format!("DELETE: {e:#}")),
                    Err(e) => viewer.result.error = Some(format!("DELETE task: {e}")),
                }
            }
        }
    }
}

/// CPU ticks (user + system, 1/100 s) of a process, from /proc.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's CPU ticks: (busy, all), every core and process (steal counts as busy).
fn host_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((all - idle, all))
}

/// The share of the machine's CPU that was busy between two readings, %.
fn host_busy_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, a0), (b1, a1)) = (before?, after?);
    let all = a1.saturating_sub(a0);
    (all > 0).then(|| b1.saturating_sub(b0) as f64 / all as f64 * 100.0)
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU in % of one core between two tick readings `secs` apart.
fn cpu_pct(before: Option<u64>, after: Option<u64>, secs: f64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (secs > 0.0).then(|| a.saturating_sub(b) as f64 / 100.0 / secs * 100.0)
}

/// Percentile (nearest rank) of unsorted values; `None` when empty.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank - 1).copied()
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    viewers: usize,
    /// Viewers that connected (ICE and DTLS).
    connected: usize,
    /// Viewers that did not.
    failed: usize,
    /// Connected viewers that got no frame.
    no_frames: usize,
    /// Connected viewers that failed later (ICE disconnected, DELETE failed...).
    errors_after_connect: usize,
    /// Measured window, s.
    window_s: f64,
    /// POST to connected, ms: p50, p95, max.
    connect_ms: [Option<f64>; 3],
    /// POST to first frame, ms: p50, p95, max.
    first_frame_ms: [Option<f64>; 3],
    /// Viewers whose first frame was not an IDR picture.
    first_not_keyframe: usize,
    /// Frames per viewer over its whole session: min, median.
    frames: [Option<f64>; 2],
    /// Frames per second per viewer within the window: min, p5, median.
    fps: [Option<f64>; 3],
    /// Longest wait between frames within the window, ms: p95 over viewers, max.
    max_gap_ms: [Option<f64>; 2],
    /// Frames str0m marked not contiguous, all viewers.
    non_contiguous: u64,
    /// Viewers with at least one such frame.
    viewers_non_contiguous: usize,
    /// RTP sequence numbers skipped between frames, all viewers.
    rtp_missing: u64,
    /// Frames missing by RTP time (not sent, or wholly lost), all viewers.
    time_skipped: u64,
    /// IDR frames per viewer within the window: median, max.
    keyframes: [Option<f64>; 2],
    /// Frame payload received within the window by all viewers, Mbit/s.
    media_mbit_s: f64,
    /// UDP payload received within the window by all viewers, Mbit/s.
    udp_mbit_s: f64,
    /// DELETEs answered 200.
    deleted: usize,
    /// RTP datagrams received over 100 ms after the DELETE was answered, all viewers.
    rtp_after_delete: u64,
    /// Viewers that got such datagrams.
    viewers_rtp_after_delete: usize,
    /// Viewers the server said goodbye to (DTLS close_notify), after the DELETE or before.
    server_closed: usize,
    /// DTLS datagrams received after the DELETEs were answered, all viewers.
    dtls_after_delete: u64,
    /// datagrams or timeouts str0m refused, all viewers.
    input_errors: u64,
    /// The load generator's CPU over the window, % of one core.
    load_cpu_pct: Option<f64>,
    /// The server's CPU over the window, % of one core (with --pid).
    server_cpu_pct: Option<f64>,
    /// The server's resident memory at the window's end, MiB (with --pid).
    server_rss_mib: Option<f64>,
    /// The whole machine's CPU busy over the window, % of all its cores: well above
    /// what the load generator and the server use, something else ran too.
    host_busy_pct: Option<f64>,
    /// The machine's cores.
    host_cores: usize,
}

impl Summary {
    fn new(name: &str, results: &[ViewerResult], window_s: f64) -> Summary {
        let connected: Vec<&ViewerResult> =
            results.iter().filter(|r| r.connect_ms.is_some()).collect();
        let connect: Vec<f64> = results.iter().filter_map(|r| r.connect_ms).collect();
        let first: Vec<f64> = results.iter().filter_map(|r| r.first_frame_ms).collect();
        let frames: Vec<f64> = connected.iter().map(|r| r.frames as f64).collect();
        let fps: Vec<f64> = connected
            .iter()
            .map(|r| r.window_frames as f64 / window_s.max(1e-9))
            .collect();
        let gaps: Vec<f64> = connected.iter().map(|r| r.max_gap_ms).collect();
        let keyframes: Vec<f64> = connected
            .iter()
            .map(|r| r.window_keyframes as f64)
            .collect();
        let mbit = |bytes: u64| bytes as f64 * 8.0 / 1e6 / window_s.max(1e-9);
        let three = |v: &[f64]| {
            [
                percentile(v, 50.0),
                percentile(v, 95.0),
                percentile(v, 100.0),
            ]
        };
        Summary {
            name: name.to_owned(),
            viewers: results.len(),
            connected: connected.len(),
            failed: results.len() - connected.len(),
            no_frames: connected.iter().filter(|r| r.frames == 0).count(),
            errors_after_connect: connected.iter().filter(|r| r.error.is_some()).count(),
            window_s,
            connect_ms: three(&connect),
            first_frame_ms: three(&first),
            first_not_keyframe: results
                .iter()
                .filter(|r| r.first_frame_keyframe == Some(false))
                .count(),
            frames: [percentile(&frames, 0.0), percentile(&frames, 50.0)],
            fps: [
                percentile(&fps, 0.0),
                percentile(&fps, 5.0),
                percentile(&fps, 50.0),
            ],
            max_gap_ms: [percentile(&gaps, 95.0), percentile(&gaps, 100.0)],
            non_contiguous: results.iter().map(|r| r.non_contiguous).sum(),
            viewers_non_contiguous: results.iter().filter(|r| r.non_contiguous > 0).count(),
            rtp_missing: results.iter().map(|r| r.rtp_missing).sum(),
            time_skipped: results.iter().map(|r| r.time_skipped).sum(),
            keyframes: [percentile(&keyframes, 50.0), percentile(&keyframes, 100.0)],
            media_mbit_s: mbit(results.iter().map(|r| r.window_bytes).sum()),
            udp_mbit_s: mbit(results.iter().map(|r| r.window_datagram_bytes).sum()),
            deleted: results
                .iter()
                .filter(|r| r.delete_status == Some(200))
                .count(),
            rtp_after_delete: results.iter().map(|r| r.rtp_after_delete).sum(),
            viewers_rtp_after_delete: results.iter().filter(|r| r.rtp_after_delete > 0).count(),
            server_closed: results.iter().filter(|r| r.server_closed).count(),
            dtls_after_delete: results.iter().map(|r| r.dtls_after_delete).sum(),
            input_errors: results.iter().map(|r| r.input_errors).sum(),
            load_cpu_pct: None,
            server_cpu_pct: None,
            server_rss_mib: None,
            host_busy_pct: None,
            host_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    fn markdown(&self) -> String {
        fn f(v: Option<f64>) -> String {
            v.map_or("-".into(), |x| format!("{x:.1}"))
        }
        fn f0(v: Option<f64>) -> String {
            v.map_or("-".into(), |x| format!("{x:.0}"))
        }
        format!(
            "| scenario | viewers | connected | failed | no frames | connect p50/p95/max ms | first frame p50/p95/max ms | first not IDR | frames/viewer min/median | fps min/p5/p50 | max gap p95/max ms | non-contiguous (viewers) | RTP seq missing | frames missing by RTP time | IDR/viewer p50/max | media/UDP Mbit/s | deleted | RTP after DELETE (viewers) | close_notify (DTLS after DELETE) | load CPU % | server CPU % | server RSS MiB | host busy % of cores |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {}/{}/{} | {}/{}/{} | {} | {}/{} | {}/{}/{} | {}/{} | {} ({}) | {} | {} | {}/{} | {:.1}/{:.1} | {} | {} ({}) | {} ({}) | {} | {} | {} | {} of {} |",
            self.name, self.viewers, self.connected, self.failed, self.no_frames,
            f(self.connect_ms[0]), f(self.connect_ms[1]), f(self.connect_ms[2]),
            f(self.first_frame_ms[0]), f(self.first_frame_ms[1]), f(self.first_frame_ms[2]),
            self.first_not_keyframe,
            f0(self.frames[0]), f0(self.frames[1]),
            f(self.fps[0]), f(self.fps[1]), f(self.fps[2]),
            f0(self.max_gap_ms[0]), f0(self.max_gap_ms[1]),
            self.non_contiguous, self.viewers_non_contiguous,
            self.rtp_missing,
            self.time_skipped,
            f0(self.keyframes[0]), f0(self.keyframes[1]),
            self.media_mbit_s, self.udp_mbit_s,
            self.deleted,
            self.rtp_after_delete, self.viewers_rtp_after_delete,
            self.server_closed,
            self.dtls_after_delete,
            f(self.load_cpu_pct), f(self.server_cpu_pct), f(self.server_rss_mib),
            f(self.host_busy_pct), self.host_cores,
        )
    }
}

/// HOST:PORT and path of an http:// URL.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url must start with http://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        bail!("--url has no host");
    }
    Ok((authority.to_owned(), format!("/{path}")))
}

/// A non-blocking UDP socket bound to `addr`, with a receive buffer of `recv_buffer`
/// bytes unless 0, and UDP GRO if `gro` (where the kernel has it).
fn bind_udp(addr: SocketAddr, recv_buffer: usize, gro: bool) -> Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    if gro {
        let _ =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::UdpGroSegment, &true);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Receives into `buf`: the bytes, the sender, and the size of each datagram in
/// them (one datagram unless GRO joined a run).
async fn recv_segments(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, usize)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    socket
        .async_io(tokio::io::Interest::READABLE, || {
            let mut cmsg = nix::cmsg_space!(i32);
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(std::io::Error::from)?;
            let n = msg.bytes;
            let segment = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                    _ => None,
                })
                .unwrap_or(n);
            let source = msg
                .address
                .and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                        .or_else(|| {
                            a.as_sockaddr_in6()
                                .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                        })
                })
                .ok_or_else(|| std::io::Error::other("a datagram without its sender"))?;
            Ok((n, source, segment))
        })
        .await
}

/// The local address packets to `server` leave from: the viewers' candidate.
fn local_ip_towards(server: SocketAddr) -> Result<IpAddr> {
    let unspecified: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(unspecified)?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

async fn run(args: Args) -> Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be > 0");
    }
    if !(args.connect_timeout.is_finite() && args.connect_timeout > 0.0) {
        bail!("--connect-timeout must be > 0");
    }
    let (authority, path) = split_url(&args.url)?;
    let server = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("resolve {authority}"))?
        .next()
        .context("the host has no address")?;
    let local_ip = local_ip_towards(server).context("no route to the server")?;
    str0m::crypto::from_feature_flags().install_process_default();
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .context("cannot make a DTLS certificate")?;
    let ctx = Arc::new(Ctx {
        authority,
        path,
        local_ip,
        cert,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        linger: Duration::from_millis(args.linger_ms),
        recv_buffer: args.recv_buffer,
        gro: !args.no_gro,
        fps: args.fps,
    });
    let (window_tx, window_rx) = watch::channel(None);
    let (settle_tx, mut settle_rx) = mpsc::channel(args.viewers.max(1));
    let ramp_start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(args.viewers);
    for index in 0..args.viewers {
        let (ctx, window_rx) = (ctx.clone(), window_rx.clone());
        let settle = Settle(Some(settle_tx.clone()));
        let at = ramp_start + Duration::from_millis(args.ramp_ms).saturating_mul(index as u32);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            run_viewer(ctx, index, window_rx, settle).await
        }));
    }
    drop((settle_tx, window_rx));
    let mut settled = 0;
    while settled < args.viewers && settle_rx.recv().await.is_some() {
        settled += 1;
    }
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let window = Window {
        start,
        end: start + duration,
    };
    let server_pid = args.pid.map(|p| p.to_string());
    let load_before = cpu_ticks("self");
    let host_before = host_ticks();
    let server_before = server_pid.as_deref().and_then(cpu_ticks);
    eprintln!(
        "{settled} of {} viewers settled after {:.1} s; measuring {} s",
        args.viewers,
        ramp_start.elapsed().as_secs_f64(),
        args.duration
    );
    let _ = window_tx.send(Some(window));
    tokio::time::sleep_until(tokio::time::Instant::from_std(window.end)).await;
    let secs = start.elapsed().as_secs_f64();
    let load_cpu = cpu_pct(load_before, cpu_ticks("self"), secs);
    let server_cpu = cpu_pct(
        server_before,
        server_pid.as_deref().and_then(cpu_ticks),
        secs,
    );
    let server_rss = server_pid.as_deref().and_then(rss_mib);
    let host_busy = host_busy_pct(host_before, host_ticks());
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.context("viewer task")?);
    }
    drop(window_tx);
    let mut summary = Summary::new(&args.name, &results, duration.as_secs_f64());
    summary.load_cpu_pct = load_cpu;
    summary.server_cpu_pct = server_cpu;
    summary.server_rss_mib = server_rss;
    summary.host_busy_pct = host_busy;
    println!("{}", summary.markdown());
    let mut errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("viewer {}: {e}", r.index)))
        .collect();
    errors.extend(
        results
            .iter()
            .filter(|r| r.delete_status.is_some_and(|s| s != 200))
            .map(|r| format!("viewer {}: DELETE: HTTP {:?}", r.index, r.delete_status)),
    );
    for e in errors.iter().take(10) {
        eprintln!("{e}");
    }
    if errors.len() > 10 {
        eprintln!("... and {} more", errors.len() - 10);
    }
    if summary
        .load_cpu_pct
        .is_some_and(|c| c > 90.0 * args.threads as f64)
    {
        eprintln!(
            "warning: the load generator used {:.0} % CPU on {} thread(s): it may be what limits the figures (--threads)",
            summary.load_cpu_pct.unwrap_or_default(),
            args.threads
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "url": args.url,
            "viewers": args.viewers,
            "duration_s": args.duration,
            "ramp_ms": args.ramp_ms,
            "summary": summary,
            "per_viewer": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // A verdict, not an error: no backtrace.
    if summary.failed > 0 || summary.no_frames > 0 {
        eprintln!(
            "FAILED: {} viewer(s) did not connect, {} connected without a frame",
            summary.failed, summary.no_frames
        );
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = args.threads.max(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()?.block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_urls_and_locations() {
        let (a, p) = split_url("http://127.0.0.1:8000/whep").expect("url");
        assert_eq!((a.as_str(), p.as_str()), ("127.0.0.1:8000", "/whep"));
        assert!(split_url("https://x/whep").is_err());
        assert_eq!(
            resolve_location("h:1", "/whep", "/streams/main/whep/ab").expect("abs"),
            "/streams/main/whep/ab"
        );
        assert_eq!(
            resolve_location("h:1", "/streams/a/whep", "whep/ab").expect("rel"),
            "/streams/a/whep/ab"
        );
        assert_eq!(
            resolve_location("h:1", "/whep", "http://h:1/whep/ab").expect("url"),
            "/whep/ab"
        );
        assert!(resolve_location("h:1", "/whep", "http://other:1/x").is_err());
    }

    #[test]
    fn finds_idr_pictures() {
        assert!(has_idr(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 9]));
        assert!(!has_idr(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.0), Some(1.0));
    }
}
