//! JPEG encode and decode throughput with libjpeg-turbo through framecast's [`Encoder`] and
//! [`Decoder`], on one fixed test-pattern frame at 640x480, 1280x720 and 1920x1080, quality
//! 50/75/90, 4:2:0.
//!
//! Benchmark ids are `codec/{encode_yuv420,encode_rgb,decode_0rgb}/WxH/qQ`, plus
//! `capture/render_pattern420/WxH` (rendering the source frame, the capture stage's work); the
//! time per iteration is the time per frame, and the throughput is in pixels (criterion's
//! "elements"), so Melem/s reads as megapixels per second.
//!
//! ```text
//! cargo bench --bench codec                    # everything (~1.5 min)
//! cargo bench --bench codec -- 1280x720/q75    # one size and quality
//! ```
//!
//! `benches/tjbench.sh` runs the 1280x720 q75 cases next to Debian's `tjbench`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use framecast::capture::pattern::{planar_to_rgb, TestPattern};
use framecast::capture::{Layout, RawFrame};
use framecast::codec::{Decoder, Encoder, JpegBuf};
use framecast::net::Subsampling;
use turbojpeg::PixelFormat;

const SIZES: [(u32, u32); 3] = [(640, 480), (1280, 720), (1920, 1080)];
const QUALITIES: [u8; 3] = [50, 75, 90];
const SUB: Subsampling = Subsampling::S420;
/// The frame every case uses: not 0, so the counter and the moving box are off their start.
const SEQ: u64 = 123;

fn pattern_frame(w: u32, h: u32) -> RawFrame {
    let mut frame = RawFrame::empty();
    TestPattern::new(w, h, SUB).render(SEQ, &mut frame.data);
    frame.seq = SEQ;
    frame.width = w;
    frame.height = h;
    frame.layout = Layout::Yuv(SUB);
    frame
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = encode_yuv, encode_rgb, decode, render
}
criterion_main!(benches);
