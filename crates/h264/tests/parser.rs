//! Annex-B parser and access-unit assembler: hand-made edge cases, property tests,
//! and real encoder output made by openh264 in the test itself.
use bytes::Bytes;
use nalcast_h264::{AccessUnit, AnnexBParser, AuAssembler, Nal, ParseError};
use openh264::encoder::{Encoder, EncoderConfig, IntraFramePeriod, Profile};
use openh264::formats::YUVBuffer;
use openh264::OpenH264API;
use proptest::prelude::*;
use testkit::annexb::join;

/// Parses `chunks` one after the other, then flushes: the output stream (NAL units
/// and errors in order), and the parser for its stats.
fn parse_chunks(chunks: &[&[u8]], max: usize) -> (Vec<Result<Nal, ParseError>>, AnnexBParser) {
    let mut p = AnnexBParser::new(max);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out);
    }
    p.flush(&mut out);
    (out, p)
}

/// The NAL units of an output stream, without its errors.
fn nals(out: &[Result<Nal, ParseError>]) -> Vec<Nal> {
    out.iter().flatten().cloned().collect()
}

/// The errors of an output stream.
fn errors<T>(out: &[Result<T, ParseError>]) -> Vec<ParseError> {
    out.iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect()
}

fn parse(data: &[u8]) -> Vec<Vec<u8>> {
    nals(&parse_chunks(&[data], 1 << 20).0)
        .into_iter()
        .map(|n| n.0.to_vec())
        .collect()
}

#[test]
fn three_and_four_byte_start_codes() {
    let data = [
        0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
    ];
    assert_eq!(
        parse(&data),
        vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 4, 5]]
    );
}

#[test]
fn trailing_zeros_are_stripped_and_emulation_prevention_kept() {
    let data = [
        0, 0, 1, 0x41, 0, 0, 3, 1, 9, 0, 0, 0, 0, 0, 0, 1, 0x41, 7, 0, 0,
    ];
    assert_eq!(parse(&data), vec![vec![0x41, 0, 0, 3, 1, 9], vec![0x41, 7]]);
}

#[test]
fn garbage_before_first_start_code_is_counted_and_skipped() {
    let data = [b'h', b'e', b'l', b'l', b'o', 0, 0, 1, 0x67, 9];
    let (out, p) = parse_chunks(&[&data], 1024);
    assert_eq!(
        out,
        vec![
            Err(ParseError::Garbage { bytes: 5 }),
            Ok(Nal(Bytes::from_static(&[0x67, 9])))
        ]
    );
    assert_eq!(p.stats().garbage_bytes, 5);
    assert_eq!(p.stats().errors, 1);
}

#[test]
fn oversized_nal_is_dropped_and_parser_resyncs() {
    let mut data = vec![0, 0, 1, 0x41];
    data.extend(std::iter::repeat_n(0x55, 5000));
    data.extend([0, 0, 1, 0x41, 1, 2]);
    for chunk in [1usize, 7, 100, 10_000] {
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        let (out, p) = parse_chunks(&chunks, 1000);
        assert!(
            matches!(
                &out[..],
                [Err(ParseError::Oversized { cap: 1000, .. }), Ok(nal)] if nal.0[..] == [0x41, 1, 2]
            ),
            "chunk {chunk}: {out:?}"
        );
        assert_eq!(p.stats().oversized_nals, 1);
    }
}

#[test]
fn non_h264_input_is_reported_without_panic() {
    let png = b"\x89PNG\r\n\x1a\n".repeat(200_000);
    let (out, p) = parse_chunks(&png.chunks(4096).collect::<Vec<_>>(), 1 << 20);
    assert!(nals(&out).is_empty());
    assert!(errors(&out)
        .iter()
        .any(|e| matches!(e, ParseError::NotH264 { .. })));
    assert!(p.stats().garbage_bytes > 1_000_000);
}

#[test]
fn invalid_header_is_dropped() {
    let (out, p) = parse_chunks(&[&[0, 0, 1, 0xe5, 1, 0, 0, 1, 0x65, 2]], 1024);
    assert_eq!(
        out,
        vec![
            Err(ParseError::InvalidHeader { header: 0xe5 }),
            Ok(Nal(Bytes::from_static(&[0x65, 2])))
        ]
    );
    assert_eq!(p.stats().invalid_nals, 1);
}

#[test]
fn empty_input_gives_nothing() {
    assert!(parse(&[]).is_empty());
    assert!(parse(&[0, 0, 1]).is_empty());
    assert!(parse(&[0, 0, 0, 0, 0]).is_empty());
}

// ----- assembler -----

/// Encodes `frames` frames with openh264 (Baseline), keyframe every `intra` frames.
fn encode(width: usize, height: usize, frames: usize, intra: u32) -> Vec<Vec<u8>> {
    let config = EncoderConfig::new()
        .profile(Profile::Baseline)
        .intra_frame_period(IntraFramePeriod::from_num_frames(intra))
        .scene_change_detect(false)
        .skip_frames(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).expect("encoder");
    (0..frames)
        .map(|i| {
            let mut yuv = vec![0u8; width * height * 3 / 2];
            for (j, px) in yuv.iter_mut().enumerate() {
                *px = ((j + i * 7) % 251) as u8;
            }
            let buf = YUVBuffer::from_vec(yuv, width, height);
            enc.encode(&buf).expect("encode").to_vec()
        })
        .collect()
}

/// Parses `stream` in chunks of `chunk` bytes and assembles it at time `ts`: access
/// units and the errors of both stages in stream order, and the assembler for its stats.
fn assemble_stream(
    stream: &[u8],
    chunk: usize,
    ts: u64,
) -> (Vec<Result<AccessUnit, ParseError>>, AuAssembler) {
    let mut p = AnnexBParser::new(1 << 22);
    let mut a = AuAssembler::new();
    let (mut nals, mut out) = (Vec::new(), Vec::new());
    let mut assemble = |nals: &mut Vec<Result<Nal, ParseError>>, out: &mut Vec<_>| {
        for n in nals.drain(..) {
            match n {
                Ok(n) => a.push(n, ts, out),
                Err(e) => out.push(Err(e)),
            }
        }
    };
    for c in stream.chunks(chunk.max(1)) {
        p.push(c, &mut nals);
        assemble(&mut nals, &mut out);
    }
    p.flush(&mut nals);
    assemble(&mut nals, &mut out);
    a.end_of_access_unit(&mut out);
    (out, a)
}

/// The access units of a stream that has no errors.
fn assemble(stream: &[u8], chunk: usize) -> Vec<AccessUnit> {
    assemble_stream(stream, chunk, 0)
        .0
        .into_iter()
        .map(|r| r.expect("no stream error"))
        .collect()
}

fn types(au: &AccessUnit) -> Vec<u8> {
    (0..au.nals.len()).map(|i| au.nal(i)[4] & 0x1f).collect()
}

#[test]
fn real_encoder_output_groups_into_frames_with_keyframes_and_decodes() {
    let frames = encode(320, 240, 30, 10);
    let stream: Vec<u8> = frames.concat();
    let aus = assemble(&stream, 997);
    assert_eq!(aus.len(), 30);
    for (i, au) in aus.iter().enumerate() {
        assert_eq!(au.keyframe, i % 10 == 0, "frame {i}");
        if au.keyframe {
            assert_eq!(&types(au)[..2], &[7, 8], "keyframe starts with SPS, PPS");
        }
        assert!(
            std::sync::Arc::ptr_eq(&au.params, &aus[0].params),
            "params stay the same Arc"
        );
    }
    let info = &aus[0].params.info;
    assert_eq!((info.width, info.height), (320, 240));
    assert!(info.codec.starts_with("avc1.42"), "{}", info.codec);
    let mut dec = openh264::decoder::Decoder::new().expect("decoder");
    let mut pictures = 0;
    for au in &aus {
        if dec.decode(&au.data).expect("decodes").is_some() {
            pictures += 1;
        }
    }
    pictures += dec.flush_remaining().map(|v| v.len()).unwrap_or(0);
    assert_eq!(pictures, 30);
}

#[test]
fn sps_pps_sent_once_still_start_every_keyframe() {
    let frames = encode(320, 240, 20, 5);
    // Remove SPS/PPS from every keyframe but the first, as some cameras do.
    let mut stream = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let nals = parse(f);
        for n in nals {
            if i > 0 && matches!(n[0] & 0x1f, 7 | 8) {
                continue;
            }
            stream.extend([0, 0, 0, 1]);
            stream.extend(n);
        }
    }
    let aus = assemble(&stream, 4096);
    assert_eq!(aus.len(), 20);
    for au in aus.iter().filter(|a| a.keyframe) {
        let t = types(au);
        assert_eq!(&t[..3], &[7, 8, 5], "{t:?}");
        assert_eq!(t.iter().filter(|x| **x == 7).count(), 1, "no duplicate SPS");
    }
    assert_eq!(aus.iter().filter(|a| a.keyframe).count(), 4);
}

/// Builds a synthetic slice NAL with the given header fields (ue-coded) and payload.
fn slice(nal_header: u8, first_mb: u32, slice_type: u32) -> Vec<u8> {
    let ue = |v: u32| {
        let x = v + 1;
        let n = 32 - x.leading_zeros();
        format!("{}{:b}", "0".repeat(n as usize - 1), x)
    };
    let mut bits = format!("{}{}{}", ue(first_mb), ue(slice_type), ue(0));
    bits.push('1');
    while !bits.len().is_multiple_of(8) {
        bits.push('0');
    }
    let mut out = vec![nal_header];
    for c in bits.as_bytes().chunks(8) {
        out.push(u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 2).unwrap_or(0));
    }
    out.extend([0xaa, 0xbb]);
    out
}

fn real_params() -> (Vec<u8>, Vec<u8>) {
    let f = &encode(320, 240, 1, 1)[0];
    let nals = parse(f);
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).expect("sps").clone();
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).expect("pps").clone();
    (sps, pps)
}

#[test]
fn multiple_slices_aud_and_sei_group_correctly() {
    let (sps, pps) = real_params();
    let aud = vec![0x09, 0xf0];
    let sei = vec![0x06, 0x05, 0x01, 0x00, 0x80];
    let stream = join(&[
        aud.clone(),
        sps,
        pps,
        sei.clone(),
        slice(0x65, 0, 7),
        slice(0x65, 40, 7),
        slice(0x65, 80, 7), // one IDR picture, 3 slices
        aud.clone(),
        slice(0x41, 0, 5),
        slice(0x41, 60, 5), // P picture, 2 slices
        sei,
        slice(0x41, 0, 5), // SEI starts the next
        slice(0x41, 0, 5), // first_mb 0 starts the next
    ]);
    let aus = assemble(&stream, 3);
    let t: Vec<Vec<u8>> = aus.iter().map(types).collect();
    assert_eq!(
        t,
        vec![
            vec![9, 7, 8, 6, 5, 5, 5],
            vec![9, 1, 1],
            vec![6, 1],
            vec![1]
        ]
    );
    assert!(aus[0].keyframe && !aus[1].keyframe);
}

#[test]
fn a_picture_ended_early_shows_its_later_slices_as_orphans() {
    let (sps, pps) = real_params();
    let mut p = AnnexBParser::new(1 << 20);
    let mut a = AuAssembler::new();
    let (mut nals, mut aus) = (Vec::new(), Vec::new());
    let mut feed = |stream: &[u8], end: bool, a: &mut AuAssembler| {
        p.push(stream, &mut nals);
        if end {
            p.flush(&mut nals);
        }
        for n in nals.drain(..) {
            a.push(n.expect("no parse error"), 0, &mut aus);
        }
        if end {
            a.end_of_access_unit(&mut aus);
        }
    };
    // A whole two-slice picture: no orphans.
    feed(
        &join(&[sps, pps, slice(0x65, 0, 7), slice(0x65, 40, 7)]),
        true,
        &mut a,
    );
    assert_eq!(a.stats().orphan_slices, 0);
    // A picture taken as complete after its first slice: its second begins the next.
    feed(&join(&[slice(0x41, 0, 5)]), true, &mut a);
    feed(&join(&[slice(0x41, 40, 5)]), true, &mut a);
    assert_eq!(a.stats().orphan_slices, 1);
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let (sps, pps) = real_params();
    let stream = join(&[
        slice(0x41, 0, 5),
        sps,
        pps,
        slice(0x41, 0, 5),
        slice(0x65, 0, 7),
        slice(0x41, 0, 5),
    ]);
    let aus = assemble(&stream, 64);
    assert_eq!(
        aus.iter().map(|a| a.keyframe).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[test]
fn truncated_slice_header_is_counted_and_dropped() {
    let (sps, pps) = real_params();
    let stream = join(&[
        sps,
        pps,
        slice(0x65, 0, 7),
        vec![0x41, 0x00],
        slice(0x41, 0, 5),
    ]);
    let (out, a) = assemble_stream(&stream, stream.len(), 0);
    // The error comes when the slice arrives, before the IDR picture it follows is
    // known to be complete.
    assert!(
        matches!(
            &out[..],
            [
                Err(ParseError::Truncated {
                    what: "slice",
                    len: 1 // its trailing zero is not part of it
                }),
                Ok(idr),
                Ok(p),
            ] if idr.keyframe && !p.keyframe
        ),
        "{out:?}"
    );
    assert_eq!(a.stats().truncated, 1);
}

#[test]
fn parameter_change_makes_a_new_arc_and_b_slices_are_counted() {
    let (sps, pps) = real_params();
    let big = {
        let f = &encode(640, 480, 1, 1)[0];
        parse(f)
    };
    let stream = join(&[
        sps,
        pps,
        slice(0x65, 0, 7),
        slice(0x01, 0, 6),
        big[0].clone(),
        big[1].clone(),
        slice(0x65, 0, 7),
    ]);
    let (out, a) = assemble_stream(&stream, stream.len(), 7);
    let aus: Vec<AccessUnit> = out
        .into_iter()
        .map(|r| r.expect("no stream error"))
        .collect();
    assert_eq!(aus.len(), 3);
    assert_eq!(a.stats().b_slices, 1);
    assert!(std::sync::Arc::ptr_eq(&aus[0].params, &aus[1].params));
    assert!(!std::sync::Arc::ptr_eq(&aus[1].params, &aus[2].params));
    assert_eq!(
        (aus[2].params.info.width, aus[2].params.info.height),
        (640, 480)
    );
    assert_eq!(a.stats().param_changes, 1);
    assert_eq!(aus[2].timestamp_us, 7);
}

#[test]
fn end_of_access_unit_emits_at_once() {
    let frames = encode(320, 240, 3, 30);
    let mut p = AnnexBParser::new(1 << 20);
    let mut a = AuAssembler::new();
    let (mut nals, mut aus) = (Vec::new(), Vec::new());
    for (i, f) in frames.iter().enumerate() {
        p.push(f, &mut nals);
        p.flush(&mut nals);
        for n in nals.drain(..) {
            a.push(n.expect("no parse error"), i as u64, &mut aus);
        }
        a.end_of_access_unit(&mut aus);
        assert_eq!(
            aus.len(),
            i + 1,
            "frame {i} emitted without waiting for the next"
        );
    }
}

// ----- properties -----

/// The output with the sizes of oversized NAL units blanked: one dropped while it
/// grows is measured up to where it was dropped, which depends on the chunking.
fn blank_oversize(out: Vec<Result<Nal, ParseError>>) -> Vec<Result<Nal, ParseError>> {
    out.into_iter()
        .map(|r| match r {
            Err(ParseError::Oversized { size, cap }) => {
                assert!(size > cap, "{size} > {cap}");
                Err(ParseError::Oversized { size: 0, cap })
            }
            r => r,
        })
        .collect()
}

fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Bytes biased towards zeros and ones so start codes and near-misses are common.
    prop::collection::vec(
        prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => Just(3u8), 4 => any::<u8>()],
        0..600,
    )
}

proptest! {
    #[test]
    fn any_split_gives_the_same_nals(data in stream_strategy(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        // NAL units and errors alike, in the same order.
        let whole = blank_oversize(parse_chunks(&[&data], 64).0);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&data[last..p]);
            last = p;
        }
        chunks.push(&data[last..]);
        let split = blank_oversize(parse_chunks(&chunks, 64).0);
        prop_assert_eq!(&whole, &split);
        let bytewise = blank_oversize(parse_chunks(&data.chunks(1).collect::<Vec<_>>(), 64).0);
        prop_assert_eq!(&whole, &bytewise);
        for nal in &nals(&whole) {
            prop_assert!(!nal.0.is_empty());
            prop_assert!(*nal.0.last().unwrap_or(&1) != 0, "no trailing zero");
            prop_assert!(!nal.0.windows(3).any(|w| w == [0, 0, 1]), "no start code inside a NAL");
            prop_assert!(nal.0.len() <= 64);
        }
    }

    #[test]
    fn assembler_output_does_not_depend_on_chunking(chunk in 1usize..3000) {
        thread_local!(static STREAM: Vec<u8> = encode(160, 128, 12, 4).concat());
        let stream = STREAM.with(|s| s.clone());
        let a = assemble(&stream, chunk);
        let b = assemble(&stream, stream.len());
        prop_assert_eq!(a.len(), 12);
        prop_assert_eq!(
            a.iter().map(|x| x.data.clone()).collect::<Vec<_>>(),
            b.iter().map(|x| x.data.clone()).collect::<Vec<_>>()
        );
    }
}
