//! Parameter sets kept by id, as the standard has them: streams with several SPS and
//! PPS, a PPS that switches to another SPS, identical sets sent again, bad ones.
//! Every keyframe carries every SPS and PPS in force; the stream's size and profile
//! are the active SPS's (the one the keyframe's PPS names).
use std::sync::Arc;

use nalcast_h264::{AccessUnit, AnnexBParser, AuAssembler, ParamSets, ParseError};
use testkit::bits::{pps, slice, sps};

/// What goes into the stream: NAL units, each with a 4-byte start code.
type Stream = Vec<Vec<u8>>;

/// The access units and errors of `nals`, in stream order, and the assembler.
fn assemble(nals: &[Vec<u8>]) -> (Vec<Result<AccessUnit, ParseError>>, AuAssembler) {
    let mut parser = AnnexBParser::new(1 << 20);
    let mut asm = AuAssembler::new();
    let (mut parsed, mut out) = (Vec::new(), Vec::new());
    parser.push(&testkit::annexb::join(nals), &mut parsed);
    parser.flush(&mut parsed);
    for nal in parsed {
        asm.push(nal.expect("well-formed NAL units"), 0, &mut out);
    }
    asm.end_of_access_unit(&mut out);
    (out, asm)
}

/// The access units, failing on any error.
fn units(nals: &[Vec<u8>]) -> Vec<AccessUnit> {
    let (out, _) = assemble(nals);
    out.into_iter()
        .map(|r| r.expect("no stream error"))
        .collect()
}

/// An IDR picture naming PPS `pps_id`, and a P picture naming it too.
fn gop(pps_id: u32) -> Stream {
    vec![slice(0x65, 0, 7, pps_id), slice(0x41, 0, 5, pps_id)]
}

/// The NAL units of an access unit, without start codes.
fn nals(au: &AccessUnit) -> Vec<Vec<u8>> {
    (0..au.nals.len())
        .map(|i| au.nal(i)[4..].to_vec())
        .collect()
}

/// A keyframe's parameter sets, in the order it carries them.
fn carried(au: &AccessUnit) -> Vec<Vec<u8>> {
    nals(au)
        .into_iter()
        .filter(|n| matches!(n[0] & 0x1f, 7 | 8))
        .collect()
}

#[test]
fn every_keyframe_carries_every_sps_and_pps_and_the_size_is_the_active_ones() {
    // SPS 0, 1, 2 (three sizes) and PPS 0, 1, 2 each naming its own SPS, sent once
    // at the start, as some encoders do; the pictures use PPS 1, then PPS 2.
    let sets = [
        sps(0, 40, 30),
        sps(1, 80, 45),
        sps(2, 20, 15),
        pps(0, 0),
        pps(1, 1),
        pps(2, 2),
    ];
    let mut stream: Stream = sets.to_vec();
    stream.extend(gop(1));
    stream.extend(gop(1));
    stream.extend(gop(2));
    let aus = units(&stream);
    assert_eq!(aus.len(), 6);
    for au in aus.iter().filter(|a| a.keyframe) {
        assert_eq!(
            carried(au),
            sets,
            "all three SPS, then all three PPS, by id"
        );
    }
    let size = |au: &AccessUnit| (au.params.info.width, au.params.info.height);
    assert_eq!(size(&aus[0]), (1280, 720), "SPS 1, named by PPS 1");
    assert_eq!(aus[0].params.active_sps().as_ref(), &sets[1][..]);
    assert_eq!(size(&aus[4]), (320, 240), "SPS 2, named by PPS 2");
    assert!(
        Arc::ptr_eq(&aus[0].params, &aus[3].params),
        "no change in between"
    );
    assert!(
        !Arc::ptr_eq(&aus[3].params, &aus[4].params),
        "a new active SPS is a change"
    );
}

#[test]
fn a_pps_that_switches_to_another_sps_is_a_parameter_change() {
    let mut stream: Stream = vec![sps(0, 40, 30), sps(1, 80, 45), pps(0, 0)];
    stream.extend(gop(0));
    // PPS 0 sent again, now naming SPS 1, before the next keyframe.
    stream.push(pps(0, 1));
    stream.extend(gop(0));
    let (out, asm) = assemble(&stream);
    let aus: Vec<AccessUnit> = out.into_iter().map(|r| r.expect("clean")).collect();
    assert_eq!(aus[0].params.info.width, 640);
    assert_eq!(aus[2].params.info.width, 1280);
    assert_eq!(
        carried(&aus[2]),
        [sps(0, 40, 30), sps(1, 80, 45), pps(0, 1)]
    );
    assert_eq!(asm.stats().param_changes, 1);
}

/// Each SPS is read once, when it first comes: not again when it is resent before
/// every keyframe, nor when it becomes the active one, nor for picture ordering or
/// fMP4 (they take what `ParamSets` carries).
#[test]
fn each_sps_is_parsed_once_and_what_was_read_travels_with_the_sets() {
    let mut stream: Stream = Vec::new();
    for round in 0..6 {
        stream.extend([sps(0, 40, 30), sps(1, 80, 45)]);
        stream.push(pps(0, round % 2)); // switches the active SPS at every keyframe
        stream.extend(gop(0));
    }
    let (out, asm) = assemble(&stream);
    let aus: Vec<AccessUnit> = out.into_iter().map(|r| r.expect("clean")).collect();
    assert_eq!(asm.stats().param_changes, 5);
    assert_eq!(asm.stats().sps_parsed, 2, "two SPS, each parsed once");
    for au in &aus {
        let p = &au.params;
        assert_eq!(p.parsed.len(), p.sps.len(), "every SPS carried parsed");
        let width = if au.params.active == 0 { 640 } else { 1280 };
        assert_eq!(p.info.width, width);
        assert_eq!(
            p.details.frame_mbs_only,
            p.parsed[p.active].frame_mbs_flags == h264_reader::nal::sps::FrameMbsFlags::Frames
        );
    }
}

#[test]
fn identical_sets_sent_again_change_nothing() {
    let sets = [sps(0, 40, 30), pps(0, 0), pps(1, 0)];
    let mut stream = Stream::new();
    for _ in 0..4 {
        stream.extend(sets.iter().cloned());
        stream.extend(gop(0));
    }
    let (out, asm) = assemble(&stream);
    let aus: Vec<AccessUnit> = out.into_iter().map(|r| r.expect("clean")).collect();
    assert_eq!(aus.len(), 8);
    assert!(aus.iter().all(|a| Arc::ptr_eq(&a.params, &aus[0].params)));
    assert_eq!(asm.stats().param_changes, 0);
    for au in aus.iter().filter(|a| a.keyframe) {
        assert_eq!(carried(au), sets, "each set once, however often it came");
    }
}

#[test]
fn a_changed_sps_under_the_same_id_replaces_it() {
    let mut stream: Stream = vec![sps(0, 40, 30), pps(0, 0)];
    stream.extend(gop(0));
    stream.push(sps(0, 20, 15));
    stream.extend(gop(0));
    let aus = units(&stream);
    assert_eq!(aus[0].params.info.width, 640);
    assert_eq!(aus[2].params.info.width, 320);
    assert_eq!(carried(&aus[2]), [sps(0, 20, 15), pps(0, 0)]);
}

#[test]
fn bad_parameter_sets_are_refused_and_the_good_ones_kept() {
    let mut garbage_sps = sps(3, 40, 30);
    garbage_sps.truncate(5); // the id reads, the rest does not
    let mut huge_pps = pps(4, 0);
    huge_pps.resize(5000, 0x55);
    let mut stream: Stream = vec![sps(0, 40, 30), pps(0, 0)];
    stream.extend(gop(0));
    stream.push(garbage_sps);
    stream.push(huge_pps);
    stream.extend(gop(0));
    let (out, _) = assemble(&stream);
    let errors: Vec<String> = out
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[1].contains("PPS 4 of 5000 bytes"), "{errors:?}");
    let aus: Vec<AccessUnit> = out.into_iter().filter_map(Result::ok).collect();
    assert_eq!(aus.len(), 4);
    assert!(Arc::ptr_eq(&aus[0].params, &aus[3].params));
    assert_eq!(carried(&aus[2]), [sps(0, 40, 30), pps(0, 0)]);
}

#[test]
fn a_keyframe_naming_an_unknown_pps_falls_back_to_the_lowest_sps() {
    let mut stream: Stream = vec![sps(2, 20, 15), sps(5, 40, 30), pps(0, 5)];
    stream.extend(gop(9));
    let aus = units(&stream);
    let params: &ParamSets = &aus[0].params;
    assert_eq!(params.info.width, 320, "SPS 2, the lowest id");
}
