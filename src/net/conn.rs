//! Connection policy, shared by every listener and every caller in framecast: one accept
//! loop ([`accept_loop`]), one connect loop with named policies ([`connect`] with
//! [`Policy::once`] or [`Policy::reconnect`]), the backoff between attempts, and the socket
//! options every connection gets. What flows over a connection is not this module's business:
//! `net::io` frames it, the transports and the receiver give it meaning.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How long one connection attempt may take before it counts as timed out.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that lasted this long worked: the next reconnect starts from the first delay.
const STABLE: Duration = Duration::from_secs(1);
/// How often a waiting accept loop looks at its stop condition, and how long it rests after
/// a failed `accept` (out of descriptors, say) before trying again.
pub const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// What an accept loop's handler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Accept the next connection.
    Accept,
    /// Stop accepting: the loop returns.
    Stop,
}

/// Accepts connections on `listener` and hands each to `on_conn` (in blocking mode, with the
/// peer's address), until `on_conn` says [`Next::Stop`] or `done()` is true; `done` is looked
/// at between connections and at least every [`ACCEPT_POLL`]. A failed `accept` is logged and
/// retried, so one bad moment never ends a server. The handler decides where a connection is
/// served: inline (one peer at a time) or on a thread of its own.
pub fn accept_loop(
    listener: &TcpListener,
    done: &dyn Fn() -> bool,
    mut on_conn: impl FnMut(TcpStream, SocketAddr) -> Next,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    while !done() {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nonblocking(false) {
                    warn!(%peer, error = %e, "cannot use an accepted connection; closing it");
                    continue;
                }
                if on_conn(stream, peer) == Next::Stop {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for_peer(listener, ACCEPT_POLL)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(error = %e, "accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
    Ok(())
}

/// Waits until `listener` has a connection to accept, or `timeout` passes, without
/// busy-polling: accept loops stay responsive to new peers (a sleep-and-retry loop adds half
/// its period to every connect) and still look at their stop conditions regularly.
pub fn wait_for_peer(listener: &TcpListener, timeout: Duration) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, ms) };
    match n {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// How [`connect`] calls a peer: how long it waits between attempts, which failures it retries
/// and for how long, and whether it calls again after a connection ends.
#[derive(Clone, Debug)]
pub struct Policy {
    backoff: Backoff,
    /// Give up on connecting after this long (`None`: keep trying until `done`).
    patience: Option<Duration>,
    /// Retry only a peer that is not listening yet (refused, timed out); any other failure
    /// (a name that does not resolve, no route) ends the attempt at once.
    only_refused: bool,
    /// Serve one connection and return, instead of calling again when it ends.
    once: bool,
}

impl Policy {
    /// `--once`: wait for the peer to start listening (a refused or timed-out connection is
    /// retried, 50 ms doubling to 1 s, for up to `patience`), serve one connection, return.
    pub fn once(patience: Duration) -> Self {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        Policy { backoff, patience: Some(patience), only_refused: true, once: true }
    }

    /// `--connect` without `--once`: call the peer again and again, whatever failed, with
    /// [`Backoff::reconnect`] between attempts, until `done` or the session says stop.
    pub fn reconnect() -> Self {
        Self::reconnect_with(Backoff::reconnect())
    }

    /// [`Policy::reconnect`] with another backoff (tests use short delays).
    pub fn reconnect_with(backoff: Backoff) -> Self {
        Policy { backoff, patience: None, only_refused: false, once: false }
    }

    fn retries(&self, e: &io::Error, started: Instant, delay: Duration) -> bool {
        let kind_ok =
            !self.only_refused || matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut);
        kind_ok && self.patience.is_none_or(|p| started.elapsed() + delay <= p)
    }
}

/// What a [`connect`] session decided when its connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Connect again (the peer left, or the connection failed).
    Again,
    /// The run is over: stop connecting.
    Stop,
}

/// Connects to `addr` (HOST:PORT) and hands each connection to `serve` (with its number, from
/// 1), as `policy` says: after a connection ends or an attempt fails it waits the backoff's
/// next delay, logging each attempt with its reason (and calling `failed`), until `serve` says
/// [`Session::Stop`], `done()` is true, or (with [`Policy::once`]) one connection was served.
/// `peer` names the other side in the log ("viewer", "sender"). Fails for an address that can
/// never work (no port, bad syntax) and, when the policy gives up, with the last failure.
pub fn connect(
    addr: &str,
    peer: &str,
    mut policy: Policy,
    done: &dyn Fn() -> bool,
    mut serve: impl FnMut(TcpStream, u64) -> Session,
    mut failed: impl FnMut(),
) -> io::Result<()> {
    let (started, mut connections, mut attempt) = (Instant::now(), 0u64, 0u64);
    while !done() {
        attempt += 1;
        let delay = match dial(addr)? {
            Ok(stream) => {
                (connections, attempt) = (connections + 1, 0);
                let began = Instant::now();
                if serve(stream, connections) == Session::Stop || policy.once || done() {
                    return Ok(());
                }
                if began.elapsed() >= STABLE {
                    policy.backoff.reset();
                }
                let d = policy.backoff.next_delay();
                info!(%addr, retry_in_ms = d.as_millis() as u64, "reconnecting to the {peer}");
                d
            }
            Err(e) => {
                let d = policy.backoff.next_delay();
                if !policy.retries(&e, started, d) {
                    return Err(io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")));
                }
                failed();
                let (reason, ms) = (reason(&e), d.as_millis() as u64);
                info!(%addr, attempt, reason, error = %e, retry_in_ms = ms, "cannot connect to the {peer}; retrying");
                d
            }
        };
        sleep_unless(delay, done);
    }
    Ok(())
}

/// One attempt at every address `addr` resolves to. The outer error is an address that can
/// never work; the inner one a failure worth retrying.
fn dial(addr: &str) -> io::Result<io::Result<TcpStream>> {
    let addrs = match addr.to_socket_addrs() {
        Ok(addrs) => addrs,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(io::Error::new(e.kind(), format!("{addr}: {e} (expected HOST:PORT)")));
        }
        // A name that does not resolve now may later (mDNS, Wi-Fi coming back).
        Err(e) => return Ok(Err(io::Error::new(io::ErrorKind::NotFound, e.to_string()))),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(Ok(s)),
            Err(e) => last = e,
        }
    }
    Ok(Err(last))
}

/// Sleeps for `delay`, waking early when `done()` turns true (looked at every 50 ms).
fn sleep_unless(delay: Duration, done: &dyn Fn() -> bool) {
    let until = Instant::now() + delay;
    while !done() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Capped exponential backoff with jitter for reconnect loops: `first`, then doubling up to
/// `cap`, each delay shortened by up to a fifth at random so that peers that lost a link at
/// the same moment do not all come back in step.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Backoff { first, cap, next: first, seed: seed | 1 }
    }

    /// 100 ms doubling to 5 s: what `--connect` uses while its peer is away.
    pub fn reconnect() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The delay before the next attempt; the one after is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        let cut = base.as_micros() as u64 / 5;
        base - Duration::from_micros(if cut == 0 { 0 } else { self.seed % cut })
    }

    /// Back to the first delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A word or two for the log saying why a connection attempt or a connection failed.
pub fn reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::ConnectionAborted => "aborted",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        io::ErrorKind::NetworkDown => "network down",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::NotFound => "does not resolve",
        io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => "closed",
        _ => "error",
    }
}

/// Sets the socket options every framecast connection uses.
pub fn configure(stream: &TcpStream, read_timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(read_timeout))?;
    Ok(())
}

/// Keeps the kernel's queue of bytes written but not yet sent small, so that a slow link
/// makes the writer wait (and the newest frame win before the socket) instead of queueing
/// seconds of video in the kernel: `TCP_NOTSENT_LOWAT` where the platform has it (Linux,
/// Android), otherwise a small `SO_SNDBUF`. Returns which of the two was set.
pub fn limit_send_queue(stream: &TcpStream, bytes: u32) -> io::Result<&'static str> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let v: libc::c_int = bytes.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: a valid socket descriptor and a pointer to a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok("TCP_NOTSENT_LOWAT");
        }
    }
    socket2::SockRef::from(stream).set_send_buffer_size(bytes as usize * 2)?;
    Ok("SO_SNDBUF")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A port on 127.0.0.1 that refuses connections (bound, noted, closed).
    fn refusing_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let d: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        let nominal = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (got, want) in d.iter().zip(nominal) {
            let want = Duration::from_millis(want);
            assert!(*got <= want && *got >= want * 4 / 5, "{got:?} vs nominal {want:?}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn reconnect_retries_a_refused_peer_until_it_listens_then_stops_when_told() {
        let port = refusing_port();
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let listener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            // Two connections: the first is closed at once, the second served until it ends.
            let (a, _) = l.accept().unwrap();
            drop(a);
            let (_b, _) = l.accept().unwrap();
        });
        let mut seen = Vec::new();
        let mut failures = 0;
        let policy = Policy::reconnect_with(Backoff::new(Duration::from_millis(20), Duration::from_millis(100)));
        let done = || started.elapsed() > Duration::from_secs(20);
        let serve = |_s, n| {
            seen.push(n);
            if n == 2 {
                Session::Stop
            } else {
                Session::Again
            }
        };
        connect(&addr, "test peer", policy, &done, serve, || failures += 1).unwrap();
        listener.join().unwrap();
        assert_eq!(seen, [1, 2]);
        assert!(failures >= 2, "{failures} failed attempts before the peer listened");
        assert!(started.elapsed() >= Duration::from_millis(400), "connected before the peer listened");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn an_address_without_a_port_fails_at_once_and_done_is_honoured() {
        let never = || false;
        let e = connect("localhost", "viewer", Policy::reconnect(), &never, |_, _| Session::Stop, || {}).unwrap_err();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
        let addr = format!("127.0.0.1:{}", refusing_port());
        let t = Instant::now();
        let done = || t.elapsed() > Duration::from_millis(300);
        let mut failures = 0;
        connect(&addr, "viewer", Policy::reconnect(), &done, |_, _| Session::Again, || failures += 1).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "did not stop when done: {:?}", t.elapsed());
        assert!((2..=4).contains(&failures), "{failures} failed attempts in 300 ms with 100 ms doubling");
    }

    #[test]
    fn once_serves_one_connection_even_when_the_session_asks_for_more() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut served = 0;
        connect(
            &addr,
            "viewer",
            Policy::once(Duration::from_secs(2)),
            &|| false,
            |_, _| {
                served += 1;
                Session::Again
            },
            || {},
        )
        .unwrap();
        assert_eq!(served, 1);
    }

    #[test]
    fn once_gives_up_on_a_refusing_peer_after_its_patience_with_the_reason() {
        let addr = format!("127.0.0.1:{}", refusing_port());
        let t = Instant::now();
        let mut retries = 0;
        let policy = Policy::once(Duration::from_millis(300));
        let e = connect(&addr, "sender", policy, &|| false, |_, _| Session::Stop, || retries += 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().starts_with(&format!("cannot connect to {addr}:")), "{e}");
        // 50, 100 ms: the next delay (200 ms) would pass the patience.
        assert!((2..=3).contains(&retries), "{retries} retries within a patience of 300 ms");
        assert!(t.elapsed() < Duration::from_secs(2), "patience of 300 ms took {:?}", t.elapsed());
    }

    #[test]
    fn once_does_not_retry_a_name_that_does_not_resolve() {
        let t = Instant::now();
        let e = connect(
            "no-such-host.invalid:9",
            "sender",
            Policy::once(Duration::from_secs(10)),
            &|| false,
            |_, _| Session::Stop,
            || {},
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "retried for {:?}", t.elapsed());
    }

    #[test]
    fn accept_loop_hands_over_blocking_streams_until_told_to_stop() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let clients = std::thread::spawn(move || (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect::<Vec<_>>());
        let n = Cell::new(0);
        accept_loop(&l, &|| false, |s, peer| {
            assert_eq!(peer.ip(), addr.ip());
            // Blocking: a read with no data times out rather than failing with WouldBlock.
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            let e = std::io::Read::read(&mut &s, &mut [0u8; 1]).unwrap_err();
            assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
            n.set(n.get() + 1);
            if n.get() == 3 {
                Next::Stop
            } else {
                Next::Accept
            }
        })
        .unwrap();
        assert_eq!(n.get(), 3);
        drop(clients.join().unwrap());
    }

    #[test]
    fn accept_loop_ends_when_done_with_nobody_calling() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        let done = || t.elapsed() > Duration::from_millis(150);
        accept_loop(&l, &done, |_, _| panic!("nobody connects")).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
