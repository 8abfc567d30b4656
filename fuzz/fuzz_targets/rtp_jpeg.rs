//! Arbitrary RTP packets through `rtp::depacketize`, the RFC 2435 depayloader of
//! `recv --connect rtsp://`.
//!
//! The input is a sequence of packets, each a 2-byte big-endian length and its bytes; the
//! first byte picks the SDP's settings (x-dimensions or not, the capture-time extension).
//! Checks, besides "never panics": an error drops the frame in progress and nothing comes
//! out for it; every frame handed out starts with SOI and ends with EOI, with its scan inside,
//! and every band of a partial frame lies inside the frame. Run with `-malloc_limit_mb=64`:
//! nothing may be allocated from a size a packet claims (a frame keeps only the bytes that
//! arrived, capped from its size).

#![no_main]

use framecast::rtp::depacketize::{Config, Depacketizer, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, mut rest)) = data.split_first() else { return };
    let cfg = Config {
        dimensions: (k & 1 != 0).then_some((u32::from(k >> 4) * 16 + 8, 48)),
        capture_ext: (k & 2 != 0).then_some(1),
        payload_type: None,
    };
    let mut d = Depacketizer::new(cfg);
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let _ = d.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        check(&mut d);
    }
    d.flush();
    check(&mut d);
});

fn check(d: &mut Depacketizer) {
    while let Some(out) = d.pull() {
        match out {
            Output::Frame(f) => {
                assert!(f.jpeg.starts_with(&[0xFF, 0xD8]) && f.jpeg.ends_with(&[0xFF, 0xD9]));
                assert!(f.scan.end <= f.jpeg.len() && f.width > 0 && f.height > 0);
            }
            Output::Partial(p) => {
                assert!(!p.bands.is_empty());
                for b in &p.bands {
                    assert!(b.rows.start < b.rows.end && b.rows.end <= p.height);
                    assert!(b.jpeg.starts_with(&[0xFF, 0xD8]));
                }
            }
            Output::Lost { .. } => {}
        }
    }
}
