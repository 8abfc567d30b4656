//! The TCP relay of `framecast netsim` (the default mode): a userspace relay of byte streams
//! that behaves like a slow link. It cannot lose a packet (TCP would resend it); loss needs
//! `--udp` or `--packet-link`. Each connection's threads are named below; the accept loop
//! runs on the main thread.
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
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{format_rate, LinkModel, LinkParams};
use crate::net::conn::{accept_loop, Next};

/// The most a reader takes from its socket at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// The unit the link serialises and delivers: an Ethernet-sized packet of payload.
pub const PACKET: usize = 1500;
/// SO_RCVBUF of the relay's sockets (the kernel doubles it). Small, so that the kernel holds
/// little beyond `--queue` on the sender's behalf.
pub const SOCKET_RCVBUF: usize = 16 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The checked configuration of the TCP relay.
#[derive(Debug)]
pub struct TcpConfig {
    /// Already bound and listening.
    pub listener: TcpListener,
    /// `--forward` as given, for logs.
    pub forward: String,
    /// What `--forward` resolved to at start; tried in order for each connection.
    pub forward_addrs: Vec<SocketAddr>,
    pub link: LinkParams,
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
pub fn run(cfg: TcpConfig) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let TcpConfig { listener, forward, forward_addrs, link } = cfg;
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
