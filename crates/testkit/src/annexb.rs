//! Annex-B byte streams: split into NAL units, and written from them.

/// The NAL units of an Annex-B buffer (header byte first, no start code, trailing
/// zero bytes of the next start code removed). Bytes before the first start code
/// are skipped.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let mut end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
            while end > start && data[end - 1] == 0 {
                end -= 1;
            }
            &data[start..end]
        })
        .filter(|nal| !nal.is_empty())
        .collect()
}

/// An Annex-B buffer of `nals`, each behind a 4-byte start code.
pub fn join<N: AsRef<[u8]>>(nals: &[N]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal.as_ref());
    }
    out
}

/// The NAL unit types in an Annex-B buffer.
pub fn nal_types(data: &[u8]) -> Vec<u8> {
    split(data).iter().map(|nal| nal[0] & 0x1f).collect()
}

/// The NAL unit type of one message of the raw protocol (one NAL unit behind a
/// 4-byte start code, as nalcast sends it).
pub fn raw_nal_type(msg: &[u8]) -> u8 {
    assert!(
        msg.len() > 4 && msg[..4] == [0, 0, 0, 1],
        "a raw message is a 4-byte start code and a NAL unit: {:02x?}",
        &msg[..msg.len().min(8)]
    );
    msg[4] & 0x1f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_undoes_join_with_either_start_code_and_garbage_before() {
        let nals: Vec<Vec<u8>> = vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 0, 4, 5]];
        assert_eq!(split(&join(&nals)), nals);
        let three = [&b"junk"[..], &[0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x41, 7, 0, 0]].concat();
        assert_eq!(split(&three), [&[0x09, 0x10][..], &[0x41, 7]]);
        assert_eq!(nal_types(&three), [9, 1]);
        assert_eq!(raw_nal_type(&[0, 0, 0, 1, 0x65, 1]), 5);
    }
}
