//! Finding JPEG images in a byte stream by walking their markers: SOI, then segments by their
//! lengths (so an EXIF thumbnail's own FF D9 inside APP1 is skipped whole), then after SOS the
//! entropy-coded data, where FF 00 is a stuffed byte and FF D0..D7 are restart markers, up to
//! EOI. Never by searching for FF D9. Used by the pipe source ([`super::pipe`]) and the HTTP
//! multipart reader ([`super::http`]), and fuzzed (`fuzz_targets/mjpeg_split.rs`).
//!
//! The scan is incremental: a [`Scanner`] remembers how far it got, so feeding an image as it
//! arrives costs each byte once, and it refuses an image longer than its cap before anything
//! is allocated for the rest of it.

use std::io::Read;

/// Why a byte stream is not a sequence of JPEG images. Each names what was expected and what
/// arrived, and at which byte offset of the image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// The image does not start with SOI (FF D8).
    #[error("expected a JPEG image (FF D8), found {found}")]
    NotJpeg { found: String },
    /// A byte where a marker (FF xx) or a segment was expected.
    #[error("byte {offset} of the image: {what}")]
    Malformed { offset: usize, what: String },
    /// The image has no EOI within the cap.
    #[error("image longer than {max} bytes without an end marker (FF D9)")]
    TooLong { max: usize },
    /// The input ended inside an image.
    #[error("input ended {len} bytes into an image, before its end marker (FF D9)")]
    Truncated { len: usize },
    #[error("cannot read: {0}")]
    Io(String),
}

/// An incremental scan of one JPEG image.
#[derive(Clone, Debug)]
pub struct Scanner {
    max_len: usize,
    // The implementation's state (position, what it is inside of).
}

impl Scanner {
    /// A scanner refusing images longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        let _ = max_len;
        unimplemented!()
    }

    /// The cap.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Starts over for a new image.
    pub fn reset(&mut self) {
        unimplemented!()
    }

    /// Scans `image`: the bytes of one image from its SOI so far, of which earlier calls since
    /// the last [`reset`](Self::reset) saw a prefix (they are not scanned again). Returns the
    /// image's length through its EOI once it is complete, `None` while more bytes are needed.
    pub fn scan(&mut self, image: &[u8]) -> Result<Option<usize>, ScanError> {
        let _ = image;
        unimplemented!()
    }
}

/// JPEG images back to back from a reader (a pipe from `rpicam-vid --codec mjpeg -o -`,
/// `ffmpeg -f mjpeg -`, `gst-launch-1.0 ... ! jpegenc ! fdsink`).
pub struct MjpegReader<R> {
    inner: R,
    scanner: Scanner,
}

impl<R: Read> MjpegReader<R> {
    /// Reads from `inner`, after `prefix` (bytes already read from it, e.g. to recognise the
    /// format), images of at most `max_len` bytes.
    pub fn new(inner: R, prefix: &[u8], max_len: usize) -> Self {
        let _ = (inner, prefix, max_len);
        unimplemented!()
    }

    /// Reads the next image into `out` (its old contents replaced). `Ok(false)` at the end of
    /// the input between images; an image cut off by the end is [`ScanError::Truncated`].
    /// Bytes between images other than nothing are an error (`Malformed`).
    pub fn read_image(&mut self, out: &mut Vec<u8>) -> Result<bool, ScanError> {
        let _ = (out, &mut self.inner, &mut self.scanner);
        unimplemented!()
    }
}
