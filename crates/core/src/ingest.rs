//! Turns a source's bytes into access units (Annex-B parser + assembler) and
//! publishes them to the hub, reporting stream errors without flooding the log.
use std::sync::Arc;

use nalcast_h264::{AccessUnit, AnnexBParser, AuAssembler, Nal, ParamSets};
use tracing::warn;

use crate::Hub;

/// Default cap on one NAL unit's size (a 4K intra frame at high quality fits).
pub const DEFAULT_MAX_NAL_SIZE: usize = 8 << 20;

/// Bytes in, access units out: the parser and assembler of one source.
pub struct Splitter {
    parser: AnnexBParser,
    assembler: AuAssembler,
    nals: Vec<Nal>,
    errors_logged: u64,
}

impl Splitter {
    /// A splitter dropping NAL units larger than `max_nal_size`.
    pub fn new(max_nal_size: usize) -> Self {
        Splitter {
            parser: AnnexBParser::new(max_nal_size),
            assembler: AuAssembler::new(),
            nals: Vec::new(),
            errors_logged: 0,
        }
    }

    /// Feeds bytes that arrived at `now_us`; completed access units go to `out`.
    pub fn push(&mut self, bytes: &[u8], now_us: u64, out: &mut Vec<AccessUnit>) {
        self.parser.push(bytes, &mut self.nals);
        for nal in self.nals.drain(..) {
            self.assembler.push(nal, now_us, out);
        }
        self.log_errors();
    }

    /// The input is known to end at an access-unit boundary (one encoded frame,
    /// end of file): emit what is pending now rather than at the next frame.
    pub fn end_of_access_unit(&mut self, now_us: u64, out: &mut Vec<AccessUnit>) {
        self.parser.flush(&mut self.nals);
        for nal in self.nals.drain(..) {
            self.assembler.push(nal, now_us, out);
        }
        self.assembler.end_of_access_unit(out);
        self.log_errors();
    }

    /// Parameter sets seen so far.
    pub fn params(&self) -> Option<&Arc<ParamSets>> {
        self.assembler.params()
    }

    /// Number of stream errors seen (garbage, oversized, truncated, …).
    pub fn error_count(&self) -> u64 {
        self.parser.stats().errors + self.assembler.stats().errors
    }

    /// Number of B-slices seen (a Baseline-only decoder cannot play them).
    pub fn b_slices(&self) -> u64 {
        self.assembler.stats().b_slices
    }

    fn log_errors(&mut self) {
        let errors = self
            .parser
            .take_errors()
            .into_iter()
            .chain(self.assembler.take_errors());
        for error in errors {
            metrics::counter!("nalcast_stream_errors_total").increment(1);
            self.errors_logged += 1;
            // The first few tell the story; after that, one line per thousand.
            if self.errors_logged <= 10 || self.errors_logged.is_multiple_of(1000) {
                warn!(count = self.errors_logged, "bad input from source: {error}");
            }
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
            splitter: Splitter::new(max_nal_size),
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

    /// Publishes access units assembled elsewhere (paced sources).
    pub fn publish_au(&mut self, au: AccessUnit) {
        self.frames += 1;
        self.hub.publish(au);
    }

    /// The splitter, for sources that pace access units themselves.
    pub fn splitter(&mut self) -> &mut Splitter {
        &mut self.splitter
    }

    fn publish(&mut self) {
        let aus = std::mem::take(&mut self.out);
        for au in aus {
            self.publish_au(au);
        }
        if !self.warned_b_frames && self.splitter.b_slices() > 0 {
            self.warned_b_frames = true;
            warn!("the source sends B-frames: Broadway.js (plain-HTTP viewers) cannot play them; configure the encoder for Baseline profile");
        }
    }
}
