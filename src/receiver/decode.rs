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
            self.decoder.decode(&inc.jpeg, w, h, &mut pixels).map_err(|e| (DropCause::CorruptJpeg, e.to_string()))
        };
        let end = now_us();
        self.jpeg_pool.put(inc.jpeg);
        if let Err((cause, e)) = res {
            warn!(seq = inc.header.seq, error = %e, "cannot decode frame; skipped");
            self.meter.count_drop(cause);
            *spare = Some(pixels);
            return true;
        }
        if let Some(last) = &mut self.last {
            last.clear();
            last.extend_from_slice(&pixels);
        }
        self.meter.update(|c| {
            c.decoded += 1;
            c.decode_us += end - start;
            c.decode_cpu_us += self.decoder.last_cpu_us();
            c.sliced += u64::from(self.threads.threads > 1);
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
        delivered && !self.limit.is_some_and(|n| count >= n)
    }

    /// A frame with RTP packets missing: the previous frame, with the bands of rows that
    /// arrived decoded over it. Without a previous frame of this size it is lost.
    fn conceal(
        &mut self,
        bands: &[Band],
        (w, h): (usize, usize),
        pixels: &mut Vec<u32>,
    ) -> Result<(), (DropCause, String)> {
        let Some(last) = self.last.as_ref().filter(|l| l.len() == w * h) else {
            return Err((
                DropCause::RtpLoss,
                "packets missing and no previous frame of its size to fill them in".into(),
            ));
        };
        pixels.clear();
        pixels.extend_from_slice(last);
        let mut band = Vec::new();
        for b in bands {
            let rows = (b.rows.end - b.rows.start) as usize;
            let at = b.rows.start as usize * w;
            if at + rows * w > pixels.len() {
                return Err((DropCause::RtpLoss, format!("band of rows {:?} past the frame's {h} rows", b.rows)));
            }
            self.decoder.decode(&b.jpeg, w, rows, &mut band).map_err(|e| (DropCause::CorruptJpeg, e.to_string()))?;
            pixels[at..at + rows * w].copy_from_slice(&band[..rows * w]);
        }
        Ok(())
    }
}
