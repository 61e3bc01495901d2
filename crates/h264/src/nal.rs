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

impl NalType {
    /// The type of a NAL unit from its header byte.
    pub fn from_header(header: u8) -> NalType {
        match header & 0x1f {
            1 => NalType::Slice,
            2..=4 => NalType::Partition,
            5 => NalType::Idr,
            6 => NalType::Sei,
            7 => NalType::Sps,
            8 => NalType::Pps,
            9 => NalType::Aud,
            10..=12 => NalType::EndOrFiller,
            other => NalType::Other(other),
        }
    }
}

impl Nal {
    /// The NAL unit type from the header byte; `None` for an empty NAL.
    pub fn nal_type(&self) -> Option<NalType> {
        self.0.first().map(|h| NalType::from_header(*h))
    }

    /// The raw `nal_unit_type` number (0 for an empty NAL).
    pub fn type_number(&self) -> u8 {
        self.0.first().map_or(0, |h| h & 0x1f)
    }

    /// Whether this is a coded slice (VCL NAL unit, types 1 to 5).
    pub fn is_vcl(&self) -> bool {
        matches!(self.type_number(), 1..=5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_header() {
        assert_eq!(
            Nal(Bytes::from_static(&[0x67])).nal_type(),
            Some(NalType::Sps)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x68])).nal_type(),
            Some(NalType::Pps)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x65])).nal_type(),
            Some(NalType::Idr)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x41])).nal_type(),
            Some(NalType::Slice)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x09])).nal_type(),
            Some(NalType::Aud)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x0e])).nal_type(),
            Some(NalType::Other(14))
        );
        assert_eq!(Nal(Bytes::new()).nal_type(), None);
        assert!(Nal(Bytes::from_static(&[0x65])).is_vcl());
        assert!(!Nal(Bytes::from_static(&[0x06])).is_vcl());
    }
}
