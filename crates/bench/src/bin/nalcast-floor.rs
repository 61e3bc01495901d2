//! nalcast-floor: what the kernel alone costs for a fan-out, as a yardstick for
//! nalcast's server-added delay. It opens N loopback TCP connections and, for
//! every frame, writes one message of the given size to each of them with plain
//! blocking writes split over a few threads: no WebSocket framing, no queues, no
//! runtime. The time from the start of a frame to each write's return is the
//! smallest "server-added delay" any server on this machine could report. The
//! reading side runs at idle priority, as `make bench` runs the load generator.
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};
use thread_priority::ThreadPriority;

/// Measures the kernel's own cost of writing one frame to many loopback sockets.
#[derive(Parser, Debug)]
#[command(
    name = "nalcast-floor",
    version,
    about = "The kernel's own cost of writing one frame to many loopback sockets: the floor under any server-added delay"
)]
struct Args {
    /// Connections (viewers).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Bytes written to each connection per frame (3 Mbit/s at 30 fps is 12500).
    #[arg(long, default_value_t = 12_500)]
    bytes: usize,
    /// Writer threads [default: number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Frames per second.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let listener = TcpListener::bind("127.0.0.1:0").context("listen on loopback")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::with_capacity(args.connections);
    let mut writers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        readers.push(TcpStream::connect(addr).context("connect (raise ulimit -n?)")?);
        let (w, _) = listener.accept()?;
        w.set_nodelay(true)?;
        writers.push(w);
    }
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || read_everything(readers))?;

    let frames = (args.duration * args.fps).ceil() as usize;
    let message = vec![0x5a_u8; args.bytes];
    let start = Arc::new(Mutex::new(Instant::now()));
    let mut handles = Vec::new();
    let per_thread = args.connections.div_ceil(threads);
    let mut chunks: Vec<Vec<TcpStream>> = Vec::new();
    while !writers.is_empty() {
        let rest = writers.split_off(writers.len().min(per_thread));
        chunks.push(std::mem::replace(&mut writers, rest));
    }
    let writer_threads = chunks.len();
    let go = Arc::new(Barrier::new(writer_threads + 1));
    for mut chunk in chunks {
        let (go, start, message) = (go.clone(), start.clone(), message.clone());
        handles.push(std::thread::spawn(move || -> std::io::Result<Vec<f64>> {
            let mut offsets = Vec::with_capacity(frames * chunk.len());
            for _ in 0..frames {
                go.wait();
                let t0 = *start.lock().unwrap_or_else(|p| p.into_inner());
                for socket in &mut chunk {
                    socket.write_all(&message)?;
                    offsets.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                go.wait();
            }
            Ok(offsets)
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / args.fps);
    let mut next = Instant::now();
    for _ in 0..frames {
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        *start.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        go.wait(); // writers start
        go.wait(); // writers done
    }
    let mut offsets = Vec::new();
    for h in handles {
        let written = h
            .join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?;
        offsets.extend(written.context("write")?);
    }
    offsets.sort_by(f64::total_cmp);
    let q = |p: f64| offsets[((offsets.len() as f64 * p) as usize).min(offsets.len() - 1)];
    let within_1ms = offsets.iter().filter(|&&o| o <= 1.0).count() as f64 / offsets.len() as f64;
    println!(
        "kernel floor: {} connections, {} bytes each per frame, {} writer threads, {} frames: write returned after p50 {:.2} / p99 {:.2} / max {:.2} ms; {:.1}% within 1 ms",
        args.connections,
        args.bytes,
        writer_threads,
        frames,
        q(0.5),
        q(0.99),
        q(1.0),
        within_1ms * 100.0
    );
    Ok(())
}

/// Reads and discards everything, at idle priority (it stands in for the viewers).
fn read_everything(readers: Vec<TcpStream>) {
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        eprintln!("nalcast-floor: reader stays at normal priority ({e:?})");
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        eprintln!("nalcast-floor: cannot start the reader");
        return;
    };
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for reader in readers {
            tasks.spawn(async move {
                use tokio::io::AsyncReadExt;
                let _ = reader.set_nonblocking(true);
                let Ok(mut reader) = tokio::net::TcpStream::from_std(reader) else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}
