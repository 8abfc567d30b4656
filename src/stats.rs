//! Per-side statistics: counters the stages update ([`Meter`]), a plain [`Report`] built from
//! them by one function ([`Report::build`]) and formatted by others ([`Report::human_line`],
//! JSON through serde), and the thread that emits one report per interval ([`spawn_reporter`]).
//! The record itself, how it reads back ([`read_json_lines`]) and the list of latency stages
//! ([`Stage`]) are in `stats/record.rs`.
//!
//! Units: times in milliseconds (`_ms`), rates per second, sizes in bytes, bit rates in
//! kbit/s (1000 bits). The JSON schema is versioned by the `schema` field.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;

use crate::control::ControlStatus;
use crate::hub::LinkReport;

mod record;

pub(crate) use record::null_is_infinite;
pub use record::{
    parse_report, parse_viewer_report, read_json_lines, ClockSource, ClockStatus, Percentiles, RecordType, Report,
    Side, Stage, SCHEMA,
};

/// Why a frame was dropped. Each cause is counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropCause {
    /// Sender: a newer captured frame replaced one the encoder had not started.
    EncoderBusy,
    /// Sender: a newer encoded frame replaced one the socket had not taken.
    SocketBusy,
    /// Sender: encoded while no viewer was connected.
    NoViewer,
    /// Sender: the encoder failed on this frame.
    EncodeError,
    /// Receiver: a newer received frame replaced one the decoder had not started.
    DecoderBusy,
    /// Receiver: a newer decoded frame replaced one the view had not shown.
    DisplayBusy,
    /// Receiver: the JPEG inside a well-formed frame did not decode.
    CorruptJpeg,
    /// Sender: a newer encoded frame replaced one waiting for the viewer's window of
    /// unacknowledged frames to open (the link is slower than the stream).
    Congestion,
    /// Sender: skipped by the rate controller, which lowered the frame rate.
    RateLimit,
    /// Receiver (RTSP): RTP packets of the frame were lost, and it could not be shown in part.
    RtpLoss,
}

impl DropCause {
    pub fn name(self) -> &'static str {
        match self {
            DropCause::EncoderBusy => "encoder_busy",
            DropCause::SocketBusy => "socket_busy",
            DropCause::NoViewer => "no_viewer",
            DropCause::EncodeError => "encode_error",
            DropCause::DecoderBusy => "decoder_busy",
            DropCause::DisplayBusy => "display_busy",
            DropCause::CorruptJpeg => "corrupt_jpeg",
            DropCause::Congestion => "congestion",
            DropCause::RateLimit => "rate_limit",
            DropCause::RtpLoss => "rtp_loss",
        }
    }
}

/// Counters for one span of time (an interval, or the whole run).
#[derive(Clone, Debug)]
pub struct Counters {
    pub captured: u64,
    pub encoded: u64,
    pub sent: u64,
    pub received: u64,
    pub decoded: u64,
    pub displayed: u64,
    /// JPEG bytes sent (sender) or received (receiver).
    pub bytes: u64,
    pub encode_us: u64,
    pub decode_us: u64,
    /// CPU time of encoding or decoding, on every thread that worked on a frame, in µs.
    pub encode_cpu_us: u64,
    pub decode_cpu_us: u64,
    /// Frames encoded (sender) or decoded (receiver) by a codec given more than one thread.
    pub threaded: u64,
    /// Of those, frames coded as slices on more than one thread (a JPEG without restart
    /// markers decodes on one, and any frame does while slices do not pay).
    pub sliced: u64,
    /// Quality of the last frame (0: unknown, e.g. a camera's MJPEG forwarded as is).
    pub quality: Option<u8>,
    pub drops: BTreeMap<DropCause, u64>,
    /// Receiver: frames whose sequence number skipped ahead / went backwards.
    pub seq_gaps: u64,
    pub out_of_order: u64,
    /// Receiver: capture→encoded and capture→sent in µs (both on the sender's clock).
    pub lat_encoded: Histogram<u64>,
    pub lat_sent: Histogram<u64>,
    /// Capture→received/decoded/displayed latency in µs (receiver, once the sender's clock
    /// is known: shared, or synced).
    pub lat_received: Histogram<u64>,
    pub lat_decoded: Histogram<u64>,
    pub lat_displayed: Histogram<u64>,
    /// Receiver: decoded→displayed in µs (one clock: always known), the view's added delay.
    pub lat_shown: Histogram<u64>,
    /// Sender: time from writing a frame to its acknowledgement, µs.
    pub ack_rtt: Histogram<u64>,
    /// Receiver: frames received before the sender's clock was known.
    pub latency_unknown: u64,
    /// Receiver: the latest view of the sender's clock.
    pub clock: Option<ClockStatus>,
    /// Sender: the latest interval report from the viewer.
    pub viewer: Option<Box<Report>>,
    /// Sender: viewers connected, and each one's link.
    pub viewers: Option<u64>,
    pub links: Option<Vec<LinkReport>>,
    /// Sender: the rate controller's state (with `--target-kbps` or `--max-latency-ms`).
    pub control: Option<ControlStatus>,
    /// When the first frame was sent (sender) or received (receiver).
    pub first_frame: Option<Instant>,
    /// Connections made again after one was lost (`--connect`).
    pub reconnects: u64,
    /// Sender: times the source failed mid-stream, and "no signal" frames sent meanwhile.
    pub source_losses: u64,
    /// Sender: frames re-encoded because RTP/JPEG (RFC 2435) cannot carry them as they are.
    pub rtp_reencoded: u64,
    pub no_signal_frames: u64,
    /// Receiver (RTSP): frames shown with missing restart intervals taken from the previous
    /// frame.
    pub concealed: u64,
    /// The UDP transport's packet-level counts (zero on other transports).
    pub udp: UdpCounts,
    /// Sender: the source is lost now, since this time (state, not a count).
    pub source_lost: Option<SourceLost>,
}

/// The UDP transport's counts (`send`/`recv --transport udp`), per side. See `docs/stats.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounts {
    /// Data packets never received nor rebuilt (receiver; the sender's from its receipts).
    pub packets_lost: u64,
    /// Data packets rebuilt from parity (receiver; the sender's from its receipts).
    pub fec_recovered: u64,
    /// Sender: packets sent again on a NACK. Receiver: packets that arrived that way.
    pub retransmitted: u64,
    /// Receiver: frames with nothing showable by their deadline.
    pub frames_lost: u64,
    /// Receiver: unfinished frames given up because a newer frame was complete first.
    pub late_frames: u64,
    /// Sender: parity bytes and data bytes sent (for the FEC overhead).
    pub fec_bytes: u64,
    pub media_bytes: u64,
    /// Datagrams ignored: from an address without a handshake, malformed, replayed, forged.
    pub ignored: u64,
}

impl UdpCounts {
    /// Parity bytes as a percentage of data bytes; `None` when nothing was sent.
    pub fn fec_overhead_pct(&self) -> Option<f64> {
        (self.media_bytes > 0).then(|| self.fec_bytes as f64 * 100.0 / self.media_bytes as f64)
    }
}

/// When the sender's source was lost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceLost {
    /// Wall-clock time of the loss, ms since the Unix epoch (for the log and the frame).
    pub unix_ms: u64,
    pub at: Instant,
}

impl SourceLost {
    pub fn now() -> Self {
        let unix_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        SourceLost { unix_ms, at: Instant::now() }
    }

    /// The time of loss as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    pub fn utc(&self) -> String {
        utc_string(self.unix_ms / 1000)
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn utc_string(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits; auto-resize covers anything longer.
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            captured: 0,
            encoded: 0,
            sent: 0,
            received: 0,
            decoded: 0,
            displayed: 0,
            bytes: 0,
            encode_us: 0,
            decode_us: 0,
            encode_cpu_us: 0,
            decode_cpu_us: 0,
            threaded: 0,
            sliced: 0,
            quality: None,
            drops: BTreeMap::new(),
            seq_gaps: 0,
            out_of_order: 0,
            lat_encoded: histogram(),
            lat_sent: histogram(),
            lat_received: histogram(),
            lat_decoded: histogram(),
            lat_displayed: histogram(),
            lat_shown: histogram(),
            ack_rtt: histogram(),
            latency_unknown: 0,
            clock: None,
            viewer: None,
            viewers: None,
            links: None,
            control: None,
            first_frame: None,
            reconnects: 0,
            source_losses: 0,
            rtp_reencoded: 0,
            no_signal_frames: 0,
            concealed: 0,
            udp: UdpCounts::default(),
            source_lost: None,
        }
    }
}

impl Counters {
    /// Counts a frame sent (sender) or received (receiver) of `bytes` JPEG bytes.
    pub fn frame_moved(&mut self, bytes: u64) {
        self.first_frame.get_or_insert_with(Instant::now);
        self.bytes += bytes;
    }

    pub fn drop_frame(&mut self, cause: DropCause) {
        *self.drops.entry(cause).or_insert(0) += 1;
    }

    fn histogram(&self, stage: Stage) -> &Histogram<u64> {
        match stage {
            Stage::CaptureEncoded => &self.lat_encoded,
            Stage::CaptureSent => &self.lat_sent,
            Stage::CaptureReceived => &self.lat_received,
            Stage::CaptureDecoded => &self.lat_decoded,
            Stage::CaptureDisplayed => &self.lat_displayed,
            Stage::DecodedDisplayed => &self.lat_shown,
            Stage::AckRtt => &self.ack_rtt,
        }
    }
}

struct MeterInner {
    interval: Counters,
    total: Counters,
}

/// The counters of one side, shared by its stages. Every update goes to both the current
/// interval and the whole-run totals.
#[derive(Clone)]
pub struct Meter {
    side: Side,
    started: Instant,
    enabled: bool,
    inner: Arc<Mutex<MeterInner>>,
}

impl Meter {
    pub fn new(side: Side) -> Self {
        Meter {
            side,
            started: Instant::now(),
            enabled: true,
            inner: Arc::new(Mutex::new(MeterInner { interval: Counters::default(), total: Counters::default() })),
        }
    }

    /// A meter that records nothing (`--no-stats`), to measure what measuring costs.
    pub fn disabled(side: Side) -> Self {
        Meter { enabled: false, ..Meter::new(side) }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// Applies `f` to the interval and total counters.
    pub fn update(&self, f: impl Fn(&mut Counters)) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g.interval);
        f(&mut g.total);
    }

    pub fn count_drop(&self, cause: DropCause) {
        self.update(|c| c.drop_frame(cause));
    }

    /// Takes the interval counters (resetting them) and builds its report.
    pub fn take_interval(&self, since: Instant) -> Report {
        let now = Instant::now();
        let c = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let c = std::mem::take(&mut g.interval);
            // State, not counts: carried into the next interval.
            g.interval.clock = c.clock;
            g.interval.viewer = c.viewer.clone();
            g.interval.viewers = c.viewers;
            g.interval.links = c.links.clone();
            g.interval.quality = c.quality;
            g.interval.control = c.control.clone();
            g.interval.source_lost = c.source_lost;
            c
        };
        let (t, seconds) = ((now - self.started).as_secs_f64(), (now - since).as_secs_f64());
        Report::build(self.side, RecordType::Interval, &c, t, seconds)
    }

    /// Reads the whole-run counters under the meter's lock (`/metrics` on `--http`): `f` runs
    /// with every stage's updates waiting, so it should only copy out what it needs.
    pub fn with_total<R>(&self, f: impl FnOnce(&Counters) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()).total)
    }

    /// The whole-run report. Its `seconds` (and so its rates) run from the first frame sent
    /// or received, not from start-up: a listening side may wait long for its peer.
    pub fn summary(&self) -> Report {
        let t = self.started.elapsed().as_secs_f64();
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let secs = g.total.first_frame.map_or(t, |f| f.elapsed().as_secs_f64());
        Report::build(self.side, RecordType::Summary, &g.total, t, secs)
    }
}

/// Where and how often reports go.
#[derive(Clone, Debug)]
pub struct StatsConfig {
    pub interval: Duration,
    /// The JSON-lines file; `demo --stats-json` gives both sides clones of one.
    pub json: Option<JsonLog>,
    /// False with `--no-stats`: nothing is measured or reported.
    pub enabled: bool,
}

impl StatsConfig {
    pub fn meter(&self, side: Side) -> Meter {
        if self.enabled {
            Meter::new(side)
        } else {
            Meter::disabled(side)
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { interval: Duration::from_secs(1), json: None, enabled: true }
    }
}

/// Called with every interval report.
pub type OnReport = Box<dyn Fn(&Report) + Send>;
/// Called just before each report is built (to sample state such as connected viewers).
pub type BeforeReport = Box<dyn Fn() + Send>;

/// A `--stats-json` file. Clones share it: the first [`open_json`] creates it (truncating),
/// later ones reuse it, and each record is serialised first and written as one whole line
/// under a lock, so two reporters writing to one file (`demo --stats-json`) never interleave.
#[derive(Clone, Debug)]
pub struct JsonLog {
    path: PathBuf,
    file: Arc<Mutex<JsonFile>>,
}

#[derive(Debug)]
enum JsonFile {
    Unopened,
    Open(File),
    /// A write failed: no more records, from any clone.
    Failed,
}

impl JsonLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLog { path: path.into(), file: Arc::new(Mutex::new(JsonFile::Unopened)) }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JsonFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `r` as one line; after a failed write, warns once and writes nothing more.
    fn write(&self, r: &Report) {
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "cannot serialise a stats record; skipped"),
        };
        line.push(b'\n');
        let mut file = self.lock();
        if let JsonFile::Open(f) = &mut *file {
            if let Err(e) = f.write_all(&line) {
                tracing::warn!(error = %e, "cannot write --stats-json; no more JSON stats");
                *file = JsonFile::Failed;
            }
        }
    }
}

/// Opens the JSON-lines file (creating and truncating it unless a clone already did), so a
/// bad path fails before any thread starts.
pub fn open_json(cfg: &StatsConfig) -> anyhow::Result<Option<JsonLog>> {
    use anyhow::Context;
    let Some(log) = &cfg.json else { return Ok(None) };
    let mut file = log.lock();
    if let JsonFile::Unopened = *file {
        let f =
            File::create(&log.path).with_context(|| format!("--stats-json: cannot create {}", log.path.display()))?;
        *file = JsonFile::Open(f);
    }
    Ok(Some(log.clone()))
}

/// Starts the thread that logs one human line per interval (and writes it to the JSON file),
/// and at the end the summary. It ends when `done` disconnects and returns the summary.
/// `on_report` sees every interval report (e.g. to put fps in a window title).
pub fn spawn_reporter(
    meter: Meter,
    cfg: StatsConfig,
    json: Option<JsonLog>,
    done: Receiver<()>,
    before: Option<BeforeReport>,
    on_report: Option<OnReport>,
) -> std::io::Result<JoinHandle<Report>> {
    let name = match meter.side() {
        Side::Sender => "send-stats",
        Side::Receiver => "recv-stats",
    };
    std::thread::Builder::new().name(name.into()).spawn(move || {
        if !meter.is_enabled() {
            let _ = done.recv();
            return meter.summary();
        }
        let mut since = Instant::now();
        let sample = || {
            if let Some(f) = &before {
                f();
            }
        };
        while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(cfg.interval.saturating_sub(since.elapsed())) {
            sample();
            let r = meter.take_interval(since);
            since = Instant::now();
            tracing::info!(target: "framecast::stats", "{}", r.human_line());
            write_json(&json, &r);
            if let Some(f) = &on_report {
                f(&r);
            }
        }
        let summary = meter.summary();
        tracing::info!(target: "framecast::stats", "{}", summary.summary_text());
        write_json(&json, &summary);
        summary
    })
}

fn write_json(json: &Option<JsonLog>, r: &Report) {
    if let Some(log) = json {
        log.write(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        let mut c = Counters {
            captured: 31,
            encoded: 30,
            sent: 30,
            bytes: 300_000,
            encode_us: 45_000,
            quality: Some(75),
            ..Default::default()
        };
        c.drop_frame(DropCause::EncoderBusy);
        for v in 1..=100u64 {
            c.ack_rtt.record(v * 1000).unwrap();
        }
        c
    }

    #[test]
    fn report_computes_rates_and_means() {
        let r = Report::build(Side::Sender, RecordType::Interval, &sample(), 2.0, 1.0);
        assert_eq!(r.frames, 30);
        assert_eq!(r.fps, 30.0);
        assert_eq!(r.kbps, 2400.0);
        assert_eq!(r.mean_frame_bytes, 10_000.0);
        assert_eq!(r.encode_ms, Some(1.5));
        assert_eq!(r.decode_ms, None);
        assert_eq!(r.drops.get("encoder_busy"), Some(&1));
        assert_eq!(r.drops_total, 1);
        let p = r.ack_rtt_ms.unwrap();
        assert!((p.p50 - 50.0).abs() < 0.1 && (p.p99 - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max - 100.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn utc_strings() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_string(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn source_loss_and_reconnects_are_reported_and_the_loss_carries_over() {
        let meter = Meter::new(Side::Sender);
        let lost = SourceLost { unix_ms: 1_700_000_000_123, at: Instant::now() };
        meter.update(|c| {
            c.source_losses += 1;
            c.no_signal_frames += 2;
            c.reconnects += 1;
            c.source_lost = Some(lost);
        });
        let r = meter.take_interval(Instant::now());
        assert_eq!((r.source_losses, r.no_signal_frames, r.reconnects), (1, 2, 1));
        assert_eq!(r.source_lost_since.as_deref(), Some("2023-11-14T22:13:20Z"));
        let line = r.human_line();
        assert!(line.contains("SOURCE LOST since 2023-11-14T22:13:20Z") && line.contains("reconnects 1"), "{line}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["source_lost_since"], "2023-11-14T22:13:20Z");
        // The next interval still says the source is lost, with no new counts.
        let r = meter.take_interval(Instant::now());
        assert_eq!((r.source_losses, r.reconnects), (0, 0));
        assert!(r.source_lost_s.is_some());
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("reconnects").is_none() && json.get("source_losses").is_none(), "{json}");
        meter.update(|c| c.source_lost = None);
        let r = meter.take_interval(Instant::now());
        assert!(r.source_lost_since.is_none() && !r.human_line().contains("LOST"));
        assert!(meter.summary().summary_text().contains("source lost 1 times"));
    }

    #[test]
    fn zero_length_span_does_not_divide_by_zero() {
        let r = Report::build(Side::Receiver, RecordType::Summary, &Counters::default(), 0.0, 0.0);
        assert_eq!(r.fps, 0.0);
        assert_eq!(r.mean_frame_bytes, 0.0);
        assert!(r.latency_capture_decoded_ms.is_none());
        assert!(r.human_line().contains("latency unknown"));
    }

    #[test]
    fn json_has_documented_fields() {
        let r = Report::build(Side::Sender, RecordType::Summary, &sample(), 1.0, 1.0);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "schema",
            "type",
            "role",
            "frames",
            "seconds",
            "fps",
            "bytes",
            "kbps",
            "mean_frame_bytes",
            "quality",
            "encode_ms",
            "drops",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["type"], "summary");
        assert_eq!(v["role"], "sender");
        assert!(v.get("decode_ms").is_none());
    }

    #[test]
    fn one_json_log_shared_by_two_threads_keeps_whole_lines() {
        let path = std::env::temp_dir().join(format!("framecast-jsonlog-{}.jsonl", std::process::id()));
        std::fs::write(&path, "stale line from an earlier run\n").unwrap();
        let log = JsonLog::new(&path);
        let cfg = StatsConfig { json: Some(log.clone()), ..StatsConfig::default() };
        let a = open_json(&cfg).unwrap().unwrap();
        write_json(&Some(a.clone()), &Report::build(Side::Sender, RecordType::Interval, &sample(), 1.0, 1.0));
        let b = open_json(&cfg).unwrap().unwrap();
        let writers: Vec<_> = [(a, Side::Sender), (b, Side::Receiver)]
            .into_iter()
            .map(|(log, side)| {
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_json(&Some(log.clone()), &Report::build(side, RecordType::Interval, &sample(), 1.0, 1.0));
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut roles = BTreeMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            *roles.entry(v["role"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
        // The file was truncated once (the stale line is gone), by the first open only (the
        // line written before the second open is still there).
        assert_eq!(roles, BTreeMap::from([("receiver".to_string(), 200), ("sender".to_string(), 201)]));
    }

    #[test]
    fn human_line_names_drop_causes() {
        let r = Report::build(Side::Sender, RecordType::Interval, &sample(), 1.0, 1.0);
        let line = r.human_line();
        assert!(line.contains("30.0 fps"), "{line}");
        assert!(line.contains("q75"), "{line}");
        assert!(line.contains("enc 1.50 ms"), "{line}");
        assert!(line.contains("drops 1 (encoder_busy=1)"), "{line}");
    }

    #[test]
    fn summary_rates_run_from_the_first_frame() {
        let m = Meter::new(Side::Receiver);
        std::thread::sleep(Duration::from_millis(300)); // waiting for a peer
        m.update(|c| {
            c.received += 1;
            c.decoded += 1;
            c.frame_moved(1000);
        });
        std::thread::sleep(Duration::from_millis(100));
        let s = m.summary();
        assert!(s.t >= 0.4, "{s:?}");
        assert!(s.seconds >= 0.09 && s.seconds < 0.3, "the wait is not counted: {s:?}");
    }

    #[test]
    fn meter_interval_resets_but_total_keeps() {
        let m = Meter::new(Side::Receiver);
        m.update(|c| c.decoded += 5);
        let i = m.take_interval(Instant::now() - Duration::from_secs(1));
        assert_eq!(i.frames, 5);
        m.update(|c| c.decoded += 2);
        assert_eq!(m.take_interval(Instant::now()).frames, 2);
        assert_eq!(m.summary().frames, 7);
    }
}
