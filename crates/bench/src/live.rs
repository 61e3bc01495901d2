//! When a joining viewer is live, and how soon it could have been (framed dialect:
//! every access unit carries its capture time, on the server's clock, which is this
//! machine's when the load generator runs beside the server).
use serde::Serialize;

/// Payload share of what a shaped loopback with a 1500-byte MTU carries for one TCP
/// stream: 1448 bytes of data per 1514-byte frame (14 link header, 20 IPv4, 20 TCP,
/// 12 timestamp option), and, since both directions pass the same shaper on a
/// loopback, the receiver's ACK (a 66-byte frame) for every two segments.
pub const TCP_GOODPUT_SHARE: f64 = (2.0 * 1448.0) / (2.0 * 1514.0 + 66.0);

/// One access unit as a viewer received it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Received {
    /// Arrival, ms since the viewer started connecting.
    pub at_ms: f64,
    /// Capture to arrival, ms. Catch-up access units count too: their capture lies
    /// before the join, and a picture that old is not live.
    pub latency_ms: f64,
    /// The server's sequence number.
    pub seq: u32,
    /// Capture time, µs since the Unix epoch.
    pub capture_us: u64,
    /// Bytes on the wire: the message and its WebSocket header.
    pub bytes: u64,
    /// An IDR access unit.
    pub keyframe: bool,
    /// Sent from the GOP cache on join or resume.
    pub catch_up: bool,
    /// Frames missing from the sequence just before this one.
    pub missing_before: u32,
}

/// (arrival ms, capture-to-arrival ms) of what a viewer received, in order; frames
/// missing from the sequence count as one arrival that was never within any bound.
pub fn arrivals(frames: &[Received]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        if f.missing_before > 0 {
            out.push((f.at_ms, f64::INFINITY));
        }
        out.push((f.at_ms, f.latency_ms));
    }
    out
}

/// The last arrival later than `within_ms` (arrival ms, capture-to-arrival ms; a
/// missing frame's is infinite), to see what kept a viewer from being live sooner.
pub fn last_late(arrivals: &[(f64, f64)], within_ms: f64) -> Option<(f64, f64)> {
    arrivals
        .iter()
        .rev()
        .find(|&&(_, latency)| latency.is_nan() || latency > within_ms)
        .copied()
}

/// When the viewer went live: the arrival of the first frame from which every later
/// one's capture-to-arrival delay is at most `within_ms`, provided that stretch lasts
/// at least `hold_ms` (first to last arrival), so a viewer that only got its last few
/// frames in time before the run ended does not count. `None`: never.
pub fn live_after(arrivals: &[(f64, f64)], within_ms: f64, hold_ms: f64) -> Option<f64> {
    let last = arrivals.last()?.0;
    // NaN is not within anything.
    let start = arrivals
        .iter()
        .rposition(|&(_, latency)| latency.is_nan() || latency > within_ms)
        .map_or(0, |i| i + 1);
    let first = arrivals.get(start)?.0;
    (last - first >= hold_ms).then_some(first)
}

/// What a join could have achieved, from the stream the viewer saw: the target is to be
/// live within min(the join's GOP bytes / spare link rate, time to the next keyframe)
/// plus a margin. Either send the GOP so far faster than real time on the link's spare
/// capacity, or skip it and start at the next keyframe, whichever is sooner.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JoinBound {
    /// From the capture of the last keyframe before the join to the join, ms.
    pub gop_phase_ms: f64,
    /// Bytes of the stream from that keyframe up to the join: what a catch-up sends.
    pub gop_bytes: u64,
    /// `gop_bytes` is estimated from the next GOP at the same phase, because the
    /// viewer did not receive the join's own GOP whole.
    pub gop_bytes_estimated: bool,
    /// From the join to the capture of the next keyframe, ms.
    pub next_keyframe_ms: f64,
    /// The stream's rate on the wire over whole GOPs received live, Mbit/s.
    pub stream_mbit: f64,
    /// The link's TCP goodput minus the stream, Mbit/s.
    pub spare_mbit: f64,
    /// min(gop_bytes / spare, next_keyframe) + margin, ms.
    pub bound_ms: f64,
}

/// The bound for a viewer that started joining at wall time `join_us` and received
/// `frames`, on a link with `goodput_bps` of TCP payload. `None` when the run did not
/// show two keyframes after the join (the stream rate and the GOP are measured over
/// whole GOPs).
pub fn join_bound(
    join_us: u64,
    frames: &[Received],
    goodput_bps: f64,
    margin_ms: f64,
) -> Option<JoinBound> {
    let live_from = frames.iter().position(|f| f.capture_us > join_us)?;
    let live = &frames[live_from..];
    let keys: Vec<usize> = (0..live.len()).filter(|&i| live[i].keyframe).collect();
    let (&k1, &k_last) = (keys.first()?, keys.last()?);
    if keys.len() < 2 {
        return None;
    }
    let k2 = keys[1];
    let us_to_ms = |us: u64| us as f64 / 1000.0;
    let next_keyframe_ms = us_to_ms(live[k1].capture_us.saturating_sub(join_us));
    let span_s = live[k_last].capture_us.saturating_sub(live[k1].capture_us) as f64 / 1e6;
    let stream_bps = live[k1..k_last].iter().map(|f| f.bytes).sum::<u64>() as f64 * 8.0 / span_s;

    let pre = &frames[..live_from];
    let exact = pre.iter().rposition(|f| f.keyframe).filter(|&k| {
        pre[k + 1..].iter().all(|f| f.missing_before == 0) && live[0].missing_before == 0
    });
    let (gop_phase_ms, gop_bytes, gop_bytes_estimated) = match exact {
        Some(k) => (
            us_to_ms(join_us.saturating_sub(pre[k].capture_us)),
            pre[k..].iter().map(|f| f.bytes).sum(),
            false,
        ),
        None => {
            // The GOP that follows, up to the same phase.
            let gop_us = live[k2].capture_us.saturating_sub(live[k1].capture_us);
            let phase_us = gop_us.saturating_sub(live[k1].capture_us.saturating_sub(join_us));
            let limit = live[k1].capture_us + phase_us;
            let bytes = live[k1..k2]
                .iter()
                .take_while(|f| f.capture_us <= limit)
                .map(|f| f.bytes)
                .sum();
            (us_to_ms(phase_us), bytes, true)
        }
    };
    let spare_bps = goodput_bps - stream_bps;
    let catch_up_ms = if spare_bps > 0.0 {
        gop_bytes as f64 * 8.0 / spare_bps * 1000.0
    } else {
        f64::INFINITY
    };
    Some(JoinBound {
        gop_phase_ms,
        gop_bytes,
        gop_bytes_estimated,
        next_keyframe_ms,
        stream_mbit: stream_bps / 1e6,
        spare_mbit: spare_bps / 1e6,
        bound_ms: catch_up_ms.min(next_keyframe_ms) + margin_ms,
    })
}

/// WebSocket header length of a server message of `len` bytes (unmasked).
pub fn ws_header_len(len: usize) -> u64 {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_after_is_the_start_of_the_last_stretch_within_the_bound() {
        let a = [
            (10.0, 900.0), // catch-up keyframe
            (20.0, 850.0),
            (30.0, 95.0), // within, but a later one is not
            (40.0, 120.0),
            (50.0, 80.0), // from here on, all within
            (60.0, 100.0),
            (70.0, 40.0),
        ];
        assert_eq!(live_after(&a, 100.0, 0.0), Some(50.0));
        assert_eq!(live_after(&a, 120.0, 0.0), Some(30.0));
        assert_eq!(live_after(&a, 1000.0, 0.0), Some(10.0));
        // The stretch must last: 50 → 70 is 20 ms.
        assert_eq!(live_after(&a, 100.0, 20.0), Some(50.0));
        assert_eq!(live_after(&a, 100.0, 21.0), None);
        assert_eq!(last_late(&a, 100.0), Some((40.0, 120.0)));
        assert_eq!(last_late(&a, 1000.0), None);
    }

    #[test]
    fn never_live_when_the_last_frame_is_late_or_nothing_arrived() {
        assert_eq!(live_after(&[(10.0, 50.0), (20.0, 150.0)], 100.0, 0.0), None);
        assert_eq!(live_after(&[], 100.0, 0.0), None);
        assert_eq!(live_after(&[(10.0, f64::NAN)], 100.0, 0.0), None);
    }

    fn frame(seq: u32, capture_ms: u64, bytes: u64, keyframe: bool) -> Received {
        Received {
            at_ms: 0.0,
            latency_ms: 0.0,
            seq,
            capture_us: capture_ms * 1000,
            bytes,
            keyframe,
            catch_up: false,
            missing_before: 0,
        }
    }

    #[test]
    fn missing_frames_are_never_in_time() {
        let mut frames = vec![frame(1, 0, 10, true), frame(2, 33, 10, false)];
        frames[0].at_ms = 5.0;
        frames[1].at_ms = 40.0;
        frames[1].missing_before = 3;
        assert_eq!(
            arrivals(&frames),
            vec![(5.0, 0.0), (40.0, f64::INFINITY), (40.0, 0.0)]
        );
        assert_eq!(live_after(&arrivals(&frames), 100.0, 0.0), Some(40.0));
    }

    /// A stream of 10 frames per second, keyframes every 10 frames (1 s GOP): a
    /// keyframe of 10 000 bytes and deltas of 1 000 bytes, 19 000 bytes per GOP
    /// (152 kbit/s).
    fn stream(from_seq: u32, to_seq: u32) -> Vec<Received> {
        (from_seq..to_seq)
            .map(|s| {
                let key = s % 10 == 0;
                frame(s, u64::from(s) * 100, if key { 10_000 } else { 1_000 }, key)
            })
            .collect()
    }

    #[test]
    fn bound_from_the_gop_received_on_join() {
        // Joins at 2.45 s: the GOP from 2.0 s (frames 20..=24) came as catch-up.
        let frames = stream(20, 50);
        let b = join_bound(2_450_000, &frames, 1_152_000.0, 150.0).unwrap();
        assert!(!b.gop_bytes_estimated);
        assert_eq!(b.gop_phase_ms, 450.0);
        assert_eq!(b.gop_bytes, 14_000);
        assert_eq!(b.next_keyframe_ms, 550.0);
        assert!((b.stream_mbit - 0.152).abs() < 1e-9);
        assert!((b.spare_mbit - 1.0).abs() < 1e-9);
        // 14 000 bytes at 1 Mbit/s: 112 ms, sooner than the next keyframe.
        assert!((b.bound_ms - 262.0).abs() < 1e-9);
        // On a link with no room to spare, the next keyframe is the bound.
        let b = join_bound(2_450_000, &frames, 100_000.0, 150.0).unwrap();
        assert_eq!(b.bound_ms, 700.0);
    }

    #[test]
    fn bound_estimated_from_the_next_gop_when_the_join_skipped_its_own() {
        // Only the keyframe of the join's GOP, then live from frame 25: the GOP's
        // bytes to the phase come from the next one (frames 30..=34).
        let mut frames = stream(20, 21);
        frames.extend(stream(25, 50));
        frames[1].missing_before = 4;
        let b = join_bound(2_450_000, &frames, 1_152_000.0, 150.0).unwrap();
        assert!(b.gop_bytes_estimated);
        assert_eq!(b.gop_phase_ms, 450.0);
        assert_eq!(b.gop_bytes, 14_000);
        assert_eq!(b.next_keyframe_ms, 550.0);
        // Nothing before the join at all (a server that waits for the next keyframe).
        let b = join_bound(2_450_000, &stream(30, 50), 1_152_000.0, 150.0).unwrap();
        assert!(b.gop_bytes_estimated);
        assert_eq!(b.gop_bytes, 14_000);
    }

    #[test]
    fn no_bound_without_a_whole_gop_after_the_join() {
        assert_eq!(join_bound(2_450_000, &stream(20, 35), 1e6, 150.0), None);
    }
}
