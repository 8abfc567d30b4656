//! Pipes and files: `--source -` (standard input) and `--source PATH` (a FIFO, a character
//! device or a file). The format is recognised from the first bytes ([`InputFormat::Auto`]) or
//! named by `--input-format`, and stated in the log: MJPEG (forwarded without re-encoding,
//! split by [`super::mjpeg`]), Y4M ([`super::y4m`]), or raw frames ([`super::raw`]).
//!
//! What kind of input it is decides the rest ([`Input`]):
//! - a pipe (standard input from a producer), a FIFO or a device is live: frames are read as
//!   they come (self-paced; a live producer must never be slowed, or latency grows in the
//!   pipe), and capture time is when a frame's last byte was read;
//! - a regular file (a path, or standard input redirected from one) is paced at `--fps` and
//!   may `--loop`;
//! - the end of standard input or of a file between frames ends the stream; a FIFO's writer
//!   closing, or a device ending, is a [`CaptureError::Remote`], so the capture thread sends
//!   "no signal" and reopens the FIFO (waiting at most [`REOPEN_WAIT`] for a writer each time,
//!   never blocking in `open`);
//! - input that is not what it should be (garbage, a cut JPEG, a lying Y4M header, raw input
//!   that is not a whole frame) is a [`CaptureError::File`]: the stream ends with that error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::mjpeg::{preview, MjpegReader, ScanError};
use super::range::{self, InputRange};
use super::raw::{InputFormat, RawSource};
use super::y4m::Y4mSource;
use super::{max_image_bytes, CaptureError, FrameSource, Layout, RawFrame};
use crate::format::Subsampling;
use crate::net::proto::MAX_DIMENSION;

/// What to open.
#[derive(Clone, Debug)]
pub struct PipeSpec {
    /// `None`: standard input.
    pub path: Option<PathBuf>,
    pub format: InputFormat,
    /// `--size`, if given (needed for raw frames; else it only sets the size cap).
    pub size: Option<(u32, u32)>,
    /// `--loop`: a regular file starts over at its end.
    pub looping: bool,
    /// `--subsampling`: the planar layout raw RGB and YUYV frames are converted to.
    pub subsampling: Subsampling,
    /// `--input-range`: whether Y4M and raw YUV samples are stretched from video range.
    pub range: InputRange,
}

/// How long a reopen waits for a FIFO's new writer before the capture thread gets control
/// back (to send a no-signal card and try again after its backoff).
pub const REOPEN_WAIT: Duration = Duration::from_millis(500);

/// Opens the pipe or file and recognises its format. A FIFO is waited on until a writer
/// opens it (as `cat` would).
pub fn open(spec: &PipeSpec) -> Result<Box<dyn FrameSource>, CaptureError> {
    open_with(spec, None)
}

/// The capture thread's source factory: [`open`] the first time; later (reopening a FIFO
/// whose writer left) waiting at most [`REOPEN_WAIT`] for a new writer.
pub fn factory(spec: PipeSpec) -> impl FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send {
    let mut opened = false;
    move || {
        let wait = opened.then_some(REOPEN_WAIT);
        opened = true;
        open_with(&spec, wait)
    }
}

fn open_with(spec: &PipeSpec, wait: Option<Duration>) -> Result<Box<dyn FrameSource>, CaptureError> {
    let mut input = Input::open(spec.path.as_deref(), wait)?;
    if spec.looping && !input.origin.regular() {
        return Err(input.origin.fatal("--loop needs a regular file, which can start over; this is a pipe or device"));
    }
    input.looping = spec.looping;
    let format = match spec.format {
        InputFormat::Auto => sniff(&mut input)?,
        f => f,
    };
    let name = input.origin.name.clone();
    match format {
        InputFormat::Mjpeg => Ok(Box::new(MjpegSource::open(input, spec.size)?)),
        InputFormat::Y4m => {
            let looping = input.looping;
            let origin = input.origin().clone();
            let y4m = Y4mSource::from_reader(input, Path::new(&name), looping, true)?;
            if let Some(s) = spec.size.filter(|&s| s != y4m.size()) {
                warn!(size = ?s, y4m = ?y4m.size(), "--size does not apply to Y4M: the header's size is used");
            }
            let (w, h) = y4m.size();
            let limited = spec.range.limited(y4m.limited_range());
            info!(width = w, height = h, planar = %y4m.subsampling(), limited_range = limited, "pipe source: Y4M from {name}");
            Ok(range::wrap(Y4mPipe { y4m, origin, frames: 0 }, limited))
        }
        f => {
            // RGB becomes full-range YCbCr in libjpeg-turbo: only YUV input is stretched.
            let limited = !matches!(f, InputFormat::Rgb24 | InputFormat::Bgr24) && spec.range.limited(None);
            Ok(range::wrap(RawSource::new(input, f, spec.size, spec.subsampling)?, limited))
        }
    }
}

/// Recognises MJPEG (FF D8) or Y4M (`YUV4MPEG2 `) from the first bytes, which `input` then
/// reads again.
fn sniff(input: &mut Input) -> Result<InputFormat, CaptureError> {
    const Y4M: &[u8] = b"YUV4MPEG2 ";
    let mut head = [0u8; 10];
    let mut n = 0;
    let found = loop {
        let seen = &head[..n];
        if seen.len() >= 2 && seen[..2] == [0xFF, 0xD8] {
            break Some(InputFormat::Mjpeg);
        }
        if seen == Y4M {
            break Some(InputFormat::Y4m);
        }
        let maybe = (!seen.is_empty() && seen[0] == 0xFF && seen.len() < 2) || Y4M.starts_with(seen);
        if !maybe {
            break None;
        }
        match input.read_file(&mut head[n..]) {
            Ok(0) => break None,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(input.origin.lost(format!("cannot read: {e}"))),
        }
    };
    input.prefix = head[..n].to_vec();
    found.ok_or_else(|| {
        let what = if n == 0 {
            "the input ended before any frame; expected MJPEG or Y4M (or raw frames with --input-format)".to_string()
        } else {
            // gst-launch-1.0 without -q prints "Setting pipeline to PAUSED ..." on stdout.
            let gst = if head[..n].starts_with(b"Setting") { " (gst-launch-1.0 prints that on standard output: give it -q)" } else { "" };
            format!(
                "expected MJPEG (FF D8) or Y4M ('YUV4MPEG2 ') in the first bytes, found {}{gst}; raw frames need --input-format i420|nv12|yuyv|rgb24|bgr24 and --size WxH",
                preview(&head[..n])
            )
        };
        if n == 0 {
            input.origin.cut(what)
        } else {
            input.origin.fatal(what)
        }
    })
}

/// What kind of input a pipe source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Standard input from a pipe (or a socket, a terminal).
    Stdin,
    Fifo,
    /// A character device, or anything else that is not a regular file.
    Device,
    /// A regular file, by path or redirected to standard input.
    Regular,
}

/// The input's name and kind: which errors end the stream and which reopen it.
#[derive(Clone, Debug)]
pub(super) struct Origin {
    name: String,
    kind: Kind,
}

impl Origin {
    fn regular(&self) -> bool {
        self.kind == Kind::Regular
    }

    /// Input that is not what it should be: the stream ends with this error.
    pub(super) fn fatal(&self, what: impl Into<String>) -> CaptureError {
        CaptureError::File { path: PathBuf::from(&self.name), what: what.into() }
    }

    /// The input went away or could not be read: a FIFO or device is reopened, anything
    /// else ends the stream.
    pub(super) fn lost(&self, what: impl Into<String>) -> CaptureError {
        match self.kind {
            Kind::Fifo | Kind::Device => CaptureError::Remote { name: self.name.clone(), what: what.into() },
            Kind::Stdin | Kind::Regular => self.fatal(what),
        }
    }

    /// The input ended inside a frame (a producer killed mid-write, or a wrong size).
    pub(super) fn cut(&self, what: impl Into<String>) -> CaptureError {
        self.lost(what)
    }

    /// The input ended between frames after `frames` of them: the end of the stream, or for
    /// a FIFO the writer leaving.
    pub(super) fn ended(&self, frames: u64) -> Result<bool, CaptureError> {
        match self.kind {
            Kind::Fifo => Err(self.lost(format!("the writer closed the FIFO after {frames} frames"))),
            Kind::Device => Err(self.lost(format!("the device ended after {frames} frames"))),
            Kind::Stdin | Kind::Regular => Ok(false),
        }
    }
}

/// An opened pipe, FIFO, device or file, replaying the bytes read to recognise its format.
pub(super) struct Input {
    file: File,
    origin: Origin,
    prefix: Vec<u8>,
    at: usize,
    looping: bool,
}

impl Input {
    /// Opens `path` (`None`: standard input). A FIFO is opened without blocking and polled
    /// for a writer's first bytes: for ever with `wait` `None`, else at most `wait`.
    fn open(path: Option<&Path>, wait: Option<Duration>) -> Result<Self, CaptureError> {
        let name = path.map_or("standard input".to_string(), |p| p.display().to_string());
        let fd0 = dup_stdin()
            .map_err(|e| CaptureError::File { path: name.clone().into(), what: format!("cannot read: {e}") });
        // `--source /dev/stdin` (or /dev/fd/0) is standard input too: read it as such (its end
        // is the end of the stream), not as a FIFO to reopen.
        let stdin = match (path, &fd0) {
            (None, _) => true,
            (Some(p), Ok(f)) => same_file(p, f),
            (Some(_), Err(_)) => false,
        };
        let file = match path {
            _ if stdin => fd0?,
            Some(p) => open_path(p, wait)?,
            None => unreachable!("no path is standard input"),
        };
        let meta =
            file.metadata().map_err(|e| CaptureError::File { path: name.clone().into(), what: e.to_string() })?;
        let ft = meta.file_type();
        let kind = match () {
            _ if ft.is_file() => Kind::Regular,
            _ if stdin => Kind::Stdin,
            _ if ft.is_fifo() => Kind::Fifo,
            _ => Kind::Device,
        };
        Ok(Input { file, origin: Origin { name, kind }, prefix: Vec::new(), at: 0, looping: false })
    }

    pub(super) fn name(&self) -> &str {
        &self.origin.name
    }

    pub(super) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// True for a live input (not a regular file): frames are read as they come.
    pub(super) fn live(&self) -> bool {
        !self.origin.regular()
    }

    /// With `--loop`, goes back to the start of the file (true); else false.
    pub(super) fn rewind(&mut self) -> Result<bool, CaptureError> {
        if !self.looping {
            return Ok(false);
        }
        self.seek(SeekFrom::Start(0)).map_err(|e| self.origin.fatal(format!("cannot seek back to the start: {e}")))?;
        Ok(true)
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.at);
            buf[..n].copy_from_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.read_file(buf)
    }
}

/// How long a read of a live input waits for bytes before it looks at the capture thread's
/// stop flags and deadline again.
pub const POLL_STEP: Duration = Duration::from_millis(100);

/// The error a read of a live input returns once the capture thread is interrupted.
const STOPPED: &str = "stopped while waiting for input";

impl Input {
    /// Reads from the file; a live input (pipe, FIFO, device) through `poll(2)` in
    /// [`POLL_STEP`]s, failing once [`super::interrupted`] says the run is over, so that a
    /// silent producer cannot hold it.
    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.origin.regular() {
            return self.file.read(buf);
        }
        loop {
            if super::interrupted() {
                return Err(io::Error::other(STOPPED));
            }
            if readable(&self.file, POLL_STEP)? {
                return self.file.read(buf);
            }
        }
    }
}

/// Waits at most `wait` for `file` to have bytes to read (or its end, or an error).
fn readable(file: &File, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(i32::MAX as u128) as libc::c_int) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(n > 0)
}

impl Seek for Input {
    /// Only `SeekFrom::Start` on a regular file (the prefix was read from its offset 0).
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Start(to) = pos else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "only seeks from the start"));
        };
        if !self.origin.regular() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "a pipe cannot seek"));
        }
        self.prefix.clear();
        self.at = 0;
        self.file.seek(SeekFrom::Start(to))
    }
}

/// A duplicate of fd 0, so reads are unbuffered (no `Stdin` buffer) and a file can be seeked.
fn dup_stdin() -> io::Result<File> {
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

/// Whether `path` names the file `f` is (same device and inode).
fn same_file(path: &Path, f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Opens a path; a FIFO without blocking in `open`, then polled for its writer.
fn open_path(path: &Path, wait: Option<Duration>) -> Result<File, CaptureError> {
    let file_err = |what: String| CaptureError::File { path: path.to_owned(), what };
    let is_fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    if !is_fifo {
        return File::open(path).map_err(|e| file_err(format!("cannot open: {e}")));
    }
    let remote = |what: String| CaptureError::Remote { name: path.display().to_string(), what };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| remote(format!("cannot open the FIFO: {e}")))?;
    wait_for_writer(&file, wait).map_err(remote)?;
    set_blocking(&file).map_err(|e| remote(format!("cannot make the FIFO blocking: {e}")))?;
    Ok(file)
}

/// Waits until the FIFO has bytes to read or its writer has come and gone, in [`POLL_STEP`]s
/// that look at [`super::interrupted`].
fn wait_for_writer(file: &File, wait: Option<Duration>) -> Result<(), String> {
    let start = Instant::now();
    let mut told = false;
    loop {
        if super::interrupted() {
            return Err("stopped while waiting for a writer to open the FIFO".into());
        }
        let left = wait.map_or(POLL_STEP, |w| w.saturating_sub(start.elapsed()));
        match readable(file, left.min(POLL_STEP)) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot poll the FIFO: {e}")),
        }
        if wait.is_some_and(|w| start.elapsed() >= w) {
            return Err("no writer has opened the FIFO yet".into());
        }
        if wait.is_none() && !told && start.elapsed() >= Duration::from_secs(1) {
            info!("waiting for a writer to open the FIFO");
            told = true;
        }
    }
}

fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// JPEG images back to back, forwarded as they are.
struct MjpegSource {
    reader: MjpegReader<Input>,
    origin: Origin,
    /// The first image, read at open to learn the size.
    first: Option<Vec<u8>>,
    size: (u32, u32),
    /// The size of the last image, to log changes.
    last: (u32, u32),
    /// `--size`, which sets only the cap: warned about once if images differ.
    asked: Option<(u32, u32)>,
    warned: bool,
    next: u64,
}

impl MjpegSource {
    fn open(input: Input, size: Option<(u32, u32)>) -> Result<Self, CaptureError> {
        let origin = input.origin().clone();
        let max = max_image_bytes(size);
        let mut src = MjpegSource {
            reader: MjpegReader::new(input, &[], max),
            origin,
            first: None,
            size: (0, 0),
            last: (0, 0),
            asked: size,
            warned: false,
            next: 0,
        };
        let mut first = Vec::new();
        if !src.read(&mut first)? {
            return Err(src.origin.cut("the input ended before the first JPEG image"));
        }
        src.size = src.image_size(&first)?;
        src.last = src.size;
        let (w, h) = src.size;
        let name = &src.origin.name;
        info!(
            width = w,
            height = h,
            first_image_bytes = first.len(),
            max_image_bytes = max,
            "pipe source: MJPEG from {name}"
        );
        src.check_asked();
        src.first = Some(first);
        Ok(src)
    }

    /// Reads the next image into `out`, with errors naming the image and where it started.
    fn read(&mut self, out: &mut Vec<u8>) -> Result<bool, CaptureError> {
        let res = self.reader.read_image(out);
        res.map_err(|e| {
            let at = format!("image {} (byte {} of the input): {e}", self.reader.images(), self.reader.offset());
            match e {
                ScanError::Truncated { .. } | ScanError::Io(_) => self.origin.cut(at),
                ScanError::TooLong { .. } => self
                    .origin
                    .fatal(format!("{at}; the cap is 4 bytes a pixel of --size plus 64 KiB, or 32 MiB without --size")),
                ScanError::NotJpeg { .. } | ScanError::Malformed { .. } => self.origin.fatal(at),
            }
        })
    }

    /// Width and height from the image's frame header.
    fn image_size(&self, jpeg: &[u8]) -> Result<(u32, u32), CaptureError> {
        let n = self.reader.images().saturating_sub(1);
        let h = crate::codec::restart::parse_header(jpeg)
            .map_err(|e| self.origin.fatal(format!("image {n}: no usable JPEG frame header: {e}")))?;
        let (w, h) = (u32::from(h.width), u32::from(h.height));
        if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION {
            return Err(self
                .origin
                .fatal(format!("image {n}: size {w}x{h}, expected 1..={MAX_DIMENSION} on each side")));
        }
        Ok((w, h))
    }

    fn check_asked(&mut self) {
        if let Some((aw, ah)) = self.asked.filter(|&a| a != self.last && !self.warned) {
            let (w, h) = self.last;
            warn!("--size {aw}x{ah} does not scale MJPEG: it sets only the image size cap; the images are {w}x{h}");
            self.warned = true;
        }
    }
}

impl FrameSource for MjpegSource {
    fn describe(&self) -> String {
        let (w, h) = self.size;
        format!("{} (MJPEG {w}x{h})", self.origin.name)
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn self_paced(&self) -> bool {
        self.reader.get_ref().live()
    }

    fn delivers_jpeg(&self) -> bool {
        true
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let mut got = match self.first.take() {
            Some(mut first) => {
                std::mem::swap(&mut frame.data, &mut first);
                true
            }
            None => self.read(&mut frame.data)?,
        };
        if !got && self.next > 0 && self.reader.get_mut().rewind()? {
            got = self.read(&mut frame.data)?;
        }
        if !got {
            return self.origin.ended(self.next);
        }
        frame.capture_us = crate::clock::now_us();
        let (w, h) = self.image_size(&frame.data)?;
        if (w, h) != self.last {
            info!(frame = self.next, from = ?self.last, to = ?(w, h), "pipe source: the image size changed");
            self.last = (w, h);
            self.check_asked();
        }
        frame.seq = self.next;
        (frame.width, frame.height, frame.layout) = (w, h, Layout::Jpeg);
        self.next += 1;
        Ok(true)
    }
}

/// Y4M from a pipe: the end of a FIFO's writer is the source lost, as for the other formats.
struct Y4mPipe {
    y4m: Y4mSource<Input>,
    origin: Origin,
    frames: u64,
}

impl FrameSource for Y4mPipe {
    fn describe(&self) -> String {
        self.y4m.describe()
    }

    fn size(&self) -> (u32, u32) {
        self.y4m.size()
    }

    fn self_paced(&self) -> bool {
        !self.origin.regular()
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        if !self.y4m.next_frame(frame)? {
            return self.origin.ended(self.frames);
        }
        frame.capture_us = crate::clock::now_us();
        self.frames += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pattern_jpeg;

    fn spec(path: &Path, format: InputFormat, looping: bool) -> PipeSpec {
        PipeSpec {
            path: Some(path.to_owned()),
            format,
            size: None,
            looping,
            subsampling: Subsampling::S420,
            range: InputRange::Full,
        }
    }

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fc-pipe-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn fifo(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fc-pipe-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
        p
    }

    #[test]
    fn a_fifo_without_a_writer_and_a_silent_one_give_up_when_interrupted() {
        use super::super::{set_interrupt, Interrupt};
        let p = fifo("silent");
        let soon = |ms| Interrupt { stops: Vec::new(), deadline: Some(Instant::now() + Duration::from_millis(ms)) };
        // No writer at all: the first open (which waits for ever) gives up at the deadline.
        set_interrupt(soon(300));
        let t = Instant::now();
        assert!(open(&spec(&p, InputFormat::Auto, false)).is_err());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // A writer that sends one image and then nothing: the frame read gives up.
        let jpeg = pattern_jpeg(32, 16, Subsampling::S420, 80, 0).unwrap();
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut w = OpenOptions::new().write(true).open(&p).unwrap();
                std::io::Write::write_all(&mut w, &jpeg).unwrap();
                std::thread::sleep(Duration::from_secs(3));
            })
        };
        set_interrupt(soon(1000));
        let mut src = open(&spec(&p, InputFormat::Auto, false)).unwrap();
        let mut frame = RawFrame::empty();
        assert!(src.next_frame(&mut frame).unwrap(), "the first image");
        let t = Instant::now();
        assert!(src.next_frame(&mut frame).is_err(), "a silent writer ends the read once interrupted");
        assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
        set_interrupt(Interrupt::default());
        writer.join().unwrap();
    }

    #[test]
    fn a_regular_mjpeg_file_is_paced_and_loops() {
        let (a, b) = (
            pattern_jpeg(32, 16, Subsampling::S420, 80, 0).unwrap(),
            pattern_jpeg(32, 16, Subsampling::S420, 80, 1).unwrap(),
        );
        let p = temp("two.mjpeg", &[a.clone(), b.clone()].concat());
        let mut src = open(&spec(&p, InputFormat::Auto, true)).unwrap();
        assert!(!src.self_paced() && src.delivers_jpeg());
        assert_eq!(src.size(), (32, 16));
        let mut f = RawFrame::empty();
        let mut got = Vec::new();
        for _ in 0..5 {
            assert!(src.next_frame(&mut f).unwrap());
            assert_eq!((f.width, f.height, f.layout), (32, 16, Layout::Jpeg));
            got.push(f.data.clone());
        }
        assert_eq!(got, [a.clone(), b.clone(), a.clone(), b, a]);
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn y4m_and_raw_files_loop_too_and_garbage_is_named() {
        let mut y4m = b"YUV4MPEG2 W4 H2 F30:1 C420jpeg\n".to_vec();
        for i in 0..2u8 {
            y4m.extend_from_slice(b"FRAME\n");
            y4m.extend([i; 12]);
        }
        let p = temp("clip.bin", &y4m);
        let mut src = open(&spec(&p, InputFormat::Auto, true)).unwrap();
        let mut f = RawFrame::empty();
        let firsts: Vec<u8> = (0..3).map(|_| (src.next_frame(&mut f).unwrap(), f.data[0]).1).collect();
        assert_eq!(firsts, [0, 1, 0]);

        let raw = temp("raw.yuv", &[[1u8; 12], [2u8; 12]].concat());
        let mut s = spec(&raw, InputFormat::I420, true);
        s.size = Some((4, 2));
        let mut src = open(&s).unwrap();
        let firsts: Vec<u8> = (0..3).map(|_| (src.next_frame(&mut f).unwrap(), f.data[0]).1).collect();
        assert_eq!(firsts, [1, 2, 1]);
        assert_eq!(f.layout, Layout::Yuv(Subsampling::S420));

        let bad = temp("bad.bin", b"GIF89a....");
        let e = open(&spec(&bad, InputFormat::Auto, false)).err().unwrap().to_string();
        assert!(e.contains("bad.bin") && e.contains("found 47 49 46 38 39 61"), "{e}");
        for p in [p, raw, bad] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }
}
