//! The packager's output read back with mp4-atom's decoder.
use mp4_atom::{Buf, Codec, Decode, Ftyp, Mdat, Moof, Moov};
use nalcast_h264::AccessUnit;

use super::fragment::{FLAGS_DISPOSABLE, FLAGS_NON_SYNC, FLAGS_SYNC};
use super::*;

use testkit::au::{access_unit as au, delta, keyframe, params};
use testkit::fixtures::{PPS, SPS_BASELINE_720P as SPS_720P, SPS_BASELINE_720P_E0 as SPS_720P_E0};

/// The AVCC form of `au` without SPS, PPS and AUD, as the sample should be.
fn expected_sample(au: &AccessUnit) -> Vec<u8> {
    let mut out = Vec::new();
    for r in &au.nals {
        let n = &au.data[r.start as usize + 4..r.end as usize];
        if !matches!(n[0] & 0x1f, 7..=9) {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
    }
    out
}

struct Parsed {
    moof: Moof,
    data_offset: i32,
    mdat: Vec<u8>,
}

fn parse_fragment(bytes: &[u8]) -> Parsed {
    let mut buf = bytes;
    let moof = Moof::decode(&mut buf).expect("moof");
    let moof_len = bytes.len() - buf.remaining();
    let mdat = Mdat::decode(&mut buf).expect("mdat");
    assert_eq!(buf.remaining(), 0, "nothing after mdat");
    assert_eq!(moof.traf.len(), 1, "one track fragment");
    let traf = &moof.traf[0];
    assert_eq!(traf.tfhd.track_id, 1);
    assert!(traf.tfhd.default_base_is_moof);
    assert_eq!(traf.trun.len(), 1, "one run");
    assert_eq!(traf.trun[0].samples.len(), 1, "one sample per fragment");
    let data_offset = traf.trun[0].data_offset.expect("data offset");
    // the offset from the moof's start lands on the mdat's payload
    assert_eq!(data_offset as usize, moof_len + 8);
    Parsed {
        moof,
        data_offset,
        mdat: mdat.data,
    }
}

#[test]
fn init_segment_has_one_avc1_track_with_the_parameter_sets() {
    let p = params(SPS_720P);
    let init = Packager::init_segment(&p).expect("init segment");
    let mut buf = &init[..];
    let ftyp = Ftyp::decode(&mut buf).expect("ftyp first");
    assert!(ftyp.compatible_brands.contains(&b"iso5".into()));
    let moov = Moov::decode(&mut buf).expect("then moov");
    assert_eq!(buf.remaining(), 0, "nothing else");
    assert_eq!(moov.mvhd.timescale, TIMESCALE);
    assert_eq!(moov.trak.len(), 1);
    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.track_id, 1);
    assert_eq!(
        (trak.tkhd.width.integer(), trak.tkhd.height.integer()),
        (1280, 720)
    );
    assert_eq!(trak.mdia.mdhd.timescale, 90_000);
    assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
    let mvex = moov.mvex.as_ref().expect("mvex: samples come in fragments");
    assert_eq!(mvex.trex[0].track_id, 1);
    assert_eq!(trak.mdia.minf.stbl.stsd.codecs.len(), 1);
    let Codec::Avc1(avc1) = &trak.mdia.minf.stbl.stsd.codecs[0] else {
        panic!("avc1 sample entry expected");
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (1280, 720));
    let avcc = &avc1.avcc;
    assert_eq!(avcc.length_size, 4);
    assert_eq!(avcc.sequence_parameter_sets, vec![p.active_sps().to_vec()]);
    assert_eq!(avcc.picture_parameter_sets, vec![PPS.to_vec()]);
    assert_eq!(
        (
            avcc.avc_profile_indication,
            avcc.profile_compatibility,
            avcc.avc_level_indication
        ),
        (0x42, 0xc0, 0x1f)
    );
    assert!(avcc.ext.is_none(), "no High-profile fields for Baseline");
}

#[test]
fn init_segment_of_high_profile_carries_chroma_and_bit_depth() {
    let p = params("6764001facd9405005bb0110000003001000000303c0f1831960");
    let init = Packager::init_segment(&p).expect("init segment");
    let mut buf = &init[..];
    Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
        panic!("avc1 sample entry expected");
    };
    let ext = avc1.avcc.ext.as_ref().expect("High profile extension");
    assert_eq!(
        (ext.chroma_format, ext.bit_depth_luma, ext.bit_depth_chroma),
        (1, 8, 8)
    );
}

#[test]
fn fragments_carry_one_avcc_sample_each_on_a_continuous_timeline() {
    let p = params(SPS_720P);
    let mut packager = Packager::new();
    let mut aus = vec![keyframe(&p, 1_000_000, 3000)];
    for i in 1..40u64 {
        let ts = 1_000_000 + i * 33_333;
        aus.push(if i % 10 == 0 {
            keyframe(&p, ts, 2500)
        } else {
            delta(&p, ts, 300 + i as usize, i % 3 != 0)
        });
    }
    let mut prev: Option<(u32, u64, u32)> = None;
    for a in &aus {
        let bytes = packager.fragment(a).expect("fragment");
        let f = parse_fragment(&bytes);
        let traf = &f.moof.traf[0];
        let sample = traf.trun[0].samples.get(0).expect("sample");
        let expected = expected_sample(a);
        assert_eq!(f.mdat, expected, "mdat holds the AVCC sample");
        assert_eq!(sample.size, Some(expected.len() as u32));
        let flags = sample.flags.expect("flags");
        let reference = a.data[a.nals.last().expect("nal").start as usize + 4] & 0x60 != 0;
        let want = match (a.keyframe, reference) {
            (true, _) => FLAGS_SYNC,
            (false, true) => FLAGS_NON_SYNC,
            (false, false) => FLAGS_NON_SYNC | FLAGS_DISPOSABLE,
        };
        assert_eq!(flags, want, "sync flag on keyframes only");
        assert_eq!(flags & 0x0001_0000 == 0, a.keyframe);
        let seq = f.moof.mfhd.sequence_number;
        let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
        let duration = sample.duration.expect("duration");
        let timing = packager.last_timing().expect("timing");
        assert_eq!((timing.decode_time, timing.duration), (tfdt, duration));
        assert_eq!(timing.capture_us, a.timestamp_us);
        assert_eq!(sample.cts, Some(0), "Baseline: presentation = decode");
        match prev {
            None => assert_eq!((seq, tfdt), (1, 0)),
            Some((pseq, ptfdt, pdur)) => {
                assert_eq!(seq, pseq + 1, "sequence numbers go up by one");
                assert_eq!(tfdt, ptfdt + u64::from(pdur), "decode times continuous");
            }
        }
        assert!(f.data_offset > 0);
        prev = Some((seq, tfdt, duration));
    }
    // the first from 1/30 s, then the capture clock's frame interval: 39 × 33 333
    // µs = 116 998.83 ticks, within a millisecond (the interval is whole ticks,
    // 2999, and the drift toward the capture clock is corrected a tick at a time)
    let end = packager.next_decode_time();
    assert!(end.abs_diff(3000 + 116_998) <= 90, "{end}");
}

#[test]
fn parameter_change_keeps_the_timeline() {
    let (a, b) = (params(SPS_720P), params(SPS_720P_E0));
    let mut packager = Packager::new();
    let mut fragments = Vec::new();
    let mut ts = 0;
    for p in [&a, &b, &a] {
        for i in 0..5 {
            ts += 40_000;
            let unit = if i == 0 {
                keyframe(p, ts, 1000)
            } else {
                delta(p, ts, 100, true)
            };
            fragments.push(parse_fragment(&packager.fragment(&unit).expect("fragment")));
        }
    }
    let times: Vec<(u64, u32)> = fragments
        .iter()
        .map(|f| {
            let traf = &f.moof.traf[0];
            (
                traf.tfdt.as_ref().expect("tfdt").base_media_decode_time,
                traf.trun[0]
                    .samples
                    .get(0)
                    .and_then(|s| s.duration)
                    .expect("duration"),
            )
        })
        .collect();
    for w in times.windows(2) {
        assert_eq!(w[1].0, w[0].0 + u64::from(w[0].1));
    }
    let init_b = Packager::init_segment(&b).expect("init");
    let mut buf = &init_b[..];
    Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
        panic!("avc1");
    };
    assert_eq!(
        avc1.avcc.sequence_parameter_sets,
        vec![b.active_sps().to_vec()]
    );
}

#[test]
fn an_access_unit_without_picture_data_is_an_error_that_changes_nothing() {
    let p = params(SPS_720P);
    let mut packager = Packager::new();
    packager.fragment(&keyframe(&p, 0, 500)).expect("fragment");
    let before = packager.next_decode_time();
    let empty = au(&p, &[vec![0x09, 0x30]], false, 33_333);
    assert_eq!(packager.fragment(&empty), Err(Fmp4Error::EmptySample));
    assert_eq!(packager.next_decode_time(), before);
    let f = parse_fragment(
        &packager
            .fragment(&delta(&p, 66_666, 50, true))
            .expect("fragment"),
    );
    assert_eq!(f.moof.mfhd.sequence_number, 2);
}

/// ns per fragment for a 50 KB keyframe and a 5 KB delta: `cargo test --release -p
/// nalcast-core fragment_cost -- --nocapture --ignored`.
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn fragment_cost() {
    let p = params(SPS_720P);
    for (name, unit) in [
        ("50 KB keyframe", keyframe(&p, 0, 50_000)),
        ("5 KB delta", delta(&p, 0, 5_000, true)),
    ] {
        let mut packager = Packager::new();
        let n = 200_000u32;
        let mut bytes = 0usize;
        let start = std::time::Instant::now();
        for i in 0..n {
            let mut u = unit.clone();
            u.timestamp_us = u64::from(i) * 33_333;
            bytes += packager.fragment(&u).expect("fragment").len();
        }
        let per = start.elapsed().as_nanos() / u128::from(n);
        println!(
            "{name}: {per} ns per fragment ({} bytes each)",
            bytes / n as usize
        );
    }
}
