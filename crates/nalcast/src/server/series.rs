//! Every metric series nalcast exports, created at start-up, so a Prometheus scrape
//! sees each one from the first moment (at 0) rather than only after its first
//! event: an alert on `nalcast_viewers` or a rate over `nalcast_disconnects_total`
//! needs the series to exist.
//!
//! Each series is defined once, as a [`Series`] constant beside the code that counts
//! it (`nalcast_core::metric` says how); this is the list of them.
//! `scripts/check-structure.sh` fails when one is defined and not listed here.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nalcast_core::metric::Series;

use super::viewer::{link, session};
use super::{auth, hls, hls_budget, host, limits, listen, origin};
use nalcast_core::{hub, ingest, join, keyframe, package};
use nalcast_sources::publish;

/// Every series, in the order `/metrics` describes them.
pub const ALL: [Series; 34] = [
    hub::VIEWERS,
    limits::CONNECTIONS_OPEN,
    hub::FRAMES_IN,
    hub::BYTES_IN,
    session::BYTES_OUT,
    hub::VIEWER_SKIPS,
    nalcast_sources::SOURCE_RESTARTS,
    host::HOST_REJECTED,
    ingest::STREAM_ERRORS,
    link::TCP_INFO_UNAVAILABLE,
    auth::AUTH_FAILURES,
    session::DISCONNECTS,
    origin::WS_REJECTED,
    listen::CONNECTIONS_REJECTED,
    listen::ACCEPT_ERRORS,
    auth::AUTH_REFUSED,
    keyframe::KEYFRAME_REQUESTS,
    join::JOINS,
    hls::HLS_REQUESTS,
    hls_budget::HLS_REFUSED,
    package::HLS_PLAYLIST_VERSIONS,
    publish::PUBLISH_UP,
    publish::PUBLISH_RESTARTS,
    session::QUEUE_DELAY,
    session::SERVER_LATENCY,
    crate::streams::RELOADS,
    super::snapshot::SNAPSHOTS,
    super::snapshot::SNAPSHOT_SECONDS,
    super::snapshot::MJPEG_VIEWERS,
    super::snapshot::MJPEG_FRAMES,
    super::webrtc::SESSIONS,
    super::webrtc::SESSIONS_ENDED,
    super::webrtc::VIEWER_KEYFRAME_REQUESTS,
    super::webrtc::PACKETS_RESENT,
];

/// Describes every series and creates those of the whole server at zero (the
/// per-stream ones are created with each stream: [`register_stream`]). Call once,
/// after the recorder is installed.
pub fn register() {
    for series in ALL {
        series.register(&[]);
    }
}

/// Creates every per-stream series at zero for a new stream, the publish series
/// for each of its publishers' `targets`.
pub fn register_stream(stream: &nalcast_core::metric::StreamLabel, targets: &[String]) {
    for series in ALL {
        series.register_stream(stream, targets);
    }
}

/// Installs the Prometheus recorder (latency histograms in buckets fine enough for
/// the figures they are compared with), creates every series and keeps the
/// histograms folded; the handle renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    // Fine steps up to 25 ms, where the server-added delay and the kernel floor it is
    // compared with lie (1 ms with few viewers, 10-20 ms with a thousand): a
    // percentile read as a bucket's upper bound is at most 25 % high below 2 ms and
    // at most 17 % from there to 25 ms.
    let latency_buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_25, 0.001_5, 0.001_75, 0.002,
        0.002_25, 0.002_5, 0.002_75, 0.003, 0.003_5, 0.004, 0.004_5, 0.005, 0.005_5, 0.006, 0.007,
        0.008, 0.009, 0.01, 0.011, 0.012, 0.013_5, 0.015, 0.016_5, 0.018, 0.02, 0.022_5, 0.025,
        0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    register();
    // Histograms keep every recorded sample until upkeep folds them in: without it
    // an unscraped nalcast grew by about 1 KB per viewer every second.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_listed_once_and_named_in_the_book_s_style() {
        let mut names: Vec<_> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a series is listed twice");
        for series in ALL {
            assert!(series.is_well_named(), "{series:?}");
        }
    }
}
