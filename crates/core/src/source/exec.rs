//! Byte-stream sources: a child process's stdout (exec, rpicam) or our stdin.
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use tracing::{debug, warn};

use super::{mask_credentials, SourceError, SourceOptions};
use crate::clock::{shutdown_requested, wall_us};
use crate::ingest::Ingest;
use crate::Hub;

/// Lines of a child's stderr kept for the log when it ends.
const STDERR_LINES: usize = 5;

/// How long the stderr of a child that ended may take to be read to its end.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// An encoder writes each frame at once: once its pipe has been quiet this long after
/// bytes came, the frame is taken as complete, rather than when the next frame's
/// start code arrives one frame interval later (33 ms at 30 fps).
const QUIET_END: Duration = Duration::from_millis(2);

/// Whether a quiet pipe may end a frame: yes until the stream shows that a frame
/// ended that way was not complete (see [`crate::ingest::Splitter::cut_frame_signs`]).
struct QuietEnds {
    enabled: bool,
    /// The stream's cut-frame signs when the last quiet end published a frame.
    signs_at_end: Option<u64>,
}

impl QuietEnds {
    /// Checks the stream after a quiet end; false (and a warning, once) when a
    /// frame ended by a quiet pipe turns out to have had more to come.
    fn still_trusted(&mut self, signs: u64) -> bool {
        if self.enabled && self.signs_at_end.is_some_and(|at| signs > at) {
            self.enabled = false;
            warn!(
                "the source paused for over {} ms inside a frame: frames now end at the next \
                 frame's start code (one frame later); the frame cut short may show artefacts \
                 until the next keyframe",
                QUIET_END.as_millis()
            );
        }
        self.enabled
    }
}

/// Reads Annex-B bytes until end of stream, publishing frames as they complete.
/// Returns `Ok(())` at end of stream; an error when nothing arrives for the stall timeout.
async fn pump(
    mut input: impl AsyncRead + Unpin,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
) -> Result<(), SourceError> {
    let mut ingest = Ingest::new(hub.clone(), opts.max_nal_size);
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes that never make a frame (rubbish, a stuck encoder) count as a stall too.
    let (mut frames, mut last_frame) = (0, tokio::time::Instant::now());
    let mut quiet = QuietEnds {
        enabled: true,
        signs_at_end: None,
    };
    // When the last bytes came, if no frame end has been taken since.
    let mut unended: Option<u64> = None;
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
        let quiet_wait = unended.filter(|_| quiet.enabled);
        let wait = if quiet_wait.is_some() {
            QUIET_END
        } else {
            opts.stall_timeout
        };
        let n = match tokio::time::timeout(wait, input.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                if let Some(arrived_us) = quiet_wait {
                    let before = ingest.frames();
                    ingest.end_of_access_unit(arrived_us);
                    unended = None;
                    let signs = ingest.splitter().cut_frame_signs();
                    if quiet.still_trusted(signs) {
                        // Watched from a frame this ended on (not rubbish before the
                        // stream, nor parameter sets alone).
                        quiet.signs_at_end = (ingest.frames() > before).then_some(signs);
                    }
                    continue;
                }
                return Err(SourceError::Retry(format!(
                    "no data for {} s",
                    opts.stall_timeout.as_secs_f32()
                )));
            }
        };
        if n == 0 {
            // End of stream: the last NAL unit is complete.
            ingest.end_of_access_unit(wall_us());
            return Ok(());
        }
        let now = wall_us();
        ingest.push(&buf[..n], now);
        unended = Some(now);
        quiet.still_trusted(ingest.splitter().cut_frame_signs());
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
) -> Result<(), SourceError> {
    run_child_explained(command, description, opts, hub, shutdown, &|_| None).await
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
    explain: &(dyn Fn(&[String]) -> Option<String> + Sync),
) -> Result<(), SourceError> {
    let Some(end) = run_child_to_end(command, description, opts, hub, shutdown).await? else {
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
    let _group = child.id().map(GroupKiller);
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
        r = pump(stdout, opts, hub) => Some(r),
        _ = shutdown_requested(&mut shutdown) => None,
    };
    // Stalled, done or shutting down: make sure the child and its group are gone,
    // then report how it ended.
    if let Some(pid) = child.id() {
        GroupKiller(pid).kill();
    }
    let _ = child.start_kill();
    let status = child.wait().await?;
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
/// outlets' ffmpeg children use it too.
pub(crate) struct GroupKiller(pub(crate) u32);

impl GroupKiller {
    pub(crate) fn kill(&self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ingests our own standard input until it ends.
pub async fn run_stdin(opts: &SourceOptions, hub: &Arc<Hub>) -> Result<(), SourceError> {
    match pump(tokio::io::stdin(), opts, hub).await {
        Ok(()) => Err(SourceError::Final("standard input ended".into())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::hub::{HubConfig, Subscription};
    use crate::source::test_pattern::TestPattern;
    use crate::source::VideoSettings;
    use crate::viewer::Item;

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
        let hub = crate::Hub::new(HubConfig::default());
        let sub = hub.subscribe();
        let (writer, reader) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move { pump(reader, &SourceOptions::default(), &hub).await });
        (writer, sub)
    }

    #[tokio::test]
    async fn a_frame_goes_out_when_the_encoder_has_written_it_not_at_the_next_one() {
        let frames = encoded(3);
        let (mut encoder, viewer) = pumped();
        for frame in &frames {
            // The next frame is not written until this one has been published.
            encoder.write_all(frame).await.expect("write");
            expect_frame(&viewer, frame, "frame").await;
        }
    }

    #[tokio::test]
    async fn a_source_that_pauses_inside_frames_gets_whole_frames_after_the_first_cut() {
        let frames = encoded(5);
        let (mut encoder, viewer) = pumped();
        encoder.write_all(&frames[0]).await.expect("write");
        expect_frame(&viewer, &frames[0], "frame 0").await;
        // Every later frame comes in two halves, with a pause between them far longer
        // than QUIET_END: the first one is cut (and shows it), the rest must not be.
        for frame in &frames[1..] {
            let (head, tail) = frame.split_at(frame.len() / 2);
            encoder.write_all(head).await.expect("write");
            tokio::time::sleep(QUIET_END * 20).await;
            encoder.write_all(tail).await.expect("write");
        }
        drop(encoder); // end of stream ends the last frame
        let cut = next_frame(&viewer).await;
        assert!(cut != nal_units(&frames[1]), "the first pause cut frame 1");
        for (i, frame) in frames.iter().enumerate().skip(2) {
            expect_frame(&viewer, frame, &format!("frame {i}")).await;
        }
    }
}
