//! Each frame packetised once for every RTSP session: the first session to take a frame from
//! its hub slot cuts it into RTP/JPEG payloads ([`crate::rtp::packetize`]) and the others
//! reuse the same `Arc`. A frame RFC 2435 cannot carry as it is (4:4:4, grey, progressive,
//! optimised Huffman tables: a camera's MJPEG forwarded untouched) is re-encoded once, also
//! for everyone: decoded and encoded again as baseline 4:2:0 with standard tables and a
//! restart marker every MCU row, at the frame's quality (75 when unknown). Re-encoded frames
//! are counted (`rtp_reencoded` in the stats) and the reason is logged once.
//!
//! Called from the `rtsp-PEER` session threads; the lock makes a second session wait for the
//! first one's packetising instead of doing it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::codec::{restart, CodecError, Decoder, Encoder, JpegBuf, DEFAULT_RESTART_ROWS, NATIVE_0RGB};
use crate::format::Subsampling;
use crate::hub::Shared;
use crate::rtp::packetize::{packetize, PacketizeError, Packetized};
use crate::stats::Meter;

/// Frames kept packetised (sessions are at most a frame or two apart).
const KEEP: usize = 4;
/// Quality of a re-encoded frame whose own quality is unknown.
const REENCODE_QUALITY: u8 = 75;

/// What sessions get for a frame: its payloads, or why it cannot be sent.
pub type Packets = Result<Arc<Packetized>, Arc<PacketizeError>>;

/// The packetised frames, shared by every RTSP session.
pub struct FrameCache {
    inner: Mutex<Inner>,
    meter: Meter,
    told_reencode: AtomicBool,
    told_bad: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// (frame address, sequence number, packets), newest last.
    kept: Vec<(usize, u64, Packets)>,
    codec: Option<(Decoder, Encoder)>,
    pixels: Vec<u32>,
    out: JpegBuf,
}

impl FrameCache {
    pub fn new(meter: Meter) -> Self {
        FrameCache {
            inner: Mutex::new(Inner::default()),
            meter,
            told_reencode: AtomicBool::new(false),
            told_bad: AtomicBool::new(false),
        }
    }

    /// The packets of `frame`, made now if no session has asked for them yet.
    pub fn get(&self, frame: &Shared) -> Packets {
        let key = (Arc::as_ptr(frame) as usize, frame.header.seq);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, p)) = g.kept.iter().find(|(a, s, _)| (*a, *s) == key) {
            return p.clone();
        }
        let packets = self.make(&mut g, frame);
        if g.kept.len() >= KEEP {
            drop(g.kept.remove(0));
        }
        g.kept.push((key.0, key.1, packets.clone()));
        packets
    }

    fn make(&self, g: &mut Inner, frame: &Shared) -> Packets {
        let jpeg = frame.jpeg.as_slice();
        let err = match packetize(jpeg) {
            Ok(p) => return Ok(Arc::new(p)),
            Err(e) => e,
        };
        if !err.needs_reencode() {
            if !self.told_bad.swap(true, Ordering::Relaxed) {
                warn!(seq = frame.header.seq, error = %err, "rtsp: a frame cannot be sent as RTP/JPEG; skipping such frames");
            }
            return Err(Arc::new(err));
        }
        if !self.told_reencode.swap(true, Ordering::Relaxed) {
            info!(reason = %err, "rtsp: re-encoding such frames once for every RTSP viewer (baseline 4:2:0)");
        }
        let quality = if frame.header.quality == 0 { REENCODE_QUALITY } else { frame.header.quality };
        match reencode(g, jpeg, quality) {
            Ok(()) => {
                self.meter.update(|c| c.rtp_reencoded += 1);
                packetize(g.out.as_slice()).map(Arc::new).map_err(Arc::new)
            }
            Err(e) => {
                warn!(seq = frame.header.seq, error = %e, "rtsp: cannot re-encode a frame; skipping it");
                Err(Arc::new(err))
            }
        }
    }
}

/// Decodes `jpeg` and encodes it again as baseline 4:2:0 into `g.out`.
fn reencode(g: &mut Inner, jpeg: &[u8], quality: u8) -> Result<(), CodecError> {
    let h = restart::parse_header(jpeg)?;
    let (w, h) = (usize::from(h.width), usize::from(h.height));
    let (dec, enc) = match &mut g.codec {
        Some(c) => c,
        None => {
            let mut enc = Encoder::new(quality, Subsampling::S420, false)?;
            enc.set_restart_rows(DEFAULT_RESTART_ROWS)?;
            g.codec.insert((Decoder::new()?, enc))
        }
    };
    if enc.quality() != quality {
        enc.set_quality(quality)?;
    }
    dec.decode(jpeg, w, h, &mut g.pixels)?;
    enc.encode_pixels(bytemuck::cast_slice(&g.pixels), w, h, NATIVE_0RGB, &mut g.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Layout, RawFrame};
    use crate::hub::EncodedFrame;
    use crate::net::FrameHeader;
    use crate::stats::Side;
    use crate::testutil::pattern_jpeg;

    /// A hub frame holding `jpeg` (the encoder forwards a JPEG source as it is).
    fn frame(seq: u64, jpeg: &[u8]) -> Shared {
        let h = restart::parse_header(jpeg).unwrap();
        let mut f = RawFrame::empty();
        f.data = jpeg.to_vec();
        (f.width, f.height, f.layout) = (u32::from(h.width), u32::from(h.height), Layout::Jpeg);
        let mut buf = JpegBuf::default();
        Encoder::new(90, Subsampling::S420, false).unwrap().encode(&f, &mut buf).unwrap();
        let header = FrameHeader { seq, quality: 80, ..Default::default() };
        Arc::new(EncodedFrame { header, jpeg: buf })
    }

    #[test]
    fn a_frame_is_packetised_once_and_444_is_reencoded_once() {
        let meter = Meter::new(Side::Sender);
        let cache = FrameCache::new(meter.clone());
        let f1 = frame(1, &pattern_jpeg(64, 48, Subsampling::S420, 80, 1).unwrap());
        let a = cache.get(&f1).unwrap();
        let b = cache.get(&f1).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second session reuses the first one's packets");
        let f2 = frame(2, &pattern_jpeg(64, 48, Subsampling::S444, 80, 2).unwrap());
        let c = cache.get(&f2).unwrap();
        assert_eq!(c.kind, 65, "re-encoded as 4:2:0 with restart markers");
        assert!(Arc::ptr_eq(&c, &cache.get(&f2).unwrap()));
        let grey = frame(3, &pattern_jpeg(64, 48, Subsampling::Gray, 80, 3).unwrap());
        assert_eq!(cache.get(&grey).unwrap().kind, 65);
        assert_eq!(meter.summary().rtp_reencoded, 2);
    }
}
