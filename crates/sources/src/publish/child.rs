//! One ffmpeg run of a publisher: wait for a keyframe, start ffmpeg, feed it until
//! it fails, the parameters change or nalcast shuts down; then stop and reap it.
use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::feed::{progress_frames, Admit, Feed, LineBudget, Step};
use super::{first_accepted, PublishOptions, PublishTarget, Publisher, RunEnd, Scheme, State};
use crate::exec::{exited as group_leader_exited, GroupKiller};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::Hub;

/// ffmpeg lines logged per minute and publisher.
const LOG_LINES_PER_MINUTE: u32 = 20;
/// Longest ffmpeg line kept, in characters.
const MAX_LINE: usize = 300;
/// ffmpeg's last lines kept as the reason it failed: its very last is often a
/// generic epilogue ("Error initializing output stream 0:0 --") after the cause
/// ("Connection refused").
const REASON_LINES: usize = 3;
/// How long ffmpeg has to finish by itself once its input ends (it then closes the
/// stream on the server properly) before it is killed.
const GRACE: Duration = Duration::from_millis(500);

/// ffmpeg's arguments: fMP4 on standard input, copied (never re-encoded) to the
/// target in the format its protocol carries; progress on standard output. The
/// target's options that are not for the command line (srt://'s query string) come
/// from `options_file`, a path ffmpeg reads `key=value` lines from.
pub(super) fn ffmpeg_args(target: &PublishTarget, options_file: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = crate::FFMPEG_QUIET.map(str::to_owned).to_vec();
    args.extend(
        [
            "-progress",
            "pipe:1",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
            "-map",
            "0:v:0",
            "-c",
            "copy",
        ]
        .map(str::to_owned),
    );
    let output: &[&str] = match target.scheme() {
        // No duration or size to patch in at the end of a live stream.
        Scheme::Rtmp | Scheme::Rtmps => &["-f", "flv", "-flvflags", "no_duration_filesize"],
        Scheme::Rtsp => &["-f", "rtsp", "-rtsp_transport", "tcp"],
        Scheme::Srt => &["-f", "mpegts"],
    };
    args.extend(output.iter().map(|s| (*s).to_owned()));
    if let Some(path) = options_file {
        args.extend(["-fpre".to_owned(), path.to_owned()]);
    }
    args.push(target.ffmpeg_output().address);
    args
}

/// A pipe holding `options` for ffmpeg to read at `path`: nalcast's own end of it
/// under /proc, which ffmpeg (nalcast's user) may open. The pipe is not inherited
/// by any child (close-on-exec); the options are written whole before ffmpeg
/// starts (they fit the pipe's buffer: target.rs bounds them) and the write end
/// closed, so ffmpeg reads them and then the end. Keep it until ffmpeg has ended.
struct OptionsPipe {
    path: String,
    _reader: std::io::PipeReader,
}

impl OptionsPipe {
    fn new(options: &str) -> std::io::Result<OptionsPipe> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(options.as_bytes())?;
        drop(writer);
        Ok(OptionsPipe {
            path: format!("/proc/{}/fd/{}", std::process::id(), reader.as_raw_fd()),
            _reader: reader,
        })
    }
}

/// How the feeding ended.
enum Outcome {
    Shutdown,
    NewParameters,
    /// Writing failed or stalled: why.
    Broken(String),
    /// ffmpeg ended by itself (not reaped yet).
    Exited,
}

pub(super) async fn run_once(
    publisher: &Arc<Publisher>,
    hub: &Arc<Hub>,
    opts: &PublishOptions,
    mut shutdown: watch::Receiver<bool>,
) -> RunEnd {
    let subscription = hub.subscribe_internal(std::time::Instant::now());
    let queue = &subscription.queue;
    let mut feed = Feed::new();
    // ffmpeg starts once there is something to give it: a keyframe and its init
    // segment (it would otherwise sit on a connection with nothing to send).
    let first = first_accepted(queue, &mut shutdown, |item| match feed.next(item) {
        Step::Write(bufs) => Some(Some(bufs)),
        Step::Wait => None,
        Step::Restart => Some(None),
    })
    .await;
    let first = match first {
        None => return RunEnd::Shutdown,
        Some(None) => return RunEnd::NewParameters,
        Some(Some(bufs)) => bufs,
    };

    let options = match publisher.target.ffmpeg_output().options {
        Some(options) => match OptionsPipe::new(&options) {
            Ok(pipe) => Some(pipe),
            Err(e) => return RunEnd::Failed(format!("cannot pass ffmpeg its options: {e}")),
        },
        None => None,
    };
    let mut command = Command::new(&opts.ffmpeg);
    command
        .args(ffmpeg_args(
            &publisher.target,
            options.as_ref().map(|o| o.path.as_str()),
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, killed whole; and killed if this future is dropped.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return RunEnd::Failed(format!("cannot start ffmpeg: {e}")),
    };
    let pid = child.id();
    let group = pid.map(GroupKiller);
    let stderr = child
        .stderr
        .take()
        .map(|s| tokio::spawn(log_stderr(s, publisher.target.clone())));
    let progress = child
        .stdout
        .take()
        .map(|s| tokio::spawn(watch_progress(s, publisher.clone())));
    let Some(mut stdin) = child.stdin.take() else {
        return RunEnd::Failed("ffmpeg has no standard input".into());
    };

    let pump = async {
        write(&mut stdin, first, opts.stall_timeout).await?;
        loop {
            let Some((item, _)) = queue.next().await else {
                return Ok(Outcome::Shutdown);
            };
            match feed.next(&item) {
                Step::Write(bufs) => write(&mut stdin, bufs, opts.stall_timeout).await?,
                Step::Wait => {}
                Step::Restart => return Ok(Outcome::NewParameters),
            }
        }
    };
    let outcome = tokio::select! {
        r = pump => r.unwrap_or_else(Outcome::Broken),
        // Not child.wait(): that would reap ffmpeg before its group is killed.
        () = group_leader_exited(pid) => Outcome::Exited,
        _ = shutdown_requested(&mut shutdown) => Outcome::Shutdown,
    };
    // Ending its input lets ffmpeg close the stream on the server; then it goes.
    drop(stdin);
    let ended_itself = matches!(outcome, Outcome::Exited)
        || tokio::time::timeout(GRACE, group_leader_exited(pid))
            .await
            .is_ok();
    // The group first, while ffmpeg is unreaped and its pid still ours; then ffmpeg.
    if let Some(group) = &group {
        group.kill();
    }
    let _ = child.start_kill();
    let reaped = child.wait().await.ok();
    if let Some(group) = group {
        group.reaped();
    }
    // How it ended, when it ended by itself (else we killed it).
    let status = reaped.filter(|_| ended_itself);
    // Both end with ffmpeg's pipes.
    let last_lines = match stderr {
        Some(task) => joined(task).await.flatten(),
        None => None,
    };
    if let Some(task) = progress {
        joined(task).await;
    }
    match outcome {
        Outcome::Shutdown => RunEnd::Shutdown,
        Outcome::NewParameters => RunEnd::NewParameters,
        Outcome::Broken(why) => RunEnd::Failed(match (last_lines, status) {
            // It died first: what it said is the reason, not our broken pipe.
            (Some(line), Some(s)) if !s.success() => format!("{}: {line}", exited(s)),
            _ => why,
        }),
        Outcome::Exited => {
            let how = status.map_or_else(|| "ffmpeg ended".to_owned(), exited);
            RunEnd::Failed(match last_lines {
                Some(line) => format!("{how}: {line}"),
                None => how,
            })
        }
    }
}

/// Waits for a reader task that ends with ffmpeg's pipe.
async fn joined<T>(task: JoinHandle<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .ok()
        .and_then(Result::ok)
}

fn exited(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("ffmpeg exited with status {code}"),
        (None, Some(signal)) => format!("ffmpeg was killed by signal {signal}"),
        (None, None) => "ffmpeg ended".to_owned(),
    }
}

async fn write(stdin: &mut ChildStdin, bufs: Vec<Bytes>, stall: Duration) -> Result<(), String> {
    for buf in bufs {
        match tokio::time::timeout(stall, stdin.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("ffmpeg stopped reading: {e}")),
            Err(_) => {
                return Err(format!(
                    "ffmpeg took nothing for {} s (the server does not take the stream)",
                    stall.as_secs_f32()
                ))
            }
        }
    }
    Ok(())
}

/// Reads ffmpeg's standard error to its end: each line logged (scrubbed of the
/// URL's secrets, rate-limited); returns its last lines, joined.
async fn log_stderr(stderr: impl AsyncRead + Unpin, target: PublishTarget) -> Option<String> {
    let mut reader = BufReader::new(stderr);
    let mut budget = LineBudget::new(LOG_LINES_PER_MINUTE, Duration::from_secs(60));
    let mut raw = Vec::new();
    let mut last = VecDeque::with_capacity(REASON_LINES);
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => {
                let lines: Vec<String> = last.into();
                return (!lines.is_empty()).then(|| lines.join(" | "));
            }
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&raw);
        let text: String = text.trim().chars().take(MAX_LINE).collect();
        if text.is_empty() {
            continue;
        }
        let line = target.scrub(&text);
        if let Admit::Log { suppressed } = budget.admit(Instant::now()) {
            if suppressed > 0 {
                warn!(publish = %target, suppressed, "ffmpeg: {line}");
            } else {
                warn!(publish = %target, "ffmpeg: {line}");
            }
        }
        if last.len() == REASON_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
}

/// Reads ffmpeg's `-progress` output: the publisher is live once pictures go out.
async fn watch_progress(stdout: impl AsyncRead + Unpin, publisher: Arc<Publisher>) {
    let mut lines = BufReader::new(stdout).lines();
    let mut live = false;
    while let Ok(Some(line)) = lines.next_line().await {
        if !live && progress_frames(&line).is_some_and(|n| n > 0) {
            live = true;
            publisher.set_state(State::Live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_copies_the_stream_in_the_targets_format() {
        let args = |url: &str| ffmpeg_args(&url.parse().expect("valid"), None).join(" ");
        let rtmp = args("rtmp://host/live/cam");
        assert!(
            rtmp.contains("-f mp4 -i pipe:0 -map 0:v:0 -c copy"),
            "{rtmp}"
        );
        assert!(rtmp.ends_with("-f flv -flvflags no_duration_filesize rtmp://host/live/cam"));
        assert!(
            args("rtsp://m:8554/cam").ends_with("-f rtsp -rtsp_transport tcp rtsp://m:8554/cam")
        );
        assert!(!rtmp.contains("-c:v libx264"), "never re-encodes");
    }

    /// Before: an srt:// URL went whole onto ffmpeg's command line, passphrase
    /// and streamid with it, for every user of the machine to read.
    #[test]
    fn an_srt_query_goes_to_ffmpeg_through_a_file_not_its_command_line() {
        let target: PublishTarget = "srt://m:8890?streamid=publish:cam&passphrase=long+secret1"
            .parse()
            .expect("valid");
        let options = target.ffmpeg_output().options.expect("options");
        let pipe = OptionsPipe::new(&options).expect("a pipe");
        let line = ffmpeg_args(&target, Some(&pipe.path)).join(" ");
        assert!(
            line.ends_with(&format!("-f mpegts -fpre {} srt://m:8890", pipe.path)),
            "{line}"
        );
        assert!(!line.contains("secret") && !line.contains("publish:cam"));
        // Whoever opens the path (ffmpeg, as nalcast's user) reads the options.
        let read = std::fs::read_to_string(&pipe.path).expect("the options");
        assert_eq!(read, "streamid=publish:cam\npassphrase=long secret1\n");
        // Without a query there is nothing to pass.
        let plain: PublishTarget = "srt://m:8890".parse().expect("valid");
        assert_eq!(plain.ffmpeg_output().options, None);
    }
}
