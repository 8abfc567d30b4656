//! The receiver pipeline:
//!
//! ```text
//! sender ──TCP──▶ net-rx ──latest(1)──▶ decode ──latest(1)──▶ view (main thread)
//!        ◀──TCP── feedback ◀──────────── acks ◀─────────────────┘
//! ```
//!
//! net-rx owns the listening socket (or the outgoing connection) and parses messages; decode
//! turns JPEG into 0RGB pixels; the view runs on the caller's thread because windows must
//! live there. A connection that misbehaves is closed with a logged reason and a listening
//! receiver waits for the next sender.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{bounded, never, select, Receiver, RecvTimeoutError, Sender};
use tracing::{debug, info, warn};

use crate::chan::{latest, LatestReceiver, LatestSender, Pool};
use crate::clock::{clock_id, now_us, ClockSync, Exchange};
use crate::codec::{Decoder, Speed};
use crate::net::conn::{accept_loop, configure, connect, Next, Policy, Session};
use crate::net::proto::{Ping, MAX_QUALITY_STEP, MAX_REPORT_LEN};
use crate::net::secure::{self, Key, LinkWrite};
use crate::net::{Ack, Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, NetError, Role};
use crate::stage::join;
use crate::stats::{self, ClockStatus, DropCause, Meter, Report, Side, StatsConfig};
use crate::view::{write_ppm, FrameSink, Picture};

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

/// What the view sends back to the sender, besides acknowledgements.
enum Feedback {
    /// The latest stats interval, as JSON.
    Report(Vec<u8>),
    /// Quality up or down by this many key presses.
    Step(i8),
}

/// `--frame-log`: one CSV line per displayed frame.
struct FrameLog {
    out: std::io::BufWriter<std::fs::File>,
    started_us: u64,
}

impl FrameLog {
    const HEADER: &'static str =
        "seq,width,height,bytes,quality,t_s,capture_to_received_ms,capture_to_decoded_ms,capture_to_displayed_ms";

    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::Write;
        let file =
            std::fs::File::create(path).with_context(|| format!("--frame-log: cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{}", Self::HEADER)?;
        Ok(FrameLog { out, started_us: now_us() })
    }

    fn write(&mut self, f: &Decoded, shown_us: u64) -> std::io::Result<()> {
        use std::io::Write;
        let ms =
            |t: u64| f.capture_local_us.map_or(String::new(), |c| format!("{:.3}", t.saturating_sub(c) as f64 / 1e3));
        writeln!(
            self.out,
            "{},{},{},{},{},{:.4},{},{},{}",
            f.header.seq,
            f.header.width,
            f.header.height,
            f.header.jpeg_len,
            f.header.quality,
            shown_us.saturating_sub(self.started_us) as f64 / 1e6,
            ms(f.received_us),
            ms(f.decoded_us),
            ms(shown_us)
        )
    }
}

struct Incoming {
    conn: u64,
    header: FrameHeader,
    received_us: u64,
    /// The capture time on our clock, once the sender's clock is known.
    capture_local_us: Option<u64>,
    /// The sender streams as fast as possible (`--fps 0`, a benchmark): deliver every frame,
    /// slowing the sender down through TCP, instead of dropping stale ones.
    lossless: bool,
    jpeg: Vec<u8>,
}

struct Decoded {
    conn: u64,
    header: FrameHeader,
    received_us: u64,
    decoded_us: u64,
    capture_local_us: Option<u64>,
    pixels: Vec<u32>,
}

struct AckEvent {
    conn: u64,
    ack: Ack,
}

struct NewConn {
    conn: u64,
    writer: MessageWriter<LinkWrite>,
}

const POLL: Duration = Duration::from_millis(100);
/// Decoded frames in flight between decode and view.
const PIXEL_BUFFERS: usize = 2;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the receiver, showing frames on `sink` from the calling thread, until a limit is
/// reached, the sink closes, `stop` is set, or (connecting, or `once`) the sender leaves.
pub fn run(cfg: RecvConfig, sink: &mut dyn FrameSink, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    let meter = cfg.stats.meter(Side::Receiver);
    let json = stats::open_json(&cfg.stats)?;
    if let Some(d) = &cfg.dump {
        std::fs::create_dir_all(&d.dir).with_context(|| format!("--dump-dir: cannot create {}", d.dir.display()))?;
    }
    let finish = Arc::new(AtomicBool::new(false));
    let decoded_count = Arc::new(AtomicU64::new(0));
    let jpeg_pool: Pool<Vec<u8>> = Pool::new(4);
    // Two frames of pixels, no more: the one the view shows and the one being decoded (see
    // `decode_loop`). At 1920x1080 each is 8 MB.
    let pixel_pool: Pool<Vec<u32>> = Pool::new(PIXEL_BUFFERS);
    for _ in 0..PIXEL_BUFFERS {
        pixel_pool.put(Vec::new());
    }
    let (in_tx, in_rx) = latest::<Incoming>(1);
    let (out_tx, out_rx) = latest::<Decoded>(1);
    let (ack_tx, ack_rx) = bounded::<AckEvent>(256);
    let (conn_tx, conn_rx) = bounded::<NewConn>(4);
    let (report_tx, report_rx) = bounded::<Feedback>(8);
    let mut frame_log = cfg.frame_log.as_deref().map(FrameLog::create).transpose()?;

    let net = {
        let (meter, pool, stop, finish) = (meter.clone(), jpeg_pool.clone(), stop.clone(), finish.clone());
        let (endpoint, once, patience, key) = (cfg.endpoint, cfg.once, cfg.connect_patience, cfg.key);
        thread::Builder::new()
            .name("net-rx".into())
            .spawn(move || net_loop(endpoint, once, patience, in_tx, pool, conn_tx, meter, stop, finish, key))?
    };
    let decode = {
        let (meter, jpeg_pool, pixel_pool, count) =
            (meter.clone(), jpeg_pool.clone(), pixel_pool.clone(), decoded_count.clone());
        let (limit, speed) = (cfg.frames, cfg.decode_speed);
        thread::Builder::new()
            .name("decode".into())
            .spawn(move || decode_loop(in_rx, jpeg_pool, out_tx, pixel_pool, meter, count, limit, speed))?
    };
    let feedback = {
        let quality = cfg.quality;
        thread::Builder::new()
            .name("feedback".into())
            .spawn(move || feedback_loop(conn_rx, ack_rx, report_rx, quality))?
    };
    let status = Arc::new(Mutex::new(None::<String>));
    let (done_tx, done_rx) = bounded::<()>(0);
    let reporter = {
        let status = status.clone();
        let report_tx = report_tx.clone();
        let on_report: stats::OnReport = Box::new(move |r: &Report| {
            let text =
                format!("{:.1} fps, {:.0} kbit/s, q{}", r.fps, r.kbps, r.quality.map_or("-".into(), |q| q.to_string()));
            *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
            // The sender logs what its viewer sees.
            if let Ok(json) = serde_json::to_vec(r) {
                if json.len() <= MAX_REPORT_LEN {
                    let _ = report_tx.try_send(Feedback::Report(json));
                }
            }
        });
        stats::spawn_reporter(meter.clone(), cfg.stats.clone(), json, done_rx, None, Some(on_report))?
    };

    let view_result = view_loop(
        sink,
        &out_rx,
        &pixel_pool,
        &ack_tx,
        &meter,
        &stop,
        &decoded_count,
        &status,
        cfg.frames,
        cfg.duration,
        cfg.dump.as_ref(),
        frame_log.as_mut(),
        &report_tx,
    );
    drop(report_tx);
    if let Some(log) = frame_log.as_mut() {
        use std::io::Write;
        if let Err(e) = log.out.flush() {
            warn!(error = %e, "--frame-log: cannot write");
        }
    }

    // Wind down: net-rx sees `finish` within one poll, decode follows when net-rx is gone.
    finish.store(true, Ordering::Relaxed);
    drop(out_rx);
    drop(ack_tx);
    let net_result = join(net, "net-rx");
    let decode_result = join(decode, "decode");
    if feedback.join().is_err() {
        warn!("feedback thread panicked; look for the panic message above");
    }
    drop(done_tx);
    let summary = reporter.join().map_err(|_| anyhow!("stats thread panicked"))?;
    view_result.context("viewer failed")?;
    net_result.context("receiver network stage failed")?;
    decode_result.context("decoder failed")?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn view_loop(
    sink: &mut dyn FrameSink,
    rx: &LatestReceiver<Decoded>,
    pool: &Pool<Vec<u32>>,
    ack_tx: &Sender<AckEvent>,
    meter: &Meter,
    stop: &AtomicBool,
    decoded: &AtomicU64,
    status: &Mutex<Option<String>>,
    frames: Option<u64>,
    duration: Option<Duration>,
    dump: Option<&DumpConfig>,
    mut frame_log: Option<&mut FrameLog>,
    feedback: &Sender<Feedback>,
) -> anyhow::Result<()> {
    let deadline = duration.map(|d| Instant::now() + d);
    let limit_reached = || frames.is_some_and(|n| decoded.load(Ordering::Relaxed) >= n);
    // The pixels of the frame on show, handed back to the decoder when the next frame is
    // taken: the decoder then never has a buffer while a decoded frame waits, so it never
    // decodes a frame that would be replaced before it is shown (see `decode_loop`).
    let mut on_show: Option<Vec<u32>> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            info!("stop requested");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            info!("duration reached");
            break;
        }
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(f) => {
                if let Some(done) = on_show.take() {
                    pool.put(done);
                }
                let (w, h) = (usize::from(f.header.width), usize::from(f.header.height));
                let pic = Picture { seq: f.header.seq, width: w, height: h, pixels: &f.pixels };
                sink.show(&pic)?;
                let shown = now_us();
                if let Some(d) = dump {
                    if f.header.seq % d.every == 0 {
                        let path = d.dir.join(format!("frame-{:08}.ppm", f.header.seq));
                        write_ppm(&path, &pic).with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                if let Some(log) = frame_log.as_deref_mut() {
                    log.write(&f, shown).context("--frame-log: cannot write")?;
                }
                meter.update(|c| {
                    c.displayed += 1;
                    let _ = c.lat_shown.record(shown.saturating_sub(f.decoded_us).max(1));
                    if let Some(cap) = f.capture_local_us {
                        let _ = c.lat_displayed.record(shown.saturating_sub(cap).max(1));
                    }
                });
                let _ = ack_tx.try_send(AckEvent {
                    conn: f.conn,
                    ack: Ack {
                        seq: f.header.seq,
                        received_us: f.received_us,
                        decoded_us: f.decoded_us,
                        displayed_us: shown,
                    },
                });
                on_show = Some(f.pixels);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if limit_reached() && rx.is_empty() {
            info!(frames = decoded.load(Ordering::Relaxed), "frame limit reached");
            break;
        }
        if let Some(text) = status.lock().unwrap_or_else(|p| p.into_inner()).take() {
            sink.set_status(&text);
        }
        if !sink.poll() {
            info!("window closed");
            break;
        }
        let steps = sink.take_quality_steps();
        if steps != 0 {
            let steps = steps.clamp(-MAX_QUALITY_STEP, MAX_QUALITY_STEP);
            info!(steps, "asking the sender for {} quality", if steps > 0 { "more" } else { "less" });
            let _ = feedback.try_send(Feedback::Step(steps));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn decode_loop(
    rx: LatestReceiver<Incoming>,
    jpeg_pool: Pool<Vec<u8>>,
    tx: LatestSender<Decoded>,
    pixel_pool: Pool<Vec<u32>>,
    meter: Meter,
    count: Arc<AtomicU64>,
    limit: Option<u64>,
    speed: Speed,
) -> anyhow::Result<()> {
    let mut dec = Decoder::with_speed(speed).context("cannot create the JPEG decoder")?;
    loop {
        // Decode only what can still be shown: wait until the view hands back a buffer (it does
        // when it takes the last decoded frame), then take the newest frame received. Frames
        // that arrive meanwhile replace each other in `rx` and count as `decoder_busy` drops,
        // so a viewer that falls behind never has a decoded frame dropped (`display_busy`).
        let mut pixels = match pixel_pool.get_timeout(POLL) {
            Some(p) => p,
            None if tx.is_disconnected() => break,
            None => continue,
        };
        let Ok(inc) = rx.recv() else { break };
        if limit.is_some_and(|n| count.load(Ordering::Relaxed) >= n) {
            // --frames reached: decode no more (the view shows what is queued, then stops).
            break;
        }
        let (w, h) = (usize::from(inc.header.width), usize::from(inc.header.height));
        let start = now_us();
        let res = dec.decode(&inc.jpeg, w, h, &mut pixels);
        let end = now_us();
        jpeg_pool.put(inc.jpeg);
        if let Err(e) = res {
            warn!(seq = inc.header.seq, error = %e, "cannot decode frame; skipped");
            meter.count_drop(DropCause::CorruptJpeg);
            pixel_pool.put(pixels);
            continue;
        }
        meter.update(|c| {
            c.decoded += 1;
            c.decode_us += end - start;
            c.quality = Some(inc.header.quality);
            if let Some(cap) = inc.capture_local_us {
                let _ = c.lat_decoded.record(end.saturating_sub(cap).max(1));
            }
        });
        let out = Decoded {
            conn: inc.conn,
            header: inc.header,
            received_us: inc.received_us,
            decoded_us: end,
            capture_local_us: inc.capture_local_us,
            pixels,
        };
        let delivered = tx.deliver(out, inc.lossless, |old| {
            meter.count_drop(DropCause::DisplayBusy);
            pixel_pool.put(old.pixels);
        });
        // Counted once handed to the view, so that the view, seeing the count reach
        // `--frames`, also finds the last frame waiting for it.
        count.fetch_add(1, Ordering::Relaxed);
        if !delivered {
            break;
        }
    }
    Ok(())
}

/// Clock-sync pings: a quick burst when a sender connects, then one a second.
const PING_BURST: u32 = 5;
const PING_BURST_INTERVAL: Duration = Duration::from_millis(100);
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Writes everything the receiver sends back on the current connection: acknowledgements,
/// clock-sync pings and the per-interval stats report.
fn feedback_loop(
    conn_rx: Receiver<NewConn>,
    ack_rx: Receiver<AckEvent>,
    report_rx: Receiver<Feedback>,
    quality: Option<u8>,
) {
    let mut current: Option<NewConn> = None;
    let (mut conn_rx, mut ack_rx, mut report_rx) = (Some(conn_rx), Some(ack_rx), Some(report_rx));
    let (nothing_conn, nothing_ack, nothing_report) = (never::<NewConn>(), never::<AckEvent>(), never::<Feedback>());
    let mut pings = 0u32;
    let mut next_ping = Instant::now();
    while conn_rx.is_some() || ack_rx.is_some() {
        let send = |c: &mut Option<NewConn>, msg: &Message<'_>| {
            if let Some(conn) = c.as_mut() {
                if let Err(e) = conn.writer.write_message(msg) {
                    debug!(error = %e, "cannot write to the sender; it is gone");
                    *c = None;
                }
            }
        };
        let wait = next_ping.saturating_duration_since(Instant::now());
        select! {
            recv(conn_rx.as_ref().unwrap_or(&nothing_conn)) -> c => match c {
                Ok(c) => {
                    current = Some(c);
                    pings = 0;
                    next_ping = Instant::now();
                    if let Some(q) = quality {
                        info!(quality = q, "asking the sender for quality {q}");
                        send(&mut current, &Message::SetQuality(q));
                    }
                }
                Err(_) => conn_rx = None,
            },
            recv(ack_rx.as_ref().unwrap_or(&nothing_ack)) -> a => match a {
                Ok(a) if current.as_ref().is_some_and(|c| c.conn == a.conn) => send(&mut current, &Message::Ack(a.ack)),
                Ok(_) => {}
                Err(_) => ack_rx = None,
            },
            recv(report_rx.as_ref().unwrap_or(&nothing_report)) -> r => match r {
                Ok(Feedback::Report(json)) => send(&mut current, &Message::Report(&json)),
                Ok(Feedback::Step(n)) => send(&mut current, &Message::QualityStep(n)),
                Err(_) => report_rx = None,
            },
            default(wait) => {
                if current.is_some() {
                    pings += 1;
                    send(&mut current, &Message::Ping(Ping { id: u64::from(pings), t1_us: now_us() }));
                }
                next_ping = Instant::now() + if pings < PING_BURST { PING_BURST_INTERVAL } else { PING_INTERVAL };
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn net_loop(
    endpoint: Endpoint,
    once: bool,
    patience: Duration,
    tx: LatestSender<Incoming>,
    pool: Pool<Vec<u8>>,
    conn_tx: Sender<NewConn>,
    meter: Meter,
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
    key: Option<Key>,
) -> anyhow::Result<()> {
    let done = || stop.load(Ordering::Relaxed) || finish.load(Ordering::Relaxed) || tx.is_disconnected();
    let mut conn_id = 0u64;
    let mut serve = |stream: TcpStream, peer: Option<SocketAddr>| {
        conn_id += 1;
        let mut c =
            Conn { id: conn_id, tx: &tx, pool: &pool, conn_tx: &conn_tx, meter: &meter, done: &done, last_seq: None };
        match c.serve(stream, key.as_ref()) {
            Ok(()) => info!(sender = ?peer, "sender disconnected"),
            Err(e) => warn!(sender = ?peer, error = format!("{e:#}"), "dropped connection from sender"),
        }
    };
    match endpoint {
        Endpoint::Connect(addr) => {
            // Each connection syncs clocks afresh (a restarted sender has a new clock).
            let session = |stream: TcpStream, n: u64| {
                let peer = stream.peer_addr().ok();
                if n > 1 {
                    meter.update(|c| c.reconnects += 1);
                }
                info!(sender = ?peer, connection = n, "connected to sender");
                serve(stream, peer);
                Session::Again
            };
            let policy = if once { Policy::once(patience) } else { Policy::reconnect() };
            connect(&addr, "sender", policy, &done, session, || {}).context("--connect")?;
        }
        Endpoint::Listen(listener) => {
            info!(addr = ?listener.local_addr().ok(), "waiting for a sender");
            let on_conn = |stream: TcpStream, peer: SocketAddr| {
                info!(%peer, "sender connected");
                serve(stream, Some(peer));
                if once {
                    return Next::Stop;
                }
                if !done() {
                    info!("waiting for the next sender");
                }
                Next::Accept
            };
            accept_loop(&listener, &done, on_conn).context("cannot accept senders")?;
        }
    }
    Ok(())
}

struct Conn<'a, D: Fn() -> bool> {
    id: u64,
    tx: &'a LatestSender<Incoming>,
    pool: &'a Pool<Vec<u8>>,
    conn_tx: &'a Sender<NewConn>,
    meter: &'a Meter,
    done: &'a D,
    last_seq: Option<u64>,
}

impl<D: Fn() -> bool> Conn<'_, D> {
    fn serve(&mut self, stream: TcpStream, key: Option<&Key>) -> anyhow::Result<()> {
        // The feedback thread keeps a clone of the socket for acks; whatever ends this
        // connection must close it for both, so the sender sees the end at once.
        struct CloseOnDrop(TcpStream);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                let _ = self.0.shutdown(std::net::Shutdown::Both);
            }
        }
        let _close = CloseOnDrop(stream.try_clone()?);
        configure(&stream, POLL)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut writer = MessageWriter::new(stream.try_clone()?);
        let mut reader = MessageReader::new(stream);
        let ours = Hello::new(Role::Receiver, clock_id()).keyed(key.is_some());
        writer.write_hello(&ours)?;
        let hello = reader.read_hello(Role::Sender, HANDSHAKE_TIMEOUT).context("handshake")?;
        // With a key: the sender proves it holds it before any of its messages is read.
        let (mut reader, writer) =
            secure::upgrade(reader, writer, &ours, &hello, key, HANDSHAKE_TIMEOUT).context("access control")?;
        let same_clock = hello.clock_id == clock_id();
        info!(
            same_clock,
            "sender handshake done{}",
            if same_clock {
                ""
            } else {
                "; clocks differ: syncing over the reverse channel, latency unknown until then"
            }
        );
        let _ = self.conn_tx.send(NewConn { conn: self.id, writer });
        let mut sync = ClockSync::new();
        let mut lossless = false;
        self.meter.update(|c| c.clock = Some(ClockStatus::unsynced(same_clock)));
        loop {
            let event = match reader.next_event() {
                Ok(e) => e,
                Err(NetError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(anyhow!("the sender reset the connection"));
                }
                Err(e) => return Err(e.into()),
            };
            match event {
                Event::Message(Message::StreamInfo(s)) => {
                    lossless = s.fps_milli == 0;
                    info!(
                        width = s.width,
                        height = s.height,
                        fps = f64::from(s.fps_milli) / 1000.0,
                        "stream{}",
                        if lossless { " (as fast as possible: every frame is decoded, none dropped)" } else { "" }
                    );
                }
                Event::Message(Message::Pong(p)) => {
                    let x = Exchange { t1: p.t1_us, t2: p.t2_us, t3: p.t3_us, t4: now_us() };
                    if let Some(e) = sync.add(x) {
                        if e.samples == 1 && !same_clock {
                            info!(
                                offset_ms = e.offset_us / 1000.0,
                                uncertainty_ms = e.uncertainty_us / 1000.0,
                                "clock synced with the sender"
                            );
                        }
                        debug!(rtt_us = x.rtt_us(), offset_us = x.offset_us(), estimate = ?e, "clock exchange");
                        self.meter.update(|c| c.clock = Some(ClockStatus::from_estimate(same_clock, &e)));
                    }
                }
                Event::Message(Message::Frame(header, jpeg)) => {
                    let received_us = now_us();
                    self.track_seq(header.seq);
                    let len = jpeg.len() as u64;
                    let capture_local_us = if same_clock {
                        Some(header.capture_us)
                    } else {
                        sync.estimate().map(|e| e.to_local(header.capture_us, received_us))
                    }
                    // A capture "after" arrival is a sync error, not a latency: unknown.
                    .filter(|&cap| cap <= received_us);
                    self.meter.update(|c| {
                        c.received += 1;
                        c.frame_moved(len);
                        // Both on the sender's clock: known without any sync.
                        let _ = c.lat_encoded.record(header.encode_end_us.saturating_sub(header.capture_us).max(1));
                        let _ = c.lat_sent.record(header.send_us.saturating_sub(header.capture_us).max(1));
                        match capture_local_us {
                            Some(cap) => {
                                let _ = c.lat_received.record(received_us.saturating_sub(cap).max(1));
                            }
                            None => c.latency_unknown += 1,
                        }
                    });
                    let mut buf = self.pool.get(Vec::new);
                    buf.clear();
                    buf.extend_from_slice(jpeg);
                    let inc = Incoming { conn: self.id, header, received_us, capture_local_us, lossless, jpeg: buf };
                    let delivered = self.tx.deliver(inc, lossless, |old| {
                        self.meter.count_drop(DropCause::DecoderBusy);
                        self.pool.put(old.jpeg);
                    });
                    if !delivered {
                        return Ok(());
                    }
                    if (self.done)() {
                        return Ok(());
                    }
                }
                Event::Message(other) => debug!(message = ?other, "ignored message from sender"),
                Event::Idle => {
                    if (self.done)() {
                        return Ok(());
                    }
                }
                Event::Eof => return Ok(()),
            }
        }
    }

    fn track_seq(&mut self, seq: u64) {
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.meter.update(|c| c.out_of_order += 1);
                return;
            }
            if seq > last + 1 {
                let gap = seq - last - 1;
                self.meter.update(|c| c.seq_gaps += gap);
            }
        }
        self.last_seq = Some(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pattern::PatternSource;
    use crate::capture::FrameSource;
    use crate::net::Subsampling;
    use crate::sender::{self, SendConfig};
    use crate::view::ViewError;

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
}
