//! Annex-B parser + access-unit assembler: split invariance, agreement with a
//! simple reference splitter, and structural invariants of every access unit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nalcast_h264::{AnnexBParser, AuAssembler, Nal};

const CAP: usize = 4096;

/// The obvious splitter: cut at every `00 00 01`, strip trailing zeros, keep what
/// follows a start code, is non-empty, has a valid header and fits the cap.
fn reference(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(data.len());
        let mut nal = &data[s + 3..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() && nal[0] & 0x80 == 0 && nal.len() <= CAP {
            out.push(nal.to_vec());
        }
    }
    out
}

fn parse(chunks: &[&[u8]]) -> Vec<Nal> {
    let mut p = AnnexBParser::new(CAP);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out);
    }
    p.flush(&mut out);
    let _ = p.take_errors();
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else { return };
    let whole = parse(&[data]);
    let step = usize::from(split).max(1);
    let chunks: Vec<&[u8]> = data.chunks(step).collect();
    assert_eq!(whole, parse(&chunks), "split invariance (chunk {step})");
    let expected = reference(data);
    let got: Vec<Vec<u8>> = whole.iter().map(|n| n.0.to_vec()).collect();
    assert_eq!(got, expected, "agrees with the reference splitter");
    for nal in &whole {
        assert!(!nal.0.windows(3).any(|w| w == [0, 0, 1]), "start code inside a NAL");
    }

    let mut assembler = AuAssembler::new();
    let mut aus = Vec::new();
    for (i, nal) in whole.into_iter().enumerate() {
        assembler.push(nal, i as u64, &mut aus);
    }
    assembler.end_of_access_unit(&mut aus);
    for au in &aus {
        if let Err(e) = au.check_invariants() {
            panic!("{e}");
        }
    }
});
