//! Helpers shared by the integration tests: free ports, the `framecast` binary as a child
//! process that is killed when its guard drops, waiting with a timeout, captured logs and the
//! `--stats-json` summary line. [`tools`] finds and runs external tools and skips a test
//! loudly when one is missing; [`http_client`] is a client of the HTTP endpoint. Test data
//! (sample headers, pattern JPEGs, PSNR) is in `framecast::testutil`, shared with the unit
//! tests, benches and fuzz targets.
//!
//! Every process is bounded in time: `Proc::wait` kills the child when its timeout passes, and
//! dropping a `Proc` (also while a test panics) kills it and prints what it logged.

#![allow(dead_code)]

pub mod gst_rtsp;
pub mod http_client;
pub mod netns;
pub mod tools;
pub mod vlc;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use framecast::stats::{read_json_lines, RecordType, Report};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_framecast");

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
/// Serialises the tests that stream real video, so that on a 2-core machine they do not
/// starve each other's pipelines into newest-frame-wins drops that the tests count.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A new empty directory for one test, under cargo's scratch directory for integration tests.
/// It is removed when the guard drops, unless the test failed (then its path is printed).
pub fn scratch_dir(name: &str) -> ScratchDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    ScratchDir(dir)
}

pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept the test's files in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case colours are on despite NO_COLOR.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A child's output, collected by a [`pump`] thread.
type Shared = Arc<Mutex<String>>;

/// Copies `pipe` into `buf` line by line (ANSI stripped) until it closes.
fn pump(pipe: impl Read + Send + 'static, buf: Shared) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => buf.lock().unwrap_or_else(|p| p.into_inner()).push_str(&strip_ansi(&line)),
            }
        }
    })
}

/// A running `framecast` child. Its stdout and stderr are captured continuously (so it never
/// blocks on a full pipe); dropping the guard kills it.
pub struct Proc {
    name: String,
    args: Vec<String>,
    child: Child,
    stdout: Shared,
    stderr: Shared,
    pumps: Vec<JoinHandle<()>>,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `framecast ARGS...` with logging at info and no colours. `name` labels its output.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_with(name, args, |_| {})
    }

    /// Like [`Proc::spawn`], with a hook to adjust the command (e.g. its environment).
    pub fn spawn_with(name: &str, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let (stdout, stderr) = (Shared::default(), Shared::default());
        let pumps = vec![
            pump(child.stdout.take().expect("piped stdout"), stdout.clone()),
            pump(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        eprintln!("[{name}] started: framecast {}", args.join(" "));
        Proc {
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child,
            stdout,
            stderr,
            pumps,
            started: Instant::now(),
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the child; the error names the pid and the signal.
    pub fn signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        // SAFETY: kill(2) on a child we started.
        if unsafe { libc::kill(self.id() as libc::pid_t, sig) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("kill({}, {sig}) failed: {e}", self.id())))
    }

    /// Everything the child wrote to stderr so far (ANSI stripped).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Time since the child started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits until the child exits, at most `timeout`; past it the child is killed and the test
    /// fails with the child's log. Once it has exited, its output is complete.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.finish_pumps();
                panic!("[{}] still running after {timeout:?}; killed. stderr:\n{}", self.name, self.stderr());
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.finish_pumps();
        self.status.expect("exited")
    }

    /// Waits (at most `timeout`) and asserts exit status 0. Returns the run time.
    pub fn expect_success(&mut self, timeout: Duration) -> Duration {
        let st = self.wait(timeout);
        let took = self.elapsed();
        assert!(st.success(), "[{}] exited with {st}; stderr:\n{}", self.name, self.stderr());
        eprintln!("[{}] exited 0 after {:.2} s", self.name, took.as_secs_f64());
        took
    }

    /// Waits until stderr contains `needle`, at most `timeout`. Returns whether it did.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_stderr_n(needle, 1, timeout)
    }

    /// Waits until stderr contains `needle` at least `n` times, at most `timeout`.
    pub fn wait_for_stderr_n(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().matches(needle).count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish_pumps(&mut self) {
        // The pipes close when the child exits (it starts no children of its own).
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let was_running = self.is_running();
        if was_running {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.finish_pumps();
        if thread::panicking() || was_running {
            eprintln!(
                "[{}] {} (framecast {}); stderr:\n{}",
                self.name,
                if was_running { "killed at the end of the test" } else { "exited" },
                self.args.join(" "),
                self.stderr()
            );
        }
    }
}

/// Connects to 127.0.0.1:`port`, retrying while nothing listens there yet, for at most
/// `timeout`.
pub fn connect_retry(port: u16, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to 127.0.0.1:{port} within {timeout:?}: {e}"),
        }
    }
}

/// Reads from `stream` until the peer closes it (EOF or reset), at most `timeout`.
/// Returns the bytes received; panics if the connection is still open at the deadline.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    try_read_until_closed(stream, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`read_until_closed`], but an open connection at the deadline is an `Err`.
pub fn try_read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    use std::io::ErrorKind;
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the peer did not close the connection within {timeout:?}"));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return Ok(got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// All records of a `--stats-json` file, typed.
pub fn stats_lines(path: &Path) -> Vec<Report> {
    read_json_lines(path).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The summary record: the last line of a `--stats-json` file, which must be the summary.
pub fn summary(path: &Path) -> Report {
    let last = stats_lines(path).pop().unwrap_or_else(|| panic!("{} is empty", path.display()));
    assert_eq!(last.kind, RecordType::Summary, "last line of {} is not the summary: {last:?}", path.display());
    eprintln!("summary {}: {}", path.display(), serde_json::to_string(&last).unwrap_or_default());
    last
}

/// The records of a `--stats-json` file of one type (e.g. the intervals).
pub fn records_of(path: &Path, kind: RecordType) -> Vec<Report> {
    stats_lines(path).into_iter().filter(|r| r.kind == kind).collect()
}
