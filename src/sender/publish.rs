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
//! reason is logged and publishing starts again after the backoff's next delay; encoding
//! pauses meanwhile (nobody watches). A server that wants credentials the URL lacks, refuses
//! them (401 after authenticating), or answers 403, 404, 405 or 461 (transport) ends the
//! sender with that error: retrying would not help. Frames go out on this one thread: between
//! frames it reads what the server sent (receiver reports, requests) with 1 ms reads.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::net::TcpStream;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::RecvTimeoutError;
use rtsp_types::{headers, Method, Url};
use tracing::{debug, info, warn};

use super::rtsp::requests::{sdp, Context, TRACK};
use super::rtsp::session::{interleave_frame, read_rtcp, write_sender_report};
use super::rtsp::{frame_size, FrameCache};
use super::transport::{Feed, Transport};
use super::{Congestion, POLL};
use crate::clock::clock_id;
use crate::hub::{Hub, Shared, Subscription, ViewerKind};
use crate::net::conn::{connect, limit_send_queue, Policy, Session};
use crate::rtp::packetize::RtpStream;
use crate::rtp::MAX_HEADER_DIMENSION;
use crate::rtsp::client::{self, Client, ClientError};

/// How the publisher is named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("rtsp-publish");

/// Where to publish: `rtsp://[user[:password]@]host[:port]/path`, checked at the command
/// line (framecast's RTSP client reads it), shown in logs and errors without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Target(pub client::Target);

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const SHAPE: &str = "expected rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH";
        if s.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("rtsps://")) {
            return Err(format!("RTSP over TLS (rtsps://) is not supported; {SHAPE}"));
        }
        let t = client::Target::parse(s).map_err(|e| e.to_string())?;
        if t.url.host_str().is_none_or(str::is_empty) {
            return Err(format!("no host in the URL; {SHAPE}"));
        }
        Ok(Target(t))
    }
}

impl fmt::Display for Target {
    /// The URL with the user name, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.url.clone();
        if let Some(user) = &self.0.user {
            let _ = shown.set_username(user);
        }
        write!(f, "{shown}")
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
    /// Shared with `--rtsp`.
    frames: Arc<FrameCache>,
}

impl Publish {
    pub fn new(target: Target, hub: &Hub, frames: Arc<FrameCache>) -> Self {
        let early = Some(hub.subscribe(KIND, target.to_string()));
        Publish { target, early, frames }
    }
}

impl Transport for Publish {
    fn name(&self) -> &'static str {
        "rtsp-publish"
    }

    /// Publishes until the stream ends, reconnecting with backoff; fails only for what
    /// retrying cannot fix (credentials, path or transport refused).
    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Publish { target, early, frames } = *self;
        let early = RefCell::new(early);
        let mut fatal = None;
        info!(url = %target, "publishing to {target}");
        let done = || feed.stop.load(Ordering::Relaxed) || feed.hub.is_closed();
        let serve = |stream: TcpStream, n: u64| {
            if n > 1 {
                feed.meter.update(|c| c.reconnects += 1);
            }
            let mut s = Publisher { target: &target, feed: &feed, frames: &frames, buf: Vec::new() };
            match s.run(stream, early.borrow_mut().take()) {
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
        let res = connect(&target.0.addr, "RTSP server", Policy::reconnect(), &done, serve, away);
        let err = match (res, fatal) {
            (Err(e), _) => anyhow::Error::from(e),
            (Ok(()), Some(e)) => e,
            (Ok(()), None) => return Ok(()),
        };
        feed.finish();
        Err(err.context(format!("--publish {target}")))
    }
}

/// Whether publishing failed for a reason retrying cannot fix: credentials missing or
/// refused, or the server refusing the path, the method or the transport.
fn is_fatal(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::NeedsCredentials { .. } | ClientError::BadCredentials { .. }) => true,
        Some(ClientError::Status { code, .. }) => matches!(code, 401 | 403 | 404 | 405 | 461),
        _ => false,
    }
}

/// One connection's worth of publishing.
struct Publisher<'a> {
    target: &'a Target,
    feed: &'a Feed,
    frames: &'a FrameCache,
    /// A frame's interleaved packets, reused.
    buf: Vec<u8>,
}

/// What RECORD set up: the URL requests go to, the channels, the RTP stream and its size.
struct Recording {
    url: Url,
    rtp: u8,
    rtcp: u8,
    stream: RtpStream,
    /// The frame size the SDP was made for.
    size: (u32, u32),
}

impl Publisher<'_> {
    /// ANNOUNCE, SETUP, RECORD, then frames until the stream ends (`Ok`, after TEARDOWN) or
    /// the connection fails.
    fn run(&mut self, stream: TcpStream, sub: Option<Subscription>) -> anyhow::Result<()> {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut client = Client::over(stream, &self.target.0, POLL)?;
        let mut rec = self.record(&mut client)?;
        let sub = sub.unwrap_or_else(|| self.feed.hub.subscribe(KIND, self.target.to_string()));
        info!(url = %self.target, %peer, session = client.session().unwrap_or(""), "publishing: recording");
        // A small kernel queue: a slow server makes frames wait in the newest-wins slot (and
        // be replaced there) instead of queueing seconds of video in the socket.
        limit_send_queue(client.stream(), Congestion::SEND_QUEUE)?;
        // Between frames, reads only look at what has arrived.
        client.stream().set_read_timeout(Some(Duration::from_millis(1)))?;
        let keep_alive = (client.session_timeout() / 3).max(Duration::from_secs(1));
        let (mut reported, mut kept_alive) = (Instant::now(), Instant::now());
        loop {
            match sub.rx.recv_timeout(POLL) {
                Ok(frame) => self.send(&mut client, &mut rec, &frame, &sub)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = client.teardown(&rec.url);
                    info!(url = %self.target, "publishing finished");
                    return Ok(());
                }
            }
            if reported.elapsed() >= SENDER_REPORT {
                reported = Instant::now();
                let mut sr = [0u8; 128];
                if let Some(n) = write_sender_report(&rec.stream, &mut sr) {
                    client.write_interleaved(rec.rtcp, &sr[..n]).context("cannot send an RTCP sender report")?;
                }
            }
            if kept_alive.elapsed() >= keep_alive {
                kept_alive = Instant::now();
                client.keep_alive(&rec.url).context("keep-alive")?;
            }
            drain(&mut client, &rec, &sub)?;
        }
    }

    /// ANNOUNCE the stream's SDP, SETUP its one media over TCP interleaved for recording,
    /// RECORD.
    fn record(&self, client: &mut Client) -> anyhow::Result<Recording> {
        let url = self.target.0.url.clone();
        client.options()?;
        let size = frame_size(self.feed);
        let ctx = Context {
            token: None,
            nonce: String::new(),
            clock_id: clock_id().iter().map(|b| format!("{b:02x}")).collect(),
            fps_milli: self.feed.stream.fps_milli,
        };
        let host = client.stream().local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let sdp = sdp(&ctx, size, &host);
        let mut body = Vec::new();
        sdp.write(&mut body).context("cannot write the SDP")?;
        let content_type = [(headers::CONTENT_TYPE, "application/sdp".to_string())];
        client.request(Method::Announce, &url, &content_type, &body)?;
        // The media's control URL: the stream's URL and the SDP's track name.
        let media = Url::parse(&format!("{}/{TRACK}", url.as_str().trim_end_matches('/')))
            .with_context(|| format!("cannot make the media URL from {url}"))?;
        let mut transport = client::Transport::Tcp { rtp: RTP_CHANNEL, rtcp: RTCP_CHANNEL };
        client.setup(&media, &mut transport, true)?;
        let client::Transport::Tcp { rtp, rtcp } = transport else {
            anyhow::bail!("SETUP answered with a UDP transport to a request for TCP interleaved");
        };
        client.request(Method::Record, &url, &[(headers::RANGE, "npt=0.000-".to_string())], &[])?;
        Ok(Recording { url, rtp, rtcp, stream: RtpStream::random(), size })
    }

    /// Packetises a frame (once, re-encoded if RFC 2435 cannot carry it) and writes it.
    fn send(
        &mut self,
        client: &mut Client,
        rec: &mut Recording,
        frame: &Shared,
        sub: &Subscription,
    ) -> anyhow::Result<()> {
        let size = (u32::from(frame.header.width), u32::from(frame.header.height));
        if size != rec.size && size.0.max(size.1).max(rec.size.0).max(rec.size.1) > MAX_HEADER_DIMENSION {
            // Only the SDP can state a size above 2040 pixels: announce it again.
            anyhow::bail!(
                "the frame size changed from {}x{} to {}x{}; announcing again",
                rec.size.0,
                rec.size.1,
                size.0,
                size.1
            );
        }
        let Ok(packets) = self.frames.get(frame) else { return Ok(()) };
        self.buf.clear();
        let bytes = interleave_frame(&mut rec.stream, rec.rtp, &packets, frame.header.capture_us, &mut self.buf);
        client.stream().write_all(&self.buf).context("cannot write a frame")?;
        self.feed.sent_captured(sub, bytes as u64, frame.header.capture_us);
        Ok(())
    }
}

/// Sender reports go out about this often (RFC 3550's 5 s minimum is for large sessions).
const SENDER_REPORT: Duration = Duration::from_secs(1);

/// Reads what the server sent (RTCP receiver reports, its own requests, stray data) without
/// waiting; receiver reports about our stream go into the link's stats.
fn drain(client: &mut Client, rec: &Recording, sub: &Subscription) -> anyhow::Result<()> {
    // Bounded: a server flooding the connection cannot hold the frames back.
    for _ in 0..64 {
        let Some((channel, data)) = client.read_interleaved()? else { return Ok(()) };
        if channel != rec.rtcp {
            debug!(
                channel,
                bytes = data.len(),
                "publishing: data from the server on a channel other than RTCP; ignored"
            );
            continue;
        }
        read_rtcp(&data, rec.stream.ssrc, sub);
    }
    Ok(())
}

/// Interleaved channel of the RTP packets (`interleaved=0-1`); RTCP goes on the next one.
pub const RTP_CHANNEL: u8 = 0;
pub const RTCP_CHANNEL: u8 = 1;

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
        let n = interleave_frame(&mut rtp, RTP_CHANNEL, &frame, 1_000_000, &mut out);
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
    fn urls_are_shown_without_the_password() {
        let t: Target = "rtsp://cam:p%40ss@mediamtx.lan:8554/cam".parse().unwrap();
        assert_eq!(t.0.addr, "mediamtx.lan:8554");
        assert_eq!((t.0.user.as_deref(), t.0.password.as_deref()), (Some("cam"), Some("p@ss")));
        assert_eq!(t.0.url.as_str(), "rtsp://mediamtx.lan:8554/cam");
        assert_eq!(t.to_string(), "rtsp://cam@mediamtx.lan:8554/cam");
        assert!(!format!("{t:?}").contains("p@ss") && !format!("{t:?}").contains("p%40ss"));
        let t: Target = "rtsp://10.0.0.2/live/cam".parse().unwrap();
        assert_eq!(t.0.addr, "10.0.0.2:554");
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for (url, says) in [
            ("http://h:1/cam", "not rtsp"),
            ("rtsps://h:1/cam", "rtsps://"),
            ("h:8554/cam", "not rtsp"),
            ("rtsp://h:notaport/cam", "port"),
            ("rtsp://", "no host"),
        ] {
            let e = url.parse::<Target>().unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.to_ascii_lowercase().contains("expected rtsp://"), "{url}: {e}");
        }
    }
}
