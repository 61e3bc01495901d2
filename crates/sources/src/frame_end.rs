//! When a byte source's frame is complete: at the next frame's start code (always
//! right, one frame interval late), or earlier, once the pipe has been quiet for a
//! while after the frame's bytes (33 ms sooner at 30 fps), where that is safe.
//!
//! An Annex-B stream marks where a NAL unit starts, never where it ends, so a quiet
//! pipe is a guess: a writer descheduled in the middle of a frame (a busy Pi, a
//! keyframe written in pieces) looks the same for a while. The guess is taken only
//! when the writer's own record makes it safe; no clock is read here (time is
//! passed in), so the rule is tested with made-up writers:
//! - nothing is guessed until [`LEARN_FRAMES`] frames have shown how the writer
//!   writes: frames end at start codes meanwhile;
//! - the quiet time is four times the longest pause seen inside a frame lately
//!   (pauses between reads that the frame's bytes went on after), at least 2 ms;
//!   where that is half the frame interval or more, there are no guesses at all
//!   (they would gain little and risk a cut frame);
//! - a read that filled the whole buffer means more bytes are waiting (a frame
//!   larger than the pipe): no guess until a read comes back short; so does a read
//!   of a power of two from 4 KiB, a writer's buffer flushed whole (ffmpeg writes
//!   a large frame 32 KiB at a time, and a busy machine can hold back the rest
//!   longer than any pause learnt; a whole frame of exactly such a size is rare,
//!   and costs it only the wait for the next start code);
//! - a guess that turns out wrong (the stream shows bytes with no start code, or a
//!   picture's later slice first) ends guessing for good, also across restarts of
//!   the source, since the same writer will do it again.
use std::time::{Duration, Instant};

/// Frames ended at start codes before any quiet end is taken.
pub const LEARN_FRAMES: u32 = 30;
/// The shortest quiet time taken as a frame's end.
pub const MIN_QUIET: Duration = Duration::from_millis(2);
/// The quiet time is this many times the longest pause seen inside a frame.
const QUIET_PER_PAUSE: u32 = 4;
/// Pauses inside frames remembered (a few seconds of frames).
const PAUSES_KEPT: usize = 128;
/// The smallest read taken as a writer's whole buffer (a power of two, from this).
const MIN_CHUNK: usize = 4096;

/// The frame-end rule of one byte source, kept across its restarts.
#[derive(Clone, Debug)]
pub struct FrameEnds {
    /// Frames seen end at start codes (learning).
    frames_seen: u32,
    /// Longest pauses inside frames, most recent last.
    pauses: [Duration; PAUSES_KEPT],
    pauses_next: usize,
    /// Time between the ends of frames, smoothed.
    interval: Option<Duration>,
    /// When the last frame ended.
    last_end: Option<Instant>,
    /// When the last bytes came, if the frame they belong to has not ended.
    unended_since: Option<Instant>,
    /// The last read filled the whole buffer, or looked like the writer's.
    more_waiting: bool,
    /// A guess went wrong: no more guesses.
    given_up: bool,
}

impl Default for FrameEnds {
    fn default() -> Self {
        FrameEnds {
            frames_seen: 0,
            pauses: [Duration::ZERO; PAUSES_KEPT],
            pauses_next: 0,
            interval: None,
            last_end: None,
            unended_since: None,
            more_waiting: false,
            given_up: false,
        }
    }
}

/// What happened to the bytes of one read.
#[derive(Clone, Copy, Debug)]
pub struct Read {
    /// When they came.
    pub at: Instant,
    /// How many bytes came.
    pub len: usize,
    /// The read filled the whole buffer: more is likely waiting.
    pub filled: bool,
    /// They ended a frame (the next frame's start code came in them).
    pub ended_frame: bool,
    /// Part of them belongs to a frame not ended yet.
    pub left_unended: bool,
}

impl FrameEnds {
    /// A rule that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the outcome of a read.
    pub fn read(&mut self, read: Read) {
        if let Some(since) = self.unended_since {
            let gap = read.at.saturating_duration_since(since);
            if !read.ended_frame {
                // The frame went on after this pause: the writer pauses this long
                // inside frames.
                self.pauses[self.pauses_next] = gap;
                self.pauses_next = (self.pauses_next + 1) % PAUSES_KEPT;
            }
        }
        if read.ended_frame {
            self.frame_ended(read.at);
        }
        let writers_buffer = read.len >= MIN_CHUNK && read.len.is_power_of_two();
        self.more_waiting = read.filled || writers_buffer;
        self.unended_since = read.left_unended.then_some(read.at);
    }

    fn frame_ended(&mut self, at: Instant) {
        self.frames_seen = self.frames_seen.saturating_add(1);
        if let Some(last) = self.last_end {
            let gap = at.saturating_duration_since(last);
            // Smoothed over about eight frames; one long gap (a stall) counts little.
            self.interval = Some(match self.interval {
                Some(i) => (i * 7 + gap.min(i * 4)) / 8,
                None => gap,
            });
        }
        self.last_end = Some(at);
    }

    /// How long the pipe must stay quiet before the frame in progress is taken as
    /// complete; `None`: wait for the next start code (or no frame in progress).
    pub fn quiet_wait(&self) -> Option<Duration> {
        if self.unended_since.is_none() || self.more_waiting {
            return None;
        }
        self.quiet_time()
    }

    /// The quiet time the writer's record allows, if any.
    pub fn quiet_time(&self) -> Option<Duration> {
        if self.given_up || self.frames_seen < LEARN_FRAMES {
            return None;
        }
        let longest = self.pauses.iter().max().copied().unwrap_or_default();
        let quiet = (longest * QUIET_PER_PAUSE).max(MIN_QUIET);
        let interval = self.interval?;
        (quiet < interval / 2).then_some(quiet)
    }

    /// The frame in progress was taken as complete at `at` (the quiet time passed).
    pub fn ended_quietly(&mut self, at: Instant) {
        self.unended_since = None;
        self.frame_ended(at);
    }

    /// A frame taken as complete was not: no more quiet ends.
    pub fn give_up(&mut self) {
        self.given_up = true;
    }

    /// Whether guessing ended for good.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// The source restarted: the writer is the same, its stream is new.
    pub fn restart(&mut self) {
        self.unended_since = None;
        self.more_waiting = false;
        self.last_end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A writer at `fps` whose frames come in `pieces` reads `pause` apart (a
    /// frame in one piece: no pause); returns the rule after `frames` frames,
    /// ended at start codes, and the time of the last read.
    fn learn(fps: u32, pieces: u32, pause: Duration, frames: u32) -> (FrameEnds, Instant) {
        let mut rule = FrameEnds::new();
        let interval = Duration::from_secs(1) / fps;
        let start = Instant::now();
        let mut at = start;
        for f in 0..frames {
            at = start + interval * f;
            for p in 0..pieces {
                rule.read(Read {
                    at: at + pause * p,
                    len: 1000,
                    filled: false,
                    // The first piece of a frame carries its start code: the
                    // frame before it ends there.
                    ended_frame: p == 0 && f > 0,
                    left_unended: true,
                });
            }
        }
        (rule, at)
    }

    #[test]
    fn nothing_is_guessed_while_learning() {
        let (rule, _) = learn(30, 1, Duration::ZERO, LEARN_FRAMES - 1);
        assert_eq!(rule.quiet_wait(), None);
        let (rule, _) = learn(30, 1, Duration::ZERO, LEARN_FRAMES + 1);
        assert_eq!(rule.quiet_wait(), Some(MIN_QUIET));
    }

    #[test]
    fn the_quiet_time_is_four_longest_pauses_inside_frames() {
        let (rule, _) = learn(30, 3, Duration::from_micros(1500), 60);
        assert_eq!(rule.quiet_wait(), Some(6 * MS));
    }

    #[test]
    fn a_writer_that_pauses_long_inside_frames_gets_no_guesses() {
        // 20 ms inside every frame at 30 fps, as in issue 26's paused writer.
        let (rule, _) = learn(30, 2, 20 * MS, 60);
        assert_eq!(rule.quiet_wait(), None);
        // 5 ms at 30 fps: 20 ms of quiet would gain 13 ms at most: no guesses either.
        let (rule, _) = learn(30, 2, 5 * MS, 60);
        assert_eq!(rule.quiet_wait(), None);
        // 3 ms at 30 fps: 12 ms of quiet, fine.
        let (rule, _) = learn(30, 2, 3 * MS, 60);
        assert_eq!(rule.quiet_wait(), Some(12 * MS));
    }

    #[test]
    fn one_pause_in_a_while_is_remembered_for_a_few_seconds() {
        // Every tenth frame pauses 20 ms in the middle.
        let mut rule = FrameEnds::new();
        let start = Instant::now();
        for f in 0..90u32 {
            let at = start + f * 33 * MS;
            rule.read(Read {
                at,
                len: 1000,
                filled: false,
                ended_frame: f > 0,
                left_unended: true,
            });
            if f % 10 == 5 {
                rule.read(Read {
                    at: at + 20 * MS,
                    len: 1000,
                    filled: false,
                    ended_frame: false,
                    left_unended: true,
                });
            }
        }
        assert_eq!(rule.quiet_wait(), None);
    }

    #[test]
    fn a_full_read_means_more_is_coming() {
        let (mut rule, at) = learn(30, 1, Duration::ZERO, 40);
        rule.read(Read {
            at: at + 33 * MS,
            len: 1000,
            filled: true,
            ended_frame: true,
            left_unended: true,
        });
        assert_eq!(rule.quiet_wait(), None, "a keyframe larger than the pipe");
        rule.read(Read {
            at: at + 34 * MS,
            len: 1000,
            filled: false,
            ended_frame: false,
            left_unended: true,
        });
        assert_eq!(
            rule.quiet_wait(),
            Some(4 * MS),
            "its last piece came 1 ms later"
        );
    }

    /// ffmpeg writes a large frame 32 KiB at a time: a 32 KiB read (or two
    /// together) is not taken as a frame's end however quiet the pipe; the short
    /// last piece is.
    #[test]
    fn a_read_of_the_writers_buffer_size_means_more_is_coming() {
        let mut rule = FrameEnds::new();
        let start = Instant::now();
        let piece = |rule: &mut FrameEnds, at: Instant, len: usize, ended_frame: bool| {
            rule.read(Read {
                at,
                len,
                filled: false,
                ended_frame,
                left_unended: true,
            })
        };
        for f in 0..40u32 {
            let at = start + f * 33 * MS;
            piece(&mut rule, at, 32768, f > 0);
            piece(&mut rule, at + MS / 10, 1500 + f as usize, false);
        }
        assert_eq!(
            rule.quiet_wait(),
            Some(MIN_QUIET),
            "after a short last piece"
        );
        let at = start + 40 * 33 * MS;
        piece(&mut rule, at, 32768, true);
        assert_eq!(rule.quiet_wait(), None, "a 32 KiB piece");
        piece(&mut rule, at + MS, 65536, false);
        assert_eq!(rule.quiet_wait(), None, "two 32 KiB pieces read at once");
        piece(&mut rule, at + 2 * MS, 700, false);
        assert!(rule.quiet_wait().is_some(), "the short last piece");
        // Smaller powers of two are chance, not a buffer.
        piece(&mut rule, at + 40 * MS, 2048, true);
        assert!(rule.quiet_wait().is_some(), "2 KiB");
    }

    #[test]
    fn a_wrong_guess_ends_guessing_across_restarts() {
        let (mut rule, at) = learn(30, 1, Duration::ZERO, 40);
        rule.give_up();
        rule.restart();
        rule.read(Read {
            at: at + 33 * MS,
            len: 1000,
            filled: false,
            ended_frame: true,
            left_unended: true,
        });
        assert_eq!(rule.quiet_wait(), None);
        assert!(rule.given_up());
    }

    #[test]
    fn no_frame_in_progress_nothing_to_wait_for() {
        let (mut rule, at) = learn(30, 1, Duration::ZERO, 40);
        rule.ended_quietly(at + 2 * MS);
        assert_eq!(rule.quiet_wait(), None);
        assert_eq!(rule.quiet_time(), Some(MIN_QUIET));
    }
}
