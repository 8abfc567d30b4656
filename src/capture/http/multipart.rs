//! The multipart reader: JPEG images out of a `multipart/x-mixed-replace` body, as
//! mjpg-streamer, µStreamer, an ESP32-CAM, IP cameras and framecast's own `/stream.mjpg`
//! send it. Pure code over bytes (the HTTP source owns the socket), so it is tested split at
//! every byte and fuzzed (`fuzz_targets/multipart.rs`).
//!
//! A part is `--BOUNDARY`, header lines, a blank line, then the image. The image is framed by
//! its JPEG markers ([`Scanner`]), never by the part's `Content-Length`, which is only
//! compared with it: a camera that lies in it, either way, loses no frame. Whatever does not
//! fit (a boundary other than the announced one, a part with no boundary, bytes between
//! parts, a part that is not a JPEG, a broken JPEG) is warned about once and skipped up to
//! the next line starting with `--` or the next FF D8. Header lines and their count are
//! capped, and the buffer never holds more than one image at its cap plus one part's headers:
//! nothing is allocated from what the stream claims.

use std::ops::Range;

use tracing::{debug, warn};

use crate::capture::mjpeg::{ScanError, Scanner};

/// The longest header line (or boundary line) accepted.
pub const MAX_LINE: usize = 4096;
/// The most header lines in one part.
pub const MAX_HEADERS: usize = 32;
/// The first read size; the buffer grows by doubling up to its cap.
const FIRST_BUF: usize = 64 << 10;

/// Why the body is not a multipart stream of JPEG images. Each names the byte offset in the
/// body and shows the bytes found there.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    /// Nothing that could start a part within the cap.
    #[error(
        "no multipart boundary ('--{boundary}') and no JPEG (FF D8) in {skipped} bytes up to byte {offset} of the body; they began {dump}"
    )]
    NoParts { boundary: String, skipped: usize, offset: u64, dump: String },
    /// The buffer is full at its cap without a complete part (a bug, not a stream's fault).
    #[error("{held} bytes held from byte {offset} of the body without a complete part")]
    Stuck { offset: u64, held: usize },
    /// An image over the cap.
    #[error("image at byte {offset} of the body: {error} (a bigger --size raises the cap)")]
    TooLong { offset: u64, error: ScanError },
}

/// What one part's headers said. Unknown headers are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartInfo {
    pub content_type: Option<ShortText>,
    pub content_length: Option<u64>,
    /// `X-Timestamp`, in µs (seconds with a fraction on the wire, on the sender's clock).
    pub timestamp_us: Option<u64>,
    /// `X-Framecast-Clock`: which clock `X-Timestamp` is on (framecast's `/stream.mjpg`).
    pub clock: Option<[u8; 16]>,
}

/// The first 32 bytes of a header value (cut at a character boundary), kept without
/// allocating: every part has a Content-Type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShortText {
    bytes: [u8; 32],
    len: u8,
}

impl ShortText {
    pub fn new(s: &str) -> Self {
        let mut len = s.len().min(32);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; 32];
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        ShortText { bytes, len: len as u8 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// One image and its part's headers, borrowed from the reader until its next call.
#[derive(Debug)]
pub struct Part<'a> {
    pub image: &'a [u8],
    pub info: PartInfo,
    /// Byte offset of the image in the body.
    pub offset: u64,
}

/// Counts of what the reader met and skipped, for the log and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultipartStats {
    pub parts: u64,
    /// Bytes skipped to find the next part.
    pub skipped_bytes: u64,
    /// Parts that were not JPEG images or were broken ones.
    pub bad_parts: u64,
    /// Parts whose Content-Length differed from the image's real length.
    pub length_mismatches: u64,
    /// Parts with another boundary than the announced one, or with none.
    pub boundary_changes: u64,
}

enum Scan {
    Done(Range<usize>),
    More,
    /// Not a JPEG after all: skipped, look for the next part.
    Broken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a boundary line (or, from a camera that sends none, an image).
    Boundary,
    /// Inside a part's headers, after `count` lines.
    Headers { count: usize },
    /// After the blank line: the image's FF D8 comes next.
    Body,
    /// Inside an image that starts at `start`.
    Image,
}

/// The reader: feed it body bytes ([`space`](Self::space) + [`filled`](Self::filled), or
/// [`feed`](Self::feed)) and take parts out with [`next_part`](Self::next_part).
pub struct Multipart {
    boundary: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Body offset of `buf[0]`.
    base: u64,
    cap: usize,
    state: State,
    scanner: Scanner,
    info: PartInfo,
    /// Bytes skipped since the last part, to give up on a body that has none.
    skipping: usize,
    /// The first bytes skipped, for the error if nothing else comes.
    junk_head: Vec<u8>,
    /// In junk: whether the byte before `start` ended a line.
    line_start: bool,
    warned: Warned,
    pub stats: MultipartStats,
}

#[derive(Default)]
struct Warned {
    boundary: bool,
    length: bool,
    skipped: bool,
    bad_part: bool,
}

impl Multipart {
    /// A reader for parts separated by `boundary` (as the response's Content-Type gave it:
    /// quotes and a wrongly included leading `--` are removed), images of at most
    /// `max_image` bytes.
    pub fn new(boundary: &str, max_image: usize) -> Self {
        Multipart {
            boundary: clean_boundary(boundary).as_bytes().to_vec(),
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            cap: max_image.saturating_add(MAX_LINE * (MAX_HEADERS + 2)),
            state: State::Boundary,
            scanner: Scanner::new(max_image),
            info: PartInfo::default(),
            skipping: 0,
            junk_head: Vec::new(),
            line_start: false,
            warned: Warned::default(),
            stats: MultipartStats::default(),
        }
    }

    /// True while inside a part (its headers or its image), between a boundary line and the
    /// part's end.
    pub fn in_part(&self) -> bool {
        self.state != State::Boundary
    }

    /// The boundary in use (after a change, the new one).
    pub fn boundary(&self) -> String {
        String::from_utf8_lossy(&self.boundary).into_owned()
    }

    /// Room to read body bytes into; empty only if the buffer is full at its cap, which
    /// [`next_part`](Self::next_part) never leaves it.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.cap {
            let len = (self.buf.len() * 2).clamp(FIRST_BUF, self.cap);
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the start of [`space`](Self::space).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends `data`, calling `on_part` for each image completed on the way.
    pub fn feed(&mut self, mut data: &[u8], mut on_part: impl FnMut(Part<'_>)) -> Result<(), MultipartError> {
        while !data.is_empty() {
            let space = self.space();
            if space.is_empty() {
                return Err(self.stuck());
            }
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            self.filled(n);
            data = &data[n..];
            while let Some(part) = self.next_part()? {
                on_part(part);
            }
        }
        Ok(())
    }

    /// The next complete image, `None` while more bytes are needed.
    pub fn next_part(&mut self) -> Result<Option<Part<'_>>, MultipartError> {
        loop {
            let progressed = match self.state {
                State::Boundary => self.boundary_line()?,
                State::Headers { count } => self.header_line(count),
                State::Body => self.body_start(),
                State::Image => match self.image()? {
                    Scan::Done(range) => {
                        let offset = self.base + range.start as u64;
                        let info = std::mem::take(&mut self.info);
                        return Ok(Some(Part { image: &self.buf[range], info, offset }));
                    }
                    Scan::More => false,
                    Scan::Broken => true,
                },
            };
            if !progressed {
                return Ok(None);
            }
        }
    }

    /// The error for a buffer full at its cap (which the caps above should make impossible).
    pub fn stuck(&self) -> MultipartError {
        MultipartError::Stuck { offset: self.base + self.start as u64, held: self.end - self.start }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The next line (without its CR LF) and the bytes it takes, or `None` if it is not all
    /// here yet. A line over [`MAX_LINE`] comes back cut there (the caller treats it as junk).
    fn line(data: &[u8]) -> Option<(&[u8], usize)> {
        let window = &data[..data.len().min(MAX_LINE)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &window[..i];
                Some((line.strip_suffix(b"\r").unwrap_or(line), i + 1))
            }
            None if window.len() == MAX_LINE => Some((window, MAX_LINE)),
            None => None,
        }
    }

    /// Expecting `--BOUNDARY`. Returns true if it moved on.
    fn boundary_line(&mut self) -> Result<bool, MultipartError> {
        if self.skipping == 0 {
            // Between parts, not in junk: line ends and blanks before the boundary are fine.
            // (In junk only `\n--` and FF D8 count, wherever the reads happened to end.)
            let blank = self.data().iter().take_while(|b| b.is_ascii_whitespace()).count();
            self.start += blank;
        }
        let data = self.data();
        if data.len() < 2 {
            return Ok(false);
        }
        if data.starts_with(&[0xff, 0xd8]) {
            self.note_boundary_change("none");
            self.begin_part(State::Image);
            return Ok(true);
        }
        // In junk, only a `--` that begins a line starts a part.
        if !data.starts_with(b"--") || (self.skipping > 0 && !self.line_start) {
            return self.skip_junk();
        }
        let Some((line, used)) = Self::line(&self.buf[self.start..self.end]) else { return Ok(false) };
        if used >= MAX_LINE {
            self.bad_part(&format!("a boundary line over {MAX_LINE} bytes"));
            return Ok(true);
        }
        let token = line[2..].trim_ascii_end();
        let token = token.strip_suffix(b"--").unwrap_or(token); // the closing boundary
        if token != self.boundary.as_slice() {
            let token = token.to_vec();
            self.note_boundary_change(&String::from_utf8_lossy(&token));
            self.boundary = token;
        }
        self.start += used;
        self.begin_part(State::Headers { count: 0 });
        Ok(true)
    }

    fn begin_part(&mut self, state: State) {
        self.info = PartInfo::default();
        self.state = state;
        self.scanner.reset();
    }

    fn note_boundary_change(&mut self, new: &str) {
        self.stats.boundary_changes += 1;
        if !std::mem::replace(&mut self.warned.boundary, true) {
            let announced = String::from_utf8_lossy(&self.boundary).into_owned();
            warn!(announced = %announced, found = %crate::rtsp::dump(new.as_bytes()), "multipart part with another boundary than the announced one (or none); following the parts as they come");
        }
    }

    /// Skips to the next line starting with `--` or the next FF D8, keeping a last FF that
    /// could begin one when the next byte comes and noting whether a line begins where it
    /// stopped, so that the result does not depend on where reads end. Gives up after one
    /// image's cap of bytes.
    fn skip_junk(&mut self) -> Result<bool, MultipartError> {
        let data = &self.buf[self.start..self.end];
        let next = (1..data.len()).find(|&i| {
            (data[i] == 0xd8 && data[i - 1] == 0xff)
                || (data[i - 1] == b'\n' && data[i] == b'-' && data.get(i + 1).is_none_or(|&b| b == b'-'))
        });
        let skip = match next {
            Some(i) if data[i] == 0xd8 => i - 1,
            Some(i) => i,
            None if data.last() == Some(&0xff) => data.len() - 1,
            None => data.len(),
        };
        self.line_start = skip > 0 && data[skip - 1] == b'\n';
        if self.skipping == 0 && skip > 0 {
            let offset = self.base + self.start as u64;
            self.junk_head.clear();
            self.junk_head.extend_from_slice(&data[..skip.min(64)]);
            let dump = crate::rtsp::dump(&self.junk_head);
            if !std::mem::replace(&mut self.warned.skipped, true) {
                warn!(offset, first = %dump, "skipping bytes between multipart parts");
            } else {
                debug!(offset, first = %dump, "skipping bytes between multipart parts");
            }
        }
        self.start += skip;
        self.skipping += skip;
        self.stats.skipped_bytes += skip as u64;
        if self.skipping > self.scanner.max_len() {
            return Err(MultipartError::NoParts {
                boundary: self.boundary(),
                skipped: self.skipping,
                offset: self.base + self.start as u64,
                dump: crate::rtsp::dump(&self.junk_head),
            });
        }
        Ok(next.is_some())
    }

    /// One header line. Returns true if it moved on.
    fn header_line(&mut self, count: usize) -> bool {
        if self.data().starts_with(&[0xff, 0xd8]) {
            // No blank line before the image (seen from some cameras).
            self.state = State::Image;
            return true;
        }
        let Some((line, used)) = Self::line(&self.buf[self.start..self.end]) else { return false };
        if line.is_empty() {
            self.start += used;
            self.state = State::Body;
            return true;
        }
        let parsed = std::str::from_utf8(line).ok().and_then(|l| l.split_once(':'));
        match parsed {
            Some((name, value)) if used < MAX_LINE && count < MAX_HEADERS => {
                self.info.set(name.trim(), value.trim());
                self.start += used;
                self.state = State::Headers { count: count + 1 };
            }
            _ => {
                let what = if used >= MAX_LINE {
                    format!("a header line over {MAX_LINE} bytes")
                } else if count >= MAX_HEADERS {
                    format!("more than {MAX_HEADERS} header lines")
                } else {
                    format!("{} where a header line was expected", crate::rtsp::dump(&line[..line.len().min(64)]))
                };
                self.bad_part(&what);
            }
        }
        true
    }

    /// After the blank line: the image must start here (after stray line ends).
    fn body_start(&mut self) -> bool {
        let blank = self.data().iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        self.start += blank;
        let data = self.data();
        if data.len() < 2 {
            return false;
        }
        if data.starts_with(&[0xff, 0xd8]) {
            self.state = State::Image;
        } else {
            let what = format!(
                "a part of type {} starting {}, not a JPEG",
                self.info.content_type.as_ref().map_or("(none)", ShortText::as_str),
                crate::rtsp::dump(&data[..data.len().min(32)])
            );
            self.bad_part(&what);
        }
        true
    }

    /// Counts and reports a part that is skipped, then looks for the next one.
    fn bad_part(&mut self, what: &str) {
        self.stats.bad_parts += 1;
        let offset = self.base + self.start as u64;
        if !std::mem::replace(&mut self.warned.bad_part, true) {
            warn!(offset, "multipart part skipped: {what}");
        } else {
            debug!(offset, "multipart part skipped: {what}");
        }
        // Past the first byte, so that the search for the next part moves on.
        self.start += 1.min(self.end - self.start);
        self.line_start = false;
        self.state = State::Boundary;
    }

    /// Scans the image at `start`.
    fn image(&mut self) -> Result<Scan, MultipartError> {
        let offset = self.base + self.start as u64;
        match self.scanner.scan(&self.buf[self.start..self.end]) {
            Ok(None) => Ok(Scan::More),
            Ok(Some(len)) => {
                let range = self.start..self.start + len;
                self.check_length(len, offset);
                self.start += len;
                self.state = State::Boundary;
                self.skipping = 0;
                self.stats.parts += 1;
                Ok(Scan::Done(range))
            }
            Err(error @ ScanError::TooLong { .. }) => Err(MultipartError::TooLong { offset, error }),
            Err(e) => {
                self.bad_part(&format!("broken JPEG: {e}"));
                Ok(Scan::Broken)
            }
        }
    }

    fn check_length(&mut self, len: usize, offset: u64) {
        let Some(claimed) = self.info.content_length else { return };
        if claimed == len as u64 {
            return;
        }
        self.stats.length_mismatches += 1;
        if !std::mem::replace(&mut self.warned.length, true) {
            warn!(
                offset,
                content_length = claimed,
                jpeg_bytes = len,
                "multipart part's Content-Length differs from its JPEG's length; framing by the JPEG's markers"
            );
        }
    }
}

impl PartInfo {
    fn set(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("content-type") {
            self.content_type = Some(ShortText::new(value));
        } else if name.eq_ignore_ascii_case("content-length") {
            self.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("x-timestamp") {
            self.timestamp_us = parse_seconds(value);
        } else if name.eq_ignore_ascii_case("x-framecast-clock") {
            self.clock = parse_clock(value);
        }
    }
}

/// `SECONDS[.FRACTION]` in µs (framecast, mjpg-streamer, µStreamer and the ESP32-CAM send six
/// digits of fraction).
pub fn parse_seconds(v: &str) -> Option<u64> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    if s.is_empty()
        || s.len() > 12
        || !s.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut us: u64 = s.parse::<u64>().ok()? * 1_000_000;
    let mut scale = 100_000;
    for d in frac.bytes().take(6) {
        us += u64::from(d - b'0') * scale;
        scale /= 10;
    }
    Some(us)
}

/// 32 hex digits, as [`crate::clock::clock_id`] in hex.
pub fn parse_clock(v: &str) -> Option<[u8; 16]> {
    let v = v.as_bytes();
    if v.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in v.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

/// The boundary as a Content-Type gives it, without quotes or a leading `--` (some cameras
/// wrongly announce it with the dashes it is written with).
pub fn clean_boundary(b: &str) -> &str {
    let b = b.trim().trim_matches('"');
    b.strip_prefix("--").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;

    fn jpegs() -> Vec<Vec<u8>> {
        (0..3).map(|i| crate::testutil::pattern_jpeg(64, 48, Subsampling::S420, 80, i).unwrap()).collect()
    }

    /// mjpg-streamer and µStreamer: `--B` first, each image followed by `\r\n--B\r\n`.
    fn mjpg_streamer(images: &[Vec<u8>], b: &str) -> Vec<u8> {
        let mut v = format!("--{b}\r\n").into_bytes();
        for (i, img) in images.iter().enumerate() {
            v.extend(
                format!("Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: {i}.500000\r\n\r\n", img.len())
                    .bytes(),
            );
            v.extend(img);
            v.extend(format!("\r\n--{b}\r\n").bytes());
        }
        v
    }

    /// The ESP32-CAM's CameraWebServer: `\r\n--B\r\n` before each part.
    fn esp32(images: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        for img in images {
            v.extend(b"\r\n--123456789000000000000987654321\r\n");
            v.extend(
                format!(
                    "Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: 4242.000123\r\n\r\n",
                    img.len()
                )
                .bytes(),
            );
            v.extend(img);
        }
        v
    }

    /// Images as (length, first bytes hash-ish) for short assertion messages.
    fn lens(v: &[Vec<u8>]) -> Vec<(usize, u64)> {
        v.iter()
            .map(|i| (i.len(), i.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)))))
            .collect()
    }

    fn read_all(boundary: &str, data: &[u8], max: usize) -> (Vec<Vec<u8>>, MultipartStats) {
        let mut m = Multipart::new(boundary, max);
        let mut out = Vec::new();
        m.feed(data, |p| out.push(p.image.to_vec())).unwrap();
        (out, m.stats)
    }

    #[test]
    fn every_split_point_gives_the_same_images() {
        let imgs = jpegs();
        for data in [mjpg_streamer(&imgs, "boundarydonotcross"), esp32(&imgs)] {
            for split in 0..data.len() {
                let mut m = Multipart::new("\"--123456789000000000000987654321\"", 1 << 20);
                let mut out = Vec::new();
                m.feed(&data[..split], |p| out.push(p.image.to_vec())).unwrap();
                m.feed(&data[split..], |p| out.push(p.image.to_vec())).unwrap();
                assert_eq!(lens(&out), lens(&imgs), "split at {split}");
            }
        }
    }

    #[test]
    fn reads_part_headers() {
        let imgs = jpegs();
        let mut m = Multipart::new("boundarydonotcross", 1 << 20);
        let mut infos = Vec::new();
        let mut data = mjpg_streamer(&imgs[..1], "boundarydonotcross");
        let at = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
        data.splice(at..at, b"X-Framecast-Clock: 000102030405060708090a0b0c0d0e0f\r\n".iter().copied());
        m.feed(&data, |p| infos.push(p.info)).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].content_length, Some(imgs[0].len() as u64));
        assert_eq!(infos[0].timestamp_us, Some(500_000));
        assert_eq!(infos[0].content_type.as_ref().map(ShortText::as_str), Some("image/jpeg"));
        assert_eq!(
            ShortText::new("text/html; charset=utf-8; and a long tail").as_str(),
            "text/html; charset=utf-8; and a "
        );
        assert_eq!(ShortText::new(&format!("{}\u{e9}", "a".repeat(31))).as_str(), "a".repeat(31));
        assert_eq!(m.stats.boundary_changes, 0);
    }

    #[test]
    fn a_lying_content_length_loses_no_frame() {
        let imgs = jpegs();
        for claim in [10usize, 1 << 40] {
            let mut data = Vec::new();
            for img in &imgs {
                data.extend(format!("--b\r\nContent-Length: {claim}\r\n\r\n").bytes());
                data.extend(img);
                data.extend(b"\r\n");
            }
            let (out, stats) = read_all("b", &data, 1 << 20);
            assert_eq!(lens(&out), lens(&imgs), "Content-Length {claim}");
            assert_eq!(stats.length_mismatches, 3);
        }
    }

    #[test]
    fn a_changed_or_missing_boundary_is_followed() {
        let imgs = jpegs();
        let (out, stats) = read_all("announced", &mjpg_streamer(&imgs, "other"), 1 << 20);
        assert_eq!((lens(&out), stats.boundary_changes), (lens(&imgs), 1));
        // No boundary at all: images back to back, as some cameras send them.
        let (out, stats) = read_all("b", &imgs.concat(), 1 << 20);
        assert_eq!(lens(&out), lens(&imgs));
        assert_eq!(stats.boundary_changes, 3);
    }

    #[test]
    fn skips_html_parts_broken_images_and_junk() {
        let imgs = jpegs();
        let mut data = b"--b\r\nContent-Type: text/html\r\n\r\n<html>oops</html>\r\n".to_vec();
        data.extend(b"--b\r\n\r\n");
        data.extend(&imgs[0]);
        // A part cut short: the next part's boundary comes in the middle of its scan.
        data.extend(b"\r\n--b\r\nContent-Type: image/jpeg\r\n\r\n");
        data.extend(&imgs[1][..imgs[1].len() / 2]);
        data.extend(b"\r\n--b\r\nContent-Type: image/jpeg\r\n\r\n");
        data.extend(&imgs[1]);
        data.extend(b"\r\nsome junk between parts\r\n--b\r\nNot a header line\r\n\r\n");
        data.extend(&imgs[2]);
        data.extend(b"\r\n--b\r\n\r\n");
        data.extend(&imgs[2]);
        let (out, stats) = read_all("b", &data, 1 << 20);
        // The image after the bad header line is found by its FF D8.
        assert_eq!(lens(&out), lens(&[imgs.clone(), vec![imgs[2].clone()]].concat()));
        assert_eq!(stats.bad_parts, 3, "{stats:?}");
        assert!(stats.skipped_bytes > 0);
    }

    #[test]
    fn header_caps() {
        let img = &jpegs()[0];
        let mut data = format!("--b\r\nX-Long: {}\r\n\r\n", "a".repeat(MAX_LINE)).into_bytes();
        data.extend(img);
        data.extend(b"\r\n--b\r\n");
        data.extend((0..=MAX_HEADERS).flat_map(|i| format!("X-H{i}: v\r\n").into_bytes()));
        data.extend(b"\r\n");
        data.extend(img);
        data.extend(b"\r\n--b\r\n\r\n");
        data.extend(img);
        let (out, stats) = read_all("b", &data, 1 << 20);
        // Each part with bad headers is skipped up to its image's FF D8, which is taken.
        assert_eq!(lens(&out), lens(&[img.clone(), img.clone(), img.clone()]));
        assert_eq!((stats.bad_parts, stats.boundary_changes), (2, 2));
    }

    #[test]
    fn gives_up_on_a_body_without_parts_and_on_images_over_the_cap() {
        let mut m = Multipart::new("b", 4096);
        let err = m.feed(&b"<html><body>".repeat(1000), |_| {}).unwrap_err();
        assert!(matches!(err, MultipartError::NoParts { .. }), "{err}");
        assert!(err.to_string().contains("'--b'") && err.to_string().contains("\"<html><body>"), "{err}");
        let img = &jpegs()[0];
        let mut m = Multipart::new("b", img.len() - 1);
        let mut data = b"--b\r\n\r\n".to_vec();
        data.extend(img);
        let err = m.feed(&data, |_| panic!("over the cap")).unwrap_err();
        assert!(matches!(err, MultipartError::TooLong { offset: 7, .. }), "{err}");
        // At the cap exactly, it passes.
        assert_eq!(read_all("b", &data, img.len()).0.len(), 1);
    }

    #[test]
    fn header_values() {
        assert_eq!(parse_seconds("12.5"), Some(12_500_000));
        assert_eq!(parse_seconds("4242.000123"), Some(4_242_000_123));
        assert_eq!(parse_seconds("7"), Some(7_000_000));
        assert_eq!(parse_seconds("-1.0"), None);
        assert_eq!(parse_seconds("99999999999999999999"), None);
        assert_eq!(parse_clock("000102030405060708090a0b0c0d0e0f").unwrap()[15], 15);
        assert_eq!(parse_clock("0001"), None);
        assert_eq!(clean_boundary("\"--frame\""), "frame");
        assert_eq!(clean_boundary(" boundarydonotcross"), "boundarydonotcross");
    }

    /// Found by the fuzz target: a `--` in junk after a bad header line was taken for a
    /// boundary when the bytes came one at a time (the junk skip kept its last byte and lost
    /// whether a line began there), swallowing the FF D8 FF D9 that a whole read found.
    #[test]
    fn junk_is_skipped_the_same_however_it_is_split() {
        let input = include_bytes!("testdata/multipart-fuzz-1.bin");
        let data = &input[1..];
        let run = |step: usize| {
            let mut m = Multipart::new("b", 64 << 10);
            let mut out = Vec::new();
            for piece in data.chunks(step) {
                m.feed(piece, |p| out.push((p.offset, p.image.len()))).unwrap();
            }
            out
        };
        let whole = run(data.len());
        assert_eq!(whole, vec![(359, 4)]);
        for step in 1..=64 {
            assert_eq!(run(step), whole, "pieces of {step}");
        }
    }
}
