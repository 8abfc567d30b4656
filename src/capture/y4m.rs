//! YUV4MPEG2 (`.y4m`) files: raw 8-bit planar video, e.g. from
//! `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -t 10 -pix_fmt yuv420p clip.y4m`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::{yuv_len, CaptureError, FrameSource, Layout, RawFrame};
use crate::net::proto::MAX_PIXELS;
use crate::net::Subsampling;

pub struct Y4mSource {
    path: PathBuf,
    decoder: y4m::Decoder<BufReader<File>>,
    width: u32,
    height: u32,
    sub: Subsampling,
    looping: bool,
    next: u64,
    fps: f64,
}

fn file_err(path: &Path, what: impl Into<String>) -> CaptureError {
    CaptureError::File { path: path.to_owned(), what: what.into() }
}

fn open(path: &Path) -> Result<y4m::Decoder<BufReader<File>>, CaptureError> {
    let f = File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let limits = y4m::Limits { bytes: (MAX_PIXELS * 3) as usize };
    y4m::Decoder::new_with_limits(BufReader::with_capacity(1 << 20, f), limits).map_err(|e| {
        file_err(
            path,
            format!("not a usable Y4M file ({e}); expected a 'YUV4MPEG2 W.. H.. F.. C420' header and 8-bit 4:2:0, 4:2:2, 4:4:4 or mono frames"),
        )
    })
}

impl Y4mSource {
    pub fn open(path: &Path, looping: bool) -> Result<Self, CaptureError> {
        let decoder = open(path)?;
        let sub = match decoder.get_colorspace() {
            y4m::Colorspace::C420 | y4m::Colorspace::C420jpeg | y4m::Colorspace::C420paldv | y4m::Colorspace::C420mpeg2 => {
                Subsampling::S420
            }
            y4m::Colorspace::C422 => Subsampling::S422,
            y4m::Colorspace::C444 => Subsampling::S444,
            y4m::Colorspace::Cmono => Subsampling::Gray,
            other => {
                return Err(file_err(
                    path,
                    format!("colour space {other:?} is not supported; expected 8-bit 420, 422, 444 or mono (convert with ffmpeg -pix_fmt yuv420p)"),
                ))
            }
        };
        let (w, h) = (decoder.get_width(), decoder.get_height());
        let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
            return Err(file_err(path, format!("size {w}x{h} is too large")));
        };
        let even_w = matches!(sub, Subsampling::S420 | Subsampling::S422);
        if (even_w && width % 2 == 1) || (sub == Subsampling::S420 && height % 2 == 1) {
            return Err(file_err(path, format!("size {w}x{h} with {sub} chroma: expected even dimensions")));
        }
        let rate = decoder.get_framerate();
        let fps = if rate.den > 0 { rate.num as f64 / rate.den as f64 } else { 0.0 };
        Ok(Y4mSource { path: path.to_owned(), decoder, width, height, sub, looping, next: 0, fps })
    }

    /// The file's chroma subsampling.
    pub fn subsampling(&self) -> Subsampling {
        self.sub
    }
}

impl FrameSource for Y4mSource {
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
        let mut reopened = false;
        loop {
            match self.decoder.read_frame() {
                Ok(f) => {
                    frame.data.clear();
                    frame.data.extend_from_slice(f.get_y_plane());
                    if self.sub != Subsampling::Gray {
                        frame.data.extend_from_slice(f.get_u_plane());
                        frame.data.extend_from_slice(f.get_v_plane());
                    }
                    debug_assert_eq!(frame.data.len(), yuv_len(self.width, self.height, self.sub));
                    frame.seq = self.next;
                    frame.width = self.width;
                    frame.height = self.height;
                    frame.layout = Layout::Yuv(self.sub);
                    self.next += 1;
                    return Ok(true);
                }
                Err(y4m::Error::EOF) if self.looping && !reopened && self.next > 0 => {
                    self.decoder = open(&self.path)?;
                    reopened = true;
                }
                Err(y4m::Error::EOF) => return Ok(false),
                Err(y4m::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::warn!(path = %self.path.display(), frame = self.next, "last frame is truncated; treating it as the end");
                    if self.looping && !reopened && self.next > 0 {
                        self.decoder = open(&self.path)?;
                        reopened = true;
                    } else {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(file_err(&self.path, format!("frame {}: {e}", self.next))),
            }
        }
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
