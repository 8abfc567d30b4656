//! Arbitrary RTP packets through what `send --source rtsp://` forwards: `rtp::depacketize`,
//! then `capture::rtsp::Accept`, which passes on whole frames under the image cap whose
//! rebuilt header reads, and counts the rest.
//!
//! The input is `rtp_jpeg`'s (so its seeds serve: fuzz/gst_seeds.py): a byte of settings
//! (bit 0: `a=x-dimensions`, bit 1: the capture-time extension, bit 2: a cap of 2000 bytes
//! instead of `max_image_bytes(None)`), then each packet as a 2-byte big-endian length and
//! its bytes. Checks, besides "never panics": every frame out of the depacketiser is either
//! forwarded or counted, never both; a forwarded JPEG is within the cap, starts with SOI and
//! ends with EOI, and its SOF says the size the RTP/JPEG header (or the SDP) gave. Run with
//! `-malloc_limit_mb=64`.

#![no_main]

use framecast::capture::max_image_bytes;
use framecast::capture::rtsp::Accept;
use framecast::rtp::depacketize::{Config, Depacketizer, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, mut rest)) = data.split_first() else { return };
    let cfg = Config {
        dimensions: (k & 1 != 0).then_some((u32::from(k >> 4) * 16 + 8, 48)),
        capture_ext: (k & 2 != 0).then_some(1),
        payload_type: None,
    };
    let cap = if k & 4 != 0 { 2000 } else { max_image_bytes(None) };
    let mut d = Depacketizer::new(cfg);
    let mut accept = Accept::new(cap);
    let mut forwarded = 0u64;
    let mut outputs = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let _ = d.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        drain(&mut d, &mut accept, &mut forwarded, &mut outputs);
    }
    d.flush();
    drain(&mut d, &mut accept, &mut forwarded, &mut outputs);
    assert_eq!(forwarded + accept.dropped.total(), outputs);
});

fn drain(d: &mut Depacketizer, accept: &mut Accept, forwarded: &mut u64, outputs: &mut u64) {
    while let Some(out) = d.pull() {
        *outputs += 1;
        let size = match &out {
            Output::Frame(f) => Some((f.width, f.height)),
            _ => None,
        };
        if let Some(a) = accept.take(out) {
            *forwarded += 1;
            assert!(a.jpeg.len() <= accept.max_frame);
            assert!(a.jpeg.starts_with(&[0xFF, 0xD8]) && a.jpeg.ends_with(&[0xFF, 0xD9]));
            assert_eq!(Some((a.width, a.height)), size, "the SOF disagrees with the RTP/JPEG header");
        }
    }
}
