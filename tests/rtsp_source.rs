//! `framecast send --source rtsp://...`: an RTSP M-JPEG camera as the sender's source, making
//! framecast a relay. The cameras are real RTSP servers: GStreamer's gst-rtsp-server
//! (`tests/support/gst_rtsp.py`, through `common::gst_rtsp`) and a framecast `send --rtsp`.
//! Each test takes a few seconds.
//!
//! Tools: `/usr/bin/python3` with `gi` and GstRtspServer, and `gst-launch-1.0` (Debian:
//! python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-tools, gstreamer1.0-plugins-good);
//! `scripts/setup.sh --test-deps` installs them. A missing tool skips the test loudly, or
//! fails it under `CI=true`.

#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::gst_rtsp::GstServer;
use common::http_client::{http_get, jpeg_size, HttpResponse};
use common::tools::{require_tools, tool_stdout};
use common::{free_port, scratch_dir, serial, summary, Proc};
use framecast::codec::Decoder;
use framecast::testutil::psnr;

/// Longest a receiver run may take.
const RUN: Duration = Duration::from_secs(30);

/// `send --source URL --http 127.0.0.1:HTTP ARGS...` with stats in `dir/NAME.jsonl`.
fn relay(name: &str, url: &str, http: u16, dir: &Path, extra: &[&str]) -> Proc {
    let stats = dir.join(format!("{name}.jsonl"));
    let http = format!("127.0.0.1:{http}");
    let mut args = vec!["send", "--source", url, "--http", &http, "--stats-json", stats.to_str().unwrap()];
    args.extend_from_slice(extra);
    Proc::spawn(name, &args)
}

/// `recv --connect ADDR --headless --frames N --once` with stats in `dir/NAME.jsonl`.
fn recv(name: &str, addr: &str, frames: u64, dir: &Path) -> Proc {
    let stats = dir.join(format!("{name}.jsonl"));
    let frames = frames.to_string();
    Proc::spawn(
        name,
        &[
            "recv",
            "--connect",
            addr,
            "--headless",
            "--once",
            "--frames",
            &frames,
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    )
}

/// `/snapshot.jpg` from the relay's HTTP port, once it has a frame (503 before), within 10 s.
fn snapshot(port: u16) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_get(port, "/snapshot.jpg", Duration::from_secs(5));
        if r.status == 200 || Instant::now() > deadline {
            assert_eq!(r.status, 200, "{}", r.head);
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JPEG's entropy-coded data and what follows it: from its SOS marker to the end.
fn scan(jpeg: &[u8]) -> &[u8] {
    let at = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).expect("an SOS marker");
    &jpeg[at..]
}

fn decode(jpeg: &[u8], size: (usize, usize)) -> Vec<u8> {
    let mut px = Vec::new();
    Decoder::new().unwrap().decode(jpeg, size.0, size.1, &mut px).unwrap();
    framecast::testutil::xrgb_to_rgb(&px)
}

/// gst-rtsp-server's `videotestsrc ! jpegenc ! rtpjpegpay` through the relay: a viewer gets
/// the camera's picture at its size, and the relay's JPEG carries the very scan jpegenc made
/// (only the headers, rebuilt by the RTP/JPEG depacketiser, differ: no re-encode), over TCP
/// interleaved and, from a camera that offers only UDP, over UDP.
#[test]
fn relays_a_gstreamer_camera_to_viewers_without_re_encoding() {
    let _g = serial();
    if !require_tools("rtsp_source", &[("gst-launch-1.0", "gstreamer1.0-tools gstreamer1.0-plugins-good")]) {
        return;
    }
    let dir = scratch_dir("rtsp-source-relay");
    let reference = dir.join("ref.jpg");
    let caps = "video/x-raw,width=320,height=240,framerate=30/1,format=I420";
    let pipeline = format!(
        "videotestsrc num-buffers=1 pattern=smpte75 ! {caps} ! jpegenc quality=75 ! filesink location={}",
        reference.display()
    );
    tool_stdout(Command::new("gst-launch-1.0").arg("-q").args(pipeline.split(' ')), Duration::from_secs(20));
    let want = std::fs::read(&reference).unwrap();
    for protocols in ["tcp", "udp"] {
        let port = free_port();
        let args = ["--size", "320x240", "--fps", "30", "--pattern", "smpte75", "--protocols", protocols];
        let Some(camera) = GstServer::serve("rtsp_source", port, &args) else { return };
        let (http, listen) = (free_port(), format!("127.0.0.1:{}", free_port()));
        let send = relay(protocols, &camera.url, http, &dir, &["--listen", &listen, "--duration", "20"]);
        assert!(send.wait_for_stderr("rtsp camera playing", Duration::from_secs(15)), "{}", send.stderr());
        assert!(send.stderr().contains(&format!("transport={}", if protocols == "tcp" { "Tcp" } else { "Udp" })));
        let snap = snapshot(http);
        assert_eq!(jpeg_size(&snap.body), Some((320, 240)), "{protocols}");
        assert!(scan(&snap.body) == scan(&want), "{protocols}: the relay's scan differs from jpegenc's");
        let p = psnr(&decode(&snap.body, (320, 240)), &decode(&want, (320, 240)));
        assert!(p.is_infinite(), "{protocols}: {p:.1} dB from the camera's picture");
        let name = format!("recv-{protocols}");
        let mut r = recv(&name, &listen, 30, &dir);
        r.expect_success(RUN);
        let s = summary(&dir.join(format!("{name}.jsonl")));
        assert_eq!(s.frames, 30, "{protocols}: {s:?}");
        assert!(send.stderr().contains("forwarding the camera's MJPEG without re-encoding"), "{protocols}");
        drop(send);
    }
}

/// A framecast `send --rtsp` as the camera: its SDP names our clock, so the relay keeps each
/// frame's capture time (the camera's, not the relay's arrival): the capture times the relay
/// serves (`X-Timestamp`) are the camera's own, and the viewer's latency is known for every
/// frame (capture at the camera to display past the relay).
#[test]
fn a_framecast_camera_s_capture_times_pass_through_the_relay() {
    let _g = serial();
    let dir = scratch_dir("rtsp-source-clock");
    let (rtsp, cam_http) = (format!("127.0.0.1:{}", free_port()), free_port());
    let cam_http_addr = format!("127.0.0.1:{cam_http}");
    let args = ["send", "--source", "test", "--size", "320x240", "--fps", "30", "--duration", "30"];
    let camera = Proc::spawn("camera", &[&args[..], &["--rtsp", &rtsp, "--http", &cam_http_addr]].concat());
    assert!(camera.wait_for_stderr("RTSP", Duration::from_secs(15)), "{}", camera.stderr());
    let (http, listen) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let url = format!("rtsp://{rtsp}/stream");
    let send = relay("relay", &url, http, &dir, &["--listen", &listen, "--duration", "25"]);
    assert!(send.wait_for_stderr("rtsp camera playing", Duration::from_secs(15)), "{}", send.stderr());
    assert!(send.stderr().contains("capture_time=\"the camera's"), "{}", send.stderr());
    // A viewer keeps the relay encoding; snapshots of both, interleaved, for a second and a
    // half: the relay's capture times are among the camera's (µs apart would mean the relay
    // stamped them itself).
    let mut r = recv("recv", &listen, 90, &dir);
    let (mut cam, mut rel) = (BTreeSet::new(), BTreeSet::new());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        for (port, set) in [(cam_http, &mut cam), (http, &mut rel)] {
            let r = snapshot(port);
            set.insert(r.header("X-Timestamp").expect("X-Timestamp").to_string());
        }
    }
    let shared = rel.intersection(&cam).count();
    assert!(
        rel.len() >= 10 && shared * 2 >= rel.len(),
        "{shared} of the relay's {} capture times are the camera's ({} seen there)",
        rel.len(),
        cam.len()
    );
    r.expect_success(RUN);
    let s = summary(&dir.join("recv.jsonl"));
    assert_eq!(s.frames, 90, "{s:?}");
    assert_eq!(s.latency_unknown_frames, Some(0), "{s:?}");
    let lat = s.latency_capture_displayed_ms.expect("latency");
    assert!(lat.count == 90 && lat.p50 > 0.0 && lat.p50 < 1000.0, "{lat:?}");
}

/// The camera goes away mid-stream: the relay sends "no signal" frames and reopens it with
/// backoff; when it is back on the same port, frames flow again.
#[test]
fn a_camera_that_goes_away_gives_no_signal_then_comes_back() {
    let _g = serial();
    let port = free_port();
    let args = ["--size", "160x120", "--fps", "30"];
    let Some(camera) = GstServer::serve("rtsp_source", port, &args) else { return };
    let dir = scratch_dir("rtsp-source-away");
    let http = free_port();
    let url = camera.url.clone();
    let mut send = relay("away", &url, http, &dir, &["--duration", "12"]);
    assert!(send.wait_for_stderr("rtsp camera playing", Duration::from_secs(15)), "{}", send.stderr());
    std::thread::sleep(Duration::from_millis(1000));
    drop(camera);
    assert!(send.wait_for_stderr("source lost", Duration::from_secs(10)), "{}", send.stderr());
    std::thread::sleep(Duration::from_millis(1500));
    let Some(_again) = GstServer::serve("rtsp_source", port, &args) else { return };
    assert!(send.wait_for_stderr("source reopened", Duration::from_secs(15)), "{}", send.stderr());
    std::thread::sleep(Duration::from_millis(1000));
    let back = snapshot(http);
    assert_eq!(jpeg_size(&back.body), Some((160, 120)));
    send.expect_success(Duration::from_secs(20));
    let s = summary(&dir.join("away.jsonl"));
    assert!(s.source_losses >= 1 && s.no_signal_frames >= 1, "{s:?}");
    assert!(send.stderr().contains("the server closed the connection"), "{}", send.stderr());
}

/// A camera that refuses the relay at the start (401 without credentials or with wrong ones,
/// 404 for a path it does not serve): `send` exits 1 at once, saying why and naming the URL,
/// without the password.
#[test]
fn a_camera_that_refuses_at_the_start_ends_the_sender_clearly() {
    let _g = serial();
    let port = free_port();
    let args = ["--size", "160x120", "--user", "viewer", "--password", "s3cret"];
    let Some(camera) = GstServer::serve("rtsp_source", port, &args) else { return };
    let dir = scratch_dir("rtsp-source-refused");
    let bad_path = format!("rtsp://viewer:s3cret@127.0.0.1:{port}/nope");
    for (name, url, says) in [
        ("anon", camera.url.clone(), "needs credentials (401"),
        ("wrong", camera.url_with("viewer", "wr0ng"), "refused the credentials"),
        ("missing", bad_path, "404 Not Found"),
    ] {
        let mut send = relay(name, &url, free_port(), &dir, &[]);
        let st = send.wait(Duration::from_secs(15));
        assert_eq!(st.code(), Some(1), "{name}: {st:?}\n{}", send.stderr());
        let err = send.stderr();
        let path = if name == "missing" { "/nope" } else { "/cam" };
        let shown = format!("rtsp://127.0.0.1:{port}{path}");
        assert!(err.contains(says) && err.contains(&shown), "{name}: {err}");
        assert!(!err.contains("wr0ng") && !err.contains("s3cret"), "{name}: a password in the log:\n{err}");
    }
    // With the credentials it plays.
    let mut send = relay("auth", &camera.url_with("viewer", "s3cret"), free_port(), &dir, &["--frames", "10"]);
    assert!(send.wait_for_stderr("rtsp camera playing", Duration::from_secs(15)), "{}", send.stderr());
    send.expect_success(Duration::from_secs(15));
}

/// A camera whose stream is not M-JPEG (H.264 only in its SDP): `send` exits 1 at once,
/// naming the URL and the media the camera offers.
#[test]
fn a_camera_without_jpeg_ends_the_sender_clearly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rtsp://127.0.0.1:{}/h264", listener.local_addr().unwrap().port());
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        answer_h264(s)
    });
    let dir = scratch_dir("rtsp-source-h264");
    let mut send = relay("h264", &url, free_port(), &dir, &[]);
    let st = send.wait(Duration::from_secs(15));
    assert_eq!(st.code(), Some(1), "{st:?}\n{}", send.stderr());
    let err = send.stderr();
    assert!(err.contains(&url) && err.contains("no JPEG video") && err.contains("video 96"), "{err}");
    assert!(server.join().unwrap() >= 2, "OPTIONS and DESCRIBE were not both asked");
}

/// Answers OPTIONS and DESCRIBE (an H.264 stream) until the client leaves; returns the
/// requests seen.
fn answer_h264(s: TcpStream) -> usize {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track0\r\n";
    for n in 0.. {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return n,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let cseq = head.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap_or("0").trim().to_string();
        let extra = if head.starts_with("DESCRIBE") {
            format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
        } else {
            "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n".to_string()
        };
        if w.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}").as_bytes()).is_err() {
            return n + 1;
        }
    }
    unreachable!()
}
