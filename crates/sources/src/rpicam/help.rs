//! What options the installed camera app accepts, from its own `--help`.
//!
//! Asking beats guessing the version: the apps have no machine-readable version
//! output that works without a camera, distributions patch them, and an option
//! nalcast passes that the app lacks makes it exit before the camera starts.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::exec::GroupKiller;

/// How long `APP --help` may take before nalcast gives up on it and assumes the
/// options every version has.
pub const HELP_TIMEOUT: Duration = Duration::from_secs(5);

/// The options an app's help listing names, as typed on a command line
/// (`-t`, `--timeout`, `-fps`, `--framerate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    names: BTreeSet<String>,
}

impl Listing {
    /// The option names in a help text: rpicam-apps' (boost::program_options:
    /// `  -t [ --timeout ] arg (=5sec)   Time for which…`, descriptions wrapped onto
    /// lines indented to their column) or raspivid's (`-fps, --framerate\t: Specify…`).
    pub fn parse(text: &str) -> Listing {
        let mut names = BTreeSet::new();
        for line in text.lines() {
            // An option starts a line (boost indents it by two); lines indented
            // further continue a description and may mention other options.
            let indent = line.len() - line.trim_start().len();
            if indent > 4 || !line.trim_start().starts_with('-') {
                continue;
            }
            for token in line.split_whitespace() {
                let token = token.trim_end_matches(',');
                if token == "[" || token == "]" {
                    continue;
                }
                let bare = token.trim_start_matches('-');
                let is_name = token.starts_with('-')
                    && !bare.is_empty()
                    && bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '?');
                if !is_name {
                    // "arg", "(=0)", "[=arg(=1)]", ":": the names are behind us.
                    break;
                }
                names.insert(token.to_owned());
            }
        }
        Listing { names }
    }

    /// A listing of exactly these names (the ones assumed when `--help` fails).
    pub fn of(names: &[&str]) -> Listing {
        Listing {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    /// Whether the app accepts `name`.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// How many option names it holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it names no option at all (not a help listing).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Forgets `name` (the app refused it after all).
    pub fn forget(&mut self, name: &str) {
        self.names.remove(name);
    }
}

/// Why `APP --help` gave no listing.
#[derive(Debug, thiserror::Error)]
pub enum HelpError {
    /// It could not be started.
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    /// It did not end in time (a camera stack that hangs at start-up).
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// It answered, but with no option listing (e.g. an app refusing to run on this
    /// camera stack): its last line.
    #[error("it printed no option list ({0})")]
    NoListing(String),
}

/// Runs `app --help` and parses what it prints. Old libcamera-apps (October 2021 to
/// July 2022, Bullseye's first releases) print the listing on stderr, later ones
/// and raspivid on stdout, so both are read. A hung app is killed with its process
/// group after `timeout`.
pub async fn ask(app: &Path, timeout: Duration) -> Result<Listing, HelpError> {
    let mut command = tokio::process::Command::new(app);
    command
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(HelpError::Spawn)?;
    // Also stops whatever a wrapper script started, should it hang: killed before
    // the app is reaped (see GroupKiller), whether it ended or timed out.
    let group = child.id().map(GroupKiller);
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let read = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut out).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                s.read_to_end(&mut err).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b).map(|()| (out, err))
    };
    let read = tokio::time::timeout(timeout, async {
        let output = read.await;
        crate::exec::exited(child.id()).await;
        output
    })
    .await;
    if let Some(group) = &group {
        group.kill();
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(group) = group {
        group.reaped();
    }
    let (out, err) = read
        .map_err(|_| HelpError::Timeout(timeout))?
        .map_err(HelpError::Spawn)?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&err));
    let listing = Listing::parse(&text);
    if listing.is_empty() {
        let last = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("nothing at all");
        return Err(HelpError::NoListing(last.to_owned()));
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of rpicam-vid's listing (boost::program_options, 120 columns, the
    /// description at column 40), trimmed to a few options.
    const RPICAM_VID: &str = "Valid options are:
  -h [ --help ] [=arg(=1)] (=0)         Print this help message
  --version [=arg(=1)] (=0)             Displays the build version number
  --camera arg (=0)                     Chooses the camera to use. To list the available indexes, use the
                                        --list-cameras option.
  -c [ --config ] [=arg(=config.txt)]   Read the options from a file.
  --info-text arg (=#%frame (%fps fps) exp %exp ag %ag dg %dg)
                                        Sets the information string on the titlebar. Available values:
                                        %frame (frame number)
  -t [ --timeout ] arg (=5sec)          Time for which program runs.
  -n [ --nopreview ] [=arg(=1)] (=0)    Do not show a preview window
  --flush [=arg(=1)] (=0)               Flush output data as soon as possible
  -b [ --bitrate ] arg (=0bps)          Set the video bitrate for encoding.
  --profile arg                         Set the encoding profile
  -g [ --intra ] arg (=0)               Set the intra frame period
  --low-latency [=arg(=1)] (=0)         Enables the libav/libx264 low latency presets for video encoding.
";

    /// The shape of raspivid's listing (userland's raspicli_display_help).
    const RASPIVID: &str = "
\"raspivid\" Camera App (commit 7cbfbd3 Tainted)

Display camera output to display, and optionally saves an H264 capture at requested bitrate


usage: raspivid [options]

Image parameter commands

-b, --bitrate\t: Set bitrate. Use bits per second (e.g. 10MBits/s would be -b 10000000)
-fps, --framerate\t: Specify the frames per second to record
-ih, --inline\t: Insert inline headers (SPS, PPS) to stream
-fl, --flush\t: Flush buffers in order to decrease latency


H264 Profile options :
baseline,main,high

-?, --help\t: This help information
-w, --width\t: Set image width <size>
";

    #[test]
    fn boost_listings_give_short_and_long_names_and_skip_wrapped_descriptions() {
        let l = Listing::parse(RPICAM_VID);
        for name in [
            "-h",
            "--help",
            "--version",
            "--camera",
            "-c",
            "--config",
            "--info-text",
            "-t",
            "--timeout",
            "-n",
            "--nopreview",
            "--flush",
            "-b",
            "--bitrate",
            "--profile",
            "-g",
            "--intra",
            "--low-latency",
        ] {
            assert!(l.has(name), "{name} missing from {l:?}");
        }
        // Named only inside a description: not an option of this listing.
        assert!(!l.has("--list-cameras"), "{l:?}");
        assert_eq!(l.len(), 18, "{l:?}");
    }

    #[test]
    fn raspivid_listings_give_its_abbreviations() {
        let l = Listing::parse(RASPIVID);
        for name in [
            "-b",
            "--bitrate",
            "-fps",
            "--framerate",
            "-ih",
            "--inline",
            "-fl",
            "--flush",
            "-?",
            "--help",
            "-w",
            "--width",
        ] {
            assert!(l.has(name), "{name} missing from {l:?}");
        }
        assert_eq!(l.len(), 12, "{l:?}");
    }

    #[test]
    fn text_without_a_listing_names_nothing() {
        let l = Listing::parse(
            "ERROR: the system appears to be configured for the legacy camera stack\n",
        );
        assert!(l.is_empty());
        assert!(Listing::parse("").is_empty());
        let mut l = Listing::of(&["--flush", "-n"]);
        l.forget("--flush");
        assert!(!l.has("--flush") && l.has("-n"));
    }

    fn script(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("nalcast-help-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[tokio::test]
    async fn a_listing_on_stderr_counts_and_an_error_is_reported_with_its_last_line() {
        let old = script(
            "old-libcamera-vid",
            "printf 'Valid options are:\\n  --inline [=arg(=1)] (=0)   Force PPS/SPS\\n' >&2",
        );
        let l = ask(&old, HELP_TIMEOUT).await.expect("listing");
        assert!(l.has("--inline"), "{l:?}");
        let legacy = script(
            "legacy-stack",
            "echo 'ERROR: the system appears to be configured for the legacy camera stack' >&2; exit 255",
        );
        let e = ask(&legacy, HELP_TIMEOUT).await.expect_err("no listing");
        assert!(e.to_string().contains("legacy camera stack"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_help_times_out_and_its_processes_are_killed() {
        let pidfile =
            std::env::temp_dir().join(format!("nalcast-help-hang-{}", std::process::id()));
        let _ = std::fs::remove_file(&pidfile);
        let hang = script(
            "hang",
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
        );
        let started = std::time::Instant::now();
        let e = ask(&hang, Duration::from_millis(300))
            .await
            .expect_err("timeout");
        assert!(matches!(e, HelpError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2), "{e}");
        // The script's own child (its `sleep`) goes with the process group.
        let pid = std::fs::read_to_string(&pidfile).expect("the script ran");
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            // Gone, or dead and waiting for init to reap it.
            if state.is_empty() || state.contains(") Z") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hung app's child outlived the timeout: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
