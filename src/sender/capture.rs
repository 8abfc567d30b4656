//! The `capture` stage: the first thing a frame meets.
//!
//! The `capture` thread opens the source (a camera handle may not move between threads),
//! paces it to `--fps`, stamps each frame's sequence number and capture time, and hands it to
//! the encoder through a newest-wins slot (a full slot drops the older frame, counted as
//! `encoder_busy`; a lossless stream waits instead). It owns the source for the whole run:
//! when a live source fails mid-stream it sends "no signal" cards in its place and reopens it
//! with backoff through the [`SourceFactory`]. It ends on the frame limit, the duration, the
//! end of the source, Ctrl-C or the pipeline's own finish signal, and then drops its sender:
//! that is how the end of the stream travels downstream.
//!
//! Next: `encode.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::{SourceFactory, POLL};
use crate::capture::{interrupted, nosignal, set_interrupt, CaptureError, FrameSource, Interrupt, Layout, RawFrame};
use crate::chan::{LatestSender, Pool};
use crate::clock::now_us;
use crate::format::Subsampling;
use crate::net::conn::Backoff;
use crate::stats::{DropCause, Meter, SourceLost};

/// How the capture thread rides out a source that fails mid-stream: reopen attempts with
/// capped exponential backoff, and a "no signal" frame for the viewers every so often.
#[derive(Clone, Copy, Debug)]
pub(super) struct Recovery {
    pub first: Duration,
    pub cap: Duration,
    pub no_signal_every: Duration,
    /// A source lost again within this long of coming back carries on the backoff where it
    /// was, instead of starting again from `first` (a flapping camera is not hammered).
    pub stable_after: Duration,
}

pub(super) const RECOVERY: Recovery = Recovery {
    first: Duration::from_millis(100),
    cap: Duration::from_secs(5),
    no_signal_every: Duration::from_secs(1),
    stable_after: Duration::from_secs(10),
};

/// When capture ends by itself: `--fps` pacing (0: as fast as possible), `--frames`,
/// `--duration`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Limits {
    pub fps: u32,
    pub frames: Option<u64>,
    pub duration: Option<Duration>,
}

/// What the wiring learns once the source is open.
#[derive(Debug)]
pub(super) struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub self_paced: bool,
}

/// Everything the capture thread owns.
pub(super) struct Capture {
    pub open_source: SourceFactory,
    /// The opened source's size and pacing, or why it would not open; sent once. `None`: a
    /// stop or the deadline came before the source opened (a clean end).
    pub info_tx: Sender<Result<Option<SourceInfo>, CaptureError>>,
    pub tx: LatestSender<RawFrame>,
    pub pool: Pool<RawFrame>,
    pub meter: Meter,
    /// Ctrl-C, and the pipeline's own reason to end (a `--once` viewer left).
    pub stops: [Arc<AtomicBool>; 2],
    pub limits: Limits,
    /// For the no-signal cards.
    pub subsampling: Subsampling,
    pub recovery: Recovery,
    /// The reopen backoff, and when the source last came back: kept across losses that come
    /// soon after a reopen (see [`Recovery::stable_after`]).
    pub backoff: Option<(Backoff, Instant)>,
}

/// Where a run of the capture loop stands.
struct Run {
    source: Box<dyn FrameSource>,
    size: (u32, u32),
    period: Option<Duration>,
    /// As fast as possible: wait for the encoder rather than render frames to drop.
    lossless: bool,
    deadline: Option<Instant>,
    next_at: Instant,
    count: u64,
    /// Sequence numbers run on across a reopened source (which starts again from 0) and the
    /// no-signal frames sent while it was away.
    seq_offset: u64,
    next_seq: u64,
    /// Recycled buffers that may hold a no-signal frame: a source must not take them for one
    /// of its own (the test pattern redraws only its moving parts into its own buffers).
    foreign_buffers: usize,
}

impl Capture {
    /// Runs until the source ends, a limit is reached, or a stop is requested.
    pub fn run(mut self) -> anyhow::Result<()> {
        let Limits { fps, duration, .. } = self.limits;
        // Sources wait in bounded steps and give up once a stop or `--duration` comes, the
        // first open too (a FIFO without a writer, a silent pipe, a camera that does not answer).
        let stops = self.stops.to_vec();
        set_interrupt(Interrupt { stops: stops.clone(), deadline: duration.map(|d| Instant::now() + d) });
        let source = match (self.open_source)() {
            Ok(s) => s,
            Err(e) if interrupted() => {
                info!(error = %e, "stopped before the source opened; capture ends");
                let _ = self.info_tx.send(Ok(None));
                return Ok(());
            }
            Err(e) => {
                let _ = self.info_tx.send(Err(e));
                return Ok(());
            }
        };
        let (width, height) = source.size();
        info!(source = %source.describe(), "capturing");
        if self.info_tx.send(Ok(Some(SourceInfo { width, height, self_paced: source.self_paced() }))).is_err() {
            return Ok(());
        }
        let period = (fps > 0 && !source.self_paced()).then(|| Duration::from_secs_f64(1.0 / f64::from(fps)));
        let started = Instant::now();
        set_interrupt(Interrupt { stops, deadline: duration.map(|d| started + d) });
        let mut run = Run {
            lossless: period.is_none() && !source.self_paced(),
            source,
            size: (width, height),
            period,
            deadline: duration.map(|d| started + d),
            next_at: started,
            count: 0,
            seq_offset: 0,
            next_seq: 0,
            foreign_buffers: 0,
        };
        while self.step(&mut run)? {}
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stops.iter().any(|s| s.load(Ordering::Relaxed))
    }

    /// Captures and hands on one frame. Returns true iff the loop should continue.
    fn step(&mut self, run: &mut Run) -> anyhow::Result<bool> {
        if self.stopped() {
            info!("stop requested; capture ends");
            return Ok(false);
        }
        if self.limits.frames.is_some_and(|n| run.count >= n) {
            info!(frames = run.count, "frame limit reached; capture ends");
            return Ok(false);
        }
        pace(run);
        if run.deadline.is_some_and(|d| Instant::now() >= d) {
            info!(frames = run.count, "duration reached; capture ends");
            return Ok(false);
        }
        let mut frame = self.pool.get(RawFrame::empty);
        if run.foreign_buffers > 0 {
            run.foreign_buffers -= 1;
            frame.layout = Layout::Jpeg;
        }
        // A source may stamp its own capture time (on `now_us`'s clock); 0 means it did not.
        frame.capture_us = 0;
        match run.source.next_frame(&mut frame) {
            Ok(true) => {}
            Ok(false) => {
                info!(frames = run.count, "source ended");
                return Ok(false);
            }
            // The source gave up waiting because of a stop or the deadline: a clean end.
            Err(e) if interrupted() => {
                info!(frames = run.count, error = %e, "stop requested or duration reached while waiting for the source; capture ends");
                return Ok(false);
            }
            // A file that cannot be read stays unreadable: that ends the stream.
            Err(e @ CaptureError::File { .. }) => return Err(e).context("capture failed"),
            Err(e) => {
                self.pool.put(frame);
                return Ok(self.reopen(run, e));
            }
        }
        frame.seq += run.seq_offset;
        run.next_seq = frame.seq + 1;
        if frame.capture_us == 0 {
            frame.capture_us = now_us();
        }
        frame.no_signal = false; // the buffer may have held a no-signal card
        self.meter.update(|c| c.captured += 1);
        run.count += 1;
        Ok(self.deliver(frame, run.lossless))
    }

    /// Hands a frame to the encoder. Returns false once the encoder is gone.
    fn deliver(&self, frame: RawFrame, lossless: bool) -> bool {
        self.tx.deliver(frame, lossless, |old| {
            self.meter.count_drop(DropCause::EncoderBusy);
            self.pool.put(old);
        })
    }

    /// The source failed: rides it out until it is back (true) or the run ends (false).
    fn reopen(&mut self, run: &mut Run, error: CaptureError) -> bool {
        let away = SourceAway { size: run.size, lossless: run.lossless, deadline: run.deadline };
        // Drop the failed source before opening it again (a camera is opened once at a time).
        let placeholder: Box<dyn FrameSource> = Box::new(Gone);
        drop(std::mem::replace(&mut run.source, placeholder));
        match away.ride_out(self, error, &mut run.next_seq) {
            Some(s) => {
                run.size = s.size();
                run.source = s;
                run.seq_offset = run.next_seq;
                run.foreign_buffers = 64;
                run.next_at = Instant::now();
                true
            }
            None => false,
        }
    }
}

/// Waits for the next frame's time; a source that fell behind by more than a frame does not
/// burst to catch up.
fn pace(run: &mut Run) {
    let Some(p) = run.period else { return };
    let now = Instant::now();
    if run.next_at > now {
        thread::sleep(run.next_at - now);
    } else if now - run.next_at > p {
        run.next_at = now;
    }
    run.next_at += p;
}

/// Stands in for a failed source while it is reopened.
struct Gone;

impl FrameSource for Gone {
    fn describe(&self) -> String {
        "no source".into()
    }
    fn size(&self) -> (u32, u32) {
        (0, 0)
    }
    fn next_frame(&mut self, _: &mut RawFrame) -> Result<bool, CaptureError> {
        Ok(false)
    }
}

/// What the capture thread needs while its source is away.
struct SourceAway {
    size: (u32, u32),
    lossless: bool,
    deadline: Option<Instant>,
}

impl SourceAway {
    /// Sends no-signal frames (at the size the stream had) and tries to reopen the source with
    /// backoff until it opens (returned), or the run ends (`None`).
    fn ride_out(&self, cap: &mut Capture, error: CaptureError, next_seq: &mut u64) -> Option<Box<dyn FrameSource>> {
        let lost = SourceLost::now();
        let since = lost.utc();
        warn!(error = %error, %since, "source lost; reopening it with backoff (viewers see a no-signal frame)");
        cap.meter.update(|c| {
            c.source_losses += 1;
            c.source_lost = Some(lost);
        });
        let recovery = cap.recovery;
        // A source lost again soon after it came back carries on the backoff.
        let mut backoff = match cap.backoff.take() {
            Some((b, back)) if back.elapsed() < recovery.stable_after => b,
            _ => Backoff::new(recovery.first, recovery.cap),
        };
        let mut next_open = Instant::now() + backoff.next_delay();
        let mut next_card = Instant::now();
        let mut attempt = 0u64;
        loop {
            if cap.stopped() {
                info!("stop requested while the source was lost; capture ends");
                return None;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                info!("duration reached while the source was lost; capture ends");
                return None;
            }
            let now = Instant::now();
            if now >= next_card {
                if !self.send_card(cap, &since, next_seq) {
                    return None;
                }
                next_card = now + recovery.no_signal_every;
            }
            if now >= next_open {
                attempt += 1;
                match self.try_open(cap, attempt, &lost) {
                    Ok(s) => {
                        cap.backoff = Some((backoff, Instant::now()));
                        return Some(s);
                    }
                    Err(problem) => {
                        let d = backoff.next_delay();
                        info!(attempt, error = %problem, retry_in_ms = d.as_millis() as u64, "cannot reopen the source");
                        next_open = Instant::now() + d;
                    }
                }
            }
            let wait = next_open.min(next_card).saturating_duration_since(Instant::now());
            thread::sleep(wait.min(POLL / 2));
        }
    }

    /// Sends one no-signal card. Returns false once the encoder is gone.
    fn send_card(&self, cap: &Capture, since: &str, next_seq: &mut u64) -> bool {
        let (w, h) = self.size;
        let mut card = cap.pool.get(RawFrame::empty);
        nosignal::render(&mut card, w, h, cap.subsampling, since);
        card.seq = *next_seq;
        *next_seq += 1;
        card.capture_us = now_us();
        card.no_signal = true;
        cap.meter.update(|c| c.no_signal_frames += 1);
        cap.deliver(card, self.lossless)
    }

    /// One reopen attempt: the source (at whatever size it now has), or what went wrong.
    fn try_open(&self, cap: &mut Capture, attempt: u64, lost: &SourceLost) -> Result<Box<dyn FrameSource>, String> {
        let (w, h) = self.size;
        match (cap.open_source)() {
            Ok(s) => {
                info!(
                    attempt,
                    lost_for_s = format!("{:.1}", lost.at.elapsed().as_secs_f64()),
                    source = %s.describe(),
                    "source reopened; streaming resumes"
                );
                if s.size() != (w, h) {
                    // Every frame carries its size: viewers follow, as for a halved frame.
                    info!(from = %format!("{w}x{h}"), to = %format!("{}x{}", s.size().0, s.size().1), "the source came back at another size");
                }
                cap.meter.update(|c| c.source_lost = None);
                Ok(s)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::chroma_size;
    use crate::chan::latest;
    use crate::stats::Side;
    use crossbeam_channel::bounded;

    /// A 16x16 grey source whose luma is `fill`; fails after `frames` frames, or ends.
    struct Scripted {
        side: u32,
        fill: u8,
        frames: u64,
        next: u64,
        then_fail: bool,
    }

    impl FrameSource for Scripted {
        fn describe(&self) -> String {
            format!("scripted {}", self.fill)
        }
        fn size(&self) -> (u32, u32) {
            (self.side, self.side)
        }
        fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
            if self.next == self.frames {
                return if self.then_fail { Err(CaptureError::Camera("unplugged".into())) } else { Ok(false) };
            }
            let side = self.side as usize;
            let (cw, ch) = chroma_size(self.side, self.side, Subsampling::S420);
            frame.data.clear();
            frame.data.resize(side * side, self.fill);
            frame.data.resize(side * side + 2 * cw * ch, 128);
            (frame.width, frame.height, frame.layout) = (self.side, self.side, Layout::Yuv(Subsampling::S420));
            frame.seq = self.next;
            self.next += 1;
            Ok(true)
        }
    }

    fn capture(factory: SourceFactory, limits: Limits, recovery: Recovery) -> (Capture, RxEnds) {
        let (info_tx, info_rx) = bounded(1);
        let (tx, rx) = latest::<RawFrame>(1);
        let meter = Meter::new(Side::Sender);
        let cap = Capture {
            open_source: factory,
            info_tx,
            tx,
            pool: Pool::new(4),
            meter: meter.clone(),
            stops: [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))],
            limits,
            subsampling: Subsampling::S420,
            recovery,
            backoff: None,
        };
        (cap, RxEnds { info_rx, rx, meter })
    }

    struct RxEnds {
        info_rx: crossbeam_channel::Receiver<Result<Option<SourceInfo>, CaptureError>>,
        rx: crate::chan::LatestReceiver<RawFrame>,
        meter: Meter,
    }

    #[test]
    fn a_source_that_fails_mid_stream_is_reopened_and_no_signal_frames_fill_the_gap() {
        // Opens: A (3 frames, then fails), two failures (busy), B (5 frames, then ends).
        let mut opens = 0;
        let factory: SourceFactory = Box::new(move || {
            opens += 1;
            match opens {
                1 => Ok(Box::new(Scripted { side: 16, fill: 10, frames: 3, next: 0, then_fail: true })
                    as Box<dyn FrameSource>),
                2 | 3 => Err(CaptureError::Camera("busy".into())),
                _ => Ok(Box::new(Scripted { side: 16, fill: 200, frames: 5, next: 0, then_fail: false })),
            }
        });
        let recovery = Recovery {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(40),
            no_signal_every: Duration::from_millis(25),
            stable_after: Duration::from_secs(10),
        };
        let (cap, ends) = capture(factory, Limits::default(), recovery);
        let t = thread::spawn(move || cap.run());
        assert!(matches!(ends.info_rx.recv().unwrap(), Ok(Some(SourceInfo { width: 16, height: 16, .. }))));
        // fps 0 and a source that is not live: every frame is delivered (no drops).
        let got: Vec<(u64, u8, u64)> = ends.rx.iter().map(|f| (f.seq, f.data[0], f.capture_us)).collect();
        t.join().unwrap().unwrap();
        assert!(got.iter().all(|g| g.2 > 0), "a frame left without a capture time: {got:?}");
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers do not run on: {seqs:?}");
        let kinds: Vec<u8> = got.iter().map(|g| g.1).collect();
        let a = kinds.iter().take_while(|&&k| k == 10).count();
        let cards = kinds[a..].iter().take_while(|&&k| k != 200).count();
        let b = kinds[a + cards..].iter().filter(|&&k| k == 200).count();
        assert_eq!((a, b, a + cards + b), (3, 5, kinds.len()), "frames: {kinds:?}");
        // The no-signal frame's top-left pixel is its grey background or its white band.
        assert!(cards >= 1 && kinds[a..a + cards].iter().all(|&k| k == 48 || k == 235), "frames: {kinds:?}");
        let r = ends.meter.summary();
        assert_eq!(r.source_losses, 1);
        assert_eq!(r.no_signal_frames, cards as u64);
        assert_eq!(r.captured, Some(8));
        assert!(r.source_lost_since.is_none(), "the source is back but the stats say lost");
    }

    #[test]
    fn a_source_that_comes_back_at_another_size_is_taken_at_that_size() {
        // A camera reconfigured while it was away: 16x16, lost, back at 32x32.
        let mut opens = 0;
        let factory: SourceFactory = Box::new(move || {
            opens += 1;
            let side = if opens == 1 { 16 } else { 32 };
            Ok(Box::new(Scripted { side, fill: 10, frames: 2, next: 0, then_fail: opens == 1 }) as Box<dyn FrameSource>)
        });
        let recovery = Recovery {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(40),
            no_signal_every: Duration::from_millis(5),
            stable_after: Duration::from_secs(10),
        };
        let (cap, ends) = capture(factory, Limits::default(), recovery);
        let t = thread::spawn(move || cap.run());
        let got: Vec<(u32, bool)> = ends.rx.iter().map(|f| (f.width, f.no_signal)).collect();
        t.join().unwrap().unwrap();
        let frames: Vec<u32> = got.iter().filter(|g| !g.1).map(|g| g.0).collect();
        assert_eq!(frames, [16, 16, 32, 32], "{got:?}");
        assert!(got.iter().filter(|g| g.1).all(|g| g.0 == 16), "no-signal cards keep the size viewers had: {got:?}");
        assert_eq!(ends.meter.summary().source_losses, 1);
    }

    #[test]
    fn a_source_that_stays_away_ends_capture_at_the_deadline_and_stays_reported_lost() {
        let mut first = true;
        let factory: SourceFactory = Box::new(move || {
            if std::mem::take(&mut first) {
                Ok(Box::new(Scripted { side: 16, fill: 1, frames: 2, next: 0, then_fail: true })
                    as Box<dyn FrameSource>)
            } else {
                Err(CaptureError::Camera("unplugged".into()))
            }
        });
        let recovery = Recovery {
            first: Duration::from_millis(10),
            cap: Duration::from_millis(20),
            no_signal_every: Duration::from_millis(30),
            stable_after: Duration::from_secs(10),
        };
        let limits = Limits { duration: Some(Duration::from_millis(300)), ..Limits::default() };
        let (cap, ends) = capture(factory, limits, recovery);
        let t = thread::spawn(move || cap.run());
        let n = ends.rx.iter().count();
        t.join().unwrap().unwrap();
        let r = ends.meter.summary();
        assert!(n >= 4, "{n} frames");
        assert_eq!(r.source_losses, 1);
        assert!(r.no_signal_frames >= 2, "{r:?}");
        assert!(r.source_lost_since.is_some(), "the source never came back but the stats do not say so");
    }

    /// A source that stamps its own capture time (a network camera's clock, mapped).
    struct Stamped;

    impl FrameSource for Stamped {
        fn describe(&self) -> String {
            "stamped".into()
        }
        fn size(&self) -> (u32, u32) {
            (16, 16)
        }
        fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
            Scripted { side: 16, fill: 1, frames: 1, next: 0, then_fail: false }.next_frame(frame)?;
            frame.capture_us = 1234;
            Ok(true)
        }
    }

    #[test]
    fn a_capture_time_the_source_stamps_is_kept() {
        let factory: SourceFactory = Box::new(|| Ok(Box::new(Stamped) as Box<dyn FrameSource>));
        let limits = Limits { frames: Some(3), ..Limits::default() };
        let (cap, ends) = capture(factory, limits, RECOVERY);
        let t = thread::spawn(move || cap.run());
        let stamps: Vec<u64> = ends.rx.iter().map(|f| f.capture_us).collect();
        t.join().unwrap().unwrap();
        assert_eq!(stamps, vec![1234; 3]);
    }
    /// A source that waits for ever (a silent pipe, a camera that does not answer) until
    /// the capture thread's interrupt is due, as the real sources do; then fails.
    fn wait_for_interrupt() -> CaptureError {
        while !interrupted() {
            thread::sleep(Duration::from_millis(5));
        }
        CaptureError::File { path: "silent".into(), what: "stopped while waiting for input".into() }
    }

    struct Silent;

    impl FrameSource for Silent {
        fn describe(&self) -> String {
            "silent".into()
        }
        fn size(&self) -> (u32, u32) {
            (16, 16)
        }
        fn next_frame(&mut self, _: &mut RawFrame) -> Result<bool, CaptureError> {
            Err(wait_for_interrupt())
        }
    }

    #[test]
    fn a_source_that_never_opens_ends_cleanly_at_the_deadline() {
        let factory: SourceFactory = Box::new(|| Err(wait_for_interrupt()));
        let limits = Limits { duration: Some(Duration::from_millis(200)), ..Limits::default() };
        let (cap, ends) = capture(factory, limits, RECOVERY);
        let t = Instant::now();
        let h = thread::spawn(move || cap.run());
        assert!(matches!(ends.info_rx.recv().unwrap(), Ok(None)));
        h.join().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn a_silent_source_ends_cleanly_on_a_stop_mid_stream() {
        let factory: SourceFactory = Box::new(|| Ok(Box::new(Silent) as Box<dyn FrameSource>));
        let (cap, ends) = capture(factory, Limits::default(), RECOVERY);
        let stop = cap.stops[0].clone();
        let h = thread::spawn(move || cap.run());
        assert!(matches!(ends.info_rx.recv().unwrap(), Ok(Some(_))));
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        // A file error that comes of the stop is no failure.
        h.join().unwrap().unwrap();
        assert_eq!(ends.rx.iter().count(), 0);
        assert_eq!(ends.meter.summary().source_losses, 0);
    }

    #[test]
    fn a_flapping_source_carries_on_its_backoff() {
        // Every open gives one frame and then fails: with the backoff starting over at each
        // loss it would be reopened every 20 ms, about 50 times in a second.
        let opens = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = opens.clone();
        let factory: SourceFactory = Box::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(Scripted { side: 16, fill: 10, frames: 1, next: 0, then_fail: true }) as Box<dyn FrameSource>)
        });
        let recovery = Recovery {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(320),
            no_signal_every: Duration::from_millis(50),
            stable_after: Duration::from_secs(10),
        };
        let limits = Limits { duration: Some(Duration::from_secs(1)), ..Limits::default() };
        let (cap, ends) = capture(factory, limits, recovery);
        let h = thread::spawn(move || cap.run());
        let _ = ends.rx.iter().count();
        h.join().unwrap().unwrap();
        // 20 + 40 + 80 + 160 + 320 + 320 ms: about 6 reopens.
        let n = opens.load(Ordering::Relaxed);
        assert!((3..=9).contains(&n), "{n} opens in a second");
        assert_eq!(ends.meter.summary().source_losses, n);
    }
}
