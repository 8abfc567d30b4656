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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use tracing::{debug, info, warn};

use crate::capture::{nosignal, CaptureError, FrameSource, Layout, RawFrame};
use crate::chan::{latest, LatestReceiver, LatestSender, Pool};
use crate::clock::{clock_id, now_us};
use crate::codec::{Encoder, Speed};
use crate::control::{ControlConfig, Controller};
use crate::hub::{FrameRing, Hub, Subscription, ViewerKind};
use crate::net::io::{
    configure, connect_with_retry, keep_connected, limit_send_queue, wait_for_peer, Backoff, Session,
};
use crate::net::proto::Pong;
use crate::net::secure::{self, Key, LinkRead, LinkWrite};
use crate::net::{
    Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, NetError, Role, StreamInfo, Subsampling,
};
use crate::stage::{join, join_early, spawn};
use crate::stats::{self, DropCause, Meter, Report, Side, SourceLost, StatsConfig};

/// Where the sender's native viewers are.
#[derive(Debug)]
pub enum Endpoint {
    /// Connect to a listening viewer at HOST:PORT, again whenever it goes away (or, with
    /// `once`, end the stream when it leaves).
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
    /// How long `Connect` with `once` keeps retrying a refused connection.
    pub connect_patience: Duration,
    /// `Connect`: end the stream when the viewer leaves (`--once`) instead of calling it
    /// again with backoff until the source ends or Ctrl-C.
    pub once: bool,
    /// Serve HTTP (page, MJPEG stream, snapshot, stats) on this socket.
    pub http: Option<TcpListener>,
    /// libjpeg-turbo's fast integer DCT (see `codec::Speed`).
    pub fast_dct: bool,
    /// Pre-shared key: viewers must prove they hold it, the stream is encrypted, and HTTP
    /// requires the token derived from it.
    pub key: Option<Key>,
    /// Bounded queueing towards native viewers; `None` with `--no-congestion-control`.
    pub congestion: Option<Congestion>,
    /// The rate controller, with `--target-kbps` or `--max-latency-ms`.
    pub control: Option<ControlConfig>,
}

/// How much a native viewer's connection may hold: frames written and not yet acknowledged,
/// and bytes the kernel holds written but not yet sent. Frames beyond that wait in the
/// viewer's newest-wins slot, where a newer one replaces them (counted as `congestion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Congestion {
    pub max_in_flight: usize,
    pub send_queue: u32,
}

impl Congestion {
    /// Kernel bytes written but unsent (`TCP_NOTSENT_LOWAT`).
    pub const SEND_QUEUE: u32 = 16 * 1024;

    /// The default for a stream of `fps` frames per second: about 100 ms of video, at least
    /// two frames (so the next is on its way while one is acknowledged). A lossless stream
    /// (`fps` 0) is paced by TCP itself and gets a deeper window.
    pub fn for_fps(fps: u32) -> Self {
        let max_in_flight = if fps == 0 { 16 } else { (fps as usize).div_ceil(10).max(2) };
        Congestion { max_in_flight, send_queue: Self::SEND_QUEUE }
    }
}

/// What a viewer asked for on the reverse channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewerRequest {
    /// `SetQuality`: encode at this quality (with a controller: the quality ceiling).
    Quality(u8),
    /// `QualityStep`: one key press up (+1) or down (−1): quality ±5, or the bit-rate target
    /// ×1.25^step when one is set.
    Step(i8),
}

type SharedControl = Option<Arc<Mutex<Controller>>>;
/// A viewer connection's writer, shared by its frame writer and its ack-rx thread.
type SharedWriter = Arc<Mutex<MessageWriter<LinkWrite>>>;
/// Pongs ack-rx could not send while a frame was being written.
type PendingPongs = Arc<Mutex<Vec<Pong>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the source on the capture thread (a camera handle may not move between threads).
/// Called again to reopen a source that failed mid-stream (a camera unplugged or busy).
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// How the capture thread rides out a source that fails mid-stream: reopen attempts with
/// capped exponential backoff, and a "no signal" frame for the viewers every so often.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    first: Duration,
    cap: Duration,
    no_signal_every: Duration,
}

const RECOVERY: Recovery = Recovery {
    first: Duration::from_millis(100),
    cap: Duration::from_secs(5),
    no_signal_every: Duration::from_secs(1),
};

/// How long a write may block, or the window of unacknowledged frames stay full, before the
/// viewer is considered gone.
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
    let (quality_tx, quality_rx) = bounded::<ViewerRequest>(16);
    let control: SharedControl = cfg.control.clone().map(|c| Arc::new(Mutex::new(Controller::new(c, cfg.quality))));
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
        let sub = cfg.subsampling;
        spawn("capture", move || {
            capture_loop(open_source, info_tx, raw_tx, pool, meter, stops, limits, (sub, RECOVERY))
        })?
    };
    let info = match info_rx.recv() {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            let _ = capture.join();
            return Err(anyhow!(e)).context("cannot open the source");
        }
        Err(_) => return Err(join_early(capture, "capture")).context("cannot open the source"),
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
        let control = control.clone();
        spawn("encode", move || encode_loop(enc, raw_rx, raw_pool, hub, quality_rx, control, meter))?
    };
    let stream = StreamInfo { width: info.width, height: info.height, fps_milli: cfg.fps.saturating_mul(1000) };
    let latest_report = Arc::new(Mutex::new(None::<String>));
    let (done_tx, done_rx) = bounded::<()>(0);
    let reporter = {
        let (hub, meter2, control) = (hub.clone(), meter.clone(), control.clone());
        // Viewer links and the rate controller's state as of the end of each interval.
        let before: stats::BeforeReport = Box::new(move || {
            let links = hub.links();
            let status = control.as_ref().map(|c| lock(c).status());
            meter2.update(|c| {
                c.viewers = Some(links.len() as u64);
                c.links = Some(links.clone());
                if status.is_some() {
                    c.control = status.clone();
                }
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
            let token = cfg.key.as_ref().map(Key::http_token);
            Some(spawn("http", move || crate::http::serve(listener, hub, meter, latest_report, token))?)
        }
        None => None,
    };
    let net = {
        let key = cfg.key.map(Arc::new);
        let ctx = ViewerContext {
            stream_info: stream,
            hub: hub.clone(),
            quality_tx,
            meter: meter.clone(),
            congestion: cfg.congestion,
            control,
            key,
        };
        let (endpoint, stop, finish) = (cfg.endpoint, stop.clone(), finish.clone());
        let connect = (cfg.connect_patience, cfg.once);
        spawn("net-tx", move || net_loop(endpoint, connect, ctx, early, stop, finish))?
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

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    mut open_source: SourceFactory,
    info_tx: Sender<Result<SourceInfo, CaptureError>>,
    tx: LatestSender<RawFrame>,
    pool: Pool<RawFrame>,
    meter: Meter,
    stops: [Arc<AtomicBool>; 2],
    (fps, frames, duration): (u32, Option<u64>, Option<Duration>),
    (sub, recovery): (Subsampling, Recovery),
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
    // As fast as possible: wait for the encoder rather than render frames to drop.
    let lossless = period.is_none() && !source.self_paced();
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut next_at = started;
    let mut count = 0u64;
    // Sequence numbers run on across a reopened source (which starts again from 0) and the
    // no-signal frames sent while it was away.
    let (mut seq_offset, mut next_seq) = (0u64, 0u64);
    // Recycled buffers that may hold a no-signal frame: a source must not take them for
    // one of its own (the test pattern redraws only its moving parts into its own buffers).
    let mut foreign_buffers = 0usize;
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
        if foreign_buffers > 0 {
            foreign_buffers -= 1;
            frame.layout = Layout::Jpeg;
        }
        match source.next_frame(&mut frame) {
            Ok(true) => {}
            Ok(false) => {
                info!(frames = count, "source ended");
                break;
            }
            // A file that cannot be read stays unreadable: that ends the stream.
            Err(e @ CaptureError::File { .. }) => return Err(e).context("capture failed"),
            Err(e) => {
                pool.put(frame);
                drop(source);
                let away = SourceAway { size: (width, height), sub, lossless, deadline, recovery };
                match away.ride_out(&mut open_source, e, &tx, &pool, &meter, &stops, &mut next_seq) {
                    Some(s) => {
                        source = s;
                        seq_offset = next_seq;
                        foreign_buffers = 64;
                        next_at = Instant::now();
                        continue;
                    }
                    None => break,
                }
            }
        }
        frame.seq += seq_offset;
        next_seq = frame.seq + 1;
        frame.capture_us = now_us();
        frame.no_signal = false; // the buffer may have held a no-signal card
        meter.update(|c| c.captured += 1);
        count += 1;
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

/// What the capture thread needs while its source is away.
struct SourceAway {
    size: (u32, u32),
    sub: Subsampling,
    lossless: bool,
    deadline: Option<Instant>,
    recovery: Recovery,
}

impl SourceAway {
    /// Sends no-signal frames and tries to reopen the source with backoff until it opens at
    /// the stream's size (returned), or the run ends (`None`).
    #[allow(clippy::too_many_arguments)]
    fn ride_out(
        &self,
        open_source: &mut SourceFactory,
        error: CaptureError,
        tx: &LatestSender<RawFrame>,
        pool: &Pool<RawFrame>,
        meter: &Meter,
        stops: &[Arc<AtomicBool>; 2],
        next_seq: &mut u64,
    ) -> Option<Box<dyn FrameSource>> {
        let lost = SourceLost::now();
        let since = lost.utc();
        warn!(error = %error, %since, "source lost; reopening it with backoff (viewers see a no-signal frame)");
        meter.update(|c| {
            c.source_losses += 1;
            c.source_lost = Some(lost);
        });
        let (w, h) = self.size;
        let mut backoff = Backoff::new(self.recovery.first, self.recovery.cap);
        let mut next_open = Instant::now() + backoff.next_delay();
        let mut next_card = Instant::now();
        let mut attempt = 0u64;
        loop {
            if stops.iter().any(|s| s.load(Ordering::Relaxed)) {
                info!("stop requested while the source was lost; capture ends");
                return None;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                info!("duration reached while the source was lost; capture ends");
                return None;
            }
            let now = Instant::now();
            if now >= next_card {
                let mut card = pool.get(RawFrame::empty);
                nosignal::render(&mut card, w, h, self.sub, &since);
                card.seq = *next_seq;
                *next_seq += 1;
                card.capture_us = now_us();
                card.no_signal = true;
                meter.update(|c| c.no_signal_frames += 1);
                let delivered = tx.deliver(card, self.lossless, |old| {
                    meter.count_drop(DropCause::EncoderBusy);
                    pool.put(old);
                });
                if !delivered {
                    return None;
                }
                next_card = now + self.recovery.no_signal_every;
            }
            if now >= next_open {
                attempt += 1;
                let problem = match open_source() {
                    Ok(s) if s.size() == (w, h) => {
                        info!(
                            attempt,
                            lost_for_s = format!("{:.1}", lost.at.elapsed().as_secs_f64()),
                            source = %s.describe(),
                            "source reopened; streaming resumes"
                        );
                        meter.update(|c| c.source_lost = None);
                        return Some(s);
                    }
                    Ok(s) => format!("it reopened at {}x{}, not the stream's {w}x{h}", s.size().0, s.size().1),
                    Err(e) => e.to_string(),
                };
                let d = backoff.next_delay();
                info!(attempt, error = %problem, retry_in_ms = d.as_millis() as u64, "cannot reopen the source");
                next_open = Instant::now() + d;
            }
            let wait = next_open.min(next_card).saturating_duration_since(Instant::now());
            thread::sleep(wait.min(POLL / 2));
        }
    }
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
    requests: Receiver<ViewerRequest>,
    control: SharedControl,
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
    let start_quality = control.as_ref().map_or(quality, |c| lock(c).setting().quality);
    let mut enc = Encoder::new(start_quality, subsampling, reencode).context("cannot create the JPEG encoder")?;
    enc.set_speed(Speed { fast_dct, ..Speed::default() })?;
    let mut ring = FrameRing::default();
    let mut said_mode = false;
    let mut paused: Option<bool> = None;
    // Frames halved for `--allow-downscale`, and whether a source that cannot be was reported.
    let mut small = RawFrame::empty();
    let mut said_no_halve = false;
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
        let now = now_us();
        let no_signal = raw.no_signal;
        let wanted = match &control {
            // A no-signal card is encoded as things stand; the controller learns nothing from it.
            Some(_) if no_signal => (enc.quality(), false),
            Some(ctl) => {
                let mut c = lock(ctl);
                for r in requests.try_iter() {
                    let what = match r {
                        ViewerRequest::Quality(q) => c.request_quality(q),
                        ViewerRequest::Step(n) => c.step(n),
                    };
                    info!("{what}");
                }
                if !c.admit(now) {
                    drop(c);
                    meter.count_drop(DropCause::RateLimit);
                    raw_pool.put(raw);
                    continue;
                }
                if let Some(d) = c.tick(now) {
                    debug!(quality = d.setting.quality, fps = d.setting.fps, "rate control: {}", d.reason);
                }
                let s = c.setting();
                (s.quality, s.half)
            }
            None => {
                let q = requests.try_iter().fold(enc.quality(), |q, r| match r {
                    ViewerRequest::Quality(to) => to,
                    ViewerRequest::Step(n) => (i32::from(q) + 5 * i32::from(n)).clamp(1, 100) as u8,
                });
                (q, false)
            }
        };
        let (wanted, half) = wanted;
        if wanted != enc.quality() {
            if control.is_none() {
                info!(from = enc.quality(), to = wanted, "viewer asked for a new quality");
            }
            enc.set_quality(wanted)?;
        }
        let slot = ring.take();
        let frame = Arc::get_mut(slot).expect("the ring hands out frames nobody else holds");
        let start = now_us();
        let halved = half && crate::capture::scale::halve(&raw, &mut small);
        if half && !halved {
            if let Some(ctl) = &control {
                lock(ctl).downscale_unavailable();
            }
        }
        if half && !halved && !said_no_halve {
            warn!(
                "--allow-downscale: this source's frames are JPEG, which framecast does not scale; sending full size"
            );
            said_no_halve = true;
        }
        let res = enc.encode(if halved { &small } else { &raw }, &mut frame.jpeg);
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
        let (width, height) = if halved { (small.width, small.height) } else { (raw.width, raw.height) };
        frame.header = FrameHeader {
            seq: raw.seq,
            capture_us: raw.capture_us,
            encode_start_us: start,
            encode_end_us: end,
            send_us: 0,
            width: width as u16,
            height: height as u16,
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
        let len = frame.jpeg.as_slice().len() as u64;
        let congested = hub.publish(slot.clone(), backpressure, &meter);
        if let Some(ctl) = control.as_ref().filter(|_| !no_signal) {
            let mut c = lock(ctl);
            c.on_encoded(end, len, info.quality, halved);
            for _ in 0..congested {
                c.on_congestion_drop(end);
            }
        }
    }
    // The stats reporter samples the controller each interval; the summary gets its last word.
    if let Some(ctl) = &control {
        let status = lock(ctl).status();
        meter.update(|m| m.control = Some(status.clone()));
    }
    Ok(())
}

/// What every native viewer's thread shares.
#[derive(Clone)]
struct ViewerContext {
    stream_info: StreamInfo,
    hub: Arc<Hub>,
    quality_tx: Sender<ViewerRequest>,
    meter: Meter,
    key: Option<Arc<Key>>,
    congestion: Option<Congestion>,
    control: SharedControl,
}

/// A frame written to a viewer and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u64,
    send_us: u64,
    capture_us: u64,
    bytes: u64,
}

/// A native viewer's frames in flight, shared by its writer and its ack-rx thread.
#[derive(Default)]
struct Flight {
    sent: Mutex<VecDeque<Sent>>,
    acked: Condvar,
}

impl Flight {
    /// Most frames remembered when nothing bounds them (no congestion control).
    const MEMORY: usize = 256;

    /// Waits up to `timeout` for fewer than `max` frames in flight; marks the link congested
    /// while it waits.
    fn wait_for_room(&self, max: usize, congested: &std::sync::atomic::AtomicBool, timeout: Duration) -> bool {
        let mut q = lock(&self.sent);
        if q.len() >= max {
            congested.store(true, Ordering::Relaxed);
            q = self.acked.wait_timeout_while(q, timeout, |q| q.len() >= max).unwrap_or_else(|p| p.into_inner()).0;
        }
        let room = q.len() < max;
        if room {
            congested.store(false, Ordering::Relaxed);
        }
        room
    }

    fn push(&self, s: Sent) -> usize {
        let mut q = lock(&self.sent);
        if q.len() >= Self::MEMORY {
            q.pop_front();
        }
        q.push_back(s);
        q.len()
    }

    /// An acknowledgement of `seq` also covers every frame before it (the viewer drops
    /// stale frames without acknowledging them). Returns the frame acknowledged, if it was
    /// in flight, and the bytes of every frame it covered.
    fn ack(&self, seq: u64) -> (Option<Sent>, u64) {
        let mut q = lock(&self.sent);
        let (mut matched, mut bytes) = (None, 0);
        while q.front().is_some_and(|s| s.seq <= seq) {
            let s = q.pop_front().expect("front exists");
            bytes += s.bytes;
            if s.seq == seq {
                matched = Some(s);
            }
        }
        drop(q);
        self.acked.notify_all();
        (matched, bytes)
    }
}

fn net_loop(
    endpoint: Endpoint,
    (patience, once): (Duration, bool),
    ctx: ViewerContext,
    early: Option<Subscription>,
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    match endpoint {
        Endpoint::None => Ok(()),
        Endpoint::Connect(addr) if once => {
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
        Endpoint::Connect(addr) => {
            // Without --once the viewer may come and go: call it again with backoff until the
            // pipeline ends. The first connection uses the subscription made at start-up;
            // each later one subscribes afresh once its handshake is done.
            let early = std::cell::RefCell::new(early);
            let done = || stop.load(Ordering::Relaxed) || ctx.hub.is_closed();
            let serve = |stream: TcpStream, n: u64| {
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                if n > 1 {
                    ctx.meter.update(|c| c.reconnects += 1);
                }
                info!(viewer = %peer, connection = n, "connected to viewer");
                match ctx.serve(stream, &peer, early.borrow_mut().take()) {
                    Ok(Outcome::Finished) => {
                        info!("stream finished");
                        return Session::Stop;
                    }
                    Ok(Outcome::PeerLeft) => info!(viewer = %peer, "viewer closed the connection"),
                    Err(e) => warn!(viewer = %peer, error = format!("{e:#}"), "lost the viewer"),
                }
                Session::Again
            };
            // While the viewer is away nobody is subscribed, so encoding pauses.
            let away = || drop(early.borrow_mut().take());
            let res = keep_connected(&addr, "viewer", Backoff::reconnect(), &done, serve, away);
            if let Err(e) = res {
                finish.store(true, Ordering::Relaxed);
                return Err(e).context("--connect");
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
        if let Some(cc) = self.congestion {
            match limit_send_queue(&stream, cc.send_queue) {
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
        writer.write_message(&Message::StreamInfo(self.stream_info))?;
        // Shared with ack-rx, which answers clock-sync pings between frames.
        let writer = Arc::new(Mutex::new(writer));
        let sub = sub.unwrap_or_else(|| self.hub.subscribe(ViewerKind::Native, peer.to_string()));
        if let Some(ctl) = &self.control {
            lock(ctl).on_new_link();
        }

        let flight = Arc::new(Flight::default());
        // Pongs ack-rx could not send at once because a frame was being written: sent right
        // after it, so that ack-rx never waits behind a frame (it would delay every ack behind
        // it, and the controller would read that as latency).
        let pongs = Arc::new(Mutex::new(Vec::<Pong>::new()));
        let send_pongs = |w: &mut MessageWriter<LinkWrite>| -> std::io::Result<()> {
            for mut pong in std::mem::take(&mut *lock(&pongs)) {
                pong.t3_us = now_us();
                w.write_message(&Message::Pong(pong))?;
            }
            Ok(())
        };
        let mut announced = self.stream_info;
        let mut window_full_since: Option<Instant> = None;
        let peer_gone = Arc::new(AtomicBool::new(false));
        let acks = {
            let (flight, peer_gone, writer, pongs) = (flight.clone(), peer_gone.clone(), writer.clone(), pongs.clone());
            let (meter, quality_tx, control) = (self.meter.clone(), self.quality_tx.clone(), self.control.clone());
            thread::Builder::new()
                .name("ack-rx".into())
                .spawn(move || ack_loop(reader, (writer, pongs), flight, meter, quality_tx, control, peer_gone))?
        };

        let result = (|| -> anyhow::Result<Outcome> {
            loop {
                if peer_gone.load(Ordering::Relaxed) {
                    return Ok(Outcome::PeerLeft);
                }
                if let Some(cc) = self.congestion {
                    // The newest frame waits in the slot until the viewer has acknowledged
                    // enough: a stalled link holds a bounded number of frames, not seconds.
                    if !flight.wait_for_room(cc.max_in_flight, &sub.counters.congested, POLL) {
                        if self.hub.is_closed() {
                            return Ok(Outcome::Finished);
                        }
                        // Nothing is written while the window is full, so no write timeout
                        // can notice a viewer that vanished without closing: this does.
                        let since = *window_full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > WRITE_TIMEOUT {
                            return Err(anyhow!(
                                "no acknowledgement from the viewer for {} s with {} frames in flight; dropping it",
                                WRITE_TIMEOUT.as_secs(),
                                cc.max_in_flight
                            ));
                        }
                        continue;
                    }
                    window_full_since = None;
                }
                let frame = match sub.rx.recv_timeout(POLL) {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => {
                        send_pongs(&mut writer.lock().unwrap_or_else(|p| p.into_inner()))?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return Ok(Outcome::Finished),
                };
                let mut header = frame.header;
                let res = {
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    let size = (u32::from(header.width), u32::from(header.height));
                    let mut res = Ok(());
                    if size != (announced.width, announced.height) {
                        // The rate controller changed the frame size: announce it first.
                        announced = StreamInfo { width: size.0, height: size.1, ..announced };
                        debug!(%peer, width = size.0, height = size.1, "frame size changed");
                        res = w.write_message(&Message::StreamInfo(announced));
                    }
                    header.send_us = now_us();
                    res.and_then(|()| w.write_frame(&header, frame.jpeg.as_slice())).and_then(|()| send_pongs(&mut w))
                };
                let len = frame.jpeg.as_slice().len() as u64;
                let (seq, send_us, capture_us) = (header.seq, header.send_us, header.capture_us);
                drop(frame);
                if let Err(e) = res {
                    if peer_gone.load(Ordering::Relaxed) {
                        return Ok(Outcome::PeerLeft);
                    }
                    return Err(e).context("cannot write a frame");
                }
                let in_flight = flight.push(Sent { seq, send_us, capture_us, bytes: len });
                if let Some(ctl) = &self.control {
                    lock(ctl).on_in_flight(in_flight);
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
    mut reader: MessageReader<LinkRead>,
    (writer, pongs): (SharedWriter, PendingPongs),
    flight: Arc<Flight>,
    meter: Meter,
    quality_tx: Sender<ViewerRequest>,
    control: SharedControl,
    peer_gone: Arc<AtomicBool>,
) {
    let peer: Option<SocketAddr> = reader.get_ref().peer_addr().ok();
    loop {
        match reader.next_event() {
            Ok(Event::Message(Message::Ack(a))) => {
                let now = now_us();
                let (acked, bytes) = flight.ack(a.seq);
                if let Some(s) = acked {
                    meter.update(|c| {
                        let _ = c.ack_rtt.record(now.saturating_sub(s.send_us).max(1));
                    });
                    if let Some(ctl) = &control {
                        lock(ctl).on_acked(now, bytes, s.capture_us);
                    }
                }
            }
            Ok(Event::Message(Message::SetQuality(q))) => {
                let _ = quality_tx.try_send(ViewerRequest::Quality(q));
            }
            Ok(Event::Message(Message::QualityStep(n))) => {
                let _ = quality_tx.try_send(ViewerRequest::Step(n));
            }
            Ok(Event::Message(Message::Ping(p))) => {
                let mut pong = Pong { id: p.id, t1_us: p.t1_us, t2_us: now_us(), t3_us: 0 };
                match writer.try_lock() {
                    Ok(mut w) => {
                        pong.t3_us = now_us();
                        if let Err(e) = w.write_message(&Message::Pong(pong)) {
                            debug!(error = %e, "cannot answer a clock-sync ping");
                        }
                    }
                    Err(_) => {
                        // A frame is being written: its writer sends the pong right after.
                        let mut q = lock(&pongs);
                        if q.len() < 8 {
                            q.push(pong);
                        }
                    }
                }
            }
            Ok(Event::Message(Message::Report(json))) => match stats::parse_report(json) {
                Ok(r) => meter.update(|c| c.viewer = Some(Box::new(r.clone()))),
                Err(e) => debug!(error = %e, "ignored a malformed report from the viewer"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::chroma_size;

    /// A 16x16 grey source whose luma is `fill`; fails after `frames` frames, or ends.
    struct Scripted {
        fill: u8,
        frames: u64,
        next: u64,
        then_fail: bool,
    }

    impl FrameSource for Scripted {
        fn describe(&self) -> String {
            format!("scripted {}", self.fill)
        }
        fn size(&self) -> (u32, u32) {
            (16, 16)
        }
        fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
            if self.next == self.frames {
                return if self.then_fail { Err(CaptureError::Camera("unplugged".into())) } else { Ok(false) };
            }
            let (cw, ch) = chroma_size(16, 16, Subsampling::S420);
            frame.data.clear();
            frame.data.resize(256, self.fill);
            frame.data.resize(256 + 2 * cw * ch, 128);
            (frame.width, frame.height, frame.layout) = (16, 16, Layout::Yuv(Subsampling::S420));
            frame.seq = self.next;
            self.next += 1;
            Ok(true)
        }
    }

    #[test]
    fn a_source_that_fails_mid_stream_is_reopened_and_no_signal_frames_fill_the_gap() {
        // Opens: A (3 frames, then fails), two failures (busy), B (5 frames, then ends).
        let mut opens = 0;
        let factory: SourceFactory = Box::new(move || {
            opens += 1;
            match opens {
                1 => Ok(Box::new(Scripted { fill: 10, frames: 3, next: 0, then_fail: true }) as Box<dyn FrameSource>),
                2 | 3 => Err(CaptureError::Camera("busy".into())),
                _ => Ok(Box::new(Scripted { fill: 200, frames: 5, next: 0, then_fail: false })),
            }
        });
        let (info_tx, info_rx) = bounded(1);
        let (tx, rx) = latest::<RawFrame>(1);
        let meter = Meter::new(Side::Sender);
        let stops = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        let recovery = Recovery {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(40),
            no_signal_every: Duration::from_millis(25),
        };
        let (m, pool) = (meter.clone(), Pool::new(4));
        let t = thread::spawn(move || {
            capture_loop(factory, info_tx, tx, pool, m, stops, (0, None, None), (Subsampling::S420, recovery))
        });
        assert!(matches!(info_rx.recv().unwrap(), Ok(SourceInfo { width: 16, height: 16, .. })));
        // fps 0 and a source that is not live: every frame is delivered (no drops).
        let got: Vec<(u64, u8)> = rx.iter().map(|f| (f.seq, f.data[0])).collect();
        t.join().unwrap().unwrap();
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers do not run on: {seqs:?}");
        let kinds: Vec<u8> = got.iter().map(|g| g.1).collect();
        let a = kinds.iter().take_while(|&&k| k == 10).count();
        let cards = kinds[a..].iter().take_while(|&&k| k != 200).count();
        let b = kinds[a + cards..].iter().filter(|&&k| k == 200).count();
        assert_eq!((a, b, a + cards + b), (3, 5, kinds.len()), "frames: {kinds:?}");
        // The no-signal frame's top-left pixel is its grey background or its white band.
        assert!(cards >= 1 && kinds[a..a + cards].iter().all(|&k| k == 48 || k == 235), "frames: {kinds:?}");
        let r = meter.summary();
        assert_eq!(r.source_losses, 1);
        assert_eq!(r.no_signal_frames, cards as u64);
        assert_eq!(r.captured, Some(8));
        assert!(r.source_lost_since.is_none(), "the source is back but the stats say lost");
    }

    #[test]
    fn a_source_that_stays_away_ends_capture_at_the_deadline_and_stays_reported_lost() {
        let mut first = true;
        let factory: SourceFactory = Box::new(move || {
            if std::mem::take(&mut first) {
                Ok(Box::new(Scripted { fill: 1, frames: 2, next: 0, then_fail: true }) as Box<dyn FrameSource>)
            } else {
                Err(CaptureError::Camera("unplugged".into()))
            }
        });
        let (info_tx, _info_rx) = bounded(1);
        let (tx, rx) = latest::<RawFrame>(1);
        let meter = Meter::new(Side::Sender);
        let stops = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        let recovery = Recovery {
            first: Duration::from_millis(10),
            cap: Duration::from_millis(20),
            no_signal_every: Duration::from_millis(30),
        };
        let (m, pool) = (meter.clone(), Pool::new(4));
        let limits = (0, None, Some(Duration::from_millis(300)));
        let t = thread::spawn(move || {
            capture_loop(factory, info_tx, tx, pool, m, stops, limits, (Subsampling::S420, recovery))
        });
        let n = rx.iter().count();
        t.join().unwrap().unwrap();
        let r = meter.summary();
        assert!(n >= 4, "{n} frames");
        assert_eq!(r.source_losses, 1);
        assert!(r.no_signal_frames >= 2, "{r:?}");
        assert!(r.source_lost_since.is_some(), "the source never came back but the stats do not say so");
    }
}
