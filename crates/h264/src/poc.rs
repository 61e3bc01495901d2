//! Picture order: what the SPS says about frame reordering, and each access unit's
//! picture order count (POC, ITU-T H.264 8.2.1), which tells presentation order when
//! B-frames make it differ from decode order.
//!
//! h264-reader parses the SPS, PPS and slice header; this module only keeps the
//! state the spec carries from picture to picture (PicOrderCntMsb for type 0,
//! FrameNumOffset for types 1 and 2).
use std::sync::Arc;

use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::{
    DecRefPicMarking, FieldPic, MemoryManagementControlOperation, PicOrderCountLsb, SliceHeader,
};
use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags, PicOrderCntType, SeqParameterSet};
use h264_reader::nal::NalHeader;
use h264_reader::rbsp::{decode_nal, BitReader};
use h264_reader::Context;

use crate::params::rbsp_reader;
use crate::{AccessUnit, ParamSets, ParseError, UnitType};

/// What an SPS says about picture order and sample format, beyond [`crate::StreamInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpsDetails {
    /// `pic_order_cnt_type`: 0 and 1 allow reordering, 2 means output order is
    /// decode order.
    pub poc_type: u8,
    /// `max_num_reorder_frames` from the VUI's bitstream restriction, when present:
    /// how many frames may precede a frame in decode order and follow it in output.
    pub max_num_reorder_frames: Option<u32>,
    /// `max_num_ref_frames`.
    pub max_num_ref_frames: u32,
    /// Every picture is a frame (no field coding).
    pub frame_mbs_only: bool,
    /// `chroma_format_idc` (1 = 4:2:0).
    pub chroma_format_idc: u8,
    /// Luma bit depth (8 for nearly every camera).
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
}

impl SpsDetails {
    /// Parses an SPS NAL unit (header byte first, no start code).
    pub fn from_sps(sps_nal: &[u8]) -> Result<SpsDetails, ParseError> {
        let sps = parse_sps(sps_nal)?;
        Ok(SpsDetails::from_parsed(&sps))
    }

    pub(crate) fn from_parsed(sps: &SeqParameterSet) -> SpsDetails {
        let poc_type = match sps.pic_order_cnt {
            PicOrderCntType::TypeZero { .. } => 0,
            PicOrderCntType::TypeOne { .. } => 1,
            PicOrderCntType::TypeTwo => 2,
        };
        let chroma = &sps.chroma_info;
        SpsDetails {
            poc_type,
            max_num_reorder_frames: sps
                .vui_parameters
                .as_ref()
                .and_then(|v| v.bitstream_restrictions.as_ref())
                .map(|b| b.max_num_reorder_frames),
            max_num_ref_frames: sps.max_num_ref_frames,
            frame_mbs_only: matches!(sps.frame_mbs_flags, FrameMbsFlags::Frames),
            chroma_format_idc: match chroma.chroma_format {
                ChromaFormat::Monochrome => 0,
                ChromaFormat::YUV420 => 1,
                ChromaFormat::YUV422 => 2,
                ChromaFormat::YUV444 => 3,
                ChromaFormat::Invalid(n) => n.min(3) as u8,
            },
            bit_depth_luma: chroma.bit_depth_luma_minus8 + 8,
            bit_depth_chroma: chroma.bit_depth_chroma_minus8 + 8,
        }
    }

    /// Whether output order can differ from decode order: POC type 0 or 1, unless
    /// the VUI promises no reordering.
    pub fn may_reorder(&self) -> bool {
        self.poc_type != 2 && self.max_num_reorder_frames != Some(0)
    }
}

pub(crate) fn parse_sps(sps_nal: &[u8]) -> Result<SeqParameterSet, ParseError> {
    let bad = |what: String| ParseError::BadParameterSet(what);
    let rbsp = decode_nal(sps_nal).map_err(|e| bad(format!("SPS: {e}")))?;
    SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|e| bad(format!("SPS: {e:?}")))
}

/// The picture order of one access unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PicOrder {
    /// PicOrderCnt of the picture (the smaller of its fields' counts); resets at
    /// each IDR picture, so it orders pictures within one IDR period.
    pub poc: i64,
    /// The picture is an IDR picture.
    pub idr: bool,
    /// `nal_ref_idc != 0`: other pictures may refer to it.
    pub reference: bool,
}

/// Why an access unit's picture order could not be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PocError {
    /// The access unit holds no slice with a header.
    #[error("access unit without a slice header")]
    NoSlice,
    /// The parameter sets could not be parsed.
    #[error("parameter sets unreadable: {0}")]
    Params(String),
    /// The first slice header could not be parsed.
    #[error("slice header unreadable: {0}")]
    Slice(String),
}

/// Computes the POC of access units given in decode order (ITU-T H.264 8.2.1),
/// carrying the state the spec keeps between pictures. Parameter sets come with
/// each access unit; a new `Arc` rebuilds the parser's context.
#[derive(Default)]
pub struct PocCounter {
    ctx: Context,
    params: Option<Arc<ParamSets>>,
    /// Type 0: prevPicOrderCntMsb and prevPicOrderCntLsb of the previous reference picture.
    prev_msb: i64,
    prev_lsb: i64,
    /// Types 1 and 2: the previous picture's FrameNumOffset and frame_num.
    prev_frame_num_offset: i64,
    prev_frame_num: i64,
}

impl std::fmt::Debug for PocCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PocCounter")
            .field("prev_msb", &self.prev_msb)
            .field("prev_lsb", &self.prev_lsb)
            .finish_non_exhaustive()
    }
}

impl PocCounter {
    /// A counter that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn load_params(&mut self, params: &Arc<ParamSets>) -> Result<(), PocError> {
        if self.params.as_ref().is_some_and(|p| Arc::ptr_eq(p, params)) {
            return Ok(());
        }
        let mut ctx = Context::new();
        for sps in &params.parsed {
            ctx.put_seq_param_set(sps.clone());
        }
        for pps in &params.pps {
            let pps = PicParameterSet::from_bits(&ctx, rbsp_reader(pps))
                .map_err(|e| PocError::Params(format!("PPS: {e:?}")))?;
            ctx.put_pic_param_set(pps);
        }
        self.ctx = ctx;
        self.params = Some(params.clone());
        Ok(())
    }

    /// The picture order of `au`, the next access unit in decode order.
    pub fn push(&mut self, au: &AccessUnit) -> Result<PicOrder, PocError> {
        self.load_params(&au.params)?;
        let slice = (0..au.nals.len())
            .find(|&i| {
                matches!(
                    au.nal_type(i),
                    Some(
                        UnitType::SliceLayerWithoutPartitioningNonIdr
                            | UnitType::SliceLayerWithoutPartitioningIdr
                    )
                )
            })
            .ok_or(PocError::NoSlice)?;
        let nal = au.nal(slice);
        let nal = nal.get(4..).ok_or(PocError::NoSlice)?;
        let header = NalHeader::new(nal[0]).map_err(|e| PocError::Slice(format!("{e:?}")))?;
        let (sh, sps, _pps) =
            SliceHeader::from_bits(&self.ctx, &mut rbsp_reader(nal), header, None)
                .map_err(|e| PocError::Slice(format!("{e:?}")))?;
        let idr = au.nal_type(slice) == Some(UnitType::SliceLayerWithoutPartitioningIdr);
        let reference = header.nal_ref_idc() != 0;
        let mmco5 = match &sh.dec_ref_pic_marking {
            Some(DecRefPicMarking::Adaptive(ops)) => ops
                .iter()
                .any(|op| matches!(op, MemoryManagementControlOperation::AllRefPicturesUnused)),
            _ => false,
        };
        let bottom_field = matches!(
            sh.field_pic,
            FieldPic::Field(h264_reader::nal::slice::Field::Bottom)
        );
        let frame_num = i64::from(sh.frame_num);
        let max_frame_num = 1i64 << sps.log2_max_frame_num();

        let (top, bottom) = match &sps.pic_order_cnt {
            PicOrderCntType::TypeZero {
                log2_max_pic_order_cnt_lsb_minus4,
            } => {
                let max_lsb = 1i64 << (log2_max_pic_order_cnt_lsb_minus4 + 4);
                let (lsb, delta_bottom) = match sh.pic_order_cnt_lsb {
                    Some(PicOrderCountLsb::Frame(lsb)) => (i64::from(lsb), 0),
                    Some(PicOrderCountLsb::FieldsAbsolute {
                        pic_order_cnt_lsb,
                        delta_pic_order_cnt_bottom,
                    }) => (
                        i64::from(pic_order_cnt_lsb),
                        i64::from(delta_pic_order_cnt_bottom),
                    ),
                    _ => return Err(PocError::Slice("no pic_order_cnt_lsb".into())),
                };
                if idr {
                    self.prev_msb = 0;
                    self.prev_lsb = 0;
                }
                let msb = if lsb < self.prev_lsb && self.prev_lsb - lsb >= max_lsb / 2 {
                    self.prev_msb + max_lsb
                } else if lsb > self.prev_lsb && lsb - self.prev_lsb > max_lsb / 2 {
                    self.prev_msb - max_lsb
                } else {
                    self.prev_msb
                };
                let top = msb + lsb;
                let bottom = if bottom_field {
                    top
                } else {
                    top + delta_bottom
                };
                if reference {
                    if mmco5 {
                        // 8.2.1: after memory_management_control_operation 5 the
                        // picture counts as having POC 0 (tempPicOrderCnt subtracted).
                        self.prev_msb = 0;
                        self.prev_lsb = if bottom_field {
                            0
                        } else {
                            top - top.min(bottom)
                        };
                    } else {
                        self.prev_msb = msb;
                        self.prev_lsb = lsb;
                    }
                }
                (top, bottom)
            }
            PicOrderCntType::TypeOne {
                offset_for_non_ref_pic,
                offset_for_top_to_bottom_field,
                offsets_for_ref_frame,
                ..
            } => {
                let offset = self.frame_num_offset(idr, frame_num, max_frame_num);
                let cycle_len = offsets_for_ref_frame.len() as i64;
                let mut abs = if cycle_len != 0 {
                    offset + frame_num
                } else {
                    0
                };
                if !reference && abs > 0 {
                    abs -= 1;
                }
                let mut expected = 0i64;
                if abs > 0 {
                    let per_cycle: i64 = offsets_for_ref_frame.iter().map(|&o| i64::from(o)).sum();
                    let cycles = (abs - 1) / cycle_len;
                    let in_cycle = ((abs - 1) % cycle_len) as usize;
                    expected = cycles * per_cycle
                        + offsets_for_ref_frame[..=in_cycle]
                            .iter()
                            .map(|&o| i64::from(o))
                            .sum::<i64>();
                }
                if !reference {
                    expected += i64::from(*offset_for_non_ref_pic);
                }
                let [d0, d1] = match sh.pic_order_cnt_lsb {
                    Some(PicOrderCountLsb::FieldsDelta(d)) => d,
                    _ => [0, 0],
                };
                let (d0, d1) = (i64::from(d0), i64::from(d1));
                let top = expected + d0;
                let bottom = match sh.field_pic {
                    FieldPic::Frame => top + i64::from(*offset_for_top_to_bottom_field) + d1,
                    FieldPic::Field(_) if bottom_field => {
                        expected + i64::from(*offset_for_top_to_bottom_field) + d0
                    }
                    FieldPic::Field(_) => top,
                };
                self.after_frame_num(offset, frame_num, mmco5);
                (top, bottom)
            }
            PicOrderCntType::TypeTwo => {
                let offset = self.frame_num_offset(idr, frame_num, max_frame_num);
                let poc = if idr {
                    0
                } else if reference {
                    2 * (offset + frame_num)
                } else {
                    2 * (offset + frame_num) - 1
                };
                self.after_frame_num(offset, frame_num, mmco5);
                (poc, poc)
            }
        };
        Ok(PicOrder {
            poc: top.min(bottom),
            idr,
            reference,
        })
    }

    /// FrameNumOffset (8.2.1.2 and 8.2.1.3).
    fn frame_num_offset(&self, idr: bool, frame_num: i64, max_frame_num: i64) -> i64 {
        if idr {
            0
        } else if self.prev_frame_num > frame_num {
            self.prev_frame_num_offset + max_frame_num
        } else {
            self.prev_frame_num_offset
        }
    }

    fn after_frame_num(&mut self, offset: i64, frame_num: i64, mmco5: bool) {
        // After memory_management_control_operation 5 the next picture sees
        // prevFrameNumOffset 0 (and frame_num counts from 0 again).
        self.prev_frame_num_offset = if mmco5 { 0 } else { offset };
        self.prev_frame_num = if mmco5 { 0 } else { frame_num };
    }
}
