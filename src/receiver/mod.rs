//! The receiver pipeline, one file per stage in the order a frame travels:
//!
//! ```text
//! sender ──TCP──▶ net-rx ──latest(1)──▶ decode ──latest(1)──▶ view (main thread)
//!        ◀──TCP── feedback ◀──────────── acks ◀─────────────────┘
//! ```
//!
//! - `net.rs` (thread `net-rx`): the listening socket or the outgoing connection, the
//!   handshake, parsing, sequence tracking and clock sync.
//! - `decode.rs` (thread `decode`): JPEG to 0RGB pixels, in two buffers that circulate
//!   between it and the view.
//! - `show.rs` (the caller's thread, because windows must live there): the sink, `--dump-dir`,
//!   `--frame-log`, and an acknowledgement per frame shown.
//! - `feedback.rs` (thread `feedback`): the write half of the connection: acknowledgements,
//!   clock-sync pings, stats reports and quality requests.
//! - `rtsp.rs` and `udp.rs` (thread `net-rx`, in place of `net.rs`): `recv --connect
//!   rtsp://` and `recv --transport udp` (RTP/JPEG with FEC, NACK and concealment).
//!
//! This file holds the configuration and the wiring. Shutdown travels by disconnection: a
//! sender that leaves ends net-rx, which ends decode, which ends the view. A view that
//! finishes first (`--frames`, `--duration`, Ctrl-C, a closed window) is dropped, which ends
//! decode and the feedback thread; the feedback thread shuts the connection down, which ends
//! net-rx's read. A connection that misbehaves is closed with a logged reason and a listening
//! receiver waits for the next sender.

mod decode;
mod feedback;
mod net;
mod rtsp;
mod show;
mod udp;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Sender};
use tracing::warn;

use crate::chan::{latest, LatestSender, Pool};
use crate::codec::threads::{CodecThreads, ThreadsBySize};
use crate::codec::{Decoder, Speed};
use crate::net::proto::MAX_REPORT_LEN;
use crate::net::secure::Key;
use crate::stage;
use crate::stats::{self, Meter, Report, Side, StatsConfig};
use crate::view::FrameSink;
use decode::Decode;
use feedback::{Feedback, FeedbackTx};
use net::NetRx;
use show::{FrameLog, View};

pub use rtsp::{RtspEndpoint, RtspTransport};
pub use udp::{UdpEndpoint, UdpRecvOptions};

/// Where the receiver's sender is.
#[derive(Debug)]
pub enum Endpoint {
    /// Wait for senders on a bound socket, one after another.
    Listen(TcpListener),
    /// Connect to a listening sender at HOST:PORT.
    Connect(String),
    /// Play an RTSP stream (`rtsp://`), in place of the native protocol.
    Rtsp(RtspEndpoint),
    /// The UDP transport (`--transport udp`): RTP/JPEG with FEC, NACK and concealment.
    Udp(UdpEndpoint, UdpRecvOptions),
}

/// Save every `every`-th displayed frame as `DIR/frame-SEQ.ppm`.
#[derive(Clone, Debug)]
pub struct DumpConfig {
    pub dir: PathBuf,
    pub every: u64,
}

/// A checked receiver configuration.
#[derive(Debug)]
pub struct RecvConfig {
    pub endpoint: Endpoint,
    /// Stop after this many frames are decoded.
    pub frames: Option<u64>,
    pub duration: Option<Duration>,
    pub stats: StatsConfig,
    /// Stop when the first sender disconnects (instead of waiting for the next, or connecting
    /// again).
    pub once: bool,
    pub dump: Option<DumpConfig>,
    /// How long `Connect` with `once` keeps retrying a refused connection (without `once` it
    /// retries with backoff for as long as the receiver runs).
    pub connect_patience: Duration,
    /// libjpeg-turbo's fast decoding settings.
    pub decode_speed: Speed,
    /// Threads that decode each JPEG with restart markers (`--decode-threads`).
    pub decode_threads: CodecThreads,
    /// Pre-shared key: the sender must prove it holds it, and the stream is encrypted.
    pub key: Option<Key>,
    /// Ask each sender for this JPEG quality when it connects (`SetQuality`).
    pub quality: Option<u8>,
    /// Write one CSV line per displayed frame (sizes and latencies) to this file.
    pub frame_log: Option<PathBuf>,
}

/// Pixel buffers in circulation between decode and view: the one the view shows and the one
/// being decoded (or waiting to be shown). At 1920x1080 each is 8 MB.
const PIXEL_BUFFERS: usize = 2;

/// Runs the receiver, showing frames on `sink` from the calling thread, until a limit is
/// reached, the sink closes, `stop` is set, or (connecting, or `once`) the sender leaves.
pub fn run(cfg: RecvConfig, sink: &mut dyn FrameSink, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    let meter = cfg.stats.meter(Side::Receiver);
    let json = stats::open_json(&cfg.stats)?;
    if let Some(d) = &cfg.dump {
        std::fs::create_dir_all(&d.dir).with_context(|| format!("--dump-dir: cannot create {}", d.dir.display()))?;
    }
    let finish = Arc::new(AtomicBool::new(false));
    let (mut view, threads) = start(cfg, sink, &meter, &stop, &finish)?;
    let (done_tx, done_rx) = bounded::<()>(0);
    let hook = report_hook(threads.status_tx, view.feedback_tx.clone());
    let reporter = stats::spawn_reporter(meter, threads.stats, json, done_rx, None, Some(hook))?;

    let view_result = view.run();
    // Wind down: `finish` first, so that net-rx, its connection closed, does not wait for
    // another sender; then dropping the view ends decode and the feedback thread, which
    // closes the connection.
    finish.store(true, Ordering::Relaxed);
    drop(view);
    let net_result = stage::join(threads.net, "net-rx");
    let decode_result = stage::join(threads.decode, "decode");
    if let Err(e) = stage::join(threads.feedback, "feedback") {
        warn!("{e:#}");
    }
    drop(done_tx);
    let summary = reporter.join().map_err(|_| anyhow!("stats thread panicked"))?;
    view_result.context("viewer failed")?;
    net_result.context("receiver network stage failed")?;
    decode_result.context("decoder failed")?;
    Ok(summary)
}

/// The receiver's threads, running, and what the wiring still has to hand out.
struct Threads {
    net: stage::Stage,
    decode: stage::Stage,
    feedback: stage::Stage,
    /// For the stats reporter: the window title.
    status_tx: LatestSender<String>,
    stats: StatsConfig,
}

/// Builds the channels, starts net-rx, decode and feedback, and returns the view that takes
/// the other ends.
fn start<'a>(
    cfg: RecvConfig,
    sink: &'a mut dyn FrameSink,
    meter: &Meter,
    stop: &Arc<AtomicBool>,
    finish: &Arc<AtomicBool>,
) -> anyhow::Result<(View<'a>, Threads)> {
    let frame_log = cfg.frame_log.as_deref().map(FrameLog::create).transpose()?;
    let decoder = Decoder::with_speed(cfg.decode_speed).context("cannot create the JPEG decoder")?;
    let jpeg_pool: Pool<Vec<u8>> = Pool::new(4);
    let (in_tx, in_rx) = latest(1);
    let (out_tx, out_rx) = latest(1);
    let (free_tx, free_rx) = bounded(PIXEL_BUFFERS);
    // Decode starts with one; the view adds the other when it takes its first frame.
    let _ = free_tx.try_send(Vec::new());
    let (ack_tx, ack_rx) = bounded(256);
    let (conn_tx, conn_rx) = bounded(4);
    let (feedback_tx, feedback_rx) = bounded(8);
    let (status_tx, status_rx) = latest(1);
    let count = Arc::new(AtomicU64::new(0));
    let conceal = matches!(cfg.endpoint, Endpoint::Rtsp(_) | Endpoint::Udp(..));
    let net = NetRx {
        once: cfg.once,
        patience: cfg.connect_patience,
        key: cfg.key,
        tx: in_tx,
        pool: jpeg_pool.clone(),
        conn_tx,
        meter: meter.clone(),
        stop: stop.clone(),
        finish: finish.clone(),
    };
    let net = spawn_net(net, cfg.endpoint)?;
    let (meter_d, count_d, limit) = (meter.clone(), count.clone(), cfg.frames);
    let threads = ThreadsBySize::new(cfg.decode_threads);
    let decode = Decode {
        rx: in_rx,
        jpeg_pool,
        tx: out_tx,
        free_rx,
        meter: meter_d,
        count: count_d,
        limit,
        decoder,
        threads,
        last: conceal.then(Vec::new),
    };
    let decode = stage::spawn("decode", move || decode.run())?;
    let feedback = FeedbackTx { conn_rx, ack_rx, rx: feedback_rx, quality: cfg.quality };
    let feedback = stage::spawn("feedback", move || feedback.run())?;
    let view = View {
        sink,
        rx: out_rx,
        free_tx,
        ack_tx,
        feedback_tx,
        status_rx,
        meter: meter.clone(),
        stop: stop.clone(),
        decoded: count,
        limit: cfg.frames,
        deadline: cfg.duration.map(|d| Instant::now() + d),
        dump: cfg.dump,
        frame_log,
    };
    Ok((view, Threads { net, decode, feedback, status_tx, stats: cfg.stats }))
}

/// Starts net-rx: the native protocol's (`net.rs`), or for an `rtsp://` URL the RTSP
/// client's (`rtsp.rs`), which takes the same channel to decode and has no feedback
/// connection (dropping `conn_tx` tells the feedback thread so).
fn spawn_net(net: NetRx, endpoint: Endpoint) -> anyhow::Result<stage::Stage> {
    match endpoint {
        Endpoint::Rtsp(endpoint) => {
            let NetRx { once, patience, tx, pool, meter, stop, finish, .. } = net;
            let rx = rtsp::RtspRx { endpoint, once, patience, tx, pool, meter, stop, finish };
            stage::spawn("net-rx", move || rx.run())
        }
        Endpoint::Udp(endpoint, opts) => {
            let NetRx { once, patience, key, tx, pool, conn_tx, meter, stop, finish } = net;
            let rx = udp::UdpRx { endpoint, opts, once, patience, key, tx, pool, conn_tx, meter, stop, finish };
            stage::spawn("net-rx", move || rx.run())
        }
        endpoint => stage::spawn("net-rx", move || net.run(endpoint)),
    }
}

/// What the stats reporter does with each interval's report: the window title shows it, and
/// the sender logs what its viewer sees.
fn report_hook(status_tx: LatestSender<String>, feedback_tx: Sender<Feedback>) -> stats::OnReport {
    Box::new(move |r: &Report| {
        let quality = r.quality.map_or("-".into(), |q| q.to_string());
        status_tx.push(format!("{:.1} fps, {:.0} kbit/s, q{quality}", r.fps, r.kbps));
        if let Ok(json) = serde_json::to_vec(r) {
            if json.len() <= MAX_REPORT_LEN {
                let _ = feedback_tx.try_send(Feedback::Report(json));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpStream};
    use std::thread;

    use super::*;
    use crate::clock::{clock_id, now_us};
    use crate::codec::{Encoder, JpegBuf};
    use crate::format::Subsampling;
    use crate::net::proto::StreamInfo;
    use crate::net::{Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, Role};
    use crate::view::{Picture, ViewError};

    /// A view that takes `delay` per frame and notes when it showed the last one.
    struct TimedSink {
        delay: Duration,
        shown: u64,
        last: Option<Instant>,
    }

    impl TimedSink {
        fn new(delay: Duration) -> Self {
            TimedSink { delay, shown: 0, last: None }
        }
    }

    impl FrameSink for TimedSink {
        fn show(&mut self, pic: &Picture<'_>) -> Result<(), ViewError> {
            assert_eq!(pic.pixels.len(), pic.width * pic.height, "a whole decoded frame");
            thread::sleep(self.delay);
            self.shown += 1;
            self.last = Some(Instant::now());
            Ok(())
        }
        fn poll(&mut self) -> bool {
            true
        }
    }

    /// A sender by hand (no `sender` pipeline): `frames` 64x48 frames, one per `period`.
    /// Then it closes the connection if `close`, or else stays connected and quiet, as a live
    /// sender between frames, until the receiver closes it: it returns when it saw that
    /// close (`None` after 5 s without one).
    fn fake_sender(addr: SocketAddr, frames: u64, period: Duration, close: bool) -> Option<Instant> {
        let stream = TcpStream::connect(addr).unwrap();
        let mut w = MessageWriter::new(stream.try_clone().unwrap());
        let mut r = MessageReader::new(stream.try_clone().unwrap());
        w.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
        r.read_hello(Role::Receiver, Duration::from_secs(5)).unwrap();
        let fps_milli = (1e6 / period.as_millis() as f64) as u32;
        w.write_message(&Message::StreamInfo(StreamInfo { width: 64, height: 48, fps_milli })).unwrap();
        let mut jpeg = JpegBuf::default();
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        enc.encode_pixels(&[128; 64 * 48 * 3], 64, 48, turbojpeg::PixelFormat::RGB, &mut jpeg).unwrap();
        for seq in 0..frames {
            let t = now_us();
            let header = FrameHeader {
                seq,
                capture_us: t,
                encode_start_us: t,
                encode_end_us: t,
                send_us: t,
                width: 64,
                height: 48,
                quality: 75,
                subsampling: Subsampling::S420.to_wire(),
                flags: 0,
                jpeg_len: jpeg.as_slice().len() as u32,
            };
            w.write_frame(&header, jpeg.as_slice()).unwrap();
            if seq + 1 < frames {
                thread::sleep(period);
            }
        }
        if close {
            return None;
        }
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        loop {
            match r.next_event() {
                Ok(Event::Eof) | Err(_) => return Some(Instant::now()),
                Ok(Event::Idle) => return None,
                Ok(Event::Message(_)) => {}
            }
        }
    }

    fn listening(frames: Option<u64>, once: bool) -> (RecvConfig, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = RecvConfig {
            endpoint: Endpoint::Listen(listener),
            frames,
            duration: Some(Duration::from_secs(10)),
            stats: StatsConfig::default(),
            once,
            dump: None,
            connect_patience: Duration::from_secs(5),
            decode_speed: Speed::default(),
            decode_threads: CodecThreads::Auto,
            key: None,
            quality: None,
            frame_log: None,
        };
        (cfg, addr)
    }

    /// A viewer that falls behind drops frames before decoding them, never after: every frame
    /// decoded is shown.
    #[test]
    fn a_slow_view_costs_frames_before_decoding_not_after() {
        let (cfg, addr) = listening(None, true);
        // 120 frames at 100 fps to a view that takes 20 ms per frame.
        let sender = thread::spawn(move || fake_sender(addr, 120, Duration::from_millis(10), true));
        let mut sink = TimedSink::new(Duration::from_millis(20));
        let r = run(cfg, &mut sink, Arc::new(AtomicBool::new(false))).unwrap();
        sender.join().unwrap();
        assert_eq!(r.drops.get("display_busy"), None, "a decoded frame was dropped unseen: {:?}", r.drops);
        assert!(r.drops.get("decoder_busy").is_some_and(|&n| n > 20), "frames skipped before decoding: {:?}", r.drops);
        assert_eq!(r.displayed, Some(r.frames), "every decoded frame is shown");
        assert_eq!(sink.shown, r.frames);
        assert!(r.frames >= 20, "{} frames shown", r.frames);
    }

    /// `recv --frames N` ends within a few milliseconds of its last frame, even when the
    /// sender is still connected and quiet (no read timeout or poll on the way out), and
    /// closes the connection, so that the sender sees the end as soon. (It took 100 ms, net-rx's
    /// read timeout, when net-rx waited to notice.)
    #[test]
    fn a_finished_stream_ends_the_receiver_at_once() {
        // Not `once`: the receiver must not wait for a next sender either.
        let (cfg, addr) = listening(Some(3), false);
        let sender = thread::spawn(move || fake_sender(addr, 3, Duration::from_millis(200), false));
        let mut sink = TimedSink::new(Duration::ZERO);
        run(cfg, &mut sink, Arc::new(AtomicBool::new(false))).unwrap();
        let ended = Instant::now();
        let closed = sender.join().unwrap();
        assert_eq!(sink.shown, 3);
        let last = sink.last.unwrap();
        let exit = ended - last;
        assert!(exit < Duration::from_millis(50), "run() returned {exit:?} after the last frame was shown");
        let closed = closed.expect("the receiver closed the connection") - last;
        assert!(closed < Duration::from_millis(50), "the sender saw the end {closed:?} after the last frame");
    }
}
