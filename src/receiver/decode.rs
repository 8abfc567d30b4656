//! decode, the receiver's second stage (thread `decode`): JPEG to 0RGB pixels, into one of
//! the two pixel buffers that circulate between it and the view, handed on as a [`Decoded`].
//!
//! It ends when net-rx is gone (its input disconnects), when the view is gone (the channel
//! that returns pixel buffers disconnects), or right after it hands on the `--frames`'th frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::warn;

use super::net::Incoming;
use crate::chan::{LatestReceiver, LatestSender, Pool};
use crate::clock::now_us;
use crate::codec::threads::ThreadsBySize;
use crate::codec::Decoder;
use crate::net::FrameHeader;
use crate::rtp::depacketize::Band;
use crate::stats::{DropCause, Meter};

/// A decoded frame on its way to the view.
pub(super) struct Decoded {
    pub conn: u64,
    pub header: FrameHeader,
    pub received_us: u64,
    pub decoded_us: u64,
    pub capture_local_us: Option<u64>,
    pub pixels: Vec<u32>,
}

/// The decode stage: everything it needs, built before its thread starts.
pub(super) struct Decode {
    pub rx: LatestReceiver<Incoming>,
    /// Where JPEG buffers go back to net-rx.
    pub jpeg_pool: Pool<Vec<u8>>,
    pub tx: LatestSender<Decoded>,
    /// Pixel buffers the view has finished showing; only the view sends on it.
    pub free_rx: Receiver<Vec<u32>>,
    pub meter: Meter,
    /// Frames handed to the view, shared with it for `--frames`.
    pub count: Arc<AtomicU64>,
    pub limit: Option<u64>,
    pub decoder: Decoder,
    /// The decoder's threads per frame (`--decode-threads`).
    pub threads: ThreadsBySize,
    /// RTSP: a copy of the last frame decoded, under which a frame with packets missing
    /// shows its missing rows (`None`: the native protocol, which never loses a part).
    pub last: Option<Vec<u32>>,
}

impl Decode {
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut spare = None;
        while self.step(&mut spare) {}
        Ok(())
    }

    /// Decodes the newest frame received into a free pixel buffer (`spare`, or one the view
    /// returns) and hands it on. Returns true while the stage should go on.
    ///
    /// Decode only what can still be shown: wait until the view hands back a buffer (it does
    /// each time it takes a decoded frame), then take the newest frame received. Frames
    /// that arrive meanwhile replace each other in `rx` and count as `decoder_busy` drops, so
    /// a viewer that falls behind never has a decoded frame dropped (`display_busy`).
    fn step(&mut self, spare: &mut Option<Vec<u32>>) -> bool {
        let Some(mut pixels) = spare.take().or_else(|| self.free_rx.recv().ok()) else { return false };
        let Ok(inc) = self.rx.recv() else { return false };
        let (w, h) = (usize::from(inc.header.width), usize::from(inc.header.height));
        let size = (u32::from(inc.header.width), u32::from(inc.header.height));
        let decoder = &mut self.decoder;
        self.threads.fit(size, ("decode", "decoder", "decoding"), |n| decoder.set_threads(n));
        let start = now_us();
        let concealed = !inc.bands.is_empty();
        let res = if concealed {
            self.conceal(&inc.bands, (w, h), &mut pixels)
        } else {
            let res = self.decoder.decode(&inc.jpeg, w, h, &mut pixels);
            res.map(|()| (self.decoder.last_cpu_us(), self.decoder.last_sliced()))
                .map_err(|e| (DropCause::CorruptJpeg, e.to_string()))
        };
        let end = now_us();
        self.jpeg_pool.put(inc.jpeg);
        let (cpu_us, sliced) = match res {
            Ok(done) => done,
            Err((cause, e)) => {
                warn!(seq = inc.header.seq, error = %e, "cannot decode frame; skipped");
                self.meter.count_drop(cause);
                *spare = Some(pixels);
                return true;
            }
        };
        if let Some(last) = &mut self.last {
            last.clear();
            last.extend_from_slice(&pixels);
        }
        self.meter.update(|c| {
            c.decoded += 1;
            c.decode_us += end - start;
            c.decode_cpu_us += cpu_us;
            c.threaded += u64::from(self.threads.threads > 1);
            c.sliced += u64::from(sliced);
            c.concealed += u64::from(concealed);
            c.quality = Some(inc.header.quality);
            if let Some(cap) = inc.capture_local_us {
                let _ = c.lat_decoded.record(end.saturating_sub(cap).max(1));
            }
        });
        let out = Decoded {
            conn: inc.conn,
            header: inc.header,
            received_us: inc.received_us,
            decoded_us: end,
            capture_local_us: inc.capture_local_us,
            pixels,
        };
        let meter = &self.meter;
        let delivered = self.tx.deliver(out, inc.lossless, |old| {
            meter.count_drop(DropCause::DisplayBusy);
            *spare = Some(old.pixels);
        });
        // Counted once handed to the view, so that the view, seeing the count reach
        // `--frames`, also finds the last frame waiting for it.
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        // --frames reached: decode no more (the view shows what is queued, then stops).
        delivered && self.limit.is_none_or(|n| count < n)
    }

    /// A frame with RTP packets missing: the previous frame, with the bands of rows that
    /// arrived decoded over it. Without a previous frame of this size it is lost. Returns the
    /// CPU time of decoding every band, and whether any band was decoded in pieces.
    fn conceal(
        &mut self,
        bands: &[Band],
        (w, h): (usize, usize),
        pixels: &mut Vec<u32>,
    ) -> Result<(u64, bool), (DropCause, String)> {
        let Some(last) = self.last.as_ref().filter(|l| l.len() == w * h) else {
            return Err((
                DropCause::RtpLoss,
                "packets missing and no previous frame of its size to fill them in".into(),
            ));
        };
        pixels.clear();
        pixels.extend_from_slice(last);
        let mut band = Vec::new();
        let (mut cpu_us, mut sliced) = (0, false);
        for b in bands {
            let rows = (b.rows.end - b.rows.start) as usize;
            let at = b.rows.start as usize * w;
            if at + rows * w > pixels.len() {
                return Err((DropCause::RtpLoss, format!("band of rows {:?} past the frame's {h} rows", b.rows)));
            }
            self.decoder.decode(&b.jpeg, w, rows, &mut band).map_err(|e| (DropCause::CorruptJpeg, e.to_string()))?;
            cpu_us += self.decoder.last_cpu_us();
            sliced |= self.decoder.last_sliced();
            pixels[at..at + rows * w].copy_from_slice(&band[..rows * w]);
        }
        Ok((cpu_us, sliced))
    }
}

#[cfg(test)]
mod tests {
    use crossbeam_channel::bounded;

    use super::*;
    use crate::chan::latest;
    use crate::codec::threads::CodecThreads;
    use crate::codec::{Encoder, JpegBuf};
    use crate::format::Subsampling;
    use crate::rtp::depacketize::{Config, Depacketizer, Output};
    use crate::rtp::packetize::{packetize_with, RtpStream};
    use crate::stats::Side;
    use crate::testutil::{pattern_frame, psnr, xrgb_to_rgb};

    const W: usize = 160;
    const H: usize = 128;

    /// Test-pattern frame `seq` with a restart marker every MCU row.
    fn restart_frame(seq: u64) -> Vec<u8> {
        let mut enc = Encoder::new(85, Subsampling::S420, false).unwrap();
        enc.set_restart_rows(1).unwrap();
        let mut out = JpegBuf::default();
        enc.encode(&pattern_frame(W as u32, H as u32, Subsampling::S420, seq), &mut out).unwrap();
        out.as_slice().to_vec()
    }

    fn decode(jpeg: &[u8]) -> Vec<u32> {
        let mut px = Vec::new();
        Decoder::new().unwrap().decode(jpeg, W, H, &mut px).unwrap();
        px
    }

    /// RTP packets of `jpeg` from framecast's payloader, through the depayloader with packet
    /// `drop` lost.
    fn depacketized(
        jpeg: &[u8],
        drop: Option<usize>,
        d: &mut Depacketizer,
        stream: &mut RtpStream,
        t_us: u64,
    ) -> Output {
        let p = packetize_with(jpeg, 400).unwrap();
        for i in (0..p.len()).filter(|&i| Some(i) != drop) {
            let mut pkt = Vec::new();
            stream.write(&p, i, t_us, &mut pkt);
            d.push(&pkt).unwrap();
        }
        d.flush();
        d.pull().unwrap()
    }

    fn incoming(out: Output, seq: u64) -> Incoming {
        let (jpeg, bands) = match out {
            Output::Frame(f) => (f.jpeg, Vec::new()),
            Output::Partial(p) => (Vec::new(), p.bands),
            Output::Lost { why, .. } => panic!("frame lost: {why}"),
        };
        let header = FrameHeader { seq, width: W as u16, height: H as u16, ..FrameHeader::default() };
        Incoming { conn: 1, header, received_us: 0, capture_local_us: None, lossless: false, jpeg, bands }
    }

    /// A frame with one RTP packet lost is shown with its rows that arrived and the previous
    /// frame's rows where they did not, and counted as concealed.
    #[test]
    fn a_lost_packet_shows_the_previous_frame_s_rows_in_its_place() {
        let (a, b) = (restart_frame(1), restart_frame(40));
        let (pa, pb) = (decode(&a), decode(&b));
        let (in_tx, in_rx) = latest(1);
        let (out_tx, out_rx) = latest(1);
        let (free_tx, free_rx) = bounded(2);
        let meter = Meter::new(Side::Receiver);
        let mut dec = Decode {
            rx: in_rx,
            jpeg_pool: Pool::new(2),
            tx: out_tx,
            free_rx,
            meter: meter.clone(),
            count: Arc::new(AtomicU64::new(0)),
            limit: None,
            decoder: Decoder::new().unwrap(),
            threads: ThreadsBySize::new(CodecThreads::Fixed(1)),
            last: Some(Vec::new()),
        };
        let mut d = Depacketizer::new(Config { capture_ext: None, ..Config::default() });
        let mut stream = RtpStream::new(9, 100, 0);
        let mut spare = Some(Vec::new());
        in_tx.push(incoming(depacketized(&a, None, &mut d, &mut stream, 1_000_000), 1));
        assert!(dec.step(&mut spare));
        let first = out_rx.recv().unwrap();
        assert!(first.pixels == pa);
        free_tx.send(first.pixels).unwrap();
        let n = packetize_with(&b, 400).unwrap().len();
        let out = depacketized(&b, Some(n / 2), &mut d, &mut stream, 1_033_333);
        let Output::Partial(p) = &out else { panic!("expected a partial frame, got {out:?}") };
        let arrived: Vec<_> = p.bands.iter().map(|b| b.rows.clone()).collect();
        in_tx.push(incoming(out, 2));
        assert!(dec.step(&mut spare));
        let shown = out_rx.recv().unwrap().pixels;
        let (mut new_rows, mut old_rows) = (0, 0);
        for y in 0..H {
            let row = &shown[y * W..(y + 1) * W];
            if let Some(r) = arrived.iter().find(|r| r.contains(&(y as u32))) {
                // A band's edge rows differ a little from the whole frame's decode: 4:2:0
                // chroma is interpolated from the next chroma row, which the band lacks.
                let edge = (y as u32 == r.start && r.start > 0) || (y as u32 + 1 == r.end && r.end < H as u32);
                let want = &pb[y * W..(y + 1) * W];
                if edge {
                    let p = psnr(&xrgb_to_rgb(row), &xrgb_to_rgb(want));
                    assert!(p > 30.0, "edge row {y}: {p:.1} dB from the new frame");
                } else {
                    assert!(row == want, "row {y} arrived: from the new frame");
                }
                new_rows += 1;
            } else {
                assert!(row == &pa[y * W..(y + 1) * W], "row {y} lost: from the previous frame");
                old_rows += 1;
            }
        }
        assert!(new_rows > 0 && old_rows > 0, "{new_rows} new rows, {old_rows} old");
        assert!(pa != pb, "the two frames differ");
        assert_eq!(meter.summary().concealed, 1);
    }
}
