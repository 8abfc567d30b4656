//! Halving a planar frame (`--allow-downscale`): each output sample is the rounded mean of a
//! 2x2 block of the input plane, on every plane, so a frame keeps its subsampling.

use super::{chroma_size, yuv_len, Layout, RawFrame};
use crate::format::Subsampling;

/// The size of a halved frame: half, rounded down to what the subsampling needs (even
/// width for 4:2:0 and 4:2:2, even height for 4:2:0), at least one chroma block.
pub fn half_size(width: u32, height: u32, sub: Subsampling) -> (u32, u32) {
    let even = |v: u32| (v / 2) & !1;
    let (w, h) = match sub {
        Subsampling::S420 => (even(width), even(height)),
        Subsampling::S422 => (even(width), height / 2),
        Subsampling::S444 | Subsampling::Gray => (width / 2, height / 2),
    };
    let min = if matches!(sub, Subsampling::S420 | Subsampling::S422) { 2 } else { 1 };
    (w.max(min), h.max(if sub == Subsampling::S420 { 2 } else { 1 }))
}

/// Writes `src` (a planar frame) at half its size into `dst`, reusing `dst`'s buffer.
/// Returns false (and leaves `dst` alone) for a frame that is not planar YCbCr.
pub fn halve(src: &RawFrame, dst: &mut RawFrame) -> bool {
    let Layout::Yuv(sub) = src.layout else { return false };
    let (sw, sh) = (src.width, src.height);
    if src.data.len() != yuv_len(sw, sh, sub) {
        return false;
    }
    let (dw, dh) = half_size(sw, sh, sub);
    dst.data.clear();
    dst.data.reserve(yuv_len(dw, dh, sub));
    let (sy, rest) = src.data.split_at(sw as usize * sh as usize);
    halve_plane(sy, sw as usize, sh as usize, dw as usize, dh as usize, &mut dst.data);
    if sub != Subsampling::Gray {
        let (scw, sch) = chroma_size(sw, sh, sub);
        let (dcw, dch) = chroma_size(dw, dh, sub);
        let (cb, cr) = rest.split_at(scw * sch);
        halve_plane(cb, scw, sch, dcw, dch, &mut dst.data);
        halve_plane(cr, scw, sch, dcw, dch, &mut dst.data);
    }
    dst.seq = src.seq;
    dst.capture_us = src.capture_us;
    dst.width = dw;
    dst.height = dh;
    dst.layout = src.layout;
    true
}

/// Appends a `dw`x`dh` plane to `out`, each sample the mean of the 2x2 block at twice its
/// coordinates in the `sw`x`sh` plane `src` (clamped at the edges).
fn halve_plane(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize, out: &mut Vec<u8>) {
    for y in 0..dh {
        let r0 = &src[(2 * y).min(sh - 1) * sw..][..sw];
        let r1 = &src[(2 * y + 1).min(sh - 1) * sw..][..sw];
        out.extend((0..dw).map(|x| {
            let (a, b) = ((2 * x).min(sw - 1), (2 * x + 1).min(sw - 1));
            ((u16::from(r0[a]) + u16::from(r0[b]) + u16::from(r1[a]) + u16::from(r1[b]) + 2) / 4) as u8
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, sub: Subsampling, f: impl Fn(usize) -> u8) -> RawFrame {
        let data = (0..yuv_len(w, h, sub)).map(f).collect();
        RawFrame { seq: 7, capture_us: 9, width: w, height: h, layout: Layout::Yuv(sub), data, no_signal: false }
    }

    #[test]
    fn sizes_keep_the_subsampling_whole() {
        assert_eq!(half_size(1280, 720, Subsampling::S420), (640, 360));
        assert_eq!(half_size(1278, 718, Subsampling::S420), (638, 358));
        assert_eq!(half_size(1282, 722, Subsampling::S420), (640, 360));
        assert_eq!(half_size(642, 480, Subsampling::S422), (320, 240));
        assert_eq!(half_size(5, 3, Subsampling::S444), (2, 1));
        assert_eq!(half_size(2, 2, Subsampling::S420), (2, 2));
    }

    #[test]
    fn each_sample_is_the_mean_of_its_block() {
        for sub in [Subsampling::S420, Subsampling::S422, Subsampling::S444, Subsampling::Gray] {
            let src = frame(8, 6, sub, |i| (i * 7 % 251) as u8);
            let mut dst = RawFrame::empty();
            assert!(halve(&src, &mut dst));
            let (dw, dh) = half_size(8, 6, sub);
            assert_eq!((dst.width, dst.height, dst.seq, dst.capture_us), (dw, dh, 7, 9));
            assert_eq!(dst.data.len(), yuv_len(dw, dh, sub), "{sub}");
            // Luma (1, 1) from the block at (2..4, 2..4).
            let at = |x: usize, y: usize| u16::from(src.data[y * 8 + x]);
            let want = (at(2, 2) + at(3, 2) + at(2, 3) + at(3, 3) + 2) / 4;
            assert_eq!(u16::from(dst.data[dw as usize + 1]), want, "{sub}");
        }
    }

    #[test]
    fn a_flat_frame_stays_flat_and_jpeg_is_refused() {
        let src = frame(1280, 720, Subsampling::S420, |i| if i < 1280 * 720 { 200 } else { 90 });
        let mut dst = RawFrame::empty();
        assert!(halve(&src, &mut dst));
        assert!(dst.data[..640 * 360].iter().all(|&v| v == 200));
        assert!(dst.data[640 * 360..].iter().all(|&v| v == 90));
        let jpeg = RawFrame { layout: Layout::Jpeg, ..src };
        assert!(!halve(&jpeg, &mut dst));
    }
}
