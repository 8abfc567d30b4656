//! External tools a test runs (ffmpeg, chromium, Xvfb, ImageMagick...): finding them, skipping
//! loudly when one is missing, and running one with a time limit.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{pump, Shared};

pub use framecast::testutil::in_ci;

/// Whether `tool` exists: a path (with a `/`) as is, a name on PATH.
pub fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Whether every tool a test needs is there; each is `(command or path, Debian package)`.
/// When one is missing the test is skipped: this prints `SKIPPED <test>: ...` in a banner to
/// stderr, naming what to install, and returns false for the test to return. Under CI
/// ([`in_ci`]) it panics with the same message instead: CI must run every test for real.
pub fn require_tools(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(tool, _)| !on_path(tool)).collect();
    if missing.is_empty() {
        return true;
    }
    let names: Vec<String> = missing.iter().map(|(tool, _)| format!("`{tool}`")).collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    skip(
        test,
        &format!(
            "{} not found (apt-get install -y {}, or scripts/setup.sh --test-deps)",
            names.join(", "),
            packages.join(" ")
        ),
    );
    false
}

/// Skips `test` for `why`: prints `SKIPPED <test>: <why>` in a banner to stderr, or panics
/// with that message under CI ([`in_ci`]). The banner goes straight to the process's stderr,
/// past the test harness's capture, so that a skipped test shows in a passing run.
pub fn skip(test: &str, why: &str) {
    let msg = format!("SKIPPED {test}: {why}");
    assert!(!in_ci(), "{msg} (CI is set, so this test fails instead of skipping)");
    let bar = "=".repeat(msg.len().min(100));
    let _ = writeln!(std::io::stderr().lock(), "{bar}\n{msg}\n{bar}");
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

/// Runs `cmd` as [`run_tool`] does and returns what it printed on stdout; the test fails with
/// the tool's stderr unless it exits 0.
pub fn tool_stdout(cmd: &mut Command, timeout: Duration) -> Vec<u8> {
    let label = format!("{cmd:?}");
    let out = run_tool(cmd, timeout);
    assert!(out.status.success(), "{label} failed ({}):\n{}", out.status, out.stderr);
    out.stdout
}

/// Headless Chromium with the flags that make it work as root on a closed network
/// (design.md) and a profile in `profile`; the caller adds what to do (`--dump-dom`, a URL).
pub fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=800,700",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}
