//! Decode and presentation times of samples, in 90 kHz ticks, from capture times and
//! picture order counts.
//!
//! Invariants (checked by the tests and debug-asserted):
//! - decode times are continuous and strictly increasing: each sample starts where
//!   the previous one ended, and lasts 1 ms to 1 s;
//! - presentation times never repeat and follow picture order, within an IDR
//!   period (from POC) and across periods (each period starts after the last
//!   presentation time handed out).
//!
//! A sample lasts the camera's frame interval, measured over the last two seconds
//! of capture times (so bursts of access units read at once, which share a
//! timestamp, and jitter do not matter), nudged by at most 3 % toward the capture
//! clock, so media time keeps to wall time in the long run and to the frame rate
//! frame by frame. Two ways to present a period (an IDR and the pictures up to the
//! next one):
//! - *in order* (output order is decode order: POC type 2, Baseline, or a VUI that
//!   says no reordering): a picture is shown at its decode time;
//! - *reordered* (B-frames possible): a picture is shown at the decode time of the
//!   frame whose place in decode order is its place in display order (from its
//!   POC), plus the period's reorder delay. For a picture shown after frames not
//!   yet decoded, that decode time is predicted with the duration in use, and those
//!   frames keep that duration, so the prediction holds.
//!
//! A gap in the capture times of more than four frame intervals (at least 250 ms;
//! a paused or restarted source) is a break: the frame interval is measured afresh
//! and the capture clock's origin moves, so the gap is neither spread over other
//! frames nor made up for later; media time simply goes on after it.

/// Ticks per second of the media timeline.
pub const TIMESCALE: u32 = 90_000;

/// Shortest sample duration: 1 ms (a burst of access units read at once).
const MIN_DURATION: u32 = TIMESCALE / 1000;
/// Longest sample duration: 1 s (a stalled or restarted source).
const MAX_DURATION: u32 = TIMESCALE;
/// Without an fps in the SPS, the first sample lasts 1/30 s.
const DEFAULT_DURATION: u32 = TIMESCALE / 30;
/// The capture clock's origin moves rather than being caught up with beyond this.
const MAX_DRIFT: i128 = TIMESCALE as i128;
/// Drift is corrected over this much media time...
const DRIFT_HORIZON: i128 = 2 * TIMESCALE as i128;
/// ...changing a duration by at most this fraction (per mille).
const MAX_CORRECTION_PER_MILLE: i128 = 30;
/// Pictures are never reordered by more than this many frames (H.264's limit).
const MAX_REORDER: u32 = 16;

/// What the timeline needs to know about one access unit, in decode order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    /// Capture (arrival) time, µs.
    pub capture_us: u64,
    /// An IDR picture: starts a period.
    pub idr: bool,
    /// Picture order count within the IDR period; `None` when unknown.
    pub poc: Option<i64>,
    /// `None`: output order is decode order. `Some(n)`: pictures may be reordered,
    /// by up to `n` frames as far as the SPS tells.
    pub reorder: Option<u32>,
    /// Frame rate from the SPS, for the first duration.
    pub fps: Option<f64>,
}

/// When one sample is decoded and presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleTiming {
    /// Decode time (tfdt baseMediaDecodeTime), 90 kHz ticks.
    pub decode_time: u64,
    /// Sample duration, ticks.
    pub duration: u32,
    /// Presentation time minus decode time, ticks (trun composition offset).
    pub composition_offset: i32,
    /// The access unit's capture time, µs since the epoch.
    pub capture_us: u64,
}

impl SampleTiming {
    /// Presentation time, ticks.
    pub fn presentation_time(&self) -> i64 {
        self.decode_time as i64 + i64::from(self.composition_offset)
    }
}

/// Capture times kept to measure the frame interval.
const RATE_FRAMES: usize = 64;
/// ...at most this far back, µs.
const RATE_WINDOW_US: u64 = 2_000_000;

/// The camera's frame interval, measured over its recent capture times, and the
/// pauses in them.
///
/// Frames read at once share the time of the read, which came when the last of
/// them did: a group's time is its last frame's, and the gap before a group of k
/// frames is k frame intervals when nothing was lost. A longer gap, beyond four
/// intervals (and 250 ms), is a pause of the source (a stall, a restart): known
/// once the group after it is complete, and left out of the measure.
#[derive(Clone, Debug)]
struct FrameRate {
    times: [u64; RATE_FRAMES],
    /// Index of the oldest time kept, and how many are kept.
    head: usize,
    len: usize,
    /// The newest group of frames: their time, how many, and the gap before them.
    group: Option<(u64, u64, u64)>,
    /// The last interval measured, ticks: kept across a pause until measured again.
    last: Option<u32>,
}

impl Default for FrameRate {
    fn default() -> Self {
        FrameRate {
            times: [0; RATE_FRAMES],
            head: 0,
            len: 0,
            group: None,
            last: None,
        }
    }
}

impl FrameRate {
    fn at(&self, i: usize) -> u64 {
        self.times[(self.head + i) % RATE_FRAMES]
    }

    fn push(&mut self, capture_us: u64) {
        if self.len == RATE_FRAMES {
            self.head = (self.head + 1) % RATE_FRAMES;
            self.len -= 1;
        }
        self.times[(self.head + self.len) % RATE_FRAMES] = capture_us;
        self.len += 1;
    }

    fn interval_us(&self) -> u64 {
        self.last
            .map_or(33_333, |t| u64::from(t) * 1_000_000 / u64::from(TIMESCALE))
    }

    /// Takes a capture time; the length of a pause it revealed (µs), if any.
    fn observe(&mut self, capture_us: u64) -> Option<u64> {
        let mut pause = None;
        match self.group {
            Some((time, frames, gap)) if time == capture_us => {
                self.group = Some((time, frames + 1, gap));
            }
            previous => {
                if let Some((time, frames, gap)) = previous {
                    let interval = self.interval_us();
                    let explained = frames * interval;
                    let backwards = capture_us + 250_000 < time;
                    if backwards
                        || (gap > (4 * interval).max(250_000) && gap > explained + 2 * interval)
                    {
                        pause = Some(gap.saturating_sub(explained));
                        // Measured afresh from the group after the pause.
                        self.len = 0;
                        for _ in 0..if backwards { 0 } else { frames } {
                            self.push(time);
                        }
                    }
                }
                let gap = previous.map_or(0, |(time, _, _)| capture_us.saturating_sub(time));
                self.group = Some((capture_us, 1, gap));
            }
        }
        self.push(capture_us);
        while self.len > 1 && self.at(0) + RATE_WINDOW_US < capture_us {
            self.head = (self.head + 1) % RATE_FRAMES;
            self.len -= 1;
        }
        // From the end of the first group to the end of the last complete one (the
        // newest may still grow). The first estimates come from a few frames, later
        // ones from up to two seconds of them.
        let first = self.at(0);
        let newest = self.at(self.len - 1);
        let first_end = (1..self.len).take_while(|&i| self.at(i) == first).count();
        let last_end = (0..self.len)
            .rev()
            .find(|&i| self.at(i) != newest)
            .unwrap_or(0);
        if last_end > first_end {
            let span = self.at(last_end).saturating_sub(first);
            if span >= 50_000 {
                let frames = (last_end - first_end) as i128;
                self.last = Some(clamp_duration(us_to_ticks(i128::from(span)) / frames));
            }
        }
        pause
    }
}

#[derive(Clone, Debug)]
struct Period {
    /// Presentation minus decode time of the IDR.
    offset: u64,
    /// Pictures may be reordered.
    reordered: bool,
    poc_start: i64,
    /// POC units per frame: 2 (the usual: a frame's two fields), 1 once a stream
    /// was seen counting by one.
    poc_step: i64,
    last_poc: i64,
    odd_poc: bool,
    /// Frames so far (the next one's place in decode order).
    frames: u32,
    /// Decode times of the last frames, by place in decode order modulo the size.
    recent_dts: [u64; 2 * MAX_REORDER as usize],
    /// Frames before this place in decode order must last `locked_duration`: a
    /// picture shown after them was timed with it.
    locked_until: u32,
    locked_duration: u32,
    /// Frames of reordering seen beyond what the offset allowed for.
    reorder_deficit: u32,
}

/// The timing state of one packager.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    next_dts: u64,
    max_pts: Option<u64>,
    /// Reorder depth in frames; grows, never shrinks, so periods never overlap.
    reorder: u32,
    period: Option<Period>,
    rate: FrameRate,
    /// The capture time (µs) decode time 0 stands for, pauses left out.
    origin_us: Option<i128>,
    /// How far decode time is ahead of that clock, ticks, smoothed.
    drift: i128,
}

fn clamp_duration(ticks: i128) -> u32 {
    ticks.clamp(i128::from(MIN_DURATION), i128::from(MAX_DURATION)) as u32
}

fn us_to_ticks(us: i128) -> i128 {
    us * i128::from(TIMESCALE) / 1_000_000
}

fn ticks_to_us(ticks: i128) -> i128 {
    ticks * 1_000_000 / i128::from(TIMESCALE)
}

fn nominal(fps: Option<f64>) -> u32 {
    fps.filter(|f| f.is_finite() && *f > 0.0)
        .map(|f| clamp_duration((f64::from(TIMESCALE) / f).round() as i128))
        .unwrap_or(DEFAULT_DURATION)
}

impl Timeline {
    /// Decode time the next sample will get.
    pub fn next_decode_time(&self) -> u64 {
        self.next_dts
    }

    /// Times the next access unit.
    pub fn next(&mut self, frame: Frame) -> SampleTiming {
        if let Some(pause_us) = self.rate.observe(frame.capture_us) {
            // Media time goes on after a pause as if it had not happened.
            if let Some(origin) = self.origin_us.as_mut() {
                *origin += i128::from(pause_us);
            }
        }
        if frame.idr || self.period.is_none() {
            self.start_period(&frame);
        }
        let dts = self.next_dts;
        let reordered = self.period.as_ref().is_some_and(|p| p.reordered);
        let (duration, pts) = if reordered {
            self.reordered(&frame, dts)
        } else {
            let duration = self.duration_now(frame.capture_us, frame.fps);
            let offset = self.period.as_ref().map_or(0, |p| p.offset);
            (duration, dts + offset)
        };
        debug_assert!((MIN_DURATION..=MAX_DURATION).contains(&duration));
        if let Some(p) = self.period.as_mut() {
            p.recent_dts[p.frames as usize % p.recent_dts.len()] = dts;
            p.frames += 1;
        }
        let composition_offset =
            (pts as i64 - dts as i64).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
        self.next_dts = dts + u64::from(duration);
        SampleTiming {
            decode_time: dts,
            duration,
            composition_offset,
            capture_us: frame.capture_us,
        }
    }

    /// A reordered frame at decode time `dts`: its duration and presentation time.
    fn reordered(&mut self, frame: &Frame, dts: u64) -> (u32, u64) {
        let free = self
            .period
            .as_ref()
            .is_some_and(|p| p.frames >= p.locked_until);
        let wanted = if free {
            self.duration_now(frame.capture_us, frame.fps)
        } else {
            0
        };
        let Some(p) = self.period.as_mut() else {
            unreachable!("start_period sets a period")
        };
        let duration = if free { wanted } else { p.locked_duration };
        let n = p.frames;
        let poc = if n == 0 {
            p.poc_start
        } else {
            frame.poc.unwrap_or(p.last_poc + p.poc_step)
        };
        p.last_poc = poc;
        let rel = poc - p.poc_start;
        if rel % 2 != 0 {
            p.odd_poc = true;
        }
        // Its place in display order; nonsense (beyond H.264's reordering) is taken
        // as decode order.
        let k = (rel / p.poc_step).clamp(0, i64::from(u32::MAX)) as u32;
        let k = if k.abs_diff(n) > MAX_REORDER { n } else { k };
        let slot = if k <= n {
            if k == n {
                dts
            } else {
                p.recent_dts[k as usize % p.recent_dts.len()]
            }
        } else {
            // Shown after frames not decoded yet: they keep this duration.
            p.locked_until = p.locked_until.max(k);
            p.locked_duration = duration;
            dts + u64::from(k - n) * u64::from(duration)
        };
        let pts = slot + p.offset;
        if pts < dts {
            let frames = (dts - pts).div_ceil(u64::from(duration));
            p.reorder_deficit = p
                .reorder_deficit
                .max(frames.min(u64::from(MAX_REORDER)) as u32);
        }
        (duration, pts)
    }

    /// The duration of a frame captured now: the measured frame interval, nudged
    /// toward the capture clock.
    fn duration_now(&mut self, capture_us: u64, fps: Option<f64>) -> u32 {
        let interval = i128::from(self.rate.last.unwrap_or_else(|| nominal(fps)));
        let dts = i128::from(self.next_dts);
        let capture = i128::from(capture_us);
        let origin = *self.origin_us.get_or_insert(capture - ticks_to_us(dts));
        let ahead = dts - us_to_ticks(capture - origin);
        if ahead.abs() > MAX_DRIFT {
            // A jump in the capture clock: decode time `dts` stands for now.
            self.origin_us = Some(capture - ticks_to_us(dts));
            self.drift = 0;
        } else {
            // Smoothed over about sixteen frames: frames read at once are a frame or
            // two late each, which must not make the durations swing.
            self.drift += (ahead - self.drift) / 16;
        }
        let frames_to_correct = (DRIFT_HORIZON / interval.max(1)).max(1);
        let limit = interval * MAX_CORRECTION_PER_MILLE / 1000;
        let correction = (self.drift / frames_to_correct).clamp(-limit, limit);
        clamp_duration(interval - correction)
    }

    fn start_period(&mut self, frame: &Frame) {
        let old = self.period.take();
        if let Some(o) = &old {
            self.reorder = self.reorder.saturating_add(o.reorder_deficit);
        }
        let poc_step = match &old {
            Some(o) if o.odd_poc || o.poc_step == 1 => 1,
            _ => 2,
        };
        let reordered = frame.reorder.is_some();
        let mut offset = match frame.reorder {
            Some(depth) => {
                self.reorder = self.reorder.max(depth.min(MAX_REORDER));
                let interval = self.rate.last.unwrap_or_else(|| nominal(frame.fps));
                // Room for a little more than the measured interval: durations may
                // grow by the drift correction.
                u64::from(self.reorder) * u64::from(interval) * 21 / 20
            }
            None => 0,
        };
        if let Some(max_pts) = self.max_pts {
            if max_pts >= self.next_dts + offset {
                offset = max_pts + 1 - self.next_dts;
            }
        }
        self.period = Some(Period {
            offset,
            reordered,
            poc_start: frame.poc.unwrap_or(0),
            poc_step,
            last_poc: frame.poc.unwrap_or(0),
            odd_poc: false,
            frames: 0,
            recent_dts: [0; 2 * MAX_REORDER as usize],
            locked_until: 0,
            locked_duration: 0,
            reorder_deficit: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_order(capture_us: u64, idr: bool) -> Frame {
        Frame {
            capture_us,
            idr,
            poc: None,
            reorder: None,
            fps: None,
        }
    }

    fn check_continuous(t: &[SampleTiming]) {
        for w in t.windows(2) {
            assert_eq!(
                w[1].decode_time,
                w[0].decode_time + u64::from(w[0].duration),
                "decode times continuous: {w:?}"
            );
        }
    }

    #[test]
    fn in_order_durations_are_the_cameras_frame_interval_not_each_delta() {
        let mut tl = Timeline::default();
        // 30 fps, but every other read brings two frames at once (same timestamp);
        // then a 5 s stall, and 30 fps again.
        let mut captures: Vec<u64> = (0..90u64).map(|i| 1_000_000 + (i | 1) * 33_333).collect();
        captures.extend((0..60u64).map(|i| 9_000_000 + i * 33_333));
        let t: Vec<_> = captures
            .iter()
            .enumerate()
            .map(|(i, &c)| tl.next(in_order(c, i == 0)))
            .collect();
        check_continuous(&t);
        assert_eq!(t[0].decode_time, 0);
        for (i, s) in t.iter().enumerate().skip(4) {
            assert!(
                (2900..=3100).contains(&s.duration),
                "sample {i} lasts {} ticks",
                s.duration
            );
        }
        // The stall is not in the media timeline: it goes on after it.
        let across = t[90].decode_time - t[89].decode_time;
        assert!(across < 3100, "{across}");
        assert!(t.iter().all(|s| s.composition_offset == 0));
    }

    #[test]
    fn first_duration_from_fps() {
        let mut tl = Timeline::default();
        let mut f = in_order(5, true);
        f.fps = Some(25.0);
        assert_eq!(tl.next(f).duration, 3600);
    }

    /// x264 -bf 2 with pyramid, decode order: I0 P6 B4(ref) b2 b... as POCs.
    fn reordered(capture_us: u64, idr: bool, poc: i64) -> Frame {
        Frame {
            capture_us,
            idr,
            poc: Some(poc),
            reorder: Some(2),
            fps: Some(30.0),
        }
    }

    fn gop(first_capture: u64, jitter: &[i64]) -> Vec<Frame> {
        // decode order of two mini-GOPs with 2 B-frames: I0 P6 B2 B4 P12 B8 B10
        let pocs = [0, 6, 2, 4, 12, 8, 10];
        pocs.iter()
            .enumerate()
            .map(|(i, &poc)| {
                let c = first_capture as i64 + i as i64 * 33_333 + jitter[i % jitter.len()];
                reordered(c as u64, i == 0, poc)
            })
            .collect()
    }

    #[test]
    fn reordered_presentation_follows_poc_even_with_bursty_capture_times() {
        let mut tl = Timeline::default();
        // capture times jitter by up to 30 ms (several access units per read)
        let mut frames = gop(1_000_000, &[0, -30_000, 20_000, 0, 25_000, -10_000]);
        frames.extend(gop(1_240_000, &[0, 30_000, -25_000]));
        frames.extend(gop(1_480_000, &[0]));
        let t: Vec<_> = frames.iter().map(|f| tl.next(*f)).collect();
        check_continuous(&t);
        // presentation order = POC order within each period, periods in sequence
        let mut by_pts: Vec<(i64, usize)> = t
            .iter()
            .enumerate()
            .map(|(i, s)| (s.presentation_time(), i))
            .collect();
        by_pts.sort();
        let order: Vec<usize> = by_pts.iter().map(|(_, i)| *i).collect();
        let expected: Vec<usize> = (0..3)
            .flat_map(|g| [0, 2, 3, 1, 5, 6, 4].map(|i| g * 7 + i))
            .collect();
        assert_eq!(order, expected);
        // no duplicates, pts >= dts with the SPS's reorder depth
        assert!(by_pts.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(t.iter().all(|s| s.composition_offset >= 0), "{t:?}");
    }

    #[test]
    fn reordered_timeline_tracks_the_capture_clock() {
        // camera at 25 fps while the SPS says 30: the period duration adapts
        let mut tl = Timeline::default();
        let mut t = Vec::new();
        for g in 0..20u64 {
            for (i, poc) in [0, 6, 2, 4, 12, 8, 10, 18, 14, 16].iter().enumerate() {
                let c = 10_000_000 + (g * 10 + i as u64) * 40_000;
                t.push(tl.next(reordered(c, i == 0, *poc)));
            }
        }
        check_continuous(&t);
        let last = t.last().expect("samples");
        let capture_span = us_to_ticks(i128::from(last.capture_us - t[0].capture_us));
        let dts_span = i128::from(last.decode_time - t[0].decode_time);
        assert!(
            (capture_span - dts_span).abs() < 3600,
            "decode time follows capture time: {capture_span} vs {dts_span}"
        );
    }

    #[test]
    fn too_shallow_reorder_depth_grows_at_the_next_idr() {
        let mut tl = Timeline::default();
        let mut t = Vec::new();
        for g in 0..3u64 {
            // the SPS claims no reorder depth, the stream has 2 B-frames
            for (i, poc) in [0, 6, 2, 4].iter().enumerate() {
                let mut f = reordered((g * 4 + i as u64) * 33_333, i == 0, *poc);
                f.reorder = Some(0);
                t.push(tl.next(f));
            }
        }
        check_continuous(&t);
        assert!(t[2].composition_offset < 0, "first period: pts < dts");
        assert!(t[4..].iter().all(|s| s.composition_offset >= 0), "{t:?}");
        let mut pts: Vec<i64> = t.iter().map(|s| s.presentation_time()).collect();
        pts.dedup();
        assert_eq!(pts.len(), t.len());
    }

    #[test]
    fn switching_from_reordered_to_in_order_never_overlaps() {
        let mut tl = Timeline::default();
        let mut t: Vec<_> = gop(0, &[0]).iter().map(|f| tl.next(*f)).collect();
        // the source restarts as Baseline
        for i in 0..5u64 {
            t.push(tl.next(in_order(5_000_000 + i * 33_333, i == 0)));
        }
        check_continuous(&t);
        let max_before = t[..7]
            .iter()
            .map(|s| s.presentation_time())
            .max()
            .expect("samples");
        assert!(t[7].presentation_time() > max_before);
        assert!(t[7..]
            .windows(2)
            .all(|w| w[1].presentation_time() > w[0].presentation_time()));
    }

    #[test]
    fn restart_gap_rebases_instead_of_stretching() {
        let mut tl = Timeline::default();
        let mut t: Vec<_> = gop(0, &[0]).iter().map(|f| tl.next(*f)).collect();
        // a 5 s gap: the next period keeps a normal frame duration
        t.extend(gop(5_000_000, &[0]).iter().map(|f| tl.next(*f)));
        check_continuous(&t);
        let d = t.last().expect("samples").duration;
        assert!((2500..=3500).contains(&d), "duration {d}");
    }
}

/// Random camera streams through the timeline: media time keeps to wall time.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Something that throws the capture clock off for a while.
    #[derive(Clone, Copy, Debug)]
    enum Disturbance {
        /// The source sends nothing for this long, then goes on with the GOP.
        Pause { us: u64 },
        /// The source dies mid-GOP and comes back after this long with an IDR.
        Restart { us: u64 },
        /// One GOP arrives at this speed (2: twice as fast, 0.5: half).
        Speed { factor: f64 },
    }

    #[derive(Clone, Debug)]
    struct Camera {
        interval_us: u64,
        /// Up to this fraction of an interval, late.
        jitter: f64,
        /// Chance that a frame waits for the next one (both read at once).
        burst: f64,
        /// B-frames between references (0: in order).
        bframes: u32,
        /// GOP lengths in frames, one after the other; with what happens in each.
        gops: Vec<(u32, Option<Disturbance>)>,
        seed: u64,
    }

    fn camera() -> impl Strategy<Value = Camera> {
        let disturbance = prop_oneof![
            (300_000u64..5_000_000).prop_map(|us| Disturbance::Pause { us }),
            (250_000u64..3_000_000).prop_map(|us| Disturbance::Restart { us }),
            prop_oneof![Just(0.5), Just(2.0)].prop_map(|factor| Disturbance::Speed { factor }),
        ];
        (
            prop_oneof![
                Just(100_000u64),
                Just(66_667),
                Just(40_000),
                Just(33_333),
                Just(16_667)
            ],
            0.0..0.2f64,
            0.0..0.3f64,
            0u32..4,
            prop::collection::vec(
                (1u32..300, prop::option::weighted(0.15, disturbance)),
                4..40,
            ),
            any::<u64>(),
        )
            .prop_map(|(interval_us, jitter, burst, bframes, gops, seed)| Camera {
                interval_us,
                jitter,
                burst,
                bframes,
                gops,
                seed,
            })
    }

    /// Display-order places of a GOP of `len` frames, in decode order: the IDR,
    /// then each reference before the B-frames shown ahead of it.
    fn decode_order(len: u32, bframes: u32) -> Vec<u32> {
        let mut order = vec![0];
        let mut next = 1;
        while next < len {
            let reference = (next + bframes).min(len - 1);
            order.push(reference);
            order.extend(next..reference);
            next = reference + 1;
        }
        order
    }

    /// One frame fed to the timeline, as the test knows it: when the camera took
    /// it (before jitter and reads of several frames at once delayed it), and
    /// whether a disturbance is going on around it.
    struct Fed {
        taken_us: u64,
        disturbed: bool,
    }

    /// The camera's frames: (frame for the timeline, what the test knows of it).
    fn frames(cam: &Camera) -> Vec<(Frame, Fed)> {
        let mut rng = testkit::rng::Rng(cam.seed);
        let mut out = Vec::new();
        let mut t = 10_000_000_000u64;
        let reorder = (cam.bframes > 0).then_some(cam.bframes);
        let mut waiting: Vec<(Frame, Fed)> = Vec::new();
        for &(len, disturbance) in &cam.gops {
            let mut order = decode_order(len, cam.bframes);
            let speed = match disturbance {
                Some(Disturbance::Speed { factor }) => factor,
                _ => 1.0,
            };
            let cut = match disturbance {
                Some(Disturbance::Pause { .. } | Disturbance::Restart { .. }) => {
                    Some((rng.next_u64() % u64::from(len)) as usize)
                }
                _ => None,
            };
            if let (Some(Disturbance::Restart { .. }), Some(at)) = (disturbance, cut) {
                order.truncate(at.max(1));
            }
            for (i, &place) in order.iter().enumerate() {
                if cut == Some(i) {
                    if let Some(Disturbance::Pause { us } | Disturbance::Restart { us }) =
                        disturbance
                    {
                        t += us;
                    }
                }
                t += (cam.interval_us as f64 / speed) as u64;
                let late = (rng.unit() * cam.jitter * cam.interval_us as f64) as u64;
                let frame = Frame {
                    capture_us: t + late,
                    idr: i == 0,
                    poc: reorder.map(|_| 2 * i64::from(place)),
                    reorder,
                    fps: None,
                };
                let fed = Fed {
                    taken_us: t,
                    disturbed: disturbance.is_some(),
                };
                waiting.push((frame, fed));
                if rng.unit() >= cam.burst {
                    // Read at once: all waiting frames get the last one's time.
                    let now = t + late;
                    for (mut f, fed) in waiting.drain(..) {
                        f.capture_us = now;
                        out.push((f, fed));
                    }
                }
            }
            if let Some(Disturbance::Restart { us }) = disturbance {
                if cut.is_none() {
                    t += us;
                }
            }
        }
        out.extend(waiting);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn media_time_keeps_to_wall_time(cam in camera()) {
            let input = frames(&cam);
            let mut tl = Timeline::default();
            let timings: Vec<SampleTiming> = input.iter().map(|(f, _)| tl.next(*f)).collect();
            // Continuous, strictly increasing decode times; durations 1 ms to 1 s.
            for w in timings.windows(2) {
                prop_assert_eq!(w[1].decode_time, w[0].decode_time + u64::from(w[0].duration));
            }
            for s in &timings {
                prop_assert!((MIN_DURATION..=MAX_DURATION).contains(&s.duration), "{:?}", s);
            }
            // Presentation times never repeat.
            let mut pts: Vec<i64> = timings.iter().map(SampleTiming::presentation_time).collect();
            pts.sort_unstable();
            prop_assert!(pts.windows(2).all(|w| w[0] < w[1]), "a presentation time repeats");
            // Any 10 s of wall time (as the camera took the frames) that begins 2 s
            // after the last disturbance and holds none: media time within 5 % of it.
            let mut settled_from = input[0].1.taken_us + 2_000_000;
            let mut window_start = 0usize;
            for (j, (_, fed)) in input.iter().enumerate() {
                if fed.disturbed || input[j.saturating_sub(1)].1.disturbed {
                    settled_from = fed.taken_us + 2_000_000;
                    window_start = j;
                    continue;
                }
                while window_start < j
                    && (input[window_start].1.taken_us < settled_from
                        || input[window_start].1.taken_us + 10_000_000 < fed.taken_us)
                {
                    window_start += 1;
                }
                let first = &input[window_start].1;
                let wall_us = fed.taken_us.saturating_sub(first.taken_us);
                if first.taken_us < settled_from || wall_us < 9_500_000 {
                    continue;
                }
                let media_us = (timings[j].decode_time - timings[window_start].decode_time)
                    * 1_000_000 / u64::from(TIMESCALE);
                let ratio = media_us as f64 / wall_us as f64;
                prop_assert!(
                    (0.95..=1.05).contains(&ratio),
                    "media {} ms for {} ms of wall time, frames {}..{}",
                    media_us / 1000, wall_us / 1000, window_start, j
                );
            }
        }
    }
}
