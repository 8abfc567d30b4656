//! framecast's RTSP client connection: one blocking TCP connection to an RTSP server, for
//! playing (`recv --connect rtsp://`: DESCRIBE, SETUP, PLAY, keep-alive, TEARDOWN) and for
//! publishing (`send --publish`: ANNOUNCE, SETUP with `mode=record`, RECORD, then RTP written
//! interleaved). It runs on the thread that owns the session (the receiver's `net-rx`, the
//! publisher's thread).
//!
//! [`Client::request`] is the generic exchange every method goes through: it adds CSeq,
//! Session, User-Agent and Authorization, writes the request, and reads until the response
//! with the same CSeq (interleaved data that arrives meanwhile is kept, up to a cap, for
//! [`Client::read_interleaved`]). A 401 is answered once, with Basic or Digest (MD5)
//! credentials from the URL (`rtsp://user:pass@host:port/path`); a status other than 2xx is an
//! error naming the method, the status and the reason. Messages are read by
//! [`super::MessageReader`] with its caps; SDP is read with `sdp-types`.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use rtsp_types::headers::{self, HeaderName};
use rtsp_types::{Message, Method, Request, Response, StatusCode, Url, Version};
use thiserror::Error;
use tracing::{debug, info};

use super::{
    basic_authorization, digest_response, parse_auth, AuthParams, DigestInput, MessageReader, Polled, WireError,
};
use crate::rtp::{capture_time, MAX_HEADER_DIMENSION, PAYLOAD_TYPE};

/// RTSP's registered port.
pub const DEFAULT_PORT: u16 = 554;
/// Session timeout when the server states none (RFC 2326 section 12.37).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Interleaved frames kept while waiting for a response (about 350 KB of RTP).
const MAX_QUEUED: usize = 256;
/// Receive buffer asked for the RTP socket.
const UDP_RECV_BUFFER: usize = 4 << 20;
const USER_AGENT: &str = concat!("framecast/", env!("CARGO_PKG_VERSION"));

/// Why an RTSP exchange failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// `url` is shown without its password.
    #[error("bad RTSP URL {url:?}: {why} (expected rtsp://[user:password@]host[:port]/path)")]
    Url { url: String, why: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection{0}")]
    Closed(&'static str),
    #[error("no response to {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("{method} answered {code} {reason}")]
    Status { method: String, code: u16, reason: String },
    #[error("{method} needs credentials (401 {challenge}): put them in the URL, rtsp://user:password@host:port/path")]
    NeedsCredentials { method: String, challenge: String },
    #[error("{method} refused the credentials in the URL (401 after authenticating)")]
    BadCredentials { method: String },
    #[error("response with {} to {method}, expected CSeq {want}", shown_cseq(.got.as_deref()))]
    CSeq { method: String, want: u32, got: Option<String> },
    #[error("bad {header} header in the response to {method}: {value:?}")]
    Header { method: String, header: &'static str, value: String },
    #[error("SDP: {0}")]
    Sdp(String),
    #[error("no RTP for {0:?} while playing (the server answers requests but sends no media)")]
    NoMedia(Duration),
    #[error("malformed RTP/JPEG packet ({len} bytes, starting {head}): {source}")]
    Rtp { len: usize, head: String, source: crate::rtp::depacketize::DepacketizeError },
}

/// Where to connect, and the credentials from the URL (its `Debug` leaves the password out).
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without credentials.
    pub url: Url,
    /// `host:port` to connect to.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Url { url: without_password(s), why: why.to_string() };
        if let Some(why) = misplaced_userinfo(s) {
            return Err(bad(&why));
        }
        let mut url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "rtsp" {
            return Err(bad("the scheme is not rtsp"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let port = url.port().unwrap_or(DEFAULT_PORT);
        let decode = |v: &str| percent_decode(v);
        let user = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
        let password = url.password().map(decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        Ok(Target { url, addr: format!("{host}:{port}"), user, password })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url.as_str())
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A response's CSeq as an error shows it: `CSeq 9`, `CSeq "x"` for one that is not a
/// number (cut to 32 characters), or `no CSeq`.
fn shown_cseq(got: Option<&str>) -> String {
    match got {
        None => "no CSeq".into(),
        Some(g) if g.parse::<u32>().is_ok() => format!("CSeq {g}"),
        Some(g) => format!("CSeq {:?}", g.chars().take(32).collect::<String>()),
    }
}

/// A URL as it may be shown in an error or a log: the password (between the user's `:` and
/// the `@` before the host) replaced by `***`. Works on text that does not parse as a URL, and
/// takes the last `@` as the end of the user info even past a `/`, `?` or `#` (a password
/// pasted without percent-encoding), so no part of such a password is shown either.
pub fn without_password(s: &str) -> String {
    let start = s.find("://").map_or(0, |i| i + 3);
    let Some(at) = s[start..].rfind('@').map(|i| start + i) else { return s.to_string() };
    match s[start..at].find(':') {
        Some(colon) => format!("{}***{}", &s[..start + colon + 1], &s[at..]),
        None => s.to_string(),
    }
}

/// Whether a `/`, `?` or `#` comes before the URL's last `@`: a user name or password with
/// one of them not percent-encoded (or an `@` in the path), which would otherwise be read as
/// the end of the host and show part of the password as a host or port.
pub fn misplaced_userinfo(s: &str) -> Option<String> {
    let start = s.find("://").map_or(0, |i| i + 3);
    let at = s[start..].rfind('@')?;
    s[start..start + at].contains(['/', '?', '#']).then(|| {
        "a '/', '?' or '#' comes before the '@': percent-encode them in the user name or password \
         (%2F, %3F, %23), or an '@' in the path as %40"
            .to_string()
    })
}

/// `%XX` escapes in a URL's user or password (the RTSP and HTTP sources' URLs alike).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JPEG media of a DESCRIBE's SDP.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaInfo {
    /// The URL SETUP goes to (the media's `a=control`, resolved against the base).
    pub control: Url,
    pub payload_type: u8,
    /// `a=x-dimensions:W,H` (GStreamer's convention for sizes above 2040 pixels).
    pub dimensions: Option<(u32, u32)>,
    /// `a=framerate`.
    pub framerate: Option<f64>,
    /// The id of framecast's capture-time extension (`a=extmap:ID urn:x-framecast:capture-time`).
    pub capture_ext: Option<u8>,
    /// The sender's clock id (`a=x-framecast-clock`): framecast on this host if it equals ours.
    pub clock_id: Option<[u8; 16]>,
}

/// A DESCRIBE's answer.
#[derive(Clone, Debug)]
pub struct Description {
    /// The aggregate control URL (for PLAY and TEARDOWN).
    pub base: Url,
    pub media: MediaInfo,
}

/// How RTP travels after SETUP.
#[derive(Debug)]
pub enum Transport {
    /// Interleaved in the RTSP connection on these channels.
    Tcp { rtp: u8, rtcp: u8 },
    /// UDP from the server's `source` ports to these sockets.
    Udp(UdpPair),
}

/// A bound RTP/RTCP port pair (even, odd).
#[derive(Debug)]
pub struct UdpPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    /// The server's RTP and RTCP addresses, once SETUP named its ports.
    pub server: Option<(SocketAddr, SocketAddr)>,
}

impl UdpPair {
    /// Binds an even port and the next one, on the address the RTSP connection uses.
    pub fn bind(local: std::net::IpAddr) -> std::io::Result<Self> {
        for _ in 0..32 {
            let rtp = UdpSocket::bind((local, 0))?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind((local, port + 1)) {
                // A frame arrives as a burst of packets: room for a few of them while the
                // reader is busy (the kernel may cap it at net.core.rmem_max).
                let _ = socket2::SockRef::from(&rtp).set_recv_buffer_size(UDP_RECV_BUFFER);
                return Ok(UdpPair { rtp, rtcp, server: None });
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free even/odd UDP port pair in 32 tries"))
    }

    fn ports(&self) -> std::io::Result<(u16, u16)> {
        Ok((self.rtp.local_addr()?.port(), self.rtcp.local_addr()?.port()))
    }
}

/// The state of authentication, once a 401 named the scheme.
#[derive(Clone, Debug)]
enum Auth {
    Basic,
    Digest { challenge: AuthParams, nc: u32 },
}

/// One RTSP connection (see the module docs).
pub struct Client {
    writer: TcpStream,
    reader: MessageReader<TcpStream>,
    target: Target,
    cseq: u32,
    session: Option<String>,
    session_timeout: Duration,
    auth: Option<Auth>,
    /// Methods the server lists in `Public` (OPTIONS).
    public: Vec<String>,
    /// Interleaved frames read while waiting for a response.
    queued: VecDeque<(u8, Vec<u8>)>,
    /// How long a request waits for its response.
    pub response_timeout: Duration,
}

impl Client {
    /// Connects within `timeout`; reads then wait at most `poll` before returning to the
    /// caller (who looks at its stop conditions).
    pub fn connect(target: &Target, timeout: Duration, poll: Duration) -> Result<Self, ClientError> {
        let err = |source| ClientError::Connect { addr: target.addr.clone(), source };
        let addrs: Vec<SocketAddr> = target.addr.to_socket_addrs().map_err(err)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Self::over(s, target, poll),
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }

    /// A client over a connected stream.
    pub fn over(stream: TcpStream, target: &Target, poll: Duration) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(poll))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            writer: stream.try_clone()?,
            reader: MessageReader::new(stream),
            target: target.clone(),
            cseq: 0,
            session: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            auth: None,
            public: Vec::new(),
            queued: VecDeque::new(),
            response_timeout: Duration::from_secs(10),
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The session's timeout: a keep-alive must reach the server before it passes.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Sends a request and returns its 2xx response (see the module docs). `headers` are
    /// added as they are; CSeq, Session, User-Agent and Authorization are the client's.
    pub fn request(
        &mut self,
        method: Method,
        url: &Url,
        headers: &[(HeaderName, String)],
        body: &[u8],
    ) -> Result<Response<Vec<u8>>, ClientError> {
        let name = <&str>::from(&method).to_string();
        // Credentials already sent and refused: not sent again (a stale Digest nonce is the
        // exception, answered once with the new nonce).
        let mut answered_401 = self.auth.is_some();
        let mut stale_retried = false;
        loop {
            let req = self.build(&method, url, headers, body);
            let mut out = Vec::new();
            req.write(&mut out).map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
            self.writer.write_all(&out)?;
            debug!(method = %name, cseq = self.cseq, "rtsp request");
            let resp = self.response(&name)?;
            if resp.status() != StatusCode::Unauthorized {
                return self.check(&name, resp);
            }
            let stale = resp
                .header(&headers::WWW_AUTHENTICATE)
                .is_some_and(|v| v.as_str().to_ascii_lowercase().contains("stale=true"));
            if answered_401 && (!stale || stale_retried || self.auth.is_none()) {
                return Err(ClientError::BadCredentials { method: name });
            }
            stale_retried |= answered_401;
            answered_401 = true;
            self.authenticate(&name, &resp)?;
        }
    }

    fn build(&mut self, method: &Method, url: &Url, headers: &[(HeaderName, String)], body: &[u8]) -> Request<Vec<u8>> {
        self.cseq += 1;
        let mut b = Request::builder(method.clone(), Version::V1_0)
            .request_uri(url.clone())
            .header(headers::CSEQ, self.cseq.to_string())
            .header(headers::USER_AGENT, USER_AGENT);
        if let Some(s) = &self.session {
            b = b.header(headers::SESSION, s.clone());
        }
        if let Some(a) = self.authorization(method, url) {
            b = b.header(headers::AUTHORIZATION, a);
        }
        for (k, v) in headers {
            b = b.header(k.clone(), v.clone());
        }
        b.build(body.to_vec())
    }

    fn authorization(&mut self, method: &Method, url: &Url) -> Option<String> {
        let user = self.target.user.clone().unwrap_or_default();
        let password = self.target.password.clone().unwrap_or_default();
        match self.auth.as_mut()? {
            Auth::Basic => Some(basic_authorization(&user, &password)),
            Auth::Digest { challenge, nc } => {
                *nc += 1;
                let (realm, nonce) = (challenge.get("realm").unwrap_or(""), challenge.get("nonce").unwrap_or(""));
                let qop = challenge.get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"));
                let (nc_hex, cnonce) = (format!("{nc:08x}"), format!("{:08x}", nc.wrapping_mul(2_654_435_761)));
                let uri = url.as_str();
                let qop_auth = qop.then_some((nc_hex.as_str(), cnonce.as_str()));
                let method = <&str>::from(method);
                let response = digest_response(&DigestInput {
                    user: &user,
                    realm,
                    password: &password,
                    method,
                    uri,
                    nonce,
                    qop_auth,
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

    /// Picks Digest (or else Basic) from a 401's challenges.
    fn authenticate(&mut self, method: &str, resp: &Response<Vec<u8>>) -> Result<(), ClientError> {
        let challenge = resp.header(&headers::WWW_AUTHENTICATE).map(|v| v.as_str().to_string()).unwrap_or_default();
        if self.target.user.is_none() && self.target.password.is_none() {
            return Err(ClientError::NeedsCredentials { method: method.into(), challenge });
        }
        let digest = split_challenges(&challenge).into_iter().find(|c| c.scheme.eq_ignore_ascii_case("digest"));
        self.auth = match digest {
            Some(c) if c.get("nonce").is_some() => Some(Auth::Digest { challenge: c, nc: 0 }),
            _ if challenge.to_ascii_lowercase().contains("basic") => Some(Auth::Basic),
            _ => {
                return Err(ClientError::Header { method: method.into(), header: "WWW-Authenticate", value: challenge })
            }
        };
        info!(
            scheme = if matches!(self.auth, Some(Auth::Basic)) { "basic" } else { "digest" },
            "rtsp server asks for credentials"
        );
        Ok(())
    }

    /// Reads until the response to the last request, keeping interleaved data.
    fn response(&mut self, method: &str) -> Result<Response<Vec<u8>>, ClientError> {
        let deadline = Instant::now() + self.response_timeout;
        loop {
            if Instant::now() > deadline {
                return Err(ClientError::Timeout { method: method.into(), timeout: self.response_timeout });
            }
            match self.reader.poll()? {
                Polled::Pending => {}
                Polled::Closed => return Err(ClientError::Closed(" before answering")),
                Polled::Message(Message::Data(d)) => self.queue(d.channel_id(), d.into_body()),
                Polled::Message(Message::Request(r)) => self.answer_request(&r)?,
                Polled::Message(Message::Response(r)) => {
                    let got = r.header(&headers::CSEQ).map(|v| v.as_str().trim().to_string());
                    match got.as_deref().and_then(|g| g.parse::<u32>().ok()) {
                        Some(n) if n == self.cseq => return Ok(r),
                        // A late answer to an earlier request (a keep-alive's, say).
                        Some(n) if n < self.cseq => debug!(cseq = n, "late rtsp response skipped"),
                        _ => return Err(ClientError::CSeq { method: method.into(), want: self.cseq, got }),
                    }
                }
            }
        }
    }

    fn queue(&mut self, channel: u8, data: Vec<u8>) {
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back((channel, data));
    }

    /// A request from the server (some send GET_PARAMETER or OPTIONS as their own
    /// keep-alive): answered 200 with its CSeq, or 501 for anything else.
    fn answer_request(&mut self, r: &Request<Vec<u8>>) -> Result<(), ClientError> {
        let cseq = r.header(&headers::CSEQ).map(|v| v.as_str().to_string()).unwrap_or_default();
        let ok = matches!(r.method(), Method::Options | Method::GetParameter);
        let status = if ok { StatusCode::Ok } else { StatusCode::NotImplemented };
        debug!(method = <&str>::from(r.method()), "request from the rtsp server");
        let resp = Response::builder(Version::V1_0, status).header(headers::CSEQ, cseq).empty();
        let mut out = Vec::new();
        resp.write(&mut out).map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        self.writer.write_all(&out)?;
        Ok(())
    }

    /// A 2xx response is returned; its Session header, if any, is kept.
    fn check(&mut self, method: &str, resp: Response<Vec<u8>>) -> Result<Response<Vec<u8>>, ClientError> {
        let code = u16::from(resp.status());
        if !(200..300).contains(&code) {
            let reason = resp.reason_phrase().to_string();
            return Err(ClientError::Status { method: method.into(), code, reason });
        }
        if let Some(v) = resp.header(&headers::SESSION) {
            let bad = || ClientError::Header { method: method.into(), header: "Session", value: v.as_str().into() };
            let s: headers::Session = resp.typed_header().map_err(|_| bad())?.ok_or_else(bad)?;
            if s.0.is_empty() || s.0.len() > 256 {
                return Err(bad());
            }
            self.session = Some(s.0.clone());
            self.session_timeout = s.1.map_or(DEFAULT_SESSION_TIMEOUT, |t| Duration::from_secs(t.clamp(1, 3600)));
        }
        Ok(resp)
    }

    /// OPTIONS: learns which methods the server takes (for the keep-alive).
    pub fn options(&mut self) -> Result<(), ClientError> {
        let url = self.target.url.clone();
        let resp = self.request(Method::Options, &url, &[], &[])?;
        self.public = resp
            .header(&headers::PUBLIC)
            .map(|v| v.as_str().split(',').map(|m| m.trim().to_ascii_uppercase()).collect())
            .unwrap_or_default();
        Ok(())
    }

    /// DESCRIBE: the stream's JPEG media.
    pub fn describe(&mut self) -> Result<Description, ClientError> {
        let url = self.target.url.clone();
        let accept = [(headers::ACCEPT, "application/sdp".to_string())];
        let resp = self.request(Method::Describe, &url, &accept, &[])?;
        let base = resp
            .header(&headers::CONTENT_BASE)
            .or_else(|| resp.header(&headers::CONTENT_LOCATION))
            .and_then(|v| Url::parse(v.as_str().trim()).ok())
            .unwrap_or(url);
        parse_sdp(resp.body(), &base)
    }

    /// SETUP of `media` over `transport`; for UDP, the server's ports are recorded in the pair.
    pub fn setup(&mut self, media: &Url, transport: &mut Transport, record: bool) -> Result<(), ClientError> {
        let mode = if record { ";mode=record" } else { "" };
        let value = match transport {
            Transport::Tcp { rtp, rtcp } => format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp}{mode}"),
            Transport::Udp(pair) => {
                let (a, b) = pair.ports()?;
                format!("RTP/AVP;unicast;client_port={a}-{b}{mode}")
            }
        };
        let resp = self.request(Method::Setup, media, &[(headers::TRANSPORT, value)], &[])?;
        let raw = resp.header(&headers::TRANSPORT).map(|v| v.as_str().to_string()).unwrap_or_default();
        let bad = || ClientError::Header { method: "SETUP".into(), header: "Transport", value: raw.clone() };
        let ts: headers::Transports = resp.typed_header().map_err(|_| bad())?.ok_or_else(bad)?;
        let Some(headers::Transport::Rtp(t)) = ts.iter().next() else { return Err(bad()) };
        match transport {
            Transport::Tcp { rtp, rtcp } => {
                if let Some((a, b)) = t.params.interleaved {
                    (*rtp, *rtcp) = (a, b.unwrap_or(a.wrapping_add(1)));
                }
            }
            Transport::Udp(pair) => {
                let ip = self.writer.peer_addr()?.ip();
                if let Some((a, b)) = t.params.server_port {
                    pair.server = Some(((ip, a).into(), (ip, b.unwrap_or(a.wrapping_add(1))).into()));
                }
            }
        }
        if self.session.is_none() {
            return Err(ClientError::Header { method: "SETUP".into(), header: "Session", value: String::new() });
        }
        Ok(())
    }

    /// PLAY (or RECORD) of the whole presentation at `base`.
    pub fn play(&mut self, base: &Url) -> Result<(), ClientError> {
        self.request(Method::Play, base, &[(headers::RANGE, "npt=0-".into())], &[]).map(|_| ())
    }

    /// A keep-alive: GET_PARAMETER if the server lists it (or listed nothing), else OPTIONS.
    pub fn keep_alive(&mut self, base: &Url) -> Result<(), ClientError> {
        let method = if self.public.is_empty() || self.public.iter().any(|m| m == "GET_PARAMETER") {
            Method::GetParameter
        } else {
            Method::Options
        };
        self.request(method, base, &[], &[]).map(|_| ())
    }

    /// TEARDOWN, best effort (the caller closes the connection after it).
    pub fn teardown(&mut self, base: &Url) -> Result<(), ClientError> {
        self.response_timeout = self.response_timeout.min(Duration::from_secs(1));
        let r = self.request(Method::Teardown, base, &[], &[]).map(|_| ());
        self.session = None;
        r
    }

    /// The next interleaved frame (channel, bytes): `Ok(None)` when none arrived within the
    /// poll time. Requests from the server are answered; stray responses skipped.
    pub fn read_interleaved(&mut self) -> Result<Option<(u8, Vec<u8>)>, ClientError> {
        if let Some(q) = self.queued.pop_front() {
            return Ok(Some(q));
        }
        match self.reader.poll()? {
            Polled::Pending => Ok(None),
            Polled::Closed => Err(ClientError::Closed("")),
            Polled::Message(Message::Data(d)) => Ok(Some((d.channel_id(), d.into_body()))),
            Polled::Message(Message::Request(r)) => self.answer_request(&r).map(|_| None),
            Polled::Message(Message::Response(r)) => {
                debug!(status = u16::from(r.status()), "rtsp response with no request waiting; skipped");
                Ok(None)
            }
        }
    }

    /// Writes one interleaved frame (RTP or RTCP over the RTSP connection).
    pub fn write_interleaved(&mut self, channel: u8, data: &[u8]) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(data.len() + 4);
        super::interleaved_header(channel, data.len(), &mut out);
        out.extend_from_slice(data);
        self.writer.write_all(&out)?;
        Ok(())
    }
}

/// The challenges in a `WWW-Authenticate` value (several headers arrive joined by ", ").
fn split_challenges(value: &str) -> Vec<AuthParams> {
    let lower = value.to_ascii_lowercase();
    let mut starts: Vec<usize> = ["digest ", "basic "]
        .iter()
        .flat_map(|s| lower.match_indices(s).map(|(i, _)| i))
        .filter(|&i| i == 0 || lower[..i].trim_end().ends_with(','))
        .collect();
    starts.sort_unstable();
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(value.len());
        if let Some(p) = parse_auth(value[s..end].trim().trim_end_matches(',')) {
            out.push(p);
        }
    }
    out
}

/// Reads the JPEG media of an SDP (the first `m=video` whose format is payload type 26 or an
/// `a=rtpmap` of JPEG/90000).
pub fn parse_sdp(body: &[u8], base: &Url) -> Result<Description, ClientError> {
    let sdp = sdp_types::Session::parse(body).map_err(|e| ClientError::Sdp(format!("cannot parse the SDP: {e}")))?;
    let media = sdp
        .medias
        .iter()
        .find_map(|m| (m.media == "video").then(|| jpeg_payload_type(m).map(|pt| (m, pt))).flatten())
        .ok_or_else(|| {
            let kinds: Vec<String> = sdp.medias.iter().map(|m| format!("{} {}", m.media, m.fmt)).collect();
            ClientError::Sdp(format!("no JPEG video (payload type 26 or rtpmap JPEG/90000) among its media: {kinds:?}"))
        })?;
    let (m, payload_type) = media;
    let control = match m.get_first_attribute_value("control").flatten() {
        None | Some("*") => base.clone(),
        Some(c) => resolve(base, c)?,
    };
    let base = match sdp.get_first_attribute_value("control").flatten() {
        None | Some("*") => base.clone(),
        Some(c) => resolve(base, c)?,
    };
    let attr = |name: &'static str| {
        m.get_first_attribute_value(name).flatten().or_else(|| sdp.get_first_attribute_value(name).flatten())
    };
    let dimensions = attr("x-dimensions").and_then(parse_dimensions);
    let framerate = attr("framerate").and_then(|v| v.trim().parse::<f64>().ok()).filter(|f| f.is_finite() && *f > 0.0);
    let capture_ext = m.get_attribute_values("extmap").flatten().find_map(|v| {
        let mut it = v.split_whitespace();
        let id = it.next()?.split('/').next()?.parse::<u8>().ok().filter(|id| (1..=14).contains(id))?;
        (it.next()? == capture_time::URI).then_some(id)
    });
    let clock_id = attr(capture_time::CLOCK_ATTRIBUTE).and_then(parse_clock_id);
    let media = MediaInfo { control, payload_type, dimensions, framerate, capture_ext, clock_id };
    Ok(Description { base, media })
}

fn jpeg_payload_type(m: &sdp_types::Media) -> Option<u8> {
    let pts: Vec<u8> = m.fmt.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    if pts.contains(&PAYLOAD_TYPE) {
        return Some(PAYLOAD_TYPE);
    }
    m.get_attribute_values("rtpmap").flatten().find_map(|v| {
        let (pt, enc) = v.split_once(' ')?;
        let pt = pt.parse::<u8>().ok()?;
        (pts.contains(&pt) && enc.trim().to_ascii_uppercase().starts_with("JPEG/90000")).then_some(pt)
    })
}

/// `a=control` relative to `base` (RFC 2326 C.1.1), or absolute.
fn resolve(base: &Url, control: &str) -> Result<Url, ClientError> {
    if control.starts_with("rtsp://") || control.starts_with("rtsps://") {
        return Url::parse(control).map_err(|e| ClientError::Sdp(format!("bad a=control {control:?}: {e}")));
    }
    let mut b = base.as_str().to_string();
    if !b.ends_with('/') {
        b.push('/');
    }
    Url::parse(&b)
        .and_then(|b| b.join(control))
        .map_err(|e| ClientError::Sdp(format!("bad a=control {control:?}: {e}")))
}

/// `W,H` (or `W, H`), each 1..=16384.
pub fn parse_dimensions(v: &str) -> Option<(u32, u32)> {
    let (w, h) = v.split_once(',')?;
    let ok =
        |s: &str| s.trim().parse::<u32>().ok().filter(|&n| (1..=crate::rtp::depacketize::MAX_DIMENSION).contains(&n));
    let (w, h) = (ok(w)?, ok(h)?);
    debug!(width = w, height = h, above_header = w > MAX_HEADER_DIMENSION || h > MAX_HEADER_DIMENSION, "x-dimensions");
    Some((w, h))
}

/// 32 hex digits.
fn parse_clock_id(v: &str) -> Option<[u8; 16]> {
    let v = v.trim();
    if v.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(v.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread;

    use super::*;
    use crate::rtsp::digest_matches;

    #[test]
    fn urls_give_the_address_and_credentials() {
        let t = Target::parse("rtsp://al%40ice:p%3Ass@127.0.0.1:8554/cam/1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8554");
        assert_eq!((t.user.as_deref(), t.password.as_deref()), (Some("al@ice"), Some("p:ss")));
        assert_eq!(t.url.as_str(), "rtsp://127.0.0.1:8554/cam/1");
        assert_eq!(Target::parse("rtsp://cam/").unwrap().addr, "cam:554");
        let e = Target::parse("http://cam/").unwrap_err().to_string();
        assert!(e.contains("rtsp") && e.contains("http://cam/"), "{e}");
    }

    #[test]
    fn bad_urls_are_shown_without_their_password() {
        for url in ["http://al:s3cret@cam/x", "rtsp://al:s3cret@cam:notaport/x", "rtsp://al:s3cret@[::1/x"] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && e.contains("al:***@"), "{url}: {e}");
        }
        assert_eq!(without_password("rtsp://cam/a@b:c"), "rtsp://cam/a@b:c");
        assert_eq!(without_password("rtsp://u@cam/"), "rtsp://u@cam/");
        assert_eq!(without_password("u:p@cam"), "u:***@cam");
        // Passwords pasted with '/', '?' or '#' in them: refused, and no part of them shown.
        for url in ["rtsp://al:s3/cret@cam/x", "rtsp://al:s3#cret@cam:554/x", "rtsp://al:s3?cret@cam"] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(!e.contains("s3") && !e.contains("cret") && e.contains("percent-encode"), "{url}: {e}");
        }
        let t = Target::parse("rtsp://al:s3cret@cam/x").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");
    }

    #[test]
    fn a_cseq_is_shown_as_it_came() {
        assert_eq!(shown_cseq(Some("9")), "CSeq 9");
        assert_eq!(shown_cseq(None), "no CSeq");
        assert_eq!(shown_cseq(Some(&"x".repeat(100))), format!("CSeq {:?}", "x".repeat(32)));
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=framecast\r\nt=0 0\r\na=control:*\r\n\
        m=audio 0 RTP/AVP 0\r\na=control:audio\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 JPEG/90000\r\na=control:stream=0\r\n\
        a=x-dimensions:2560,1440\r\na=framerate:30\r\na=extmap:3 urn:x-framecast:capture-time\r\n\
        a=x-framecast-clock:000102030405060708090a0b0c0d0e0f\r\n";

    #[test]
    fn the_sdp_gives_the_jpeg_media() {
        let base = Url::parse("rtsp://h:8554/stream").unwrap();
        let d = parse_sdp(SDP.as_bytes(), &base).unwrap();
        assert_eq!(d.media.control.as_str(), "rtsp://h:8554/stream/stream=0");
        assert_eq!(d.base, base);
        assert_eq!(d.media.payload_type, 96);
        assert_eq!(d.media.dimensions, Some((2560, 1440)));
        assert_eq!(d.media.framerate, Some(30.0));
        assert_eq!(d.media.capture_ext, Some(3));
        assert_eq!(d.media.clock_id, Some(core::array::from_fn(|i| i as u8)));
        let abs = SDP.replace("a=control:stream=0", "a=control:rtsp://other:1/x/track1");
        assert_eq!(parse_sdp(abs.as_bytes(), &base).unwrap().media.control.as_str(), "rtsp://other:1/x/track1");
        let none = SDP.replace("JPEG/90000", "H264/90000");
        let e = parse_sdp(none.as_bytes(), &base).unwrap_err().to_string();
        assert!(e.contains("no JPEG video") && e.contains("video 96"), "{e}");
        let huge = SDP.replace("2560,1440", "100000,1440");
        assert_eq!(parse_sdp(huge.as_bytes(), &base).unwrap().media.dimensions, None);
    }

    #[test]
    fn joined_challenges_are_split() {
        let c = split_challenges("Digest realm=\"r\", nonce=\"n, x\", Basic realm=\"r\"");
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].scheme.as_str(), c[0].get("nonce")), ("Digest", Some("n, x")));
        assert_eq!(c[1].scheme, "Basic");
    }

    /// A server by hand: answers each request with `answer(head)`, where `head` is the
    /// request's head; returns the heads it saw.
    fn fake_server(answers: Vec<&'static str>) -> (Target, thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("rtsp://u:secret@{}/stream", l.local_addr().unwrap());
        let h = thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut heads = Vec::new();
            for a in answers {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 {
                        return heads;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let cseq = head.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap().to_string();
                w.write_all(a.replace("{cseq}", &cseq).as_bytes()).unwrap();
                heads.push(head);
            }
            heads
        });
        (Target::parse(&url).unwrap(), h)
    }

    #[test]
    fn a_401_is_answered_once_with_digest() {
        let (t, server) = fake_server(vec![
            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"fc\", nonce=\"abc\"\r\nWWW-Authenticate: Basic realm=\"fc\"\r\n\r\n",
            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n",
            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"fc\", nonce=\"abc\"\r\n\r\n",
        ]);
        let mut c = Client::connect(&t, Duration::from_secs(2), Duration::from_millis(100)).unwrap();
        c.options().unwrap();
        let e = c.options().unwrap_err();
        assert!(matches!(e, ClientError::BadCredentials { .. }), "{e}");
        let heads = server.join().unwrap();
        let auth = heads[1].lines().find_map(|l| l.strip_prefix("Authorization: ")).expect("authorization sent");
        let p = parse_auth(auth).unwrap();
        assert!(digest_matches(&p, "OPTIONS", "fc", "abc", "secret"), "{auth}");
        assert_eq!(p.get("username"), Some("u"));
    }

    #[test]
    fn a_response_with_another_cseq_or_status_is_an_error() {
        let (t, server) = fake_server(vec!["RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n"]);
        let mut c = Client::connect(&t, Duration::from_secs(2), Duration::from_millis(100)).unwrap();
        let e = c.options().unwrap_err().to_string();
        assert_eq!(e, "response with CSeq 7 to OPTIONS, expected CSeq 1");
        drop(c);
        server.join().unwrap();
        let (t, server) = fake_server(vec!["RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n"]);
        let mut c = Client::connect(&t, Duration::from_secs(2), Duration::from_millis(100)).unwrap();
        let e = c.describe().unwrap_err().to_string();
        assert_eq!(e, "DESCRIBE answered 404 Not Found");
        drop(c);
        server.join().unwrap();
        let (mut t, server) = fake_server(vec![
            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n",
        ]);
        (t.user, t.password) = (None, None);
        let mut c = Client::connect(&t, Duration::from_secs(2), Duration::from_millis(100)).unwrap();
        let e = c.describe().unwrap_err().to_string();
        assert!(e.contains("needs credentials") && e.contains("rtsp://user:password@"), "{e}");
        drop(c);
        server.join().unwrap();
    }
}
