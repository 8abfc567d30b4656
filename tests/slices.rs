//! Sliced JPEGs (restart markers between slices and inside them, issue #12) decoded by real
//! decoders: FFmpeg, GStreamer's `jpegdec` and headless Chromium, each compared with
//! libjpeg-turbo's serial decode of the same file (framecast's `Decoder` on one thread, or
//! TurboJPEG's decode to planes for GStreamer, which gives planes): FFmpeg by PSNR, the two
//! that decode with libjpeg-turbo's accurate IDCT pixel for pixel. Each tool must also decode
//! every slice count of a subsampling alike.
//!
//! The frames are the test pattern at sizes that are not multiples of 16 (so the last MCU
//! row and column are partial and the last slice is shorter than the others), in every
//! subsampling, as 1, 2, 3, 7 and 16 slices (4:2:0 at 230 rows has 15 MCU rows, so its
//! "16" is 15), with a restart marker every MCU row or every two.
//!
//! Tools: `ffmpeg` (Debian: ffmpeg), `gst-launch-1.0` with `jpegdec` (gstreamer1.0-tools,
//! gstreamer1.0-plugins-good) and `chromium`; `scripts/setup.sh
//! --test-deps` installs them. A test whose tool is missing prints that it is SKIPPED and
//! why, unless `CI` is set: then it fails naming the package (`common::tools::require_tools`).

#![cfg(unix)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::scratch_dir;
use common::tools::{chromium, require_tools, run_tool, skip, tool_stdout};
use framecast::codec::restart::parse_header;
use framecast::codec::slices::band_rows;
use framecast::codec::Decoder;
use framecast::format::Subsampling;
use framecast::testutil::{psnr, restart_jpeg, xrgb_to_rgb};

const QUALITY: u8 = 75;
/// Slices per frame, each tried in every subsampling.
const SLICES: [usize; 5] = [1, 2, 3, 7, 16];
/// Least PSNR of FFmpeg's decode against libjpeg-turbo's: its own IDCT and swscale's chroma
/// upsampling move pixels by a few levels (by up to 50 at sharp chroma edges in 4:2:0). A
/// damaged restart interval can stay above it (42 dB for 8 bytes of a 4:2:2 frame), which the
/// comparison across slice counts in [`check`] catches. GStreamer and Chromium decode with
/// libjpeg(-turbo)'s accurate IDCT and must match exactly.
const FFMPEG_MIN_PSNR: f64 = 40.0;
/// Time limit of one tool run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// One sliced frame, its file and libjpeg-turbo's serial decode of it, as RGB and as the
/// luma plane followed by the chroma planes, rows unpadded (only luma for grey).
struct Case {
    sub: Subsampling,
    label: String,
    width: usize,
    height: usize,
    file: PathBuf,
    jpeg: Vec<u8>,
    serial_rgb: Vec<u8>,
    serial_yuv: Vec<u8>,
}

/// The odd size each subsampling is tried at: 4:2:0 and 4:2:2 need an even width (and 4:2:0
/// an even height) for the test pattern's planes.
fn odd_size(sub: Subsampling) -> (u32, u32) {
    match sub {
        Subsampling::S420 | Subsampling::S422 => (166, 230),
        Subsampling::S444 | Subsampling::Gray => (165, 229),
    }
}

/// Every sliced frame this file decodes, written into `dir`. Each must carry the restart
/// interval it was made with: a frame without one would test nothing here.
fn cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for sub in Subsampling::ALL {
        let (w, h) = odd_size(sub);
        for (i, &slices) in SLICES.iter().enumerate() {
            let rows: u16 = if i % 2 == 0 { 1 } else { 2 };
            let jpeg = restart_jpeg((w, h), sub, QUALITY, rows, slices).expect("restart_jpeg");
            let header = parse_header(&jpeg).expect("a sliced JPEG parses");
            let want = header.mcus_per_row() * u64::from(rows);
            assert_eq!(u64::from(header.interval), want, "{} {w}x{h}: DRI of {rows} MCU rows", sub.name());
            let bands = band_rows(h as usize, sub, rows, slices).len();
            let label = format!("{} {w}x{h}, {bands} slices, restart every {rows} MCU rows", sub.name());
            let file = dir.join(format!("{}-{slices}-{rows}.jpg", sub.name().replace(':', "")));
            std::fs::write(&file, &jpeg).expect("write the JPEG");
            let (width, height) = (w as usize, h as usize);
            let mut px = Vec::new();
            Decoder::new().unwrap().decode(&jpeg, width, height, &mut px).expect("serial decode");
            let yuv = turbojpeg::decompress_to_yuv(&jpeg).expect("serial decode to YUV");
            let serial_yuv = unpad_planes(&yuv.pixels, &planes(sub, width, height)).expect("libjpeg-turbo's planes");
            let serial_rgb = xrgb_to_rgb(&px);
            cases.push(Case { sub, label, width, height, file, jpeg, serial_rgb, serial_yuv });
        }
    }
    cases
}

/// The sizes of a decode's planes as libjpeg-turbo and GStreamer lay them out: luma, then for
/// 4:2:0 the two chroma planes of half the width and height, rounded up.
fn planes(sub: Subsampling, width: usize, height: usize) -> Vec<(usize, usize)> {
    match sub {
        Subsampling::S420 => {
            let c = (width.div_ceil(2), height.div_ceil(2));
            vec![(width, height), c, c]
        }
        Subsampling::S422 => vec![(width, height), (width.div_ceil(2), height), (width.div_ceil(2), height)],
        Subsampling::S444 => vec![(width, height); 3],
        Subsampling::Gray => vec![(width, height)],
    }
}

/// The planes of `sizes`, one after the other with rows padded to 4 bytes, as unpadded rows;
/// None if `data` is too short.
fn unpad_planes(data: &[u8], sizes: &[(usize, usize)]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(w, h) in sizes {
        let stride = w.next_multiple_of(4);
        for row in 0..h {
            out.extend_from_slice(data.get(at + row * stride..at + row * stride + w)?);
        }
        at += stride * h;
    }
    Some(out)
}

/// Compares each case's decode by `tool` with `reference` (libjpeg-turbo's serial decode):
/// prints every PSNR and fails naming the cases under `min_psnr` (infinite: equal). Then, within each
/// subsampling, the tool's decode of every slice count must equal its decode of the first,
/// wherever libjpeg-turbo's do too (slicing moves no coefficient).
fn check(tool: &str, cases: &[Case], decoded: &[Vec<u8>], reference: fn(&Case) -> &[u8], min_psnr: f64) {
    assert_eq!(decoded.len(), cases.len(), "{tool} decoded {} of {} frames", decoded.len(), cases.len());
    let mut bad = Vec::new();
    for (case, px) in cases.iter().zip(decoded) {
        let want = reference(case);
        let db = psnr(want, px);
        let mut line = format!("{tool}: {}: ", case.label);
        if px.len() != want.len() {
            let _ = write!(line, "{} bytes, expected {}", px.len(), want.len());
        } else if db.is_infinite() {
            line.push_str("equal");
        } else {
            let max = want.iter().zip(px).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            let _ = write!(line, "PSNR {db:.1} dB, largest difference {max}");
        }
        eprintln!("{line}");
        if db.is_nan() || db < min_psnr {
            bad.push(line);
        }
    }
    let want = if min_psnr.is_infinite() { "not equal".to_string() } else { format!("PSNR < {min_psnr} dB") };
    assert!(bad.is_empty(), "{tool} decodes differ from libjpeg-turbo's ({want}):\n{}", bad.join("\n"));
    for (i, case) in cases.iter().enumerate() {
        let first = cases.iter().position(|c| c.sub == case.sub).expect("the case itself");
        if reference(case) == reference(&cases[first]) {
            assert!(decoded[i] == decoded[first], "{tool}: {} decodes unlike {}", case.label, cases[first].label);
        }
    }
}

#[test]
fn ffmpeg_decodes_sliced_frames() {
    if !require_tools("ffmpeg_decodes_sliced_frames", &[("ffmpeg", "ffmpeg")]) {
        return;
    }
    let dir = scratch_dir("slices-ffmpeg");
    let cases = cases(&dir);
    let decoded: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| {
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-nostdin", "-v", "error", "-i"]).arg(&c.file);
            // swscale's default chroma upsampling is far from libjpeg's smooth one.
            cmd.args(["-sws_flags", "bilinear+accurate_rnd+full_chroma_int"]);
            tool_stdout(cmd.args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]), TOOL_TIMEOUT)
        })
        .collect();
    check("ffmpeg", &cases, &decoded, |c| &c.serial_rgb, FFMPEG_MIN_PSNR);
}

/// GStreamer's `jpegdec` gives YCbCr JPEGs as I420 only (4:4:4 and 4:2:2 lose chroma rows or
/// columns) and grey ones as GRAY8; with libjpeg's accurate IDCT (its default is the fast
/// one) its planes must equal libjpeg-turbo's, all of them
/// for 4:2:0 and grey, the luma plane for 4:4:4 and 4:2:2 (whose chroma the cross-slice
/// comparison in [`check`] still covers).
#[test]
fn gstreamer_decodes_sliced_frames() {
    let test = "gstreamer_decodes_sliced_frames";
    let tools = [("gst-launch-1.0", "gstreamer1.0-tools"), ("gst-inspect-1.0", "gstreamer1.0-tools")];
    if !require_tools(test, &tools) {
        return;
    }
    let out = run_tool(Command::new("gst-inspect-1.0").arg("jpegdec"), TOOL_TIMEOUT);
    if !out.status.success() {
        skip(test, "GStreamer element `jpegdec` not found (apt-get install -y gstreamer1.0-plugins-good)");
        return;
    }
    let dir = scratch_dir("slices-gst");
    let cases = cases(&dir);
    let decoded: Vec<Vec<u8>> = cases.iter().map(gst_planes).collect();
    let reference: fn(&Case) -> &[u8] = |c| match c.sub {
        Subsampling::S444 | Subsampling::S422 => &c.serial_yuv[..c.width * c.height],
        Subsampling::S420 | Subsampling::Gray => &c.serial_yuv,
    };
    check("gstreamer", &cases, &decoded, reference, f64::INFINITY);
}

/// `jpegdec`'s decode of a case's file: its planes unpadded, luma only for 4:4:4 and 4:2:2.
fn gst_planes(c: &Case) -> Vec<u8> {
    let raw = c.file.with_extension("yuv");
    let (format, sizes) = match c.sub {
        Subsampling::Gray => ("GRAY8", planes(c.sub, c.width, c.height)),
        _ => ("I420", planes(Subsampling::S420, c.width, c.height)),
    };
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "filesrc"]).arg(format!("location={}", c.file.display()));
    cmd.args(["!", "jpegdec", "idct-method=islow", "!", &format!("video/x-raw,format={format}"), "!", "filesink"]);
    tool_stdout(cmd.arg(format!("location={}", raw.display())), TOOL_TIMEOUT);
    let data = std::fs::read(&raw).expect("gst-launch-1.0 wrote the raw file");
    let keep = match c.sub {
        Subsampling::S444 | Subsampling::S422 => &sizes[..1],
        Subsampling::S420 | Subsampling::Gray => &sizes[..],
    };
    unpad_planes(&data, keep).unwrap_or(data)
}

/// A page that shows each JPEG in an `<img>` (a `data:` URL, percent-encoded, which loads
/// before the page's load event and does not taint a canvas), and on load draws each on a
/// canvas at 1:1 and writes its RGB pixels into `<pre id="out">`, one line per image
/// (`width height hex`), then adds `<p id="done">`; an error adds `<p id="error">`.
fn decoding_page(jpegs: &[&[u8]]) -> String {
    let mut imgs = String::new();
    for jpeg in jpegs {
        imgs.push_str("<img src=\"data:image/jpeg,");
        for b in *jpeg {
            let _ = write!(imgs, "%{b:02X}");
        }
        imgs.push_str("\">\n");
    }
    format!(
        r#"<!doctype html><html><body>{imgs}<pre id="out"></pre><script>
const hx = Array.from({{length: 256}}, (_, i) => i.toString(16).padStart(2, "0"));
function pixels(img) {{
  const c = document.createElement("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d", {{willReadFrequently: true}});
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const px = [];
  for (let i = 0; i < d.length; i += 4) px.push(hx[d[i]] + hx[d[i + 1]] + hx[d[i + 2]]);
  return c.width + " " + c.height + " " + px.join("");
}}
function mark(id, text) {{
  const p = document.createElement("p");
  p.id = id;
  p.textContent = text;
  document.body.append(p);
}}
window.addEventListener("load", () => {{
  try {{
    const lines = Array.from(document.images, pixels);
    for (const img of Array.from(document.images)) img.remove();
    document.getElementById("out").textContent = lines.join("\n");
    mark("done", "done");
  }} catch (e) {{
    mark("error", String(e));
  }}
}});
</script></body></html>"#
    )
}

/// The bytes of a hex string, or None if it is not one.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The images [`decoding_page`] wrote into a DOM dump: (width, height, RGB) per line.
fn page_images(dom: &str) -> Vec<(usize, usize, Vec<u8>)> {
    let start = dom.find(r#"<pre id="out">"#).expect("the page's <pre id=\"out\">") + r#"<pre id="out">"#.len();
    let end = dom[start..].find("</pre>").expect("the end of <pre id=\"out\">") + start;
    dom[start..end]
        .lines()
        .map(|line| {
            let mut f = line.split(' ');
            let mut num = || f.next().and_then(|n| n.parse::<usize>().ok()).expect("an image's size");
            let (w, h) = (num(), num());
            let rgb = from_hex(line.rsplit(' ').next().unwrap_or("")).expect("the image's pixels in hex");
            (w, h, rgb)
        })
        .collect()
}

#[test]
fn chromium_decodes_sliced_frames() {
    if !require_tools("chromium_decodes_sliced_frames", &[("chromium", "chromium")]) {
        return;
    }
    let dir = scratch_dir("slices-chromium");
    let cases = cases(&dir);
    let page = dir.join("decode.html");
    let jpegs: Vec<&[u8]> = cases.iter().map(|c| c.jpeg.as_slice()).collect();
    std::fs::write(&page, decoding_page(&jpegs)).expect("write the page");
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).unwrap();
    let out = run_tool(
        chromium(&profile)
            .arg("--virtual-time-budget=10000")
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "chromium --dump-dom failed ({}):\n{}", out.status, out.stderr);
    let dom = String::from_utf8_lossy(&out.stdout);
    if let Some(at) = dom.find(r#"<p id="error">"#) {
        panic!("the page could not decode: {}", &dom[at..dom[at..].find("</p>").map_or(dom.len(), |e| at + e)]);
    }
    assert!(dom.contains(r#"<p id="done">"#), "the page did not finish decoding:\n{}", out.stderr);
    let images = page_images(&dom);
    for (case, (w, h, _)) in cases.iter().zip(&images) {
        assert_eq!((*w, *h), (case.width, case.height), "{}: size the browser decoded", case.label);
    }
    let decoded: Vec<Vec<u8>> = images.into_iter().map(|(_, _, rgb)| rgb).collect();
    check("chromium", &cases, &decoded, |c| &c.serial_rgb, f64::INFINITY);
}
