//! The RTSP transport (`send --rtsp ADDR:PORT`): RTP/JPEG (RFC 2435) to VLC, ffmpeg,
//! GStreamer and media servers, at `rtsp://HOST:PORT/stream` (and `/`), over UDP unicast or
//! interleaved in the RTSP connection (TCP).
//!
//! Threads: `rtsp` runs the accept loop (this file); each connection gets an `rtsp-PEER`
//! session thread and an `rtsp-rx-PEER` reader (`session.rs`). Each playing session is a hub
//! viewer of kind `rtsp` with its own newest-frame-wins slot, so a slow one loses frames
//! alone. Files, in the order a request meets them:
//!
//! - `session.rs`: the connection's threads, sending frames (UDP paced, or TCP), RTCP;
//! - `requests.rs`: the answers to requests, pure code (also driven by the fuzz target);
//! - `frames.rs`: each frame packetised once for every session, re-encoded once when RFC 2435
//!   cannot carry it.
//!
//! At most [`MAX_SESSIONS`] connections at once (503 beyond). With `--key-file` every request
//! needs the access token as the password of Basic or Digest auth (any user name), 401
//! otherwise. RTSP is not encrypted: the token and the video cross the network in the clear.

mod frames;
pub mod requests;
pub mod session;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{info, warn};

pub use self::frames::FrameCache;
use self::requests::Context;
use self::session::PACE_SPAN_MAX;
use super::transport::{Feed, Transport};
use crate::hub::ViewerKind;
use crate::net::conn::{accept_loop, Next};
use crate::stage::Stage;

/// How RTSP viewers are named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("rtsp");
/// Connections served at once.
pub const MAX_SESSIONS: usize = 64;

/// What every session shares.
pub struct Server {
    pub feed: Feed,
    pub ctx: Arc<Context>,
    pub frames: Arc<FrameCache>,
    /// Over how long a frame's UDP packets are spread.
    pub pace_span: Duration,
}

impl Server {
    /// The size of the newest frame, or the source's.
    pub fn frame_size(&self) -> (u32, u32) {
        frame_size(&self.feed)
    }
}

/// The size of the newest frame, or the source's (for the SDP of DESCRIBE and ANNOUNCE).
pub fn frame_size(feed: &Feed) -> (u32, u32) {
    match feed.hub.latest() {
        Some(f) if f.header.width > 0 => (u32::from(f.header.width), u32::from(f.header.height)),
        _ => (feed.stream.width, feed.stream.height),
    }
}

/// The RTSP transport: a listening socket, and the access token when the sender has a key.
pub struct Rtsp {
    listener: TcpListener,
    token: Option<String>,
    /// Shared with `--publish`.
    frames: Arc<FrameCache>,
}

impl Rtsp {
    pub fn new(listener: TcpListener, token: Option<String>, frames: Arc<FrameCache>) -> Self {
        Rtsp { listener, token, frames }
    }
}

impl Transport for Rtsp {
    fn name(&self) -> &'static str {
        "rtsp"
    }

    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Rtsp { listener, token, frames } = *self;
        let addr = listener.local_addr().context("RTSP socket")?;
        match &token {
            None => info!(%addr, "RTSP: rtsp://{addr}/stream (UDP or TCP)"),
            Some(t) => info!(%addr, "RTSP (key required, not encrypted): rtsp://framecast:{t}@{addr}/stream"),
        }
        let fps_milli = feed.stream.fps_milli;
        let clock_id: String = crate::clock::clock_id().iter().map(|b| format!("{b:02x}")).collect();
        let ctx = Arc::new(Context { token, nonce: random_hex(16), clock_id, fps_milli });
        let pace_span = match fps_milli {
            0 => Duration::from_millis(5),
            f => (Duration::from_secs(1000) / f / 2).min(PACE_SPAN_MAX),
        };
        let server = Arc::new(Server { frames, feed, ctx, pace_span });
        let mut clients: Vec<(Stage, TcpStream)> = Vec::new();
        accept_loop(&listener, &|| server.feed.hub.is_closed(), |stream, peer| {
            clients.retain(|(h, _)| !h.is_finished());
            if let Some(c) = admit(stream, peer, &server, clients.len()) {
                clients.push(c);
            }
            Next::Accept
        })
        .context("RTSP socket")?;
        for (_, stream) in &clients {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for (h, _) in clients {
            let _ = h.join();
        }
        Ok(())
    }
}

/// Starts a connection's threads, or refuses it (503) when [`MAX_SESSIONS`] are connected.
fn admit(mut stream: TcpStream, peer: SocketAddr, server: &Arc<Server>, active: usize) -> Option<(Stage, TcpStream)> {
    static REFUSED: AtomicUsize = AtomicUsize::new(0);
    if active >= MAX_SESSIONS {
        if REFUSED.fetch_add(1, Ordering::Relaxed) % 100 == 0 {
            warn!(%peer, max = MAX_SESSIONS, "rtsp: too many connections; refusing (503)");
        }
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(b"RTSP/1.0 503 Service Unavailable\r\nCSeq: 0\r\nContent-Length: 0\r\n\r\n");
        return None;
    }
    let keep = stream.try_clone().ok()?;
    match session::spawn(stream, peer, server.clone()) {
        Ok(h) => Some((h, keep)),
        Err(e) => {
            warn!(%peer, error = %e, "rtsp: cannot start a session thread");
            None
        }
    }
}

/// `bytes` random bytes as hex (session ids, the Digest nonce).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // A predictable id only makes another client's session guessable on an unencrypted
    // protocol anyway: no error here is worth failing a session for.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02X}")).collect()
}
