//! Annex-B parser + access-unit assembler: split invariance (of NAL units and
//! errors alike), agreement with a simple reference splitter, and structural
//! invariants of every access unit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nalcast_h264::{AnnexBParser, AuAssembler, Nal, ParseError};

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

/// NAL units and errors in stream order, with the size of oversized NAL units
/// blanked: one dropped while it grows is measured up to where it was dropped,
/// which depends on the chunking.
fn parse(chunks: &[&[u8]]) -> Vec<Result<Nal, ParseError>> {
    let mut p = AnnexBParser::new(CAP);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out);
    }
    p.flush(&mut out);
    out.into_iter()
        .map(|r| match r {
            Err(ParseError::Oversized { size, cap }) => {
                assert!(size > cap, "oversized {size} within the cap {cap}");
                Err(ParseError::Oversized { size: 0, cap })
            }
            r => r,
        })
        .collect()
}

/// Below this, the parser never drops garbage before a start code as it comes, so
/// the errors as well as the NAL units do not depend on the chunking.
const ERRORS_SPLIT_INVARIANT_BELOW: usize = 64 * 1024;

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let whole = parse(&[data]);
    let step = usize::from(split).max(1);
    let chunks: Vec<&[u8]> = data.chunks(step).collect();
    let chunked = parse(&chunks);
    if data.len() < ERRORS_SPLIT_INVARIANT_BELOW {
        assert_eq!(whole, chunked, "split invariance (chunk {step})");
    } else {
        let nals = |out: &[Result<Nal, ParseError>]| -> Vec<Nal> {
            out.iter().flatten().cloned().collect()
        };
        assert_eq!(
            nals(&whole),
            nals(&chunked),
            "split invariance (chunk {step})"
        );
    }
    let whole: Vec<Nal> = whole.into_iter().flatten().collect();
    let expected = reference(data);
    let got: Vec<Vec<u8>> = whole.iter().map(|n| n.0.to_vec()).collect();
    assert_eq!(got, expected, "agrees with the reference splitter");
    for nal in &whole {
        assert!(
            !nal.0.windows(3).any(|w| w == [0, 0, 1]),
            "start code inside a NAL"
        );
    }

    let mut assembler = AuAssembler::new();
    let mut aus = Vec::new();
    for (i, nal) in whole.into_iter().enumerate() {
        assembler.push(nal, i as u64, &mut aus);
    }
    assembler.end_of_access_unit(&mut aus);
    for au in aus.iter().flatten() {
        if let Err(e) = au.check_invariants() {
            panic!("{e}");
        }
    }
});
