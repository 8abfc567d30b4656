//! JPEG encode and decode throughput with libjpeg-turbo through framecast's [`Encoder`] and
//! [`Decoder`], on one fixed test-pattern frame at 640x480, 1280x720 and 1920x1080, quality
//! 50/75/90, 4:2:0.
//!
//! Benchmark ids are `codec/{encode_yuv420,encode_rgb,decode_0rgb}/WxH/qQ`; at q75 only,
//! libjpeg-turbo's opt-in speed settings `codec/encode_yuv420_fastdct/WxH/q75` and
//! `codec/decode_0rgb_{fastupsample,fastidct,fastall}/WxH/q75`; and the capture stage's work,
//! `capture/render_pattern420/WxH` (rendering the test pattern) and `capture/y4m_read420/WxH`
//! (reading a frame of a Y4M file that is in the page cache). The time per iteration is the
//! time per frame, and the throughput is in pixels (criterion's "elements"), so Melem/s reads
//! as megapixels per second. Decoding writes into a reused `Vec<u32>`, as the receiver's
//! decode stage does into the window's buffer. `view/fit/...` scales a decoded 1080p frame
//! to a resized window.
//!
//! Before the timings, the bench prints what the speed settings cost in quality at q75: PSNR
//! of the decoded frame against the test pattern (RGB made with libjpeg's smooth upsampling,
//! so fast upsampling is measured against the smooth kind) and luma-only PSNR (against the
//! pattern's own Y plane: the DCT's share of the loss).
//!
//! ```text
//! cargo bench --bench codec                    # everything (~2 min)
//! cargo bench --bench codec -- 1280x720/q75    # one size and quality
//! ```
//!
//! `benches/tjbench.sh` runs the 1280x720 q75 cases next to Debian's `tjbench`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use framecast::capture::pattern::{planar_to_rgb, TestPattern};
use framecast::capture::y4m::Y4mSource;
use framecast::capture::{FrameSource, RawFrame};
use framecast::codec::{Decoder, Encoder, JpegBuf, Speed};
use framecast::format::Subsampling;
use framecast::testutil;
use framecast::view::{fit, Picture};
use turbojpeg::PixelFormat;

const SIZES: [(u32, u32); 3] = [(640, 480), (1280, 720), (1920, 1080)];
const QUALITIES: [u8; 3] = [50, 75, 90];
const SUB: Subsampling = Subsampling::S420;
/// The frame every case uses: not 0, so the counter and the moving box are off their start.
const SEQ: u64 = 123;

fn pattern_frame(w: u32, h: u32) -> RawFrame {
    testutil::pattern_frame(w, h, SUB, SEQ)
}

fn id(w: u32, h: u32, q: u8) -> BenchmarkId {
    BenchmarkId::new(format!("{w}x{h}"), format!("q{q}"))
}

fn encode_yuv(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode_yuv420");
    for (w, h) in SIZES {
        let frame = pattern_frame(w, h);
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        for q in QUALITIES {
            let mut enc = Encoder::new(q, SUB, false).expect("encoder");
            let mut out = JpegBuf::default();
            g.bench_function(id(w, h, q), |b| {
                b.iter(|| {
                    enc.encode(black_box(&frame), &mut out).expect("encode");
                    black_box(out.as_slice().len())
                })
            });
        }
    }
    g.finish();
}

fn encode_rgb(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode_rgb");
    for (w, h) in SIZES {
        let frame = pattern_frame(w, h);
        let rgb = planar_to_rgb(&frame.data, w, h, SUB);
        let (wu, hu) = (w as usize, h as usize);
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        for q in QUALITIES {
            let mut enc = Encoder::new(q, SUB, false).expect("encoder");
            let mut out = JpegBuf::default();
            g.bench_function(id(w, h, q), |b| {
                b.iter(|| {
                    enc.encode_pixels(black_box(&rgb), wu, hu, PixelFormat::RGB, &mut out).expect("encode");
                    black_box(out.as_slice().len())
                })
            });
        }
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode_0rgb");
    for (w, h) in SIZES {
        let frame = pattern_frame(w, h);
        let (wu, hu) = (w as usize, h as usize);
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        for q in QUALITIES {
            let mut jpeg = JpegBuf::default();
            Encoder::new(q, SUB, false).expect("encoder").encode(&frame, &mut jpeg).expect("encode");
            let jpeg = jpeg.as_slice().to_vec();
            let mut dec = Decoder::new().expect("decoder");
            let mut px: Vec<u32> = Vec::new();
            g.bench_function(id(w, h, q), |b| {
                b.iter(|| {
                    dec.decode(black_box(&jpeg), wu, hu, &mut px).expect("decode");
                    black_box(px[px.len() / 2])
                })
            });
        }
    }
    g.finish();
}

/// The frame source the encode benches and `framecast demo` use: the cost of the sender's
/// capture stage per frame with the test pattern.
fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture/render_pattern420");
    for (w, h) in SIZES {
        let pattern = TestPattern::new(w, h, SUB);
        let mut buf = Vec::new();
        let mut seq = 0u64;
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        g.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| {
                seq += 1;
                pattern.render(black_box(seq), &mut buf);
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

const FAST_DCT: Speed = Speed { fast_dct: true, fast_upsample: false };
const FAST_UPSAMPLE: Speed = Speed { fast_dct: false, fast_upsample: true };
const FAST_ALL: Speed = Speed { fast_dct: true, fast_upsample: true };

fn encode_jpeg(frame: &RawFrame, q: u8, speed: Speed) -> Vec<u8> {
    let mut enc = Encoder::new(q, SUB, false).expect("encoder");
    enc.set_speed(speed).expect("speed");
    let mut jpeg = JpegBuf::default();
    enc.encode(frame, &mut jpeg).expect("encode");
    jpeg.as_slice().to_vec()
}

/// libjpeg-turbo's opt-in speed settings at q75.
fn speed(c: &mut Criterion) {
    let q = 75;
    let mut g = c.benchmark_group("codec/encode_yuv420_fastdct");
    for (w, h) in SIZES {
        let frame = pattern_frame(w, h);
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        let mut enc = Encoder::new(q, SUB, false).expect("encoder");
        enc.set_speed(FAST_DCT).expect("speed");
        let mut out = JpegBuf::default();
        g.bench_function(id(w, h, q), |b| {
            b.iter(|| {
                enc.encode(black_box(&frame), &mut out).expect("encode");
                black_box(out.as_slice().len())
            })
        });
    }
    g.finish();
    for (name, speed) in [("fastupsample", FAST_UPSAMPLE), ("fastidct", FAST_DCT), ("fastall", FAST_ALL)] {
        let mut g = c.benchmark_group(format!("codec/decode_0rgb_{name}"));
        for (w, h) in SIZES {
            let jpeg = encode_jpeg(&pattern_frame(w, h), q, Speed::default());
            let (wu, hu) = (w as usize, h as usize);
            g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
            let mut dec = Decoder::with_speed(speed).expect("decoder");
            let mut px: Vec<u32> = Vec::new();
            g.bench_function(id(w, h, q), |b| {
                b.iter(|| {
                    dec.decode(black_box(&jpeg), wu, hu, &mut px).expect("decode");
                    black_box(px[px.len() / 2])
                })
            });
        }
        g.finish();
    }
}

/// Luma PSNR of decoded 0RGB pixels against the pattern's Y plane, in dB: the luma of each
/// pixel is computed unrounded (JFIF weights), so that it measures the DCT's loss alone.
fn luma_psnr(px: &[u32], luma: &[u8]) -> f64 {
    let mut se = 0f64;
    for (p, y) in px.iter().zip(luma) {
        let [r, g, b] = [(p >> 16) as u8, (p >> 8) as u8, *p as u8].map(f64::from);
        se += (0.299 * r + 0.587 * g + 0.114 * b - f64::from(*y)).powi(2);
    }
    10.0 * (255.0 * 255.0 / (se / px.len() as f64).max(1e-9)).log10()
}

fn print_quality() {
    println!("quality at q75 4:2:0, test pattern frame {SEQ}: RGB PSNR / luma PSNR (dB), JPEG bytes");
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let frame = pattern_frame(w, h);
        let rgb = planar_to_rgb(&frame.data, w, h, SUB);
        let luma = &frame.data[..(w * h) as usize];
        for (name, enc_speed, dec_speed) in [
            ("accurate (default)", Speed::default(), Speed::default()),
            ("send --fast-dct", FAST_DCT, Speed::default()),
            ("recv --fast-idct", Speed::default(), FAST_DCT),
            ("recv --fast-upsample", Speed::default(), FAST_UPSAMPLE),
            ("all three", FAST_DCT, FAST_ALL),
        ] {
            let jpeg = encode_jpeg(&frame, 75, enc_speed);
            let mut px = Vec::new();
            Decoder::with_speed(dec_speed)
                .expect("decoder")
                .decode(&jpeg, w as usize, h as usize, &mut px)
                .expect("decode");
            let (p, py) = (testutil::psnr(&testutil::xrgb_to_rgb(&px), &rgb), luma_psnr(&px, luma));
            println!("  {w}x{h} {name:<22} {p:6.2} / {py:6.2}  {:>7}", jpeg.len());
        }
    }
}

/// Reading frames of a Y4M file in the page cache: the file sender's capture stage.
fn y4m_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture/y4m_read420");
    let dir = std::env::temp_dir().join(format!("fc-bench-y4m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (w, h) in SIZES {
        let path = dir.join(format!("{w}x{h}.y4m"));
        let mut bytes = format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n").into_bytes();
        let pattern = TestPattern::new(w, h, SUB);
        let mut buf = Vec::new();
        for seq in 0..4 {
            pattern.render(seq, &mut buf);
            bytes.extend_from_slice(b"FRAME\n");
            bytes.extend_from_slice(&buf);
        }
        std::fs::write(&path, &bytes).expect("write clip");
        let mut src = Y4mSource::open(&path, true).expect("open clip");
        let mut frame = RawFrame::empty();
        g.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        g.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| {
                assert!(src.next_frame(&mut frame).expect("read"));
                black_box(frame.data[frame.data.len() / 2])
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prints the quality table once, when `codec/psnr_q75` is selected (as it is by default;
/// the timing itself is of nothing).
/// Scaling a decoded frame to a window the user resized (a frame the window's size is handed
/// to minifb as it is).
fn view_fit(c: &mut Criterion) {
    let mut g = c.benchmark_group("view/fit");
    let (w, h) = (1920usize, 1080usize);
    let px: Vec<u32> = (0..w * h).map(|i| i as u32).collect();
    let pic = Picture { seq: 0, width: w, height: h, pixels: &px };
    let (mut out, mut cols) = (Vec::new(), Vec::new());
    for (ww, wh) in [(1280usize, 720usize), (1600, 1200)] {
        g.throughput(Throughput::Elements((ww * wh) as u64));
        g.bench_function(format!("{w}x{h}_to_{ww}x{wh}"), |b| {
            b.iter(|| {
                fit(&mut out, &mut cols, ww, wh, black_box(&pic));
                black_box(out[out.len() / 2])
            })
        });
    }
    g.finish();
}

fn quality(c: &mut Criterion) {
    let once = std::sync::Once::new();
    c.bench_function("codec/psnr_q75", |b| {
        once.call_once(print_quality);
        b.iter(|| black_box(0))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = quality, encode_yuv, encode_rgb, decode, speed, render, y4m_read, view_fit
}
criterion_main!(benches);
