//! The feedback thread (`feedback`): it owns the write half of the current connection and
//! writes everything the receiver sends back to the sender: the view's acknowledgements,
//! clock-sync pings, the per-interval stats report, and quality requests (`--quality` when a
//! sender connects, the window's Up/Down keys).
//!
//! It ends when the view is gone (the acknowledgement channel disconnects), after writing the
//! acknowledgements still queued, and then shuts the connection down: that ends net-rx's
//! blocked read at once, so a finished receiver does not wait for a read timeout.

use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver};
use tracing::{debug, info};

use super::net::NewConn;
use crate::clock::now_us;
use crate::net::proto::Ping;
use crate::net::secure::LinkWrite;
use crate::net::udp::link::Link;
use crate::net::{Ack, Message, MessageWriter};

/// Where the feedback thread writes: a TCP connection's write half, or a UDP session's link
/// (each message one datagram, sealed with the session's key when there is one).
pub(super) enum Writer {
    Tcp(MessageWriter<LinkWrite>),
    Udp(Link),
}

impl Writer {
    fn write_message(&mut self, msg: &Message<'_>) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => w.write_message(msg),
            Writer::Udp(l) => l.send_message(msg).map(|_| ()),
        }
    }

    /// Ends the connection for both directions (TCP: net-rx's read returns at once). A UDP
    /// session has nothing to shut: net-rx, which polls, sees the view finished and says `Bye`.
    fn close(&self) {
        if let Writer::Tcp(w) = self {
            let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Clock-sync pings: a quick burst when a sender connects, then one a second.
const PING_BURST: u32 = 5;
const PING_BURST_INTERVAL: Duration = Duration::from_millis(100);
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// What the receiver sends back to the sender, besides acknowledgements.
pub(super) enum Feedback {
    /// The latest stats interval, as JSON.
    Report(Vec<u8>),
    /// Quality up or down by this many key presses.
    Step(i8),
}

/// The view's acknowledgement of a frame from connection `conn`.
pub(super) struct AckEvent {
    pub conn: u64,
    pub ack: Ack,
}

/// The feedback stage: its inputs, and the connection it writes to.
pub(super) struct FeedbackTx {
    /// New connections from net-rx; each replaces the current one.
    pub conn_rx: Receiver<NewConn>,
    pub ack_rx: Receiver<AckEvent>,
    pub rx: Receiver<Feedback>,
    /// `--quality`: asked of each sender when it connects.
    pub quality: Option<u8>,
}

/// The connection being written to, and its clock-sync schedule.
struct Current {
    conn: Option<NewConn>,
    pings: u32,
    next_ping: Instant,
}

impl FeedbackTx {
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut current = Current { conn: None, pings: 0, next_ping: Instant::now() };
        while self.step(&mut current) {}
        if let Some(c) = current.conn {
            debug!(connection = c.conn, "view finished; closing the connection");
            c.writer.close();
        }
        Ok(())
    }

    /// Waits for the next thing to write (or the next ping) and writes it. `conn_rx` and `rx`
    /// become `never()` once they disconnect. Returns false once the view is gone.
    fn step(&mut self, current: &mut Current) -> bool {
        let wait = current.next_ping.saturating_duration_since(Instant::now());
        select! {
            recv(self.conn_rx) -> c => match c {
                Ok(c) => self.connected(current, c),
                Err(_) => self.conn_rx = never(),
            },
            recv(self.ack_rx) -> a => match a {
                Ok(a) => {
                    // net-rx announces a connection before any of its frames can be
                    // acknowledged, but `select!` picks among ready channels at random: take
                    // the announcements first, or an ack could be dropped as stale.
                    while let Ok(c) = self.conn_rx.try_recv() {
                        self.connected(current, c);
                    }
                    if current.conn.as_ref().is_some_and(|c| c.conn == a.conn) {
                        current.send(&Message::Ack(a.ack));
                    }
                }
                Err(_) => return false,
            },
            recv(self.rx) -> r => match r {
                Ok(Feedback::Report(json)) => current.send(&Message::Report(&json)),
                Ok(Feedback::Step(n)) => current.send(&Message::QualityStep(n)),
                Err(_) => self.rx = never(),
            },
            default(wait) => current.ping(),
        }
        true
    }

    fn connected(&self, current: &mut Current, c: NewConn) {
        *current = Current { conn: Some(c), pings: 0, next_ping: Instant::now() };
        if let Some(q) = self.quality {
            info!(quality = q, "asking the sender for quality {q}");
            current.send(&Message::SetQuality(q));
        }
    }
}

impl Current {
    /// Writes `msg`; on an error the sender is gone and the connection is forgotten.
    fn send(&mut self, msg: &Message<'_>) {
        if let Some(c) = self.conn.as_mut() {
            if let Err(e) = c.writer.write_message(msg) {
                debug!(error = %e, "cannot write to the sender; it is gone");
                self.conn = None;
            }
        }
    }

    fn ping(&mut self) {
        if self.conn.is_some() {
            self.pings += 1;
            self.send(&Message::Ping(Ping { id: u64::from(self.pings), t1_us: now_us() }));
        }
        let interval = if self.pings < PING_BURST { PING_BURST_INTERVAL } else { PING_INTERVAL };
        self.next_ping = Instant::now() + interval;
    }
}
