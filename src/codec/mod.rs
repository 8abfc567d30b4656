//! JPEG encode and decode with libjpeg-turbo. Run by the sender's `encode` thread and the
//! receiver's `decode` thread; each thread owns one [`Encoder`] or [`Decoder`] and reuses its
//! turbojpeg handle and buffers, so nothing is allocated per frame once buffers are warm.
//!
//! Planar YCbCr sources are compressed straight from their planes (no RGB round trip), and
//! decoding writes straight into the window's `u32` 0RGB buffer (`BGRX` on little-endian).
//!
//! The hot paths call libjpeg-turbo's TurboJPEG 3 API through `Tj`, a small owned handle,
//! because the `turbojpeg` crate does not expose `TJPARAM_FASTDCT`; the opt-in speed settings
//! ([`Speed`]) are libjpeg-turbo's fast integer DCT (encoder and decoder) and fast chroma
//! upsampling (decoder). Both are off by default: they cost image quality (see the README's
//! performance section for what they cost in PSNR and gain in time).
//!
//! With more than one thread ([`Encoder::set_threads`], [`Decoder::set_threads`]) a frame is
//! encoded as horizontal slices joined at restart markers (`restart.rs`, pure code over bytes)
//! by a pool of workers (`slices.rs`), and a JPEG with restart markers is decoded as pieces.

pub mod restart;
pub mod slices;
pub mod threads;

use std::ffi::{c_int, CStr};

use turbojpeg::raw;
use turbojpeg::{Decompressor, PixelFormat, Subsamp, YuvImage};

use crate::capture::{yuv_len, Layout, RawFrame};
use crate::format::Subsampling;
use restart::RestartError;
use slices::{thread_cpu_us, Params, SliceDecoder, SliceEncoder};

/// Restart interval in MCU rows of a sliced encode unless [`Encoder::set_restart_rows`] says
/// otherwise: every MCU row, the finest cut for decoding and for loss concealment. Measured at
/// q75 4:2:0 on the test pattern, markers every 1, 2 and 4 MCU rows make a frame 0.33 %,
/// 0.16 % and 0.04 % larger at 1920x1080 (52616 bytes without), 0.23 %, 0.07 % and 0.02 % at
/// 3840x2160 (162573 bytes without).
pub const DEFAULT_RESTART_ROWS: u16 = 1;

/// The turbojpeg pixel format whose bytes, read as native-endian `u32`, are `0x00RRGGBB`.
#[cfg(target_endian = "little")]
pub const NATIVE_0RGB: PixelFormat = PixelFormat::BGRX;
#[cfg(target_endian = "big")]
pub const NATIVE_0RGB: PixelFormat = PixelFormat::XRGB;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("libjpeg-turbo: {0}")]
    Turbo(#[from] turbojpeg::Error),
    #[error("JPEG is {got_w}x{got_h} but the frame header says {want_w}x{want_h}")]
    SizeMismatch { got_w: usize, got_h: usize, want_w: usize, want_h: usize },
    #[error("raw frame of {got} bytes, expected {want} for {width}x{height} {sub}")]
    BadRawLength { got: usize, want: usize, width: u32, height: u32, sub: Subsampling },
    #[error("restart markers: {0}")]
    Restart(#[from] RestartError),
    #[error("cannot start a slice thread: {0}")]
    Thread(std::io::Error),
    #[error("a slice thread is gone (it panicked)")]
    WorkerGone,
}

pub fn to_subsamp(s: Subsampling) -> Subsamp {
    match s {
        Subsampling::S444 => Subsamp::None,
        Subsampling::S422 => Subsamp::Sub2x1,
        Subsampling::S420 => Subsamp::Sub2x2,
        Subsampling::Gray => Subsamp::Gray,
    }
}

fn from_subsamp(s: Subsamp) -> Option<Subsampling> {
    Some(match s {
        Subsamp::None => Subsampling::S444,
        Subsamp::Sub2x1 => Subsampling::S422,
        Subsamp::Sub2x2 => Subsampling::S420,
        Subsamp::Gray => Subsampling::Gray,
        _ => return None,
    })
}

/// A JPEG must be the size its frame says, checked from its header before any pixel is
/// decoded (so a JPEG that claims a huge size costs nothing).
fn check_size(got: (usize, usize), width: usize, height: usize) -> Result<(), CodecError> {
    if got != (width, height) {
        return Err(CodecError::SizeMismatch { got_w: got.0, got_h: got.1, want_w: width, want_h: height });
    }
    Ok(())
}

/// libjpeg-turbo's faster, less accurate settings. All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Speed {
    /// The fast integer forward DCT (encoder) or inverse DCT (decoder) instead of the
    /// accurate one (`TJPARAM_FASTDCT`, libjpeg's `JDCT_IFAST`).
    pub fast_dct: bool,
    /// Nearest-neighbour chroma upsampling instead of the smooth ("fancy") one
    /// (`TJPARAM_FASTUPSAMPLE`; decoder only).
    pub fast_upsample: bool,
}

/// An owned TurboJPEG 3 handle (`tjhandle`), compressor or decompressor.
pub(crate) struct Tj {
    pub(crate) ptr: raw::tjhandle,
}

// SAFETY: a TurboJPEG handle holds no thread-local state; it is used by one thread at a time
// (every method takes `&mut self`).
unsafe impl Send for Tj {}

impl Drop for Tj {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.ptr) }
    }
}

impl Tj {
    pub(crate) fn new(init: raw::TJINIT) -> Result<Self, CodecError> {
        // SAFETY: plain constructor; a null result is handled below.
        let ptr = unsafe { raw::tj3Init(init as c_int) };
        if ptr.is_null() {
            // SAFETY: with a null handle, tj3GetErrorStr returns the global (thread-local) error.
            let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(std::ptr::null_mut())) };
            return Err(turbojpeg::Error::TurboJpegError(msg.to_string_lossy().into_owned()).into());
        }
        Ok(Tj { ptr })
    }

    pub(crate) fn error(&mut self) -> CodecError {
        // SAFETY: `ptr` is a live handle; the returned string is NUL-terminated and copied at once.
        let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.ptr)) };
        turbojpeg::Error::TurboJpegError(msg.to_string_lossy().into_owned()).into()
    }

    pub(crate) fn set(&mut self, param: raw::TJPARAM, value: c_int) -> Result<(), CodecError> {
        // SAFETY: `ptr` is a live handle; an unknown parameter or value is reported as an error.
        if unsafe { raw::tj3Set(self.ptr, param as c_int, value) } != 0 {
            return Err(self.error());
        }
        Ok(())
    }

    fn get(&mut self, param: raw::TJPARAM) -> c_int {
        // SAFETY: `ptr` is a live handle.
        unsafe { raw::tj3Get(self.ptr, param as c_int) }
    }
}

fn c_dim(v: usize, what: &'static str) -> Result<c_int, CodecError> {
    c_int::try_from(v).map_err(|_| turbojpeg::Error::IntegerOverflow(what).into())
}

/// A reusable output buffer for one JPEG. Its storage is allocated once at libjpeg-turbo's
/// worst-case size (zeroed pages from the allocator are not resident until written), and
/// only the first `len` bytes are the JPEG.
#[derive(Debug, Default)]
pub struct JpegBuf {
    data: Vec<u8>,
    len: usize,
}

impl JpegBuf {
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }

    fn ensure(&mut self, cap: usize) {
        if self.data.len() < cap {
            self.data = vec![0; cap];
        }
    }

    fn set_from(&mut self, bytes: &[u8]) {
        self.ensure(bytes.len());
        self.data[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
    }
}

/// What the encoder did with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Quality of the JPEG, 0 if unknown (a camera's MJPEG forwarded as is).
    pub quality: u8,
    pub subsampling: Subsampling,
    /// True if the JPEG is the source's own, forwarded without re-encoding.
    pub passthrough: bool,
    /// CPU time spent on the frame by every thread that worked on it, in microseconds.
    pub cpu_us: u64,
    /// True if the frame was coded as slices on more than one thread (with threads, a frame
    /// is coded on one while slices do not pay, or when the workers got no CPU in time and
    /// the calling thread coded their parts; a forwarded JPEG is not coded at all).
    pub sliced: bool,
}

/// Compresses raw frames to JPEG. One per encode thread.
pub struct Encoder {
    tj: Tj,
    quality: u8,
    subsampling: Subsampling,
    /// Re-encode JPEG sources at `quality` instead of forwarding them.
    reencode_jpeg: bool,
    /// Only for re-encoding JPEG sources.
    dec: Option<Decompressor>,
    yuv: Vec<u8>,
    fast_dct: bool,
    /// Restart interval in MCU rows (0: none, or the default when sliced).
    restart_rows: u16,
    /// The slice workers, with more than one thread.
    slices: Option<SliceEncoder>,
    /// CPU time of the slice workers during the current `encode`, if they coded part of it.
    worker_cpu_us: Option<u64>,
}

impl Encoder {
    /// `subsampling` applies to sources that are not already planar YCbCr (planar frames keep
    /// their own layout, which the capture stage chose from `--subsampling`).
    pub fn new(quality: u8, subsampling: Subsampling, reencode_jpeg: bool) -> Result<Self, CodecError> {
        let mut tj = Tj::new(raw::TJINIT_TJINIT_COMPRESS)?;
        tj.set(raw::TJPARAM_TJPARAM_QUALITY, c_int::from(quality))?;
        tj.set(raw::TJPARAM_TJPARAM_SUBSAMP, to_subsamp(subsampling) as c_int)?;
        // Output goes into our own buffer, sized for the worst case: never reallocated.
        tj.set(raw::TJPARAM_TJPARAM_NOREALLOC, 1)?;
        Ok(Encoder {
            tj,
            quality,
            subsampling,
            reencode_jpeg,
            dec: None,
            yuv: Vec::new(),
            fast_dct: false,
            restart_rows: 0,
            slices: None,
            worker_cpu_us: None,
        })
    }

    /// Applies `speed.fast_dct` to later frames (`fast_upsample` does not apply to encoding).
    pub fn set_speed(&mut self, speed: Speed) -> Result<(), CodecError> {
        self.tj.set(raw::TJPARAM_TJPARAM_FASTDCT, c_int::from(speed.fast_dct))?;
        self.fast_dct = speed.fast_dct;
        Ok(())
    }

    /// Encodes later planar frames as up to `threads` horizontal slices on as many threads
    /// (this one and `threads - 1` workers started now), joined at restart markers. 0 or 1:
    /// one thread, no slices.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), CodecError> {
        if threads <= 1 {
            self.slices = None;
        } else if self.slices.as_ref().map(SliceEncoder::threads) != Some(threads) {
            self.slices = None;
            self.slices = Some(SliceEncoder::new(threads)?);
        }
        Ok(())
    }

    /// Puts a restart marker every `rows` MCU rows (a DRI segment) in later frames; 0: none
    /// with one thread, [`DEFAULT_RESTART_ROWS`] with slices (which always need them).
    pub fn set_restart_rows(&mut self, rows: u16) -> Result<(), CodecError> {
        self.tj.set(raw::TJPARAM_TJPARAM_RESTARTROWS, c_int::from(rows))?;
        self.restart_rows = rows;
        Ok(())
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    pub fn set_quality(&mut self, quality: u8) -> Result<(), CodecError> {
        self.tj.set(raw::TJPARAM_TJPARAM_QUALITY, c_int::from(quality))?;
        self.quality = quality;
        Ok(())
    }

    /// Encodes `frame` into `out`.
    pub fn encode(&mut self, frame: &RawFrame, out: &mut JpegBuf) -> Result<Encoded, CodecError> {
        let t0 = thread_cpu_us();
        self.worker_cpu_us = None;
        let mut info = self.encode_inner(frame, out)?;
        info.cpu_us = thread_cpu_us().saturating_sub(t0) + self.worker_cpu_us.unwrap_or(0);
        info.sliced = self.worker_cpu_us.is_some();
        Ok(info)
    }

    fn encode_inner(&mut self, frame: &RawFrame, out: &mut JpegBuf) -> Result<Encoded, CodecError> {
        match frame.layout {
            Layout::Yuv(sub) => {
                let want = yuv_len(frame.width, frame.height, sub);
                if frame.data.len() != want {
                    return Err(CodecError::BadRawLength {
                        got: frame.data.len(),
                        want,
                        width: frame.width,
                        height: frame.height,
                        sub,
                    });
                }
                self.compress_planar(&frame.data, frame.width as usize, frame.height as usize, sub, out)?;
                Ok(Encoded { quality: self.quality, subsampling: sub, passthrough: false, cpu_us: 0, sliced: false })
            }
            Layout::Jpeg if !self.reencode_jpeg => {
                let header = turbojpeg::read_header(&frame.data)?;
                check_size((header.width, header.height), frame.width as usize, frame.height as usize)?;
                out.set_from(&frame.data);
                Ok(Encoded {
                    quality: 0,
                    subsampling: from_subsamp(header.subsamp).unwrap_or(Subsampling::S420),
                    passthrough: true,
                    cpu_us: 0,
                    sliced: false,
                })
            }
            Layout::Jpeg => {
                let res = self.reencode(frame, out);
                if res.is_err() {
                    // A bad JPEG can leave the handle unusable (see `Decoder::decode`).
                    self.dec = None;
                }
                let sub = res?;
                Ok(Encoded { quality: self.quality, subsampling: sub, passthrough: false, cpu_us: 0, sliced: false })
            }
        }
    }

    /// Decodes a JPEG source to planar YUV (checking its size first) and compresses that.
    fn reencode(&mut self, frame: &RawFrame, out: &mut JpegBuf) -> Result<Subsampling, CodecError> {
        let dec = match &mut self.dec {
            Some(d) => d,
            None => self.dec.insert(Decompressor::new()?),
        };
        let header = dec.read_header(&frame.data)?;
        check_size((header.width, header.height), frame.width as usize, frame.height as usize)?;
        let sub = from_subsamp(header.subsamp).unwrap_or(Subsampling::S420);
        // libjpeg-turbo's planes: at an odd width or height with subsampled chroma the luma
        // plane is padded to whole chroma samples, so this can exceed `yuv_len`.
        let len = turbojpeg::yuv_pixels_len(header.width, 1, header.height, to_subsamp(sub))?;
        self.yuv.resize(len, 0);
        dec.decompress_to_yuv(
            &frame.data,
            YuvImage {
                pixels: &mut self.yuv[..],
                width: header.width,
                align: 1,
                height: header.height,
                subsamp: to_subsamp(sub),
            },
        )?;
        let yuv = std::mem::take(&mut self.yuv);
        let res = self.compress_planar(&yuv, header.width, header.height, sub, out);
        self.yuv = yuv;
        res.map(|()| sub)
    }

    fn compress_planar(
        &mut self,
        data: &[u8],
        width: usize,
        height: usize,
        sub: Subsampling,
        out: &mut JpegBuf,
    ) -> Result<(), CodecError> {
        let subsamp = to_subsamp(sub);
        // Checked by every caller against `yuv_len`; the FFI call below relies on it.
        let want = turbojpeg::yuv_pixels_len(width, 1, height, subsamp)?;
        if data.len() != want {
            let (width, height) = (width as u32, height as u32);
            return Err(CodecError::BadRawLength { got: data.len(), want, width, height, sub });
        }
        if let Some(slices) = &mut self.slices {
            let restart_rows = if self.restart_rows == 0 { DEFAULT_RESTART_ROWS } else { self.restart_rows };
            let p = Params { quality: self.quality, subsampling: sub, fast_dct: self.fast_dct, restart_rows };
            self.worker_cpu_us = slices.compress(data, (width, height), p, out)?.and_then(|ran| ran.workers_cpu_us());
            return Ok(());
        }
        let (w, h) = (c_dim(width, "width")?, c_dim(height, "height")?);
        out.ensure(turbojpeg::compressed_buf_len(width, height, subsamp)?);
        self.tj.set(raw::TJPARAM_TJPARAM_SUBSAMP, subsamp as c_int)?;
        let mut ptr = out.data.as_mut_ptr();
        let mut len = out.data.len() as raw::size_t;
        // SAFETY: `data` holds exactly the planes of a `width`x`height` image with `subsamp`
        // and row alignment 1 (asserted above); with NOREALLOC libjpeg-turbo writes at most
        // `len` bytes at `ptr` (our buffer, sized by tj3JPEGBufSize) and never frees it.
        let res = unsafe { raw::tj3CompressFromYUV8(self.tj.ptr, data.as_ptr(), w, 1, h, &mut ptr, &mut len) };
        if res != 0 {
            return Err(self.tj.error());
        }
        out.len = (len as usize).min(out.data.len());
        Ok(())
    }

    /// Encodes an interleaved image (e.g. RGB from a camera or a file) with the encoder's
    /// subsampling.
    pub fn encode_pixels(
        &mut self,
        pixels: &[u8],
        width: usize,
        height: usize,
        format: PixelFormat,
        out: &mut JpegBuf,
    ) -> Result<(), CodecError> {
        let subsamp = to_subsamp(self.subsampling);
        let pitch = width.checked_mul(format.size()).ok_or(turbojpeg::Error::IntegerOverflow("pitch"))?;
        let want = pitch.checked_mul(height).ok_or(turbojpeg::Error::IntegerOverflow("pixels"))?;
        if pixels.len() < want {
            return Err(turbojpeg::Error::TurboJpegError(format!(
                "{} bytes of pixels, expected {want} for {width}x{height} {format:?}",
                pixels.len()
            ))
            .into());
        }
        let (w, h, p) = (c_dim(width, "width")?, c_dim(height, "height")?, c_dim(pitch, "pitch")?);
        out.ensure(turbojpeg::compressed_buf_len(width, height, subsamp)?);
        self.tj.set(raw::TJPARAM_TJPARAM_SUBSAMP, subsamp as c_int)?;
        let mut ptr = out.data.as_mut_ptr();
        let mut len = out.data.len() as raw::size_t;
        // SAFETY: `pixels` holds `height` rows of `pitch` bytes (checked above); output as in
        // `compress_planar`.
        let res =
            unsafe { raw::tj3Compress8(self.tj.ptr, pixels.as_ptr(), w, p, h, format as c_int, &mut ptr, &mut len) };
        if res != 0 {
            return Err(self.tj.error());
        }
        out.len = (len as usize).min(out.data.len());
        Ok(())
    }
}

/// A decompressor handle with `speed`'s settings.
fn decompressor(speed: Speed) -> Result<Tj, CodecError> {
    let mut tj = Tj::new(raw::TJINIT_TJINIT_DECOMPRESS)?;
    tj.set(raw::TJPARAM_TJPARAM_FASTDCT, c_int::from(speed.fast_dct))?;
    tj.set(raw::TJPARAM_TJPARAM_FASTUPSAMPLE, c_int::from(speed.fast_upsample))?;
    Ok(tj)
}

/// The width and height `jpeg`'s header says, read with `tj`; `None` when the data ends
/// before a frame header (libjpeg-turbo does not call that an error).
fn read_size(tj: &mut Tj, jpeg: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    // SAFETY: reads at most `jpeg.len()` bytes of `jpeg`.
    if unsafe { raw::tj3DecompressHeader(tj.ptr, jpeg.as_ptr(), jpeg.len() as raw::size_t) } != 0 {
        return Err(tj.error());
    }
    let got_w = usize::try_from(tj.get(raw::TJPARAM_TJPARAM_JPEGWIDTH)).ok().filter(|&w| w > 0);
    let got_h = usize::try_from(tj.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT)).ok().filter(|&h| h > 0);
    Ok(got_w.zip(got_h))
}

/// Decompresses JPEG frames into `u32` 0RGB pixels. One per decode thread.
pub struct Decoder {
    tj: Tj,
    speed: Speed,
    /// The piece workers, with more than one thread.
    slices: Option<SliceDecoder>,
    last_cpu_us: u64,
    last_sliced: bool,
}

impl Decoder {
    pub fn new() -> Result<Self, CodecError> {
        Self::with_speed(Speed::default())
    }

    /// A decoder with libjpeg-turbo's fast IDCT and/or fast upsampling (see [`Speed`]).
    pub fn with_speed(speed: Speed) -> Result<Self, CodecError> {
        Ok(Decoder { tj: decompressor(speed)?, speed, slices: None, last_cpu_us: 0, last_sliced: false })
    }

    /// Decodes later JPEGs that have restart markers every whole number of MCU rows as up to
    /// `threads` pieces on as many threads (this one and `threads - 1` workers started now),
    /// each straight into its rows of the output. Other JPEGs decode on this thread as
    /// before. 0 or 1: one thread.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), CodecError> {
        self.slices = None;
        if threads > 1 {
            self.slices = Some(SliceDecoder::new(threads, self.speed)?);
        }
        Ok(())
    }

    /// CPU time the last `decode` took on every thread that worked on it, in microseconds.
    pub fn last_cpu_us(&self) -> u64 {
        self.last_cpu_us
    }

    /// Whether the last `decode` was done as pieces on more than one thread (with threads, a
    /// JPEG without restart markers, or any while slices do not pay, decodes on this one, and
    /// so does a JPEG whose pieces the workers got no CPU in time for).
    pub fn last_sliced(&self) -> bool {
        self.last_sliced
    }

    /// Decodes `jpeg`, which must be `width`x`height` (the size is checked from the JPEG's
    /// own header before any pixel is decoded, so a JPEG that claims a huge size costs
    /// nothing), into `out`, resized to `width * height` pixels.
    ///
    /// After any error the libjpeg-turbo handle is replaced: libjpeg-turbo 3.1 can leave a
    /// handle mid-header after a bad JPEG, failing every later frame (found by fuzzing).
    ///
    /// With threads, a JPEG whose restart markers are out of sequence or not as many as its
    /// DRI and size make is an error ([`CodecError::Restart`]).
    pub fn decode(&mut self, jpeg: &[u8], width: usize, height: usize, out: &mut Vec<u32>) -> Result<(), CodecError> {
        let t0 = thread_cpu_us();
        let mut workers_us = None;
        let res = self.decode_inner(jpeg, (width, height), out, &mut workers_us);
        self.last_cpu_us = thread_cpu_us().saturating_sub(t0) + workers_us.unwrap_or(0);
        self.last_sliced = workers_us.is_some();
        if res.is_err() {
            self.tj = decompressor(self.speed)?;
        }
        res
    }

    fn decode_inner(
        &mut self,
        jpeg: &[u8],
        size: (usize, usize),
        out: &mut Vec<u32>,
        workers_us: &mut Option<u64>,
    ) -> Result<(), CodecError> {
        let (width, height) = size;
        let Some(got) = read_size(&mut self.tj, jpeg)? else {
            let what = format!("the JPEG ends before its frame header (SOF marker), so it has no size; expected a {width}x{height} JPEG");
            return Err(turbojpeg::Error::TurboJpegError(what).into());
        };
        check_size(got, width, height)?;
        let pitch = c_dim(width.checked_mul(4).ok_or(turbojpeg::Error::IntegerOverflow("pitch"))?, "pitch")?;
        // Growing zero-fills once; a pooled buffer of the right size is left as it is.
        out.resize(width * height, 0);
        if let Some(slices) = &mut self.slices {
            if let Some(ran) = slices.decode(jpeg, width, out)? {
                *workers_us = ran.workers_cpu_us();
                return Ok(());
            }
        }
        let px = bytemuck::cast_slice_mut::<u32, u8>(out);
        // SAFETY: the header just read says the image is `width`x`height` (checked above), and
        // `px` holds `height` rows of `pitch` = 4 * `width` bytes, which is what a 4-byte
        // pixel format needs; no scaling factor is set on this handle.
        let res = unsafe {
            raw::tj3Decompress8(
                self.tj.ptr,
                jpeg.as_ptr(),
                jpeg.len() as raw::size_t,
                px.as_mut_ptr(),
                pitch,
                NATIVE_0RGB as c_int,
            )
        };
        if res != 0 {
            return Err(self.tj.error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pattern::TestPattern;
    use crate::testutil::{self, pattern_frame};

    /// PSNR in dB of decoded 0RGB pixels against RGB bytes.
    fn psnr(px: &[u32], rgb: &[u8]) -> f64 {
        testutil::psnr(&testutil::xrgb_to_rgb(px), rgb)
    }

    #[test]
    fn round_trip_quality_depends_on_quality() {
        let (w, h) = (320u32, 240u32);
        let f = pattern_frame(w, h, Subsampling::S420, 3);
        let want = TestPattern::new(w, h, Subsampling::S420).render_rgb(3);
        let mut dec = Decoder::new().unwrap();
        let mut px = Vec::new();
        let mut prev_len = 0;
        let mut prev_psnr = 0.0;
        for q in [30u8, 75, 95] {
            let mut enc = Encoder::new(q, Subsampling::S420, false).unwrap();
            let mut out = JpegBuf::default();
            let info = enc.encode(&f, &mut out).unwrap();
            assert_eq!(info.quality, q);
            assert_eq!(&out.as_slice()[..2], &[0xff, 0xd8], "JPEG SOI marker");
            dec.decode(out.as_slice(), w as usize, h as usize, &mut px).unwrap();
            let p = psnr(&px, &want);
            assert!(
                out.as_slice().len() > prev_len && p > prev_psnr,
                "q{q}: {} bytes, {p:.1} dB",
                out.as_slice().len()
            );
            prev_len = out.as_slice().len();
            prev_psnr = p;
        }
        assert!(prev_psnr > 30.0, "q95 PSNR {prev_psnr:.1}");
    }

    #[test]
    fn every_subsampling_encodes_from_planes() {
        for sub in [Subsampling::S444, Subsampling::S422, Subsampling::S420, Subsampling::Gray] {
            let f = pattern_frame(64, 48, sub, 0);
            let mut enc = Encoder::new(80, Subsampling::S420, false).unwrap();
            let mut out = JpegBuf::default();
            let info = enc.encode(&f, &mut out).unwrap();
            assert_eq!(info.subsampling, sub);
            let header = turbojpeg::read_header(out.as_slice()).unwrap();
            assert_eq!(from_subsamp(header.subsamp), Some(sub));
        }
    }

    #[test]
    fn output_buffer_is_reused() {
        let f = pattern_frame(320, 240, Subsampling::S420, 0);
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        let mut out = JpegBuf::default();
        enc.encode(&f, &mut out).unwrap();
        let ptr = out.data.as_ptr();
        for seq in 1..5 {
            enc.encode(&pattern_frame(320, 240, Subsampling::S420, seq), &mut out).unwrap();
        }
        assert_eq!(ptr, out.data.as_ptr());
    }

    #[test]
    fn jpeg_sources_pass_through_or_reencode() {
        let f = pattern_frame(64, 48, Subsampling::S420, 0);
        let mut out = JpegBuf::default();
        Encoder::new(90, Subsampling::S420, false).unwrap().encode(&f, &mut out).unwrap();
        let mut cam = RawFrame { layout: Layout::Jpeg, data: out.as_slice().to_vec(), ..f.clone() };
        let mut fwd = JpegBuf::default();
        let info = Encoder::new(20, Subsampling::S420, false).unwrap().encode(&cam, &mut fwd).unwrap();
        assert!(info.passthrough);
        assert_eq!(fwd.as_slice(), cam.data.as_slice());
        let mut re = JpegBuf::default();
        let info = Encoder::new(20, Subsampling::S420, true).unwrap().encode(&cam, &mut re).unwrap();
        assert!(!info.passthrough);
        assert_eq!(info.quality, 20);
        assert!(re.as_slice().len() < fwd.as_slice().len());
        cam.width = 65;
        assert!(matches!(
            Encoder::new(20, Subsampling::S420, false).unwrap().encode(&cam, &mut fwd),
            Err(CodecError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn odd_sized_jpeg_sources_reencode_at_every_subsampling() {
        // libjpeg-turbo pads the planes of an odd-sized subsampled image: a camera's or a
        // pipe's 333x211 MJPEG once made the encoder panic when re-encoded.
        for (w, h) in [(333usize, 211usize), (1, 1), (17, 2)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
            for subsamp in [turbojpeg::Subsamp::Sub2x2, turbojpeg::Subsamp::Sub2x1, turbojpeg::Subsamp::None] {
                let image = turbojpeg::Image {
                    pixels: &rgb[..],
                    width: w,
                    pitch: w * 3,
                    height: h,
                    format: turbojpeg::PixelFormat::RGB,
                };
                let jpeg = turbojpeg::compress(image, 85, subsamp).unwrap();
                let cam = RawFrame {
                    layout: Layout::Jpeg,
                    data: jpeg.to_vec(),
                    width: w as u32,
                    height: h as u32,
                    ..RawFrame::empty()
                };
                let mut re = JpegBuf::default();
                let info = Encoder::new(50, Subsampling::S420, true).unwrap().encode(&cam, &mut re).unwrap();
                assert!(!info.passthrough, "{w}x{h} {subsamp:?}");
                let header = turbojpeg::read_header(re.as_slice()).unwrap();
                assert_eq!((header.width, header.height), (w, h), "{subsamp:?}");
            }
        }
    }

    #[test]
    fn corrupt_and_mismatched_jpeg_are_errors() {
        let f = pattern_frame(64, 48, Subsampling::S420, 0);
        let mut out = JpegBuf::default();
        Encoder::new(75, Subsampling::S420, false).unwrap().encode(&f, &mut out).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut px = Vec::new();
        let e = dec.decode(out.as_slice(), 640, 480, &mut px).unwrap_err();
        assert!(e.to_string().contains("JPEG is 64x48 but the frame header says 640x480"), "{e}");
        assert!(dec.decode(b"definitely not a jpeg", 64, 48, &mut px).is_err());
        let truncated = &out.as_slice()[..out.as_slice().len() / 3];
        // libjpeg-turbo may decode a truncated scan as a warning-level error; either way no panic.
        let _ = dec.decode(truncated, 64, 48, &mut px);
        // The decoder is still usable afterwards.
        dec.decode(out.as_slice(), 64, 48, &mut px).unwrap();
    }

    #[test]
    fn decoder_and_reencoder_recover_after_a_bad_header() {
        // Found by fuzzing: libjpeg-turbo 3.1 leaves a handle mid-header after this.
        let bad = [0xff, 0xd8, 0xff, 0xc0, 0x00, 0x00];
        let f = pattern_frame(64, 48, Subsampling::S420, 0);
        let mut good = JpegBuf::default();
        Encoder::new(75, Subsampling::S420, false).unwrap().encode(&f, &mut good).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut px = Vec::new();
        for _ in 0..3 {
            assert!(dec.decode(&bad, 64, 48, &mut px).is_err());
            dec.decode(good.as_slice(), 64, 48, &mut px).expect("a good frame decodes after a bad one");
        }
        let mut enc = Encoder::new(60, Subsampling::S420, true).unwrap();
        let mut out = JpegBuf::default();
        let cam = |data: &[u8]| RawFrame { layout: Layout::Jpeg, data: data.to_vec(), ..f.clone() };
        assert!(enc.encode(&cam(&bad), &mut out).is_err());
        enc.encode(&cam(good.as_slice()), &mut out).expect("re-encoding works after a bad camera frame");
        let mut big = cam(good.as_slice());
        big.width = 32;
        assert!(
            matches!(enc.encode(&big, &mut out), Err(CodecError::SizeMismatch { .. })),
            "size checked before decoding"
        );
    }

    #[test]
    fn fast_settings_change_pixels_but_cost_little_quality() {
        let (w, h) = (320u32, 240u32);
        let f = pattern_frame(w, h, Subsampling::S420, 7);
        let want = TestPattern::new(w, h, Subsampling::S420).render_rgb(7);
        let run = |enc_speed: Speed, dec_speed: Speed| {
            let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
            enc.set_speed(enc_speed).unwrap();
            let mut out = JpegBuf::default();
            enc.encode(&f, &mut out).unwrap();
            let mut px = Vec::new();
            Decoder::with_speed(dec_speed).unwrap().decode(out.as_slice(), w as usize, h as usize, &mut px).unwrap();
            (out.as_slice().to_vec(), psnr(&px, &want), px)
        };
        let fast = Speed { fast_dct: true, fast_upsample: true };
        let (jpeg, p_acc, px_acc) = run(Speed::default(), Speed::default());
        let (jpeg_fast, p_fdct, _) = run(Speed { fast_dct: true, ..Speed::default() }, Speed::default());
        assert_ne!(jpeg, jpeg_fast, "the fast DCT makes another JPEG");
        let (_, p_fup, px_fup) = run(Speed::default(), Speed { fast_upsample: true, ..Speed::default() });
        assert_ne!(px_acc, px_fup, "fast upsampling changes the pixels");
        let (_, p_all, _) = run(fast, fast);
        // The reference RGB is made with libjpeg's smooth upsampling, so nearest-neighbour
        // chroma loses much more against it (at the pattern's hard colour edges) than the DCT.
        assert!(p_fdct < p_acc && p_fdct > p_acc - 2.0, "fast DCT: {p_fdct:.2} dB vs {p_acc:.2} dB accurate");
        assert!(p_fup < p_acc - 2.0 && p_fup > 25.0, "fast upsampling: {p_fup:.2} dB vs {p_acc:.2} dB accurate");
        assert!(p_all < p_fup && p_all > 25.0, "all fast: {p_all:.2} dB vs {p_fup:.2} dB");
    }

    #[test]
    fn short_pixel_buffer_is_an_error() {
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        let e = enc.encode_pixels(&[0; 100], 64, 48, PixelFormat::RGB, &mut JpegBuf::default()).unwrap_err();
        assert!(e.to_string().contains("expected 9216"), "{e}");
        let mut out = JpegBuf::default();
        enc.encode_pixels(&[128; 64 * 48 * 3], 64, 48, PixelFormat::RGB, &mut out).unwrap();
        assert_eq!(turbojpeg::read_header(out.as_slice()).unwrap().width, 64);
    }

    #[test]
    fn bad_raw_length_is_an_error() {
        let mut f = pattern_frame(64, 48, Subsampling::S420, 0);
        f.data.pop();
        let e = Encoder::new(75, Subsampling::S420, false).unwrap().encode(&f, &mut JpegBuf::default()).unwrap_err();
        assert!(e.to_string().contains("expected 4608"), "{e}");
    }
}
