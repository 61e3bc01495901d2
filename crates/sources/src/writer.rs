//! Whether the process writing a source's pipe is still at work, read from
//! /proc: a second opinion before a quiet pipe is taken as a frame's end.
//!
//! A writer that has written its frame waits (for the camera, a timer, its input):
//! every thread sleeps. One that is still in the middle of a frame is running or
//! waiting for a core, and so is one that is dying: an encoder killed after half a
//! frame closes its pipe only once the kernel has torn down its memory, which on a
//! busy machine took more than the 2 ms quiet time in 16 % of 200 tries (a 5 KB
//! write then `os._exit`, two cores spinning beside it: median 0.6 ms, p99 5.8 ms),
//! and every one of those was seen running. So when the quiet time passes while a
//! thread of the writer runs, the frame is left to end at the next start code (or
//! be dropped at the end of the stream), never guessed complete.
//!
//! Only nalcast's own child is asked (an `exec:` command run straight, a camera
//! app): the writer behind a shell pipeline, or behind our standard input, is not
//! known, and there the quiet rule alone decides, as before.
use std::fs;

/// Threads of the writer looked at, at most (an encoder's worker threads and more).
const MAX_THREADS: usize = 256;

/// The process writing a source's pipe.
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    pid: u32,
}

impl Writer {
    /// The child process `pid` (writing the pipe nalcast reads).
    pub fn new(pid: u32) -> Self {
        Writer { pid }
    }

    /// Whether one of its threads is running or waiting for a core (`R`), or in an
    /// uninterruptible wait (`D`, as while exiting). False when /proc says nothing
    /// (gone, not Linux): no opinion, the quiet rule decides.
    pub fn at_work(&self) -> bool {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.take(MAX_THREADS).flatten().any(|task| {
            fs::read(task.path().join("stat"))
                .ok()
                .and_then(|stat| state_of(&stat))
                .is_some_and(|s| matches!(s, b'R' | b'D'))
        })
    }
}

/// The state letter of a /proc stat line: `pid (comm) S …`, where comm may hold
/// spaces and parentheses of its own (the last `)` ends it).
fn state_of(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn the_state_is_read_after_the_name_whatever_it_holds() {
        assert_eq!(state_of(b"42 (python3) S 1 42 42"), Some(b'S'));
        assert_eq!(state_of(b"42 (a) b (R) c) D 1 42"), Some(b'D'));
        assert_eq!(state_of(b"42 (cut"), None);
        assert_eq!(state_of(b"42 (x)"), None);
    }

    /// Polls `at_work` for up to 2 s until it says `want`.
    fn says(writer: &Writer, want: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if writer.at_work() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_sleeping_writer_is_idle_a_spinning_one_at_work_a_gone_one_idle() {
        let mut sleeper = Command::new("sleep").arg("5").spawn().expect("sleep");
        let idle = Writer::new(sleeper.id());
        assert!(says(&idle, false), "a sleeping process is not at work");
        let mut spinner = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .spawn()
            .expect("sh");
        let busy = Writer::new(spinner.id());
        assert!(says(&busy, true), "a spinning process is at work");
        for child in [&mut sleeper, &mut spinner] {
            child.kill().expect("kill");
            child.wait().expect("reaped");
        }
        assert!(!busy.at_work(), "a reaped process says nothing");
    }
}
