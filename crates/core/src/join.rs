//! How a viewer joins: with the catch-up burst (the GOP cache, from its keyframe)
//! or by waiting for the next keyframe.
//!
//! A joining viewer gets the keyframe at once (its first picture), then the rest of
//! the GOP as fast as the link takes it, then live frames. On a slow link that
//! burst can take longer than waiting for the next keyframe: at 720p 3 Mbit/s with
//! a 2 s GOP the cache holds up to ~750 KB, 1.2 s of a 5 Mbit/s link during which
//! new frames pile up behind it. So while the burst goes out the viewer's session
//! measures how fast the link takes it, and as soon as finishing the burst is
//! expected to take longer than the wait for the next keyframe, the rest of the
//! burst is dropped and the viewer resumes at that keyframe (its queue does that,
//! and also drops whatever of the burst is still queued when a keyframe arrives).
//! Everything here is plain logic with times passed in.
use std::time::{Duration, Instant};

/// What the hub knew about the stream when the viewer joined.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JoinFacts {
    /// When the next keyframe is expected: the last keyframe plus the last GOP's
    /// length. `None` until two keyframes were seen.
    pub next_keyframe_at: Option<Instant>,
    /// The stream's rate in bytes per second over the last whole GOP, if known.
    pub stream_rate: Option<f64>,
}

/// The GOP timing a join is weighed against: when the last keyframe came, and the
/// length and bytes of the GOP before it. Pure: each frame comes with its time.
#[derive(Clone, Copy, Debug, Default)]
pub struct GopTiming {
    last_keyframe_at: Option<Instant>,
    last_gop: Option<(Duration, usize)>,
}

impl GopTiming {
    /// A keyframe came at `now`, ending a GOP of `gop_bytes` (the cache's bytes
    /// before the keyframe clears it).
    pub fn keyframe(&mut self, now: Instant, gop_bytes: usize) {
        if let Some(prev) = self.last_keyframe_at {
            let length = now.saturating_duration_since(prev);
            if !length.is_zero() {
                self.last_gop = Some((length, gop_bytes));
            }
        }
        self.last_keyframe_at = Some(now);
    }

    /// The next keyframe's expected time and the stream's rate, from the last GOP.
    pub fn facts(&self) -> JoinFacts {
        let Some((length, bytes)) = self.last_gop else {
            return JoinFacts::default();
        };
        JoinFacts {
            next_keyframe_at: self.last_keyframe_at.map(|at| at + length),
            stream_rate: Some(bytes as f64 / length.as_secs_f64()),
        }
    }
}

/// How a viewer's catch-up ended, the label of `nalcast_joins_total{start}`: the
/// whole burst went out ("gop", also when there was nothing to catch up), it gave
/// way to the next keyframe on a measured slow link ("next_keyframe"), or a new
/// keyframe came while some of it was still queued ("overtaken").
pub const JOIN_STARTS: [&str; 3] = ["gop", "next_keyframe", "overtaken"];

/// Viewers' starts, by how their catch-up ended (counted by the session, which
/// knows).
pub const JOINS: crate::metric::Series = crate::metric::Series::counter(
    "nalcast_joins_total",
    "viewers' starts, by how their catch-up (the GOP so far) ended: gop (sent whole), \
     next_keyframe (the link was too slow to finish it before the next keyframe), \
     overtaken (a new keyframe came while some of it was still queued)",
)
.labelled("start", &JOIN_STARTS)
.per_stream();

/// How to go on with a viewer's catch-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Keep sending the burst: it ends before the next keyframe would come.
    Burst,
    /// Drop the rest of the burst and start at the next keyframe.
    WaitForKeyframe,
}

/// The decision itself. `remaining` bytes of the burst are still to go over a link
/// that delivers `link_rate` bytes per second, while the stream adds `stream_rate`;
/// the next keyframe comes in `until_keyframe`. Finishing the burst makes the viewer
/// live after `remaining / (link_rate - stream_rate)` (live frames keep queueing
/// behind it); waiting, at the next keyframe. The burst wins ties: it keeps the
/// picture moving.
pub fn plan(remaining: u64, link_rate: f64, stream_rate: f64, until_keyframe: Duration) -> Plan {
    let spare = link_rate - stream_rate;
    // Also a NaN rate: nothing known to be spare.
    if spare.is_nan() || spare <= 0.0 {
        return Plan::WaitForKeyframe;
    }
    let burst = remaining as f64 / spare;
    if burst > until_keyframe.as_secs_f64() {
        Plan::WaitForKeyframe
    } else {
        Plan::Burst
    }
}

/// Writes shorter than this took no time worth measuring: the kernel took the bytes
/// into free buffer space instead of waiting for the link.
const BLOCKED: Duration = Duration::from_millis(2);

/// At least this much of the burst is measured before deciding to wait: one
/// blocked write can be a scheduling hiccup.
const MEASURE_AT_LEAST: u64 = 48 * 1024;

/// Most bytes of catch-up written in one go, so the decision comes early and what
/// the kernel holds when the burst is dropped stays small.
pub const CATCH_UP_BATCH_BYTES: usize = 64 * 1024;

/// One viewer's catch-up: measures the link and decides. The measure is the peer's
/// acknowledgements where the kernel reports them ([`CatchUp::acknowledged`]), else
/// the time writes spent waiting for the link.
#[derive(Clone, Debug)]
pub struct CatchUp {
    facts: JoinFacts,
    /// Bytes and time of writes that had to wait for the link.
    blocked_bytes: u64,
    blocked_time: Duration,
    /// The peer's acknowledged byte count and the link's busy time at the first report.
    acked_from: Option<(u64, Duration)>,
    /// Bytes acknowledged per second since then, once enough were.
    acked_rate: Option<f64>,
    /// Over (burst sent or dropped): later writes are live frames.
    over: bool,
}

impl CatchUp {
    /// A viewer that joined with these facts.
    pub fn new(facts: JoinFacts) -> Self {
        CatchUp {
            facts,
            blocked_bytes: 0,
            blocked_time: Duration::ZERO,
            acked_from: None,
            acked_rate: None,
            over: false,
        }
    }

    /// Whether the burst is still going out.
    pub fn active(&self) -> bool {
        !self.over
    }

    /// The link's delivery rate in bytes per second, once measured. Where the kernel
    /// reports acknowledgements: the bytes the peer acknowledged since the first
    /// report over the time the link held data back since (the kernel's busy time,
    /// less the time the peer's receive window did: a reader that paused is no slow
    /// link, nor are the moments nalcast had nothing written yet). Else: the bytes
    /// of writes that waited for the link over the time they waited (a write into a
    /// full send buffer returns when the link has taken bytes out; it reads high
    /// while TCP's window still grows and takes bytes into flight).
    pub fn link_rate(&self) -> Option<f64> {
        if self.acked_from.is_some() {
            return self.acked_rate;
        }
        (self.blocked_bytes >= MEASURE_AT_LEAST && !self.blocked_time.is_zero())
            .then(|| self.blocked_bytes as f64 / self.blocked_time.as_secs_f64())
    }

    /// The kernel's count of bytes the peer has acknowledged on this connection
    /// (TCP_INFO `tcpi_bytes_acked`) and of the time the link held data back (see
    /// [`CatchUp::link_rate`]), both since the connection began, reported after each
    /// write of the burst. Once reported, they alone measure the link.
    pub fn acknowledged(&mut self, acked: u64, link_time: Duration) {
        let Some((from, since)) = self.acked_from else {
            self.acked_from = Some((acked, link_time));
            return;
        };
        let delivered = acked.saturating_sub(from);
        let elapsed = link_time.saturating_sub(since);
        if delivered >= MEASURE_AT_LEAST && !elapsed.is_zero() {
            self.acked_rate = Some(delivered as f64 / elapsed.as_secs_f64());
        }
    }

    /// A write of `bytes` took `took`; `remaining` bytes of the burst are still
    /// queued at `now`. Returns the plan; `WaitForKeyframe` ends the catch-up (the
    /// caller drops the rest), and so does a burst with nothing left.
    pub fn after_write(
        &mut self,
        bytes: u64,
        took: Duration,
        remaining: u64,
        now: Instant,
    ) -> Plan {
        if self.over {
            return Plan::Burst;
        }
        if took >= BLOCKED {
            self.blocked_bytes += bytes;
            self.blocked_time += took;
        }
        if remaining == 0 {
            self.over = true;
            return Plan::Burst;
        }
        let (Some(next), Some(rate)) = (self.facts.next_keyframe_at, self.link_rate()) else {
            return Plan::Burst;
        };
        let stream = self.facts.stream_rate.unwrap_or(0.0);
        let decision = plan(remaining, rate, stream, next.saturating_duration_since(now));
        if decision == Plan::WaitForKeyframe {
            self.over = true;
        }
        decision
    }

    /// The burst ended another way (a keyframe overtook it in the queue).
    pub fn end(&mut self) {
        self.over = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: f64 = 1_000_000.0 / 8.0;

    /// A 720p 3 Mbit/s stream with a 2 s GOP: ~750 KB of cache at the GOP's end.
    fn gop_bytes(phase_s: f64) -> u64 {
        (3.0 * MBIT * phase_s) as u64
    }

    #[test]
    fn a_fast_link_takes_the_burst() {
        // 20 Mbit/s, joined 1.5 s into the GOP: 560 KB take 0.26 s; the keyframe
        // is 0.5 s away.
        let p = plan(
            gop_bytes(1.5),
            20.0 * MBIT,
            3.0 * MBIT,
            Duration::from_millis(500),
        );
        assert_eq!(p, Plan::Burst);
    }

    #[test]
    fn a_slow_link_waits_for_the_keyframe_when_it_comes_first() {
        // 5 Mbit/s, 1.5 s into the GOP: 560 KB at 2 Mbit/s spare take 2.25 s.
        let p = plan(
            gop_bytes(1.5),
            5.0 * MBIT,
            3.0 * MBIT,
            Duration::from_millis(500),
        );
        assert_eq!(p, Plan::WaitForKeyframe);
        // Early in the GOP the burst is short and the keyframe far: burst.
        let p = plan(
            gop_bytes(0.2),
            5.0 * MBIT,
            3.0 * MBIT,
            Duration::from_millis(1800),
        );
        assert_eq!(p, Plan::Burst);
    }

    #[test]
    fn a_link_slower_than_the_stream_never_catches_up() {
        let p = plan(1000, 2.0 * MBIT, 3.0 * MBIT, Duration::from_secs(10));
        assert_eq!(p, Plan::WaitForKeyframe);
        assert_eq!(
            plan(1000, f64::NAN, 0.0, Duration::from_secs(1)),
            Plan::WaitForKeyframe
        );
    }

    #[test]
    fn the_choice_follows_the_smaller_of_burst_time_and_keyframe_wait() {
        // Over a grid of link rates, GOP phases and keyframe distances, the plan is
        // the one that makes the viewer live first.
        for link_mbit in [4.0, 5.0, 8.0, 20.0, 100.0] {
            for phase in [0.1, 0.5, 1.0, 1.5, 1.9] {
                for until_ms in [50, 300, 1000, 1900] {
                    let remaining = gop_bytes(phase);
                    let spare = (link_mbit - 3.0) * MBIT;
                    let burst_s = remaining as f64 / spare;
                    let until = Duration::from_millis(until_ms);
                    let want = if burst_s <= until.as_secs_f64() {
                        Plan::Burst
                    } else {
                        Plan::WaitForKeyframe
                    };
                    assert_eq!(
                        plan(remaining, link_mbit * MBIT, 3.0 * MBIT, until),
                        want,
                        "{link_mbit} Mbit/s, {phase} s into the GOP, keyframe in {until_ms} ms"
                    );
                }
            }
        }
    }

    fn facts(now: Instant, until_keyframe_ms: u64) -> JoinFacts {
        JoinFacts {
            next_keyframe_at: Some(now + Duration::from_millis(until_keyframe_ms)),
            stream_rate: Some(3.0 * MBIT),
        }
    }

    #[test]
    fn writes_into_free_buffer_space_measure_nothing() {
        let now = Instant::now();
        let mut c = CatchUp::new(facts(now, 100));
        // Loopback: every write returns at once; the burst goes on until it is sent.
        for _ in 0..10 {
            let p = c.after_write(64 * 1024, Duration::from_micros(300), 500_000, now);
            assert_eq!(p, Plan::Burst);
        }
        assert_eq!(c.link_rate(), None);
        assert_eq!(
            c.after_write(64 * 1024, Duration::ZERO, 0, now),
            Plan::Burst
        );
        assert!(!c.active(), "nothing left: the catch-up is over");
    }

    #[test]
    fn writes_that_wait_for_a_slow_link_measure_it_and_end_the_burst() {
        let now = Instant::now();
        let mut c = CatchUp::new(facts(now, 600));
        // 5 Mbit/s: 64 KB take 105 ms.
        let took = Duration::from_secs_f64(65536.0 / (5.0 * MBIT));
        // The first measured write is not enough to decide on.
        assert_eq!(
            c.after_write(32 * 1024, took / 2, 600_000, now),
            Plan::Burst
        );
        let p = c.after_write(64 * 1024, took, 550_000, now + took);
        let rate = c.link_rate().expect("measured");
        assert!((rate / MBIT - 5.0).abs() < 0.1, "{} Mbit/s", rate / MBIT);
        assert_eq!(p, Plan::WaitForKeyframe, "550 KB at 2 Mbit/s spare > 0.5 s");
        assert!(!c.active());
    }

    #[test]
    fn without_a_known_keyframe_cadence_the_burst_goes_on() {
        let now = Instant::now();
        let mut c = CatchUp::new(JoinFacts::default());
        let took = Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(c.after_write(64 * 1024, took, 600_000, now), Plan::Burst);
        }
        assert!(c.link_rate().is_some());
        assert!(c.active());
    }

    #[test]
    fn acknowledged_bytes_measure_the_link_where_write_times_read_high() {
        // 5 Mbit/s, the keyframe 1 s away, 300 KB left: writes return after 10 ms
        // each (64 KB: "52 Mbit/s", TCP's window still growing), but the peer
        // acknowledges 5 Mbit/s. 300 KB at 2 Mbit/s spare take 1.2 s: wait.
        let start = Instant::now();
        let mut by_writes = CatchUp::new(facts(start, 1000));
        let mut by_acks = CatchUp::new(facts(start, 1000));
        let took = Duration::from_millis(10);
        let mut plans = (Vec::new(), Vec::new());
        for i in 1..=4u32 {
            let now = start + Duration::from_millis(105) * i;
            let acked = (5.0 * MBIT * (now - start).as_secs_f64()) as u64;
            plans
                .0
                .push(by_writes.after_write(64 * 1024, took, 300_000, now));
            by_acks.acknowledged(acked, now - start);
            if by_acks.active() {
                plans
                    .1
                    .push(by_acks.after_write(64 * 1024, took, 300_000, now));
            }
        }
        assert_eq!(
            plans.0,
            [Plan::Burst; 4],
            "write times alone overrate the link"
        );
        let rate = by_acks.link_rate().expect("measured");
        assert!((rate / MBIT - 5.0).abs() < 0.1, "{} Mbit/s", rate / MBIT);
        assert_eq!(
            plans.1,
            [Plan::Burst, Plan::WaitForKeyframe],
            "decided once 48 KB were acknowledged"
        );
    }

    #[test]
    fn acknowledgements_from_a_fast_link_keep_the_burst_going() {
        let start = Instant::now();
        let mut c = CatchUp::new(facts(start, 300));
        for i in 1..=5u32 {
            let now = start + Duration::from_millis(5) * i;
            c.acknowledged(u64::from(i) * 64 * 1024, now - start);
            assert_eq!(
                c.after_write(64 * 1024, Duration::from_millis(5), 400_000, now),
                Plan::Burst
            );
        }
        assert!(c.link_rate().expect("measured") > 90.0 * MBIT);
        // Before enough is acknowledged, nothing is measured (and write times are not used).
        let mut early = CatchUp::new(facts(start, 300));
        early.acknowledged(0, Duration::ZERO);
        early.acknowledged(10_000, Duration::from_millis(50));
        let blocked = Duration::from_millis(100);
        assert_eq!(
            early.after_write(64 * 1024, blocked, 700_000, start),
            Plan::Burst
        );
        assert_eq!(early.link_rate(), None);
    }

    #[test]
    fn a_reader_that_paused_is_not_a_slow_link() {
        // 200 kB acknowledged over 400 ms, but for 380 ms of them the peer's receive
        // window was full (a busy client): the link itself took them in 20 ms.
        let start = Instant::now();
        let mut c = CatchUp::new(facts(start, 1000));
        c.acknowledged(0, Duration::ZERO);
        c.acknowledged(200_000, Duration::from_millis(20));
        let now = start + Duration::from_millis(400);
        let p = c.after_write(64 * 1024, Duration::from_millis(100), 700_000, now);
        assert_eq!(p, Plan::Burst);
        assert!(c.link_rate().expect("measured") > 70.0 * MBIT);
    }
}
