//! Byte-stream sources: a child process's stdout (exec, rpicam) or our stdin.
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use tracing::{debug, warn};

use crate::frame_end::{FrameEnds, Read};
use crate::writer::Writer;
use crate::{mask_credentials, SourceError, SourceOptions};
use nalcast_core::clock::{shutdown_requested, wall_us};
use nalcast_core::ingest::Ingest;
use nalcast_core::Hub;

/// Lines of a child's stderr kept for the log when it ends.
const STDERR_LINES: usize = 5;

/// How long the stderr of a child that ended may take to be read to its end.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads Annex-B bytes until end of stream, publishing frames as they complete
/// (at the next start code, or earlier when `ends` says a quiet pipe may end one
/// and `writer`, where known, is not at work: writer.rs).
/// Returns `Ok(())` at end of stream; an error when nothing arrives for the stall timeout.
async fn pump(
    mut input: impl AsyncRead + Unpin,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    ends: &mut FrameEnds,
    writer: Option<Writer>,
) -> Result<(), SourceError> {
    ends.restart();
    let mut ingest = Ingest::new(hub.clone(), opts.max_nal_size);
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes that never make a frame (rubbish, a stuck encoder) count as a stall too.
    let (mut frames, mut last_frame) = (0, tokio::time::Instant::now());
    // The stream's cut-frame signs when the last quiet end published a frame.
    let mut signs_at_end: Option<u64> = None;
    // When the last bytes came (the capture time of a frame ended by quiet).
    let mut last_bytes_us = wall_us();
    // The stream's first bytes, to tell a container or MJPEG from H.264 (sniff.rs).
    let mut sniffed = Vec::new();
    // The quiet time passed while the writer was at work: this frame ends at a
    // start code (or is dropped at the end), whatever the quiet.
    let mut writer_was_busy = false;
    loop {
        if ingest.frames() != frames {
            frames = ingest.frames();
            last_frame = tokio::time::Instant::now();
        } else if last_frame.elapsed() > opts.stall_timeout {
            return Err(SourceError::Retry(format!(
                "no frame for {} s",
                opts.stall_timeout.as_secs_f32()
            )));
        }
        let quiet = ends
            .quiet_wait()
            .filter(|q| *q < opts.stall_timeout && !writer_was_busy);
        let n =
            match tokio::time::timeout(quiet.unwrap_or(opts.stall_timeout), input.read(&mut buf))
                .await
            {
                Ok(r) => r?,
                Err(_) if quiet.is_some() => {
                    if writer.is_some_and(|w| w.at_work()) {
                        debug!(
                            "quiet pipe, but its writer is at work: the frame ends at a start code"
                        );
                        writer_was_busy = true;
                        continue;
                    }
                    let before = ingest.frames();
                    ingest.end_of_access_unit(last_bytes_us);
                    ends.ended_quietly(std::time::Instant::now());
                    // Watched from a frame this ended on (not rubbish before the
                    // stream, nor parameter sets alone).
                    signs_at_end =
                        (ingest.frames() > before).then(|| ingest.splitter().cut_frame_signs());
                    continue;
                }
                Err(_) => {
                    return Err(SourceError::Retry(format!(
                        "no data for {} s",
                        opts.stall_timeout.as_secs_f32()
                    )))
                }
            };
        if n == 0 {
            // End of stream: a writer that died may have stopped inside a frame, so
            // the frame in progress is dropped, never shown cut.
            let cut = ingest.splitter().discard_unfinished();
            if cut > 0 {
                warn!(
                    bytes = cut,
                    "the source ended inside a frame: its unfinished frame was dropped"
                );
            }
            return Ok(());
        }
        if sniffed.len() < crate::sniff::SNIFF_BYTES {
            sniffed.extend_from_slice(&buf[..n.min(crate::sniff::SNIFF_BYTES - sniffed.len())]);
            if let Some(format) = crate::sniff::foreign(&sniffed) {
                return Err(SourceError::Retry(format.advice("the source's output")));
            }
        }
        let (now, at) = (wall_us(), std::time::Instant::now());
        writer_was_busy = false;
        let before = ingest.frames();
        ingest.push(&buf[..n], now);
        last_bytes_us = now;
        let signs = ingest.splitter().cut_frame_signs();
        if !ends.given_up() && signs_at_end.is_some_and(|at_end| signs > at_end) {
            ends.give_up();
            warn!(
                "the source paused inside a frame for longer than the quiet time taken as \
                 a frame's end: frames now end at the next frame's start code (one frame \
                 later); the frame cut short may show artefacts until the next keyframe"
            );
        }
        ends.read(Read {
            at,
            len: n,
            filled: n == buf.len(),
            ended_frame: ingest.frames() > before,
            // The parser holds the last NAL unit until a start code or an end.
            left_unended: true,
        });
    }
}

/// How a child's run ended when nobody asked it to stop.
#[derive(Debug)]
pub struct ChildEnd {
    /// The kind of ending, fit for viewers: "camera process exited with status 1",
    /// "no data for 5 s".
    pub reason: String,
    /// Its last lines on stderr (oldest first), URL passwords masked.
    pub stderr: Vec<String>,
}

/// Runs a child process and ingests its stdout until it ends, stalls or `shutdown`
/// turns true (then `Ok`). The child's process group is killed and the child reaped
/// before this returns; if the future is dropped instead, the group is still killed.
pub async fn run_child(
    command: Command,
    description: &str,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    shutdown: watch::Receiver<bool>,
    ends: &mut FrameEnds,
) -> Result<(), SourceError> {
    run_child_explained(command, description, opts, hub, shutdown, ends, &|_| None).await
}

/// [`run_child`], with `explain` reading the child's last stderr lines for the
/// reason it failed ("camera /dev/video0 is busy …" rather than "camera process
/// exited with status 1"). Its answer goes where the reason goes: to viewers too.
pub async fn run_child_explained(
    command: Command,
    description: &str,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    shutdown: watch::Receiver<bool>,
    ends: &mut FrameEnds,
    explain: &(dyn Fn(&[String]) -> Option<String> + Sync),
) -> Result<(), SourceError> {
    let Some(end) = run_child_to_end(command, description, opts, hub, shutdown, ends).await? else {
        return Ok(());
    };
    let reason = explain(&end.stderr).unwrap_or(end.reason);
    // Viewers, /healthz and the API get the kind of failure only (or what
    // `explain` made of it); the command line and what the process said
    // (addresses, passwords) stay in the log, masked.
    warn!(
        command = %mask_credentials(description),
        stderr = %end.stderr.join(" | "),
        "{reason}"
    );
    Err(SourceError::Retry(reason))
}

/// [`run_child`] for callers that explain the ending themselves: `None` when
/// `shutdown` stopped it, else how it ended (nothing logged).
pub async fn run_child_to_end(
    mut command: Command,
    description: &str,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
    ends: &mut FrameEnds,
) -> Result<Option<ChildEnd>, SourceError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that stopping it also stops whatever it started
        // (a shell's children, a camera app behind a wrapper script).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        warn!(command = %mask_credentials(description), "cannot start the camera process: {e}");
        SourceError::Retry("cannot start the camera process".into())
    })?;
    let group = child.id().map(GroupKiller);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SourceError::Retry("child has no stdout".into()))?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let reader = child.stderr.take().map(|stderr| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(target: "nalcast::source::stderr", "{line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    });
    let pumped = tokio::select! {
        r = pump(stdout, opts, hub, ends, child.id().map(Writer::new)) => Some(r),
        _ = shutdown_requested(&mut shutdown) => None,
    };
    // Stalled, done or shutting down: make sure the child and its group are gone,
    // then report how it ended. The group first: the child is not reaped yet, so
    // its pid (the group's id) is still ours.
    if let Some(group) = &group {
        group.kill();
    }
    let _ = child.start_kill();
    let status = child.wait().await;
    // Reaped: the id may be anyone's now; the guard must not fire.
    if let Some(group) = group {
        group.reaped();
    }
    let status = status?;
    let Some(pumped) = pumped else {
        return Ok(None);
    };
    // Its last words: stderr ends with the group gone (a grandchild holding it open
    // was killed with it), so the reader finishes; bounded all the same.
    if let Some(reader) = reader {
        let _ = tokio::time::timeout(STDERR_DRAIN, reader).await;
    }
    let stderr: Vec<String> = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|line| mask_credentials(line))
        .collect();
    let reason = match pumped {
        Err(e) => e.to_string(),
        Ok(()) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("camera process exited with status {code}"),
            (None, Some(signal)) => format!("camera process was killed by signal {signal}"),
            (None, None) => "camera process exited".to_owned(),
        },
    };
    Ok(Some(ChildEnd { reason, stderr }))
}

/// Kills a child's whole process group when dropped (shutdown, restart); the
/// publishers' ffmpeg children use it too.
///
/// The group's id is the child's pid, which is ours only until the child is
/// reaped: after that a new process may get it and lead a group of its own. So
/// the group is killed before the child is waited for ([`exited`] waits without
/// reaping), and [`GroupKiller::reaped`] disarms the guard once it is.
pub(crate) struct GroupKiller(pub(crate) u32);

impl GroupKiller {
    pub(crate) fn kill(&self) {
        if let Ok(pid) = i32::try_from(self.0) {
            #[cfg(test)]
            kills::record(pid);
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The child was reaped: nothing more to kill under its id.
    pub(crate) fn reaped(self) {
        std::mem::forget(self);
    }
}

/// Waits until our child `pid` has exited, leaving it unreaped (a zombie keeps its
/// pid, and so its group's id, ours): the group can then be killed safely before
/// the child is waited for.
pub(crate) async fn exited(pid: Option<u32>) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return std::future::pending().await;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    // waitid blocks: on a blocking-pool thread, which the child's end (on its
    // own, or killed with its group) releases.
    let _ = tokio::task::spawn_blocking(move || {
        while let Err(nix::errno::Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
    })
    .await;
}

/// In tests: every group kill, and whether the group's leader was still there
/// (running or a zombie, not reaped) when it happened.
#[cfg(test)]
pub(crate) mod kills {
    use std::sync::Mutex;

    static KILLS: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());

    pub(crate) fn record(pid: i32) {
        let unreaped = std::path::Path::new(&format!("/proc/{pid}")).exists();
        KILLS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pid, unreaped));
    }

    /// The kills of `pid`'s group: whether its leader was unreaped at each.
    pub(crate) fn of(pid: u32) -> Vec<bool> {
        KILLS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| i64::from(*p) == i64::from(pid))
            .map(|(_, unreaped)| *unreaped)
            .collect()
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ingests our own standard input until it ends.
pub async fn run_stdin(
    opts: &SourceOptions,
    hub: &Arc<Hub>,
    ends: &mut FrameEnds,
) -> Result<(), SourceError> {
    match pump(tokio::io::stdin(), opts, hub, ends, None).await {
        Ok(()) => Err(SourceError::Final("standard input ended".into())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::frame_end::LEARN_FRAMES;
    use crate::test_pattern::TestPattern;
    use crate::VideoSettings;
    use nalcast_core::hub::{HubConfig, Subscription};
    use nalcast_core::queue::Item;

    /// `count` frames of the test pattern (a keyframe first) as an encoder writes them.
    fn encoded(count: usize) -> Vec<Vec<u8>> {
        let mut pattern = TestPattern::new(&VideoSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate: 500_000,
            keyframe_interval: 60,
        })
        .expect("encoder");
        (0..count)
            .map(|i| {
                pattern
                    .next_frame(i as u64 * 33_333, false)
                    .expect("frame")
                    .to_vec()
            })
            .collect()
    }

    /// The NAL units of Annex-B bytes, without start codes.
    fn nal_units(annexb: &[u8]) -> Vec<Vec<u8>> {
        testkit::annexb::split(annexb)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The next frame published to `sub`, or a failure after 5 s.
    async fn next_frame(sub: &Subscription) -> Vec<Vec<u8>> {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(5), sub.queue.next())
                .await
                .expect("a frame within 5 s")
                .expect("queue open");
            if let (Item::Au { au, .. }, _) = item {
                return (0..au.au.nals.len())
                    .map(|i| au.au.nal(i)[4..].to_vec()) // after the start code
                    .collect();
            }
        }
    }

    /// Awaits the next frame published to `viewer` and checks it holds the NAL units
    /// of `frame` (sizes in the message when not).
    async fn expect_frame(viewer: &Subscription, frame: &[u8], which: &str) {
        let published = next_frame(viewer).await;
        let written = nal_units(frame);
        let sizes = |nals: &[Vec<u8>]| nals.iter().map(Vec::len).collect::<Vec<_>>();
        assert!(
            published == written,
            "{which}: published NAL units {:?}, written {:?}",
            sizes(&published),
            sizes(&written)
        );
    }

    /// The pump on one end of a pipe, the hub's first viewer on the other.
    fn pumped() -> (tokio::io::DuplexStream, Subscription) {
        let hub = nalcast_core::Hub::new(HubConfig::default());
        let sub = hub.subscribe(std::time::Instant::now());
        let (writer, reader) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            pump(
                reader,
                &SourceOptions::default(),
                &hub,
                &mut FrameEnds::new(),
                None,
            )
            .await
        });
        (writer, sub)
    }

    /// Writes `frames` one every `interval`, each in two halves `pause` apart.
    async fn write_paced(
        encoder: &mut tokio::io::DuplexStream,
        frames: &[Vec<u8>],
        interval: Duration,
        pause: Duration,
    ) {
        for frame in frames {
            let started = tokio::time::Instant::now();
            let (head, tail) = frame.split_at(frame.len() / 2);
            encoder.write_all(head).await.expect("write");
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            encoder.write_all(tail).await.expect("write");
            tokio::time::sleep_until(started + interval).await;
        }
    }

    /// Before: the guard killed the group again after the child was reaped, when
    /// its pid (the group's id) may already be another process's.
    #[tokio::test]
    async fn the_group_is_killed_before_the_child_is_reaped_and_never_after() {
        let hub = nalcast_core::Hub::new(HubConfig::default());
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        for script in ["echo $$ >&2; exit 3", "echo $$ >&2; sleep 0.2 & exit 0"] {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            let end = run_child_to_end(
                command,
                "sh",
                &SourceOptions::default(),
                &hub,
                shutdown.clone(),
                &mut FrameEnds::new(),
            )
            .await
            .expect("ran")
            .expect("ended by itself");
            let pid: u32 = end.stderr[0].trim().parse().expect("its pid");
            assert_eq!(
                kills::of(pid),
                [true],
                "{script}: one kill of the group, while the child was unreaped"
            );
        }
    }

    /// Before: a quiet pipe 2 ms after half a frame published the half, while the
    /// writer was still at it (descheduled on a busy machine, or dying: an encoder
    /// killed mid-frame closes its pipe only after the kernel has freed its memory).
    #[tokio::test]
    async fn a_frame_is_not_taken_as_ended_while_its_writer_is_at_work() {
        let frames = encoded(LEARN_FRAMES as usize + 4);
        let file = std::env::temp_dir().join(format!(
            "nalcast-writer-at-work-{}.h264",
            std::process::id()
        ));
        std::fs::write(&file, frames.concat()).expect("write frames");
        let lengths: Vec<String> = frames.iter().map(|f| f.len().to_string()).collect();
        // Every frame but the last whole, 20 ms apart (the quiet rule learns them);
        // then half the last, 300 ms at work, and dead.
        let script = format!(
            "import os, sys, time\n\
             data = open(sys.argv[1], 'rb').read()\n\
             at = 0\n\
             for n in [{}]:\n    os.write(1, data[at:at + n]); at += n; time.sleep(0.02)\n\
             os.write(1, data[at:at + ({}) // 2])\n\
             t = time.monotonic()\n\
             while time.monotonic() - t < 0.3: pass\n\
             os._exit(1)\n",
            lengths[..lengths.len() - 1].join(", "),
            lengths[lengths.len() - 1],
        );
        let hub = nalcast_core::Hub::new(HubConfig::default());
        let viewer = hub.subscribe(std::time::Instant::now());
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let mut command = Command::new("python3");
        command.arg("-c").arg(&script).arg(&file);
        let end = run_child_to_end(
            command,
            "writer",
            &SourceOptions::default(),
            &hub,
            shutdown,
            &mut FrameEnds::new(),
        )
        .await
        .expect("ran")
        .expect("ended by itself");
        let _ = std::fs::remove_file(&file);
        assert!(end.reason.contains("status 1"), "{}", end.reason);
        for (i, frame) in frames[..frames.len() - 1].iter().enumerate() {
            expect_frame(&viewer, frame, &format!("frame {i}")).await;
        }
        while let Ok(item) =
            tokio::time::timeout(Duration::from_millis(200), viewer.queue.next()).await
        {
            if let Some((Item::Au { au, .. }, _)) = item {
                panic!(
                    "the half frame was published: {} NAL units",
                    au.au.nals.len()
                );
            }
        }
    }

    #[tokio::test]
    async fn once_the_writer_is_known_a_frame_goes_out_when_written_not_at_the_next_one() {
        let learn = LEARN_FRAMES as usize + 2;
        let frames = encoded(learn + 3);
        let (mut encoder, viewer) = pumped();
        // While it learns how the encoder writes, frames end at the next start code.
        write_paced(
            &mut encoder,
            &frames[..learn],
            Duration::from_millis(20),
            Duration::ZERO,
        )
        .await;
        for (i, frame) in frames[..learn - 1].iter().enumerate() {
            expect_frame(&viewer, frame, &format!("learning, frame {i}")).await;
        }
        // The last of them ended by a quiet pipe; then each frame by itself.
        expect_frame(&viewer, &frames[learn - 1], "the first quiet end").await;
        for (i, frame) in frames.iter().enumerate().skip(learn) {
            // The next frame is not written until this one has been published.
            encoder.write_all(frame).await.expect("write");
            expect_frame(&viewer, frame, &format!("frame {i}")).await;
        }
    }

    #[tokio::test]
    async fn a_writer_that_pauses_inside_frames_never_has_a_frame_cut() {
        // Each frame in two halves 12 ms apart, at 25 fps: quiet ends would need
        // more than 48 ms of quiet, more than the frame interval allows.
        let frames = encoded(LEARN_FRAMES as usize + 10);
        let (mut encoder, viewer) = pumped();
        write_paced(
            &mut encoder,
            &frames,
            Duration::from_millis(40),
            Duration::from_millis(12),
        )
        .await;
        drop(encoder);
        // Every frame whole, but the last: the stream ended inside it, as far as
        // the pump can tell.
        for (i, frame) in frames[..frames.len() - 1].iter().enumerate() {
            expect_frame(&viewer, frame, &format!("frame {i}")).await;
        }
        let after = tokio::time::timeout(Duration::from_millis(300), next_frame(&viewer)).await;
        assert!(after.is_err(), "the unfinished last frame is not published");
    }

    #[tokio::test]
    async fn a_writer_that_dies_inside_a_frame_leaves_no_half_frame() {
        let frames = encoded(3);
        let (mut encoder, viewer) = pumped();
        encoder.write_all(&frames[0]).await.expect("write");
        encoder.write_all(&frames[1]).await.expect("write");
        let (head, _) = frames[2].split_at(frames[2].len() / 2);
        encoder.write_all(head).await.expect("write");
        drop(encoder);
        expect_frame(&viewer, &frames[0], "frame 0").await;
        expect_frame(&viewer, &frames[1], "frame 1").await;
        let after = tokio::time::timeout(Duration::from_millis(300), next_frame(&viewer)).await;
        assert!(
            after.is_err(),
            "half of frame 2 is not published as a picture"
        );
    }
}
