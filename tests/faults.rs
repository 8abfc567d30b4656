//! Faults survived, each with real processes on 127.0.0.1: a sender killed with SIGKILL in
//! the middle of a frame, a viewer stopped with SIGSTOP, a peer that sends half a handshake
//! and goes silent, a link that stalls (through `framecast netsim`), and a source that fails
//! mid-stream (the test pattern made to fail on demand).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{free_port, records_of, scratch_dir, summary, Proc};
use framecast::net::{Hello, Role};
use framecast::stats::{DropCause, RecordType, Report};

/// Resident memory of a process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

fn wait_listening(p: &Proc) {
    assert!(
        p.wait_for_stderr("waiting for viewers", Duration::from_secs(15)),
        "sender did not listen:\n{}",
        p.stderr()
    );
}

/// The receiver's interval records whose end time `t` (seconds since it started) is in `from..to`.
fn intervals_between(path: &std::path::Path, from: f64, to: f64) -> Vec<Report> {
    records_of(path, RecordType::Interval).into_iter().filter(|r| r.t >= from && r.t < to).collect()
}

/// (a) The sender is killed with SIGKILL in the middle of a frame: the viewer is stopped for a
/// moment so that the socket fills and the sender blocks half-way through writing a big frame,
/// then the sender is killed and the viewer continued. The viewer reports the cut frame (or
/// the reset), retries while nothing listens, and streams again from the restarted sender.
#[test]
fn viewer_reconnects_to_a_sender_killed_mid_frame_and_restarted() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-sigkill");
    let (r_json, s_json) = (dir.join("R.jsonl"), dir.join("S2.jsonl"));
    let addr = format!("127.0.0.1:{}", free_port());
    // Big frames: 1920x1080 at quality 95, and a window of unacknowledged frames deep enough
    // for the stopped viewer's socket to fill (the default ~100 ms would stop the sender
    // between frames, which is the point of congestion control but not of this test).
    let big = ["--size", "1920x1080", "--quality", "95", "--subsampling", "444", "--max-in-flight", "64"];
    let mut first = Proc::spawn("send1", &[&["send", "--listen", &addr][..], &big].concat());
    wait_listening(&first);
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--connect", &addr, "--headless", "--duration", "14", "--stats-json", r_json.to_str().unwrap()],
    );
    assert!(recv.wait_for_stderr("stream", Duration::from_secs(10)), "no stream info:\n{}", recv.stderr());
    std::thread::sleep(Duration::from_millis(1500));
    recv.signal(libc::SIGSTOP).unwrap();
    // Long enough for the kernel's socket buffers (several MB on loopback) to fill, so that
    // the sender blocks half-way through writing a frame.
    std::thread::sleep(Duration::from_millis(3000));
    first.signal(libc::SIGKILL).unwrap();
    first.wait(Duration::from_secs(5));
    recv.signal(libc::SIGCONT).unwrap();
    let killed_at = recv.elapsed();

    assert!(
        recv.wait_for_stderr("cannot connect to the sender; retrying", Duration::from_secs(5)),
        "the viewer did not retry:\n{}",
        recv.stderr()
    );
    let log = recv.stderr();
    let loss = log
        .lines()
        .find(|l| l.contains("dropped connection from sender"))
        .unwrap_or_else(|| panic!("the viewer did not report the lost sender as an error:\n{log}"));
    eprintln!("viewer reported: {loss}");
    assert!(
        loss.contains("in the middle of a message") || loss.contains("reset"),
        "the viewer did not see a cut frame or a reset: {loss}"
    );
    assert!(log.contains("reason=\"refused\"") || log.contains("reason=refused"), "no reason in the retry log:\n{log}");

    let second = Proc::spawn(
        "send2",
        &["send", "--listen", &addr, "--size", "640x480", "--duration", "20", "--stats-json", s_json.to_str().unwrap()],
    );
    assert!(
        recv.wait_for_stderr("connection=2", Duration::from_secs(10)),
        "the viewer did not reconnect to the restarted sender:\n{}",
        recv.stderr()
    );
    let reconnected_at = recv.elapsed();
    recv.expect_success(Duration::from_secs(30));
    assert!(
        second.wait_for_stderr("viewer closed the connection", Duration::from_secs(5)),
        "the restarted sender did not serve the viewer:\n{}",
        second.stderr()
    );
    let r = summary(&r_json);
    assert_eq!(r.reconnects, 1, "{r:?}");
    // Frames again after the reconnect, from the new sender (640x480).
    let after = intervals_between(&r_json, reconnected_at.as_secs_f64() + 1.0, 1e9);
    let frames: u64 = after.iter().map(|i| i.frames).sum();
    assert!(frames >= 20, "{frames} frames decoded after reconnecting at {reconnected_at:?} (killed at {killed_at:?})");
}

/// (b) The viewer is stopped with SIGSTOP for 5 s: the sender's memory stays flat, it counts
/// the frames it cannot deliver as dropped, and after SIGCONT the viewer streams again with
/// low latency.
#[test]
fn sender_survives_a_stopped_viewer_without_growing_and_streaming_recovers() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-sigstop");
    let (r_json, s_json) = (dir.join("R.jsonl"), dir.join("S.jsonl"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut send = Proc::spawn(
        "send",
        &[
            "send",
            "--listen",
            &addr,
            "--size",
            "1920x1080",
            "--quality",
            "90",
            "--duration",
            "20",
            "--stats-json",
            s_json.to_str().unwrap(),
        ],
    );
    wait_listening(&send);
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--connect", &addr, "--headless", "--duration", "16", "--stats-json", r_json.to_str().unwrap()],
    );
    assert!(recv.wait_for_stderr("stream", Duration::from_secs(10)), "no stream info:\n{}", recv.stderr());
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_kib(send.id());
    recv.signal(libc::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let mut peak = before;
    while stopped.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(rss_kib(send.id()));
    }
    recv.signal(libc::SIGCONT).unwrap();
    let resumed_at = recv.elapsed().as_secs_f64();
    let send_resumed_at = send.elapsed().as_secs_f64();
    let after = rss_kib(send.id());
    eprintln!("sender VmRSS: {before} KiB before SIGSTOP, peak {peak} KiB while stopped, {after} KiB after");
    assert!(peak <= before + 8 * 1024, "sender RSS grew from {before} to {peak} KiB while the viewer was stopped");

    recv.expect_success(Duration::from_secs(25));
    assert!(recv.elapsed().as_secs_f64() - resumed_at > 5.0, "the viewer ended too soon after SIGCONT");
    // The sender stays up for its own duration (the viewer left before it), then exits.
    send.expect_success(Duration::from_secs(25));
    let s = summary(&s_json);
    assert_eq!(s.reconnects, 0, "{s:?}");
    // Frames the stopped viewer could not take are counted as drops (any cause but
    // "no_viewer", which counts the frames after it left at the end).
    let stopped_secs = (send_resumed_at - 5.0, send_resumed_at);
    let mut dropped = 0;
    for i in records_of(&s_json, RecordType::Interval) {
        let t = i.t;
        if t > stopped_secs.0 && t <= stopped_secs.1 + 1.0 {
            let d = &i.drops;
            let n: u64 = d.iter().filter(|(k, _)| *k != DropCause::NoViewer.name()).map(|(_, v)| v).sum();
            eprintln!("sender while the viewer was stopped: t {t} sent {} drops {:?}", i.frames, d);
            dropped += n;
        }
    }
    assert!(dropped >= 30, "only {dropped} frames counted as dropped while the viewer was stopped for 5 s");

    // From 3 s after SIGCONT on (the viewer drains what the kernel buffered, then is live
    // again): frames flow and capture->displayed latency is back near its usual level.
    let late = intervals_between(&r_json, resumed_at + 3.0, 1e9);
    assert!(late.len() >= 2, "too few intervals after resuming: {late:?}");
    for i in &late {
        let fps = i.fps;
        let p95 = i.latency_capture_displayed_ms.map(|p| p.p95);
        eprintln!("after SIGCONT: t {} fps {fps:.1} latency p95 {p95:?} ms", i.t);
        assert!(fps >= 10.0, "{fps} fps after resuming: {i:?}");
        let p95 = p95.unwrap_or_else(|| panic!("no latency after resuming: {i:?}"));
        assert!(p95 < 500.0, "capture->displayed p95 {p95} ms 3 s after resuming: {i:?}");
    }
}

/// Half of a well-formed hello, then silence.
fn half_handshake(port: u16, role: Role) -> std::net::TcpStream {
    let mut hello = Vec::new();
    Hello::new(role, [7; 16]).encode(&mut hello);
    let mut s = common::connect_retry(port, Duration::from_secs(10));
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s
}

/// (c) A peer that sends half a handshake and goes silent holds nothing for long: a listening
/// sender serves a real viewer meanwhile and drops the silent peer after the handshake
/// timeout; a listening receiver (one sender at a time) is freed by the same timeout and a
/// reconnecting sender gets through.
#[test]
fn half_a_handshake_is_dropped_after_the_timeout() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-half-hello");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let send = Proc::spawn("send", &["send", "--listen", &addr, "--size", "320x240"]);
    wait_listening(&send);
    let mut silent = half_handshake(port, Role::Receiver);
    let started = Instant::now();
    let mut viewer = Proc::spawn("recv1", &["recv", "--connect", &addr, "--headless", "--once", "--frames", "30"]);
    viewer.expect_success(Duration::from_secs(15));
    // The sender answers with its own hello, then closes the connection at the timeout.
    let got = common::read_until_closed(&mut silent, Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("silent viewer: {} bytes, closed after {took:?}", got.len());
    assert!(took >= Duration::from_secs(4), "closed after {took:?}, before the handshake timeout");
    assert!(
        send.wait_for_stderr("no handshake from the peer", Duration::from_secs(2)),
        "the sender did not log why:\n{}",
        send.stderr()
    );
    let mut after = Proc::spawn("recv2", &["recv", "--connect", &addr, "--headless", "--once", "--frames", "30"]);
    after.expect_success(Duration::from_secs(15));
    drop(send);

    // A listening receiver: the silent sender holds its only slot until the timeout.
    let r_json = dir.join("R.jsonl");
    let rport = free_port();
    let raddr = format!("127.0.0.1:{rport}");
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--listen", &raddr, "--headless", "--frames", "30", "--stats-json", r_json.to_str().unwrap()],
    );
    assert!(recv.wait_for_stderr("waiting for a sender", Duration::from_secs(10)));
    let _silent = half_handshake(rport, Role::Sender);
    std::thread::sleep(Duration::from_millis(200));
    let _send = Proc::spawn("send2", &["send", "--connect", &raddr, "--size", "320x240", "--duration", "30"]);
    recv.expect_success(Duration::from_secs(25));
    assert!(recv.stderr().contains("no handshake from the peer"), "{}", recv.stderr());
    assert!(summary(&r_json).frames >= 30);
}

/// (d) A link that stalls for 1 s every 3 s (through `framecast netsim`): the connection
/// survives every stall and frames flow again after each.
#[test]
fn streaming_continues_after_each_link_stall() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-stall");
    let r_json = dir.join("R.jsonl");
    let saddr = format!("127.0.0.1:{}", free_port());
    let send = Proc::spawn("send", &["send", "--listen", &saddr, "--size", "640x480", "--quality", "60"]);
    wait_listening(&send);
    let nport = free_port();
    let naddr = format!("127.0.0.1:{nport}");
    let ns = Proc::spawn(
        "netsim",
        &[
            "netsim",
            "--listen",
            &naddr,
            "--forward",
            &saddr,
            "--rate",
            "40mbit",
            "--stall-every",
            "3s",
            "--stall",
            "1s",
        ],
    );
    assert!(ns.wait_for_stderr("netsim listening", Duration::from_secs(10)), "{}", ns.stderr());
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--connect", &naddr, "--headless", "--duration", "13", "--stats-json", r_json.to_str().unwrap()],
    );
    recv.expect_success(Duration::from_secs(30));
    let r = summary(&r_json);
    assert_eq!(r.reconnects, 0, "the connection did not survive the stalls: {r:?}");
    // Three or four stalls in the run; between them frames arrive. Per-second frame counts
    // from the second second on: no run of more than two empty seconds, and the stream is
    // live at the end.
    let per_s: Vec<u64> = records_of(&r_json, RecordType::Interval).iter().map(|i| i.frames).collect();
    eprintln!("frames per second through the stalling link: {per_s:?}");
    assert!(per_s.len() >= 11, "{per_s:?}");
    let body = &per_s[1..];
    let longest_gap = body.split(|&n| n > 0).map(|g| g.len()).max().unwrap_or(0);
    assert!(longest_gap <= 2, "no frames for {longest_gap} s in a row: {per_s:?}");
    let live = body.iter().filter(|&&n| n >= 10).count();
    assert!(live >= body.len() / 2, "too few live seconds: {per_s:?}");
    assert!(per_s[per_s.len() - 3..].iter().any(|&n| n >= 10), "not live at the end: {per_s:?}");
    assert!(r.frames >= 150, "{r:?}");
}

/// (e) The source fails mid-stream (the test pattern, made to fail after 40 frames and stay
/// away 2 s, by a test-only environment variable): the sender reopens it, viewers get
/// "no signal" frames meanwhile, and the stats say so.
#[test]
fn a_lost_source_is_reopened_and_viewers_see_no_signal_meanwhile() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-source");
    let (r_json, s_json, dumps) = (dir.join("R.jsonl"), dir.join("S.jsonl"), dir.join("dumps"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut send = Proc::spawn_with(
        "send",
        &["send", "--listen", &addr, "--size", "320x240", "--duration", "9", "--stats-json", s_json.to_str().unwrap()],
        |c| {
            c.env("FRAMECAST_TEST_SOURCE_FAULT", "60:2.5");
        },
    );
    wait_listening(&send);
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--connect",
            &addr,
            "--headless",
            "--once",
            "--stats-json",
            r_json.to_str().unwrap(),
            "--dump-dir",
            dumps.to_str().unwrap(),
            "--dump-every",
            "1",
        ],
    );
    send.expect_success(Duration::from_secs(20));
    recv.expect_success(Duration::from_secs(10));
    let log = send.stderr();
    assert!(log.contains("source lost") && log.contains("source reopened"), "{log}");
    assert!(log.contains("cannot reopen the source"), "no reopen attempt logged:\n{log}");
    let s = summary(&s_json);
    assert!(s.source_losses >= 2, "{s:?}");
    let cards = s.no_signal_frames;
    assert!(cards >= 4, "{cards} no-signal frames for two losses of 2.5 s: {s:?}");
    let lost_lines = records_of(&s_json, RecordType::Interval).iter().filter(|i| i.source_lost_since.is_some()).count();
    assert!(lost_lines >= 3, "{lost_lines} interval lines say the source is lost");
    let r = summary(&r_json);
    assert_eq!(r.out_of_order, Some(0), "sequence numbers went backwards across a reopen: {r:?}");
    assert!(r.frames >= 100, "{r:?}");
    // The viewer got no-signal frames: mostly dark grey with a white band (the test pattern
    // has colour bars over its top two thirds).
    let mut greys = 0;
    for entry in std::fs::read_dir(&dumps).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let (w, h, rgb) = framecast::view::read_ppm(&bytes).unwrap();
        let px = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
        let grey = |p: &[u8]| p.iter().all(|&v| v.abs_diff(48) <= 12);
        if grey(px(2, 2))
            && grey(px(w - 3, 2))
            && grey(px(w / 2, 3))
            && px(w / 2, h / 2).iter().all(|&v| !(40..=150).contains(&v))
        {
            greys += 1;
        }
    }
    assert!(greys >= 2, "{greys} dumped frames look like the no-signal frame");
}

/// (f) The other way round: a connecting sender outlives its viewer. The listening viewer
/// leaves; the sender retries with backoff (encoding paused, no viewer) and streams to the
/// next viewer that listens on the same address. With `--once` it ends with its viewer.
#[test]
fn connecting_sender_calls_its_viewer_again_until_it_is_back() {
    let _serial = common::serial();
    let dir = scratch_dir("faults-send-reconnect");
    let s_json = dir.join("S.jsonl");
    let addr = format!("127.0.0.1:{}", free_port());
    let recv_args = ["recv", "--listen", &addr, "--headless", "--once", "--frames", "20"];
    let mut first = Proc::spawn("recv1", &recv_args);
    assert!(first.wait_for_stderr("waiting for a sender", Duration::from_secs(10)));
    let mut send = Proc::spawn(
        "send",
        &[
            "send",
            "--connect",
            &addr,
            "--size",
            "320x240",
            "--duration",
            "30",
            "--stats-json",
            s_json.to_str().unwrap(),
        ],
    );
    first.expect_success(Duration::from_secs(15));
    assert!(
        send.wait_for_stderr_n("cannot connect to the viewer; retrying", 3, Duration::from_secs(10)),
        "the sender did not keep calling its viewer:\n{}",
        send.stderr()
    );
    assert!(send.is_running(), "the sender ended with its viewer although --once was not given");
    let mut second = Proc::spawn("recv2", &recv_args);
    second.expect_success(Duration::from_secs(20));
    assert!(send.wait_for_stderr("connection=2", Duration::from_secs(5)), "{}", send.stderr());
    send.signal(libc::SIGINT).unwrap();
    send.expect_success(Duration::from_secs(10));
    let s = summary(&s_json);
    assert_eq!(s.reconnects, 1, "{s:?}");
    assert!(s.dropped(DropCause::NoViewer) > 0, "encoding did not pause meanwhile: {s:?}");

    // --once: the sender ends when its viewer leaves.
    let mut third = Proc::spawn("recv3", &recv_args);
    assert!(third.wait_for_stderr("waiting for a sender", Duration::from_secs(10)));
    let mut once = Proc::spawn("send-once", &["send", "--connect", &addr, "--once", "--size", "320x240"]);
    third.expect_success(Duration::from_secs(15));
    once.expect_success(Duration::from_secs(10));
    assert!(once.stderr().contains("viewer closed the connection"), "{}", once.stderr());
}
