//! `send --publish rtsp://...`: framecast as an RTSP client that ANNOUNCEs and RECORDs into a
//! media server, here gst-rtsp-server in record mode (`tests/support/gst_rtsp.py record`,
//! which takes RECORD the way MediaMTX does and writes every frame it depayloads to a file).
//!
//! Checked on what the server wrote, not on what framecast says it sent: the number of frames,
//! their size, and their pixels against the test pattern (PSNR, each frame matched to the
//! pattern frame it shows, in increasing order). Also: frames wider than RFC 2435's 2040 px
//! (size from the SDP's `a=x-dimensions`), reconnecting when the server goes away and comes
//! back, credentials in the URL (and a clear error for a wrong password), bad URLs refused
//! at the command line.
//!
//! gst-rtsp-server does not serve what it records to readers by itself: `gst_rtsp.py record
//! --relay-path /view` hands each frame it depayloads to an `appsrc ! rtpjpegpay` media at
//! `/view`, which ffmpeg reads back, as it would read a published stream from MediaMTX.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::tools::{require_tools, run_tool, skip};
use common::{free_port, records_of, scratch_dir, summary, Proc};
use framecast::capture::pattern::TestPattern;
use framecast::codec::Decoder;
use framecast::format::Subsampling;
use framecast::stats::RecordType;
use framecast::testutil::{psnr, xrgb_to_rgb};

const PYTHON: &str = "/usr/bin/python3";
const TIMEOUT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/gst_rtsp.py")
}

/// Whether gst-rtsp-server can run here (skips loudly, or fails under CI, when not).
fn have_gst_rtsp(test: &str) -> bool {
    if !require_tools(test, &[(PYTHON, "python3-gi"), ("gst-launch-1.0", "gstreamer1.0-tools")]) {
        return false;
    }
    let probe = run_tool(
        Command::new(PYTHON)
            .args(["-c", "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')"]),
        Duration::from_secs(20),
    );
    if !probe.status.success() {
        skip(
            test,
            &format!(
                "gst-rtsp-server's Python bindings are missing (apt-get install -y gir1.2-gst-rtsp-server-1.0 \
                 python3-gi, or scripts/setup.sh --test-deps): {}",
                probe.stderr.trim()
            ),
        );
        return false;
    }
    true
}

/// `gst_rtsp.py record` on 127.0.0.1:`port`, writing frames to `out`; killed on drop.
struct RecordServer {
    child: Child,
    url: String,
}

impl RecordServer {
    fn start(port: u16, out: &Path, auth: Option<(&str, &str)>) -> RecordServer {
        Self::start_with(port, out, auth, &[])
    }

    fn start_with(port: u16, out: &Path, auth: Option<(&str, &str)>, extra: &[&str]) -> RecordServer {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script()).args(["record", "--port", &port.to_string(), "--path", "/cam", "--out"]).arg(out);
        cmd.args(extra);
        if let Some((user, password)) = auth {
            cmd.args(["--user", user, "--password", password]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", script().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = RecordServer { child, url: String::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.url.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        server.url = url.to_string();
                    }
                }
                Err(_) => panic!("gst_rtsp.py record on port {port} did not print READY within 20 s"),
            }
        }
        eprintln!("[record] {} (pid {}), frames to {}", server.url, server.child.id(), out.display());
        server
    }

    /// Ends the server at once, as a crash or a power cut would (its connections reset).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RecordServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The frames a record server wrote, in order.
fn written(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
    v.sort();
    v
}

/// Waits until `dir` holds at least `n` frames, at most `timeout`; returns how many it holds.
fn wait_for_frames(dir: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let have = written(dir).len();
        if have >= n || Instant::now() >= deadline {
            return have;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the number of frames in `dir` stops changing (the server has written what it
/// received), at most 5 s.
fn settle(dir: &Path) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = written(dir).len();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = written(dir).len();
        if now == last || Instant::now() >= deadline {
            return written(dir);
        }
        last = now;
    }
}

/// Decodes every frame in `files` and checks its size; every `every`-th frame is matched to
/// the test-pattern frame it shows: the first among pattern frames `first`, each later one
/// among the `every + 4` after the last match (frames come in order, a few may be lost). Each
/// must reach 30 dB, so the server got the frames in order, whole, none twice. Returns the
/// pattern frame numbers matched. (Rendering the pattern is slow in a debug build: the
/// windows are kept small.)
fn check_pixels(files: &[PathBuf], width: u32, height: u32, every: usize, first: Range<u64>) -> Vec<u64> {
    let pattern = TestPattern::new(width, height, Subsampling::S420);
    let mut dec = Decoder::new().unwrap();
    let mut px = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let jpeg = std::fs::read(f).unwrap();
        dec.decode(&jpeg, width as usize, height as usize, &mut px)
            .unwrap_or_else(|e| panic!("{} does not decode as a {width}x{height} JPEG: {e}", f.display()));
        if i % every != 0 {
            continue;
        }
        let window = seqs.last().map_or(first.clone(), |s| s + 1..s + every as u64 + 5);
        let (seq, db) = best_match(&pattern, &xrgb_to_rgb(&px), window.clone());
        eprintln!("{}: pattern frame {seq}, PSNR {db:.1} dB", f.display());
        assert!(db >= 30.0, "{} matches no test-pattern frame in {window:?}: best PSNR {db:.1} dB", f.display());
        seqs.push(seq);
    }
    seqs
}

/// The pattern frame in `seqs` that `rgb` shows best, and the PSNR.
fn best_match(pattern: &TestPattern, rgb: &[u8], seqs: Range<u64>) -> (u64, f64) {
    seqs.map(|s| (s, psnr(rgb, &pattern.render_rgb(s)))).max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0))
}

fn send_publish(name: &str, url: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["send", "--publish", url];
    args.extend_from_slice(extra);
    Proc::spawn(name, &args)
}

/// 640x480 at 30 fps into a record server: every frame framecast sent is written, whole, and
/// shows the test pattern; the link is an `rtsp-publish` viewer in the stats. Meanwhile ffmpeg
/// reads the stream back from the server (its relay path, as from MediaMTX) and gets the
/// test pattern too.
#[test]
fn published_frames_are_recorded_whole_and_read_back_by_ffmpeg() {
    let test = "published_frames_are_recorded_whole_and_read_back_by_ffmpeg";
    if !have_gst_rtsp(test) || !require_tools(test, &[("ffmpeg", "ffmpeg")]) {
        return;
    }
    let _serial = common::serial();
    let dir = scratch_dir("rtsp-publish-record");
    let out = dir.join("frames");
    std::fs::create_dir_all(&out).unwrap();
    let server = RecordServer::start_with(free_port(), &out, None, &["--relay-path", "/view"]);
    let stats = dir.join("send.jsonl");
    let mut send = send_publish(
        "send",
        &server.url,
        &["--size", "640x480", "--fps", "30", "--frames", "150", "--stats-json", stats.to_str().unwrap()],
    );
    assert!(wait_for_frames(&out, 10, Duration::from_secs(20)) >= 10, "the server records nothing");
    // ffmpeg reads 20 frames back from the server, as raw RGB, each frame once.
    let view = server.url.replace("/cam", "/view");
    let read = run_tool(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-rtsp_transport", "tcp", "-i", &view, "-fps_mode", "passthrough"])
            .args(["-frames:v", "20", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
        Duration::from_secs(30),
    );
    assert!(read.status.success(), "ffmpeg could not read {view}: {}", read.stderr);
    let frame_len = 640 * 480 * 3;
    assert_eq!(read.stdout.len(), 20 * frame_len, "ffmpeg read {} bytes: {}", read.stdout.len(), read.stderr);
    let pattern = TestPattern::new(640, 480, Subsampling::S420);
    // Frames 0, 10 and 19: the first among the frames published so far, the others after it.
    let (mut last, mut window) = (0, 0..written(&out).len() as u64 + 60);
    for i in [0, 10, 19] {
        let (seq, db) = best_match(&pattern, &read.stdout[i * frame_len..(i + 1) * frame_len], window.clone());
        eprintln!("ffmpeg's frame {i}: pattern frame {seq}, PSNR {db:.1} dB");
        assert!(db >= 30.0, "ffmpeg's frame {i} matches no test-pattern frame in {window:?}: PSNR {db:.1} dB");
        assert!(i == 0 || seq > last, "ffmpeg's frame {i} is pattern frame {seq}, not after {last}");
        last = seq;
        window = seq + 1..seq + 15;
    }

    send.expect_success(TIMEOUT);
    let files = settle(&out);
    let s = summary(&stats);
    eprintln!("sent {} frames ({} bytes), the server wrote {}", s.frames, s.bytes, files.len());
    assert!(s.frames >= 140, "published {} of 150 frames", s.frames);
    assert_eq!(files.len() as u64, s.frames, "frames written by the server vs frames framecast published");
    // While it published, the link was an rtsp-publish viewer, its bytes RTP and interleaving.
    let mut links = records_of(&stats, RecordType::Interval).into_iter().filter_map(|r| r.links).flatten();
    let link = links.rfind(|l| l.kind.as_str() == "rtsp-publish").expect("no rtsp-publish link in the stats");
    assert_eq!(link.peer, server.url, "{link:?}");
    let seqs = check_pixels(&files, 640, 480, 15, 0..15);
    assert!(*seqs.last().unwrap() >= 130, "the last frame checked is pattern frame {}", seqs.last().unwrap());
}

/// 2560x1440: more than RFC 2435's header can state (2040 px); the size reaches the server
/// in the ANNOUNCEd SDP (`a=x-dimensions`), and the frames it writes are whole.
#[test]
fn frames_wider_than_2040_px_are_recorded_at_their_size() {
    if !have_gst_rtsp("frames_wider_than_2040_px_are_recorded_at_their_size") {
        return;
    }
    let _serial = common::serial();
    let dir = scratch_dir("rtsp-publish-large");
    let server = RecordServer::start(free_port(), &dir, None);
    let mut send = send_publish("send", &server.url, &["--size", "2560x1440", "--fps", "10", "--frames", "10"]);
    send.expect_success(TIMEOUT);
    let files = settle(&dir);
    assert!(files.len() >= 5, "the server wrote {} frames of 10", files.len());
    check_pixels(&files, 2560, 1440, 3, 0..8);
}

/// The server dies mid-stream and comes back on the same port: framecast logs why the
/// connection ended, publishes again with backoff, and the new server records the stream.
#[test]
fn publishing_resumes_when_the_server_comes_back() {
    if !have_gst_rtsp("publishing_resumes_when_the_server_comes_back") {
        return;
    }
    let _serial = common::serial();
    let dir = scratch_dir("rtsp-publish-restart");
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let port = free_port();
    let mut server = RecordServer::start(port, &first, None);
    let url = server.url.clone();
    let mut send = send_publish("send", &url, &["--size", "320x240", "--fps", "30", "--duration", "40"]);
    let got = wait_for_frames(&first, 15, Duration::from_secs(20));
    assert!(got >= 15, "the first server wrote {got} frames");
    server.kill();
    assert!(send.wait_for_stderr("reconnecting", Duration::from_secs(10)), "no reconnect logged:\n{}", send.stderr());
    thread::sleep(Duration::from_millis(800));
    let _server = RecordServer::start(port, &second, None);
    assert!(wait_for_frames(&second, 1, Duration::from_secs(20)) >= 1, "the second server records nothing");
    // The pattern frame the first frame should show, roughly, at 30 fps.
    let expected = (send.elapsed().as_secs_f64() * 30.0) as u64;
    let got = wait_for_frames(&second, 15, Duration::from_secs(20));
    assert!(got >= 15, "the second server wrote {got} frames; sender:\n{}", send.stderr());
    assert!(send.is_running(), "the sender ended:\n{}", send.stderr());
    let stderr = send.stderr();
    assert!(stderr.contains("publishing to"), "no publishing line:\n{stderr}");
    // The frames written are whole, and show the pattern where the run had got to.
    let files = written(&second);
    let first = expected.saturating_sub(60)..expected + 15;
    check_pixels(&files, 320, 240, 5, first);
}

/// With a user and password on the server, the URL's credentials work; a wrong password ends
/// the sender at once with a clear error (no retry loop), and the password is never logged.
#[test]
fn credentials_in_the_url_are_used_and_a_wrong_password_is_a_clear_error() {
    if !have_gst_rtsp("credentials_in_the_url_are_used_and_a_wrong_password_is_a_clear_error") {
        return;
    }
    let _serial = common::serial();
    let dir = scratch_dir("rtsp-publish-auth");
    let port = free_port();
    let server = RecordServer::start(port, &dir, Some(("cam", "s3cret-pw")));
    let good = server.url.replace("rtsp://", "rtsp://cam:s3cret-pw@");
    let mut send = send_publish("send", &good, &["--size", "320x240", "--fps", "30", "--frames", "30"]);
    send.expect_success(TIMEOUT);
    let files = settle(&dir);
    assert!(files.len() >= 25, "the server wrote {} of 30 frames with the right password", files.len());
    assert!(!send.stderr().contains("s3cret-pw"), "the password is in the log:\n{}", send.stderr());

    let bad = server.url.replace("rtsp://", "rtsp://cam:wrong-pw@");
    let mut send = send_publish("send-bad", &bad, &["--size", "320x240", "--fps", "30", "--duration", "30"]);
    let st = send.wait(Duration::from_secs(20));
    let stderr = send.stderr();
    assert!(!st.success(), "a wrong password did not fail:\n{stderr}");
    assert!(stderr.contains("401"), "the error does not say 401:\n{stderr}");
    assert!(stderr.contains("rtsp://cam@127.0.0.1"), "the error does not name the user and server:\n{stderr}");
    assert!(!stderr.contains("wrong-pw"), "the password is in the log:\n{stderr}");
    assert_eq!(settle(&dir).len(), files.len(), "frames were recorded with a wrong password");
}

/// Bad URLs are refused at the command line, naming the flag and what was expected.
#[test]
fn bad_publish_urls_are_refused_at_the_command_line() {
    for (url, says) in [
        ("http://127.0.0.1:8554/cam", "rtsp://"),
        ("127.0.0.1:8554/cam", "rtsp://"),
        ("rtsp://", "host"),
        ("rtsp://127.0.0.1:notaport/cam", "port"),
        ("rtsps://127.0.0.1:8554/cam", "rtsp://"),
    ] {
        let out = Command::new(common::BIN).args(["send", "--publish", url, "--frames", "1"]).output().unwrap();
        let stderr = common::strip_ansi(&String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "--publish {url} was accepted:\n{stderr}");
        assert!(stderr.contains("--publish"), "--publish {url}: the error does not name the flag:\n{stderr}");
        assert!(stderr.contains(says), "--publish {url}: the error does not say {says:?}:\n{stderr}");
    }
}

/// A fake media server on a raw socket: reads one request (head and body) and returns its
/// method, its CSeq and the whole text.
fn read_request(s: &mut TcpStream) -> Option<(String, String, String)> {
    read_request_after(s, Vec::new())
}

/// [`read_request`] when its first bytes were read already.
fn read_request_after(s: &mut TcpStream, mut buf: Vec<u8>) -> Option<(String, String, String)> {
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        assert!(buf.len() < 16 * 1024, "a request head over 16 KiB");
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
    };
    let len: usize = header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let method = head.split(' ').next().unwrap_or_default().to_string();
    Some((method, header("CSeq").unwrap_or_default(), head + &String::from_utf8_lossy(&body)))
}

/// Answers requests 200 (with a Session of a 3 s timeout and the Transport asked for) until
/// RECORD; returns the ANNOUNCE request.
fn answer_until_record(s: &mut TcpStream) -> String {
    let mut announced = String::new();
    loop {
        let (method, cseq, text) = read_request(s).expect("the publisher closed before RECORD");
        let mut extra = String::new();
        match method.as_str() {
            "ANNOUNCE" => announced = text,
            "SETUP" => {
                assert!(text.contains("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"), "SETUP: {text}");
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n".into();
            }
            _ => {}
        }
        let reply = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678;timeout=3\r\n{extra}\r\n");
        s.write_all(reply.as_bytes()).unwrap();
        if method == "RECORD" {
            return announced;
        }
    }
}

/// Bad answers from a server end only that connection, with a log line naming what arrived:
/// bytes that are not RTSP, a response head that never ends, a wrong CSeq. Then a server that
/// answers well gets the stream even though it also sends junk on the interleaved channels
/// (its own data on channel 0, RTCP that does not parse, a channel never set up).
#[test]
fn bad_answers_from_the_server_end_only_that_connection() {
    let _serial = common::serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", listener.local_addr().unwrap().port());
    let mut send = send_publish("send", &url, &["--size", "320x240", "--fps", "30", "--duration", "30"]);
    // Accepts within 20 s (the sender reconnects with backoff), else fails rather than hangs.
    listener.set_nonblocking(true).unwrap();
    let accept = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no connection for {what} within 20 s: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let first = read_request(&mut s).unwrap_or_else(|| panic!("no request for {what}"));
        (s, first)
    };
    let (mut s, _) = accept("bytes that are not RTSP");
    s.write_all(b"\x16\x03\x01\x02\x00 hello\r\n\r\n").unwrap();
    let (mut s2, _) = accept("an endless head");
    s2.write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n").unwrap();
    s2.write_all(&[b'x'; 9000]).unwrap();
    let (mut s3, (_, cseq, _)) = accept("a wrong CSeq");
    let wrong = cseq.parse::<u32>().unwrap() + 7;
    s3.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {wrong}\r\n\r\n").as_bytes()).unwrap();
    drop((s, s2, s3));
    for says in ["malformed RTSP message", "no end of the message head", "CSeq"] {
        assert!(send.wait_for_stderr(says, Duration::from_secs(10)), "no log line saying {says:?}:\n{}", send.stderr());
    }

    // A server that answers well, and sends junk on the interleaved channels.
    let (mut s, (method, cseq, _)) = accept("a good server");
    let reply =
        format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, ANNOUNCE, SETUP, RECORD, GET_PARAMETER\r\n\r\n");
    assert_eq!(method, "OPTIONS");
    s.write_all(reply.as_bytes()).unwrap();
    let sdp = answer_until_record(&mut s);
    assert!(sdp.contains("m=video 0 RTP/AVP 26") && sdp.contains("a=rtpmap:26 JPEG/90000"), "SDP: {sdp}");
    assert!(sdp.contains("urn:x-framecast:capture-time"), "SDP without the capture-time extension: {sdp}");
    s.write_all(&[b'$', 0, 0, 3, 1, 2, 3, b'$', 1, 0, 2, 0xFF, 0xFF, b'$', 9, 0, 1, 0]).unwrap();
    // The stream keeps coming: interleaved RTP on channel 0, sender reports on channel 1, and
    // a keep-alive every third of the session's 3 s timeout.
    let (mut rtp, mut rtcp, mut kept) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (rtp < 60 || rtcp < 2 || kept < 2) && Instant::now() < deadline {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).unwrap();
        if h[0] != b'$' {
            let (method, cseq, text) = read_request_after(&mut s, h.to_vec()).expect("a request cut short");
            assert_eq!(method, "GET_PARAMETER", "{text}");
            assert!(text.contains("Session: 12345678"), "a keep-alive without the session: {text}");
            s.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\n\r\n").as_bytes()).unwrap();
            kept += 1;
            continue;
        }
        let mut data = vec![0u8; usize::from(u16::from_be_bytes([h[2], h[3]]))];
        s.read_exact(&mut data).unwrap();
        match h[1] {
            0 => rtp += 1,
            1 => {
                assert_eq!(data[1], 200, "channel 1 carries something other than a sender report first");
                rtcp += 1;
            }
            c => panic!("data on channel {c}"),
        }
    }
    assert!(rtp >= 60 && rtcp >= 2 && kept >= 2, "{rtp} RTP packets, {rtcp} RTCP, {kept} keep-alives in 10 s");
    assert!(send.is_running(), "the sender ended:\n{}", send.stderr());
}
