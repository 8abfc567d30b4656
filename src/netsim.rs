//! `framecast netsim`: a userspace TCP relay that behaves like a slow link, so that settings
//! can be tried against a bad link (and tested) without kernel `netem`.
//!
//! Each accepted connection is connected to `--forward`, and each direction of it is a *link*:
//!
//! ```text
//! source ──read──▶ [reader] ──▶ queue (--queue bytes) ──▶ [writer] ──write──▶ destination
//!                   stops reading      serialised at --rate, then held for
//!                   while it is full   --delay + jitter, never reordered
//! ```
//!
//! - The reader (`c{N}-{fwd|rev}-rx` thread) reads the source in chunks of up to
//!   [`READ_CHUNK`] bytes, cut into packets of at most [`PACKET`] bytes, into a queue of
//!   `--queue` bytes. When the queue is full it stops reading, so the sender upstream sees
//!   TCP backpressure, as a full router buffer does to a TCP flow. Nothing is ever dropped.
//! - The writer (`c{N}-{fwd|rev}-tx` thread) takes packets off the queue by the serialisation
//!   clock of [`LinkModel`] (a packet of n bytes leaves n·8/rate after the previous one) and
//!   writes each at its delivery time: departure + delay + a random jitter in [0, jitter],
//!   but never before the previous packet (no reordering).
//! - Stalls (`--stall-every`, `--stall`) are Wi-Fi-like pauses: nothing departs during one.
//!   They are scheduled on one clock from the relay's start, for every link at once: the
//!   k-th stall covers [k·every, k·every + stall), k ≥ 1.
//!
//! `--rate` counts payload bytes (TCP/IP headers are not modelled) and applies to each
//! direction on its own. The relay's own receive buffers are kept small ([`SOCKET_RCVBUF`]), so
//! that the standing queue a sender can build is `--queue` plus a few tens of KB in the
//! kernel, not megabytes (the sender's own send buffer is the sender's business).
//!
//! A half-close (EOF) travels through the link after the data before it; an error on either
//! side ends that connection (logged), and the relay keeps serving others.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::net::conn::{accept_loop, Next};

/// The most a reader takes from its socket at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// The unit the link serialises and delivers: an Ethernet-sized packet of payload.
pub const PACKET: usize = 1500;
/// SO_RCVBUF of the relay's sockets (the kernel doubles it). Small, so that the kernel holds
/// little beyond `--queue` on the sender's behalf.
pub const SOCKET_RCVBUF: usize = 16 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Wi-Fi-like stalls: every `every`, nothing departs for `length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub every: Duration,
    pub length: Duration,
}

/// What each direction of a relayed connection behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// Bottleneck rate in bits per second of payload (> 0).
    pub rate_bps: u64,
    /// One-way delay added after serialisation.
    pub delay: Duration,
    /// Upper bound of the uniform random delay added on top of `delay`.
    pub jitter: Duration,
    /// The router buffer: bytes waiting to be serialised (≥ 1).
    pub queue_bytes: usize,
    pub stall: Option<Stall>,
}

impl fmt::Display for LinkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, delay {}, jitter {}, queue {} bytes",
            format_rate(self.rate_bps as f64),
            fmt_dur(self.delay),
            fmt_dur(self.jitter),
            self.queue_bytes
        )?;
        match self.stall {
            Some(s) => write!(f, ", stall {} every {}", fmt_dur(s.length), fmt_dur(s.every)),
            None => write!(f, ", no stalls"),
        }
    }
}

/// The checked `framecast netsim` configuration.
#[derive(Debug)]
pub struct NetsimConfig {
    /// Already bound and listening.
    pub listener: TcpListener,
    /// `--forward` as given, for logs.
    pub forward: String,
    /// What `--forward` resolved to at start; tried in order for each connection.
    pub forward_addrs: Vec<SocketAddr>,
    pub link: LinkParams,
}

// ---------------------------------------------------------------------------------------
// Units on the command line.

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let v: f64 = s[..end].parse().ok()?;
    v.is_finite().then_some((v, s[end..].trim()))
}

/// Parses a rate in bits per second: bits (`bit`, `kbit`, `mbit`, `gbit`, optionally `/s`,
/// any case; SI, so `1kbit` = 1000 bit/s) or bytes (`B/s`, `KB/s`, `MB/s`, `GB/s`, `KiB/s`,
/// `MiB/s`, `GiB/s`). `kbps`/`mbps` are refused: tc reads them as bytes, most people as bits.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    const HELP: &str = "expected a rate with a unit, e.g. 5mbit, 500kbit, 2MB/s \
                        (bits: bit, kbit, mbit, gbit; bytes: B/s, KB/s, MB/s, KiB/s, MiB/s)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let lower = unit.to_ascii_lowercase();
    let bits = lower.strip_suffix("/s").unwrap_or(&lower);
    let mult: f64 = match bits {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(format!(
                "'{unit}' is ambiguous (bits or bytes?): write {v}{}bit for bits or {v}{}B/s for bytes per second",
                &bits[..bits.len() - 3],
                bits[..bits.len() - 3].to_ascii_uppercase()
            ))
        }
        _ => match unit {
            "B/s" => 8.0,
            "KB/s" | "kB/s" => 8e3,
            "MB/s" => 8e6,
            "GB/s" => 8e9,
            "KiB/s" => 8.0 * 1024.0,
            "MiB/s" => 8.0 * 1024.0 * 1024.0,
            "GiB/s" => 8.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(HELP.into()),
        },
    };
    let bps = (v * mult).round();
    if !(1e3..=1e11).contains(&bps) {
        return Err(format!("{s} is out of range: the rate must be 1kbit..100gbit"));
    }
    Ok(bps as u64)
}

/// Parses a duration with a unit: `us` (or `µs`), `ms`, `s`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HELP: &str = "expected a duration with a unit, e.g. 20ms, 1.5s, 500us (or 0)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let secs = match unit {
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "" if v == 0.0 => 0.0,
        _ => return Err(HELP.into()),
    };
    if secs > 3600.0 {
        return Err(format!("{s} is over the limit of one hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size in bytes: a number, or one with `B`, `KB`, `MB` (SI: 1KB = 1000 bytes),
/// `KiB`, `MiB` (1KiB = 1024 bytes); case does not matter, sizes are always bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    const HELP: &str = "expected a size in bytes, e.g. 64KB, 1MiB, 1500 (B, KB, MB = 1000s; KiB, MiB = 1024s)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        u if u.ends_with("bit") => return Err(format!("'{unit}': a size is in bytes, e.g. 64KB")),
        _ => return Err(HELP.into()),
    };
    let bytes = (v * mult).round();
    if !(1.0..=1024.0 * 1024.0 * 1024.0).contains(&bytes) {
        return Err(format!("{s} is out of range: 1 byte..1GiB"));
    }
    Ok(bytes as usize)
}

/// A rate for people: `5 Mbit/s`, `512 kbit/s`, `1.25 Gbit/s`.
pub fn format_rate(bps: f64) -> String {
    let (v, unit) = if bps >= 1e9 {
        (bps / 1e9, "Gbit/s")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbit/s")
    } else if bps >= 1e3 {
        (bps / 1e3, "kbit/s")
    } else {
        (bps, "bit/s")
    };
    let s = format!("{v:.3}");
    format!("{} {unit}", s.trim_end_matches('0').trim_end_matches('.'))
}

fn fmt_dur(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.as_micros() % 1000 != 0 {
        format!("{}us", d.as_micros())
    } else if d.as_millis() % 1000 != 0 || d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------------------
// The link model: pure time arithmetic, driven by the I/O threads with the real clock and by
// the tests with a fake one. Times are durations since the relay's start.

/// When one packet was serialised and when it is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Serialisation starts (the packet leaves the queue).
    pub start: Duration,
    /// Its last bit has left the bottleneck.
    pub departure: Duration,
    /// It reaches the other end: departure + delay + jitter, never before the previous one.
    pub delivery: Duration,
}

/// One direction of the link: a serialiser at a fixed rate with stalls, then a delay line
/// with jitter that never reorders.
#[derive(Clone, Debug)]
pub struct LinkModel {
    rate_bps: u64,
    delay: Duration,
    jitter: Duration,
    stall: Option<Stall>,
    /// When the serialiser is free again (the previous departure).
    free_at: Duration,
    last_delivery: Duration,
    rng: SplitMix64,
}

impl LinkModel {
    /// `seed` drives the jitter; the same seed gives the same delays.
    pub fn new(p: &LinkParams, seed: u64) -> Self {
        assert!(p.rate_bps > 0, "rate must be positive");
        if let Some(s) = p.stall {
            assert!(s.length < s.every, "a stall must be shorter than its period");
        }
        LinkModel {
            rate_bps: p.rate_bps,
            delay: p.delay,
            jitter: p.jitter,
            stall: p.stall.filter(|s| !s.length.is_zero()),
            free_at: Duration::ZERO,
            last_delivery: Duration::ZERO,
            rng: SplitMix64(seed),
        }
    }

    /// How long `len` bytes occupy the bottleneck: len·8/rate.
    pub fn serialisation(&self, len: usize) -> Duration {
        let ns = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(self.rate_bps));
        Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }

    /// When a packet that reached the queue at `arrived` starts serialisation, if it is the
    /// next one: once the serialiser is free, and not during a stall.
    pub fn start_time(&self, arrived: Duration) -> Duration {
        self.after_stall(arrived.max(self.free_at))
    }

    /// Serialises the next packet, `len` bytes that reached the queue at `arrived`.
    pub fn send(&mut self, arrived: Duration, len: usize) -> Timing {
        let start = self.start_time(arrived);
        let departure = self.finish(start, self.serialisation(len));
        self.free_at = departure;
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(self.jitter.as_nanos() as u64 + 1))
        };
        let delivery = (departure + self.delay + jitter).max(self.last_delivery);
        self.last_delivery = delivery;
        Timing { start, departure, delivery }
    }

    /// `t`, or the end of the stall that `t` falls in.
    fn after_stall(&self, t: Duration) -> Duration {
        let Some(s) = self.stall else { return t };
        let k = t.as_nanos() / s.every.as_nanos();
        if k == 0 {
            return t;
        }
        let begins = mul(s.every, k);
        if t < begins + s.length {
            begins + s.length
        } else {
            t
        }
    }

    /// When `work` of serialisation that starts at `start` is done, pausing for stalls.
    fn finish(&self, start: Duration, mut work: Duration) -> Duration {
        let mut t = start;
        loop {
            t = self.after_stall(t);
            let Some(s) = self.stall else { return t + work };
            let next_stall = mul(s.every, t.as_nanos() / s.every.as_nanos() + 1);
            if t + work <= next_stall {
                return t + work;
            }
            work -= next_stall - t;
            t = next_stall;
        }
    }
}

fn mul(d: Duration, k: u128) -> Duration {
    let ns = d.as_nanos() * k;
    Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
}

/// A small, fast, seedable generator (Steele, Lea, Flood 2014); good enough for jitter.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (n > 0), by Lemire's multiply-shift (bias below 2^-32 here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

// ---------------------------------------------------------------------------------------
// The I/O around the model.

/// What one direction of a connection carried.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkTotals {
    /// Bytes delivered to the destination.
    pub bytes: u64,
    pub packets: u64,
    /// When the first byte reached the queue and the last was delivered.
    pub first_arrival: Option<Duration>,
    pub last_delivery: Option<Duration>,
    /// The most bytes the queue held.
    pub peak_queue: usize,
    /// The longest a packet waited in the queue.
    pub max_queue_wait: Duration,
}

impl LinkTotals {
    /// Mean throughput in bit/s from the first arrival to the last delivery.
    pub fn mean_bps(&self) -> f64 {
        match (self.first_arrival, self.last_delivery) {
            (Some(a), Some(b)) if b > a => self.bytes as f64 * 8.0 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

struct Packet {
    arrived: Duration,
    data: Vec<u8>,
}

#[derive(Default)]
struct QueueState {
    packets: VecDeque<Packet>,
    bytes: usize,
    /// The source ended: deliver what is queued, then half-close the destination.
    eof: bool,
    /// The connection is being torn down: stop at once.
    abort: bool,
    peak: usize,
    first_arrival: Option<Duration>,
}

/// The router buffer of one link: packets in arrival order, at most `cap` bytes.
struct Queue {
    cap: usize,
    state: Mutex<QueueState>,
    /// Signalled when a packet, EOF or abort arrives (the writer waits on it).
    data: Condvar,
    /// Signalled when room is made or on abort (the reader waits on it).
    room: Condvar,
}

impl Queue {
    fn new(cap: usize) -> Self {
        Queue { cap, state: Mutex::default(), data: Condvar::new(), room: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn abort(&self) {
        self.lock().abort = true;
        self.data.notify_all();
        self.room.notify_all();
    }
}

/// What the threads of one connection share: both sockets (to unblock every thread when one
/// fails) and both queues.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    queues: [Arc<Queue>; 2],
    aborted: AtomicBool,
}

impl Conn {
    /// Ends the connection after `what` failed: the first failure is logged, and every thread
    /// of the connection is woken to stop.
    fn fail(&self, link: &str, what: &str, e: &io::Error) {
        if self.aborted.swap(true, Ordering::SeqCst) {
            debug!(conn = self.id, link, what, error = %e, "after the connection was aborted");
            return;
        }
        warn!(conn = self.id, link, error = %e, "{what} failed; closing the connection");
        for q in &self.queues {
            q.abort();
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// Accepts connections forever and relays each to `cfg.forward` through two links.
pub fn run(cfg: NetsimConfig) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let NetsimConfig { listener, forward, forward_addrs, link } = cfg;
    // Accepted sockets inherit the listener's receive buffer (and their window scale).
    let _ = socket2::SockRef::from(&listener).set_recv_buffer_size(SOCKET_RCVBUF);
    let listen = listener.local_addr()?;
    info!(
        %listen,
        %forward,
        rate = %format_rate(link.rate_bps as f64),
        delay_ms = link.delay.as_secs_f64() * 1e3,
        jitter_ms = link.jitter.as_secs_f64() * 1e3,
        queue_bytes = link.queue_bytes,
        stall_every_ms = link.stall.map_or(0.0, |s| s.every.as_secs_f64() * 1e3),
        stall_ms = link.stall.map_or(0.0, |s| s.length.as_secs_f64() * 1e3),
        "netsim listening"
    );
    let forward_addrs = Arc::new(forward_addrs);
    let mut next_id = 0u64;
    accept_loop(&listener, &|| false, |client, peer| {
        next_id += 1;
        let id = next_id;
        let (addrs, forward) = (forward_addrs.clone(), forward.clone());
        let spawned = thread::Builder::new().name(format!("c{id}")).spawn(move || {
            info!(conn = id, %peer, "accepted");
            match connect(&addrs) {
                Ok(server) => {
                    relay(id, client, server, &link, epoch);
                }
                Err(e) => {
                    warn!(conn = id, %peer, %forward, error = %e, "cannot connect to --forward; closing the client")
                }
            }
        });
        if let Err(e) = spawned {
            warn!(conn = id, error = %e, "cannot start a connection thread");
        }
        Next::Accept
    })?;
    Ok(())
}

fn connect(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for a in addrs {
        let sock = socket2::Socket::new(socket2::Domain::for_address(*a), socket2::Type::STREAM, None)?;
        let _ = sock.set_recv_buffer_size(SOCKET_RCVBUF);
        match sock.connect_timeout(&(*a).into(), CONNECT_TIMEOUT) {
            Ok(()) => return Ok(sock.into()),
            Err(e) => last = io::Error::new(e.kind(), format!("{a}: {e}")),
        }
    }
    Err(last)
}

/// Relays `client` <-> `server` until both directions have ended (or one failed), and logs
/// the totals. Returns the totals of the client->server and server->client links.
pub fn relay(id: u64, client: TcpStream, server: TcpStream, p: &LinkParams, epoch: Instant) -> [LinkTotals; 2] {
    let started = Instant::now();
    let peer = client.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    let setup = (|| -> io::Result<_> {
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let conn = Arc::new(Conn {
            id,
            client: client.try_clone()?,
            server: server.try_clone()?,
            queues: [Arc::new(Queue::new(p.queue_bytes)), Arc::new(Queue::new(p.queue_bytes))],
            aborted: AtomicBool::new(false),
        });
        let seed = epoch.elapsed().as_nanos() as u64 ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let fwd = LinkEnds { index: 0, name: "fwd", src: client.try_clone()?, dst: server.try_clone()?, seed };
        let rev = LinkEnds { index: 1, name: "rev", src: server.try_clone()?, dst: client.try_clone()?, seed: !seed };
        let fwd = spawn_link(&conn, fwd, p, epoch)?;
        // The fwd link runs already: if rev cannot start, stop it too.
        let rev = spawn_link(&conn, rev, p, epoch).inspect_err(|e| conn.fail("rev", "starting", e))?;
        Ok((conn, fwd, rev))
    })();
    let (conn, fwd, rev) = match setup {
        Ok(x) => x,
        Err(e) => {
            warn!(conn = id, error = %e, "cannot set up the relay; closing the connection");
            return [LinkTotals::default(); 2];
        }
    };
    let totals = [fwd.join(), rev.join()];
    let secs = started.elapsed().as_secs_f64();
    info!(
        conn = id,
        %peer,
        secs = format_args!("{secs:.2}"),
        fwd_bytes = totals[0].bytes,
        fwd_rate = %format_rate(totals[0].mean_bps()),
        fwd_peak_queue = totals[0].peak_queue,
        fwd_max_wait_ms = totals[0].max_queue_wait.as_millis() as u64,
        rev_bytes = totals[1].bytes,
        rev_rate = %format_rate(totals[1].mean_bps()),
        rev_peak_queue = totals[1].peak_queue,
        rev_max_wait_ms = totals[1].max_queue_wait.as_millis() as u64,
        drops = 0,
        aborted = conn.aborted.load(Ordering::SeqCst),
        "connection closed"
    );
    totals
}

/// The two threads of one link.
struct LinkThreads {
    reader: thread::JoinHandle<()>,
    writer: thread::JoinHandle<LinkTotals>,
}

impl LinkThreads {
    fn join(self) -> LinkTotals {
        let _ = self.reader.join();
        self.writer.join().unwrap_or_default()
    }
}

/// What sets one link apart from the other: its queue, its name in thread names and logs,
/// its two sockets and the seed of its jitter.
struct LinkEnds {
    /// Index into `Conn::queues`: 0 for client->server, 1 for server->client.
    index: usize,
    name: &'static str,
    /// The socket the link reads from.
    src: TcpStream,
    /// The socket the link writes to.
    dst: TcpStream,
    seed: u64,
}

/// Starts the reader and writer threads of one link of `conn`.
fn spawn_link(conn: &Arc<Conn>, link: LinkEnds, p: &LinkParams, epoch: Instant) -> io::Result<LinkThreads> {
    let LinkEnds { index, name, mut src, mut dst, seed } = link;
    let q = conn.queues[index].clone();
    let id = conn.id;
    let reader = {
        let (conn, q) = (conn.clone(), q.clone());
        thread::Builder::new().name(format!("c{id}-{name}-rx")).spawn(move || {
            if let Err(e) = read_into(&q, &mut src, epoch) {
                conn.fail(name, "reading", &e);
            }
        })?
    };
    let mut model = LinkModel::new(p, seed);
    let conn = conn.clone();
    let writer = thread::Builder::new().name(format!("c{id}-{name}-tx")).spawn(move || {
        let mut totals = LinkTotals::default();
        match write_out(&q, &mut model, &mut dst, epoch, &mut totals) {
            Ok(false) => {}
            Ok(true) => {
                // The source ended and everything was delivered: pass the half-close on.
                if let Err(e) = dst.shutdown(Shutdown::Write) {
                    if e.kind() != io::ErrorKind::NotConnected {
                        conn.fail(name, "half-closing", &e);
                    }
                }
            }
            Err(e) => conn.fail(name, "writing", &e),
        }
        // Whatever ended the writer, the reader must not wait for room any more.
        q.abort();
        let st = q.lock();
        totals.peak_queue = st.peak;
        totals.first_arrival = st.first_arrival;
        totals
    })?;
    Ok(LinkThreads { reader, writer })
}

/// The reader: source -> queue, reading only while the queue has room for a packet.
fn read_into(q: &Queue, src: &mut TcpStream, epoch: Instant) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    let min_room = q.cap.min(PACKET);
    loop {
        let room = {
            let mut st = q.lock();
            loop {
                if st.abort {
                    return Ok(());
                }
                let room = q.cap - st.bytes;
                if room >= min_room {
                    break room;
                }
                st = q.room.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let n = match src.read(&mut buf[..room.min(READ_CHUNK)]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let now = epoch.elapsed();
        let mut st = q.lock();
        if n == 0 {
            st.eof = true;
        } else {
            st.first_arrival.get_or_insert(now);
            for piece in buf[..n].chunks(PACKET) {
                st.packets.push_back(Packet { arrived: now, data: piece.to_vec() });
            }
            st.bytes += n;
            st.peak = st.peak.max(st.bytes);
        }
        drop(st);
        q.data.notify_one();
        if n == 0 {
            return Ok(());
        }
    }
}

/// Packets being serialised or propagated, each with its delivery time, in delivery order.
type InFlight = VecDeque<(Duration, Vec<u8>)>;

/// The writer: queue -> model -> destination, each packet written at its delivery time.
/// Returns true once the source ended and everything was delivered, false on abort.
fn write_out(
    q: &Queue,
    model: &mut LinkModel,
    dst: &mut TcpStream,
    epoch: Instant,
    totals: &mut LinkTotals,
) -> io::Result<bool> {
    let mut in_flight: InFlight = VecDeque::new();
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let now = epoch.elapsed();
        if deliver_due(&mut in_flight, now, &mut out, dst, totals)? {
            continue;
        }
        let mut st = q.lock();
        if st.abort {
            return Ok(false);
        }
        if start_due(&mut st, model, now, &mut in_flight, totals) {
            drop(st);
            q.room.notify_one();
            continue;
        }
        // Nothing to do now: sleep until the next start or delivery, or until data arrives.
        match next_wake(&st, model, &in_flight) {
            None if st.eof => return Ok(true),
            None => drop(q.data.wait(st).unwrap_or_else(|p| p.into_inner())),
            Some(at) => {
                let left = at.saturating_sub(epoch.elapsed());
                drop(q.data.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()));
            }
        }
    }
}

/// Writes every packet in `in_flight` that is due at `now` to `dst`, in one write through
/// the scratch buffer `out`. Returns whether anything was written.
fn deliver_due(
    in_flight: &mut InFlight,
    now: Duration,
    out: &mut Vec<u8>,
    dst: &mut TcpStream,
    totals: &mut LinkTotals,
) -> io::Result<bool> {
    out.clear();
    while in_flight.front().is_some_and(|(at, _)| *at <= now) {
        let (at, data) = in_flight.pop_front().expect("front exists");
        out.extend_from_slice(&data);
        totals.packets += 1;
        totals.last_delivery = Some(at);
    }
    if out.is_empty() {
        return Ok(false);
    }
    dst.write_all(out)?;
    totals.bytes += out.len() as u64;
    Ok(true)
}

/// Moves every queued packet that may start serialising at `now` through the model and into
/// `in_flight`. Returns whether any packet left the queue.
fn start_due(
    st: &mut QueueState,
    model: &mut LinkModel,
    now: Duration,
    in_flight: &mut InFlight,
    totals: &mut LinkTotals,
) -> bool {
    let mut started = false;
    while let Some(head) = st.packets.front() {
        if model.start_time(head.arrived) > now {
            break;
        }
        let p = st.packets.pop_front().expect("front exists");
        st.bytes -= p.data.len();
        let t = model.send(p.arrived, p.data.len());
        totals.max_queue_wait = totals.max_queue_wait.max(t.start.saturating_sub(p.arrived));
        in_flight.push_back((t.delivery, p.data));
        started = true;
    }
    started
}

/// The earliest time the writer has work: the next packet's start or the next delivery.
/// None if nothing is queued or in flight.
fn next_wake(st: &QueueState, model: &LinkModel, in_flight: &InFlight) -> Option<Duration> {
    let next_start = st.packets.front().map(|h| model.start_time(h.arrived));
    let next_delivery = in_flight.front().map(|(at, _)| *at);
    match (next_start, next_delivery) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;

    const MS: Duration = Duration::from_millis(1);

    fn params(rate: &str) -> LinkParams {
        LinkParams {
            rate_bps: parse_rate(rate).unwrap(),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            queue_bytes: 64_000,
            stall: None,
        }
    }

    /// Sends `n` packets of `len` bytes that all arrive at `arrived` (a backlogged queue).
    fn backlog(m: &mut LinkModel, n: usize, len: usize, arrived: Duration) -> Vec<Timing> {
        (0..n).map(|_| m.send(arrived, len)).collect()
    }

    #[test]
    fn rates() {
        for (s, bps) in [
            ("5mbit", 5_000_000),
            ("5Mbit", 5_000_000),
            ("5mbit/s", 5_000_000),
            ("500kbit", 500_000),
            ("1.5mbit", 1_500_000),
            ("1gbit", 1_000_000_000),
            ("64000bit", 64_000),
            ("2MB/s", 16_000_000),
            ("2kB/s", 16_000),
            ("1MiB/s", 8 * 1024 * 1024),
            (" 10 mbit ", 10_000_000),
        ] {
            assert_eq!(parse_rate(s), Ok(bps), "{s}");
        }
        for bad in ["", "5", "mbit", "5 foo", "-5mbit", "0mbit", "5mb/s", "1e3kbit", "200gbit", "5MB"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted as {:?}", parse_rate(bad));
        }
        let e = parse_rate("5mbps").unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("5mbit") && e.contains("5MB/s"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("20ms"), Ok(20 * MS));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(1500 * MS));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "20", "ms", "-5ms", "5 min", "2h", "7200s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("1500B"), Ok(1500));
        for bad in ["", "0", "KB", "64 parsecs", "2GiB", "-1KB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("64kbit").unwrap_err().contains("bytes"));
        assert_eq!(format_rate(5e6), "5 Mbit/s");
        assert_eq!(format_rate(4_987_654.0), "4.988 Mbit/s");
        assert_eq!(format_rate(500e3), "500 kbit/s");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let base = ["framecast", "netsim", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1"];
        for (extra, flag) in [
            (&["--rate", "5"][..], "--rate"),
            (&["--rate", "5mbps"][..], "--rate"),
            (&["--rate", "5mbit", "--delay", "20"][..], "--delay"),
            (&["--rate", "5mbit", "--jitter", "x"][..], "--jitter"),
            (&["--rate", "5mbit", "--queue", "64kbit"][..], "--queue"),
            (&["--rate", "5mbit", "--stall", "300ms"][..], "--stall-every"),
            (&["--rate", "5mbit", "--stall-every", "1s"][..], "--stall"),
            (&[][..], "--rate"),
        ] {
            let e = Cli::try_parse_from(base.iter().chain(extra)).unwrap_err().to_string();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        for (extra, needle) in [
            (
                &["--stall-every", "1s", "--stall", "1s"][..],
                "--stall 1s must be more than 0 and shorter than --stall-every 1s",
            ),
            (&["--stall-every", "1s", "--stall", "0"][..], "--stall"),
        ] {
            let args = base.iter().chain(&["--rate", "5mbit"]).chain(extra);
            let Cmd::Netsim(a) = Cli::try_parse_from(args).unwrap().cmd else { unreachable!() };
            let e = format!("{:#}", a.into_config().unwrap_err());
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let args =
            base.iter().chain(&["--rate", "5mbit", "--delay", "20ms", "--stall-every", "10s", "--stall", "500ms"]);
        let Cmd::Netsim(a) = Cli::try_parse_from(args).unwrap().cmd else { unreachable!() };
        let cfg = a.into_config().unwrap();
        assert_eq!(
            cfg.link,
            LinkParams {
                rate_bps: 5_000_000,
                delay: 20 * MS,
                jitter: Duration::ZERO,
                queue_bytes: 64_000,
                stall: Some(Stall { every: Duration::from_secs(10), length: 500 * MS }),
            }
        );
        assert_eq!(cfg.link.to_string(), "5 Mbit/s, delay 20ms, jitter 0, queue 64000 bytes, stall 500ms every 10s");
    }

    #[test]
    fn backlogged_throughput_is_the_rate() {
        for rate in ["5mbit", "500kbit", "20mbit", "3MB/s"] {
            let mut m = LinkModel::new(&params(rate), 1);
            let t = backlog(&mut m, 10_000, PACKET, Duration::ZERO);
            let bits = (10_000 * PACKET * 8) as f64;
            let secs = t.last().unwrap().departure.as_secs_f64();
            let got = bits / secs;
            let want = parse_rate(rate).unwrap() as f64;
            assert!((got / want - 1.0).abs() < 1e-6, "{rate}: {got} bit/s");
            // One packet at a time, back to back.
            for w in t.windows(2) {
                assert_eq!(w[1].start, w[0].departure);
            }
        }
    }

    #[test]
    fn an_idle_link_starts_at_once_and_adds_only_serialisation_and_delay() {
        let mut m = LinkModel::new(&LinkParams { delay: 20 * MS, ..params("8mbit") }, 1);
        // 1000 bytes at 8 Mbit/s take 1 ms.
        let t = m.send(100 * MS, 1000);
        assert_eq!(t, Timing { start: 100 * MS, departure: 101 * MS, delivery: 121 * MS });
        // Later, on an idle link again.
        let t = m.send(500 * MS, 500);
        assert_eq!(t, Timing { start: 500 * MS, departure: 500 * MS + MS / 2, delivery: 520 * MS + MS / 2 });
        // A packet arriving while the previous is serialised waits for it.
        let a = m.send(1000 * MS, 1000);
        let b = m.send(1000 * MS + MS / 4, 1000);
        assert_eq!(b.start, a.departure);
        assert_eq!(b.delivery, a.delivery + MS);
    }

    #[test]
    fn delay_and_jitter_stay_in_bounds_and_never_reorder() {
        let (delay, jitter) = (20 * MS, 10 * MS);
        let mut m = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 42);
        // Sparse packets (jitter is free to vary) and a backlog (it is clamped by order).
        let mut t: Vec<Timing> = (0..500).map(|i| m.send(i * 50 * MS, 100)).collect();
        t.extend(backlog(&mut m, 2000, PACKET, 30 * Duration::from_secs(1)));
        let extra: Vec<Duration> = t.iter().map(|t| t.delivery - t.departure).collect();
        for (i, e) in extra.iter().enumerate() {
            assert!(*e >= delay && *e <= delay + jitter, "packet {i}: {e:?} after departure");
        }
        for w in t.windows(2) {
            assert!(w[1].delivery >= w[0].delivery, "reordered: {w:?}");
            assert!(w[1].departure > w[0].departure);
        }
        // The sparse packets see the whole jitter range, not a constant.
        let sparse = &extra[..500];
        let (lo, hi) = (sparse.iter().min().unwrap(), sparse.iter().max().unwrap());
        assert!(*lo < delay + jitter / 10 && *hi > delay + jitter * 9 / 10, "jitter range {lo:?}..{hi:?}");
        let mean = sparse.iter().sum::<Duration>() / 500;
        assert!(mean > delay + 4 * MS && mean < delay + 6 * MS, "mean {mean:?}");
        // Same seed, same delays; another seed, others.
        let again: Vec<Timing> = {
            let mut m = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 42);
            (0..500).map(|i| m.send(i * 50 * MS, 100)).collect()
        };
        assert_eq!(&t[..500], &again[..]);
        let mut other = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 43);
        assert!((0..500).any(|i| other.send(i * 50 * MS, 100) != t[i as usize]));
    }

    #[test]
    fn nothing_departs_during_a_stall() {
        let stall = Stall { every: Duration::from_secs(1), length: 300 * MS };
        let mut m = LinkModel::new(&LinkParams { stall: Some(stall), delay: 20 * MS, ..params("5mbit") }, 7);
        let t = backlog(&mut m, 4000, PACKET, Duration::ZERO);
        let in_stall = |d: Duration| d >= Duration::from_secs(1) && d.as_nanos() % 1_000_000_000 < 300_000_000;
        for (i, x) in t.iter().enumerate() {
            assert!(!in_stall(x.start), "packet {i} starts in a stall: {x:?}");
            // A departure exactly at a stall's start is the last bit before it.
            assert!(!in_stall(x.departure) || x.departure.subsec_nanos() == 0, "packet {i} departs in a stall: {x:?}");
        }
        // A gap of the stall's length at each stall, and none elsewhere.
        let gaps: Vec<(Duration, Duration)> = t
            .windows(2)
            .filter(|w| w[1].delivery - w[0].delivery > 10 * MS)
            .map(|w| (w[0].delivery, w[1].delivery - w[0].delivery))
            .collect();
        let last = t.last().unwrap().departure;
        assert_eq!(gaps.len() as u64, last.as_secs(), "gaps {gaps:?}, last departure {last:?}");
        for (at, gap) in &gaps {
            assert!(*gap >= 300 * MS && *gap < 300 * MS + 3 * MS, "gap {gap:?} at {at:?}");
        }
        // 70% of the time is usable: 4000 packets take 4000*1500*8/5e6 = 9.6 s of link time.
        let link_time = Duration::from_secs_f64(9.6);
        let stalled = 300 * MS * last.as_secs() as u32;
        assert!(last.abs_diff(link_time + stalled) < MS, "last departure {last:?}");
        // A packet arriving in a stall waits for its end; before the first period, none.
        let m = LinkModel::new(&LinkParams { stall: Some(stall), ..params("5mbit") }, 7);
        assert_eq!(m.start_time(500 * MS), 500 * MS);
        assert_eq!(m.start_time(2100 * MS), 2300 * MS);
        assert_eq!(m.start_time(2300 * MS), 2300 * MS);
    }

    #[test]
    fn a_packet_longer_than_the_gap_between_stalls_spans_them() {
        let stall = Stall { every: 100 * MS, length: 50 * MS };
        let mut m = LinkModel::new(&LinkParams { stall: Some(stall), ..params("8kbit") }, 1);
        // 1000 bytes at 8 kbit/s = 1 s of link time, 50 ms per 100 ms usable from 0.1 s on.
        let t = m.send(Duration::ZERO, 1000);
        // 0..100 ms usable, then 50 ms per period: 900 ms more needs 18 periods.
        assert_eq!(t.departure, 100 * MS + 18 * 100 * MS);
    }
}
