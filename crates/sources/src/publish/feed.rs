//! What a publisher's ffmpeg is fed and what it says back (pure: queue items and
//! text in, bytes and decisions out).
use std::time::{Duration, Instant};

use bytes::Bytes;

use nalcast_core::queue::Item;

/// What to do with one queue item.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to write (a status, a skip notice, a picture before the first keyframe).
    Wait,
    /// Write these buffers, in order, to ffmpeg's standard input.
    Write(Vec<Bytes>),
    /// The stream's parameters changed: this ffmpeg has the old init segment, so
    /// start a new one (its subscription starts at the new keyframe).
    Restart,
}

/// Turns the hub's access units into one fMP4 file for ffmpeg: the init segment,
/// then one fragment per access unit, from a keyframe on. The fragments carry the
/// hub's 90 kHz decode times made from capture times, so ffmpeg passes on the
/// camera's real timing (raw Annex-B would make it invent 25 fps).
///
/// Invariant: nothing is written before an init segment and a keyframe, and after
/// a gap (an overflow, a picture that could not be packaged) nothing until the
/// next keyframe.
#[derive(Debug, Default)]
pub struct Feed {
    /// The init segment this ffmpeg was given.
    init: Option<Bytes>,
    /// A picture was missed: wait for the next keyframe.
    broken: bool,
}

impl Feed {
    /// A feed that has written nothing yet.
    pub fn new() -> Feed {
        Feed::default()
    }

    /// Whether the init segment has been written (ffmpeg has something to read).
    pub fn started(&self) -> bool {
        self.init.is_some()
    }

    /// What to write for `item`.
    pub fn next(&mut self, item: &Item) -> Step {
        let au = match item {
            Item::Au { au, .. } => au,
            // The queue resumes at a keyframe by itself; the decode times after the
            // gap are the real ones, so the server sees a gap, not a jump.
            Item::Skipped(_) | Item::Status(_) => return Step::Wait,
        };
        let Some(fmp4) = au.fmp4.as_ref() else {
            // Not packaged (the hub logged why): the pictures that follow it cannot
            // be decoded until the next keyframe.
            self.broken = true;
            return Step::Wait;
        };
        let init = fmp4.init_segment();
        match &self.init {
            None if au.keyframe() => {
                self.init = Some(init.clone());
                Step::Write(vec![init, fmp4.fragment()])
            }
            None => Step::Wait,
            // A source restart makes new parameter sets, usually the same bytes:
            // then the same ffmpeg goes on.
            Some(sent) if *sent != init => Step::Restart,
            Some(_) if self.broken && !au.keyframe() => Step::Wait,
            Some(_) => {
                self.broken = false;
                Step::Write(vec![fmp4.fragment()])
            }
        }
    }
}

/// The number of pictures ffmpeg has sent, from a line of its `-progress` output
/// (`frame=123`).
pub fn progress_frames(line: &str) -> Option<u64> {
    line.trim().strip_prefix("frame=")?.trim().parse().ok()
}

/// The protocols ffmpeg can write to, from `ffmpeg -protocols`' output (an
/// "Input:" list, then an "Output:" list, one name per line).
pub fn output_protocols(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "Output:")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How many of ffmpeg's stderr lines reach the log: a broken connection can make it
/// print a line per picture, and a restart loop a few lines a second.
#[derive(Debug)]
pub struct LineBudget {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// What to do with one stderr line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` lines were left out before it.
    Log {
        /// Lines dropped since the last one logged.
        suppressed: u64,
    },
    /// Leave it out (counted).
    Drop,
}

impl LineBudget {
    /// At most `per_window` lines every `window`.
    pub fn new(per_window: u32, window: Duration) -> LineBudget {
        LineBudget {
            per_window,
            window,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line that came at `now` is logged.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let fresh = self
            .started
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
        if fresh {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_window {
            self.suppressed += 1;
            return Admit::Drop;
        }
        self.used += 1;
        Admit::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nalcast_h264::AccessUnit;

    use super::*;
    use nalcast_core::fmp4::Packager;
    use nalcast_core::protocol;
    use nalcast_core::shared::{Fmp4Unit, SharedAu};
    use testkit::au::sized as access_unit;

    /// An access unit as the hub shares it, packaged with `init` (its bytes stand in
    /// for the parameter sets).
    fn packaged(seq: u32, keyframe: bool, init: &[u8]) -> Item {
        let au: AccessUnit = access_unit(keyframe, 100);
        let mut packager = Packager::new();
        let fragment = packager.fragment(&au).expect("fragment");
        let unit = Fmp4Unit {
            init: protocol::encode_init_segment(init),
            message: protocol::encode_fragment(0, seq, au.timestamp_us, &fragment),
        };
        Item::Au {
            au: Arc::new(SharedAu::new(seq, au, Instant::now()).with_fmp4(unit)),
            catch_up: false,
        }
    }

    fn unpackaged(seq: u32, keyframe: bool) -> Item {
        Item::Au {
            au: Arc::new(SharedAu::new(
                seq,
                access_unit(keyframe, 100),
                Instant::now(),
            )),
            catch_up: false,
        }
    }

    fn sizes(step: Step) -> Vec<usize> {
        match step {
            Step::Write(bufs) => bufs.iter().map(Bytes::len).collect(),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn starts_at_a_keyframe_with_the_init_segment() {
        let mut feed = Feed::new();
        assert_eq!(feed.next(&packaged(0, false, b"init")), Step::Wait);
        assert_eq!(feed.next(&Item::Skipped(3)), Step::Wait);
        assert!(!feed.started());
        let Item::Au { au, .. } = packaged(1, true, b"init") else {
            unreachable!()
        };
        let fmp4 = au.fmp4.clone().expect("packaged");
        let step = feed.next(&Item::Au { au, catch_up: true });
        assert_eq!(
            step,
            Step::Write(vec![Bytes::from_static(b"init"), fmp4.fragment()])
        );
        assert!(fmp4.fragment().starts_with(&fmp4.fragment()[..8]));
        assert_eq!(
            &fmp4.fragment()[4..8],
            b"moof",
            "the fragment without its header"
        );
        assert!(feed.started());
        assert_eq!(sizes(feed.next(&packaged(2, false, b"init"))).len(), 1);
    }

    #[test]
    fn same_parameters_go_on_new_ones_restart() {
        let mut feed = Feed::new();
        sizes(feed.next(&packaged(0, true, b"init-a")));
        // A source restart with the same parameter sets: a new Arc, the same bytes.
        sizes(feed.next(&packaged(1, true, b"init-a")));
        assert_eq!(feed.next(&packaged(2, true, b"init-b")), Step::Restart);
    }

    #[test]
    fn a_missing_picture_waits_for_the_next_keyframe() {
        let mut feed = Feed::new();
        sizes(feed.next(&packaged(0, true, b"init")));
        assert_eq!(feed.next(&unpackaged(1, false)), Step::Wait);
        assert_eq!(feed.next(&packaged(2, false, b"init")), Step::Wait);
        assert_eq!(sizes(feed.next(&packaged(3, true, b"init"))).len(), 1);
        assert_eq!(sizes(feed.next(&packaged(4, false, b"init"))).len(), 1);
    }

    #[test]
    fn progress_and_protocol_listings_are_read() {
        assert_eq!(progress_frames("frame=42"), Some(42));
        assert_eq!(progress_frames("fps=30.0"), None);
        assert_eq!(progress_frames("frame=N/A"), None);
        let listing =
            "Supported file protocols:\nInput:\n  rtmp\n  srt\nOutput:\n  file\n  rtmp\n  rtmps\n";
        assert_eq!(output_protocols(listing), ["file", "rtmp", "rtmps"]);
        assert!(output_protocols("garbage").is_empty());
    }

    #[test]
    fn stderr_lines_are_rate_limited_and_the_dropped_ones_counted() {
        let t = Instant::now();
        let mut budget = LineBudget::new(2, Duration::from_secs(10));
        assert_eq!(budget.admit(t), Admit::Log { suppressed: 0 });
        assert_eq!(budget.admit(t), Admit::Log { suppressed: 0 });
        assert_eq!(budget.admit(t), Admit::Drop);
        assert_eq!(budget.admit(t + Duration::from_secs(9)), Admit::Drop);
        assert_eq!(
            budget.admit(t + Duration::from_secs(10)),
            Admit::Log { suppressed: 2 }
        );
        assert_eq!(
            budget.admit(t + Duration::from_secs(11)),
            Admit::Log { suppressed: 0 }
        );
    }
}
