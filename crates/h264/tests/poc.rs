//! Picture order counts of real x264 streams with B-frames: within each IDR period
//! they number the pictures in display order (x264 counts 2 per frame).
#![allow(missing_docs)]

use nalcast_h264::{AccessUnit, AnnexBParser, AuAssembler, PocCounter, SpsDetails};

/// 75 frames of x264 with these arguments, from the test kit's cache; `None`
/// (SKIPPED) where ffmpeg is missing outside `make test`.
fn x264(test: &str, args: &[&str]) -> Option<Vec<u8>> {
    if !testkit::tools::require_ffmpeg(test) {
        return None;
    }
    let mut all = vec!["-frames:v", "75", "-c:v", "libx264"];
    all.extend_from_slice(args);
    Some(testkit::x264::bytes("testsrc2=size=160x120:rate=30", &all))
}

fn access_units(bytes: &[u8]) -> Vec<AccessUnit> {
    let mut parser = AnnexBParser::new(1 << 20);
    let mut nals = Vec::new();
    parser.push(bytes, &mut nals);
    parser.flush(&mut nals);
    let mut asm = AuAssembler::new();
    let mut out = Vec::new();
    for nal in nals {
        asm.push(nal.expect("clean stream"), 0, &mut out);
    }
    asm.end_of_access_unit(&mut out);
    out.into_iter().map(|a| a.expect("clean stream")).collect()
}

#[test]
fn poc_numbers_pictures_in_display_order_per_idr_period() {
    for args in [
        &["-profile:v", "main", "-bf", "2", "-g", "25"][..],
        &[
            "-profile:v",
            "high",
            "-bf",
            "3",
            "-b_strategy",
            "0",
            "-g",
            "30",
        ][..],
    ] {
        let Some(stream) = x264("poc_numbers_pictures_in_display_order_per_idr_period", args)
        else {
            return;
        };
        let aus = access_units(&stream);
        assert_eq!(aus.len(), 75);
        let details = SpsDetails::from_sps(aus[0].params.active_sps()).expect("SPS");
        assert_eq!(details.poc_type, 0);
        assert!(details.may_reorder());
        assert!(details.max_num_reorder_frames.is_some_and(|n| n >= 1));
        let mut counter = PocCounter::new();
        let mut periods: Vec<Vec<i64>> = Vec::new();
        let mut reordered = false;
        for au in &aus {
            let order = counter.push(au).expect("POC");
            assert_eq!(order.idr, au.keyframe);
            if order.idr {
                periods.push(Vec::new());
            }
            let period = periods.last_mut().expect("starts with an IDR");
            reordered |= period.last().is_some_and(|&p| p > order.poc);
            period.push(order.poc);
        }
        assert!(reordered, "{args:?}: B-frames come after their references");
        for period in &periods {
            let mut sorted = period.clone();
            sorted.sort();
            let display: Vec<i64> = (0..period.len() as i64).map(|i| 2 * i).collect();
            assert_eq!(sorted, display, "{args:?}");
        }
    }
}

#[test]
fn baseline_counts_in_decode_order() {
    let Some(stream) = x264(
        "baseline_counts_in_decode_order",
        &["-profile:v", "baseline", "-g", "25"],
    ) else {
        return;
    };
    let aus = access_units(&stream);
    let details = SpsDetails::from_sps(aus[0].params.active_sps()).expect("SPS");
    let mut counter = PocCounter::new();
    let pocs: Vec<i64> = aus
        .iter()
        .map(|au| counter.push(au).expect("POC").poc)
        .collect();
    // whichever POC type x264 chose, within a period the count only rises
    for (w, au) in pocs.windows(2).zip(&aus[1..]) {
        assert!(au.keyframe || w[1] > w[0], "{pocs:?} ({details:?})");
    }
}
