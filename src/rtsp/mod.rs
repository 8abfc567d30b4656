//! RTSP on the wire, for both ends: the server (`send --rtsp`), the publisher (`send
//! --publish`) and the client (`recv --connect rtsp://`).
//!
//! This file owns what both ends read and write on an RTSP connection: messages (requests and
//! responses, parsed and written by `rtsp-types`) and `$`-interleaved binary frames (RTP and
//! RTCP over the TCP connection, RFC 2326 section 10.12), read through [`decode`] (pure code
//! over bytes, with caps checked before anything is buffered) and [`MessageReader`] (the
//! socket's buffer); and HTTP-style authentication (RFC 2617, as RTSP uses it): Basic, and
//! Digest with MD5, the parameter parser and the response hash both ends compute.
//!
//! It runs on whichever thread owns the connection (an RTSP session's, the publisher's, the
//! client's reader). [`client`] is the client connection; [`play`] plays a stream on it, for
//! `recv --connect rtsp://` and `send --source rtsp://`.

pub mod client;
pub mod play;

use std::io::{self, Read};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use rtsp_types::{Message, ParseError};
use thiserror::Error;

/// Largest message head (request or status line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest message body (an SDP, a GET_PARAMETER's parameters).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest interleaved frame: its length field has 16 bits.
pub const MAX_INTERLEAVED: usize = 4 + u16::MAX as usize;

/// Why bytes from the peer are not an RTSP message or interleaved frame.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("no end of the message head (a blank line) in the first {max} bytes, which begin {dump}")]
    HeadTooLarge { max: usize, dump: String },
    #[error("message body of {len} bytes (Content-Length), more than the {max} accepted")]
    BodyTooLarge { len: usize, max: usize },
    #[error("malformed RTSP message at byte {at} of the connection: {dump}")]
    Malformed { at: u64, dump: String },
    #[error("the connection closed in the middle of a message ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// What [`decode`] found at the start of the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A whole message or interleaved frame (`Message::Data`), and the bytes it took.
    Message(Message<Vec<u8>>, usize),
    /// Bytes to skip: the CR and LF some clients send between messages.
    Skip(usize),
}

/// Reads one message or interleaved frame from the start of `buf`. `Ok(None)`: more bytes
/// are needed (never more than the caps: [`MAX_HEAD`] of head, [`MAX_BODY`] of body). `at` is
/// the stream offset of `buf[0]`, for errors.
pub fn decode(buf: &[u8], at: u64) -> Result<Option<Decoded>, WireError> {
    let blank = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if blank > 0 {
        return Ok(Some(Decoded::Skip(blank)));
    }
    match buf.first() {
        None => return Ok(None),
        Some(b'$') if buf.len() < 4 => return Ok(None),
        Some(b'$') if buf.len() < 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]])) => return Ok(None),
        Some(b'$') => {}
        Some(_) => {
            let Some(head) = buf[..buf.len().min(MAX_HEAD)].windows(4).position(|w| w == b"\r\n\r\n") else {
                if buf.len() >= MAX_HEAD {
                    return Err(WireError::HeadTooLarge { max: MAX_HEAD, dump: dump(buf) });
                }
                return Ok(None);
            };
            let body_start = head + 4;
            return match Message::<Vec<u8>>::parse(buf) {
                Ok((m, n)) => Ok(Some(Decoded::Message(m, n))),
                Err(ParseError::Incomplete(Some(need))) => {
                    let len = buf.len() - body_start + need.get();
                    if len > MAX_BODY {
                        return Err(WireError::BodyTooLarge { len, max: MAX_BODY });
                    }
                    Ok(None)
                }
                Err(_) => Err(WireError::Malformed { at, dump: dump(&buf[..body_start]) }),
            };
        }
    }
    match Message::<Vec<u8>>::parse(buf) {
        Ok((m, n)) => Ok(Some(Decoded::Message(m, n))),
        Err(_) => Err(WireError::Malformed { at, dump: dump(&buf[..4]) }),
    }
}

/// The first 128 bytes of `b`, printable ASCII as is and the rest as `\xNN`.
pub fn dump(b: &[u8]) -> String {
    let mut s: String = b.iter().take(128).flat_map(|&c| std::ascii::escape_default(c)).map(char::from).collect();
    if b.len() > 128 {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

/// The read side of an RTSP connection: one buffer, reused, never larger than one message or
/// interleaved frame at its cap.
pub struct MessageReader<R> {
    stream: R,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    start: usize,
    /// Stream offset of `buf[start]`.
    at: u64,
}

/// What one [`MessageReader::poll`] got.
#[derive(Debug)]
pub enum Polled {
    Message(Message<Vec<u8>>),
    /// Nothing complete yet (the read timed out, or more bytes are needed).
    Pending,
    /// The peer closed the connection between messages.
    Closed,
}

impl<R: Read> MessageReader<R> {
    pub fn new(stream: R) -> Self {
        MessageReader { stream, buf: Vec::with_capacity(4096), start: 0, at: 0 }
    }

    /// Bytes received and not yet part of a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn get_ref(&self) -> &R {
        &self.stream
    }

    /// Returns the next whole message, reading once from the stream if the buffer holds none.
    /// A read that times out or would block is `Pending`.
    pub fn poll(&mut self) -> Result<Polled, WireError> {
        loop {
            match decode(&self.buf[self.start..], self.at)? {
                Some(Decoded::Skip(n)) => self.consume(n),
                Some(Decoded::Message(m, n)) => {
                    self.consume(n);
                    return Ok(Polled::Message(m));
                }
                None => break,
            }
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let have = self.buf.len();
        let want = (have + 4096).min(MAX_HEAD + MAX_BODY).max(have + 1);
        self.buf.resize(want, 0);
        let res = self.stream.read(&mut self.buf[have..]);
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(have);
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                        Ok(Polled::Pending)
                    }
                    _ => Err(e.into()),
                };
            }
        };
        self.buf.truncate(have + n);
        match (n, have) {
            (0, 0) => Ok(Polled::Closed),
            (0, _) => Err(WireError::Truncated { buffered: have }),
            _ => Ok(Polled::Pending),
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.at += n as u64;
    }
}

/// Appends an interleaved frame header (`$`, channel, length) for `len` bytes to `out`.
pub fn interleaved_header(channel: u8, len: usize, out: &mut Vec<u8>) {
    out.push(b'$');
    out.push(channel);
    out.extend_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
}

/// An `Authorization` or `WWW-Authenticate` value: the scheme and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    pub scheme: String,
    /// `key=value` or `key="value"` pairs, keys lowercased; for Basic, one pair `("", token)`.
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses `Scheme k=v, k="v, with comma", ...` (RFC 7235). `None` if it is not of that shape.
pub fn parse_auth(value: &str) -> Option<AuthParams> {
    let value = value.trim();
    let (scheme, mut rest) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = scheme.to_string();
    let mut params = Vec::new();
    if scheme.eq_ignore_ascii_case("basic") {
        params.push((String::new(), rest.trim().to_string()));
        return Some(AuthParams { scheme, params });
    }
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        if rest.is_empty() {
            return Some(AuthParams { scheme, params });
        }
        let (key, after) = rest.split_once('=')?;
        let (val, after) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((key.trim().to_ascii_lowercase(), val.trim().to_string()));
        rest = after;
    }
}

/// The value of a Basic `Authorization` header.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The user and password of a Basic `Authorization` value.
pub fn basic_credentials(p: &AuthParams) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(p.get("")?).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, pw) = s.split_once(':')?;
    Some((u.to_string(), pw.to_string()))
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a Digest response is computed from (RFC 2617 section 3.2.2, MD5).
#[derive(Clone, Copy, Debug)]
pub struct DigestInput<'a> {
    pub user: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `qop=auth`: the nonce count (8 hex digits) and the client's nonce.
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// The Digest `response` value.
pub fn digest_response(d: &DigestInput) -> String {
    let ha1 = md5_hex(&format!("{}:{}:{}", d.user, d.realm, d.password));
    let ha2 = md5_hex(&format!("{}:{}", d.method, d.uri));
    match d.qop_auth {
        None => md5_hex(&format!("{ha1}:{}:{ha2}", d.nonce)),
        Some((nc, cnonce)) => md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", d.nonce)),
    }
}

/// Checks a Digest `Authorization` against `password`, for a request of `method` and the
/// `nonce` this server issued; any user name is accepted. The response is compared in
/// constant time.
pub fn digest_matches(p: &AuthParams, method: &str, realm: &str, nonce: &str, password: &str) -> bool {
    let (Some(user), Some(uri), Some(response)) = (p.get("username"), p.get("uri"), p.get("response")) else {
        return false;
    };
    if p.get("nonce") != Some(nonce) || p.get("realm") != Some(realm) {
        return false;
    }
    let qop_auth = match p.get("qop") {
        None => None,
        Some("auth") => Some((p.get("nc").unwrap_or(""), p.get("cnonce").unwrap_or(""))),
        Some(_) => return false,
    };
    let want = digest_response(&DigestInput { user, realm, password, method, uri, nonce, qop_auth });
    subtle::ConstantTimeEq::ct_eq(want.as_bytes(), response.to_ascii_lowercase().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Script;

    const OPTIONS: &[u8] = b"OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: t\r\n\r\n";
    const WITH_BODY: &[u8] = b"SET_PARAMETER rtsp://h/stream RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nab: c";

    fn one(buf: &[u8]) -> Message<Vec<u8>> {
        match decode(buf, 0).unwrap() {
            Some(Decoded::Message(m, n)) => {
                assert_eq!(n, buf.len());
                m
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_and_interleaved_frames_split_at_every_byte() {
        let mut stream = Vec::new();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&[b'$', 1, 0, 3, 9, 8, 7]);
        stream.extend_from_slice(WITH_BODY);
        for split in 0..stream.len() {
            let mut r = MessageReader::new(Script::split(&stream, &[split]));
            let mut got = Vec::new();
            loop {
                match r.poll().unwrap() {
                    Polled::Message(m) => got.push(m),
                    Polled::Pending => {}
                    Polled::Closed => break,
                }
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert!(matches!(&got[1], Message::Data(d) if d.channel_id() == 1 && d.as_slice() == [9, 8, 7]));
            assert!(matches!(&got[2], Message::Request(q) if q.body() == b"ab: c"));
        }
    }

    #[test]
    fn caps_pass_at_the_limit_and_fail_beyond() {
        let head = |extra: usize| {
            let mut h = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: ".to_vec();
            h.resize(h.len() + extra, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        let base = head(0).len();
        let at_limit = head(MAX_HEAD - base);
        assert_eq!(at_limit.len(), MAX_HEAD);
        one(&at_limit);
        let over = head(MAX_HEAD - base + 1);
        assert!(matches!(decode(&over, 0), Err(WireError::HeadTooLarge { .. })));
        let body =
            |len: usize| format!("SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        assert!(decode(&body(MAX_BODY), 0).unwrap().is_none(), "waits for a body at the cap");
        let e = decode(&body(MAX_BODY + 1), 0).unwrap_err();
        assert!(matches!(e, WireError::BodyTooLarge { len, .. } if len == MAX_BODY + 1), "{e}");
        let e = decode(&body(usize::MAX / 2), 0);
        assert!(e.is_err(), "a huge Content-Length is refused before anything is buffered");
    }

    #[test]
    fn malformed_input_is_an_error_naming_it() {
        let e = decode(b"\x16\x03\x01 hello\r\n\r\n", 42).unwrap_err();
        assert!(matches!(&e, WireError::Malformed { at: 42, dump } if dump.contains("\\x16")), "{e}");
        let mut r = MessageReader::new(Script::whole(&OPTIONS[..20]));
        assert!(matches!(r.poll(), Ok(Polled::Pending)));
        assert!(matches!(r.poll(), Err(WireError::Truncated { buffered: 20 })));
    }

    #[test]
    fn auth_parameters_and_digest() {
        let p = parse_auth(r#"Digest username="u", realm="framecast", nonce="abc", uri="rtsp://h/s", response="x,y""#)
            .unwrap();
        assert_eq!((p.scheme.as_str(), p.get("uri"), p.get("response")), ("Digest", Some("rtsp://h/s"), Some("x,y")));
        let b = parse_auth(&basic_authorization("user", "to:ken")).unwrap();
        assert_eq!(basic_credentials(&b), Some(("user".into(), "to:ken".into())));
        // RFC 2617 section 3.5's example (GET, qop=auth).
        let d = DigestInput {
            user: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop_auth: Some(("00000001", "0a4f113b")),
        };
        assert_eq!(digest_response(&d), "6629fae49393a05397450978507c4ef1");
        let header = format!(
            r#"Digest username="any", realm="framecast", nonce="n1", uri="rtsp://h/stream", response="{}""#,
            digest_response(&DigestInput {
                user: "any",
                realm: "framecast",
                password: "tok",
                method: "PLAY",
                uri: "rtsp://h/stream",
                nonce: "n1",
                qop_auth: None
            })
        );
        let p = parse_auth(&header).unwrap();
        assert!(digest_matches(&p, "PLAY", "framecast", "n1", "tok"));
        assert!(!digest_matches(&p, "PLAY", "framecast", "n1", "other"));
        assert!(!digest_matches(&p, "PLAY", "framecast", "n2", "tok"), "another nonce");
        assert!(!digest_matches(&p, "SETUP", "framecast", "n1", "tok"), "another method");
    }
}
