//! Inputs the fuzzer (fuzz/fuzz_targets/annexb.rs) found, kept as regression tests.
use nalcast_h264::{AnnexBParser, AuAssembler};
use testkit::fixtures::unhex;

/// Parses `input` (its first byte is the fuzzer's chunk size, as in the target),
/// assembles it and checks every access unit's invariants.
fn check(input: &[u8]) {
    let Some((_, data)) = input.split_first() else {
        return;
    };
    let mut parser = AnnexBParser::new(4096);
    let mut nals = Vec::new();
    parser.push(data, &mut nals);
    parser.flush(&mut nals);
    let mut assembler = AuAssembler::new();
    let mut aus = Vec::new();
    for (i, nal) in nals.into_iter().flatten().enumerate() {
        assembler.push(nal, i as u64, &mut aus);
    }
    assembler.end_of_access_unit(&mut aus);
    for au in aus.iter().flatten() {
        if let Err(e) = au.check_invariants() {
            panic!("{e}");
        }
    }
}

/// Two AUDs before a keyframe's parameter sets: the keyframe began with AUD, AUD.
#[test]
fn repeated_access_unit_delimiters() {
    check(&unhex("930000000107ffffff0b700a2b040000000160082b2e00000104000000010864080700000101ff930000000109017a01ff930000000109017a3b0b26d0d0d0d7d0000000000000010001d0013b00000128d000000000000000180000d00000000105ff3b00930000000107ffffff3b0b26d0d0d0d7d0000000000000010001d0013b00000128d000000000000000180000d00000000105ff3b00930000000107ffffff083b000005283b0b26d0d0d0d7d0000000000000010001d001"));
}
