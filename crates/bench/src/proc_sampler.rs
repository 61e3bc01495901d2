//! Samples a process's CPU time and resident memory from /proc.
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since sampling started.
    pub t_s: f64,
    /// CPU used since the previous sample, in percent of one core.
    pub cpu_pct: f64,
    /// Resident memory in MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads.
    pub threads: usize,
}

/// A running sampler.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

fn ticks_per_second() -> f64 {
    // CLK_TCK is 100 on every Linux architecture we run on.
    100.0
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Starts sampling `pid` every `every`.
pub fn start(pid: u32, every: Duration) -> Sampler {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        let t0 = Instant::now();
        let (mut last_ticks, mut last_t) = (cpu_ticks(pid).unwrap_or(0), Instant::now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stopped => break,
            }
            let Some(ticks) = cpu_ticks(pid) else { break };
            let now = Instant::now();
            let secs = now.duration_since(last_t).as_secs_f64();
            samples.push(Sample {
                t_s: now.duration_since(t0).as_secs_f64(),
                cpu_pct: (ticks - last_ticks) as f64 / ticks_per_second() / secs * 100.0,
                rss_mib: status_field(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
                fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0),
                threads: status_field(pid, "Threads:").unwrap_or(0) as usize,
            });
            (last_ticks, last_t) = (ticks, now);
        }
        samples
    });
    Sampler { stop, task }
}

impl Sampler {
    /// Stops and returns the samples.
    pub async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
