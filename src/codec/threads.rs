//! How many threads code one frame: the `--encode-threads` / `--decode-threads` setting and
//! the count it gives for a frame size. The CLI parses it; the encode and decode stages use it.

/// How many threads code one frame (`--encode-threads`, `--decode-threads`): `auto` (or 0)
/// decides by the frame's size, a number fixes it.
///
/// `auto` is one thread below [`CodecThreads::AUTO_MIN_PIXELS`] (1280x720): there a second
/// thread saves at most about 0.1 ms a frame, within the noise of a busy machine, for a
/// worker thread and 0.6 % more bytes. Measured in release on this project's 2-core machine
/// with another process busy (load 2.0-2.2), q75 4:2:0 test pattern, 1 and 2 threads in turn,
/// medians of 4 runs of 400 frames (`cargo test --release --lib cli::measure -- --ignored
/// --nocapture`): 640x480 encode 0.34 -> 0.30 ms, decode 0.33 -> 0.29 ms; 1280x720 encode
/// 1.10 -> 0.79 ms, decode 1.05 -> 0.79 ms; 1920x1080 encode 2.42 -> 1.82 ms, decode
/// 2.50 -> 1.67 ms. At and above it, as many threads as the machine has cores, at most one
/// per [`CodecThreads::ROWS_PER_THREAD`] rows of the frame and at most [`CodecThreads::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CodecThreads {
    #[default]
    Auto,
    /// This many threads (1 ..= [`CodecThreads::MAX`]); 1 is the unsliced path.
    Fixed(usize),
}

impl CodecThreads {
    /// The most threads (and slices) one frame is coded with.
    pub const MAX: usize = 16;
    /// `auto`'s smallest frame coded on more than one thread.
    pub const AUTO_MIN_PIXELS: u64 = 1280 * 720;
    /// `auto` gives each thread at least this many rows.
    pub const ROWS_PER_THREAD: u32 = 128;

    /// The threads for a `width`x`height` frame on a machine with `cores` cores.
    pub fn for_frame(self, width: u32, height: u32, cores: usize) -> usize {
        match self {
            CodecThreads::Fixed(n) => n,
            CodecThreads::Auto if u64::from(width) * u64::from(height) < Self::AUTO_MIN_PIXELS => 1,
            CodecThreads::Auto => {
                let rows_cap = (height / Self::ROWS_PER_THREAD).max(1) as usize;
                cores.min(rows_cap).clamp(1, Self::MAX)
            }
        }
    }

    /// [`CodecThreads::for_frame`] on this machine's cores.
    pub fn for_frame_here(self, width: u32, height: u32) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        self.for_frame(width, height, cores)
    }
}

/// A stage's threads per frame under a [`CodecThreads`] setting, decided again only when the
/// frame size changes.
#[derive(Clone, Copy, Debug)]
pub struct ThreadsBySize {
    pub setting: CodecThreads,
    sized_for: (u32, u32),
    /// The threads the stage's codec has.
    pub threads: usize,
}

impl ThreadsBySize {
    /// Before the first frame: one thread (a new codec's).
    pub fn new(setting: CodecThreads) -> Self {
        ThreadsBySize { setting, sized_for: (0, 0), threads: 1 }
    }

    /// The threads a `width`x`height` frame wants, when that differs from [`Self::threads`]
    /// (the caller then sets them and records them in `threads`).
    pub fn change_for(&mut self, width: u32, height: u32) -> Option<usize> {
        if (width, height) == self.sized_for {
            return None;
        }
        self.sized_for = (width, height);
        let want = self.setting.for_frame_here(width, height);
        (want != self.threads).then_some(want)
    }

    /// Gives a stage's codec (`set_threads`: `Encoder::set_threads` or `Decoder::set_threads`)
    /// the threads a `width`x`height` frame wants, when the size differs from the last
    /// frame's, and logs the change as `{stage} threads per frame` ("encode", "decode"). If
    /// its threads cannot start, the codec goes on with one (a failed `set_threads` leaves
    /// it there) and a warning names the `coder` and what it goes on `doing` ("encoder",
    /// "encoding").
    pub fn fit(
        &mut self,
        (width, height): (u32, u32),
        (stage, coder, doing): (&str, &str, &str),
        set_threads: impl FnOnce(usize) -> Result<(), super::CodecError>,
    ) {
        let Some(threads) = self.change_for(width, height) else { return };
        let setting = self.setting;
        match set_threads(threads) {
            Ok(()) => {
                self.threads = threads;
                tracing::info!(threads, width, height, %setting, "{stage} threads per frame");
            }
            Err(e) => {
                tracing::warn!(threads, error = %e, "cannot start the {coder}'s slice threads; {doing} on one");
                self.threads = 1;
            }
        }
    }
}

impl std::str::FromStr for CodecThreads {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected 'auto', 0 (auto) or a number of threads 1..={}", CodecThreads::MAX);
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(CodecThreads::Auto);
        }
        match s.trim().parse::<usize>().map_err(|_| bad())? {
            0 => Ok(CodecThreads::Auto),
            n if n <= CodecThreads::MAX => Ok(CodecThreads::Fixed(n)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for CodecThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecThreads::Auto => f.write_str("auto"),
            CodecThreads::Fixed(n) => write!(f, "{n}"),
        }
    }
}
