//! Finding JPEG images in a byte stream by walking their markers: SOI, then segments by their
//! lengths (so an EXIF thumbnail's own FF D9 inside APP1 is skipped whole), then after SOS the
//! entropy-coded data, where FF 00 is a stuffed byte and FF D0..D7 are restart markers, up to
//! EOI. Never by searching for FF D9. Used by the pipe source ([`super::pipe`]) and the HTTP
//! multipart reader ([`super::http`]), and fuzzed (`fuzz_targets/mjpeg_split.rs`).
//!
//! The scan is incremental: a [`Scanner`] remembers how far it got, so feeding an image as it
//! arrives costs each byte once, and it refuses an image longer than its cap before anything
//! is allocated for the rest of it. Entropy-coded data (nearly all of an image) is searched
//! for 0xFF with `memchr`; segments are skipped by their lengths without looking at them.

use std::io::{ErrorKind, Read};

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

/// Where the scan of an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting SOI at byte 0.
    Soi,
    /// Expecting a marker (FF, fill bytes FF, then its code) at `pos`.
    Marker,
    /// In entropy-coded data after SOS, at `pos`.
    Entropy,
}

/// An incremental scan of one JPEG image.
#[derive(Clone, Debug)]
pub struct Scanner {
    max_len: usize,
    phase: Phase,
    /// The next byte to look at; may lie beyond the bytes seen so far (a segment skipped by
    /// its length before its bytes arrived).
    pos: usize,
}

impl Scanner {
    /// A scanner refusing images longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Scanner { max_len, phase: Phase::Soi, pos: 0 }
    }

    /// The cap.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Starts over for a new image.
    pub fn reset(&mut self) {
        self.phase = Phase::Soi;
        self.pos = 0;
    }

    /// Scans `image`: the bytes of one image from its SOI so far, of which earlier calls since
    /// the last [`reset`](Self::reset) saw a prefix (they are not scanned again). Returns the
    /// image's length through its EOI once it is complete, `None` while more bytes are needed.
    /// Bytes past the cap are not looked at: an image not complete within `max_len` bytes is
    /// [`ScanError::TooLong`].
    pub fn scan(&mut self, image: &[u8]) -> Result<Option<usize>, ScanError> {
        let seen = &image[..image.len().min(self.max_len)];
        while self.pos < seen.len() {
            let done = match self.phase {
                Phase::Soi => self.soi(seen)?,
                Phase::Marker => self.marker(seen)?,
                Phase::Entropy => self.entropy(seen),
            };
            match done {
                Step::Continue => {}
                Step::NeedMore => break,
                Step::Complete(len) => return Ok(Some(len)),
            }
        }
        if image.len() >= self.max_len || self.pos > self.max_len {
            return Err(ScanError::TooLong { max: self.max_len });
        }
        Ok(None)
    }

    fn soi(&mut self, seen: &[u8]) -> Result<Step, ScanError> {
        let want = [0xFF, 0xD8];
        let n = seen.len().min(2);
        if seen[..n] != want[..n] {
            return Err(ScanError::NotJpeg { found: preview(seen) });
        }
        if n < 2 {
            return Ok(Step::NeedMore);
        }
        self.pos = 2;
        self.phase = Phase::Marker;
        Ok(Step::Continue)
    }

    /// A marker at `pos`: FF, any fill bytes FF, its code, and for a segment its length.
    fn marker(&mut self, seen: &[u8]) -> Result<Step, ScanError> {
        let at = self.pos;
        if seen[at] != 0xFF {
            return Err(malformed(at, format!("expected a marker (FF xx), found {}", preview(&seen[at..]))));
        }
        // Fill bytes: FF FF ... FF code. Keep `pos` on the last FF seen so far.
        let mut code_at = at + 1;
        while code_at < seen.len() && seen[code_at] == 0xFF {
            code_at += 1;
        }
        if code_at >= seen.len() {
            self.pos = code_at - 1;
            return Ok(Step::NeedMore);
        }
        let code = seen[code_at];
        match code {
            0xD9 => return Ok(Step::Complete(code_at + 1)),
            0x01 | 0xD0..=0xD7 => {
                self.pos = code_at + 1;
                return Ok(Step::Continue);
            }
            0x00 => return Err(malformed(code_at - 1, "FF 00 (a stuffed byte) outside entropy-coded data".into())),
            0xD8 => {
                return Err(malformed(
                    code_at - 1,
                    "a second start of image (FF D8) before the end marker (FF D9)".into(),
                ))
            }
            _ => {}
        }
        if code_at + 2 >= seen.len() {
            self.pos = code_at - 1;
            return Ok(Step::NeedMore);
        }
        let len = u16::from_be_bytes([seen[code_at + 1], seen[code_at + 2]]) as usize;
        if len < 2 {
            return Err(malformed(
                code_at + 1,
                format!("segment FF {code:02X} has length {len}, less than its own 2 length bytes"),
            ));
        }
        let end = code_at + 1 + len;
        // The segment must fit with at least an EOI after it.
        if end + 2 > self.max_len {
            return Err(ScanError::TooLong { max: self.max_len });
        }
        self.pos = end;
        if code == 0xDA {
            self.phase = Phase::Entropy;
        }
        Ok(Step::Continue)
    }

    /// Entropy-coded data: find the next FF that is neither stuffing (FF 00), a restart marker
    /// (FF D0..D7) nor a fill byte; the marker there ends the scan.
    fn entropy(&mut self, seen: &[u8]) -> Step {
        let mut from = self.pos;
        loop {
            let Some(i) = memchr::memchr(0xFF, &seen[from..]).map(|i| from + i) else {
                self.pos = seen.len();
                return Step::NeedMore;
            };
            let Some(&next) = seen.get(i + 1) else {
                self.pos = i;
                return Step::NeedMore;
            };
            match next {
                0x00 | 0xD0..=0xD7 => from = i + 2,
                0xFF => from = i + 1,
                _ => {
                    self.pos = i;
                    self.phase = Phase::Marker;
                    return Step::Continue;
                }
            }
        }
    }
}

/// What one step of the scan found.
enum Step {
    Continue,
    NeedMore,
    Complete(usize),
}

fn malformed(offset: usize, what: String) -> ScanError {
    ScanError::Malformed { offset, what }
}

/// Up to 16 bytes in hex, with the printable ones as text when most are (so "<html>" or a
/// "YUV4MPEG2" header is recognisable in an error), and "nothing" for no bytes.
pub fn preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing".into();
    }
    let head = &bytes[..bytes.len().min(16)];
    let mut s: Vec<String> = head.iter().map(|b| format!("{b:02X}")).collect();
    if bytes.len() > head.len() {
        s.push("...".into());
    }
    let mut out = s.join(" ");
    let printable = head.iter().filter(|b| b.is_ascii_graphic() || **b == b' ').count();
    if printable * 4 >= head.len() * 3 {
        let text: String =
            head.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        out.push_str(&format!(" (\"{text}\")"));
    }
    out
}

/// How much to read at a time: a 720p JPEG is ~100-300 KB, and a pipe hands over what it
/// holds (64 KiB by default) per read.
const CHUNK: usize = 1 << 20;

/// JPEG images back to back from a reader (a pipe from `rpicam-vid --codec mjpeg -o -`,
/// `ffmpeg -f mjpeg -`, `gst-launch-1.0 ... ! jpegenc ! fdsink`).
pub struct MjpegReader<R> {
    inner: R,
    scanner: Scanner,
    /// Bytes read and not yet returned are `buf[start..end]`; the current image starts at
    /// `start`. `buf` never grows past the cap (or one chunk, if larger).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Images returned so far, and the stream offset of the current image's first byte.
    images: u64,
    offset: u64,
}

impl<R: Read> MjpegReader<R> {
    /// Reads from `inner`, after `prefix` (bytes already read from it, e.g. to recognise the
    /// format), images of at most `max_len` bytes.
    pub fn new(inner: R, prefix: &[u8], max_len: usize) -> Self {
        MjpegReader {
            inner,
            scanner: Scanner::new(max_len),
            buf: prefix.to_vec(),
            start: 0,
            end: prefix.len(),
            images: 0,
            offset: 0,
        }
    }

    /// Images read so far.
    pub fn images(&self) -> u64 {
        self.images
    }

    /// The stream offset (bytes from the start of the input) where the image being read, or
    /// the next one, starts: for error messages.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The reader inside, e.g. to seek it back to the start between images (at the end of
    /// the input, when nothing is buffered).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads the next image into `out` (its old contents replaced). `Ok(false)` at the end of
    /// the input between images; an image cut off by the end is [`ScanError::Truncated`].
    /// Bytes between images other than nothing are an error (`Malformed`).
    pub fn read_image(&mut self, out: &mut Vec<u8>) -> Result<bool, ScanError> {
        loop {
            match self.scanner.scan(&self.buf[self.start..self.end]) {
                Ok(Some(len)) => {
                    out.clear();
                    out.extend_from_slice(&self.buf[self.start..self.start + len]);
                    self.start += len;
                    self.scanner.reset();
                    self.images += 1;
                    self.offset += len as u64;
                    return Ok(true);
                }
                Ok(None) => {}
                Err(ScanError::NotJpeg { found }) if self.images > 0 => {
                    return Err(malformed(
                        0,
                        format!("expected the next image (FF D8) right after the end of the last one, found {found}"),
                    ));
                }
                Err(e) => return Err(e),
            }
            if self.fill()? == 0 {
                let pending = self.end - self.start;
                return match pending {
                    0 => Ok(false),
                    len => Err(ScanError::Truncated { len }),
                };
            }
        }
    }

    /// Reads more of the current image: moves it to the front of the buffer and reads at
    /// most up to the cap. Returns the bytes read (0 at the end of the input).
    fn fill(&mut self) -> Result<usize, ScanError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // The scanner refused the image if it had reached the cap, so there is room.
        let want = CHUNK.min(self.scanner.max_len().saturating_sub(self.end)).max(1);
        if self.buf.len() < self.end + want {
            self.buf.reserve_exact(self.end + want - self.buf.len());
            self.buf.resize(self.end + want, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..self.end + want]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScanError::Io(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::testutil::Script;

    /// A JPEG-shaped image: SOI, the given segments, SOS, `scan` as entropy-coded data, EOI.
    fn image(segments: &[(u8, &[u8])], scan: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        for (code, body) in segments {
            v.extend([0xFF, *code]);
            v.extend(((body.len() + 2) as u16).to_be_bytes());
            v.extend_from_slice(body);
        }
        v.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63, 0]);
        v.extend_from_slice(scan);
        v.extend([0xFF, 0xD9]);
        v
    }

    /// An APP1 "Exif" segment holding a whole thumbnail JPEG, FF D8 .. FF D9 included.
    fn exif_image() -> Vec<u8> {
        let thumb = image(&[], &[1, 2, 3]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(&thumb);
        app1.extend([0xFF, 0xD9, 0xFF, 0xD8]);
        image(&[(0xE1, &app1), (0xDB, &[0; 65])], &[9, 9, 0xFF, 0x00, 7])
    }

    /// A real JPEG from libjpeg-turbo.
    fn real_jpeg() -> Vec<u8> {
        crate::testutil::pattern_jpeg(64, 48, Subsampling::S420, 90, 3).unwrap()
    }

    fn scan_whole(data: &[u8], max: usize) -> Result<Option<usize>, ScanError> {
        Scanner::new(max).scan(data)
    }

    /// Feeds `data` to a scanner in pieces of `step` bytes; the result at the first end.
    fn scan_pieces(data: &[u8], max: usize, step: usize) -> Result<Option<usize>, ScanError> {
        let mut s = Scanner::new(max);
        let mut n = 0;
        loop {
            n = (n + step).min(data.len());
            match s.scan(&data[..n])? {
                Some(len) => return Ok(Some(len)),
                None if n == data.len() => return Ok(None),
                None => {}
            }
        }
    }

    #[test]
    fn skips_an_exif_thumbnail_and_its_eoi() {
        let img = exif_image();
        // A search for FF D9 would stop inside APP1.
        let naive = img.windows(2).position(|w| w == [0xFF, 0xD9]).unwrap() + 2;
        assert!(naive < img.len());
        assert_eq!(scan_whole(&img, 1 << 20), Ok(Some(img.len())));
    }

    #[test]
    fn stuffing_restarts_and_fill_bytes() {
        // FF 00 stuffed, FF D3 restart, FF FF fill before a marker, DHT between scans.
        let scan = [1, 0xFF, 0x00, 2, 0xFF, 0xD3, 3, 0xFF, 0xFF, 0xFF, 0xC4, 0, 3, 0];
        let mut img = image(&[], &scan);
        // Another SOS after that DHT, then fill bytes before EOI.
        let eoi = img.len() - 2;
        img.splice(eoi.., [0xFF, 0xDA, 0, 2, 5, 0xFF, 0xFF, 0xFF, 0xD9]);
        assert_eq!(scan_whole(&img, 1 << 20), Ok(Some(img.len())));
        let real = real_jpeg();
        assert_eq!(scan_whole(&real, 1 << 20), Ok(Some(real.len())));
        let mut rst = real_jpeg();
        // Fill bytes between segments in the header are fine too.
        rst.splice(2..2, [0xFF, 0xFF]);
        assert_eq!(scan_whole(&rst, 1 << 20), Ok(Some(rst.len())));
    }

    #[test]
    fn restart_markers_from_libjpeg_turbo() {
        for threads in [1, 2] {
            let jpeg = crate::testutil::restart_jpeg((64, 64), Subsampling::S420, 90, 1, threads).unwrap();
            let markers = jpeg.windows(2).filter(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1])).count();
            assert!(markers >= 3, "the fixture has restart markers");
            assert_eq!(scan_whole(&jpeg, 1 << 20), Ok(Some(jpeg.len())));
            assert_eq!(scan_pieces(&jpeg, 1 << 20, 5), Ok(Some(jpeg.len())));
        }
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let mut cases = vec![exif_image(), real_jpeg()];
        let mut fills = image(&[(0xE0, b"JFIF\0")], &[0xFF, 0x00, 0xFF, 0xD7, 0xFF, 0xFF, 0xFF]);
        fills.splice(2..2, [0xFF, 0xFF, 0xFF]);
        cases.push(fills);
        for img in &cases {
            for step in 1..=img.len().min(300) {
                assert_eq!(scan_pieces(img, 1 << 20, step), Ok(Some(img.len())), "pieces of {step}");
            }
            // Every prefix is incomplete, never an error.
            for n in 0..img.len() {
                assert_eq!(scan_whole(&img[..n], 1 << 20), Ok(None), "prefix of {n}");
            }
        }
    }

    #[test]
    fn the_cap_passes_at_the_limit_and_fails_below() {
        let img = exif_image();
        assert_eq!(scan_whole(&img, img.len()), Ok(Some(img.len())));
        assert_eq!(scan_whole(&img, img.len() - 1), Err(ScanError::TooLong { max: img.len() - 1 }));
        for step in [1, 7, 100] {
            assert_eq!(scan_pieces(&img, img.len(), step), Ok(Some(img.len())));
            assert_eq!(scan_pieces(&img, img.len() - 1, step), Err(ScanError::TooLong { max: img.len() - 1 }));
        }
    }

    #[test]
    fn a_segment_length_past_the_cap_is_refused_at_once() {
        // An APP1 claiming 65533 bytes, of which only its header arrived, with a 1000-byte cap.
        let data = [0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF];
        assert_eq!(scan_whole(&data, 1000), Err(ScanError::TooLong { max: 1000 }));
        assert_eq!(scan_whole(&data, 1 << 20), Ok(None));
    }

    #[test]
    fn no_eoi_past_the_cap_reads_no_further() {
        /// Endless entropy-coded data, counting what is read.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let head = image(&[], &[]);
                for (i, b) in buf.iter_mut().enumerate() {
                    let at = self.0 + i;
                    *b = if at < head.len() - 2 { head[at] } else { 0x55 };
                }
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let max = 10_000;
        let mut r = MjpegReader::new(Endless(0), &[], max);
        let mut out = Vec::new();
        assert_eq!(r.read_image(&mut out), Err(ScanError::TooLong { max }));
        assert_eq!(r.get_ref().0, max, "read exactly up to the cap");
        assert!(r.buf.capacity() <= max);
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_images() {
        let err = |d: &[u8]| scan_whole(d, 1 << 20).unwrap_err().to_string();
        assert_eq!(
            err(b"hello world"),
            "expected a JPEG image (FF D8), found 68 65 6C 6C 6F 20 77 6F 72 6C 64 (\"hello world\")"
        );
        assert!(err(&[0xFF, 0xD8, 0x12]).contains("byte 2 of the image: expected a marker (FF xx), found 12"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0x00]).contains("byte 2 of the image: FF 00"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xD8]).contains("a second start of image"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]).contains("byte 4 of the image: segment FF E0 has length 1"));
    }

    fn read_all(data: &[u8], prefix: usize, step: usize, max: usize) -> (Vec<Vec<u8>>, Option<ScanError>) {
        let mut r = MjpegReader::new(Script::whole(&data[prefix..]).max_read(step), &data[..prefix], max);
        let mut images = Vec::new();
        let mut out = Vec::new();
        loop {
            match r.read_image(&mut out) {
                Ok(true) => images.push(out.clone()),
                Ok(false) => return (images, None),
                Err(e) => return (images, Some(e)),
            }
        }
    }

    #[test]
    fn reader_splits_a_stream_in_any_pieces() {
        let parts = [exif_image(), real_jpeg(), image(&[], &[0xFF, 0xD0, 0xFF, 0x00])];
        let stream = parts.concat();
        for step in (1..64).chain([1000, 1 << 20]) {
            for prefix in [0, 1, 3] {
                let (images, err) = read_all(&stream, prefix, step, 1 << 20);
                assert_eq!(err, None);
                assert_eq!(images, parts, "pieces of {step}, prefix {prefix}");
            }
        }
        let (images, err) = read_all(&[], 0, 10, 100);
        assert!(images.is_empty() && err.is_none(), "empty input is no images, no error");
    }

    #[test]
    fn reader_truncation_and_garbage_between_images() {
        let a = real_jpeg();
        let cut = [&a[..], &a[..a.len() - 1]].concat();
        let (images, err) = read_all(&cut, 0, 4096, 1 << 20);
        assert_eq!(images.len(), 1);
        assert_eq!(err, Some(ScanError::Truncated { len: a.len() - 1 }));

        let garbage = [&a[..], b"\r\n--boundary", &a[..]].concat();
        let (images, err) = read_all(&garbage, 0, 4096, 1 << 20);
        assert_eq!(images.len(), 1);
        let msg = err.unwrap().to_string();
        assert!(
            msg.contains("expected the next image (FF D8) right after the end of the last one, found 0D 0A 2D 2D"),
            "{msg}"
        );

        let (images, err) = read_all(b"not a jpeg at all", 0, 4096, 1 << 20);
        assert!(images.is_empty());
        assert!(matches!(err, Some(ScanError::NotJpeg { .. })));
    }

    #[test]
    fn reader_reports_read_errors() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("device gone"))
            }
        }
        let mut r = MjpegReader::new(Broken, &[0xFF], 100);
        assert_eq!(r.read_image(&mut Vec::new()), Err(ScanError::Io("device gone".into())));
    }
}
