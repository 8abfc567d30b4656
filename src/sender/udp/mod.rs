//! The UDP transport, sender side (`send --transport udp`): frames as RTP/JPEG packets with
//! FEC, retransmission on NACK and pacing at a rate of its own (see [`crate::net::udp`]).
//!
//! One socket serves every viewer. Its reads belong to the `udp-tx` thread (this file, the
//! transport's stage), which demultiplexes by source address:
//!
//! ```text
//! socket reads ──▶ udp-tx: hellos, handshakes, opening ──events──▶ udp-PEER (viewer.rs)
//!                  (one Peer per address)                            hub slot, packets,
//!                                                                    pacer ──▶ socket writes
//! ```
//!
//! - A hello from a new address starts a handshake (`--listen`); with `--connect` only the
//!   called address is answered, and our hello is resent every 200 ms until it answers.
//! - Once the handshake is done, the viewer gets a `udp-PEER` thread (`viewer.rs`) that owns
//!   its hub slot, its RTP stream and retransmission store, its pacer and rate control, and
//!   the sealing half of its keys; `udp-tx` keeps the opening half and hands it NACKs,
//!   receipts, acks, pings, quality requests and reports as events stamped on arrival.
//! - Datagrams from an address without a handshake, malformed, replayed or forged ones are
//!   ignored and counted (`udp_ignored`).
//! - A viewer silent for [`SILENCE`] (UDP has no FIN), or that says `Bye`, is gone: its
//!   events channel is dropped, which ends its thread. A hello with a new session id from the
//!   same address is a restarted viewer: the old session ends and a new one starts.
//! - `--connect` calls again with backoff when the viewer goes away (or ends the stream with
//!   `--once`).

mod viewer;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Sender, TrySendError};
use tracing::{debug, info, warn};

use super::encode::Feedback;
use super::rtsp::FrameCache;
use super::transport::{Feed, Transport};
use super::ViewerRequest;
use crate::clock::now_us;
use crate::hub::{Hub, Subscription, ViewerKind};
use crate::net::conn::Backoff;
use crate::net::proto::{Message, Pong, Role};
use crate::net::secure::{HandshakeError, Key};
use crate::net::udp::link::{new_session, Established, Handshake, Link, Opener, RESEND, SILENCE};
use crate::net::udp::wire::{Datagram, Inner, Receipt};
use crate::net::udp::MAX_DATAGRAM;
use crate::stage::{self, Stage};
use crate::stats;
use viewer::Viewer;

/// How UDP viewers are named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("udp");

/// Events from `udp-tx` waiting for a viewer's thread.
const EVENTS: usize = 256;
/// Most addresses in a handshake or a session at once (a flood of hellos costs no more).
const MAX_PEERS: usize = 64;
/// How long a read waits before `udp-tx` looks at its timers.
const TICK: Duration = Duration::from_millis(20);

/// Where the UDP viewers are.
#[derive(Debug)]
pub enum UdpEndpoint {
    /// Serve any number of viewers on this socket.
    Listen(UdpSocket),
    /// Call the viewer at HOST:PORT.
    Connect(String),
}

/// The UDP sender's knobs (hidden flags, for tests and experiments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// Forward error correction sized to the viewer's reported loss (`--fec off`: none).
    pub fec: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions { fec: true }
    }
}

/// The UDP transport (`--transport udp` with `--connect` or `--listen`).
pub struct Udp {
    endpoint: UdpEndpoint,
    ctx: Ctx,
    once: bool,
    patience: Duration,
    /// The viewer we call joins the hub at start-up (as the native transport's does).
    early: Option<Subscription>,
}

/// What the transport's threads share.
#[derive(Clone)]
struct Ctx {
    key: Option<Arc<Key>>,
    /// `--max-latency-ms`, µs: the rate control's queueing-delay threshold stays inside it.
    budget_us: Option<u64>,
    opts: UdpOptions,
    cache: Arc<FrameCache>,
}

/// The options of the UDP transport (from `SendConfig`).
pub struct UdpSettings {
    pub opts: UdpOptions,
    pub once: bool,
    pub patience: Duration,
    pub key: Option<Key>,
    /// `--max-latency-ms`, µs.
    pub budget_us: Option<u64>,
}

impl Udp {
    pub fn new(endpoint: UdpEndpoint, settings: UdpSettings, hub: &Hub, cache: Arc<FrameCache>) -> Self {
        let early = match &endpoint {
            UdpEndpoint::Connect(addr) => Some(hub.subscribe(KIND, addr.clone())),
            UdpEndpoint::Listen(_) => None,
        };
        let ctx = Ctx { key: settings.key.map(Arc::new), budget_us: settings.budget_us, opts: settings.opts, cache };
        Udp { endpoint, ctx, once: settings.once, patience: settings.patience, early }
    }
}

impl Transport for Udp {
    fn name(&self) -> &'static str {
        "udp-tx"
    }

    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Udp { endpoint, ctx, once, patience, early } = *self;
        match endpoint {
            UdpEndpoint::Listen(socket) => listen(&feed, &ctx, socket),
            UdpEndpoint::Connect(addr) => call(&feed, &ctx, &addr, Calling { once, patience, early }),
        }
    }
}

/// `--listen`: every viewer that says hello, until the stream ends.
fn listen(feed: &Feed, ctx: &Ctx, socket: UdpSocket) -> anyhow::Result<()> {
    info!(addr = ?socket.local_addr().ok(), "waiting for udp viewers");
    let mut d = Demux::new(feed, ctx, socket, None)?;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while !(feed.hub.is_closed() && d.viewers.is_empty()) {
        d.step(&mut buf)?;
    }
    d.finish();
    Ok(())
}

/// How `--connect` calls.
struct Calling {
    once: bool,
    patience: Duration,
    early: Option<Subscription>,
}

/// `--connect`: calls the viewer, again with backoff when it goes away (or, `once`, ends the
/// stream with it).
fn call(feed: &Feed, ctx: &Ctx, addr: &str, mut calling: Calling) -> anyhow::Result<()> {
    let target = resolve(addr)?;
    let bind: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let mut backoff = Backoff::reconnect();
    let mut attempt = 0u64;
    let result = loop {
        if feed.stop.load(Ordering::Relaxed) || (feed.hub.is_closed() && !calling.once) {
            break Ok(());
        }
        attempt += 1;
        let socket = UdpSocket::bind(bind).with_context(|| format!("--connect {addr}: cannot bind a udp socket"))?;
        let mut d = Demux::new(feed, ctx, socket, Some(target))?;
        d.early = calling.early.take();
        let patience = calling.once.then_some(calling.patience);
        let end = d.run_call(patience, attempt);
        d.finish();
        match end {
            CallEnd::Finished => break Ok(()),
            CallEnd::Left(why) if calling.once => {
                info!(viewer = %target, "{why}");
                break Ok(());
            }
            CallEnd::Failed(e) if calling.once => break Err(e),
            CallEnd::Left(why) => info!(viewer = %target, "{why}; calling again"),
            CallEnd::Failed(e) => warn!(viewer = %target, error = format!("{e:#}"), "lost the viewer; calling again"),
        }
        if d.had_session {
            backoff.reset();
            feed.meter.update(|c| c.reconnects += 1);
        }
        std::thread::sleep(backoff.next_delay());
    };
    feed.finish();
    result.context("connection to the udp viewer failed")
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("--connect {addr}: cannot resolve"))?
        .next()
        .ok_or_else(|| anyhow!("--connect {addr}: resolves to no address"))
}

/// How one call (`--connect`) ended.
enum CallEnd {
    /// The stream ended.
    Finished,
    /// The viewer left or went silent.
    Left(String),
    Failed(anyhow::Error),
}

/// What a viewer's thread gets from `udp-tx`, stamped on arrival (µs, our clock).
#[derive(Debug)]
enum FromViewer {
    Nack(Vec<(u16, u16)>),
    Receipt(Receipt, u64),
    Ack {
        seq: u64,
        at_us: u64,
    },
    /// A clock-sync ping, answered with this pong (`t2` stamped on arrival).
    Ping(Pong),
    Request(ViewerRequest),
    Report(Box<stats::Report>),
}

/// One address `udp-tx` knows: its handshake, and once done the viewer's thread.
struct Peer {
    hs: Handshake,
    heard: Instant,
    sent: Instant,
    live: Option<Live>,
}

struct Live {
    opener: Opener,
    events: Sender<FromViewer>,
}

/// The `udp-tx` state: the socket's reads and every peer.
struct Demux<'a> {
    feed: &'a Feed,
    ctx: &'a Ctx,
    socket: Arc<UdpSocket>,
    peers: HashMap<SocketAddr, Peer>,
    /// `--connect`: the only address answered.
    target: Option<SocketAddr>,
    viewers: Vec<(Stage, SocketAddr)>,
    early: Option<Subscription>,
    /// `--connect`: a session was established during this call.
    had_session: bool,
    /// `--connect`: how the call ended, once it did.
    ended: Option<CallEnd>,
    last_tick: Instant,
}

impl<'a> Demux<'a> {
    fn new(feed: &'a Feed, ctx: &'a Ctx, socket: UdpSocket, target: Option<SocketAddr>) -> anyhow::Result<Self> {
        socket.set_read_timeout(Some(TICK))?;
        let mut d = Demux {
            feed,
            ctx,
            socket: Arc::new(socket),
            peers: HashMap::new(),
            target,
            viewers: Vec::new(),
            early: None,
            had_session: false,
            ended: None,
            last_tick: Instant::now(),
        };
        if let Some(t) = target {
            let hs = Handshake::new(Role::Sender, ctx.key.clone(), new_session());
            d.send(t, &hs.hello());
            let now = Instant::now();
            d.peers.insert(t, Peer { hs, heard: now, sent: now, live: None });
        }
        Ok(d)
    }

    /// `--connect`: serves the call until the viewer goes or the stream ends. `patience`
    /// (`--once`): how long to wait for the viewer's first answer.
    fn run_call(&mut self, patience: Option<Duration>, attempt: u64) -> CallEnd {
        let start = Instant::now();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let target = self.target.expect("a call has a target");
        debug!(viewer = %target, attempt, "calling the udp viewer");
        loop {
            if let Err(e) = self.step(&mut buf) {
                return CallEnd::Failed(e);
            }
            if let Some(end) = self.ended.take() {
                return end;
            }
            if self.feed.stop.load(Ordering::Relaxed) {
                return CallEnd::Finished;
            }
            if self.feed.hub.is_closed() && self.viewers.is_empty() {
                return CallEnd::Finished;
            }
            let unanswered = self.peers.get(&target).is_some_and(|p| p.hs.their_session().is_none());
            if unanswered && patience.is_some_and(|p| start.elapsed() > p) {
                let p = patience.unwrap_or_default();
                return CallEnd::Failed(anyhow!(
                    "no answer from the viewer at {target} within {p:?} (is it listening with --transport udp?)"
                ));
            }
            if self.peers.is_empty() {
                return CallEnd::Left("the viewer left".into());
            }
        }
    }

    /// One read (or a [`TICK`] without one), then the timers.
    fn step(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        match self.socket.recv_from(buf) {
            Ok((n, from)) => self.on_datagram(&buf[..n], from),
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e).context("udp socket"),
        }
        if self.last_tick.elapsed() >= TICK {
            self.last_tick = Instant::now();
            self.tick();
        }
        Ok(())
    }

    /// Resends what is unanswered, ends silent peers, forgets finished viewers.
    fn tick(&mut self) {
        let connecting = self.target.is_some();
        let mut resend = Vec::new();
        let mut gone = Vec::new();
        for (addr, p) in &mut self.peers {
            if p.heard.elapsed() > SILENCE && p.hs.their_session().is_some() {
                gone.push((*addr, format!("nothing from the viewer for {} s; it is gone", SILENCE.as_secs())));
            } else if p.hs.timed_out() && p.hs.their_session().is_some() {
                gone.push((
                    *addr,
                    "the key handshake did not finish in 5 s (does the viewer hold the same key?)".into(),
                ));
            } else if p.sent.elapsed() >= RESEND {
                if let Some(d) = p.hs.resend(connecting) {
                    p.sent = Instant::now();
                    resend.push((*addr, d));
                }
            }
        }
        for (addr, d) in resend {
            self.send(addr, &d);
        }
        for (addr, why) in gone {
            self.drop_peer(addr, why, false);
        }
        self.reap();
    }

    /// Joins the viewers' threads that have ended; with `--connect`, the call ends with them.
    fn reap(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.viewers).into_iter().partition(|(h, _)| h.is_finished());
        self.viewers = running;
        for (h, addr) in done {
            let res = stage::join(h, "udp viewer");
            if let Err(e) = &res {
                warn!(viewer = %addr, error = format!("{e:#}"), "dropped udp viewer");
            }
            if self.peers.remove(&addr).is_some() && self.target == Some(addr) && self.ended.is_none() {
                self.ended = Some(match res {
                    Ok(()) if self.feed.hub.is_closed() => CallEnd::Finished,
                    Ok(()) => CallEnd::Left("the viewer left".into()),
                    Err(e) => CallEnd::Failed(e),
                });
            }
        }
    }

    /// Ends a peer's session (its thread ends when its events channel disconnects).
    fn drop_peer(&mut self, addr: SocketAddr, why: String, failed: bool) {
        if self.peers.remove(&addr).is_none() {
            return;
        }
        if failed {
            warn!(viewer = %addr, "{why}");
        } else {
            info!(viewer = %addr, "{why}");
        }
        if self.target == Some(addr) && self.ended.is_none() {
            self.ended = Some(if failed { CallEnd::Failed(anyhow!(why)) } else { CallEnd::Left(why) });
        }
    }

    fn send(&self, addr: SocketAddr, d: &[u8]) {
        if let Err(e) = self.socket.send_to(d, addr) {
            debug!(peer = %addr, error = %e, "cannot send a datagram");
        }
    }

    /// Counts an ignored datagram.
    fn ignore(&self, from: SocketAddr, why: &dyn std::fmt::Display) {
        debug!(peer = %from, reason = %why, "ignored a datagram");
        self.feed.meter.update(|c| c.udp.ignored += 1);
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr) {
        if d.len() > MAX_DATAGRAM {
            return self.ignore(from, &format!("{} bytes, over the {MAX_DATAGRAM} a datagram may have", d.len()));
        }
        match Datagram::parse(d, Role::Receiver) {
            Ok(Datagram::Hello { session, hello }) => self.on_hello(from, session, hello),
            Ok(Datagram::Handshake { session, msg }) => self.on_handshake(from, session, msg),
            Ok(other) => self.on_sealed(from, other),
            Err(e) => self.ignore(from, &e),
        }
    }

    fn on_hello(&mut self, from: SocketAddr, session: u64, hello: crate::net::proto::Hello) {
        if self.target.is_some_and(|t| t != from) {
            return self.ignore(from, &"a hello from an address we did not call");
        }
        let connecting = self.target.is_some();
        match self.peers.get(&from).and_then(|p| p.hs.their_session()) {
            Some(s) if s == session => {}
            Some(_) if connecting => return self.ignore(from, &"a hello of another session"),
            Some(_) => self.drop_peer(from, "the viewer restarted (a new session)".into(), false),
            None => {}
        }
        if !self.peers.contains_key(&from) {
            if self.peers.len() >= MAX_PEERS || self.feed.hub.is_closed() {
                return self.ignore(from, &"a hello while full or finishing");
            }
            let hs = Handshake::new(Role::Sender, self.ctx.key.clone(), new_session());
            let now = Instant::now();
            self.peers.insert(from, Peer { hs, heard: now, sent: now, live: None });
        }
        let mut out = Vec::new();
        let Some(p) = self.peers.get_mut(&from) else { return };
        p.heard = Instant::now();
        let res = p.hs.on_hello(hello, session, !connecting, &mut out);
        p.sent = Instant::now();
        self.settle(from, out, res);
    }

    fn on_handshake(&mut self, from: SocketAddr, session: u64, msg: &[u8]) {
        let mut out = Vec::new();
        let res = match self.peers.get_mut(&from) {
            Some(p) if p.hs.their_session() == Some(session) => {
                p.heard = Instant::now();
                p.hs.on_handshake(msg, &mut out)
            }
            _ => return self.ignore(from, &"a handshake from an address without a hello"),
        };
        self.settle(from, out, res);
    }

    /// Sends what a handshake step produced, and starts the viewer when it is done.
    fn settle(&mut self, from: SocketAddr, out: Vec<Vec<u8>>, res: Result<Option<Established>, HandshakeError>) {
        for d in &out {
            self.send(from, d);
        }
        match res {
            Ok(Some(est)) => self.start_viewer(from, est),
            Ok(None) => {}
            Err(e) => self.drop_peer(from, format!("refused the udp viewer: {e}"), true),
        }
    }

    /// A sealed or plain datagram: opened and handed to the viewer's thread.
    fn on_sealed(&mut self, from: SocketAddr, d: Datagram<'_>) {
        let Some(p) = self.peers.get_mut(&from) else {
            return self.ignore(from, &"a datagram from an address that did not complete a handshake");
        };
        let Some(live) = p.live.as_mut() else {
            if matches!(d, Datagram::Plain(b) if b == [crate::net::udp::wire::BYE]) {
                if let Some(e) = p.hs.refused() {
                    return self.drop_peer(from, format!("refused the udp viewer: {e}"), true);
                }
            }
            return self.ignore(from, &"a datagram before the handshake finished");
        };
        let event = match live.opener.open(d) {
            Ok(inner) => to_event(inner),
            Err(e) => return self.ignore(from, &e),
        };
        p.heard = Instant::now();
        match event {
            Some(Ok(ev)) => {
                if let Err(TrySendError::Full(_)) = live.events.try_send(ev) {
                    debug!(viewer = %from, "the viewer's thread is behind; an event was dropped");
                }
            }
            Some(Err(why)) => self.drop_peer(from, why.into(), false),
            None => {}
        }
    }

    fn start_viewer(&mut self, from: SocketAddr, est: Established) {
        self.had_session = true;
        let (seal, open) = match est.sealer {
            Some(s) => (Some(s.tx), Some(s.rx)),
            None => (None, None),
        };
        let link = Link::new(self.socket.clone(), from, seal);
        let sub = self.early.take().unwrap_or_else(|| self.feed.hub.subscribe(KIND, from.to_string()));
        self.feed.feedback(Feedback::NewLink);
        let (events_tx, events) = bounded(EVENTS);
        info!(viewer = %from, sealed = link.is_sealed(), "udp viewer connected");
        let (feed, cache) = (self.feed.clone(), self.ctx.cache.clone());
        let viewer = Viewer::new(feed, self.ctx.opts, cache, link, sub, events, self.ctx.budget_us);
        match stage::spawn(format!("udp-{from}"), move || viewer.run()) {
            Ok(h) => self.viewers.push((h, from)),
            Err(e) => return self.drop_peer(from, format!("cannot serve the viewer: {e:#}"), true),
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.live = Some(Live { opener: Opener::new(open), events: events_tx });
        }
    }

    /// Ends every session and joins every viewer's thread.
    fn finish(&mut self) {
        self.peers.clear();
        for (h, addr) in self.viewers.drain(..) {
            if let Err(e) = stage::join(h, "udp viewer") {
                warn!(viewer = %addr, error = format!("{e:#}"), "udp viewer failed");
            }
        }
    }
}

/// What a viewer's inner datagram means for its thread: an event, the end of the session
/// (`Err`), or nothing.
fn to_event(inner: Inner<'_>) -> Option<Result<FromViewer, &'static str>> {
    let now = now_us();
    let ev = match inner {
        Inner::Nack(runs) => FromViewer::Nack(runs),
        Inner::Receipt(r) => FromViewer::Receipt(r, now),
        Inner::Message(Message::Ack(a)) => FromViewer::Ack { seq: a.seq, at_us: now },
        Inner::Message(Message::Ping(p)) => FromViewer::Ping(Pong { id: p.id, t1_us: p.t1_us, t2_us: now, t3_us: 0 }),
        Inner::Message(Message::SetQuality(q)) => FromViewer::Request(ViewerRequest::Quality(q)),
        Inner::Message(Message::QualityStep(n)) => FromViewer::Request(ViewerRequest::Step(n)),
        Inner::Message(Message::Report(json)) => match stats::parse_viewer_report(json) {
            Ok(r) => FromViewer::Report(Box::new(r)),
            Err(e) => {
                debug!(error = %e, "ignored a malformed report from the viewer");
                return None;
            }
        },
        Inner::Bye => return Some(Err("the viewer said goodbye")),
        other => {
            debug!(inner = ?other, "ignored from a udp viewer");
            return None;
        }
    };
    Some(Ok(ev))
}

/// A read that timed out or was interrupted, or an ICMP error a previous send earned.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted | ConnectionRefused | ConnectionReset)
}
