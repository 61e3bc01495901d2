//! Every metric series nalcast exports, described and created at start-up, so a
//! Prometheus scrape sees each one from the first moment (at 0) rather than only
//! after its first event: an alert on `nalcast_viewers` or a rate over
//! `nalcast_disconnects_total` needs the series to exist.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Label values each labelled series is created with.
const WS_REJECT_REASONS: [&str; 3] = ["origin", "max-viewers", "max-viewers-per-ip"];
const CONNECTION_REJECT_REASONS: [&str; 2] = ["max-connections", "max-connections-per-ip"];
const AUTH_REFUSE_REASONS: [&str; 2] = ["busy", "locked-out"];

/// Describes every series and creates it at zero, the publish series for each of
/// `publish_targets` (`target="0"`, `"1"`, …). Call once, after the recorder is
/// installed.
pub fn register(publish_targets: usize) {
    describe_gauge!("nalcast_viewers", "viewers connected");
    gauge!("nalcast_viewers").set(0.0);
    describe_gauge!("nalcast_connections_open", "TCP connections open");
    gauge!("nalcast_connections_open").set(0.0);

    for (name, help) in [
        (
            "nalcast_frames_in_total",
            "access units received from the source",
        ),
        (
            "nalcast_bytes_in_total",
            "bytes of access units received from the source",
        ),
        ("nalcast_bytes_out_total", "bytes written to viewers"),
        (
            "nalcast_viewer_skips_total",
            "times a viewer's queue overflowed and skipped to the next keyframe",
        ),
        (
            "nalcast_source_restarts_total",
            "times the source was restarted",
        ),
        (
            "nalcast_host_rejected_total",
            "requests for a host name this server does not serve (DNS rebinding defence)",
        ),
        (
            "nalcast_stream_errors_total",
            "bad input from the source (damaged or unknown NAL units)",
        ),
        (
            "nalcast_tcp_info_unavailable_total",
            "1 once the kernel answered TCP_INFO short (an emulator, a sandbox): joins then measure write times",
        ),
        (
            "nalcast_auth_failures_total",
            "requests refused for missing or wrong credentials",
        ),
    ] {
        describe_counter!(name, help);
        counter!(name).increment(0);
    }
    for (name, help, reasons) in [
        (
            "nalcast_disconnects_total",
            "viewers that left, by reason",
            &super::viewer::Ended::REASONS[..],
        ),
        (
            "nalcast_ws_rejected_total",
            "WebSocket handshakes refused, by reason",
            &WS_REJECT_REASONS,
        ),
        (
            "nalcast_connections_rejected_total",
            "connections refused at accept, by reason",
            &CONNECTION_REJECT_REASONS,
        ),
        (
            "nalcast_auth_refused_total",
            "requests refused before their credentials were checked, by reason",
            &AUTH_REFUSE_REASONS,
        ),
    ] {
        describe_counter!(name, help);
        for &reason in reasons {
            counter!(name, "reason" => reason).increment(0);
        }
    }

    describe_counter!(
        "nalcast_keyframe_requests_total",
        "keyframes viewers needed, by what became of the request: sent to the source, \
         deferred (asked again too soon), unsupported (the source cannot make one), \
         no source"
    );
    for outcome in nalcast_core::hub::KeyframeOutcome::LABELS {
        counter!("nalcast_keyframe_requests_total", "outcome" => outcome).increment(0);
    }

    describe_counter!(
        "nalcast_joins_total",
        "viewers' starts, by how their catch-up (the GOP so far) ended: gop (sent whole), \
         next_keyframe (the link was too slow to finish it before the next keyframe), \
         overtaken (a new keyframe came while some of it was still queued)"
    );
    for start in nalcast_core::join::JOIN_STARTS {
        counter!("nalcast_joins_total", "start" => start).increment(0);
    }

    describe_counter!(
        "nalcast_hls_requests_total",
        "HLS requests answered, by file: playlist, part, segment, init (with a cache in \
         front, about one per part and playlist version whatever the number of viewers)"
    );
    for file in super::hls::FILES {
        counter!("nalcast_hls_requests_total", "file" => file).increment(0);
    }
    describe_counter!(
        "nalcast_hls_playlist_versions_total",
        "LL-HLS playlist versions: each a new part (or a segment closed)"
    );
    counter!("nalcast_hls_playlist_versions_total").increment(0);
    describe_gauge!(
        "nalcast_publish_up",
        "1 while a --publish target receives the stream, by target (its place among the --publish URLs, from 0)"
    );
    describe_counter!(
        "nalcast_publish_restarts_total",
        "times a --publish target's ffmpeg was restarted (failures and parameter changes), by target"
    );
    for target in 0..publish_targets {
        gauge!("nalcast_publish_up", "target" => target.to_string()).set(0.0);
        counter!("nalcast_publish_restarts_total", "target" => target.to_string()).increment(0);
    }

    describe_histogram!(
        "nalcast_queue_delay_seconds",
        "time an item waited in a viewer's queue"
    );
    // Registering a histogram creates its series; no sample is recorded.
    let _ = histogram!("nalcast_queue_delay_seconds");
    describe_histogram!(
        "nalcast_server_latency_seconds",
        "from a frame's arrival to its last byte written to a viewer, by frame kind"
    );
    for frame in ["key", "delta"] {
        let _ = histogram!("nalcast_server_latency_seconds", "frame" => frame);
    }
}
