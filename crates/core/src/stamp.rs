//! The machine-readable frame stamp of the test pattern (see docs/test-pattern.md):
//! two rows of 40 black/white cells carrying the frame number and capture time.

/// Number of cells per row.
pub const CELLS_PER_ROW: usize = 40;
/// Height of one row of cells in pixels.
pub const ROW_HEIGHT: usize = 16;
/// Total number of bits in a stamp.
pub const BITS: usize = 80;
/// Luma of a 1 cell.
pub const WHITE: u8 = 235;
/// Luma of a 0 cell.
pub const BLACK: u8 = 16;
/// Smallest frame width whose stamp stays readable after compression.
pub const MIN_WIDTH: usize = 320;

/// What a stamp says about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Frame number counted by the source, from 0.
    pub frame: u32,
    /// Low 40 bits of the capture time in microseconds since the Unix epoch.
    pub time_low40: u64,
}

const TIME_MASK: u64 = (1 << 40) - 1;

/// XOR of the bytes, inverted by 0xA5 so that an all-black (or all-white) strip is
/// never mistaken for a stamp.
fn check_byte(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0xA5, |acc, x| acc ^ x)
}

impl Stamp {
    /// A stamp for `frame` captured at `capture_us` (µs since the epoch).
    pub fn new(frame: u32, capture_us: u64) -> Self {
        Stamp {
            frame,
            time_low40: capture_us & TIME_MASK,
        }
    }

    fn bytes(&self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..4].copy_from_slice(&self.frame.to_be_bytes());
        b[4..9].copy_from_slice(&self.time_low40.to_be_bytes()[3..8]);
        b[9] = check_byte(&b[..9]);
        b
    }

    /// The 80 bits, most significant first.
    pub fn bits(&self) -> [bool; BITS] {
        let bytes = self.bytes();
        let mut bits = [false; BITS];
        for (i, bit) in bits.iter_mut().enumerate() {
            *bit = bytes[i / 8] & (0x80 >> (i % 8)) != 0;
        }
        bits
    }

    /// Decodes 80 bits; `None` when the check byte does not match.
    pub fn from_bits(bits: &[bool; BITS]) -> Option<Self> {
        let mut b = [0u8; 10];
        for (i, bit) in bits.iter().enumerate() {
            if *bit {
                b[i / 8] |= 0x80 >> (i % 8);
            }
        }
        if check_byte(&b[..9]) != b[9] {
            return None;
        }
        let frame = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut t = [0u8; 8];
        t[3..8].copy_from_slice(&b[4..9]);
        Some(Stamp {
            frame,
            time_low40: u64::from_be_bytes(t),
        })
    }

    /// The full capture time: the value with these low 40 bits nearest to `now_us`.
    pub fn capture_us_near(&self, now_us: u64) -> u64 {
        let base = now_us & !TIME_MASK;
        let candidates = [
            base.wrapping_sub(1 << 40) | self.time_low40,
            base | self.time_low40,
            base.wrapping_add(1 << 40) | self.time_low40,
        ];
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(now_us))
            .unwrap_or(self.time_low40)
    }

    /// Paints the stamp into a luma plane of `width` x `height` with row `stride`.
    pub fn paint(&self, luma: &mut [u8], width: usize, stride: usize) {
        let cw = width / CELLS_PER_ROW;
        for (i, bit) in self.bits().iter().enumerate() {
            let (row, col) = (i / CELLS_PER_ROW, i % CELLS_PER_ROW);
            let value = if *bit { WHITE } else { BLACK };
            for y in row * ROW_HEIGHT..(row + 1) * ROW_HEIGHT {
                let start = y * stride + col * cw;
                if let Some(line) = luma.get_mut(start..start + cw) {
                    line.fill(value);
                }
            }
        }
    }

    /// Reads a stamp back from a decoded luma plane; `None` if unreadable.
    pub fn read(luma: &[u8], width: usize, stride: usize) -> Option<Self> {
        let cw = width / CELLS_PER_ROW;
        if cw == 0 {
            return None;
        }
        let mut bits = [false; BITS];
        for (i, bit) in bits.iter_mut().enumerate() {
            let (row, col) = (i / CELLS_PER_ROW, i % CELLS_PER_ROW);
            let y = row * ROW_HEIGHT + ROW_HEIGHT / 2;
            let x = col * cw + cw / 2;
            *bit = *luma.get(y * stride + x)? >= 128;
        }
        Self::from_bits(&bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paints_and_reads_back() {
        let (w, h) = (640, 64);
        let mut luma = vec![90u8; w * h];
        let stamp = Stamp::new(123_456, 1_790_000_123_456_789);
        stamp.paint(&mut luma, w, w);
        assert_eq!(Stamp::read(&luma, w, w), Some(stamp));
    }

    #[test]
    fn corrupt_stamp_is_rejected() {
        let (w, h) = (640, 64);
        let mut luma = vec![0u8; w * h];
        Stamp::new(7, 99).paint(&mut luma, w, w);
        // Flip the first cell of row 1.
        let cw = w / CELLS_PER_ROW;
        let v = luma[24 * w + cw / 2];
        for y in 16..32 {
            luma[y * w..y * w + cw].fill(if v > 128 { BLACK } else { WHITE });
        }
        assert_eq!(Stamp::read(&luma, w, w), None);
    }

    #[test]
    fn blank_strips_are_not_stamps() {
        let w = 640;
        assert_eq!(Stamp::read(&vec![BLACK; w * 32], w, w), None);
        assert_eq!(Stamp::read(&vec![WHITE; w * 32], w, w), None);
    }

    #[test]
    fn full_time_is_recovered_near_now() {
        let capture = 1_790_000_123_456_789u64;
        let s = Stamp::new(1, capture);
        assert_eq!(s.capture_us_near(capture + 5_000_000), capture);
        assert_eq!(s.capture_us_near(capture - 5_000_000), capture);
    }
}
