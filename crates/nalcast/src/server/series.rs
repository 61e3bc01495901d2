//! Every metric series nalcast exports, created at start-up, so a Prometheus scrape
//! sees each one from the first moment (at 0) rather than only after its first
//! event: an alert on `nalcast_viewers` or a rate over `nalcast_disconnects_total`
//! needs the series to exist.
//!
//! Each series is defined once, as a [`Series`] constant beside the code that counts
//! it (`nalcast_core::metric` says how); this is the list of them.
//! `scripts/check-structure.sh` fails when one is defined and not listed here.

use nalcast_core::metric::Series;

use super::viewer::{link, routes, session};
use super::{auth, hls, hls_budget, host, listen};
use nalcast_core::{hub, ingest, join};
use nalcast_sources::publish;

/// Every series, in the order `/metrics` describes them.
pub const ALL: [Series; 25] = [
    hub::VIEWERS,
    listen::CONNECTIONS_OPEN,
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
    routes::WS_REJECTED,
    listen::CONNECTIONS_REJECTED,
    listen::ACCEPT_ERRORS,
    auth::AUTH_REFUSED,
    hub::KEYFRAME_REQUESTS,
    join::JOINS,
    hls::HLS_REQUESTS,
    hls_budget::HLS_REFUSED,
    hub::HLS_PLAYLIST_VERSIONS,
    publish::PUBLISH_UP,
    publish::PUBLISH_RESTARTS,
    session::QUEUE_DELAY,
    session::SERVER_LATENCY,
];

/// Describes every series and creates it at zero, the publish series for each of
/// `publish_targets` (`target="0"`, `"1"`, …). Call once, after the recorder is
/// installed.
pub fn register(publish_targets: usize) {
    let targets: Vec<String> = (0..publish_targets).map(|t| t.to_string()).collect();
    for series in ALL {
        series.register(&targets);
    }
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
