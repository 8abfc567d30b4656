//! The UDP relay of `framecast netsim --udp`: datagrams from clients to `--forward` and back,
//! through a [`PacketLink`] per direction (rate, drop-tail router queue, delay, jitter, loss).
//!
//! ```text
//! client A ─┐                 fwd link                   ┌─ upstream socket A ─┐
//! client B ─┼─▶ --listen ──▶ queue ▶ loss ▶ rate ▶ delay ─┼─ upstream socket B ─┼─▶ --forward
//!           └──────────◀── rev link (the same, the other way) ◀──────────────────┘
//! ```
//!
//! Each client address gets its own upstream socket (connected to `--forward`), so the server
//! sees several clients as several peers and its answers find their way back; a mapping idle
//! for [`IDLE`] is dropped, and at most [`MAX_CLIENTS`] exist at once. The two links are each
//! one bottleneck that all clients share, as on a real link. One thread (the main thread) runs
//! it all: it waits on every socket until the next packet is due ([`super::wait_readable`]),
//! reads what arrived into the links, and sends what is due. Counts per direction (in, lost,
//! dropped by the queue, delivered) are logged every [`super::REPORT_EVERY`] and at exit
//! (SIGINT/SIGTERM).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, info, warn};

use super::{format_rate, log_counts, wait_readable, LinkParams, LossParams, PacketLink, REPORT_EVERY};

/// A client mapping with no datagram either way for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);
/// The most client mappings at once; datagrams from further addresses are dropped and counted.
pub const MAX_CLIENTS: usize = 256;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked for each socket, so that the kernel drops little before the link does.
const SOCKET_BUF: usize = 1 << 20;

/// The checked configuration of the UDP relay.
#[derive(Debug)]
pub struct UdpConfig {
    /// Bound to `--listen`.
    pub socket: UdpSocket,
    /// `--forward` as given, for logs.
    pub forward: String,
    pub forward_addr: SocketAddr,
    pub link: LinkParams,
    pub loss: LossParams,
    /// Seed of both directions' jitter and loss (`--seed`; else a new one each run).
    pub seed: u64,
}

impl UdpConfig {
    /// Binds `listen`; the error names `--listen`.
    pub fn bind(
        listen: SocketAddr,
        forward: String,
        forward_addr: SocketAddr,
        link: LinkParams,
        loss: LossParams,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(listen).with_context(|| format!("--listen {listen}: cannot bind UDP"))?;
        Ok(UdpConfig { socket, forward, forward_addr, link, loss, seed })
    }
}

/// One client address and its upstream socket.
struct Client {
    addr: SocketAddr,
    upstream: UdpSocket,
    last_seen: Instant,
}

/// The relay's state, owned by the one thread that runs it.
struct Relay {
    listen: UdpSocket,
    forward_addr: SocketAddr,
    clients: HashMap<u32, Client>,
    by_addr: HashMap<SocketAddr, u32>,
    next_id: u32,
    /// [0]: clients -> forward; [1]: forward -> clients. The tag is the client's id.
    links: [PacketLink<u32>; 2],
    epoch: Instant,
    /// Datagrams dropped outside the links: from clients over the cap, for expired clients,
    /// or refused by a socket.
    refused: u64,
    buf: Vec<u8>,
}

/// Relays until `stop` is set, then logs the counts.
pub fn run(cfg: UdpConfig, stop: &AtomicBool) -> anyhow::Result<()> {
    let listen = cfg.socket.local_addr()?;
    info!(
        %listen,
        forward = %cfg.forward,
        rate = %format_rate(cfg.link.rate_bps as f64),
        delay_ms = cfg.link.delay.as_secs_f64() * 1e3,
        jitter_ms = cfg.link.jitter.as_secs_f64() * 1e3,
        queue_bytes = cfg.link.queue_bytes,
        loss = %cfg.loss,
        seed = cfg.seed,
        "netsim udp relay listening"
    );
    let mut relay = Relay::new(cfg)?;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        relay.step()?;
        if last_report.elapsed() >= REPORT_EVERY {
            relay.expire();
            relay.report("netsim udp counts");
            last_report = Instant::now();
        }
    }
    relay.report("netsim udp relay stopped");
    Ok(())
}

impl Relay {
    fn new(cfg: UdpConfig) -> io::Result<Self> {
        cfg.socket.set_nonblocking(true)?;
        let _ = socket2::SockRef::from(&cfg.socket).set_recv_buffer_size(SOCKET_BUF);
        let seed = cfg.seed;
        Ok(Relay {
            listen: cfg.socket,
            forward_addr: cfg.forward_addr,
            clients: HashMap::new(),
            by_addr: HashMap::new(),
            next_id: 0,
            links: [PacketLink::new(&cfg.link, &cfg.loss, seed), PacketLink::new(&cfg.link, &cfg.loss, !seed)],
            epoch: Instant::now(),
            refused: 0,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// Waits for a datagram or the next due packet, reads everything that arrived, and sends
    /// everything due.
    fn step(&mut self) -> io::Result<()> {
        let now = self.epoch.elapsed();
        let wake = self.links.iter().filter_map(|l| l.next_wake()).min();
        let timeout = wake.map_or(Duration::MAX, |w| w.saturating_sub(now));
        let ids: Vec<u32> = self.clients.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.listen.as_raw_fd())
            .chain(ids.iter().map(|id| self.clients[id].upstream.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: 0, revents: 0 })
            .collect();
        wait_readable(&mut fds, timeout)?;
        if fds[0].revents != 0 {
            self.read_clients();
        }
        for (fd, id) in fds[1..].iter().zip(&ids) {
            if fd.revents != 0 {
                self.read_upstream(*id);
            }
        }
        self.send_due();
        Ok(())
    }

    /// Reads every datagram waiting on the listening socket into the fwd link.
    fn read_clients(&mut self) {
        loop {
            let (n, from) = match self.listen.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(error = %e, "receiving from clients");
                    continue;
                }
            };
            let Some(id) = self.client(from) else {
                self.refused += 1;
                continue;
            };
            let now = self.epoch.elapsed();
            self.links[0].push(now, id, self.buf[..n].to_vec());
        }
    }

    /// Reads every datagram waiting on client `id`'s upstream socket into the rev link.
    fn read_upstream(&mut self, id: u32) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        loop {
            match c.upstream.recv(&mut self.buf) {
                Ok(n) => {
                    c.last_seen = Instant::now();
                    self.links[1].push(self.epoch.elapsed(), id, self.buf[..n].to_vec());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error from --forward (nothing listening yet): the link goes on.
                Err(e) => debug!(client = %c.addr, error = %e, "receiving from --forward"),
            }
        }
    }

    /// The id of `from`'s mapping, made if new (None when the cap is reached).
    fn client(&mut self, from: SocketAddr) -> Option<u32> {
        if let Some(id) = self.by_addr.get(&from) {
            let c = self.clients.get_mut(id).expect("mapped clients exist");
            c.last_seen = Instant::now();
            return Some(*id);
        }
        if self.clients.len() >= MAX_CLIENTS {
            if self.refused == 0 {
                warn!(client = %from, max = MAX_CLIENTS, "too many client addresses; dropping this one's datagrams");
            }
            return None;
        }
        let upstream = match self.upstream() {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %from, error = %e, "cannot open an upstream socket; dropping the datagram");
                return None;
            }
        };
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        info!(client = %from, upstream = %upstream.local_addr().map_or("?".into(), |a| a.to_string()), "new client");
        self.clients.insert(id, Client { addr: from, upstream, last_seen: Instant::now() });
        self.by_addr.insert(from, id);
        Some(id)
    }

    /// A new socket connected to `--forward`, on an ephemeral port.
    fn upstream(&self) -> io::Result<UdpSocket> {
        let any: SocketAddr =
            if self.forward_addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let s = UdpSocket::bind(any)?;
        s.connect(self.forward_addr)?;
        s.set_nonblocking(true)?;
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(SOCKET_BUF);
        Ok(s)
    }

    /// Sends every packet whose delivery time has come, in both directions.
    fn send_due(&mut self) {
        let now = self.epoch.elapsed();
        while let Some((id, data)) = self.links[0].pop_due(now) {
            let sent = self.clients.get(&id).map(|c| c.upstream.send(&data));
            self.count_send("to --forward", sent);
        }
        while let Some((id, data)) = self.links[1].pop_due(now) {
            let sent = self.clients.get(&id).map(|c| self.listen.send_to(&data, c.addr));
            self.count_send("to a client", sent);
        }
    }

    /// Counts a datagram the link delivered but that could not be sent (client gone, or the
    /// socket refused it).
    fn count_send(&mut self, to: &str, sent: Option<io::Result<usize>>) {
        match sent {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                debug!(to, error = %e, "sending");
                self.refused += 1;
            }
            None => self.refused += 1,
        }
    }

    /// Drops the mappings idle for [`IDLE`].
    fn expire(&mut self) {
        let before = self.clients.len();
        self.clients.retain(|_, c| c.last_seen.elapsed() < IDLE);
        if self.clients.len() != before {
            self.by_addr.retain(|_, id| self.clients.contains_key(id));
            info!(expired = before - self.clients.len(), clients = self.clients.len(), "idle clients dropped");
        }
    }

    fn report(&self, event: &str) {
        log_counts(event, "fwd", &self.links[0].counts);
        log_counts(event, "rev", &self.links[1].counts);
        info!(clients = self.clients.len(), refused = self.refused, "{event}");
    }
}
