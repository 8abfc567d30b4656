//! `framecast netsim` with real processes: a plain TCP source and sink (or echo server) in the
//! test on either side of the relay, measuring what a program behind it sees: throughput,
//! added delay, jitter, stalls, half-close, and a whole send -> netsim -> recv stream.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect_retry, free_port, read_until_closed, scratch_dir, summary, Proc};

const MS: Duration = Duration::from_millis(1);

/// Starts `framecast netsim --listen 127.0.0.1:PORT ARGS...` and waits until it listens.
fn netsim(args: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["netsim", "--listen", &listen];
    all.extend_from_slice(args);
    let p = Proc::spawn("netsim", &all);
    assert!(p.wait_for_stderr("netsim listening", Duration::from_secs(10)), "netsim did not start:\n{}", p.stderr());
    (p, port)
}

/// A listener on 127.0.0.1 for the relay to forward to, and its address.
fn sink() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn accept_within(l: &TcpListener, timeout: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => thread::sleep(2 * MS),
            Err(e) => panic!("the relay did not connect to the sink within {timeout:?}: {e}"),
        }
    }
}

/// Connects through the relay and writes blocks of 16 KiB as fast as the relay takes them,
/// until `stop` is set or the connection fails. Each block starts with the nanoseconds since
/// `t0` at which its first byte was handed to the kernel. Returns the bytes written.
///
/// Its send buffer is small and fixed (the kernel would grow it to megabytes, and a block's
/// delay would then be mostly the time it waited on this side), so what a block waits for is
/// mostly the relay.
fn spawn_source(port: u16, t0: Instant, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_send_buffer_size(16 * 1024).unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        sock.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect to netsim");
        let mut s: TcpStream = sock.into();
        s.set_write_timeout(Some(100 * MS)).unwrap();
        let mut block = vec![0x5Au8; BLOCK];
        let (mut sent, mut off) = (0u64, 0usize);
        while !stop.load(Ordering::Relaxed) {
            if off == 0 {
                block[..8].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_le_bytes());
            }
            match s.write(&block[off..]) {
                Ok(n) => {
                    sent += n as u64;
                    off = (off + n) % BLOCK;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => break,
            }
        }
        sent
    })
}

const BLOCK: usize = 16 * 1024;

/// What the sink saw: each read (time since the first byte, bytes), and the one-way delay of
/// each block (time since the first byte at which it started to arrive, delay).
struct Received {
    reads: Vec<(Duration, usize)>,
    block_delays: Vec<(Duration, Duration)>,
}

impl Received {
    /// Mean bit/s over [from, to] since the first byte.
    fn rate(&self, from: Duration, to: Duration) -> f64 {
        let bytes: usize = self.reads.iter().filter(|(t, _)| *t > from && *t <= to).map(|r| r.1).sum();
        bytes as f64 * 8.0 / (to - from).as_secs_f64()
    }

    /// Gaps between consecutive reads longer than `min`: (start, length).
    fn gaps(&self, min: Duration) -> Vec<(Duration, Duration)> {
        self.reads.windows(2).map(|w| (w[0].0, w[1].0 - w[0].0)).filter(|g| g.1 > min).collect()
    }

    fn max_gap(&self) -> Duration {
        self.reads.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or_default()
    }
}

/// Reads `conn` for `run_for` after its first byte (at most 5 s for that first byte).
fn receive(conn: &mut TcpStream, t0: Instant, run_for: Duration) -> Received {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Received { reads: Vec::new(), block_delays: Vec::new() };
    let (mut first, mut total) = (None::<Instant>, 0usize);
    let mut head = Vec::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = Instant::now();
        let end = first.map_or(deadline, |f| f + run_for);
        if now >= end {
            assert!(first.is_some(), "no byte came through the relay within 5 s");
            return got;
        }
        conn.set_read_timeout(Some(end - now)).unwrap();
        let n = match conn.read(&mut buf) {
            Ok(0) => panic!("the relay closed the connection after {total} bytes"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("read failed: {e}"),
        };
        let at = Instant::now();
        let since = at - *first.get_or_insert(at);
        got.reads.push((since, n));
        // Block timestamps: the first 8 bytes of every BLOCK.
        for (i, &b) in buf[..n].iter().enumerate() {
            let pos = (total + i) % BLOCK;
            if pos < 8 {
                head.push(b);
                if head.len() == 8 {
                    let sent = Duration::from_nanos(u64::from_le_bytes(head[..].try_into().unwrap()));
                    got.block_delays.push((since, (at - t0).saturating_sub(sent)));
                    head.clear();
                }
            }
        }
        total += n;
    }
}

/// Runs a bulk flow through `framecast netsim ARGS` for `run_for` after its first byte.
fn bulk(args: &[&str], run_for: Duration) -> Received {
    let (sink, fwd) = sink();
    let mut all = vec!["--forward", &fwd];
    all.extend_from_slice(args);
    let (_ns, port) = netsim(&all);
    let (t0, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let source = spawn_source(port, t0, stop.clone());
    let mut conn = accept_within(&sink, Duration::from_secs(5));
    let got = receive(&mut conn, t0, run_for);
    stop.store(true, Ordering::Relaxed);
    drop(conn);
    source.join().expect("source thread");
    got
}

/// The median one-way delay of the blocks that started to arrive after `from`.
fn standing_delay(got: &Received, from: Duration) -> (Duration, Duration, Duration) {
    let mut d: Vec<Duration> = got.block_delays.iter().filter(|(t, _)| *t > from).map(|d| d.1).collect();
    assert!(d.len() >= 5, "only {} blocks after {from:?}", d.len());
    d.sort();
    (d[0], d[d.len() / 2], d[d.len() - 1])
}

/// 5 Mbit/s with 20 ms of delay: a bulk flow through the relay runs at 5 Mbit/s (within
/// 10%), smoothly (no stall when none is asked for), and the standing queue it builds is set
/// by --queue: 192 KB more of queue is 307 ms more of delay at 5 Mbit/s.
#[test]
fn bulk_throughput_is_the_rate_and_the_queue_sets_the_delay() {
    let _serial = common::serial();
    let got = bulk(&["--rate", "5mbit", "--delay", "20ms"], Duration::from_millis(3300));
    let rate = got.rate(Duration::from_millis(300), Duration::from_millis(3300));
    let max_gap = got.max_gap();
    let (dmin, d64, dmax) = standing_delay(&got, Duration::from_secs(1));
    eprintln!(
        "5mbit, --queue 64KB: {:.3} Mbit/s over 3 s, {} reads, longest gap {max_gap:?}; one-way delay of the \
         saturating flow {dmin:?} / {d64:?} / {dmax:?} (min/median/max)",
        rate / 1e6,
        got.reads.len(),
    );
    assert!((rate / 5e6 - 1.0).abs() < 0.10, "throughput {:.3} Mbit/s, want 5 +- 10%", rate / 1e6);
    assert!(max_gap < 100 * MS, "a gap of {max_gap:?} in delivery without stalls");
    assert!(dmin >= 20 * MS, "a block arrived {dmin:?} after it was sent, less than --delay");
    // 20 ms + 64 KB at 5 Mbit/s (102 ms) + the kernels' small buffers on either side.
    assert!(dmax < 400 * MS, "standing delay up to {dmax:?} with a 64 KB queue");

    let got = bulk(&["--rate", "5mbit", "--delay", "20ms", "--queue", "256KB"], Duration::from_millis(2300));
    let (dmin, d256, dmax) = standing_delay(&got, Duration::from_millis(1300));
    let more = d256.saturating_sub(d64);
    eprintln!("5mbit, --queue 256KB: one-way delay {dmin:?} / {d256:?} / {dmax:?}; {more:?} more than with 64KB");
    assert!(more.abs_diff(307 * MS) < 60 * MS, "192 KB more of queue added {more:?} of delay, want ~307 ms");
}

/// Ping-pong of small messages, through 20 ms of delay each way: every RTT is at least 40 ms
/// and the median is within a few ms of it. With 10 ms of jitter on top, RTTs spread over
/// [40, 60] ms around a 50 ms mean.
#[test]
fn small_messages_see_the_delay_and_the_jitter() {
    let _serial = common::serial();
    for (jitter, lo, hi) in [("0", 40.0, 45.0), ("10ms", 46.0, 55.0)] {
        let (server, fwd) = sink();
        let echo = thread::spawn(move || {
            let mut s = accept_within(&server, Duration::from_secs(5));
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut m = [0u8; 64];
            while s.read_exact(&mut m).is_ok() {
                if s.write_all(&m).is_err() {
                    break;
                }
            }
        });
        let (_ns, port) = netsim(&["--forward", &fwd, "--rate", "5mbit", "--delay", "20ms", "--jitter", jitter]);
        let mut c = connect_retry(port, Duration::from_secs(5));
        c.set_nodelay(true).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rtts: Vec<f64> = (0..25u8)
            .map(|i| {
                let msg = [i; 64];
                let t = Instant::now();
                c.write_all(&msg).unwrap();
                let mut back = [0u8; 64];
                c.read_exact(&mut back).expect("the echo came back through the relay");
                assert_eq!(back, msg);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        drop(c);
        echo.join().unwrap();
        let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
        rtts.sort_by(f64::total_cmp);
        let (min, med, max) = (rtts[0], rtts[rtts.len() / 2], rtts[rtts.len() - 1]);
        eprintln!(
            "--delay 20ms --jitter {jitter}: RTT min {min:.2} median {med:.2} mean {mean:.2} max {max:.2} ms \
             (added one-way delay, median/2: {:.2} ms)",
            med / 2.0
        );
        assert!(min >= 40.0, "an RTT of {min:.2} ms is under 2 x --delay");
        if jitter == "0" {
            assert!(med <= hi, "median RTT {med:.2} ms, want 40..{hi} ms");
        } else {
            assert!(mean >= lo && mean <= hi, "mean RTT {mean:.2} ms, want {lo}..{hi} ms");
            assert!(max - min >= 5.0, "RTTs {min:.2}..{max:.2} ms: no jitter");
            assert!(rtts[rtts.len() * 9 / 10] <= 63.0, "RTTs up to {max:.2} ms, over 40 + 2 x 10 ms");
        }
    }
}

/// --stall-every 1s --stall 300ms: a bulk flow stops for ~300 ms once a second.
#[test]
fn stalls_pause_delivery() {
    let _serial = common::serial();
    let (sink, fwd) = sink();
    let (_ns, port) =
        netsim(&["--forward", &fwd, "--rate", "5mbit", "--delay", "10ms", "--stall-every", "1s", "--stall", "300ms"]);
    let (t0, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let source = spawn_source(port, t0, stop.clone());
    let mut conn = accept_within(&sink, Duration::from_secs(5));
    let got = receive(&mut conn, t0, Duration::from_millis(2700));
    stop.store(true, Ordering::Relaxed);
    drop(conn);
    source.join().expect("source thread");

    eprintln!("stalls: all gaps over 20 ms: {:?}", got.gaps(20 * MS));
    // (Stalls only: a shorter hiccup of a loaded machine is not one.)
    let gaps = got.gaps(200 * MS);
    eprintln!("stalls: gaps over 200 ms (start since the first byte, length): {gaps:?}");
    // The stalls at 1 s and 2 s after the relay started both fall in the 2.7 s window.
    assert_eq!(gaps.len(), 2, "want two stalls, got gaps {gaps:?}");
    for (at, len) in &gaps {
        assert!(*len >= 280 * MS && *len < 400 * MS, "a gap of {len:?} at {at:?}, want ~300 ms");
    }
    let period = gaps[1].0 - gaps[0].0;
    assert!(period.abs_diff(Duration::from_secs(1)) < 100 * MS, "stalls {period:?} apart, want 1 s");
    // 70% of the link is left: 3.5 Mbit/s over the whole periods in the window.
    let rate = got.rate(gaps[0].0, gaps[1].0);
    eprintln!("stalls: {:.3} Mbit/s from one stall to the next", rate / 1e6);
    assert!((rate / 3.5e6 - 1.0).abs() < 0.10, "{:.3} Mbit/s between stalls, want 3.5", rate / 1e6);
}

/// A half-close travels through after the data before it, in each direction; a --forward that
/// refuses ends only that connection, and the relay keeps serving.
#[test]
fn half_close_and_refused_forward() {
    let _serial = common::serial();
    let fwd_port = free_port();
    let fwd = format!("127.0.0.1:{fwd_port}");
    let (ns, port) = netsim(&["--forward", &fwd, "--rate", "100mbit", "--delay", "5ms"]);

    // Nothing listens at --forward yet: the client is closed, the relay logs why.
    let mut c = connect_retry(port, Duration::from_secs(5));
    let got = read_until_closed(&mut c, Duration::from_secs(10));
    assert!(got.is_empty());
    assert!(ns.wait_for_stderr("cannot connect to --forward", Duration::from_secs(5)), "{}", ns.stderr());

    // Now it listens: the same relay serves the next client.
    let server = TcpListener::bind(&fwd).expect("bind --forward's port");
    let mut c = connect_retry(port, Duration::from_secs(5));
    let mut s = accept_within(&server, Duration::from_secs(5));
    c.write_all(b"hello").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The server sees the data, then EOF, while its own direction is still open.
    assert_eq!(read_until_closed(&mut s, Duration::from_secs(5)), b"hello");
    s.write_all(b"world").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut c, Duration::from_secs(5)), b"world");
    assert!(ns.wait_for_stderr("connection closed", Duration::from_secs(5)), "{}", ns.stderr());
    let log = ns.stderr();
    let closed = log.lines().find(|l| l.contains("connection closed") && l.contains("conn=2")).expect("conn 2 closed");
    assert!(closed.contains("fwd_bytes=5") && closed.contains("rev_bytes=5") && closed.contains("drops=0"), "{closed}");
    assert!(closed.contains("aborted=false"), "{closed}");
}

/// send -> netsim (20 Mbit/s, 10 ms) -> recv: all 30 frames arrive, and the delay shows in
/// the receiver's capture->decoded latency.
#[test]
fn stream_through_netsim() {
    let _serial = common::serial();
    let dir = scratch_dir("netsim-e2e");
    let r_json = dir.join("R.jsonl");
    let recv_addr = format!("127.0.0.1:{}", free_port());
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--listen", &recv_addr, "--headless", "--frames", "30", "--stats-json", r_json.to_str().unwrap()],
    );
    let (ns, port) = netsim(&["--forward", &recv_addr, "--rate", "20mbit", "--delay", "10ms"]);
    let mut send = Proc::spawn(
        "send",
        &["send", "--connect", &format!("127.0.0.1:{port}"), "--once", "--size", "640x480", "--frames", "30"],
    );
    recv.expect_success(Duration::from_secs(15));
    send.expect_success(Duration::from_secs(10));
    let r = summary(&r_json);
    assert_eq!(r.frames, 30, "frames decoded");
    assert_eq!(r.received, Some(30), "frames received");
    assert_eq!(r.seq_gaps, Some(0), "sequence gaps");
    let p50 = r.latency_capture_decoded_ms.unwrap_or_else(|| panic!("no capture->decoded latency: {r:?}")).p50;
    eprintln!("through netsim: capture->decoded p50 {p50:.1} ms");
    assert!(p50 >= 10.0, "capture->decoded p50 {p50:.1} ms is under the 10 ms --delay: not relayed?");
    assert!(ns.wait_for_stderr("connection closed", Duration::from_secs(5)), "{}", ns.stderr());
}

/// Starts `framecast netsim --udp --listen 127.0.0.1:PORT --forward FORWARD ARGS...` and
/// waits until it listens.
fn udp_netsim(forward: &str, args: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["netsim", "--udp", "--listen", &listen, "--forward", forward];
    all.extend_from_slice(args);
    let p = Proc::spawn("netsim", &all);
    assert!(p.wait_for_stderr("netsim udp relay listening", Duration::from_secs(10)), "{}", p.stderr());
    (p, port)
}

/// Stops `p` with SIGTERM and returns its log once it exited (0).
fn stop(mut p: Proc) -> String {
    p.signal(libc::SIGTERM).unwrap();
    let st = p.wait(Duration::from_secs(10));
    assert!(st.success(), "netsim exited with {st} after SIGTERM:\n{}", p.stderr());
    p.stderr()
}

/// `key=N` from the relay's exit line for `dir`.
fn exit_count(log: &str, dir: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("netsim udp relay stopped") && l.contains(&format!("dir=\"{dir}\"")))
        .unwrap_or_else(|| panic!("no exit counts for {dir}:\n{log}"));
    let v = line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).expect("the field");
    v.parse().unwrap()
}

/// The UDP relay loses about the asked share of datagrams, and its counts at exit add up to
/// what the server saw.
#[test]
fn udp_relay_loses_and_counts() {
    let _serial = common::serial();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(500 * MS)).unwrap();
    let (ns, port) = udp_netsim(&server.local_addr().unwrap().to_string(), &["--rate", "10mbit", "--loss", "10%"]);
    let counter = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while server.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    for i in 0..3000u32 {
        client.send_to(&[0x42; 300], ("127.0.0.1", port)).unwrap();
        if let Some(w) = (MS * (i + 1) / 2).checked_sub(t0.elapsed()) {
            thread::sleep(w);
        }
    }
    let arrived = counter.join().unwrap();
    let lost = 1.0 - arrived as f64 / 3000.0;
    eprintln!("{arrived} of 3000 arrived: {:.2} % lost", lost * 100.0);
    assert!((0.075..0.125).contains(&lost), "lost {:.2} % with --loss 10%", lost * 100.0);
    let log = stop(ns);
    assert_eq!(exit_count(&log, "fwd", "packets_in"), 3000, "{log}");
    assert_eq!(exit_count(&log, "fwd", "delivered"), arrived, "{log}");
    assert_eq!(exit_count(&log, "fwd", "lost") + arrived, 3000, "{log}");
    assert_eq!(exit_count(&log, "fwd", "queue_drops"), 0, "{log}");
}

/// Several clients through one relay: each gets its own upstream address at the server, and
/// only its own answers back; a burst over the router queue is dropped at the tail and counted.
#[test]
fn udp_relay_serves_several_clients_and_drops_the_tail() {
    let _serial = common::serial();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(500 * MS)).unwrap();
    let (ns, port) = udp_netsim(&server.local_addr().unwrap().to_string(), &["--rate", "5mbit", "--delay", "10ms"]);
    // The server echoes, and notes each peer address.
    let echo = thread::spawn(move || {
        let mut peers = std::collections::HashSet::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            peers.insert(from);
            server.send_to(&buf[..n], from).unwrap();
        }
        peers
    });
    let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(1000 * MS)).unwrap();
        for k in 0..5u8 {
            c.send_to(&[i as u8, k], ("127.0.0.1", port)).unwrap();
            thread::sleep(2 * MS);
        }
    }
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 16];
        for k in 0..5u8 {
            let n = c.recv(&mut buf).unwrap_or_else(|e| panic!("client {i}, echo {k}: {e}"));
            assert_eq!(&buf[..n], &[i as u8, k], "client {i} got another's answer");
        }
    }
    // A burst of 100 x 1400 bytes into a 64 KB queue: about 46 fit, the rest are dropped.
    let burst = &clients[0];
    for _ in 0..100 {
        burst.send_to(&[0x33; 1400], ("127.0.0.1", port)).unwrap();
    }
    let peers = echo.join().unwrap();
    assert_eq!(peers.len(), 3, "one upstream socket per client: {peers:?}");
    let log = stop(ns);
    let drops = exit_count(&log, "fwd", "queue_drops");
    assert!((40..=60).contains(&drops), "{drops} of 100 dropped by a 64 KB queue:\n{log}");
    assert_eq!(exit_count(&log, "fwd", "lost"), 0);
    assert_eq!(log.matches("new client").count(), 3, "{log}");
}
