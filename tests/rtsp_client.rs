//! `framecast recv --connect rtsp://...` against a stream framecast did not make: GStreamer's
//! gst-rtsp-server (`tests/support/gst_rtsp.py serve`: `videotestsrc ! jpegenc ! rtpjpegpay`,
//! or JPEG files with restart markers through `rtpjpegpay`, which sends them as RFC 2435
//! types 64/65), over TCP interleaved and over UDP, with Basic authentication, and a server
//! that goes away and comes back.
//!
//! Tools: `/usr/bin/python3` with `gi` and GstRtspServer (Debian: python3-gi,
//! gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good); `scripts/setup.sh --test-deps`
//! installs them. A missing tool skips the test loudly, or fails it under `CI=true`.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::gst_rtsp::GstServer;
use common::{free_port, scratch_dir, serial, summary, Proc};
use framecast::codec::Decoder;
use framecast::format::Subsampling;
use framecast::testutil::{psnr, restart_jpeg, xrgb_to_rgb};
use framecast::view::read_ppm;

/// Longest a receiver run may take (frames arrive at 30 fps).
const RUN: Duration = Duration::from_secs(60);

/// `recv --connect URL --headless --frames N` with stats, a frame log and dumps in `dir`.
fn recv(name: &str, url: &str, transport: &str, frames: u64, dir: &Path, extra: &[&str]) -> Proc {
    let stats = dir.join(format!("{name}.jsonl"));
    let log = dir.join(format!("{name}.csv"));
    let frames = frames.to_string();
    let mut args = vec![
        "recv",
        "--connect",
        url,
        "--rtsp-transport",
        transport,
        "--headless",
        "--frames",
        &frames,
        "--duration",
        "50",
        "--stats-json",
        stats.to_str().unwrap(),
        "--frame-log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(name, &args)
}

/// The (width, height) of each line of a `--frame-log`.
fn logged_sizes(path: &Path) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (w, h) = (col("width"), col("height"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[w].parse().unwrap(), f[h].parse().unwrap())
        })
        .collect()
}

#[test]
fn plays_gstreamer_s_stream_over_tcp_and_udp() {
    let _g = serial();
    let port = free_port();
    let Some(server) = GstServer::serve("rtsp_client", port, &["--size", "320x240", "--fps", "30"]) else { return };
    let dir = scratch_dir("rtsp-play");
    for transport in ["tcp", "udp"] {
        let mut r = recv(transport, &server.url, transport, 30, &dir, &["--once"]);
        r.expect_success(RUN);
        let s = summary(&dir.join(format!("{transport}.jsonl")));
        assert_eq!(s.frames, 30, "{transport}: {s:?}");
        let sizes = logged_sizes(&dir.join(format!("{transport}.csv")));
        assert_eq!(sizes.len(), 30, "{transport}");
        assert!(sizes.iter().all(|&s| s == (320, 240)), "{transport}: {sizes:?}");
        assert_eq!(s.drops.get("corrupt_jpeg"), None, "{transport}: {:?}", s.drops);
        assert!(r.stderr().contains("rtsp playing"), "{transport}");
    }
}

/// Frames with a restart marker every MCU row, which rtpjpegpay sends as types 64/65 with
/// packets on restart-interval boundaries: each shown frame equals libjpeg-turbo's decode of
/// the file it came from (the rebuilt JPEG has the DRI, or the decode would fail or differ).
#[test]
fn restart_marker_types_decode_exactly() {
    let _g = serial();
    let dir = scratch_dir("rtsp-restart");
    let jpegs = dir.join("jpegs");
    std::fs::create_dir_all(&jpegs).unwrap();
    for (sub, kind) in [(Subsampling::S420, "type 65"), (Subsampling::S422, "type 64")] {
        let jpeg = restart_jpeg((320, 240), sub, 80, 1, 1).unwrap();
        for i in 0..3 {
            std::fs::write(jpegs.join(format!("{i:05}.jpg")), &jpeg).unwrap();
        }
        let mut want = Vec::new();
        Decoder::new().unwrap().decode(&jpeg, 320, 240, &mut want).unwrap();
        let port = free_port();
        let Some(server) =
            GstServer::serve("rtsp_client", port, &["--jpeg-dir", jpegs.to_str().unwrap(), "--fps", "30"])
        else {
            return;
        };
        let dumps = dir.join(format!("dumps-{}", sub.to_wire()));
        let dump_dir = dumps.to_str().unwrap().to_string();
        let mut r =
            recv("restart", &server.url, "tcp", 10, &dir, &["--once", "--dump-dir", &dump_dir, "--dump-every", "1"]);
        r.expect_success(RUN);
        let mut shown = 0;
        for entry in std::fs::read_dir(&dumps).unwrap() {
            let ppm = std::fs::read(entry.unwrap().path()).unwrap();
            let (w, h, rgb) = read_ppm(&ppm).unwrap();
            assert_eq!((w, h), (320, 240), "{kind}");
            let p = psnr(rgb, &xrgb_to_rgb(&want));
            assert!(p.is_infinite(), "{kind}: a shown frame differs from the file's decode ({p:.1} dB)");
            shown += 1;
        }
        assert!(shown >= 5, "{kind}: {shown} frames dumped");
        drop(server);
    }
}

#[test]
fn logs_in_with_the_url_s_credentials_and_fails_clearly_without() {
    let _g = serial();
    let port = free_port();
    let args = ["--size", "160x120", "--user", "viewer", "--password", "s3cret"];
    let Some(server) = GstServer::serve("rtsp_client", port, &args) else { return };
    let dir = scratch_dir("rtsp-auth");
    let mut r = recv("auth", &server.url_with("viewer", "s3cret"), "tcp", 10, &dir, &["--once"]);
    r.expect_success(RUN);
    assert_eq!(summary(&dir.join("auth.jsonl")).frames, 10);
    // No credentials, then wrong ones: the receiver stops at once (no reconnecting), saying why.
    for (name, url, says) in [
        ("anon", server.url.clone(), "needs credentials"),
        ("wrong", server.url_with("viewer", "nope"), "refused the credentials"),
    ] {
        let mut r = recv(name, &url, "tcp", 10, &dir, &[]);
        let st = r.wait(Duration::from_secs(20));
        assert!(!st.success(), "{name}: exited 0");
        let err = r.stderr();
        assert!(err.contains(says) && err.contains("401"), "{name}: {err}");
    }
}

/// The server goes away mid-stream and comes back on the same port: the receiver reconnects
/// (with backoff, as `--connect` does) and plays on.
#[test]
fn a_server_that_comes_back_is_reconnected() {
    let _g = serial();
    let port = free_port();
    let Some(server) = GstServer::serve("rtsp_client", port, &["--size", "160x120", "--fps", "30"]) else { return };
    let dir = scratch_dir("rtsp-reconnect");
    let url = server.url.clone();
    let mut r = recv("reconnect", &url, "tcp", 200, &dir, &[]);
    assert!(r.wait_for_stderr("rtsp playing", Duration::from_secs(20)), "never played:\n{}", r.stderr());
    std::thread::sleep(Duration::from_millis(1500));
    drop(server);
    assert!(
        r.wait_for_stderr("rtsp session closed", Duration::from_secs(20))
            || r.wait_for_stderr("rtsp session ended", Duration::from_secs(1)),
        "the lost server went unnoticed:\n{}",
        r.stderr()
    );
    let Some(_again) = GstServer::serve("rtsp_client", port, &["--size", "160x120", "--fps", "30"]) else { return };
    assert!(r.wait_for_stderr_n("rtsp playing", 2, Duration::from_secs(30)), "no second session:\n{}", r.stderr());
    r.expect_success(RUN);
    let s = summary(&dir.join("reconnect.jsonl"));
    assert_eq!(s.frames, 200);
    assert!(s.reconnects >= 1, "{s:?}");
}

/// `send --rtsp` on this host: its SDP names our clock, so capture→displayed is known for
/// every frame (clock `shared`), over UDP and TCP; a 2560x1440 stream (0 in the RFC 2435
/// header, `a=x-dimensions` in the SDP) comes at its size; with `--key-file` the token in
/// the URL logs in (Digest, which the server offers first).
#[test]
fn framecast_s_own_rtsp_server_gives_exact_latency() {
    let _g = serial();
    let dir = scratch_dir("rtsp-framecast");
    let key = dir.join("key");
    let mut kg = Proc::spawn("keygen", &["keygen", key.to_str().unwrap()]);
    kg.expect_success(Duration::from_secs(20));
    let token = framecast::net::secure::Key::load(&key).unwrap().http_token();
    for (size, transport, keyed) in [("320x240", "udp", false), ("320x240", "tcp", true), ("2560x1440", "tcp", false)] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args =
            vec!["send", "--source", "test", "--size", size, "--fps", "30", "--duration", "40", "--rtsp", &addr];
        if keyed {
            args.extend_from_slice(&["--key-file", key.to_str().unwrap()]);
        }
        let send = Proc::spawn("send", &args);
        assert!(send.wait_for_stderr("RTSP", Duration::from_secs(20)), "no RTSP:\n{}", send.stderr());
        let url = if keyed { format!("rtsp://viewer:{token}@{addr}/stream") } else { format!("rtsp://{addr}/stream") };
        let name = format!("fc-{size}-{transport}");
        let mut r = recv(&name, &url, transport, 20, &dir, &["--once"]);
        r.expect_success(RUN);
        let s = summary(&dir.join(format!("{name}.jsonl")));
        assert_eq!(s.frames, 20, "{name}");
        let (w, h) = size.split_once('x').map(|(w, h)| (w.parse().unwrap(), h.parse().unwrap())).unwrap();
        assert!(logged_sizes(&dir.join(format!("{name}.csv"))).iter().all(|&s| s == (w, h)), "{name}");
        assert_eq!(s.clock.map(|c| c.source), Some(framecast::stats::ClockSource::Shared), "{name}");
        assert_eq!(s.latency_unknown_frames, Some(0), "{name}: every frame's latency is known");
        assert!(s.latency_capture_displayed_ms.is_some_and(|p| p.count == 20), "{name}: {s:?}");
        drop(send);
    }
}

/// A foreign sender's latency comes from its RTCP sender reports (GStreamer sends the first
/// within a few seconds): the clock source says `rtcp`, and frames after it have a latency.
#[test]
fn a_foreign_sender_s_latency_comes_from_rtcp_sender_reports() {
    let _g = serial();
    let port = free_port();
    let Some(server) = GstServer::serve("rtsp_client", port, &["--size", "160x120", "--fps", "30"]) else { return };
    let dir = scratch_dir("rtsp-rtcp");
    let mut r = recv("rtcp", &server.url, "udp", 240, &dir, &["--once"]);
    r.expect_success(RUN);
    assert!(r.stderr().contains("rtcp sender report: latency"), "{}", r.stderr());
    let s = summary(&dir.join("rtcp.jsonl"));
    assert_eq!(s.clock.map(|c| c.source), Some(framecast::stats::ClockSource::Rtcp), "{s:?}");
    let known = s.latency_capture_displayed_ms.map_or(0, |p| p.count);
    assert!(known > 0 && known + s.latency_unknown_frames.unwrap_or(0) == 240, "{s:?}");
}

/// A server that sets up and plays a session, answers every keep-alive, and never sends RTP:
/// the receiver ends the session once the session timeout (5 s at least) passes without
/// media, says so, and with `--once` exits instead of waiting for ever.
#[test]
fn a_server_that_sends_no_media_ends_the_session() {
    let _g = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", listener.local_addr().unwrap().port());
    let dir = scratch_dir("rtsp-silent");
    let mut r = recv("silent", &url, "tcp", 10, &dir, &["--once"]);
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the receiver did not connect within 10 s ({e}):\n{}", r.stderr()),
        }
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let server = std::thread::spawn(move || answer_without_media(s));
    assert!(r.wait_for_stderr("rtsp playing", Duration::from_secs(10)), "never played:\n{}", r.stderr());
    assert!(
        r.wait_for_stderr("no RTP for 5s while playing", Duration::from_secs(20)),
        "a silent session went unnoticed:\n{}",
        r.stderr()
    );
    r.wait(Duration::from_secs(10));
    let keep_alives = server.join().unwrap();
    assert!(keep_alives >= 2, "{keep_alives} keep-alives in 5 s of a 2 s session timeout");
}

/// Answers OPTIONS, DESCRIBE (a JPEG stream), SETUP (TCP, a 2 s session timeout), PLAY and
/// then keep-alives until the client leaves; sends no media. Returns the keep-alives seen.
fn answer_without_media(s: TcpStream) -> usize {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut keep_alives = 0;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return keep_alives,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let method = head.split(' ').next().unwrap_or("").to_string();
        let cseq = head.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap_or("0").trim().to_string();
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=silent\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=control:track0\r\n";
        let extra = match method.as_str() {
            "OPTIONS" => "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n\r\n".to_string(),
            "DESCRIBE" => format!(
                "Content-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1/cam/\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
            "SETUP" => "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 5150;timeout=2\r\n\r\n".into(),
            "GET_PARAMETER" => {
                keep_alives += 1;
                "Session: 5150;timeout=2\r\n\r\n".into()
            }
            _ => "Session: 5150;timeout=2\r\n\r\n".into(),
        };
        if w.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}").as_bytes()).is_err() {
            return keep_alives;
        }
    }
}
