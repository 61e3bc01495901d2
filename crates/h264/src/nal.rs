//! NAL unit type and header helpers.
use bytes::Bytes;
pub use h264_reader::nal::UnitType;

/// One NAL unit without its start code: header byte first, emulation prevention intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nal(pub Bytes);

/// The type of a NAL unit from its header byte (ITU-T H.264 table 7-1), as
/// h264-reader names every one of them.
pub fn unit_type(header: u8) -> UnitType {
    // Five bits: every value is a type (`for_id` refuses only values above 31).
    UnitType::for_id(header & 0x1f).unwrap_or(UnitType::Unspecified(0))
}

impl Nal {
    /// The NAL unit type from the header byte; `None` for an empty NAL.
    pub fn nal_type(&self) -> Option<UnitType> {
        self.0.first().map(|h| unit_type(*h))
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
            Some(UnitType::SeqParameterSet)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x68])).nal_type(),
            Some(UnitType::PicParameterSet)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x65])).nal_type(),
            Some(UnitType::SliceLayerWithoutPartitioningIdr)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x41])).nal_type(),
            Some(UnitType::SliceLayerWithoutPartitioningNonIdr)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x09])).nal_type(),
            Some(UnitType::AccessUnitDelimiter)
        );
        assert_eq!(
            Nal(Bytes::from_static(&[0x0e])).nal_type(),
            Some(UnitType::PrefixNALUnit)
        );
        assert_eq!(Nal(Bytes::new()).nal_type(), None);
        assert!(Nal(Bytes::from_static(&[0x65])).is_vcl());
        assert!(!Nal(Bytes::from_static(&[0x06])).is_vcl());
    }
}
