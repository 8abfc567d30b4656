//! Arbitrary packets through `net::udp::media::Assembler`, the receiver's side of
//! `recv --transport udp`: loss, reordering, duplication, lies in the frame extension and the
//! parity headers, and garbage, with time moving on.
//!
//! The input is a sequence of operations, each a kind byte and its bytes:
//!
//! | kind & 3 | bytes | what |
//! |---|---|---|
//! | 0 | length u16, bytes | a raw datagram's RTP packet |
//! | 1 | which u8, at u16, xor u8 | one of the good packets of three frames (restart markers, 2 parity packets each), one byte changed |
//! | 2 | step u8 | time moves on by step ms: NACKs asked, frames polled |
//! | 3 | pt u8, seq u16, frame u32, index u16, data u16, parity u16, length u8, bytes | a packet built with these claims |
//!
//! Checks, besides "never panics": frames come out in order, each once; a whole frame is a
//! JPEG (SOI .. EOI); every band lies inside its frame; NACKs stay within their caps; the bytes
//! held stay under `MAX_HELD_BYTES`, and are none once everything is polled. Run with
//! `-malloc_limit_mb=64`: nothing is allocated from what a packet claims.

#![no_main]

use std::sync::OnceLock;

use framecast::format::Subsampling;
use framecast::net::udp::media::{
    extension_block, Assembled, Assembler, FrameExt, FrameInfo, Outgoing, MAX_HELD_BYTES,
};
use framecast::rtp::capture_time;
use framecast::rtp::packetize::{packetize, RtpStream};
use framecast::testutil::restart_jpeg;
use libfuzzer_sys::fuzz_target;

/// The good packets: three frames of a 64x48 picture in small packets.
fn good() -> &'static [Vec<u8>] {
    static GOOD: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    GOOD.get_or_init(|| {
        let jpeg = restart_jpeg((64, 48), Subsampling::S420, 80, 1, 1).expect("encodes");
        let p =
            framecast::rtp::packetize::packetize_with(&jpeg, 200).unwrap_or_else(|_| packetize(&jpeg).expect("fits"));
        let mut o = Outgoing::new(RtpStream::new(1, 65530, 0), 1 << 20);
        let info = |seq: u64| FrameInfo { seq, capture_us: seq * 33_333, quality: 80, ..FrameInfo::default() };
        (0..3).flat_map(|f| o.frame(&p, &info(f), 2, 0, u64::MAX)).collect()
    })
}

/// A packet with the given claims.
fn craft(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let h = b.get(..16)?;
    let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let e = FrameExt {
        frame: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
        index: u16_at(7),
        data: u16_at(9),
        parity: u16_at(11),
    };
    let len = usize::from(h[13]).min(b.len() - 14);
    let payload = &b[14..14 + len];
    let cap = capture_time::encode(1, 1000);
    let block = extension_block(&[(1, &cap[1..9]), (2, &frame_ext(&e))]);
    // RTP header: version 2 with an extension, no CSRC; timestamp 0, SSRC 1.
    let mut pkt = vec![0x90, h[0] & 0x7F, h[1], h[2], 0, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(&capture_time::ONE_BYTE_PROFILE.to_be_bytes());
    pkt.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
    pkt.extend_from_slice(&block);
    pkt.extend_from_slice(payload);
    Some((pkt, 14 + len))
}

fn frame_ext(e: &FrameExt) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..4].copy_from_slice(&e.frame.to_be_bytes());
    b[4..6].copy_from_slice(&e.index.to_be_bytes());
    b[6..8].copy_from_slice(&e.data.to_be_bytes());
    b[8..].copy_from_slice(&e.parity.to_be_bytes());
    b
}

struct Run {
    a: Assembler,
    now: u64,
    last_out: Option<u64>,
}

impl Run {
    fn drain(&mut self) {
        while let Some(out) = self.a.poll(self.now) {
            let seq = out.seq();
            assert!(!matches!(self.last_out, Some(l) if seq <= l), "frame {seq} after {:?}", self.last_out);
            self.last_out = Some(seq);
            match out {
                Assembled::Frame { jpeg, .. } => {
                    assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]))
                }
                Assembled::Partial { frame, bands } => {
                    assert!(!bands.is_empty());
                    assert!(bands.iter().all(|b| b.rows.start < b.rows.end && b.rows.end <= frame.height));
                }
                Assembled::Lost { .. } => {}
            }
        }
        assert!(self.a.held_bytes() <= MAX_HELD_BYTES);
    }
}

fuzz_target!(|data: &[u8]| {
    let good = good();
    let mut r = Run { a: Assembler::new(100_000), now: 0, last_out: None };
    let mut rest = data;
    while let Some((&kind, body)) = rest.split_first() {
        let used = match kind & 3 {
            0 if body.len() >= 2 => {
                let len = usize::from(u16::from_be_bytes([body[0], body[1]])).min(body.len() - 2);
                let _ = r.a.push(&body[2..2 + len], r.now);
                2 + len
            }
            1 if body.len() >= 4 => {
                let mut p = good[usize::from(body[0]) % good.len()].clone();
                let at = usize::from(u16::from_be_bytes([body[1], body[2]]));
                let n = p.len();
                p[at % n] ^= body[3];
                let _ = r.a.push(&p, r.now);
                4
            }
            2 if !body.is_empty() => {
                r.now += u64::from(body[0]) * 1000;
                let runs = r.a.nacks(r.now, 20_000);
                assert!(runs.len() <= 256 && runs.iter().all(|&(_, n)| n > 0));
                r.drain();
                1
            }
            3 => match craft(body) {
                Some((p, used)) => {
                    let _ = r.a.push(&p, r.now);
                    used
                }
                None => body.len(),
            },
            _ => body.len(),
        };
        rest = &body[used..];
        r.drain();
    }
    r.now += 1_000_000;
    r.drain();
    assert_eq!(r.a.held_bytes(), 0);
});
