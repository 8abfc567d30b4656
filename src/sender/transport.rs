//! The viewer-transport seam: what a way of watching the stream (the framecast protocol, HTTP
//! MJPEG, and later RTSP or UDP) implements, and what the pipeline hands it.
//!
//! A transport is one stage (one named thread, started and joined by `sender::run`) that
//! serves its viewers until the stream ends. Each viewer it serves:
//!
//! - joins the hub with [`Hub::subscribe`], naming its transport's kind and its peer: it gets
//!   a newest-wins slot of its own (`Subscription.rx`), so a slow viewer loses frames alone,
//!   counted in its link's counters (`drops`; `congestion` while it marks itself congested);
//! - counts each frame it sends with [`Feed::sent`] (the link's frames and bytes for the
//!   `links` stats, and the sender's `sent` and bit rate);
//! - leaves by dropping its subscription, and finishes when the subscription disconnects (the
//!   hub closed: the stream is over).
//!
//! Viewers that talk back may forward quality requests to the encoder
//! ([`Feed::requests`]) and report to the rate controller ([`Feed::feedback`]). A new
//! transport is a new file implementing [`Transport`] and one line in `sender::transports`.
//!
//! Next: `native.rs`, then `http.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Sender, TrySendError};
use tracing::warn;

use super::encode::Feedback;
use super::ViewerRequest;
use crate::hub::{Hub, Subscription};
use crate::net::StreamInfo;
use crate::stats::Meter;

/// A way for viewers to watch the stream.
pub trait Transport: Send {
    /// The name of the transport's thread ("net-tx", "http"), also used in errors.
    fn name(&self) -> &'static str;

    /// Serves viewers until the stream ends (the hub closes). A transport that has a reason
    /// of its own to end the whole stream (a `--once` viewer left) sets [`Feed::finish`].
    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()>;
}

/// What the pipeline hands every transport (cloned per viewer as needed).
#[derive(Clone)]
pub struct Feed {
    pub hub: Arc<Hub>,
    pub meter: Meter,
    /// The stream's size and rate as the source opened it (frames may later be halved).
    pub stream: StreamInfo,
    /// Quality requests to the encoder (dropped when its queue is full).
    pub requests: Sender<ViewerRequest>,
    /// Events for the rate controller; `None` when there is none.
    pub feedback: Option<Sender<Feedback>>,
    /// The latest interval stats as JSON (the `--stats-json` schema).
    pub stats: LatestStats,
    /// Ctrl-C.
    pub stop: Arc<AtomicBool>,
    /// Set by a transport to end the stream for a reason of its own.
    pub finish: Arc<AtomicBool>,
}

impl Feed {
    /// Counts a frame of `len` bytes sent to the viewer holding `sub`.
    pub fn sent(&self, sub: &Subscription, len: u64) {
        sub.counters.frames.fetch_add(1, Ordering::Relaxed);
        sub.counters.bytes.fetch_add(len, Ordering::Relaxed);
        self.meter.update(|c| {
            c.sent += 1;
            c.frame_moved(len);
        });
    }

    /// As [`sent`](Feed::sent), for a frame captured at `capture_us`: also records its
    /// capture→sent latency (the `/metrics` histogram).
    pub fn sent_captured(&self, sub: &Subscription, len: u64, capture_us: u64) {
        sub.counters.frames.fetch_add(1, Ordering::Relaxed);
        sub.counters.bytes.fetch_add(len, Ordering::Relaxed);
        let latency = crate::clock::now_us().saturating_sub(capture_us).max(1);
        self.meter.update(|c| {
            c.sent += 1;
            c.frame_moved(len);
            let _ = c.lat_sent.record(latency);
        });
    }

    /// Tells the rate controller, if there is one. The encode thread drains these before
    /// every frame; should it fall 1024 events behind, a measurement is dropped (logged once
    /// per run), but never a new viewer's `NewLink`, which waits for room: the controller
    /// must not judge a new link by the last one's history.
    pub fn feedback(&self, f: Feedback) {
        let Some(tx) = &self.feedback else { return };
        match tx.try_send(f) {
            Err(TrySendError::Full(Feedback::NewLink)) => {
                let _ = tx.send(Feedback::NewLink);
            }
            Err(TrySendError::Full(_)) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    warn!("the rate controller is behind; dropping some of its acknowledgements");
                }
            }
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Ends the stream for a reason of the transport's own.
    pub fn finish(&self) {
        self.finish.store(true, Ordering::Relaxed);
    }
}

/// The newest interval stats record as JSON, set by the stats reporter.
#[derive(Clone, Default)]
pub struct LatestStats(Arc<Mutex<Option<String>>>);

impl LatestStats {
    pub fn set(&self, json: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(json);
    }

    /// `None` before the first interval ends.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
