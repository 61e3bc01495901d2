//! Low-Latency HLS (RFC 8216bis with Apple's low-latency extensions) from the
//! fragments the hub already makes for /ws/fmp4: no second packaging, one copy of
//! each fragment into its part. No I/O and no clock: fragments in, playlist text and
//! part/segment bytes out.
//!
//! # Shape
//! - A **part** is the fragments (moof + mdat, one access unit each) of about
//!   [`HlsConfig::part_target`] of video, concatenated: a valid CMAF chunk. A part is
//!   closed as soon as one more picture of the same duration would make it longer
//!   than the target, so it is published the moment its last picture arrives.
//! - A **segment** starts at a keyframe and is its parts concatenated; it also ends
//!   when it would grow past [`HlsConfig::target_duration`] (a camera with a long
//!   GOP), the next segment then is not independent.
//! - A new init segment (new parameter sets: a resolution change, a camera restart)
//!   starts a new segment with `EXT-X-DISCONTINUITY` and a new `EXT-X-MAP`.
//! - Only the last [`HlsConfig::window`] segments are kept; parts are listed for the
//!   segments of the last three target durations, as the spec asks.
//! - Names carry a run id (`<run>/s<msn>.m4s`, `<run>/p<msn>.<part>.m4s`,
//!   `<run>/init<n>.mp4`) so that a cache in front never serves a previous run's
//!   bytes under a reused media sequence number: parts and segments are immutable.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::fmp4::TIMESCALE;

/// Settings of the HLS stream.
#[derive(Clone, Debug)]
pub struct HlsConfig {
    /// Part duration target, 90 kHz ticks.
    pub part_target: u32,
    /// Longest segment, whole seconds (EXT-X-TARGETDURATION).
    pub target_duration: u32,
    /// Segments kept in memory and listed.
    pub window: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            part_target: TIMESCALE / 5,
            target_duration: 4,
            window: 6,
        }
    }
}

/// One part: whole fragments.
#[derive(Clone, Debug)]
pub struct Part {
    /// moof + mdat, one per access unit.
    pub data: Bytes,
    /// Ticks.
    pub duration: u32,
    /// Starts with a keyframe.
    pub independent: bool,
}

#[derive(Debug)]
struct Segment {
    msn: u64,
    init: u32,
    discontinuity: bool,
    /// Capture time of its first picture, µs since the epoch.
    start_us: u64,
    parts: Vec<Part>,
    /// No more parts will come.
    complete: bool,
}

impl Segment {
    fn duration(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.duration)).sum()
    }
}

/// A request the playlist cannot answer yet or ever.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Ready now.
    Ready,
    /// Will be, when more parts come.
    Later,
    /// Out of range (too far ahead: the spec's 400), or gone from the window (404).
    Never,
}

/// The LL-HLS stream of one hub.
#[derive(Debug)]
pub struct Hls {
    config: HlsConfig,
    run: String,
    /// Init segments still referenced, by id.
    inits: VecDeque<(u32, Bytes)>,
    /// Complete segments, then the one being built (last).
    segments: VecDeque<Segment>,
    building: bool,
    /// Fragments of the open part.
    open: BytesMut,
    open_ticks: u32,
    open_independent: bool,
    next_msn: u64,
    /// Discontinuities dropped out of the window (EXT-X-DISCONTINUITY-SEQUENCE).
    discontinuity_sequence: u64,
    /// Bumped whenever a part or segment is published.
    version: u64,
}

impl Hls {
    /// An empty stream whose file names carry `run`.
    pub fn new(config: HlsConfig, run: impl Into<String>) -> Self {
        Hls {
            config,
            run: run.into(),
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            building: false,
            open: BytesMut::new(),
            open_ticks: 0,
            open_independent: false,
            next_msn: 0,
            discontinuity_sequence: 0,
            version: 0,
        }
    }

    /// Changes whenever something new can be fetched.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The run id in the file names.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Takes one fragment (one access unit) of `duration` ticks, captured at
    /// `capture_us`, for the init segment `init` (the same bytes, shared, while the
    /// parameter sets do not change). Returns whether a part was published.
    pub fn push(
        &mut self,
        init: &Bytes,
        fragment: &[u8],
        duration: u32,
        keyframe: bool,
        capture_us: u64,
    ) -> bool {
        let new_init = self.inits.back().is_none_or(|(_, b)| b != init);
        if new_init && !keyframe {
            // A new stream starts at a keyframe; until one comes there is nothing to play.
            if self.building {
                self.close_segment();
            }
            return self.take_version_bump(false);
        }
        let mut published = false;
        let long = self
            .segments
            .back()
            .filter(|_| self.building)
            .is_some_and(|s| {
                s.duration() + u64::from(self.open_ticks) + u64::from(duration)
                    > u64::from(self.config.target_duration) * u64::from(TIMESCALE)
            });
        if self.building && (keyframe || new_init || long) {
            published |= self.close_segment();
        }
        if new_init {
            let id = self.inits.back().map_or(0, |(id, _)| id + 1);
            self.inits.push_back((id, init.clone()));
        }
        if !self.building {
            if !keyframe && self.segments.is_empty() {
                return self.take_version_bump(published);
            }
            let init_id = self.inits.back().map_or(0, |(id, _)| *id);
            let discontinuity = new_init && !self.segments.is_empty();
            self.segments.push_back(Segment {
                msn: self.next_msn,
                init: init_id,
                discontinuity,
                start_us: capture_us,
                parts: Vec::new(),
                complete: false,
            });
            self.next_msn += 1;
            self.building = true;
            self.trim();
        }
        // This picture would make the open part longer than the target: close it first.
        if !self.open.is_empty()
            && u64::from(self.open_ticks) + u64::from(duration) > u64::from(self.config.part_target)
        {
            published |= self.close_part();
        }
        if self.open.is_empty() {
            self.open_independent = keyframe;
        }
        self.open.extend_from_slice(fragment);
        self.open_ticks = self.open_ticks.saturating_add(duration);
        // One more picture like this one would overshoot: the part is done now.
        if u64::from(self.open_ticks) + u64::from(duration) > u64::from(self.config.part_target) {
            published |= self.close_part();
        }
        self.take_version_bump(published)
    }

    fn take_version_bump(&mut self, published: bool) -> bool {
        if published {
            self.version += 1;
        }
        published
    }

    fn close_part(&mut self) -> bool {
        if self.open.is_empty() {
            return false;
        }
        let part = Part {
            data: self.open.split().freeze(),
            duration: self.open_ticks,
            independent: self.open_independent,
        };
        self.open_ticks = 0;
        match self.segments.back_mut() {
            Some(s) if self.building => {
                s.parts.push(part);
                true
            }
            _ => false,
        }
    }

    fn close_segment(&mut self) -> bool {
        let published = self.close_part();
        self.building = false;
        if let Some(s) = self.segments.back_mut() {
            if s.parts.is_empty() {
                self.segments.pop_back();
                self.next_msn -= 1;
                return published;
            }
            // The segment's bytes are its parts': nothing is copied, here under the
            // hub's lock or anywhere; a request sends the parts one after the other.
            s.complete = true;
        }
        true
    }

    /// Keeps `window` complete segments (and the one being built).
    fn trim(&mut self) {
        let keep = self.config.window + usize::from(self.building);
        while self.segments.len() > keep {
            if let Some(old) = self.segments.pop_front() {
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        // The first listed segment needs no discontinuity tag: it starts the playlist.
        if let Some(first) = self.segments.front_mut() {
            if first.discontinuity {
                first.discontinuity = false;
                self.discontinuity_sequence += 1;
            }
        }
        let oldest = self.segments.front().map(|s| s.init);
        while self.inits.len() > 1 && oldest.is_some_and(|o| self.inits[0].0 < o) {
            self.inits.pop_front();
        }
    }

    /// The last published (msn, part index): the part a blocking reload can ask for.
    fn last_part(&self) -> Option<(u64, usize)> {
        let s = self.segments.back()?;
        if self.building {
            match s.parts.len() {
                0 => self
                    .segments
                    .iter()
                    .rev()
                    .nth(1)
                    .and_then(|p| Some((p.msn, p.parts.len().checked_sub(1)?))),
                n => Some((s.msn, n - 1)),
            }
        } else {
            Some((s.msn, s.parts.len().checked_sub(1)?))
        }
    }

    /// Whether the playlist holds segment `msn` (complete, when `part` is None) or
    /// its part `part`: the blocking reload's `_HLS_msn`/`_HLS_part`.
    pub fn has(&self, msn: u64, part: Option<usize>) -> Wait {
        let Some((last_msn, last_part)) = self.last_part() else {
            return if msn <= 2 { Wait::Later } else { Wait::Never };
        };
        // The spec: a request more than two segments ahead is refused.
        if msn > last_msn + 2 {
            return Wait::Never;
        }
        let complete = |m: u64| self.segments.iter().any(|s| s.msn == m && s.complete);
        match part {
            None if complete(msn) || msn < last_msn => Wait::Ready,
            None => Wait::Later,
            Some(p) if msn < last_msn || (msn == last_msn && p <= last_part) => Wait::Ready,
            Some(p)
                if self
                    .segments
                    .iter()
                    .any(|s| s.msn == msn && s.complete && p >= s.parts.len()) =>
            {
                // Past the last part of a complete segment: that is the next segment's first.
                self.has(msn + 1, Some(0))
            }
            Some(_) => Wait::Later,
        }
    }

    /// Whether a blocking reload for segment `msn` (part `part`) names something
    /// of the live window: not older than the first listed segment, at most two
    /// segments past the last (the spec's bound), and a part at most the one after
    /// those its segment has (the next to come; a segment not begun has none yet).
    /// Anything else is a name a client made up, each one a cache miss.
    pub fn in_window(&self, msn: u64, part: Option<usize>) -> bool {
        let first = self.segments.front().map_or(0, |s| s.msn);
        // The same bound as `has`: two past the last, or 2 before any part.
        let last = self.last_part().map_or(2, |(m, _)| m + 2);
        if msn < first || msn > last {
            return false;
        }
        part.is_none_or(|p| {
            let parts = self
                .segments
                .iter()
                .find(|s| s.msn == msn)
                .map_or(0, |s| s.parts.len());
            p <= parts
        })
    }

    /// A part's bytes, or whether it may still come (only the next part of the
    /// segment being built may: a part further ahead is no name a playlist gave).
    pub fn part(&self, msn: u64, index: usize) -> Result<Bytes, Wait> {
        match self.segments.iter().find(|s| s.msn == msn) {
            Some(s) => match s.parts.get(index) {
                Some(p) => Ok(p.data.clone()),
                None if index == s.parts.len()
                    && !s.complete
                    && self.building
                    && s.msn + 1 == self.next_msn =>
                {
                    Err(Wait::Later)
                }
                None => Err(Wait::Never),
            },
            None if msn == self.next_msn && index == 0 => Err(Wait::Later),
            None => Err(Wait::Never),
        }
    }

    /// A complete segment's parts (its bytes, in order; shared, cheap to clone:
    /// sent one after the other, never joined into a copy), or whether it may
    /// still come.
    pub fn segment(&self, msn: u64) -> Result<Vec<Bytes>, Wait> {
        match self.segments.iter().find(|s| s.msn == msn) {
            Some(s) if s.complete => Ok(s.parts.iter().map(|p| p.data.clone()).collect()),
            Some(_) => Err(Wait::Later),
            None if msn == self.next_msn => Err(Wait::Later),
            None => Err(Wait::Never),
        }
    }

    /// An init segment by id.
    pub fn init(&self, id: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.clone())
    }

    /// The media playlist; None before the first part.
    pub fn playlist(&self) -> Option<String> {
        let (last_msn, last_part) = self.last_part()?;
        let cfg = &self.config;
        let secs = |ticks: u64| ticks as f64 / f64::from(TIMESCALE);
        let part_target = secs(u64::from(cfg.part_target));
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", cfg.target_duration);
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            3.0 * part_target,
            3.0 * f64::from(cfg.target_duration)
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let first = self.segments.front()?;
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        // Parts are listed for the segments of the last three target durations.
        let horizon = 3 * u64::from(cfg.target_duration) * u64::from(TIMESCALE);
        let mut from_end = 0u64;
        let mut list_parts_from = u64::MAX;
        for s in self.segments.iter().rev() {
            list_parts_from = s.msn;
            from_end += s.duration();
            if from_end >= horizon {
                break;
            }
        }
        let mut init = None;
        for s in &self.segments {
            if s.parts.is_empty() {
                continue;
            }
            if s.discontinuity {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if init != Some(s.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}/init{}.mp4\"", self.run, s.init);
                init = Some(s.init);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", date_time(s.start_us));
            if s.msn >= list_parts_from {
                for (i, p) in s.parts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{}/p{}.{}.m4s\"{}",
                        secs(u64::from(p.duration)),
                        self.run,
                        s.msn,
                        i,
                        if p.independent {
                            ",INDEPENDENT=YES"
                        } else {
                            ""
                        }
                    );
                }
            }
            if s.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},", secs(s.duration()));
                let _ = writeln!(out, "{}/s{}.m4s", self.run, s.msn);
            }
        }
        // The part that comes next: a client asks for it now and gets it the moment
        // it is complete.
        let (hint_msn, hint_part) =
            if self.building && self.segments.back().is_some_and(|s| s.msn == last_msn) {
                (last_msn, last_part + 1)
            } else {
                (last_msn + 1, 0)
            };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}/p{}.{}.m4s\"",
            self.run, hint_msn, hint_part
        );
        Some(out)
    }
}

/// µs since the epoch as ISO 8601 in UTC with milliseconds.
fn date_time(us: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::microseconds(us as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u32 = TIMESCALE / 30;

    fn feed(hls: &mut Hls, init: &Bytes, frames: usize, gop: usize, start: usize) -> usize {
        let mut published = 0;
        for i in start..start + frames {
            let data = format!("f{i};");
            if hls.push(
                init,
                data.as_bytes(),
                FRAME,
                i % gop == 0,
                1_700_000_000_000_000 + i as u64 * 33_333,
            ) {
                published += 1;
            }
        }
        published
    }

    #[test]
    fn parts_of_six_pictures_segments_of_one_gop() {
        let mut hls = Hls::new(HlsConfig::default(), "r1");
        let init = Bytes::from_static(b"init-a");
        assert!(hls.playlist().is_none());
        feed(&mut hls, &init, 60 * 2 + 7, 60, 0);
        let pl = hls.playlist().expect("playlist");
        // Two complete GOP segments of ten 0.2 s parts, one segment being built.
        assert_eq!(pl.matches("#EXTINF:2.00000,").count(), 2, "{pl}");
        assert_eq!(
            pl.matches("#EXT-X-PART:DURATION=0.20000").count(),
            21,
            "{pl}"
        );
        assert_eq!(pl.matches("INDEPENDENT=YES").count(), 3);
        assert!(pl.contains("r1/s0.m4s") && pl.contains("r1/s1.m4s") && !pl.contains("r1/s2.m4s"));
        assert!(
            pl.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"r1/p2.1.m4s\""),
            "{pl}"
        );
        assert!(pl.contains("#EXT-X-MAP:URI=\"r1/init0.mp4\""));
        assert!(
            pl.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"),
            "{pl}"
        );
        // A segment is its parts, concatenated; parts hold whole fragments in order.
        let seg: Vec<u8> = hls.segment(0).expect("segment 0").concat();
        let parts: Vec<u8> = (0..10)
            .flat_map(|i| hls.part(0, i).expect("part").to_vec())
            .collect();
        assert_eq!(seg, parts);
        assert_eq!(&hls.part(0, 0).expect("part")[..], b"f0;f1;f2;f3;f4;f5;");
        assert_eq!(hls.init(0).as_deref(), Some(&b"init-a"[..]));
    }

    #[test]
    fn blocking_reload_answers_what_exists_waits_for_what_comes_refuses_the_far_future() {
        let mut hls = Hls::new(HlsConfig::default(), "r");
        let init = Bytes::from_static(b"i");
        assert_eq!(hls.has(0, Some(0)), Wait::Later);
        feed(&mut hls, &init, 66, 60, 0); // segment 0 complete (10 parts), segment 1 has part 0
        assert_eq!(hls.has(0, None), Wait::Ready);
        assert_eq!(hls.has(1, Some(0)), Wait::Ready);
        assert_eq!(hls.has(1, Some(1)), Wait::Later);
        assert_eq!(hls.has(1, None), Wait::Later);
        assert_eq!(
            hls.has(0, Some(10)),
            Wait::Ready,
            "past the last part of a complete segment is the next one's first"
        );
        assert_eq!(hls.has(4, None), Wait::Never);
        assert_eq!(hls.part(1, 1).unwrap_err(), Wait::Later);
        assert_eq!(hls.part(2, 0).unwrap_err(), Wait::Later);
        assert_eq!(hls.part(0, 10).unwrap_err(), Wait::Never);
        assert_eq!(hls.segment(1).unwrap_err(), Wait::Later);
        let v = hls.version();
        feed(&mut hls, &init, 6, 60, 66);
        assert!(hls.version() > v);
        assert_eq!(hls.has(1, Some(1)), Wait::Ready);
    }

    #[test]
    fn the_window_keeps_the_last_segments_and_names_stay_unique() {
        let config = HlsConfig {
            window: 3,
            ..HlsConfig::default()
        };
        let mut hls = Hls::new(config, "r");
        let init = Bytes::from_static(b"i");
        feed(&mut hls, &init, 60 * 10, 60, 0);
        let pl = hls.playlist().expect("playlist");
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:6"), "{pl}");
        assert_eq!(hls.segment(5).unwrap_err(), Wait::Never, "gone");
        assert!(hls.segment(8).is_ok());
        assert_eq!(
            hls.has(2, None),
            Wait::Ready,
            "an old msn is answered at once (with the current playlist)"
        );
    }

    #[test]
    fn only_names_of_the_live_window_are_waited_for() {
        let config = HlsConfig {
            window: 3,
            ..HlsConfig::default()
        };
        let mut hls = Hls::new(config, "r");
        let init = Bytes::from_static(b"i");
        assert!(hls.in_window(0, Some(0)) && hls.in_window(2, None));
        assert!(
            !hls.in_window(3, None),
            "the spec's bound before any part too"
        );
        // Segments 6, 7, 8 complete (10 parts each), 9 has 2 parts, 10 is next.
        feed(&mut hls, &init, 60 * 9 + 12, 60, 0);
        // (msn, part, in the window)
        for (msn, part, ok) in [
            (5, None, false),
            (5, Some(0), false),
            (6, None, true),
            (8, Some(9), true),
            (8, Some(10), true), // the next segment's first, by the spec
            (8, Some(11), false),
            (9, Some(2), true),
            (9, Some(3), false),
            (9, Some(1_000_000), false),
            (10, None, true),
            (10, Some(0), true),
            (10, Some(1), false),
            (11, None, true),
            (12, None, false),
            (u64::MAX, None, false),
        ] {
            assert_eq!(hls.in_window(msn, part), ok, "{msn} {part:?}");
        }
        // The next part is waited for; one further ahead is no name at all.
        assert_eq!(hls.part(9, 2).unwrap_err(), Wait::Later);
        assert_eq!(hls.part(9, 3).unwrap_err(), Wait::Never);
        assert_eq!(hls.part(10, 0).unwrap_err(), Wait::Later);
        assert_eq!(hls.part(10, 1).unwrap_err(), Wait::Never);
    }

    #[test]
    fn new_parameters_start_a_segment_with_a_discontinuity_and_a_new_map() {
        let mut hls = Hls::new(HlsConfig::default(), "r");
        feed(&mut hls, &Bytes::from_static(b"a"), 70, 60, 0);
        // The camera restarts at another size: its first access unit is a keyframe.
        feed(&mut hls, &Bytes::from_static(b"b"), 30, 60, 0);
        let pl = hls.playlist().expect("playlist");
        assert_eq!(pl.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{pl}");
        assert!(pl.contains("init0.mp4") && pl.contains("init1.mp4"));
        let map_b = pl.find("init1.mp4").expect("map");
        let disc = pl.find("#EXT-X-DISCONTINUITY\n").expect("disc");
        assert!(disc < map_b);
        // A short segment (the 10 pictures before the restart) is complete.
        assert!(pl.contains("#EXTINF:0.33333,"), "{pl}");
    }

    #[test]
    fn a_long_gop_is_cut_at_the_target_duration() {
        let mut hls = Hls::new(HlsConfig::default(), "r");
        feed(&mut hls, &Bytes::from_static(b"a"), 30 * 9, 10_000, 0);
        let pl = hls.playlist().expect("playlist");
        assert_eq!(pl.matches("#EXTINF:4.00000,").count(), 2, "{pl}");
        assert_eq!(
            pl.matches("INDEPENDENT=YES").count(),
            1,
            "only the first part starts with a keyframe"
        );
    }

    #[test]
    fn a_part_never_outgrows_the_target_when_pictures_run_long() {
        let mut hls = Hls::new(HlsConfig::default(), "r");
        let init = Bytes::from_static(b"a");
        // Capture jitter: some pictures a little longer than 1/30 s.
        for i in 0..200u32 {
            let duration = if i % 3 == 0 { FRAME + 2 } else { FRAME };
            hls.push(&init, b"x", duration, i % 60 == 0, u64::from(i) * 33_333);
        }
        let pl = hls.playlist().expect("playlist");
        for line in pl.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
            let d: f64 = line[22..]
                .split(',')
                .next()
                .and_then(|d| d.parse().ok())
                .expect("duration");
            assert!(d <= 0.2, "{line}");
        }
    }

    #[test]
    fn nothing_before_the_first_keyframe() {
        let mut hls = Hls::new(HlsConfig::default(), "r");
        let init = Bytes::from_static(b"a");
        assert!(!hls.push(&init, b"x", FRAME, false, 0));
        assert!(hls.playlist().is_none());
        feed(&mut hls, &init, 6, 60, 0);
        assert!(hls.playlist().expect("playlist").contains("r/p0.0.m4s"));
    }
}
