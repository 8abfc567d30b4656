//! Frame sources, run by the sender's `capture` thread: the built-in test pattern
//! ([`pattern`]), Y4M files ([`y4m`]), cameras through nokhwa ([`camera`]), pipes and files of
//! MJPEG, Y4M or raw frames ([`pipe`], [`raw`], split with [`mjpeg`]), HTTP cameras
//! ([`http`]) and RTSP cameras ([`rtsp`]), all behind [`FrameSource`]. Sources fill
//! caller-owned [`RawFrame`] buffers, so capture does not allocate per frame.

pub mod camera;
pub mod fault;
pub mod http;
pub mod mjpeg;
pub mod nosignal;
pub mod pattern;
pub mod pipe;
pub mod range;
pub mod raw;
pub mod rtsp;
pub mod scale;
pub mod y4m;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::format::Subsampling;

/// How the bytes of a [`RawFrame`] are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Planar YCbCr, full range (JFIF), planes tightly packed one after another: Y, then Cb,
    /// then Cr (no chroma planes for `Gray`).
    Yuv(Subsampling),
    /// A complete JPEG (a camera's MJPEG).
    Jpeg,
}

/// One captured frame in a reusable buffer.
#[derive(Clone, Debug)]
pub struct RawFrame {
    /// Source frame number, from 0.
    pub seq: u64,
    /// Capture time, µs on [`crate::clock::now_us`].
    pub capture_us: u64,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
    /// A "no signal" card sent while the source is lost, not a captured frame (the rate
    /// controller does not learn from it).
    pub no_signal: bool,
}

impl RawFrame {
    pub fn empty() -> Self {
        RawFrame {
            seq: 0,
            capture_us: 0,
            width: 0,
            height: 0,
            layout: Layout::Jpeg,
            data: Vec::new(),
            no_signal: false,
        }
    }
}

/// Bytes in a tightly packed planar frame.
pub fn yuv_len(width: u32, height: u32, sub: Subsampling) -> usize {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = chroma_size(width, height, sub);
    w * h + 2 * cw * ch
}

/// Width and height of each chroma plane (0x0 for gray).
pub fn chroma_size(width: u32, height: u32, sub: Subsampling) -> (usize, usize) {
    let (w, h) = (width as usize, height as usize);
    match sub {
        Subsampling::S444 => (w, h),
        Subsampling::S422 => (w.div_ceil(2), h),
        Subsampling::S420 => (w.div_ceil(2), h.div_ceil(2)),
        Subsampling::Gray => (0, 0),
    }
}

/// The largest JPEG image accepted from a pipe or a network source, which could otherwise
/// claim or grow without bound: with `--size` known, four bytes a pixel (more than a q100
/// 4:4:4 JPEG of noise takes) plus 64 KiB of headers; else 32 MiB.
pub fn max_image_bytes(size: Option<(u32, u32)>) -> usize {
    match size {
        Some((w, h)) => (w as usize * h as usize * 4 + 65536).min(MAX_IMAGE_BYTES),
        None => 32 << 20,
    }
}

/// No JPEG larger than this is accepted from a pipe or the network at all (7680x4320 at four
/// bytes a pixel).
pub const MAX_IMAGE_BYTES: usize = 7680 * 4320 * 4;

/// Errors from a source. Each names what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    #[error("camera: {0}")]
    Camera(String),
    #[error("frame from the camera: {0}")]
    BadFrame(String),
    /// A network source (HTTP, RTSP) or a FIFO failed: the capture thread sends no-signal
    /// cards and reopens it with backoff. `name` is the URL (credentials removed) or path.
    #[error("{name}: {what}")]
    Remote { name: String, what: String },
}

/// A source of frames.
pub trait FrameSource {
    /// A one-line description for the log.
    fn describe(&self) -> String;
    /// Frame size in pixels.
    fn size(&self) -> (u32, u32);
    /// True if the source delivers frames at its own pace (a camera); false if the capture
    /// thread must pace it to `--fps`.
    fn self_paced(&self) -> bool {
        false
    }
    /// True if frames arrive as JPEG that can be forwarded without re-encoding.
    fn delivers_jpeg(&self) -> bool {
        false
    }
    /// Fills `frame` with the next frame (size, layout and data; the caller sets `seq` and
    /// `capture_us` if the source does not). Returns `Ok(false)` at the end of the source.
    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError>;
}

/// Why the thread running a source should give up a blocking wait: the stop flags (Ctrl-C,
/// the pipeline's own end) and the `--duration` deadline. The capture thread sets it (with
/// [`set_interrupt`]) before it opens a source or asks for a frame; sources run on that thread
/// and look at it with [`interrupted`] between bounded waits (a pipe's polls, an HTTP
/// camera's reads), so that a silent source cannot hold the run past a stop.
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    pub stops: Vec<Arc<AtomicBool>>,
    pub deadline: Option<Instant>,
}

impl Interrupt {
    /// True once a stop flag is set or the deadline has passed.
    pub fn due(&self) -> bool {
        self.stops.iter().any(|s| s.load(Ordering::Relaxed)) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

thread_local! {
    static INTERRUPT: RefCell<Interrupt> = RefCell::new(Interrupt::default());
}

/// Sets this thread's [`Interrupt`] (the capture thread's stop flags and deadline).
pub fn set_interrupt(interrupt: Interrupt) {
    INTERRUPT.with(|i| *i.borrow_mut() = interrupt);
}

/// True if the thread's [`Interrupt`] is due: a source should stop waiting and fail (the
/// capture thread then ends cleanly). Always false on a thread that set none.
pub fn interrupted() -> bool {
    INTERRUPT.with(|i| i.borrow().due())
}

/// The `--source` flag, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    TestPattern,
    Camera(u32),
    /// A regular file named `*.y4m` (seekable: `--loop` works).
    Y4m(PathBuf),
    /// `-`: standard input (MJPEG, Y4M or raw; see [`pipe`]).
    Stdin,
    /// Any other existing path: a FIFO, a character device or a file of MJPEG, Y4M or raw
    /// frames (see [`pipe`]).
    Path(PathBuf),
    /// `http://` or `https://`: a multipart MJPEG stream or a JPEG snapshot (see [`http`]).
    Http(String),
    /// `rtsp://`: an RTSP camera sending RTP/JPEG (see [`rtsp`]).
    Rtsp(String),
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "test" => Ok(SourceSpec::TestPattern),
            "camera" => Ok(SourceSpec::Camera(0)),
            _ => {
                if let Some(n) = s.strip_prefix("camera:") {
                    return n
                        .parse()
                        .map(SourceSpec::Camera)
                        .map_err(|_| format!("'{s}': expected camera:N with N a camera index (0, 1, ...)"));
                }
                if s == "-" {
                    return Ok(SourceSpec::Stdin);
                }
                let lower = s.to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    return Ok(SourceSpec::Http(s.to_string()));
                }
                if lower.starts_with("rtsp://") {
                    return Ok(SourceSpec::Rtsp(s.to_string()));
                }
                let p = PathBuf::from(s);
                if lower.ends_with(".y4m") && p.is_file() {
                    return Ok(SourceSpec::Y4m(p));
                }
                if p.exists() {
                    return Ok(SourceSpec::Path(p));
                }
                if lower.ends_with(".y4m") || s.contains('/') {
                    return Err(format!("'{s}': no such file"));
                }
                Err(format!(
                    "'{s}' is not a source: expected 'test', 'camera', 'camera:N', '-' (standard input), a FILE or FIFO, or an http:// or rtsp:// URL"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!("test".parse::<SourceSpec>(), Ok(SourceSpec::TestPattern));
        assert_eq!("camera".parse::<SourceSpec>(), Ok(SourceSpec::Camera(0)));
        assert_eq!("camera:2".parse::<SourceSpec>(), Ok(SourceSpec::Camera(2)));
        assert!("camera:x".parse::<SourceSpec>().unwrap_err().contains("camera:N"));
        assert!("/nonexistent/a.y4m".parse::<SourceSpec>().unwrap_err().contains("no such file"));
        assert!("webcam".parse::<SourceSpec>().unwrap_err().contains("expected 'test'"));
        assert_eq!("-".parse::<SourceSpec>(), Ok(SourceSpec::Stdin));
        assert_eq!("/dev/stdin".parse::<SourceSpec>(), Ok(SourceSpec::Path("/dev/stdin".into())));
        assert!("/no/such/pipe".parse::<SourceSpec>().unwrap_err().contains("no such file"));
        assert_eq!("http://cam/x".parse::<SourceSpec>(), Ok(SourceSpec::Http("http://cam/x".into())));
        assert_eq!("RTSP://cam/x".parse::<SourceSpec>(), Ok(SourceSpec::Rtsp("RTSP://cam/x".into())));
    }

    #[test]
    fn plane_sizes() {
        assert_eq!(yuv_len(640, 480, Subsampling::S420), 640 * 480 * 3 / 2);
        assert_eq!(yuv_len(640, 480, Subsampling::S422), 640 * 480 * 2);
        assert_eq!(yuv_len(640, 480, Subsampling::S444), 640 * 480 * 3);
        assert_eq!(yuv_len(640, 480, Subsampling::Gray), 640 * 480);
        assert_eq!(chroma_size(5, 3, Subsampling::S420), (3, 2));
    }

    #[test]
    fn the_interrupt_is_per_thread_and_follows_its_flags_and_deadline() {
        let stop = Arc::new(AtomicBool::new(false));
        set_interrupt(Interrupt { stops: vec![stop.clone()], deadline: None });
        assert!(!interrupted());
        stop.store(true, Ordering::Relaxed);
        assert!(interrupted());
        assert!(!std::thread::spawn(interrupted).join().unwrap(), "another thread is not interrupted");
        set_interrupt(Interrupt { stops: Vec::new(), deadline: Some(Instant::now()) });
        assert!(interrupted());
        set_interrupt(Interrupt::default());
        assert!(!interrupted());
    }
}
