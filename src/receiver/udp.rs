//! net-rx for the UDP transport (thread `net-rx`, in place of `net.rs` with `recv --transport
//! udp`): it owns the socket's reads, does the handshake ([`crate::net::udp::link`]), opens
//! each datagram, and rebuilds frames from RTP packets with the [`Assembler`] (FEC recovery,
//! NACKs inside the deadline, partial and lost frames). Each frame goes to decode as an
//! [`Incoming`]: a whole JPEG, or for a frame still missing packets at its deadline the bands
//! of the restart intervals that arrived (decode draws them over the previous frame and counts
//! it `concealed`). A frame with nothing showable is counted in `frames_lost`.
//!
//! Beside the media it sends the NACKs and, every [`RECEIPT_EVERY`] while media flows, a
//! receipt for the sender's rate control; it takes the sender's pongs for clock sync (the
//! feedback thread sends the pings, the acks and the reports as datagrams through the same
//! [`Link`]).
//!
//! How long the assembler waits for a frame's missing packets (its deadline after the frame's
//! first packet): three frame intervals or two round trips and 30 ms, whichever is longer,
//! within 20..=250 ms; with `--max-latency-ms`, at most half of that budget (the other half is
//! the sender's: capture, encoding, the path).
//!
//! A session ends when the sender says `Bye`, when nothing arrives for [`SILENCE`] (UDP has no
//! FIN), when the view finishes (we say `Bye`), or when a hello with a new session id arrives
//! (a restarted sender: a new connection, clock sync afresh). Datagrams from any other
//! address, malformed, replayed or forged ones are ignored and counted (`udp_ignored`).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::Sender;
use tracing::{debug, info, warn};

use super::feedback::Writer;
use super::net::{Incoming, NewConn};
use crate::chan::{LatestSender, Pool};
use crate::clock::{clock_id, now_us, ClockSync, Exchange};
use crate::format::Subsampling;
use crate::net::conn::Backoff;
use crate::net::proto::{Hello, Message, Pong, Role};
use crate::net::secure::{HandshakeError, Key};
use crate::net::udp::link::{new_session, Established, Handshake, Link, Opener, RESEND, SILENCE};
use crate::net::udp::media::{Assembled, Assembler, AssemblerCounts, Received};
use crate::net::udp::wire::{Datagram, Inner, Receipt};
use crate::net::udp::MAX_DATAGRAM;
use crate::net::FrameHeader;
use crate::stats::{ClockStatus, DropCause, Meter};

/// How long a read waits at most before the stage looks at its timers and stop conditions.
const TICK: Duration = Duration::from_millis(20);
/// How often a receipt goes to the sender while media flows.
pub const RECEIPT_EVERY: Duration = Duration::from_millis(20);
/// The assembler's wait, µs: bounds, and the round trip assumed before one is measured.
const MIN_WAIT_US: u64 = 20_000;
const MAX_WAIT_US: u64 = 250_000;
const DEFAULT_RTT_US: u64 = 50_000;

/// Where the UDP sender is.
#[derive(Debug)]
pub enum UdpEndpoint {
    /// Wait for senders on this socket, one session at a time.
    Listen(UdpSocket),
    /// Call the sender at HOST:PORT.
    Connect(String),
}

/// The UDP receiver's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRecvOptions {
    /// Ask for lost packets again (`--udp-nack off`: never; FEC and concealment only).
    pub nack: bool,
    /// `--max-latency-ms`: the latency budget, half of which bounds the wait for packets.
    pub max_latency_ms: Option<u32>,
}

impl Default for UdpRecvOptions {
    fn default() -> Self {
        UdpRecvOptions { nack: true, max_latency_ms: None }
    }
}

/// The UDP net-rx stage: everything it needs, built before its thread starts.
pub(super) struct UdpRx {
    pub endpoint: UdpEndpoint,
    pub opts: UdpRecvOptions,
    pub once: bool,
    pub patience: Duration,
    pub key: Option<Key>,
    pub tx: LatestSender<Incoming>,
    pub pool: Pool<Vec<u8>>,
    pub conn_tx: Sender<NewConn>,
    pub meter: Meter,
    pub stop: Arc<AtomicBool>,
    pub finish: Arc<AtomicBool>,
}

/// How a session ended.
enum End {
    /// The receiver is stopping.
    Done,
    /// The sender left or went silent.
    Left(String),
    Failed(anyhow::Error),
    /// A hello of a new session from the sender's address: it restarted.
    Restarted {
        peer: SocketAddr,
        session: u64,
        hello: Hello,
    },
}

impl UdpRx {
    pub fn run(mut self) -> anyhow::Result<()> {
        let key = self.key.take().map(Arc::new);
        match std::mem::replace(&mut self.endpoint, UdpEndpoint::Connect(String::new())) {
            UdpEndpoint::Listen(socket) => self.listen(socket, key),
            UdpEndpoint::Connect(addr) => self.call(&addr, key),
        }
    }

    /// True once the receiver is stopping: Ctrl-C, the view finished, or decode gone.
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.finish.load(Ordering::Relaxed) || self.tx.is_disconnected()
    }

    fn count_ignored(&self, from: SocketAddr, why: &dyn std::fmt::Display) {
        debug!(peer = %from, reason = %why, "ignored a datagram");
        self.meter.update(|c| c.udp.ignored += 1);
    }

    /// `--listen`: serves senders that say hello, one session after another.
    fn listen(&self, socket: UdpSocket, key: Option<Arc<Key>>) -> anyhow::Result<()> {
        info!(addr = ?socket.local_addr().ok(), "waiting for a udp sender");
        socket.set_read_timeout(Some(TICK))?;
        let socket = Arc::new(socket);
        let mut conns = 0;
        let mut next: Option<(SocketAddr, u64, Hello)> = None;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        while !self.done() {
            let Some((peer, session, hello)) = next.take().or_else(|| self.wait_hello(&socket, &mut buf)) else {
                continue;
            };
            conns += 1;
            info!(sender = %peer, "udp sender says hello");
            let hs = Handshake::new(Role::Receiver, key.clone(), new_session());
            let mut conn = Conn::new(self, conns, socket.clone(), peer, hs, false);
            let end = conn.serve(Some((session, hello)));
            if let End::Restarted { peer, session, hello } = end {
                info!(sender = %peer, "the sender restarted; a new session");
                next = Some((peer, session, hello));
                continue;
            }
            self.log_end(peer, end)?;
            if self.once {
                break;
            }
        }
        Ok(())
    }

    /// One datagram while no session runs: a sender's hello, or ignored.
    fn wait_hello(&self, socket: &UdpSocket, buf: &mut [u8]) -> Option<(SocketAddr, u64, Hello)> {
        let _ = socket.set_read_timeout(Some(TICK));
        let (n, from) = socket.recv_from(buf).ok()?;
        match Datagram::parse(&buf[..n.min(MAX_DATAGRAM)], Role::Sender) {
            Ok(Datagram::Hello { session, hello }) if n <= MAX_DATAGRAM => Some((from, session, hello)),
            Ok(_) => {
                self.count_ignored(from, &"a datagram from an address without a session");
                None
            }
            Err(e) => {
                self.count_ignored(from, &e);
                None
            }
        }
    }

    /// `--connect`: calls the sender, again with backoff when it goes away (`--once`: ends).
    fn call(&self, addr: &str, key: Option<Arc<Key>>) -> anyhow::Result<()> {
        let target = addr
            .to_socket_addrs()
            .with_context(|| format!("--connect {addr}: cannot resolve"))?
            .next()
            .ok_or_else(|| anyhow!("--connect {addr}: resolves to no address"))?;
        let bind: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(bind).with_context(|| format!("--connect {addr}: cannot bind a udp socket"))?;
        socket.set_read_timeout(Some(TICK))?;
        let socket = Arc::new(socket);
        let (mut conns, mut backoff) = (0, Backoff::reconnect());
        while !self.done() {
            conns += 1;
            let hs = Handshake::new(Role::Receiver, key.clone(), new_session());
            let _ = socket.send_to(&hs.hello(), target);
            let mut conn = Conn::new(self, conns, socket.clone(), target, hs, true);
            let end = conn.serve(None);
            let had = conn.link.is_some();
            let end = match end {
                End::Left(_) if !had && self.once => End::Failed(anyhow!(
                    "no answer from the sender at {target} (is it listening with --transport udp?)"
                )),
                other => other,
            };
            self.log_end(target, end)?;
            if self.once || self.done() {
                break;
            }
            if had {
                backoff.reset();
                self.meter.update(|c| c.reconnects += 1);
            }
            std::thread::sleep(backoff.next_delay());
        }
        Ok(())
    }

    /// Logs how a session ended; with `--once` a failure is the receiver's error.
    fn log_end(&self, peer: SocketAddr, end: End) -> anyhow::Result<()> {
        match end {
            End::Done | End::Restarted { .. } => {}
            End::Left(why) => info!(sender = %peer, "{why}"),
            End::Failed(e) if self.once => return Err(e),
            End::Failed(e) => warn!(sender = %peer, error = format!("{e:#}"), "dropped the udp session"),
        }
        Ok(())
    }
}

/// One session with a sender.
struct Conn<'a> {
    rx: &'a UdpRx,
    id: u64,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    hs: Handshake,
    connecting: bool,
    link: Option<Link>,
    opener: Option<Opener>,
    asm: Assembler,
    sync: ClockSync,
    same_clock: bool,
    frame_us: u64,
    rtt_us: Option<u64>,
    heard: Instant,
    sent_hello: Instant,
    next_receipt: Instant,
    /// The counts at the last receipt and the last stats update.
    receipted: AssemblerCounts,
    counted: AssemblerCounts,
    /// When the highest sequence number so far arrived (µs, our clock).
    highest_at: u64,
    last_seq: Option<u64>,
}

impl<'a> Conn<'a> {
    fn new(rx: &'a UdpRx, id: u64, socket: Arc<UdpSocket>, peer: SocketAddr, hs: Handshake, connecting: bool) -> Self {
        let now = Instant::now();
        let mut c = Conn {
            rx,
            id,
            socket,
            peer,
            hs,
            connecting,
            link: None,
            opener: None,
            asm: Assembler::new(MAX_WAIT_US),
            sync: ClockSync::new(),
            same_clock: false,
            frame_us: 33_333,
            rtt_us: None,
            heard: now,
            sent_hello: now,
            next_receipt: now,
            receipted: AssemblerCounts::default(),
            counted: AssemblerCounts::default(),
            highest_at: 0,
            last_seq: None,
        };
        c.asm.set_wait(c.wait_us());
        c
    }

    /// The assembler's wait (see the module docs), µs.
    fn wait_us(&self) -> u64 {
        assembler_wait_us(self.frame_us, self.rtt_us, self.rx.opts.max_latency_ms)
    }

    /// Runs the session to its end. `hello`: the sender's hello that started it (listening).
    fn serve(&mut self, hello: Option<(u64, Hello)>) -> End {
        if let Some((session, hello)) = hello {
            if let Some(end) = self.on_hello(session, hello) {
                return end;
            }
        }
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            if self.rx.done() {
                if let Some(l) = &self.link {
                    let _ = l.send(&Inner::Bye);
                }
                return End::Done;
            }
            if let Some(end) = self.read(&mut buf) {
                return end;
            }
            if let Some(end) = self.timers() {
                return end;
            }
        }
    }

    /// One read (or a timeout), then the frames it completed.
    fn read(&mut self, buf: &mut [u8]) -> Option<End> {
        let _ = self.socket.set_read_timeout(Some(self.read_timeout()));
        match self.socket.recv_from(buf) {
            Ok((n, from)) if from == self.peer && n <= MAX_DATAGRAM => {
                let end = self.on_datagram(&buf[..n]);
                if end.is_some() {
                    return end;
                }
            }
            Ok((n, from)) => self.rx.count_ignored(from, &format!("{n} bytes from an address without a session")),
            Err(_) => {}
        }
        if !self.deliver() {
            return Some(End::Done);
        }
        None
    }

    /// Until the next thing to do: a receipt, a frame's deadline, or [`TICK`].
    fn read_timeout(&self) -> Duration {
        let now = now_us();
        let deadline = self.asm.next_deadline().map_or(TICK, |d| Duration::from_micros(d.saturating_sub(now)));
        let receipt = self.next_receipt.saturating_duration_since(Instant::now());
        TICK.min(deadline).min(receipt).max(Duration::from_millis(1))
    }

    /// NACKs, receipts, resent hellos, and the silence that ends a session.
    fn timers(&mut self) -> Option<End> {
        if self.link.is_none() {
            if self.hs.timed_out() {
                let e = anyhow!("the key handshake with the sender did not finish in 5 s (does it hold the same key?)");
                return Some(End::Failed(e));
            }
            if self.connecting && self.sent_hello.elapsed() >= RESEND && self.hs.their_session().is_none() {
                self.sent_hello = Instant::now();
                let _ = self.socket.send_to(&self.hs.hello(), self.peer);
            }
        }
        let silent_for = if self.link.is_some() || !self.connecting { SILENCE } else { self.patience() };
        if self.heard.elapsed() > silent_for {
            return Some(End::Left(format!("nothing from the sender for {} s; it is gone", silent_for.as_secs())));
        }
        let link = self.link.clone()?;
        if self.rx.opts.nack {
            let runs = self.asm.nacks(now_us(), self.rtt_us.unwrap_or(DEFAULT_RTT_US));
            if !runs.is_empty() {
                let _ = link.send(&Inner::Nack(runs));
            }
        }
        if Instant::now() >= self.next_receipt {
            self.next_receipt = Instant::now() + RECEIPT_EVERY;
            self.receipt(&link);
        }
        None
    }

    /// How long a caller waits for the sender's first answer.
    fn patience(&self) -> Duration {
        if self.rx.once {
            self.rx.patience
        } else {
            SILENCE
        }
    }

    /// A receipt, if media arrived since the last one.
    fn receipt(&mut self, link: &Link) {
        let c = self.asm.counts();
        if c.packets == self.receipted.packets {
            return;
        }
        self.receipted = c;
        let r = Receipt {
            highest_seq: c.highest_seq,
            highest_age_us: now_us().saturating_sub(self.highest_at).min(u64::from(u32::MAX)) as u32,
            packets: c.packets,
            bytes: c.bytes,
            lost: c.lost,
            recovered: c.recovered_fec,
            loss_bp: self.asm.recent_loss_bp(),
        };
        let _ = link.send(&Inner::Receipt(r));
    }

    fn on_datagram(&mut self, d: &[u8]) -> Option<End> {
        let parsed = match Datagram::parse(d, Role::Sender) {
            Ok(p) => p,
            Err(e) => {
                self.rx.count_ignored(self.peer, &e);
                return None;
            }
        };
        match parsed {
            Datagram::Hello { session, hello } => {
                match self.hs.their_session() {
                    Some(s) if s != session && !self.connecting => {
                        return Some(End::Restarted { peer: self.peer, session, hello })
                    }
                    Some(s) if s != session => {
                        self.rx.count_ignored(self.peer, &"a hello of another session");
                        return None;
                    }
                    _ => {}
                }
                self.heard = Instant::now();
                self.on_hello(session, hello)
            }
            Datagram::Handshake { session, msg } if self.hs.their_session() == Some(session) => {
                self.heard = Instant::now();
                let mut out = Vec::new();
                let res = self.hs.on_handshake(msg, &mut out);
                self.settle(out, res)
            }
            Datagram::Handshake { .. } => {
                self.rx.count_ignored(self.peer, &"a handshake of another session");
                None
            }
            other => self.on_sealed(other),
        }
    }

    fn on_hello(&mut self, session: u64, hello: Hello) -> Option<End> {
        let mut out = Vec::new();
        let res = self.hs.on_hello(hello, session, !self.connecting, &mut out);
        self.settle(out, res)
    }

    /// Sends what a handshake step produced; on an established session, hands the feedback
    /// thread its writer.
    fn settle(&mut self, out: Vec<Vec<u8>>, res: Result<Option<Established>, HandshakeError>) -> Option<End> {
        for d in &out {
            let _ = self.socket.send_to(d, self.peer);
        }
        let est = match res {
            Ok(Some(est)) => est,
            Ok(None) => return None,
            Err(e) => return Some(End::Failed(anyhow!(e).context("access control"))),
        };
        let (seal, open) = match est.sealer {
            Some(s) => (Some(s.tx), Some(s.rx)),
            None => (None, None),
        };
        let link = Link::new(self.socket.clone(), self.peer, seal);
        self.opener = Some(Opener::new(open));
        self.same_clock = est.theirs.clock_id == clock_id();
        self.rx.meter.update(|c| c.clock = Some(ClockStatus::unsynced(self.same_clock)));
        info!(sender = %self.peer, sealed = link.is_sealed(), same_clock = self.same_clock, "udp sender handshake done");
        self.link = Some(link.clone());
        if self.rx.conn_tx.send(NewConn { conn: self.id, writer: Writer::Udp(link) }).is_err() {
            return Some(End::Done);
        }
        None
    }

    /// A sealed or plain datagram of the session.
    fn on_sealed(&mut self, d: Datagram<'_>) -> Option<End> {
        let Some(opener) = self.opener.as_mut() else {
            self.rx.count_ignored(self.peer, &"a datagram before the handshake finished");
            return None;
        };
        let inner = match opener.open(d) {
            Ok(i) => i,
            Err(e) => {
                self.rx.count_ignored(self.peer, &e);
                return None;
            }
        };
        self.heard = Instant::now();
        let now = now_us();
        match inner {
            Inner::Media(rtp) => {
                let before = self.asm.counts().highest_seq;
                if let Err(e) = self.asm.push(rtp, now) {
                    debug!(error = %e, "ignored a media packet");
                    self.rx.meter.update(|c| c.udp.ignored += 1);
                }
                if self.asm.counts().highest_seq != before || self.highest_at == 0 {
                    self.highest_at = now;
                }
            }
            Inner::Message(Message::StreamInfo(s)) => {
                info!(width = s.width, height = s.height, fps = f64::from(s.fps_milli) / 1000.0, "stream");
                self.frame_us = if s.fps_milli > 0 { 1_000_000_000 / u64::from(s.fps_milli) } else { 33_333 };
                self.asm.set_wait(self.wait_us());
                // RFC 2435 says 0 for sizes above 2040: the stream's size stands in.
                self.asm.set_dimensions(Some((s.width, s.height)));
            }
            Inner::Message(Message::Pong(p)) => self.pong(&p),
            Inner::Bye => return Some(End::Left("the sender said goodbye".into())),
            other => debug!(inner = ?other, "ignored from the sender"),
        }
        None
    }

    /// A clock-sync answer: the clock estimate, and the round trip for the assembler's wait.
    fn pong(&mut self, p: &Pong) {
        let x = Exchange { t1: p.t1_us, t2: p.t2_us, t3: p.t3_us, t4: now_us() };
        let rtt = x.rtt_us();
        self.rtt_us = Some(self.rtt_us.map_or(rtt, |r| (r * 7 + rtt) / 8));
        self.asm.set_wait(self.wait_us());
        if let Some(e) = self.sync.add(x) {
            if e.samples == 1 && !self.same_clock {
                info!(offset_ms = e.offset_us / 1000.0, "clock synced with the sender");
            }
            self.rx.meter.update(|c| c.clock = Some(ClockStatus::from_estimate(self.same_clock, &e)));
        }
    }

    /// Hands decode the frames the assembler finished. False once decode is gone.
    fn deliver(&mut self) -> bool {
        while let Some(a) = self.asm.poll(now_us()) {
            let ok = match a {
                Assembled::Frame { frame, jpeg } => self.send(&frame, jpeg, Vec::new()),
                Assembled::Partial { frame, bands } => self.send(&frame, Vec::new(), bands),
                Assembled::Lost { seq, why } => {
                    debug!(seq, why, "udp frame lost");
                    self.rx.meter.update(|c| c.udp.frames_lost += 1);
                    self.rx.meter.count_drop(DropCause::RtpLoss);
                    true
                }
            };
            if !ok {
                return false;
            }
        }
        self.count();
        true
    }

    /// Adds what the assembler counted since the last time to the stats.
    fn count(&mut self) {
        let (c, o) = (self.asm.counts(), self.counted);
        if c == o {
            return;
        }
        self.counted = c;
        self.rx.meter.update(|m| {
            m.udp.packets_lost += c.lost.saturating_sub(o.lost);
            m.udp.fec_recovered += c.recovered_fec.saturating_sub(o.recovered_fec);
            m.udp.retransmitted += c.recovered_nack.saturating_sub(o.recovered_nack);
            m.udp.late_frames += c.frames_superseded.saturating_sub(o.frames_superseded);
        });
    }

    fn send(&mut self, f: &Received, jpeg: Vec<u8>, bands: Vec<crate::rtp::depacketize::Band>) -> bool {
        let received_us = now_us();
        let len = jpeg.len() + bands.iter().map(|b| b.jpeg.len()).sum::<usize>();
        let i = f.info;
        let sub = if f.kind & 63 == 0 { Subsampling::S422 } else { Subsampling::S420 };
        let header = FrameHeader {
            seq: i.seq,
            capture_us: i.capture_us,
            encode_start_us: i.encode_start_us,
            encode_end_us: i.encode_end_us,
            send_us: i.send_us,
            width: f.width.min(u32::from(u16::MAX)) as u16,
            height: f.height.min(u32::from(u16::MAX)) as u16,
            quality: i.quality,
            subsampling: sub.to_wire(),
            flags: 0,
            jpeg_len: len as u32,
        };
        self.track_seq(i.seq);
        let capture_local_us = if self.same_clock {
            Some(i.capture_us)
        } else {
            self.sync.estimate().map(|e| e.to_local(i.capture_us, received_us))
        }
        .filter(|&cap| cap <= received_us);
        self.rx.meter.update(|c| {
            c.received += 1;
            c.frame_moved(len as u64);
            let _ = c.lat_encoded.record(i.encode_end_us.saturating_sub(i.capture_us).max(1));
            let _ = c.lat_sent.record(i.send_us.saturating_sub(i.capture_us).max(1));
            match capture_local_us {
                Some(cap) => {
                    let _ = c.lat_received.record(received_us.saturating_sub(cap).max(1));
                }
                None => c.latency_unknown += 1,
            }
        });
        let inc = Incoming { conn: self.id, header, received_us, capture_local_us, lossless: false, jpeg, bands };
        let rx = self.rx;
        rx.tx.deliver(inc, false, |old| {
            rx.meter.count_drop(DropCause::DecoderBusy);
            rx.pool.put(old.jpeg);
        })
    }

    fn track_seq(&mut self, seq: u64) {
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.rx.meter.update(|c| c.out_of_order += 1);
                return;
            }
            if seq > last + 1 {
                let gap = seq - last - 1;
                self.rx.meter.update(|c| c.seq_gaps += gap);
            }
        }
        self.last_seq = Some(seq);
    }
}

/// How long the assembler waits for a frame's missing packets, µs (see the module docs): three
/// frame intervals or two round trips and 30 ms, whichever is longer, within 20..=250 ms, and
/// at most half of `--max-latency-ms`.
fn assembler_wait_us(frame_us: u64, rtt_us: Option<u64>, max_latency_ms: Option<u32>) -> u64 {
    let rtt = rtt_us.unwrap_or(DEFAULT_RTT_US);
    let want = (3 * frame_us).max(2 * rtt + 30_000);
    let cap = max_latency_ms.map_or(MAX_WAIT_US, |ms| u64::from(ms) * 500).clamp(MIN_WAIT_US, MAX_WAIT_US);
    want.clamp(MIN_WAIT_US, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_frame_rate_and_the_round_trip_within_the_budget() {
        // 30 fps on a LAN: three frame intervals.
        assert_eq!(assembler_wait_us(33_333, Some(1_000), None), 99_999);
        // A 40 ms round trip: two of them and 30 ms, room for one NACK and its answer.
        assert_eq!(assembler_wait_us(33_333, Some(40_000), None), 110_000);
        // Before the first round trip is measured, 50 ms is assumed.
        assert_eq!(assembler_wait_us(10_000, None, None), 130_000);
        // Half of a 150 ms budget at most, and never above 250 ms or below 20 ms.
        assert_eq!(assembler_wait_us(33_333, Some(40_000), Some(150)), 75_000);
        assert_eq!(assembler_wait_us(200_000, Some(400_000), None), MAX_WAIT_US);
        assert_eq!(assembler_wait_us(1_000, Some(100), Some(10)), MIN_WAIT_US);
    }
}
