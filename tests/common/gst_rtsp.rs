//! GStreamer's gst-rtsp-server as a foreign RTSP camera or media server for the tests
//! (`tests/support/gst_rtsp.py`, run with Debian's `/usr/bin/python3` and its `gi`), started
//! in a process group of its own and killed with it.
//!
//! Tools: `/usr/bin/python3` with `gi` and GstRtspServer (Debian: python3-gi,
//! gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good); `scripts/setup.sh --test-deps`
//! installs them. A missing tool skips the test loudly, or fails it under `CI=true`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::tools::{require_tools, skip};

pub const PYTHON: &str = "/usr/bin/python3";
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/gst_rtsp.py");

/// gst-rtsp-server in a process group of its own, killed (the whole group) when dropped.
pub struct GstServer {
    child: Child,
    pub url: String,
}

impl GstServer {
    /// Starts `gst_rtsp.py serve --port PORT ARGS...` and waits for its READY line. `None`
    /// (the test skipped) if GStreamer's Python bindings are missing.
    pub fn serve(test: &str, port: u16, args: &[&str]) -> Option<GstServer> {
        if !require_tools(test, &[(PYTHON, "python3-gi gir1.2-gst-rtsp-server-1.0")]) {
            return None;
        }
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .args(["serve", "--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start gst_rtsp.py");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = GstServer { child, url: String::new() };
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            if let Some(url) = line.strip_prefix("READY ") {
                server.url = url.trim().to_string();
                return Some(server);
            }
        }
        let st = server.child.try_wait();
        if st.as_ref().is_ok_and(|s| s.is_some()) {
            skip(test, &format!("gst_rtsp.py exited ({st:?}): GStreamer's RTSP server is not usable here"));
            return None;
        }
        panic!("gst_rtsp.py printed no READY line within 20 s");
    }

    /// The URL with credentials.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url.replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
    }
}

impl Drop for GstServer {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this child leads (process_group(0)).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
