//! Latency measurement end to end, with real `framecast` processes on 127.0.0.1: clock sync
//! against a sender whose clock is skewed (the `FRAMECAST_TEST_CLOCK_SKEW` hook), the offset
//! measured between two processes that share a clock, the viewer's reports in the sender's
//! log, `framecast report` over both logs, and how dropped frames are accounted for.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{records_of, scratch_dir, summary, Proc};
use framecast::stats::{ClockSource, ClockStatus, DropCause, RecordType, Report, Side, Stage};

const EXIT: Duration = Duration::from_secs(25);

/// The test hook that skews one process's clock (see `framecast::clock`).
const SKEW_ENV: &str = "FRAMECAST_TEST_CLOCK_SKEW";

/// One sender→receiver run: the receiver listens (`--once`, so a dropped frame cannot leave
/// it waiting for the next sender), the sender connects. Both must exit 0.
struct Run {
    recv_json: PathBuf,
    send_json: PathBuf,
    recv_log: String,
    send_log: String,
}

fn stream(
    dir: &Path,
    tag: &str,
    recv_extra: &[&str],
    send_extra: &[&str],
    sender_skew: Option<&str>,
    sender_delay: Duration,
) -> Run {
    let recv_json = dir.join(format!("R{tag}.jsonl"));
    let send_json = dir.join(format!("S{tag}.jsonl"));
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut recv_args =
        vec!["recv", "--listen", &addr, "--headless", "--once", "--stats-json", recv_json.to_str().unwrap()];
    recv_args.extend_from_slice(recv_extra);
    let mut recv = Proc::spawn(&format!("recv{tag}"), &recv_args);
    std::thread::sleep(sender_delay);
    let mut send_args = vec!["send", "--connect", &addr, "--once", "--stats-json", send_json.to_str().unwrap()];
    send_args.extend_from_slice(send_extra);
    let mut send = Proc::spawn_with(&format!("send{tag}"), &send_args, |c| {
        match sender_skew {
            Some(s) => c.env(SKEW_ENV, s),
            None => c.env_remove(SKEW_ENV),
        };
    });
    send.expect_success(EXIT);
    recv.expect_success(Duration::from_secs(5));
    Run { recv_json, send_json, recv_log: recv.stderr(), send_log: send.stderr() }
}

fn p50(r: &Report, stage: Stage) -> f64 {
    r.latency(stage).unwrap_or_else(|| panic!("no {} in {r:?}", stage.key())).p50
}

fn clock(r: &Report) -> ClockStatus {
    r.clock.unwrap_or_else(|| panic!("no clock in {r:?}"))
}

/// A sender whose clock runs an hour ahead and 100 ppm fast: the receiver syncs to it over
/// the reverse channel, and the latency it then reports matches a same-clock run.
#[test]
fn skewed_sender_clock_is_synced() {
    let _serial = common::serial();
    let dir = scratch_dir("latency-skew");
    let frames = ["--frames", "150"];
    let send_args = ["--size", "640x480", "--frames", "150"];
    let skewed = stream(&dir, "1", &frames, &send_args, Some("3600,100"), Duration::ZERO);
    let shared = stream(&dir, "2", &frames, &send_args, None, Duration::ZERO);

    let r1 = summary(&skewed.recv_json);
    let r2 = summary(&shared.recv_json);
    assert!(skewed.recv_log.contains("same_clock=false"), "the skewed sender's clock was taken as shared");
    assert!(shared.recv_log.contains("same_clock=true"), "the unskewed sender's clock was not taken as shared");

    // Run 1: synced, an hour ahead (plus 100 ppm of the ~5 s since the sender started: < 1 ms).
    let c1 = clock(&r1);
    assert_eq!(c1.source, ClockSource::Synced, "run 1 clock: {c1:?}");
    let offset = c1.offset_ms.unwrap_or_else(|| panic!("run 1: no offset: {c1:?}"));
    eprintln!("run 1: sender clock offset {offset:.3} ms (want 3600000 ± 50), clock {c1:?}");
    assert!((offset - 3_600_000.0).abs() < 50.0, "run 1 offset {offset} ms, want 3600000 ± 50");
    assert!(c1.exchanges >= 1, "run 1 clock: {c1:?}");
    assert!(skewed.recv_log.contains("clock synced with the sender"), "run 1 receiver never logged the sync");

    // Run 2: one host, one clock.
    assert_eq!(clock(&r2).source, ClockSource::Shared, "run 2 clock: {:?}", r2.clock);

    // The latency is known in run 1, and the same as with a shared clock.
    for stage in [Stage::CaptureDecoded, Stage::CaptureReceived] {
        let key = stage.key();
        let (a, b) = (p50(&r1, stage), p50(&r2, stage));
        eprintln!("{key} p50: skewed+synced {a:.3} ms, shared {b:.3} ms, difference {:.3} ms", a - b);
        assert!(a > 0.0 && a < 1000.0, "run 1 {key} p50 {a} ms is implausible");
        assert!((a - b).abs() <= 2.0, "{key} p50: synced run {a} ms vs shared run {b} ms differ by more than 2 ms");
    }

    // Cause before effect: a frame is received after it was sent, and "sent" is on the sender's
    // clock alone, so on the synced clock capture->received must not come out below
    // capture->sent by more than the sync error: the offset's uncertainty plus the drift the
    // estimate does not model over the run (100 ppm; no drift fit before 20 s of exchanges).
    // A sync applied with the wrong sign puts capture in the future and every latency at the
    // 1 µs floor, which the 2 ms comparison above cannot tell at this frame size.
    let sent = p50(&r1, Stage::CaptureSent);
    let rcvd = p50(&r1, Stage::CaptureReceived);
    let uncertainty = c1.uncertainty_ms.unwrap_or_else(|| panic!("run 1: no uncertainty: {c1:?}"));
    let slack = uncertainty + 100e-6 * r1.seconds * 1000.0 + 0.1;
    eprintln!("run 1: capture->sent p50 {sent:.3} ms, capture->received p50 {rcvd:.3} ms (slack {slack:.3} ms)");
    assert!(rcvd > 0.01, "run 1: capture->received p50 {rcvd} ms is at the floor: capture times in the future?");
    assert!(
        rcvd >= sent - slack,
        "run 1: capture->received p50 {rcvd} ms is before capture->sent p50 {sent} ms (slack {slack:.3} ms)"
    );

    // The receiver pings at once when the sender connects, and the pong comes back on the
    // connection the frames arrive on: only the frames read before the first pong have no
    // latency. Latency must become known and stay known to the end of the run.
    let unknown = r1.latency_unknown_frames.expect("latency_unknown_frames");
    let received = r1.received.expect("received");
    eprintln!("run 1: {unknown} of {received} frames before the clock was known");
    assert!(received >= 100, "run 1 received only {received} frames");
    assert!(unknown < 30, "run 1: {unknown} frames with unknown latency; the clock should be known within 1 s");
    assert_eq!(r2.latency_unknown_frames, Some(0), "run 2 (shared clock) has frames of unknown latency");
    let intervals = records_of(&skewed.recv_json, RecordType::Interval);
    let last_with_frames = intervals
        .iter()
        .rev()
        .find(|v| v.received.expect("received") > 0)
        .unwrap_or_else(|| panic!("run 1: no receiver interval with frames"));
    assert!(
        last_with_frames.latency_capture_decoded_ms.is_some() && last_with_frames.latency_unknown_frames == Some(0),
        "run 1: latency unknown in the last interval with frames: {last_with_frames:?}"
    );
}

/// Two processes on one host share the monotonic clock; the exchanges measure its offset
/// anyway, and it must come out near zero.
#[test]
fn same_host_offset_converges_near_zero() {
    let _serial = common::serial();
    let dir = scratch_dir("latency-zero");
    let run = stream(&dir, "", &[], &["--size", "320x240", "--duration", "5"], None, Duration::ZERO);
    let r = summary(&run.recv_json);
    let c = clock(&r);
    assert_eq!(c.source, ClockSource::Shared, "clock: {c:?}");
    let offset = c.offset_ms.unwrap_or_else(|| panic!("no measured offset: {c:?}"));
    let exchanges = c.exchanges;
    eprintln!(
        "same host: offset {offset:.3} ms ± {} ms after {exchanges} exchanges",
        c.uncertainty_ms.unwrap_or(f64::NAN)
    );
    assert!(offset.abs() <= 0.5, "same-host clock offset {offset} ms, want within 0.5 ms of 0");
    // A burst of 5 at connect, then one a second for ~5 s.
    assert!(exchanges >= 5, "only {exchanges} clock exchanges in a 5 s run");
    assert_receiver_accounting(&r);
    assert_latency_present_iff_frames(&run.recv_json);
}

/// The viewer sends its interval reports back; the sender's log carries them.
#[test]
fn sender_log_shows_what_the_viewer_saw() {
    let _serial = common::serial();
    let dir = scratch_dir("latency-viewer");
    let run = stream(&dir, "", &[], &["--size", "320x240", "--duration", "3.5"], None, Duration::ZERO);
    let lines = records_of(&run.send_json, RecordType::Interval);
    assert!(lines.iter().all(|v| v.role == Side::Sender), "sender log has other roles");
    let viewers: Vec<&Report> = lines.iter().filter_map(|v| v.viewer.as_deref()).collect();
    eprintln!("{} of {} sender intervals carry a viewer report", viewers.len(), lines.len());
    let good = viewers.iter().find(|w| w.role == Side::Receiver && w.fps > 20.0 && w.end_to_end().is_some());
    let good = good.unwrap_or_else(|| {
        panic!("no sender interval with a receiver report of > 20 fps and a latency; sender intervals: {lines:#?}")
    });
    eprintln!("viewer as the sender logged it: {good:?}");
    assert!(run.send_log.contains("| viewer"), "the sender's human stats lines do not mention the viewer");
    assert_receiver_accounting(&summary(&run.recv_json));
}

/// `framecast report` reads a sender's and a receiver's log, prints a row for each and their
/// latency stages, plots an SVG, and names the file and line of a bad record.
#[test]
fn report_command_reads_both_logs() {
    let _serial = common::serial();
    let dir = scratch_dir("latency-report");
    let run = stream(&dir, "", &[], &["--size", "320x240", "--frames", "60"], None, Duration::ZERO);
    let svg = dir.join("OUT.svg");
    let mut report = Proc::spawn(
        "report",
        &["report", run.send_json.to_str().unwrap(), run.recv_json.to_str().unwrap(), "--svg", svg.to_str().unwrap()],
    );
    report.expect_success(Duration::from_secs(20));
    let out = report.stdout();
    eprintln!("report:\n{out}");
    let row = |label: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(label) && l[label.len()..].starts_with(char::is_whitespace))
            .unwrap_or_else(|| panic!("no row {label:?} in the report:\n{out}"))[label.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // Columns after the label: seconds, frames, fps, ...
    let (s, r) = (row("S sender"), row("R receiver"));
    assert_eq!(s[1], "60", "sender row frames: {s:?}");
    assert_eq!(r[1], "60", "receiver row frames: {r:?}");
    for stage in ["capture->decoded", "capture->displayed"] {
        assert!(
            out.lines().any(|l| l.starts_with("R receiver") && l.contains(stage)),
            "no {stage} row for the receiver:\n{out}"
        );
    }
    let text = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("no {}: {e}", svg.display()));
    assert!(text.starts_with("<svg"), "{} does not start with <svg: {:?}", svg.display(), &text[..text.len().min(80)]);

    // A log with a line that is not JSON: an error naming file:line, exit non-zero.
    let good = std::fs::read_to_string(&run.recv_json).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(1, "this is not JSON");
    let bad = dir.join("BAD.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let mut report = Proc::spawn("report-bad", &["report", bad.to_str().unwrap()]);
    let st = report.wait(Duration::from_secs(20));
    let err = report.stderr();
    assert!(!st.success(), "report on a bad log exited 0; stdout:\n{}", report.stdout());
    assert!(err.contains("BAD.jsonl:2"), "the error does not name BAD.jsonl:2:\n{err}");
}

/// Asserts the frame accounting of a receiver summary from a stream the sender ended (so
/// every queue drained): each received frame was decoded or dropped by exactly one cause, and
/// each decoded frame shown or dropped as display_busy. Returns (decoder_busy, display_busy).
fn assert_receiver_accounting(r: &Report) -> (u64, u64) {
    let d = |cause| r.dropped(cause);
    let (received, decoded, displayed) = (r.received.expect("received"), r.frames, r.displayed.expect("displayed"));
    let (decoder_busy, display_busy, corrupt) =
        (d(DropCause::DecoderBusy), d(DropCause::DisplayBusy), d(DropCause::CorruptJpeg));
    let listed: u64 = r.drops.values().sum();
    assert_eq!(r.drops_total, listed, "drops_total is not the sum of drops: {:?}", r.drops);
    assert_eq!(
        received,
        decoded + decoder_busy + corrupt,
        "received {received} != decoded {decoded} + decoder_busy {decoder_busy} + corrupt_jpeg {corrupt}"
    );
    assert_eq!(
        decoded,
        displayed + display_busy,
        "decoded {decoded} != displayed {displayed} + display_busy {display_busy}"
    );
    (decoder_busy, display_busy)
}

/// Per interval of a shared-clock receiver log: each latency histogram is present exactly
/// when its stage counted frames in that interval. Returns (idle, busy) interval counts.
fn assert_latency_present_iff_frames(path: &Path) -> (usize, usize) {
    let (mut idle, mut busy) = (0, 0);
    for v in records_of(path, RecordType::Interval) {
        let has = |stage| v.latency(stage).is_some();
        let (rx, dec, shown) = (v.received.expect("received"), v.frames, v.displayed.expect("displayed"));
        if rx + dec + shown == 0 {
            idle += 1;
        } else {
            busy += 1;
        }
        assert_eq!(v.latency_unknown_frames, Some(0), "shared clock, yet frames of unknown latency: {v:?}");
        assert_eq!(has(Stage::CaptureEncoded), rx > 0, "capture->encoded vs received in {v:?}");
        assert_eq!(has(Stage::CaptureReceived), rx > 0, "capture->received vs received in {v:?}");
        assert_eq!(has(Stage::CaptureDecoded), dec > 0, "capture->decoded vs decoded in {v:?}");
        assert_eq!(has(Stage::CaptureDisplayed), shown > 0, "capture->displayed vs displayed in {v:?}");
    }
    (idle, busy)
}

/// Frames dropped on the way are counted by cause, and only frames that reached a stage are
/// in its counts and latency histogram.
///
/// A fake sender (the library's wire types) announces a live 30 fps stream and then bursts
/// pre-encoded 1920x1080 frames (20 at a time, 50 ms apart) far faster than the receiver
/// decodes them, with a few corrupt JPEGs among them, so decoder_busy drops happen on every
/// run. (`send --fps 0` cannot be used for this: it announces fps 0, which the receiver treats
/// as lossless, decoding every frame and dropping none.) The JSON exposes no histogram
/// counts, so this checks (a) the summary's frame accounting, exact when the sender ends the
/// stream, and (b) per interval, that a latency histogram is present exactly when frames went
/// through its stage, with idle intervals (before the sender connects) on the "absent" side.
#[test]
fn dropped_frames_are_counted_not_folded_into_latency() {
    use framecast::clock::clock_id;
    use framecast::format::Subsampling;
    use framecast::net::{FrameHeader, Hello, Message, MessageReader, MessageWriter, Role, StreamInfo};
    use framecast::testutil::{live_header, pattern_jpeg};

    const FRAMES: u64 = 400;
    const CORRUPT_EVERY: u64 = 40;
    const QUALITY: u8 = 20;
    let _serial = common::serial();
    let dir = scratch_dir("latency-drops");
    let json = dir.join("R.jsonl");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--listen",
            &addr,
            "--headless",
            "--once",
            "--stats-interval",
            "0.25",
            "--stats-json",
            json.to_str().unwrap(),
        ],
    );

    let (w, h) = (1920u32, 1080u32);
    let jpegs: Vec<Vec<u8>> =
        (0..4u64).map(|seq| pattern_jpeg(w, h, Subsampling::S420, QUALITY, seq).expect("encode the pattern")).collect();
    eprintln!("JPEG sizes at {w}x{h} q{QUALITY}: {:?}", jpegs.iter().map(Vec::len).collect::<Vec<_>>());
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();

    // Idle intervals first: connect after a few stats intervals.
    std::thread::sleep(Duration::from_millis(700));
    let mut stream = common::connect_retry(port, Duration::from_secs(10));
    stream.set_nodelay(true).unwrap();
    let mut reader = MessageReader::new(stream.try_clone().unwrap());
    let mut writer = MessageWriter::new(stream.try_clone().unwrap());
    writer.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
    let hello = reader.read_hello(Role::Receiver, Duration::from_secs(5)).expect("recv's hello");
    assert_eq!(hello.clock_id, clock_id(), "same host, same clock id");
    drop(reader);
    // A live stream (fps > 0): newest frame wins. (--fps 0 asks for lossless delivery.)
    let info = StreamInfo { width: w, height: h, fps_milli: 30_000 };
    writer.write_message(&Message::StreamInfo(info)).unwrap();
    // Bursts of 20 frames every 50 ms: ~1 s, about 400 frames/s against ~3 ms per decode.
    for seq in 0..FRAMES {
        let jpeg = if seq % CORRUPT_EVERY == CORRUPT_EVERY / 2 { &garbage } else { &jpegs[(seq % 4) as usize] };
        let header = FrameHeader { quality: QUALITY, ..live_header(seq, info, jpeg.len()) };
        writer.write_frame(&header, jpeg).unwrap_or_else(|e| panic!("writing frame {seq}: {e}"));
        if seq % 20 == 19 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // End the stream, then read (and ignore) acks, pings and reports until recv closes: closing
    // with them unread would reset the connection and could discard frames recv had not read.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    common::read_until_closed(&mut stream, Duration::from_secs(10));
    recv.expect_success(Duration::from_secs(10));
    drop(writer);

    let r = summary(&json);
    let received = r.received.expect("received");
    eprintln!(
        "receiver: received {received} decoded {} displayed {:?} drops {:?} seq_gaps {:?}",
        r.frames, r.displayed, r.drops, r.seq_gaps
    );
    assert_eq!(received, FRAMES, "TCP delivers every frame written, and recv reads to the end");
    assert_eq!(r.seq_gaps, Some(0), "no gaps were sent");
    assert_eq!(r.out_of_order, Some(0), "nothing was sent out of order");
    let (decoder_busy, display_busy) = assert_receiver_accounting(&r);
    assert!(decoder_busy > 0, "a burst at ~400 frames/s of {w}x{h} caused no decoder_busy drops: {:?}", r.drops);
    eprintln!("decoder_busy {decoder_busy}, display_busy {display_busy}");
    assert_eq!(r.latency_unknown_frames, Some(0), "shared clock, yet frames of unknown latency");
    for stage in [Stage::CaptureReceived, Stage::CaptureDecoded, Stage::CaptureDisplayed] {
        assert!(r.latency(stage).is_some(), "no {} in the summary: {r:?}", stage.key());
    }

    let (idle, busy) = assert_latency_present_iff_frames(&json);
    eprintln!("{idle} idle and {busy} busy receiver intervals");
    assert!(idle >= 1 && busy >= 1, "want idle and busy intervals to check both ways: {idle} idle, {busy} busy");
}
