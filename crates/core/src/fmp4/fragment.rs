//! One fragment: `moof` (mfhd, traf with tfhd, tfdt, trun of one sample) and `mdat`
//! holding the access unit in AVCC form (4-byte lengths instead of start codes).
use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Encode, Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry, TrunSamples};
use nalcast_h264::{AccessUnit, UnitType};

use super::{Fmp4Error, SampleTiming, TRACK_ID};

/// sample_flags (ISO/IEC 14496-12 8.8.3.1) of a keyframe: depends on no other sample.
pub(crate) const FLAGS_SYNC: u32 = 2 << 24;
/// sample_flags of other pictures: depends on others, not a sync sample.
pub(crate) const FLAGS_NON_SYNC: u32 = (1 << 24) | (1 << 16);
/// Added when no picture refers to this one (nal_ref_idc 0): a decoder may drop it.
pub(crate) const FLAGS_DISPOSABLE: u32 = 2 << 22;

/// NAL units a sample keeps: not the parameter sets (they travel in the avcC, and a
/// change brings a new init segment), not access unit delimiters (a sample is one
/// access unit already).
fn kept(t: Option<UnitType>) -> bool {
    !matches!(
        t,
        Some(UnitType::SeqParameterSet | UnitType::PicParameterSet | UnitType::AccessUnitDelimiter)
            | None
    )
}

/// Size of `au` as an AVCC sample.
pub(crate) fn sample_size(au: &AccessUnit) -> usize {
    (0..au.nals.len())
        .filter(|&i| kept(au.nal_type(i)))
        .map(|i| au.nals[i].len())
        .sum()
}

/// Whether `au`'s first slice belongs to a reference picture (nal_ref_idc != 0).
fn is_reference(au: &AccessUnit) -> bool {
    au.nals
        .iter()
        .zip(0..)
        .find(|(_, i)| {
            matches!(
                au.nal_type(*i),
                Some(
                    UnitType::SliceLayerWithoutPartitioningNonIdr
                        | UnitType::SliceLayerWithoutPartitioningIdr
                )
            )
        })
        .and_then(|(r, _)| au.data.get(r.start as usize + 4))
        .is_none_or(|h| h & 0x60 != 0)
}

/// Writes moof + mdat for one sample. `moof_len` is the moof size of the last call:
/// the trun's data offset is written from it, and the box is written again only
/// when the size changed (the fields in use changed).
pub(crate) fn write(
    au: &AccessUnit,
    sequence: u32,
    timing: &SampleTiming,
    moof_len: &mut usize,
) -> Result<Bytes, Fmp4Error> {
    let size = sample_size(au);
    if size == 0 {
        return Err(Fmp4Error::EmptySample);
    }
    let size32 = u32::try_from(size + 8).map_err(|_| Fmp4Error::TooLarge(size))?;
    let flags = if au.keyframe {
        FLAGS_SYNC
    } else if is_reference(au) {
        FLAGS_NON_SYNC
    } else {
        FLAGS_NON_SYNC | FLAGS_DISPOSABLE
    };
    let moof = |data_offset: usize| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: timing.decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(data_offset as i32),
                samples: TrunSamples::Explicit(vec![TrunEntry {
                    duration: Some(timing.duration),
                    size: Some(size32 - 8),
                    flags: Some(flags),
                    cts: Some(i64::from(timing.composition_offset)),
                }]),
            }],
            ..Default::default()
        }],
    };
    let mut out = BytesMut::with_capacity(*moof_len + 8 + size);
    let encode = |e: mp4_atom::Error| Fmp4Error::Encode(e.to_string());
    moof(*moof_len + 8).encode(&mut out).map_err(encode)?;
    if out.len() != *moof_len {
        *moof_len = out.len();
        out.clear();
        moof(*moof_len + 8).encode(&mut out).map_err(encode)?;
        debug_assert_eq!(out.len(), *moof_len);
    }
    out.reserve(8 + size);
    out.put_u32(size32);
    out.put_slice(b"mdat");
    for (i, r) in au.nals.iter().enumerate() {
        if kept(au.nal_type(i)) {
            let nal = au
                .data
                .get(r.start as usize + 4..r.end as usize)
                .ok_or(Fmp4Error::BadAccessUnit)?;
            out.put_u32(nal.len() as u32);
            out.put_slice(nal);
        }
    }
    Ok(out.freeze())
}
