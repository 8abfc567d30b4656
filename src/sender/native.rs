//! The native transport: viewers that speak the framecast protocol (`framecast recv`).
//!
//! The `net-tx` thread connects to the viewer (`--connect`, again with backoff unless
//! `--once`) or accepts any number of them (`--listen`, one `viewer-PEER` thread each). Each
//! connection has two threads and one owner per socket half:
//!
//! ```text
//! hub slot ──▶ viewer (owns the writer and the in-flight window) ──TCP──▶ framecast recv
//!                 ▲ events (acks, pings, requests, reports, gone)
//!               ack-rx (owns the reader) ◀──TCP── acks, pings, reports
//! ```
//!
//! The viewer's thread `select!`s over its hub slot, the events from `ack-rx` and a timer.
//! It writes a frame only while fewer than `max_in_flight` frames are unacknowledged
//! (`Window`); meanwhile the newest frame waits in the slot, and frames it replaces count as
//! `congestion`. Pongs go out between frames, stamped just before writing. A viewer silent
//! for [`WRITE_TIMEOUT`] with a full window is dropped. When the stream ends it closes its
//! side and waits up to [`LINGER`] for the last acknowledgements.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, never, select, Receiver, RecvTimeoutError, Sender};
use tracing::{debug, info, warn};

use super::encode::Feedback;
use super::transport::{Feed, Transport};
use super::{Congestion, Endpoint, ViewerRequest, POLL};
use crate::clock::{clock_id, now_us};
use crate::hub::{Hub, Shared, Subscription, ViewerKind};
use crate::net::conn::{accept_loop, configure, connect, limit_send_queue, Next, Policy, Session};
use crate::net::proto::Pong;
use crate::net::secure::{self, Key, LinkRead, LinkWrite};
use crate::net::{Event, Hello, Message, MessageReader, MessageWriter, NetError, Role, StreamInfo};
use crate::stage::{self, Stage};
use crate::stats::{self, Report};

/// How native viewers are named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("native");

/// How long a write may block, or the window of unacknowledged frames stay full, before the
/// viewer is considered gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the viewer's last acknowledgements after the last frame.
pub const LINGER: Duration = Duration::from_secs(2);
/// Events from a viewer's reader waiting for its writer.
const EVENTS: usize = 64;

/// The framecast-protocol transport (`--connect` or `--listen`).
pub struct Native {
    endpoint: Endpoint,
    /// How long `--connect --once` keeps retrying a refused connection.
    patience: Duration,
    once: bool,
    congestion: Option<Congestion>,
    key: Option<Arc<Key>>,
    /// The viewer we connect to joins the hub at start-up, so frames encoded while the
    /// connection is made wait in its slot instead of counting as "no viewer".
    early: Option<Subscription>,
}

/// The options of the native transport (from `SendConfig`).
pub struct NativeOptions {
    pub patience: Duration,
    pub once: bool,
    pub congestion: Option<Congestion>,
    pub key: Option<Key>,
}

impl Native {
    /// A transport for `endpoint`; a viewer to connect to joins `hub` now.
    pub fn new(endpoint: Endpoint, opts: NativeOptions, hub: &Hub) -> Self {
        let early = match &endpoint {
            Endpoint::Connect(addr) => Some(hub.subscribe(KIND, addr.clone())),
            _ => None,
        };
        let NativeOptions { patience, once, congestion, key } = opts;
        Native { endpoint, patience, once, congestion, key: key.map(Arc::new), early }
    }
}

impl Transport for Native {
    fn name(&self) -> &'static str {
        "net-tx"
    }

    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Native { endpoint, patience, once, congestion, key, early } = *self;
        let ctx = Ctx { feed, congestion, key };
        match endpoint {
            Endpoint::None | Endpoint::Udp(..) => Ok(()),
            Endpoint::Connect(addr) if once => ctx.call(&addr, Policy::once(patience), true, early),
            Endpoint::Connect(addr) => ctx.call(&addr, Policy::reconnect(), false, early),
            Endpoint::Listen(listener) => ctx.listen(listener),
        }
    }
}

/// What every native viewer's thread shares.
#[derive(Clone)]
struct Ctx {
    feed: Feed,
    congestion: Option<Congestion>,
    key: Option<Arc<Key>>,
}

/// How a viewer's connection ended without an error.
enum Outcome {
    /// The pipeline ended and the stream was closed cleanly.
    Finished,
    /// The viewer closed the connection.
    PeerLeft,
}

impl Ctx {
    /// `--connect`: calls the viewer as `policy` says. With `--once` the stream ends when this
    /// one viewer does (and its error is the sender's), and frames wait in the subscription made
    /// at start-up until it answers (a lossless source waits for it, so nothing is lost); only
    /// Ctrl-C or the policy's patience stop the calling. Otherwise the viewer may come and go
    /// and is called again with backoff until the pipeline ends: the first connection uses the
    /// subscription made at start-up, which is dropped while the viewer is away (encoding
    /// pauses), and each later one subscribes afresh after its handshake.
    fn call(&self, addr: &str, policy: Policy, once: bool, early: Option<Subscription>) -> anyhow::Result<()> {
        let early = std::cell::RefCell::new(early);
        let mut failed = None;
        let stopped = || self.feed.stop.load(Ordering::Relaxed);
        let ended = || stopped() || self.feed.hub.is_closed();
        let done: &dyn Fn() -> bool = if once { &stopped } else { &ended };
        let serve = |stream: TcpStream, n: u64| {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if n > 1 {
                self.feed.meter.update(|c| c.reconnects += 1);
            }
            info!(viewer = %peer, connection = n, "connected to viewer");
            match self.serve(stream, &peer, early.borrow_mut().take()) {
                Ok(Outcome::Finished) => {
                    info!("stream finished");
                    return Session::Stop;
                }
                Ok(Outcome::PeerLeft) => info!(viewer = %peer, "viewer closed the connection"),
                Err(e) if once => failed = Some(e),
                Err(e) => warn!(viewer = %peer, error = format!("{e:#}"), "lost the viewer"),
            }
            Session::Again
        };
        let away = || {
            if !once {
                drop(early.borrow_mut().take());
            }
        };
        let res = connect(addr, "viewer", policy, done, serve, away);
        if once || res.is_err() {
            self.feed.finish();
        }
        res.context("--connect")?;
        failed.map_or(Ok(()), |e| Err(e).context("connection to the viewer failed"))
    }

    /// `--listen`: any number of viewers, each on a thread of its own, until the stream ends.
    fn listen(&self, listener: TcpListener) -> anyhow::Result<()> {
        info!(addr = ?listener.local_addr().ok(), "waiting for viewers");
        let mut viewers: Vec<(Stage, String)> = Vec::new();
        accept_loop(&listener, &|| self.feed.hub.is_closed(), |stream, peer| {
            viewers.retain(|(h, _)| !h.is_finished());
            let peer = peer.to_string();
            info!(%peer, "viewer connected");
            let (ctx, name, p) = (self.clone(), format!("viewer-{peer}"), peer.clone());
            let spawned = stage::spawn(name.clone(), move || {
                match ctx.serve(stream, &p, None) {
                    Ok(Outcome::Finished) => debug!(peer = %p, "stream finished"),
                    Ok(Outcome::PeerLeft) => info!(peer = %p, "viewer closed the connection"),
                    Err(e) => warn!(peer = %p, error = format!("{e:#}"), "dropped viewer"),
                }
                Ok(())
            });
            match spawned {
                Ok(h) => viewers.push((h, name)),
                Err(e) => warn!(%peer, error = format!("{e:#}"), "cannot serve a viewer"),
            }
            Next::Accept
        })
        .context("cannot accept viewers")?;
        for (h, name) in viewers {
            if let Err(e) = stage::join(h, &name) {
                warn!("{e:#}");
            }
        }
        Ok(())
    }

    /// Streams to one viewer until the stream ends or the viewer leaves.
    fn serve(&self, stream: TcpStream, peer: &str, sub: Option<Subscription>) -> anyhow::Result<Outcome> {
        let (reader, writer) = self.handshake(&stream, peer)?;
        let sub = sub.unwrap_or_else(|| self.feed.hub.subscribe(KIND, peer.to_string()));
        self.feed.feedback(Feedback::NewLink);
        let (events_tx, events) = bounded(EVENTS);
        let acks = stage::spawn("ack-rx", move || read_events(reader, events_tx))?;
        let mut viewer = Viewer {
            feed: &self.feed,
            peer,
            writer,
            sub,
            window: Window::default(),
            congestion: self.congestion,
            announced: self.feed.stream,
            full_since: None,
        };
        let result = viewer.stream(&events);
        if matches!(result, Ok(Outcome::Finished)) {
            // Tell the viewer we are done and give it a moment to acknowledge the last frames.
            let _ = stream.shutdown(Shutdown::Write);
            viewer.linger(&events);
        }
        let _ = stream.shutdown(Shutdown::Both);
        // The reader ends at the socket's end, or when its events have nowhere to go.
        drop(events);
        if let Err(e) = stage::join(acks, "ack-rx") {
            warn!("{e:#}");
        }
        result
    }

    /// Sets the socket up, exchanges hellos (and proves the key, with one) and announces the
    /// stream. Returns the connection's two halves.
    fn handshake(
        &self,
        stream: &TcpStream,
        peer: &str,
    ) -> anyhow::Result<(MessageReader<LinkRead>, MessageWriter<LinkWrite>)> {
        configure(stream, POLL)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        if let Some(cc) = self.congestion {
            match limit_send_queue(stream, cc.send_queue) {
                Ok(how) => debug!(%peer, max_in_flight = cc.max_in_flight, "send queue limited with {how}"),
                Err(e) => {
                    warn!(%peer, error = %e, "cannot limit the kernel send queue; latency may grow on a slow link")
                }
            }
        }
        let mut writer = MessageWriter::new(stream.try_clone()?);
        let mut reader = MessageReader::new(stream.try_clone()?);
        let ours = Hello::new(Role::Sender, clock_id()).keyed(self.key.is_some());
        writer.write_hello(&ours)?;
        let hello = reader.read_hello(Role::Receiver, Duration::from_secs(5)).context("handshake")?;
        // With a key: the viewer proves it holds it before anything else is sent.
        let (reader, mut writer) =
            secure::upgrade(reader, writer, &ours, &hello, self.key.as_deref(), Duration::from_secs(5))
                .context("access control")?;
        debug!(version = hello.version, secure = reader.get_ref().is_secure(), "viewer handshake done");
        writer.write_message(&Message::StreamInfo(self.feed.stream))?;
        Ok((reader, writer))
    }
}

/// What a viewer's reader tells its writer.
#[derive(Debug)]
enum FromViewer {
    /// The viewer acknowledged frame `seq`; the acknowledgement arrived at `at_us`.
    Ack {
        seq: u64,
        at_us: u64,
    },
    /// A clock-sync ping, answered with this pong (`t2` stamped on arrival).
    Ping(Pong),
    Request(ViewerRequest),
    /// The viewer's latest stats interval.
    Report(Box<Report>),
    /// The connection ended (closed, reset, or bad input, already logged).
    Gone,
}

/// The `ack-rx` thread: reads the viewer's messages into events until the connection ends or
/// the writer stops listening. It owns only the read half.
fn read_events(mut reader: MessageReader<LinkRead>, tx: Sender<FromViewer>) -> anyhow::Result<()> {
    let peer = reader.get_ref().peer_addr().ok();
    loop {
        let event = match reader.next_event() {
            Ok(Event::Message(Message::Ack(a))) => FromViewer::Ack { seq: a.seq, at_us: now_us() },
            Ok(Event::Message(Message::Ping(p))) => {
                FromViewer::Ping(Pong { id: p.id, t1_us: p.t1_us, t2_us: now_us(), t3_us: 0 })
            }
            Ok(Event::Message(Message::SetQuality(q))) => FromViewer::Request(ViewerRequest::Quality(q)),
            Ok(Event::Message(Message::QualityStep(n))) => FromViewer::Request(ViewerRequest::Step(n)),
            Ok(Event::Message(Message::Report(json))) => match viewer_report(json) {
                Some(v) => FromViewer::Report(v),
                None => continue,
            },
            Ok(Event::Message(other)) => {
                debug!(message = ?other, "ignored message from viewer");
                continue;
            }
            Ok(Event::Idle) => continue,
            Ok(Event::Eof) => break,
            Err(NetError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::NotConnected
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                break
            }
            Err(e) => {
                warn!(viewer = ?peer, error = %e, "bad input from viewer; closing the connection");
                break;
            }
        };
        if tx.send(event).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(FromViewer::Gone);
    Ok(())
}

/// A viewer's stats report, if it is one.
fn viewer_report(json: &[u8]) -> Option<Box<Report>> {
    match stats::parse_viewer_report(json) {
        Ok(r) => Some(Box::new(r)),
        Err(e) => {
            debug!(error = %e, "ignored a malformed report from the viewer");
            None
        }
    }
}

/// One native viewer's writer side: the only owner of the write half and the window.
struct Viewer<'a> {
    feed: &'a Feed,
    peer: &'a str,
    writer: MessageWriter<LinkWrite>,
    sub: Subscription,
    window: Window,
    congestion: Option<Congestion>,
    /// The frame size the viewer was last told.
    announced: StreamInfo,
    /// Since when the window has been full.
    full_since: Option<Instant>,
}

impl Viewer<'_> {
    /// Writes frames as the window allows, answering the viewer's events in between.
    fn stream(&mut self, events: &Receiver<FromViewer>) -> anyhow::Result<Outcome> {
        let frames: Receiver<Shared> = (*self.sub.rx).clone();
        let waiting = never();
        loop {
            // Events first: a pong is not kept waiting behind a frame, and acknowledgements
            // open the window before it is judged.
            while let Ok(ev) = events.try_recv() {
                if let Some(end) = self.on_event(ev) {
                    return Ok(end);
                }
            }
            let room = self.has_room();
            if !room {
                if let Some(end) = self.stalled()? {
                    return Ok(end);
                }
            }
            // The newest frame waits in the slot until the viewer has acknowledged enough: a
            // stalled link holds a bounded number of frames, not seconds.
            let slot = if room { &frames } else { &waiting };
            select! {
                recv(events) -> ev => {
                    if let Some(end) = self.on_event(ev.unwrap_or(FromViewer::Gone)) {
                        return Ok(end);
                    }
                }
                recv(slot) -> frame => {
                    let Ok(f) = frame else { return Ok(Outcome::Finished) };
                    if let Some(end) = self.send(f, events)? {
                        return Ok(end);
                    }
                }
                default(POLL) => {}
            }
        }
    }

    /// Whether the window has room for another frame; marks the link congested while not.
    fn has_room(&mut self) -> bool {
        let Some(cc) = self.congestion else { return true };
        let room = self.window.len() < cc.max_in_flight;
        self.sub.counters.congested.store(!room, Ordering::Relaxed);
        if room {
            self.full_since = None;
        } else {
            self.full_since.get_or_insert_with(Instant::now);
        }
        room
    }

    /// With a full window: the end of the stream, or a viewer gone silent. Nothing is written
    /// while the window is full, so no write timeout can notice a viewer that vanished
    /// without closing: this does.
    fn stalled(&self) -> anyhow::Result<Option<Outcome>> {
        if self.feed.hub.is_closed() {
            return Ok(Some(Outcome::Finished));
        }
        if self.full_since.is_some_and(|t| t.elapsed() > WRITE_TIMEOUT) {
            return Err(anyhow!(
                "no acknowledgement from the viewer for {} s with {} frames in flight; dropping it",
                WRITE_TIMEOUT.as_secs(),
                self.window.len()
            ));
        }
        Ok(None)
    }

    /// Handles one event from the reader; returns how the connection ended, if it did.
    fn on_event(&mut self, ev: FromViewer) -> Option<Outcome> {
        match ev {
            FromViewer::Ack { seq, at_us } => self.on_ack(seq, at_us),
            FromViewer::Ping(mut pong) => {
                pong.t3_us = now_us();
                if let Err(e) = self.writer.write_message(&Message::Pong(pong)) {
                    debug!(error = %e, "cannot answer a clock-sync ping");
                }
            }
            FromViewer::Request(r) => {
                let _ = self.feed.requests.try_send(r);
            }
            FromViewer::Report(r) => self.feed.meter.update(|c| c.viewer = Some(r.clone())),
            FromViewer::Gone => return Some(Outcome::PeerLeft),
        }
        None
    }

    fn on_ack(&mut self, seq: u64, at_us: u64) {
        let (acked, bytes) = self.window.ack(seq);
        if let Some(s) = acked {
            self.feed.meter.update(|c| {
                let _ = c.ack_rtt.record(at_us.saturating_sub(s.send_us).max(1));
            });
            self.feed.feedback(Feedback::Acked { at_us, bytes, capture_us: s.capture_us, waited_for_loss: false });
        }
    }

    /// Writes one frame (announcing a new frame size first) and puts it in the window.
    /// Returns `PeerLeft` if the write failed because the viewer closed the connection.
    fn send(&mut self, frame: Shared, events: &Receiver<FromViewer>) -> anyhow::Result<Option<Outcome>> {
        let mut header = frame.header;
        let size = (u32::from(header.width), u32::from(header.height));
        let mut res = Ok(());
        if size != (self.announced.width, self.announced.height) {
            // The rate controller changed the frame size: announce it first.
            self.announced = StreamInfo { width: size.0, height: size.1, ..self.announced };
            debug!(peer = %self.peer, width = size.0, height = size.1, "frame size changed");
            res = self.writer.write_message(&Message::StreamInfo(self.announced));
        }
        header.send_us = now_us();
        let jpeg = frame.jpeg.as_slice();
        if let Err(e) = res.and_then(|()| self.writer.write_frame(&header, jpeg)) {
            if viewer_left(events) {
                return Ok(Some(Outcome::PeerLeft));
            }
            return Err(e).context("cannot write a frame");
        }
        let len = jpeg.len() as u64;
        let sent = Sent { seq: header.seq, send_us: header.send_us, capture_us: header.capture_us, bytes: len };
        let in_flight = self.window.push(sent);
        self.feed.feedback(Feedback::InFlight(in_flight));
        self.feed.sent_captured(&self.sub, len, header.capture_us);
        Ok(None)
    }

    /// After the last frame: takes the viewer's last acknowledgements until it closes its side
    /// or [`LINGER`] passes.
    fn linger(&mut self, events: &Receiver<FromViewer>) {
        let until = Instant::now() + LINGER;
        loop {
            match events.recv_deadline(until) {
                Ok(FromViewer::Ack { seq, at_us }) => self.on_ack(seq, at_us),
                Ok(FromViewer::Gone) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// After a failed write: whether the reader saw the viewer close the connection (a closed
/// connection fails the write too, and that is no error). Waits briefly for the reader to
/// get there.
fn viewer_left(events: &Receiver<FromViewer>) -> bool {
    let until = Instant::now() + POLL;
    loop {
        match events.recv_deadline(until) {
            Ok(FromViewer::Gone) | Err(RecvTimeoutError::Disconnected) => return true,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// A frame written to a viewer and not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    seq: u64,
    send_us: u64,
    capture_us: u64,
    bytes: u64,
}

/// A viewer's frames in flight: written and not yet acknowledged, oldest first.
#[derive(Debug, Default)]
struct Window {
    sent: VecDeque<Sent>,
}

impl Window {
    /// Most frames remembered when nothing bounds them (no congestion control).
    const MEMORY: usize = 256;

    fn len(&self) -> usize {
        self.sent.len()
    }

    /// Adds a frame just written; returns the frames now in flight. Beyond [`MEMORY`]
    /// the oldest is forgotten.
    ///
    /// [`MEMORY`]: Window::MEMORY
    fn push(&mut self, s: Sent) -> usize {
        if self.sent.len() >= Self::MEMORY {
            self.sent.pop_front();
        }
        self.sent.push_back(s);
        self.sent.len()
    }

    /// An acknowledgement of `seq` also covers every frame before it (the viewer drops
    /// stale frames without acknowledging them). Returns the frame acknowledged, if it was
    /// in flight, and the bytes of every frame it covered.
    fn ack(&mut self, seq: u64) -> (Option<Sent>, u64) {
        let (mut matched, mut bytes) = (None, 0);
        while let Some(s) = self.sent.front().copied().filter(|s| s.seq <= seq) {
            self.sent.pop_front();
            bytes += s.bytes;
            if s.seq == seq {
                matched = Some(s);
            }
        }
        (matched, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pattern::PatternSource;
    use crate::capture::FrameSource;
    use crate::format::Subsampling;
    use crate::net::proto::{Ack, Ping};
    use crate::sender::{run, SendConfig, SourceFactory};
    use crate::stats::StatsConfig;
    use std::sync::atomic::AtomicBool;

    fn sent(seq: u64) -> Sent {
        Sent { seq, send_us: seq * 10, capture_us: seq, bytes: 100 + seq }
    }

    #[test]
    fn an_ack_covers_the_frames_before_it() {
        let mut w = Window::default();
        for seq in [3, 4, 6, 7] {
            w.push(sent(seq));
        }
        // The viewer dropped 4 without acknowledging it: the ack of 6 covers 3, 4 and 6.
        assert_eq!(w.ack(6), (Some(sent(6)), 103 + 104 + 106));
        assert_eq!(w.len(), 1);
        // An ack of a frame no longer in flight (already covered) matches nothing.
        assert_eq!(w.ack(4), (None, 0));
        // An ack of a frame that was never sent still covers the ones before it.
        assert_eq!(w.ack(9), (None, 107));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn the_window_remembers_a_bounded_number_of_frames() {
        let mut w = Window::default();
        for seq in 0..(Window::MEMORY as u64 + 10) {
            assert!(w.push(sent(seq)) <= Window::MEMORY);
        }
        assert_eq!(w.len(), Window::MEMORY);
        // The oldest were forgotten: an ack of the first remembered frame matches it alone.
        assert_eq!(w.ack(10), (Some(sent(10)), 110));
    }

    /// A viewer that never acknowledges: the sender fills its window of 2 and stops. It must
    /// still answer a ping, and the next acknowledgement must let frames flow again.
    #[test]
    fn a_viewer_with_a_full_window_gets_pongs_and_its_acks_are_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = SendConfig {
            endpoint: Endpoint::Listen(listener),
            fps: 50,
            quality: 50,
            subsampling: Subsampling::S420,
            reencode_jpeg: false,
            frames: None,
            duration: Some(Duration::from_secs(20)),
            stats: StatsConfig { enabled: false, ..StatsConfig::default() },
            connect_patience: Duration::from_secs(1),
            once: false,
            http: None,
            publish: None,
            rtsp: None,
            restart_rows: 0,
            fast_dct: false,
            encode_threads: crate::codec::threads::CodecThreads::Auto,
            key: None,
            congestion: Some(Congestion { max_in_flight: 2, send_queue: Congestion::SEND_QUEUE }),
            control: None,
        };
        let source: SourceFactory =
            Box::new(|| Ok(Box::new(PatternSource::new(64, 48, Subsampling::S420)) as Box<dyn FrameSource>));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || run(cfg, source, stop))
        };
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut w = MessageWriter::new(stream.try_clone().unwrap());
        let mut r = MessageReader::new(stream.try_clone().unwrap());
        w.write_hello(&Hello::new(Role::Receiver, clock_id())).unwrap();
        r.read_hello(Role::Sender, Duration::from_secs(5)).unwrap();

        // Reads for `wait`; returns the frames' sequence numbers and the pongs' ids.
        let mut read_for = |wait: Duration| {
            let (mut frames, mut pongs) = (Vec::new(), Vec::new());
            let until = Instant::now() + wait;
            while Instant::now() < until {
                match r.next_event().unwrap() {
                    Event::Message(Message::Frame(h, _)) => frames.push(h.seq),
                    Event::Message(Message::Pong(p)) => pongs.push(p.id),
                    Event::Eof => break,
                    _ => {}
                }
            }
            (frames, pongs)
        };
        let (frames, _) = read_for(Duration::from_millis(800));
        assert_eq!(frames.len(), 2, "the window holds 2 frames, got {frames:?}");

        w.write_message(&Message::Ping(Ping { id: 7, t1_us: now_us() })).unwrap();
        let (more, pongs) = read_for(Duration::from_millis(600));
        assert_eq!(pongs, vec![7], "no pong while the window was full");
        assert!(more.is_empty(), "frames beyond the window: {more:?}");

        let last = frames[1];
        w.write_message(&Message::Ack(Ack { seq: last, ..Ack::default() })).unwrap();
        let (after, _) = read_for(Duration::from_millis(600));
        assert!(!after.is_empty() && after.iter().all(|&s| s > last), "the ack did not open the window: {after:?}");

        stop.store(true, Ordering::Relaxed);
        drop((w, r, stream));
        sender.join().unwrap().unwrap();
    }
}
