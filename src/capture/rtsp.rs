//! RTSP cameras: `--source rtsp://[user:pass@]host[:port]/path`, an M-JPEG (RTP/JPEG, RFC
//! 2435) stream played with the player `recv --connect rtsp://` uses ([`crate::rtsp::play`]:
//! OPTIONS, DESCRIBE, SETUP over TCP interleaved, or UDP if the camera offers only that,
//! PLAY, keep-alives, RTCP receiver reports) and depacketised into JPEG images
//! ([`crate::rtp::depacketize`]). Run by the sender's `capture` thread; self-paced.
//!
//! The depacketiser rebuilds each image's JPEG headers from the RTP/JPEG header (RFC 2435
//! leaves them out), so the bytes differ from the camera's own JPEG; they are forwarded as
//! they are all the same (no re-encode unless `--quality` or a rate controller asks). Only
//! whole frames are forwarded: a frame with packets lost (lost, or shown in part by
//! `recv`), larger than the image cap, or whose rebuilt header does not read is dropped and
//! counted ([`Dropped`], logged at most every few seconds).
//!
//! Capture time: the frame's own capture time when the camera is a framecast sender on this
//! host (its SDP's `x-framecast-clock` is ours, and each packet carries the capture time on
//! our clock), else when the packet that completed the frame arrived. A foreign camera's
//! RTCP sender reports map its RTP time to its wall clock, which is not our monotonic clock
//! (and agrees with ours only as far as the hosts' clocks do), so they are not used here.
//!
//! A camera that refuses us (401, 404, no JPEG in its SDP) or does not answer fails the
//! open; mid-stream, a camera that closes, errors, sends a malformed packet or nothing for
//! [`STALL`] fails `next_frame`: all as [`CaptureError::Remote`] naming the URL (without its
//! password), so the capture thread exits at the first open and reopens with backoff later.

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{CaptureError, FrameSource, Layout, RawFrame};
use crate::clock::now_us;
use crate::codec::restart::parse_header;
use crate::rtp::depacketize::Output;
use crate::rtsp::client::{without_password, Client, ClientError, Target};
use crate::rtsp::play::{Player, RtspTransport, Step};

/// How long connecting to the camera may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read of the RTSP connection waits before the player looks at its timers.
const POLL: Duration = Duration::from_millis(100);
/// How long after PLAY the first whole frame may take.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// How long a playing camera may go without a whole frame (or any RTP) before it counts as
/// lost.
pub const STALL: Duration = Duration::from_secs(5);
/// Dropped frames are logged at most this often.
const LOG_DROPS_EVERY: Duration = Duration::from_secs(5);

/// Frames dropped rather than forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Packets missing, nothing to show.
    pub lost: u64,
    /// Packets missing, restart intervals that arrived (`recv` would draw them in part).
    pub partial: u64,
    /// Larger than the image cap.
    pub oversize: u64,
    /// The rebuilt JPEG's header does not read (never expected).
    pub unreadable: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.lost + self.partial + self.oversize + self.unreadable
    }
}

/// A whole frame, as the source forwards it.
#[derive(Debug)]
pub struct Accepted {
    pub jpeg: Vec<u8>,
    /// From the image's SOF.
    pub width: u32,
    pub height: u32,
    /// The RTP timestamp and the capture-time extension (the sender's clock), if any.
    pub timestamp: u32,
    pub capture_us: Option<u64>,
}

/// Which of the depacketiser's outputs are forwarded (pure code, fuzzed by
/// `fuzz/fuzz_targets/rtsp_source.rs`): whole frames no larger than `max_frame` whose header
/// reads; the rest are counted in `dropped`.
#[derive(Debug)]
pub struct Accept {
    pub max_frame: usize,
    pub dropped: Dropped,
}

impl Accept {
    pub fn new(max_frame: usize) -> Self {
        Accept { max_frame, dropped: Dropped::default() }
    }

    pub fn take(&mut self, out: Output) -> Option<Accepted> {
        let f = match out {
            Output::Frame(f) => f,
            Output::Partial(p) => {
                debug!(timestamp = p.timestamp, bands = p.bands.len(), "rtsp frame with packets lost; dropped");
                self.dropped.partial += 1;
                return None;
            }
            Output::Lost { timestamp, why } => {
                debug!(timestamp, why, "rtsp frame lost");
                self.dropped.lost += 1;
                return None;
            }
        };
        if f.jpeg.len() > self.max_frame {
            debug!(
                timestamp = f.timestamp,
                bytes = f.jpeg.len(),
                cap = self.max_frame,
                "rtsp frame over the cap; dropped"
            );
            self.dropped.oversize += 1;
            return None;
        }
        match parse_header(&f.jpeg) {
            Ok(h) if h.width > 0 && h.height > 0 => Some(Accepted {
                width: u32::from(h.width),
                height: u32::from(h.height),
                timestamp: f.timestamp,
                capture_us: f.capture_us,
                jpeg: f.jpeg,
            }),
            res => {
                debug!(timestamp = f.timestamp, result = ?res.map(|h| (h.width, h.height)), "rtsp frame unreadable; dropped");
                self.dropped.unreadable += 1;
                None
            }
        }
    }
}

/// Connects, plays the stream and waits for its first frame.
pub fn open(url: &str, max_frame: usize) -> Result<Box<dyn FrameSource>, CaptureError> {
    let name = without_password(url);
    let remote = |e: ClientError| CaptureError::Remote { name: name.clone(), what: e.to_string() };
    let target = Target::parse(url).map_err(remote)?;
    let name = target.url.to_string();
    let remote = |e: ClientError| CaptureError::Remote { name: name.clone(), what: e.to_string() };
    let client = Client::connect(&target, CONNECT_TIMEOUT, POLL).map_err(remote)?;
    let mut player = Player::start(client, &[RtspTransport::Tcp, RtspTransport::Udp]).map_err(remote)?;
    player.set_silence(STALL);
    let mut src = RtspSource {
        same_clock: player.same_clock(),
        player: Some(player),
        name,
        accept: Accept::new(max_frame),
        size: (0, 0),
        seq: 0,
        pending: None,
        logged_at: Instant::now(),
        logged_drops: 0,
    };
    let first = src.wait_frame(FIRST_FRAME)?;
    src.size = (first.1.width, first.1.height);
    info!(
        url = %src.name,
        width = src.size.0,
        height = src.size.1,
        capture_time = if src.same_clock { "the camera's (framecast, our clock)" } else { "arrival of the frame's last packet" },
        "rtsp camera playing"
    );
    src.pending = Some(first);
    Ok(Box::new(src))
}

/// A playing RTSP camera (see the module docs).
struct RtspSource {
    /// `None` once the session failed (nothing to tear down).
    player: Option<Player>,
    /// The URL without credentials.
    name: String,
    accept: Accept,
    size: (u32, u32),
    seq: u64,
    same_clock: bool,
    /// The first frame, read by `open`.
    pending: Option<(u64, Accepted)>,
    logged_at: Instant,
    logged_drops: u64,
}

impl RtspSource {
    /// The next whole frame and its capture time on our clock, within `limit`.
    fn wait_frame(&mut self, limit: Duration) -> Result<(u64, Accepted), CaptureError> {
        let deadline = Instant::now() + limit;
        loop {
            let Some(player) = self.player.as_mut() else { return Err(self.remote("the session has ended".into())) };
            match player.step() {
                Ok(Step::Frame { out, arrived_us }) => {
                    if let Some(a) = self.accept.take(out) {
                        self.log_drops();
                        let own = a.capture_us.filter(|&c| self.same_clock && c <= now_us());
                        return Ok((own.unwrap_or(arrived_us), a));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let player = self.player.take().expect("checked above");
                    let what = e.to_string();
                    player.stop(&Err::<(), _>(e));
                    return Err(self.remote(what));
                }
            }
            if Instant::now() > deadline {
                let d = self.accept.dropped;
                return Err(self.remote(format!(
                    "no whole frame for {limit:?} ({} lost, {} with packets missing, {} over the {}-byte cap, {} unreadable)",
                    d.lost, d.partial, d.oversize, self.accept.max_frame, d.unreadable
                )));
            }
        }
    }

    fn remote(&self, what: String) -> CaptureError {
        CaptureError::Remote { name: self.name.clone(), what }
    }

    /// Says how many frames were dropped, at most every [`LOG_DROPS_EVERY`].
    fn log_drops(&mut self) {
        let d = self.accept.dropped;
        if d.total() == self.logged_drops || self.logged_at.elapsed() < LOG_DROPS_EVERY {
            return;
        }
        info!(
            url = %self.name,
            lost = d.lost,
            partial = d.partial,
            oversize = d.oversize,
            unreadable = d.unreadable,
            "rtsp frames dropped so far (packets lost, or over the cap)"
        );
        self.logged_at = Instant::now();
        self.logged_drops = d.total();
    }
}

impl FrameSource for RtspSource {
    fn describe(&self) -> String {
        let transport = self.player.as_ref().map_or("-".into(), |p| format!("{:?}", p.transport()).to_lowercase());
        format!("RTSP camera {} (RTP/JPEG over {transport}, {}x{})", self.name, self.size.0, self.size.1)
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn self_paced(&self) -> bool {
        true
    }

    fn delivers_jpeg(&self) -> bool {
        true
    }

    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        let (capture_us, a) = match self.pending.take() {
            Some(p) => p,
            None => self.wait_frame(STALL)?,
        };
        frame.seq = self.seq;
        self.seq += 1;
        frame.capture_us = capture_us;
        frame.width = a.width;
        frame.height = a.height;
        frame.layout = Layout::Jpeg;
        // The depacketiser built the image in a buffer of its own: moved, not copied.
        frame.data = a.jpeg;
        Ok(true)
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        if let Some(p) = self.player.take() {
            p.stop(&Ok::<(), ClientError>(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::rtp::depacketize::{Band, Frame, Partial};
    use crate::testutil::pattern_jpeg;

    fn frame(jpeg: Vec<u8>, width: u32, height: u32) -> Output {
        let scan = 0..jpeg.len();
        Output::Frame(Frame { timestamp: 9, width, height, capture_us: Some(5), q: 80, scan, jpeg })
    }

    #[test]
    fn only_whole_readable_frames_under_the_cap_are_forwarded() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 80, 0).unwrap();
        let mut a = Accept::new(jpeg.len());
        let f = a.take(frame(jpeg.clone(), 64, 48)).expect("a whole frame at the cap passes");
        assert_eq!((f.width, f.height, f.timestamp, f.capture_us), (64, 48, 9, Some(5)));
        assert_eq!(f.jpeg, jpeg, "forwarded as it is");
        let mut small = Accept::new(jpeg.len() - 1);
        assert!(small.take(frame(jpeg.clone(), 64, 48)).is_none(), "one byte over the cap");
        assert!(a.take(frame(vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 0], 64, 48)).is_none());
        assert!(a.take(Output::Lost { timestamp: 1, why: "a packet is missing" }).is_none());
        let band = Band { rows: 0..16, jpeg: jpeg.clone() };
        let p = Partial { timestamp: 2, width: 64, height: 48, capture_us: None, q: 80, bands: vec![band] };
        assert!(a.take(Output::Partial(p)).is_none());
        assert_eq!(a.dropped, Dropped { lost: 1, partial: 1, oversize: 0, unreadable: 1 });
        assert_eq!((small.dropped.oversize, a.dropped.total()), (1, 3));
    }

    /// The size forwarded is the image's (its SOF), which the depacketiser wrote from the
    /// RTP/JPEG header: here they disagree on purpose, and the SOF wins.
    #[test]
    fn the_size_is_the_image_s() {
        let jpeg = pattern_jpeg(32, 16, Subsampling::S422, 70, 0).unwrap();
        let f = Accept::new(1 << 20).take(frame(jpeg, 64, 48)).unwrap();
        assert_eq!((f.width, f.height), (32, 16));
    }

    #[test]
    fn a_bad_url_or_a_closed_port_fails_the_open_naming_the_url_without_its_password() {
        let e = open("rtsp://al:secret@cam:notaport/x", 1 << 20).err().expect("a bad URL");
        let s = e.to_string();
        assert!(matches!(e, CaptureError::Remote { .. }) && s.contains("rtsp://al:***@cam:notaport/x"), "{s}");
        assert!(!s.contains("secret"), "{s}");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = open(&format!("rtsp://u:secret@127.0.0.1:{port}/cam"), 1 << 20).err().expect("nothing listens");
        let s = e.to_string();
        assert!(s.starts_with(&format!("rtsp://127.0.0.1:{port}/cam: cannot connect")), "{s}");
        assert!(!s.contains("secret"), "{s}");
    }
}
