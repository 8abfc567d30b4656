//! The sender pipeline:
//!
//! ```text
//! capture ──latest(1)──▶ encode ──hub──┬─ latest(1) ─▶ viewer-N ──TCP──▶ framecast recv
//!                                      │               ack-rx  ◀──TCP── (acks, pings, reports)
//!                                      └─ latest(1) ─▶ http-N ──HTTP──▶ browser, VLC, ffmpeg
//! ```
//!
//! Each arrow is a newest-frame-wins slot: a stage or viewer that falls behind loses its
//! oldest queued frame, counted by cause, and never blocks the stage before it. Each frame
//! is encoded once whatever the number of viewers, and not at all while nobody watches.
//! Shutdown flows downstream: capture stops (frame limit, duration, end of file, Ctrl-C) and
//! drops its sender, encode's loop ends and closes the hub, and every viewer finishes.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use tracing::{debug, info, warn};

use crate::capture::{CaptureError, FrameSource, RawFrame};
use crate::chan::{latest, LatestReceiver, LatestSender, Pool};
use crate::clock::{clock_id, now_us};
use crate::codec::{Encoder, Speed};
use crate::hub::{FrameRing, Hub, Subscription, ViewerKind};
use crate::net::io::{configure, connect_with_retry, wait_for_peer};
use crate::net::proto::Pong;
use crate::net::{
    Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, NetError, Role, StreamInfo, Subsampling,
};
use crate::stats::{self, DropCause, Meter, Report, Side, StatsConfig};

/// Where the sender's native viewers are.
#[derive(Debug)]
pub enum Endpoint {
    /// Connect to a listening viewer at HOST:PORT; the stream ends when it leaves.
    Connect(String),
    /// Serve any number of viewers on a bound socket, joining and leaving at any time.
    Listen(TcpListener),
    /// No native viewers (HTTP only).
    None,
}

/// A checked sender configuration (see `cli` for the flags behind each field).
#[derive(Debug)]
pub struct SendConfig {
    pub endpoint: Endpoint,
    /// Frames per second to capture; 0 means as fast as possible.
    pub fps: u32,
    pub quality: u8,
    /// Subsampling for sources that are not planar YCbCr already.
    pub subsampling: Subsampling,
    /// Re-encode a camera's MJPEG at `quality` instead of forwarding it.
    pub reencode_jpeg: bool,
    pub frames: Option<u64>,
    pub duration: Option<Duration>,
    pub stats: StatsConfig,
    /// How long `Connect` keeps retrying a refused connection.
    pub connect_patience: Duration,
    /// Serve HTTP (page, MJPEG stream, snapshot, stats) on this socket.
    pub http: Option<TcpListener>,
    /// libjpeg-turbo's fast integer DCT (see `codec::Speed`).
    pub fast_dct: bool,
}

/// Opens the source on the capture thread (a camera handle may not move between threads).
pub type SourceFactory = Box<dyn FnOnce() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// How long a write may block before the viewer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout, which is also how often blocked threads look at their stop conditions.
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for the viewer's last acknowledgements after the last frame.
const LINGER: Duration = Duration::from_secs(2);

struct SourceInfo {
    width: u32,
    height: u32,
    self_paced: bool,
}

/// Runs the sender until the source ends, a limit is reached, `stop` is set, or (when
/// connecting) the viewer leaves. Returns the whole-run stats.
pub fn run(cfg: SendConfig, open_source: SourceFactory, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    let meter = cfg.stats.meter(Side::Sender);
    let json = stats::open_json(&cfg.stats)?;
    let raw_pool: Pool<RawFrame> = Pool::new(4);
    let (raw_tx, raw_rx) = latest::<RawFrame>(1);
    let (quality_tx, quality_rx) = bounded::<u8>(16);
    let (info_tx, info_rx) = bounded::<Result<SourceInfo, CaptureError>>(1);
    let hub = Arc::new(Hub::new());
    // The viewer we connect to is expected: it joins now, so frames encoded while the
    // connection is made wait in its slot instead of counting as "no viewer".
    let early = match &cfg.endpoint {
        Endpoint::Connect(addr) => Some(hub.subscribe(ViewerKind::Native, addr.clone())),
        _ => None,
    };
    // Set when the pipeline must end for a reason of its own (a connect-mode viewer left).
    let finish = Arc::new(AtomicBool::new(false));

    let capture = {
        let (meter, pool) = (meter.clone(), raw_pool.clone());
        let stops = [stop.clone(), finish.clone()];
        let limits = (cfg.fps, cfg.frames, cfg.duration);
        spawn("capture", move || capture_loop(open_source, info_tx, raw_tx, pool, meter, stops, limits))?
    };
    let info = match info_rx.recv() {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            let _ = capture.join();
            return Err(anyhow!(e)).context("cannot open the source");
        }
        Err(_) => return Err(join_err(capture.join(), "capture")).context("cannot open the source"),
    };

    // A source that is not live, read as fast as possible, waits for the stage after it
    // instead of dropping: every frame captured is encoded and every frame encoded is sent.
    let backpressure = cfg.fps == 0 && !info.self_paced;
    let encode = {
        let (meter, raw_pool, hub) = (meter.clone(), raw_pool.clone(), hub.clone());
        let enc = EncodeSettings {
            quality: cfg.quality,
            subsampling: cfg.subsampling,
            reencode: cfg.reencode_jpeg,
            backpressure,
            fast_dct: cfg.fast_dct,
        };
        spawn("encode", move || encode_loop(enc, raw_rx, raw_pool, hub, quality_rx, meter))?
    };
    let stream = StreamInfo { width: info.width, height: info.height, fps_milli: cfg.fps.saturating_mul(1000) };
    let latest_report = Arc::new(Mutex::new(None::<String>));
    let (done_tx, done_rx) = bounded::<()>(0);
    let reporter = {
        let (hub, meter2) = (hub.clone(), meter.clone());
        // Viewer links as of the end of each interval.
        let before: stats::BeforeReport = Box::new(move || {
            let links = hub.links();
            meter2.update(|c| {
                c.viewers = Some(links.len() as u64);
                c.links = serde_json::to_value(&links).ok();
            });
        });
        let latest_report = latest_report.clone();
        let on_report: stats::OnReport = Box::new(move |r: &Report| {
            if let Ok(json) = serde_json::to_string(r) {
                *latest_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(json);
            }
        });
        stats::spawn_reporter(meter.clone(), cfg.stats.clone(), json, done_rx, Some(before), Some(on_report))?
    };
    let http = match cfg.http {
        Some(listener) => {
            let (hub, meter, latest_report) = (hub.clone(), meter.clone(), latest_report.clone());
            Some(spawn("http", move || crate::http::serve(listener, hub, meter, latest_report))?)
        }
        None => None,
    };
    let net = {
        let ctx = ViewerContext { stream_info: stream, hub: hub.clone(), quality_tx, meter: meter.clone() };
        let (endpoint, patience, stop, finish) = (cfg.endpoint, cfg.connect_patience, stop.clone(), finish.clone());
        spawn("net-tx", move || net_loop(endpoint, patience, ctx, early, stop, finish))?
    };

    // Join source first and sink last.
    let mut results = vec![
        ("capture", join(capture, "capture")),
        ("encode", join(encode, "encode")),
        ("net-tx", join(net, "net-tx")),
    ];
    if let Some(h) = http {
        results.push(("http", join(h, "http")));
    }
    drop(done_tx);
    let summary = reporter.join().map_err(|_| anyhow!("stats thread panicked"))?;
    for (name, r) in results {
        r.with_context(|| format!("sender {name} stage failed"))?;
    }
    Ok(summary)
}

fn spawn<F>(name: &str, f: F) -> anyhow::Result<JoinHandle<anyhow::Result<()>>>
where
    F: FnOnce() -> anyhow::Result<()> + Send + 'static,
{
    thread::Builder::new().name(name.into()).spawn(f).with_context(|| format!("cannot start the {name} thread"))
}

pub(crate) fn join_err(r: thread::Result<anyhow::Result<()>>, name: &str) -> anyhow::Error {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => anyhow!("{name} ended early"),
        Err(_) => anyhow!("{name} thread panicked; look for the panic message above"),
    }
}

pub(crate) fn join(h: JoinHandle<anyhow::Result<()>>, name: &str) -> anyhow::Result<()> {
    match h.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow!("{name} thread panicked; look for the panic message above")),
    }
}

fn capture_loop(
    open_source: SourceFactory,
    info_tx: Sender<Result<SourceInfo, CaptureError>>,
    tx: LatestSender<RawFrame>,
    pool: Pool<RawFrame>,
    meter: Meter,
    stops: [Arc<AtomicBool>; 2],
    (fps, frames, duration): (u32, Option<u64>, Option<Duration>),
) -> anyhow::Result<()> {
    let mut source = match open_source() {
        Ok(s) => s,
        Err(e) => {
            let _ = info_tx.send(Err(e));
            return Ok(());
        }
    };
    let (width, height) = source.size();
    info!(source = %source.describe(), "capturing");
    if info_tx.send(Ok(SourceInfo { width, height, self_paced: source.self_paced() })).is_err() {
        return Ok(());
    }
    let period = (fps > 0 && !source.self_paced()).then(|| Duration::from_secs_f64(1.0 / f64::from(fps)));
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut next_at = started;
    let mut count = 0u64;
    loop {
        if stops.iter().any(|s| s.load(Ordering::Relaxed)) {
            info!("stop requested; capture ends");
            break;
        }
        if frames.is_some_and(|n| count >= n) {
            info!(frames = count, "frame limit reached; capture ends");
            break;
        }
        if let Some(p) = period {
            let now = Instant::now();
            if next_at > now {
                thread::sleep(next_at - now);
            } else if now - next_at > p {
                next_at = now; // fell behind by more than a frame: do not burst to catch up
            }
            next_at += p;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            info!(frames = count, "duration reached; capture ends");
            break;
        }
        let mut frame = pool.get(RawFrame::empty);
        if !source.next_frame(&mut frame).context("capture failed")? {
            info!(frames = count, "source ended");
            break;
        }
        frame.capture_us = now_us();
        meter.update(|c| c.captured += 1);
        count += 1;
        // As fast as possible: wait for the encoder rather than render frames to drop.
        let lossless = period.is_none() && !source.self_paced();
        let delivered = tx.deliver(frame, lossless, |old| {
            meter.count_drop(DropCause::EncoderBusy);
            pool.put(old);
        });
        if !delivered {
            break;
        }
    }
    Ok(())
}

struct EncodeSettings {
    quality: u8,
    subsampling: Subsampling,
    reencode: bool,
    backpressure: bool,
    fast_dct: bool,
}

fn encode_loop(
    settings: EncodeSettings,
    rx: LatestReceiver<RawFrame>,
    raw_pool: Pool<RawFrame>,
    hub: Arc<Hub>,
    quality_rx: Receiver<u8>,
    meter: Meter,
) -> anyhow::Result<()> {
    // Close the hub however this thread ends, so every viewer finishes.
    struct CloseHub(Arc<Hub>);
    impl Drop for CloseHub {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseHub(hub.clone());
    let EncodeSettings { quality, subsampling, reencode, backpressure, fast_dct } = settings;
    let mut enc = Encoder::new(quality, subsampling, reencode).context("cannot create the JPEG encoder")?;
    enc.set_speed(Speed { fast_dct, ..Speed::default() })?;
    let mut ring = FrameRing::default();
    let mut said_mode = false;
    let mut paused: Option<bool> = None;
    for raw in rx.iter() {
        if hub.viewers() == 0 {
            if paused != Some(true) {
                info!("no viewer: encoding paused (capture keeps running)");
                paused = Some(true);
            }
            meter.count_drop(DropCause::NoViewer);
            raw_pool.put(raw);
            if backpressure {
                // Nothing paces a lossless source while nobody watches.
                thread::sleep(POLL / 10);
            }
            continue;
        }
        if paused == Some(true) {
            info!(viewers = hub.viewers(), "encoding resumed");
        }
        paused = Some(false);
        if let Some(q) = quality_rx.try_iter().last() {
            if q != enc.quality() {
                info!(from = enc.quality(), to = q, "viewer asked for a new quality");
                enc.set_quality(q)?;
            }
        }
        let slot = ring.take();
        let frame = Arc::get_mut(slot).expect("the ring hands out frames nobody else holds");
        let start = now_us();
        let res = enc.encode(&raw, &mut frame.jpeg);
        let end = now_us();
        let info = match res {
            Ok(i) => i,
            Err(e) => {
                warn!(seq = raw.seq, error = %e, "cannot encode frame; skipped");
                meter.count_drop(DropCause::EncodeError);
                raw_pool.put(raw);
                continue;
            }
        };
        if !said_mode {
            if info.passthrough {
                info!("forwarding the camera's MJPEG without re-encoding (give --quality to re-encode)");
            } else {
                info!(quality = info.quality, subsampling = %info.subsampling, "encoding JPEG");
            }
            said_mode = true;
        }
        frame.header = FrameHeader {
            seq: raw.seq,
            capture_us: raw.capture_us,
            encode_start_us: start,
            encode_end_us: end,
            send_us: 0,
            width: raw.width as u16,
            height: raw.height as u16,
            quality: info.quality,
            subsampling: info.subsampling as u8,
            flags: if info.passthrough { FrameHeader::FLAG_PASSTHROUGH } else { 0 },
            jpeg_len: frame.jpeg.as_slice().len() as u32,
        };
        meter.update(|c| {
            c.encoded += 1;
            c.encode_us += end - start;
            c.quality = Some(info.quality);
        });
        raw_pool.put(raw);
        hub.publish(slot.clone(), backpressure, &meter);
    }
    Ok(())
}

/// What every native viewer's thread shares.
#[derive(Clone)]
struct ViewerContext {
    stream_info: StreamInfo,
    hub: Arc<Hub>,
    quality_tx: Sender<u8>,
    meter: Meter,
}

fn net_loop(
    endpoint: Endpoint,
    patience: Duration,
    ctx: ViewerContext,
    early: Option<Subscription>,
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    match endpoint {
        Endpoint::None => Ok(()),
        Endpoint::Connect(addr) => {
            let stream = match connect_with_retry(&addr, patience, &stop) {
                Ok(s) => s,
                Err(e) => {
                    finish.store(true, Ordering::Relaxed);
                    return Err(e).context("--connect");
                }
            };
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            info!(viewer = %peer, "connected to viewer");
            let result = ctx.serve(stream, &peer, early);
            // With one viewer that we called, the stream ends when it does.
            finish.store(true, Ordering::Relaxed);
            match result {
                Ok(Outcome::Finished) => info!("stream finished"),
                Ok(Outcome::PeerLeft) => info!("viewer closed the connection"),
                Err(e) => return Err(e).context("connection to the viewer failed"),
            }
            Ok(())
        }
        Endpoint::Listen(listener) => {
            listener.set_nonblocking(true).context("cannot poll the listening socket")?;
            info!(addr = ?listener.local_addr().ok(), "waiting for viewers");
            let mut viewers: Vec<JoinHandle<()>> = Vec::new();
            while !ctx.hub.is_closed() {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false)?;
                        let peer = peer.to_string();
                        info!(%peer, "viewer connected");
                        let ctx = ctx.clone();
                        let handle = thread::Builder::new().name(format!("viewer-{peer}")).spawn(move || match ctx
                            .serve(stream, &peer, None)
                        {
                            Ok(Outcome::Finished) => debug!(%peer, "stream finished"),
                            Ok(Outcome::PeerLeft) => info!(%peer, "viewer closed the connection"),
                            Err(e) => warn!(%peer, error = format!("{e:#}"), "dropped viewer"),
                        })?;
                        viewers.push(handle);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_for_peer(&listener, POLL)?;
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        thread::sleep(POLL);
                    }
                }
                viewers.retain(|h| !h.is_finished());
            }
            for h in viewers {
                if h.join().is_err() {
                    warn!("a viewer thread panicked; look for the panic message above");
                }
            }
            Ok(())
        }
    }
}

enum Outcome {
    /// The pipeline ended and the stream was closed cleanly.
    Finished,
    /// The viewer closed the connection.
    PeerLeft,
}

impl ViewerContext {
    /// Streams to one native viewer until the stream ends or the viewer leaves.
    fn serve(&self, stream: TcpStream, peer: &str, sub: Option<Subscription>) -> anyhow::Result<Outcome> {
        configure(&stream, POLL)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut writer = MessageWriter::new(stream.try_clone()?);
        let mut reader = MessageReader::new(stream.try_clone()?);
        writer.write_hello(&Hello::new(Role::Sender, clock_id()))?;
        let hello = reader.read_hello(Role::Receiver, Duration::from_secs(5)).context("handshake")?;
        debug!(version = hello.version, "viewer handshake done");
        writer.write_message(&Message::StreamInfo(self.stream_info))?;
        // Shared with ack-rx, which answers clock-sync pings between frames.
        let writer = Arc::new(Mutex::new(writer));
        let sub = sub.unwrap_or_else(|| self.hub.subscribe(ViewerKind::Native, peer.to_string()));

        let sent_at = Arc::new(Mutex::new(VecDeque::<(u64, u64)>::with_capacity(256)));
        let peer_gone = Arc::new(AtomicBool::new(false));
        let acks = {
            let (sent_at, peer_gone, writer) = (sent_at.clone(), peer_gone.clone(), writer.clone());
            let (meter, quality_tx) = (self.meter.clone(), self.quality_tx.clone());
            thread::Builder::new()
                .name("ack-rx".into())
                .spawn(move || ack_loop(reader, writer, sent_at, meter, quality_tx, peer_gone))?
        };

        let result = (|| -> anyhow::Result<Outcome> {
            loop {
                if peer_gone.load(Ordering::Relaxed) {
                    return Ok(Outcome::PeerLeft);
                }
                let frame = match sub.rx.recv_timeout(POLL) {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(Outcome::Finished),
                };
                let mut header = frame.header;
                let res = {
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    header.send_us = now_us();
                    w.write_frame(&header, frame.jpeg.as_slice())
                };
                let len = frame.jpeg.as_slice().len() as u64;
                let (seq, send_us) = (header.seq, header.send_us);
                drop(frame);
                if let Err(e) = res {
                    if peer_gone.load(Ordering::Relaxed) {
                        return Ok(Outcome::PeerLeft);
                    }
                    return Err(e).context("cannot write a frame");
                }
                {
                    let mut q = sent_at.lock().unwrap_or_else(|p| p.into_inner());
                    if q.len() == q.capacity() {
                        q.pop_front();
                    }
                    q.push_back((seq, send_us));
                }
                self.meter.update(|c| {
                    c.sent += 1;
                    c.frame_moved(len);
                });
                sub.counters.frames.fetch_add(1, Ordering::Relaxed);
                sub.counters.bytes.fetch_add(len, Ordering::Relaxed);
            }
        })();

        if matches!(result, Ok(Outcome::Finished)) {
            // Tell the viewer we are done and give it a moment to acknowledge the last frames.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let until = Instant::now() + LINGER;
            while !peer_gone.load(Ordering::Relaxed) && Instant::now() < until {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        if acks.join().is_err() {
            warn!("ack-rx thread panicked; look for the panic message above");
        }
        result
    }
}

fn ack_loop(
    mut reader: MessageReader<TcpStream>,
    writer: Arc<Mutex<MessageWriter<TcpStream>>>,
    sent_at: Arc<Mutex<VecDeque<(u64, u64)>>>,
    meter: Meter,
    quality_tx: Sender<u8>,
    peer_gone: Arc<AtomicBool>,
) {
    let peer: Option<SocketAddr> = reader.get_ref().peer_addr().ok();
    loop {
        match reader.next_event() {
            Ok(Event::Message(Message::Ack(a))) => {
                let now = now_us();
                let sent = {
                    let q = sent_at.lock().unwrap_or_else(|p| p.into_inner());
                    q.iter().rev().find(|(s, _)| *s == a.seq).map(|(_, t)| *t)
                };
                if let Some(t) = sent {
                    meter.update(|c| {
                        let _ = c.ack_rtt.record(now.saturating_sub(t).max(1));
                    });
                }
            }
            Ok(Event::Message(Message::SetQuality(q))) => {
                let _ = quality_tx.try_send(q);
            }
            Ok(Event::Message(Message::Ping(p))) => {
                let t2 = now_us();
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                let pong = Pong { id: p.id, t1_us: p.t1_us, t2_us: t2, t3_us: now_us() };
                if let Err(e) = w.write_message(&Message::Pong(pong)) {
                    debug!(error = %e, "cannot answer a clock-sync ping");
                }
            }
            Ok(Event::Message(Message::Report(json))) => match serde_json::from_slice::<serde_json::Value>(json) {
                Ok(v) if v.is_object() => meter.update(|c| c.viewer = Some(v.clone())),
                _ => debug!("ignored a report from the viewer that is not a JSON object"),
            },
            Ok(Event::Message(other)) => debug!(message = ?other, "ignored message from viewer"),
            Ok(Event::Idle) => {}
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
                let _ = reader.get_ref().shutdown(std::net::Shutdown::Both);
                break;
            }
        }
    }
    peer_gone.store(true, Ordering::Relaxed);
}
