//! The sender's fan-out: each encoded frame is published once to every viewer, native or
//! HTTP, through a newest-frame-wins slot of its own. A slow or stalled viewer loses frames
//! in its own slot and never slows the encoder or the other viewers.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::chan::{latest, LatestReceiver, LatestSender, Pushed};
use crate::clock::now_us;
use crate::codec::JpegBuf;
use crate::net::FrameHeader;
use crate::stats::{DropCause, Meter};

/// An encoded frame, shared by every viewer that sends it.
#[derive(Debug, Default)]
pub struct EncodedFrame {
    /// Per-frame metadata; `send_us` is filled in by each viewer's writer.
    pub header: FrameHeader,
    pub jpeg: JpegBuf,
}

pub type Shared = Arc<EncodedFrame>;

/// A new viewer is sent the newest frame at once if it was captured this recently, µs.
const FRESH_US: u64 = 50_000;

/// How a viewer watches: the name of its transport ("native" for the framecast protocol,
/// "http" for MJPEG and snapshots), as the `links` stats show it. Each transport defines its
/// own (`sender::native::KIND`), so a new transport adds no variant here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ViewerKind(Cow<'static, str>);

impl ViewerKind {
    pub const fn new(name: &'static str) -> Self {
        ViewerKind(Cow::Borrowed(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ViewerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counters of one viewer's link, updated by its writer (frames, bytes) and by the hub
/// (drops).
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub drops: AtomicU64,
    /// Set by a native viewer's writer while it waits for acknowledgements (its window of
    /// unacknowledged frames is full): frames replaced meanwhile count as `congestion`.
    pub congested: AtomicBool,
    /// What the viewer's last RTCP receiver report said (RTP links only).
    pub rtcp: Mutex<Option<RtcpFigures>>,
    /// What the UDP transport's rate control last saw of the viewer's link (UDP links only).
    pub udp: Mutex<Option<UdpFigures>>,
}

/// A UDP viewer's link as its sender measures it (`links[].udp` in the stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpFigures {
    /// The rate the sender paces at, kbit/s.
    pub rate_kbps: f64,
    /// What the viewer's receipts show delivered, kbit/s.
    pub delivered_kbps: f64,
    /// Round trip from receipts, ms (absent before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Loss on arrival the viewer reports (before FEC and retransmission), percent.
    pub loss_pct: f64,
}

/// An RTP viewer's own view of its link, from its RTCP receiver reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RtcpFigures {
    /// Packets lost since the previous report, percent (the report's fraction lost).
    pub loss_pct: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
}

/// One viewer's link, as the stats report it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    pub id: u64,
    pub kind: ViewerKind,
    pub peer: String,
    /// Seconds since the viewer joined.
    pub seconds: f64,
    pub frames: u64,
    pub bytes: u64,
    /// Frames this viewer lost because it had not taken the previous one yet.
    pub drops: u64,
    /// RTP viewers that send RTCP receiver reports: the last report's packet loss, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_loss_pct: Option<f64>,
    /// And its interarrival jitter, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_jitter_ms: Option<f64>,
    /// UDP viewers: the link as the sender's rate control sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpFigures>,
}

struct Slot {
    id: u64,
    kind: ViewerKind,
    peer: String,
    joined: Instant,
    tx: Arc<LatestSender<Shared>>,
    counters: Arc<LinkCounters>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    slots: Vec<Slot>,
    latest: Option<Shared>,
    closed: bool,
}

/// A viewer's end of the hub. Dropping it leaves the hub.
pub struct Subscription {
    pub id: u64,
    pub rx: LatestReceiver<Shared>,
    pub counters: Arc<LinkCounters>,
}

/// Where encoded frames are published.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins a viewer. After [`close`](Hub::close) the subscription is already disconnected.
    pub fn subscribe(&self, kind: ViewerKind, peer: String) -> Subscription {
        let (tx, rx) = latest(1);
        let counters = Arc::new(LinkCounters::default());
        let mut g = self.lock();
        g.next_id += 1;
        let id = g.next_id;
        if !g.closed {
            // A frame from the last few milliseconds goes out at once rather than after the
            // next encode.
            if let Some(f) = g.latest.as_ref().filter(|f| now_us().saturating_sub(f.header.capture_us) < FRESH_US) {
                tx.push(f.clone());
            }
            let slot = Slot { id, kind, peer, joined: Instant::now(), tx: Arc::new(tx), counters: counters.clone() };
            g.slots.push(slot);
        }
        Subscription { id, rx, counters }
    }

    /// Viewers connected now (viewers that left are forgotten here).
    pub fn viewers(&self) -> usize {
        let mut g = self.lock();
        prune(&mut g);
        g.slots.len()
    }

    /// Sends `frame` to every viewer. Without `backpressure` a viewer still busy with its
    /// previous frame loses that one (counted as `socket_busy`, or `congestion` while the
    /// viewer waits for acknowledgements); with it (a lossless benchmark stream) the hub waits
    /// for each viewer in turn. Returns the number of frames lost to congestion.
    pub fn publish(&self, frame: Shared, backpressure: bool, meter: &Meter) -> usize {
        let targets: Vec<(Arc<LatestSender<Shared>>, Arc<LinkCounters>)> = {
            let mut g = self.lock();
            prune(&mut g);
            g.latest = Some(frame.clone());
            g.slots.iter().map(|s| (s.tx.clone(), s.counters.clone())).collect()
        };
        let mut congested = 0;
        for (tx, counters) in targets {
            if backpressure {
                let _ = tx.send_blocking(frame.clone());
                continue;
            }
            if let Pushed::Replaced(_) = tx.push(frame.clone()) {
                counters.drops.fetch_add(1, Ordering::Relaxed);
                if counters.congested.load(Ordering::Relaxed) {
                    congested += 1;
                    meter.count_drop(DropCause::Congestion);
                } else {
                    meter.count_drop(DropCause::SocketBusy);
                }
            }
        }
        congested
    }

    /// The newest published frame.
    pub fn latest(&self) -> Option<Shared> {
        self.lock().latest.clone()
    }

    /// Ends the stream: every viewer's subscription disconnects and new ones are refused.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.slots.clear();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The links of the viewers connected now.
    pub fn links(&self) -> Vec<LinkReport> {
        let mut g = self.lock();
        prune(&mut g);
        g.slots
            .iter()
            .map(|s| LinkReport {
                id: s.id,
                kind: s.kind.clone(),
                peer: s.peer.clone(),
                seconds: (s.joined.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                frames: s.counters.frames.load(Ordering::Relaxed),
                bytes: s.counters.bytes.load(Ordering::Relaxed),
                drops: s.counters.drops.load(Ordering::Relaxed),
                rtcp_loss_pct: rtcp(s).map(|r| r.loss_pct),
                rtcp_jitter_ms: rtcp(s).map(|r| r.jitter_ms),
                udp: *s.counters.udp.lock().unwrap_or_else(|p| p.into_inner()),
            })
            .collect()
    }
}

fn rtcp(s: &Slot) -> Option<RtcpFigures> {
    *s.counters.rtcp.lock().unwrap_or_else(|p| p.into_inner())
}

fn prune(g: &mut Inner) {
    g.slots.retain(|s| {
        let gone = s.tx.is_disconnected();
        if gone {
            info!(viewer = s.id, kind = %s.kind, peer = %s.peer, "viewer left");
        }
        !gone
    });
}

/// The encoder's reusable frames: a frame is reused once no viewer holds it any more, so
/// in steady state nothing is allocated however many viewers there are.
#[derive(Default)]
pub struct FrameRing {
    frames: Vec<Shared>,
}

impl FrameRing {
    /// Most frames kept for reuse (each viewer holds at most two).
    const MAX: usize = 64;

    /// A frame no one else holds, to encode into.
    pub fn take(&mut self) -> &mut Shared {
        let free = self.frames.iter().position(|f| Arc::strong_count(f) == 1);
        let i = match free {
            Some(i) => i,
            None if self.frames.len() < Self::MAX => {
                self.frames.push(Arc::new(EncodedFrame::default()));
                self.frames.len() - 1
            }
            None => {
                // Every kept frame is in use: replace the oldest (its holders keep their copy).
                self.frames.remove(0);
                self.frames.push(Arc::new(EncodedFrame::default()));
                self.frames.len() - 1
            }
        };
        &mut self.frames[i]
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Side;

    const NATIVE: ViewerKind = ViewerKind::new("native");
    const HTTP: ViewerKind = ViewerKind::new("http");

    fn frame(seq: u64) -> Shared {
        Arc::new(EncodedFrame { header: FrameHeader { seq, ..Default::default() }, jpeg: JpegBuf::default() })
    }

    #[test]
    fn every_viewer_gets_every_frame_it_keeps_up_with() {
        let hub = Hub::new();
        let meter = Meter::new(Side::Sender);
        let a = hub.subscribe(NATIVE, "a".into());
        let b = hub.subscribe(HTTP, "b".into());
        hub.publish(frame(1), false, &meter);
        assert_eq!(a.rx.try_recv().unwrap().header.seq, 1);
        assert_eq!(b.rx.try_recv().unwrap().header.seq, 1);
        assert_eq!(hub.viewers(), 2);
    }

    #[test]
    fn a_slow_viewer_drops_alone() {
        let hub = Hub::new();
        let meter = Meter::new(Side::Sender);
        let fast = hub.subscribe(NATIVE, "fast".into());
        let slow = hub.subscribe(HTTP, "slow".into());
        for seq in 0..10 {
            hub.publish(frame(seq), false, &meter);
            assert_eq!(fast.rx.try_recv().unwrap().header.seq, seq, "the fast viewer misses nothing");
        }
        assert_eq!(slow.rx.try_recv().unwrap().header.seq, 9, "the slow viewer gets the newest");
        assert_eq!(slow.counters.drops.load(Ordering::Relaxed), 9);
        assert_eq!(fast.counters.drops.load(Ordering::Relaxed), 0);
        assert_eq!(meter.summary().drops.get("socket_busy"), Some(&9));
    }

    #[test]
    fn drops_while_waiting_for_acks_count_as_congestion() {
        let hub = Hub::new();
        let meter = Meter::new(Side::Sender);
        let v = hub.subscribe(NATIVE, "v".into());
        assert_eq!(hub.publish(frame(1), false, &meter), 0);
        v.counters.congested.store(true, Ordering::Relaxed);
        assert_eq!(hub.publish(frame(2), false, &meter), 1);
        v.counters.congested.store(false, Ordering::Relaxed);
        assert_eq!(hub.publish(frame(3), false, &meter), 0);
        let drops = meter.summary().drops;
        assert_eq!((drops.get("congestion"), drops.get("socket_busy")), (Some(&1), Some(&1)));
        assert_eq!(v.rx.try_recv().unwrap().header.seq, 3);
    }

    #[test]
    fn a_new_viewer_gets_a_fresh_frame_at_once_but_not_a_stale_one() {
        let hub = Hub::new();
        let meter = Meter::new(Side::Sender);
        let fresh = |seq, capture_us| {
            Arc::new(EncodedFrame {
                header: FrameHeader { seq, capture_us, ..Default::default() },
                jpeg: JpegBuf::default(),
            })
        };
        let _first = hub.subscribe(NATIVE, "first".into());
        hub.publish(fresh(1, now_us()), false, &meter);
        let late = hub.subscribe(HTTP, "late".into());
        assert_eq!(late.rx.try_recv().unwrap().header.seq, 1);
        hub.publish(fresh(2, now_us().saturating_sub(10 * FRESH_US)), false, &meter);
        let later = hub.subscribe(HTTP, "later".into());
        assert!(later.rx.try_recv().is_err(), "a stale frame is not sent to a new viewer");
    }

    #[test]
    fn leaving_and_closing() {
        let hub = Hub::new();
        let meter = Meter::new(Side::Sender);
        let a = hub.subscribe(NATIVE, "a".into());
        drop(hub.subscribe(NATIVE, "b".into()));
        assert_eq!(hub.viewers(), 1);
        hub.publish(frame(1), false, &meter);
        assert_eq!(hub.links().len(), 1);
        hub.close();
        assert!(a.rx.try_recv().is_ok(), "a queued frame is still delivered");
        assert!(a.rx.recv().is_err(), "then the subscription ends");
        let late = hub.subscribe(HTTP, "late".into());
        assert!(late.rx.recv().is_err());
        assert_eq!(hub.latest().unwrap().header.seq, 1);
    }

    #[test]
    fn kinds_serialise_as_their_names() {
        let link = LinkReport {
            id: 1,
            kind: NATIVE,
            peer: "p".into(),
            seconds: 0.0,
            frames: 0,
            bytes: 0,
            drops: 0,
            rtcp_loss_pct: None,
            rtcp_jitter_ms: None,
            udp: None,
        };
        let v = serde_json::to_value(&link).unwrap();
        assert_eq!(v["kind"], "native");
        assert_eq!(serde_json::from_value::<ViewerKind>(v["kind"].clone()).unwrap(), NATIVE);
        assert_eq!(serde_json::to_value(HTTP).unwrap(), "http");
    }

    #[test]
    fn ring_reuses_frames_nobody_holds() {
        let mut ring = FrameRing::default();
        let a = Arc::as_ptr(ring.take());
        assert_eq!(a, Arc::as_ptr(ring.take()), "a free frame is reused");
        let held = ring.take().clone(); // a viewer holds this one
        let b = Arc::as_ptr(ring.take());
        assert_ne!(b, Arc::as_ptr(&held), "a held frame is not written over");
        assert_eq!(ring.len(), 2);
        drop(held);
        assert_eq!(Arc::as_ptr(ring.take()), a, "released frames come back");
        assert_eq!(ring.len(), 2);
    }
}
