//! A packet link for the tests: `framecast netsim --packet-link` between two namespaces named
//! after the test and this process (so that tests running at once never share one), and ways
//! to put a socket, a thread or a `framecast` child into either namespace.
//!
//! Dropping a [`Link`] stops the netsim with SIGTERM (so that it deletes its namespaces, as
//! a user's Ctrl-C would), waits for it, and deletes any namespace still left.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::tools::{on_path, skip};
use super::Proc;

/// Whether this process can make namespaces and TUN devices (root, `/dev/net/tun`, `ip`).
/// If not, the test is skipped loudly (and fails under CI) and this returns false.
pub fn require_netns(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        "needs root to create network namespaces (CI runs as root)"
    } else if !Path::new("/dev/net/tun").exists() {
        "needs /dev/net/tun"
    } else if !on_path("ip") {
        "needs `ip` (apt-get install -y iproute2)"
    } else {
        return true;
    };
    skip(test, why);
    false
}

/// Whether namespace `ns` exists.
pub fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// A running packet link: namespaces `ns[0]`, `ns[1]` with addresses `addr[0]`, `addr[1]`.
pub struct Link {
    pub netsim: Proc,
    pub ns: [String; 2],
    pub addr: [String; 2],
}

impl Link {
    /// Starts `framecast netsim --packet-link ARGS...` with namespaces named after `tag`
    /// (a few letters) and waits for READY.
    pub fn up(tag: &str, args: &[&str]) -> Link {
        let pid = std::process::id();
        let ns = [format!("fct{pid}{tag}a"), format!("fct{pid}{tag}b")];
        let addr = ["127.77.0.1".to_string(), "127.77.0.2".to_string()];
        let (nss, addrs) = (format!("{},{}", ns[0], ns[1]), format!("{},{}", addr[0], addr[1]));
        let mut all = vec!["netsim", "--packet-link", "--ns", &nss, "--addr", &addrs];
        all.extend_from_slice(args);
        let netsim = Proc::spawn("netsim", &all);
        let link = Link { netsim, ns, addr };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !link.netsim.stdout().contains("READY") {
            assert!(std::time::Instant::now() < deadline, "no READY within 10 s:\n{}", link.netsim.stderr());
            thread::sleep(Duration::from_millis(20));
        }
        link
    }

    /// Runs `f` on a new thread inside namespace `side` (0 or 1): sockets it makes live there
    /// (and can be used from any thread afterwards).
    pub fn run_in<T: Send + 'static>(&self, side: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.ns[side].clone();
        thread::spawn(move || {
            enter(&ns);
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    }

    /// Starts `framecast ARGS...` inside namespace `side`.
    pub fn spawn(&self, side: usize, name: &str, args: &[&str]) -> Proc {
        let file = File::open(Path::new("/run/netns").join(&self.ns[side])).expect("open the namespace");
        Proc::spawn_with(name, args, move |cmd: &mut Command| {
            // SAFETY: setns is async-signal-safe; the closure owns `file`, so the fd is open.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Stops the netsim with `sig` and waits for it (at most 10 s); its stderr.
    pub fn stop(&mut self, sig: libc::c_int) -> String {
        self.netsim.signal(sig).unwrap();
        let st = self.netsim.wait(Duration::from_secs(10));
        assert!(st.success(), "netsim exited with {st} after the signal:\n{}", self.netsim.stderr());
        self.netsim.stderr()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.netsim.is_running() {
            let _ = self.netsim.signal(libc::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.netsim.is_running() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        for ns in &self.ns {
            if ns_exists(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) {
    let f = File::open(Path::new("/run/netns").join(ns)).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    // SAFETY: setns on a namespace fd this thread holds; it affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}
