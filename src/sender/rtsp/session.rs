//! One RTSP connection, on two threads:
//!
//! - `rtsp-rx-PEER` owns the connection's **read half**: it reads messages and interleaved
//!   frames ([`crate::rtsp::MessageReader`], caps on everything) and hands them over; a
//!   message not complete within [`HEAD_TIMEOUT`] (slowloris) or malformed ends it.
//! - `rtsp-PEER` (the session) owns the **write half**, the hub slot, the RTP stream and the
//!   UDP sockets. It `select!`s over the requests, its hub slot (while playing) and a timer:
//!   it answers requests (`requests.rs`), sends each frame's packets (packetised once for
//!   every session, `frames.rs`) and an RTCP sender report about every second, and reads
//!   receiver reports into the link's stats (`rtcp_loss_pct`, `rtcp_jitter_ms`).
//!
//! UDP goes only to the address of the RTSP connection that did the SETUP, and is paced: a
//! frame's packets leave in bursts of [`PACE_BURST`] spread over half the frame interval (at
//! most [`PACE_SPAN_MAX`]), so a 100 KB frame is not one line-rate burst that a Wi-Fi link or
//! a small receive buffer drops. Over TCP a frame is one write; a viewer that stops reading
//! blocks only its own session thread, and loses frames in its own hub slot (counted as its
//! link's `drops`) until its write times out and the session ends.
//!
//! `--publish` (`sender/publish.rs`, thread `rtsp-publish`) uses the same pieces for its one
//! stream: [`interleave_frame`], [`write_sender_report`] and [`read_rtcp`].

use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, never, select, Receiver, Sender};
use rtcp_types::{Compound, Packet, ReportBlock, RtcpPacketWriterExt, Sdes, SdesChunk, SdesItem, SenderReport};
use rtsp_types::Message;
use tracing::{debug, info};

use super::requests::{Action, Env, Requests, Transport};
use super::{Server, KIND};
use crate::clock::now_us;
use crate::hub::{RtcpFigures, Shared, Subscription};
use crate::rtp::packetize::{Packetized, RtpStream};
use crate::rtsp::{interleaved_header, MessageReader, Polled};
use crate::stage::{self, Stage};

/// Time a peer has to complete a message it has started.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to the connection may block before the session ends.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP packets sent back to back before a pause.
pub const PACE_BURST: usize = 8;
/// Longest time over which a frame's packets are spread.
pub const PACE_SPAN_MAX: Duration = Duration::from_millis(20);
/// Kernel send buffer of a TCP-interleaved session (Linux doubles it): a viewer that stops
/// reading holds this much, not megabytes, before its own frames start to drop.
const TCP_SNDBUF: usize = 128 * 1024;
/// How often blocked threads look at their stop conditions.
const POLL: Duration = Duration::from_millis(100);
/// Interval between RTCP sender reports.
const SR_INTERVAL: Duration = Duration::from_secs(1);

/// What the reader hands the session.
enum Event {
    Message(Message<Vec<u8>>),
    /// The reader stopped: the peer closed (`None`) or sent something refused.
    Gone(Option<String>),
}

/// Starts the threads of a new connection.
pub fn spawn(stream: TcpStream, peer: SocketAddr, server: Arc<Server>) -> anyhow::Result<Stage> {
    stage::spawn(format!("rtsp-{peer}"), move || {
        if let Err(e) = run(stream, peer, &server) {
            debug!(%peer, error = %e, "rtsp: connection ended");
        }
        Ok(())
    })
}

fn run(stream: TcpStream, peer: SocketAddr, server: &Server) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(POLL))?;
    let (tx, rx) = bounded::<Event>(4);
    let read_half = stream.try_clone()?;
    let reader = stage::spawn(format!("rtsp-rx-{peer}"), move || {
        read_loop(read_half, &tx);
        Ok(())
    })
    .map_err(io::Error::other)?;
    let local = stream.local_addr()?.ip();
    let requests = Requests::new(server.ctx.clone(), super::random_hex(8));
    let mut s = Session { server, peer, out: stream, requests, udp: None, play: None, buf: Vec::new(), local };
    let res = s.serve(&rx);
    let _ = s.out.shutdown(Shutdown::Both);
    drop(rx);
    let _ = reader.join();
    res
}

/// Reads messages until the peer closes, sends something refused, or the session is gone.
fn read_loop(stream: TcpStream, tx: &Sender<Event>) {
    let mut r = MessageReader::new(stream);
    let mut partial_since: Option<Instant> = None;
    loop {
        let ev = match r.poll() {
            Ok(Polled::Message(m)) => {
                partial_since = None;
                Event::Message(m)
            }
            Ok(Polled::Pending) if r.buffered() == 0 => {
                partial_since = None;
                continue;
            }
            Ok(Polled::Pending) => {
                if partial_since.get_or_insert_with(Instant::now).elapsed() < HEAD_TIMEOUT {
                    continue;
                }
                let why = format!("no complete message within {HEAD_TIMEOUT:?} ({} bytes so far)", r.buffered());
                Event::Gone(Some(why))
            }
            Ok(Polled::Closed) => Event::Gone(None),
            Err(e) => Event::Gone(Some(e.to_string())),
        };
        let last = matches!(ev, Event::Gone(_));
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}

/// A session's UDP sockets (bound at SETUP).
struct Udp {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

/// A playing (or paused) session.
struct Play {
    sub: Subscription,
    stream: RtpStream,
    transport: Transport,
    paused: bool,
    last_sr: Instant,
}

struct Session<'a> {
    server: &'a Server,
    peer: SocketAddr,
    /// The connection's write half.
    out: TcpStream,
    requests: Requests,
    udp: Option<Udp>,
    play: Option<Play>,
    /// Reused for every message and frame written.
    buf: Vec<u8>,
    /// Our address on the connection (UDP sockets bind there).
    local: IpAddr,
}

/// Whether the session goes on.
type Flow = Result<bool, io::Error>;

impl Session<'_> {
    fn serve(&mut self, events: &Receiver<Event>) -> io::Result<()> {
        info!(peer = %self.peer, "rtsp: client connected");
        let mut last_heard = Instant::now();
        let idle = never();
        loop {
            let slot = match &self.play {
                Some(p) if !p.paused => &p.sub.rx,
                _ => &idle,
            };
            let go = select! {
                recv(events) -> ev => match ev {
                    Ok(Event::Message(m)) => {
                        last_heard = Instant::now();
                        self.on_message(m)?
                    }
                    Ok(Event::Gone(why)) => {
                        match why {
                            Some(why) => info!(peer = %self.peer, %why, "rtsp: bad input; closing the connection"),
                            None => info!(peer = %self.peer, "rtsp: client left"),
                        }
                        false
                    }
                    Err(_) => false,
                },
                recv(slot) -> frame => match frame {
                    Ok(f) => self.send_frame(&f)?,
                    Err(_) => false,
                },
                default(POLL) => true,
            };
            if !go {
                return Ok(());
            }
            if self.read_udp_rtcp() {
                last_heard = Instant::now();
            }
            if last_heard.elapsed() > super::requests::SESSION_TIMEOUT {
                info!(peer = %self.peer, "rtsp: no request or RTCP for {:?}; closing", super::requests::SESSION_TIMEOUT);
                return Ok(());
            }
            self.sender_report()?;
        }
    }

    fn on_message(&mut self, m: Message<Vec<u8>>) -> Flow {
        match m {
            Message::Request(req) => {
                let mut env = SetupEnv { udp: &mut self.udp, local: self.local, server: self.server };
                let reply = self.requests.handle(&req, self.peer.ip(), &mut env);
                self.buf.clear();
                let _ = reply.response.write(&mut self.buf);
                self.out.write_all(&self.buf)?;
                debug!(peer = %self.peer, method = <&str>::from(req.method()), status = u16::from(reply.response.status()), "rtsp: request");
                Ok(self.act(reply.action))
            }
            Message::Data(d) => Ok(self.on_data(d.channel_id(), d.as_slice())),
            Message::Response(r) => {
                debug!(peer = %self.peer, status = u16::from(r.status()), "rtsp: ignoring a response from a client");
                Ok(true)
            }
        }
    }

    /// Acts on a request's outcome; false ends the session.
    fn act(&mut self, action: Action) -> bool {
        match action {
            Action::None => {}
            Action::Play => self.start(),
            Action::Pause => {
                if let Some(p) = &mut self.play {
                    p.paused = true;
                }
            }
            Action::Teardown => {
                info!(peer = %self.peer, "rtsp: teardown");
                self.play = None;
                self.udp = None;
            }
            Action::Refused(why) => info!(peer = %self.peer, %why, "rtsp: request refused"),
            Action::Close(why) => {
                info!(peer = %self.peer, %why, "rtsp: request refused; closing the connection");
                return false;
            }
        }
        true
    }

    fn start(&mut self) {
        if let Some(p) = &mut self.play {
            p.paused = false;
            return;
        }
        let Some(setup) = self.requests.setup() else { return };
        if matches!(setup.transport, Transport::Tcp { .. }) {
            let _ = socket2::SockRef::from(&self.out).set_send_buffer_size(TCP_SNDBUF);
        }
        let sub = self.server.feed.hub.subscribe(KIND, self.peer.to_string());
        let how = match setup.transport {
            Transport::Udp { client, .. } => format!("UDP to {}:{}", self.peer.ip(), client.0),
            Transport::Tcp { channels } => format!("TCP interleaved, channels {}-{}", channels.0, channels.1),
        };
        info!(peer = %self.peer, viewer = sub.id, transport = %how, ssrc = format!("{:08X}", setup.stream.ssrc), "rtsp: playing");
        self.play = Some(Play {
            sub,
            stream: setup.stream.clone(),
            transport: setup.transport,
            paused: false,
            last_sr: Instant::now(),
        });
    }

    /// Interleaved data from the client: RTCP on the session's RTCP channel is read, anything
    /// on a channel no SETUP made ends the session.
    fn on_data(&mut self, channel: u8, data: &[u8]) -> bool {
        let Some(p) = &self.play else {
            info!(peer = %self.peer, channel, "rtsp: interleaved data before PLAY; closing the connection");
            return false;
        };
        match p.transport {
            Transport::Tcp { channels } if channel == channels.1 => {
                read_rtcp(data, p.stream.ssrc, &p.sub);
                true
            }
            Transport::Tcp { channels } if channel == channels.0 => true,
            _ => {
                info!(peer = %self.peer, channel, "rtsp: interleaved data on a channel no SETUP made; closing the connection");
                false
            }
        }
    }

    fn send_frame(&mut self, frame: &Shared) -> Flow {
        let Ok(packets) = self.server.frames.get(frame) else { return Ok(true) };
        let Some(p) = &mut self.play else { return Ok(true) };
        let capture_us = frame.header.capture_us;
        let sent = match (p.transport, &self.udp) {
            (Transport::Udp { client, .. }, Some(udp)) => {
                let dest = SocketAddr::new(self.peer.ip(), client.0);
                send_udp(&udp.rtp, dest, &packets, &mut p.stream, capture_us, self.server.pace_span)
            }
            (Transport::Tcp { channels }, _) => {
                self.buf.clear();
                interleave_frame(&mut p.stream, channels.0, &packets, capture_us, &mut self.buf);
                if let Err(e) = self.out.write_all(&self.buf) {
                    info!(peer = %self.peer, error = %e, "rtsp: the client does not read its TCP stream; closing");
                    return Ok(false);
                }
                self.buf.len()
            }
            (Transport::Udp { .. }, None) => return Ok(true),
        };
        self.server.feed.sent_captured(&p.sub, sent as u64, capture_us);
        Ok(true)
    }

    /// Reads the RTCP that arrived on the UDP socket; true if any came from the client.
    fn read_udp_rtcp(&mut self) -> bool {
        let (Some(udp), Some(p)) = (&self.udp, &self.play) else { return false };
        let mut got = false;
        let mut b = [0u8; 1500];
        while let Ok((n, from)) = udp.rtcp.recv_from(&mut b) {
            if from.ip() == self.peer.ip() {
                read_rtcp(&b[..n], p.stream.ssrc, &p.sub);
                got = true;
            }
        }
        // Anything the client sends to our RTP port (NAT keep-alives) is dropped unread.
        while udp.rtp.recv_from(&mut b).is_ok() {}
        got
    }

    /// Sends an RTCP sender report when one is due.
    fn sender_report(&mut self) -> io::Result<()> {
        let Some(p) = &mut self.play else { return Ok(()) };
        if p.paused || p.last_sr.elapsed() < SR_INTERVAL || p.stream.last.is_none() {
            return Ok(());
        }
        p.last_sr = Instant::now();
        let mut report = [0u8; 128];
        let Some(n) = write_sender_report(&p.stream, &mut report) else { return Ok(()) };
        match (p.transport, &self.udp) {
            (Transport::Udp { client, .. }, Some(udp)) => {
                let _ = udp.rtcp.send_to(&report[..n], SocketAddr::new(self.peer.ip(), client.1));
            }
            (Transport::Tcp { channels }, _) => {
                self.buf.clear();
                interleaved_header(channels.1, n, &mut self.buf);
                self.buf.extend_from_slice(&report[..n]);
                self.out.write_all(&self.buf)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Sends a frame's packets to `dest`, paced (see the module doc); returns the bytes sent.
fn send_udp(
    sock: &UdpSocket,
    dest: SocketAddr,
    packets: &Packetized,
    stream: &mut RtpStream,
    capture_us: u64,
    span: Duration,
) -> usize {
    let bursts = packets.len().div_ceil(PACE_BURST).max(1);
    let gap = span / bursts as u32;
    let mut buf = Vec::with_capacity(crate::rtp::MAX_PACKET);
    let mut sent = 0;
    for i in 0..packets.len() {
        if i > 0 && i % PACE_BURST == 0 && gap >= Duration::from_micros(200) {
            std::thread::sleep(gap);
        }
        buf.clear();
        stream.write(packets, i, capture_us, &mut buf);
        // A lost datagram is the receiver's to notice (the sequence number tells it); an
        // unreachable port (the client left) ends the session through its timeout.
        if sock.send_to(&buf, dest).is_ok() {
            sent += buf.len();
        }
    }
    sent
}

/// Appends every packet of `frame` to `out` as `$`-interleaved RTP on `channel`, so that a
/// frame goes out in one write (a TCP session's, and `--publish`'s). Returns the bytes
/// appended.
pub fn interleave_frame(
    rtp: &mut RtpStream,
    channel: u8,
    frame: &Packetized,
    capture_us: u64,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    for i in 0..frame.len() {
        let at = out.len();
        interleaved_header(channel, 0, out);
        rtp.write(frame, i, capture_us, out);
        // The packet's length, now that it is written (at most MAX_PACKET, well under 64 KiB).
        let len = (out.len() - at - 4) as u16;
        out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    out.len() - start
}

/// Reads the report block about `ssrc` from an RTCP compound packet into the link's figures
/// (loss in percent to 0.1, jitter in ms to 0.01): an RTSP session's and `--publish`'s.
pub fn read_rtcp(data: &[u8], ssrc: u32, sub: &Subscription) {
    let Some((lost, jitter)) = find_report(data, ssrc) else { return };
    let figures = RtcpFigures {
        loss_pct: (f64::from(lost) * 1000.0 / 256.0).round() / 10.0,
        jitter_ms: (f64::from(jitter) * 100.0 / f64::from(crate::rtp::CLOCK_RATE / 1000)).round() / 100.0,
    };
    *sub.counters.rtcp.lock().unwrap_or_else(|p| p.into_inner()) = Some(figures);
}

/// The fraction lost and jitter (90 kHz units) the first report block about `ssrc` states.
pub fn find_report(data: &[u8], ssrc: u32) -> Option<(u8, u32)> {
    let compound = Compound::parse(data).ok()?;
    for packet in compound {
        let blocks: Vec<ReportBlock> = match &packet {
            Ok(Packet::Rr(rr)) => rr.report_blocks().collect(),
            Ok(Packet::Sr(sr)) => sr.report_blocks().collect(),
            Ok(_) => continue,
            Err(_) => return None,
        };
        if let Some(b) = blocks.iter().find(|b| b.ssrc() == ssrc) {
            return Some((b.fraction_lost(), b.interarrival_jitter()));
        }
    }
    None
}

/// Writes an RTCP sender report (with an SDES CNAME) for `stream` now; returns its length.
pub fn write_sender_report(stream: &RtpStream, out: &mut [u8]) -> Option<usize> {
    let ntp = ntp_now();
    let sr = SenderReport::builder(stream.ssrc)
        .ntp_timestamp(ntp)
        .rtp_timestamp(stream.timestamp(now_us()))
        .packet_count(stream.packets)
        .octet_count(stream.octets);
    let sdes = Sdes::builder()
        .add_chunk(SdesChunk::builder(stream.ssrc).add_item(SdesItem::builder(SdesItem::CNAME, "framecast")));
    Compound::builder().add_packet(sr).add_packet(sdes).write_into(out).ok()
}

/// Wall-clock time as a 64-bit NTP timestamp (seconds since 1900, 32.32 fixed point).
fn ntp_now() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000)
}

/// What a SETUP may touch: the session's UDP sockets.
struct SetupEnv<'a> {
    udp: &'a mut Option<Udp>,
    local: IpAddr,
    server: &'a Server,
}

impl Env for SetupEnv<'_> {
    fn udp_ports(&mut self) -> io::Result<(u16, u16)> {
        let (rtp, rtcp) = bind_pair(self.local)?;
        let ports = (rtp.local_addr()?.port(), rtcp.local_addr()?.port());
        rtcp.set_nonblocking(true)?;
        rtp.set_nonblocking(true)?;
        *self.udp = Some(Udp { rtp, rtcp });
        Ok(ports)
    }

    fn frame_size(&self) -> (u32, u32) {
        self.server.frame_size()
    }
}

/// Two UDP sockets on consecutive ports, the first even (RFC 3550 section 11), or any two
/// ports when no such pair is found quickly.
fn bind_pair(ip: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..32 {
        let rtp = UdpSocket::bind((ip, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 0 && port < u16::MAX {
            if let Ok(rtcp) = UdpSocket::bind((ip, port + 1)) {
                return Ok((rtp, rtcp));
            }
        }
    }
    Ok((UdpSocket::bind((ip, 0))?, UdpSocket::bind((ip, 0))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_reports_read_back_and_receiver_reports_are_found() {
        let mut s = RtpStream::new(0xABCD, 1, 0);
        s.packets = 10;
        s.octets = 12_000;
        let mut out = [0u8; 128];
        let n = write_sender_report(&s, &mut out).unwrap();
        let c: Vec<_> = Compound::parse(&out[..n]).unwrap().collect();
        match &c[0] {
            Ok(Packet::Sr(sr)) => assert_eq!((sr.ssrc(), sr.packet_count(), sr.octet_count()), (0xABCD, 10, 12_000)),
            other => panic!("{other:?}"),
        }
        let rr = rtcp_types::ReceiverReport::builder(7)
            .add_report_block(ReportBlock::builder(0xABCD).fraction_lost(64).interarrival_jitter(900));
        let mut b = [0u8; 64];
        let n = Compound::builder().add_packet(rr).write_into(&mut b).unwrap();
        assert_eq!(find_report(&b[..n], 0xABCD), Some((64, 900)));
        assert_eq!(find_report(&b[..n], 0x1234), None);
        assert_eq!(find_report(&b[..3], 0xABCD), None);
    }
}
