//! net-rx for RTSP (thread `net-rx`, in place of `net.rs` when `recv --connect` names an
//! `rtsp://` URL): it connects with backoff, plays the stream through the shared player
//! ([`crate::rtsp::play`]: OPTIONS, DESCRIBE, SETUP, PLAY, keep-alives, RTCP, RTP/JPEG
//! depacketised into frames) and hands each frame to decode as an [`Incoming`], like net-rx,
//! with its stats (received, latency, RTP losses).
//!
//! Latency: a framecast sender on this host (its SDP's `x-framecast-clock` is ours) stamps
//! every packet with the capture time on our shared clock, exact as native; any other
//! sender's RTP timestamps are mapped to wall time through its RTCP sender reports, which is
//! right only as far as the two hosts' wall clocks agree (stats say `"rtcp"`); with neither,
//! latency is unknown.
//!
//! A session ends when the server closes it, a packet is malformed (logged, with what
//! arrived), no RTP arrives for the session timeout (at least 5 s), the view finishes, or
//! Ctrl-C; then it reconnects with backoff, as `--connect` does, unless the server refused
//! us for good (credentials, no such stream, no JPEG).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{debug, info, warn};

use super::net::Incoming;
use crate::chan::{LatestSender, Pool};
use crate::clock::now_us;
use crate::net::conn::{connect, Policy, Session};
use crate::net::FrameHeader;
use crate::rtp::depacketize::Output;
use crate::rtsp::client::{Client, ClientError, Target};
pub use crate::rtsp::play::RtspTransport;
use crate::rtsp::play::{is_final, Player, Step};
use crate::stats::{ClockSource, ClockStatus, DropCause, Meter};

/// How long a read waits before the stage looks at its stop conditions.
const POLL: Duration = Duration::from_millis(100);

/// An RTSP stream to play.
#[derive(Clone, Debug)]
pub struct RtspEndpoint {
    pub target: Target,
    pub transport: RtspTransport,
}

/// The RTSP net-rx stage: everything it needs, built before its thread starts.
pub(super) struct RtspRx {
    pub endpoint: RtspEndpoint,
    pub once: bool,
    pub patience: Duration,
    pub tx: LatestSender<Incoming>,
    pub pool: Pool<Vec<u8>>,
    pub meter: Meter,
    pub stop: Arc<AtomicBool>,
    pub finish: Arc<AtomicBool>,
}

impl RtspRx {
    /// Plays the stream, reconnecting with backoff, until the receiver stops, the server
    /// refuses us for good, or (`--once`) the first session ends.
    pub fn run(self) -> anyhow::Result<()> {
        let addr = self.endpoint.target.addr.clone();
        let mut fatal = None;
        let session = |stream: TcpStream, n: u64| {
            if n > 1 {
                self.meter.update(|c| c.reconnects += 1);
            }
            let url = self.endpoint.target.url.as_str();
            info!(%url, connection = n, transport = ?self.endpoint.transport, "connected to the rtsp server");
            match self.session(stream) {
                Ok(()) => info!(%url, "rtsp session ended"),
                Err(e) if is_final(&e) => {
                    fatal = Some(e);
                    return Session::Stop;
                }
                Err(e) => warn!(%url, error = format!("{e:#}"), "rtsp session closed"),
            }
            Session::Again
        };
        let policy = if self.once { Policy::once(self.patience) } else { Policy::reconnect() };
        connect(&addr, "rtsp server", policy, &|| self.done(), session, || {}).context("--connect")?;
        match fatal {
            Some(e) => Err(anyhow::Error::new(e).context(format!("rtsp server {}", self.endpoint.target.url))),
            None => Ok(()),
        }
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.finish.load(Ordering::Relaxed) || self.tx.is_disconnected()
    }

    /// One RTSP session: set up, play to its end, tear down.
    fn session(&self, stream: TcpStream) -> Result<(), ClientError> {
        let client = Client::over(stream, &self.endpoint.target, POLL)?;
        let mut player = Player::start(client, &[self.endpoint.transport])?;
        let mut play = Play::new(self, &player);
        let res = play.run(&mut player);
        player.stop(&res);
        res
    }
}

/// A session while it plays: the frame count.
struct Play<'a> {
    rx: &'a RtspRx,
    frames: u64,
}

impl<'a> Play<'a> {
    fn new(rx: &'a RtspRx, player: &Player) -> Self {
        let same_clock = player.same_clock();
        let source = if same_clock { ClockSource::Shared } else { ClockSource::Unknown };
        rx.meter.update(|c| c.clock = Some(ClockStatus { source, ..ClockStatus::unsynced(same_clock) }));
        if !same_clock {
            info!(
                "the rtsp sender's clock is not ours: latency from RTCP sender reports (wall clocks), if it sends them"
            );
        }
        Play { rx, frames: 0 }
    }

    fn run(&mut self, player: &mut Player) -> Result<(), ClientError> {
        loop {
            if self.rx.done() {
                return Ok(());
            }
            match player.step()? {
                Step::Frame { out, .. } => {
                    if !self.deliver(player, out) {
                        return Ok(());
                    }
                }
                Step::SenderReport { first } => self.sender_report(first),
                Step::Idle => {}
            }
        }
    }

    /// The first sender report from a foreign sender makes its latency known, as far as the
    /// wall clocks agree.
    fn sender_report(&self, first: bool) {
        if first {
            info!("rtcp sender report: latency from here on maps RTP time to the sender's wall clock (as exact as the two hosts' clocks agree)");
        }
        self.rx
            .meter
            .update(|c| c.clock = Some(ClockStatus { source: ClockSource::Rtcp, ..ClockStatus::unsynced(false) }));
    }

    /// Hands a frame the depayloader finished to decode. False once decode is gone.
    fn deliver(&mut self, player: &Player, out: Output) -> bool {
        let (ts, capture, jpeg, bands, size, q) = match out {
            Output::Frame(f) => (f.timestamp, f.capture_us, f.jpeg, Vec::new(), (f.width, f.height), f.q),
            Output::Partial(p) => (p.timestamp, p.capture_us, Vec::new(), p.bands, (p.width, p.height), p.q),
            Output::Lost { timestamp, why } => {
                debug!(timestamp, why, "rtp frame lost");
                self.rx.meter.count_drop(DropCause::RtpLoss);
                return true;
            }
        };
        let received_us = now_us();
        let capture_local_us = player.capture_local(ts, capture, received_us);
        let len = jpeg.len() + bands.iter().map(|b| b.jpeg.len()).sum::<usize>();
        self.frames += 1;
        let header = FrameHeader {
            seq: self.frames,
            capture_us: capture.unwrap_or(0),
            width: size.0.min(u32::from(u16::MAX)) as u16,
            height: size.1.min(u32::from(u16::MAX)) as u16,
            // Q 1..=99 is a JPEG quality; in-band tables say nothing about it.
            quality: if q < 100 { q } else { 0 },
            jpeg_len: len as u32,
            ..FrameHeader::default()
        };
        // The depayloader built the JPEG in a buffer of its own: handed on as it is (decode
        // returns it to the pool, whose buffers net-rx for the native protocol reuses).
        self.send(Incoming { conn: 1, header, received_us, capture_local_us, lossless: false, jpeg, bands })
    }

    /// Counts a frame and hands it to decode. False once decode is gone.
    fn send(&self, inc: Incoming) -> bool {
        self.rx.meter.update(|c| {
            c.received += 1;
            c.frame_moved(u64::from(inc.header.jpeg_len));
            match inc.capture_local_us {
                Some(cap) => {
                    let _ = c.lat_received.record(inc.received_us.saturating_sub(cap).max(1));
                }
                None => c.latency_unknown += 1,
            }
        });
        let net = self.rx;
        net.tx.deliver(inc, false, |old| {
            net.meter.count_drop(DropCause::DecoderBusy);
            net.pool.put(old.jpeg);
        })
    }
}
