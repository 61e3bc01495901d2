//! Access-unit assembler: groups NAL units into frames (ITU-T H.264 7.4.1.2.3, the
//! practical subset: a new picture starts at an AUD, SPS, PPS, SEI or type 14 to 18
//! unit after a slice, or at a slice with `first_mb_in_slice == 0`). Access units
//! and errors come out in one stream.
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use h264_reader::rbsp::BitRead;

use crate::params::ParsedSps;
use crate::params::{pps_ids, rbsp_reader, sps_id};
use crate::{unit_type, Nal, ParamSets, ParseError, UnitType};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// One frame: every NAL unit of one picture, as Annex-B.
#[derive(Clone, Debug)]
pub struct AccessUnit {
    /// The whole access unit, every NAL unit with a 4-byte start code. A keyframe
    /// starts with (an AUD if present, then) the SPS and PPS in force.
    pub data: Bytes,
    /// Byte range of each NAL unit in `data`, start code included.
    pub nals: Vec<Range<u32>>,
    /// Contains an IDR slice.
    pub keyframe: bool,
    /// Parameter sets in force: the same `Arc` until they change.
    pub params: Arc<ParamSets>,
    /// Caller-supplied time of the access unit's first NAL unit.
    pub timestamp_us: u64,
}

impl AccessUnit {
    /// Checks the structure every access unit must have: contiguous NAL ranges each
    /// starting with a 4-byte start code, covering `data`; a keyframe holds an IDR
    /// slice and starts with (one AUD, then) SPS and PPS. Used by tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut expect = 0u32;
        for r in &self.nals {
            if r.start != expect || r.end <= r.start + 4 {
                return Err(format!("NAL ranges not contiguous at {r:?}"));
            }
            if self.data.get(r.start as usize..r.start as usize + 4) != Some(&START_CODE[..]) {
                return Err(format!("no start code at {}", r.start));
            }
            expect = r.end;
        }
        if expect as usize != self.data.len() {
            return Err("NAL ranges do not cover the data".into());
        }
        if self.keyframe {
            let types: Vec<_> = (0..self.nals.len())
                .filter_map(|i| self.nal_type(i))
                .collect();
            let first = usize::from(types.first() == Some(&UnitType::AccessUnitDelimiter));
            let sps = types[first..]
                .iter()
                .take_while(|t| **t == UnitType::SeqParameterSet)
                .count();
            let pps = types[first + sps..]
                .iter()
                .take_while(|t| **t == UnitType::PicParameterSet)
                .count();
            if sps == 0 || pps == 0 {
                return Err(format!("keyframe does not start with SPS, PPS: {types:?}"));
            }
            if !types.contains(&UnitType::SliceLayerWithoutPartitioningIdr) {
                return Err(format!("keyframe without IDR slice: {types:?}"));
            }
        }
        Ok(())
    }

    /// NAL unit `i` with its start code (zero-copy).
    pub fn nal(&self, i: usize) -> Bytes {
        self.nals
            .get(i)
            .map(|r| self.data.slice(r.start as usize..r.end as usize))
            .unwrap_or_default()
    }

    /// Type of NAL unit `i`.
    pub fn nal_type(&self, i: usize) -> Option<UnitType> {
        let r = self.nals.get(i)?;
        self.data
            .get(r.start as usize + START_CODE.len())
            .map(|h| unit_type(*h))
    }
}

/// Counters of the assembler.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Access units emitted.
    pub access_units: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Access units dropped because no SPS, PPS and IDR had been seen yet.
    pub dropped_before_keyframe: u64,
    /// B-slices seen (Baseline decoders cannot play them).
    pub b_slices: u64,
    /// Slices dropped because their header could not be read.
    pub truncated: u64,
    /// Times the parameter sets changed.
    pub param_changes: u64,
    /// SPS NAL units parsed: each new one once, whether or not it becomes active.
    pub sps_parsed: u64,
    /// Slices that began an access unit but were not its first (first_mb_in_slice
    /// not 0): the rest of a picture whose first part was taken as complete.
    pub orphan_slices: u64,
    /// All errors.
    pub errors: u64,
}

/// The assembler.
#[derive(Debug, Default)]
pub struct AuAssembler {
    current: Vec<Nal>,
    current_has_vcl: bool,
    current_keyframe: bool,
    current_ts: u64,
    /// The PPS the current access unit's first slice names.
    current_pps: Option<u32>,
    sps: BTreeMap<u32, Bytes>,
    /// Each of `sps`, parsed once when it came.
    sps_parsed: BTreeMap<u32, ParsedSps>,
    pps: BTreeMap<u32, Bytes>,
    /// The SPS the pictures use: the one the last keyframe's PPS names.
    active_sps: Option<u32>,
    params_dirty: bool,
    params: Option<Arc<ParamSets>>,
    seen_keyframe: bool,
    stats: AssemblerStats,
}

/// What the first fields of a slice header say.
struct SliceStart {
    first_mb: u32,
    slice_type: u32,
    pps_id: u32,
}

fn slice_start(nal: &[u8]) -> Option<SliceStart> {
    let mut r = rbsp_reader(nal);
    let first_mb = r.read_ue("first_mb_in_slice").ok()?;
    let slice_type = r.read_ue("slice_type").ok().filter(|t| *t <= 9)?;
    let pps_id = r
        .read_ue("pic_parameter_set_id")
        .ok()
        .filter(|id| *id < 256)?;
    Some(SliceStart {
        first_mb,
        slice_type,
        pps_id,
    })
}

/// Whether a NAL unit beginning with `prefix` opens a new access unit after one
/// with a picture (H.264 7.4.1.2.3): `None` until enough of it is there to tell.
fn opens_access_unit(prefix: &[u8]) -> Option<bool> {
    let header = *prefix.first()?;
    if header & 0x80 != 0 {
        return Some(false); // forbidden_zero_bit: the parser drops it
    }
    match unit_type(header) {
        UnitType::AccessUnitDelimiter
        | UnitType::SeqParameterSet
        | UnitType::PicParameterSet
        | UnitType::SEI => Some(true),
        UnitType::PrefixNALUnit
        | UnitType::SubsetSeqParameterSet
        | UnitType::DepthParameterSet
        | UnitType::Reserved(17 | 18) => Some(true),
        UnitType::SliceLayerWithoutPartitioningNonIdr
        | UnitType::SliceLayerWithoutPartitioningIdr => {
            // first_mb_in_slice 0 opens a new picture; a ue(v) of 0 is one 1 bit.
            let second = *prefix.get(1)?;
            Some(second & 0x80 != 0)
        }
        _ => Some(false),
    }
}

/// Largest SPS or PPS kept. Real ones are tens to a few hundred bytes (scaling
/// lists included); ids bound how many there are (32 SPS, 256 PPS), this bounds
/// what a hostile stream can make the assembler hold and resend with every keyframe.
pub const MAX_PARAM_SET_BYTES: usize = 4096;

impl AuAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    fn error(&mut self, e: ParseError, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        self.stats.errors += 1;
        out.push(Err(e));
    }

    /// Feeds one NAL unit that arrived at `timestamp_us`; the access unit it completes
    /// and the errors it reveals are appended to `out`, in stream order.
    pub fn push(
        &mut self,
        nal: Nal,
        timestamp_us: u64,
        out: &mut Vec<Result<AccessUnit, ParseError>>,
    ) {
        let Some(kind) = nal.nal_type() else { return };
        match kind {
            UnitType::SliceLayerWithoutPartitioningNonIdr
            | UnitType::SliceLayerWithoutPartitioningIdr
            | UnitType::SliceDataPartitionALayer
            | UnitType::SliceDataPartitionBLayer
            | UnitType::SliceDataPartitionCLayer => {
                // Partitions B and C (types 3, 4) carry no slice header.
                let has_header = !matches!(
                    kind,
                    UnitType::SliceDataPartitionBLayer | UnitType::SliceDataPartitionCLayer
                );
                if has_header {
                    let Some(start) = slice_start(&nal.0) else {
                        self.stats.truncated += 1;
                        let what = if kind == UnitType::SliceLayerWithoutPartitioningIdr {
                            "IDR slice"
                        } else {
                            "slice"
                        };
                        self.error(
                            ParseError::Truncated {
                                what,
                                len: nal.0.len(),
                            },
                            out,
                        );
                        return;
                    };
                    if start.first_mb == 0 && self.current_has_vcl {
                        self.finish(out);
                    } else if start.first_mb != 0 && !self.current_has_vcl {
                        self.stats.orphan_slices += 1;
                    }
                    if start.slice_type % 5 == 1 {
                        self.stats.b_slices += 1;
                    }
                    if !self.current_has_vcl {
                        self.current_pps = Some(start.pps_id);
                    }
                }
                if self.current.is_empty() {
                    self.current_ts = timestamp_us;
                }
                self.current_keyframe |= kind == UnitType::SliceLayerWithoutPartitioningIdr;
                self.current_has_vcl = true;
                self.current.push(nal);
            }
            UnitType::FillerData => {} // nothing to keep
            _ => {
                let starts_new = matches!(
                    kind,
                    UnitType::AccessUnitDelimiter
                        | UnitType::SeqParameterSet
                        | UnitType::PicParameterSet
                        | UnitType::SEI
                ) || matches!(
                    kind,
                    UnitType::PrefixNALUnit
                        | UnitType::SubsetSeqParameterSet
                        | UnitType::DepthParameterSet
                        | UnitType::Reserved(17 | 18)
                );
                if starts_new && self.current_has_vcl {
                    self.finish(out);
                } else if kind == UnitType::AccessUnitDelimiter && !self.current.is_empty() {
                    // An AUD always opens an access unit: what came before it without
                    // a picture was an empty one (parameter sets are remembered anyway).
                    self.current.clear();
                    self.current_pps = None;
                }
                match kind {
                    UnitType::SeqParameterSet => self.remember_sps(&nal, out),
                    UnitType::PicParameterSet => self.remember_pps(&nal, out),
                    _ => {}
                }
                if self.current.is_empty() {
                    self.current_ts = timestamp_us;
                }
                self.current.push(nal);
            }
        }
    }

    fn remember_sps(&mut self, nal: &Nal, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        if self.sps.values().any(|known| known == &nal.0) {
            return; // sent again, as cameras do before every keyframe
        }
        let Some(id) = sps_id(&nal.0) else {
            self.error(ParseError::BadParameterSet("SPS id unreadable".into()), out);
            return;
        };
        if nal.0.len() > MAX_PARAM_SET_BYTES {
            let what = format!("SPS {id} of {} bytes", nal.0.len());
            self.error(ParseError::BadParameterSet(what), out);
            return;
        }
        // A bad SPS is refused here, so every SPS kept (and resent) can be read;
        // what is read is kept, so a change of active SPS parses nothing again.
        self.stats.sps_parsed += 1;
        match ParsedSps::parse(&nal.0) {
            Ok(parsed) => self.sps_parsed.insert(id, parsed),
            Err(e) => {
                self.error(e, out);
                return;
            }
        };
        self.sps.insert(id, nal.0.clone());
        self.params_dirty = true;
    }

    fn remember_pps(&mut self, nal: &Nal, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        if self.pps.values().any(|known| known == &nal.0) {
            return;
        }
        let Some((id, _)) = pps_ids(&nal.0) else {
            self.error(
                ParseError::BadParameterSet("PPS ids unreadable".into()),
                out,
            );
            return;
        };
        if nal.0.len() > MAX_PARAM_SET_BYTES {
            let what = format!("PPS {id} of {} bytes", nal.0.len());
            self.error(ParseError::BadParameterSet(what), out);
            return;
        }
        self.pps.insert(id, nal.0.clone());
        self.params_dirty = true;
    }

    /// At a keyframe: the active SPS is the one its first slice's PPS names (it can
    /// change only at an IDR picture); the lowest id where that is unknown.
    fn find_active_sps(&mut self) {
        let named = self
            .current_pps
            .and_then(|id| self.pps.get(&id))
            .and_then(|pps| pps_ids(pps))
            .map(|(_, sps)| sps)
            .filter(|id| self.sps.contains_key(id));
        let active = named.or_else(|| self.sps.keys().next().copied());
        if active != self.active_sps {
            self.active_sps = active;
            self.params_dirty = true;
        }
    }

    /// Rebuilds the parameter sets after a change.
    fn refresh_params(&mut self, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        if !self.params_dirty {
            return;
        }
        self.params_dirty = false;
        let Some(active_id) = self.active_sps.or_else(|| self.sps.keys().next().copied()) else {
            return;
        };
        if self.pps.is_empty() {
            self.params_dirty = true; // wait for a PPS
            return;
        }
        let active = self.sps.keys().position(|id| *id == active_id).unwrap_or(0);
        let sps: Vec<Bytes> = self.sps.values().cloned().collect();
        let Some(ParsedSps { info, details, .. }) = self.sps_parsed.get(&active_id).cloned() else {
            let what = format!("SPS {active_id} was not parsed");
            self.error(ParseError::BadParameterSet(what), out);
            return;
        };
        let pps: Vec<Bytes> = self.pps.values().cloned().collect();
        let parsed = self.sps_parsed.values().map(|p| p.sps.clone()).collect();
        let new = ParamSets {
            sps,
            pps,
            active,
            info,
            details,
            parsed,
        };
        if self.params.as_deref() != Some(&new) {
            if self.params.is_some() {
                self.stats.param_changes += 1;
            }
            self.params = Some(Arc::new(new));
        }
    }

    /// The next NAL unit begins with `prefix` (its header byte first; the rest still
    /// to come): where that alone says it opens a new access unit, the one in
    /// progress is complete and emitted now, a whole NAL unit earlier.
    pub fn upcoming(&mut self, prefix: &[u8], out: &mut Vec<Result<AccessUnit, ParseError>>) {
        if self.current_has_vcl && opens_access_unit(prefix) == Some(true) {
            self.finish(out);
        }
    }

    /// The input ended inside the access unit in progress (a writer that died): it
    /// is dropped, since its picture may lack slices. Returns its NAL units' count.
    pub fn discard(&mut self) -> usize {
        let dropped = self.current.len();
        self.current.clear();
        self.current_has_vcl = false;
        self.current_keyframe = false;
        self.current_pps = None;
        dropped
    }

    /// A break in the stream (a file starting over): the access unit in progress
    /// is dropped, and what follows is emitted from its first keyframe on, since
    /// pictures before it would refer to pictures from before the break. The
    /// parameter sets stay.
    pub fn await_keyframe(&mut self) {
        self.discard();
        self.seen_keyframe = false;
    }

    /// The caller knows the current access unit is complete: emit it now.
    pub fn end_of_access_unit(&mut self, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        if self.current_has_vcl {
            self.finish(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Result<AccessUnit, ParseError>>) {
        let nals = std::mem::take(&mut self.current);
        let keyframe = std::mem::take(&mut self.current_keyframe);
        self.current_has_vcl = false;
        if keyframe {
            self.find_active_sps();
        }
        self.current_pps = None;
        self.refresh_params(out);
        let Some(params) = self.params.clone() else {
            self.stats.dropped_before_keyframe += 1;
            return;
        };
        if keyframe {
            self.seen_keyframe = true;
        } else if !self.seen_keyframe {
            self.stats.dropped_before_keyframe += 1;
            return;
        }
        let mut data =
            BytesMut::with_capacity(nals.iter().map(|n| n.0.len() + 4).sum::<usize>() + 64);
        let mut ranges = Vec::with_capacity(nals.len() + 2);
        let mut put = |data: &mut BytesMut, nal: &[u8]| {
            let start = data.len() as u32;
            data.put_slice(&START_CODE);
            data.put_slice(nal);
            ranges.push(start..data.len() as u32);
        };
        if keyframe {
            // AUD first if present, then every parameter set in force (a viewer
            // joining here needs each SPS and PPS the pictures may name), then the
            // rest without the parameter sets the access unit carried itself.
            let (aud, rest): (Vec<&Nal>, Vec<&Nal>) = nals
                .iter()
                .partition(|n| n.nal_type() == Some(UnitType::AccessUnitDelimiter));
            for n in aud {
                put(&mut data, &n.0);
            }
            for p in params.sps.iter().chain(&params.pps) {
                put(&mut data, p);
            }
            for n in rest {
                if !matches!(
                    n.nal_type(),
                    Some(UnitType::SeqParameterSet | UnitType::PicParameterSet)
                ) {
                    put(&mut data, &n.0);
                }
            }
            self.stats.keyframes += 1;
        } else {
            for n in &nals {
                put(&mut data, &n.0);
            }
        }
        self.stats.access_units += 1;
        let au = AccessUnit {
            data: data.freeze(),
            nals: ranges,
            keyframe,
            params,
            timestamp_us: self.current_ts,
        };
        debug_assert_eq!(au.check_invariants(), Ok(()));
        out.push(Ok(au));
    }

    /// Parameter sets seen so far.
    pub fn params(&self) -> Option<&Arc<ParamSets>> {
        self.params.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &AssemblerStats {
        &self.stats
    }
}
