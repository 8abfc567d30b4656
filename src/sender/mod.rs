//! The sender pipeline, one stage per file, in the order a frame meets them:
//!
//! ```text
//! capture ──latest(1)──▶ encode ──hub──┬─ latest(1) ─▶ viewer-N ──TCP──▶ framecast recv
//!                                      │               ack-rx  ◀──TCP── (acks, pings, reports)
//!                                      ├─ latest(1) ─▶ http-N ──HTTP──▶ browser, VLC, ffmpeg
//!                                      ├─ latest(1) ─▶ rtsp-N ──RTP───▶ VLC, ffmpeg, GStreamer
//!                                      ├─ latest(1) ─▶ udp-N ──UDP────▶ framecast recv --transport udp
//!                                      └─ latest(1) ─▶ rtsp-publish ──RTSP RECORD──▶ MediaMTX
//! ```
//!
//! # Layout
//!
//! - `mod.rs` (this file): the configuration and [`run`], which builds every stage, starts
//!   each on a named thread and joins them, source first.
//! - [`capture`]: the `capture` thread; the source, its pacing and its recovery.
//! - [`encode`]: the `encode` thread; quality policy, the rate controller, JPEG encoding,
//!   publishing to the [`hub`](crate::hub).
//! - [`transport`]: the contract every viewer transport implements, fed by the hub.
//! - [`native`]: the framecast protocol (`net-tx`, then a `viewer-PEER` and an `ack-rx`
//!   thread per viewer).
//! - [`http`]: HTTP MJPEG, snapshots, the page and `/stats` (`http`, and `http-PEER` per
//!   client), with [`metrics`] for `/metrics` (Prometheus).
//! - [`rtsp`]: RTSP with RTP/JPEG over UDP or TCP (`rtsp`, and `rtsp-PEER` and
//!   `rtsp-rx-PEER` per connection).
//! - [`publish`]: `--publish`, RTSP ANNOUNCE/RECORD into a media server (`rtsp-publish`).
//! - [`udp`]: `--transport udp`, RTP/JPEG over UDP with FEC, NACK and pacing (`udp-tx`, and
//!   `udp-PEER` per viewer).
//!
//! Each arrow is a newest-frame-wins slot: a stage or viewer that falls behind loses its
//! oldest queued frame, counted by cause, and never blocks the stage before it. Each frame
//! is encoded once whatever the number of viewers, and not at all while nobody watches.
//! Shutdown flows downstream: capture stops (frame limit, duration, end of file, Ctrl-C) and
//! drops its sender, encode's loop ends and closes the hub, and every viewer finishes.
//!
//! Next: `capture.rs`.

pub mod capture;
pub mod encode;
pub mod http;
pub mod metrics;
pub mod native;
pub mod publish;
pub mod rtsp;
pub mod transport;
pub mod udp;

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Receiver};

use self::capture::{Capture, Limits, SourceInfo, RECOVERY};
use self::encode::{Encode, EncodeSettings, Feedback};
use self::transport::{Feed, LatestStats, Transport};
use crate::capture::{CaptureError, FrameSource, RawFrame};
use crate::chan::{latest, LatestReceiver, Pool};
use crate::codec::threads::CodecThreads;
use crate::control::{ControlConfig, Controller};
use crate::format::Subsampling;
use crate::hub::Hub;
use crate::net::secure::Key;
use crate::net::StreamInfo;
use crate::stage::{self, join, join_early, Stage};
use crate::stats::{self, Meter, Report, Side, StatsConfig};

/// Where the sender's native viewers are.
#[derive(Debug)]
pub enum Endpoint {
    /// Connect to a listening viewer at HOST:PORT, again whenever it goes away (or, with
    /// `once`, end the stream when it leaves).
    Connect(String),
    /// Serve any number of viewers on a bound socket, joining and leaving at any time.
    Listen(TcpListener),
    /// Viewers over UDP (`--transport udp`): RTP/JPEG packets with FEC, NACK and pacing.
    Udp(udp::UdpEndpoint, udp::UdpOptions),
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
    /// Publish to this RTSP server (`--publish`).
    pub publish: Option<publish::Target>,
    /// Serve RTSP (RTP/JPEG over UDP or TCP) on this socket.
    pub rtsp: Option<TcpListener>,
    /// A restart marker every this many MCU rows (0: none unless sliced); on with RTSP, so
    /// RTP packets end on restart intervals (RFC 2435 types 64/65).
    pub restart_rows: u16,
    /// libjpeg-turbo's fast integer DCT (see `codec::Speed`).
    pub fast_dct: bool,
    /// Threads that encode each frame, as slices (`--encode-threads`).
    pub encode_threads: CodecThreads,
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

/// Opens the source on the capture thread (a camera handle may not move between threads).
/// Called again to reopen a source that failed mid-stream (a camera unplugged or busy).
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// Read timeout, which is also how often blocked threads look at their stop conditions.
const POLL: Duration = Duration::from_millis(100);
/// Rate-controller events waiting for the encoder.
const FEEDBACK: usize = 1024;

/// Runs the sender until the source ends, a limit is reached, `stop` is set, or (when
/// connecting) the viewer leaves. Returns the whole-run stats.
pub fn run(mut cfg: SendConfig, open_source: SourceFactory, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    let meter = cfg.stats.meter(Side::Sender);
    let json = stats::open_json(&cfg.stats)?;
    if matches!(cfg.endpoint, Endpoint::Udp(..)) && cfg.restart_rows == 0 {
        // RTP packets end on restart intervals, so that a viewer missing packets shows the
        // rest of the frame over the previous one.
        cfg.restart_rows = crate::codec::DEFAULT_RESTART_ROWS;
    }
    let hub = Arc::new(Hub::new());
    let transports = transports(&mut cfg, &hub, &meter);
    // Set when the pipeline must end for a reason of its own (a connect-mode viewer left).
    let finish = Arc::new(AtomicBool::new(false));
    let raw_pool: Pool<RawFrame> = Pool::new(4);
    let (raw_tx, raw_rx) = latest::<RawFrame>(1);
    let (info_tx, info_rx) = bounded::<Result<Option<SourceInfo>, CaptureError>>(1);
    let capture = Capture {
        open_source,
        info_tx,
        tx: raw_tx,
        pool: raw_pool.clone(),
        meter: meter.clone(),
        stops: [stop.clone(), finish.clone()],
        limits: Limits { fps: cfg.fps, frames: cfg.frames, duration: cfg.duration },
        subsampling: cfg.subsampling,
        recovery: RECOVERY,
        backoff: None,
    };
    let capture = stage::spawn("capture", move || capture.run())?;
    let (info, capture) = source_info(&info_rx, capture)?;
    let Some(info) = info else {
        // Stopped (Ctrl-C, --duration) before the source opened: a clean end, with a summary.
        join(capture, "capture").context("sender capture stage failed")?;
        let summary = meter.summary();
        tracing::info!(target: "framecast::stats", "{}", summary.summary_text());
        return Ok(summary);
    };
    let up = Upstream { raw_rx, raw_pool, hub, meter, stop, finish };
    let (encode, feed) = start_encode(&cfg, &info, up)?;
    let (done_tx, done_rx) = bounded::<()>(0);
    let reporter = start_reporter(&cfg.stats, json, &feed, done_rx)?;
    let mut stages = vec![("capture", capture), ("encode", encode)];
    for t in transports {
        let (name, feed) = (t.name(), feed.clone());
        stages.push((name, stage::spawn(name, move || t.serve(feed))?));
    }
    drop(feed);
    // Join source first and sink last.
    let results: Vec<_> = stages.into_iter().map(|(name, h)| (name, join(h, name))).collect();
    drop(done_tx);
    let summary = reporter.join().map_err(|_| anyhow!("stats thread panicked"))?;
    for (name, r) in results {
        r.with_context(|| format!("sender {name} stage failed"))?;
    }
    Ok(summary)
}

/// The viewer transports the configuration asks for, in the order they are started and
/// joined. A viewer to connect to joins the hub now, so frames encoded while the connection
/// is made wait in its slot instead of counting as "no viewer".
fn transports(cfg: &mut SendConfig, hub: &Hub, meter: &Meter) -> Vec<Box<dyn Transport>> {
    let mut out: Vec<Box<dyn Transport>> = Vec::new();
    let endpoint = std::mem::replace(&mut cfg.endpoint, Endpoint::None);
    // `--rtsp`, `--publish` and UDP viewers share one cache, so a frame is packetised (or
    // re-encoded, and counted) once for all of them.
    let rtp_frames = Arc::new(rtsp::FrameCache::new(meter.clone()));
    if let Endpoint::Udp(endpoint, opts) = endpoint {
        let budget_us = cfg.control.as_ref().and_then(|c| c.max_latency_ms).map(|ms| u64::from(ms) * 1000);
        let (once, patience, key) = (cfg.once, cfg.connect_patience, cfg.key.clone());
        let settings = udp::UdpSettings { opts, once, patience, key, budget_us };
        out.push(Box::new(udp::Udp::new(endpoint, settings, hub, rtp_frames.clone())));
    } else if !matches!(endpoint, Endpoint::None) {
        let opts = native::NativeOptions {
            patience: cfg.connect_patience,
            once: cfg.once,
            congestion: cfg.congestion,
            key: cfg.key.clone(),
        };
        out.push(Box::new(native::Native::new(endpoint, opts, hub)));
    }
    if let Some(listener) = cfg.http.take() {
        out.push(Box::new(http::Http::new(listener, cfg.key.as_ref().map(Key::http_token))));
    }
    if let Some(target) = cfg.publish.take() {
        out.push(Box::new(publish::Publish::new(target, hub, rtp_frames.clone())));
    }
    if let Some(listener) = cfg.rtsp.take() {
        out.push(Box::new(rtsp::Rtsp::new(listener, cfg.key.as_ref().map(Key::http_token), rtp_frames)));
    }
    out
}

/// Waits for the capture thread to open the source.
fn source_info(
    info_rx: &Receiver<Result<Option<SourceInfo>, CaptureError>>,
    capture: Stage,
) -> anyhow::Result<(Option<SourceInfo>, Stage)> {
    match info_rx.recv() {
        Ok(Ok(info)) => Ok((info, capture)),
        Ok(Err(e)) => {
            let _ = capture.join();
            Err(anyhow!(e)).context("cannot open the source")
        }
        Err(_) => Err(join_early(capture, "capture")).context("cannot open the source"),
    }
}

/// What the encoder and the transports take from the wiring.
struct Upstream {
    raw_rx: LatestReceiver<RawFrame>,
    raw_pool: Pool<RawFrame>,
    hub: Arc<Hub>,
    meter: Meter,
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
}

/// Starts the encoder, the rate controller's owner; returns it and what the transports get.
fn start_encode(cfg: &SendConfig, info: &SourceInfo, up: Upstream) -> anyhow::Result<(Stage, Feed)> {
    let (requests_tx, requests) = bounded::<ViewerRequest>(16);
    let control = cfg.control.clone().map(|c| Controller::new(c, cfg.quality));
    let (feedback_tx, feedback) = bounded::<Feedback>(FEEDBACK);
    let feed = Feed {
        hub: up.hub.clone(),
        meter: up.meter.clone(),
        stream: StreamInfo { width: info.width, height: info.height, fps_milli: cfg.fps.saturating_mul(1000) },
        requests: requests_tx,
        feedback: control.is_some().then_some(feedback_tx),
        stats: LatestStats::default(),
        stop: up.stop,
        finish: up.finish,
    };
    let encode = Encode {
        settings: EncodeSettings {
            quality: cfg.quality,
            subsampling: cfg.subsampling,
            reencode: cfg.reencode_jpeg,
            // A source that is not live, read as fast as possible, waits for the stage after
            // it instead of dropping: every frame captured is encoded and every frame encoded
            // is sent.
            backpressure: cfg.fps == 0 && !info.self_paced,
            fast_dct: cfg.fast_dct,
            threads: cfg.encode_threads,
            restart_rows: cfg.restart_rows,
        },
        rx: up.raw_rx,
        raw_pool: up.raw_pool,
        hub: up.hub,
        requests,
        feedback,
        control,
        meter: up.meter,
    };
    Ok((stage::spawn("encode", move || encode.run())?, feed))
}

/// Starts the stats reporter: the viewers' links are sampled at the end of each interval,
/// and each interval's record is kept for HTTP `/stats`. It ends when `done` disconnects.
fn start_reporter(
    cfg: &StatsConfig,
    json: Option<stats::JsonLog>,
    feed: &Feed,
    done: Receiver<()>,
) -> anyhow::Result<std::thread::JoinHandle<Report>> {
    let (hub, meter) = (feed.hub.clone(), feed.meter.clone());
    let before: stats::BeforeReport = Box::new(move || {
        let links = hub.links();
        meter.update(|c| {
            c.viewers = Some(links.len() as u64);
            c.links = Some(links.clone());
        });
    });
    let latest = feed.stats.clone();
    let on_report: stats::OnReport = Box::new(move |r: &Report| {
        if let Ok(json) = serde_json::to_string(r) {
            latest.set(json);
        }
    });
    Ok(stats::spawn_reporter(feed.meter.clone(), cfg.clone(), json, done, Some(before), Some(on_report))?)
}
