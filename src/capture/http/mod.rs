//! HTTP cameras: `--source http://[user:pass@]host/path`, a multipart MJPEG stream
//! (mjpg-streamer, µStreamer, an ESP32-CAM, an IP camera, another framecast's
//! `/stream.mjpg`) or a JPEG snapshot URL polled at `--fps`, told apart by the response's
//! Content-Type. This file owns the connection (ureq: plain HTTP, connect and per-read
//! timeouts, Basic or Digest credentials from the URL) and the two [`FrameSource`]s; the
//! multipart framing is [`multipart`], the JPEG framing [`crate::capture::mjpeg::Scanner`].
//!
//! Timing: a frame's capture time is when its last byte arrived, unless it carries framecast's
//! `X-Timestamp` together with an `X-Framecast-Clock` equal to ours (a framecast on this
//! host), which is then taken as it is.
//!
//! Every failure is [`CaptureError::Remote`] naming the URL without its credentials: at the
//! first open the process exits with it; later the capture thread shows "no signal" and
//! reopens the URL with backoff.

pub mod multipart;

use std::io::Read;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use self::multipart::{Multipart, PartInfo};
use super::mjpeg::Scanner;
use super::{interrupted, CaptureError, FrameSource, Layout, RawFrame};
use crate::clock::now_us;
use crate::rtsp::client::percent_decode;
use crate::rtsp::{basic_authorization, digest_response, dump, parse_auth, AuthParams, DigestInput};

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the response's status line and headers may take.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read may wait for bytes: a camera that stalls this long (mid-part or between
/// parts) ends the session, and the capture thread reconnects.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one part of a multipart stream may take from its first byte to its end: a camera
/// that trickles bytes (each read within [`STALL_TIMEOUT`]) but never finishes the image ends
/// the session as stalled.
pub const PART_TIMEOUT: Duration = Duration::from_secs(10);
/// Parts in a row that are skipped (not JPEG, broken, no size) before the session is given up.
pub const MAX_BAD_PARTS: u64 = 30;

/// Opens the URL and recognises what it serves from the response's Content-Type.
pub fn open(url: &str, fps: u32, max_frame: usize) -> Result<Box<dyn FrameSource>, CaptureError> {
    let mut client = Client::new(Target::parse(url)?);
    let resp = client.get()?;
    let content_type = header(&resp, "content-type").unwrap_or_default();
    match Kind::of(&content_type) {
        Some(Kind::Multipart(boundary)) => {
            info!(url = %client.target.name, boundary = %boundary, "http source: multipart MJPEG stream (frames as they come)");
            Ok(Box::new(MjpegStream::start(client.target.name, resp, &boundary, max_frame)?))
        }
        Some(Kind::Jpeg) => {
            info!(url = %client.target.name, fps, "http source: JPEG snapshot, polled at --fps");
            Ok(Box::new(Snapshot::start(client, resp, max_frame)?))
        }
        None => {
            let start = body_start(resp);
            Err(client.target.remote(format!(
                "expected multipart/x-mixed-replace (an MJPEG stream) or image/jpeg (a snapshot), got Content-Type {}; the body begins {start}",
                dump(content_type.as_bytes())
            )))
        }
    }
}

/// The URL, split: what is requested, what is shown, and the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL without credentials: requested, and named in the log and in errors.
    pub name: String,
    /// Path and query, for Digest's `uri`.
    pub path: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Target {
    /// Parses `http://[user[:pass]@]host[:port][/path]`. `https://` is refused: no TLS in the
    /// build.
    pub fn parse(url: &str) -> Result<Target, CaptureError> {
        let lower = url.to_ascii_lowercase();
        let bad = |name: &str, what: String| CaptureError::Remote { name: name.to_string(), what };
        let Some(rest) = lower.starts_with("http://").then(|| &url[7..]) else {
            let shown = strip_userinfo(url);
            if lower.starts_with("https://") {
                return Err(bad(&shown, "https is not supported: this source speaks plain http only (framecast is built without TLS). Use the camera's http:// URL, or a local TLS proxy in front of it (e.g. `socat TCP-LISTEN:8081,fork,reuseaddr OPENSSL:CAMERA:443`) and --source http://127.0.0.1:8081/PATH".into()));
            }
            return Err(bad(&shown, "expected an http:// URL".into()));
        };
        if let Some(why) = crate::rtsp::client::misplaced_userinfo(url) {
            return Err(bad(&strip_userinfo(url), why));
        }
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(auth_end);
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let path = path.split('#').next().unwrap_or_default();
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        let name = format!("http://{host}{path}");
        if host.is_empty() {
            return Err(bad(&name, "no host in the URL: expected http://[USER:PASS@]HOST[:PORT]/PATH".into()));
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (Some(percent_decode(user)), Some(percent_decode(pass)))
            }
        };
        Ok(Target { name, path, user, password })
    }

    fn remote(&self, what: String) -> CaptureError {
        CaptureError::Remote { name: self.name.clone(), what }
    }
}

/// The URL with any `user:pass@` removed, for messages about a URL that did not parse.
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        // The last '@' anywhere ends the user info: a password pasted with a '/' in it is
        // not shown in part.
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or_default()),
        None => url.to_string(),
    }
}

/// What the response carries.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `multipart/x-mixed-replace` (any multipart), with its boundary (maybe empty).
    Multipart(String),
    Jpeg,
}

impl Kind {
    fn of(content_type: &str) -> Option<Kind> {
        let mut fields = content_type.split(';');
        let mime = fields.next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime.starts_with("multipart/") {
            let boundary = fields
                .filter_map(|f| f.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| multipart::clean_boundary(v).to_string())
                .unwrap_or_default();
            return Some(Kind::Multipart(boundary));
        }
        matches!(mime.as_str(), "image/jpeg" | "image/jpg" | "image/pjpeg").then_some(Kind::Jpeg)
    }
}

type Response = ureq::http::Response<ureq::Body>;

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The first bytes of a body that is not what was expected, for the error message.
fn body_start(resp: Response) -> String {
    let mut buf = Vec::new();
    let _ = resp.into_body().into_with_config().limit(u64::MAX).reader().take(128).read_to_end(&mut buf);
    if buf.is_empty() {
        "empty".into()
    } else {
        dump(&buf)
    }
}

/// How credentials are sent.
#[derive(Debug)]
enum Auth {
    Basic,
    Digest { challenge: AuthParams, nc: u32 },
}

/// One camera URL and the agent (keep-alive connection) that fetches it.
struct Client {
    agent: ureq::Agent,
    target: Target,
    auth: Option<Auth>,
}

impl Client {
    fn new(target: Target) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            .user_agent(concat!("framecast/", env!("CARGO_PKG_VERSION")))
            .build();
        // Basic up front when the URL has credentials (what cameras expect); a 401 with a
        // Digest challenge switches to Digest.
        let auth = target.user.is_some().then_some(Auth::Basic);
        Client { agent: config.into(), target, auth }
    }

    /// GETs the URL: a 200 response, or an error naming the status.
    fn get(&mut self) -> Result<Response, CaptureError> {
        let resp = self.send()?;
        let resp = match resp.status().as_u16() {
            401 if self.target.user.is_some() && self.digest_from(&resp) => self.send()?,
            _ => resp,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let reason = status.canonical_reason().unwrap_or("");
        let hint = match status.as_u16() {
            401 => self.auth_hint(&resp),
            404 => " (is the path right? mjpg-streamer: /?action=stream, µStreamer: /stream, ESP32-CAM: :81/stream, framecast: /stream.mjpg)".into(),
            _ => String::new(),
        };
        let start = body_start(resp);
        Err(self.target.remote(format!(
            "HTTP {} {reason}{hint}; expected 200 with an MJPEG stream or a JPEG; the body begins {start}",
            status.as_u16()
        )))
    }

    fn send(&mut self) -> Result<Response, CaptureError> {
        let mut req = self.agent.get(&self.target.name);
        if let Some(value) = self.authorization() {
            req = req.header("Authorization", value);
        }
        req.call().map_err(|e| self.target.remote(format!("GET failed: {e}")))
    }

    /// Takes a Digest challenge from a 401 answering Basic. False if there is none (or Digest
    /// was refused already).
    fn digest_from(&mut self, resp: &Response) -> bool {
        if !matches!(self.auth, Some(Auth::Basic)) {
            return false;
        }
        let challenge = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok().and_then(parse_auth))
            .find(|c| c.scheme.eq_ignore_ascii_case("digest") && c.get("nonce").is_some());
        match challenge {
            Some(challenge) => {
                info!(url = %self.target.name, "http camera asks for Digest credentials");
                self.auth = Some(Auth::Digest { challenge, nc: 0 });
                true
            }
            None => false,
        }
    }

    fn auth_hint(&self, resp: &Response) -> String {
        let schemes: Vec<String> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(' ').next().unwrap_or_default().to_string())
            .collect();
        let asked = if schemes.is_empty() { "no WWW-Authenticate".into() } else { schemes.join(", ") };
        match &self.auth {
            None => {
                format!(" (the camera wants credentials ({asked}): give them in the URL, http://USER:PASS@HOST/PATH)")
            }
            Some(Auth::Basic) => {
                format!(" (Basic credentials refused; the camera asks for {asked}; Basic and Digest are supported)")
            }
            Some(Auth::Digest { .. }) => " (Digest credentials refused)".into(),
        }
    }

    fn authorization(&mut self) -> Option<String> {
        let user = self.target.user.as_deref().unwrap_or_default();
        let password = self.target.password.as_deref().unwrap_or_default();
        match self.auth.as_mut()? {
            Auth::Basic => Some(basic_authorization(user, password)),
            Auth::Digest { challenge, nc } => {
                *nc += 1;
                let (realm, nonce) = (challenge.get("realm").unwrap_or(""), challenge.get("nonce").unwrap_or(""));
                let qop = challenge.get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"));
                let (nc_hex, cnonce) = (format!("{nc:08x}"), format!("{:016x}", now_us() ^ 0x5bd1_e995));
                let uri = self.target.path.as_str();
                let response = digest_response(&DigestInput {
                    user,
                    realm,
                    password,
                    method: "GET",
                    uri,
                    nonce,
                    qop_auth: qop.then_some((nc_hex.as_str(), cnonce.as_str())),
                });
                let mut v = format!(
                    "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
                );
                if let Some(o) = challenge.get("opaque") {
                    v.push_str(&format!(", opaque=\"{o}\""));
                }
                if qop {
                    v.push_str(&format!(", qop=auth, nc={nc_hex}, cnonce=\"{cnonce}\""));
                }
                Some(v)
            }
        }
    }
}

/// The capture time of an image that arrived at `arrived_us`: its own timestamp if it is on
/// our clock (framecast's `X-Timestamp` with our `X-Framecast-Clock`), else the arrival.
pub fn capture_time(info: &PartInfo, arrived_us: u64) -> u64 {
    match (info.timestamp_us, info.clock) {
        (Some(ts), Some(clock)) if clock == crate::clock::clock_id() && ts > 0 && ts <= arrived_us => ts,
        _ => arrived_us,
    }
}

/// Width and height from a JPEG's SOF.
fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), String> {
    let h =
        crate::codec::restart::parse_header(jpeg).map_err(|e| format!("a JPEG without a usable frame header: {e}"))?;
    if h.width == 0 || h.height == 0 {
        return Err(format!("a JPEG of {}x{} pixels", h.width, h.height));
    }
    Ok((u32::from(h.width), u32::from(h.height)))
}

/// Fills `frame` with a JPEG already in `frame.data`.
fn set_jpeg(frame: &mut RawFrame, seq: u64, size: (u32, u32), capture_us: u64) {
    frame.seq = seq;
    frame.width = size.0;
    frame.height = size.1;
    frame.layout = Layout::Jpeg;
    frame.capture_us = capture_us;
}

fn read_error(target: &str, e: std::io::Error, frames: u64) -> CaptureError {
    let timed_out = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
        || e.get_ref()
            .and_then(|x| x.downcast_ref::<ureq::Error>())
            .is_some_and(|x| matches!(x, ureq::Error::Timeout(_)));
    let what = if timed_out {
        format!("the camera stalled: no bytes for {STALL_TIMEOUT:?} (after {frames} frames)")
    } else {
        format!("cannot read the stream (after {frames} frames): {e}")
    };
    CaptureError::Remote { name: target.to_string(), what }
}

/// Why a [`Bounded`] read gave up.
#[derive(Debug, thiserror::Error)]
enum Overdue {
    #[error("stopped while reading the snapshot")]
    Stopped,
    #[error("a snapshot not complete {PART_TIMEOUT:?} after it was asked for")]
    Late,
}

/// A snapshot's body, read until `until` at the latest (each read is bounded by
/// [`STALL_TIMEOUT`]), and not past a stop ([`interrupted`]).
struct Bounded<R> {
    inner: R,
    until: Instant,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if interrupted() {
            return Err(std::io::Error::other(Overdue::Stopped));
        }
        if Instant::now() >= self.until {
            return Err(std::io::Error::other(Overdue::Late));
        }
        self.inner.read(buf)
    }
}

/// A multipart MJPEG stream: frames as the camera sends them.
struct MjpegStream {
    name: String,
    body: ureq::BodyReader<'static>,
    parts: Multipart,
    size: (u32, u32),
    /// The first frame, read at open to learn the size.
    first: Option<(Vec<u8>, u64)>,
    seq: u64,
    /// When the last read returned: the arrival time of every part it completed.
    read_us: u64,
    /// When the part being read began to arrive (see [`PART_TIMEOUT`]).
    part_since: Option<Instant>,
    warned_size: bool,
}

impl MjpegStream {
    fn start(name: String, resp: Response, boundary: &str, max_frame: usize) -> Result<Self, CaptureError> {
        if boundary.is_empty() {
            warn!(url = %name, "multipart stream without a boundary in its Content-Type; following its parts as they come");
        }
        let body = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut s = MjpegStream {
            name,
            body,
            parts: Multipart::new(boundary, max_frame),
            size: (0, 0),
            first: None,
            seq: 0,
            read_us: now_us(),
            part_since: None,
            warned_size: false,
        };
        let mut data = Vec::new();
        let (size, at) = s.next_image(&mut data)?;
        s.size = size;
        s.first = Some((data, at));
        Ok(s)
    }

    /// Reads up to the next usable image (into `out`): its size and capture time.
    fn next_image(&mut self, out: &mut Vec<u8>) -> Result<((u32, u32), u64), CaptureError> {
        let bad = self.parts.stats.bad_parts;
        let mut unusable = 0;
        loop {
            let part = self
                .parts
                .next_part()
                .map_err(|e| CaptureError::Remote { name: self.name.clone(), what: e.to_string() })?;
            if let Some(part) = part {
                match jpeg_size(part.image) {
                    Ok(size) => {
                        self.part_since = None;
                        out.clear();
                        out.extend_from_slice(part.image);
                        return Ok((size, capture_time(&part.info, self.read_us)));
                    }
                    Err(e) => {
                        unusable += 1;
                        if !std::mem::replace(&mut self.warned_size, true) {
                            warn!(url = %self.name, offset = part.offset, "multipart part skipped: {e}");
                        }
                    }
                }
                continue;
            }
            let skipped = self.parts.stats.bad_parts - bad + unusable;
            if skipped > MAX_BAD_PARTS {
                return Err(self
                    .remote(format!("{skipped} parts in a row were not usable JPEG images (see the warnings above)")));
            }
            self.fill()?;
        }
    }

    /// One read from the socket into the multipart reader; fails instead once the capture
    /// thread is interrupted, or the part being read is older than [`PART_TIMEOUT`].
    fn fill(&mut self) -> Result<(), CaptureError> {
        let frames = self.parts.stats.parts;
        if interrupted() {
            return Err(self.remote("stopped while reading the stream".into()));
        }
        if !self.parts.in_part() {
            self.part_since = None;
        } else if self.part_since.get_or_insert_with(Instant::now).elapsed() > PART_TIMEOUT {
            return Err(self.remote(format!(
                "the camera stalled: a part not complete {PART_TIMEOUT:?} after it began (after {frames} frames)"
            )));
        }
        let space = self.parts.space();
        if space.is_empty() {
            let e = self.parts.stuck();
            return Err(self.remote(e.to_string()));
        }
        let n = match self.body.read(space) {
            Ok(n) => n,
            Err(e) => return Err(read_error(&self.name, e, frames)),
        };
        if n == 0 {
            return Err(self.remote(format!("the camera closed the stream (after {frames} frames)")));
        }
        self.parts.filled(n);
        self.read_us = now_us();
        Ok(())
    }

    fn remote(&self, what: String) -> CaptureError {
        CaptureError::Remote { name: self.name.clone(), what }
    }
}

impl FrameSource for MjpegStream {
    fn describe(&self) -> String {
        format!("HTTP MJPEG stream {} ({}x{})", self.name, self.size.0, self.size.1)
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn self_paced(&self) -> bool {
        true
    }
    fn delivers_jpeg(&self) -> bool {
        true
    }
    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let (size, at) = match self.first.take() {
            Some((data, at)) => {
                frame.data = data;
                (self.size, at)
            }
            None => self.next_image(&mut frame.data)?,
        };
        set_jpeg(frame, self.seq, size, at);
        self.seq += 1;
        Ok(true)
    }
}

/// A JPEG snapshot URL, fetched once a frame (the capture thread paces it to --fps).
struct Snapshot {
    client: Client,
    max: usize,
    size: (u32, u32),
    first: Option<(Vec<u8>, u64)>,
    seq: u64,
}

impl Snapshot {
    fn start(client: Client, resp: Response, max: usize) -> Result<Self, CaptureError> {
        let mut s = Snapshot { client, max, size: (0, 0), first: None, seq: 0 };
        let mut data = Vec::new();
        let (size, at) = s.read(resp, &mut data)?;
        s.size = size;
        s.first = Some((data, at));
        Ok(s)
    }

    fn fetch(&mut self, out: &mut Vec<u8>) -> Result<((u32, u32), u64), CaptureError> {
        let resp = self.client.get()?;
        let content_type = header(&resp, "content-type").unwrap_or_default();
        if Kind::of(&content_type) != Some(Kind::Jpeg) {
            let start = body_start(resp);
            return Err(self.client.target.remote(format!(
                "expected a JPEG snapshot (image/jpeg), got Content-Type {}; the body begins {start}",
                dump(content_type.as_bytes())
            )));
        }
        self.read(resp, out)
    }

    /// Reads a snapshot's body (at most the cap) and checks that it is one whole JPEG.
    fn read(&mut self, resp: Response, out: &mut Vec<u8>) -> Result<((u32, u32), u64), CaptureError> {
        let info = PartInfo {
            timestamp_us: header(&resp, "x-timestamp").and_then(|v| multipart::parse_seconds(v.trim())),
            clock: header(&resp, "x-framecast-clock").and_then(|v| multipart::parse_clock(v.trim())),
            ..PartInfo::default()
        };
        out.clear();
        let limit = self.max as u64;
        let body = resp.into_body().into_with_config().limit(limit).reader();
        let read = Bounded { inner: body, until: Instant::now() + PART_TIMEOUT }.read_to_end(out);
        let arrived = now_us();
        let target = &self.client.target;
        if let Err(e) = read {
            if e.kind() == std::io::ErrorKind::Other && e.get_ref().is_some_and(|x| x.is::<Overdue>()) {
                return Err(target.remote(format!("the camera stalled: {e} (after {} frames)", self.seq)));
            }
            let over = e
                .get_ref()
                .and_then(|x| x.downcast_ref::<ureq::Error>())
                .is_some_and(|x| matches!(x, ureq::Error::BodyExceedsLimit(_)));
            if over {
                return Err(
                    target.remote(format!("snapshot larger than {limit} bytes (a bigger --size raises the cap)"))
                );
            }
            return Err(read_error(&target.name, e, self.seq));
        }
        let len = match Scanner::new(self.max).scan(out) {
            Ok(Some(len)) => len,
            Ok(None) => {
                return Err(
                    target.remote(format!("snapshot of {} bytes ends before its JPEG end marker (FF D9)", out.len()))
                )
            }
            Err(e) => return Err(target.remote(format!("snapshot is not a JPEG: {e}"))),
        };
        out.truncate(len);
        let size = jpeg_size(out).map_err(|e| target.remote(format!("snapshot is {e}")))?;
        Ok((size, capture_time(&info, arrived)))
    }
}

impl FrameSource for Snapshot {
    fn describe(&self) -> String {
        format!("HTTP JPEG snapshot {} ({}x{}), polled at --fps", self.client.target.name, self.size.0, self.size.1)
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn delivers_jpeg(&self) -> bool {
        true
    }
    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let (size, at) = match self.first.take() {
            Some((data, at)) => {
                frame.data = data;
                (self.size, at)
            }
            None => self.fetch(&mut frame.data)?,
        };
        set_jpeg(frame, self.seq, size, at);
        self.seq += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_snapshot_body_is_given_up_at_its_deadline() {
        struct Trickle;
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(10));
                buf[0] = 0;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_millis(100);
        let e = Bounded { inner: Trickle, until }.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("not complete"), "{e}");
        assert!((5..=11).contains(&out.len()), "{} bytes", out.len());
    }

    #[test]
    fn urls() {
        for url in ["http://al:s3/cret@cam/x", "http://al:s3?cret@cam", "http://al:s3#cret@cam:81/x"] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(!e.contains("s3") && !e.contains("cret") && e.contains("percent-encode"), "{url}: {e}");
        }
        let t = Target::parse("http://admin:p%40ss@cam.local:8080/video?x=1").unwrap();
        assert_eq!(t.name, "http://cam.local:8080/video?x=1");
        assert_eq!(t.path, "/video?x=1");
        assert_eq!((t.user.as_deref(), t.password.as_deref()), (Some("admin"), Some("p@ss")));
        let t = Target::parse("HTTP://cam").unwrap();
        assert_eq!((t.name.as_str(), t.user), ("http://cam/", None));
        let e = Target::parse("https://u:secret@cam/x").unwrap_err().to_string();
        assert!(e.starts_with("https://cam/x: https is not supported") && !e.contains("secret"), "{e}");
        assert!(Target::parse("http:///x").unwrap_err().to_string().contains("no host"));
    }

    #[test]
    fn content_types() {
        let m = |b: &str| Some(Kind::Multipart(b.into()));
        assert_eq!(Kind::of("multipart/x-mixed-replace;boundary=boundarydonotcross"), m("boundarydonotcross"));
        assert_eq!(Kind::of("multipart/x-mixed-replace; boundary=\"--frame\""), m("frame"));
        assert_eq!(Kind::of("Multipart/X-Mixed-Replace"), m(""));
        assert_eq!(Kind::of("image/jpeg"), Some(Kind::Jpeg));
        assert_eq!(Kind::of("text/html; charset=utf-8"), None);
    }

    #[test]
    fn own_clock_timestamps_only() {
        let ours = PartInfo { timestamp_us: Some(1_000), clock: Some(crate::clock::clock_id()), ..PartInfo::default() };
        assert_eq!(capture_time(&ours, 5_000), 1_000);
        let theirs = PartInfo { clock: Some([7; 16]), ..ours.clone() };
        assert_eq!(capture_time(&theirs, 5_000), 5_000);
        let no_clock = PartInfo { clock: None, ..ours.clone() };
        assert_eq!(capture_time(&no_clock, 5_000), 5_000);
        assert_eq!(capture_time(&ours, 500), 500, "a timestamp after arrival is not believed");
    }
}
