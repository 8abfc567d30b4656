//! `--source http://...`: framecast relaying an HTTP camera. The cameras are a second
//! framecast (`/stream.mjpg`, `/snapshot.jpg`) and small servers in this file that write what
//! mjpg-streamer, µStreamer and an ESP32-CAM (CameraWebServer's `stream_handler`: chunked,
//! `\r\n--BOUNDARY\r\n` before each part, `X-Timestamp` of its own uptime) write, byte for
//! byte, plus every bad answer of issue #15: 401/404/500, HTML, a lying Content-Length both
//! ways, a changed or omitted boundary, an HTML part, a stall mid-part and a close. The relay's
//! own `/snapshot.jpg` shows what it forwards: a JPEG the camera sent, unchanged.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::http_client::http_get;
use common::tools::require_tools;
use common::{free_port, Proc};
use framecast::format::Subsampling;
use framecast::testutil::pattern_jpeg;

const BOUNDARY: &str = "boundarydonotcross";
const ESP_BOUNDARY: &str = "123456789000000000000987654321";

/// Distinct JPEGs: `from..from + n` as pattern frame numbers.
fn frames(from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n).map(|i| pattern_jpeg(320, 240, Subsampling::S420, 80, i).unwrap()).collect()
}

/// A camera imitation on 127.0.0.1: each connection (numbered from 0) runs `script` on its own
/// thread after the request head was read. Stops accepting when dropped.
struct Camera {
    port: u16,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// What a script gets: the connection number, the request head and the socket.
type Script = dyn Fn(usize, &str, &mut TcpStream, &AtomicBool) + Send + Sync;

impl Camera {
    fn start(script: impl Fn(usize, &str, &mut TcpStream, &AtomicBool) + Send + Sync + 'static) -> Camera {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (conns, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let script: Arc<Script> = Arc::new(script);
        let (c, s) = (conns.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut sock, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let n = c.fetch_add(1, Ordering::Relaxed);
                let (script, stop) = (script.clone(), s.clone());
                thread::spawn(move || {
                    sock.set_nonblocking(false).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    sock.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    let head = read_head(&mut sock);
                    script(n, &head, &mut sock, &stop);
                });
            }
        });
        Camera { port, conns, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match sock.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A part as mjpg-streamer and µStreamer write it (`extra` for µStreamer's own headers).
fn part(jpeg: &[u8], len: usize, extra: &str) -> Vec<u8> {
    let mut v = format!("Content-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: 1234.567890\r\n{extra}\r\n")
        .into_bytes();
    v.extend_from_slice(jpeg);
    v.extend(format!("\r\n--{BOUNDARY}\r\n").bytes());
    v
}

/// mjpg-streamer's response head (output_http's `send_stream`), then the first boundary.
fn mjpg_streamer_head() -> String {
    format!(
        "HTTP/1.0 200 OK\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\nServer: MJPG-Streamer/0.2\r\n\
         Cache-Control: no-store, no-cache, must-revalidate, pre-check=0, post-check=0, max-age=0\r\nPragma: no-cache\r\n\
         Expires: Mon, 3 Jan 2000 12:34:56 GMT\r\nContent-Type: multipart/x-mixed-replace;boundary={BOUNDARY}\r\n\r\n--{BOUNDARY}\r\n"
    )
}

/// Writes `frames` round and round at about 25 fps until the camera stops or the peer leaves.
fn loop_frames(sock: &mut TcpStream, stop: &AtomicBool, frames: &[Vec<u8>], encode: impl Fn(&[u8]) -> Vec<u8>) {
    for f in frames.iter().cycle() {
        if stop.load(Ordering::Relaxed) || sock.write_all(&encode(f)).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(40));
    }
}

/// Polls the relay's /snapshot.jpg until it is one of `want` (true) or `timeout` passes.
fn relay_shows(port: u16, want: &HashSet<Vec<u8>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = std::panic::catch_unwind(|| http_get(port, "/snapshot.jpg", Duration::from_secs(4))) {
            if r.status == 200 && want.contains(&r.body) {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A relay: `framecast send --source URL --http 127.0.0.1:PORT`.
fn relay(url: &str, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["send", "--source", url, "--http", &addr, "--duration", "25"];
    args.extend_from_slice(extra);
    (Proc::spawn("relay", &args), port)
}

fn set(frames: &[Vec<u8>]) -> HashSet<Vec<u8>> {
    frames.iter().cloned().collect()
}

#[test]
fn mjpg_streamer_stream_is_forwarded_unchanged() {
    let fs = frames(0, 8);
    let cam_frames = fs.clone();
    let cam = Camera::start(move |_, _, sock, stop| {
        let _ = sock.write_all(mjpg_streamer_head().as_bytes());
        loop_frames(sock, stop, &cam_frames, |f| part(f, f.len(), ""));
    });
    let (r, port) = relay(&cam.url("/?action=stream"), &[]);
    assert!(relay_shows(port, &set(&fs), Duration::from_secs(8)), "{}", r.stderr());
    assert!(r.stderr().contains("multipart MJPEG stream"), "{}", r.stderr());
    assert!(!r.stderr().contains("WARN"), "a well-formed stream warns about nothing:\n{}", r.stderr());
}

#[test]
fn ustreamer_stream_is_forwarded_unchanged() {
    let fs = frames(10, 8);
    let cam_frames = fs.clone();
    let cam = Camera::start(move |_, _, sock, stop| {
        // µStreamer's stream head and its extra part headers (`?extra_headers=1`).
        let head = format!(
            "HTTP/1.0 200 OK\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-store, no-cache, must-revalidate, \
             proxy-revalidate, pre-check=0, post-check=0, max-age=0\r\nPragma: no-cache\r\nExpires: Mon, 3 Jan 2000 12:34:56 GMT\r\n\
             Set-Cookie: stream_client=ustreamer/1; path=/; max-age=30\r\n\
             Content-Type: multipart/x-mixed-replace;boundary={BOUNDARY}\r\n\r\n--{BOUNDARY}\r\n"
        );
        let _ = sock.write_all(head.as_bytes());
        let extra = "X-UStreamer-Online: true\r\nX-UStreamer-Width: 320\r\nX-UStreamer-Height: 240\r\n";
        loop_frames(sock, stop, &cam_frames, |f| part(f, f.len(), extra));
    });
    let (r, port) = relay(&cam.url("/stream?extra_headers=1"), &[]);
    assert!(relay_shows(port, &set(&fs), Duration::from_secs(8)), "{}", r.stderr());
}

/// An ESP32-CAM's CameraWebServer: HTTP/1.1, chunked, the boundary before each part.
fn esp32_part(jpeg: &[u8]) -> Vec<u8> {
    let chunk = |b: &[u8]| [format!("{:X}\r\n", b.len()).into_bytes(), b.to_vec(), b"\r\n".to_vec()].concat();
    let head = format!("Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: 52.613021\r\n\r\n", jpeg.len());
    [chunk(format!("\r\n--{ESP_BOUNDARY}\r\n").as_bytes()), chunk(head.as_bytes()), chunk(jpeg)].concat()
}

#[test]
fn esp32_cam_stream_is_forwarded_unchanged() {
    let fs = frames(20, 8);
    let cam_frames = fs.clone();
    let cam = Camera::start(move |_, _, sock, stop| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary={ESP_BOUNDARY}\r\n\
             Transfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: *\r\nX-Framerate: 60\r\n\r\n"
        );
        let _ = sock.write_all(head.as_bytes());
        loop_frames(sock, stop, &cam_frames, esp32_part);
    });
    let (r, port) = relay(&cam.url("/stream"), &[]);
    assert!(relay_shows(port, &set(&fs), Duration::from_secs(8)), "{}", r.stderr());
    assert!(!r.stderr().contains("WARN"), "{}", r.stderr());
}

/// Reads `/stream.mjpg` parts (framecast sends Content-Length) for `run_for`: each JPEG and
/// its `X-Timestamp`.
fn collect_parts(port: u16, run_for: Duration) -> HashMap<Vec<u8>, String> {
    let mut s = common::connect_retry(port, Duration::from_secs(5));
    s.write_all(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut buf, mut out, t0) = (Vec::new(), HashMap::new(), Instant::now());
    let mut chunk = vec![0u8; 1 << 16];
    while t0.elapsed() < run_for {
        if let Ok(n @ 1..) = s.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        while let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).into_owned();
            let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
            match field("Content-Length: ").and_then(|v| v.parse::<usize>().ok()) {
                Some(len) if buf.len() >= h + 4 + len => {
                    assert_eq!(field("X-Framecast-Clock: ").map(|c| c.len()), Some(32), "{head}");
                    out.insert(buf[h + 4..h + 4 + len].to_vec(), field("X-Timestamp: ").unwrap_or_default());
                    buf.drain(..h + 4 + len);
                }
                Some(_) => break,
                None => {
                    buf.drain(..h + 4);
                }
            }
        }
    }
    out
}

/// A second framecast as the camera: the relay forwards its JPEGs unchanged, and (same host,
/// same clock) with their capture times: the relay's `X-Timestamp` of a frame is the camera's.
fn framecast_as_source(path: &str, extra: &[&str], kind: &str) {
    let _serial = common::serial();
    let cam_port = free_port();
    let cam_addr = format!("127.0.0.1:{cam_port}");
    let _cam =
        Proc::spawn("camera", &["send", "--http", &cam_addr, "--size", "320x240", "--fps", "10", "--duration", "25"]);
    common::connect_retry(cam_port, Duration::from_secs(5));
    let (r, port) = relay(&format!("http://{cam_addr}{path}"), extra);
    assert!(r.wait_for_stderr("capturing", Duration::from_secs(8)), "{}", r.stderr());
    assert!(r.stderr().contains(kind), "{}", r.stderr());
    // What the camera serves now, and the relay's snapshots meanwhile: each one of them.
    let watcher = thread::spawn(move || collect_parts(cam_port, Duration::from_secs(4)));
    thread::sleep(Duration::from_millis(1500));
    let snaps: Vec<_> = (0..3)
        .map(|_| {
            let s = http_get(port, "/snapshot.jpg", Duration::from_secs(4));
            thread::sleep(Duration::from_millis(200));
            s
        })
        .collect();
    let served = watcher.join().unwrap();
    assert!(served.len() >= 10, "the camera served {} frames", served.len());
    for (i, s) in snaps.iter().enumerate() {
        let Some(stamp) = served.get(&s.body) else {
            panic!("relay snapshot {i} ({} bytes) is not a frame the camera served\n{}", s.body.len(), r.stderr());
        };
        assert_eq!(s.header("X-Timestamp"), Some(stamp.as_str()), "the relay keeps the camera's capture time");
    }
}

#[test]
fn a_second_framecasts_stream_mjpg_is_forwarded_unchanged() {
    framecast_as_source("/stream.mjpg", &[], "multipart MJPEG stream");
}

#[test]
fn a_second_framecasts_snapshot_jpg_is_polled_and_forwarded_unchanged() {
    framecast_as_source("/snapshot.jpg", &["--fps", "5"], "JPEG snapshot, polled at --fps");
}

/// Answers every request with `response`.
fn answering(response: &'static str) -> Camera {
    Camera::start(move |_, _, sock, _| {
        let _ = sock.write_all(response.as_bytes());
    })
}

fn expect_refused(url: &str, needles: &[&str]) -> String {
    let (mut r, _) = relay(url, &[]);
    let st = r.wait(Duration::from_secs(15));
    let err = r.stderr();
    assert_eq!(st.code(), Some(1), "{url}: {err}");
    for n in needles {
        assert!(err.contains(n), "{url}: expected {n:?} in:\n{err}");
    }
    err
}

#[test]
fn bad_answers_at_first_open_exit_1_naming_status_and_url() {
    let cam =
        answering("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n");
    expect_refused(&cam.url("/video"), &["/video: HTTP 401 Unauthorized", "wants credentials (Basic)", "USER:PASS@"]);
    let err = expect_refused(&cam.url("/video").replace("//", "//admin:hunter2@"), &["Basic credentials refused"]);
    assert!(!err.contains("hunter2") && !err.contains("admin:"), "credentials logged:\n{err}");
    let cam = answering("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found");
    expect_refused(&cam.url("/nope"), &["/nope: HTTP 404 Not Found", "is the path right", "\"not found\""]);
    let cam = answering("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
    expect_refused(&cam.url("/x"), &["HTTP 500 Internal Server Error"]);
    let cam =
        answering("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 27\r\n\r\n<html><body>login</body>..");
    expect_refused(
        &cam.url("/"),
        &["expected multipart/x-mixed-replace", "got Content-Type \"text/html\"", "<html><body>login"],
    );
    expect_refused("https://user:pw@127.0.0.1:1/x", &["https://127.0.0.1:1/x: https is not supported", "socat"]);
    expect_refused(&format!("http://127.0.0.1:{}/x", free_port()), &["GET failed"]);
    // A multipart body with no parts at all: nothing before the stall timeout.
    let cam = Camera::start(|_, _, sock, _| {
        let _ = sock.write_all(mjpg_streamer_head().as_bytes());
        thread::sleep(Duration::from_secs(6));
    });
    expect_refused(&cam.url("/"), &["the camera stalled: no bytes for 3s (after 0 frames)"]);
}

#[test]
fn digest_credentials_from_the_url() {
    let fs = frames(30, 1);
    let jpeg = fs[0].clone();
    let cam = Camera::start(move |_, head, sock, _| {
        let auth = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| framecast::rtsp::parse_auth(v));
        let ok = auth.is_some_and(|a| framecast::rtsp::digest_matches(&a, "GET", "cam", "n0nce", "s3cret"));
        if ok {
            let _ = sock.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len())
                    .as_bytes(),
            );
            let _ = sock.write_all(&jpeg);
        } else {
            let _ = sock.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"n0nce\", qop=\"auth\"\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (r, port) = relay(&cam.url("/snap.jpg").replace("//", "//admin:s3cret@"), &["--fps", "5"]);
    assert!(relay_shows(port, &set(&fs), Duration::from_secs(8)), "{}", r.stderr());
    assert!(r.stderr().contains("asks for Digest credentials"), "{}", r.stderr());
    assert!(!r.stderr().contains("s3cret"), "{}", r.stderr());
}

#[test]
fn lying_lengths_changed_or_missing_boundaries_and_html_parts_lose_only_those_parts() {
    let (before, after) = (frames(40, 3), frames(50, 6));
    let after_cam = after.clone();
    let cam = Camera::start(move |_, _, sock, stop| {
        let _ = sock.write_all(mjpg_streamer_head().as_bytes());
        let mut bad = Vec::new();
        bad.extend(part(&before[0], 100, "")); // Content-Length too short
        bad.extend(part(&before[1], 50_000_000, "")); // too long, and over any cap
                                                      // Another boundary than announced, then a part with none, then an HTML part.
        bad.extend(b"Content-Type: image/jpeg\r\n\r\n");
        bad.extend(&before[2]);
        bad.extend(b"\r\n--otherboundary\r\nContent-Type: image/jpeg\r\n\r\n");
        bad.extend(&before[0]);
        bad.extend(&before[1]);
        bad.extend(
            format!("\r\n--{BOUNDARY}\r\nContent-Type: text/html\r\n\r\n<html>camera busy</html>\r\n--{BOUNDARY}\r\n")
                .bytes(),
        );
        let _ = sock.write_all(&bad);
        loop_frames(sock, stop, &after_cam, |f| part(f, f.len(), ""));
    });
    let (r, port) = relay(&cam.url("/"), &[]);
    assert!(relay_shows(port, &set(&after), Duration::from_secs(8)), "{}", r.stderr());
    let err = r.stderr();
    for n in [
        "Content-Length differs from its JPEG's length",
        "another boundary than the announced one",
        "multipart part skipped: a part of type text/html starting \"<html>camera busy",
    ] {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
    assert!(!err.contains("source lost"), "the stream went on without a reconnect:\n{err}");
    assert_eq!(cam.conns.load(Ordering::Relaxed), 1);
}

#[test]
fn a_stall_a_500_and_a_close_mid_stream_reconnect() {
    let (before, after) = (frames(60, 3), frames(70, 6));
    let after_cam = after.clone();
    let cam = Camera::start(move |n, _, sock, stop| match n {
        0 => {
            // Three frames, then half a part, then nothing: a stall mid-part.
            let _ = sock.write_all(mjpg_streamer_head().as_bytes());
            for f in &before {
                let _ = sock.write_all(&part(f, f.len(), ""));
            }
            let _ = sock.write_all(&part(&before[0], before[0].len(), "")[..500]);
            thread::sleep(Duration::from_secs(8));
        }
        1 => {
            let _ = sock.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops");
        }
        2 => {
            let _ = sock.write_all(mjpg_streamer_head().as_bytes());
            let _ = sock.write_all(&part(&before[1], before[1].len(), ""));
        }
        _ => {
            let _ = sock.write_all(mjpg_streamer_head().as_bytes());
            loop_frames(sock, stop, &after_cam, |f| part(f, f.len(), ""));
        }
    });
    let (r, port) = relay(&cam.url("/"), &[]);
    assert!(relay_shows(port, &set(&after), Duration::from_secs(15)), "{}", r.stderr());
    let err = r.stderr();
    for n in [
        "the camera stalled: no bytes for 3s (after 3 frames)",
        "HTTP 500 Internal Server Error",
        "the camera closed the stream (after 1 frames)",
        "source reopened; streaming resumes",
    ] {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
    assert!(cam.conns.load(Ordering::Relaxed) >= 4);
}

#[test]
fn a_camera_trickling_one_part_is_lost_and_one_that_never_answers_stops_cleanly() {
    let (before, after) = (frames(80, 1), frames(90, 4));
    let after_cam = after.clone();
    let cam = Camera::start(move |n, _, sock, stop| match n {
        0 => {
            // One frame, then a part cut inside its image, then one byte a second: every read
            // is within the stall timeout, but the part never ends.
            let _ = sock.write_all(mjpg_streamer_head().as_bytes());
            let f = &before[0];
            let _ = sock.write_all(&part(f, f.len(), ""));
            let _ = sock.write_all(&part(f, f.len(), "")[..f.len() - 100]);
            for _ in 0..30 {
                if stop.load(Ordering::Relaxed) || sock.write_all(&[0]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        }
        _ => {
            let _ = sock.write_all(mjpg_streamer_head().as_bytes());
            loop_frames(sock, stop, &after_cam, |f| part(f, f.len(), ""));
        }
    });
    let (r, port) = relay(&cam.url("/"), &[]);
    let stalled = "the camera stalled: a part not complete 10s after it began (after 1 frames)";
    assert!(r.wait_for_stderr(stalled, Duration::from_secs(16)), "{}", r.stderr());
    assert!(r.elapsed() < Duration::from_secs(15), "lost after {:?}", r.elapsed());
    assert!(relay_shows(port, &set(&after), Duration::from_secs(8)), "{}", r.stderr());

    // A camera that takes the connection and never answers: --duration still ends the run,
    // with status 0 (at the latest when the response timeout ends the attempt).
    let silent = Camera::start(|_, _, _, stop| {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
    });
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut r = Proc::spawn("relay", &["send", "--source", &silent.url("/"), "--http", &addr, "--duration", "1"]);
    let took = r.expect_success(Duration::from_secs(10));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(r.stderr().contains("stopped before the source opened"), "{}", r.stderr());
}

#[test]
fn ffmpeg_serving_mpjpeg_over_http_is_forwarded_unchanged() {
    if !require_tools("ffmpeg_serving_mpjpeg_over_http_is_forwarded_unchanged", &[("ffmpeg", "ffmpeg")]) {
        return;
    }
    // ffmpeg as an HTTP camera: its mpjpeg muxer (boundary "ffmpeg", chunked) on one client.
    let cam_port = free_port();
    let url = format!("http://127.0.0.1:{cam_port}/stream");
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15"])
        .args(["-t", "20", "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg"])
        .args(["-content_type", "multipart/x-mixed-replace;boundary=ffmpeg", "-listen", "1", &url])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    // ffmpeg serves one client, so no probe: the relay is retried while ffmpeg is not yet
    // listening (the first open then fails with "connection refused").
    let deadline = Instant::now() + Duration::from_secs(10);
    let (r, port) = loop {
        let (mut r, port) = relay(&url, &[]);
        if r.wait_for_stderr("capturing", Duration::from_secs(5)) {
            break (r, port);
        }
        assert!(Instant::now() < deadline, "the relay never got ffmpeg's stream:\n{}", r.stderr());
        let _ = r.wait(Duration::from_secs(5));
        thread::sleep(Duration::from_millis(100));
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut snap = Vec::new();
    while Instant::now() < deadline {
        let s = std::panic::catch_unwind(|| http_get(port, "/snapshot.jpg", Duration::from_secs(4)));
        if let Some(s) = s.ok().filter(|s| s.status == 200) {
            snap = s.body.clone();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    // ffmpeg's encoder writes its name in a COM segment; framecast's re-encode would not.
    assert!(snap.windows(4).any(|w| w == b"Lavc"), "not ffmpeg's JPEG ({} bytes)\n{}", snap.len(), r.stderr());
    assert_eq!(common::http_client::jpeg_size(&snap), Some((320, 240)));
    assert!(r.stderr().contains("multipart MJPEG stream"), "{}", r.stderr());
}
