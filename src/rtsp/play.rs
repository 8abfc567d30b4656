//! Playing an RTSP M-JPEG stream, for both players: `recv --connect rtsp://` (the receiver's
//! `net-rx`) and `send --source rtsp://` (the sender's `capture`). [`Player::start`] sets up
//! a session on a [`Client`] (OPTIONS, DESCRIBE, SETUP over TCP interleaved or a UDP port
//! pair, PLAY); [`Player::step`] then reads one packet at a time, depacketises RTP/JPEG into
//! frames ([`crate::rtp::depacketize`]) and hands out what it completes, pull-style, while it
//! keeps the session alive (GET_PARAMETER or OPTIONS before the session timeout), sends an
//! RTCP receiver report about every second (loss, jitter) and reads the sender's reports.
//!
//! What a frame's time means is the caller's business: [`Player::same_clock`] says whether
//! the sender is framecast on this host (its SDP's `x-framecast-clock` is ours, so the
//! capture-time extension is on our clock); [`Player::capture_local`] maps a foreign sender's
//! RTP time to our clock through its RTCP sender reports and the two hosts' wall clocks.
//!
//! A session ends with an error when the server closes it, a packet is malformed (with what
//! arrived), or no RTP arrives for the silence limit ([`Player::set_silence`]; by default the
//! session timeout, at least 5 s).

mod rtcp;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtp_types::RtpPacket;
use tracing::{debug, info};

use super::client::{Client, ClientError, Description, Transport, UdpPair};
use crate::clock::{clock_id, now_us};
use crate::rtp::depacketize::{self, Depacketizer, Output};
use rtcp::Reception;

/// How often a receiver report goes to the server.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Shortest time without RTP that ends a playing session by default (else the session
/// timeout).
pub const MIN_SILENCE: Duration = Duration::from_secs(5);
/// Largest UDP datagram read (RTP packets are at most an MTU; more is cut and malformed).
const MAX_DATAGRAM: usize = 65536;
/// RTSP's status for a transport the server does not offer.
const UNSUPPORTED_TRANSPORT: u16 = 461;

/// How RTP reaches the player.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RtspTransport {
    /// Interleaved in the RTSP connection (RTP/AVP/TCP).
    Tcp,
    /// A UDP port pair (RTP/AVP).
    Udp,
}

/// Errors that reconnecting cannot fix: the server refused us or has no stream for us.
pub fn is_final(e: &ClientError) -> bool {
    match e {
        ClientError::NeedsCredentials { .. } | ClientError::BadCredentials { .. } | ClientError::Sdp(_) => true,
        ClientError::Status { code, .. } => matches!(code, 401 | 403 | 404 | 415 | 461),
        _ => false,
    }
}

/// What one [`Player::step`] came to.
#[derive(Debug)]
pub enum Step {
    /// A frame done (whole, in part, or lost), and when the packet that completed it arrived
    /// (µs on [`now_us`]).
    Frame { out: Output, arrived_us: u64 },
    /// A sender report from a sender not on our clock: RTP time now maps to its wall clock
    /// (`first`: the first such report of the session).
    SenderReport { first: bool },
    /// Nothing done yet (a packet in the middle of a frame, RTCP, or nothing within the poll
    /// time of the client's reads).
    Idle,
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

/// A playing session (see the module docs).
pub struct Player {
    client: Client,
    link: Link,
    desc: Description,
    transport: RtspTransport,
    depack: Depacketizer,
    reception: Reception,
    /// The sender is framecast on this host: capture times are on our clock.
    same_clock: bool,
    own_ssrc: u32,
    /// Malformed UDP datagrams from elsewhere, and packets from another SSRC, ignored.
    strays: u64,
    /// Where UDP datagrams are read (one buffer for the session).
    udp_buf: Vec<u8>,
    keep_alive: Duration,
    silence: Duration,
    alive_at: Instant,
    report_at: Instant,
    last_rtp: Instant,
    /// When the last RTP packet arrived (µs on [`now_us`]).
    arrived_us: u64,
}

impl Player {
    /// Sets up and plays the JPEG stream of the client's URL, over the first of `transports`
    /// the server takes (a 461 Unsupported Transport moves on to the next).
    pub fn start(mut client: Client, transports: &[RtspTransport]) -> Result<Player, ClientError> {
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
        let local = client.stream().local_addr()?.ip();
        let mut last = None;
        for (i, &want) in transports.iter().enumerate() {
            let mut t = match want {
                RtspTransport::Tcp => Transport::Tcp { rtp: 0, rtcp: 1 },
                RtspTransport::Udp => Transport::Udp(UdpPair::bind(local)?),
            };
            match client.setup(&media.control, &mut t, false) {
                Ok(()) => {
                    last = Some((want, t));
                    break;
                }
                Err(ClientError::Status { code: UNSUPPORTED_TRANSPORT, .. }) if i + 1 < transports.len() => {
                    info!(transport = ?want, next = ?transports[i + 1], "the rtsp server does not offer this transport");
                }
                Err(e) => return Err(e),
            }
        }
        let Some((transport, t)) = last else {
            return Err(ClientError::Status {
                method: "SETUP".into(),
                code: UNSUPPORTED_TRANSPORT,
                reason: "no transport to try".into(),
            });
        };
        let link = Link::new(t)?;
        client.play(&desc.base)?;
        info!(
            session = client.session().unwrap_or(""),
            timeout_s = client.session_timeout().as_secs(),
            transport = ?transport,
            "rtsp playing"
        );
        Ok(Player::new(client, link, desc, transport))
    }

    fn new(client: Client, link: Link, desc: Description, transport: RtspTransport) -> Player {
        let m = &desc.media;
        let cfg = depacketize::Config {
            dimensions: m.dimensions,
            capture_ext: m.capture_ext,
            payload_type: Some(m.payload_type),
        };
        let same_clock = m.capture_ext.is_some() && m.clock_id == Some(clock_id());
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        let keep_alive = (client.session_timeout() / 2).max(Duration::from_secs(1));
        // A server that keeps the session but sends nothing would hold the player forever.
        let silence = client.session_timeout().max(MIN_SILENCE);
        let now = Instant::now();
        Player {
            client,
            link,
            desc,
            transport,
            depack: Depacketizer::new(cfg),
            reception: Reception::default(),
            same_clock,
            own_ssrc: u32::from_be_bytes(b),
            strays: 0,
            udp_buf: Vec::new(),
            keep_alive,
            silence,
            alive_at: now + keep_alive,
            report_at: now + REPORT_EVERY,
            last_rtp: now,
            arrived_us: now_us(),
        }
    }

    pub fn description(&self) -> &Description {
        &self.desc
    }

    pub fn transport(&self) -> RtspTransport {
        self.transport
    }

    /// True if the sender is framecast on this host: frames' `capture_us` are on our clock.
    pub fn same_clock(&self) -> bool {
        self.same_clock
    }

    /// How long the session may go without RTP before [`Player::step`] ends it.
    pub fn set_silence(&mut self, d: Duration) {
        self.silence = d;
    }

    /// One step of the session: hands out a frame done, else reads one packet (waiting at
    /// most the client's poll time), and sends a keep-alive or a receiver report when due.
    pub fn step(&mut self) -> Result<Step, ClientError> {
        if let Some(out) = self.depack.pull() {
            return Ok(Step::Frame { out, arrived_us: self.arrived_us });
        }
        let step = match self.read()? {
            Got::Rtp(p) => {
                self.last_rtp = Instant::now();
                self.rtp(&p)?;
                Step::Idle
            }
            Got::Rtcp(p) => self.rtcp(&p),
            Got::Nothing => Step::Idle,
        };
        if self.last_rtp.elapsed() > self.silence {
            return Err(ClientError::NoMedia(self.silence));
        }
        let now = Instant::now();
        if now >= self.report_at {
            self.report_at = now + REPORT_EVERY;
            self.report()?;
        }
        if now >= self.alive_at {
            self.alive_at = now + self.keep_alive;
            self.client.keep_alive(&self.desc.base)?;
        }
        if matches!(step, Step::Idle) {
            if let Some(out) = self.depack.pull() {
                return Ok(Step::Frame { out, arrived_us: self.arrived_us });
            }
        }
        Ok(step)
    }

    /// Ends the session: TEARDOWN unless the connection is already broken (`res`, how the
    /// session went).
    pub fn stop<T>(mut self, res: &Result<T, ClientError>) {
        if !matches!(res, Err(ClientError::Closed(_) | ClientError::Io(_))) {
            if let Err(e) = self.client.teardown(&self.desc.base) {
                debug!(error = %e, "teardown");
            }
        }
    }

    /// The next RTP or RTCP packet, or nothing within the poll time. Over UDP, the RTSP
    /// connection is read too (the server may close it, or send a request).
    fn read(&mut self) -> Result<Got, ClientError> {
        match &self.link {
            Link::Tcp { rtp, rtcp } => Ok(match self.client.read_interleaved()? {
                Some((ch, data)) if ch == *rtp => Got::Rtp(data),
                Some((ch, data)) if ch == *rtcp => Got::Rtcp(data),
                Some((ch, _)) => {
                    debug!(channel = ch, "interleaved data on a channel not set up; ignored");
                    Got::Nothing
                }
                None => Got::Nothing,
            }),
            Link::Udp { rtp, rtcp, .. } => {
                let poll = self.client.stream().read_timeout()?.unwrap_or(Duration::from_millis(100));
                let fds = [rtp.as_raw_fd(), rtcp.as_raw_fd(), self.client.stream().as_raw_fd()];
                let ready = wait_readable(&fds, poll)?;
                if ready[2] {
                    self.client.read_interleaved()?;
                }
                let server = self.client.stream().peer_addr()?.ip();
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

    /// A compound RTCP packet: a sender report from a foreign sender makes its latency
    /// known, as far as the wall clocks agree.
    fn rtcp(&mut self, p: &[u8]) -> Step {
        let had = self.reception.last_sr.is_some();
        if self.reception.rtcp(p, now_us()) == 0 || self.same_clock {
            return Step::Idle;
        }
        Step::SenderReport { first: !had }
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
        self.arrived_us = arrival;
        self.depack.push(p).map_err(|source| {
            let head = format!("{:02x?}", &p[..p.len().min(24)]);
            ClientError::Rtp { len: p.len(), head, source }
        })
    }

    /// The capture time on our clock of a frame with RTP timestamp `ts` and capture-time
    /// extension `capture`, received at `received_us`: the extension when the sender shares
    /// our clock, else through the last RTCP sender report and the wall clocks.
    pub fn capture_local(&self, ts: u32, capture: Option<u64>, received_us: u64) -> Option<u64> {
        if self.same_clock {
            return capture.filter(|&c| c <= received_us);
        }
        let wall = self.reception.last_sr?.wall_us(ts)?;
        let now_wall = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_micros() as u64;
        let age = now_wall.checked_sub(wall)?;
        received_us.checked_sub(age)
    }

    /// An RTCP receiver report to the server.
    fn report(&mut self) -> Result<(), ClientError> {
        let counts = self.depack.counts();
        if self.strays > 0 {
            debug!(strays = self.strays, "packets from elsewhere ignored");
        }
        let Some(rr) = self.reception.report(self.own_ssrc, counts, now_us()) else { return Ok(()) };
        debug!(lost = counts.lost(), jitter = self.reception.jitter(), late = counts.late, "rtcp receiver report");
        match &self.link {
            Link::Tcp { rtcp, .. } => self.client.write_interleaved(*rtcp, &rr),
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
