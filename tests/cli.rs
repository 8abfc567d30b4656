//! Command-line behaviour of the `framecast` binary: bad flags are clear errors (never panics),
//! `cameras` copes with no camera, a Y4M file can be streamed, and `demo --stats-json` writes
//! both sides to one file that `report` reads.

mod common;

use std::io::Write;
use std::time::Duration;

use assert_cmd::Command;
use common::{free_port, scratch_dir, summary, Proc, BIN};
use framecast::capture::pattern::TestPattern;
use framecast::format::Subsampling;
use framecast::testutil::psnr;
use framecast::view::read_ppm;

const TIMEOUT: Duration = Duration::from_secs(15);

fn framecast() -> Command {
    let mut c = Command::new(BIN);
    c.env("NO_COLOR", "1").env("RUST_LOG", "info").timeout(TIMEOUT);
    c
}

/// Runs `framecast ARGS`, expects a non-zero exit without a panic, and returns stderr.
fn fails(args: &[&str]) -> String {
    let out = framecast().args(args).output().expect("run framecast");
    let stderr = common::strip_ansi(&String::from_utf8_lossy(&out.stderr));
    eprintln!("framecast {}: {} | {}", args.join(" "), out.status, stderr.trim().replace('\n', " / "));
    assert!(!out.status.success(), "framecast {args:?} succeeded; stderr:\n{stderr}");
    assert!(out.status.code().is_some(), "framecast {args:?} was killed (timeout?); stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "framecast {args:?} panicked:\n{stderr}");
    stderr
}

#[test]
fn bad_send_flags_name_the_flag_and_what_is_allowed() {
    // Each command names a port nobody listens on and one frame, so that a value accepted by
    // mistake still ends quickly (and with a message that does not contain the expected text).
    let connect = format!("127.0.0.1:{}", free_port());
    for (extra, needles) in [
        (&["--quality", "0"][..], &["--quality", "1..=100"][..]),
        (&["--quality", "101"], &["--quality", "1..=100"]),
        (&["--size", "0x0"], &["--size", "WIDTHxHEIGHT"]),
        (&["--size", "abc"], &["--size", "WIDTHxHEIGHT"]),
        (&["--source", "webcam"], &["--source", "'test'", "'camera'", "'-' (standard input)", "http://"]),
        (&["--source", "/no/such.y4m"], &["--source", "/no/such.y4m", "no such file"]),
        (&["--size", "641x480"], &["--size 641x480", "even"]),
    ] {
        let mut args = vec!["send", "--connect", &connect, "--once", "--frames", "1"];
        args.extend_from_slice(extra);
        let stderr = fails(&args);
        for n in needles {
            assert!(stderr.contains(n), "framecast {args:?}: stderr does not mention {n:?}:\n{stderr}");
        }
    }
}

#[test]
fn recv_without_a_display_suggests_headless() {
    let out = framecast()
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args(["recv", "--listen", "127.0.0.1:0", "--frames", "1"])
        .output()
        .expect("run framecast");
    let stderr = common::strip_ansi(&String::from_utf8_lossy(&out.stderr));
    eprintln!("recv without display: {} | {}", out.status, stderr.trim());
    assert!(!out.status.success(), "recv without a display succeeded:\n{stderr}");
    assert!(out.status.code().is_some(), "recv was killed (timeout?):\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("--headless"), "no hint to use --headless:\n{stderr}");
    assert!(stderr.contains("display"), "does not say that the display is missing:\n{stderr}");
}

#[test]
fn cameras_without_a_camera() {
    let out = framecast().arg("cameras").output().expect("run framecast");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("cameras: {} | stdout {:?} | stderr {:?}", out.status, stdout.trim(), stderr.trim());
    assert!(out.status.success(), "cameras failed:\n{stderr}");
    assert!(stdout.contains("no cameras found"), "stdout: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Writes a YUV4MPEG2 4:2:0 file of the test pattern's frames 0..frames.
fn write_y4m(path: &std::path::Path, w: u32, h: u32, frames: u64) {
    let pattern = TestPattern::new(w, h, Subsampling::S420);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "YUV4MPEG2 W{w} H{h} F30:1 C420jpeg").unwrap();
    let mut planes = Vec::new();
    for seq in 0..frames {
        pattern.render(seq, &mut planes);
        assert_eq!(planes.len(), (w * h * 3 / 2) as usize);
        f.write_all(b"FRAME\n").unwrap();
        f.write_all(&planes).unwrap();
    }
    f.flush().unwrap();
}

/// A Y4M file is streamed whole to a headless receiver, and the frames survive the trip. The
/// receiver also stops when the sender leaves (`--once`), so a frame dropped under load makes
/// the counts below fail instead of leaving it waiting for a tenth frame.
#[test]
fn y4m_file_streams_to_a_headless_receiver() {
    let dir = scratch_dir("cli-y4m");
    let clip = dir.join("clip.y4m");
    write_y4m(&clip, 64, 48, 10);
    let (r_json, s_json, dumps) = (dir.join("R.jsonl"), dir.join("S.jsonl"), dir.join("dumps"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--listen",
            &addr,
            "--headless",
            "--once",
            "--frames",
            "10",
            "--stats-json",
            r_json.to_str().unwrap(),
            "--dump-dir",
            dumps.to_str().unwrap(),
            "--dump-every",
            "3",
        ],
    );
    let mut send = Proc::spawn(
        "send",
        &["send", "--connect", &addr, "--source", clip.to_str().unwrap(), "--stats-json", s_json.to_str().unwrap()],
    );
    recv.expect_success(TIMEOUT);
    send.expect_success(TIMEOUT);
    assert!(send.stderr().contains("source ended"), "sender did not reach the end of the file");
    let s = summary(&s_json);
    assert_eq!(s.frames, 10, "sender frames");
    let r = summary(&r_json);
    assert_eq!(r.frames, 10, "receiver frames");
    assert_eq!(r.drops_total, 0, "drops: {:?}", r.drops);

    let pattern = TestPattern::new(64, 48, Subsampling::S420);
    for seq in [0u64, 3, 6, 9] {
        let bytes = std::fs::read(dumps.join(format!("frame-{seq:08}.ppm"))).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap();
        assert_eq!((w, h), (64, 48));
        let db = psnr(rgb, &pattern.render_rgb(seq));
        eprintln!("y4m frame {seq}: PSNR {db:.2} dB");
        assert!(db >= 30.0, "y4m frame {seq}: PSNR {db:.2} dB < 30 dB");
    }
}

/// `demo --stats-json` puts both sides' records in one file: every line whole, valid JSON,
/// tagged by role, interval and summary records of both roles; `report` reads the file as two
/// runs. The sides' lines are written by two threads, so a torn or interleaved line would
/// fail to parse here.
#[test]
fn demo_stats_json_holds_both_roles_in_one_file() {
    let dir = scratch_dir("cli-demo-stats");
    let log = dir.join("demo.jsonl");
    let out = framecast()
        .args(["demo", "--headless", "--size", "320x240", "--fps", "60", "--duration", "2.6"])
        .arg("--stats-json")
        .arg(&log)
        .output()
        .expect("run framecast demo");
    let stderr = common::strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo failed:\n{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}: {line:?}", log.display(), i + 1));
        let (Some(role), Some(kind)) = (v["role"].as_str(), v["type"].as_str()) else {
            panic!("{}:{}: no role or type: {line}", log.display(), i + 1)
        };
        *counts.entry((role.to_string(), kind.to_string())).or_insert(0u32) += 1;
    }
    eprintln!("demo --stats-json records: {counts:?}");
    for role in ["sender", "receiver"] {
        let n = |kind: &str| counts.get(&(role.to_string(), kind.to_string())).copied().unwrap_or(0);
        assert!(n("interval") >= 1, "no {role} interval records: {counts:?}");
        assert_eq!(n("summary"), 1, "{role} summary records: {counts:?}");
    }
    assert_eq!(counts.len(), 4, "records other than interval/summary of sender/receiver: {counts:?}");

    let report = framecast().arg("report").arg(&log).output().expect("run framecast report");
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "report failed: {}", String::from_utf8_lossy(&report.stderr));
    assert!(table.contains("demo sender") && table.contains("demo receiver"), "report table:\n{table}");
}

/// `demo --stats-json` is the one-file form of `--send-stats-json`/`--recv-stats-json`: they
/// cannot be combined, and `--no-stats` excludes all three.
#[test]
fn demo_stats_json_excludes_the_per_side_files() {
    for (extra, other) in [
        (&["--send-stats-json", "s.jsonl"][..], "--send-stats-json"),
        (&["--recv-stats-json", "r.jsonl"], "--recv-stats-json"),
        (&["--no-stats"], "--no-stats"),
    ] {
        let mut args = vec!["demo", "--headless", "--frames", "1", "--stats-json", "both.jsonl"];
        args.extend_from_slice(extra);
        let stderr = fails(&args);
        assert!(stderr.contains("--stats-json") && stderr.contains(other), "{args:?}:\n{stderr}");
    }
}

/// `demo` takes both thread flags: 1920x1080 in slices on 2 threads each side, every frame
/// decoded, and the human summaries show each stage's CPU time beside its wall time.
#[test]
fn demo_slices_1080p_on_two_threads_each_side() {
    let dir = scratch_dir("cli-demo-slices");
    let log = dir.join("demo.jsonl");
    let out = framecast()
        .args(["demo", "--headless", "--size", "1920x1080", "--encode-threads", "2", "--decode-threads", "2"])
        .args(["--fps", "0", "--frames", "30", "--stats-json"])
        .arg(&log)
        .output()
        .expect("run framecast demo");
    let stderr = common::strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo failed:\n{stderr}");
    for stage in ["encode", "decode"] {
        let cpu = format!(", {stage} ");
        let line = stderr.lines().find(|l| l.contains("summary:") && l.contains(&cpu)).unwrap_or_default();
        assert!(line.contains(" ms (cpu "), "no {stage} CPU time in the summary: {line}\n{stderr}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let summaries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "summary")
        .collect();
    let by_role = |role: &str| summaries.iter().find(|v| v["role"] == role).cloned().unwrap_or_default();
    let (s, r) = (by_role("sender"), by_role("receiver"));
    assert!(s["encode_cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0), "sender summary: {s}");
    assert!(r["decode_cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0), "receiver summary: {r}");
    assert_eq!(r["frames"], 30, "receiver summary: {r}");
}

/// `--help` states the thread flags' default and what `auto` means, for each command that takes
/// them.
#[test]
fn thread_flags_state_their_default_in_help() {
    for (cmd, flags) in [
        ("send", &["--encode-threads"][..]),
        ("recv", &["--decode-threads"]),
        ("demo", &["--encode-threads", "--decode-threads"]),
    ] {
        let out = framecast().args([cmd, "--help"]).output().expect("run framecast --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd} --help failed");
        for flag in flags {
            let at =
                help.find(&format!("{flag} <N|auto>")).unwrap_or_else(|| panic!("{cmd} --help lacks {flag}:\n{help}"));
            let text = &help[at..help[at..].find("\n\n").map_or(help.len(), |n| at + n)];
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(text.contains("[default: auto]") && text.contains("1280x720"), "{cmd} {flag}: {text}");
        }
    }
}
