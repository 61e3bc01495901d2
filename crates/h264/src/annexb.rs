//! Annex-B push parser: bytes in chunks of any size, NAL units and errors out, in
//! one stream.
//!
//! The parser keeps the bytes since the last start code and looks for the next
//! `00 00 01`. Zero bytes before a start code (the fourth byte of a 4-byte start
//! code, or `trailing_zero_8bits`) never belong to a NAL unit, so they are stripped.
//! Splitting the input differently never changes the NAL units, nor which errors
//! come out where, except where memory is bounded: the size an `Oversized` error
//! gives depends on where the growing NAL unit was dropped, and garbage beyond
//! 64 KiB is counted (and may be reported as not H.264) as it is dropped.
use bytes::{Bytes, BytesMut};

use crate::Nal;

/// Bytes without any start code after which the input is declared not H.264.
const NOT_H264_AFTER: usize = 1 << 20;

/// Something wrong with the input. Each is one line fit for a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Bytes that belong to no NAL unit (before the first start code).
    #[error("skipped {bytes} bytes of garbage before a start code")]
    Garbage {
        /// How many.
        bytes: usize,
    },
    /// A NAL unit larger than the cap.
    #[error("dropped a NAL unit of at least {size} bytes (limit {cap}; raise --max-nal-size if the stream is valid)")]
    Oversized {
        /// Bytes seen before it was dropped.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// A NAL unit whose header is invalid (forbidden_zero_bit set).
    #[error("dropped a NAL unit with an invalid header byte {header:#04x}")]
    InvalidHeader {
        /// The header byte.
        header: u8,
    },
    /// No start code at all in a long stretch of input.
    #[error(
        "no H.264 start code in the first {bytes} bytes: the input is not an Annex-B H.264 stream"
    )]
    NotH264 {
        /// Bytes read.
        bytes: usize,
    },
    /// A slice whose header could not be read.
    #[error("dropped a truncated or corrupt {what} ({len} bytes)")]
    Truncated {
        /// What kind of NAL unit.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A parameter set that could not be parsed.
    #[error("ignored a bad parameter set: {0}")]
    BadParameterSet(String),
}

/// Counters of the parser.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParserStats {
    /// NAL units emitted.
    pub nals: u64,
    /// Bytes pushed.
    pub bytes: u64,
    /// Bytes that belonged to no NAL unit.
    pub garbage_bytes: u64,
    /// NAL units dropped for their size.
    pub oversized_nals: u64,
    /// NAL units dropped for an invalid header.
    pub invalid_nals: u64,
    /// Bytes of a NAL unit the input ended in the middle of, dropped ([`AnnexBParser::discard`]).
    pub cut_bytes: u64,
    /// All errors.
    pub errors: u64,
}

/// The push parser.
#[derive(Debug)]
pub struct AnnexBParser {
    max_nal_size: usize,
    /// Bytes since the last start code (or since the start, before the first one).
    pending: BytesMut,
    /// Offset in `pending` from which no start code has been searched yet.
    scanned: usize,
    /// A start code has been seen: `pending` is the start of a NAL unit.
    in_nal: bool,
    /// The current NAL unit outgrew the cap: discard until the next start code.
    discarding: bool,
    /// Size of the discarded NAL unit so far.
    discarded: usize,
    /// Garbage bytes since the last start code (before the first one).
    garbage_run: usize,
    said_not_h264: bool,
    stats: ParserStats,
}

impl AnnexBParser {
    /// A parser that drops NAL units larger than `max_nal_size` bytes (a cap below
    /// 16 bytes is taken as 16).
    pub fn new(max_nal_size: usize) -> Self {
        AnnexBParser {
            max_nal_size: max_nal_size.max(16),
            pending: BytesMut::new(),
            scanned: 0,
            in_nal: false,
            discarding: false,
            discarded: 0,
            garbage_run: 0,
            said_not_h264: false,
            stats: ParserStats::default(),
        }
    }

    fn error(&mut self, e: ParseError, out: &mut Vec<Result<Nal, ParseError>>) {
        self.stats.errors += 1;
        out.push(Err(e));
    }

    /// Feeds bytes; every NAL unit they complete, and every error they reveal, is
    /// appended to `out` in stream order. That is at most one item per start code
    /// in `data`, plus one.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Result<Nal, ParseError>>) {
        self.stats.bytes += data.len() as u64;
        self.pending.extend_from_slice(data);
        loop {
            // A start code may straddle the previous chunk: look two bytes back.
            let from = self.scanned.saturating_sub(2);
            match find_start_code(&self.pending[from..]) {
                Some(at) => {
                    let end = from + at; // index of the first 00 of `00 00 01`
                    let unit = self.pending.split_to(end + 3);
                    self.scanned = 0;
                    self.finish_unit(unit.freeze().slice(..end), out);
                    self.in_nal = true;
                }
                None => {
                    self.scanned = self.pending.len();
                    break;
                }
            }
        }
        self.bound_pending(out);
    }

    /// Keeps memory bounded while no start code arrives.
    fn bound_pending(&mut self, out: &mut Vec<Result<Nal, ParseError>>) {
        let len = self.pending.len();
        // Keep two bytes: they may be the start of a start code.
        let Some(drop) = len.checked_sub(2).filter(|d| *d > 0) else {
            return;
        };
        if self.discarding {
            self.discarded += drop;
        } else if self.in_nal {
            if strip_trailing_zeros(&self.pending) <= self.max_nal_size {
                return;
            }
            self.discarding = true;
            self.discarded = drop;
        } else {
            if len <= 64 * 1024 {
                return;
            }
            self.garbage_run += drop;
            self.stats.garbage_bytes += drop as u64;
            if self.garbage_run >= NOT_H264_AFTER && !self.said_not_h264 {
                self.said_not_h264 = true;
                self.error(
                    ParseError::NotH264 {
                        bytes: self.garbage_run,
                    },
                    out,
                );
            }
        }
        let _ = self.pending.split_to(drop);
        self.scanned = self.pending.len();
    }

    /// Handles the bytes before a start code (or at flush).
    fn finish_unit(&mut self, unit: Bytes, out: &mut Vec<Result<Nal, ParseError>>) {
        let trimmed = strip_trailing_zeros(&unit);
        if self.discarding {
            self.discarding = false;
            let size = self.discarded + trimmed;
            self.discarded = 0;
            self.stats.oversized_nals += 1;
            self.error(
                ParseError::Oversized {
                    size,
                    cap: self.max_nal_size,
                },
                out,
            );
            return;
        }
        if !self.in_nal {
            let bytes = self.garbage_run + trimmed;
            self.stats.garbage_bytes += trimmed as u64;
            self.garbage_run = 0;
            if bytes > 0 {
                self.error(ParseError::Garbage { bytes }, out);
            }
            return;
        }
        if trimmed == 0 {
            return;
        }
        if trimmed > self.max_nal_size {
            self.stats.oversized_nals += 1;
            self.error(
                ParseError::Oversized {
                    size: trimmed,
                    cap: self.max_nal_size,
                },
                out,
            );
            return;
        }
        let header = unit[0];
        if header & 0x80 != 0 {
            self.stats.invalid_nals += 1;
            self.error(ParseError::InvalidHeader { header }, out);
            return;
        }
        self.stats.nals += 1;
        out.push(Ok(Nal(unit.slice(..trimmed))));
    }

    /// The input ends here at a NAL unit boundary (an encoder's whole frame, end of
    /// file): the pending NAL unit is complete, emit it.
    pub fn flush(&mut self, out: &mut Vec<Result<Nal, ParseError>>) {
        let unit = self.pending.split().freeze();
        self.scanned = 0;
        self.finish_unit(unit, out);
        self.in_nal = false;
    }

    /// The bytes so far of the NAL unit in progress (after its start code; they
    /// may end with the first zeros of the next start code), if one is.
    pub fn pending_nal(&self) -> Option<&[u8]> {
        (self.in_nal && !self.discarding && !self.pending.is_empty()).then_some(&self.pending[..])
    }

    /// The input ends here without a NAL unit boundary (a writer that died or was
    /// cut off): the pending NAL unit may be incomplete, so it is dropped rather
    /// than emitted. Returns the bytes dropped.
    pub fn discard(&mut self) -> usize {
        let dropped = if self.in_nal { self.pending.len() } else { 0 };
        self.pending.clear();
        self.scanned = 0;
        self.in_nal = false;
        self.discarding = false;
        self.discarded = 0;
        self.stats.cut_bytes += dropped as u64;
        dropped
    }

    /// Counters.
    pub fn stats(&self) -> &ParserStats {
        &self.stats
    }
}

/// Index of the first `00 00 01` in `data`.
fn find_start_code(data: &[u8]) -> Option<usize> {
    let mut i = 2;
    while i < data.len() {
        // Hand-rolled skip search: a start code ends in 01 preceded by two zeros, so
        // a byte > 1 lets us jump ahead by three.
        let b = data[i];
        if b > 1 {
            i += 3;
        } else if b == 1 && data[i - 1] == 0 && data[i - 2] == 0 {
            return Some(i - 2);
        } else {
            i += 1;
        }
    }
    None
}

fn strip_trailing_zeros(unit: &[u8]) -> usize {
    unit.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
}
