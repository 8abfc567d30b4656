//! Frame sinks, run on the receiver's main thread: a minifb window, and a headless sink for
//! servers, tests and benchmarks. Both behind [`FrameSink`].

use std::io::Write;
use std::path::Path;

use minifb::{Key, KeyRepeat, ScaleMode, Window, WindowOptions};

/// A decoded frame: `pixels` are `0x00RRGGBB`, row by row.
#[derive(Clone, Copy, Debug)]
pub struct Picture<'a> {
    pub seq: u64,
    pub width: usize,
    pub height: usize,
    pub pixels: &'a [u32],
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no display found (neither DISPLAY nor WAYLAND_DISPLAY is set); run with --headless, or start an X server (e.g. Xvfb) and set DISPLAY")]
    NoDisplay,
    #[error("cannot open a {width}x{height} window: {reason}; run with --headless if there is no usable display")]
    Window { width: usize, height: usize, reason: String },
    #[error("cannot draw into the window: {0}")]
    Update(String),
}

/// Where decoded frames go.
pub trait FrameSink {
    /// Shows one frame.
    fn show(&mut self, pic: &Picture<'_>) -> Result<(), ViewError>;
    /// Handles window events between frames. Returns false once the user asked to close
    /// (Esc or the window's close button).
    fn poll(&mut self) -> bool;
    /// Updates the status text (the window title).
    fn set_status(&mut self, _status: &str) {}
    /// Quality key presses since the last call: +1 per Up (or +), −1 per Down (or −).
    fn take_quality_steps(&mut self) -> i8 {
        0
    }
}

/// Shows nothing; the receiver still decodes, counts and measures every frame.
#[derive(Debug, Default)]
pub struct Headless;

impl FrameSink for Headless {
    fn show(&mut self, _pic: &Picture<'_>) -> Result<(), ViewError> {
        Ok(())
    }
    fn poll(&mut self) -> bool {
        true
    }
}

/// True if a display server is configured for this process.
pub fn display_available() -> bool {
    if cfg!(any(target_os = "windows", target_os = "macos")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// A minifb window, opened at the first frame's size and kept open.
///
/// A frame the size of the window goes to minifb as it is (its `UpperLeft` mode: one copy
/// into the X image). A frame of another size (the sender's rate controller halved it, or a
/// new sender) or a window the user resized gets the frame scaled, here, to fit it.
/// (minifb's own `AspectRatioStretch` mode runs its scaler on every frame even at 1:1, which
/// cost more CPU than decoding the frame: 23 % of `framecast demo`'s at 720p.)
pub struct WindowSink {
    window: Option<Window>,
    title: String,
    open: bool,
    steps: i8,
    /// The frame scaled to a resized window, and the source column of each of its columns.
    scaled: Vec<u32>,
    cols: Vec<usize>,
}

impl WindowSink {
    /// Checks that a display exists; the window itself opens with the first frame, when its
    /// size is known.
    pub fn new() -> Result<Self, ViewError> {
        if !display_available() {
            return Err(ViewError::NoDisplay);
        }
        Ok(WindowSink {
            window: None,
            title: "framecast".into(),
            open: true,
            steps: 0,
            scaled: Vec::new(),
            cols: Vec::new(),
        })
    }

    fn open(&mut self, width: usize, height: usize) -> Result<&mut Window, ViewError> {
        if self.window.is_none() {
            let opts = WindowOptions { resize: true, scale_mode: ScaleMode::UpperLeft, ..WindowOptions::default() };
            let mut w = Window::new(&self.title, width, height, opts).map_err(|e| ViewError::Window {
                width,
                height,
                reason: e.to_string(),
            })?;
            // Frames arrive at the stream's pace; minifb must not add its own sleep.
            w.set_target_fps(0);
            self.window = Some(w);
        }
        Ok(self.window.as_mut().expect("just opened"))
    }
}

impl WindowSink {
    /// Reads the keys after a window update: Esc closes, Up/Down (or +/−) move quality.
    fn keys(&mut self) {
        let Some(w) = &self.window else { return };
        if !w.is_open() || w.is_key_down(Key::Escape) {
            self.open = false;
        }
        for k in w.get_keys_pressed(KeyRepeat::No) {
            match k {
                Key::Up | Key::Equal | Key::NumPadPlus => self.steps = self.steps.saturating_add(1),
                Key::Down | Key::Minus | Key::NumPadMinus => self.steps = self.steps.saturating_sub(1),
                _ => {}
            }
        }
    }
}

impl FrameSink for WindowSink {
    fn show(&mut self, pic: &Picture<'_>) -> Result<(), ViewError> {
        let (ww, wh) = self.open(pic.width, pic.height)?.get_size();
        let fits = (ww, wh) == (pic.width, pic.height) || ww == 0 || wh == 0;
        if !fits {
            fit(&mut self.scaled, &mut self.cols, ww, wh, pic);
        }
        let w = self.window.as_mut().expect("opened above");
        let res = if fits {
            w.update_with_buffer(pic.pixels, pic.width, pic.height)
        } else {
            w.update_with_buffer(&self.scaled, ww, wh)
        };
        res.map_err(|e| ViewError::Update(e.to_string()))?;
        self.keys();
        Ok(())
    }

    fn poll(&mut self) -> bool {
        if let Some(w) = &mut self.window {
            w.update();
        }
        self.keys();
        self.open
    }

    fn take_quality_steps(&mut self) -> i8 {
        std::mem::take(&mut self.steps)
    }

    fn set_status(&mut self, status: &str) {
        self.title = format!("framecast - {status} (Up/Down: quality)");
        if let Some(w) = &mut self.window {
            w.set_title(&self.title);
        }
    }
}

/// Scales `pic` into `out` (`width`x`height`, resized) keeping its aspect ratio: nearest
/// neighbour, centred, black bars. `cols` is scratch space (the source column of each column).
pub fn fit(out: &mut Vec<u32>, cols: &mut Vec<usize>, width: usize, height: usize, pic: &Picture<'_>) {
    out.clear();
    out.resize(width * height, 0);
    let (sw, sh) = (pic.width, pic.height);
    if sw == 0 || sh == 0 || width == 0 || height == 0 || pic.pixels.len() < sw * sh {
        return;
    }
    let (tw, th) = if sw * height > width * sh {
        (width, (sh * width / sw).clamp(1, height))
    } else {
        ((sw * height / sh).clamp(1, width), height)
    };
    let (x0, y0) = ((width - tw) / 2, (height - th) / 2);
    cols.clear();
    cols.extend((0..tw).map(|x| x * sw / tw));
    for y in 0..th {
        let src = &pic.pixels[(y * sh / th) * sw..][..sw];
        let dst = &mut out[(y0 + y) * width + x0..][..tw];
        for (d, &c) in dst.iter_mut().zip(cols.iter()) {
            *d = src[c];
        }
    }
}

/// Writes a picture as a binary PPM (P6) file.
pub fn write_ppm(path: &Path, pic: &Picture<'_>) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(pic.width * pic.height * 3 + 32);
    write!(out, "P6\n{} {}\n255\n", pic.width, pic.height)?;
    for p in pic.pixels {
        out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
    }
    std::fs::write(path, out)
}

/// Reads an 8-bit binary PPM (P6), such as [`write_ppm`] or ImageMagick writes (header
/// comments allowed): (width, height, RGB bytes).
pub fn read_ppm(bytes: &[u8]) -> Option<(usize, usize, &[u8])> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        match *bytes.get(i)? {
            b'#' => i += bytes[i..].iter().position(|&b| b == b'\n')?,
            b if b.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while !bytes.get(i)?.is_ascii_whitespace() {
                    i += 1;
                }
                fields.push(std::str::from_utf8(&bytes[start..i]).ok()?);
            }
        }
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let (w, h): (usize, usize) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    // Exactly one whitespace byte separates the header from the pixels.
    let data = bytes.get(i + 1..i + 1 + w.checked_mul(h)?.checked_mul(3)?)?;
    Some((w, h, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_round_trip() {
        let px = [0x00ff_0000u32, 0x0000_ff00, 0x0000_00ff, 0x0012_3456];
        let pic = Picture { seq: 0, width: 2, height: 2, pixels: &px };
        let p = std::env::temp_dir().join(format!("fc-ppm-{}.ppm", std::process::id()));
        write_ppm(&p, &pic).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap();
        assert_eq!((w, h), (2, 2));
        assert_eq!(rgb, &[255, 0, 0, 0, 255, 0, 0, 0, 255, 0x12, 0x34, 0x56]);
        assert!(read_ppm(b"P5\n2 2\n255\n....").is_none());
        let (w, h, rgb) = read_ppm(b"P6\n# xwdump\n2 1 # size\n255\n\x01\x02\x03\x04\x05\x06").unwrap();
        assert_eq!((w, h, rgb), (2, 1, &[1u8, 2, 3, 4, 5, 6][..]), "comments are skipped");
        assert!(read_ppm(b"P6\n2 1\n255\n\x01").is_none(), "short pixel data");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn fit_keeps_the_aspect_ratio() {
        // 4x2: two columns of 1s, two of 2s.
        let px = [1, 1, 2, 2, 1, 1, 2, 2];
        let pic = Picture { seq: 0, width: 4, height: 2, pixels: &px };
        let (mut out, mut cols) = (Vec::new(), Vec::new());
        fit(&mut out, &mut cols, 8, 4, &pic);
        assert_eq!(&out[..8], &[1, 1, 1, 1, 2, 2, 2, 2], "doubled");
        assert_eq!(out[8..16], out[..8]);
        fit(&mut out, &mut cols, 4, 4, &pic);
        assert_eq!(out, [0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 0, 0], "letterboxed");
        fit(&mut out, &mut cols, 8, 2, &pic);
        assert_eq!(out, [0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 2, 2, 0, 0], "pillarboxed");
        fit(&mut out, &mut cols, 2, 1, &pic);
        assert_eq!(out, [1, 2], "shrunk");
        fit(&mut out, &mut cols, 0, 3, &pic);
        assert!(out.is_empty());
    }
}
