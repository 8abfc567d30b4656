//! YUV4MPEG2 (`.y4m`) files: raw 8-bit planar video, e.g. from
//! `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -t 10 -pix_fmt yuv420p clip.y4m`.
//!
//! Each frame is read with one `read` straight into the caller's reused frame buffer: the
//! planes in a Y4M frame are already laid out as [`Layout::Yuv`] wants them (Y, Cb, Cr,
//! tightly packed), so there is no intermediate buffer and no copy in user space (only the
//! `FRAME` line goes through the small `BufReader`).
//!
//! The same reader takes Y4M from a pipe ([`Y4mSource::from_reader`], used by
//! [`super::pipe`]), where nothing is seekable (no `--loop`) and a cut-off frame is an error
//! rather than the end of a file that was still being written.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{yuv_len, CaptureError, FrameSource, Layout, RawFrame};
use crate::format::Subsampling;
use crate::net::proto::{MAX_DIMENSION, MAX_PIXELS};

/// Longest header or `FRAME` line accepted (real ones are well under 100 bytes).
const MAX_LINE: u64 = 4096;

pub struct Y4mSource<R = File> {
    path: PathBuf,
    reader: BufReader<R>,
    /// File offset of the first `FRAME` line, where a loop starts again.
    data_start: u64,
    line: Vec<u8>,
    width: u32,
    height: u32,
    sub: Subsampling,
    looping: bool,
    next: u64,
    fps: f64,
    /// A frame cut off by the end of the input is an error (a pipe), not the end (a file).
    strict: bool,
    limited: Option<bool>,
}

fn file_err(path: &Path, what: impl Into<String>) -> CaptureError {
    CaptureError::File { path: path.to_owned(), what: what.into() }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes into `line` (cleared first).
/// Returns the bytes read: 0 at the end of the file.
fn read_line<R: Read>(r: &mut BufReader<R>, line: &mut Vec<u8>) -> std::io::Result<usize> {
    line.clear();
    r.by_ref().take(MAX_LINE).read_until(b'\n', line)
}

/// The stream header's parameters.
#[derive(Debug, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    sub: Subsampling,
    fps: f64,
    /// `XCOLORRANGE=LIMITED` (true) or `=FULL` (false), if the header says.
    limited: Option<bool>,
}

/// Parses `YUV4MPEG2 W.. H.. [F..] [C..] [I..] [A..] [X..]` (without the newline).
fn parse_header(line: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the header is not text".to_string())?;
    let mut fields = text.split(' ').filter(|f| !f.is_empty());
    if fields.next() != Some("YUV4MPEG2") {
        return Err("the file does not start with 'YUV4MPEG2'".into());
    }
    let (mut width, mut height, mut fps, mut colour, mut limited) = (None, None, 0.0, "420jpeg", None);
    for f in fields {
        let (key, val) = f.split_at(1);
        match key {
            "W" => width = Some(val.parse::<u32>().map_err(|_| format!("width '{val}' is not a number"))?),
            "H" => height = Some(val.parse::<u32>().map_err(|_| format!("height '{val}' is not a number"))?),
            "F" => {
                let (n, d) = val.split_once(':').ok_or_else(|| format!("frame rate '{val}', expected N:D"))?;
                let (n, d) = (n.parse::<u32>(), d.parse::<u32>());
                let (Ok(n), Ok(d)) = (n, d) else { return Err(format!("frame rate '{val}', expected N:D")) };
                fps = if d > 0 { f64::from(n) / f64::from(d) } else { 0.0 };
            }
            "C" => colour = val,
            "X" if val.eq_ignore_ascii_case("COLORRANGE=LIMITED") => limited = Some(true),
            "X" if val.eq_ignore_ascii_case("COLORRANGE=FULL") => limited = Some(false),
            // Interlacing, pixel aspect and extensions do not change how frames are read.
            _ => {}
        }
    }
    let (Some(width), Some(height)) = (width, height) else {
        return Err("the header has no W (width) or H (height)".into());
    };
    let sub = match colour {
        "420jpeg" | "420paldv" | "420mpeg2" | "420" => Subsampling::S420,
        "422" => Subsampling::S422,
        "444" => Subsampling::S444,
        "mono" => Subsampling::Gray,
        other => {
            return Err(format!(
                "colour space C{other} is not supported; expected 8-bit 420, 422, 444 or mono (convert with ffmpeg -pix_fmt yuv420p)"
            ))
        }
    };
    if width == 0
        || height == 0
        || width > MAX_DIMENSION
        || height > MAX_DIMENSION
        || u64::from(width) * u64::from(height) > MAX_PIXELS
    {
        return Err(format!(
            "size {width}x{height}, expected 1..={MAX_DIMENSION} on each side and at most {MAX_PIXELS} pixels"
        ));
    }
    let even_w = matches!(sub, Subsampling::S420 | Subsampling::S422);
    if (even_w && width % 2 == 1) || (sub == Subsampling::S420 && height % 2 == 1) {
        return Err(format!("size {width}x{height} with {sub} chroma: expected even dimensions"));
    }
    Ok(Header { width, height, sub, fps, limited })
}

impl Y4mSource<File> {
    pub fn open(path: &Path, looping: bool) -> Result<Self, CaptureError> {
        let f = File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
        Self::from_reader(f, path, looping, false)
    }
}

impl<R: Read + Seek> Y4mSource<R> {
    /// Y4M from `reader`, named `path` in errors. `looping` needs a seekable reader; with
    /// `strict`, a frame cut off by the end of the input is an error.
    pub fn from_reader(reader: R, path: &Path, looping: bool, strict: bool) -> Result<Self, CaptureError> {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let n = read_line(&mut reader, &mut line).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
        let header = if line.last() == Some(&b'\n') {
            parse_header(&line[..n - 1])
        } else {
            Err(format!("no header line within the first {MAX_LINE} bytes"))
        };
        let header = header.map_err(|what| {
            let expected =
                "expected a 'YUV4MPEG2 W.. H.. F.. C420' header and 8-bit 4:2:0, 4:2:2, 4:4:4 or mono frames";
            file_err(path, format!("not a usable Y4M file ({what}); {expected}"))
        })?;
        let Header { width, height, sub, fps, limited } = header;
        Ok(Y4mSource {
            path: path.to_owned(),
            reader,
            data_start: n as u64,
            line,
            width,
            height,
            sub,
            looping,
            next: 0,
            fps,
            strict,
            limited,
        })
    }

    /// The header's `XCOLORRANGE`: `Some(true)` limited, `Some(false)` full, `None` unsaid.
    pub fn limited_range(&self) -> Option<bool> {
        self.limited
    }

    /// The file's chroma subsampling.
    pub fn subsampling(&self) -> Subsampling {
        self.sub
    }

    /// Reads the next frame into `data`. `Ok(false)` at the end of the file; a truncated
    /// last frame counts as the end (with a warning).
    fn read_frame(&mut self, data: &mut Vec<u8>) -> Result<bool, CaptureError> {
        let n = read_line(&mut self.reader, &mut self.line)
            .map_err(|e| file_err(&self.path, format!("frame {}: cannot read: {e}", self.next)))?;
        if n == 0 {
            return Ok(false);
        }
        let complete = self.line.last() == Some(&b'\n');
        if !complete && (n as u64) < MAX_LINE && !self.strict {
            tracing::warn!(path = %self.path.display(), frame = self.next, "last frame is truncated; treating it as the end");
            return Ok(false);
        }
        // `FRAME`, then optional parameters after a space, which do not change the layout.
        if !complete || !(self.line == b"FRAME\n" || self.line.starts_with(b"FRAME ")) {
            let shown = String::from_utf8_lossy(&self.line[..self.line.len().min(40)]).into_owned();
            return Err(file_err(
                &self.path,
                format!("frame {}: expected a 'FRAME' line, found {shown:?}{}", self.next, self.header_hint()),
            ));
        }
        // Growing fills with zeros once; a buffer back from the pool is already this size.
        data.resize(yuv_len(self.width, self.height, self.sub), 0);
        match self.reader.read_exact(data) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && self.strict => Err(self.cut_off()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(path = %self.path.display(), frame = self.next, "last frame is truncated; treating it as the end");
                Ok(false)
            }
            Err(e) => Err(file_err(&self.path, format!("frame {}: cannot read: {e}", self.next))),
        }
    }
}

impl<R> Y4mSource<R> {
    /// What the header promised, for errors that suggest it lies.
    fn header_hint(&self) -> String {
        let len = yuv_len(self.width, self.height, self.sub);
        format!(" (the header says {}x{} {}: {len} bytes a frame)", self.width, self.height, self.sub)
    }

    fn cut_off(&self) -> CaptureError {
        file_err(&self.path, format!("frame {}: input ended inside the frame{}", self.next, self.header_hint()))
    }
}

impl<R: Read + Seek> FrameSource for Y4mSource<R> {
    fn describe(&self) -> String {
        format!(
            "{} ({}x{} {} at {:.2} fps{})",
            self.path.display(),
            self.width,
            self.height,
            self.sub,
            self.fps,
            if self.looping { ", looping" } else { "" }
        )
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let mut got = self.read_frame(&mut frame.data)?;
        if !got && self.looping && self.next > 0 {
            self.reader
                .seek(SeekFrom::Start(self.data_start))
                .map_err(|e| file_err(&self.path, format!("cannot seek back to the first frame: {e}")))?;
            got = self.read_frame(&mut frame.data)?;
        }
        if !got {
            return Ok(false);
        }
        frame.seq = self.next;
        frame.width = self.width;
        frame.height = self.height;
        frame.layout = Layout::Yuv(self.sub);
        self.next += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_y4m(path: &Path, header: &str, frames: usize, frame_len: usize) {
        let mut f = File::create(path).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        for i in 0..frames {
            f.write_all(b"FRAME\n").unwrap();
            f.write_all(&vec![i as u8; frame_len]).unwrap();
        }
    }

    #[test]
    fn reads_420_frames_and_loops() {
        let dir = std::env::temp_dir().join(format!("fc-y4m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.y4m");
        write_y4m(&p, "YUV4MPEG2 W16 H8 F30:1 C420jpeg\n", 2, 16 * 8 * 3 / 2);
        let mut src = Y4mSource::open(&p, true).unwrap();
        assert_eq!(src.size(), (16, 8));
        let mut f = RawFrame::empty();
        let mut firsts = Vec::new();
        for _ in 0..5 {
            assert!(src.next_frame(&mut f).unwrap());
            assert_eq!(f.data.len(), 16 * 8 * 3 / 2);
            firsts.push(f.data[0]);
        }
        assert_eq!(firsts, vec![0, 1, 0, 1, 0]);
        assert_eq!(f.seq, 4);

        let mut once = Y4mSource::open(&p, false).unwrap();
        assert!(once.next_frame(&mut f).unwrap());
        assert!(once.next_frame(&mut f).unwrap());
        assert!(!once.next_frame(&mut f).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_headers() {
        let h = parse_header(b"YUV4MPEG2 W1280 H720 F30000:1001 Ip A1:1 C420mpeg2 XYSCSS=420MPEG2").unwrap();
        assert_eq!((h.width, h.height, h.sub), (1280, 720, Subsampling::S420));
        assert!((h.fps - 29.97).abs() < 0.01);
        assert_eq!(h.limited, None);
        assert_eq!(parse_header(b"YUV4MPEG2 W2 H2 XCOLORRANGE=LIMITED").unwrap().limited, Some(true));
        assert_eq!(parse_header(b"YUV4MPEG2 W2 H2 XCOLORRANGE=FULL C420jpeg").unwrap().limited, Some(false));
        let h = parse_header(b"YUV4MPEG2 W6 H5 C444").unwrap();
        assert_eq!((h.sub, h.fps), (Subsampling::S444, 0.0));
        assert_eq!(parse_header(b"YUV4MPEG2 W4 H2").unwrap().sub, Subsampling::S420, "C420jpeg is the default");
        assert_eq!(parse_header(b"YUV4MPEG2 W3 H3 Cmono").unwrap().sub, Subsampling::Gray);
        for (bad, why) in [
            (&b"YUV4MPEG2 H8 C420"[..], "no W"),
            (b"YUV4MPEG2 W16 H7 C420", "expected even"),
            (b"YUV4MPEG2 W0 H8", "expected 1..="),
            (b"YUV4MPEG2 W99999 H8", "expected 1..="),
            (b"YUV4MPEG2 Wx H8", "not a number"),
            (b"YUV4MPEG2 W16 H8 F30", "expected N:D"),
            (b"YUV4MPEG3 W16 H8", "'YUV4MPEG2'"),
        ] {
            let e = parse_header(bad).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn reads_frames_into_the_same_buffer_with_frame_parameters() {
        let dir = std::env::temp_dir().join(format!("fc-y4m-p-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.y4m");
        let mut bytes = b"YUV4MPEG2 W4 H2 F25:1 C444\n".to_vec();
        for (i, params) in ["", " Ixyz", ""].iter().enumerate() {
            bytes.extend_from_slice(format!("FRAME{params}\n").as_bytes());
            bytes.extend((0..24u8).map(|b| b + 100 * i as u8));
        }
        std::fs::write(&p, &bytes).unwrap();
        let mut src = Y4mSource::open(&p, false).unwrap();
        let mut f = RawFrame::empty();
        assert!(src.next_frame(&mut f).unwrap());
        let ptr = f.data.as_ptr();
        assert_eq!(f.data, (0..24).collect::<Vec<u8>>());
        assert_eq!(f.layout, Layout::Yuv(Subsampling::S444));
        assert!(src.next_frame(&mut f).unwrap());
        assert_eq!(f.data[0], 100, "frame parameters are skipped");
        assert!(src.next_frame(&mut f).unwrap());
        assert_eq!((f.data[23], f.seq), (223, 2));
        assert_eq!(ptr, f.data.as_ptr(), "read into the same buffer");
        assert!(!src.next_frame(&mut f).unwrap());

        // A truncated last frame is the end; a bad FRAME line is an error naming what it found.
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let mut src = Y4mSource::open(&p, false).unwrap();
        assert!(src.next_frame(&mut f).unwrap() && src.next_frame(&mut f).unwrap());
        assert!(!src.next_frame(&mut f).unwrap());
        let mut bad = bytes.clone();
        bad[27 + 6 + 24] = b'X'; // the second FRAME line
        std::fs::write(&p, &bad).unwrap();
        let mut src = Y4mSource::open(&p, true).unwrap();
        assert!(src.next_frame(&mut f).unwrap());
        let e = src.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("frame 1: expected a 'FRAME' line, found \"XRAME"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_high_bit_depth_and_garbage() {
        let dir = std::env::temp_dir().join(format!("fc-y4m-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.y4m");
        write_y4m(&p, "YUV4MPEG2 W16 H8 F30:1 C420p10\n", 1, 16 * 8 * 3);
        let e = Y4mSource::open(&p, false).err().unwrap().to_string();
        assert!(e.contains("not supported") && e.contains("yuv420p"), "{e}");
        std::fs::write(&p, b"GIF89a").unwrap();
        let e = Y4mSource::open(&p, false).err().unwrap().to_string();
        assert!(e.contains("YUV4MPEG2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
