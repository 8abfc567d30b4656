//! net-rx for RTSP (thread `net-rx`, in place of `net.rs` when `recv --connect` names an
//! `rtsp://` URL): it owns the RTSP connection (and, over UDP, the RTP/RTCP port pair),
//! plays the stream (OPTIONS, DESCRIBE, SETUP, PLAY), depacketizes RTP/JPEG into frames
//! ([`crate::rtp::depacketize`]) and hands each to decode as an [`Incoming`], like net-rx.
//!
//! Beside the media it keeps the session alive (GET_PARAMETER or OPTIONS before the session
//! timeout), sends an RTCP receiver report about every second (loss, jitter) and reads the
//! sender's reports. Latency: a framecast sender on this host (its SDP's `x-framecast-clock`
//! is ours) stamps every packet with the capture time on our shared clock, exact as native;
//! any other sender's RTP timestamps are mapped to wall time through its RTCP sender reports,
//! which is right only as far as the two hosts' wall clocks agree (stats say `"rtcp"`); with
//! neither, latency is unknown.
//!
//! A session ends when the server closes it, a packet is malformed (logged, with what
//! arrived), no RTP arrives for the session timeout (at least 5 s), the view finishes, or
//! Ctrl-C; then it reconnects with backoff, as `--connect` does, unless the server refused
//! us for good (credentials, no such stream, no JPEG).

mod rtcp;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rtp_types::RtpPacket;
use tracing::{debug, info, warn};

use super::net::Incoming;
use crate::chan::{LatestSender, Pool};
use crate::clock::{clock_id, now_us};
use crate::net::conn::{connect, Policy, Session};
use crate::net::FrameHeader;
use crate::rtp::depacketize::{self, Band, Depacketizer, Output};
use crate::rtsp::client::{Client, ClientError, Description, Target, Transport, UdpPair};
use crate::stats::{ClockSource, ClockStatus, DropCause, Meter};
use rtcp::Reception;

/// How long a read waits before the stage looks at its stop conditions.
const POLL: Duration = Duration::from_millis(100);
/// How often a receiver report goes to the server.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Shortest time without RTP that ends a playing session (else the session timeout).
const MIN_SILENCE: Duration = Duration::from_secs(5);
/// Largest UDP datagram read (RTP packets are at most an MTU; more is cut and malformed).
const MAX_DATAGRAM: usize = 65536;

/// How RTP reaches the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RtspTransport {
    /// Interleaved in the RTSP connection (RTP/AVP/TCP).
    Tcp,
    /// A UDP port pair (RTP/AVP).
    Udp,
}

/// An RTSP stream to play.
#[derive(Clone, Debug)]
pub struct RtspEndpoint {
    pub target: Target,
    pub transport: RtspTransport,
}

/// The RTSP net-rx stage: everything it needs, built before its thread starts.
pub(super) struct RtspRx {
    pub endpoint: RtspEndpoint,
    pub once: bool,
    pub patience: Duration,
    pub tx: LatestSender<Incoming>,
    pub pool: Pool<Vec<u8>>,
    pub meter: Meter,
    pub stop: Arc<AtomicBool>,
    pub finish: Arc<AtomicBool>,
}

impl RtspRx {
    /// Plays the stream, reconnecting with backoff, until the receiver stops, the server
    /// refuses us for good, or (`--once`) the first session ends.
    pub fn run(self) -> anyhow::Result<()> {
        let addr = self.endpoint.target.addr.clone();
        let mut fatal = None;
        let session = |stream: TcpStream, n: u64| {
            if n > 1 {
                self.meter.update(|c| c.reconnects += 1);
            }
            let url = self.endpoint.target.url.as_str();
            info!(%url, connection = n, transport = ?self.endpoint.transport, "connected to the rtsp server");
            match self.session(stream) {
                Ok(()) => info!(%url, "rtsp session ended"),
                Err(e) if is_final(&e) => {
                    fatal = Some(e);
                    return Session::Stop;
                }
                Err(e) => warn!(%url, error = format!("{e:#}"), "rtsp session closed"),
            }
            Session::Again
        };
        let policy = if self.once { Policy::once(self.patience) } else { Policy::reconnect() };
        connect(&addr, "rtsp server", policy, &|| self.done(), session, || {}).context("--connect")?;
        match fatal {
            Some(e) => Err(anyhow::Error::new(e).context(format!("rtsp server {}", self.endpoint.target.url))),
            None => Ok(()),
        }
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.finish.load(Ordering::Relaxed) || self.tx.is_disconnected()
    }

    /// One RTSP session: set up, play to its end, tear down.
    fn session(&self, stream: TcpStream) -> Result<(), ClientError> {
        let local = stream.local_addr()?.ip();
        let mut client = Client::over(stream, &self.endpoint.target, POLL)?;
        client.options()?;
        let desc = client.describe()?;
        let media = &desc.media;
        info!(
            control = %media.control,
            payload_type = media.payload_type,
            dimensions = ?media.dimensions,
            framerate = ?media.framerate,
            capture_time = media.capture_ext.is_some(),
            "rtsp stream described"
        );
        let mut transport = match self.endpoint.transport {
            RtspTransport::Tcp => Transport::Tcp { rtp: 0, rtcp: 1 },
            RtspTransport::Udp => Transport::Udp(UdpPair::bind(local)?),
        };
        client.setup(&media.control, &mut transport, false)?;
        let link = Link::new(transport)?;
        client.play(&desc.base)?;
        info!(session = client.session().unwrap_or(""), timeout_s = client.session_timeout().as_secs(), "rtsp playing");
        let mut play = Play::new(self, &desc);
        let res = play.run(&mut client, &link, &desc);
        if !matches!(res, Err(ClientError::Closed(_) | ClientError::Io(_))) {
            if let Err(e) = client.teardown(&desc.base) {
                debug!(error = %e, "teardown");
            }
        }
        res
    }
}

/// Errors that reconnecting cannot fix: the server refused us or has no stream for us.
fn is_final(e: &ClientError) -> bool {
    match e {
        ClientError::NeedsCredentials { .. } | ClientError::BadCredentials { .. } | ClientError::Sdp(_) => true,
        ClientError::Status { code, .. } => matches!(code, 401 | 403 | 404 | 415 | 461),
        _ => false,
    }
}

/// Where RTP and RTCP arrive.
enum Link {
    Tcp { rtp: u8, rtcp: u8 },
    Udp { rtp: UdpSocket, rtcp: UdpSocket, rtcp_to: Option<SocketAddr> },
}

impl Link {
    /// Over UDP, each socket takes datagrams from the server's address only: connected to the
    /// server's ports when SETUP named them, else checked on arrival by IP.
    fn new(t: Transport) -> Result<Self, ClientError> {
        Ok(match t {
            Transport::Tcp { rtp, rtcp } => Link::Tcp { rtp, rtcp },
            Transport::Udp(pair) => {
                if let Some((rtp, rtcp)) = pair.server {
                    pair.rtp.connect(rtp)?;
                    pair.rtcp.connect(rtcp)?;
                }
                pair.rtp.set_nonblocking(true)?;
                pair.rtcp.set_nonblocking(true)?;
                Link::Udp { rtp: pair.rtp, rtcp: pair.rtcp, rtcp_to: pair.server.map(|s| s.1) }
            }
        })
    }
}

/// What arrived.
enum Got {
    Rtp(Vec<u8>),
    Rtcp(Vec<u8>),
    Nothing,
}

/// A session while it plays: the depayloader, RTCP state and the frame count.
struct Play<'a> {
    rx: &'a RtspRx,
    depack: Depacketizer,
    reception: Reception,
    /// The sender is framecast on this host: capture times are on our clock.
    same_clock: bool,
    own_ssrc: u32,
    frames: u64,
    /// Malformed UDP datagrams from elsewhere, and packets from another SSRC, ignored.
    strays: u64,
    /// Where UDP datagrams are read (one buffer for the session).
    udp_buf: Vec<u8>,
}

impl<'a> Play<'a> {
    fn new(rx: &'a RtspRx, desc: &Description) -> Self {
        let m = &desc.media;
        let cfg = depacketize::Config {
            dimensions: m.dimensions,
            capture_ext: m.capture_ext,
            payload_type: Some(m.payload_type),
        };
        let same_clock = m.capture_ext.is_some() && m.clock_id == Some(clock_id());
        let source = if same_clock { ClockSource::Shared } else { ClockSource::Unknown };
        rx.meter.update(|c| c.clock = Some(ClockStatus { source, ..ClockStatus::unsynced(same_clock) }));
        if !same_clock {
            info!(
                "the rtsp sender's clock is not ours: latency from RTCP sender reports (wall clocks), if it sends them"
            );
        }
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        Play {
            rx,
            depack: Depacketizer::new(cfg),
            reception: Reception::default(),
            same_clock,
            own_ssrc: u32::from_be_bytes(b),
            frames: 0,
            strays: 0,
            udp_buf: Vec::new(),
        }
    }

    fn run(&mut self, client: &mut Client, link: &Link, desc: &Description) -> Result<(), ClientError> {
        let keep_alive = (client.session_timeout() / 2).max(Duration::from_secs(1));
        // A server that keeps the session but sends nothing would hold the receiver forever.
        let silence = client.session_timeout().max(MIN_SILENCE);
        let (mut alive_at, mut report_at) = (Instant::now() + keep_alive, Instant::now() + REPORT_EVERY);
        let mut last_rtp = Instant::now();
        loop {
            if self.rx.done() {
                return Ok(());
            }
            match self.read(client, link)? {
                Got::Rtp(p) => {
                    last_rtp = Instant::now();
                    self.rtp(&p)?
                }
                Got::Rtcp(p) => self.rtcp(&p),
                Got::Nothing => {}
            }
            if last_rtp.elapsed() > silence {
                return Err(ClientError::NoMedia(silence));
            }
            if !self.deliver() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= report_at {
                report_at = now + REPORT_EVERY;
                self.report(client, link)?;
            }
            if now >= alive_at {
                alive_at = now + keep_alive;
                client.keep_alive(&desc.base)?;
            }
        }
    }

    /// The next RTP or RTCP packet, or nothing within [`POLL`]. Over UDP, the RTSP connection
    /// is read too (the server may close it, or send a request).
    fn read(&mut self, client: &mut Client, link: &Link) -> Result<Got, ClientError> {
        match link {
            Link::Tcp { rtp, rtcp } => Ok(match client.read_interleaved()? {
                Some((ch, data)) if ch == *rtp => Got::Rtp(data),
                Some((ch, data)) if ch == *rtcp => Got::Rtcp(data),
                Some((ch, _)) => {
                    debug!(channel = ch, "interleaved data on a channel not set up; ignored");
                    Got::Nothing
                }
                None => Got::Nothing,
            }),
            Link::Udp { rtp, rtcp, .. } => {
                let ready = wait_readable(&[rtp.as_raw_fd(), rtcp.as_raw_fd(), client.stream().as_raw_fd()], POLL)?;
                if ready[2] {
                    client.read_interleaved()?;
                }
                let server = client.stream().peer_addr()?.ip();
                for (i, sock) in [rtp, rtcp].into_iter().enumerate() {
                    if !ready[i] {
                        continue;
                    }
                    self.udp_buf.resize(MAX_DATAGRAM, 0);
                    match sock.recv_from(&mut self.udp_buf) {
                        Ok((_, from)) if from.ip() != server => self.strays += 1,
                        Ok((n, _)) => {
                            let data = self.udp_buf[..n].to_vec();
                            return Ok(if i == 0 { Got::Rtp(data) } else { Got::Rtcp(data) });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Got::Nothing)
            }
        }
    }

    /// A compound RTCP packet: the first sender report from a foreign sender makes its
    /// latency known, as far as the wall clocks agree.
    fn rtcp(&mut self, p: &[u8]) {
        let had = self.reception.last_sr.is_some();
        if self.reception.rtcp(p, now_us()) == 0 || self.same_clock {
            return;
        }
        if !had {
            info!("rtcp sender report: latency from here on maps RTP time to the sender's wall clock (as exact as the two hosts' clocks agree)");
        }
        self.rx
            .meter
            .update(|c| c.clock = Some(ClockStatus { source: ClockSource::Rtcp, ..ClockStatus::unsynced(false) }));
    }

    /// One RTP packet into the depayloader; a malformed one ends the session.
    fn rtp(&mut self, p: &[u8]) -> Result<(), ClientError> {
        let arrival = now_us();
        if let Ok(pkt) = RtpPacket::parse(p) {
            if self.reception.ssrc.is_some_and(|s| s != pkt.ssrc()) {
                self.strays += 1;
                debug!(ssrc = pkt.ssrc(), "rtp from another ssrc; ignored");
                return Ok(());
            }
            self.reception.packet(pkt.ssrc(), pkt.timestamp(), arrival);
        }
        self.depack.push(p).map_err(|source| {
            let head = format!("{:02x?}", &p[..p.len().min(24)]);
            ClientError::Rtp { len: p.len(), head, source }
        })
    }

    /// Hands the frames the depayloader finished to decode. False once decode is gone.
    fn deliver(&mut self) -> bool {
        while let Some(out) = self.depack.pull() {
            let (ts, capture, jpeg, bands, size, q) = match out {
                Output::Frame(f) => (f.timestamp, f.capture_us, f.jpeg, Vec::new(), (f.width, f.height), f.q),
                Output::Partial(p) => (p.timestamp, p.capture_us, Vec::new(), p.bands, (p.width, p.height), p.q),
                Output::Lost { timestamp, why } => {
                    debug!(timestamp, why, "rtp frame lost");
                    self.rx.meter.count_drop(DropCause::RtpLoss);
                    continue;
                }
            };
            if !self.send(ts, capture, jpeg, bands, size, q) {
                return false;
            }
        }
        true
    }

    fn send(
        &mut self,
        ts: u32,
        capture: Option<u64>,
        jpeg: Vec<u8>,
        bands: Vec<Band>,
        size: (u32, u32),
        q: u8,
    ) -> bool {
        let received_us = now_us();
        let capture_local_us = self.capture_local(ts, capture, received_us);
        let len = jpeg.len() + bands.iter().map(|b| b.jpeg.len()).sum::<usize>();
        self.rx.meter.update(|c| {
            c.received += 1;
            c.frame_moved(len as u64);
            match capture_local_us {
                Some(cap) => {
                    let _ = c.lat_received.record(received_us.saturating_sub(cap).max(1));
                }
                None => c.latency_unknown += 1,
            }
        });
        self.frames += 1;
        let header = FrameHeader {
            seq: self.frames,
            capture_us: capture.unwrap_or(0),
            width: size.0.min(u32::from(u16::MAX)) as u16,
            height: size.1.min(u32::from(u16::MAX)) as u16,
            // Q 1..=99 is a JPEG quality; in-band tables say nothing about it.
            quality: if q < 100 { q } else { 0 },
            jpeg_len: len as u32,
            ..FrameHeader::default()
        };
        // The depayloader built the JPEG in a buffer of its own: handed on as it is (decode
        // returns it to the pool, whose buffers net-rx for the native protocol reuses).
        let inc = Incoming { conn: 1, header, received_us, capture_local_us, lossless: false, jpeg, bands };
        let net = self.rx;
        net.tx.deliver(inc, false, |old| {
            net.meter.count_drop(DropCause::DecoderBusy);
            net.pool.put(old.jpeg);
        })
    }

    /// The capture time on our clock: from the capture-time extension when the sender shares
    /// our clock, else through the last RTCP sender report and the wall clocks.
    fn capture_local(&self, ts: u32, capture: Option<u64>, received_us: u64) -> Option<u64> {
        if self.same_clock {
            return capture.filter(|&c| c <= received_us);
        }
        let wall = self.reception.last_sr?.wall_us(ts)?;
        let now_wall = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_micros() as u64;
        let age = now_wall.checked_sub(wall)?;
        received_us.checked_sub(age)
    }

    /// An RTCP receiver report to the server.
    fn report(&mut self, client: &mut Client, link: &Link) -> Result<(), ClientError> {
        let counts = self.depack.counts();
        if self.strays > 0 {
            debug!(strays = self.strays, "packets from elsewhere ignored");
        }
        let Some(rr) = self.reception.report(self.own_ssrc, counts, now_us()) else { return Ok(()) };
        debug!(lost = counts.lost(), jitter = self.reception.jitter(), late = counts.late, "rtcp receiver report");
        match link {
            Link::Tcp { rtcp, .. } => client.write_interleaved(*rtcp, &rr),
            Link::Udp { rtcp, rtcp_to: Some(_), .. } => rtcp.send(&rr).map(|_| ()).map_err(ClientError::Io),
            Link::Udp { .. } => Ok(()),
        }
    }
}

/// Which of `fds` are readable within `timeout`.
fn wait_readable(fds: &[i32; 3], timeout: Duration) -> std::io::Result<[bool; 3]> {
    let mut p = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    // SAFETY: three valid pollfds for the duration of the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 3, timeout.as_millis() as i32) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok([false; 3]) } else { Err(e) };
    }
    Ok(p.map(|f| f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0))
}
