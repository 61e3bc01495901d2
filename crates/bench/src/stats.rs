//! Aggregates per-viewer results into the figures the targets are stated in.
use serde::Serialize;

use crate::proc_sampler::Sample;
use crate::ViewerResult;

/// Percentile (nearest rank) of unsorted values; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
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
pub struct Summary {
    /// Scenario label.
    pub name: String,
    /// Viewers measured.
    pub viewers: usize,
    /// Viewers that got a decodable frame.
    pub started: usize,
    /// Viewers with an error before the end.
    pub errors: usize,
    /// Stalled viewers that could not even connect.
    pub stalled_errors: usize,
    /// Time to first decodable frame, ms: p50, p95, max.
    pub ttff_ms: [Option<f64>; 3],
    /// Time until live (every later frame within `--live-within-ms` of its capture),
    /// ms: p50, p95, max over the viewers that started; a viewer never live counts as
    /// infinitely late (null in JSON, "never" in the table).
    pub live_after_ms: [Option<f64>; 3],
    /// Viewers that started but were never live.
    pub not_live: usize,
    /// With `--link-mbit`: joins live within their bound, and joins that could be
    /// judged (two keyframes seen after the join).
    pub live_in_bound: Option<[usize; 2]>,
    /// Share of viewers at ≥ 95 % of the source frame rate.
    pub share_at_95pct_fps: f64,
    /// Viewer frame rate: p5 and p50.
    pub fps: [Option<f64>; 2],
    /// Largest gap between frames over all viewers, ms.
    pub max_gap_ms: f64,
    /// Frames lost over all viewers.
    pub lost: u64,
    /// Capture-to-arrival delay, ms: p50, p95, p99.
    pub latency_ms: [Option<f64>; 3],
    /// Server CPU in % of one core: mean, max.
    pub cpu_pct: [Option<f64>; 2],
    /// Server RSS in MiB: first, a quarter into the run, last, max.
    pub rss_mib: [Option<f64>; 4],
    /// Megabits per second received by all viewers together.
    pub mbit_s: f64,
    /// Server-added delay (source frame complete to socket write) from nalcast's own
    /// histogram, ms, bucket upper bounds: p50 and p99 once every viewer has joined
    /// and caught up (steady), p99 over the whole run (joins included).
    pub server_latency_ms: [Option<f64>; 3],
    /// Share of the steady server-added delays within 1 ms, %.
    pub server_within_1ms_pct: Option<f64>,
}

impl Summary {
    /// Summarises a run.
    pub fn new(
        name: &str,
        fps: f64,
        results: &[ViewerResult],
        samples: &[Sample],
        stalled_errors: usize,
    ) -> Self {
        let ttff: Vec<f64> = results.iter().filter_map(|r| r.ttff_ms).collect();
        let live: Vec<f64> = results
            .iter()
            .filter(|r| r.ttff_ms.is_some())
            .map(|r| r.live_after_ms.unwrap_or(f64::INFINITY))
            .collect();
        let judged: Vec<bool> = results.iter().filter_map(|r| r.live_in_bound).collect();
        let rates: Vec<f64> = results
            .iter()
            .filter(|r| r.ttff_ms.is_some())
            .map(|r| r.fps)
            .collect();
        let lat: Vec<f64> = results
            .iter()
            .flat_map(|r| r.latencies_ms.iter().copied())
            .collect();
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_pct).collect();
        let duration: f64 = samples.last().map(|s| s.t_s).unwrap_or(0.0);
        let ok = results.iter().filter(|r| r.fps >= 0.95 * fps).count();
        Summary {
            name: name.to_owned(),
            viewers: results.len(),
            started: ttff.len(),
            errors: results.iter().filter(|r| r.error.is_some()).count(),
            stalled_errors,
            ttff_ms: [
                percentile(&ttff, 50.0),
                percentile(&ttff, 95.0),
                percentile(&ttff, 100.0),
            ],
            live_after_ms: [
                percentile(&live, 50.0),
                percentile(&live, 95.0),
                percentile(&live, 100.0),
            ],
            not_live: live.iter().filter(|t| t.is_infinite()).count(),
            live_in_bound: (!judged.is_empty())
                .then(|| [judged.iter().filter(|&&met| met).count(), judged.len()]),
            share_at_95pct_fps: if results.is_empty() {
                0.0
            } else {
                ok as f64 / results.len() as f64
            },
            fps: [percentile(&rates, 5.0), percentile(&rates, 50.0)],
            max_gap_ms: results.iter().map(|r| r.max_gap_ms).fold(0.0, f64::max),
            lost: results.iter().map(|r| r.lost).sum(),
            latency_ms: [
                percentile(&lat, 50.0),
                percentile(&lat, 95.0),
                percentile(&lat, 99.0),
            ],
            cpu_pct: [
                if cpu.is_empty() {
                    None
                } else {
                    Some(cpu.iter().sum::<f64>() / cpu.len() as f64)
                },
                cpu.iter().copied().reduce(f64::max),
            ],
            rss_mib: [
                samples.first().map(|s| s.rss_mib),
                // A quarter into the run: viewers connected, buffers warm. From
                // here to the end RSS should stay flat.
                samples.get(samples.len() / 4).map(|s| s.rss_mib),
                samples.last().map(|s| s.rss_mib),
                samples.iter().map(|s| s.rss_mib).reduce(f64::max),
            ],
            mbit_s: if duration > 0.0 {
                results.iter().map(|r| r.bytes).sum::<u64>() as f64 * 8.0 / 1e6 / duration
            } else {
                0.0
            },
            server_latency_ms: [None, None, None],
            server_within_1ms_pct: None,
        }
    }

    /// A markdown table row set.
    pub fn markdown(&self) -> String {
        fn f(v: Option<f64>) -> String {
            match v {
                None => "-".into(),
                Some(x) if x.is_infinite() => "never".into(),
                Some(x) => format!("{x:.1}"),
            }
        }
        fn f2(v: Option<f64>) -> String {
            v.map_or("-".into(), |x| format!("{x:.2}"))
        }
        format!(
            "| scenario | viewers | started | errors | ttff p50/p95/max ms | live after p50/p95/max ms | not live | ≥95% fps | fps p5/p50 | max gap ms | lost | capture→arrival p50/p95/p99 ms | server-added steady p50/p99, whole-run p99 ms (≤) | steady ≤ 1 ms | CPU mean/max % | RSS first/warm/last/max MiB | Mbit/s |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {}/{}/{} | {}/{}/{} | {} | {:.1}% | {}/{} | {:.0} | {} | {}/{}/{} | {}/{}, {} | {}% | {}/{} | {}/{}/{}/{} | {:.1} |",
            self.name, self.viewers, self.started, self.errors,
            f(self.ttff_ms[0]), f(self.ttff_ms[1]), f(self.ttff_ms[2]),
            f(self.live_after_ms[0]), f(self.live_after_ms[1]), f(self.live_after_ms[2]),
            self.not_live,
            self.share_at_95pct_fps * 100.0,
            f(self.fps[0]), f(self.fps[1]),
            self.max_gap_ms, self.lost,
            f(self.latency_ms[0]), f(self.latency_ms[1]), f(self.latency_ms[2]),
            f2(self.server_latency_ms[0]), f2(self.server_latency_ms[1]), f2(self.server_latency_ms[2]),
            f(self.server_within_1ms_pct),
            f(self.cpu_pct[0]), f(self.cpu_pct[1]),
            f(self.rss_mib[0]), f(self.rss_mib[1]), f(self.rss_mib[2]), f(self.rss_mib[3]),
            self.mbit_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
