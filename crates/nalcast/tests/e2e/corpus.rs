//! The corpus test (issues 13 and 26): streams as real cameras make them, played
//! through the file and exec sources (or a writer that pauses or dies inside
//! frames), watched through every endpoint (/ws, /ws/raw, the legacy port,
//! /ws/fmp4) by viewers that join at ten points of the GOP and by one that stalls
//! and resumes; each capture is checked for what a viewer would see (see
//! corpus/check.rs): decodable from its first frame, no reference picture
//! missing, and for fMP4 continuous decode times that keep to wall time.
//!
//! Join points are random (stratified over one GOP, so the ten joins land in ten
//! different tenths of it) and counted in frames after a keyframe, as a watcher
//! on /ws sees them, so that a slow machine moves them in time but not in the
//! GOP; the seed is printed, and NALCAST_CORPUS_SEED=<seed> repeats them.
//! NALCAST_CORPUS_ONLY=<name>[,<name>…] plays only the streams so named.
use crate::common;
pub mod check;
pub mod streams;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{next_binary, temp_dir, Server};
use bytes::Bytes;
use check::{check_capture, ffmpeg_decodes, Dialect};
use streams::{Play, Rng, Stream};
use tokio::sync::Semaphore;

/// Viewers joining at different points of the GOP, per endpoint.
const JOINS: usize = 10;
/// How long the stalling viewer reads nothing: with the small buffers below its
/// queue outgrows `QUEUE_MAX_DELAY_MS` well within it. Counted in the source's
/// pictures, one after another (see `stall_until_the_source_moved_on`), not in
/// time alone.
const STALL: Duration = Duration::from_millis(1500);
/// A break between two live pictures at least this long is a source that stopped
/// (the restart backoff alone is 250 ms): the stall counts afresh after it.
const SOURCE_BREAK: Duration = Duration::from_millis(250);
/// The longest a stall may wait for the source's pictures.
const STALL_MAX: Duration = Duration::from_secs(20);
const QUEUE_MAX_DELAY_MS: &str = "500";
/// Kernel buffers (server send, stalling viewer's receive) kept small so that a
/// stall fills them in a fraction of a second and the server's queue takes over.
const SEND_BUFFER: &str = "16384";
const STALL_RECV_BUFFER: u32 = 4096;
/// Servers playing at once (each with 33 viewers): two keep this 2-core machine
/// busy without starving the sources' pacing.
const PARALLEL_RUNS: usize = 2;

#[derive(Clone, Copy, Debug)]
enum Source {
    File,
    Exec,
    /// tests/fixtures/writer.py, playing as the stream's `Play` says.
    Writer(Play),
}

impl Source {
    /// How a stream is played.
    fn of(play: Play) -> &'static [Source] {
        match play {
            Play::FileAndPipe => &[Source::File, Source::Exec],
            Play::FileOnly => &[Source::File],
            Play::PausingWriter { pause_ms: 20 } => {
                &[Source::Writer(Play::PausingWriter { pause_ms: 20 })]
            }
            Play::DyingWriter { frames: 34 } => &[Source::Writer(Play::DyingWriter { frames: 34 })],
            other => panic!("no sources for {other:?}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Exec => "exec",
            Source::Writer(_) => "writer",
        }
    }

    fn spec(self, stream: &Stream) -> String {
        let path = stream.path.display();
        match self {
            Source::File => format!("file:{path}"),
            // A camera-like pipe: one ffmpeg paces an endless stream. (Its own
            // `-stream_loop -1` cannot loop raw H.264 in Debian 12's ffmpeg 5.1:
            // the seek back fails, "Operation not permitted", and ffmpeg exits.)
            Source::Exec => format!(
                "exec:while :; do cat '{path}'; done | ffmpeg -hide_banner -loglevel error -re -f h264 -i - -c copy -f h264 -"
            ),
            Source::Writer(play) => {
                let writer =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writer.py");
                let how = match play {
                    Play::PausingWriter { pause_ms } => {
                        format!("--pause-every 10 --pause-ms {pause_ms}")
                    }
                    Play::DyingWriter { frames } => format!("--die-after {frames}"),
                    Play::FileAndPipe | Play::FileOnly => String::new(),
                };
                format!(
                    "exec:exec python3 '{}' '{path}' {} {how}",
                    writer.display(),
                    stream.fps
                )
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Framed,
    Raw,
    Legacy,
    Fmp4,
}

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Framed,
    Endpoint::Raw,
    Endpoint::Legacy,
    Endpoint::Fmp4,
];

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Framed => "/ws",
            Endpoint::Raw => "/ws/raw",
            Endpoint::Legacy => "legacy",
            Endpoint::Fmp4 => "/ws/fmp4",
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Endpoint::Framed => Dialect::Framed,
            Endpoint::Raw | Endpoint::Legacy => Dialect::Raw,
            Endpoint::Fmp4 => Dialect::Fmp4,
        }
    }

    /// (address to connect to, WebSocket URL).
    fn target(self, server: &Server) -> (SocketAddr, String) {
        match self {
            Endpoint::Framed => (server.addr, server.url("/ws")),
            Endpoint::Raw => (server.addr, server.url("/ws/raw")),
            Endpoint::Fmp4 => (server.addr, server.url("/ws/fmp4")),
            Endpoint::Legacy => {
                let legacy = server.legacy.expect("legacy listener");
                (legacy, format!("ws://{legacy}/any/path"))
            }
        }
    }
}

/// One viewer: where, when and how it watches.
#[derive(Clone, Debug)]
struct Viewer {
    endpoint: Endpoint,
    /// Join number (0..JOINS), or `None` for the stalling viewer.
    join: Option<usize>,
    /// Joins when the watcher has seen this many frames after a keyframe.
    phase: u32,
}

impl Viewer {
    fn label(&self) -> String {
        match self.join {
            Some(j) => format!(
                "{} join {j} (at frame {} of the GOP)",
                self.endpoint.name(),
                self.phase
            ),
            None => format!(
                "{} stall (joined at frame {} of the GOP)",
                self.endpoint.name(),
                self.phase
            ),
        }
    }
}

/// What one viewer received: its binary messages, in order, and when each came.
struct Captured {
    viewer: Viewer,
    messages: Vec<Bytes>,
    arrivals: Vec<Instant>,
    error: Option<String>,
}

/// Whether a message starts a picture, and a keyframe.
pub(crate) fn picture_start(dialect: Dialect, msg: &[u8]) -> (bool, bool) {
    match dialect {
        Dialect::Framed => (
            msg.first() == Some(&0x02),
            msg.get(1).is_some_and(|f| f & 1 != 0),
        ),
        Dialect::Fmp4 => (
            msg.first() == Some(&0x07),
            msg.get(1).is_some_and(|f| f & 1 != 0),
        ),
        Dialect::Raw => {
            let t = msg.get(4).map_or(0, |h| h & 0x1f);
            // first_mb_in_slice 0 is the single bit 1 (ue(v)).
            let first = msg.get(5).is_some_and(|b| b & 0x80 != 0);
            (matches!(t, 1 | 5) && first, t == 5)
        }
    }
}

/// Whether a message on /ws starts a live picture (not one of a join's catch-up
/// burst), and then whether a keyframe.
fn live_picture_start(msg: &[u8]) -> Option<bool> {
    let (picture, key) = picture_start(Dialect::Framed, msg);
    let catch_up = msg.get(1).is_some_and(|f| f & 2 != 0);
    (picture && !catch_up).then_some(key)
}

/// Joins and reads until two keyframes (for the stalling
/// viewer: two after it resumes) and a quarter GOP after the last have arrived,
/// ending at a picture boundary.
async fn capture(
    viewer: Viewer,
    addr: SocketAddr,
    url: String,
    watch_url: String,
    stream: &Stream,
) -> Captured {
    let dialect = viewer.endpoint.dialect();
    let stall = viewer.join.is_none();
    let mut captured = Captured {
        viewer,
        messages: Vec::new(),
        arrivals: Vec::new(),
        error: None,
    };
    let connected = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if stall {
            socket.set_recv_buffer_size(STALL_RECV_BUFFER)?;
        }
        let tcp = socket.connect(addr).await?;
        tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .map_err(std::io::Error::other)
    };
    let mut ws = match connected.await {
        Ok((ws, _)) => ws,
        Err(e) => {
            captured.error = Some(format!("cannot connect: {e}"));
            return captured;
        }
    };
    let gop_secs = stream.gop_secs();
    let mut deadline = Instant::now() + STALL + Duration::from_secs_f64(6.0 * gop_secs + 10.0);
    let (mut pictures, mut keyframes, mut since_key) = (0u32, 0u32, 0u32);
    let mut stall_after = stall.then_some(stream.gop * 3 / 10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = next_binary(&mut ws, left).await else {
            captured.error = Some(format!(
                "no message within the capture's time (closed or timed out) after {pictures} pictures"
            ));
            return captured;
        };
        let (starts, key) = picture_start(dialect, &msg);
        if starts {
            if keyframes >= 2 && since_key >= stream.gop / 4 {
                return captured;
            }
            pictures += 1;
            if key {
                keyframes += 1;
                since_key = 0;
            } else {
                since_key += 1;
            }
        }
        captured.messages.push(msg);
        captured.arrivals.push(Instant::now());
        if stall_after == Some(pictures) {
            stall_after = None;
            // Deliberately not reading: the server's queue for this viewer overflows.
            let stalled = Instant::now();
            if let Err(e) = stall_until_the_source_moved_on(&watch_url, stream).await {
                captured.error = Some(e);
                return captured;
            }
            deadline += stalled.elapsed().saturating_sub(STALL);
            keyframes = 0;
        }
    }
}

/// Waits, reading nothing on the stalling viewer's own connection, until a
/// watcher on /ws has seen the source make `STALL`'s worth of live pictures one
/// after another (a dying writer: all but four of one life's, a second's worth
/// here), at least `STALL` in all. A fixed sleep was not enough: a source that
/// dies and restarts makes no picture for a while, and a stall over such a break
/// could end before the viewer's queue held `QUEUE_MAX_DELAY_MS` of pictures.
async fn stall_until_the_source_moved_on(watch_url: &str, stream: &Stream) -> Result<(), String> {
    let started = Instant::now();
    let life = match stream.play {
        Play::DyingWriter { frames } => frames.saturating_sub(4),
        _ => u32::MAX,
    };
    let wanted = ((STALL.as_secs_f64() * f64::from(stream.fps)).ceil() as u32).min(life);
    let (mut watcher, _) = tokio_tungstenite::connect_async(watch_url)
        .await
        .map_err(|e| format!("the stall's watcher on /ws cannot connect: {e}"))?;
    let (mut unbroken, mut last) = (0u32, None::<Instant>);
    while unbroken < wanted || started.elapsed() < STALL {
        let left = STALL_MAX.saturating_sub(started.elapsed());
        let Some(msg) = next_binary(&mut watcher, left).await else {
            return Err(format!(
                "the stall saw no {wanted} pictures in a row from the source within {} s",
                STALL_MAX.as_secs()
            ));
        };
        if live_picture_start(&msg).is_none() {
            continue;
        }
        let now = Instant::now();
        if last.is_some_and(|at| now - at >= SOURCE_BREAK) {
            unbroken = 0;
        }
        unbroken += 1;
        last = Some(now);
    }
    Ok(())
}

/// Starts each viewer's capture when a watcher on /ws has seen `viewer.phase`
/// frames after a live keyframe (`viewers` sorted by phase).
async fn join_along_the_gop(
    server: &Server,
    stream: &Arc<Stream>,
    viewers: Vec<Viewer>,
    tasks: &mut Vec<tokio::task::JoinHandle<Captured>>,
) -> Result<(), String> {
    let mut watcher = common::connect(&server.url("/ws")).await;
    let deadline = Instant::now() + Duration::from_secs_f64(3.0 * stream.gop_secs() + 10.0);
    let mut since_key: Option<u32> = None;
    let mut viewers = viewers.into_iter().peekable();
    while viewers.peek().is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = next_binary(&mut watcher, left)
            .await
            .ok_or("the watcher on /ws got no frames: viewers could not be placed in the GOP")?;
        let Some(key) = live_picture_start(&msg) else {
            continue;
        };
        since_key = match (key, since_key) {
            (true, _) => Some(0),
            (false, Some(n)) => Some(n + 1),
            (false, None) => None,
        };
        let Some(n) = since_key else { continue };
        while let Some(viewer) = viewers.next_if(|v| v.phase <= n) {
            let (addr, url) = viewer.endpoint.target(server);
            let watch_url = server.url("/ws");
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                capture(viewer, addr, url, watch_url, &stream).await
            }));
        }
    }
    Ok(())
}

/// Plays `stream` from `source` and watches it from every endpoint; returns the
/// summary line and the failures.
async fn run(
    stream: Arc<Stream>,
    source: Source,
    seed: u64,
    dir: &Path,
    slots: Arc<Semaphore>,
) -> (String, Vec<String>) {
    let slot = slots.acquire_owned().await.expect("semaphore");
    let started = Instant::now();
    let mut failures_early = Vec::new();
    let what = format!("{} via {}", stream.name, source.name());
    let args = [
        "--source".to_owned(),
        source.spec(&stream),
        "--fps".to_owned(),
        stream.fps.to_string(),
        "--queue-max-delay".to_owned(),
        QUEUE_MAX_DELAY_MS.to_owned(),
        "--send-buffer".to_owned(),
        SEND_BUFFER.to_owned(),
    ];
    let server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(&args)
    })
    .await
    .expect("server starts");
    server.wait_healthy().await;

    let mut rng = Rng(seed);
    let gop = f64::from(stream.gop);
    let mut viewers = Vec::new();
    for endpoint in ENDPOINTS {
        for join in 0..JOINS {
            let at = (join as f64 + rng.unit()) / JOINS as f64;
            viewers.push(Viewer {
                endpoint,
                join: Some(join),
                phase: (at * gop) as u32,
            });
        }
        viewers.push(Viewer {
            endpoint,
            join: None,
            phase: (rng.unit() * gop) as u32,
        });
    }
    viewers.sort_by_key(|v| v.phase);
    let mut tasks = Vec::new();
    if let Err(e) = join_along_the_gop(&server, &stream, viewers, &mut tasks).await {
        failures_early.push(e);
    }
    let mut captures = Vec::new();
    for task in tasks {
        captures.push(task.await.expect("capture task"));
    }
    if let Play::PausingWriter { .. } = stream.play {
        // Frames written in two halves must come out whole: not one byte dropped.
        match common::http_get(server.addr, "/metrics").await {
            Ok((200, metrics)) => {
                let errors = metrics
                    .lines()
                    .find(|l| l.starts_with("nalcast_stream_errors_total{stream=\"camera\"} "))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
                if errors != Some(0.0) {
                    failures_early.push(format!(
                        "the writer's pauses cost stream errors (cut frames, dropped bytes): {errors:?}"
                    ));
                }
            }
            other => failures_early.push(format!("no /metrics: {other:?}")),
        }
    }
    drop(server);
    drop(slot);
    let watched = started.elapsed();

    let (stream2, dir) = (stream.clone(), dir.to_owned());
    let (summary, failures, checked) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let (summary, mut failures) = judge(&stream2, source, &captures, &dir);
        failures.splice(0..0, failures_early);
        (summary, failures, t.elapsed())
    })
    .await
    .expect("checks");
    (
        format!(
            "corpus {what:<36} {summary} [watched {:.1} s, checked {:.1} s]",
            watched.as_secs_f64(),
            checked.as_secs_f64()
        ),
        failures
            .into_iter()
            .map(|f| format!("FAIL {what}, {f}"))
            .collect(),
    )
}

/// Checks every capture of one run and decodes each endpoint's captures with ffmpeg.
fn judge(
    stream: &Stream,
    source: Source,
    captures: &[Captured],
    dir: &Path,
) -> (String, Vec<String>) {
    let mut failures = Vec::new();
    let mut parts = Vec::new();
    // Every slice a viewer gets is one the source wrote, byte for byte: none cut
    // short (a frame taken as complete too early), none joined to another.
    let file = std::fs::read(&stream.path).expect("the stream's file");
    let written: std::collections::HashSet<&[u8]> = testkit::annexb::split(&file)
        .into_iter()
        .filter(|n| matches!(n[0] & 0x1f, 1 | 5))
        .collect();
    for endpoint in ENDPOINTS {
        let (mut joins, mut pictures, mut skips) = (0, 0, 0);
        let mut phases = Vec::new();
        let mut decodable: Vec<(&Captured, Vec<u8>)> = Vec::new();
        for cap in captures.iter().filter(|c| c.viewer.endpoint == endpoint) {
            let label = cap.viewer.label();
            if let Some(e) = &cap.error {
                failures.push(format!("{label}: {e}"));
            }
            match check_capture(
                endpoint.dialect(),
                &cap.messages,
                &cap.arrivals,
                cap.viewer.join.is_none(),
            ) {
                Ok(seen) => {
                    joins += 1;
                    pictures += seen.pictures;
                    skips += seen.skips;
                    if cap.viewer.join.is_some() && endpoint == Endpoint::Framed {
                        phases.push(seen.catch_up + 1);
                    }
                    if cap.viewer.join.is_none() && endpoint == Endpoint::Framed && seen.skips == 0
                    {
                        failures.push(format!(
                            "{label}: no skipped message: the stall did not overflow the queue, so the test tested nothing"
                        ));
                    }
                    let cut = testkit::annexb::split(&seen.annexb)
                        .into_iter()
                        .filter(|n| matches!(n[0] & 0x1f, 1 | 5))
                        .find(|n| !written.contains(n));
                    if let Some(slice) = cut {
                        failures.push(format!(
                            "{label}: a slice of {} bytes the source never wrote (cut short?)",
                            slice.len()
                        ));
                    }
                    if endpoint == Endpoint::Fmp4 {
                        // Each init segment with its fragments is a file of its own.
                        for (k, piece) in seen.mp4.iter().enumerate() {
                            let file = dir.join(format!(
                                "{}-{}-fmp4-{}-{k}.mp4",
                                stream.name,
                                source.name(),
                                cap.viewer.join.map_or("stall".into(), |j| j.to_string())
                            ));
                            std::fs::write(&file, piece).expect("write capture");
                            match ffmpeg_decodes(&file) {
                                Ok(()) => {
                                    let _ = std::fs::remove_file(&file);
                                }
                                Err(e) => failures.push(format!("{label}: {e}")),
                            }
                        }
                    } else {
                        decodable.push((cap, seen.annexb));
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
        if endpoint == Endpoint::Fmp4 {
            parts.push(format!(
                "{} {joins} ok {pictures} fragments {skips} skips",
                endpoint.name()
            ));
            continue;
        }
        let file = dir.join(format!(
            "{}-{}-{}.h264",
            stream.name,
            source.name(),
            endpoint.name().trim_matches('/').replace('/', "-")
        ));
        let all: Vec<u8> = decodable.iter().flat_map(|(_, b)| b.clone()).collect();
        std::fs::write(&file, &all).expect("write capture");
        let decoded = if all.is_empty() {
            "nothing to decode".to_owned()
        } else {
            match ffmpeg_decodes(&file) {
                Ok(()) => "ffmpeg ok".to_owned(),
                Err(e) => {
                    // Which capture was it? Decode each alone.
                    let mut blamed = 0;
                    for (cap, bytes) in &decodable {
                        std::fs::write(&file, bytes).expect("write capture");
                        if let Err(e) = ffmpeg_decodes(&file) {
                            blamed += 1;
                            failures.push(format!("{}: {e}", cap.viewer.label()));
                        }
                    }
                    if blamed == 0 {
                        failures.push(format!(
                            "{}: the captures decode one by one but not one after another: {e}",
                            endpoint.name()
                        ));
                    }
                    "ffmpeg FAILED".to_owned()
                }
            }
        };
        phases.sort_unstable();
        let phases = if phases.is_empty() {
            String::new()
        } else {
            format!(", GOP phases {:?}/{}", phases, stream.gop)
        };
        parts.push(format!(
            "{} {joins} ok {pictures} pics {skips} skips{phases}, {decoded}",
            endpoint.name()
        ));
    }
    (parts.join("; "), failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_of_every_camera_stream_sees_a_decodable_stream_without_a_missing_frame() {
    let seed = std::env::var("NALCAST_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("corpus seed {seed} (NALCAST_CORPUS_SEED={seed} repeats these join points)");
    // NALCAST_CORPUS_ONLY=main-bframes,garbage plays only those streams.
    let only: Vec<String> = std::env::var("NALCAST_CORPUS_ONLY")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let dir = temp_dir("corpus");
    let t0 = Instant::now();
    let corpus = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || streams::encode_all(&dir, &only))
            .await
            .expect("corpus encodes")
    };
    println!(
        "corpus: {} streams encoded in {:.1} s",
        corpus.len(),
        t0.elapsed().as_secs_f64()
    );

    let slots = Arc::new(Semaphore::new(PARALLEL_RUNS));
    let mut runs = Vec::new();
    let mut seeds = Rng(seed);
    for stream in corpus {
        let stream = Arc::new(stream);
        for &source in Source::of(stream.play) {
            let (slots, stream, dir) = (slots.clone(), stream.clone(), dir.clone());
            let run_seed = seeds.next_u64();
            runs.push(tokio::spawn(async move {
                let result = run(stream, source, run_seed, &dir, slots).await;
                println!("{}", result.0);
                result
            }));
        }
    }
    let mut failures = Vec::new();
    for run in runs {
        failures.extend(run.await.expect("run").1);
    }
    println!("corpus: done in {:.1} s", t0.elapsed().as_secs_f64());
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "{} failures (captures kept in {}):\n{}",
        failures.len(),
        dir.display(),
        failures.join("\n")
    );
}
