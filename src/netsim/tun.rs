//! The packet link of `framecast netsim --packet-link`: two network namespaces joined by TUN
//! devices through this process, which applies the link and the loss models to every IP
//! packet in each direction.
//!
//! ```text
//!  namespace A (e.g. fc-a)                                   namespace B (e.g. fc-b)
//!  127.77.0.1 ── TUN fc{pid}a ──fd──▶ [a-to-b] PacketLink ──fd──▶ TUN fc{pid}b ── 127.77.0.2
//!                             ◀──fd── [b-to-a] PacketLink ◀──fd──
//! ```
//!
//! Setup, on the main thread: both TUN devices are created here (`/dev/net/tun`, `TUNSETIFF`)
//! and moved into their new namespaces with `ip link set DEV netns NS`; the file descriptors
//! stay with this process. In each namespace `lo` comes up, `route_localnet` is set (so that
//! loopback-range addresses may be routed over a device), the 127.0.0.0/8 local route is
//! narrowed to 127.0.0.1, and the device gets its address with the other end as its peer.
//! Nothing leaves the machine. Then `READY` goes to stdout, and one thread per direction
//! (`a-to-b`, `b-to-a`) reads packets from one device and writes them to the other at their
//! delivery times, until SIGINT or SIGTERM. The namespaces are deleted on every way out (also
//! on a setup error); the devices go when the process closes their descriptors.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{debug, info, warn};

use super::{format_rate, log_counts, wait_readable, LinkCounts, LinkParams, LossParams, PacketLink, REPORT_EVERY};

/// The namespaces and addresses used when `--ns` and `--addr` are not given.
pub const DEFAULT_NS: [&str; 2] = ["fc-a", "fc-b"];
pub const DEFAULT_ADDR: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 77, 0, 1), Ipv4Addr::new(127, 77, 0, 2)];
/// The largest IP packet read from a device.
const MAX_PACKET: usize = 65_535;

/// The checked configuration of the packet link.
#[derive(Debug, Clone)]
pub struct PacketLinkConfig {
    /// The namespaces to create, A and B.
    pub ns: [String; 2],
    /// A's and B's addresses, each on its TUN device.
    pub addr: [Ipv4Addr; 2],
    pub link: LinkParams,
    pub loss: LossParams,
    /// Seed of both directions' jitter and loss (`--seed`; else a new one each run).
    pub seed: u64,
}

impl PacketLinkConfig {
    /// Checks `--ns NS_A,NS_B` and `--addr ADDR_A,ADDR_B` (defaults when None).
    pub fn new(
        ns: Option<&str>,
        addr: Option<&str>,
        link: LinkParams,
        loss: LossParams,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let ns = match ns {
            None => DEFAULT_NS.map(String::from),
            Some(s) => pair(s, "--ns")?,
        };
        for n in &ns {
            let ok = n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if n.is_empty() || n.len() > 32 || !ok || n.starts_with('.') {
                bail!("--ns: '{n}' is not a usable namespace name (1-32 of A-Z a-z 0-9 - _ .)");
            }
        }
        if ns[0] == ns[1] {
            bail!("--ns: the two namespaces must differ, got {} twice", ns[0]);
        }
        let addr = match addr {
            None => DEFAULT_ADDR,
            Some(s) => {
                let [a, b] = pair(s, "--addr")?;
                [parse_addr(&a)?, parse_addr(&b)?]
            }
        };
        if addr[0] == addr[1] {
            bail!("--addr: the two addresses must differ, got {} twice", addr[0]);
        }
        Ok(PacketLinkConfig { ns, addr, link, loss, seed })
    }
}

/// `A,B` as two strings.
fn pair(s: &str, flag: &str) -> anyhow::Result<[String; 2]> {
    match s.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [a, b] => Ok([a.to_string(), b.to_string()]),
        _ => bail!("{flag} {s}: expected two values separated by a comma, e.g. {flag} A,B"),
    }
}

/// A loopback-range address other than 127.0.0.1 (which stays `lo`'s).
fn parse_addr(s: &str) -> anyhow::Result<Ipv4Addr> {
    let a: Ipv4Addr = s.parse().with_context(|| format!("--addr: '{s}' is not an IPv4 address"))?;
    if !a.is_loopback() || a == Ipv4Addr::LOCALHOST || a.octets()[3] == 255 {
        bail!(
            "--addr: {a} must be in 127.0.0.0/8 (and not 127.0.0.1 or a .255), so that no traffic leaves the machine"
        );
    }
    Ok(a)
}

/// Brings the link up, prints READY, runs until `stop` is set, and deletes the namespaces.
pub fn run(cfg: PacketLinkConfig, stop: &'static AtomicBool) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("--packet-link needs root: it creates network namespaces and TUN devices (run it with sudo)");
    }
    for ns in &cfg.ns {
        if Path::new("/run/netns").join(ns).exists() {
            bail!("--ns: namespace {ns} exists already; delete it with `ip netns del {ns}` or choose other names");
        }
    }
    let pid = std::process::id();
    let devs = [format!("fc{pid}a"), format!("fc{pid}b")];
    let tuns = [open_tun(&devs[0])?, open_tun(&devs[1])?];
    let mut namespaces = Namespaces(Vec::new());
    for (i, dev) in devs.iter().enumerate() {
        namespaces.add(&cfg.ns[i])?;
        configure(&cfg.ns[i], dev, cfg.addr[i], cfg.addr[1 - i])?;
    }
    info!(
        ns_a = %cfg.ns[0], addr_a = %cfg.addr[0], ns_b = %cfg.ns[1], addr_b = %cfg.addr[1],
        rate = %format_rate(cfg.link.rate_bps as f64),
        delay_ms = cfg.link.delay.as_secs_f64() * 1e3,
        jitter_ms = cfg.link.jitter.as_secs_f64() * 1e3,
        queue_bytes = cfg.link.queue_bytes,
        loss = %cfg.loss,
        seed = cfg.seed,
        "netsim packet link up"
    );
    let mut out = io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);
    let ended = pump_both(tuns, &cfg, stop)?;
    for (dir, (counts, outages)) in ["a-to-b", "b-to-a"].into_iter().zip(&ended.links) {
        log_counts("netsim packet link stopped", dir, counts);
        if cfg.loss.outage.is_some() {
            log_outages(dir, ended.epoch_unix, outages);
        }
    }
    drop(namespaces);
    Ok(())
}

/// The namespaces made so far; dropping this deletes them.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.0.push(ns.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            match ip(&["netns", "del", ns]) {
                Ok(()) => info!(ns, "namespace deleted"),
                Err(e) => warn!(ns, error = %format!("{e:#}"), "cannot delete the namespace"),
            }
        }
    }
}

/// Moves `dev` into `ns` and sets it up as `me` with `peer` at the other end.
fn configure(ns: &str, dev: &str, me: Ipv4Addr, peer: Ipv4Addr) -> anyhow::Result<()> {
    ip(&["link", "set", dev, "netns", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    let keys = [
        "net.ipv4.conf.all.route_localnet=1".to_string(),
        format!("net.ipv4.conf.{dev}.route_localnet=1"),
        format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
    ];
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-e", "-w"];
    args.extend(keys.iter().map(String::as_str));
    ip(&args)?;
    ip(&["-n", ns, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"])?;
    ip(&["-n", ns, "addr", "add", &me.to_string(), "peer", &peer.to_string(), "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

/// Runs `ip ARGS...`; the error gives the command and what it printed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}: {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    debug!(cmd = %args.join(" "), "ip");
    Ok(())
}

/// A new TUN device `name` (IP packets, no packet-information header), non-blocking.
fn open_tun(name: &str) -> anyhow::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").context("cannot open /dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req =
        IfReq { name: [0; libc::IFNAMSIZ], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    req.name[..name.len().min(libc::IFNAMSIZ - 1)]
        .copy_from_slice(&name.as_bytes()[..name.len().min(libc::IFNAMSIZ - 1)]);
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out (40 bytes).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot create TUN device {name}"));
    }
    // SAFETY: F_SETFL on a descriptor this function owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error()).context("cannot make the TUN device non-blocking");
    }
    Ok(file)
}

/// What the two directions did: each one's counts and outages ([start, end) on the link's
/// clock), and when that clock started, in seconds since the Unix epoch.
struct Ended {
    links: [(LinkCounts, Vec<(Duration, Duration)>); 2],
    epoch_unix: f64,
}

/// Logs the outages of one direction on one line, as `START_MS+LENGTH_MS` on the link's
/// clock (`epoch_unix`: its start in seconds since the Unix epoch), for benches that set a
/// run's freezes beside the outages the link drew.
fn log_outages(dir: &str, epoch_unix: f64, outages: &[(Duration, Duration)]) {
    let list: Vec<String> = outages
        .iter()
        .map(|(s, e)| format!("{:.1}+{:.1}", s.as_secs_f64() * 1e3, (*e - *s).as_secs_f64() * 1e3))
        .collect();
    let longest = outages.iter().map(|(s, e)| *e - *s).max().unwrap_or_default();
    info!(
        dir,
        epoch_unix = format_args!("{epoch_unix:.6}"),
        count = outages.len(),
        longest_ms = format_args!("{:.1}", longest.as_secs_f64() * 1e3),
        outages = %list.join(","),
        "netsim packet link outages"
    );
}

/// Runs both directions on their own threads until `stop` is set or one fails.
fn pump_both(tuns: [File; 2], cfg: &PacketLinkConfig, stop: &'static AtomicBool) -> anyhow::Result<Ended> {
    let [a, b] = tuns.map(Arc::new);
    let failed = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let epoch_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let seed = cfg.seed;
    let mut handles = Vec::new();
    for (name, src, dst, seed) in [("a-to-b", &a, &b, seed), ("b-to-a", &b, &a, !seed)] {
        let mut pump = Pump {
            name,
            src: src.clone(),
            dst: dst.clone(),
            link: PacketLink::new(&cfg.link, &cfg.loss, seed),
            epoch,
            write_errors: 0,
        };
        let flag = failed.clone();
        let h = thread::Builder::new().name(name.into()).spawn(move || {
            let r = pump.run(&|| stop.load(Ordering::SeqCst) || flag.load(Ordering::SeqCst));
            if r.is_err() {
                flag.store(true, Ordering::SeqCst);
            }
            r.map(|()| (pump.link.counts, pump.link.outages(pump.epoch.elapsed())))
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                handles.into_iter().for_each(|h| drop(h.join()));
                return Err(e).context("cannot start a link thread");
            }
        }
    }
    let mut links = [(LinkCounts::default(), Vec::new()), (LinkCounts::default(), Vec::new())];
    for (i, h) in handles.into_iter().enumerate() {
        links[i] = h.join().map_err(|_| anyhow::anyhow!("a link thread panicked; look for the panic message"))??;
    }
    Ok(Ended { links, epoch_unix })
}

/// One direction: packets read from `src` go through `link` and are written to `dst`.
struct Pump {
    name: &'static str,
    src: Arc<File>,
    dst: Arc<File>,
    link: PacketLink<()>,
    epoch: Instant,
    write_errors: u64,
}

impl Pump {
    fn run(&mut self, stopped: &dyn Fn() -> bool) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut last_report = Instant::now();
        while !stopped() {
            let now = self.epoch.elapsed();
            let timeout = self.link.next_wake().map_or(REPORT_EVERY, |w| w.saturating_sub(now));
            let mut fds = [libc::pollfd { fd: self.src.as_raw_fd(), events: 0, revents: 0 }];
            wait_readable(&mut fds, timeout)?;
            if fds[0].revents != 0 {
                self.read_all(&mut buf)?;
            }
            self.write_due();
            if last_report.elapsed() >= REPORT_EVERY {
                log_counts("netsim packet link counts", self.name, &self.link.counts);
                last_report = Instant::now();
            }
        }
        Ok(())
    }

    /// Reads every packet waiting on the source device into the link.
    fn read_all(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            match (&*self.src).read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.link.push(self.epoch.elapsed(), (), buf[..n].to_vec());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes every packet due by now to the destination device.
    fn write_due(&mut self) {
        let now = self.epoch.elapsed();
        while let Some(((), data)) = self.link.pop_due(now) {
            if let Err(e) = (&*self.dst).write(&data) {
                self.write_errors += 1;
                if self.write_errors == 1 {
                    warn!(dir = self.name, error = %e, len = data.len(), "cannot write a packet to the TUN device");
                }
            }
        }
    }
}
