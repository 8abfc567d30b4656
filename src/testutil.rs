//! Test support shared by the unit tests, `tests/`, `benches/` and `fuzz/`: sample frame
//! headers, test-pattern frames and their JPEGs, a scripted reader and PSNR.
//!
//! Not part of framecast's interface (hidden from the docs, as retina's `testutil`): it is in
//! the library only because benches, fuzz targets and integration tests can reach nothing
//! else. It uses no dev-dependency; helpers that need one live in `tests/common`.

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::capture::pattern::TestPattern;
use crate::capture::{Layout, RawFrame};
use crate::codec::{CodecError, Encoder, JpegBuf};
use crate::format::Subsampling;
use crate::net::{FrameHeader, StreamInfo};

/// `MessageReader`'s first allocation and smallest read: its buffer never grows past this
/// (or twice the largest message allowed) however the bytes arrive.
pub const READ_CHUNK: usize = crate::net::io::READ_CHUNK;

/// True when the `CI` environment variable is set to something other than "", "0" or "false":
/// a test that lacks what it needs fails there instead of passing silently.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// A frame header as a sender writes it for frame `seq` of stream `info` with a JPEG of
/// `jpeg_len` bytes: quality 75, 4:2:0, no flags, captured at 1 s, encoded from 1.0001 s to
/// 1.002 s and sent at 1.0021 s. Tests change fields with `..sample_header(..)`. (The bytes
/// are in `docs/malformed-inputs.md`'s table: changing them changes the table.)
pub fn sample_header(seq: u64, info: StreamInfo, jpeg_len: usize) -> FrameHeader {
    FrameHeader {
        seq,
        capture_us: 1_000_000,
        encode_start_us: 1_000_100,
        encode_end_us: 1_002_000,
        send_us: 1_002_100,
        width: info.width as u16,
        height: info.height as u16,
        quality: 75,
        subsampling: Subsampling::S420.to_wire(),
        flags: 0,
        jpeg_len: jpeg_len as u32,
    }
}

/// [`sample_header`] with all four timestamps at [`crate::clock::now_us`], for a fake sender
/// talking to a real receiver (which measures latency against its own clock).
pub fn live_header(seq: u64, info: StreamInfo, jpeg_len: usize) -> FrameHeader {
    let now = crate::clock::now_us();
    FrameHeader {
        capture_us: now,
        encode_start_us: now,
        encode_end_us: now,
        send_us: now,
        ..sample_header(seq, info, jpeg_len)
    }
}

/// Test-pattern frame `seq` at `width`x`height` in planar YCbCr with `sub` chroma, as the
/// pattern source captures it.
pub fn pattern_frame(width: u32, height: u32, sub: Subsampling, seq: u64) -> RawFrame {
    let mut frame = RawFrame::empty();
    TestPattern::new(width, height, sub).render(seq, &mut frame.data);
    frame.seq = seq;
    frame.width = width;
    frame.height = height;
    frame.layout = Layout::Yuv(sub);
    frame
}

/// Test-pattern frame `seq` ([`pattern_frame`]) compressed by framecast's encoder at
/// `quality`, with the frame's own subsampling.
pub fn pattern_jpeg(width: u32, height: u32, sub: Subsampling, quality: u8, seq: u64) -> Result<Vec<u8>, CodecError> {
    let frame = pattern_frame(width, height, sub, seq);
    let mut out = JpegBuf::default();
    Encoder::new(quality, sub, false)?.encode(&frame, &mut out)?;
    Ok(out.as_slice().to_vec())
}

/// Test-pattern frame `seq` ([`pattern_frame`]) compressed at `quality` with a restart marker
/// every `restart_rows` MCU rows, as `threads` slices (1: one whole encode).
pub fn restart_jpeg(
    (width, height): (u32, u32),
    sub: Subsampling,
    quality: u8,
    restart_rows: u16,
    threads: usize,
) -> Result<Vec<u8>, CodecError> {
    let frame = pattern_frame(width, height, sub, 5);
    let mut out = JpegBuf::default();
    let mut enc = Encoder::new(quality, sub, false)?;
    enc.set_restart_rows(restart_rows)?;
    enc.set_threads(threads)?;
    enc.encode(&frame, &mut out)?;
    Ok(out.as_slice().to_vec())
}

/// Peak signal-to-noise ratio of two 8-bit images, in dB: infinite if they are equal, and
/// NaN if they differ in length or are empty (every comparison with NaN is false, so a test
/// that asserts a minimum fails).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::NAN;
    }
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// The RGB bytes of decoded `0RGB` pixels (`codec::Decoder`'s output), to compare with
/// [`TestPattern::render_rgb`] through [`psnr`].
pub fn xrgb_to_rgb(px: &[u32]) -> Vec<u8> {
    px.iter().flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8]).collect()
}

/// Where a [`Script`]'s reads stop, and what the read there returns.
#[derive(Clone, Copy, Debug)]
struct Stop {
    /// Stream position: no read returns bytes from both sides of it.
    at: usize,
    /// The error of one read at `at`, before the bytes after it.
    fail: Option<io::ErrorKind>,
}

/// A `Read` that plays a script: bytes handed out in chosen pieces, errors between them,
/// then end of stream (or an error on every read, see [`Script::then_fail`]). Counts the
/// bytes handed out, and fails a read into an empty buffer (which would look like EOF).
#[derive(Debug, Default)]
pub struct Script {
    data: Vec<u8>,
    stops: VecDeque<Stop>,
    max_read: Option<usize>,
    end: Option<io::ErrorKind>,
    handed_out: usize,
}

impl Script {
    /// An empty script; add to it with [`Script::bytes`] and [`Script::fail`].
    pub fn new() -> Self {
        Script::default()
    }

    /// The whole of `data`, in as few reads as the reader's buffer allows.
    pub fn whole(data: &[u8]) -> Self {
        Script::new().bytes(data)
    }

    /// `data` cut at the given positions (in any order; past the end counts as the end): no
    /// read returns bytes from both sides of a cut.
    pub fn split(data: &[u8], cuts: &[usize]) -> Self {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut s = Script::whole(data);
        s.stops = cuts.into_iter().map(|at| Stop { at, fail: None }).chain(s.stops).collect();
        s
    }

    /// `data` one byte per read.
    pub fn bytewise(data: &[u8]) -> Self {
        Script::whole(data).max_read(1)
    }

    /// `chunks`, each handed out over as many reads as the reader's buffer needs.
    pub fn chunks<B: AsRef<[u8]>>(chunks: &[B]) -> Self {
        chunks.iter().fold(Script::new(), |s, c| s.bytes(c.as_ref()))
    }

    /// Appends `data`, handed out after what the script holds so far, never in the same
    /// read as it.
    pub fn bytes(mut self, data: &[u8]) -> Self {
        self.data.extend_from_slice(data);
        self.stops.push_back(Stop { at: self.data.len(), fail: None });
        self
    }

    /// Appends one read that fails with `kind`.
    pub fn fail(mut self, kind: io::ErrorKind) -> Self {
        self.stops.push_back(Stop { at: self.data.len(), fail: Some(kind) });
        self
    }

    /// Hands out at most `n` bytes per read (at least 1).
    pub fn max_read(mut self, n: usize) -> Self {
        self.max_read = Some(n.max(1));
        self
    }

    /// Once the script is played, every read fails with `kind` (e.g. `WouldBlock`, a peer
    /// that stays silent) instead of returning end of stream.
    pub fn then_fail(mut self, kind: io::ErrorKind) -> Self {
        self.end = Some(kind);
        self
    }

    /// All the bytes of the script.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// How many bytes reads have returned so far.
    pub fn handed_out(&self) -> usize {
        self.handed_out
    }
}

impl Read for Script {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "read into an empty buffer"));
        }
        let pos = self.handed_out;
        while let Some(stop) = self.stops.front().copied().filter(|s| s.at <= pos) {
            self.stops.pop_front();
            if let Some(kind) = stop.fail {
                return Err(kind.into());
            }
        }
        if pos == self.data.len() {
            return self.end.map_or(Ok(0), |kind| Err(kind.into()));
        }
        let limit = self.stops.front().map_or(self.data.len(), |s| s.at);
        let n = (limit - pos).min(out.len()).min(self.max_read.unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.data[pos..pos + n]);
        self.handed_out += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(mut s: Script, buf_len: usize) -> Vec<Result<Vec<u8>, io::ErrorKind>> {
        let mut buf = vec![0u8; buf_len];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.push(Ok(buf[..n].to_vec())),
                Err(e) if got.len() > 20 => panic!("no end: {e}"),
                Err(e) => got.push(Err(e.kind())),
            }
        }
    }

    #[test]
    fn a_script_stops_at_cuts_failures_and_the_read_size() {
        use io::ErrorKind::WouldBlock;
        let s = Script::new().bytes(b"abc").fail(WouldBlock).fail(WouldBlock).bytes(b"de");
        let want = [Ok(b"abc".to_vec()), Err(WouldBlock), Err(WouldBlock), Ok(b"de".to_vec())];
        assert_eq!(reads(s, 8), want);
        let split = [b"a".to_vec(), b"bc".to_vec(), b"de".to_vec(), b"f".to_vec()].map(Ok);
        assert_eq!(reads(Script::split(b"abcdef", &[9, 3, 1]), 2), split);
        assert_eq!(reads(Script::bytewise(b"xy"), 8), [b"x".to_vec(), b"y".to_vec()].map(Ok));
        assert_eq!(reads(Script::chunks(&["ab", "", "c"]), 8), [b"ab".to_vec(), b"c".to_vec()].map(Ok));
    }

    #[test]
    fn a_script_counts_what_it_handed_out_and_can_end_in_an_error() {
        let mut s = Script::whole(b"abcd").then_fail(io::ErrorKind::TimedOut);
        let mut buf = [0u8; 3];
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        assert_eq!(s.read(&mut buf).unwrap(), 1);
        assert_eq!(s.handed_out(), 4);
        for _ in 0..2 {
            assert_eq!(s.read(&mut buf).unwrap_err().kind(), io::ErrorKind::TimedOut);
        }
        assert_eq!(s.read(&mut []).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn psnr_of_equal_close_and_mismatched_images() {
        assert_eq!(psnr(&[1, 2, 3], &[1, 2, 3]), f64::INFINITY);
        // One byte off by 255 in 3: MSE 255²/3, PSNR 10·log10(3).
        assert!((psnr(&[0, 0, 0], &[255, 0, 0]) - 10.0 * 3f64.log10()).abs() < 1e-9);
        assert!(psnr(&[1, 2], &[1, 2, 3]).is_nan() && psnr(&[], &[]).is_nan());
        assert_eq!(xrgb_to_rgb(&[0x00_11_22_33, 0xff_44_55_66]), [0x11, 0x22, 0x33, 0x44, 0x55, 0x66]);
    }

    #[test]
    fn pattern_jpeg_decodes_to_the_pattern() {
        let (w, h) = (64u32, 48u32);
        let jpeg = pattern_jpeg(w, h, Subsampling::S420, 90, 5).unwrap();
        let mut px = Vec::new();
        crate::codec::Decoder::new().unwrap().decode(&jpeg, w as usize, h as usize, &mut px).unwrap();
        let want = TestPattern::new(w, h, Subsampling::S420).render_rgb(5);
        let db = psnr(&xrgb_to_rgb(&px), &want);
        assert!(db > 30.0, "{db:.1} dB");
        let h = sample_header(3, StreamInfo { width: w, height: h, fps_milli: 0 }, jpeg.len());
        assert_eq!((h.width, h.height, h.jpeg_len as usize), (64, 48, jpeg.len()));
    }
}
