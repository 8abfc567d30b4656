//! `--transport udp` with real processes on 127.0.0.1: a stream with and without a key whose
//! frames match the test pattern, a wrong key refused on both sides, several viewers, a
//! receiver that restarts, a sender that vanishes, datagrams from an address without a
//! handshake, a NACK flood, feedback claiming frames from the future; and through `framecast
//! netsim --udp` with loss: NACK, FEC, concealment and pacing. Each test is bounded in time,
//! and every process it starts is killed when it ends (`Proc`'s drop). Bounds on behaviour
//! are generous; nothing asserts a speed.

#![cfg(unix)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, scratch_dir, summary, Proc};
use framecast::capture::pattern::TestPattern;
use framecast::format::Subsampling;
use framecast::net::proto::{Ack, Message, Role};
use framecast::net::udp::link::{new_session, Handshake};
use framecast::net::udp::wire::{Datagram, Inner, Receipt};
use framecast::stats::Report;
use framecast::testutil::psnr;
use framecast::view::read_ppm;

const EXIT: Duration = Duration::from_secs(30);

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    Proc::spawn("keygen", &["keygen", path.to_str().unwrap()]).expect_success(EXIT);
    path
}

/// `framecast ARGS... --transport udp [--key-file KEY]`.
fn spawn(name: &str, args: &[&str], key: Option<&Path>) -> Proc {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--transport", "udp"]);
    if let Some(k) = key {
        all.extend(["--key-file", k.to_str().unwrap()]);
    }
    Proc::spawn(name, &all)
}

/// The dumped frames (`frame-SEQ.ppm`) each look like the pattern frame of their number.
fn check_dumps(dumps: &Path, size: (usize, usize)) -> usize {
    let pattern = TestPattern::new(size.0 as u32, size.1 as u32, Subsampling::S420);
    let mut n = 0;
    for e in std::fs::read_dir(dumps).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let seq: u64 = name.trim_start_matches("frame-").trim_end_matches(".ppm").parse().unwrap();
        let bytes = std::fs::read(dumps.join(&name)).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap_or_else(|| panic!("{name}: not a PPM"));
        assert_eq!((w, h), size, "{name}: size");
        let db = psnr(rgb, &pattern.render_rgb(seq));
        let other = psnr(rgb, &pattern.render_rgb(seq + 5));
        eprintln!("{name}: PSNR {db:.2} dB (vs frame {}: {other:.2} dB)", seq + 5);
        assert!(db >= 30.0 && db > other, "{name}: PSNR {db:.2} dB, {other:.2} dB against frame {}", seq + 5);
        n += 1;
    }
    n
}

/// `send --connect` → `recv --listen`, 60 frames of 320x240, with or without a key.
fn stream_matches_the_pattern(name: &str, key: bool) {
    let _serial = common::serial();
    let dir = scratch_dir(name);
    let key = key.then(|| keygen(&dir, "k"));
    let (r_json, s_json, dumps) = (dir.join("R.jsonl"), dir.join("S.jsonl"), dir.join("dumps"));
    let a = addr();
    let recv_args = [
        "recv",
        "--listen",
        &a,
        "--headless",
        "--once",
        "--frames",
        "60",
        "--duration",
        "20",
        "--stats-json",
        r_json.to_str().unwrap(),
        "--dump-dir",
        dumps.to_str().unwrap(),
        "--dump-every",
        "10",
    ];
    let mut recv = spawn("recv", &recv_args, key.as_deref());
    let send_args = [
        "send",
        "--connect",
        &a,
        "--once",
        "--size",
        "320x240",
        "--duration",
        "25",
        "--stats-json",
        s_json.to_str().unwrap(),
    ];
    let mut send = spawn("send", &send_args, key.as_deref());
    recv.expect_success(EXIT);
    // The viewer said goodbye: a `--once` sender ends with it.
    send.expect_success(Duration::from_secs(10));
    let r = summary(&r_json);
    assert_eq!(r.frames, 60, "frames decoded: {r:?}");
    assert_eq!(r.concealed + r.frames_lost + r.packets_lost, 0, "loss on loopback: {r:?}");
    assert!(r.latency_capture_decoded_ms.is_some(), "no latency on a shared clock: {r:?}");
    let sealed = format!("sealed={}", key.is_some());
    assert!(recv.stderr().contains(&sealed) && send.stderr().contains(&sealed), "not {sealed}");
    assert!(check_dumps(&dumps, (320, 240)) >= 4, "too few frames dumped");
    let s = summary(&s_json);
    assert!(s.frames >= 60, "sender frames: {s:?}");
}

#[test]
fn a_stream_over_udp_shows_the_pattern() {
    stream_matches_the_pattern("udp-plain", false);
}

#[test]
fn a_sealed_stream_over_udp_shows_the_pattern() {
    stream_matches_the_pattern("udp-sealed", true);
}

/// A viewer with another key is refused on both sides, each saying why, and sees no frame.
#[test]
fn a_wrong_key_is_refused_on_both_sides() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-wrong-key");
    let (k1, k2) = (keygen(&dir, "k1"), keygen(&dir, "k2"));
    let r_json = dir.join("R.jsonl");
    let a = addr();
    let send = spawn("send", &["send", "--listen", &a, "--size", "160x120", "--duration", "15"], Some(&k1));
    let recv_args =
        ["recv", "--connect", &a, "--once", "--headless", "--duration", "10", "--stats-json", r_json.to_str().unwrap()];
    let mut recv = spawn("recv", &recv_args, Some(&k2));
    let st = recv.wait(EXIT);
    assert!(!st.success(), "a receiver with the wrong key succeeded:\n{}", recv.stderr());
    let err = recv.stderr();
    assert!(err.contains("key differs") || err.contains("failed authentication"), "receiver's reason:\n{err}");
    assert!(send.wait_for_stderr("refused the udp viewer", Duration::from_secs(5)), "sender:\n{}", send.stderr());
    assert!(send.stderr().contains("key differs"), "sender's reason:\n{}", send.stderr());
    assert!(std::fs::read_to_string(&r_json).map_or(true, |s| !s.contains("\"frames\":1")));
}

/// A listening sender serves three viewers at once on one socket.
#[test]
fn several_viewers_share_one_socket() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-viewers");
    let a = addr();
    let mut send = spawn("send", &["send", "--listen", &a, "--size", "160x120", "--duration", "20"], None);
    let mut viewers: Vec<(Proc, PathBuf)> = (0..3)
        .map(|i| {
            let json = dir.join(format!("R{i}.jsonl"));
            let args = [
                "recv",
                "--connect",
                &a,
                "--once",
                "--headless",
                "--frames",
                "40",
                "--duration",
                "15",
                "--stats-json",
                json.to_str().unwrap(),
            ];
            (spawn(&format!("recv{i}"), &args, None), json)
        })
        .collect();
    for (p, json) in &mut viewers {
        p.expect_success(EXIT);
        assert_eq!(summary(json).frames, 40);
    }
    assert!(send.wait_for_stderr_n("udp viewer connected", 3, Duration::from_secs(1)), "{}", send.stderr());
    assert!(send.is_running(), "the sender ended with its viewers");
}

/// A calling sender whose viewer restarts (same address, new session) calls it again.
#[test]
fn a_receiver_that_restarts_is_called_again() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-restart");
    let s_json = dir.join("S.jsonl");
    let a = addr();
    let recv_args = |json: &Path| -> Vec<String> {
        ["recv", "--listen", &a, "--headless", "--once", "--frames", "20", "--duration", "20", "--stats-json"]
            .iter()
            .map(|s| s.to_string())
            .chain([json.to_str().unwrap().to_string()])
            .collect()
    };
    let (j1, j2) = (dir.join("R1.jsonl"), dir.join("R2.jsonl"));
    let a1 = recv_args(&j1);
    let mut first = spawn("recv1", &a1.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let send_args =
        ["send", "--connect", &a, "--size", "160x120", "--duration", "30", "--stats-json", s_json.to_str().unwrap()];
    let _send = spawn("send", &send_args, None);
    first.expect_success(EXIT);
    let a2 = recv_args(&j2);
    let mut second = spawn("recv2", &a2.iter().map(String::as_str).collect::<Vec<_>>(), None);
    second.expect_success(EXIT);
    assert_eq!(summary(&j1).frames, 20);
    assert_eq!(summary(&j2).frames, 20);
}

/// A sender that vanishes (killed: no goodbye) ends a `--once` receiver's session by timeout.
#[test]
fn a_sender_that_vanishes_times_out() {
    let _serial = common::serial();
    let a = addr();
    let mut recv = spawn("recv", &["recv", "--listen", &a, "--headless", "--once", "--duration", "25"], None);
    let send = spawn("send", &["send", "--connect", &a, "--size", "160x120", "--duration", "25"], None);
    assert!(recv.wait_for_stderr("udp sender handshake done", Duration::from_secs(10)), "{}", recv.stderr());
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    drop(send);
    recv.expect_success(EXIT);
    let took = killed.elapsed();
    assert!(recv.stderr().contains("it is gone"), "{}", recv.stderr());
    assert!(took < Duration::from_secs(10), "the receiver took {took:?} to notice");
}

/// A test socket that talks to a listening sender as a viewer, by hand (the library's
/// handshake and datagram format, no key).
struct FakeViewer {
    socket: UdpSocket,
    to: SocketAddr,
}

impl FakeViewer {
    fn connect(to: &str) -> FakeViewer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let to: SocketAddr = to.parse().unwrap();
        let mut hs = Handshake::new(Role::Receiver, None, new_session());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            socket.send_to(&hs.hello(), to).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if let Ok(Datagram::Hello { session, hello }) = Datagram::parse(&buf[..n], Role::Sender) {
                    let mut out = Vec::new();
                    assert!(hs.on_hello(hello, session, false, &mut out).unwrap().is_some());
                    return FakeViewer { socket, to };
                }
            }
        }
        panic!("no answer from the sender at {to}");
    }

    fn send(&self, inner: &Inner<'_>) {
        let mut i = Vec::new();
        inner.encode(&mut i);
        let mut d = Vec::new();
        Datagram::Plain(&i).encode(&mut d);
        self.socket.send_to(&d, self.to).unwrap();
    }

    /// Reads for `wait`; returns the media bytes received and the highest RTP sequence number.
    fn read_for(&self, wait: Duration, mut each: impl FnMut(&[u8])) -> u64 {
        let until = Instant::now() + wait;
        let (mut bytes, mut buf) = (0u64, [0u8; 2048]);
        while Instant::now() < until {
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else { continue };
            if let Ok(Datagram::Plain(b)) = Datagram::parse(&buf[..n], Role::Sender) {
                if let Ok(Inner::Media(rtp)) = Inner::parse(b) {
                    bytes += n as u64;
                    each(rtp);
                }
            }
        }
        bytes
    }
}

fn send_listening(a: &str, json: &Path, secs: &str, size: &str) -> Proc {
    let args = ["send", "--listen", a, "--size", size, "--duration", secs, "--stats-json", json.to_str().unwrap()];
    spawn("send", &args, None)
}

/// Datagrams from an address that did not handshake (garbage, fake media, fake sealed ones)
/// are ignored and counted; a real viewer is served meanwhile.
#[test]
fn datagrams_without_a_handshake_are_ignored_and_counted() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-strangers");
    let (s_json, r_json) = (dir.join("S.jsonl"), dir.join("R.jsonl"));
    let a = addr();
    let mut send = send_listening(&a, &s_json, "6", "320x240");
    std::thread::sleep(Duration::from_millis(500));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for i in 0..20u8 {
        for d in [
            vec![i; 40],
            vec![0x04, 0x10, 0x80, 26, 0, i],
            vec![0x03, i, 0, 0, 0, 0, 0, 0, 0, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        ] {
            stranger.send_to(&d, a.as_str()).unwrap();
            sent += 1;
        }
    }
    let recv_args = [
        "recv",
        "--connect",
        &a,
        "--once",
        "--headless",
        "--frames",
        "20",
        "--duration",
        "5",
        "--stats-json",
        r_json.to_str().unwrap(),
    ];
    spawn("recv", &recv_args, None).expect_success(EXIT);
    send.expect_success(EXIT);
    assert_eq!(summary(&r_json).frames, 20);
    let s = summary(&s_json);
    assert!(s.udp_ignored >= sent, "{} of {sent} stray datagrams counted: {s:?}", s.udp_ignored);
}

/// The most the sender paces at while no receipt has told it more (its rate control's start,
/// 8 Mbit/s, paced at twice that), with a margin: kbit/s. The flood below asks for every
/// packet of a 1280x720 stream's last second (about 9 Mbit/s) ten times a second: answered
/// unpaced, that is several times more.
const START_RATE_KBPS: f64 = 16_000.0 * 1.25;

/// A NACK flood (every packet of the last second asked for again every millisecond) gets
/// retransmissions, but never more than the rate the sender paces at: no amplification.
#[test]
fn a_nack_flood_gets_no_more_than_the_paced_rate() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-nack-flood");
    let s_json = dir.join("S.jsonl");
    let a = addr();
    let mut send = send_listening(&a, &s_json, "8", "1280x720");
    let v = FakeViewer::connect(&a);
    let mut highest = 0u16;
    let before = v.read_for(Duration::from_secs(2), |rtp| highest = u16::from_be_bytes([rtp[2], rtp[3]]));
    assert!(before > 0, "no media before the flood");
    let flood_for = Duration::from_secs(3);
    let t0 = Instant::now();
    let mut during = 0;
    while t0.elapsed() < flood_for {
        let runs: Vec<(u16, u16)> = (0..64u16).map(|i| (highest.wrapping_sub(2000).wrapping_add(i * 32), 32)).collect();
        v.send(&Inner::Nack(runs));
        during += v.read_for(Duration::from_millis(1), |rtp| {
            highest = highest.max(u16::from_be_bytes([rtp[2], rtp[3]]));
        });
    }
    let kbps = during as f64 * 8.0 / 1000.0 / flood_for.as_secs_f64();
    eprintln!("before the flood {:.0} kbit/s, during {kbps:.0} kbit/s", before as f64 * 8.0 / 2000.0);
    send.expect_success(EXIT);
    let s = summary(&s_json);
    assert!(s.retransmitted > 0, "the flood got no retransmission at all: {s:?}");
    assert!(kbps < START_RATE_KBPS, "{kbps:.0} kbit/s during a NACK flood, over the paced rate");
}

/// Acknowledgements of frames never sent and receipts for packets never sent are ignored and
/// counted, and the stream goes on.
#[test]
fn feedback_claiming_future_frames_is_ignored() {
    let _serial = common::serial();
    let dir = scratch_dir("udp-future");
    let s_json = dir.join("S.jsonl");
    let a = addr();
    let mut send = send_listening(&a, &s_json, "5", "320x240");
    let v = FakeViewer::connect(&a);
    assert!(v.read_for(Duration::from_millis(500), |_| {}) > 0);
    for i in 0..10u64 {
        v.send(&Inner::Message(Message::Ack(Ack { seq: 1 << (40 + i), ..Ack::default() })));
        let r = Receipt { highest_seq: u32::MAX - i as u32, packets: 1 << 40, bytes: 1 << 50, ..Receipt::default() };
        v.send(&Inner::Receipt(r));
    }
    assert!(v.read_for(Duration::from_secs(1), |_| {}) > 0, "the stream stopped");
    send.expect_success(EXIT);
    let s: Report = summary(&s_json);
    assert!(s.udp_ignored >= 20, "bogus feedback not counted: {s:?}");
    assert!(s.ack_rtt_ms.is_none(), "a bogus ack was taken: {s:?}");
}

/// `framecast netsim --udp` between the two, with loss.
fn lossy(name: &str, netsim: &[&str], send_extra: &[&str], recv_extra: &[&str]) -> (Report, Report) {
    let _serial = common::serial();
    let dir = scratch_dir(name);
    let (r_json, s_json) = (dir.join("R.jsonl"), dir.join("S.jsonl"));
    let (r_addr, n_addr) = (addr(), addr());
    let mut recv_args = vec![
        "recv",
        "--listen",
        &r_addr,
        "--headless",
        "--once",
        "--duration",
        "8",
        "--stats-json",
        r_json.to_str().unwrap(),
    ];
    recv_args.extend_from_slice(recv_extra);
    let mut recv = spawn("recv", &recv_args, None);
    let mut n_args = vec!["netsim", "--udp", "--listen", &n_addr, "--forward", &r_addr];
    n_args.extend_from_slice(netsim);
    let relay = Proc::spawn("netsim", &n_args);
    assert!(relay.wait_for_stderr("netsim udp relay listening", Duration::from_secs(10)), "{}", relay.stderr());
    let mut send_args = vec!["send", "--connect", &n_addr, "--once", "--duration", "20", "--stats-json"];
    send_args.push(s_json.to_str().unwrap());
    send_args.extend_from_slice(send_extra);
    if !send_extra.contains(&"--size") {
        send_args.extend(["--size", "640x480"]);
    }
    let mut send = spawn("send", &send_args, None);
    recv.expect_success(EXIT);
    send.expect_success(EXIT);
    let (r, s) = (summary(&r_json), summary(&s_json));
    eprintln!("receiver: {}", r.summary_text());
    eprintln!("sender: {}", s.summary_text());
    (r, s)
}

/// With FEC off and 3 % random loss, NACKs bring the packets back in time: retransmissions
/// arrive, and nearly every frame is shown whole.
#[test]
fn nack_recovers_lost_packets_inside_the_deadline() {
    let (r, s) = lossy("udp-nack", &["--rate", "30mbit", "--delay", "10ms", "--loss", "3%"], &["--fec", "off"], &[]);
    assert!(r.retransmitted > 0 && s.retransmitted > 0, "no retransmission under 3 % loss");
    assert_eq!(r.fec_recovered, 0, "FEC was off");
    let shown = r.frames as f64;
    let damaged = (r.concealed + r.frames_lost) as f64;
    assert!(shown > 60.0, "{shown} frames shown");
    assert!(damaged <= 0.1 * shown, "{damaged} of {shown} frames concealed or lost despite NACK");
}

/// With NACK off and 3 % random loss, parity rebuilds packets.
#[test]
fn fec_recovers_lost_packets() {
    let (r, s) =
        lossy("udp-fec", &["--rate", "30mbit", "--delay", "10ms", "--loss", "3%"], &[], &["--udp-nack", "off"]);
    assert_eq!(r.retransmitted, 0, "NACK was off");
    assert!(r.fec_recovered > 0, "nothing rebuilt from parity under 3 % loss");
    assert!(s.fec_overhead_pct.is_some_and(|p| p > 0.0), "no parity sent: {s:?}");
}

/// With neither NACK nor FEC, frames missing packets are shown concealed (restart markers),
/// not dropped.
#[test]
fn frames_missing_packets_are_concealed() {
    let (r, _) = lossy("udp-conceal", &["--rate", "30mbit", "--loss", "5%"], &["--fec", "off"], &["--udp-nack", "off"]);
    assert!(r.concealed > 0, "no frame concealed under 5 % loss without recovery");
    assert!(r.frames as f64 > 2.0 * r.frames_lost as f64, "more frames lost than shown: {r:?}");
}

/// Through a 5 Mbit/s link with a router queue of 16 KB, paced packets get through: frames of
/// 960x540 (about 20 KB) sent each as one burst would overflow it every time. Neither NACK nor
/// FEC hides a loss here.
#[test]
fn pacing_keeps_bursts_inside_a_small_router_queue() {
    let (r, _) = lossy(
        "udp-pacing",
        &["--rate", "5mbit", "--delay", "10ms", "--queue", "16KB"],
        &["--fec", "off", "--size", "960x540", "--fps", "15"],
        &["--udp-nack", "off"],
    );
    let shown = r.frames as f64;
    let damaged = (r.concealed + r.frames_lost) as f64;
    assert!(shown > 40.0, "{shown} frames shown through a paced 5 Mbit/s link");
    assert!(damaged < 0.2 * shown, "{damaged} of {shown} frames concealed or lost: bursts overflow the queue");
}
