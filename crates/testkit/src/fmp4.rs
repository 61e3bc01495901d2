//! Reading the fMP4 boxes nalcast writes, as far as tests need them: find a box,
//! and a one-sample fragment's decode time and duration.

/// The body of the first box of type `kind` in `data`, looking inside `moof` and
/// `traf` (boxes nest).
pub fn find_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().ok()?) as usize;
        if size < 8 || at + size > data.len() {
            return None;
        }
        let body = &data[at + 8..at + size];
        if &data[at + 4..at + 8] == kind {
            return Some(body);
        }
        if matches!(&data[at + 4..at + 8], b"moof" | b"traf") {
            if let Some(found) = find_box(body, kind) {
                return Some(found);
            }
        }
        at += size;
    }
    None
}

/// A one-sample fragment's decode time (tfdt) and its sample's duration (trun),
/// in the track's timescale; an error names what is missing.
pub fn fragment_timing(fragment: &[u8]) -> Result<(u64, u64), String> {
    let be32 = |b: &[u8]| {
        b.get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let tfdt = find_box(fragment, b"tfdt").ok_or("no tfdt box")?;
    let decode = match tfdt.first() {
        Some(1) => tfdt
            .get(4..12)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
            .ok_or("short tfdt")?,
        _ => u64::from(be32(tfdt.get(4..).unwrap_or_default()).ok_or("short tfdt")?),
    };
    let trun = find_box(fragment, b"trun").ok_or("no trun box")?;
    let flags = be32(trun).ok_or("short trun")? & 0xff_ffff;
    let samples = be32(trun.get(4..).unwrap_or_default()).ok_or("short trun")?;
    if samples != 1 {
        return Err(format!("{samples} samples in one fragment"));
    }
    if flags & 0x100 == 0 {
        return Err("the sample's duration is not in trun".into());
    }
    let mut at = 8;
    if flags & 0x1 != 0 {
        at += 4; // data offset
    }
    if flags & 0x4 != 0 {
        at += 4; // first sample flags
    }
    let duration = be32(trun.get(at..).unwrap_or_default()).ok_or("short trun")?;
    Ok((decode, u64::from(duration)))
}
