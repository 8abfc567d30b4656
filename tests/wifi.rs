//! Wi-Fi mode through `framecast netsim` (5 Mbit/s, 20 ms each way, 5 ms jitter): the
//! 1280x720 test pattern at 30 fps is about 6.4 Mbit/s at quality 75, more than the link.
//! Real processes on 127.0.0.1: `send --listen` ← netsim ← `recv --connect --frame-log`.
//! Shorter runs and more generous bounds than `benches/wifi.sh`, which prints the full figures.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, records_of, scratch_dir, Proc};
use framecast::stats::{DropCause, RecordType};

/// One displayed frame from `--frame-log`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    width: u32,
    bytes: u64,
    quality: u8,
    t: f64,
    /// capture→displayed, ms (the clocks are shared on one host, so always known here).
    latency: f64,
}

fn frame_log(path: &Path) -> Vec<Frame> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("seq,width,height,bytes,quality,t_s,capture_to_received_ms,capture_to_decoded_ms,capture_to_displayed_ms")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Frame {
                width: f[1].parse().unwrap(),
                bytes: f[3].parse().unwrap(),
                quality: f[4].parse().unwrap(),
                t: f[5].parse().unwrap(),
                latency: f[8].parse().unwrap_or_else(|_| panic!("latency unknown in {l:?}")),
            }
        })
        .collect()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    assert!(!v.is_empty(), "no frames to take a percentile of");
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((v.len() as f64) * p / 100.0).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn after(frames: &[Frame], from: f64) -> Vec<Frame> {
    frames.iter().filter(|f| f.t >= from).copied().collect()
}

fn latencies(frames: &[Frame]) -> Vec<f64> {
    frames.iter().map(|f| f.latency).collect()
}

fn kbps(frames: &[Frame]) -> f64 {
    let (first, last) = (frames.first().unwrap().t, frames.last().unwrap().t);
    frames.iter().skip(1).map(|f| f.bytes).sum::<u64>() as f64 * 8.0 / 1000.0 / (last - first)
}

struct Run {
    frames: Vec<Frame>,
    sender: Proc,
    send_json: std::path::PathBuf,
    _dir: common::ScratchDir,
}

/// Streams for `secs` through netsim with `netsim_extra` link options and `send_extra`
/// sender options, and returns the viewer's frame log.
fn run(name: &str, secs: u32, netsim_extra: &[&str], send_extra: &[&str]) -> Run {
    let dir = scratch_dir(name);
    let (send_port, relay_port) = (free_port(), free_port());
    let (send_addr, relay_addr) = (format!("127.0.0.1:{send_port}"), format!("127.0.0.1:{relay_port}"));
    let send_json = dir.join("send.jsonl");
    let log = dir.join("frames.csv");
    let mut send_args = vec![
        "send",
        "--listen",
        &send_addr,
        "--size",
        "1280x720",
        "--fps",
        "30",
        "--stats-json",
        send_json.to_str().unwrap(),
    ];
    send_args.extend_from_slice(send_extra);
    let sender = Proc::spawn("send", &send_args);
    assert!(sender.wait_for_stderr("waiting for viewers", Duration::from_secs(10)), "{}", sender.stderr());
    let mut netsim_args =
        vec!["netsim", "--listen", &relay_addr, "--forward", &send_addr, "--rate", "5mbit", "--delay", "20ms"];
    netsim_args.extend_from_slice(&["--jitter", "5ms"]);
    netsim_args.extend_from_slice(netsim_extra);
    let netsim = Proc::spawn("netsim", &netsim_args);
    assert!(netsim.wait_for_stderr("netsim listening", Duration::from_secs(10)), "{}", netsim.stderr());
    let secs_arg = secs.to_string();
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--connect",
            &relay_addr,
            "--headless",
            "--once",
            "--duration",
            &secs_arg,
            "--frame-log",
            log.to_str().unwrap(),
        ],
    );
    recv.expect_success(Duration::from_secs(u64::from(secs) + 20));
    drop(netsim);
    let frames = frame_log(&log);
    assert!(frames.len() > 30, "only {} frames displayed:\n{}", frames.len(), recv.stderr());
    Run { frames, sender, send_json, _dir: dir }
}

#[test]
fn congestion_control_bounds_latency_where_plain_tcp_lets_it_grow() {
    let _serial = common::serial();
    let cc = run("wifi-cc", 8, &[], &["--quality", "75"]);
    let bounded = percentile(latencies(&after(&cc.frames, 3.0)), 95.0);
    eprintln!("congestion control: p95 {bounded:.1} ms after 3 s");
    assert!(bounded < 400.0, "with congestion control, capture->displayed p95 {bounded:.1} ms after 3 s");
    let sent = records_of(&cc.send_json, RecordType::Interval);
    let congestion: u64 = sent.iter().map(|r| r.dropped(DropCause::Congestion)).sum();
    assert!(congestion > 0, "the sender counted no congestion drops on a link slower than the stream");

    let plain = run("wifi-nocc", 8, &[], &["--quality", "75", "--no-congestion-control"]);
    let early = percentile(latencies(&plain.frames[..30]), 50.0);
    let late = percentile(latencies(&after(&plain.frames, plain.frames.last().unwrap().t - 1.0)), 50.0);
    eprintln!("no congestion control: p50 {early:.1} ms in the first second, {late:.1} ms in the last");
    assert!(late > 800.0 && late > 3.0 * bounded, "without congestion control latency should grow: {late:.1} ms");
    assert!(late > early * 2.0, "latency should grow over the run: {early:.1} -> {late:.1} ms");
}

#[test]
fn target_bitrate_is_held() {
    let _serial = common::serial();
    let r = run("wifi-target", 12, &[], &["--target-kbps", "4000"]);
    let steady = after(&r.frames, 5.0);
    let rate = kbps(&steady);
    let p95 = percentile(latencies(&steady), 95.0);
    eprintln!("target 4000: {rate:.0} kbit/s, p95 {p95:.1} ms after 5 s");
    assert!((rate - 4000.0).abs() < 600.0, "mean {rate:.0} kbit/s after 5 s, target 4000");
    assert!(p95 < 300.0, "capture->displayed p95 {p95:.1} ms after 5 s");
    let qualities: Vec<u8> = steady.iter().map(|f| f.quality).collect();
    let (lo, hi) = (qualities.iter().min().unwrap(), qualities.iter().max().unwrap());
    assert!(hi - lo <= 8, "quality wandered {lo}..{hi} after warm-up");
    // Every decision is in the stats and the debug log names its reason.
    let last = records_of(&r.send_json, RecordType::Interval).pop().expect("sender intervals");
    assert_eq!(last.control.as_ref().map(|c| &*c.mode), Some("target"), "{last:?}");
    assert!(r.sender.stderr().contains("ctl q"), "the stats line shows the controller's choice");
}

#[test]
fn downscale_keeps_the_frame_rate_on_a_low_target() {
    let _serial = common::serial();
    // 1500 kbit/s: quality 20 at full size (~21 KB) would leave about 9 fps.
    let r = run("wifi-downscale", 10, &[], &["--target-kbps", "1500", "--allow-downscale"]);
    let steady = after(&r.frames, 5.0);
    let (rate, fps) = (kbps(&steady), (steady.len() - 1) as f64 / (steady.last().unwrap().t - steady[0].t));
    eprintln!("target 1500 with downscale: {rate:.0} kbit/s, {fps:.1} fps after 5 s");
    assert!(steady.iter().all(|f| f.width == 640), "frames are halved to 640 wide after 5 s");
    assert!(fps > 18.0, "well above the ~9 fps full size would leave: {fps:.1} fps");
    assert!((rate - 1500.0).abs() < 300.0, "mean {rate:.0} kbit/s, target 1500");
}

#[test]
fn latency_budget_is_kept_with_most_of_the_link() {
    let _serial = common::serial();
    let r = run("wifi-latency", 12, &[], &["--max-latency-ms", "150"]);
    let steady = after(&r.frames, 5.0);
    let (rate, p95) = (kbps(&steady), percentile(latencies(&steady), 95.0));
    eprintln!("budget 150 ms: {rate:.0} kbit/s, p95 {p95:.1} ms after 5 s");
    assert!(p95 < 250.0, "capture->displayed p95 {p95:.1} ms after 5 s, budget 150");
    assert!(rate > 2500.0, "only {rate:.0} kbit/s of a 5 Mbit/s link used");
}

#[test]
fn latency_recovers_within_a_second_after_each_stall() {
    let _serial = common::serial();
    let r = run("wifi-stall", 13, &["--stall-every", "4s", "--stall", "500ms"], &["--target-kbps", "4000"]);
    // A stall shows as a gap in display times; it ends when frames flow again.
    let gaps: Vec<f64> = r.frames.windows(2).filter(|w| w[1].t - w[0].t > 0.35).map(|w| w[1].t).collect();
    assert!(gaps.len() >= 2, "expected the stalls at 4 s and 8 s to show as gaps: {gaps:?}");
    for (i, end) in gaps.iter().enumerate() {
        // Up to the next stall (4 s after this one began, 3.5 s after it ended), which may
        // not show as a gap when the run ends inside it: frames it delays are its own.
        let until = gaps.get(i + 1).copied().unwrap_or(f64::INFINITY).min(end + 3.4);
        let late = r.frames.iter().filter(|f| f.t >= end + 1.0 && f.t < until && f.latency >= 250.0).count();
        let worst_after =
            r.frames.iter().filter(|f| f.t >= end + 1.0 && f.t < until).map(|f| f.latency).fold(0.0, f64::max);
        eprintln!("stall ending at {end:.2} s: worst latency from 1 s after it {worst_after:.1} ms");
        assert_eq!(late, 0, "frames over 250 ms more than 1 s after the stall ending at {end:.2} s");
    }
}

#[test]
fn a_viewer_that_stops_acknowledging_is_dropped() {
    let _serial = common::serial();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sender = Proc::spawn("send", &["send", "--listen", &addr, "--size", "320x240", "--fps", "30"]);
    assert!(sender.wait_for_stderr("waiting for viewers", Duration::from_secs(10)), "{}", sender.stderr());
    let recv = Proc::spawn("recv", &["recv", "--connect", &addr, "--headless", "--once"]);
    assert!(recv.wait_for_stderr("recv-stats", Duration::from_secs(10)), "{}", recv.stderr());
    // A viewer gone without a word (a dropped Wi-Fi link): frozen, so it neither reads nor
    // acknowledges, and its socket stays open.
    recv.signal(libc::SIGSTOP).unwrap();
    let dropped = sender.wait_for_stderr("no acknowledgement from the viewer", Duration::from_secs(20));
    recv.signal(libc::SIGCONT).unwrap();
    assert!(dropped, "the sender kept a silent viewer:\n{}", sender.stderr());
    assert!(sender.wait_for_stderr("viewer left", Duration::from_secs(5)), "{}", sender.stderr());
}

#[test]
fn a_headless_viewer_asks_for_its_quality_at_connect() {
    let _serial = common::serial();
    let dir = scratch_dir("wifi-recv-quality");
    for (extra, want_log) in [
        (&[][..], "viewer asked for a new quality from=75 to=40"),
        (&["--max-latency-ms", "500"][..], "viewer set the quality ceiling to 40"),
    ] {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["send", "--listen", &addr, "--size", "320x240", "--quality", "75"];
        args.extend_from_slice(extra);
        let sender = Proc::spawn("send", &args);
        assert!(sender.wait_for_stderr("waiting for viewers", Duration::from_secs(10)), "{}", sender.stderr());
        let log = dir.join("frames.csv");
        let mut recv = Proc::spawn(
            "recv",
            &["recv", "--connect", &addr, "--headless", "--once", "--frames", "60", "--quality", "40", "--frame-log"]
                .into_iter()
                .chain([log.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        recv.expect_success(Duration::from_secs(30));
        assert!(sender.wait_for_stderr(want_log, Duration::from_secs(5)), "{}", sender.stderr());
        let frames = frame_log(&log);
        let late = &frames[frames.len() / 2..];
        assert!(late.iter().all(|f| f.quality <= 40), "{:?}", late.iter().map(|f| f.quality).collect::<Vec<_>>());
    }
}
