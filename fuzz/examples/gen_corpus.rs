//! Writes the seed corpora of the fuzz targets: real streams and real JPEGs made with
//! framecast's own encoder on the test pattern (plus progressive, arithmetic and optimised
//! JPEGs, which only a camera or another encoder would send).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus [-- OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; the files go to
//! `OUT_DIR/{decode,handshake,jpeg,split,udp_datagram}/`.
//! The corpora are generated, not committed (`/fuzz/corpus` is git-ignored).

use std::path::{Path, PathBuf};

use framecast::capture::pattern::TestPattern;
use framecast::codec::to_subsamp;
use framecast::format::Subsampling;
use framecast::net::proto::{Ack, FrameHeader, Hello, Message, Ping, Pong, Role, StreamInfo, MSG_HEADER_LEN};
use framecast::testutil::{pattern_jpeg, restart_jpeg, sample_header};
use framecast_fuzz::DecodeInput;
use turbojpeg::{Compressor, Image, PixelFormat};

const SUBSAMPLINGS: [Subsampling; 4] = [Subsampling::S444, Subsampling::S422, Subsampling::S420, Subsampling::Gray];

/// A JPEG of test pattern frame `seq` from framecast's encoder (compressed from planes).
fn jpeg(w: u32, h: u32, sub: Subsampling, quality: u8, seq: u64) -> Vec<u8> {
    pattern_jpeg(w, h, sub, quality, seq).expect("encode the test pattern")
}

/// A JPEG with the coding options framecast's encoder never uses, from the RGB test pattern.
fn jpeg_with(w: u32, h: u32, sub: Subsampling, set: impl FnOnce(&mut Compressor)) -> Vec<u8> {
    let rgb = TestPattern::new(w, h, sub).render_rgb(7);
    let mut c = Compressor::new().expect("compressor");
    c.set_quality(80).unwrap();
    c.set_subsamp(to_subsamp(sub)).unwrap();
    set(&mut c);
    let (w, h) = (w as usize, h as usize);
    c.compress_to_vec(Image { pixels: &rgb[..], width: w, pitch: w * 3, height: h, format: PixelFormat::RGB })
        .expect("compress")
}

/// Frame `seq` of a 25 fps stream (timestamps 40 ms apart); `jpeg_len` is set by encode.
fn frame_header(seq: u64, info: StreamInfo, sub: Subsampling, quality: u8) -> FrameHeader {
    let t = 1_000_000 + 40_000 * seq;
    FrameHeader {
        capture_us: t,
        encode_start_us: t + 500,
        encode_end_us: t + 2_000,
        send_us: t + 2_100,
        quality,
        subsampling: sub.to_wire(),
        ..sample_header(seq, info, 0)
    }
}

fn hello(role: Role) -> Vec<u8> {
    let mut b = Vec::new();
    Hello::new(role, *b"fuzz-clock-id-16").encode(&mut b);
    b
}

/// What a receiver reads from a sender: hello, stream-info, real frames in every
/// subsampling, a pong, a size change and a frame at the new size.
fn sender_stream() -> Vec<u8> {
    let mut b = hello(Role::Sender);
    let info = StreamInfo { width: 64, height: 48, fps_milli: 25_000 };
    Message::StreamInfo(info).encode(&mut b);
    for (i, sub) in SUBSAMPLINGS.into_iter().enumerate() {
        let q = [30, 75, 90, 50][i];
        let j = jpeg(64, 48, sub, q, i as u64);
        Message::Frame(frame_header(i as u64, info, sub, q), &j).encode(&mut b);
    }
    Message::Pong(Pong { id: 1, t1_us: 5_000, t2_us: 1_000_050, t3_us: 1_000_060 }).encode(&mut b);
    let small = StreamInfo { width: 16, height: 16, fps_milli: 0 };
    Message::StreamInfo(small).encode(&mut b);
    let j = jpeg(16, 16, Subsampling::S420, 75, 9);
    Message::Frame(frame_header(9, small, Subsampling::S420, 75), &j).encode(&mut b);
    // A camera's MJPEG forwarded as is: quality unknown, passthrough flag.
    let h = FrameHeader {
        quality: 0,
        flags: FrameHeader::FLAG_PASSTHROUGH,
        ..frame_header(10, small, Subsampling::S422, 0)
    };
    Message::Frame(h, &jpeg(16, 16, Subsampling::S422, 85, 10)).encode(&mut b);
    b
}

/// What a sender reads from its viewer: hello, acks, pings, a quality change and a report.
fn receiver_stream() -> Vec<u8> {
    let mut b = hello(Role::Receiver);
    for id in 0..3 {
        Message::Ping(Ping { id, t1_us: 2_000_000 + id * 100_000 }).encode(&mut b);
    }
    for seq in 0..3 {
        Message::Ack(Ack {
            seq,
            received_us: 2_001_000 + seq,
            decoded_us: 2_002_000 + seq,
            displayed_us: if seq == 1 { 0 } else { 2_003_000 + seq },
        })
        .encode(&mut b);
    }
    Message::SetQuality(60).encode(&mut b);
    Message::Report(br#"{"schema":2,"side":"recv","frames":30,"fps":29.97,"kbps":1234.5}"#).encode(&mut b);
    Message::Report(b"").encode(&mut b);
    b
}

/// Streams that go wrong in the ways `tests/malformed.rs` lists, so the fuzzer starts next
/// to each error path.
fn broken_streams() -> Vec<(&'static str, Vec<u8>)> {
    let good = sender_stream();
    let first_frame = 24 + 20;
    let mut out = Vec::new();
    out.push(("truncated-in-frame", good[..first_frame + 100].to_vec()));
    out.push(("truncated-in-header", good[..first_frame + 5].to_vec()));
    let mut b = hello(Role::Sender);
    b.extend_from_slice(&good[first_frame..]);
    out.push(("frame-before-stream-info", b));
    let mut b = good[..first_frame].to_vec();
    b.extend_from_slice(&[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    out.push(("frame-too-large", b));
    let mut b = good.clone();
    b[first_frame + MSG_HEADER_LEN + 40] ^= 1; // frame width
    out.push(("frame-wrong-size", b));
    let mut b = good[..first_frame].to_vec();
    Message::Report(&[b'{', 0xff, b'}']).encode(&mut b);
    out.push(("report-not-utf8", b));
    let mut b = good;
    b[4..6].copy_from_slice(&2u16.to_be_bytes());
    out.push(("wrong-version", b));
    out
}

/// Inputs of the `split` target: a byte (the most pieces, taken modulo 17), then a 64x48
/// JPEG with restart markers from framecast's encoder (every MCU row or every second one,
/// encoded whole or as two slices and stitched), one without any, and ones whose markers
/// are wrong in the ways `split` reports (out of sequence, too few, a DRI that does not match).
fn split_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in SUBSAMPLINGS {
        for (rows, threads) in [(1, 1), (2, 1), (1, 2)] {
            let j = restart_jpeg((64, 48), sub, 75, rows, threads).expect("encode with restart markers");
            for k in [0u8, 2, 3, 16] {
                let mut b = vec![k];
                b.extend_from_slice(&j);
                out.push((format!("{sub}-rst{rows}-t{threads}-k{k}.jpg"), b));
            }
        }
    }
    let mut plain = vec![3];
    plain.extend_from_slice(&jpeg(64, 48, Subsampling::S420, 75, 1));
    out.push(("420-no-restart-k3.jpg".into(), plain));
    let good = restart_jpeg((64, 48), Subsampling::S420, 75, 1, 1).expect("encode with restart markers");
    let rst: Vec<usize> =
        (1..good.len()).filter(|&i| good[i - 1] == 0xff && (0xd0..=0xd7).contains(&good[i])).collect();
    let dri = (3..good.len()).find(|&i| good[i - 1] == 0xff && good[i] == 0xdd).expect("a DRI segment");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b.insert(0, 3);
        b
    };
    out.push(("rst-out-of-sequence".into(), with(&|b| b[rst[1]] = 0xd3)));
    out.push((
        "rst-ends-early".into(),
        with(&|b| {
            b.truncate(rst[1] - 1);
            b.extend_from_slice(&[0xff, 0xd9]);
        }),
    ));
    out.push(("dri-doubled".into(), with(&|b| b[dri + 4] = b[dri + 4].wrapping_mul(2))));
    out.push(("dri-zero".into(), with(&|b| b[dri + 3..dri + 5].copy_from_slice(&[0, 0]))));
    out
}

/// Seeds of the `udp_datagram` target: each kind of datagram and Inner as it arrives, and a
/// session's script (seal, deliver in order, again, out of order, altered, after a skip).
fn udp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use framecast::net::udp::wire::{Datagram, Inner, Receipt};
    use framecast_fuzz::udp::{record, DELIVER, MSG1, MSG2, RAW, SEAL, SKIP};
    let hello = |role| {
        let mut b = Vec::new();
        Datagram::Hello { session: 7, hello: Hello::new(role, [3; 16]).keyed(true) }.encode(&mut b);
        b
    };
    let mut rtp = vec![0x80, 26, 0, 1, 0, 0, 0x0b, 0xb8, 0, 0, 0, 9, 0, 0, 0, 0, 1, 64, 48, 6];
    rtp.extend_from_slice(&[0x55; 100]);
    let receipt = Receipt {
        highest_seq: 70_000,
        highest_age_us: 900,
        packets: 68_000,
        bytes: 9_000_000,
        lost: 3,
        recovered: 40,
        loss_bp: 120,
    };
    let inners: Vec<Vec<u8>> = [
        Inner::Media(&rtp),
        Inner::Message(Message::StreamInfo(StreamInfo { width: 640, height: 480, fps_milli: 30_000 })),
        Inner::Message(Message::Ack(Ack { seq: 3, received_us: 10, decoded_us: 20, displayed_us: 30 })),
        Inner::Message(Message::Ping(Ping { id: 1, t1_us: 2 })),
        Inner::Message(Message::Pong(Pong { id: 1, t1_us: 2, t2_us: 3, t3_us: 4 })),
        Inner::Message(Message::SetQuality(70)),
        Inner::Message(Message::QualityStep(-2)),
        Inner::Message(Message::Report(br#"{"type":"interval","fps":29.9}"#)),
        Inner::Nack(vec![(65534, 3), (10, 1)]),
        Inner::Receipt(receipt),
        Inner::Bye,
    ]
    .iter()
    .map(Inner::to_vec)
    .collect();
    let plain = |i: &[u8]| [&[0x04][..], i].concat();
    let mut raw = vec![record(RAW, &hello(Role::Sender)), record(RAW, &hello(Role::Receiver))];
    raw.push(record(RAW, &[&[0x02][..], &[0; 8], &[0x11; 48]].concat()));
    raw.push(record(RAW, &[&[0x03][..], &[0; 8], &[0x22; 40]].concat()));
    raw.extend(inners.iter().map(|i| record(RAW, &plain(i))));
    let mut script: Vec<Vec<u8>> = inners.iter().map(|i| record(SEAL, i)).collect();
    for step in [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [5, 0, 0, 0], [3, 0, 0, 0], [2, 0, 20, 1], [2, 0, 3, 0x80]] {
        script.push(record(DELIVER, &step));
    }
    script.push(record(SKIP, &[1, 0]));
    script.push(record(SEAL, &inners[10]));
    script.push(record(DELIVER, &[11, 0, 0, 0]));
    script.push(record(DELIVER, &[4, 0, 0, 0]));
    vec![
        ("raw", raw.concat()),
        ("session", script.concat()),
        ("handshake", [record(MSG1, &[0x33; 48]), record(MSG2, &[0x44; 48]), record(MSG2, &[])].concat()),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
}

fn main() {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let dirs = ["decode", "handshake", "jpeg", "split", "udp_datagram"].map(|t| out.join(t));
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    let [decode, handshake, jpeg_dir, split_dir, udp_dir] = &dirs;
    let mut count = 0;

    // decode: each stream cut at a few points (the start, after the hello, inside the first
    // message, one byte before the end).
    let streams = [("sender", Role::Sender, sender_stream()), ("receiver", Role::Receiver, receiver_stream())];
    for (name, role, s) in &streams {
        for split in [0, 24, 24 + 13, s.len() - 1] {
            write(decode, &format!("{name}-split{split}"), &DecodeInput::encode(*role, split as u16, s));
            count += 1;
        }
    }
    for (name, s) in broken_streams() {
        write(decode, name, &DecodeInput::encode(Role::Sender, 30, &s));
        count += 1;
    }

    // handshake: both hellos, then the classic wrong peers.
    let mut v2 = hello(Role::Sender);
    v2[4..6].copy_from_slice(&2u16.to_be_bytes());
    let mut flags = hello(Role::Receiver);
    flags[7] = 0x80;
    let hs: [(&str, Vec<u8>); 6] = [
        ("sender", hello(Role::Sender)),
        ("receiver", hello(Role::Receiver)),
        ("version2", v2),
        ("flags", flags),
        ("http", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("tls", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
    ];
    for (name, b) in &hs {
        write(handshake, name, b);
        count += 1;
    }

    // jpeg: 64x48 (the size the target declares) in every subsampling and a few qualities,
    // with every coding option, and one of another size.
    for sub in SUBSAMPLINGS {
        for q in [10, 75, 100] {
            write(jpeg_dir, &format!("{sub}-q{q}.jpg"), &jpeg(64, 48, sub, q, 3));
            count += 1;
        }
        write(
            jpeg_dir,
            &format!("{sub}-progressive.jpg"),
            &jpeg_with(64, 48, sub, |c| c.set_progressive(true).unwrap()),
        );
        write(jpeg_dir, &format!("{sub}-arithmetic.jpg"), &jpeg_with(64, 48, sub, |c| c.set_arithmetic(true).unwrap()));
        write(jpeg_dir, &format!("{sub}-optimized.jpg"), &jpeg_with(64, 48, sub, |c| c.set_optimize(true).unwrap()));
        count += 3;
    }
    write(jpeg_dir, "444-lossless.jpg", &jpeg_with(64, 48, Subsampling::S444, |c| c.set_lossless(true).unwrap()));
    write(jpeg_dir, "420-32x32.jpg", &jpeg(32, 32, Subsampling::S420, 75, 0));
    count += 2;

    for (name, b) in split_seeds() {
        write(split_dir, &name, &b);
        count += 1;
    }

    for (name, b) in udp_seeds() {
        write(udp_dir, name, &b);
        count += 1;
    }

    count += mjpeg_seeds(&out.join("mjpeg_split"));
    let multipart_dir = out.join("multipart");
    std::fs::create_dir_all(&multipart_dir).unwrap_or_else(|e| panic!("{}: {e}", multipart_dir.display()));
    for (name, b) in multipart_seeds() {
        write(&multipart_dir, name, &b);
        count += 1;
    }

    println!("wrote {count} seed inputs under {}", out.display());
}

/// Inputs of the `mjpeg_split` target: a read size, a cap byte (255: 16336 bytes), then
/// JPEG images back to back: real ones, one cut off, one with garbage after it, and one with
/// an EXIF APP1 segment holding a thumbnail with its own FF D9. Returns how many it wrote.
fn mjpeg_seeds(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let a = jpeg(64, 48, Subsampling::S420, 75, 1);
    let b = restart_jpeg((32, 32), Subsampling::S422, 90, 1, 1).expect("encode");
    let thumb = jpeg(16, 16, Subsampling::S420, 50, 2);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend(((thumb.len() + 8) as u16).to_be_bytes());
    app1.extend(b"Exif\0\0");
    app1.extend(&thumb);
    let exif = [&a[..2], &app1[..], &a[2..]].concat();
    let seeds: [(&str, Vec<u8>); 5] = [
        ("two", [a.clone(), b.clone()].concat()),
        ("exif", [exif, a.clone()].concat()),
        ("cut", [a.clone(), b[..b.len() / 2].to_vec()].concat()),
        ("garbage-between", [a.clone(), b"\r\n--x\r\n".to_vec(), b.clone()].concat()),
        ("progressive", jpeg_with(64, 48, Subsampling::S420, |c| c.set_progressive(true).unwrap())),
    ];
    for (name, stream) in &seeds {
        for (step, cap) in [(255u8, 255u8), (0, 255), (7, 40)] {
            write(dir, &format!("{name}-{step}-{cap}"), &[&[step, cap][..], stream].concat());
        }
    }
    seeds.len() * 3
}

/// multipart: a step byte (how the target splits the rest), then a body as mjpg-streamer,
/// the ESP32-CAM and framecast send it, and the same with a lying Content-Length, another
/// boundary and an HTML part.
fn multipart_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let imgs: Vec<Vec<u8>> = (0..2).map(|i| jpeg(16, 16, Subsampling::S420, 50, i)).collect();
    let part = |b: &str, len: usize, img: &[u8]| {
        let mut v = format!("--{b}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: 1.5\r\n\r\n").into_bytes();
        v.extend_from_slice(img);
        v.extend_from_slice(b"\r\n");
        v
    };
    let body = |b: &str, lie: usize| imgs.iter().flat_map(|i| part(b, i.len() + lie, i)).collect::<Vec<u8>>();
    let mut esp32 = Vec::new();
    for img in &imgs {
        esp32.extend_from_slice(b"\r\n--b\r\nContent-Type: image/jpeg\r\nContent-Length: 9\r\nX-Timestamp: 12.000345\r\n\r\n");
        esp32.extend_from_slice(img);
    }
    let mut html = b"--b\r\nContent-Type: text/html\r\n\r\n<html>no</html>\r\n".to_vec();
    html.extend(body("b", 0));
    let with_step = |step: u8, v: Vec<u8>| [vec![step], v].concat();
    vec![
        ("mjpg-streamer", with_step(63, body("b", 0))),
        ("esp32", with_step(7, esp32)),
        ("lying-length", with_step(0, body("b", 100))),
        ("other-boundary", with_step(1, body("other", 0))),
        ("html-part", with_step(13, html)),
        ("no-boundary", with_step(5, imgs.concat())),
    ]
}
