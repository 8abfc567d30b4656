//! The built-in test pattern: colour bars, a scrolling luma ramp with one sharp edge, a moving
//! box with hard borders, and the frame number burned in, rendered straight into planar YCbCr
//! (no RGB round trip). A frame depends only on its number, size and subsampling, so a test
//! can regenerate exactly what was sent.
//!
//! Layout, top to bottom: 8 bars over the top 2/3 (white, yellow, cyan, green, magenta, red,
//! blue, black), the ramp and the moving box over the next 1/6, and the 8-digit frame number
//! in white on black over the last 1/6.

use super::{chroma_size, yuv_len, CaptureError, FrameSource, Layout, RawFrame};
use crate::format::Subsampling;

/// The bar colours, left to right, as RGB.
pub const BARS: [[u8; 3]; 8] =
    [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]];

/// Full-range (JFIF) RGB → YCbCr, as libjpeg does it.
pub fn rgb_to_ycbcr([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    [clamp(y), clamp(cb), clamp(cr)]
}

/// Full-range (JFIF) YCbCr → RGB.
pub fn ycbcr_to_rgb([y, cb, cr]: [u8; 3]) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    [clamp(y + 1.402 * cr), clamp(y - 0.344_136 * cb - 0.714_136 * cr), clamp(y + 1.772 * cb)]
}

fn clamp(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Converts a tightly packed planar frame to interleaved RGB, upsampling chroma the way
/// libjpeg-turbo's default ("fancy", triangle-filter) upsampling does, so that it is the
/// reference a decoded frame should match up to compression loss.
pub fn planar_to_rgb(data: &[u8], width: u32, height: u32, sub: Subsampling) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = chroma_size(width, height, sub);
    let (yp, rest) = data.split_at(w * h);
    let mut out = Vec::with_capacity(w * h * 3);
    if sub == Subsampling::Gray {
        for &luma in yp {
            out.extend_from_slice(&[luma; 3]);
        }
        return out;
    }
    let (cbp, crp) = rest.split_at(cw * ch);
    let cb = upsample(cbp, cw, ch, w, h, sub);
    let cr = upsample(crp, cw, ch, w, h, sub);
    for i in 0..w * h {
        out.extend_from_slice(&ycbcr_to_rgb([yp[i], cb[i], cr[i]]));
    }
    out
}

/// libjpeg's h2v1/h2v2 fancy upsampling (jdsample.c), cropped to `w`x`h`.
fn upsample(plane: &[u8], cw: usize, ch: usize, w: usize, h: usize, sub: Subsampling) -> Vec<u8> {
    let at = |x: usize, y: usize| u32::from(plane[y * cw + x]);
    // One output row from two weighted input rows (`near` 3/4, `far` 1/4), or from a single
    // row when there is no vertical subsampling.
    let row = |near: usize, far: Option<usize>, out: &mut Vec<u8>| {
        let start = out.len();
        let sum = |x: usize| match far {
            Some(f) => at(x, near) * 3 + at(x, f),
            None => at(x, near) * 4,
        };
        if cw == 1 {
            let v = ((sum(0) * 4 + 8) >> 4) as u8;
            out.extend_from_slice(&[v, v]);
        } else {
            for x in 0..cw {
                let this = sum(x);
                let left = if x == 0 { this } else { sum(x - 1) };
                let right = if x + 1 == cw { this } else { sum(x + 1) };
                let a = if x == 0 { (this * 4 + 8) >> 4 } else { (this * 3 + left + 8) >> 4 };
                let b = if x + 1 == cw { (this * 4 + 7) >> 4 } else { (this * 3 + right + 7) >> 4 };
                out.extend_from_slice(&[a as u8, b as u8]);
            }
        }
        out.truncate(start + w.min(2 * cw));
        out.resize(start + w, *out.last().unwrap_or(&128));
    };
    let mut out = Vec::with_capacity(w * h);
    match sub {
        Subsampling::S444 => return plane.to_vec(),
        Subsampling::S422 => {
            // h2v1: (3 * this + neighbour + 1 or 2) >> 2, which equals the h2v2 formula with
            // both rows the same.
            for y in 0..h {
                row(y, None, &mut out);
            }
        }
        Subsampling::S420 => {
            for y in 0..h {
                let near = (y / 2).min(ch - 1);
                let far = if y % 2 == 0 { near.saturating_sub(1) } else { (near + 1).min(ch - 1) };
                row(near, Some(far), &mut out);
            }
        }
        Subsampling::Gray => unreachable!("gray has no chroma"),
    }
    out
}

/// 5x7 glyphs for 0-9, one byte per row, bit 4 is the leftmost column.
const DIGITS: [[u8; 7]; 10] = [
    [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
    [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
    [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
    [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
    [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
    [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
    [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
    [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
    [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
];

/// Renders test-pattern frames of one size and subsampling.
pub struct TestPattern {
    width: u32,
    height: u32,
    sub: Subsampling,
    /// The static parts (bars, black band), rendered once.
    background: Vec<u8>,
    /// Row offsets of the bands.
    ramp_top: usize,
    text_top: usize,
}

impl TestPattern {
    pub fn new(width: u32, height: u32, sub: Subsampling) -> Self {
        let (w, h) = (width as usize, height as usize);
        let ramp_top = h * 2 / 3;
        let text_top = h * 5 / 6;
        let mut bg = vec![0u8; yuv_len(width, height, sub)];
        let bar_of = |x: usize| (x * BARS.len() / w).min(BARS.len() - 1);
        let bar_yuv: Vec<[u8; 3]> = BARS.iter().map(|c| rgb_to_ycbcr(*c)).collect();
        for y in 0..ramp_top {
            for x in 0..w {
                bg[y * w + x] = bar_yuv[bar_of(x)][0];
            }
        }
        let (cw, ch) = chroma_size(width, height, sub);
        if cw > 0 {
            let (sx, sy) = (w.div_ceil(cw), h.div_ceil(ch));
            let (cb, cr) = bg[w * h..].split_at_mut(cw * ch);
            for cy in 0..ch {
                for cx in 0..cw {
                    let i = cy * cw + cx;
                    // A chroma sample belongs to the bars if its top-left luma sample does.
                    if cy * sy < ramp_top {
                        let c = bar_yuv[bar_of(cx * sx)];
                        cb[i] = c[1];
                        cr[i] = c[2];
                    } else {
                        cb[i] = 128;
                        cr[i] = 128;
                    }
                }
            }
        }
        TestPattern { width, height, sub, background: bg, ramp_top, text_top }
    }

    /// Writes frame number `seq` into `out` (resized to the frame length).
    pub fn render(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.background);
        self.draw_moving_parts(seq, out);
    }

    /// Like [`render`](Self::render), for a buffer that already holds a frame this pattern
    /// rendered: only the bands that move are redrawn (the bars and chroma never change).
    fn render_over(&self, seq: u64, out: &mut [u8]) {
        let (w, top) = (self.width as usize, self.ramp_top * self.width as usize);
        out[top..w * self.height as usize].copy_from_slice(&self.background[top..w * self.height as usize]);
        self.draw_moving_parts(seq, out);
    }

    /// Draws the parts of frame `seq` that change from frame to frame (the ramp, the box and
    /// the frame number) into the luma plane of `out`.
    fn draw_moving_parts(&self, seq: u64, out: &mut [u8]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let luma = &mut out[..w * h];
        self.draw_ramp(seq, luma);
        self.draw_box(seq, luma);
        self.draw_number(seq, luma);
    }

    /// Scrolling ramp: one row computed, copied down the band.
    fn draw_ramp(&self, seq: u64, luma: &mut [u8]) {
        let w = self.width as usize;
        let shift = (seq * 3 % 256) as usize;
        let band = &mut luma[self.ramp_top * w..self.text_top * w];
        if let Some(first) = band.get_mut(..w) {
            for (x, v) in first.iter_mut().enumerate() {
                *v = ((x * 256 / w + shift) % 256) as u8;
            }
        }
        for y in 1..(self.text_top - self.ramp_top) {
            band.copy_within(0..w, y * w);
        }
    }

    /// Moving box with a black border, inside the ramp band.
    fn draw_box(&self, seq: u64, luma: &mut [u8]) {
        let w = self.width as usize;
        let band_h = self.text_top - self.ramp_top;
        let side = (band_h * 3 / 5).min(w);
        if side < 2 {
            return;
        }
        let step = (w / 90).max(1);
        let span = (w - side).max(1);
        let bx = (seq as usize).wrapping_mul(step) % span;
        let by = self.ramp_top + (band_h - side) / 2;
        let border = (side / 10).max(1);
        for y in 0..side {
            let row = &mut luma[(by + y) * w + bx..(by + y) * w + bx + side];
            for (x, v) in row.iter_mut().enumerate() {
                let edge = x < border || y < border || x >= side - border || y >= side - border;
                *v = if edge { 0 } else { 255 };
            }
        }
    }

    /// Frame number, 8 digits, white on the black band.
    fn draw_number(&self, seq: u64, luma: &mut [u8]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let text_h = h - self.text_top;
        let scale = (text_h * 3 / 5 / 7).max(1);
        let mut digits = [b'0'; 8];
        let mut n = seq % 100_000_000;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let x0 = scale * 2;
        let y0 = self.text_top + (text_h.saturating_sub(7 * scale)) / 2;
        for (i, &d) in digits.iter().enumerate() {
            let glyph = &DIGITS[usize::from(d - b'0')];
            let gx = x0 + i * 6 * scale;
            for (gy, bits) in glyph.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        let y = y0 + gy * scale + dy;
                        let x = gx + col * scale;
                        if y < h && x + scale <= w {
                            luma[y * w + x..y * w + x + scale].fill(255);
                        }
                    }
                }
            }
        }
    }

    /// The RGB image of frame `seq`, for tests that compare a decoded frame with the source.
    pub fn render_rgb(&self, seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        self.render(seq, &mut buf);
        planar_to_rgb(&buf, self.width, self.height, self.sub)
    }
}

/// The test pattern as a [`FrameSource`]. Frame numbers count from 0.
pub struct PatternSource {
    pattern: TestPattern,
    next: u64,
}

impl PatternSource {
    pub fn new(width: u32, height: u32, sub: Subsampling) -> Self {
        PatternSource { pattern: TestPattern::new(width, height, sub), next: 0 }
    }
}

impl FrameSource for PatternSource {
    fn describe(&self) -> String {
        format!("test pattern {}x{} {}", self.pattern.width, self.pattern.height, self.pattern.sub)
    }

    fn size(&self) -> (u32, u32) {
        (self.pattern.width, self.pattern.height)
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let p = &self.pattern;
        let ours = frame.layout == Layout::Yuv(p.sub)
            && (frame.width, frame.height) == (p.width, p.height)
            && frame.data.len() == p.background.len();
        if ours {
            // A recycled buffer of this source: the static parts are already there.
            p.render_over(self.next, &mut frame.data);
        } else {
            p.render(self.next, &mut frame.data);
        }
        frame.seq = self.next;
        frame.width = self.pattern.width;
        frame.height = self.pattern.height;
        frame.layout = Layout::Yuv(self.pattern.sub);
        self.next += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_conversion_round_trips() {
        for c in BARS {
            let back = ycbcr_to_rgb(rgb_to_ycbcr(c));
            for i in 0..3 {
                assert!(back[i].abs_diff(c[i]) <= 2, "{c:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn deterministic_and_moving() {
        let p = TestPattern::new(320, 240, Subsampling::S420);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        p.render(7, &mut a);
        p.render(7, &mut b);
        p.render(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 320 * 240 * 3 / 2);
    }

    #[test]
    fn bars_are_where_documented() {
        let (w, h) = (640u32, 480u32);
        let rgb = TestPattern::new(w, h, Subsampling::S444).render_rgb(0);
        for (i, want) in BARS.iter().enumerate() {
            let x = (2 * i + 1) * w as usize / 16;
            let y = h as usize / 3;
            let got = &rgb[(y * w as usize + x) * 3..][..3];
            for c in 0..3 {
                assert!(got[c].abs_diff(want[c]) <= 2, "bar {i}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn frame_number_changes_only_the_text_band_and_moving_parts() {
        let p = TestPattern::new(320, 240, Subsampling::Gray);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        p.render(1, &mut a);
        p.render(100_001, &mut b);
        // Same box position and ramp shift would need equal seq; only check the bars stay.
        assert_eq!(a[..320 * 150], b[..320 * 150]);
        assert_ne!(a[320 * 200..], b[320 * 200..]);
    }

    #[test]
    fn recycled_buffers_render_the_same_frame() {
        let mut src = PatternSource::new(320, 240, Subsampling::S420);
        let mut f = RawFrame::empty();
        for _ in 0..3 {
            src.next_frame(&mut f).unwrap();
        }
        let mut fresh = Vec::new();
        TestPattern::new(320, 240, Subsampling::S420).render(2, &mut fresh);
        assert_eq!(f.seq, 2);
        assert_eq!(f.data, fresh);
    }

    #[test]
    fn tiny_frames_do_not_panic() {
        for (w, h) in [(2, 2), (16, 8), (8, 16), (1, 1)] {
            for sub in [Subsampling::S420, Subsampling::S444, Subsampling::Gray] {
                let mut out = Vec::new();
                TestPattern::new(w, h, sub).render(12345, &mut out);
                assert_eq!(out.len(), yuv_len(w, h, sub));
            }
        }
    }
}
