//! Draws the test picture into I420 planes: moving colour bars, a bouncing box, a
//! readable clock and frame number, and the machine-readable stamp.
use nalcast_core::stamp::{self, Stamp};

/// A 5x7 pixel font for the clock line; each glyph is 7 rows of 5 bits.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        '#' => [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a],
        'x' => [0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11],
        _ => [0; 7],
    }
}

/// (Y, U, V) of the colour bars: white, yellow, cyan, green, magenta, red, blue, grey.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (100, 128, 128),
];

/// One I420 picture with its planes.
pub struct Picture {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// Luma plane, `width * height`.
    pub y: Vec<u8>,
    /// Cb plane, quarter size.
    pub u: Vec<u8>,
    /// Cr plane, quarter size.
    pub v: Vec<u8>,
}

impl Picture {
    /// A black picture; `width` and `height` must be even.
    pub fn new(width: usize, height: usize) -> Self {
        let c = (width / 2) * (height / 2);
        Picture {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; c],
            v: vec![128; c],
        }
    }

    /// Draws frame `frame` captured at `capture_us`.
    pub fn draw(&mut self, frame: u32, capture_us: u64) {
        let (w, h) = (self.width, self.height);
        let cw = w / 2;
        // Colour bars scrolling left by 4 pixels a frame.
        let bar_w = (w / BARS.len()).max(2);
        let shift = (frame as usize * 4) % w;
        let bar_at = |x: usize| BARS[((x + shift) % w / bar_w) % BARS.len()];
        let luma_row: Vec<u8> = (0..w).map(|x| bar_at(x).0).collect();
        for row in self.y.chunks_exact_mut(w) {
            row.copy_from_slice(&luma_row);
        }
        let (u_row, v_row): (Vec<u8>, Vec<u8>) =
            (0..cw).map(|x| (bar_at(2 * x).1, bar_at(2 * x).2)).unzip();
        for (u, v) in self.u.chunks_exact_mut(cw).zip(self.v.chunks_exact_mut(cw)) {
            u.copy_from_slice(&u_row);
            v.copy_from_slice(&v_row);
        }
        // A white box bouncing across the lower half.
        let size = (h / 6).max(8) & !1;
        let span_x = w.saturating_sub(size).max(1);
        let span_y = (h / 2).saturating_sub(size).max(1);
        let t = frame as usize * 6;
        let bx = bounce(t, span_x) & !1;
        let by = (h / 2 + bounce(t / 2, span_y)).min(h - size) & !1;
        self.fill(bx, by, size, size, (235, 128, 128));
        // A band of 8x8 blocks of fresh random grey every frame: without it the
        // picture compresses to almost nothing and the stream would be far lighter
        // than a camera's. Flat blocks keep it cheap enough for the rate control.
        let band = (h / 6) & !7;
        let mut seed = u64::from(frame).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for by in (h - band..h).step_by(8) {
            for bx in (0..w).step_by(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let v = 40 + (seed % 160) as u8;
                for row in by..(by + 8).min(h) {
                    let end = (bx + 8).min(w);
                    self.y[row * w + bx..row * w + end].fill(v);
                }
            }
        }
        // Clock line below the stamp.
        let secs = capture_us / 1_000_000;
        let text = format!(
            "{:02}:{:02}:{:02}.{:03} #{} {}x{}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (capture_us / 1000) % 1000,
            frame,
            w,
            h
        );
        let scale = (w / 320).max(2);
        let y0 = 2 * stamp::ROW_HEIGHT + 8;
        self.fill(0, y0 - 4, w, 7 * scale + 8, (16, 128, 128));
        self.text(8, y0, scale, &text);
        Stamp::new(frame, capture_us).paint(&mut self.y, w, w);
        let stamp_rows = 2 * stamp::ROW_HEIGHT;
        self.u[..cw * stamp_rows / 2].fill(128);
        self.v[..cw * stamp_rows / 2].fill(128);
    }

    fn fill(&mut self, x: usize, y: usize, fw: usize, fh: usize, (yv, uv, vv): (u8, u8, u8)) {
        let (w, h) = (self.width, self.height);
        let (x1, y1) = ((x + fw).min(w), (y + fh).min(h));
        for row in y..y1 {
            self.y[row * w + x..row * w + x1].fill(yv);
        }
        let cw = w / 2;
        for row in y / 2..y1 / 2 {
            self.u[row * cw + x / 2..row * cw + x1 / 2].fill(uv);
            self.v[row * cw + x / 2..row * cw + x1 / 2].fill(vv);
        }
    }

    fn text(&mut self, x0: usize, y0: usize, scale: usize, text: &str) {
        let w = self.width;
        for (i, c) in text.chars().enumerate() {
            let gx = x0 + i * 6 * scale;
            for (r, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    let (px, py) = (gx + col * scale, y0 + r * scale);
                    if px + scale > w || py + scale > self.height {
                        continue;
                    }
                    for yy in py..py + scale {
                        self.y[yy * w + px..yy * w + px + scale].fill(235);
                    }
                }
            }
        }
    }
}

/// A triangle wave over 0..=span.
fn bounce(t: usize, span: usize) -> usize {
    let p = t % (2 * span);
    if p < span {
        p
    } else {
        2 * span - p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_picture_carries_a_readable_stamp() {
        for (w, h) in [(320, 240), (640, 360), (1280, 720)] {
            let mut p = Picture::new(w, h);
            p.draw(4242, 1_790_000_000_123_456);
            let s = Stamp::read(&p.y, w, w).expect("stamp readable");
            assert_eq!(s.frame, 4242);
            assert_eq!(
                s.capture_us_near(1_790_000_000_000_000),
                1_790_000_000_123_456
            );
        }
    }

    #[test]
    fn pictures_move() {
        let mut a = Picture::new(320, 240);
        a.draw(1, 0);
        let mut b = Picture::new(320, 240);
        b.draw(2, 0);
        assert_ne!(a.y[120 * 320..], b.y[120 * 320..]);
    }
}
