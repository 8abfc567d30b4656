//! Access control with real processes on 127.0.0.1: a pre-shared key (`--key-file`) on both
//! ends streams encrypted frames; a wrong key, or a key on one end only, is refused on both
//! sides with a log line saying why and no frame delivered; a record altered on the way ends
//! that connection with an authentication error while the sender goes on serving; HTTP
//! without the token gets 401.

#![cfg(unix)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::http_client::http_raw;
use common::{free_port, scratch_dir, summary, Proc};
use framecast::net::secure::Key;

const EXIT: Duration = Duration::from_secs(30);
const LOG: Duration = Duration::from_secs(10);

/// A new key file made by `framecast keygen`.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    Proc::spawn("keygen", &["keygen", path.to_str().unwrap()]).expect_success(EXIT);
    path
}

fn send_listening(addr: &str, key: Option<&Path>) -> Proc {
    let mut args = vec!["send", "--listen", addr, "--size", "320x240", "--duration", "25"];
    if let Some(k) = key {
        args.extend(["--key-file", k.to_str().unwrap()]);
    }
    Proc::spawn("send", &args)
}

/// `recv --connect ADDR --once`, stopping after `frames` frames or 8 s.
fn recv_connecting(name: &str, addr: &str, key: Option<&Path>, frames: &str, json: &Path) -> Proc {
    let mut args = vec!["recv", "--connect", addr, "--once", "--headless", "--duration", "8", "--frames", frames];
    args.extend(["--stats-json", json.to_str().unwrap()]);
    if let Some(k) = key {
        args.extend(["--key-file", k.to_str().unwrap()]);
    }
    Proc::spawn(name, &args)
}

/// Which way a relay alters a byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    /// Sender to viewer (the relay's upstream socket to its client).
    Down,
    /// Viewer to sender.
    Up,
}

/// Relays one connection accepted on `listener` to 127.0.0.1:`to`, both ways, XOR-ing the byte
/// at offset `flip.1` of direction `flip.0` with 0x01. Returns what went down (sender to
/// viewer, at most 8 MB). Bounded: gives up after 20 s.
fn relay(listener: TcpListener, to: u16, flip: Option<(Dir, usize)>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("relay: no client: {e}"),
            }
        };
        client.set_nonblocking(false).unwrap();
        let server = TcpStream::connect(("127.0.0.1", to)).expect("relay: connect to the sender");
        let down = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let pipe = |from: TcpStream, to: TcpStream, dir: Dir, record: Option<Arc<Mutex<Vec<u8>>>>| {
            let done = done.clone();
            thread::spawn(move || {
                let (mut from, mut to) = (from, to);
                from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut offset = 0usize;
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let n = match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                        Err(_) => break,
                    };
                    if let Some((d, at)) = flip {
                        if d == dir && (offset..offset + n).contains(&at) {
                            buf[at - offset] ^= 0x01;
                        }
                    }
                    if let Some(r) = &record {
                        let mut r = r.lock().unwrap();
                        if r.len() < 8 << 20 {
                            r.extend_from_slice(&buf[..n]);
                        }
                    }
                    offset += n;
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                done.store(true, Ordering::Relaxed);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            })
        };
        let up = pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), Dir::Up, None);
        let dn = pipe(server, client, Dir::Down, Some(down.clone()));
        let _ = up.join();
        let _ = dn.join();
        let bytes = down.lock().unwrap().clone();
        bytes
    })
}

fn relay_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Both ends with the same key stream frames, and what crosses the network is not JPEG: the
/// same relay sees JPEG markers in an unkeyed stream, so the check can tell the two apart.
#[test]
fn keyed_sender_and_viewer_stream_encrypted_frames() {
    let _serial = common::serial();
    let dir = scratch_dir("secure-ok");
    let key = keygen(&dir, "k");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keygen writes a private file");
    }
    let mut seen = Vec::new();
    for keyed in [true, false] {
        let k = keyed.then_some(key.as_path());
        let send_addr = format!("127.0.0.1:{}", free_port());
        let send = send_listening(&send_addr, k);
        let (l, relay_addr) = relay_listener();
        let port: u16 = send_addr.rsplit(':').next().unwrap().parse().unwrap();
        common::connect_retry(port, Duration::from_secs(10)); // the sender is listening
        let wire = relay(l, port, None);
        let json = dir.join(format!("recv-{keyed}.jsonl"));
        let mut recv = recv_connecting("recv", &relay_addr, k, "30", &json);
        recv.expect_success(EXIT);
        let r = summary(&json);
        assert!(r.frames >= 30, "keyed={keyed}: {r:?}");
        let wire = wire.join().unwrap();
        seen.push((keyed, contains(&wire, b"JFIF"), wire.len()));
        if keyed {
            assert!(recv.stderr().contains("the sender proved it holds the key"), "viewer log:\n{}", recv.stderr());
            assert!(send.wait_for_stderr("the viewer proved it holds the key", LOG), "sender log:\n{}", send.stderr());
        }
    }
    assert_eq!(
        seen.iter().map(|&(k, jpeg, _)| (k, jpeg)).collect::<Vec<_>>(),
        [(true, false), (false, true)],
        "(keyed, JPEG visible on the wire) with byte counts {seen:?}"
    );
}

/// A viewer with another key is refused: both sides log why, and no frame arrives.
#[test]
fn wrong_key_is_refused_on_both_sides() {
    let _serial = common::serial();
    let dir = scratch_dir("secure-wrong");
    let (k1, k2) = (keygen(&dir, "k1"), keygen(&dir, "k2"));
    let addr = format!("127.0.0.1:{}", free_port());
    let send = send_listening(&addr, Some(&k1));
    let json = dir.join("recv.jsonl");
    let mut recv = recv_connecting("recv", &addr, Some(&k2), "5", &json);
    recv.wait(EXIT);
    let log = recv.stderr();
    assert!(log.contains("the sender's key differs from ours"), "viewer log:\n{log}");
    assert_eq!(summary(&json).received, Some(0), "no frame may reach a viewer with a wrong key");
    assert!(
        send.wait_for_stderr("the viewer refused the secure handshake: its key differs from ours", LOG),
        "sender log:\n{}",
        send.stderr()
    );
    // The sender still serves a viewer with the right key.
    let json = dir.join("recv-ok.jsonl");
    recv_connecting("recv-ok", &addr, Some(&k1), "10", &json).expect_success(EXIT);
    assert!(summary(&json).frames >= 10);
}

/// A key on one end only: each side names the mismatch, both ways round.
#[test]
fn keyed_and_unkeyed_peers_refuse_each_other() {
    let _serial = common::serial();
    let dir = scratch_dir("secure-half");
    let key = keygen(&dir, "k");
    for sender_keyed in [true, false] {
        let addr = format!("127.0.0.1:{}", free_port());
        let send = send_listening(&addr, sender_keyed.then_some(key.as_path()));
        let json = dir.join(format!("recv-{sender_keyed}.jsonl"));
        let mut recv = recv_connecting("recv", &addr, (!sender_keyed).then_some(key.as_path()), "5", &json);
        recv.wait(EXIT);
        let (viewer_says, sender_says) = if sender_keyed {
            ("the sender requires a key but this viewer has none", "the viewer has no key but this sender requires one")
        } else {
            ("the sender has no key but this viewer requires one", "the viewer requires a key but this sender has none")
        };
        assert!(recv.stderr().contains(viewer_says), "viewer log:\n{}", recv.stderr());
        assert!(send.wait_for_stderr(sender_says, LOG), "sender log:\n{}", send.stderr());
        assert_eq!(summary(&json).received, Some(0));
    }
}

/// One byte altered by a relay after the handshake ends that connection with an
/// authentication error (seen by whichever end reads the altered record), and the sender
/// serves the next viewer.
#[test]
fn a_tampered_record_ends_the_connection_and_the_sender_keeps_serving() {
    let _serial = common::serial();
    let dir = scratch_dir("secure-tamper");
    let key = keygen(&dir, "k");
    let addr = format!("127.0.0.1:{}", free_port());
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let send = send_listening(&addr, Some(&key));
    common::connect_retry(port, Duration::from_secs(10));
    // Hello (24 bytes) and the handshake message (2 + 48) come first; byte 81 is inside the
    // first encrypted record of that direction.
    const IN_FIRST_RECORD: usize = 24 + 50 + 7;
    for (i, dir_) in [Dir::Down, Dir::Up].into_iter().enumerate() {
        let (l, relay_addr) = relay_listener();
        let relayed = relay(l, port, Some((dir_, IN_FIRST_RECORD)));
        let json = dir.join(format!("recv-{i}.jsonl"));
        let mut recv = recv_connecting("recv-tampered", &relay_addr, Some(&key), "5", &json);
        recv.wait(EXIT);
        let _ = relayed.join();
        if dir_ == Dir::Down {
            let log = recv.stderr();
            assert!(log.contains("failed authentication"), "viewer log:\n{log}");
            assert!(log.contains("dropped connection from sender"), "viewer log:\n{log}");
        } else {
            assert!(
                send.wait_for_stderr("failed authentication", LOG),
                "sender log (viewer-to-sender byte altered):\n{}",
                send.stderr()
            );
        }
        assert!(summary(&json).frames < 5, "a tampered connection delivers at most a few frames");
    }
    let json = dir.join("recv-next.jsonl");
    recv_connecting("recv-next", &addr, Some(&key), "10", &json).expect_success(EXIT);
    assert!(summary(&json).frames >= 10);
}

/// With a key, every HTTP request needs the token derived from it: 401 without it or with a
/// wrong one, 200 with it in the query, a Bearer header, or the cookie the page sets.
#[test]
fn http_requires_the_token() {
    let _serial = common::serial();
    let dir = scratch_dir("secure-http");
    let key = keygen(&dir, "k");
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let send = Proc::spawn(
        "send",
        &["send", "--http", &http, "--size", "320x240", "--duration", "20", "--key-file", key.to_str().unwrap()],
    );
    assert!(send.wait_for_stderr("HTTP (key required)", LOG), "{}", send.stderr());
    let token = Key::load(&key).unwrap().http_token();
    let log = send.stderr();
    assert!(log.contains(&format!("http://{http}/?token={token}")), "the sender prints the URL with the token:\n{log}");
    assert!(!log.contains(&Key::load(&key).unwrap().to_hex()), "the key itself must not be logged");
    let get = |path: &str, extra: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n{extra}\r\n");
        http_raw(port, req.as_bytes(), Duration::from_secs(10))
    };
    for (path, extra) in [
        ("/snapshot.jpg", ""),
        ("/", ""),
        ("/stream.mjpg", ""),
        ("/snapshot.jpg?token=0000", ""),
        ("/snapshot.jpg", "Authorization: Bearer wrong\r\n"),
        ("/stats", "Cookie: framecast_token=wrong\r\n"),
    ] {
        let r = get(path, extra);
        assert_eq!(r.status, 401, "{path} {extra:?}: {}", r.head);
        assert!(r.head.contains("WWW-Authenticate: Bearer"), "{}", r.head);
    }
    let r = get(&format!("/snapshot.jpg?token={token}"), "");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(&r.body[..2], [0xff, 0xd8], "a JPEG");
    let r = get("/snapshot.jpg", &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(r.status, 200, "{}", r.head);
    let r = get(&format!("/?token={token}"), "");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.head.contains(&format!("Set-Cookie: framecast_token={token};")), "{}", r.head);
    let r = get("/snapshot.jpg", &format!("Cookie: framecast_token={token}\r\n"));
    assert_eq!(r.status, 200, "{}", r.head);
}

/// Listening where other hosts can reach without a key is allowed, with a warning.
#[test]
fn open_sockets_without_a_key_are_warned_about() {
    let dir = scratch_dir("secure-warn");
    let key = keygen(&dir, "k");
    let warning = "reachable from other hosts without a key";
    let addr = format!("0.0.0.0:{}", free_port());
    let run = |extra: &[&str]| {
        let mut args = vec!["recv", "--listen", &addr, "--headless", "--duration", "0.3"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn("recv", &args);
        p.expect_success(EXIT);
        p.stderr()
    };
    assert!(run(&[]).contains(warning));
    assert!(!run(&["--key-file", key.to_str().unwrap()]).contains(warning));
    let local = format!("127.0.0.1:{}", free_port());
    let mut p = Proc::spawn("recv", &["recv", "--listen", &local, "--headless", "--duration", "0.3"]);
    p.expect_success(EXIT);
    assert!(!p.stderr().contains(warning), "loopback is not open to other hosts");
}

/// Key file problems stop the program at start with a message naming the flag and the file.
#[test]
fn bad_key_files_are_clear_errors() {
    let dir = scratch_dir("secure-badkey");
    let short = dir.join("short");
    std::fs::write(&short, "abcd\n").unwrap();
    let missing = dir.join("missing");
    for (path, want) in [
        (&missing, "cannot read the key file"),
        (&short, "expected 64 hex digits (a 32-byte key, as `framecast keygen` writes), found 4 hex digits"),
    ] {
        let mut p = Proc::spawn("send", &["send", "--listen", "127.0.0.1:0", "--key-file", path.to_str().unwrap()]);
        assert!(!p.wait(EXIT).success());
        let log = p.stderr();
        assert!(log.contains("--key-file:") && log.contains(want), "{log}");
    }
    // The environment variable is the alternative to the flag.
    let mut p = Proc::spawn_with("recv", &["recv", "--listen", "127.0.0.1:0", "--headless"], |c| {
        c.env("FRAMECAST_KEY_FILE", &short);
    });
    assert!(!p.wait(EXIT).success());
    assert!(
        p.stderr().contains("FRAMECAST_KEY_FILE: key file") && p.stderr().contains("found 4 hex digits"),
        "{}",
        p.stderr()
    );
}
