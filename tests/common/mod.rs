//! Helpers shared by the integration tests: free ports, the `framecast` binary as a child
//! process that is killed when its guard drops, waiting with a timeout, captured logs, the
//! `--stats-json` summary line, and PSNR.
//!
//! Every process is bounded in time: `Proc::wait` kills the child when its timeout passes, and
//! dropping a `Proc` (also while a test panics) kills it and prints what it logged.

#![allow(dead_code)]

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

type Shared = Arc<Mutex<String>>;

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

/// Peak signal-to-noise ratio of two 8-bit images of equal length, in dB (infinite if equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    assert!(!a.is_empty());
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// The records of a `--stats-json` file of one type (e.g. the intervals).
pub fn records_of(path: &Path, kind: RecordType) -> Vec<Report> {
    stats_lines(path).into_iter().filter(|r| r.kind == kind).collect()
}

// ---------------------------------------------------------------------------------------
// Real clients of the HTTP endpoint (tests/http.rs): external tools, raw HTTP requests and
// an MJPEG reader that counts parts.

/// True when the `CI` environment variable is set to something other than "", "0" or "false".
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Whether `tool` (a name looked up on PATH, or a path) exists. When it does not: under CI
/// the test fails naming the Debian package; otherwise a skip note is printed and the caller
/// should return.
pub fn require_tool(test: &str, tool: &str, debian_package: &str) -> bool {
    let found = if tool.contains('/') {
        Path::new(tool).is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if !found {
        assert!(
            !in_ci(),
            "{test}: `{tool}` is missing (CI is set, so this fails instead of skipping); \
             install the Debian package with: apt-get install -y {debian_package}"
        );
        eprintln!("SKIPPED {test}: `{tool}` not found (apt-get install -y {debian_package}; CI unset, so skipping)");
    }
    found
}

/// What an external command printed, and how it ended.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
}

/// Runs an external command in a process group of its own, with stdin closed and its output
/// captured, for at most `timeout`: past it, or if this thread panics meanwhile, the whole
/// group is killed (a browser starts children of its own). After a normal exit the group is
/// killed too, so that no helper process outlives the test.
pub fn run_tool(cmd: &mut Command, timeout: Duration) -> ToolOutput {
    use std::os::unix::process::CommandExt;

    struct Group(Option<Child>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the process group this child leads (process_group(0)).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                let _ = child.wait();
            }
        }
    }

    let label = format!("{:?}", cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let err_pipe = child.stderr.take().expect("piped stderr");
    let mut group = Group(Some(child));
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_buf = Shared::default();
    let err_reader = pump(err_pipe, err_buf.clone());
    let deadline = started + timeout;
    let status = loop {
        let child = group.0.as_mut().expect("child");
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                drop(group);
                let _ = err_reader.join();
                let err = err_buf.lock().unwrap_or_else(|p| p.into_inner()).clone();
                panic!("{label} still running after {timeout:?}; killed. stderr:\n{err}");
            }
            Err(e) => panic!("cannot wait for {label}: {e}"),
        }
    };
    let took = started.elapsed();
    drop(group); // kills what the tool left behind; the pipes then close
    let stdout = out_reader.join().unwrap_or_default();
    let _ = err_reader.join();
    let stderr = err_buf.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ToolOutput { status, stdout, stderr, took }
}

/// An HTTP response read until the server closed the connection.
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, without the blank line.
    pub head: String,
    pub body: Vec<u8>,
    /// Time from sending the request to the end of the response.
    pub took: Duration,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits a complete response (`Connection: close`) into status, head and body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, String, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, head, raw[end + 4..].to_vec()))
}

/// Sends `request` as is to 127.0.0.1:`port` and reads the response until the server closes
/// the connection, at most `timeout`.
pub fn http_raw(port: u16, request: &[u8], timeout: Duration) -> HttpResponse {
    use std::io::Write;
    let mut s = connect_retry(port, Duration::from_secs(5));
    let t0 = Instant::now();
    s.write_all(request).expect("send the request");
    let raw = read_until_closed(&mut s, timeout);
    let took = t0.elapsed();
    let (status, head, body) = parse_response(&raw).unwrap_or_else(|e| panic!("request {:?}: {e}", trunc(request)));
    HttpResponse { status, head, body, took }
}

/// `GET path` on 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> HttpResponse {
    http_raw(port, format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(), timeout)
}

fn trunc(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
    if b.len() > 80 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// The width and height in a JPEG's start-of-frame marker (baseline or progressive).
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            let sof = jpeg.get(i + 4..i + 9)?;
            return Some((u16::from_be_bytes([sof[3], sof[4]]), u16::from_be_bytes([sof[1], sof[2]])));
        }
        i += 2 + len;
    }
    None
}

/// One complete part of a multipart MJPEG stream, as a client saw it.
#[derive(Clone, Debug)]
pub struct MjpegPart {
    /// When its last byte arrived, since the connection was made.
    pub at: Duration,
    /// `X-Framecast-Seq`, if the part had one.
    pub seq: Option<u64>,
    pub len: usize,
}

/// What one MJPEG client saw.
#[derive(Debug, Default)]
pub struct MjpegLog {
    /// The client's local port (the sender's `links[].peer` ends with it).
    pub local_port: u16,
    pub status: u16,
    pub content_type: String,
    pub parts: Vec<MjpegPart>,
    pub bytes: u64,
    /// How long the client ran, from the connection to its end.
    pub ran: Duration,
    /// Why it stopped early (connection closed, malformed part), if it did.
    pub ended: Option<String>,
}

impl MjpegLog {
    /// Parts per second over [`from`, end of run].
    pub fn fps_after(&self, from: Duration) -> f64 {
        let n = self.parts.iter().filter(|p| p.at >= from).count();
        let span = self.ran.saturating_sub(from).as_secs_f64();
        if span > 0.0 {
            n as f64 / span
        } else {
            0.0
        }
    }

    /// The fewest parts completed in any whole second of [`from`, end of run].
    pub fn min_parts_per_second(&self, from: Duration) -> usize {
        let secs = self.ran.saturating_sub(from).as_secs();
        (0..secs)
            .map(|k| {
                let (a, b) = (from + Duration::from_secs(k), from + Duration::from_secs(k + 1));
                self.parts.iter().filter(|p| p.at >= a && p.at < b).count()
            })
            .min()
            .unwrap_or(0)
    }
}

/// How an MJPEG client reads.
#[derive(Clone, Copy, Debug)]
pub struct MjpegClient {
    /// Stop after this long.
    pub run_for: Duration,
    /// Read at most this many bytes at a time, then sleep `pause` (a slow client), or read as
    /// fast as possible when `None`.
    pub throttle: Option<(usize, Duration)>,
    /// SO_RCVBUF to set before connecting (a small one keeps the kernel from buffering
    /// seconds of video on a slow client's behalf).
    pub rcvbuf: Option<usize>,
}

/// Starts a thread that GETs /stream.mjpg from 127.0.0.1:`port` and parses the multipart
/// stream, recording each complete part, until `run_for` passes or the server closes.
pub fn spawn_mjpeg_client(port: u16, how: MjpegClient) -> JoinHandle<MjpegLog> {
    thread::Builder::new()
        .name(format!("mjpeg-client-{port}"))
        .spawn(move || mjpeg_client(port, how))
        .expect("spawn an MJPEG client thread")
}

fn mjpeg_client(port: u16, how: MjpegClient) -> MjpegLog {
    use std::io::{ErrorKind, Write};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(n) = how.rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect to the HTTP port");
    let mut s: TcpStream = sock.into();
    let t0 = Instant::now();
    let mut log = MjpegLog { local_port: s.local_addr().map(|a| a.port()).unwrap_or(0), ..Default::default() };
    let deadline = t0 + how.run_for;
    s.write_all(format!("GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parser = PartParser::default();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let want = how.throttle.map_or(chunk.len(), |(n, _)| n.min(chunk.len()));
        let _ = s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))));
        match s.read(&mut chunk[..want]) {
            Ok(0) => {
                log.ended = Some("the server closed the connection".into());
                break;
            }
            Ok(n) => {
                log.bytes += n as u64;
                buf.extend_from_slice(&chunk[..n]);
                let at = t0.elapsed();
                if let Err(e) = parser.feed(&mut buf, at, &mut log) {
                    log.ended = Some(e);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                log.ended = Some(format!("read failed: {e}"));
                break;
            }
        }
        if let Some((_, pause)) = how.throttle {
            thread::sleep(pause);
        }
    }
    log.ran = t0.elapsed();
    log
}

/// Incremental parser of a `multipart/x-mixed-replace` response.
#[derive(Default)]
struct PartParser {
    head_done: bool,
    boundary: String,
    /// Body length (if the part gave a Content-Length) and sequence number of the part
    /// being read, once its headers are parsed.
    body: Option<(Option<usize>, Option<u64>)>,
}

impl PartParser {
    /// Consumes what it can of `buf`, recording complete parts in `log`.
    fn feed(&mut self, buf: &mut Vec<u8>, at: Duration, log: &mut MjpegLog) -> Result<(), String> {
        let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat);
        loop {
            if !self.head_done {
                let Some(end) = find(buf, b"\r\n\r\n") else { return Ok(()) };
                let (status, head, _) = parse_response(&buf[..end + 4])?;
                log.status = status;
                let ct = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                log.content_type = ct.clone();
                if status != 200 {
                    return Err(format!("status {status}: {head}"));
                }
                self.boundary = ct
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("boundary="))
                    .ok_or_else(|| format!("no boundary in Content-Type {ct:?}"))?
                    .trim_matches('"')
                    .to_string();
                buf.drain(..end + 4);
                self.head_done = true;
            }
            match self.body {
                None => {
                    // [CRLF] --boundary CRLF headers CRLF CRLF
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        return if buf.len() > 4096 { Err("part headers over 4 KiB".into()) } else { Ok(()) };
                    };
                    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut lines = text.trim_start_matches("\r\n").lines();
                    let delim = lines.next().unwrap_or("");
                    if delim.trim_end() != format!("--{}", self.boundary) {
                        return Err(format!("expected boundary --{}, got {delim:?}", self.boundary));
                    }
                    let mut len = None;
                    let mut seq = None;
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse::<usize>().ok();
                            } else if k.eq_ignore_ascii_case("x-framecast-seq") {
                                seq = v.trim().parse::<u64>().ok();
                            }
                        }
                    }
                    buf.drain(..end + 4);
                    self.body = Some((len, seq));
                }
                Some((len, seq)) => {
                    // Without a Content-Length (headers sent ahead of their frame), the part
                    // ends at the next delimiter.
                    let len = match len {
                        Some(n) if buf.len() < n => return Ok(()),
                        Some(n) => n,
                        None => match find(buf, format!("\r\n--{}", self.boundary).as_bytes()) {
                            Some(i) => i,
                            None => return Ok(()),
                        },
                    };
                    if len < 4 || buf[..2] != [0xFF, 0xD8] || buf[len - 2..len] != [0xFF, 0xD9] {
                        return Err(format!("part {} is not a whole JPEG (no SOI/EOI)", log.parts.len()));
                    }
                    log.parts.push(MjpegPart { at, seq, len });
                    buf.drain(..len);
                    self.body = None;
                }
            }
        }
    }
}
