//! The sender pipeline:
//!
//! ```text
//! capture ──latest(1)──▶ encode ──latest(1)──▶ net-tx ──TCP──▶ viewer
//!                                              ack-rx ◀──TCP── (acks, quality requests)
//! ```
//!
//! Each arrow is a newest-frame-wins channel: a stage that falls behind loses its oldest
//! queued frame, counted by cause, and never blocks the stage before it. Shutdown flows
//! downstream: capture stops (frame limit, duration, end of file, Ctrl-C) and drops its
//! sender, encode's loop ends and drops its own, and net-tx finishes the connection.

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
use crate::chan::{latest, LatestReceiver, LatestSender, Pool, Pushed};
use crate::clock::{clock_id, now_us};
use crate::codec::{Encoder, JpegBuf};
use crate::net::io::{configure, connect_with_retry};
use crate::net::proto::Pong;
use crate::net::{
    Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, NetError, Role, StreamInfo, Subsampling,
};
use crate::stats::{self, DropCause, Meter, Report, Side, StatsConfig};

/// Where the sender's viewer is.
#[derive(Debug)]
pub enum Endpoint {
    /// Connect to a listening viewer at HOST:PORT.
    Connect(String),
    /// Wait for viewers on a bound socket, one after another.
    Listen(TcpListener),
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
}

/// Opens the source on the capture thread (a camera handle may not move between threads).
pub type SourceFactory = Box<dyn FnOnce() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// An encoded frame on its way to the socket.
pub struct EncodedFrame {
    pub header: FrameHeader,
    pub jpeg: JpegBuf,
}

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
    let jpeg_pool: Pool<JpegBuf> = Pool::new(4);
    let (raw_tx, raw_rx) = latest::<RawFrame>(1);
    let (enc_tx, enc_rx) = latest::<EncodedFrame>(1);
    let (quality_tx, quality_rx) = bounded::<u8>(16);
    let (info_tx, info_rx) = bounded::<Result<SourceInfo, CaptureError>>(1);

    let capture = {
        let (meter, pool, stop) = (meter.clone(), raw_pool.clone(), stop.clone());
        let limits = (cfg.fps, cfg.frames, cfg.duration);
        spawn("capture", move || capture_loop(open_source, info_tx, raw_tx, pool, meter, stop, limits))?
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
        let (meter, raw_pool, jpeg_pool) = (meter.clone(), raw_pool.clone(), jpeg_pool.clone());
        let enc = EncodeSettings {
            quality: cfg.quality,
            subsampling: cfg.subsampling,
            reencode: cfg.reencode_jpeg,
            backpressure,
        };
        spawn("encode", move || encode_loop(enc, raw_rx, raw_pool, enc_tx, jpeg_pool, quality_rx, meter))?
    };
    let stream = StreamInfo { width: info.width, height: info.height, fps_milli: cfg.fps.saturating_mul(1000) };
    let (done_tx, done_rx) = bounded::<()>(0);
    let reporter = stats::spawn_reporter(meter.clone(), cfg.stats.clone(), json, done_rx, None)?;
    let net = {
        let meter = meter.clone();
        let stop = stop.clone();
        let (endpoint, patience) = (cfg.endpoint, cfg.connect_patience);
        spawn("net-tx", move || net_loop(endpoint, patience, stream, enc_rx, jpeg_pool, quality_tx, meter, stop))?
    };

    // Join source first and sink last.
    let results =
        [("capture", join(capture, "capture")), ("encode", join(encode, "encode")), ("net-tx", join(net, "net-tx"))];
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
    stop: Arc<AtomicBool>,
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
        if stop.load(Ordering::Relaxed) {
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
        if period.is_none() && !source.self_paced() {
            // As fast as possible: wait for the encoder rather than render frames to drop.
            if tx.send_blocking(frame).is_err() {
                break;
            }
            continue;
        }
        match tx.push(frame) {
            Pushed::Sent => {}
            Pushed::Replaced(old) => {
                meter.count_drop(DropCause::EncoderBusy);
                pool.put(old);
            }
            Pushed::Disconnected(_) => break,
        }
    }
    Ok(())
}

struct EncodeSettings {
    quality: u8,
    subsampling: Subsampling,
    reencode: bool,
    backpressure: bool,
}

fn encode_loop(
    settings: EncodeSettings,
    rx: LatestReceiver<RawFrame>,
    raw_pool: Pool<RawFrame>,
    tx: LatestSender<EncodedFrame>,
    jpeg_pool: Pool<JpegBuf>,
    quality_rx: Receiver<u8>,
    meter: Meter,
) -> anyhow::Result<()> {
    let EncodeSettings { quality, subsampling, reencode, backpressure } = settings;
    let mut enc = Encoder::new(quality, subsampling, reencode).context("cannot create the JPEG encoder")?;
    let mut said_mode = false;
    for raw in rx.iter() {
        if let Some(q) = quality_rx.try_iter().last() {
            if q != enc.quality() {
                info!(from = enc.quality(), to = q, "viewer asked for a new quality");
                enc.set_quality(q)?;
            }
        }
        let mut jpeg = jpeg_pool.get(JpegBuf::default);
        let start = now_us();
        let res = enc.encode(&raw, &mut jpeg);
        let end = now_us();
        let info = match res {
            Ok(i) => i,
            Err(e) => {
                warn!(seq = raw.seq, error = %e, "cannot encode frame; skipped");
                meter.count_drop(DropCause::EncodeError);
                jpeg_pool.put(jpeg);
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
        let len = jpeg.as_slice().len();
        let header = FrameHeader {
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
            jpeg_len: len as u32,
        };
        meter.update(|c| {
            c.encoded += 1;
            c.encode_us += end - start;
            c.quality = Some(info.quality);
        });
        raw_pool.put(raw);
        if backpressure {
            if tx.send_blocking(EncodedFrame { header, jpeg }).is_err() {
                break;
            }
            continue;
        }
        match tx.push(EncodedFrame { header, jpeg }) {
            Pushed::Sent => {}
            Pushed::Replaced(old) => {
                meter.count_drop(DropCause::SocketBusy);
                jpeg_pool.put(old.jpeg);
            }
            Pushed::Disconnected(_) => break,
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn net_loop(
    endpoint: Endpoint,
    patience: Duration,
    stream_info: StreamInfo,
    rx: LatestReceiver<EncodedFrame>,
    pool: Pool<JpegBuf>,
    quality_tx: Sender<u8>,
    meter: Meter,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let conn = Connection { stream_info, rx: &rx, pool: &pool, quality_tx: &quality_tx, meter: &meter };
    match endpoint {
        Endpoint::Connect(addr) => {
            let stream = connect_with_retry(&addr, patience, &stop).context("--connect")?;
            let peer = stream.peer_addr().ok();
            info!(viewer = ?peer, "connected to viewer");
            match conn.serve(stream) {
                Ok(Outcome::Finished) => info!("stream finished"),
                Ok(Outcome::PeerLeft) => info!("viewer closed the connection"),
                Err(e) => return Err(e).context("connection to the viewer failed"),
            }
        }
        Endpoint::Listen(listener) => {
            listener.set_nonblocking(true).context("cannot poll the listening socket")?;
            let local = listener.local_addr().ok();
            info!(addr = ?local, "waiting for viewers");
            let mut waiting_logged = false;
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        waiting_logged = false;
                        stream.set_nonblocking(false)?;
                        info!(%peer, "viewer connected");
                        match conn.serve(stream) {
                            Ok(Outcome::Finished) => break,
                            Ok(Outcome::PeerLeft) => info!(%peer, "viewer left; waiting for the next one"),
                            Err(e) => {
                                warn!(%peer, error = format!("{e:#}"), "dropped viewer; waiting for the next one")
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if !waiting_logged {
                            debug!("no viewer connected; encoded frames are dropped");
                            waiting_logged = true;
                        }
                        // Nobody watches: take what the encoder made and count it.
                        match rx.recv_timeout(POLL) {
                            Ok(f) => {
                                meter.count_drop(DropCause::NoViewer);
                                pool.put(f.jpeg);
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        thread::sleep(POLL);
                    }
                }
            }
        }
    }
    Ok(())
}

enum Outcome {
    /// The pipeline ended and the stream was closed cleanly.
    Finished,
    /// The viewer closed the connection.
    PeerLeft,
}

struct Connection<'a> {
    stream_info: StreamInfo,
    rx: &'a LatestReceiver<EncodedFrame>,
    pool: &'a Pool<JpegBuf>,
    quality_tx: &'a Sender<u8>,
    meter: &'a Meter,
}

impl Connection<'_> {
    fn serve(&self, stream: TcpStream) -> anyhow::Result<Outcome> {
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
                let mut frame = match self.rx.recv_timeout(POLL) {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(Outcome::Finished),
                };
                let res = {
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    frame.header.send_us = now_us();
                    w.write_frame(&frame.header, frame.jpeg.as_slice())
                };
                let len = frame.jpeg.as_slice().len() as u64;
                let (seq, send_us) = (frame.header.seq, frame.header.send_us);
                self.pool.put(frame.jpeg);
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
                    c.bytes += len;
                });
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
