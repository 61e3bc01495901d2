//! What a viewer would see, checked: a capture starts decodable, no reference
//! picture is missing (frame_num), pictures come out in a sane order (POC), the
//! framed protocol numbers frames without unexplained gaps, and ffmpeg decodes
//! it all without a word of complaint.
//!
//! Parameter sets and slice headers are read with h264-reader; only the rules
//! built on them (ITU-T H.264 7.4.3 for frame_num, 8.2.1 for POC) are ours.
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::{
    DecRefPicMarking, FieldPic, MemoryManagementControlOperation, PicOrderCountLsb, SliceHeader,
};
use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};
use h264_reader::nal::{Nal, RefNal};
use h264_reader::Context;
use nalcast_core::protocol::{self, ServerMessage, StreamInfoMsg, FLAG_CATCH_UP, FLAG_KEYFRAME};

use super::streams::split_annexb;

/// How a capture was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `/ws`: typed messages, one access unit per frame message.
    Framed,
    /// `/ws/raw` and the legacy port: one NAL unit per message.
    Raw,
    /// `/ws/fmp4`: an init segment, then one fMP4 fragment per access unit.
    Fmp4,
}

/// What one capture held, for the summary.
#[derive(Debug, Default)]
pub struct Seen {
    /// Pictures checked.
    pub pictures: usize,
    /// Frames flagged catch-up at the start (framed only): the join's GOP phase.
    pub catch_up: usize,
    /// Skipped messages (framed only).
    pub skips: usize,
    /// The capture as Annex-B, for ffmpeg.
    pub annexb: Vec<u8>,
    /// An fMP4 capture as files ffmpeg can read: each init segment with the
    /// fragments after it.
    pub mp4: Vec<Vec<u8>>,
}

/// Checks one capture (its binary messages in order); `stalled` when the viewer
/// stopped reading long enough to lose frames.
pub fn check_capture(
    dialect: Dialect,
    messages: &[bytes::Bytes],
    arrivals: &[std::time::Instant],
    stalled: bool,
) -> Result<Seen, String> {
    match dialect {
        Dialect::Framed => check_framed(messages),
        Dialect::Raw => check_raw(messages, stalled),
        Dialect::Fmp4 => check_fmp4(messages, arrivals, stalled),
    }
}

/// Media time against wall time, per stretch of live fragments: within 5 %, and
/// a little more for the stretch's two ends, whose arrival times a busy machine
/// delays (a source paced late by 90 ms on a loaded machine is not a pause the
/// timeline leaves out, and a short stretch cannot absorb it).
const MEDIA_VS_WALL: f64 = 0.05;
const END_JITTER_S: f64 = 0.1;
/// Stretches shorter than this are not judged (their ends' jitter would count too much).
const SHORTEST_STRETCH_S: f64 = 1.5;

/// `/ws/fmp4`: stream-info, then an init segment before the first fragment and at
/// every parameter change; fragments numbered without unexplained gaps, the first
/// and the first after a skip a keyframe; decode times continuous (tfdt + duration
/// is the next tfdt) across init segments; and media time keeping within 5 % of
/// wall time over every stretch of live fragments (a stalled viewer's arrival
/// times say nothing; a source restart, a status message or a gap of over 250 ms
/// as the timeline counts one, is a pause it leaves out).
fn check_fmp4(
    messages: &[bytes::Bytes],
    arrivals: &[std::time::Instant],
    stalled: bool,
) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let (mut info, mut init) = (false, false);
    let mut last_seq: Option<u32> = None;
    let mut skipped = false;
    let mut next_tfdt: Option<u64> = None;
    // (arrival, tfdt) of live fragments since the last break.
    let mut stretch: Vec<(std::time::Instant, u64)> = Vec::new();
    let judge = |stretch: &mut Vec<(std::time::Instant, u64)>| -> Result<(), String> {
        if let (Some(first), Some(last)) = (stretch.first(), stretch.last()) {
            let wall = last.0.duration_since(first.0).as_secs_f64();
            let media = (last.1 - first.1) as f64 / 90_000.0;
            if wall >= SHORTEST_STRETCH_S
                && (media - wall).abs() > MEDIA_VS_WALL * wall + END_JITTER_S
            {
                return Err(format!(
                    "{media:.3} s of media time in {wall:.3} s of wall time ({} fragments)",
                    stretch.len()
                ));
            }
        }
        stretch.clear();
        Ok(())
    };
    for (i, msg) in messages.iter().enumerate() {
        let at = |what: String| format!("message {i}: {what}");
        match protocol::decode(msg).map_err(|e| at(format!("undecodable: {e}")))? {
            ServerMessage::Pong { .. } => {}
            // The source was lost or is back: a pause the timeline leaves out.
            ServerMessage::Status(_) => judge(&mut stretch).map_err(&at)?,
            ServerMessage::StreamInfo(_) => info = true,
            ServerMessage::AccessUnit { .. } => return Err(at("Annex-B on /ws/fmp4".into())),
            ServerMessage::InitSegment(data) => {
                if !info {
                    return Err(at("an init segment before any stream-info".into()));
                }
                init = true;
                seen.mp4.push(data.to_vec());
            }
            ServerMessage::Skipped(n) => {
                if last_seq.is_none() {
                    return Err(at(format!("skipped({n}) before any fragment")));
                }
                seen.skips += 1;
                skipped = true;
                judge(&mut stretch).map_err(&at)?;
            }
            ServerMessage::Fragment {
                flags, seq, data, ..
            } => {
                if !init {
                    return Err(at("a fragment before any init segment".into()));
                }
                let key = flags & FLAG_KEYFRAME != 0;
                match last_seq {
                    None if !key => {
                        return Err(at(format!("the first fragment (seq {seq}) is no keyframe")))
                    }
                    Some(prev) if seq != prev.wrapping_add(1) && !skipped => {
                        return Err(at(format!(
                            "sequence number {seq} after {prev} with no skipped message: fragments lost"
                        )))
                    }
                    Some(prev) if skipped && !key => {
                        return Err(at(format!(
                            "fragment {seq} after skipped (last {prev}) is no keyframe"
                        )))
                    }
                    _ => {}
                }
                let (tfdt, duration) = testkit::fmp4::fragment_timing(&data).map_err(&at)?;
                if let Some(due) = next_tfdt.filter(|_| !skipped) {
                    if tfdt != due {
                        return Err(at(format!(
                            "fragment {seq} decodes at {tfdt}, where the one before ended at {due}"
                        )));
                    }
                }
                if !(90..=90_000).contains(&duration) {
                    return Err(at(format!("fragment {seq} lasts {duration} ticks")));
                }
                next_tfdt = Some(tfdt + duration);
                last_seq = Some(seq);
                skipped = false;
                seen.pictures += 1;
                if flags & FLAG_CATCH_UP != 0 {
                    seen.catch_up += 1;
                } else if !stalled {
                    let arrived = arrivals.get(i).copied().ok_or("no arrival time")?;
                    if stretch.last().is_some_and(|(before, _)| {
                        arrived.duration_since(*before).as_millis() > 250
                    }) {
                        judge(&mut stretch).map_err(&at)?;
                    }
                    stretch.push((arrived, tfdt));
                }
                if let Some(piece) = seen.mp4.last_mut() {
                    piece.extend_from_slice(&data);
                }
            }
        }
    }
    judge(&mut stretch)?;
    if seen.pictures == 0 {
        return Err("no fragment at all".into());
    }
    Ok(seen)
}

fn check_framed(messages: &[bytes::Bytes]) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let mut pictures = Pictures::default();
    let mut info: Option<StreamInfoMsg> = None;
    let mut last_seq: Option<u32> = None;
    let mut skipped = false;
    let mut live = false;
    for (i, msg) in messages.iter().enumerate() {
        let at = |what: String| format!("message {i}: {what}");
        match protocol::decode(msg).map_err(|e| at(format!("undecodable: {e}")))? {
            ServerMessage::Status(_) | ServerMessage::Pong { .. } => {}
            ServerMessage::InitSegment(_) | ServerMessage::Fragment { .. } => {
                return Err(at("an fMP4 message on /ws".into()))
            }
            ServerMessage::StreamInfo(s) => info = Some(s),
            ServerMessage::Skipped(n) => {
                if last_seq.is_none() {
                    return Err(at(format!("skipped({n}) before any frame")));
                }
                seen.skips += 1;
                skipped = true;
                pictures.frames_dropped();
            }
            ServerMessage::AccessUnit {
                flags, seq, data, ..
            } => {
                let Some(info) = &info else {
                    return Err(at("a frame before any stream-info message".into()));
                };
                let size = (info.width, info.height);
                let nals = split_annexb(&data);
                let types: Vec<u8> = nals.iter().map(|n| n[0] & 0x1f).collect();
                let key = flags & FLAG_KEYFRAME != 0;
                if key != types.contains(&5) {
                    return Err(at(format!(
                        "keyframe flag {key} on an access unit of NAL types {types:?}"
                    )));
                }
                match last_seq {
                    None if !key => {
                        return Err(at(format!("the first frame (seq {seq}) is no keyframe")))
                    }
                    Some(prev) if seq != prev.wrapping_add(1) && !skipped => {
                        return Err(at(format!(
                            "sequence number {seq} after {prev} with no skipped message: frames lost"
                        )))
                    }
                    Some(prev) if skipped && !key => {
                        return Err(at(format!(
                            "frame {seq} after skipped (last frame {prev}) is no keyframe"
                        )))
                    }
                    _ => {}
                }
                if key {
                    // A key chunk for WebCodecs: (AUD,) every SPS, every PPS, then
                    // the picture.
                    let first = usize::from(types.first() == Some(&9));
                    let sps = types[first..].iter().take_while(|t| **t == 7).count();
                    let pps = types[first + sps..].iter().take_while(|t| **t == 8).count();
                    if sps == 0 || pps == 0 {
                        return Err(at(format!(
                            "keyframe {seq} does not start with SPS, PPS: {types:?}"
                        )));
                    }
                }
                if flags & FLAG_CATCH_UP != 0 {
                    if !live {
                        seen.catch_up += 1;
                    }
                } else {
                    live = true;
                }
                last_seq = Some(seq);
                skipped = false;
                let mut started = false;
                for nal in &nals {
                    if let Some(picture) = pictures.nal(nal).map_err(&at)? {
                        if started {
                            return Err(at(format!("frame {seq} holds more than one picture")));
                        }
                        started = true;
                        if picture.idr && picture.size != size {
                            return Err(at(format!(
                                "keyframe {seq} is {}x{} but the last stream-info said {}x{}",
                                picture.size.0, picture.size.1, size.0, size.1
                            )));
                        }
                        if picture.idr {
                            described_right(info, picture.sps).map_err(&at)?;
                        }
                    }
                }
                if !started {
                    return Err(at(format!("frame {seq} holds no picture: {types:?}")));
                }
                for nal in &nals {
                    seen.annexb.extend_from_slice(&[0, 0, 0, 1]);
                    seen.annexb.extend_from_slice(nal);
                }
            }
        }
    }
    seen.pictures = pictures.finish()?;
    Ok(seen)
}

/// The page picks its decoder from stream-info: the codec string must be the
/// profile, constraint flags and level (RFC 6381) of the SPS the pictures use, and
/// `baseline` true only when a Baseline decoder can play it (profile_idc 66 or
/// constraint_set0).
fn described_right(info: &StreamInfoMsg, sps: [u8; 3]) -> Result<(), String> {
    let [profile, constraints, level] = sps;
    let codec = format!("avc1.{profile:02X}{constraints:02X}{level:02X}");
    if !info.codec.eq_ignore_ascii_case(&codec) {
        return Err(format!(
            "stream-info says codec {} for an SPS of {codec}",
            info.codec
        ));
    }
    let baseline = profile == 66 || constraints & 0x80 != 0;
    if info.baseline != baseline {
        return Err(format!(
            "stream-info says baseline: {} for {codec}",
            info.baseline
        ));
    }
    Ok(())
}

fn check_raw(messages: &[bytes::Bytes], stalled: bool) -> Result<Seen, String> {
    let mut seen = Seen::default();
    // The raw dialect does not say when frames were dropped: after a stall,
    // any IDR period may have been cut short.
    let mut pictures = Pictures {
        cut_anywhere: stalled,
        ..Pictures::default()
    };
    // NAL types since the last picture started, to see what precedes an IDR.
    let mut since_picture: Vec<u8> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = |what: String| format!("message {i}: {what}");
        let Some(nal) = msg.strip_prefix(&[0, 0, 0, 1][..]) else {
            return Err(at("does not start with a 4-byte start code".into()));
        };
        if nal.is_empty() {
            return Err(at("an empty NAL unit".into()));
        }
        let t = nal[0] & 0x1f;
        // A raw viewer starts with every SPS, every PPS, then an IDR picture.
        let expected = match since_picture.last() {
            _ if pictures.count > 0 => None,
            None => Some(&[7][..]),
            Some(7) => Some(&[7, 8][..]),
            Some(_) => Some(&[8, 5][..]),
        };
        if let Some(expected) = expected.filter(|e| !e.contains(&t)) {
            return Err(at(format!(
                "NAL type {t} where {expected:?} was due: a raw viewer starts with SPS, PPS, IDR"
            )));
        }
        if !matches!(t, 1..=5 | 7 | 8) {
            return Err(at(format!(
                "NAL type {t}: the raw dialect sends parameter sets and slices only"
            )));
        }
        if let Some(picture) = pictures.nal(nal).map_err(&at)? {
            if picture.idr && !(since_picture.contains(&7) && since_picture.contains(&8)) {
                return Err(at(format!(
                    "IDR picture preceded by {since_picture:?}, not SPS and PPS"
                )));
            }
            since_picture.clear();
        }
        since_picture.push(t);
        seen.annexb.extend_from_slice(msg);
    }
    seen.pictures = pictures.finish()?;
    Ok(seen)
}

/// Decodes an Annex-B (.h264) or MP4 file with ffmpeg; `Err` holds what it said
/// on stderr.
pub fn ffmpeg_decodes(path: &Path) -> Result<(), String> {
    let raw = path.extension().is_some_and(|e| e == "h264");
    // At low priority: decoding one run's captures must not slow the sources of
    // the runs still playing (their pacing decides where viewers join).
    let output = Command::new("nice")
        .args([
            "-n",
            "15",
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
        ])
        .args(["-threads", "1"])
        // The loop filter never reports errors: skipping it halves the decode time
        // of the 1080p captures without hiding any.
        .args(["-skip_loop_filter", "all"])
        .args(if raw { &["-f", "h264"][..] } else { &[] })
        .arg("-i")
        .arg(path)
        // Timestamps as the input has them (an MP4's are 90 kHz, at most a frame
        // apart): not rounded to a guessed frame rate, where two could collide.
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1"])
        .args(["-f", "null", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        let lines: Vec<&str> = stderr.lines().take(6).collect();
        Err(format!("ffmpeg ({}): {}", output.status, lines.join(" | ")))
    }
}

/// A picture's first slice, as far as the checks need it.
#[derive(Debug)]
struct Picture {
    idr: bool,
    size: (u32, u32),
    /// Profile, constraint flags and level of the SPS it uses.
    sps: [u8; 3],
}

/// Follows pictures in decoding order through parameter sets and slice headers.
#[derive(Default)]
struct Pictures {
    ctx: Context,
    count: usize,
    /// frame_num of the last reference picture (PrevRefFrameNum); `None` before the first IDR.
    prev_ref_frame_num: Option<u32>,
    poc: PocState,
    order: OutputOrder,
    /// The current IDR period lost its end (the server dropped frames).
    cut: bool,
    /// Any IDR period may have lost its end.
    cut_anywhere: bool,
}

#[derive(Default)]
struct PocState {
    prev_msb: i64,
    prev_lsb: i64,
    prev_frame_num: u32,
    prev_frame_num_offset: i64,
}

impl Pictures {
    /// The server dropped frames here and resumes at the next IDR picture: what
    /// came of this IDR period is a prefix of it in decoding order.
    fn frames_dropped(&mut self) {
        self.cut = true;
    }

    /// Takes one NAL unit (header byte first); `Some` when it starts a picture.
    fn nal(&mut self, nal: &[u8]) -> Result<Option<Picture>, String> {
        let unit = RefNal::new(nal, &[], true);
        let header = unit
            .header()
            .map_err(|e| format!("bad NAL header {:#04x}: {e:?}", nal[0]))?;
        match nal[0] & 0x1f {
            7 => {
                let sps = SeqParameterSet::from_bits(unit.rbsp_bits())
                    .map_err(|e| format!("unreadable SPS: {e:?}"))?;
                self.ctx.put_seq_param_set(sps);
                Ok(None)
            }
            8 => {
                let pps = PicParameterSet::from_bits(&self.ctx, unit.rbsp_bits())
                    .map_err(|e| format!("unreadable PPS: {e:?}"))?;
                self.ctx.put_pic_param_set(pps);
                Ok(None)
            }
            t @ (1 | 5) => {
                let mut bits = unit.rbsp_bits();
                let (slice, sps, _) = SliceHeader::from_bits(&self.ctx, &mut bits, header, None)
                    .map_err(|e| format!("unreadable slice header: {e:?}"))?;
                if slice.first_mb_in_slice != 0 {
                    return Ok(None);
                }
                let idr = t == 5;
                let n = self.count;
                self.count += 1;
                if n == 0 && !idr {
                    return Err("the first picture is not an IDR picture".into());
                }
                if slice.field_pic != FieldPic::Frame {
                    return Err(format!("picture {n} is a field: not expected here"));
                }
                let ref_idc = header.nal_ref_idc();
                let frame_num = u32::from(slice.frame_num);
                let max_frame_num = 1u32 << sps.log2_max_frame_num();
                if sps.gaps_in_frame_num_value_allowed_flag {
                    return Err("gaps_in_frame_num_value_allowed_flag is set".into());
                }
                if idr {
                    if frame_num != 0 {
                        return Err(format!("IDR picture {n} has frame_num {frame_num}"));
                    }
                } else {
                    let prev = self
                        .prev_ref_frame_num
                        .ok_or_else(|| format!("picture {n} before any IDR"))?;
                    let due = (prev + 1) % max_frame_num;
                    if frame_num != due {
                        return Err(format!(
                            "picture {n}: frame_num {frame_num} where {due} was due (last \
                             reference picture had {prev}): a reference picture is missing"
                        ));
                    }
                }
                let mmco5 = matches!(
                    &slice.dec_ref_pic_marking,
                    Some(DecRefPicMarking::Adaptive(ops))
                        if ops.iter().any(|op| matches!(op, MemoryManagementControlOperation::AllRefPicturesUnused))
                );
                let poc = self
                    .poc
                    .next(sps, &slice, idr, ref_idc, max_frame_num, mmco5);
                if ref_idc != 0 {
                    self.prev_ref_frame_num = Some(if mmco5 { 0 } else { frame_num });
                }
                if let Some(poc) = poc {
                    if idr {
                        self.order.finish(!(self.cut || self.cut_anywhere))?;
                        self.cut = false;
                        self.order.reorder = reorder_depth(sps);
                    }
                    self.order
                        .push(poc)
                        .map_err(|e| format!("picture {n} (frame_num {frame_num}): {e}"))?;
                }
                let size = sps
                    .pixel_dimensions()
                    .map_err(|e| format!("SPS size: {e:?}"))?;
                let codec = [
                    sps.profile_idc.into(),
                    sps.constraint_flags.into(),
                    sps.level_idc,
                ];
                Ok(Some(Picture {
                    idr,
                    size,
                    sps: codec,
                }))
            }
            _ => Ok(None),
        }
    }

    /// The capture ended: checks what is still waiting to be output.
    fn finish(mut self) -> Result<usize, String> {
        if self.count == 0 {
            return Err("no picture at all".into());
        }
        self.order.finish(false)?;
        Ok(self.count)
    }
}

impl PocState {
    /// PicOrderCnt of a frame (8.2.1.1, 8.2.1.3); `None` for POC type 1, which
    /// no encoder of the corpus uses.
    fn next(
        &mut self,
        sps: &SeqParameterSet,
        slice: &SliceHeader,
        idr: bool,
        ref_idc: u8,
        max_frame_num: u32,
        mmco5: bool,
    ) -> Option<i64> {
        let frame_num = u32::from(slice.frame_num);
        let poc = match (&sps.pic_order_cnt, &slice.pic_order_cnt_lsb) {
            (
                PicOrderCntType::TypeZero {
                    log2_max_pic_order_cnt_lsb_minus4,
                },
                Some(lsb),
            ) => {
                let max_lsb = 1i64 << (log2_max_pic_order_cnt_lsb_minus4 + 4);
                let (lsb, delta_bottom) = match lsb {
                    PicOrderCountLsb::Frame(l) => (i64::from(*l), 0),
                    PicOrderCountLsb::FieldsAbsolute {
                        pic_order_cnt_lsb,
                        delta_pic_order_cnt_bottom,
                    } => (
                        i64::from(*pic_order_cnt_lsb),
                        i64::from(*delta_pic_order_cnt_bottom),
                    ),
                    PicOrderCountLsb::FieldsDelta(_) => return None,
                };
                if idr {
                    (self.prev_msb, self.prev_lsb) = (0, 0);
                }
                let msb = if lsb < self.prev_lsb && self.prev_lsb - lsb >= max_lsb / 2 {
                    self.prev_msb + max_lsb
                } else if lsb > self.prev_lsb && lsb - self.prev_lsb > max_lsb / 2 {
                    self.prev_msb - max_lsb
                } else {
                    self.prev_msb
                };
                let top = msb + lsb;
                if ref_idc != 0 {
                    (self.prev_msb, self.prev_lsb) = if mmco5 { (0, 0) } else { (msb, lsb) };
                }
                top.min(top + delta_bottom)
            }
            (PicOrderCntType::TypeTwo, _) => {
                let offset = if idr {
                    0
                } else if self.prev_frame_num > frame_num {
                    self.prev_frame_num_offset + i64::from(max_frame_num)
                } else {
                    self.prev_frame_num_offset
                };
                let count = 2 * (offset + i64::from(frame_num));
                (self.prev_frame_num, self.prev_frame_num_offset) =
                    if mmco5 { (0, 0) } else { (frame_num, offset) };
                if idr {
                    0
                } else if ref_idc == 0 {
                    count - 1
                } else {
                    count
                }
            }
            _ => return None,
        };
        Some(poc)
    }
}

/// Frames a decoder may hold back for reordering (VUI bitstream restrictions;
/// without them: none when POC follows decoding order, else the most the
/// standard allows).
fn reorder_depth(sps: &SeqParameterSet) -> usize {
    let restricted = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.bitstream_restrictions.as_ref())
        .map(|b| b.max_num_reorder_frames as usize);
    match (restricted, &sps.pic_order_cnt) {
        (Some(n), _) => n,
        (None, PicOrderCntType::TypeTwo) => 0,
        (None, _) => 16,
    }
}

/// Output order of one IDR period, as a decoder would bump pictures out: every
/// POC once, rising, by the same step (a picture missing between two outputs
/// shows as a bigger step).
#[derive(Default)]
struct OutputOrder {
    reorder: usize,
    waiting: Vec<i64>,
    seen: HashSet<i64>,
    last: Option<i64>,
    step: Option<i64>,
}

impl OutputOrder {
    fn push(&mut self, poc: i64) -> Result<(), String> {
        if !self.seen.insert(poc) {
            return Err(format!("POC {poc} twice between two IDR pictures"));
        }
        self.waiting.push(poc);
        while self.waiting.len() > self.reorder {
            self.output(true)?;
        }
        Ok(())
    }

    fn output(&mut self, check_step: bool) -> Result<(), String> {
        let (i, &poc) = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| **p)
            .expect("a picture waits");
        self.waiting.swap_remove(i);
        if let Some(last) = self.last {
            if poc <= last {
                return Err(format!(
                    "POC {poc} comes out after POC {last}: it arrived later than the stream's reorder depth ({}) allows",
                    self.reorder
                ));
            }
            let step = poc - last;
            match self.step {
                Some(s) if check_step && s != step => {
                    return Err(format!(
                        "output order jumps from POC {last} to {poc} where steps were {s}: a picture is missing"
                    ))
                }
                None => self.step = Some(step),
                _ => {}
            }
        }
        self.last = Some(poc);
        Ok(())
    }

    /// Ends the IDR period: flushes what waits. When the period was cut short (end
    /// of the capture, frames dropped) the pictures that never came leave holes
    /// among the last ones in output order (B-frames come after the reference
    /// that follows them), so only the order is checked then.
    fn finish(&mut self, complete: bool) -> Result<(), String> {
        while !self.waiting.is_empty() {
            self.output(complete)?;
        }
        *self = OutputOrder::default();
        Ok(())
    }
}
