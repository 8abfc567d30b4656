//! End-to-end tests with real `framecast` processes talking over 127.0.0.1, plus fake peers
//! written with the library's wire-format types.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{connect_retry, free_port, read_until_closed, scratch_dir, summary, try_read_until_closed, Proc};
use framecast::capture::pattern::TestPattern;
use framecast::clock::clock_id;
use framecast::format::Subsampling;
use framecast::net::proto::HELLO_LEN;
use framecast::net::{Event, Hello, Message, MessageReader, MessageWriter, Role, StreamInfo};
use framecast::stats::{DropCause, Side};
use framecast::testutil::{live_header, pattern_jpeg, psnr};
use framecast::view::read_ppm;

const EXIT: Duration = Duration::from_secs(20);

/// send --connect -> recv --listen, 120 frames of 640x480: all arrive in order, none dropped,
/// latency is measured on the shared clock, and the dumped frames match the test pattern.
///
/// Newest-frame-wins is right for a live stream: when the whole machine stalls (seen in CI
/// with two test lanes: loopback ack RTT 200 ms), the sender drops frames for congestion, behind
/// a busy encoder or socket, or the viewer skips one behind a busy decoder, and the viewer then
/// never gets its 120. Such a run, and only such a run (every drop of a load cause, named in
/// the stats), is repeated, at most twice; any other shortfall fails at once, and so does a
/// third disturbed run.
#[test]
fn stream_120_frames_with_stats_and_dumps() {
    let _serial = common::serial();
    let t0 = Instant::now();
    let dir = scratch_dir("e2e-120");
    let mut disturbed = Vec::new();
    let (r_json, s_json, dumps, recv) = loop {
        match stream_120(&dir.join(format!("{}", disturbed.len() + 1))) {
            Ok(run) => break run,
            Err(why) if disturbed.len() < 2 => {
                eprintln!("run {} disturbed by load ({why}); running it again", disturbed.len() + 1);
                disturbed.push(why);
            }
            Err(why) => panic!("three runs disturbed by load: {disturbed:?}, {why}"),
        }
    };
    let r = summary(&r_json);
    assert_eq!(r.role, Side::Receiver);
    assert_eq!(r.frames, 120, "receiver frames");
    assert_eq!(r.received, Some(120), "receiver received");
    assert_eq!(r.seq_gaps, Some(0), "seq_gaps");
    assert_eq!(r.out_of_order, Some(0), "out_of_order");
    assert_eq!(r.drops_total, 0, "drops: {:?}", r.drops);
    let lat = r.latency_capture_decoded_ms;
    let lat = lat.unwrap_or_else(|| panic!("no capture->decoded latency although both ends share a clock: {r:?}"));
    let p50 = lat.p50;
    assert!(p50 > 0.0 && p50 < 1000.0, "implausible capture->decoded p50 {p50} ms");
    assert!(recv.stderr().contains("same_clock=true"), "recv did not detect the shared clock");

    let s = summary(&s_json);
    assert_eq!(s.role, Side::Sender);
    assert_eq!(s.frames, 120, "sender frames");

    // Every 10th frame was dumped, and each looks like the frame the sender rendered.
    let pattern = TestPattern::new(640, 480, Subsampling::S420);
    let mut names: Vec<String> =
        std::fs::read_dir(&dumps).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let want: Vec<String> = (0..120).step_by(10).map(|s| format!("frame-{s:08}.ppm")).collect();
    assert_eq!(names, want, "dumped files");
    let mut values = Vec::new();
    for seq in (0..120u64).step_by(10) {
        let bytes = std::fs::read(dumps.join(format!("frame-{seq:08}.ppm"))).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap_or_else(|| panic!("frame {seq}: not a PPM"));
        assert_eq!((w, h), (640, 480), "frame {seq} size");
        let db = psnr(rgb, &pattern.render_rgb(seq));
        // A frame from another sequence number would also be similar (bars), but much less so.
        let other = psnr(rgb, &pattern.render_rgb(seq + 5));
        eprintln!("frame {seq:3}: PSNR {db:.2} dB (vs frame {}: {other:.2} dB)", seq + 5);
        assert!(db >= 30.0, "frame {seq}: PSNR {db:.2} dB < 30 dB");
        assert!(db > other, "frame {seq} matches frame {} better than itself", seq + 5);
        values.push(db);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!("PSNR min {min:.2} dB over {} frames; test took {:.2} s", values.len(), t0.elapsed().as_secs_f64());
}

/// Drop causes that a stalled machine brings about (seen with ten busy loops on the two cores:
/// all four), as opposed to a fault of the stream.
const LOAD_DROPS: [&str; 4] = ["congestion", "decoder_busy", "encoder_busy", "socket_busy"];

/// One run of `stream_120_frames_with_stats_and_dumps` in `dir`: the receiver's and sender's
/// stats files, the dump directory and the receiver (exited 0); or, when the receiver did not
/// get its 120 frames and every drop in either side's summary has a load cause (`LOAD_DROPS`),
/// why. Any other failure panics.
fn stream_120(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf, Proc), String> {
    std::fs::create_dir_all(dir).unwrap();
    let dumps = dir.join("dumps");
    let (r_json, s_json) = (dir.join("R.jsonl"), dir.join("S.jsonl"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--listen",
            &addr,
            "--headless",
            "--frames",
            "120",
            "--stats-json",
            r_json.to_str().unwrap(),
            "--dump-dir",
            dumps.to_str().unwrap(),
            "--dump-every",
            "10",
        ],
    );
    let mut send = Proc::spawn(
        "send",
        &[
            "send",
            "--connect",
            &addr,
            "--once",
            "--size",
            "640x480",
            "--frames",
            "120",
            "--stats-json",
            s_json.to_str().unwrap(),
        ],
    );
    // The sender exits once the receiver has its 120 frames and closes; the receiver must be
    // done by then (if a frame was dropped it would wait for more, so do not wait long).
    send.expect_success(EXIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while recv.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if recv.is_running() {
        // Ctrl-C: the receiver writes its summary, which counts every drop (its last interval
        // line can be a second old, and a drop after it would be missed).
        recv.signal(libc::SIGINT).unwrap();
        recv.wait(Duration::from_secs(5));
        let log = recv.stderr();
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for path in [&s_json, &r_json] {
            for (cause, n) in summary(path).drops {
                *drops.entry(cause).or_default() += n;
            }
        }
        let load = !drops.is_empty() && drops.keys().all(|c| LOAD_DROPS.contains(&c.as_str()));
        if load {
            return Err(format!("drops {drops:?}"));
        }
        panic!("[recv] did not get its 120 frames within 5 s of the sender's exit (drops {drops:?}); stderr:\n{log}");
    }
    recv.expect_success(Duration::from_secs(1));
    Ok((r_json, s_json, dumps, recv))
}

/// A listening sender serves one viewer after another.
///
/// Each viewer's summary must count exactly `--frames` decoded frames; checked last, so that
/// the rest of the flow is exercised even when that count is off.
#[test]
fn listening_sender_serves_the_next_viewer() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-listen");
    let addr = format!("127.0.0.1:{}", free_port());
    // Killed when the guard drops at the end of the test.
    let send = Proc::spawn("send", &["send", "--listen", &addr, "--size", "320x240", "--duration", "20"]);
    let mut late = Vec::new();
    for i in 1..=2 {
        let json = dir.join(format!("R{i}.jsonl"));
        let mut recv = Proc::spawn(
            &format!("recv{i}"),
            &["recv", "--connect", &addr, "--headless", "--frames", "30", "--stats-json", json.to_str().unwrap()],
        );
        recv.expect_success(EXIT);
        let r = summary(&json);
        if r.frames != 30 {
            late.push(format!(
                "viewer {i}: summary says frames={} (received={:?}) for --frames 30",
                r.frames, r.received
            ));
        }
        assert!(
            send.wait_for_stderr_n("viewer left", i, Duration::from_secs(5)),
            "sender did not notice viewer {i} leave"
        );
    }
    assert!(late.is_empty(), "decoded frame count overshoots --frames: {late:?}");
}

/// `send --connect --once` with a lossless source (`--fps 0`): frames wait for the viewer it
/// calls, however late it starts listening, so every frame arrives and none counts as
/// `no_viewer`. And a viewer that never answers is an error once the patience has passed.
#[test]
fn a_once_sender_waits_for_a_late_viewer_and_loses_nothing() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-late-viewer");
    let (r_json, s_json) = (dir.join("R.jsonl"), dir.join("S.jsonl"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = s_json.to_str().unwrap();
    let args = ["send", "--connect", &addr, "--once", "--fps", "0", "--frames", "200", "--size", "160x120"];
    let mut send = Proc::spawn("send", &[&args[..], &["--stats-json", s]].concat());
    assert!(send.wait_for_stderr("cannot connect to the viewer; retrying", EXIT), "the sender never called");
    std::thread::sleep(Duration::from_millis(700));
    let r = r_json.to_str().unwrap();
    let mut recv = Proc::spawn("recv", &["recv", "--listen", &addr, "--once", "--headless", "--stats-json", r]);
    send.expect_success(EXIT);
    recv.expect_success(EXIT);
    let sent = summary(&s_json);
    // Every frame waited for the viewer (none is a `no_viewer` drop). A lossless stream can
    // still lose one frame to a rare race in the viewer's slot under load (`socket_busy`, seen
    // also in latency::report_command_reads_both_logs): allow that one, not more.
    assert_eq!(sent.dropped(DropCause::NoViewer), 0, "sender summary: {sent:?}");
    assert!(sent.frames >= 199, "{} of 200 frames sent: {sent:?}", sent.frames);
    let decoded = summary(&r_json).frames;
    assert!(decoded >= 199 && decoded <= sent.frames, "{decoded} frames decoded of {} sent", sent.frames);

    let closed = format!("127.0.0.1:{}", free_port());
    // The patience is 10 s.
    let mut alone = Proc::spawn("send-alone", &["send", "--connect", &closed, "--once", "--frames", "10"]);
    let status = alone.wait(EXIT);
    assert!(!status.success(), "a viewer that never answered is an error");
    assert!(alone.stderr().contains("cannot connect to"), "{}", alone.stderr());
}

fn recv_listening(name: &str, port: u16, frames: &str, json: &std::path::Path) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    Proc::spawn(
        name,
        &["recv", "--listen", &addr, "--headless", "--frames", frames, "--stats-json", json.to_str().unwrap()],
    )
}

/// Reads the receiver's hello from a raw connection.
fn read_peer_hello(stream: &mut TcpStream) -> [u8; HELLO_LEN] {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).expect("recv's hello");
    assert_eq!(&hello[..4], b"FCST", "recv's hello magic");
    hello
}

/// A real sender then streams to the same receiver until it has its 30 frames and exits. The
/// sender runs by duration, not frame count, so a frame dropped under load cannot leave the
/// receiver waiting; the exact count is `listening_sender_serves_the_next_viewer`'s job.
fn real_sender_streams_30_frames(port: u16, recv: &mut Proc, json: &std::path::Path) {
    let addr = format!("127.0.0.1:{port}");
    let mut send =
        Proc::spawn("send", &["send", "--connect", &addr, "--once", "--size", "320x240", "--duration", "10"]);
    recv.expect_success(EXIT);
    send.expect_success(EXIT);
    let r = summary(json);
    assert!(r.frames >= 30, "frames after the bad peer: {r:?}");
    assert!(send.stderr().contains("viewer closed the connection"), "sender did not see the viewer leave");
}

/// A peer that is not framecast (an HTTP request) is dropped with a logged reason, and the
/// receiver then serves a real sender.
#[test]
fn garbage_peer_is_dropped_and_recv_keeps_serving() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-garbage");
    let json = dir.join("R.jsonl");
    let port = free_port();
    let mut recv = recv_listening("recv", port, "30", &json);

    let mut s = connect_retry(port, Duration::from_secs(10));
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(got.len() <= HELLO_LEN, "recv sent more than its hello to a garbage peer: {got:02x?}");
    assert!(
        recv.wait_for_stderr("bad magic", Duration::from_secs(5)),
        "recv did not log the bad magic; stderr:\n{}",
        recv.stderr()
    );
    let log = recv.stderr();
    let line = log.lines().find(|l| l.contains("bad magic")).unwrap();
    eprintln!("recv logged: {line}");
    assert!(line.contains("WARN") || line.contains("ERROR"), "not logged as a warning: {line}");
    assert!(recv.is_running(), "recv exited after a garbage peer");

    real_sender_streams_30_frames(port, &mut recv, &json);
}

/// A peer that handshakes correctly and then declares a frame over the cap is dropped with a
/// "too large" message before anything is allocated, and the receiver keeps serving.
#[test]
fn oversized_frame_is_dropped_and_recv_keeps_serving() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-toolarge");
    let json = dir.join("R.jsonl");
    let port = free_port();
    let mut recv = recv_listening("recv", port, "30", &json);

    let mut s = connect_retry(port, Duration::from_secs(10));
    read_peer_hello(&mut s);
    let mut w = MessageWriter::new(s.try_clone().unwrap());
    w.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
    let info = StreamInfo { width: 64, height: 48, fps_milli: 30_000 };
    w.write_message(&Message::StreamInfo(info)).unwrap();
    // A frame message header (type 2) declaring 1 GB, and no body.
    let declared: u32 = 1_000_000_000;
    let mut head = vec![2u8, 0, 0, 0];
    head.extend_from_slice(&declared.to_be_bytes());
    s.write_all(&head).unwrap();
    s.flush().unwrap();
    assert!(
        recv.wait_for_stderr("over the cap", Duration::from_secs(5)),
        "recv did not log a too-large frame; stderr:\n{}",
        recv.stderr()
    );
    let log = recv.stderr();
    let line = log.lines().find(|l| l.contains("over the cap")).unwrap();
    eprintln!("recv logged: {line}");
    assert!(line.contains(&declared.to_string()), "message does not give the declared length: {line}");
    let cap = (64 * 48 * 6 + 2048 + 52).to_string();
    assert!(line.contains(&cap), "message does not give the cap {cap}: {line}");
    assert!(recv.is_running(), "recv exited after an oversized frame");
    // The dropped connection must be closed from recv's side (checked with a short timeout
    // here, asserted last so that the rest of the test runs either way).
    let closed = try_read_until_closed(&mut s, Duration::from_secs(2));

    real_sender_streams_30_frames(port, &mut recv, &json);
    if let Err(e) = closed {
        panic!("recv logged that it dropped the connection, but {e}: the socket was left open");
    }
}

/// The stream the fake sender announces: 64x48 at 30 fps.
const FAKE_INFO: StreamInfo = StreamInfo { width: 64, height: 48, fps_milli: 30_000 };

/// A well-formed frame whose JPEG is garbage is skipped and counted; the frames after it
/// decode. The fake sender is built from the library's wire types.
#[test]
fn corrupt_jpeg_is_skipped_and_counted() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-corrupt");
    let json = dir.join("R.jsonl");
    let port = free_port();
    let mut recv = recv_listening("recv", port, "5", &json);

    let stream = connect_retry(port, Duration::from_secs(10));
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut reader = MessageReader::new(stream.try_clone().unwrap());
    let mut writer = MessageWriter::new(stream.try_clone().unwrap());
    writer.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
    let hello = reader.read_hello(Role::Receiver, Duration::from_secs(5)).expect("recv's hello");
    assert_eq!(hello.clock_id, clock_id(), "same host, same clock id");
    writer.write_message(&Message::StreamInfo(FAKE_INFO)).unwrap();

    // Frame 0: valid framing, garbage JPEG.
    let garbage: Vec<u8> = (0..500u32).map(|i| (i * 7 + 3) as u8).collect();
    writer.write_frame(&live_header(0, FAKE_INFO, garbage.len()), &garbage).unwrap();
    assert!(
        recv.wait_for_stderr("cannot decode frame", Duration::from_secs(5)),
        "recv did not log the corrupt frame; stderr:\n{}",
        recv.stderr()
    );

    // Frames 1..=5: valid JPEGs, one at a time (each acknowledged before the next, so none is
    // replaced by a newer one in the receiver's newest-frame-wins queues).
    for seq in 1..=5u64 {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 75, seq).unwrap();
        writer.write_frame(&live_header(seq, FAKE_INFO, jpeg.len()), &jpeg).unwrap();
        if seq == 5 {
            break; // recv may exit before acknowledging its last frame
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no ack for frame {seq}");
            match reader.next_event().expect("connection to recv") {
                Event::Message(Message::Ack(a)) if a.seq == seq => break,
                Event::Eof => panic!("recv closed the connection before acknowledging frame {seq}"),
                _ => {}
            }
        }
    }
    recv.expect_success(EXIT);
    drop((reader, writer, stream));

    let r = summary(&json);
    assert_eq!(r.frames, 5, "decoded frames");
    assert_eq!(r.received, Some(6), "received frames");
    assert_eq!(r.dropped(DropCause::CorruptJpeg), 1, "corrupt_jpeg drops: {:?}", r.drops);
    assert_eq!(r.drops_total, 1, "drops: {:?}", r.drops);
    let log = recv.stderr();
    let line = log.lines().find(|l| l.contains("cannot decode frame")).unwrap();
    eprintln!("recv logged: {line}");
    assert!(line.contains("seq=0") && line.contains("skipped"), "log does not name the skipped frame: {line}");
}

/// The sliced stream the fake sender announces: 256x192 (12 MCU rows at 4:2:0) at 30 fps.
const SLICED_INFO: StreamInfo = StreamInfo { width: 256, height: 192, fps_milli: 30_000 };

/// A sliced frame of `SLICED_INFO`'s size: two slices, a restart marker every MCU row.
fn sliced_jpeg() -> Vec<u8> {
    let size = (SLICED_INFO.width, SLICED_INFO.height);
    framecast::testutil::restart_jpeg(size, Subsampling::S420, 75, 1, 2).unwrap()
}

/// Where each restart marker (0xFFD0..=0xFFD7) of `jpeg`'s scan starts.
fn restart_markers(jpeg: &[u8]) -> Vec<usize> {
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a SOS marker");
    (sos..jpeg.len() - 1).filter(|&i| jpeg[i] == 0xFF && (0xD0..=0xD7).contains(&jpeg[i + 1])).collect()
}

/// Sends frame `seq` and waits for the receiver to acknowledge it.
fn send_and_await_ack(
    writer: &mut MessageWriter<TcpStream>,
    reader: &mut MessageReader<TcpStream>,
    seq: u64,
    jpeg: &[u8],
) {
    writer.write_frame(&live_header(seq, SLICED_INFO, jpeg.len()), jpeg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no ack for frame {seq}");
        match reader.next_event().expect("connection to recv") {
            Event::Message(Message::Ack(a)) if a.seq == seq => return,
            Event::Eof => panic!("recv closed the connection before acknowledging frame {seq}"),
            _ => {}
        }
    }
}

/// `recv --decode-threads 2` gets a good sliced frame, one whose restart markers are numbered
/// wrong, one whose DRI does not match its markers, one whose last slice ends early, then good
/// ones: it shows the good ones, counts the bad ones as corrupt JPEGs with a clear error, and
/// keeps going.
#[test]
fn corrupt_sliced_frames_are_skipped_and_counted() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-corrupt-sliced");
    let json = dir.join("R.jsonl");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["recv", "--listen", &addr, "--headless", "--frames", "4", "--decode-threads", "2"];
    let mut recv = Proc::spawn("recv", &[&args[..], &["--stats-json", json.to_str().unwrap()]].concat());

    let good = sliced_jpeg();
    let rst = restart_markers(&good);
    assert_eq!(rst.len(), 11, "a restart marker between each of 12 MCU rows");
    // Frame 2: the second marker says RST3 where RST1 belongs.
    let mut misnumbered = good.clone();
    misnumbered[rst[1] + 1] = 0xD3;
    // Frame 3: the DRI says a marker every 2 MCU rows (32 MCUs) where they come every row.
    let dri = good.windows(6).position(|w| w == [0xFF, 0xDD, 0, 4, 0, 16]).expect("a DRI of 16 MCUs");
    let mut wrong_dri = good.clone();
    wrong_dri[dri + 5] = 32;
    // Frame 4: the scan stops after 8 of its 12 intervals, and the JPEG ends there.
    let mut cut = good[..rst[7]].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);

    let stream = connect_retry(port, Duration::from_secs(10));
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut reader = MessageReader::new(stream.try_clone().unwrap());
    let mut writer = MessageWriter::new(stream.try_clone().unwrap());
    writer.write_hello(&Hello::new(Role::Sender, clock_id())).unwrap();
    reader.read_hello(Role::Receiver, Duration::from_secs(5)).expect("recv's hello");
    writer.write_message(&Message::StreamInfo(SLICED_INFO)).unwrap();

    send_and_await_ack(&mut writer, &mut reader, 1, &good);
    for (n, (seq, bad)) in [(2u64, &misnumbered), (3, &wrong_dri), (4, &cut)].into_iter().enumerate() {
        writer.write_frame(&live_header(seq, SLICED_INFO, bad.len()), bad).unwrap();
        assert!(
            recv.wait_for_stderr_n("cannot decode frame", n + 1, Duration::from_secs(5)),
            "recv did not log corrupt frame {seq}; stderr:\n{}",
            recv.stderr()
        );
    }
    for seq in 5..=7u64 {
        if seq == 7 {
            // recv may exit before acknowledging its last frame.
            writer.write_frame(&live_header(seq, SLICED_INFO, good.len()), &good).unwrap();
            break;
        }
        send_and_await_ack(&mut writer, &mut reader, seq, &good);
    }
    recv.expect_success(EXIT);
    drop((reader, writer, stream));

    let r = summary(&json);
    assert_eq!(r.frames, 4, "decoded frames");
    assert_eq!(r.received, Some(7), "received frames");
    assert_eq!(r.dropped(DropCause::CorruptJpeg), 3, "corrupt_jpeg drops: {:?}", r.drops);
    assert_eq!(r.drops_total, 3, "drops: {:?}", r.drops);
    assert!(r.decode_cpu_ms.is_some_and(|ms| ms > 0.0), "no decode CPU time with 2 threads: {r:?}");
    // Each good frame is decoded in pieces unless the worker got no CPU before the caller's
    // own piece was done (then the caller decodes it all, and it does not count).
    assert!(r.decode_sliced_frames.is_some_and(|n| n <= 4), "sliced frames of 4 decoded: {r:?}");
    let log = recv.stderr();
    assert!(log.contains("decode threads per frame") && log.contains("threads=2"), "recv did not slice:\n{log}");
    let line = |seq: u64| {
        let tag = format!("seq={seq} ");
        log.lines().find(|l| l.contains("cannot decode frame") && l.contains(&tag)).unwrap_or_default().to_string()
    };
    eprintln!("recv logged:\n{}\n{}\n{}", line(2), line(3), line(4));
    for (seq, says) in [(2, "expected RST1, got RST3"), (3, "a DRI of 32 MCUs"), (4, "a slice ended early")] {
        assert!(line(seq).contains(says), "frame {seq}'s error does not say {says:?}: {}", line(seq));
    }
}

/// Streams 30 frames of 1920x1080 with `threads` threads on each side (`--fps 0`: every frame
/// arrives), dumping frames 0, 10 and 20 to `dumps`. Returns the sender's and the receiver's
/// summaries and stderr.
fn stream_1080p(threads: &str, dir: &std::path::Path) -> [(framecast::stats::Report, String); 2] {
    std::fs::create_dir_all(dir).unwrap();
    let (r_json, s_json, dumps) = (dir.join("R.jsonl"), dir.join("S.jsonl"), dir.join("dumps"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut recv = Proc::spawn(
        "recv",
        &[
            "recv",
            "--listen",
            &addr,
            "--headless",
            "--frames",
            "30",
            "--decode-threads",
            threads,
            "--dump-dir",
            dumps.to_str().unwrap(),
            "--dump-every",
            "10",
            "--stats-json",
            r_json.to_str().unwrap(),
        ],
    );
    let mut send = Proc::spawn(
        "send",
        &[
            "send",
            "--connect",
            &addr,
            "--once",
            "--size",
            "1920x1080",
            "--fps",
            "0",
            "--frames",
            "30",
            "--encode-threads",
            threads,
            "--stats-json",
            s_json.to_str().unwrap(),
        ],
    );
    send.expect_success(EXIT);
    recv.expect_success(Duration::from_secs(10));
    [(summary(&s_json), send.stderr()), (summary(&r_json), recv.stderr())]
}

/// 1920x1080 in slices on 2 threads each side shows the pictures a 1-thread stream shows: equal
/// but for the rows beside a slice boundary, where the decoder's smooth chroma upsampling lacks
/// its neighbour row. The sliced run reports its CPU time; the plain one does not.
#[test]
fn sliced_1080p_stream_shows_what_one_thread_shows() {
    let _serial = common::serial();
    let dir = scratch_dir("e2e-sliced");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let [(s1, _), (r1, _)] = stream_1080p("1", &one);
    let [(s2, send_log), (r2, recv_log)] = stream_1080p("2", &two);
    for (s, r) in [(&s1, &r1), (&s2, &r2)] {
        assert_eq!((s.frames, r.frames, r.drops_total), (30, 30, 0), "sender {s:?}\nreceiver {r:?}");
    }
    assert!(s1.encode_cpu_ms.is_none() && r1.decode_cpu_ms.is_none(), "1 thread: CPU time shown");
    assert!(s1.encode_sliced_frames.is_none() && r1.decode_sliced_frames.is_none(), "1 thread: slices counted");
    let (enc_cpu, dec_cpu) = (s2.encode_cpu_ms.unwrap_or(0.0), r2.decode_cpu_ms.unwrap_or(0.0));
    assert!(enc_cpu > 0.0 && dec_cpu > 0.0, "2 threads: no CPU time: {s2:?}\n{r2:?}");
    // Counted with 2 threads (how many depends on the load: at --fps 0 slices may stop
    // paying, and a frame whose worker got no CPU in time is coded by one thread).
    for n in [s2.encode_sliced_frames, r2.decode_sliced_frames] {
        assert!(n.is_some_and(|n| n <= 30), "sliced frames of 30: {n:?}\n{s2:?}\n{r2:?}");
    }
    eprintln!("sliced frames: encode {:?}, decode {:?}", s2.encode_sliced_frames, r2.decode_sliced_frames);
    eprintln!(
        "1 thread: encode {:?} ms, decode {:?} ms; 2 threads: encode {:?} ms (cpu {enc_cpu}), decode {:?} ms (cpu {dec_cpu})",
        s1.encode_ms, r1.decode_ms, s2.encode_ms, r2.decode_ms
    );
    for (log, stage) in [(&send_log, "encode"), (&recv_log, "decode")] {
        let said = log.lines().any(|l| l.contains(&format!("{stage} threads per frame")) && l.contains("threads=2"));
        assert!(said, "the {stage} stage did not run on 2 threads:\n{log}");
    }
    for seq in [0u64, 10, 20] {
        let name = format!("frame-{seq:08}.ppm");
        let (a, b) = (std::fs::read(one.join("dumps").join(&name)), std::fs::read(two.join("dumps").join(&name)));
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("1 thread, {name}: {e}")),
            b.unwrap_or_else(|e| panic!("2 threads, {name}: {e}")),
        );
        let (Some((w1, h1, p1)), Some((w2, h2, p2))) = (read_ppm(&a), read_ppm(&b)) else {
            panic!("{name}: not a PPM")
        };
        assert_eq!((w1, h1, w2, h2), (1920, 1080, 1920, 1080), "{name} size");
        let db = psnr(p1, p2);
        let max = p1.iter().zip(p2).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        let rows: Vec<usize> = (0..1080)
            .filter(|r| p1[r * 1920 * 3..(r + 1) * 1920 * 3] != p2[r * 1920 * 3..(r + 1) * 1920 * 3])
            .collect();
        eprintln!("{name}: 2 threads vs 1: PSNR {db:.2} dB, largest difference {max}, rows that differ {rows:?}");
        assert!(db >= 50.0, "{name}: PSNR {db:.2} dB < 50 dB");
        // Slices end on MCU rows (16 pixel rows at 4:2:0): only rows beside one may differ.
        assert!(rows.iter().all(|r| (r + 2) % 16 <= 3), "{name}: rows away from a slice boundary differ: {rows:?}");
    }
}
