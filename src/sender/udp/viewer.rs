//! One UDP viewer's thread (`udp-PEER`): it takes frames from the viewer's hub slot, cuts each
//! into RTP/JPEG packets (the shared [`FrameCache`], so a frame is packetised once for every
//! RTP viewer) with parity sized to the loss the viewer reports, and sends them through a
//! pacer at the rate its [`RateControl`] allows. It owns the viewer's RTP stream and
//! retransmission store ([`Outgoing`]), its pacer, its rate control and the sealing half of
//! its keys; `udp-tx` hands it what the viewer sends as [`FromViewer`] events.
//!
//! - Retransmissions (on NACK) go first, through the same pacer: a NACK flood gets no more
//!   than the link rate, and each packet is resent at most once per round trip.
//! - A frame gate keeps the average at the rate: a new frame is taken only while the bits
//!   sent stay within the rate (plus [`GATE_DEPTH_US`] of it); its packets then leave at the
//!   pace (twice the rate, and never spread over more than [`FRAME_SEND_US`]), near the
//!   link's speed, so that a frame does not wait in the pacer.
//! - Newest frame wins: while a frame is being sent or waits for the gate, newer ones replace each other in the hub
//!   slot (counted as the link's drops, `socket_busy`). A frame once cut into packets is sent
//!   whole: its packets have sequence numbers, and dropping some would look like loss to the
//!   viewer (NACKs, retransmissions, and a rate control backing off from loss that never
//!   happened: tried, and on a 5 Mbit/s link it drove the rate to its floor).
//! - Acknowledgements of shown frames feed the encoder's rate controller as over TCP; while the
//!   pacer falls behind the stream, the link's rate caps it too, so that quality follows the
//!   link.
//!
//! It ends when `udp-tx` drops its events (the viewer left, went silent or restarted), or when
//! the stream ends (after sending what is queued and a `Bye`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver, TryRecvError};
use tracing::debug;

use super::{FromViewer, UdpOptions};
use crate::clock::now_us;
use crate::hub::{Shared, Subscription, UdpFigures};
use crate::net::proto::{Message, StreamInfo};
use crate::net::udp::cc::{Pacer, RateControl, PACE_FACTOR};
use crate::net::udp::fec;
use crate::net::udp::link::Link;
use crate::net::udp::media::{FrameInfo, Outgoing, FEC_PAYLOAD_TYPE};
use crate::net::udp::wire::{Inner, Receipt};
use crate::rtp::packetize::RtpStream;
use crate::sender::encode::Feedback;
use crate::sender::rtsp::FrameCache;
use crate::sender::transport::Feed;

/// How often the thread looks at its inputs when idle.
const POLL: Duration = Duration::from_millis(50);
/// How long the last queued packets may take once the stream has ended.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes of recent packets kept for retransmission.
const STORE_BYTES: usize = 4 << 20;
/// How long a frame's packets are kept for retransmission, µs.
const STORE_US: u64 = 1_000_000;
/// Retransmissions queued at most (a NACK flood queues no more).
const MAX_RETX: usize = 512;
/// The rate control's bounds and start, bit/s. The start is low and grows fast (doubling in
/// a few hundred ms while receipts show it delivered): started at 8 Mbit/s, a 5 Mbit/s link
/// lost a quarter of the packets in the first seconds.
const START_BPS: u64 = 2_000_000;
const MIN_BPS: u64 = 200_000;
const MAX_BPS: u64 = 1_000_000_000;
/// The pacer's burst allowance: two full datagrams.
const BURST: usize = 2 * crate::net::udp::MAX_DATAGRAM;
/// How long after the pacer last fell behind the link's rate still caps the encoder, µs.
const BEHIND_US: u64 = 2_000_000;
/// The longest a frame's packets are spread over, µs: paced slower, a frame would miss the
/// viewer's deadline (and its NACKs would cost more), so the next frames wait in the hub slot
/// instead, and the frame rate is what falls. (With the rate control at its floor of 200
/// kbit/s, a 20 KB frame took 800 ms: every frame was lost, and the stream never recovered.
/// At 50 ms, a 20 KB frame of 1280x720 took 50 ms whatever the link, which kept the
/// capture-to-display latency near 0.6 of a 150 ms budget and the encoder from growing.)
/// The average stays at the rate all the same: the next frame waits for the frame gate.
const FRAME_SEND_US: u64 = 20_000;
/// The frame gate's depth, µs of the rate: frames are taken while the bits sent stay within
/// the rate over time plus this much, so a bigger frame now and then goes at once and the
/// pace (twice the rate or more) never turns into an average above the rate.
const GATE_DEPTH_US: u64 = 100_000;
/// Loss after recovery (1/10000) from which the link's rate caps the encoder.
const RESIDUAL_LOSS_BP: u16 = 300;
/// Round trip assumed before the first measurement, µs.
const DEFAULT_RTT_US: u64 = 100_000;

/// A frame sent and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u64,
    send_us: u64,
    capture_us: u64,
    bytes: u64,
}

/// The viewer's thread state (see the module docs).
pub(super) struct Viewer {
    feed: Feed,
    opts: UdpOptions,
    cache: Arc<FrameCache>,
    link: Link,
    sub: Subscription,
    events: Receiver<FromViewer>,
    out: Outgoing,
    pacer: Pacer,
    rate: RateControl,
    /// Packets of the frame being sent, in order.
    queue: VecDeque<Vec<u8>>,
    /// Retransmissions, sent before the queue.
    retx: VecDeque<Vec<u8>>,
    /// The highest extended sequence number sent.
    ext_seq: Option<u32>,
    in_flight: VecDeque<Sent>,
    /// When the pacer last fell behind the stream (a frame still unsent when the next came).
    behind_us: Option<u64>,
    /// The pace that sends the current frame within [`FRAME_SEND_US`], bit/s.
    frame_floor_bps: u64,
    /// The frame gate: bits of credit at `credit_at` µs (negative after a frame bigger than
    /// the credit); a frame is taken only with a credit of zero or more.
    credit_bits: f64,
    credit_at: u64,
    /// The newest frame sent (acknowledgements of later ones are bogus).
    newest_frame: Option<u64>,
    loss_bp: u16,
    last_receipt: Option<Receipt>,
    announced: (u32, u32),
    /// When the latest NACK arrived: a frame sent before it and acknowledged after it may
    /// have waited for a retransmission (see [`Feedback::Acked`]).
    last_nack_us: Option<u64>,
}

impl Viewer {
    pub fn new(
        feed: Feed,
        opts: UdpOptions,
        cache: Arc<FrameCache>,
        link: Link,
        sub: Subscription,
        events: Receiver<FromViewer>,
        budget_us: Option<u64>,
    ) -> Self {
        Viewer {
            opts,
            cache,
            link,
            sub,
            events,
            out: Outgoing::new(RtpStream::random(), STORE_BYTES),
            pacer: Pacer::new((START_BPS as f64 * PACE_FACTOR) as u64, BURST),
            rate: {
                let mut r = RateControl::new(START_BPS, MIN_BPS, MAX_BPS);
                r.set_latency_budget(budget_us);
                r
            },
            queue: VecDeque::new(),
            retx: VecDeque::new(),
            ext_seq: None,
            in_flight: VecDeque::new(),
            newest_frame: None,
            frame_floor_bps: 0,
            credit_bits: START_BPS as f64 * GATE_DEPTH_US as f64 / 1e6,
            credit_at: now_us(),
            behind_us: None,
            loss_bp: 0,
            last_receipt: None,
            announced: (0, 0),
            last_nack_us: None,
            feed,
        }
    }

    /// Streams to the viewer until its session ends or the stream does.
    pub fn run(mut self) -> anyhow::Result<()> {
        self.announce(self.feed.stream);
        let frames: Receiver<Shared> = (*self.sub.rx).clone();
        let mut finishing: Option<Instant> = None;
        loop {
            loop {
                match self.events.try_recv() {
                    Ok(ev) => self.on_event(ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if finishing.is_none() && !self.take_frame(&frames) {
                finishing = Some(Instant::now());
            }
            if let Some(t) = finishing {
                if (self.queue.is_empty() && self.retx.is_empty()) || t.elapsed() > LINGER {
                    let _ = self.link.send(&Inner::Bye);
                    return Ok(());
                }
            }
            let wait = self.pump();
            let gate = self.gate_wait_us(now_us());
            let idle = wait.is_none() && finishing.is_none() && gate.is_none();
            let slot = if idle { &frames } else { &never() };
            let timeout = wait.or(gate).map_or(POLL, |us| Duration::from_micros(us).min(POLL));
            select! {
                recv(self.events) -> ev => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => return Ok(()),
                },
                recv(slot) -> f => match f {
                    Ok(f) => self.queue_frame(&f),
                    Err(_) => finishing = finishing.or(Some(Instant::now())),
                },
                default(timeout) => {}
            }
        }
    }

    /// Takes the newest frame once the frame being sent is out. False once the stream has
    /// ended.
    fn take_frame(&mut self, frames: &Receiver<Shared>) -> bool {
        if !self.queue.is_empty() || self.gate_wait_us(now_us()).is_some() {
            if !frames.is_empty() {
                // A newer frame waits while this one is still being paced out.
                self.behind_us = Some(now_us());
            }
            return true;
        }
        match frames.try_recv() {
            Ok(f) => {
                self.queue_frame(&f);
                true
            }
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Disconnected) => false,
        }
    }

    /// Packetises a frame and queues its packets (the queue is empty).
    fn queue_frame(&mut self, frame: &Shared) {
        let Ok(packets) = self.cache.get(frame) else { return };
        let h = frame.header;
        let size = (u32::from(h.width), u32::from(h.height));
        if size != self.announced {
            self.announce(StreamInfo { width: size.0, height: size.1, ..self.feed.stream });
        }
        let now = now_us();
        let info = FrameInfo {
            seq: h.seq,
            capture_us: h.capture_us,
            encode_start_us: h.encode_start_us,
            encode_end_us: h.encode_end_us,
            send_us: now,
            quality: h.quality,
        };
        let data = packets.len().min(fec::MAX_GROUP_DATA);
        let parity = if self.opts.fec { fec::parity_for(data, self.loss_bp) } else { 0 };
        self.queue.extend(self.out.frame(&packets, &info, parity, now, now + STORE_US));
        let bits = self.queue.iter().map(|p| p.len() as u64 * 8).sum::<u64>();
        self.frame_floor_bps = bits * 1_000_000 / FRAME_SEND_US;
        self.credit_bits = self.credit(now) - bits as f64;
        self.credit_at = now;
        self.pace();
        self.newest_frame = Some(h.seq);
        let len = frame.jpeg.as_slice().len() as u64;
        self.feed.sent_captured(&self.sub, len, h.capture_us);
        if self.in_flight.len() >= 256 {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back(Sent { seq: h.seq, send_us: now, capture_us: h.capture_us, bytes: len });
        self.feed.feedback(Feedback::InFlight(self.in_flight.len()));
    }

    /// The frame gate's credit at `now`, bits: it grows at the rate, up to [`GATE_DEPTH_US`]
    /// of it.
    fn credit(&self, now: u64) -> f64 {
        let rate = self.rate.estimate().rate_bps as f64;
        let grown = self.credit_bits + now.saturating_sub(self.credit_at) as f64 * rate / 1e6;
        grown.min(rate * GATE_DEPTH_US as f64 / 1e6)
    }

    /// How long (µs) until the gate lets the next frame in, `None` when it does now.
    fn gate_wait_us(&self, now: u64) -> Option<u64> {
        let c = self.credit(now);
        let rate = self.rate.estimate().rate_bps.max(1) as f64;
        (c < 0.0).then(|| ((-c * 1e6 / rate).ceil() as u64).max(1))
    }

    /// Sets the pacer: the rate control's pace, but never so slow that the frame being sent
    /// takes more than [`FRAME_SEND_US`] (frames are skipped instead, in the hub slot).
    fn pace(&mut self) {
        let pace = self.rate.estimate().pace_bps.max(self.frame_floor_bps);
        self.pacer.set_rate(pace);
    }

    /// Tells the viewer the frame size.
    fn announce(&mut self, s: StreamInfo) {
        self.announced = (s.width, s.height);
        if let Err(e) = self.link.send_message(&Message::StreamInfo(s)) {
            debug!(error = %e, "cannot send the stream's size");
        }
    }

    /// Sends what the pacer allows now: retransmissions first. Returns how long (µs) until
    /// the next packet may go, or `None` when nothing is queued.
    fn pump(&mut self) -> Option<u64> {
        loop {
            let (pkt, retx) = match (self.retx.front(), self.queue.front()) {
                (Some(p), _) => (p, true),
                (None, Some(p)) => (p, false),
                (None, None) => return None,
            };
            let now = now_us();
            let wait = self.pacer.wait_us(pkt.len(), now);
            if wait > 0 {
                return Some(wait);
            }
            let pkt = if retx { self.retx.pop_front() } else { self.queue.pop_front() }.unwrap_or_default();
            self.send_packet(&pkt, retx, now);
        }
    }

    fn send_packet(&mut self, pkt: &[u8], retx: bool, now: u64) {
        let len = match self.link.send(&Inner::Media(pkt)) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "cannot send a packet");
                pkt.len()
            }
        };
        self.pacer.sent(len, now);
        let parity = pkt.get(1).is_some_and(|b| b & 0x7f == FEC_PAYLOAD_TYPE);
        if retx {
            self.feed.meter.update(|c| c.udp.retransmitted += 1);
            return;
        }
        if pkt.len() >= 4 {
            let seq = extend_seq(self.ext_seq, u16::from_be_bytes([pkt[2], pkt[3]]));
            self.ext_seq = Some(self.ext_seq.map_or(seq, |s| s.max(seq)));
            self.rate.on_sent(seq, len, now);
        }
        let n = pkt.len() as u64;
        self.feed.meter.update(|c| if parity { c.udp.fec_bytes += n } else { c.udp.media_bytes += n });
    }

    fn on_event(&mut self, ev: FromViewer) {
        match ev {
            FromViewer::Nack(runs) => self.on_nack(&runs),
            FromViewer::Receipt(r, at_us) => self.on_receipt(&r, at_us),
            FromViewer::Ack { seq, at_us } => self.on_ack(seq, at_us),
            FromViewer::Ping(mut pong) => {
                pong.t3_us = now_us();
                if let Err(e) = self.link.send_message(&Message::Pong(pong)) {
                    debug!(error = %e, "cannot answer a clock-sync ping");
                }
            }
            FromViewer::Request(r) => {
                let _ = self.feed.requests.try_send(r);
            }
            FromViewer::Report(r) => self.feed.meter.update(|c| c.viewer = Some(r.clone())),
        }
    }

    /// Queues what a NACK asks for and the store still holds (at most once per round trip per
    /// packet, at most [`MAX_RETX`] waiting).
    fn on_nack(&mut self, runs: &[(u16, u16)]) {
        if !runs.is_empty() {
            self.last_nack_us = Some(now_us());
        }
        let rtt = self.rate.estimate().rtt_us.unwrap_or(DEFAULT_RTT_US);
        let room = MAX_RETX.saturating_sub(self.retx.len());
        let packets = self.out.retransmit(runs, now_us(), rtt);
        self.retx.extend(packets.into_iter().take(room));
    }

    fn on_receipt(&mut self, r: &Receipt, at_us: u64) {
        if self.ext_seq.is_none_or(|s| r.highest_seq > s) {
            debug!(claimed = r.highest_seq, sent = ?self.ext_seq, "ignored a receipt for packets never sent");
            self.feed.meter.update(|c| c.udp.ignored += 1);
            return;
        }
        // The credit so far at the old rate, then the new one.
        let now = now_us();
        (self.credit_bits, self.credit_at) = (self.credit(now), now);
        self.rate.on_receipt(r, at_us);
        let est = self.rate.estimate();
        self.pace();
        self.loss_bp = r.loss_bp;
        let prev = self.last_receipt.unwrap_or_default();
        let (lost, recovered) = (r.lost.saturating_sub(prev.lost), r.recovered.saturating_sub(prev.recovered));
        self.last_receipt = Some(*r);
        self.feed.meter.update(|c| {
            c.udp.packets_lost += lost;
            c.udp.fec_recovered += recovered;
        });
        let figures = UdpFigures {
            rate_kbps: est.rate_bps as f64 / 1000.0,
            delivered_kbps: est.delivered_bps as f64 / 1000.0,
            rtt_ms: est.rtt_us.map(|us| us as f64 / 1000.0),
            loss_pct: f64::from(r.loss_bp) / 100.0,
        };
        *self.sub.counters.udp.lock().unwrap_or_else(|p| p.into_inner()) = Some(figures);
        // The encoder's controller follows acknowledgements and latency as over TCP; only
        // while the pacer falls behind the stream and the viewer loses what recovery cannot
        // bring back does the link's rate cap it too. (Capped whenever the pacer fell behind,
        // 1280x720 on a 5 Mbit/s link without loss showed 19.6 fps instead of 26.1: the rate
        // control's estimate is more cautious than the acknowledgements.)
        let losing = est.residual_loss_bp >= RESIDUAL_LOSS_BP;
        if losing && self.behind_us.is_some_and(|t| at_us < t + BEHIND_US) {
            self.feed.feedback(Feedback::LinkRate { at_us, bps: est.rate_bps });
        }
    }

    /// An acknowledgement of a shown frame: it and the frames before it are no longer in
    /// flight.
    fn on_ack(&mut self, seq: u64, at_us: u64) {
        if self.newest_frame.is_none_or(|n| seq > n) {
            debug!(seq, newest = ?self.newest_frame, "ignored an acknowledgement of a frame never sent");
            self.feed.meter.update(|c| c.udp.ignored += 1);
            return;
        }
        let (mut matched, mut bytes) = (None, 0);
        while let Some(s) = self.in_flight.front().copied().filter(|s| s.seq <= seq) {
            self.in_flight.pop_front();
            bytes += s.bytes;
            if s.seq == seq {
                matched = Some(s);
            }
        }
        if let Some(s) = matched {
            self.feed.meter.update(|c| {
                let _ = c.ack_rtt.record(at_us.saturating_sub(s.send_us).max(1));
            });
            let waited_for_loss = self.last_nack_us.is_some_and(|t| t >= s.send_us);
            self.feed.feedback(Feedback::Acked { at_us, bytes, capture_us: s.capture_us, waited_for_loss });
        }
    }
}

/// The 32-bit extension of RTP sequence number `seq`: the value nearest the last one.
fn extend_seq(last: Option<u32>, seq: u16) -> u32 {
    let Some(last) = last else { return u32::from(seq) };
    let base = last & !0xffff;
    let candidates = [base.wrapping_sub(0x10000), base, base.wrapping_add(0x10000)];
    candidates.into_iter().map(|b| b | u32::from(seq)).min_by_key(|c| c.abs_diff(last)).unwrap_or(u32::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_the_wrap() {
        assert_eq!(extend_seq(None, 5), 5);
        assert_eq!(extend_seq(Some(65_535), 0), 65_536);
        assert_eq!(extend_seq(Some(65_536), 65_535), 65_535);
        assert_eq!(extend_seq(Some(3 * 65_536 + 10), 12), 3 * 65_536 + 12);
        assert_eq!(extend_seq(Some(3 * 65_536 + 2), 65_530), 2 * 65_536 + 65_530);
    }
}
