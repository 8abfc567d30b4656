//! The sender's rate controller (`--target-kbps`, `--max-latency-ms`): it chooses the JPEG
//! quality and the encoded frame rate from what it measures, so that the bytes put on the link
//! match what the link can carry.
//!
//! It is pure code over timestamps (µs on the sender's clock) and byte counts, owned by the
//! sender's `encode` thread and fed by the encoder (each frame's size and quality, frames
//! dropped because a viewer had too many unacknowledged: congestion) and, through events the
//! native viewers' threads send with the time each thing happened, by the acknowledgements
//! coming back (delivered bytes and the capture→acknowledged delay) and the frames in
//! flight. Every [`TICK_US`] it decides:
//!
//! 1. **The allowed rate.** With a target, that target. With a latency budget, a delay-based
//!    estimate in the spirit of GCC: when the measured latency nears the budget or frames are
//!    lost to congestion, the rate drops to 0.85 × the rate acknowledgements arrive at (the
//!    path's delivery rate, as BBR estimates it); while latency stays well inside the budget it
//!    grows, quickly far below the rate where trouble last started and slowly near it (that
//!    mark is forgotten after [`TROUBLE_MEMORY_US`] without a cut). Frames that waited for
//!    loss recovery (UDP) give no latency sample: a lost packet's round trip is not a queue. A
//!    pause in acknowledgements far longer than usual is a stall, not a slower path: the rate
//!    is held through it and for a window after. With both, the lower of the two.
//! 2. **Quality, then fps.** The bit rate at the current quality is predicted from the mean
//!    size of frames encoded at each quality (remembered per quality value, so a step that was
//!    too big once is not tried again at once). Over the rate: quality goes down, in steps that
//!    grow with the excess; at `min_quality`, the frame rate goes down instead. Under it with
//!    room: the frame rate comes back first, then quality goes up one or two steps at a time,
//!    and only if the remembered size at the next step fits. A dead band of −8…+5 % around the
//!    rate keeps it from hunting.
//!
//! The latency the controller sees is capture → acknowledgement on the sender's clock: the
//! viewer's capture→displayed plus the acknowledgement's trip back, so it errs on the safe
//! side by up to half a round trip.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How often the controller decides, µs.
pub const TICK_US: u64 = 250_000;
/// The span measurements are taken over, µs.
const WINDOW_US: u64 = 1_000_000;
/// Frames at a new quality before its size is trusted for the next decision.
const SETTLE_FRAMES: u32 = 3;
/// A latency cut stops counting as where trouble starts after this long without another, µs.
const TROUBLE_MEMORY_US: u64 = 2_000_000;
/// Sizes remembered per quality are forgotten after this long, µs (the scene may change).
const SIZE_MEMORY_US: u64 = 10_000_000;

/// What the controller aims for (see `cli` for the flags).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlConfig {
    pub target_kbps: Option<u32>,
    pub max_latency_ms: Option<u32>,
    pub min_quality: u8,
    pub max_quality: u8,
    /// The capture rate, frames per second (> 0: a controller needs a live rate).
    pub fps: u32,
    /// At minimum quality, halve the frame size rather than the frame rate
    /// (`--allow-downscale`).
    pub allow_downscale: bool,
}

impl ControlConfig {
    /// Whether anything is controlled at all.
    pub fn is_active(&self) -> bool {
        self.target_kbps.is_some() || self.max_latency_ms.is_some()
    }
}

/// What the encoder should do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    pub quality: u8,
    /// Frames per second to encode (at most the capture rate).
    pub fps: f64,
    /// Encode at half the width and height.
    pub half: bool,
}

/// The controller's state for the stats line and JSON (`control` field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// "target", "latency" or "target+latency".
    pub mode: std::borrow::Cow<'static, str>,
    pub quality: u8,
    pub fps: f64,
    /// Frames are encoded at half size (`--allow-downscale`).
    pub half_size: bool,
    /// The rate the controller allows now, kbit/s (infinite, written as `null`: unlimited).
    #[serde(deserialize_with = "crate::stats::null_is_infinite")]
    pub rate_kbps: f64,
    /// Rate predicted at the current quality and fps, kbit/s.
    pub predicted_kbps: f64,
    /// Rate at which acknowledged bytes arrived over the last second, kbit/s.
    pub delivered_kbps: f64,
    /// p95 of capture→acknowledged over the last second, ms.
    pub latency_p95_ms: Option<f64>,
    /// Frames written to a viewer and not yet acknowledged, after the latest write.
    pub in_flight: usize,
    /// Why the last change was made.
    pub reason: String,
}

/// One decision, for the debug log.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub setting: Setting,
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{} {:.1} fps: {}", self.setting.quality, self.setting.fps, self.reason)
    }
}

/// Where a decision starts from: the allowed rate, the rate predicted now (kbit/s), the
/// frame rate now and the most capture delivers.
#[derive(Clone, Copy)]
struct Fit {
    rate: f64,
    predicted: f64,
    fps: f64,
    fps_cap: f64,
}

#[derive(Clone, Copy, Default)]
struct SizeMemo {
    bytes: f64,
    at_us: u64,
}

/// The controller. See the module documentation.
pub struct Controller {
    cfg: ControlConfig,
    setting: Setting,
    /// The rate a latency budget allows; `None` until latency first limits it.
    latency_rate: Option<f64>,
    /// Where trouble last started (delivered kbit/s), for the slow probing near it.
    trouble_kbps: Option<f64>,
    /// (time, bytes, quality) of frames encoded in the last window.
    encoded: VecDeque<(u64, u64, u8)>,
    /// (time, bytes, capture→ack µs) of acknowledgements in the last window; no latency for
    /// a frame that waited for loss recovery.
    acked: VecDeque<(u64, u64, Option<u64>)>,
    /// (time) of frames lost to congestion in the last window.
    congested: VecDeque<u64>,
    /// Frames offered by capture in the last window (the achievable fps).
    offered: VecDeque<u64>,
    sizes: Vec<SizeMemo>,
    frames_at_quality: u32,
    last_tick: Option<u64>,
    /// The highest quality a viewer asked for (`SetQuality`, keys); `max_quality` otherwise.
    ceiling: u8,
    /// The latest acknowledgement, the usual gap between two, and until when a stall (a
    /// pause in acknowledgements far longer than usual) holds the latency-based rate.
    last_ack: Option<u64>,
    ack_gap_us: f64,
    hold_until: u64,
    in_flight: usize,
    /// The UDP transport's paced rate of its slowest viewer: (when, kbit/s).
    link_rate: Option<(u64, f64)>,
    last_decrease: u64,
    next_due: u64,
    status: ControlStatus,
}

impl Controller {
    pub fn new(cfg: ControlConfig, start_quality: u8) -> Self {
        let quality = start_quality.clamp(cfg.min_quality, cfg.max_quality);
        let ceiling = cfg.max_quality;
        let setting = Setting { quality, fps: f64::from(cfg.fps), half: false };
        let mode = match (cfg.target_kbps.is_some(), cfg.max_latency_ms.is_some()) {
            (true, true) => "target+latency",
            (true, false) => "target",
            _ => "latency",
        };
        let status = ControlStatus {
            mode: mode.into(),
            quality,
            fps: setting.fps,
            half_size: false,
            rate_kbps: cfg.target_kbps.map_or(0.0, f64::from),
            predicted_kbps: 0.0,
            delivered_kbps: 0.0,
            latency_p95_ms: None,
            in_flight: 0,
            reason: "start".into(),
        };
        Controller {
            cfg,
            setting,
            latency_rate: None,
            trouble_kbps: None,
            encoded: VecDeque::new(),
            acked: VecDeque::new(),
            congested: VecDeque::new(),
            offered: VecDeque::new(),
            sizes: vec![SizeMemo::default(); 2 * 101],
            frames_at_quality: 0,
            last_tick: None,
            ceiling,
            last_ack: None,
            ack_gap_us: 0.0,
            hold_until: 0,
            in_flight: 0,
            link_rate: None,
            last_decrease: 0,
            next_due: 0,
            status,
        }
    }

    pub fn setting(&self) -> Setting {
        self.setting
    }

    pub fn status(&self) -> ControlStatus {
        self.status.clone()
    }

    /// When the controller last decided (µs), the only time its [`status`](Self::status)
    /// changes; `None` before the first decision.
    pub fn last_tick(&self) -> Option<u64> {
        self.last_tick
    }

    /// A captured frame reached the encoder: returns whether to encode it (frames above the
    /// chosen fps are skipped, evenly spread).
    pub fn admit(&mut self, now: u64) -> bool {
        self.offered.push_back(now);
        let nominal = f64::from(self.cfg.fps);
        if self.setting.fps >= nominal - 1e-6 {
            self.next_due = now;
            return true;
        }
        let period = (1e6 / self.setting.fps.max(0.1)) as u64;
        let half_frame = (5e5 / nominal) as u64;
        if now + half_frame >= self.next_due {
            // Keep the schedule, but never owe more than one period.
            self.next_due = (self.next_due + period).max(now.saturating_sub(period) + period);
            true
        } else {
            false
        }
    }

    /// A frame of `bytes` was encoded at `quality`, at half size or not.
    pub fn on_encoded(&mut self, now: u64, bytes: u64, quality: u8, half: bool) {
        self.encoded.push_back((now, bytes, quality));
        let memo = &mut self.sizes[memo_index(quality, half)];
        memo.bytes = if memo.bytes == 0.0 || now - memo.at_us > SIZE_MEMORY_US {
            bytes as f64
        } else {
            memo.bytes * 0.7 + bytes as f64 * 0.3
        };
        memo.at_us = now;
        if quality == self.setting.quality && half == self.setting.half {
            self.frames_at_quality += 1;
        }
    }

    /// Frames of `bytes` captured at `capture_us` were acknowledged at `now`. A frame that
    /// `waited_for_loss` (the UDP transport asked for some of its packets again) counts for
    /// the delivery rate but not for latency: its delay is the recovery's, a lost packet's
    /// round trip, not a queue, and cutting the rate for it only costs frames (1280x720 under
    /// 2 % loss in 50 ms outages fell to 8 fps on a link that carries 25).
    pub fn on_acked(&mut self, now: u64, bytes: u64, capture_us: u64, waited_for_loss: bool) {
        let latency = (!waited_for_loss).then(|| now.saturating_sub(capture_us));
        self.acked.push_back((now, bytes, latency));
        if let Some(prev) = self.last_ack {
            let gap = now.saturating_sub(prev) as f64;
            if self.is_stall(gap) {
                // The frames queued behind a stall arrive late and together: their latency and
                // delivery rate say nothing about the path's rate. Judge again once they are
                // out of the window.
                self.hold_until = now + WINDOW_US;
            } else {
                self.ack_gap_us = if self.ack_gap_us == 0.0 { gap } else { 0.9 * self.ack_gap_us + 0.1 * gap };
            }
        }
        self.last_ack = Some(now);
    }

    /// A gap between acknowledgements long enough to be a stall (Wi-Fi retries, a moving
    /// robot's dead spot) rather than a slow link: over 300 ms and 4 times the usual gap.
    fn is_stall(&self, gap_us: f64) -> bool {
        self.ack_gap_us > 0.0 && gap_us > 300_000.0 && gap_us > 4.0 * self.ack_gap_us
    }

    /// A viewer's writer has `frames` unacknowledged after its latest write.
    pub fn on_in_flight(&mut self, frames: usize) {
        self.in_flight = frames;
    }

    /// The UDP transport's rate control paces a viewer at `bps` (its estimate of the link): the
    /// allowed rate stays at 0.9 of it, so that quality follows the link. The slowest viewer
    /// in the last window counts.
    pub fn on_link_rate(&mut self, now: u64, bps: u64) {
        let kbps = bps as f64 / 1000.0;
        self.link_rate = Some(match self.link_rate {
            Some((at, r)) if now < at + WINDOW_US && r < kbps => (at, r),
            _ => (now, kbps),
        });
    }

    /// The cap [`on_link_rate`](Self::on_link_rate) sets, kbit/s (infinite without a recent one).
    fn link_cap(&self, now: u64) -> f64 {
        match self.link_rate {
            Some((at, kbps)) if now < at + 2 * WINDOW_US => 0.9 * kbps,
            _ => f64::INFINITY,
        }
    }

    /// A frame was lost because the viewer's window of unacknowledged frames was full.
    pub fn on_congestion_drop(&mut self, now: u64) {
        self.congested.push_back(now);
    }

    /// Decides, at most once per [`TICK_US`]; returns the decision when the setting changed.
    pub fn tick(&mut self, now: u64) -> Option<Decision> {
        if self.last_tick.is_some_and(|t| now < t + TICK_US) {
            return None;
        }
        self.last_tick = Some(now);
        let since = now.saturating_sub(WINDOW_US);
        for q in [&mut self.offered, &mut self.congested] {
            while q.front().is_some_and(|t| *t < since) {
                q.pop_front();
            }
        }
        while self.encoded.front().is_some_and(|e| e.0 < since) {
            self.encoded.pop_front();
        }
        while self.acked.front().is_some_and(|a| a.0 < since) {
            self.acked.pop_front();
        }

        let delivered_kbps = self.delivered_kbps(now);
        // Latency over the last half window reacts sooner; the whole window when that is thin.
        let recent = now.saturating_sub(WINDOW_US / 2);
        let latency_p95 = p95(self.acked.iter().filter(|a| a.0 >= recent).filter_map(|a| a.2))
            .or_else(|| p95(self.acked.iter().filter_map(|a| a.2)))
            // A stream down to a few frames a second still has a latency: without one the rate
            // held there (1280x720 stayed at 2.5 fps after a loss episode). Too few samples to
            // cut on, though (each cut leaves fewer): they may only let the rate grow.
            .or_else(|| {
                let grow_below = self.cfg.max_latency_ms.map_or(0, |ms| u64::from(ms) * 1000 * 7 / 10);
                self.acked.iter().filter_map(|a| a.2).max().filter(|&l| l < grow_below)
            });
        let congestion = self.congested.len();
        let cap = self.link_cap(now);
        let rate = self.allowed_rate(now, delivered_kbps, latency_p95, congestion).map(|r| r.min(cap));
        let before = self.setting;
        let reason = rate.and_then(|r| self.fit(r));
        let rate = rate.unwrap_or(self.status.rate_kbps);
        let predicted = self.predicted_kbps(self.setting.quality, self.setting.half, self.setting.fps);
        self.status = ControlStatus {
            quality: self.setting.quality,
            fps: (self.setting.fps * 10.0).round() / 10.0,
            half_size: self.setting.half,
            rate_kbps: rate.round(),
            predicted_kbps: predicted.map_or(0.0, f64::round),
            delivered_kbps: delivered_kbps.round(),
            latency_p95_ms: latency_p95.map(|us| (us as f64 / 100.0).round() / 10.0),
            in_flight: self.in_flight,
            reason: reason.clone().unwrap_or_else(|| self.status.reason.clone()),
            ..self.status.clone()
        };
        (self.setting != before).then(|| Decision {
            setting: self.setting,
            reason: format!(
                "{}; rate {:.0} kbit/s, delivered {:.0} kbit/s, latency p95 {}, in flight {}, congestion drops {} in 1 s",
                reason.unwrap_or_default(),
                rate,
                delivered_kbps,
                latency_p95.map_or("unknown".into(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
                self.in_flight,
                congestion
            ),
        })
    }

    /// Acknowledged bytes per second over the window, kbit/s.
    fn delivered_kbps(&self, now: u64) -> f64 {
        let (Some(first), Some(_)) = (self.acked.front(), self.acked.back()) else { return 0.0 };
        let span = now.saturating_sub(first.0).max(TICK_US) as f64 / 1e6;
        let bytes: u64 = self.acked.iter().skip(1).map(|a| a.1).sum();
        bytes as f64 * 8.0 / 1000.0 / span
    }

    /// The rate allowed now, kbit/s (infinite: nothing limits), or `None` to hold the
    /// current setting (a latency budget with no measurement yet, or a stall).
    fn allowed_rate(&mut self, now: u64, delivered: f64, latency_p95: Option<u64>, congestion: usize) -> Option<f64> {
        let target = self.cfg.target_kbps.map_or(f64::INFINITY, f64::from);
        let Some(budget_ms) = self.cfg.max_latency_ms else { return Some(target) };
        let budget = u64::from(budget_ms) * 1000;
        let silent = self.last_ack.is_some_and(|t| self.is_stall(now.saturating_sub(t) as f64));
        if silent || now < self.hold_until {
            // In a stall, or just after one: hold.
            return Some(target.min(self.latency_rate.unwrap_or(f64::INFINITY)));
        }
        let Some(lat) = latency_p95 else {
            // No acknowledgement in a whole second: not started, a stall, or a dead viewer.
            return self.latency_rate.map(|r| r.min(target)).or(target.is_finite().then_some(target));
        };
        let lost = congestion >= 2;
        if lat > budget * 8 / 10 || lost {
            // Over the budget: drain the queue too (down to 0.6 of the delivery rate); near it,
            // a gentler cut. At most once per half window: the measurements lag a cut.
            let severe = lat > budget || lost;
            let factor = if severe { 0.85 * (budget as f64 / lat as f64).clamp(0.7, 1.0) } else { 0.92 };
            if now >= self.last_decrease + WINDOW_US / 2 || self.last_decrease == 0 {
                let cut = delivered.max(64.0) * factor;
                self.latency_rate = Some(self.latency_rate.map_or(cut, |r| r.min(cut)));
                // Where trouble starts: the delivery rate at the first cut of an episode.
                let episode = now < self.last_decrease + 4 * WINDOW_US;
                self.trouble_kbps = Some(match self.trouble_kbps {
                    Some(t) if episode => t.max(delivered),
                    _ => delivered.max(64.0),
                });
                self.last_decrease = now;
            }
        } else if lat < budget * 7 / 10 {
            let ceiling = self.predicted_kbps(self.ceiling, false, f64::from(self.cfg.fps));
            if now >= self.last_decrease + TROUBLE_MEMORY_US {
                // Trouble long past (a loss episode's delivery rate, a moment's congestion) no
                // longer says where the path's limit is: probing stays slow near it for ever
                // otherwise (9 s back to full rate after 10 s of 20 % loss at 1280x720).
                self.trouble_kbps = None;
            }
            let r = match (self.latency_rate, self.trouble_kbps) {
                (None, _) => None,
                // Far below where trouble started: grow fast; close to it: slower; past it:
                // slower still, as the path may have more room now.
                (Some(r), Some(t)) if r >= t => Some(r * 1.01 + 8.0),
                (Some(r), Some(t)) if r > 0.9 * t => Some((r * 1.02 + 8.0).min(t)),
                (Some(r), _) => Some(r * 1.08),
            };
            self.latency_rate = r.filter(|r| !matches!(ceiling, Some(c) if *r >= c * 1.2));
            // else not limiting
        }
        Some(target.min(self.latency_rate.unwrap_or(f64::INFINITY)))
    }

    /// Bit rate at `quality` (at half size or not) and `fps` predicted from remembered frame
    /// sizes, kbit/s.
    fn predicted_kbps(&self, quality: u8, half: bool, fps: f64) -> Option<f64> {
        let memo = self.sizes[memo_index(quality, half)];
        let newest = self.encoded.back().map_or(0, |e| e.0);
        (memo.bytes > 0.0 && newest.saturating_sub(memo.at_us) <= SIZE_MEMORY_US)
            .then(|| memo.bytes * 8.0 * fps / 1000.0)
    }

    /// Frames per second capture actually delivers (at most the configured rate).
    fn achievable_fps(&self) -> f64 {
        let nominal = f64::from(self.cfg.fps);
        match (self.offered.front(), self.offered.back()) {
            (Some(first), Some(last)) if last - first >= WINDOW_US / 2 => {
                ((self.offered.len() - 1) as f64 * 1e6 / (last - first) as f64).min(nominal)
            }
            _ => nominal,
        }
    }

    /// Moves quality, fps and size towards `rate`; returns the reason when something changed.
    fn fit(&mut self, rate: f64) -> Option<String> {
        if self.frames_at_quality < SETTLE_FRAMES {
            return None;
        }
        let fps_cap = self.achievable_fps();
        let Setting { quality: q, half, .. } = self.setting;
        if !rate.is_finite() {
            // Nothing limits: towards the best the encoder may do, two steps at a time, so that
            // a latency budget sees each step before the next.
            let best = Setting { quality: (q + 2).min(self.ceiling), fps: fps_cap, half: false };
            if self.setting != best {
                self.set(best);
                return Some(format!("no limit: quality {q} -> {}, full size and rate", best.quality));
            }
            return None;
        }
        let fps = self.setting.fps.min(fps_cap);
        let predicted = self.predicted_kbps(q, half, fps)?;
        let at = Fit { rate, predicted, fps, fps_cap };
        if predicted > rate * 1.05 {
            self.fit_over(at)
        } else if predicted < rate * 0.92 {
            self.fit_under(at)
        } else {
            None
        }
    }

    /// Over the rate: quality down, then (at the minimum) half size or fewer frames.
    fn fit_over(&mut self, Fit { rate, predicted, fps, fps_cap }: Fit) -> Option<String> {
        let Setting { quality: q, half, .. } = self.setting;
        let bytes_per_frame = self.sizes[memo_index(q, half)].bytes;
        if q > self.cfg.min_quality {
            // ~4 % of size per quality step: step by the log of the excess.
            let steps = ((predicted / rate).ln() / 1.04f64.ln()).ceil().clamp(1.0, 10.0) as u8;
            let to = q.saturating_sub(steps).max(self.cfg.min_quality);
            self.set(Setting { quality: to, ..self.setting });
            return Some(format!("predicted {predicted:.0} kbit/s over the rate: quality {q} -> {to}"));
        }
        let to = (rate * 1000.0 / 8.0 / bytes_per_frame).clamp(1.0, fps_cap);
        if self.cfg.allow_downscale && !half && to < 0.6 * fps_cap {
            self.set(Setting { quality: q, fps: fps_cap, half: true });
            return Some(format!("quality at its minimum {q} and fps would fall to {to:.1}: half size"));
        }
        if (to - self.setting.fps).abs() >= 0.1 {
            self.set(Setting { fps: to, ..self.setting });
            return Some(format!("quality at its minimum {q}: fps {fps:.1} -> {to:.1}"));
        }
        None
    }

    /// Under the rate with room: the frame rate back first, then full size, then quality up.
    fn fit_under(&mut self, Fit { rate, predicted, fps, fps_cap }: Fit) -> Option<String> {
        let Setting { quality: q, half, .. } = self.setting;
        let bytes_per_frame = self.sizes[memo_index(q, half)].bytes;
        if self.setting.fps < fps_cap - 0.05 {
            let to = (rate * 1000.0 / 8.0 / bytes_per_frame).min(fps_cap);
            if to > self.setting.fps + 0.05 {
                self.set(Setting { fps: to, ..self.setting });
                return Some(format!("room: fps {fps:.1} -> {to:.1}"));
            }
            return None;
        }
        if half {
            // Back to full size at the lowest quality if that fits at the full rate: a full
            // frame is about 3.5 half frames when its size is not remembered.
            let full = self.predicted_kbps(self.cfg.min_quality, false, fps_cap).unwrap_or(
                self.sizes[memo_index(self.cfg.min_quality.max(q), true)].bytes * 3.5 * 8.0 * fps_cap / 1000.0,
            );
            if full < rate * 0.9 {
                self.set(Setting { quality: self.cfg.min_quality, fps: fps_cap, half: false });
                return Some(format!("full size at quality {} predicted {full:.0} kbit/s: fits", self.cfg.min_quality));
            }
        }
        if q < self.ceiling {
            let step = if predicted < rate * 0.7 { 2 } else { 1 };
            let to = (q + step).min(self.ceiling);
            if let Some(next) = self.predicted_kbps(to, half, fps) {
                if next > rate * 1.02 {
                    return None; // the next step was seen to be too big
                }
            }
            self.set(Setting { quality: to, ..self.setting });
            return Some(format!("predicted {predicted:.0} kbit/s leaves room: quality {q} -> {to}"));
        }
        None
    }

    fn set(&mut self, s: Setting) {
        if s.quality != self.setting.quality || s.half != self.setting.half {
            self.frames_at_quality = 0;
        }
        self.setting = s;
    }

    /// Applies a viewer's request for a quality (`SetQuality`): it becomes the highest quality
    /// the controller may choose, within the operator's `--min-quality`/`--max-quality`.
    /// Returns what changed, for the log.
    pub fn request_quality(&mut self, quality: u8) -> String {
        let q = quality.clamp(self.cfg.min_quality, self.cfg.max_quality);
        self.ceiling = q;
        if self.setting.quality > q {
            self.set(Setting { quality: q, ..self.setting });
        }
        format!("viewer set the quality ceiling to {q}")
    }

    /// Scales the bit-rate target by 1.25^`steps` (a viewer's key); with no target, moves the
    /// quality ceiling by 5 per step. Returns what changed, for the log.
    pub fn step(&mut self, steps: i8) -> String {
        match self.cfg.target_kbps {
            Some(t) => {
                let to = (f64::from(t) * 1.25f64.powi(i32::from(steps))).clamp(16.0, 1_000_000.0) as u32;
                self.cfg.target_kbps = Some(to);
                format!("viewer moved the target from {t} to {to} kbit/s")
            }
            None => {
                let to = (i32::from(self.ceiling) + 5 * i32::from(steps)).clamp(1, 100) as u8;
                self.request_quality(to)
            }
        }
    }

    /// A viewer connected: what was measured on another connection (acknowledgement timing,
    /// the latency-based rate, a viewer's quality ceiling) does not describe this one.
    pub fn on_new_link(&mut self) {
        self.acked.clear();
        self.congested.clear();
        self.last_ack = None;
        self.ack_gap_us = 0.0;
        self.hold_until = 0;
        self.latency_rate = None;
        self.trouble_kbps = None;
        self.in_flight = 0;
        self.ceiling = self.cfg.max_quality;
    }

    /// The source's frames cannot be halved (a camera's MJPEG): size is no longer a choice.
    pub fn downscale_unavailable(&mut self) {
        self.cfg.allow_downscale = false;
        if self.setting.half {
            self.set(Setting { half: false, ..self.setting });
        }
    }
}

fn memo_index(quality: u8, half: bool) -> usize {
    usize::from(half) * 101 + usize::from(quality.min(100))
}

/// 95th percentile of `values` (nearest rank), or `None` when there are fewer than 3.
fn p95(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut v: Vec<u64> = values.collect();
    if v.len() < 3 {
        return None;
    }
    v.sort_unstable();
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG whose size falls ~4 % per quality step below 100, like a natural scene.
    fn size_at(quality: u8, scale: f64) -> u64 {
        (scale * 1.04f64.powi(i32::from(quality) - 100)) as u64
    }

    /// A bottleneck link: a FIFO drained at `kbps`, plus a fixed one-way `delay_us`; frames are
    /// acknowledged when they have crossed it and the ack has come back.
    struct Link {
        kbps: f64,
        delay_us: u64,
        busy_until: u64,
        in_flight: VecDeque<(u64, u64, u64)>, // (ack time, bytes, capture time)
        /// Every 10 s nothing crosses for this long (a Wi-Fi stall).
        stall_us: u64,
    }

    impl Link {
        fn send(&mut self, now: u64, bytes: u64) {
            let tx = (bytes as f64 * 8.0 / self.kbps * 1000.0) as u64;
            self.busy_until = self.busy_until.max(now) + tx;
            self.in_flight.push_back((self.busy_until + 2 * self.delay_us, bytes, now));
        }
    }

    struct Run {
        qualities: Vec<u8>,
        fps: Vec<f64>,
        sent_bytes: Vec<(u64, u64)>,
        latencies: Vec<(u64, u64)>,
    }

    /// Drives the controller for `secs` at `fps` against `link`, with at most `window` frames
    /// unacknowledged (more are dropped as congestion).
    fn simulate(cfg: ControlConfig, link: &mut Link, scale: f64, secs: u64, window: usize) -> Run {
        let mut c = Controller::new(cfg.clone(), 75);
        let period = 1_000_000 / u64::from(cfg.fps);
        let mut run = Run { qualities: vec![], fps: vec![], sent_bytes: vec![], latencies: vec![] };
        let mut now = 0;
        while now < secs * 1_000_000 {
            while link.in_flight.front().is_some_and(|f| f.0 <= now) {
                let (at, bytes, cap) = link.in_flight.pop_front().unwrap();
                c.on_acked(at, bytes, cap, false);
                run.latencies.push((at, at - cap));
            }
            if link.stall_us > 0 && now % 10_000_000 < period {
                link.busy_until = link.busy_until.max(now) + link.stall_us;
            }
            if c.admit(now) {
                let s = c.setting();
                let bytes = size_at(s.quality, scale) / if s.half { 4 } else { 1 };
                c.on_encoded(now, bytes, s.quality, s.half);
                if link.in_flight.len() >= window {
                    c.on_congestion_drop(now);
                } else {
                    link.send(now, bytes);
                    run.sent_bytes.push((now, bytes));
                }
            }
            if let Some(d) = c.tick(now) {
                tracing::debug!(t_s = now as f64 / 1e6, decision = %d, status = ?c.status(), "controller decision");
            }
            run.qualities.push(c.setting().quality);
            run.fps.push(c.setting().fps);
            now += period;
        }
        run
    }

    fn kbps_between(run: &Run, from_s: u64, to_s: u64) -> f64 {
        let bytes: u64 =
            run.sent_bytes.iter().filter(|(t, _)| *t >= from_s * 1_000_000 && *t < to_s * 1_000_000).map(|b| b.1).sum();
        bytes as f64 * 8.0 / 1000.0 / (to_s - from_s) as f64
    }

    fn cfg(target: Option<u32>, latency: Option<u32>) -> ControlConfig {
        ControlConfig {
            target_kbps: target,
            max_latency_ms: latency,
            min_quality: 10,
            max_quality: 95,
            fps: 30,
            allow_downscale: false,
        }
    }

    #[test]
    fn target_is_met_within_ten_percent_and_quality_settles() {
        let mut link =
            Link { kbps: 20_000.0, delay_us: 20_000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 0 };
        // q75 is ~60 KB: 14 Mbit/s at 30 fps, far over the 4 Mbit/s target.
        let run = simulate(cfg(Some(4000), None), &mut link, 135_000.0, 30, 8);
        let kbps = kbps_between(&run, 5, 30);
        assert!((kbps - 4000.0).abs() < 400.0, "mean {kbps:.0} kbit/s after 5 s");
        let late = &run.qualities[run.qualities.len() - 300..];
        let (lo, hi) = (late.iter().min().unwrap(), late.iter().max().unwrap());
        assert!(hi - lo <= 3, "quality wandered {lo}..{hi} in the last 10 s");
        assert!(run.fps.iter().rev().take(300).all(|f| (*f - 30.0).abs() < 0.01), "fps stays at 30");
    }

    #[test]
    fn at_minimum_quality_the_frame_rate_goes_down_instead() {
        let mut link =
            Link { kbps: 20_000.0, delay_us: 20_000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 0 };
        // Even quality 10 is ~19 KB a frame (4.6 Mbit/s at 30 fps), as the test pattern is.
        let run = simulate(cfg(Some(2000), None), &mut link, 19_000.0 * 1.04f64.powi(90), 30, 8);
        assert_eq!(*run.qualities.last().unwrap(), 10);
        let fps = *run.fps.last().unwrap();
        assert!((11.0..=15.0).contains(&fps), "fps {fps} for 2000 kbit/s of 19 KB frames");
        let kbps = kbps_between(&run, 5, 30);
        assert!((kbps - 2000.0).abs() < 200.0, "mean {kbps:.0} kbit/s");
    }

    #[test]
    fn with_downscale_allowed_size_goes_before_the_frame_rate() {
        let mut link =
            Link { kbps: 20_000.0, delay_us: 20_000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 0 };
        let mut c = cfg(Some(2000), None);
        c.allow_downscale = true;
        let scale = 19_000.0 * 1.04f64.powi(90); // quality 10 is 19 KB at full size, as above
        let run = simulate(c, &mut link, scale, 30, 8);
        assert!(run.fps.iter().rev().take(300).all(|f| *f > 29.0), "fps kept at half size");
        let kbps = kbps_between(&run, 10, 30);
        assert!((kbps - 2000.0).abs() < 200.0, "mean {kbps:.0} kbit/s");
        let q = *run.qualities.last().unwrap();
        assert!(q > 20, "quality climbs at half size: {q}");
    }

    #[test]
    fn latency_budget_finds_the_link_rate_and_stays_under_it() {
        let mut link = Link { kbps: 5000.0, delay_us: 20_000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 0 };
        let run = simulate(cfg(None, Some(150)), &mut link, 135_000.0, 60, 3);
        let late: Vec<u64> = run.latencies.iter().filter(|l| l.0 > 10_000_000).map(|l| l.1).collect();
        let p95 = p95(late.iter().copied()).unwrap();
        assert!(p95 < 150_000, "p95 {} ms after warm-up", p95 / 1000);
        let kbps = kbps_between(&run, 10, 60);
        assert!(kbps > 3000.0 && kbps < 5000.0, "uses most of the 5 Mbit/s link: {kbps:.0} kbit/s");
    }

    #[test]
    fn a_udp_link_rate_caps_the_allowed_rate_while_it_is_fresh() {
        let mut c = Controller::new(cfg(Some(8000), None), 75);
        let mut now = 0;
        while now < 5_000_000 {
            if c.admit(now) {
                let q = c.setting().quality;
                c.on_encoded(now, size_at(q, 135_000.0), q, false);
            }
            // A receipt's worth of link rate every few frames.
            if (now / 33_333) % 8 == 0 {
                c.on_link_rate(now, 2_000_000);
            }
            c.tick(now);
            now += 33_333;
        }
        assert!(c.status().rate_kbps <= 1800.0, "allowed {} kbit/s on a 2 Mbit/s link", c.status().rate_kbps);
        // Two seconds without a report: the target alone again.
        while now < 8_000_000 {
            c.tick(now);
            now += 33_333;
        }
        assert_eq!(c.status().rate_kbps, 8000.0);
    }

    #[test]
    fn frames_that_waited_for_loss_recovery_do_not_cut_the_rate() {
        // 30 fps acknowledged 60 ms after capture; from 3 s on, every other frame is
        // acknowledged 250 ms after capture (it waited for a retransmission).
        let run = |marked: bool| {
            let mut c = Controller::new(cfg(None, Some(150)), 50);
            let (period, mut now) = (33_333, 0);
            let mut acks: Vec<(u64, u64, bool)> = Vec::new(); // (ack time, capture time, waited)
            let mut n = 0u64;
            while now < 8_000_000 {
                acks.sort_unstable();
                while acks.first().is_some_and(|a| a.0 <= now) {
                    let (at, cap, waited) = acks.remove(0);
                    c.on_acked(at, 5_000, cap, waited);
                }
                if c.admit(now) {
                    let s = c.setting();
                    c.on_encoded(now, size_at(s.quality, 20_000.0), s.quality, s.half);
                    n += 1;
                    let slow = now >= 3_000_000 && n % 2 == 0;
                    acks.push((now + if slow { 250_000 } else { 60_000 }, now, slow && marked));
                }
                c.tick(now);
                now += period;
            }
            c.status()
        };
        let (marked, unmarked) = (run(true), run(false));
        assert_eq!(marked.quality, 95, "nothing limits: {marked:?}");
        assert!(marked.latency_p95_ms.is_some_and(|l| l < 100.0), "{marked:?}");
        assert!(unmarked.quality < 80, "the same latencies unmarked cut the rate: {unmarked:?}");
    }

    #[test]
    fn a_stall_is_not_taken_for_a_slower_link() {
        let mut link =
            Link { kbps: 5000.0, delay_us: 20_000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 500_000 };
        let run = simulate(cfg(None, Some(150)), &mut link, 135_000.0, 60, 3);
        let kbps = kbps_between(&run, 10, 60);
        assert!(kbps > 3500.0, "stalls every 10 s cut the rate to {kbps:.0} kbit/s on a 5 Mbit/s link");
    }

    #[test]
    fn without_a_limit_quality_goes_to_the_maximum() {
        let mut link = Link { kbps: 100_000.0, delay_us: 1000, busy_until: 0, in_flight: VecDeque::new(), stall_us: 0 };
        let run = simulate(cfg(None, Some(500)), &mut link, 50_000.0, 10, 1000);
        assert_eq!(*run.qualities.last().unwrap(), 95);
    }

    #[test]
    fn viewer_requests() {
        let mut c = Controller::new(cfg(Some(4000), None), 75);
        assert!(c.step(1).contains("5000"));
        assert_eq!(c.cfg.target_kbps, Some(5000));
        c.request_quality(50);
        assert_eq!((c.setting().quality, c.ceiling), (50, 50));
        // A viewer cannot go below the operator's --min-quality, nor move it.
        c.request_quality(5);
        assert_eq!((c.ceiling, c.cfg.min_quality, c.cfg.max_quality), (10, 10, 95));
        c.on_new_link();
        assert_eq!(c.ceiling, 95, "a new viewer starts from the operator's limits");
        let mut c = Controller::new(cfg(None, Some(100)), 75);
        c.step(-1);
        assert_eq!(c.ceiling, 90);
        c.step(5);
        assert_eq!(c.ceiling, 95, "clamped to --max-quality");
    }

    #[test]
    fn a_source_that_cannot_be_halved_turns_downscale_off() {
        let mut c = Controller::new(ControlConfig { allow_downscale: true, ..cfg(Some(1000), None) }, 10);
        c.set(Setting { half: true, ..c.setting() });
        c.downscale_unavailable();
        assert!(!c.setting().half && !c.cfg.allow_downscale);
    }

    #[test]
    fn admit_spreads_skipped_frames_evenly() {
        let mut c = Controller::new(cfg(Some(1000), None), 10);
        c.setting.fps = 15.0;
        let admitted: Vec<bool> = (0..30u64).map(|i| c.admit(i * 33_333)).collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 15);
        assert!(admitted.windows(2).all(|w| w[0] != w[1]), "every other frame: {admitted:?}");
    }

    #[test]
    fn p95_by_nearest_rank() {
        assert_eq!(p95([1, 2].into_iter()), None);
        assert_eq!(p95(1..=100), Some(95));
        assert_eq!(p95([5, 1, 3].into_iter()), Some(5));
    }
}
