//! A tiny exp-Golomb reader for the first fields of slice headers and parameter
//! sets. Hand-written because the assembler needs only two or three fields per
//! slice on the hot path, while h264-reader's slice-header parser needs full
//! SPS/PPS context and parses everything.

/// Reads bits from an RBSP (emulation prevention already removed).
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.data.len() * 8 {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Unsigned exp-Golomb `ue(v)`.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut value: u64 = 1;
        for _ in 0..zeros {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from(value - 1).ok()
    }
}

/// Removes emulation-prevention bytes from at most `max` bytes of a NAL payload
/// (header byte excluded), enough for the leading fields we read.
pub(crate) fn rbsp_prefix(nal: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(max.min(nal.len()));
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if out.len() >= max {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 → 0, 1, 2, 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut b = Bits::new(&data);
        assert_eq!(
            (b.ue(), b.ue(), b.ue(), b.ue()),
            (Some(0), Some(1), Some(2), Some(3))
        );
        assert_eq!(Bits::new(&[0, 0, 0, 0, 0]).ue(), None);
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(rbsp_prefix(&[0x65, 0, 0, 3, 1, 7], 16), vec![0, 0, 1, 7]);
    }
}
