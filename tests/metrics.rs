//! `/metrics` on `send --http`, read by a real parser: Python's `prometheus_client` (from
//! PyPI, in a venv this test makes under `target/tmp/prometheus-venv`), in both formats the
//! endpoint speaks (the Prometheus text format by default, OpenMetrics when `Accept` asks).
//! The tests check the families' names, types and labels, that counters grow between
//! scrapes, that histograms are consistent, and that 64 parallel scrapes and scrapes while
//! the source is lost and reopened neither fail nor stall the stream.
//!
//! Tools: `/usr/bin/python3` with `venv` (Debian: python3-venv) and the network to PyPI the
//! first time. Without them the tests are SKIPPED, or fail under `CI`
//! (`common::tools::require_tools`, `common::tools::skip`).

#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::http_client::{http_raw, HttpResponse};
use common::tools::{require_tools, run_tool, skip};
use common::{connect_retry, free_port, records_of, scratch_dir, Proc};
use framecast::stats::RecordType;
use serde_json::Value;

/// Parses each file named on the command line with `prometheus_client` (argv[1] says which
/// format) and prints the families as JSON.
const PARSE: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for path in sys.argv[2:]:
    with open(path) as f:
        text = f.read()
    out.append([
        {"name": m.name, "type": m.type, "unit": m.unit,
         "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in m.samples]}
        for m in text_string_to_metric_families(text)
    ])
json.dump(out, sys.stdout)
"#;

const PIP_SPEC: &str = "prometheus-client>=0.20,<1";

/// The venv's python with `prometheus_client`, made once per test run (and kept under
/// target/ for the next); `None` when the test was skipped.
fn python(test: &str) -> Option<PathBuf> {
    static MADE: Mutex<()> = Mutex::new(());
    let _once = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prometheus-venv");
    let py = venv.join("bin/python");
    let imports = |py: &Path| {
        run_tool(Command::new(py).args(["-c", "import prometheus_client"]), Duration::from_secs(30)).status.success()
    };
    if py.exists() && imports(&py) {
        return Some(py);
    }
    if !require_tools(test, &[("/usr/bin/python3", "python3-venv")]) {
        return None;
    }
    let out =
        run_tool(Command::new("/usr/bin/python3").args(["-m", "venv", "--clear"]).arg(&venv), Duration::from_secs(120));
    if !out.status.success() {
        skip(test, &format!("cannot make a venv (apt-get install python3-venv): {}", out.stderr.trim()));
        return None;
    }
    let out = run_tool(
        Command::new(&py).args(["-m", "pip", "install", "--disable-pip-version-check", "-q", PIP_SPEC]),
        Duration::from_secs(300),
    );
    if !out.status.success() || !imports(&py) {
        skip(test, &format!("pip could not install {PIP_SPEC} from PyPI: {}", out.stderr.trim()));
        return None;
    }
    Some(py)
}

/// One metric family as the parser saw it.
#[derive(Debug)]
struct Family {
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

type Scrape = BTreeMap<String, Family>;

/// Parses the bodies with `prometheus_client` (`openmetrics`: its OpenMetrics parser, else
/// the Prometheus text parser). Panics with the parser's error if one does not parse.
fn parse(py: &Path, dir: &Path, openmetrics: bool, bodies: &[Vec<u8>]) -> Vec<Scrape> {
    let script = dir.join("parse.py");
    std::fs::write(&script, PARSE).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(&script).arg(if openmetrics { "openmetrics" } else { "text" });
    for (i, body) in bodies.iter().enumerate() {
        let path = dir.join(format!("scrape-{}-{i}.txt", u8::from(openmetrics)));
        std::fs::write(&path, body).unwrap();
        cmd.arg(path);
    }
    let out = run_tool(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "prometheus_client could not parse a scrape ({}):\n{}", out.status, out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout).expect("the parser prints JSON");
    v.as_array().unwrap().iter().map(families).collect()
}

fn families(scrape: &Value) -> Scrape {
    let mut out = BTreeMap::new();
    for f in scrape.as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["labels"].as_object().unwrap();
                let labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
                (s["name"].as_str().unwrap().to_string(), labels, s["value"].as_f64().unwrap_or(f64::NAN))
            })
            .collect();
        let kind = f["type"].as_str().unwrap().to_string();
        out.insert(f["name"].as_str().unwrap().to_string(), Family { kind, samples });
    }
    out
}

/// `GET /metrics`, asking for OpenMetrics or not.
fn scrape(port: u16, openmetrics: bool) -> HttpResponse {
    let accept = if openmetrics {
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    } else {
        ""
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}\r\n");
    let r = http_raw(port, req.as_bytes(), Duration::from_secs(10));
    assert_eq!(r.status, 200, "/metrics: {}", r.head);
    r
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &Scrape, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = s.get(family).unwrap_or_else(|| panic!("no family {family} in {:?}", s.keys().collect::<Vec<_>>()));
    f.samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {family}: {:?}", f.samples))
        .2
}

/// Label values of `label` among a family's samples.
fn label_values(s: &Scrape, family: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = s[family].samples.iter().filter_map(|(_, l, _)| l.get(label).cloned()).collect();
    v.dedup();
    v
}

/// Every histogram in a scrape: buckets cumulative, `+Inf` equal to `_count`.
fn histograms_consistent(s: &Scrape) {
    for (name, f) in s.iter().filter(|(_, f)| f.kind == "histogram") {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for (sample, labels, v) in &f.samples {
            let key = labels.get("stage").cloned().unwrap_or_default();
            if sample.ends_with("_bucket") {
                let le = labels["le"].parse::<f64>().unwrap_or(f64::INFINITY);
                series.entry(key).or_default().push((le, *v));
            } else if sample.ends_with("_count") {
                counts.insert(key, *v);
            }
        }
        for (key, buckets) in &series {
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{name}{{{key}}}: {buckets:?}");
            let inf = buckets.last().unwrap();
            assert!(
                inf.0.is_infinite() && Some(&inf.1) == counts.get(key),
                "{name}{{{key}}}: +Inf {inf:?}, {counts:?}"
            );
        }
    }
}

/// A sender with native (`--listen`) and HTTP viewers, 320x240 at 30 fps.
fn sender(nport: u16, hport: u16, json: &Path, fault: Option<&str>) -> Proc {
    let (n, h) = (format!("127.0.0.1:{nport}"), format!("127.0.0.1:{hport}"));
    let args = ["send", "--listen", &n, "--http", &h, "--size", "320x240", "--duration", "30"];
    let json = json.to_str().unwrap();
    let args: Vec<&str> = args.into_iter().chain(["--stats-json", json]).collect();
    let p = Proc::spawn_with("send", &args, |c| {
        if let Some(f) = fault {
            c.env("FRAMECAST_TEST_SOURCE_FAULT", f);
        }
    });
    drop(connect_retry(hport, Duration::from_secs(10)));
    p
}

fn native_viewer(nport: u16, seconds: u32, json: &Path) -> Proc {
    let addr = format!("127.0.0.1:{nport}");
    let secs = seconds.to_string();
    Proc::spawn(
        "recv",
        &["recv", "--connect", &addr, "--headless", "--duration", &secs, "--stats-json", json.to_str().unwrap()],
    )
}

/// Scrapes until `ok` accepts one (Prometheus text format), at most `timeout`.
fn wait_for(py: &Path, dir: &Path, port: u16, timeout: Duration, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = parse(py, dir, false, &[scrape(port, false).body]).remove(0);
        if ok(&s) || Instant::now() > deadline {
            return s;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// Both formats parse; the families have the expected types and labels; counters grow
/// between two scrapes; latency histograms hold the frames sent.
#[test]
fn prometheus_client_parses_the_metrics_and_counters_grow() {
    let test = "prometheus_client_parses_the_metrics_and_counters_grow";
    let _serial = common::serial();
    let Some(py) = python(test) else { return };
    let dir = scratch_dir("metrics-parse");
    let (nport, hport) = (free_port(), free_port());
    let _send = sender(nport, hport, &dir.join("S.jsonl"), None);
    let _recv = native_viewer(nport, 20, &dir.join("R.jsonl"));
    let http_viewer = common::http_client::spawn_mjpeg_client(
        hport,
        common::http_client::MjpegClient { run_for: Duration::from_secs(8), throttle: None, rcvbuf: None },
    );
    let viewers = |s: &Scrape| {
        ["native", "http"].iter().all(|k| value(s, "framecast_viewers", "framecast_viewers", &[("kind", k)]) >= 1.0)
            && s.contains_key("framecast_fps")
            && s.contains_key("framecast_viewer_fps")
    };
    let first = wait_for(&py, &dir, hport, Duration::from_secs(10), viewers);
    assert!(viewers(&first), "no native and HTTP viewer, or no interval figures, in /metrics: {first:?}");
    thread::sleep(Duration::from_millis(1500));
    let om = scrape(hport, true);
    assert_eq!(om.header("Content-Type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let second = parse(&py, &dir, true, &[om.body]).remove(0);

    for (name, kind) in [
        ("framecast_build_info", "gauge"),
        ("framecast_frames", "counter"),
        ("framecast_sent_bytes", "counter"),
        ("framecast_frames_dropped", "counter"),
        ("framecast_encode_seconds", "counter"),
        ("framecast_reconnects", "counter"),
        ("framecast_source_losses", "counter"),
        ("framecast_sliced_frames", "counter"),
        ("framecast_quality", "gauge"),
        ("framecast_source_lost", "gauge"),
        ("framecast_viewers", "gauge"),
        ("framecast_fps", "gauge"),
        ("framecast_bitrate_bits_per_second", "gauge"),
        ("framecast_frame_size_bytes", "gauge"),
        ("framecast_latency_seconds", "histogram"),
        ("framecast_ack_rtt_seconds", "histogram"),
        ("framecast_viewer_fps", "gauge"),
        ("framecast_viewer_latency_seconds", "gauge"),
        ("framecast_viewer_dropped_frames", "gauge"),
    ] {
        for (format, s) in [("text", &first), ("openmetrics", &second)] {
            let f = s
                .get(name)
                .unwrap_or_else(|| panic!("{format}: no family {name} in {:?}", s.keys().collect::<Vec<_>>()));
            assert_eq!(f.kind, kind, "{format}: the type of {name}");
        }
    }
    for s in [&first, &second] {
        assert_eq!(label_values(s, "framecast_frames", "stage"), ["captured", "encoded", "sent"]);
        let causes = label_values(s, "framecast_frames_dropped", "cause");
        for cause in ["congestion", "encode_error", "encoder_busy", "no_viewer", "rate_limit", "socket_busy"] {
            assert!(causes.iter().any(|c| c == cause), "no drop cause {cause}: {causes:?}");
        }
        assert_eq!(label_values(s, "framecast_latency_seconds", "stage"), ["capture_encoded", "capture_sent"]);
        let q = value(s, "framecast_quality", "framecast_quality", &[]);
        assert!((1.0..=100.0).contains(&q), "quality {q}");
        assert!(value(s, "framecast_fps", "framecast_fps", &[("stage", "sent")]) > 10.0, "fps sent: {s:?}");
        assert!(value(s, "framecast_viewer_fps", "framecast_viewer_fps", &[]) > 10.0, "the viewer's fps: {s:?}");
        let p95 =
            value(s, "framecast_viewer_latency_seconds", "framecast_viewer_latency_seconds", &[("quantile", "0.95")]);
        assert!(p95 > 0.0 && p95 < 1.0, "the viewer's p95 latency on loopback: {p95} s");
        histograms_consistent(s);
    }
    let sent = |s: &Scrape| value(s, "framecast_frames", "framecast_frames_total", &[("stage", "sent")]);
    let bytes = |s: &Scrape| value(s, "framecast_sent_bytes", "framecast_sent_bytes_total", &[]);
    let lat = |s: &Scrape, stage| {
        value(s, "framecast_latency_seconds", "framecast_latency_seconds_count", &[("stage", stage)])
    };
    let rtt = |s: &Scrape| value(s, "framecast_ack_rtt_seconds", "framecast_ack_rtt_seconds_count", &[]);
    eprintln!(
        "frames sent {} -> {}, bytes {} -> {}, capture->sent samples {} -> {}, ack rtt samples {} -> {}",
        sent(&first),
        sent(&second),
        bytes(&first),
        bytes(&second),
        lat(&first, "capture_sent"),
        lat(&second, "capture_sent"),
        rtt(&first),
        rtt(&second)
    );
    assert!(sent(&second) > sent(&first) + 20.0, "frames sent did not grow over 1.5 s at 30 fps");
    assert!(bytes(&second) > bytes(&first));
    assert!(lat(&second, "capture_encoded") > lat(&first, "capture_encoded"));
    assert_eq!(lat(&second, "capture_sent"), sent(&second), "one capture->sent sample per frame sent");
    assert!(rtt(&second) > rtt(&first) && rtt(&first) > 0.0, "the native viewer's acks are timed");
    let p50_bucket = value(
        &second,
        "framecast_latency_seconds",
        "framecast_latency_seconds_bucket",
        &[("stage", "capture_sent"), ("le", "0.1")],
    );
    assert!(p50_bucket >= lat(&second, "capture_sent") / 2.0, "most frames leave within 100 ms on loopback");
    let log = http_viewer.join().expect("MJPEG client");
    assert!(log.parts.len() > 30, "the HTTP viewer got {} frames", log.parts.len());
}

/// 64 scrapes at once, four times over, while a native viewer watches: every scrape parses
/// and is consistent, none takes long, and the viewer's frame rate holds.
#[test]
fn sixty_four_parallel_scrapes_do_not_stall_the_stream() {
    let test = "sixty_four_parallel_scrapes_do_not_stall_the_stream";
    let _serial = common::serial();
    let Some(py) = python(test) else { return };
    let dir = scratch_dir("metrics-storm");
    let (nport, hport) = (free_port(), free_port());
    let _send = sender(nport, hport, &dir.join("S.jsonl"), None);
    let r_json = dir.join("R.jsonl");
    let mut recv = native_viewer(nport, 8, &r_json);
    let flowing = |s: &Scrape| value(s, "framecast_viewers", "framecast_viewers", &[("kind", "native")]) >= 1.0;
    assert!(flowing(&wait_for(&py, &dir, hport, Duration::from_secs(10), flowing)), "the native viewer never joined");
    thread::sleep(Duration::from_secs(1));

    const N: usize = 64;
    let barrier = Arc::new(Barrier::new(N));
    let started = Instant::now();
    let scrapers: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..4 {
                    barrier.wait();
                    if round > 0 {
                        // Let the last round's server threads finish before the next 64.
                        thread::sleep(Duration::from_millis(100));
                    }
                    let openmetrics = i % 2 == 1;
                    let r = scrape(hport, openmetrics);
                    got.push((r.took, openmetrics, r.body));
                }
                got
            })
        })
        .collect();
    let results: Vec<(Duration, bool, Vec<u8>)> =
        scrapers.into_iter().flat_map(|h| h.join().expect("scraper")).collect();
    let storm = started.elapsed();
    let slowest = results.iter().map(|r| r.0).max().unwrap();
    eprintln!(
        "{} scrapes in {:.2} s, slowest {:.0} ms",
        results.len(),
        storm.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(slowest < Duration::from_secs(2), "a scrape took {slowest:?}");
    let bodies = |om: bool| results.iter().filter(|r| r.1 == om).map(|r| r.2.clone()).collect::<Vec<_>>();
    let (text, om) = (bodies(false), bodies(true));
    assert_eq!((text.len(), om.len()), (N * 2, N * 2));
    for s in parse(&py, &dir, false, &text).iter().chain(&parse(&py, &dir, true, &om)) {
        histograms_consistent(s);
        assert_eq!(label_values(s, "framecast_frames", "stage"), ["captured", "encoded", "sent"]);
    }
    recv.expect_success(Duration::from_secs(20));
    let intervals = records_of(&r_json, RecordType::Interval);
    let fps: Vec<f64> = intervals.iter().map(|r| r.fps).collect();
    eprintln!("viewer fps per interval: {fps:.1?}");
    // The first interval may start before the first frame, the last be cut short.
    let inner = &fps[1..fps.len().saturating_sub(1)];
    assert!(inner.len() >= 4, "too few intervals: {fps:?}");
    assert!(inner.iter().all(|&f| f >= 15.0), "the stream stalled during the scrapes: {fps:?}");
}

/// Scrapes every 100 ms while the source fails and is reopened (the test pattern made to fail
/// after 45 frames, away for 2 s, by a test-only variable): every scrape parses, counters
/// never go back, one scrape sees `framecast_source_lost 1`, and the losses are counted.
#[test]
fn scrapes_while_the_source_is_lost_and_reopened() {
    let test = "scrapes_while_the_source_is_lost_and_reopened";
    let _serial = common::serial();
    let Some(py) = python(test) else { return };
    let dir = scratch_dir("metrics-restart");
    let (nport, hport) = (free_port(), free_port());
    let _send = sender(nport, hport, &dir.join("S.jsonl"), Some("45:2"));
    let _recv = native_viewer(nport, 8, &dir.join("R.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut bodies = Vec::new();
    while Instant::now() < deadline {
        bodies.push(scrape(hport, false).body);
        thread::sleep(Duration::from_millis(100));
    }
    let scrapes = parse(&py, &dir, false, &bodies);
    let lost: Vec<f64> =
        scrapes.iter().map(|s| value(s, "framecast_source_lost", "framecast_source_lost", &[])).collect();
    let losses = |s: &Scrape| value(s, "framecast_source_losses", "framecast_source_losses_total", &[]);
    let captured = |s: &Scrape| value(s, "framecast_frames", "framecast_frames_total", &[("stage", "captured")]);
    eprintln!("{} scrapes; source_lost: {lost:?}", scrapes.len());
    assert!(lost.contains(&1.0) && lost.contains(&0.0), "no scrape saw the source lost, or none saw it back: {lost:?}");
    assert!(scrapes.last().is_some_and(|s| losses(s) >= 1.0), "the loss is not counted");
    for w in scrapes.windows(2) {
        assert!(captured(&w[1]) >= captured(&w[0]) && losses(&w[1]) >= losses(&w[0]), "a counter went back");
        histograms_consistent(&w[1]);
    }
}

/// A UDP viewer (`--transport udp`) behind `framecast netsim --udp` losing 5 % of the
/// packets: the UDP counters are there as counters, grow, and count the recovery (NACKs or
/// FEC), the viewer is counted under `kind="udp"`, and its own report's loss figures come
/// through as gauges.
#[test]
fn udp_counters_through_a_lossy_link() {
    let test = "udp_counters_through_a_lossy_link";
    let _serial = common::serial();
    let Some(py) = python(test) else { return };
    let dir = scratch_dir("metrics-udp");
    let (r_addr, n_addr, hport) =
        (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()), free_port());
    let h_addr = format!("127.0.0.1:{hport}");
    let recv_args = ["recv", "--transport", "udp", "--listen", &r_addr, "--headless", "--once", "--duration", "12"];
    let _recv = Proc::spawn("recv", &recv_args);
    let relay = Proc::spawn(
        "netsim",
        &["netsim", "--udp", "--listen", &n_addr, "--forward", &r_addr, "--rate", "30mbit", "--loss", "5%"],
    );
    assert!(relay.wait_for_stderr("netsim udp relay listening", Duration::from_secs(10)), "{}", relay.stderr());
    let send_args = [
        "send",
        "--transport",
        "udp",
        "--connect",
        &n_addr,
        "--http",
        &h_addr,
        "--size",
        "640x480",
        "--duration",
        "12",
    ];
    let _send = Proc::spawn("send", &send_args);
    drop(connect_retry(hport, Duration::from_secs(10)));
    let media =
        |s: &Scrape| value(s, "framecast_udp_sent_bytes", "framecast_udp_sent_bytes_total", &[("kind", "media")]);
    let recovered = |s: &Scrape| {
        value(s, "framecast_udp_retransmitted_packets", "framecast_udp_retransmitted_packets_total", &[])
            + value(s, "framecast_udp_fec_recovered_packets", "framecast_udp_fec_recovered_packets_total", &[])
    };
    let ready = |s: &Scrape| {
        value(s, "framecast_viewers", "framecast_viewers", &[("kind", "udp")]) >= 1.0
            && recovered(s) > 0.0
            && s.contains_key("framecast_viewer_packets_lost")
    };
    let first = wait_for(&py, &dir, hport, Duration::from_secs(10), ready);
    assert!(ready(&first), "no UDP viewer, no recovery counted, or no viewer report in /metrics: {first:?}");
    thread::sleep(Duration::from_secs(1));
    let second = parse(&py, &dir, true, &[scrape(hport, true).body]).remove(0);
    for s in [&first, &second] {
        for name in [
            "framecast_udp_packets_lost",
            "framecast_udp_fec_recovered_packets",
            "framecast_udp_retransmitted_packets",
            "framecast_udp_ignored_datagrams",
            "framecast_udp_sent_bytes",
        ] {
            assert_eq!(s.get(name).map(|f| f.kind.as_str()), Some("counter"), "{name}");
        }
        for name in ["framecast_viewer_frames_lost", "framecast_viewer_late_frames", "framecast_viewer_packets_lost"] {
            assert_eq!(s.get(name).map(|f| f.kind.as_str()), Some("gauge"), "{name}");
        }
        histograms_consistent(s);
    }
    eprintln!(
        "udp media bytes {} -> {}, recovered packets {} -> {}",
        media(&first),
        media(&second),
        recovered(&first),
        recovered(&second)
    );
    assert!(media(&second) > media(&first), "UDP media bytes did not grow");
    assert!(recovered(&second) >= recovered(&first), "a counter went back");
}
