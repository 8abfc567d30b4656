//! `framecast netsim --packet-link` as root: two namespaces joined through the netsim, and
//! what programs in them see. TCP reaches about the set rate and round trip, UDP datagrams are
//! lost at the set rate, outages drop in runs, and the namespaces are gone after the process
//! ends (SIGTERM, SIGINT), while namespaces that existed before are refused and left alone.
//!
//! The test ends are sockets made by threads of this process that entered a namespace
//! (`netns::Link::run_in`). Each test has namespaces of its own (named after the pid and the
//! test), so they can run at once; they are serialised anyway, since they measure rates.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::netns::{ns_exists, require_netns, Link};
use common::{serial, Proc};

const MS: Duration = Duration::from_millis(1);
const LINK: [&str; 8] = ["--rate", "5mbit", "--delay", "20ms", "--jitter", "2ms", "--queue", "64KB"];

#[test]
fn tcp_through_the_link_sees_about_the_rate_and_round_trip() {
    if !require_netns("tcp_through_the_link_sees_about_the_rate_and_round_trip") {
        return;
    }
    let _serial = serial();
    let link = Link::up("tcp", &LINK);
    let server_addr = format!("{}:7001", link.addr[1]);
    let listener = link.run_in(1, {
        let a = server_addr.clone();
        move || TcpListener::bind(a).expect("bind in B")
    });
    // B: echo the first 64 bytes one by one (pings), then count the bulk.
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        for _ in 0..20 {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
        // The bulk: bytes per 100 ms slot.
        let mut slots = vec![0usize; 60];
        let t0 = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => slots[(t0.elapsed().as_millis() / 100).min(59) as usize] += n,
            }
        }
        slots
    });
    let mut c = link.run_in(0, move || TcpStream::connect_timeout(&server_addr.parse().unwrap(), 5 * 1000 * MS));
    let c = c.as_mut().expect("connect from A to B");
    c.set_nodelay(true).unwrap();
    let mut rtts = Vec::new();
    let mut b = [7u8; 1];
    for _ in 0..20 {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let rtt = rtts[10];
    eprintln!("round trips {:?} .. {:?}, median {rtt:?}", rtts[0], rtts[19]);
    // 2 x 20 ms of delay, up to 2 x 2 ms of jitter, well under a millisecond of serialisation.
    assert!(rtt >= 39 * MS && rtt < 80 * MS, "median round trip {rtt:?}, expected about 40-45 ms");
    // Bulk for 4 s.
    let block = vec![0x55u8; 64 * 1024];
    let t0 = Instant::now();
    while t0.elapsed() < 4000 * MS {
        c.write_all(&block).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let slots = server.join().unwrap();
    // The rate of the last 2.5 s of the bulk (after slow start), in payload bits.
    let first = slots.iter().position(|n| *n > 0).unwrap();
    let steady: usize = slots[first + 10..first + 35].iter().sum();
    let mbps = steady as f64 * 8.0 / 2.5 / 1e6;
    eprintln!("bulk payload rate {mbps:.2} Mbit/s");
    // 5 Mbit/s of IP packets carry about 4.8 Mbit/s of TCP payload.
    assert!((3.5..5.05).contains(&mbps), "TCP payload rate {mbps:.2} Mbit/s on a 5 Mbit/s link");
}

/// Sends `n` numbered datagrams from A to B, one every `every`, and returns which arrived.
fn udp_run(link: &Link, port: u16, n: u32, every: Duration) -> Vec<bool> {
    let to = format!("{}:{port}", link.addr[1]);
    let rx = link.run_in(1, move || UdpSocket::bind(to).expect("bind in B"));
    let tx = link.run_in(0, || UdpSocket::bind("127.77.0.1:0").expect("bind in A"));
    rx.set_read_timeout(Some(500 * MS)).unwrap();
    let dst = rx.local_addr().unwrap();
    let receiver = thread::spawn(move || {
        let mut got = vec![false; n as usize];
        let mut buf = [0u8; 2048];
        while let Ok(len) = rx.recv(&mut buf) {
            if len >= 4 {
                let i = u32::from_le_bytes(buf[..4].try_into().unwrap());
                if let Some(g) = got.get_mut(i as usize) {
                    *g = true;
                }
            }
        }
        got
    });
    let t0 = Instant::now();
    let mut d = vec![0u8; 200];
    for i in 0..n {
        d[..4].copy_from_slice(&i.to_le_bytes());
        tx.send_to(&d, dst).expect("send");
        if let Some(wait) = (every * (i + 1)).checked_sub(t0.elapsed()) {
            thread::sleep(wait);
        }
    }
    receiver.join().unwrap()
}

/// The lengths of the runs of lost datagrams.
fn loss_runs(got: &[bool]) -> Vec<usize> {
    got.split(|g| *g).map(<[bool]>::len).filter(|n| *n > 0).collect()
}

/// `key=N` from the last log line of `event`.
fn field(log: &str, event: &str, dir: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(event) && l.contains(&format!("dir=\"{dir}\"")))
        .unwrap_or_else(|| panic!("no '{event}' line for {dir} in:\n{log}"));
    let v = line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).expect("the field");
    v.parse().unwrap_or_else(|_| panic!("{key}={v}"))
}

#[test]
fn udp_random_loss_is_what_was_asked() {
    if !require_netns("udp_random_loss_is_what_was_asked") {
        return;
    }
    let _serial = serial();
    let mut link = Link::up("rnd", &[&LINK[..], &["--loss", "10%"]].concat());
    let got = udp_run(&link, 7002, 4000, MS);
    let lost = got.iter().filter(|g| !**g).count() as f64 / got.len() as f64;
    let runs = loss_runs(&got);
    let mean_run = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
    eprintln!("lost {:.2} %, in {} runs of mean {mean_run:.2}", lost * 100.0, runs.len());
    assert!((0.08..0.12).contains(&lost), "lost {:.2} % of the datagrams with --loss 10%", lost * 100.0);
    assert!(mean_run < 1.4, "independent loss comes in runs of about 1.1, not {mean_run:.2}");
    // The netsim counted them: every datagram of A's went in, about 10 % lost, none queued out.
    let log = link.stop(libc::SIGTERM);
    let (n, l, q) = (
        field(&log, "netsim packet link stopped", "a-to-b", "packets_in"),
        field(&log, "netsim packet link stopped", "a-to-b", "lost"),
        field(&log, "netsim packet link stopped", "a-to-b", "queue_drops"),
    );
    assert!(n >= 4000, "{n} packets in");
    assert_eq!(q, 0, "no queue drops at 1.8 Mbit/s on a 5 Mbit/s link");
    let missing = got.iter().filter(|g| !**g).count() as u64;
    assert_eq!(l, missing, "the netsim's count of lost packets against what B missed");
}

#[test]
fn outages_drop_everything_in_runs() {
    if !require_netns("outages_drop_everything_in_runs") {
        return;
    }
    let _serial = serial();
    let link = Link::up("out", &[&LINK[..], &["--outage", "50ms", "--outage-share", "10%"]].concat());
    // One datagram a millisecond for 6 s: about 12 outages of 50 ms on average.
    let got = udp_run(&link, 7003, 6000, MS);
    let lost = got.iter().filter(|g| !**g).count() as f64 / got.len() as f64;
    let runs = loss_runs(&got);
    let mean_run = runs.iter().sum::<usize>() as f64 / runs.len().max(1) as f64;
    eprintln!("lost {:.2} % in {} runs {runs:?}", lost * 100.0, runs.len());
    assert!((0.02..0.30).contains(&lost), "lost {:.2} % with outages 10 % of the time", lost * 100.0);
    // A datagram a millisecond, outages of tens of ms: losses come in runs of tens.
    assert!(mean_run >= 10.0, "mean run of {mean_run:.1} lost datagrams: not outages");
    assert!(runs.iter().any(|r| *r >= 30), "no run of 30 ms or more: {runs:?}");
}

#[test]
fn namespaces_are_gone_after_sigterm_and_sigint() {
    if !require_netns("namespaces_are_gone_after_sigterm_and_sigint") {
        return;
    }
    for (tag, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let mut link = Link::up(tag, &LINK);
        assert!(link.ns.iter().all(|n| ns_exists(n)), "namespaces {:?} missing while up", link.ns);
        let log = link.stop(sig);
        for ns in &link.ns {
            assert!(!ns_exists(ns), "{ns} left behind after signal {sig}:\n{log}");
            assert!(log.contains(&format!("namespace deleted ns=\"{ns}\"")), "{log}");
        }
    }
}

#[test]
fn existing_namespaces_are_refused_and_left_alone() {
    if !require_netns("existing_namespaces_are_refused_and_left_alone") {
        return;
    }
    let pid = std::process::id();
    let (mine, other) = (format!("fct{pid}exa"), format!("fct{pid}exb"));
    let st = std::process::Command::new("ip").args(["netns", "add", &mine]).status().unwrap();
    assert!(st.success());
    let ns = format!("{mine},{other}");
    let mut p = Proc::spawn("netsim", &["netsim", "--packet-link", "--ns", &ns, "--rate", "5mbit"]);
    let st = p.wait(Duration::from_secs(10));
    let err = p.stderr();
    let still = ns_exists(&mine);
    let created = ns_exists(&other);
    let _ = std::process::Command::new("ip").args(["netns", "del", &mine]).status();
    assert!(!st.success(), "started over an existing namespace:\n{err}");
    assert!(err.contains(&format!("namespace {mine} exists already")), "{err}");
    assert!(still, "the netsim deleted a namespace it did not create");
    assert!(!created, "the netsim created {other} before refusing");
    assert!(!p.stdout().contains("READY"));
}

#[test]
fn framecast_streams_through_the_link() {
    if !require_netns("framecast_streams_through_the_link") {
        return;
    }
    let _serial = serial();
    let link = Link::up("fc", &LINK);
    let listen = format!("{}:7004", link.addr[1]);
    // 60 frames shown through the link, then recv ends by itself.
    let mut recv = link.spawn(1, "recv", &["recv", "--listen", &listen, "--headless", "--frames", "60"]);
    thread::sleep(300 * MS);
    let _send = link.spawn(0, "send", &["send", "--connect", &listen, "--size", "320x240", "--fps", "30"]);
    recv.expect_success(Duration::from_secs(20));
    let log = recv.stderr();
    assert!(log.contains("127.77.0.1"), "the viewer saw the sender's address from A:\n{log}");
}

#[test]
fn without_root_it_refuses_clearly() {
    if !require_netns("without_root_it_refuses_clearly") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let ns = format!("fct{}nra,fct{}nrb", std::process::id(), std::process::id());
    // As `nobody`: the check comes before anything is created.
    let mut p = Proc::spawn_with("netsim", &["netsim", "--packet-link", "--ns", &ns, "--rate", "5mbit"], |cmd| {
        cmd.uid(65534).gid(65534);
    });
    let st = p.wait(Duration::from_secs(10));
    let err = p.stderr();
    assert!(!st.success(), "{err}");
    assert!(err.contains("--packet-link needs root"), "{err}");
    assert!(!ns_exists(&format!("fct{}nra", std::process::id())));
}
