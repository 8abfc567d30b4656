//! The "no signal" frame the sender shows its viewers while the source is lost (a camera
//! unplugged or busy): dark grey, a white band with black text `NO SIGNAL`, and the time of
//! loss below it, in a 5x7 bitmap font scaled to the frame. Planar YCbCr, the same size and
//! layout as the stream, so the encoder and the viewers need nothing special.

use super::{yuv_len, Layout, RawFrame};
use crate::format::Subsampling;

/// Luma of the background (dark grey), the band and the text.
const BACKGROUND: u8 = 48;
const BAND: u8 = 235;
const INK: u8 = 16;

/// Renders the no-signal frame into `frame` (size, layout and data; `seq` and `capture_us`
/// are the caller's). `since` is the time of loss as text, e.g. `2026-11-24T05:01:02Z`.
pub fn render(frame: &mut RawFrame, width: u32, height: u32, sub: Subsampling, since: &str) {
    frame.width = width;
    frame.height = height;
    frame.layout = Layout::Yuv(sub);
    let (w, h) = (width as usize, height as usize);
    frame.data.clear();
    frame.data.resize(yuv_len(width, height, sub), 128);
    let luma = &mut frame.data[..w * h];
    luma.fill(BACKGROUND);
    let since = format!("SINCE {since}");
    let lines = ["NO SIGNAL", since.as_str()];
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(1);
    // Each glyph cell is 6x9 font pixels; leave a margin of about one cell each side.
    let scale = (w / (6 * (longest + 2))).min(h / (9 * (lines.len() + 2))).max(1);
    let band_top = h.saturating_sub(9 * scale * lines.len()) / 2;
    let band_bottom = (band_top + 9 * scale * lines.len() + scale).min(h);
    luma[band_top * w..band_bottom * w].fill(BAND);
    for (i, line) in lines.iter().enumerate() {
        let x0 = w.saturating_sub(line.len() * 6 * scale) / 2;
        let y0 = band_top + scale + i * 9 * scale;
        draw_text(luma, w, h, x0, y0, scale, line);
    }
    // Chroma stays neutral (128): the frame is grey, black and white.
}

fn draw_text(luma: &mut [u8], w: usize, h: usize, x0: usize, y0: usize, scale: usize, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let gx = x0 + i * 6 * scale;
        for (gy, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let x = gx + col * scale;
                if x + scale > w {
                    continue;
                }
                for dy in 0..scale {
                    let y = y0 + gy * scale + dy;
                    if y < h {
                        luma[y * w + x..y * w + x + scale].fill(INK);
                    }
                }
            }
        }
    }
}

/// 5x7 glyphs, one byte a row, the low 5 bits left to right. Characters not listed are blank.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_signal_frame_has_the_stream_layout_and_shows_text() {
        for (w, h, sub) in [(1280, 720, Subsampling::S420), (64, 48, Subsampling::S444), (33, 17, Subsampling::Gray)] {
            let mut f = RawFrame::empty();
            render(&mut f, w, h, sub, "2026-11-24T05:01:02Z");
            assert_eq!((f.width, f.height, f.layout), (w, h, Layout::Yuv(sub)));
            assert_eq!(f.data.len(), yuv_len(w, h, sub));
            let luma = &f.data[..(w * h) as usize];
            let ink = luma.iter().filter(|&&v| v == INK).count();
            let band = luma.iter().filter(|&&v| v == BAND).count();
            assert!(ink > 0 && band > ink, "{w}x{h}: ink {ink}, band {band}");
            assert!(f.data[(w * h) as usize..].iter().all(|&v| v == 128), "chroma not neutral");
        }
    }

    #[test]
    fn glyphs_are_distinct() {
        let chars = "0123456789:-ACEGILNOSTZ";
        for (i, a) in chars.chars().enumerate() {
            assert_ne!(glyph(a), [0; 7], "{a}");
            for b in chars.chars().skip(i + 1) {
                assert_ne!(glyph(a), glyph(b), "{a} and {b}");
            }
        }
    }
}
