//! Writes one test-pattern frame to files, so scripts can feed exactly the frame framecast
//! streams to other tools (e.g. `tjbench`, see `benches/tjbench.sh`).
//!
//! ```text
//! cargo run --release --example pattern -- --size 1280x720 --frame 123 \
//!     --ppm /tmp/f.ppm --yuv /tmp/f.yuv --jpg /tmp/f.jpg --quality 75
//! ```
//!
//! - `--ppm`: binary PPM (P6), RGB converted from the planes with `planar_to_rgb`
//!   (libjpeg-turbo's own chroma upsampling), i.e. what a decoder shows for the frame.
//! - `--yuv`: the raw planes, tightly packed (Y, then Cb, then Cr), full-range JFIF YCbCr:
//!   the layout `tjbench -yuv` and libjpeg-turbo's `tj3CompressFromYUV8` with align 1 use.
//! - `--jpg`: the frame compressed by framecast's encoder at `--quality`, straight from the
//!   planes, as the sender does.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use framecast::capture::pattern::{planar_to_rgb, TestPattern};
use framecast::capture::{Layout, RawFrame};
use framecast::cli::{Size, SubsamplingArg};
use framecast::codec::{Encoder, JpegBuf};
use framecast::format::Subsampling;

/// Writes test-pattern frame N as PPM, raw planar YUV and/or JPEG.
#[derive(Debug, Parser)]
struct Args {
    /// Frame size WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720")]
    size: Size,
    /// Frame number (the pattern moves and burns the number in).
    #[arg(long, default_value_t = 0)]
    frame: u64,
    /// Chroma subsampling of the planes.
    #[arg(long, value_enum, default_value = "420")]
    subsampling: SubsamplingArg,
    /// Write the frame as binary RGB PPM to PATH.
    #[arg(long, value_name = "PATH")]
    ppm: Option<PathBuf>,
    /// Write the raw planar YCbCr frame to PATH.
    #[arg(long, value_name = "PATH")]
    yuv: Option<PathBuf>,
    /// Write the frame as JPEG, encoded by framecast at --quality, to PATH.
    #[arg(long, value_name = "PATH")]
    jpg: Option<PathBuf>,
    /// JPEG quality for --jpg.
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ppm.is_none() && args.yuv.is_none() && args.jpg.is_none() {
        anyhow::bail!("nothing to write: give at least one of --ppm, --yuv, --jpg");
    }
    let (w, h) = (args.size.width, args.size.height);
    let sub = Subsampling::from(args.subsampling);
    let mut planes = Vec::new();
    TestPattern::new(w, h, sub).render(args.frame, &mut planes);

    if let Some(path) = &args.yuv {
        fs::write(path, &planes).with_context(|| format!("--yuv {}", path.display()))?;
        eprintln!("wrote {} ({w}x{h} {sub} planar YCbCr, {} bytes)", path.display(), planes.len());
    }
    if let Some(path) = &args.ppm {
        let rgb = planar_to_rgb(&planes, w, h, sub);
        let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
        ppm.extend_from_slice(&rgb);
        fs::write(path, &ppm).with_context(|| format!("--ppm {}", path.display()))?;
        eprintln!("wrote {} ({w}x{h} RGB PPM)", path.display());
    }
    if let Some(path) = &args.jpg {
        let frame = RawFrame {
            seq: args.frame,
            capture_us: 0,
            width: w,
            height: h,
            layout: Layout::Yuv(sub),
            data: planes,
            no_signal: false,
        };
        let mut out = JpegBuf::default();
        Encoder::new(args.quality, sub, false)?.encode(&frame, &mut out)?;
        fs::write(path, out.as_slice()).with_context(|| format!("--jpg {}", path.display()))?;
        eprintln!("wrote {} ({w}x{h} {sub} q{} JPEG, {} bytes)", path.display(), args.quality, out.as_slice().len());
    }
    Ok(())
}
