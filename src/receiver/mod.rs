//! The receiver pipeline, one file per stage in the order a frame travels:
//!
//! ```text
//! sender ──TCP──▶ net-rx ──latest(1)──▶ decode ──latest(1)──▶ view (main thread)
//!        ◀──TCP── feedback ◀──────────── acks ◀─────────────────┘
//! ```
//!
//! - [`net`] (thread `net-rx`): the listening socket or the outgoing connection, the
//!   handshake, parsing, sequence tracking and clock sync.
//! - [`decode`] (thread `decode`): JPEG to 0RGB pixels, in two buffers that circulate
//!   between it and the view.
//! - [`show`] (the caller's thread, because windows must live there): the sink, `--dump-dir`,
//!   `--frame-log`, and an acknowledgement per frame shown.
//! - [`feedback`] (thread `feedback`): the write half of the connection: acknowledgements,
//!   clock-sync pings, stats reports and quality requests.
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
mod show;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, Sender};
use tracing::warn;

use crate::chan::{latest, LatestSender, Pool};
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

/// Where the receiver's sender is.
#[derive(Debug)]
pub enum Endpoint {
    /// Wait for senders on a bound socket, one after another.
    Listen(TcpListener),
    /// Connect to a listening sender at HOST:PORT.
    Connect(String),
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
    /// Pre-shared key: the sender must prove it holds it, and the stream is encrypted.
    pub key: Option<Key>,
    /// Ask each sender for this JPEG quality when it connects (`SetQuality`).
    pub quality: Option<u8>,
    /// Write one CSV line per displayed frame (sizes and latencies) to this file.
    pub frame_log: Option<PathBuf>,
}

/// Decoded frames in flight between decode and view: the one the view shows and the one
/// being decoded. At 1920x1080 each is 8 MB.
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
    for _ in 0..PIXEL_BUFFERS {
        free_tx.send(Vec::new()).expect("room for every buffer");
    }
    let (ack_tx, ack_rx) = bounded(256);
    let (conn_tx, conn_rx) = bounded(4);
    let (feedback_tx, feedback_rx) = bounded(8);
    let (status_tx, status_rx) = latest(1);
    let count = Arc::new(AtomicU64::new(0));
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
    let endpoint = cfg.endpoint;
    let net = stage::spawn("net-rx", move || net.run(endpoint))?;
    let (meter_d, count_d, limit) = (meter.clone(), count.clone(), cfg.frames);
    let decode = Decode { rx: in_rx, jpeg_pool, tx: out_tx, free_rx, meter: meter_d, count: count_d, limit, decoder };
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
    use super::*;
    use crate::capture::pattern::PatternSource;
    use crate::capture::FrameSource;
    use crate::net::Subsampling;
    use crate::sender::{self, SendConfig};
    use crate::view::{Picture, ViewError};
    use std::thread;

    /// A view that takes 20 ms per frame, half the stream's period.
    struct SlowSink {
        shown: u64,
    }

    impl FrameSink for SlowSink {
        fn show(&mut self, pic: &Picture<'_>) -> Result<(), ViewError> {
            assert_eq!(pic.pixels.len(), pic.width * pic.height, "a whole decoded frame");
            self.shown += 1;
            thread::sleep(Duration::from_millis(20));
            Ok(())
        }
        fn poll(&mut self) -> bool {
            true
        }
    }

    /// A viewer that falls behind drops frames before decoding them, never after: every frame
    /// decoded is shown.
    #[test]
    fn a_slow_view_costs_frames_before_decoding_not_after() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let send_cfg = SendConfig {
            endpoint: sender::Endpoint::Connect(addr),
            fps: 100,
            quality: 75,
            subsampling: Subsampling::S420,
            reencode_jpeg: false,
            frames: Some(120),
            duration: None,
            stats: StatsConfig { enabled: false, ..StatsConfig::default() },
            connect_patience: Duration::from_secs(5),
            http: None,
            fast_dct: false,
            once: true,
            key: None,
            congestion: Some(sender::Congestion::for_fps(100)),
            control: None,
        };
        let source: sender::SourceFactory =
            Box::new(|| Ok(Box::new(PatternSource::new(160, 120, Subsampling::S420)) as Box<dyn FrameSource>));
        let sender = {
            let stop = stop.clone();
            thread::spawn(move || sender::run(send_cfg, source, stop))
        };
        let recv_cfg = RecvConfig {
            endpoint: Endpoint::Listen(listener),
            frames: None,
            duration: Some(Duration::from_secs(10)),
            stats: StatsConfig::default(),
            once: true,
            dump: None,
            connect_patience: Duration::from_secs(5),
            decode_speed: Speed::default(),
            key: None,
            quality: None,
            frame_log: None,
        };
        let mut sink = SlowSink { shown: 0 };
        let r = run(recv_cfg, &mut sink, stop.clone()).unwrap();
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap().unwrap();
        assert_eq!(r.drops.get("display_busy"), None, "a decoded frame was dropped unseen: {:?}", r.drops);
        assert!(r.drops.get("decoder_busy").is_some_and(|&n| n > 20), "frames skipped before decoding: {:?}", r.drops);
        assert_eq!(r.displayed, Some(r.frames), "every decoded frame is shown");
        assert_eq!(sink.shown, r.frames);
        assert!(r.frames >= 20, "{} frames shown", r.frames);
    }

    /// A view that notes when it showed its last frame.
    struct TimedSink {
        shown: u64,
        last: Option<Instant>,
    }

    impl FrameSink for TimedSink {
        fn show(&mut self, _pic: &Picture<'_>) -> Result<(), ViewError> {
            self.shown += 1;
            self.last = Some(Instant::now());
            Ok(())
        }
        fn poll(&mut self) -> bool {
            true
        }
    }

    /// A sender by hand: `frames` frames at 5 fps, then an idle, open connection (as from a
    /// live sender whose next frame is due) until the receiver closes it. Returns
    /// when the receiver closed it, or after 5 s.
    fn slow_sender(addr: std::net::SocketAddr, frames: u64) -> Option<Instant> {
        use crate::clock::{clock_id, now_us};
        use crate::codec::{Encoder, JpegBuf};
        use crate::net::proto::StreamInfo;
        use crate::net::{Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, Role, Subsampling};
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut w = MessageWriter::new(stream.try_clone().unwrap());
        let mut r = MessageReader::new(stream.try_clone().unwrap());
        w.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
        r.read_hello(Role::Receiver, Duration::from_secs(5)).unwrap();
        w.write_message(&Message::StreamInfo(StreamInfo { width: 64, height: 48, fps_milli: 5000 })).unwrap();
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
                subsampling: Subsampling::S420 as u8,
                flags: 0,
                jpeg_len: jpeg.as_slice().len() as u32,
            };
            w.write_frame(&header, jpeg.as_slice()).unwrap();
            if seq + 1 < frames {
                thread::sleep(Duration::from_millis(200));
            }
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

    /// `recv --frames N` ends within a few milliseconds of its last frame, even when the
    /// sender is still connected and quiet (no read timeout or poll on the way out), and
    /// closes the connection, so the sender sees the end as soon.
    #[test]
    fn a_finished_stream_ends_the_receiver_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = thread::spawn(move || slow_sender(addr, 3));
        let recv_cfg = RecvConfig {
            endpoint: Endpoint::Listen(listener),
            frames: Some(3),
            duration: Some(Duration::from_secs(10)),
            stats: StatsConfig { enabled: false, ..StatsConfig::default() },
            // Not `once`: the receiver must not wait for a next sender either.
            once: false,
            dump: None,
            connect_patience: Duration::from_secs(5),
            decode_speed: Speed::default(),
            key: None,
            quality: None,
            frame_log: None,
        };
        let mut sink = TimedSink { shown: 0, last: None };
        run(recv_cfg, &mut sink, Arc::new(AtomicBool::new(false))).unwrap();
        let ended = Instant::now();
        let closed = sender.join().unwrap();
        assert_eq!(sink.shown, 3);
        let exit = ended - sink.last.unwrap();
        assert!(exit < Duration::from_millis(50), "run() returned {exit:?} after the last frame was shown");
        let closed = closed.expect("the receiver closed the connection") - sink.last.unwrap();
        assert!(closed < Duration::from_millis(50), "the sender saw the end {closed:?} after the last frame");
    }
}
