//! An Annex-B file, paced in real time at the configured frame rate, looping.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::{SourceError, SourceOptions};
use nalcast_core::clock::wall_us;
use nalcast_core::ingest::Ingest;
use nalcast_core::Hub;

/// Plays `path` forever at `opts.video.fps`.
pub async fn run(path: &Path, opts: &SourceOptions, hub: &Arc<Hub>) -> Result<(), SourceError> {
    let mut ingest = Ingest::new(hub.clone(), opts.max_nal_size);
    let fps = opts.video.fps.max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 64 * 1024];
    let mut aus = Vec::new();
    loop {
        let mut file = tokio::fs::File::open(path).await.map_err(|e| {
            warn!("cannot open the source file {}: {e}", path.display());
            SourceError::Retry("cannot open the source file".into())
        })?;
        let mut frames_this_pass = 0u64;
        let mut first_read = true;
        loop {
            let n = file.read(&mut buf).await?;
            if std::mem::take(&mut first_read) {
                // Checked at start-up too (preflight); the file may have changed since.
                if let Some(format) = crate::sniff::foreign(&buf[..n]) {
                    let what = format!("source file {}", path.display());
                    return Err(SourceError::Final(format.advice(&what)));
                }
            }
            if n == 0 {
                // The next pass is a break, like a source restart: a file that does
                // not begin with a keyframe goes on from its first keyframe, not
                // from pictures that would refer to this pass's last ones.
                ingest.splitter().break_stream(0, &mut aus);
            } else {
                ingest.splitter().push(&buf[..n], 0, &mut aus);
            }
            for mut au in aus.drain(..) {
                ticker.tick().await;
                au.timestamp_us = wall_us();
                ingest.publish_au(au, std::time::Instant::now());
                frames_this_pass += 1;
            }
            if n == 0 {
                break;
            }
        }
        if frames_this_pass == 0 {
            warn!(
                "no playable H.264 frames in {} (is it an Annex-B .h264 file with SPS, PPS and an IDR frame?)",
                path.display()
            );
            return Err(SourceError::Retry(
                "no playable H.264 frames in the source file".into(),
            ));
        }
    }
}
