//! net-rx, the receiver's first stage (thread `net-rx`): it owns the listening socket or the
//! outgoing connection, does the handshake, reads messages, tracks sequence numbers and clock
//! sync, and hands each frame's JPEG to decode as an [`Incoming`]. The write half of each
//! connection goes to the feedback thread as a [`NewConn`].
//!
//! A connection ends when the sender closes it, when it misbehaves (logged, and a listening
//! receiver waits for the next sender), or when the feedback thread shuts the socket down
//! because the view has finished: a blocked read then returns at once, with no poll to wait for.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use crossbeam_channel::Sender;
use tracing::{debug, info, warn};

use super::Endpoint;
use crate::chan::{LatestSender, Pool};
use crate::clock::{clock_id, now_us, ClockSync, Exchange};
use crate::net::conn::{accept_loop, configure, connect, Next, Policy, Session};
use crate::net::proto::{Pong, StreamInfo};
use crate::net::secure::{self, Key, LinkRead};
use crate::net::{Event, FrameHeader, Hello, Message, MessageReader, MessageWriter, NetError, Role};
use crate::stats::{ClockStatus, DropCause, Meter};

/// How often a receiver with nothing to read looks at its stop conditions: Ctrl-C while no
/// sender is connected, or a listener with no sender yet. A finished view does not wait for
/// it (see the module docs).
const POLL: Duration = Duration::from_millis(100);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A received frame on its way to decode.
pub(super) struct Incoming {
    pub conn: u64,
    pub header: FrameHeader,
    pub received_us: u64,
    /// The capture time on our clock, once the sender's clock is known.
    pub capture_local_us: Option<u64>,
    /// The sender streams as fast as possible (`--fps 0`, a benchmark): deliver every frame,
    /// slowing the sender down through TCP, instead of dropping stale ones.
    pub lossless: bool,
    pub jpeg: Vec<u8>,
    /// RTSP: a frame with RTP packets missing, as bands of the rows that arrived (`jpeg` is
    /// then empty): decode draws them over the previous frame.
    pub bands: Vec<crate::rtp::depacketize::Band>,
}

/// The write half of a new connection, for the feedback thread.
pub(super) struct NewConn {
    pub conn: u64,
    pub writer: super::feedback::Writer,
}

/// The net-rx stage: everything it needs, built before its thread starts.
pub(super) struct NetRx {
    pub once: bool,
    pub patience: Duration,
    pub key: Option<Key>,
    pub tx: LatestSender<Incoming>,
    pub pool: Pool<Vec<u8>>,
    pub conn_tx: Sender<NewConn>,
    pub meter: Meter,
    /// Ctrl-C.
    pub stop: Arc<AtomicBool>,
    /// Set by the wiring when the view has finished, before the feedback thread closes the
    /// current connection, so that net-rx does not wait for another sender.
    pub finish: Arc<AtomicBool>,
}

impl NetRx {
    /// Serves senders from `endpoint` until the receiver stops, or (connecting, or `once`)
    /// the sender leaves.
    pub fn run(self, endpoint: Endpoint) -> anyhow::Result<()> {
        match endpoint {
            Endpoint::Connect(addr) => {
                // Each connection syncs clocks afresh (a restarted sender has a new clock).
                let session = |stream: TcpStream, n: u64| {
                    let peer = stream.peer_addr().ok();
                    if n > 1 {
                        self.meter.update(|c| c.reconnects += 1);
                    }
                    info!(sender = ?peer, connection = n, "connected to sender");
                    self.serve(n, stream, peer);
                    Session::Again
                };
                let policy = if self.once { Policy::once(self.patience) } else { Policy::reconnect() };
                connect(&addr, "sender", policy, &|| self.done(), session, || {}).context("--connect")?;
            }
            Endpoint::Listen(listener) => self.listen(&listener)?,
            Endpoint::Rtsp(_) | Endpoint::Udp(..) => {
                return Err(anyhow!(
                    "rtsp:// and udp endpoints are served by receiver::rtsp and receiver::udp, not net-rx"
                ))
            }
        }
        Ok(())
    }

    /// True once the receiver is stopping: Ctrl-C, the view finished, or decode gone.
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.finish.load(Ordering::Relaxed) || self.tx.is_disconnected()
    }

    /// Serves senders that connect to `listener`, one after another.
    fn listen(&self, listener: &TcpListener) -> anyhow::Result<()> {
        info!(addr = ?listener.local_addr().ok(), "waiting for a sender");
        let mut conns = 0;
        accept_loop(listener, &|| self.done(), |stream, peer| {
            info!(%peer, "sender connected");
            conns += 1;
            self.serve(conns, stream, Some(peer));
            if self.once {
                return Next::Stop;
            }
            if !self.done() {
                info!("waiting for the next sender");
            }
            Next::Accept
        })
        .context("cannot accept senders")
    }

    /// Serves connection number `id` to its end, logging how it ended.
    fn serve(&self, id: u64, stream: TcpStream, peer: Option<SocketAddr>) {
        let mut conn = Conn { id, net: self, last_seq: None, sync: ClockSync::new(), lossless: false };
        match conn.serve(stream) {
            Ok(()) => info!(sender = ?peer, "sender disconnected"),
            Err(e) => warn!(sender = ?peer, error = format!("{e:#}"), "dropped connection from sender"),
        }
    }
}

/// One connection's state: its number, clock sync and the last sequence number seen.
struct Conn<'a> {
    id: u64,
    net: &'a NetRx,
    last_seq: Option<u64>,
    sync: ClockSync,
    lossless: bool,
}

/// Shuts the socket down for both directions when dropped: the feedback thread writes on a
/// clone of it, and whatever ends the connection must end it for both, so that the sender
/// sees the end at once.
struct CloseOnDrop(TcpStream);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Conn<'_> {
    fn serve(&mut self, stream: TcpStream) -> anyhow::Result<()> {
        let _close = CloseOnDrop(stream.try_clone()?);
        let (mut reader, same_clock) = match self.handshake(stream)? {
            Some(r) => r,
            // The view finished (the feedback thread is gone) during the handshake.
            None => return Ok(()),
        };
        self.net.meter.update(|c| c.clock = Some(ClockStatus::unsynced(same_clock)));
        loop {
            let event = match reader.next_event() {
                Ok(e) => e,
                // The feedback thread shut the socket down: the view has finished.
                Err(_) if self.net.done() => return Ok(()),
                Err(NetError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(anyhow!("the sender reset the connection"));
                }
                Err(e) => return Err(e.into()),
            };
            match event {
                Event::Message(Message::StreamInfo(s)) => self.stream_info(&s),
                Event::Message(Message::Pong(p)) => self.pong(&p, same_clock),
                Event::Message(Message::Frame(header, jpeg)) => {
                    if !self.frame(header, jpeg, same_clock) || self.net.done() {
                        return Ok(());
                    }
                }
                Event::Message(other) => debug!(message = ?other, "ignored message from sender"),
                Event::Idle if self.net.done() => return Ok(()),
                Event::Idle => {}
                Event::Eof => return Ok(()),
            }
        }
    }

    /// Exchanges hellos (and, with a key, proves both sides hold it), then hands the write
    /// half to the feedback thread. Returns the reader and whether both ends share a clock,
    /// or `None` if the feedback thread is gone.
    fn handshake(&mut self, stream: TcpStream) -> anyhow::Result<Option<(MessageReader<LinkRead>, bool)>> {
        configure(&stream, POLL)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut writer = MessageWriter::new(stream.try_clone()?);
        let mut reader = MessageReader::new(stream);
        let key = self.net.key.as_ref();
        let ours = Hello::new(Role::Receiver, clock_id()).keyed(key.is_some());
        writer.write_hello(&ours)?;
        let hello = reader.read_hello(Role::Sender, HANDSHAKE_TIMEOUT).context("handshake")?;
        // With a key: the sender proves it holds it before any of its messages is read.
        let (reader, writer) =
            secure::upgrade(reader, writer, &ours, &hello, key, HANDSHAKE_TIMEOUT).context("access control")?;
        let same_clock = hello.clock_id == clock_id();
        info!(
            same_clock,
            "sender handshake done{}",
            if same_clock {
                ""
            } else {
                "; clocks differ: syncing over the reverse channel, latency unknown until then"
            }
        );
        if self.net.conn_tx.send(NewConn { conn: self.id, writer: super::feedback::Writer::Tcp(writer) }).is_err() {
            return Ok(None);
        }
        Ok(Some((reader, same_clock)))
    }

    fn stream_info(&mut self, s: &StreamInfo) {
        self.lossless = s.fps_milli == 0;
        info!(
            width = s.width,
            height = s.height,
            fps = f64::from(s.fps_milli) / 1000.0,
            "stream{}",
            if self.lossless { " (as fast as possible: every frame is decoded, none dropped)" } else { "" }
        );
    }

    /// A clock-sync answer: one more exchange for the estimate of the sender's clock.
    fn pong(&mut self, p: &Pong, same_clock: bool) {
        let x = Exchange { t1: p.t1_us, t2: p.t2_us, t3: p.t3_us, t4: now_us() };
        if let Some(e) = self.sync.add(x) {
            if e.samples == 1 && !same_clock {
                info!(
                    offset_ms = e.offset_us / 1000.0,
                    uncertainty_ms = e.uncertainty_us / 1000.0,
                    "clock synced with the sender"
                );
            }
            debug!(rtt_us = x.rtt_us(), offset_us = x.offset_us(), estimate = ?e, "clock exchange");
            self.net.meter.update(|c| c.clock = Some(ClockStatus::from_estimate(same_clock, &e)));
        }
    }

    /// Counts a frame and hands it to decode. Returns false once decode is gone.
    fn frame(&mut self, header: FrameHeader, jpeg: &[u8], same_clock: bool) -> bool {
        let received_us = now_us();
        self.track_seq(header.seq);
        let capture_local_us = if same_clock {
            Some(header.capture_us)
        } else {
            self.sync.estimate().map(|e| e.to_local(header.capture_us, received_us))
        }
        // A capture "after" arrival is a sync error, not a latency: unknown.
        .filter(|&cap| cap <= received_us);
        self.count(&header, jpeg.len() as u64, received_us, capture_local_us);
        let net = self.net;
        let mut buf = net.pool.get(Vec::new);
        buf.clear();
        buf.extend_from_slice(jpeg);
        let inc = Incoming {
            conn: self.id,
            header,
            received_us,
            capture_local_us,
            lossless: self.lossless,
            jpeg: buf,
            bands: Vec::new(),
        };
        net.tx.deliver(inc, self.lossless, |old| {
            net.meter.count_drop(DropCause::DecoderBusy);
            net.pool.put(old.jpeg);
        })
    }

    fn count(&self, header: &FrameHeader, len: u64, received_us: u64, capture_local_us: Option<u64>) {
        self.net.meter.update(|c| {
            c.received += 1;
            c.frame_moved(len);
            // Both on the sender's clock: known without any sync.
            let _ = c.lat_encoded.record(header.encode_end_us.saturating_sub(header.capture_us).max(1));
            let _ = c.lat_sent.record(header.send_us.saturating_sub(header.capture_us).max(1));
            match capture_local_us {
                Some(cap) => {
                    let _ = c.lat_received.record(received_us.saturating_sub(cap).max(1));
                }
                None => c.latency_unknown += 1,
            }
        });
    }

    fn track_seq(&mut self, seq: u64) {
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.net.meter.update(|c| c.out_of_order += 1);
                return;
            }
            if seq > last + 1 {
                let gap = seq - last - 1;
                self.net.meter.update(|c| c.seq_gaps += gap);
            }
        }
        self.last_seq = Some(seq);
    }
}
