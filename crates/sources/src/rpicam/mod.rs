//! `--source rpicam`: the Raspberry Pi camera app on this machine (rpicam-vid, else
//! libcamera-vid, else raspivid), asked once what options it has (`help.rs`), run
//! with those that make it stream Baseline H.264 with inline SPS/PPS, low latency,
//! no preview, forever, to stdout (`args.rs`), its endings told in one line
//! (`exit.rs`).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::frame_end::FrameEnds;
use crate::{exec, SourceError, SourceOptions};
use nalcast_core::clock::shutdown_requested;
use nalcast_core::Hub;

mod args;
pub mod board;
mod exit;
mod help;

use args::{camera_args, CliDialect, Wants};
use exit::Cause;
use help::Listing;

/// Camera apps in order of preference (newest first).
pub const CAMERA_APPS: [&str; 3] = ["rpicam-vid", "libcamera-vid", "raspivid"];

/// Finds the first camera app on `PATH`.
pub fn find_camera_app() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for app in CAMERA_APPS {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(app);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no Raspberry Pi camera app found: looked for {} on PATH (install rpicam-apps, or use --source exec:COMMAND)",
        CAMERA_APPS.join(", ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What nalcast has learnt about the camera app, kept across restarts of the
/// source: the app is asked for its options once, not at every restart.
#[derive(Debug, Default)]
pub struct CameraApp {
    known: Option<Known>,
}

/// One app file and what it accepts.
#[derive(Debug)]
struct Known {
    app: PathBuf,
    /// When the file last changed: an upgraded app is asked again.
    modified: Option<SystemTime>,
    listing: Listing,
    /// It refused `--profile baseline` once: ask for no profile any more.
    profile_refused: bool,
}

impl CameraApp {
    /// Runs the camera app once, until it ends or `shutdown` turns true (then `Ok`).
    pub async fn run(
        &mut self,
        opts: &SourceOptions,
        hub: &Arc<Hub>,
        shutdown: watch::Receiver<bool>,
        ends: &mut FrameEnds,
    ) -> Result<(), SourceError> {
        let app = find_camera_app().map_err(SourceError::Retry)?;
        let name = app_name(&app);
        let dialect = CliDialect::of(&name);
        let modified = std::fs::metadata(&app).and_then(|m| m.modified()).ok();
        let known = match self.known.take() {
            Some(k) if k.app == app && k.modified == modified => k,
            _ => {
                let mut stop = shutdown.clone();
                let listing = tokio::select! {
                    l = learn(&app, &name, dialect) => l,
                    _ = shutdown_requested(&mut stop) => return Ok(()),
                };
                Known {
                    app: app.clone(),
                    modified,
                    listing,
                    profile_refused: false,
                }
            }
        };
        let known = self.known.insert(known);
        let wants = Wants {
            baseline: !known.profile_refused,
            camera: opts.camera,
            orientation: opts.orientation,
        };
        let args = camera_args(dialect, &known.listing, &opts.video, wants);
        let description = format!("{} {}", app.display(), args.join(" "));
        let mut command = tokio::process::Command::new(&app);
        command.args(&args);
        let Some(end) =
            exec::run_child_to_end(command, &description, opts, hub, shutdown, ends).await?
        else {
            return Ok(());
        };
        let stderr = end.stderr.join(" | ");
        let line = match exit::diagnose(&end.stderr) {
            Some(diagnosis) => {
                // Learn from it: the next start leaves out what this app refused.
                match &diagnosis.cause {
                    Cause::UnknownOption(option) if dialect.optional(option) => {
                        known.listing.forget(option);
                    }
                    Cause::ProfileRefused => known.profile_refused = true,
                    _ => {}
                }
                debug!(command = %description, %stderr, "{}", end.reason);
                diagnosis.explain(&name)
            }
            None => {
                warn!(command = %description, %stderr, "{}", end.reason);
                match end.stderr.last() {
                    Some(last) => {
                        format!("{} ({name} said: \"{}\")", end.reason, exit::quote(last))
                    }
                    None => end.reason,
                }
            }
        };
        // The camera app's words go to viewers too (unlike an exec: command's): it
        // was given no address or password, so it has none to print.
        Err(SourceError::Retry(line))
    }
}

/// The app's file name ("rpicam-vid").
fn app_name(app: &Path) -> String {
    app.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Asks the app for its options and says in the log what it found and what this
/// board means for the encoder.
async fn learn(app: &Path, name: &str, dialect: CliDialect) -> Listing {
    let listing = match help::ask(app, help::HELP_TIMEOUT).await {
        Ok(listing) => {
            info!(
                "camera: {} ({} options in its --help{})",
                app.display(),
                listing.len(),
                match (dialect, listing.has("--low-latency")) {
                    (CliDialect::Libcamera, true) => ", with --low-latency",
                    (CliDialect::Libcamera, false) => ", without --low-latency",
                    (CliDialect::Raspivid, _) => "",
                }
            );
            listing
        }
        Err(e) => {
            warn!(
                "camera: {name} --help: {e}; passing only the options every version since 2021 has"
            );
            dialect.assumed_listing()
        }
    };
    if let Some(model) = board::read_model().filter(|m| board::encodes_in_software(m)) {
        // rpicam-vid picks libav with libx264 where there is no hardware encoder
        // (encoder/encoder.cpp, h264_codec_select, since v1.2.0) and passes
        // --profile on: a fixed map with "baseline" in v1.2.0-v1.4.0, the codec
        // descriptor's profiles from v1.4.2 (commit 4fc9aba). v1.4.1 looked at
        // libx264's own profile list, which is empty, and exits with "libav: no such
        // profile baseline": CameraApp::run then drops the profile and says so.
        info!(
            "camera: {model} has no hardware H.264 encoder; {name} encodes with libx264 on \
             the CPU, asked for Baseline (--profile baseline) so that every page can play it"
        );
        if dialect == CliDialect::Libcamera && !listing.has("--low-latency") {
            warn!(
                "camera: this {name} has no --low-latency (rpicam-apps before 1.6.0): libx264 \
                 runs with frame threads and adds a few frames of delay; update rpicam-apps"
            );
        }
    }
    listing
}
