//! Raw frames from a pipe or file (`--input-format i420|nv12|yuyv|rgb24|bgr24 --size WxH`:
//! `rpicam-vid --codec yuv420 -o -`, `ffmpeg -f rawvideo -pix_fmt ...`), converted to the
//! planar [`Layout::Yuv`](super::Layout) the encoder takes (colour conversion by
//! libjpeg-turbo or plain functions like the camera's; no hand-written DCT).

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
