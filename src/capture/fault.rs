//! A source that fails on demand, to test what the sender does when a camera disappears
//! mid-stream (unplugged, taken by another program) without a camera.
//!
//! Test-only and hidden from `--help`: with `--source test`, the environment variable
//! `FRAMECAST_TEST_SOURCE_FAULT=AFTER:DOWN` (e.g. `30:2.5`) makes the test pattern fail after
//! every AFTER frames it delivers, and every attempt to reopen it fail for DOWN seconds after
//! that, like a camera that is unplugged and plugged back in. The binary reads the variable
//! once at start-up (`cli::TestHooks`) and the CLI wraps the pattern in a [`FlakyOpener`];
//! nothing here reads the environment.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CaptureError, FrameSource, RawFrame};

/// The environment variable `cli::TestHooks` reads (see the module documentation).
pub const ENV: &str = "FRAMECAST_TEST_SOURCE_FAULT";

/// When a `Flaky` source fails and for how long it stays away.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub after_frames: u64,
    pub down: Duration,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{ENV}={s}: expected AFTER_FRAMES:DOWN_SECONDS, e.g. 30:2.5");
        let (a, d) = s.split_once(':').ok_or_else(bad)?;
        let after_frames: u64 = a.trim().parse().map_err(|_| bad())?;
        let down: f64 = d.trim().parse().map_err(|_| bad())?;
        if after_frames == 0 || !(0.0..=3600.0).contains(&down) {
            return Err(bad());
        }
        Ok(Fault { after_frames, down: Duration::from_secs_f64(down) })
    }
}

/// Opens flaky sources: each one delivers `after_frames` frames of the wrapped source and then
/// fails; opening fails until `down` has passed since the last failure.
pub struct FlakyOpener {
    fault: Fault,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl FlakyOpener {
    pub fn new(fault: Fault) -> Self {
        FlakyOpener { fault, failed_at: Arc::new(Mutex::new(None)) }
    }

    /// Wraps a newly opened `inner`, or fails as a busy camera would while the fault lasts.
    pub fn open(&self, inner: Box<dyn FrameSource>) -> Result<Box<dyn FrameSource>, CaptureError> {
        let failed_at = *self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = failed_at {
            let left = self.fault.down.saturating_sub(t.elapsed());
            if !left.is_zero() {
                return Err(CaptureError::Camera(format!(
                    "simulated: device busy for another {:.1} s ({ENV})",
                    left.as_secs_f64()
                )));
            }
        }
        Ok(Box::new(Flaky { inner, left: self.fault.after_frames, failed_at: self.failed_at.clone() }))
    }
}

struct Flaky {
    inner: Box<dyn FrameSource>,
    left: u64,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl FrameSource for Flaky {
    fn describe(&self) -> String {
        format!("{} (failing on demand: {ENV})", self.inner.describe())
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn self_paced(&self) -> bool {
        self.inner.self_paced()
    }
    fn delivers_jpeg(&self) -> bool {
        self.inner.delivers_jpeg()
    }
    fn next_frame(&mut self, frame: &mut RawFrame) -> Result<bool, CaptureError> {
        if self.left == 0 {
            *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            return Err(CaptureError::Camera("simulated: the device went away".into()));
        }
        self.left -= 1;
        self.inner.next_frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pattern::PatternSource;
    use crate::format::Subsampling;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("30:2.5".parse(), Ok(Fault { after_frames: 30, down: Duration::from_millis(2500) }));
        for bad in ["", "30", "0:1", "x:1", "3:-1", "3:y"] {
            assert!(bad.parse::<Fault>().unwrap_err().contains("AFTER_FRAMES:DOWN_SECONDS"), "{bad}");
        }
    }

    #[test]
    fn fails_after_n_frames_and_stays_down() {
        let opener = FlakyOpener::new(Fault { after_frames: 2, down: Duration::from_millis(200) });
        let pattern = || Box::new(PatternSource::new(16, 16, Subsampling::S420)) as Box<dyn FrameSource>;
        let mut src = opener.open(pattern()).unwrap();
        let mut f = RawFrame::empty();
        assert!(src.next_frame(&mut f).unwrap());
        assert!(src.next_frame(&mut f).unwrap());
        assert!(src.next_frame(&mut f).is_err());
        assert!(opener.open(pattern()).is_err(), "reopened while down");
        std::thread::sleep(Duration::from_millis(250));
        let mut src = opener.open(pattern()).unwrap();
        assert!(src.next_frame(&mut f).unwrap());
    }
}
