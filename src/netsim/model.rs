//! The pure part of `framecast netsim`: the link model (serialisation at a rate, stalls,
//! delay and jitter), the loss models (random, in runs of packets, outages in time, a
//! schedule), and [`PacketLink`], one direction of a packet link with its router queue.
//!
//! No I/O and no clock: callers pass times (durations since the link's start), so the tests
//! drive it with a fake clock and fixed seeds. The TCP relay's writer threads, the UDP relay's
//! thread and the TUN link's threads (`tcp.rs`, `udp.rs`, `tun.rs`) drive it with the real one.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::{fmt_dur, LinkParams, Stall};

/// When one packet was serialised and when it is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Serialisation starts (the packet leaves the queue).
    pub start: Duration,
    /// Its last bit has left the bottleneck.
    pub departure: Duration,
    /// It reaches the other end: departure + delay + jitter, never before the previous one.
    pub delivery: Duration,
}

/// One direction of the link: a serialiser at a fixed rate with stalls, then a delay line
/// with jitter that never reorders.
#[derive(Clone, Debug)]
pub struct LinkModel {
    rate_bps: u64,
    delay: Duration,
    jitter: Duration,
    stall: Option<Stall>,
    /// When the serialiser is free again (the previous departure).
    free_at: Duration,
    last_delivery: Duration,
    rng: SplitMix64,
}

impl LinkModel {
    /// `seed` drives the jitter; the same seed gives the same delays.
    pub fn new(p: &LinkParams, seed: u64) -> Self {
        assert!(p.rate_bps > 0, "rate must be positive");
        if let Some(s) = p.stall {
            assert!(s.length < s.every, "a stall must be shorter than its period");
        }
        LinkModel {
            rate_bps: p.rate_bps,
            delay: p.delay,
            jitter: p.jitter,
            stall: p.stall.filter(|s| !s.length.is_zero()),
            free_at: Duration::ZERO,
            last_delivery: Duration::ZERO,
            rng: SplitMix64(seed),
        }
    }

    /// How long `len` bytes occupy the bottleneck: len·8/rate.
    pub fn serialisation(&self, len: usize) -> Duration {
        let ns = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(self.rate_bps));
        Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }

    /// When a packet that reached the queue at `arrived` starts serialisation, if it is the
    /// next one: once the serialiser is free, and not during a stall.
    pub fn start_time(&self, arrived: Duration) -> Duration {
        self.after_stall(arrived.max(self.free_at))
    }

    /// Serialises the next packet, `len` bytes that reached the queue at `arrived`.
    pub fn send(&mut self, arrived: Duration, len: usize) -> Timing {
        let start = self.start_time(arrived);
        let departure = self.finish(start, self.serialisation(len));
        self.free_at = departure;
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(self.jitter.as_nanos() as u64 + 1))
        };
        let delivery = (departure + self.delay + jitter).max(self.last_delivery);
        self.last_delivery = delivery;
        Timing { start, departure, delivery }
    }

    /// `t`, or the end of the stall that `t` falls in.
    fn after_stall(&self, t: Duration) -> Duration {
        let Some(s) = self.stall else { return t };
        let k = t.as_nanos() / s.every.as_nanos();
        if k == 0 {
            return t;
        }
        let begins = mul(s.every, k);
        if t < begins + s.length {
            begins + s.length
        } else {
            t
        }
    }

    /// When `work` of serialisation that starts at `start` is done, pausing for stalls.
    fn finish(&self, start: Duration, mut work: Duration) -> Duration {
        let mut t = start;
        loop {
            t = self.after_stall(t);
            let Some(s) = self.stall else { return t + work };
            let next_stall = mul(s.every, t.as_nanos() / s.every.as_nanos() + 1);
            if t + work <= next_stall {
                return t + work;
            }
            work -= next_stall - t;
            t = next_stall;
        }
    }
}

fn mul(d: Duration, k: u128) -> Duration {
    let ns = d.as_nanos() * k;
    Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
}

/// A small, fast, seedable generator (Steele, Lea, Flood 2014); good enough for jitter and loss.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (n > 0), by Lemire's multiply-shift (bias below 2^-32 here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------
// Loss: which packets the link loses. Pure and seeded, like the delays.

/// Outages in time: the link loses everything for exponentially distributed outages of mean
/// `mean`, `share` of the time (the gaps between them are exponential too).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    pub mean: Duration,
    /// Fraction of the time in an outage, in (0, 1).
    pub share: f64,
}

/// One phase of `--loss-schedule`: random loss `loss` for `len` (the last phase holds on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    pub len: Duration,
    pub loss: f64,
}

/// What a packet link loses, per direction. The default loses nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossParams {
    /// Probability that a packet is lost (`--loss`), in [0, 1).
    pub loss: f64,
    /// Mean length of a run of lost packets (`--loss-burst`); 1 or less is independent loss.
    pub burst: f64,
    pub outage: Option<Outage>,
    /// `--loss-schedule`: replaces `loss` by phases in time, from the link's start.
    pub schedule: Vec<Phase>,
}

impl LossParams {
    /// True when the link never loses a packet.
    pub fn is_none(&self) -> bool {
        self.loss == 0.0 && self.outage.is_none() && self.schedule.iter().all(|p| p.loss == 0.0)
    }

    /// The packet loss probability at `t` (the schedule's phase, or `--loss`).
    pub fn loss_at(&self, t: Duration) -> f64 {
        let mut end = Duration::ZERO;
        for p in &self.schedule {
            end = end.saturating_add(p.len);
            if t < end {
                return p.loss;
            }
        }
        self.schedule.last().map_or(self.loss, |p| p.loss)
    }
}

impl fmt::Display for LossParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return write!(f, "no loss");
        }
        let mut parts = Vec::new();
        if !self.schedule.is_empty() {
            let phase = |p: &Phase| match p.len {
                Duration::MAX => format!("{}%", p.loss * 100.0),
                len => format!("{}:{}%", fmt_dur(len), p.loss * 100.0),
            };
            let phases: Vec<String> = self.schedule.iter().map(phase).collect();
            parts.push(format!("loss schedule {}", phases.join(",")));
        } else if self.loss > 0.0 {
            parts.push(format!("loss {}%", self.loss * 100.0));
        }
        if self.burst > 1.0 {
            parts.push(format!("in runs of mean {} packets", self.burst));
        }
        if let Some(o) = self.outage {
            parts.push(format!("outages of mean {} {}% of the time", fmt_dur(o.mean), o.share * 100.0));
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// The loss process of one direction: a two-state (Gilbert) chain per packet, in which the
/// bad state loses every packet and lasts `burst` packets on average, with the good state's
/// exit probability chosen so that the long-run loss is the asked one; plus an outage timeline.
#[derive(Clone, Debug)]
pub struct LossModel {
    params: LossParams,
    bad: bool,
    /// The current or next outage: [start, end).
    outage: (Duration, Duration),
    /// The outages the timeline has moved past (at most [`LossModel::KEEP_OUTAGES`]).
    past: Vec<(Duration, Duration)>,
    /// Per-packet draws.
    rng: SplitMix64,
    /// The outage timeline's own draws, so that it depends on the seed alone, not on the
    /// packets sent.
    outage_rng: SplitMix64,
}

impl LossModel {
    pub fn new(params: &LossParams, seed: u64) -> Self {
        let mut m = LossModel {
            params: params.clone(),
            bad: false,
            outage: (Duration::MAX, Duration::MAX),
            past: Vec::new(),
            rng: SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B),
            outage_rng: SplitMix64(seed ^ 0x0A7A_6E5E_ED00_71E5),
        };
        if let Some(o) = params.outage {
            let first = m.exp(o.mean.mul_f64((1.0 - o.share) / o.share));
            m.outage = (first, first + m.exp(o.mean));
        }
        m
    }

    /// Whether the packet that enters the link at `t` is lost. Call in time order.
    pub fn lose(&mut self, t: Duration) -> bool {
        let in_outage = self.in_outage(t);
        let p = self.params.loss_at(t);
        let lost_by_chain = if self.params.burst > 1.0 && p > 0.0 {
            let stay_bad = 1.0 - 1.0 / self.params.burst;
            let enter_bad = (p / (self.params.burst * (1.0 - p))).min(1.0);
            self.bad = self.rng.unit() < if self.bad { stay_bad } else { enter_bad };
            self.bad
        } else {
            p > 0.0 && self.rng.unit() < p
        };
        in_outage || lost_by_chain
    }

    /// Whether `t` falls in an outage, moving the timeline forward to `t`.
    pub fn in_outage(&mut self, t: Duration) -> bool {
        let Some(o) = self.params.outage else { return false };
        while t >= self.outage.1 {
            if self.past.len() < Self::KEEP_OUTAGES {
                self.past.push(self.outage);
            }
            let start = self.outage.1 + self.exp(o.mean.mul_f64((1.0 - o.share) / o.share));
            self.outage = (start, start + self.exp(o.mean));
        }
        t >= self.outage.0
    }

    /// The most past outages [`LossModel::outages`] keeps (a day at one a second).
    pub const KEEP_OUTAGES: usize = 86_400;

    /// The outages, [start, end), that began before `t` (at or after the last packet), the
    /// timeline moved on to `t` first. The same seed and parameters give the same timeline
    /// whatever the traffic, so that two runs can face the same outages.
    pub fn outages(&mut self, t: Duration) -> Vec<(Duration, Duration)> {
        self.in_outage(t);
        let mut v = self.past.clone();
        if self.params.outage.is_some() && self.outage.0 < t {
            v.push(self.outage);
        }
        v
    }

    /// An exponentially distributed duration of mean `mean`.
    fn exp(&mut self, mean: Duration) -> Duration {
        let u = self.outage_rng.unit();
        mean.mul_f64(-(1.0 - u).ln())
    }
}

// ---------------------------------------------------------------------------------------
// A packet link: router queue (drop-tail) -> loss -> serialiser -> delay line. Pure: the
// caller gives the time; the UDP relay and the TUN link drive it with the real clock.

/// What one direction of a packet link did, by fate of each packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Packets offered to the link.
    pub packets_in: u64,
    /// Lost by the loss models.
    pub lost: u64,
    /// Dropped because the router queue was full (drop-tail).
    pub queue_drops: u64,
    /// Delivered to the other end.
    pub delivered: u64,
    pub bytes_in: u64,
    pub bytes_delivered: u64,
}

impl LinkCounts {
    /// Lost by the loss models, as a fraction of the packets offered.
    pub fn loss_fraction(&self) -> f64 {
        self.lost as f64 / self.packets_in.max(1) as f64
    }
}

/// One direction of a packet link. `T` is what the caller attaches to a packet (where it goes).
#[derive(Debug)]
pub struct PacketLink<T> {
    model: LinkModel,
    loss: LossModel,
    queue_cap: usize,
    queue: VecDeque<(Duration, T, Vec<u8>)>,
    queued_bytes: usize,
    /// Serialised and not lost, in delivery order: (delivery time, tag, data).
    in_flight: VecDeque<(Duration, T, Vec<u8>)>,
    pub counts: LinkCounts,
}

impl<T> PacketLink<T> {
    pub fn new(p: &LinkParams, loss: &LossParams, seed: u64) -> Self {
        PacketLink {
            model: LinkModel::new(p, seed),
            loss: LossModel::new(loss, seed.rotate_left(17)),
            queue_cap: p.queue_bytes,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: VecDeque::new(),
            counts: LinkCounts::default(),
        }
    }

    /// A packet reaches the router at `now`: queued if it fits, dropped (tail) otherwise.
    /// Returns whether it was queued.
    pub fn push(&mut self, now: Duration, tag: T, data: Vec<u8>) -> bool {
        self.advance(now);
        self.counts.packets_in += 1;
        self.counts.bytes_in += data.len() as u64;
        if self.queued_bytes + data.len() > self.queue_cap {
            self.counts.queue_drops += 1;
            return false;
        }
        self.queued_bytes += data.len();
        self.queue.push_back((now, tag, data));
        true
    }

    /// Serialises every queued packet whose turn has come by `now`; the loss models decide
    /// at the start of its serialisation whether it reaches the other end.
    pub fn advance(&mut self, now: Duration) {
        while let Some((arrived, ..)) = self.queue.front() {
            if self.model.start_time(*arrived) > now {
                break;
            }
            let (arrived, tag, data) = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= data.len();
            let t = self.model.send(arrived, data.len());
            if self.loss.lose(t.start) {
                self.counts.lost += 1;
            } else {
                self.in_flight.push_back((t.delivery, tag, data));
            }
        }
    }

    /// The next packet due for delivery by `now`, counted as delivered.
    pub fn pop_due(&mut self, now: Duration) -> Option<(T, Vec<u8>)> {
        self.advance(now);
        if self.in_flight.front().is_some_and(|(at, ..)| *at <= now) {
            let (_, tag, data) = self.in_flight.pop_front().expect("front exists");
            self.counts.delivered += 1;
            self.counts.bytes_delivered += data.len() as u64;
            return Some((tag, data));
        }
        None
    }

    /// The outages of the loss model that began before `t` ([`LossModel::outages`]).
    pub fn outages(&mut self, t: Duration) -> Vec<(Duration, Duration)> {
        self.loss.outages(t)
    }

    /// When the link next has work (a serialisation start or a delivery); None when idle.
    pub fn next_wake(&self) -> Option<Duration> {
        let start = self.queue.front().map(|(a, ..)| self.model.start_time(*a));
        let delivery = self.in_flight.front().map(|(at, ..)| *at);
        match (start, delivery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes waiting in the router queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsim::{parse_rate, PACKET};

    const MS: Duration = Duration::from_millis(1);

    fn params(rate: &str) -> LinkParams {
        LinkParams {
            rate_bps: parse_rate(rate).unwrap(),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            queue_bytes: 64_000,
            stall: None,
        }
    }

    /// Sends `n` packets of `len` bytes that all arrive at `arrived` (a backlogged queue).
    fn backlog(m: &mut LinkModel, n: usize, len: usize, arrived: Duration) -> Vec<Timing> {
        (0..n).map(|_| m.send(arrived, len)).collect()
    }

    /// Runs `n` packets, one every `every`, through `m`: which were lost.
    fn losses(m: &mut LossModel, n: usize, every: Duration) -> Vec<bool> {
        (0..n).map(|i| m.lose(every * i as u32)).collect()
    }

    /// Lengths of the runs of `true` in `v`.
    fn runs(v: &[bool]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut run = 0;
        for &x in v.iter().chain(&[false]) {
            if x {
                run += 1;
            } else if run > 0 {
                out.push(run);
                run = 0;
            }
        }
        out
    }

    fn mean(v: &[usize]) -> f64 {
        v.iter().sum::<usize>() as f64 / v.len().max(1) as f64
    }

    fn fraction(v: &[bool]) -> f64 {
        v.iter().filter(|x| **x).count() as f64 / v.len() as f64
    }
    #[test]
    fn backlogged_throughput_is_the_rate() {
        for rate in ["5mbit", "500kbit", "20mbit", "3MB/s"] {
            let mut m = LinkModel::new(&params(rate), 1);
            let t = backlog(&mut m, 10_000, PACKET, Duration::ZERO);
            let bits = (10_000 * PACKET * 8) as f64;
            let secs = t.last().unwrap().departure.as_secs_f64();
            let got = bits / secs;
            let want = parse_rate(rate).unwrap() as f64;
            assert!((got / want - 1.0).abs() < 1e-6, "{rate}: {got} bit/s");
            // One packet at a time, back to back.
            for w in t.windows(2) {
                assert_eq!(w[1].start, w[0].departure);
            }
        }
    }

    #[test]
    fn an_idle_link_starts_at_once_and_adds_only_serialisation_and_delay() {
        let mut m = LinkModel::new(&LinkParams { delay: 20 * MS, ..params("8mbit") }, 1);
        // 1000 bytes at 8 Mbit/s take 1 ms.
        let t = m.send(100 * MS, 1000);
        assert_eq!(t, Timing { start: 100 * MS, departure: 101 * MS, delivery: 121 * MS });
        // Later, on an idle link again.
        let t = m.send(500 * MS, 500);
        assert_eq!(t, Timing { start: 500 * MS, departure: 500 * MS + MS / 2, delivery: 520 * MS + MS / 2 });
        // A packet arriving while the previous is serialised waits for it.
        let a = m.send(1000 * MS, 1000);
        let b = m.send(1000 * MS + MS / 4, 1000);
        assert_eq!(b.start, a.departure);
        assert_eq!(b.delivery, a.delivery + MS);
    }

    #[test]
    fn delay_and_jitter_stay_in_bounds_and_never_reorder() {
        let (delay, jitter) = (20 * MS, 10 * MS);
        let mut m = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 42);
        // Sparse packets (jitter is free to vary) and a backlog (it is clamped by order).
        let mut t: Vec<Timing> = (0..500).map(|i| m.send(i * 50 * MS, 100)).collect();
        t.extend(backlog(&mut m, 2000, PACKET, 30 * Duration::from_secs(1)));
        let extra: Vec<Duration> = t.iter().map(|t| t.delivery - t.departure).collect();
        for (i, e) in extra.iter().enumerate() {
            assert!(*e >= delay && *e <= delay + jitter, "packet {i}: {e:?} after departure");
        }
        for w in t.windows(2) {
            assert!(w[1].delivery >= w[0].delivery, "reordered: {w:?}");
            assert!(w[1].departure > w[0].departure);
        }
        // The sparse packets see the whole jitter range, not a constant.
        let sparse = &extra[..500];
        let (lo, hi) = (sparse.iter().min().unwrap(), sparse.iter().max().unwrap());
        assert!(*lo < delay + jitter / 10 && *hi > delay + jitter * 9 / 10, "jitter range {lo:?}..{hi:?}");
        let mean = sparse.iter().sum::<Duration>() / 500;
        assert!(mean > delay + 4 * MS && mean < delay + 6 * MS, "mean {mean:?}");
        // Same seed, same delays; another seed, others.
        let again: Vec<Timing> = {
            let mut m = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 42);
            (0..500).map(|i| m.send(i * 50 * MS, 100)).collect()
        };
        assert_eq!(&t[..500], &again[..]);
        let mut other = LinkModel::new(&LinkParams { delay, jitter, ..params("5mbit") }, 43);
        assert!((0..500).any(|i| other.send(i * 50 * MS, 100) != t[i as usize]));
    }

    #[test]
    fn nothing_departs_during_a_stall() {
        let stall = Stall { every: Duration::from_secs(1), length: 300 * MS };
        let mut m = LinkModel::new(&LinkParams { stall: Some(stall), delay: 20 * MS, ..params("5mbit") }, 7);
        let t = backlog(&mut m, 4000, PACKET, Duration::ZERO);
        let in_stall = |d: Duration| d >= Duration::from_secs(1) && d.as_nanos() % 1_000_000_000 < 300_000_000;
        for (i, x) in t.iter().enumerate() {
            assert!(!in_stall(x.start), "packet {i} starts in a stall: {x:?}");
            // A departure exactly at a stall's start is the last bit before it.
            assert!(!in_stall(x.departure) || x.departure.subsec_nanos() == 0, "packet {i} departs in a stall: {x:?}");
        }
        // A gap of the stall's length at each stall, and none elsewhere.
        let gaps: Vec<(Duration, Duration)> = t
            .windows(2)
            .filter(|w| w[1].delivery - w[0].delivery > 10 * MS)
            .map(|w| (w[0].delivery, w[1].delivery - w[0].delivery))
            .collect();
        let last = t.last().unwrap().departure;
        assert_eq!(gaps.len() as u64, last.as_secs(), "gaps {gaps:?}, last departure {last:?}");
        for (at, gap) in &gaps {
            assert!(*gap >= 300 * MS && *gap < 300 * MS + 3 * MS, "gap {gap:?} at {at:?}");
        }
        // 70% of the time is usable: 4000 packets take 4000*1500*8/5e6 = 9.6 s of link time.
        let link_time = Duration::from_secs_f64(9.6);
        let stalled = 300 * MS * last.as_secs() as u32;
        assert!(last.abs_diff(link_time + stalled) < MS, "last departure {last:?}");
        // A packet arriving in a stall waits for its end; before the first period, none.
        let m = LinkModel::new(&LinkParams { stall: Some(stall), ..params("5mbit") }, 7);
        assert_eq!(m.start_time(500 * MS), 500 * MS);
        assert_eq!(m.start_time(2100 * MS), 2300 * MS);
        assert_eq!(m.start_time(2300 * MS), 2300 * MS);
    }

    #[test]
    fn a_packet_longer_than_the_gap_between_stalls_spans_them() {
        let stall = Stall { every: 100 * MS, length: 50 * MS };
        let mut m = LinkModel::new(&LinkParams { stall: Some(stall), ..params("8kbit") }, 1);
        // 1000 bytes at 8 kbit/s = 1 s of link time, 50 ms per 100 ms usable from 0.1 s on.
        let t = m.send(Duration::ZERO, 1000);
        // 0..100 ms usable, then 50 ms per period: 900 ms more needs 18 periods.
        assert_eq!(t.departure, 100 * MS + 18 * 100 * MS);
    }

    #[test]
    fn random_loss_is_the_asked_fraction_and_independent() {
        for (seed, p) in [(1, 0.02), (2, 0.05), (3, 0.10), (4, 0.20)] {
            let mut m = LossModel::new(&LossParams { loss: p, ..Default::default() }, seed);
            let lost = losses(&mut m, 400_000, MS);
            let got = fraction(&lost);
            assert!((got - p).abs() < p * 0.05, "asked {p}, lost {got}");
            // Independent loss: runs of mean 1/(1-p).
            let run = mean(&runs(&lost));
            assert!((run - 1.0 / (1.0 - p)).abs() < 0.05, "p {p}: mean run {run}");
        }
        let mut none = LossModel::new(&LossParams::default(), 1);
        assert!(!losses(&mut none, 10_000, MS).contains(&true));
    }

    #[test]
    fn bursty_loss_keeps_the_fraction_in_runs_of_the_asked_mean() {
        for (seed, p, burst) in [(5, 0.02, 4.0), (6, 0.05, 2.0), (7, 0.02, 10.0)] {
            let mut m = LossModel::new(&LossParams { loss: p, burst, ..Default::default() }, seed);
            let lost = losses(&mut m, 1_000_000, MS);
            let got = fraction(&lost);
            assert!((got - p).abs() < p * 0.1, "asked {p} in runs of {burst}, lost {got}");
            let run = mean(&runs(&lost));
            assert!((run - burst).abs() < burst * 0.1, "asked runs of {burst}, mean {run}");
        }
    }

    #[test]
    fn outages_take_the_asked_share_of_time_in_runs_of_the_asked_mean() {
        let outage = Outage { mean: 50 * MS, share: 0.02 };
        let mut m = LossModel::new(&LossParams { outage: Some(outage), ..Default::default() }, 9);
        // A packet every millisecond for 2000 s: about 800 outages.
        let lost = losses(&mut m, 2_000_000, MS);
        let share = fraction(&lost);
        assert!((share - 0.02).abs() < 0.003, "share {share}");
        let runs = runs(&lost);
        let run_ms = mean(&runs);
        assert!((run_ms - 50.0).abs() < 6.0, "mean outage {run_ms} ms over {} outages", runs.len());
        // Exponential: some are short, some long.
        assert!(runs.iter().any(|r| *r < 10) && runs.iter().any(|r| *r > 150), "{runs:?}");
    }

    /// The outage timeline depends on the seed and the parameters only, also with random
    /// loss beside it: a link with a packet a millisecond and one with a packet every 37 ms
    /// list the same outages, and every packet inside one of them was lost. Another seed
    /// draws others.
    #[test]
    fn the_same_seed_draws_the_same_outages_whatever_the_traffic() {
        let end = 60_000 * MS;
        for loss in [0.0, 0.05] {
            let params = LossParams { loss, outage: Some(Outage { mean: 50 * MS, share: 0.02 }), ..Default::default() };
            let (mut busy, mut sparse) = (LossModel::new(&params, 42), LossModel::new(&params, 42));
            let lost = losses(&mut busy, 60_000, MS);
            losses(&mut sparse, 60_000 / 37, 37 * MS);
            let (a, b) = (busy.outages(end), sparse.outages(end));
            assert!(a.len() > 5, "{a:?}");
            assert_eq!(a, b, "loss {loss}: the same timeline, listed up to the same time");
            for (s, e) in &a {
                // Packets at whole milliseconds i with start <= i < end.
                let ms = |d: &Duration| (d.as_nanos().div_ceil(1_000_000) as usize).min(lost.len());
                let (s, e) = (ms(s), ms(e));
                assert!(lost[s..e].iter().all(|&l| l), "loss {loss}: a packet crossed the outage {s}..{e} ms");
            }
            let mut other = LossModel::new(&params, 43);
            losses(&mut other, 60_000, MS);
            assert_ne!(other.outages(end), a);
        }
        // No outages asked: none listed.
        let mut none = LossModel::new(&LossParams { loss: 0.1, ..Default::default() }, 42);
        losses(&mut none, 1000, MS);
        assert!(none.outages(end).is_empty());
    }

    #[test]
    fn a_schedule_switches_the_loss_in_time_and_holds_its_last_phase() {
        let schedule = vec![Phase { len: 10 * 1000 * MS, loss: 0.2 }, Phase { len: 10 * 1000 * MS, loss: 0.0 }];
        let params = LossParams { schedule, loss: 0.5, ..Default::default() };
        assert_eq!(params.loss_at(Duration::ZERO), 0.2);
        assert_eq!(params.loss_at(9999 * MS), 0.2);
        assert_eq!(params.loss_at(10_000 * MS), 0.0);
        assert_eq!(params.loss_at(1000 * 1000 * MS), 0.0);
        let mut m = LossModel::new(&params, 3);
        let lost = losses(&mut m, 40_000, MS);
        let first = fraction(&lost[..10_000]);
        assert!((first - 0.2).abs() < 0.02, "first phase {first}");
        assert!(!lost[10_000..].contains(&true));
        assert_eq!(params.to_string(), "loss schedule 10s:20%,10s:0%");
        let open = LossParams { schedule: crate::netsim::parse_schedule("1s:5%,0%").unwrap(), ..Default::default() };
        assert_eq!(open.to_string(), "loss schedule 1s:5%,0%");
        assert_eq!(open.loss_at(Duration::from_secs(3600)), 0.0);
    }

    /// Runs `link` until it is idle, collecting every delivery.
    fn drain(link: &mut PacketLink<u32>) -> Vec<(Duration, u32)> {
        let mut out = Vec::new();
        while let Some(at) = link.next_wake() {
            while let Some((tag, _)) = link.pop_due(at) {
                out.push((at, tag));
            }
        }
        out
    }

    #[test]
    fn a_full_router_queue_drops_the_tail() {
        let mut link = PacketLink::new(&LinkParams { delay: 20 * MS, ..params("5mbit") }, &LossParams::default(), 1);
        // 100 packets at once: one is serialised at once, 42 fit in 64 KB, the rest are dropped.
        let queued = (0..100).filter(|i| link.push(Duration::ZERO, *i, vec![0; PACKET])).count();
        assert_eq!(queued, 43);
        assert_eq!(link.counts.queue_drops, 57);
        assert!(link.queued_bytes() <= 64_000);
        let got = drain(&mut link);
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), (0..43).collect::<Vec<_>>(), "in order, the head");
        // Each 1500-byte packet takes 2.4 ms at 5 Mbit/s; the first arrives after 2.4 + 20 ms.
        assert_eq!(got[0].0, Duration::from_micros(22_400));
        assert_eq!(got[42].0, Duration::from_micros(43 * 2400 + 20_000));
        let c = link.counts;
        assert_eq!((c.packets_in, c.delivered, c.lost, c.bytes_delivered), (100, 43, 0, 43 * PACKET as u64));
        // Once drained, there is room again.
        assert!(link.push(Duration::from_secs(1), 100, vec![0; PACKET]));
    }

    #[test]
    fn a_lossy_link_accounts_for_every_packet() {
        let loss = LossParams { loss: 0.1, ..Default::default() };
        let mut link = PacketLink::new(&params("10mbit"), &loss, 4);
        let mut delivered = 0;
        // 10000 packets of 1000 bytes, one per ms: 8 Mbit/s offered, under the rate.
        for i in 0..10_000u32 {
            link.push(i * MS, i, vec![0; 1000]);
            while link.pop_due(i * MS).is_some() {
                delivered += 1;
            }
        }
        delivered += drain(&mut link).len();
        let c = link.counts;
        assert_eq!(c.queue_drops, 0);
        assert_eq!(c.delivered, delivered as u64);
        assert_eq!(c.packets_in, c.lost + c.delivered);
        assert!((c.loss_fraction() - 0.1).abs() < 0.01, "{c:?}");
    }
}
