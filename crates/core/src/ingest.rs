//! Turns a source's bytes into access units (Annex-B parser + assembler) and
//! publishes them to the hub, reporting stream errors without flooding the log.
use std::sync::Arc;
use std::time::Instant;

use nalcast_h264::{AccessUnit, AnnexBParser, AuAssembler, Nal, ParamSets, ParseError};
use tracing::warn;

use crate::metric::{Series, StreamLabel};
use crate::Hub;

/// Bad input from the source.
pub const STREAM_ERRORS: Series = Series::counter(
    "nalcast_stream_errors_total",
    "bad input from the source (damaged or unknown NAL units)",
)
.per_stream();

/// Default cap on one NAL unit's size (a 4K intra frame at high quality fits).
pub const DEFAULT_MAX_NAL_SIZE: usize = 8 << 20;

/// Bytes in, access units out: the parser and assembler of one source. Stream
/// errors are logged and counted here, so callers see only access units.
pub struct Splitter {
    parser: AnnexBParser,
    assembler: AuAssembler,
    /// The parser's output, drained at every call.
    nals: Vec<Result<Nal, ParseError>>,
    /// The assembler's output plus the parser's errors, in stream order; drained at
    /// every call.
    aus: Vec<Result<AccessUnit, ParseError>>,
    errors: ErrorLog,
}

impl Splitter {
    /// A splitter dropping NAL units larger than `max_nal_size`, counting stream
    /// errors as `stream`'s.
    pub fn new(max_nal_size: usize, stream: &StreamLabel) -> Self {
        Splitter {
            parser: AnnexBParser::new(max_nal_size),
            assembler: AuAssembler::new(),
            nals: Vec::new(),
            aus: Vec::new(),
            errors: ErrorLog {
                count: 0,
                counter: STREAM_ERRORS.count_in(stream),
            },
        }
    }

    /// Feeds bytes that arrived at `now_us`; completed access units go to `out`.
    pub fn push(&mut self, bytes: &[u8], now_us: u64, out: &mut Vec<AccessUnit>) {
        self.parser.push(bytes, &mut self.nals);
        self.assemble(now_us);
        // The next NAL unit's first bytes may already say a new frame began: then
        // the frame before it is complete now, not when that NAL unit is.
        if let Some(next) = self.parser.pending_nal() {
            self.assembler.upcoming(next, &mut self.aus);
        }
        self.deliver(out);
    }

    /// The input is known to end at an access-unit boundary (one encoded frame,
    /// end of file): emit what is pending now rather than at the next frame.
    pub fn end_of_access_unit(&mut self, now_us: u64, out: &mut Vec<AccessUnit>) {
        self.parser.flush(&mut self.nals);
        self.assemble(now_us);
        self.assembler.end_of_access_unit(&mut self.aus);
        self.deliver(out);
    }

    /// The input ended (or broke off) inside a frame: what is pending is dropped,
    /// never published as a picture, since it may be cut. Returns the bytes of the
    /// NAL unit in progress that were dropped.
    pub fn discard_unfinished(&mut self) -> usize {
        let bytes = self.parser.discard();
        let nals = self.assembler.discard();
        if bytes > 0 || nals > 0 {
            self.errors.counter.increment(1);
        }
        bytes
    }

    /// A break in the stream (a file starting over): like a source restart, nothing
    /// is published until the next keyframe. The pending NAL unit is complete (a
    /// file's end is a NAL unit boundary) and belongs to the frame before the break.
    pub fn break_stream(&mut self, now_us: u64, out: &mut Vec<AccessUnit>) {
        self.end_of_access_unit(now_us, out);
        self.assembler.await_keyframe();
    }

    /// Passes the parser's NAL units to the assembler, and its errors along in order.
    fn assemble(&mut self, now_us: u64) {
        for nal in self.nals.drain(..) {
            match nal {
                Ok(nal) => self.assembler.push(nal, now_us, &mut self.aus),
                Err(e) => self.aus.push(Err(e)),
            }
        }
    }

    /// Access units to `out`, errors to the log.
    fn deliver(&mut self, out: &mut Vec<AccessUnit>) {
        for au in self.aus.drain(..) {
            match au {
                Ok(au) => out.push(au),
                Err(e) => self.errors.report(&e),
            }
        }
    }

    /// Parameter sets seen so far.
    pub fn params(&self) -> Option<&Arc<ParamSets>> {
        self.assembler.params()
    }

    /// Number of stream errors seen (garbage, oversized, truncated, …).
    pub fn error_count(&self) -> u64 {
        self.parser.stats().errors + self.assembler.stats().errors
    }

    /// Signs that a frame was cut short: bytes with no start code before them, or a
    /// picture's later slice with no first slice before it. A source whose frames
    /// were ended by a quiet pipe (see `source::exec`) shows them when it had not
    /// finished writing its frame after all.
    pub fn cut_frame_signs(&self) -> u64 {
        self.parser.stats().errors + self.assembler.stats().orphan_slices
    }

    /// Number of B-slices seen (a Baseline-only decoder cannot play them).
    pub fn b_slices(&self) -> u64 {
        self.assembler.stats().b_slices
    }
}

/// Stream errors to the log and the metrics, without flooding the log.
struct ErrorLog {
    /// Errors reported so far.
    count: u64,
    /// The stream's STREAM_ERRORS.
    counter: metrics::Counter,
}

impl ErrorLog {
    fn report(&mut self, error: &ParseError) {
        self.counter.increment(1);
        self.count += 1;
        // The first few tell the story; after that, one line per thousand.
        if self.count <= 10 || self.count.is_multiple_of(1000) {
            warn!(count = self.count, "bad input from source: {error}");
        }
    }
}

/// A splitter that publishes straight to a hub.
pub struct Ingest {
    splitter: Splitter,
    hub: Arc<Hub>,
    out: Vec<AccessUnit>,
    warned_b_frames: bool,
    frames: u64,
}

impl Ingest {
    /// Ingest into `hub`.
    pub fn new(hub: Arc<Hub>, max_nal_size: usize) -> Self {
        Ingest {
            splitter: Splitter::new(max_nal_size, hub.stream_label()),
            hub,
            out: Vec::new(),
            warned_b_frames: false,
            frames: 0,
        }
    }

    /// Frames published so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Feeds bytes that arrived at `now_us` and publishes completed frames.
    pub fn push(&mut self, bytes: &[u8], now_us: u64) {
        self.splitter.push(bytes, now_us, &mut self.out);
        self.publish();
    }

    /// Ends the current access unit (see [`Splitter::end_of_access_unit`]) and publishes it.
    pub fn end_of_access_unit(&mut self, now_us: u64) {
        self.splitter.end_of_access_unit(now_us, &mut self.out);
        self.publish();
    }

    /// Publishes access units assembled elsewhere (paced sources), at `now`.
    pub fn publish_au(&mut self, au: AccessUnit, now: Instant) {
        self.frames += 1;
        self.hub.publish(au, now);
    }

    /// The splitter, for sources that pace access units themselves.
    pub fn splitter(&mut self) -> &mut Splitter {
        &mut self.splitter
    }

    /// Publishes what the splitter completed. The bytes come with their wall-clock
    /// time; the hub's monotonic arrival time is read here, where they arrive.
    fn publish(&mut self) {
        let aus = std::mem::take(&mut self.out);
        let now = Instant::now();
        for au in aus {
            self.publish_au(au, now);
        }
        if !self.warned_b_frames && self.splitter.b_slices() > 0 {
            self.warned_b_frames = true;
            warn!("the source sends B-frames: Broadway.js (browsers with neither WebCodecs nor MSE) cannot play them; configure the encoder for Baseline profile if such viewers matter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_error_is_reported_however_many_one_push_reveals() {
        let mut splitter = Splitter::new(1 << 20, &StreamLabel::default());
        // 40 NAL units with the forbidden bit set in their header, in one push.
        let data: Vec<u8> = std::iter::repeat_n([0, 0, 1, 0xe5, 1], 40)
            .flatten()
            .collect();
        let mut out = Vec::new();
        splitter.push(&data, 0, &mut out);
        splitter.end_of_access_unit(0, &mut out);
        assert!(out.is_empty());
        assert_eq!(splitter.error_count(), 40);
        assert_eq!(splitter.errors.count, 40, "each one logged or counted");
    }
}
