//! Timestamps: microseconds on the host's monotonic clock, comparable between processes on
//! the same host, plus an identifier of that clock for the handshake.

/// Microseconds on `CLOCK_MONOTONIC`. Processes on one host (one boot) share this clock,
/// unless a test skewed this process's clock with [`install_skew`].
pub fn now_us() -> u64 {
    let raw = raw_now_us();
    match SKEW.get() {
        None => raw,
        Some(s) => s.apply(raw),
    }
}

fn raw_now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC exists on every supported unix.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A deliberate error in this process's clock, for tests of clock sync: it runs `offset_us`
/// ahead and `drift_ppm` parts per million fast, as a machine with an unsynchronised clock
/// would. Parsed from `OFFSET_S,DRIFT_PPM` (e.g. `3600,100`; the drift may be left out); the
/// binary reads it from a test hook at start-up (`cli::TestHooks`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSkew {
    pub offset_us: i64,
    pub drift_ppm: f64,
}

impl std::str::FromStr for ClockSkew {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected OFFSET_S,DRIFT_PPM, e.g. 3600,100");
        let (o, d) = s.split_once(',').unwrap_or((s, "0"));
        let (offset_s, drift_ppm): (f64, f64) =
            (o.trim().parse().map_err(|_| bad())?, d.trim().parse().map_err(|_| bad())?);
        if !(offset_s.abs() < 1e9 && drift_ppm.abs() < 1e6) {
            return Err(bad());
        }
        Ok(ClockSkew { offset_us: (offset_s * 1e6) as i64, drift_ppm })
    }
}

/// A [`ClockSkew`] and the raw time it was installed at (drift accumulates from there).
#[derive(Clone, Copy, Debug)]
struct Installed {
    skew: ClockSkew,
    origin_us: u64,
}

impl Installed {
    fn apply(&self, raw: u64) -> u64 {
        let elapsed = raw.saturating_sub(self.origin_us) as f64;
        let v = raw as i64 + self.skew.offset_us + (elapsed * self.skew.drift_ppm * 1e-6) as i64;
        v.max(0) as u64
    }
}

static SKEW: std::sync::OnceLock<Installed> = std::sync::OnceLock::new();

/// Test hook: skews [`now_us`] from now on and gives this process a [`clock_id`] of its own,
/// so a peer on the same host treats it as another machine. Call it once, at start-up, before
/// any timestamp or the clock id is taken; later calls fail and change nothing.
pub fn install_skew(skew: ClockSkew) -> Result<(), &'static str> {
    if ID.get().is_some() {
        return Err("the clock id was already read; install the skew at start-up");
    }
    SKEW.set(Installed { skew, origin_us: raw_now_us() }).map_err(|_| "a clock skew is already installed")
}

static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();

/// Identifies the clock behind [`now_us`]: on Linux the kernel's boot id, so two peers with
/// equal ids share a monotonic clock. Elsewhere (or if it cannot be read) a value unique to
/// this process, so no shared clock is ever assumed by mistake.
pub fn clock_id() -> [u8; 16] {
    *ID.get_or_init(|| {
        if SKEW.get().is_some() {
            return process_unique_id();
        }
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| parse_uuid(s.trim()))
            .unwrap_or_else(process_unique_id)
    })
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn process_unique_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&raw_now_us().to_be_bytes());
    out[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    out[12] = 0xff; // never a valid boot id version nibble pattern from the kernel
    out
}

/// One NTP-style exchange: `t1` request sent (local clock), `t2` request received and `t3`
/// reply sent (remote clock), `t4` reply received (local clock), all in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub t1: u64,
    pub t2: u64,
    pub t3: u64,
    pub t4: u64,
}

impl Exchange {
    /// Remote clock minus local clock, µs, assuming symmetric paths.
    pub fn offset_us(&self) -> f64 {
        ((self.t2 as f64 - self.t1 as f64) + (self.t3 as f64 - self.t4 as f64)) / 2.0
    }

    /// Round-trip time less the remote's processing time, µs.
    pub fn rtt_us(&self) -> u64 {
        (self.t4.saturating_sub(self.t1)).saturating_sub(self.t3.saturating_sub(self.t2))
    }
}

/// The current mapping from a peer's clock to ours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Remote minus local at local time `at_us`, µs.
    pub offset_us: f64,
    /// How much faster the remote clock runs, parts per million.
    pub drift_ppm: f64,
    /// Bound on the offset error: half the round trip of the best exchange used, µs.
    pub uncertainty_us: f64,
    pub at_us: u64,
    /// Exchanges seen so far.
    pub samples: u64,
}

impl Estimate {
    /// Remote minus local at local time `local_us`.
    pub fn offset_at(&self, local_us: u64) -> f64 {
        self.offset_us + (local_us as f64 - self.at_us as f64) * self.drift_ppm * 1e-6
    }

    /// A remote timestamp on the local clock, using the offset at local time `now_us`.
    pub fn to_local(&self, remote_us: u64, now_us: u64) -> u64 {
        (remote_us as f64 - self.offset_at(now_us)).max(0.0) as u64
    }
}

/// Estimates a peer's clock from NTP-style exchanges: the offset comes from the exchanges
/// with the lowest round trip in a sliding window (queueing only ever adds delay, so the
/// fastest exchanges are the least skewed), and drift from a least-squares line through those
/// exchanges over time.
#[derive(Clone, Debug, Default)]
pub struct ClockSync {
    window: std::collections::VecDeque<Exchange>,
    seen: u64,
    estimate: Option<Estimate>,
}

impl ClockSync {
    /// Exchanges kept (at one a second, about two minutes).
    pub const WINDOW: usize = 128;
    /// The lowest-RTT exchanges in the window that the estimate is fitted to.
    pub const BEST: usize = 16;
    /// Drift is fitted only over at least this span of local time.
    pub const MIN_DRIFT_SPAN_US: u64 = 20_000_000;
    /// Before drift is fitted, only exchanges this recent are used.
    pub const RECENT_US: u64 = 5_000_000;
    /// Drift assumed possible before it is measured (crystal clocks: tens of ppm).
    pub const ASSUMED_DRIFT_PPM: f64 = 200.0;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn estimate(&self) -> Option<Estimate> {
        self.estimate
    }

    /// Adds an exchange and updates the estimate. Exchanges whose timestamps go backwards
    /// are ignored.
    pub fn add(&mut self, x: Exchange) -> Option<Estimate> {
        if x.t4 < x.t1 || x.t3 < x.t2 {
            return self.estimate;
        }
        self.seen += 1;
        if self.window.len() == Self::WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(x);
        let mut best: Vec<&Exchange> = self.window.iter().collect();
        best.sort_by_key(|e| e.rtt_us());
        best.truncate(Self::BEST);
        let mut uncertainty_us = best[0].rtt_us() as f64 / 2.0;
        let now = x.t4;
        let (tmin, tmax) = best.iter().fold((u64::MAX, 0), |(lo, hi), e| (lo.min(e.t4), hi.max(e.t4)));
        let (offset_us, drift_ppm) = if best.len() >= 4 && tmax - tmin >= Self::MIN_DRIFT_SPAN_US {
            // Least squares: offset = a + b * (t - now).
            let n = best.len() as f64;
            let xs: Vec<f64> = best.iter().map(|e| e.t4 as f64 - now as f64).collect();
            let ys: Vec<f64> = best.iter().map(|e| e.offset_us()).collect();
            let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
            let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
            let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
            let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            (my - b * mx, b * 1e6)
        } else {
            // Too short to see drift: the mean offset of the best few recent exchanges (an
            // old exchange would carry the drift since then), with the error that an
            // undetected drift of up to ASSUMED_DRIFT_PPM could have added since.
            let mut recent: Vec<&Exchange> = self.window.iter().filter(|e| e.t4 + Self::RECENT_US >= now).collect();
            recent.sort_by_key(|e| e.rtt_us());
            let k = recent.len().min(4);
            let offset = recent[..k].iter().map(|e| e.offset_us()).sum::<f64>() / k as f64;
            let age = recent[..k].iter().map(|e| now - e.t4).max().unwrap_or(0) as f64;
            uncertainty_us = recent[0].rtt_us() as f64 / 2.0 + age * Self::ASSUMED_DRIFT_PPM * 1e-6;
            (offset, 0.0)
        };
        self.estimate = Some(Estimate { offset_us, drift_ppm, uncertainty_us, at_us: now, samples: self.seen });
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_microseconds() {
        let a = now_us();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = now_us();
        assert!(b >= a + 4_000 && b < a + 1_000_000, "{a} {b}");
    }

    #[test]
    fn clock_skew_parses_and_applies() {
        let s: ClockSkew = "3600,100".parse().unwrap();
        assert_eq!(s, ClockSkew { offset_us: 3_600_000_000, drift_ppm: 100.0 });
        assert_eq!("-1.5".parse::<ClockSkew>(), Ok(ClockSkew { offset_us: -1_500_000, drift_ppm: 0.0 }));
        for bad in ["", "soon", "1,fast", "1e12,0", "nan,0"] {
            assert!(bad.parse::<ClockSkew>().unwrap_err().contains("OFFSET_S,DRIFT_PPM"), "{bad}");
        }
        let i = Installed { skew: s, origin_us: 1_000_000 };
        // 10 s after installation: 3600 s ahead plus 100 ppm of 10 s (1 ms).
        assert_eq!(i.apply(11_000_000), 11_000_000 + 3_600_000_000 + 1_000);
        let behind = Installed { skew: ClockSkew { offset_us: -5_000_000, drift_ppm: 0.0 }, origin_us: 0 };
        assert_eq!(behind.apply(1_000_000), 0, "a clock set behind saturates at zero");
    }

    #[test]
    fn parses_boot_id_format() {
        let id = parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap();
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0xf0);
        assert!(parse_uuid("not-a-uuid").is_none());
    }

    /// Simulates exchanges with a remote clock `offset_s` ahead and `drift_ppm` fast, with
    /// random one-way delays of `base_us` plus up to `jitter_us` queueing.
    fn simulate(
        sync: &mut ClockSync,
        offset_s: f64,
        drift_ppm: f64,
        secs: u64,
        base_us: u64,
        jitter_us: u64,
    ) -> (u64, f64) {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if m == 0 {
                0
            } else {
                seed % m
            }
        };
        let remote = |local: u64| local as f64 + offset_s * 1e6 + local as f64 * drift_ppm * 1e-6;
        let mut t = 1_000_000u64;
        for _ in 0..secs {
            let t1 = t;
            let t2l = t1 + base_us + rnd(jitter_us);
            let t3l = t2l + 50;
            let t4 = t3l + base_us + rnd(jitter_us);
            sync.add(Exchange { t1, t2: remote(t2l) as u64, t3: remote(t3l) as u64, t4 });
            t += 1_000_000;
        }
        (t, remote(t) - t as f64)
    }

    #[test]
    fn offset_of_a_symmetric_exchange() {
        // Remote is 1000 µs ahead; 100 µs each way.
        let x = Exchange { t1: 10_000, t2: 11_100, t3: 11_150, t4: 10_250 };
        assert_eq!(x.offset_us(), 1000.0);
        assert_eq!(x.rtt_us(), 200);
    }

    #[test]
    fn converges_to_offset_and_drift_despite_queueing() {
        let mut sync = ClockSync::new();
        let (now, true_offset) = simulate(&mut sync, 3600.0, 100.0, 120, 200, 20_000);
        let e = sync.estimate().unwrap();
        let err = (e.offset_at(now) - true_offset).abs();
        assert!(err < 1_000.0, "offset error {err} µs, estimate {e:?}");
        assert!((e.drift_ppm - 100.0).abs() < 20.0, "drift {}", e.drift_ppm);
        assert!(e.uncertainty_us > 0.0 && e.uncertainty_us < 5_000.0, "{e:?}");
    }

    #[test]
    fn one_host_converges_near_zero() {
        let mut sync = ClockSync::new();
        let (now, _) = simulate(&mut sync, 0.0, 0.0, 10, 30, 300);
        let e = sync.estimate().unwrap();
        assert!(e.offset_at(now).abs() < 500.0, "{e:?}");
        assert!(e.to_local(5_000_000, now).abs_diff(5_000_000) < 500);
    }

    #[test]
    fn a_fast_drifting_clock_is_followed_before_drift_is_fitted() {
        // 200 ppm (the most assumed): after 15 s the best early exchange is 3 ms stale.
        let mut sync = ClockSync::new();
        let (now, true_offset) = simulate(&mut sync, 3600.0, 200.0, 15, 100, 2_000);
        let e = sync.estimate().unwrap();
        let err = (e.offset_at(now) - true_offset).abs();
        assert!(err < 1_500.0, "offset error {err} µs with {e:?}");
        assert!(err <= e.uncertainty_us + 200.0, "error {err} µs beyond the stated uncertainty {e:?}");
    }

    #[test]
    fn backwards_exchanges_are_ignored() {
        let mut sync = ClockSync::new();
        assert!(sync.add(Exchange { t1: 10, t2: 5, t3: 6, t4: 9 }).is_none());
    }

    /// Both ends of a stream on one host must announce the same clock, so without a test
    /// skew (unit tests install none) the id is the kernel's boot id (the same in every
    /// process), not this process's.
    #[cfg(target_os = "linux")]
    #[test]
    fn clock_id_is_the_boot_id() {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("the kernel's boot id");
        let boot = parse_uuid(boot.trim()).expect("a UUID");
        assert!(SKEW.get().is_none(), "no unit test installs a clock skew");
        assert_eq!(clock_id(), boot, "the clock id is the boot id");
    }
}
