//! Sans-IO H.264 Annex-B handling for nalcast: bytes in, NAL units and access units out,
//! with the errors in the same output stream (no side queue to drain).
//!
//! Nothing here does I/O or reads a clock: the caller passes time in. That keeps the
//! code testable and fuzzable.

pub mod annexb;
pub mod au;
pub mod nal;
pub mod params;
pub mod poc;

pub use annexb::{AnnexBParser, ParseError, ParserStats};
pub use au::{AccessUnit, AssemblerStats, AuAssembler};
pub use nal::{unit_type, Nal, UnitType};
pub use params::{ParamSets, StreamInfo};
pub use poc::{PicOrder, PocCounter, PocError, SpsDetails};
