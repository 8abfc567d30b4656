//! The `encode` stage: a captured frame becomes a JPEG, once, for every viewer.
//!
//! The `encode` thread takes the newest captured frame, decides the quality (the
//! quality policy below), encodes it into a reused buffer of the hub's [`FrameRing`] and
//! publishes it to every viewer's newest-wins slot. It skips the work while nobody watches.
//!
//! It is the only owner of the rate controller (`--target-kbps`, `--max-latency-ms`): the
//! viewer transports report what they see as [`Feedback`] events carrying their own
//! timestamps (an acknowledgement's is when it arrived), drained here before each decision.
//! An acknowledgement reaches the controller once the viewer's thread has handled it, which
//! is after the frame it was writing when the ack arrived: on a slow link a decision can miss
//! the acks of the last frame's write time (tens of ms), never their timing. With several
//! viewers, their events interleave in the order their threads handled them. The controller's state
//! goes into the meter whenever it decides, which is when it changes, for the stats reporter.
//!
//! When its input disconnects (capture ended) it closes the hub, and every viewer finishes.
//!
//! Next: `transport.rs`.

use std::sync::Arc;
use std::thread;

use anyhow::Context;
use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use super::{ViewerRequest, POLL};
use crate::capture::RawFrame;
use crate::chan::{LatestReceiver, Pool};
use crate::clock::now_us;
use crate::codec::threads::{CodecThreads, ThreadsBySize};
use crate::codec::{Encoded, Encoder, Speed};
use crate::control::Controller;
use crate::format::Subsampling;
use crate::hub::{FrameRing, Hub};
use crate::net::FrameHeader;
use crate::stats::{DropCause, Meter};

/// What a viewer transport tells the rate controller, each with the time it happened (µs on
/// the sender's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// A viewer connected: what was measured on another connection does not describe it.
    NewLink,
    /// A viewer's writer has this many frames unacknowledged after its latest write.
    InFlight(usize),
    /// Frames of `bytes` (the oldest captured at `capture_us`) were acknowledged at `at_us`;
    /// `waited_for_loss`: the frame's packets were asked for again (UDP), so its latency is the
    /// loss recovery's, not the link's.
    Acked { at_us: u64, bytes: u64, capture_us: u64, waited_for_loss: bool },
    /// A UDP viewer's rate control paces at `bps` (its estimate of the link) since `at_us`.
    LinkRate { at_us: u64, bps: u64 },
}

/// How frames are encoded (from the configuration).
#[derive(Clone, Copy, Debug)]
pub(super) struct EncodeSettings {
    pub quality: u8,
    pub subsampling: Subsampling,
    pub reencode: bool,
    /// A lossless stream: wait for each viewer instead of dropping.
    pub backpressure: bool,
    pub fast_dct: bool,
    /// Threads per frame (`--encode-threads`), decided again whenever the frame size changes.
    pub threads: CodecThreads,
    /// A restart marker every this many MCU rows (0: none unless sliced).
    pub restart_rows: u16,
}

/// Everything the encode thread owns.
pub(super) struct Encode {
    pub settings: EncodeSettings,
    pub rx: LatestReceiver<RawFrame>,
    pub raw_pool: Pool<RawFrame>,
    pub hub: Arc<Hub>,
    pub requests: Receiver<ViewerRequest>,
    pub feedback: Receiver<Feedback>,
    pub control: Option<Controller>,
    pub meter: Meter,
}

/// What the log has already been told, so each thing is said once.
#[derive(Default)]
struct Said {
    mode: bool,
    paused: Option<bool>,
    no_halve: bool,
}

/// The encode thread's working state.
struct Work {
    enc: Encoder,
    ring: FrameRing,
    /// Frames halved for `--allow-downscale`.
    small: RawFrame,
    said: Said,
    /// The controller's last decision time already put in the meter.
    published_tick: Option<u64>,
    /// The encoder's threads per frame.
    threads: ThreadsBySize,
}

/// What to encode a frame at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    quality: u8,
    half: bool,
}

/// Closes the hub however the encode thread ends, so every viewer finishes.
struct CloseHub(Arc<Hub>);

impl Drop for CloseHub {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Encode {
    /// Encodes until capture ends.
    pub fn run(mut self) -> anyhow::Result<()> {
        let _close = CloseHub(self.hub.clone());
        let s = self.settings;
        let start_quality = self.control.as_ref().map_or(s.quality, |c| c.setting().quality);
        let mut enc =
            Encoder::new(start_quality, s.subsampling, s.reencode).context("cannot create the JPEG encoder")?;
        enc.set_speed(Speed { fast_dct: s.fast_dct, ..Speed::default() })?;
        enc.set_restart_rows(s.restart_rows)?;
        let mut work = Work {
            enc,
            ring: FrameRing::default(),
            small: RawFrame::empty(),
            said: Said::default(),
            published_tick: None,
            threads: ThreadsBySize::new(s.threads),
        };
        self.publish_status(&mut work, true);
        while let Ok(raw) = self.rx.recv() {
            self.absorb_feedback();
            if !self.watched(&mut work.said) {
                self.raw_pool.put(raw);
                continue;
            }
            match self.plan(&raw, &mut work) {
                Some(plan) => self.encode(raw, plan, &mut work)?,
                None => self.raw_pool.put(raw),
            }
        }
        // The summary gets the controller's last word.
        self.publish_status(&mut work, true);
        Ok(())
    }

    /// Applies what the viewers reported to the controller, in the order it happened.
    fn absorb_feedback(&mut self) {
        let Some(c) = &mut self.control else { return };
        for f in self.feedback.try_iter() {
            match f {
                Feedback::NewLink => c.on_new_link(),
                Feedback::InFlight(n) => c.on_in_flight(n),
                Feedback::Acked { at_us, bytes, capture_us, waited_for_loss } => {
                    c.on_acked(at_us, bytes, capture_us, waited_for_loss)
                }
                Feedback::LinkRate { at_us, bps } => c.on_link_rate(at_us, bps),
            }
        }
    }

    /// Whether anyone watches; while nobody does, frames are dropped as `no_viewer`.
    fn watched(&self, said: &mut Said) -> bool {
        if self.hub.viewers() == 0 {
            if said.paused != Some(true) {
                info!("no viewer: encoding paused (capture keeps running)");
                said.paused = Some(true);
            }
            self.meter.count_drop(DropCause::NoViewer);
            if self.settings.backpressure {
                // Nothing paces a lossless source while nobody watches.
                thread::sleep(POLL / 10);
            }
            return false;
        }
        if said.paused == Some(true) {
            info!(viewers = self.hub.viewers(), "encoding resumed");
        }
        said.paused = Some(false);
        true
    }

    /// The quality policy: the viewers' requests and, with a controller, its choice of
    /// quality, size and whether this frame is encoded at all (`None`: skipped to lower the
    /// frame rate, counted as `rate_limit`).
    fn plan(&mut self, raw: &RawFrame, work: &mut Work) -> Option<Plan> {
        let current = work.enc.quality();
        let Some(c) = &mut self.control else {
            let quality = self.requests.try_iter().fold(current, |q, r| match r {
                ViewerRequest::Quality(to) => to,
                ViewerRequest::Step(n) => (i32::from(q) + 5 * i32::from(n)).clamp(1, 100) as u8,
            });
            if quality != current {
                info!(from = current, to = quality, "viewer asked for a new quality");
            }
            return Some(Plan { quality, half: false });
        };
        if raw.no_signal {
            // A no-signal card is encoded as things stand; the controller learns nothing from it.
            return Some(Plan { quality: current, half: false });
        }
        for r in self.requests.try_iter() {
            let what = match r {
                ViewerRequest::Quality(q) => c.request_quality(q),
                ViewerRequest::Step(n) => c.step(n),
            };
            info!("{what}");
        }
        let now = now_us();
        if !c.admit(now) {
            self.meter.count_drop(DropCause::RateLimit);
            return None;
        }
        if let Some(d) = c.tick(now) {
            debug!(quality = d.setting.quality, fps = d.setting.fps, "rate control: {}", d.reason);
        }
        let s = c.setting();
        self.publish_status(work, false);
        Some(Plan { quality: s.quality, half: s.half })
    }

    /// Puts the controller's state in the meter: at the start and end (`always`), and after
    /// each decision (its state changes only then).
    fn publish_status(&self, work: &mut Work, always: bool) {
        let Some(c) = &self.control else { return };
        if always || c.last_tick() != work.published_tick {
            work.published_tick = c.last_tick();
            let status = c.status();
            self.meter.update(|m| m.control = Some(status.clone()));
        }
    }

    /// Encodes one frame and publishes it to every viewer.
    fn encode(&mut self, raw: RawFrame, plan: Plan, work: &mut Work) -> anyhow::Result<()> {
        if plan.quality != work.enc.quality() {
            work.enc.set_quality(plan.quality)?;
        }
        let halved = plan.half && crate::capture::scale::halve(&raw, &mut work.small);
        if plan.half && !halved {
            self.cannot_halve(&mut work.said);
        }
        let size = if halved { (work.small.width, work.small.height) } else { (raw.width, raw.height) };
        let enc = &mut work.enc;
        work.threads.fit(size, ("encode", "encoder", "encoding"), |n| enc.set_threads(n));
        let input = if halved { &work.small } else { &raw };
        let slot = work.ring.take();
        let frame = Arc::get_mut(slot).expect("the ring hands out frames nobody else holds");
        let start = now_us();
        let res = work.enc.encode(input, &mut frame.jpeg);
        let end = now_us();
        let info = match res {
            Ok(i) => i,
            Err(e) => {
                warn!(seq = raw.seq, error = %e, "cannot encode frame; skipped");
                self.meter.count_drop(DropCause::EncodeError);
                self.raw_pool.put(raw);
                return Ok(());
            }
        };
        say_mode(&info, &mut work.said);
        let (width, height) = size;
        frame.header = FrameHeader {
            seq: raw.seq,
            capture_us: raw.capture_us,
            encode_start_us: start,
            encode_end_us: end,
            send_us: 0,
            width: width as u16,
            height: height as u16,
            quality: info.quality,
            subsampling: info.subsampling.to_wire(),
            flags: if info.passthrough { FrameHeader::FLAG_PASSTHROUGH } else { 0 },
            jpeg_len: frame.jpeg.as_slice().len() as u32,
        };
        let capture_us = frame.header.capture_us;
        self.meter.update(|c| {
            c.encoded += 1;
            c.encode_us += end - start;
            c.encode_cpu_us += info.cpu_us;
            c.threaded += u64::from(work.threads.threads > 1);
            c.sliced += u64::from(info.sliced);
            c.quality = Some(info.quality);
            let _ = c.lat_encoded.record(end.saturating_sub(capture_us).max(1));
        });
        let (len, no_signal) = (frame.jpeg.as_slice().len() as u64, raw.no_signal);
        self.raw_pool.put(raw);
        let congested = self.hub.publish(slot.clone(), self.settings.backpressure, &self.meter);
        if let Some(c) = self.control.as_mut().filter(|_| !no_signal) {
            c.on_encoded(end, len, info.quality, halved);
            for _ in 0..congested {
                c.on_congestion_drop(end);
            }
        }
        Ok(())
    }

    /// `--allow-downscale` asked for half size, but this source's frames cannot be halved.
    fn cannot_halve(&mut self, said: &mut Said) {
        if let Some(c) = &mut self.control {
            c.downscale_unavailable();
        }
        if !said.no_halve {
            warn!(
                "--allow-downscale: this source's frames are JPEG, which framecast does not scale; sending full size"
            );
            said.no_halve = true;
        }
    }
}

fn say_mode(info: &Encoded, said: &mut Said) {
    if said.mode {
        return;
    }
    if info.passthrough {
        info!("forwarding the camera's MJPEG without re-encoding (give --quality to re-encode)");
    } else {
        info!(quality = info.quality, subsampling = %info.subsampling, "encoding JPEG");
    }
    said.mode = true;
}
