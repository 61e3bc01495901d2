//! The init segment: `ftyp` and a `moov` with one `avc1` track for fragments.
use bytes::{Bytes, BytesMut};
use mp4_atom::{
    Avc1, Avcc, AvccExt, Codec, Dinf, Dref, DrefEntry, Encode, FixedPoint, Ftyp, Hdlr, Mdhd, Mdia,
    Minf, Moov, Mvex, Mvhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tkhd, Trak, Trex, Url, Visual,
    Vmhd,
};
use nalcast_h264::ParamSets;

use super::{Fmp4Error, TIMESCALE, TRACK_ID};

/// Profiles whose avcC carries chroma format and bit depths (ISO/IEC 14496-15 5.3.3.1).
const HIGH_PROFILES: [u8; 4] = [100, 110, 122, 144];

/// The avcC box contents for these parameter sets: every SPS, the active one
/// first (its profile and level head the box), and every PPS.
fn avcc(params: &ParamSets) -> Result<Avcc, Fmp4Error> {
    let sps = params.active_sps();
    if let Some(s) = params
        .sps
        .iter()
        .find(|s| s.len() < 4 || s.len() > usize::from(u16::MAX))
    {
        return Err(Fmp4Error::BadParams(format!("SPS of {} bytes", s.len())));
    }
    if params.sps.len() > 31 {
        return Err(Fmp4Error::BadParams(format!(
            "{} SPS (1 to 31 fit an avcC)",
            params.sps.len()
        )));
    }
    if params.pps.is_empty() || params.pps.len() > 255 {
        return Err(Fmp4Error::BadParams(format!(
            "{} PPS (1 to 255 fit an avcC)",
            params.pps.len()
        )));
    }
    if let Some(p) = params.pps.iter().find(|p| p.len() > usize::from(u16::MAX)) {
        return Err(Fmp4Error::BadParams(format!("PPS of {} bytes", p.len())));
    }
    let ext = if HIGH_PROFILES.contains(&sps[1]) {
        let d = &params.details;
        Some(AvccExt {
            chroma_format: d.chroma_format_idc,
            bit_depth_luma: d.bit_depth_luma,
            bit_depth_chroma: d.bit_depth_chroma,
            sequence_parameter_sets_ext: Vec::new(),
        })
    } else {
        None
    };
    Ok(Avcc {
        configuration_version: 1,
        avc_profile_indication: sps[1],
        profile_compatibility: sps[2],
        avc_level_indication: sps[3],
        length_size: 4,
        sequence_parameter_sets: params.sps_active_first().map(|s| s.to_vec()).collect(),
        picture_parameter_sets: params.pps.iter().map(|p| p.to_vec()).collect(),
        ext,
    })
}

/// The AVCDecoderConfigurationRecord (the avcC box's body, without its header):
/// what an FLV/RTMP stream's sequence header carries.
pub(super) fn decoder_configuration(params: &ParamSets) -> Result<Bytes, Fmp4Error> {
    let mut buf = BytesMut::new();
    avcc(params)?
        .encode(&mut buf)
        .map_err(|e| Fmp4Error::BadParams(format!("avcC: {e}")))?;
    // size (4) and type (4) first.
    Ok(buf.freeze().slice(8..))
}

/// `ftyp` + `moov` for one avc1 track of `params`' size, 90 kHz, no samples in
/// the `moov` (they all come in fragments: `mvex` says so).
pub(super) fn init_segment(params: &ParamSets) -> Result<Bytes, Fmp4Error> {
    let size = |v: u32, what: &str| {
        u16::try_from(v).map_err(|_| Fmp4Error::BadParams(format!("{what} {v} does not fit")))
    };
    let width = size(params.info.width, "width")?;
    let height = size(params.info.height, "height")?;
    let ftyp = Ftyp {
        major_brand: b"iso5".into(),
        minor_version: 512,
        compatible_brands: vec![
            b"iso5".into(),
            b"iso6".into(),
            b"avc1".into(),
            b"mp41".into(),
        ],
    };
    let sample_entry = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width,
            height,
            horizresolution: FixedPoint::new(72, 0),
            vertresolution: FixedPoint::new(72, 0),
            frame_count: 1,
            compressor: "".into(),
            depth: 0x18,
        },
        avcc: avcc(params)?,
        ..Default::default()
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: TIMESCALE,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                ..Default::default()
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                width: FixedPoint::new(width, 0),
                height: FixedPoint::new(height, 0),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: TIMESCALE,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: b"vide".into(),
                    name: "nalcast".into(),
                },
                minf: Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: Dinf {
                        dref: Dref {
                            entries: vec![DrefEntry::Url(Url::default())],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![Codec::Avc1(sample_entry)],
                        },
                        stts: Stts::default(),
                        stsc: Stsc::default(),
                        stsz: Stsz::default(),
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = BytesMut::with_capacity(1024);
    let encode = |e: mp4_atom::Error| Fmp4Error::Encode(e.to_string());
    ftyp.encode(&mut out).map_err(encode)?;
    moov.encode(&mut out).map_err(encode)?;
    Ok(out.freeze())
}
