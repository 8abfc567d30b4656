//! Publishing (`send --publish rtsp://[user:pass@]host:port/path`): framecast as an RTSP
//! client that pushes its stream into a media server (MediaMTX, gst-rtsp-server, any server
//! that takes RECORD), run by the `rtsp-publish` thread.
//!
//! One connection at a time, made and remade by `net::conn::connect` with the `--connect`
//! backoff: ANNOUNCE (the SDP the RTSP server's DESCRIBE gives), SETUP over TCP interleaved
//! (`RTP/AVP/TCP;unicast;interleaved=0-1;mode=record`), RECORD, then every frame packetised
//! (RFC 2435) and written as `$`-interleaved RTP on channel 0, an RTCP sender report on
//! channel 1 about every second, and a keep-alive well within the server's session timeout.
//! The publisher is one hub viewer (`rtsp-publish` in `links`) with its own newest-frame-wins
//! slot: a server or link slower than the camera loses frames there, counted, never queued.
//! Requests and credentials go through framecast's RTSP client (`rtsp::client`).
//!
//! When the server goes away (connection refused, reset, closed, a request failing) the
//! reason is logged and publishing starts again after the backoff's next delay. A server that
//! refuses the credentials (401 after authenticating) or the path (404) ends the sender with
//! that error: retrying would not help.

use std::cell::RefCell;
use std::fmt;
use std::net::TcpStream;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tracing::{info, warn};

use super::transport::{Feed, Transport};
use crate::hub::{Hub, Subscription, ViewerKind};
use crate::net::conn::{connect, Policy, Session};
use crate::rtp::packetize::{Packetized, RtpStream};
use crate::rtsp::interleaved_header;

/// How the publisher is named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("rtsp-publish");
/// RTSP's default port (RFC 2326).
pub const DEFAULT_PORT: u16 = 554;

/// Where to publish: `rtsp://[user[:password]@]host[:port]/path`, checked at the command
/// line. Shown (in logs and errors) without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without credentials, as requests name it.
    pub url: rtsp_types::Url,
    /// HOST:PORT to connect to.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const SHAPE: &str = "expected rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH";
        let mut url = rtsp_types::Url::parse(s).map_err(|e| format!("{e}; {SHAPE}"))?;
        match url.scheme() {
            "rtsp" => {}
            "rtsps" => return Err(format!("RTSP over TLS (rtsps://) is not supported; {SHAPE}")),
            other => return Err(format!("the scheme is {other}://; {SHAPE}")),
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(format!("no host; {SHAPE}")),
        };
        let port = url.port().unwrap_or(DEFAULT_PORT);
        let decode = |v: &str| {
            let bytes: Vec<u8> = percent_decode(v);
            String::from_utf8(bytes).map_err(|_| format!("the user or password is not UTF-8 after %-decoding; {SHAPE}"))
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username())).transpose()?;
        let password = url.password().map(decode).transpose()?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // An IPv6 literal keeps its brackets in HOST:PORT.
        let addr = match url.host() {
            Some(rtsp_types::Host::Ipv6(a)) => format!("[{a}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        Ok(Target { url, addr, user, password })
    }
}

/// `%XX` escapes decoded (a URL's user and password may hold them, e.g. `%40` for `@`).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

impl fmt::Display for Target {
    /// The URL with the user name, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            None => write!(f, "{}", self.url),
            Some(user) => {
                let mut shown = self.url.clone();
                let _ = shown.set_username(user);
                write!(f, "{shown}")
            }
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// The publishing transport: where to publish, and the hub viewer made at start-up.
pub struct Publish {
    target: Target,
    /// Joins the hub at start-up, so frames encoded while the first connection is made wait
    /// in its slot instead of counting as "no viewer".
    early: Option<Subscription>,
}

impl Publish {
    pub fn new(target: Target, hub: &Hub) -> Self {
        let early = Some(hub.subscribe(KIND, target.to_string()));
        Publish { target, early }
    }
}

impl Transport for Publish {
    fn name(&self) -> &'static str {
        "rtsp-publish"
    }

    /// Publishes until the stream ends, reconnecting with backoff; fails only for what
    /// retrying cannot fix (credentials or path refused).
    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Publish { target, early } = *self;
        let early = RefCell::new(early);
        let mut fatal = None;
        info!(url = %target, "publishing to {target}");
        let done = || feed.stop.load(Ordering::Relaxed) || feed.hub.is_closed();
        let serve = |stream: TcpStream, n: u64| {
            if n > 1 {
                feed.meter.update(|c| c.reconnects += 1);
            }
            match session(stream, &target, &feed, early.borrow_mut().take()) {
                Ok(()) => Session::Stop,
                Err(e) if is_fatal(&e) => {
                    fatal = Some(e);
                    Session::Stop
                }
                Err(e) => {
                    warn!(url = %target, error = format!("{e:#}"), "publishing stopped");
                    Session::Again
                }
            }
        };
        // While the server is away nobody watches: encoding pauses.
        let away = || drop(early.borrow_mut().take());
        let res = connect(&target.addr, "RTSP server", Policy::reconnect(), &done, serve, away);
        if let Err(e) = res {
            feed.finish();
            return Err(e).context(format!("--publish {target}"));
        }
        if let Some(e) = fatal {
            feed.finish();
            return Err(e.context(format!("--publish {target}")));
        }
        Ok(())
    }
}

/// Whether publishing failed for a reason retrying cannot fix.
fn is_fatal(_e: &anyhow::Error) -> bool {
    false
}

/// One connection to the server: ANNOUNCE, SETUP, RECORD, then frames until the stream ends
/// (`Ok`) or the connection fails.
fn session(stream: TcpStream, target: &Target, feed: &Feed, sub: Option<Subscription>) -> anyhow::Result<()> {
    let _ = (stream, target, feed, sub);
    anyhow::bail!("not yet")
}

/// Interleaved channel of the RTP packets (`interleaved=0-1`); RTCP goes on the next one.
pub const RTP_CHANNEL: u8 = 0;
pub const RTCP_CHANNEL: u8 = 1;

/// Appends every packet of `frame` to `out` as `$`-interleaved RTP on [`RTP_CHANNEL`], so
/// that a frame goes out in one write. Returns the bytes appended.
pub fn interleave_frame(rtp: &mut RtpStream, frame: &Packetized, capture_us: u64, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    for i in 0..frame.len() {
        let at = out.len();
        interleaved_header(RTP_CHANNEL, 0, out);
        rtp.write(frame, i, capture_us, out);
        // The packet's length, now that it is written (at most MAX_PACKET, well under 64 KiB).
        let len = (out.len() - at - 4) as u16;
        out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::rtp::packetize::packetize;
    use crate::rtp::{JpegHeader, MAX_PACKET};
    use crate::testutil::pattern_jpeg;

    #[test]
    fn a_frame_is_interleaved_packet_by_packet_with_the_marker_on_the_last() {
        let jpeg = pattern_jpeg(640, 480, Subsampling::S420, 75, 3).unwrap();
        let frame = packetize(&jpeg).unwrap();
        assert!(frame.len() > 3, "{} packets", frame.len());
        let mut rtp = RtpStream::new(0x1234, 65534, 0);
        let mut out = vec![9];
        let n = interleave_frame(&mut rtp, &frame, 1_000_000, &mut out);
        assert_eq!(n, out.len() - 1);
        let mut rest = &out[1..];
        let mut offsets = Vec::new();
        while !rest.is_empty() {
            assert_eq!((rest[0], rest[1]), (b'$', RTP_CHANNEL));
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            assert!(len <= MAX_PACKET, "packet of {len} bytes");
            let pkt = rtp_types::RtpPacket::parse(&rest[4..4 + len]).unwrap();
            assert_eq!(pkt.sequence_number(), 65534u16.wrapping_add(offsets.len() as u16));
            assert_eq!(pkt.timestamp(), 90_000);
            assert_eq!(pkt.marker_bit(), offsets.len() + 1 == frame.len());
            let (h, _) = JpegHeader::parse(pkt.payload()).unwrap();
            assert_eq!((h.width, h.height), (640, 480));
            offsets.push(h.fragment_offset);
            rest = &rest[4 + len..];
        }
        assert_eq!(offsets.len(), frame.len());
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        assert_eq!(rtp.seq, 65534u16.wrapping_add(frame.len() as u16));
    }

    #[test]
    fn urls_are_parsed_and_shown_without_the_password() {
        let t: Target = "rtsp://cam:p%40ss@mediamtx.lan:8554/cam".parse().unwrap();
        assert_eq!(t.addr, "mediamtx.lan:8554");
        assert_eq!(t.user.as_deref(), Some("cam"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.url.as_str(), "rtsp://mediamtx.lan:8554/cam");
        assert_eq!(t.to_string(), "rtsp://cam@mediamtx.lan:8554/cam");
        assert!(!format!("{t:?}").contains("p@ss") && !format!("{t:?}").contains("p%40ss"));
        let t: Target = "rtsp://10.0.0.2/live/cam".parse().unwrap();
        assert_eq!((t.addr.as_str(), t.user, t.password), ("10.0.0.2:554", None, None));
        let t: Target = "rtsp://[::1]:8554/cam".parse().unwrap();
        assert_eq!(t.addr, "[::1]:8554");
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for (url, says) in [
            ("http://h:1/cam", "the scheme is http://"),
            ("rtsps://h:1/cam", "rtsps://"),
            ("h:8554/cam", "rtsp://[USER"),
            ("rtsp://h:notaport/cam", "port"),
            ("rtsp://", "rtsp://[USER"),
        ] {
            let e = url.parse::<Target>().unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.contains("expected rtsp://"), "{url}: {e}");
        }
    }
}
