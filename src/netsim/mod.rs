//! `framecast netsim`: a link simulator in userspace, so that settings can be tried against a
//! bad link (and tested) without kernel `netem`. Three modes, one link model:
//!
//! - [`tcp`] (the default): a TCP relay of byte streams with rate, router queue (backpressure),
//!   delay, jitter and stalls. It cannot lose a packet: TCP below it would resend it.
//! - [`udp`] (`--udp`): a UDP relay that applies the same link and the loss models to every
//!   datagram, per direction, with one upstream socket per client address.
//! - [`tun`] (`--packet-link`): two network namespaces joined by TUN devices through this
//!   process, which applies the link and the loss models to every IP packet, so that TCP and
//!   UDP programs in the namespaces see the same lossy link.
//!
//! [`model`] is the pure part all three drive: [`LinkModel`] (serialisation at `--rate`,
//! stalls, `--delay` + `--jitter`, never reordering), [`LossModel`] (`--loss`, `--loss-burst`,
//! `--outage`/`--outage-share`, `--loss-schedule`) and [`PacketLink`] (drop-tail router queue
//! of `--queue` bytes in front of them). This file holds the units the flags are written in,
//! the checked configuration and the dispatch to the modes, on the main thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub mod model;
pub mod tcp;
pub mod tun;
pub mod udp;

pub use model::{LinkCounts, LinkModel, LossModel, LossParams, Outage, PacketLink, Phase, Timing};
pub use tcp::{relay, LinkTotals, TcpConfig, PACKET, READ_CHUNK, SOCKET_RCVBUF};
pub use tun::PacketLinkConfig;
pub use udp::UdpConfig;

/// Wi-Fi-like stalls: every `every`, nothing departs for `length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub every: Duration,
    pub length: Duration,
}

/// What each direction of a relayed connection behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// Bottleneck rate in bits per second of payload (> 0).
    pub rate_bps: u64,
    /// One-way delay added after serialisation.
    pub delay: Duration,
    /// Upper bound of the uniform random delay added on top of `delay`.
    pub jitter: Duration,
    /// The router buffer: bytes waiting to be serialised (≥ 1).
    pub queue_bytes: usize,
    pub stall: Option<Stall>,
}

impl fmt::Display for LinkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, delay {}, jitter {}, queue {} bytes",
            format_rate(self.rate_bps as f64),
            fmt_dur(self.delay),
            fmt_dur(self.jitter),
            self.queue_bytes
        )?;
        match self.stall {
            Some(s) => write!(f, ", stall {} every {}", fmt_dur(s.length), fmt_dur(s.every)),
            None => write!(f, ", no stalls"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Units on the command line.

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let v: f64 = s[..end].parse().ok()?;
    v.is_finite().then_some((v, s[end..].trim()))
}

/// Parses a rate in bits per second: bits (`bit`, `kbit`, `mbit`, `gbit`, optionally `/s`,
/// any case; SI, so `1kbit` = 1000 bit/s) or bytes (`B/s`, `KB/s`, `MB/s`, `GB/s`, `KiB/s`,
/// `MiB/s`, `GiB/s`). `kbps`/`mbps` are refused: tc reads them as bytes, most people as bits.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    const HELP: &str = "expected a rate with a unit, e.g. 5mbit, 500kbit, 2MB/s \
                        (bits: bit, kbit, mbit, gbit; bytes: B/s, KB/s, MB/s, KiB/s, MiB/s)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let lower = unit.to_ascii_lowercase();
    let bits = lower.strip_suffix("/s").unwrap_or(&lower);
    let mult: f64 = match bits {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(format!(
                "'{unit}' is ambiguous (bits or bytes?): write {v}{}bit for bits or {v}{}B/s for bytes per second",
                &bits[..bits.len() - 3],
                bits[..bits.len() - 3].to_ascii_uppercase()
            ))
        }
        _ => match unit {
            "B/s" => 8.0,
            "KB/s" | "kB/s" => 8e3,
            "MB/s" => 8e6,
            "GB/s" => 8e9,
            "KiB/s" => 8.0 * 1024.0,
            "MiB/s" => 8.0 * 1024.0 * 1024.0,
            "GiB/s" => 8.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(HELP.into()),
        },
    };
    let bps = (v * mult).round();
    if !(1e3..=1e11).contains(&bps) {
        return Err(format!("{s} is out of range: the rate must be 1kbit..100gbit"));
    }
    Ok(bps as u64)
}

/// Parses a duration with a unit: `us` (or `µs`), `ms`, `s`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HELP: &str = "expected a duration with a unit, e.g. 20ms, 1.5s, 500us (or 0)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let secs = match unit {
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "" if v == 0.0 => 0.0,
        _ => return Err(HELP.into()),
    };
    if secs > 3600.0 {
        return Err(format!("{s} is over the limit of one hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size in bytes: a number, or one with `B`, `KB`, `MB` (SI: 1KB = 1000 bytes),
/// `KiB`, `MiB` (1KiB = 1024 bytes); case does not matter, sizes are always bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    const HELP: &str = "expected a size in bytes, e.g. 64KB, 1MiB, 1500 (B, KB, MB = 1000s; KiB, MiB = 1024s)";
    let (v, unit) = split_number(s).ok_or_else(|| HELP.to_string())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        u if u.ends_with("bit") => return Err(format!("'{unit}': a size is in bytes, e.g. 64KB")),
        _ => return Err(HELP.into()),
    };
    let bytes = (v * mult).round();
    if !(1.0..=1024.0 * 1024.0 * 1024.0).contains(&bytes) {
        return Err(format!("{s} is out of range: 1 byte..1GiB"));
    }
    Ok(bytes as usize)
}

/// Parses a percentage: `2%`, `0.5%`, `20 %`; 0 % up to (not including) 100 %.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    const HELP: &str = "expected a percentage, e.g. 2%, 0.5%, 20%";
    let t = s.trim();
    let num = t.strip_suffix('%').ok_or_else(|| format!("'{t}': {HELP} (with the % sign)"))?;
    let (v, rest) = split_number(num).ok_or_else(|| HELP.to_string())?;
    if !rest.is_empty() {
        return Err(HELP.into());
    }
    if v >= 100.0 {
        return Err(format!("{t} is out of range: 0% up to 99.99%"));
    }
    Ok(v / 100.0)
}

/// Parses `--loss-schedule`: phases `DURATION:SHARE` separated by commas, the last of which
/// may be a bare `SHARE` (from then on), e.g. `10s:0%,10s:20%,0%`. Without one, the last phase
/// holds after its time is up.
pub fn parse_schedule(s: &str) -> Result<Vec<Phase>, String> {
    const MAX_PHASES: usize = 1000;
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() > MAX_PHASES {
        return Err(format!("{} phases: at most {MAX_PHASES}", parts.len()));
    }
    let mut phases = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (len, loss) = match part.split_once(':') {
            Some((len, loss)) => {
                let len = parse_duration(len).map_err(|e| format!("'{part}': {e}"))?;
                if len.is_zero() {
                    return Err(format!("'{part}': a phase must last more than 0"));
                }
                (len, loss)
            }
            None if last && i > 0 => (Duration::MAX, *part),
            None => {
                return Err(format!(
                    "'{part}': expected DURATION:SHARE, e.g. 10s:20% (phases separated by commas; \
                     only the last may be a bare SHARE)"
                ))
            }
        };
        let loss = parse_percent(loss).map_err(|e| format!("'{part}': {e}"))?;
        phases.push(Phase { len, loss });
    }
    Ok(phases)
}

/// A rate for people: `5 Mbit/s`, `512 kbit/s`, `1.25 Gbit/s`.
pub fn format_rate(bps: f64) -> String {
    let (v, unit) = if bps >= 1e9 {
        (bps / 1e9, "Gbit/s")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbit/s")
    } else if bps >= 1e3 {
        (bps / 1e3, "kbit/s")
    } else {
        (bps, "bit/s")
    };
    let s = format!("{v:.3}");
    format!("{} {unit}", s.trim_end_matches('0').trim_end_matches('.'))
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.as_micros() % 1000 != 0 {
        format!("{}us", d.as_micros())
    } else if d.as_millis() % 1000 != 0 || d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The checked `framecast netsim` configuration: one of the three modes.
#[derive(Debug)]
pub enum NetsimConfig {
    Tcp(TcpConfig),
    Udp(UdpConfig),
    PacketLink(PacketLinkConfig),
}

/// Runs the relay or link of `cfg`: the TCP relay until killed, the UDP relay and the packet
/// link until SIGINT or SIGTERM.
pub fn run(cfg: NetsimConfig) -> anyhow::Result<()> {
    match cfg {
        NetsimConfig::Tcp(c) => tcp::run(c),
        NetsimConfig::Udp(c) => udp::run(c, stop_on_signals()?),
        NetsimConfig::PacketLink(c) => tun::run(c, stop_on_signals()?),
    }
}

/// The most the UDP relay and the packet link sleep at once, so that they see a stop request.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often the UDP relay and the packet link log their counts.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Waits until one of `fds` is readable or `timeout` passes (at most [`MAX_WAIT`]), with
/// microsecond precision (ppoll), so that packets leave at their delivery times.
fn wait_readable(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<()> {
    let t = timeout.min(MAX_WAIT);
    let ts = libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long };
    for fd in fds.iter_mut() {
        fd.events = libc::POLLIN;
        fd.revents = 0;
    }
    // SAFETY: `fds` is a valid slice of pollfd for the duration of the call.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Logs what one direction of a packet link did (`event` says when: periodic or at exit).
fn log_counts(event: &str, dir: &str, c: &LinkCounts) {
    tracing::info!(
        dir,
        packets_in = c.packets_in,
        lost = c.lost,
        queue_drops = c.queue_drops,
        delivered = c.delivered,
        loss_pct = format_args!("{:.2}", c.loss_fraction() * 100.0),
        bytes_delivered = c.bytes_delivered,
        "{event}"
    );
}

/// A seed that differs from run to run, for the links' jitter and loss (without `--seed`).
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the returned flag instead of killing the process, so that the
/// UDP relay logs its counts and the packet link deletes its namespaces before exiting.
fn stop_on_signals() -> anyhow::Result<&'static AtomicBool> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let prev = unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            anyhow::bail!("cannot install a handler for signal {sig}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rates() {
        for (s, bps) in [
            ("5mbit", 5_000_000),
            ("5Mbit", 5_000_000),
            ("5mbit/s", 5_000_000),
            ("500kbit", 500_000),
            ("1.5mbit", 1_500_000),
            ("1gbit", 1_000_000_000),
            ("64000bit", 64_000),
            ("2MB/s", 16_000_000),
            ("2kB/s", 16_000),
            ("1MiB/s", 8 * 1024 * 1024),
            (" 10 mbit ", 10_000_000),
        ] {
            assert_eq!(parse_rate(s), Ok(bps), "{s}");
        }
        for bad in ["", "5", "mbit", "5 foo", "-5mbit", "0mbit", "5mb/s", "1e3kbit", "200gbit", "5MB"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted as {:?}", parse_rate(bad));
        }
        let e = parse_rate("5mbps").unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("5mbit") && e.contains("5MB/s"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("20ms"), Ok(20 * MS));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(1500 * MS));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "20", "ms", "-5ms", "5 min", "2h", "7200s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("1500B"), Ok(1500));
        for bad in ["", "0", "KB", "64 parsecs", "2GiB", "-1KB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("64kbit").unwrap_err().contains("bytes"));
        assert_eq!(format_rate(5e6), "5 Mbit/s");
        assert_eq!(format_rate(4_987_654.0), "4.988 Mbit/s");
        assert_eq!(format_rate(500e3), "500 kbit/s");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let base = ["framecast", "netsim", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1"];
        for (extra, flag) in [
            (&["--rate", "5"][..], "--rate"),
            (&["--rate", "5mbps"][..], "--rate"),
            (&["--rate", "5mbit", "--delay", "20"][..], "--delay"),
            (&["--rate", "5mbit", "--jitter", "x"][..], "--jitter"),
            (&["--rate", "5mbit", "--queue", "64kbit"][..], "--queue"),
            (&["--rate", "5mbit", "--stall", "300ms"][..], "--stall-every"),
            (&["--rate", "5mbit", "--stall-every", "1s"][..], "--stall"),
            (&[][..], "--rate"),
        ] {
            let e = Cli::try_parse_from(base.iter().chain(extra)).unwrap_err().to_string();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        for (extra, needle) in [
            (
                &["--stall-every", "1s", "--stall", "1s"][..],
                "--stall 1s must be more than 0 and shorter than --stall-every 1s",
            ),
            (&["--stall-every", "1s", "--stall", "0"][..], "--stall"),
        ] {
            let args = base.iter().chain(&["--rate", "5mbit"]).chain(extra);
            let Cmd::Netsim(a) = Cli::try_parse_from(args).unwrap().cmd else { unreachable!() };
            let e = format!("{:#}", a.into_config().unwrap_err());
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let args =
            base.iter().chain(&["--rate", "5mbit", "--delay", "20ms", "--stall-every", "10s", "--stall", "500ms"]);
        let Cmd::Netsim(a) = Cli::try_parse_from(args).unwrap().cmd else { unreachable!() };
        let NetsimConfig::Tcp(cfg) = a.into_config().unwrap() else { panic!("not the TCP relay") };
        assert_eq!(
            cfg.link,
            LinkParams {
                rate_bps: 5_000_000,
                delay: 20 * MS,
                jitter: Duration::ZERO,
                queue_bytes: 64_000,
                stall: Some(Stall { every: Duration::from_secs(10), length: 500 * MS }),
            }
        );
        assert_eq!(cfg.link.to_string(), "5 Mbit/s, delay 20ms, jitter 0, queue 64000 bytes, stall 500ms every 10s");
    }

    /// Parses `framecast netsim ARGS` into a config, or the error as text.
    fn config(args: &[&str]) -> Result<NetsimConfig, String> {
        let cli = Cli::try_parse_from(["framecast", "netsim"].iter().chain(args)).map_err(|e| e.to_string())?;
        let Cmd::Netsim(a) = cli.cmd else { unreachable!() };
        a.into_config().map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn percentages_and_schedules() {
        assert_eq!(parse_percent("2%"), Ok(0.02));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent(" 20 %"), Ok(0.2));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        for bad in ["", "2", "0.02", "%", "-1%", "100%", "2 %%", "x%"] {
            assert!(parse_percent(bad).is_err(), "{bad:?}");
        }
        assert!(parse_percent("0.02").unwrap_err().contains("% sign"));
        let s = parse_schedule("10s:0%,10s:20%,500ms:1%").unwrap();
        let open_ended = parse_schedule("10s:0%,10s:20%,0%").unwrap();
        assert_eq!(open_ended[2], Phase { len: Duration::MAX, loss: 0.0 });
        assert_eq!(
            s.iter().map(|p| (p.len, p.loss)).collect::<Vec<_>>(),
            [(10 * 1000 * MS, 0.0), (10 * 1000 * MS, 0.2), (500 * MS, 0.01)]
        );
        for bad in ["", "10s", "2%", "10s:20", "0s:2%", "10:2%", "10s:2%,", "10s:2%;5s:1%", "2%,10s:2%"] {
            assert!(parse_schedule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loss_flags_are_checked_together() {
        let udp = ["--udp", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1", "--rate", "5mbit"];
        let with = |extra: &[&str]| config(&[&udp[..], extra].concat());
        let Ok(NetsimConfig::Udp(c)) =
            with(&["--loss", "2%", "--loss-burst", "4", "--outage", "50ms", "--outage-share", "2%"])
        else {
            panic!("not the UDP relay")
        };
        assert_eq!(
            c.loss,
            LossParams {
                loss: 0.02,
                burst: 4.0,
                outage: Some(Outage { mean: 50 * MS, share: 0.02 }),
                schedule: vec![]
            }
        );
        assert_eq!(c.loss.to_string(), "loss 2%, in runs of mean 4 packets, outages of mean 50ms 2% of the time");
        for (extra, needle) in [
            (&["--loss-burst", "4"][..], "--loss-burst needs --loss"),
            (&["--loss", "2%", "--loss-burst", "0.5"][..], "--loss-burst 0.5"),
            (&["--outage", "50ms"][..], "--outage-share"),
            (&["--outage-share", "2%"][..], "--outage"),
            (&["--outage", "50ms", "--outage-share", "60%"][..], "share in (0%, 50%]"),
            (&["--loss", "2%", "--loss-schedule", "1s:2%"][..], "--loss-schedule"),
            (&["--loss", "2"][..], "% sign"),
        ] {
            let e = with(extra).err().unwrap_or_else(|| panic!("{extra:?} accepted"));
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        // The TCP relay cannot lose a packet, and says so.
        let tcp = ["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1", "--rate", "5mbit", "--loss", "2%"];
        let e = config(&tcp).err().unwrap();
        assert!(e.contains("need --udp or --packet-link"), "{e}");
    }

    #[test]
    fn packet_link_flags() {
        let Ok(NetsimConfig::PacketLink(c)) = config(&["--packet-link", "--rate", "5mbit"]) else { panic!() };
        assert_eq!(c.ns, ["fc-a", "fc-b"]);
        assert_eq!(c.addr, tun::DEFAULT_ADDR);
        let Ok(NetsimConfig::PacketLink(c)) =
            config(&["--packet-link", "--ns", "x1,x2", "--addr", "127.9.0.1,127.9.0.2", "--rate", "5mbit"])
        else {
            panic!()
        };
        assert_eq!((c.ns[1].as_str(), c.addr[1].to_string()), ("x2", "127.9.0.2".to_string()));
        for (extra, needle) in [
            (&["--ns", "a"][..], "two values"),
            (&["--ns", "a,a"][..], "must differ"),
            (&["--ns", "a/b,c"][..], "not a usable namespace name"),
            (&["--addr", "10.0.0.1,10.0.0.2"][..], "127.0.0.0/8"),
            (&["--addr", "127.0.0.1,127.9.0.2"][..], "127.0.0.0/8"),
            (&["--addr", "127.9.0.1,nope"][..], "not an IPv4 address"),
            (&["--listen", "127.0.0.1:0"][..], "--listen"),
        ] {
            let e = config(&[&["--packet-link", "--rate", "5mbit"][..], extra].concat()).err();
            let e = e.unwrap_or_else(|| panic!("{extra:?} accepted"));
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let e =
            config(&["--ns", "a,b", "--listen", "127.0.0.1:0", "--forward", "x:1", "--rate", "5mbit"]).err().unwrap();
        assert!(e.contains("--packet-link"), "{e}");
    }
}
