//! Decode and presentation times of samples, in 90 kHz ticks, from capture times and
//! picture order counts.
//!
//! Invariants (checked by the tests and debug-asserted):
//! - decode times are continuous: each sample starts where the previous one ended;
//! - presentation times never repeat and follow picture order, within an IDR
//!   period (from POC) and across periods (each period starts after the last
//!   presentation time handed out).
//!
//! Two ways to time a period (an IDR and the pictures up to the next one):
//! - *in order* (output order is decode order: POC type 2, Baseline, or a VUI that
//!   says no reordering): each sample lasts the capture-time delta of the last pair,
//!   so the timeline follows the camera's clock frame by frame;
//! - *reordered* (B-frames possible): every sample of the period lasts the same
//!   time, chosen at the IDR from the previous period's capture-time span, nudged
//!   toward the capture clock. A picture's presentation time is then its POC
//!   distance from the IDR times that duration: jittery capture times (several
//!   access units read in one chunk share a timestamp) cannot swap two pictures.

/// Ticks per second of the media timeline.
pub const TIMESCALE: u32 = 90_000;

/// Shortest sample duration: 1 ms (a burst of access units read at once).
const MIN_DURATION: u32 = TIMESCALE / 1000;
/// Longest sample duration: 1 s (a stalled or restarted source).
const MAX_DURATION: u32 = TIMESCALE;
/// Without an fps in the SPS, the first sample lasts 1/30 s.
const DEFAULT_DURATION: u32 = TIMESCALE / 30;
/// A reordered period's duration is nudged toward the capture clock while the gap
/// is under this; a bigger gap (source restart) moves the clock's origin instead.
const MAX_DRIFT_CORRECTION: i128 = TIMESCALE as i128 / 2;
/// Frames per period assumed for the first correction (before a period was seen).
const DEFAULT_PERIOD_FRAMES: i128 = 30;

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

#[derive(Clone, Debug)]
struct Period {
    dts_start: u64,
    capture_start: u64,
    /// Presentation minus decode time of the IDR.
    offset: u64,
    /// `Some(d)`: reordered, every sample lasts `d`.
    fixed: Option<u32>,
    poc_start: i64,
    /// POC units per frame: 2 (the usual: a frame's two fields), 1 once a stream
    /// was seen counting by one.
    poc_step: i64,
    last_poc: i64,
    odd_poc: bool,
    frames: u32,
    /// Frames of reordering seen beyond what the offset allowed for.
    reorder_deficit: u32,
}

/// The timing state of one packager.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    next_dts: u64,
    prev_capture_us: Option<u64>,
    max_pts: Option<u64>,
    /// Reorder depth in frames; grows, never shrinks, so periods never overlap.
    reorder: u32,
    period: Option<Period>,
    /// The capture time (µs) decode time 0 stands for, in reordered periods.
    origin_us: Option<i128>,
}

fn clamp_duration(ticks: i128) -> u32 {
    ticks.clamp(i128::from(MIN_DURATION), i128::from(MAX_DURATION)) as u32
}

fn us_to_ticks(us: i128) -> i128 {
    us * i128::from(TIMESCALE) / 1_000_000
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
        if frame.idr || self.period.is_none() {
            self.start_period(&frame);
        }
        let dts = self.next_dts;
        let prev_capture = self.prev_capture_us;
        let Some(p) = self.period.as_mut() else {
            unreachable!("start_period sets a period")
        };
        let (duration, pts) = match p.fixed {
            None => {
                let duration = match prev_capture {
                    // Ticks of the absolute times, so the rounding errors of
                    // successive deltas cancel (3000, 2999, 3000, …).
                    Some(prev) => clamp_duration(
                        us_to_ticks(i128::from(frame.capture_us)) - us_to_ticks(i128::from(prev)),
                    ),
                    None => nominal(frame.fps),
                };
                (duration, dts + p.offset)
            }
            Some(d) => {
                let poc = if p.frames == 0 {
                    p.poc_start
                } else {
                    frame.poc.unwrap_or(p.last_poc + p.poc_step)
                };
                p.last_poc = poc;
                let rel = poc - p.poc_start;
                if rel % 2 != 0 {
                    p.odd_poc = true;
                }
                let shift = rel.saturating_mul(i64::from(d)) / p.poc_step;
                let pts = (p.dts_start as i64)
                    .saturating_add(p.offset as i64)
                    .saturating_add(shift)
                    .max(0) as u64;
                if pts < dts {
                    let frames = (dts - pts).div_ceil(u64::from(d));
                    p.reorder_deficit = p.reorder_deficit.max(frames.min(16) as u32);
                }
                (d, pts)
            }
        };
        p.frames += 1;
        let composition_offset =
            (pts as i64 - dts as i64).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
        self.next_dts = dts + u64::from(duration);
        self.prev_capture_us = Some(frame.capture_us);
        SampleTiming {
            decode_time: dts,
            duration,
            composition_offset,
            capture_us: frame.capture_us,
        }
    }

    fn start_period(&mut self, frame: &Frame) {
        let old = self.period.take();
        let capture = i128::from(frame.capture_us);
        // The frame interval the camera kept over the last period, unless it is far
        // from what was used so far (a source restart, a stall): then that.
        let before = old
            .as_ref()
            .and_then(|o| o.fixed)
            .unwrap_or_else(|| nominal(frame.fps));
        let estimate = old
            .as_ref()
            .filter(|o| o.frames > 0 && frame.capture_us > o.capture_start)
            .map(|o| {
                clamp_duration(
                    (us_to_ticks(capture) - us_to_ticks(i128::from(o.capture_start)))
                        / i128::from(o.frames),
                )
            })
            .filter(|e| *e <= before.saturating_mul(4) && e.saturating_mul(4) >= before)
            .unwrap_or(before);
        if let Some(o) = &old {
            self.reorder = self.reorder.saturating_add(o.reorder_deficit);
        }
        let poc_step = match &old {
            Some(o) if o.odd_poc || o.poc_step == 1 => 1,
            _ => 2,
        };
        let fixed = frame.reorder.map(|depth| {
            self.reorder = self.reorder.max(depth.min(16));
            let dts = i128::from(self.next_dts);
            let err = self
                .origin_us
                .map(|origin| dts - us_to_ticks(capture - origin))
                .filter(|err| err.abs() <= MAX_DRIFT_CORRECTION);
            let err = err.unwrap_or_else(|| {
                // First reordered period, or a jump (source restart): decode time
                // `next_dts` stands for this capture time from now on.
                self.origin_us = Some(capture - dts * 1_000_000 / i128::from(TIMESCALE));
                0
            });
            let frames = old
                .as_ref()
                .map(|o| i128::from(o.frames))
                .filter(|f| *f > 0)
                .unwrap_or(DEFAULT_PERIOD_FRAMES);
            let est = i128::from(estimate);
            clamp_duration((est - err / frames).clamp(est / 2, est * 3 / 2))
        });
        if fixed.is_none() {
            self.origin_us = None;
        }
        let mut offset = fixed.map_or(0, |d| u64::from(self.reorder) * u64::from(d));
        if let Some(max_pts) = self.max_pts {
            if max_pts >= self.next_dts + offset {
                offset = max_pts + 1 - self.next_dts;
            }
        }
        self.period = Some(Period {
            dts_start: self.next_dts,
            capture_start: frame.capture_us,
            offset,
            fixed,
            poc_start: frame.poc.unwrap_or(0),
            poc_step,
            last_poc: frame.poc.unwrap_or(0),
            odd_poc: false,
            frames: 0,
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
    fn in_order_durations_follow_capture_deltas_clamped() {
        let mut tl = Timeline::default();
        let captures = [
            1_000_000, 1_033_333, 1_066_666, 1_066_666, 1_200_000, 9_000_000,
        ];
        let t: Vec<_> = captures
            .iter()
            .enumerate()
            .map(|(i, &c)| tl.next(in_order(c, i == 0)))
            .collect();
        check_continuous(&t);
        assert_eq!(t[0].decode_time, 0);
        let durations: Vec<u32> = t.iter().map(|s| s.duration).collect();
        // first from the default 1/30 s, then the delta of the last pair, clamped
        // to 1 ms (same timestamp) and 1 s (a stall)
        assert_eq!(durations, vec![3000, 2999, 3000, 90, 12001, 90000]);
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
