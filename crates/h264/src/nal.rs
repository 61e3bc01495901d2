//! NAL unit type and header helpers.
use bytes::Bytes;

/// One NAL unit without its start code: header byte first, emulation prevention intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nal(pub Bytes);

/// NAL unit types nalcast cares about (ITU-T H.264 table 7-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NalType {
    /// Coded slice of a non-IDR picture (1).
    Slice,
    /// Slice data partitions A/B/C (2..=4).
    Partition,
    /// Coded slice of an IDR picture (5).
    Idr,
    /// Supplemental enhancement information (6).
    Sei,
    /// Sequence parameter set (7).
    Sps,
    /// Picture parameter set (8).
    Pps,
    /// Access unit delimiter (9).
    Aud,
    /// End of sequence / end of stream / filler (10..=12).
    EndOrFiller,
    /// Anything else, with its numeric type.
    Other(u8),
}

impl Nal {
    /// The NAL unit type from the header byte; `None` for an empty NAL.
    pub fn nal_type(&self) -> Option<NalType> {
        todo!()
    }
}
