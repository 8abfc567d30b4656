//! Cameras through nokhwa (V4L2 on Linux, AVFoundation on macOS, Media Foundation on Windows).
//!
//! A camera is opened at an exact format from the list it reports: MJPEG first (forwarded
//! without re-encoding when it fits the request), then YUYV or NV12 (converted to planar
//! YCbCr here, then compressed straight from YUV). The pixel conversions are plain functions
//! so they can be tested on generated buffers where no camera exists.

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use nokhwa::Camera;

use super::{chroma_size, CaptureError, FrameSource, Layout, RawFrame};
use crate::format::Subsampling;

/// A camera and the formats it offers.
#[derive(Clone, Debug)]
pub struct CameraListing {
    pub index: u32,
    pub name: String,
    pub formats: Vec<FormatInfo>,
}

/// One capture format: size, frame rate and pixel format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatInfo {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pixel: PixelFormat,
}

/// Camera pixel formats framecast can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
    Gray,
    Other,
}

impl std::fmt::Display for FormatInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} @ {} fps {:?}", self.width, self.height, self.fps, self.pixel)
    }
}

fn pixel_of(f: FrameFormat) -> PixelFormat {
    match f {
        FrameFormat::MJPEG => PixelFormat::Mjpeg,
        FrameFormat::YUYV => PixelFormat::Yuyv,
        FrameFormat::NV12 => PixelFormat::Nv12,
        FrameFormat::GRAY => PixelFormat::Gray,
        _ => PixelFormat::Other,
    }
}

fn info_of(f: &CameraFormat) -> FormatInfo {
    FormatInfo { width: f.width(), height: f.height(), fps: f.frame_rate(), pixel: pixel_of(f.format()) }
}

fn backend() -> Result<ApiBackend, CaptureError> {
    nokhwa::native_api_backend().ok_or_else(|| CaptureError::Camera("no camera backend for this platform".into()))
}

fn open_camera(index: u32) -> Result<Camera, CaptureError> {
    let req = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
    Camera::with_backend(CameraIndex::Index(index), req, backend()?)
        .map_err(|e| CaptureError::Camera(format!("cannot open camera:{index}: {e}")))
}

/// Lists the cameras and their formats. An empty list means no camera was found.
pub fn list() -> Result<Vec<CameraListing>, CaptureError> {
    let infos = nokhwa::query(backend()?).map_err(|e| CaptureError::Camera(format!("cannot list cameras: {e}")))?;
    let mut out = Vec::new();
    for info in infos {
        let Ok(index) = info.index().as_index() else { continue };
        let formats = match open_camera(index)
            .and_then(|mut c| c.compatible_camera_formats().map_err(|e| CaptureError::Camera(e.to_string())))
        {
            Ok(f) => f.iter().map(info_of).collect(),
            Err(e) => {
                tracing::warn!(camera = index, error = %e, "cannot read formats");
                Vec::new()
            }
        };
        out.push(CameraListing { index, name: info.human_name(), formats });
    }
    Ok(out)
}

/// Picks the format to open for `want` (width, height) at `fps` (0: the fastest offered):
/// the exact size, MJPEG before YUYV before NV12 before GRAY, the exact rate or else the
/// fastest. `None` if the camera has no usable format of that size.
pub fn choose_format(formats: &[FormatInfo], want: (u32, u32), fps: u32) -> Option<FormatInfo> {
    let usable = |f: &&FormatInfo| f.width == want.0 && f.height == want.1 && f.pixel != PixelFormat::Other;
    let exact =
        formats.iter().filter(usable).filter(|f| fps == 0 || f.fps == fps).min_by_key(|f| (f.pixel, u32::MAX - f.fps));
    exact.or_else(|| formats.iter().filter(usable).min_by_key(|f| (u32::MAX - f.fps, f.pixel))).copied()
}

/// Converts packed YUYV (Y0 Cb Y1 Cr) to tightly packed planar 4:2:2, 4:2:0 (chroma of two
/// rows averaged) or gray.
pub fn yuyv_to_planar(
    src: &[u8],
    width: u32,
    height: u32,
    sub: Subsampling,
    out: &mut Vec<u8>,
) -> Result<(), CaptureError> {
    let (w, h) = (width as usize, height as usize);
    let need = w * h * 2;
    if w % 2 == 1 || src.len() < need {
        return Err(CaptureError::BadFrame(format!(
            "YUYV {width}x{height}: got {} bytes, expected {need} (and an even width)",
            src.len()
        )));
    }
    let (cw, ch) = chroma_size(width, height, sub);
    out.clear();
    out.resize(w * h + 2 * cw * ch, 0);
    let (y_plane, chroma) = out.split_at_mut(w * h);
    for (dst, row) in y_plane.chunks_exact_mut(w).zip(src.chunks_exact(w * 2)) {
        for (d, px) in dst.iter_mut().zip(row.chunks_exact(2)) {
            *d = px[0];
        }
    }
    if cw == 0 {
        return Ok(());
    }
    let (cb, cr) = chroma.split_at_mut(cw * ch);
    match sub {
        Subsampling::S422 => {
            for (i, quad) in src[..need].chunks_exact(4).enumerate() {
                cb[i] = quad[1];
                cr[i] = quad[3];
            }
        }
        Subsampling::S420 => {
            for cy in 0..ch {
                let r0 = &src[(2 * cy) * w * 2..][..w * 2];
                let r1 = &src[(2 * cy + 1).min(h - 1) * w * 2..][..w * 2];
                for cx in 0..cw {
                    let avg = |o: usize| (u16::from(r0[cx * 4 + o]) + u16::from(r1[cx * 4 + o])).div_ceil(2) as u8;
                    cb[cy * cw + cx] = avg(1);
                    cr[cy * cw + cx] = avg(3);
                }
            }
        }
        Subsampling::S444 | Subsampling::Gray => unreachable!("callers ask for 4:2:2, 4:2:0 or gray"),
    }
    Ok(())
}

/// Converts NV12 (Y plane, then interleaved Cb/Cr at half resolution) to planar 4:2:0.
pub fn nv12_to_i420(src: &[u8], width: u32, height: u32, out: &mut Vec<u8>) -> Result<(), CaptureError> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = chroma_size(width, height, Subsampling::S420);
    let need = w * h + 2 * cw * ch;
    if src.len() < need {
        return Err(CaptureError::BadFrame(format!("NV12 {width}x{height}: got {} bytes, expected {need}", src.len())));
    }
    out.clear();
    out.extend_from_slice(&src[..w * h]);
    out.resize(need, 0);
    let (cb, cr) = out[w * h..].split_at_mut(cw * ch);
    for (i, pair) in src[w * h..need].chunks_exact(2).enumerate() {
        cb[i] = pair[0];
        cr[i] = pair[1];
    }
    Ok(())
}

/// A camera opened at one exact format.
pub struct CameraSource {
    cam: Camera,
    index: u32,
    format: FormatInfo,
    /// Planar layout to convert raw formats to.
    target: Subsampling,
    next: u64,
}

impl CameraSource {
    /// Opens camera `index` at `want` size and `fps` (0: fastest offered). Raw formats are
    /// converted to `sub` (4:4:4 is not offered by cameras' YUYV, so it becomes 4:2:2).
    pub fn open(index: u32, want: (u32, u32), fps: u32, sub: Subsampling) -> Result<Self, CaptureError> {
        let cameras = list()?;
        if cameras.is_empty() {
            return Err(CaptureError::Camera(
                "no cameras found (is one plugged in, and may this user open /dev/video*?)".into(),
            ));
        }
        let Some(listing) = cameras.iter().find(|c| c.index == index) else {
            let names: Vec<String> = cameras.iter().map(|c| format!("camera:{} ({})", c.index, c.name)).collect();
            return Err(CaptureError::Camera(format!("camera:{index} not found; cameras: {}", names.join(", "))));
        };
        let Some(format) = choose_format(&listing.formats, want, fps) else {
            let offered: Vec<String> = listing.formats.iter().map(|f| f.to_string()).collect();
            return Err(CaptureError::Camera(format!(
                "camera:{index} ({}) offers no MJPEG/YUYV/NV12/GRAY format at {}x{}; it offers: {} (use --size)",
                listing.name,
                want.0,
                want.1,
                offered.join(", ")
            )));
        };
        if fps != 0 && format.fps != fps {
            tracing::warn!(
                camera = index,
                asked = fps,
                got = format.fps,
                "camera has no format at the asked frame rate"
            );
        }
        let mut cam = open_camera(index)?;
        let frame_format = match format.pixel {
            PixelFormat::Mjpeg => FrameFormat::MJPEG,
            PixelFormat::Yuyv => FrameFormat::YUYV,
            PixelFormat::Nv12 => FrameFormat::NV12,
            PixelFormat::Gray | PixelFormat::Other => FrameFormat::GRAY,
        };
        let exact = CameraFormat::new_from(format.width, format.height, frame_format, format.fps);
        let formats = [frame_format];
        cam.set_camera_requset(RequestedFormat::with_formats(RequestedFormatType::Exact(exact), &formats))
            .map_err(|e| CaptureError::Camera(format!("camera:{index}: cannot set {format}: {e}")))?;
        cam.open_stream().map_err(|e| CaptureError::Camera(format!("camera:{index}: cannot start streaming: {e}")))?;
        let target = match (format.pixel, sub) {
            (PixelFormat::Gray, _) => Subsampling::Gray,
            (PixelFormat::Nv12, Subsampling::Gray) => Subsampling::Gray,
            (PixelFormat::Nv12, _) => Subsampling::S420,
            (_, Subsampling::S444) => Subsampling::S422,
            (_, s) => s,
        };
        Ok(CameraSource { cam, index, format, target, next: 0 })
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        format!("camera:{} ({}) {}", self.index, self.cam.info().human_name(), self.format)
    }

    fn size(&self) -> (u32, u32) {
        (self.format.width, self.format.height)
    }

    fn self_paced(&self) -> bool {
        true
    }

    fn delivers_jpeg(&self) -> bool {
        self.format.pixel == PixelFormat::Mjpeg
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let raw = self.cam.frame_raw().map_err(|e| CaptureError::Camera(format!("camera:{}: {e}", self.index)))?;
        let (w, h) = (self.format.width, self.format.height);
        match self.format.pixel {
            PixelFormat::Mjpeg => {
                frame.data.clear();
                frame.data.extend_from_slice(&raw);
                frame.layout = Layout::Jpeg;
            }
            PixelFormat::Yuyv => {
                if self.target == Subsampling::Gray {
                    yuyv_to_planar(&raw, w, h, Subsampling::Gray, &mut frame.data)?;
                } else {
                    yuyv_to_planar(&raw, w, h, self.target, &mut frame.data)?;
                }
                frame.layout = Layout::Yuv(self.target);
            }
            PixelFormat::Nv12 => {
                nv12_to_i420(&raw, w, h, &mut frame.data)?;
                if self.target == Subsampling::Gray {
                    frame.data.truncate((w * h) as usize);
                }
                frame.layout = Layout::Yuv(self.target);
            }
            PixelFormat::Gray | PixelFormat::Other => {
                let need = (w * h) as usize;
                if raw.len() < need {
                    return Err(CaptureError::BadFrame(format!(
                        "GRAY {w}x{h}: got {} bytes, expected {need}",
                        raw.len()
                    )));
                }
                frame.data.clear();
                frame.data.extend_from_slice(&raw[..need]);
                frame.layout = Layout::Yuv(Subsampling::Gray);
            }
        }
        frame.seq = self.next;
        frame.width = w;
        frame.height = h;
        self.next += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(w: u32, h: u32, fps: u32, pixel: PixelFormat) -> FormatInfo {
        FormatInfo { width: w, height: h, fps, pixel }
    }

    #[test]
    fn prefers_mjpeg_at_the_exact_size_and_rate() {
        let formats = [
            f(1280, 720, 30, PixelFormat::Yuyv),
            f(1280, 720, 30, PixelFormat::Mjpeg),
            f(1280, 720, 60, PixelFormat::Mjpeg),
            f(640, 480, 30, PixelFormat::Mjpeg),
        ];
        assert_eq!(choose_format(&formats, (1280, 720), 30), Some(formats[1]));
        assert_eq!(choose_format(&formats, (1280, 720), 0), Some(formats[2]));
        assert_eq!(choose_format(&formats, (1280, 720), 15), Some(formats[2]), "fastest when the rate is not offered");
        assert_eq!(choose_format(&formats, (1920, 1080), 30), None);
        assert_eq!(choose_format(&[f(640, 480, 30, PixelFormat::Other)], (640, 480), 30), None);
    }

    /// A YUYV frame whose samples encode their own position.
    fn yuyv(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 2);
        for y in 0..h {
            for x in (0..w).step_by(2) {
                v.extend_from_slice(&[(x + y) as u8, (10 + y) as u8, (x + y + 1) as u8, (100 + y) as u8]);
            }
        }
        v
    }

    #[test]
    fn yuyv_to_422_and_420() {
        let src = yuyv(4, 2);
        let mut out = Vec::new();
        yuyv_to_planar(&src, 4, 2, Subsampling::S422, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 2, 3, 1, 2, 3, 4, 10, 10, 11, 11, 100, 100, 101, 101]);
        yuyv_to_planar(&src, 4, 2, Subsampling::S420, &mut out).unwrap();
        // Chroma of rows 0 and 1 averaged, rounding up: (10+11+1)/2 = 11, (100+101+1)/2 = 101.
        assert_eq!(out, vec![0, 1, 2, 3, 1, 2, 3, 4, 11, 11, 101, 101]);
        yuyv_to_planar(&src, 4, 2, Subsampling::Gray, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 2, 3, 1, 2, 3, 4]);
    }

    #[test]
    fn short_or_odd_yuyv_is_an_error_naming_both_sizes() {
        let mut out = Vec::new();
        let e = yuyv_to_planar(&[0; 10], 4, 2, Subsampling::S422, &mut out).unwrap_err().to_string();
        assert!(e.contains("got 10 bytes, expected 16"), "{e}");
        assert!(yuyv_to_planar(&[0; 100], 3, 2, Subsampling::S422, &mut out).is_err());
    }

    #[test]
    fn nv12_deinterleaves_chroma() {
        let src = [1, 2, 3, 4, 5, 6, 7, 8, 50, 60, 51, 61];
        let mut out = Vec::new();
        nv12_to_i420(&src, 4, 2, &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6, 7, 8, 50, 51, 60, 61]);
        assert!(nv12_to_i420(&src[..11], 4, 2, &mut out).is_err());
    }
}
