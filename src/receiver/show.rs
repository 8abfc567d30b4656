//! The view, the receiver's last stage, run on the caller's thread (windows must live there):
//! shows each decoded frame on the [`FrameSink`], saves `--dump-dir` pictures, writes the
//! `--frame-log`, counts displayed frames, and sends an acknowledgement per frame (and the
//! window's quality key presses) to the feedback thread.
//!
//! It stops at `--frames`, `--duration`, Ctrl-C, a closed window, or when decode is gone.
//! Dropping it then disconnects the channels that end decode and the feedback thread.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{RecvTimeoutError, Sender};
use tracing::{info, warn};

use super::decode::Decoded;
use super::feedback::{AckEvent, Feedback};
use super::DumpConfig;
use crate::chan::LatestReceiver;
use crate::clock::now_us;
use crate::net::proto::MAX_QUALITY_STEP;
use crate::net::Ack;
use crate::stats::Meter;
use crate::view::{write_ppm, FrameSink, Picture};

/// How long the view waits for a frame before it handles window events again.
const WINDOW_POLL: Duration = Duration::from_millis(10);

/// `--frame-log`: one CSV line per displayed frame.
pub(super) struct FrameLog {
    out: std::io::BufWriter<std::fs::File>,
    started_us: u64,
}

impl FrameLog {
    const HEADER: &'static str =
        "seq,width,height,bytes,quality,t_s,capture_to_received_ms,capture_to_decoded_ms,capture_to_displayed_ms";

    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("--frame-log: cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{}", Self::HEADER)?;
        Ok(FrameLog { out, started_us: now_us() })
    }

    fn write(&mut self, f: &Decoded, shown_us: u64) -> std::io::Result<()> {
        let ms =
            |t: u64| f.capture_local_us.map_or(String::new(), |c| format!("{:.3}", t.saturating_sub(c) as f64 / 1e3));
        writeln!(
            self.out,
            "{},{},{},{},{},{:.4},{},{},{}",
            f.header.seq,
            f.header.width,
            f.header.height,
            f.header.jpeg_len,
            f.header.quality,
            shown_us.saturating_sub(self.started_us) as f64 / 1e6,
            ms(f.received_us),
            ms(f.decoded_us),
            ms(shown_us)
        )
    }
}

/// The view stage: the sink, and the channel ends it owns.
pub(super) struct View<'a> {
    pub sink: &'a mut dyn FrameSink,
    pub rx: LatestReceiver<Decoded>,
    /// Pixel buffers back to decode, once shown.
    pub free_tx: Sender<Vec<u32>>,
    pub ack_tx: Sender<AckEvent>,
    pub feedback_tx: Sender<Feedback>,
    /// The latest stats line, for the window title.
    pub status_rx: LatestReceiver<String>,
    pub meter: Meter,
    /// Ctrl-C.
    pub stop: Arc<AtomicBool>,
    /// Frames decode has handed on.
    pub decoded: Arc<AtomicU64>,
    pub limit: Option<u64>,
    pub deadline: Option<Instant>,
    pub dump: Option<DumpConfig>,
    pub frame_log: Option<FrameLog>,
}

impl View<'_> {
    /// Shows frames until one of the stop conditions in the module docs.
    pub fn run(&mut self) -> anyhow::Result<()> {
        // The pixels of the frame on show, handed back to decode when the next frame is
        // taken: decode gets a buffer only when no decoded frame waits, so it never decodes
        // a frame that would be replaced before it is shown (see `Decode::step`).
        let mut on_show = None;
        let res = loop {
            match self.step(&mut on_show) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Some(log) = self.frame_log.as_mut() {
            if let Err(e) = log.out.flush() {
                warn!(error = %e, "--frame-log: cannot write");
            }
        }
        res
    }

    /// Waits briefly for a frame and shows it, then handles window events. Returns false
    /// when the view should stop (and logs why).
    fn step(&mut self, on_show: &mut Option<Vec<u32>>) -> anyhow::Result<bool> {
        if self.stop.load(Ordering::Relaxed) {
            info!("stop requested");
            return Ok(false);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            info!("duration reached");
            return Ok(false);
        }
        match self.rx.recv_timeout(WINDOW_POLL) {
            Ok(f) => {
                // The first frame taken brings the second buffer into circulation.
                let _ = self.free_tx.try_send(on_show.take().unwrap_or_default());
                *on_show = Some(self.show(f)?);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
        if self.limit.is_some_and(|n| self.decoded.load(Ordering::Relaxed) >= n) && self.rx.is_empty() {
            info!(frames = self.decoded.load(Ordering::Relaxed), "frame limit reached");
            return Ok(false);
        }
        Ok(self.window_events())
    }

    /// Shows one frame, saves and logs it, counts it and acknowledges it. Returns its pixels.
    fn show(&mut self, f: Decoded) -> anyhow::Result<Vec<u32>> {
        let (w, h) = (usize::from(f.header.width), usize::from(f.header.height));
        let pic = Picture { seq: f.header.seq, width: w, height: h, pixels: &f.pixels };
        self.sink.show(&pic)?;
        let shown = now_us();
        if let Some(d) = &self.dump {
            if f.header.seq % d.every == 0 {
                let path = d.dir.join(format!("frame-{:08}.ppm", f.header.seq));
                write_ppm(&path, &pic).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        if let Some(log) = self.frame_log.as_mut() {
            log.write(&f, shown).context("--frame-log: cannot write")?;
        }
        self.meter.update(|c| {
            c.displayed += 1;
            let _ = c.lat_shown.record(shown.saturating_sub(f.decoded_us).max(1));
            if let Some(cap) = f.capture_local_us {
                let _ = c.lat_displayed.record(shown.saturating_sub(cap).max(1));
            }
        });
        let ack = Ack { seq: f.header.seq, received_us: f.received_us, decoded_us: f.decoded_us, displayed_us: shown };
        let _ = self.ack_tx.try_send(AckEvent { conn: f.conn, ack });
        Ok(f.pixels)
    }

    /// Updates the title, handles window events and passes quality key presses on. Returns
    /// false once the window is closed.
    fn window_events(&mut self) -> bool {
        if let Ok(text) = self.status_rx.try_recv() {
            self.sink.set_status(&text);
        }
        if !self.sink.poll() {
            info!("window closed");
            return false;
        }
        let steps = self.sink.take_quality_steps();
        if steps != 0 {
            let steps = steps.clamp(-MAX_QUALITY_STEP, MAX_QUALITY_STEP);
            info!(steps, "asking the sender for {} quality", if steps > 0 { "more" } else { "less" });
            let _ = self.feedback_tx.try_send(Feedback::Step(steps));
        }
        true
    }
}
