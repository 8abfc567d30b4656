//! Raw frames from a pipe or file (`--input-format i420|nv12|yuyv|rgb24|bgr24 --size WxH`:
//! `rpicam-vid --codec yuv420 -o -`, `ffmpeg -f rawvideo -pix_fmt ...`), converted to the
//! planar [`Layout::Yuv`](super::Layout) the encoder takes (colour conversion by
//! libjpeg-turbo or plain functions like the camera's; no hand-written DCT).
//!
//! i420 is read straight into the frame. nv12 and yuyv go through the camera's conversions
//! ([`super::camera::nv12_to_i420`], [`super::camera::yuyv_to_planar`]). rgb24 and bgr24 are
//! converted to planar YCbCr at `--subsampling` by libjpeg-turbo (`tj3EncodeYUV8`: its SIMD
//! colour conversion and downsampling, the same code its RGB compression runs), so the frame
//! stays [`Layout::Yuv`](super::Layout) and slices, the rate controller's halving and the
//! encoder need nothing new for it.

use std::ffi::c_int;
use std::io::{ErrorKind, Read};

use turbojpeg::raw as tj;

use super::camera::{nv12_to_i420, yuyv_to_planar};
use super::pipe::Input;
use super::{yuv_len, CaptureError, FrameSource, Layout, RawFrame};
use crate::codec::{to_subsamp, Tj};
use crate::format::Subsampling;
use crate::net::proto::{MAX_DIMENSION, MAX_PIXELS};

/// `--input-format`: what a pipe or file carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum InputFormat {
    /// Recognised from the first bytes: JPEG (FF D8) or Y4M (`YUV4MPEG2 `). Raw frames cannot
    /// be recognised: name their format.
    #[default]
    Auto,
    /// JPEG images back to back.
    Mjpeg,
    /// YUV4MPEG2.
    Y4m,
    /// Planar 4:2:0: Y, then U, then V (`yuv420p`).
    I420,
    /// Y plane, then interleaved UV at half size (`nv12`).
    Nv12,
    /// Packed 4:2:2, Y0 U Y1 V (`yuyv422`).
    Yuyv,
    /// Packed R, G, B bytes (`rgb24`).
    Rgb24,
    /// Packed B, G, R bytes (`bgr24`).
    Bgr24,
}

impl InputFormat {
    /// The flag's value for this format.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Auto => "auto",
            InputFormat::Mjpeg => "mjpeg",
            InputFormat::Y4m => "y4m",
            InputFormat::I420 => "i420",
            InputFormat::Nv12 => "nv12",
            InputFormat::Yuyv => "yuyv",
            InputFormat::Rgb24 => "rgb24",
            InputFormat::Bgr24 => "bgr24",
        }
    }

    /// True for the raw formats, which need `--size`.
    pub fn is_raw(self) -> bool {
        !matches!(self, InputFormat::Auto | InputFormat::Mjpeg | InputFormat::Y4m)
    }

    /// Bytes in one `width`x`height` frame of a raw format (0 for the others).
    pub fn frame_len(self, width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            InputFormat::I420 | InputFormat::Nv12 => yuv_len(width, height, Subsampling::S420),
            InputFormat::Yuyv => w * h * 2,
            InputFormat::Rgb24 | InputFormat::Bgr24 => w * h * 3,
            InputFormat::Auto | InputFormat::Mjpeg | InputFormat::Y4m => 0,
        }
    }

    /// The planar layout frames of this raw format are converted to, given `--subsampling`.
    fn target(self, sub: Subsampling) -> Subsampling {
        match (self, sub) {
            (_, Subsampling::Gray) => Subsampling::Gray,
            (InputFormat::I420 | InputFormat::Nv12, _) => Subsampling::S420,
            (InputFormat::Yuyv, Subsampling::S420) => Subsampling::S420,
            (InputFormat::Yuyv, _) => Subsampling::S422,
            _ => sub,
        }
    }
}

/// Packed RGB or BGR to planar YCbCr by libjpeg-turbo.
struct PackedToYuv {
    tj: Tj,
    sub: Subsampling,
}

impl PackedToYuv {
    fn new(sub: Subsampling) -> Result<Self, String> {
        let mut tj = Tj::new(tj::TJINIT_TJINIT_COMPRESS).map_err(|e| e.to_string())?;
        tj.set(tj::TJPARAM_TJPARAM_SUBSAMP, to_subsamp(sub) as c_int).map_err(|e| e.to_string())?;
        Ok(PackedToYuv { tj, sub })
    }

    /// Converts `src` (`width`x`height`, 3 bytes a pixel, exactly) into `out`.
    fn convert(&mut self, src: &[u8], (width, height): (u32, u32), bgr: bool, out: &mut Vec<u8>) -> Result<(), String> {
        let (w, h) = (width as usize, height as usize);
        assert_eq!(src.len(), w * h * 3, "callers read whole frames");
        let want = turbojpeg::yuv_pixels_len(w, 1, h, to_subsamp(self.sub)).map_err(|e| e.to_string())?;
        // Sizes were checked against MAX_DIMENSION, so they fit a c_int.
        let (cw, ch, pitch) = (width as c_int, height as c_int, (w * 3) as c_int);
        out.resize(want, 0);
        let pf = if bgr { tj::TJPF_TJPF_BGR } else { tj::TJPF_TJPF_RGB };
        // SAFETY: `src` holds `height` rows of `pitch` bytes (asserted above) and `out` holds
        // exactly the planes of a `width`x`height` image at the handle's subsampling with
        // row alignment 1 (libjpeg-turbo's own size, from tj3YUVBufSize).
        let res =
            unsafe { tj::tj3EncodeYUV8(self.tj.ptr, src.as_ptr(), cw, pitch, ch, pf as c_int, out.as_mut_ptr(), 1) };
        if res != 0 {
            return Err(self.tj.error().to_string());
        }
        Ok(())
    }
}

/// Raw frames of one format and size from a pipe or file.
pub struct RawSource {
    input: Input,
    format: InputFormat,
    size: (u32, u32),
    frame_len: usize,
    sub: Subsampling,
    scratch: Vec<u8>,
    packed: Option<PackedToYuv>,
    next: u64,
}

impl RawSource {
    /// Raw `format` frames of `size` (`--size`, required) from `input`, converted to planar
    /// YCbCr at `sub` (`--subsampling`) where the format leaves a choice.
    pub(super) fn new(
        input: Input,
        format: InputFormat,
        size: Option<(u32, u32)>,
        sub: Subsampling,
    ) -> Result<Self, CaptureError> {
        let fmt = format.name();
        let Some((w, h)) = size else {
            return Err(input.origin().fatal(format!(
                "raw {fmt} frames need --size WIDTHxHEIGHT: their size cannot be read from the input"
            )));
        };
        if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION || u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(input.origin().fatal(format!(
                "--size {w}x{h}: expected 1..={MAX_DIMENSION} on each side and at most {MAX_PIXELS} pixels"
            )));
        }
        if format == InputFormat::Yuyv && w % 2 == 1 {
            return Err(input.origin().fatal(format!("--size {w}x{h}: yuyv frames have an even width")));
        }
        let sub = format.target(sub);
        let packed = match format {
            InputFormat::Rgb24 | InputFormat::Bgr24 => {
                Some(PackedToYuv::new(sub).map_err(|e| input.origin().fatal(e))?)
            }
            _ => None,
        };
        let name = input.name();
        tracing::info!(width = w, height = h, frame_bytes = format.frame_len(w, h), planar = %sub, "pipe source: raw {fmt} from {name}");
        let frame_len = format.frame_len(w, h);
        Ok(RawSource { input, format, size: (w, h), frame_len, sub, scratch: Vec::new(), packed, next: 0 })
    }

    /// Reads one whole frame into `buf` (resized to a frame). `Ok(false)` at the end of the
    /// input between frames.
    fn read_frame(&mut self, into_frame: bool, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let buf = if into_frame { &mut frame.data } else { &mut self.scratch };
        buf.resize(self.frame_len, 0);
        let got = read_full(&mut self.input, buf)
            .map_err(|e| self.input.origin().lost(format!("frame {}: cannot read: {e}", self.next)))?;
        if got == self.frame_len {
            return Ok(true);
        }
        if got == 0 {
            return Ok(false);
        }
        let (w, h) = self.size;
        Err(self.input.origin().cut(format!(
            "input ended {got} bytes into frame {}, expected {} bytes a frame ({} {w}x{h}); are --size and --input-format right?",
            self.next,
            self.frame_len,
            self.format.name()
        )))
    }

    /// Converts the frame read into `scratch` into `frame`.
    fn convert(&mut self, frame: &mut RawFrame) -> Result<(), CaptureError> {
        let (w, h) = self.size;
        let res = match self.format {
            InputFormat::Nv12 => nv12_to_i420(&self.scratch, w, h, &mut frame.data),
            InputFormat::Yuyv => yuyv_to_planar(&self.scratch, w, h, self.sub, &mut frame.data),
            InputFormat::Rgb24 | InputFormat::Bgr24 => {
                let bgr = self.format == InputFormat::Bgr24;
                let packed = self.packed.as_mut().expect("made for rgb24 and bgr24");
                packed.convert(&self.scratch, (w, h), bgr, &mut frame.data).map_err(CaptureError::BadFrame)
            }
            _ => Ok(()),
        };
        res.map_err(|e| self.input.origin().fatal(format!("frame {}: {e}", self.next)))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl FrameSource for RawSource {
    fn describe(&self) -> String {
        let (w, h) = self.size;
        format!("{} (raw {} {w}x{h} as {})", self.input.name(), self.format.name(), self.sub)
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn self_paced(&self) -> bool {
        self.input.live()
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let direct = self.format == InputFormat::I420 && self.sub == Subsampling::S420;
        let mut got = self.read_frame(direct, frame)?;
        if !got && self.next > 0 && self.input.rewind()? {
            got = self.read_frame(direct, frame)?;
        }
        if !got {
            return self.input.origin().ended(self.next);
        }
        frame.capture_us = crate::clock::now_us();
        if !direct {
            if self.format == InputFormat::I420 {
                // Gray from i420: the Y plane.
                std::mem::swap(&mut self.scratch, &mut frame.data);
            } else {
                self.convert(frame)?;
            }
        }
        let (w, h) = self.size;
        if self.sub == Subsampling::Gray {
            frame.data.truncate((w * h) as usize);
        }
        frame.seq = self.next;
        (frame.width, frame.height, frame.layout) = (w, h, Layout::Yuv(self.sub));
        self.next += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_and_targets() {
        assert_eq!(InputFormat::I420.frame_len(320, 240), 115_200);
        assert_eq!(InputFormat::I420.frame_len(5, 3), 15 + 2 * 3 * 2);
        assert_eq!(InputFormat::Nv12.frame_len(320, 240), 115_200);
        assert_eq!(InputFormat::Yuyv.frame_len(320, 240), 153_600);
        assert_eq!(InputFormat::Rgb24.frame_len(320, 240), 230_400);
        assert_eq!(InputFormat::Yuyv.target(Subsampling::S444), Subsampling::S422);
        assert_eq!(InputFormat::Rgb24.target(Subsampling::S444), Subsampling::S444);
        assert_eq!(InputFormat::I420.target(Subsampling::S422), Subsampling::S420);
        assert!(InputFormat::Bgr24.is_raw() && !InputFormat::Mjpeg.is_raw() && !InputFormat::Auto.is_raw());
    }

    #[test]
    fn rgb_and_bgr_convert_alike_through_libjpeg_turbo() {
        let (w, h) = (6u32, 4u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [200, (i * 10) as u8, 30]).collect();
        let bgr: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        for sub in [Subsampling::S420, Subsampling::S444, Subsampling::Gray] {
            let mut c = PackedToYuv::new(sub).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            c.convert(&rgb, (w, h), false, &mut a).unwrap();
            c.convert(&bgr, (w, h), true, &mut b).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.len(), yuv_len(w, h, sub));
            // Pure red-ish: Y of (200, 0, 30) is about 0.299*200 + 0.114*30 = 63.
            assert!((a[0] as i32 - 63).abs() <= 1, "Y {}", a[0]);
        }
    }
}
