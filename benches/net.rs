//! Wire-protocol parse throughput, with no network: a byte buffer of encoded messages parsed
//! by [`proto::Decoder`] directly, and by [`MessageReader`] over a `std::io::Cursor` (which
//! adds the reader's buffer management and one copy, as a socket read would).
//!
//! Two streams:
//! - `frames`: a stream-info message, then 100 frames of 24–26 KB (a 1280x720 q75 JPEG of a
//!   real scene), each followed by an ack, as a capture of both directions would interleave
//!   them. Measures the per-byte cost of the big messages.
//! - `small`: 10 000 small messages (acks, pings, pongs, set-quality): the per-message cost.
//!
//! Throughput is in bytes of the stream (MB/s); divide by the messages in the id for a rate.
//!
//! `hub/publish/N`: the sender's fan-out of one encoded frame to N viewers' newest-wins slots
//! (each viewer's slot is drained after every frame, as its writer thread would), in frames.
//!
//! ```text
//! cargo bench --bench net
//! ```

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use framecast::hub::{FrameRing, Hub, ViewerKind};
use framecast::net::proto::{Ping, Pong};
use framecast::net::{Ack, Decoder, Event, FrameHeader, Message, MessageReader, StreamInfo};
use framecast::stats::{Meter, Side};
use framecast::testutil::sample_header;

const W: u16 = 1280;
const H: u16 = 720;
const FRAMES: u64 = 100;
const SMALL: u64 = 10_000;

/// Pseudo-JPEG bytes: the parser never looks inside, only the length matters.
fn jpeg_len(seq: u64) -> usize {
    24_000 + (seq.wrapping_mul(7919) % 2_000) as usize
}

fn frames_stream() -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let info = StreamInfo { width: W.into(), height: H.into(), fps_milli: 30_000 };
    Message::StreamInfo(info).encode(&mut out);
    let body: Vec<u8> = (0..26_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for seq in 0..FRAMES {
        let t = 1_000_000 + seq * 33_333;
        let h = FrameHeader {
            capture_us: t,
            encode_start_us: t + 100,
            encode_end_us: t + 1_600,
            send_us: t + 1_700,
            ..sample_header(seq, info, 0)
        };
        Message::Frame(h, &body[..jpeg_len(seq)]).encode(&mut out);
        Message::Ack(Ack { seq, received_us: t + 2_000, decoded_us: t + 3_500, displayed_us: t + 4_000 })
            .encode(&mut out);
    }
    (out, 1 + 2 * FRAMES)
}

fn small_stream() -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    for i in 0..SMALL {
        let msg = match i % 4 {
            0 | 1 => Message::Ack(Ack { seq: i, received_us: i * 3, decoded_us: i * 5, displayed_us: i * 7 }),
            2 => Message::Ping(Ping { id: i, t1_us: i * 11 }),
            _ if i % 100 == 3 => Message::SetQuality((i % 100) as u8 + 1),
            _ => Message::Pong(Pong { id: i, t1_us: i, t2_us: i + 1, t3_us: i + 2 }),
        };
        msg.encode(&mut out);
    }
    (out, SMALL)
}

/// Parses the whole buffer with a bare decoder; returns a checksum over what was parsed.
fn parse_all(buf: &[u8]) -> u64 {
    let mut dec = Decoder::new(0);
    let mut at = 0;
    let mut sum = 0u64;
    while let Some((msg, used)) = dec.decode(&buf[at..]).expect("valid stream") {
        sum = sum.wrapping_add(checksum(&msg));
        at += used;
    }
    assert_eq!(at, buf.len());
    sum
}

/// Parses the whole buffer through a `MessageReader` over an in-memory reader.
fn read_all(buf: &[u8]) -> u64 {
    let mut reader = MessageReader::new(Cursor::new(buf));
    let mut sum = 0u64;
    loop {
        match reader.next_event().expect("valid stream") {
            Event::Message(msg) => sum = sum.wrapping_add(checksum(&msg)),
            Event::Eof => return sum,
            Event::Idle => unreachable!("a cursor never times out"),
        }
    }
}

fn checksum(msg: &Message<'_>) -> u64 {
    match msg {
        Message::Frame(h, jpeg) => h.seq ^ jpeg.len() as u64,
        Message::Ack(a) => a.seq,
        Message::Ping(p) => p.id,
        Message::Pong(p) => p.t3_us,
        Message::SetQuality(q) => u64::from(*q),
        // Stream-info and any message kinds added later.
        _ => 1,
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("net/parse");
    for (name, (buf, msgs)) in [("frames", frames_stream()), ("small", small_stream())] {
        assert_eq!(parse_all(&buf), read_all(&buf));
        g.throughput(Throughput::Bytes(buf.len() as u64));
        let param = format!("{msgs}msgs_{}KB", buf.len() / 1000);
        g.bench_with_input(BenchmarkId::new(format!("decoder/{name}"), &param), &buf, |b, buf| {
            b.iter(|| parse_all(black_box(buf)))
        });
        g.bench_with_input(BenchmarkId::new(format!("reader/{name}"), &param), &buf, |b, buf| {
            b.iter(|| read_all(black_box(buf)))
        });
    }
    g.finish();
}

fn hub_publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub/publish");
    g.throughput(Throughput::Elements(1));
    for viewers in [1usize, 4] {
        let hub = Hub::new();
        let subs: Vec<_> =
            (0..viewers).map(|i| hub.subscribe(ViewerKind::new("native"), format!("viewer-{i}"))).collect();
        let meter = Meter::disabled(Side::Sender);
        let mut ring = FrameRing::default();
        let mut seq = 0u64;
        g.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter(|| {
                seq += 1;
                let slot = ring.take();
                std::sync::Arc::get_mut(slot).expect("a free frame").header.seq = seq;
                hub.publish(slot.clone(), false, &meter);
                for s in &subs {
                    black_box(s.rx.try_recv().expect("published").header.seq);
                }
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
    targets = parse, hub_publish
}
criterion_main!(benches);
