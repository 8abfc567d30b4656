//! A client of the HTTP endpoint (`send --http`): raw requests, their responses, and an
//! MJPEG reader that records each part of `/stream.mjpg` as it arrives.

use std::io::Read;
use std::net::TcpStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{connect_retry, read_until_closed};

/// An HTTP response read until the server closed the connection.
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, without the blank line.
    pub head: String,
    pub body: Vec<u8>,
    /// Time from sending the request to the end of the response.
    pub took: Duration,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits a complete response (`Connection: close`) into status, head and body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, String, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, head, raw[end + 4..].to_vec()))
}

/// Sends `request` as is to 127.0.0.1:`port` and reads the response until the server closes
/// the connection, at most `timeout`.
pub fn http_raw(port: u16, request: &[u8], timeout: Duration) -> HttpResponse {
    use std::io::Write;
    let mut s = connect_retry(port, Duration::from_secs(5));
    let t0 = Instant::now();
    s.write_all(request).expect("send the request");
    let raw = read_until_closed(&mut s, timeout);
    let took = t0.elapsed();
    let (status, head, body) = parse_response(&raw).unwrap_or_else(|e| panic!("request {:?}: {e}", trunc(request)));
    HttpResponse { status, head, body, took }
}

/// `GET path` on 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> HttpResponse {
    http_raw(port, format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(), timeout)
}

fn trunc(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
    if b.len() > 80 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// The width and height in a JPEG's start-of-frame marker (baseline or progressive).
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            let sof = jpeg.get(i + 4..i + 9)?;
            return Some((u16::from_be_bytes([sof[3], sof[4]]), u16::from_be_bytes([sof[1], sof[2]])));
        }
        i += 2 + len;
    }
    None
}

/// One complete part of a multipart MJPEG stream, as a client saw it.
#[derive(Clone, Debug)]
pub struct MjpegPart {
    /// When its last byte arrived, since the connection was made.
    pub at: Duration,
    /// `X-Framecast-Seq`, if the part had one.
    pub seq: Option<u64>,
    pub len: usize,
}

/// What one MJPEG client saw.
#[derive(Debug, Default)]
pub struct MjpegLog {
    /// The client's local port (the sender's `links[].peer` ends with it).
    pub local_port: u16,
    pub status: u16,
    pub content_type: String,
    pub parts: Vec<MjpegPart>,
    pub bytes: u64,
    /// How long the client ran, from the connection to its end.
    pub ran: Duration,
    /// Why it stopped early (connection closed, malformed part), if it did.
    pub ended: Option<String>,
}

impl MjpegLog {
    /// Parts per second over [`from`, end of run].
    pub fn fps_after(&self, from: Duration) -> f64 {
        let n = self.parts.iter().filter(|p| p.at >= from).count();
        let span = self.ran.saturating_sub(from).as_secs_f64();
        if span > 0.0 {
            n as f64 / span
        } else {
            0.0
        }
    }

    /// The fewest parts completed in any whole second of [`from`, end of run].
    pub fn min_parts_per_second(&self, from: Duration) -> usize {
        let secs = self.ran.saturating_sub(from).as_secs();
        (0..secs)
            .map(|k| {
                let (a, b) = (from + Duration::from_secs(k), from + Duration::from_secs(k + 1));
                self.parts.iter().filter(|p| p.at >= a && p.at < b).count()
            })
            .min()
            .unwrap_or(0)
    }
}

/// How an MJPEG client reads.
#[derive(Clone, Copy, Debug)]
pub struct MjpegClient {
    /// Stop after this long.
    pub run_for: Duration,
    /// Read at most this many bytes at a time, then sleep `pause` (a slow client), or read as
    /// fast as possible when `None`.
    pub throttle: Option<(usize, Duration)>,
    /// SO_RCVBUF to set before connecting (a small one keeps the kernel from buffering
    /// seconds of video on a slow client's behalf).
    pub rcvbuf: Option<usize>,
}

/// Starts a thread that GETs /stream.mjpg from 127.0.0.1:`port` and parses the multipart
/// stream, recording each complete part, until `run_for` passes or the server closes.
pub fn spawn_mjpeg_client(port: u16, how: MjpegClient) -> JoinHandle<MjpegLog> {
    thread::Builder::new()
        .name(format!("mjpeg-client-{port}"))
        .spawn(move || mjpeg_client(port, how))
        .expect("spawn an MJPEG client thread")
}

fn mjpeg_client(port: u16, how: MjpegClient) -> MjpegLog {
    use std::io::{ErrorKind, Write};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(n) = how.rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect to the HTTP port");
    let mut s: TcpStream = sock.into();
    let t0 = Instant::now();
    let mut log = MjpegLog { local_port: s.local_addr().map(|a| a.port()).unwrap_or(0), ..Default::default() };
    let deadline = t0 + how.run_for;
    s.write_all(format!("GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parser = PartParser::default();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let want = how.throttle.map_or(chunk.len(), |(n, _)| n.min(chunk.len()));
        let _ = s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))));
        match s.read(&mut chunk[..want]) {
            Ok(0) => {
                log.ended = Some("the server closed the connection".into());
                break;
            }
            Ok(n) => {
                log.bytes += n as u64;
                buf.extend_from_slice(&chunk[..n]);
                let at = t0.elapsed();
                if let Err(e) = parser.feed(&mut buf, at, &mut log) {
                    log.ended = Some(e);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                log.ended = Some(format!("read failed: {e}"));
                break;
            }
        }
        if let Some((_, pause)) = how.throttle {
            thread::sleep(pause);
        }
    }
    log.ran = t0.elapsed();
    log
}

/// Incremental parser of a `multipart/x-mixed-replace` response.
#[derive(Default)]
struct PartParser {
    head_done: bool,
    boundary: String,
    /// Body length (if the part gave a Content-Length) and sequence number of the part
    /// being read, once its headers are parsed.
    body: Option<(Option<usize>, Option<u64>)>,
}

impl PartParser {
    /// Consumes what it can of `buf`, recording complete parts in `log`.
    fn feed(&mut self, buf: &mut Vec<u8>, at: Duration, log: &mut MjpegLog) -> Result<(), String> {
        let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat);
        loop {
            if !self.head_done {
                let Some(end) = find(buf, b"\r\n\r\n") else { return Ok(()) };
                let (status, head, _) = parse_response(&buf[..end + 4])?;
                log.status = status;
                let ct = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                log.content_type = ct.clone();
                if status != 200 {
                    return Err(format!("status {status}: {head}"));
                }
                self.boundary = ct
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("boundary="))
                    .ok_or_else(|| format!("no boundary in Content-Type {ct:?}"))?
                    .trim_matches('"')
                    .to_string();
                buf.drain(..end + 4);
                self.head_done = true;
            }
            match self.body {
                None => {
                    // [CRLF] --boundary CRLF headers CRLF CRLF
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        return if buf.len() > 4096 { Err("part headers over 4 KiB".into()) } else { Ok(()) };
                    };
                    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut lines = text.trim_start_matches("\r\n").lines();
                    let delim = lines.next().unwrap_or("");
                    if delim.trim_end() != format!("--{}", self.boundary) {
                        return Err(format!("expected boundary --{}, got {delim:?}", self.boundary));
                    }
                    let mut len = None;
                    let mut seq = None;
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse::<usize>().ok();
                            } else if k.eq_ignore_ascii_case("x-framecast-seq") {
                                seq = v.trim().parse::<u64>().ok();
                            }
                        }
                    }
                    buf.drain(..end + 4);
                    self.body = Some((len, seq));
                }
                Some((len, seq)) => {
                    // Without a Content-Length (headers sent ahead of their frame), the part
                    // ends at the next delimiter.
                    let len = match len {
                        Some(n) if buf.len() < n => return Ok(()),
                        Some(n) => n,
                        None => match find(buf, format!("\r\n--{}", self.boundary).as_bytes()) {
                            Some(i) => i,
                            None => return Ok(()),
                        },
                    };
                    if len < 4 || buf[..2] != [0xFF, 0xD8] || buf[len - 2..len] != [0xFF, 0xD9] {
                        return Err(format!("part {} is not a whole JPEG (no SOI/EOI)", log.parts.len()));
                    }
                    log.parts.push(MjpegPart { at, seq, len });
                    buf.drain(..len);
                    self.body = None;
                }
            }
        }
    }
}
