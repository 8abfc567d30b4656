//! `/metrics` on `--http`: the sender's stats for Prometheus, encoded by `prometheus-client`
//! (OpenMetrics when the scraper asks for it in `Accept`, as Prometheus does, and the
//! Prometheus text format 0.0.4 otherwise). Nothing is counted twice: a [`Collector`] reads,
//! at each scrape, what the stats already hold.
//!
//! - **Counters** are whole-run totals from the meter's `total` counters (frames by stage,
//!   bytes, drops by cause, reconnects, source losses, the UDP transport's counts), so
//!   `rate()` gives fps and bit rate over any window, and a restart resets them as
//!   Prometheus expects of a counter.
//! - **Gauges** are state: quality, viewers by kind (the hub's links now), the source being
//!   lost, and the last stats interval's fps, bit rate and mean frame size, for a dashboard
//!   without PromQL (Home Assistant's scrape sensor).
//! - **Histograms** (capture→encoded, capture→sent, ack round trip) come from the meter's
//!   whole-run `hdrhistogram`s, cut at fixed bucket bounds at each scrape: cumulative
//!   counts that only grow, aggregate across senders and give `histogram_quantile()` over
//!   any window. A summary of the interval's p50/p95/p99 could do neither (quantiles of
//!   one second cannot be averaged or summed). A sample falls in a bucket by the lowest
//!   value of its `hdrhistogram` cell (3 significant digits: within 0.1% of the bound), and
//!   `_sum` is the histogram's mean times its count, as exact.
//!
//! A rendering holds the meter's lock only to copy these figures out (the histograms are
//! copied whole, a memcpy, and walked after the lock is released), and the hub's lock to
//! list the links, never a socket. Scrapes within [`REUSE`] of a rendering get it again, so
//! a crowd of scrapers costs the stream one rendering per 200 ms at most.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::transport::LatestStats;
use crate::hub::{Hub, ViewerKind};
use crate::stats::{parse_report, Counters, DropCause, Meter, Report, UdpCounts};

/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, seconds (`+Inf` follows): 1 ms to 5 s, closer where
/// a live stream's latency lies.
pub const LATENCY_BOUNDS: [f64; 17] =
    [0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0];

/// The drop causes a sender counts; each is exported, at 0 until it happens.
const SENDER_DROPS: [DropCause; 6] = [
    DropCause::EncoderBusy,
    DropCause::SocketBusy,
    DropCause::NoViewer,
    DropCause::EncodeError,
    DropCause::Congestion,
    DropCause::RateLimit,
];

/// The viewer kinds exported even with no viewer of that kind (a series that exists at 0 is
/// easier to alert on than one that appears).
const VIEWER_KINDS: [ViewerKind; 5] =
    [super::native::KIND, super::http::KIND, super::rtsp::KIND, super::publish::KIND, super::udp::KIND];

/// How long a rendering is served again: parallel scrapes (64 at once, or several
/// Prometheus servers) cost one rendering, and so one visit to the meter's lock, per this.
pub const REUSE: Duration = Duration::from_millis(200);

/// A rendering of the metrics and when it was made.
type Rendering = (Instant, Arc<str>);

/// The `/metrics` endpoint's registry, and its last rendering in each format.
pub struct Metrics {
    registry: Registry,
    last: [Mutex<Option<Rendering>>; 2],
}

impl Metrics {
    pub fn new(hub: Arc<Hub>, meter: Meter, stats: LatestStats) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SenderCollector { hub, meter, stats }));
        Metrics { registry, last: Default::default() }
    }

    /// The metrics, and their `Content-Type`: OpenMetrics if `openmetrics`, else the
    /// Prometheus text format. A rendering less than [`REUSE`] old is served again; a scrape
    /// that comes while one is made waits for it.
    pub fn render(&self, openmetrics: bool) -> (Arc<str>, &'static str) {
        let mut last = self.last[usize::from(openmetrics)].lock().unwrap_or_else(|p| p.into_inner());
        let content_type = if openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT };
        if let Some((_, text)) = last.as_ref().filter(|(at, _)| at.elapsed() < REUSE) {
            return (text.clone(), content_type);
        }
        let text: Arc<str> = self.render_now(openmetrics).into();
        *last = Some((Instant::now(), text.clone()));
        (text, content_type)
    }

    fn render_now(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String fails only if a collector fails, and ours does not.
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        } else {
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        }
        out
    }
}

/// Whether an `Accept` header asks for OpenMetrics (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...;q=0.5,text/plain;version=0.0.4;q=0.4,...`).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|media| media.trim().starts_with("application/openmetrics-text"))
}

/// Reads the stats at each scrape.
struct SenderCollector {
    hub: Arc<Hub>,
    meter: Meter,
    stats: LatestStats,
}

impl std::fmt::Debug for SenderCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCollector").finish_non_exhaustive()
    }
}

/// A latency histogram cut at [`LATENCY_BOUNDS`]: per-bucket counts (the last is `+Inf`), and
/// its sum in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    pub counts: Vec<(f64, u64)>,
    pub sum_s: f64,
    pub count: u64,
}

impl Buckets {
    /// Cuts a histogram of microseconds at [`LATENCY_BOUNDS`].
    pub fn of(h: &Histogram<u64>) -> Self {
        let mut counts: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().chain(&[f64::INFINITY]).map(|&le| (le, 0)).collect();
        for v in h.iter_recorded() {
            let secs = h.lowest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            let i = LATENCY_BOUNDS.partition_point(|&le| le < secs);
            counts[i].1 += v.count_at_value();
        }
        let count = h.len();
        Buckets { counts, sum_s: h.mean() * count as f64 / 1e6, count }
    }
}

/// What a scrape copies out of the meter's whole-run counters.
struct Totals {
    frames: [(&'static str, u64); 3],
    bytes: u64,
    encode_s: f64,
    encode_cpu_s: f64,
    quality: Option<u8>,
    drops: BTreeMap<&'static str, u64>,
    counts: [(&'static str, &'static str, u64); 5],
    source_lost: bool,
    udp: UdpCounts,
    latency: [(&'static str, Buckets); 2],
    ack_rtt: Buckets,
}

/// What a scrape copies under the meter's lock: plain numbers and the three histograms
/// (a copy of each is a memcpy of its cells, which is quicker than walking them while every
/// stage waits on the lock).
struct Copied {
    frames: [(&'static str, u64); 3],
    bytes: u64,
    encode_us: u64,
    encode_cpu_us: u64,
    quality: Option<u8>,
    drops: BTreeMap<DropCause, u64>,
    counts: [(&'static str, &'static str, u64); 5],
    source_lost: bool,
    udp: UdpCounts,
    histograms: [Histogram<u64>; 3],
}

impl Copied {
    fn of(c: &Counters) -> Self {
        Copied {
            frames: [("captured", c.captured), ("encoded", c.encoded), ("sent", c.sent)],
            bytes: c.bytes,
            encode_us: c.encode_us,
            encode_cpu_us: c.encode_cpu_us,
            quality: c.quality,
            drops: c.drops.clone(),
            counts: counts(c),
            source_lost: c.source_lost.is_some(),
            udp: c.udp,
            histograms: [c.lat_encoded.clone(), c.lat_sent.clone(), c.ack_rtt.clone()],
        }
    }
}

impl Totals {
    fn of(c: Copied) -> Self {
        let mut drops: BTreeMap<&'static str, u64> = SENDER_DROPS.iter().map(|d| (d.name(), 0)).collect();
        for (cause, n) in &c.drops {
            drops.insert(cause.name(), *n);
        }
        let [encoded, sent, ack_rtt] = &c.histograms;
        Totals {
            frames: c.frames,
            bytes: c.bytes,
            encode_s: c.encode_us as f64 / 1e6,
            encode_cpu_s: c.encode_cpu_us as f64 / 1e6,
            quality: c.quality,
            drops,
            counts: c.counts,
            source_lost: c.source_lost,
            udp: c.udp,
            latency: [("capture_encoded", Buckets::of(encoded)), ("capture_sent", Buckets::of(sent))],
            ack_rtt: Buckets::of(ack_rtt),
        }
    }
}

/// The plain whole-run counters: name (before `_total`), help, value.
fn counts(c: &Counters) -> [(&'static str, &'static str, u64); 5] {
    [
        ("framecast_reconnects", "Connections made again after one was lost (--connect, --publish).", c.reconnects),
        ("framecast_source_losses", "Times the source failed mid-stream.", c.source_losses),
        ("framecast_no_signal_frames", "'No signal' frames sent while the source was lost.", c.no_signal_frames),
        (
            "framecast_rtp_reencoded_frames",
            "Frames re-encoded because RTP/JPEG (RFC 2435) cannot carry them as they are.",
            c.rtp_reencoded,
        ),
        (
            "framecast_sliced_frames",
            "Frames encoded as slices on more than one thread (--encode-threads; fewer while slices do not pay).",
            c.sliced,
        ),
    ]
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, unit, m.metric_type())?)
}

fn counter_f64(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, Some(&Unit::Seconds), m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: f64) -> std::fmt::Result {
    let m = ConstGauge::new(v);
    m.encode(e.encode_descriptor(name, help, unit, m.metric_type())?)
}

/// A family of one label: `name{label="value"} v` for each `(value, v)`.
fn labelled<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<&Unit>, MetricType),
    label: &str,
    series: impl IntoIterator<Item = (String, M)>,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit, kind)?;
    for (value, metric) in series {
        let labels = [(label, value.as_str())];
        metric.encode(family.encode_family(&labels.as_slice())?)?;
    }
    Ok(())
}

/// A histogram in seconds, one series per `(label value, buckets)` (no label when `label` is
/// empty).
fn histograms(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &Buckets)],
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (value, b) in series {
        let no_exemplars = None::<&std::collections::HashMap<usize, _>>;
        if label.is_empty() {
            family.encode_histogram::<NoLabelSet>(b.sum_s, b.count, &b.counts, no_exemplars)?;
        } else {
            let labels = [(label, *value)];
            let set = labels.as_slice();
            let mut one = family.encode_family(&set)?;
            one.encode_histogram::<NoLabelSet>(b.sum_s, b.count, &b.counts, no_exemplars)?;
        }
    }
    Ok(())
}

impl Collector for SenderCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = Totals::of(self.meter.with_total(Copied::of));
        let mut kinds: BTreeMap<String, u64> = VIEWER_KINDS.iter().map(|k| (k.as_str().to_string(), 0)).collect();
        for link in self.hub.links() {
            *kinds.entry(link.kind.as_str().to_string()).or_insert(0) += 1;
        }
        let interval = self.stats.get().and_then(|json| parse_report(json.as_bytes()).ok());
        let info = [("version", env!("CARGO_PKG_VERSION"))];
        let build = ConstGauge::new(1i64);
        build.encode(
            e.encode_descriptor("framecast_build_info", "framecast's version.", None, MetricType::Gauge)?
                .encode_family(&info.as_slice())?,
        )?;
        let frames = t.frames.iter().map(|&(stage, n)| (stage.to_string(), ConstCounter::new(n)));
        let desc = ("framecast_frames", "Frames through each sender stage since start.", None, MetricType::Counter);
        labelled(&mut e, desc, "stage", frames)?;
        counter(&mut e, "framecast_sent", "JPEG bytes sent to viewers since start.", Some(&Unit::Bytes), t.bytes)?;
        let drops = t.drops.iter().map(|(cause, n)| (cause.to_string(), ConstCounter::new(*n)));
        let desc = ("framecast_frames_dropped", "Frames dropped since start, by cause.", None, MetricType::Counter);
        labelled(&mut e, desc, "cause", drops)?;
        counter_f64(&mut e, "framecast_encode", "Wall time spent encoding frames.", t.encode_s)?;
        counter_f64(&mut e, "framecast_encode_cpu", "CPU time spent encoding frames, all threads.", t.encode_cpu_s)?;
        for (name, help, n) in &t.counts {
            counter(&mut e, name, help, None, *n)?;
        }
        encode_udp(&mut e, &t.udp)?;
        if let Some(q) = t.quality {
            gauge(
                &mut e,
                "framecast_quality",
                "JPEG quality of the last frame (0: a camera's own JPEG).",
                None,
                q.into(),
            )?;
        }
        let lost = if t.source_lost { 1.0 } else { 0.0 };
        gauge(&mut e, "framecast_source_lost", "1 while the source is lost (no-signal frames are sent).", None, lost)?;
        let viewers = kinds.into_iter().map(|(kind, n)| (kind, ConstGauge::new(n as i64)));
        let desc = ("framecast_viewers", "Viewers connected now, by transport.", None, MetricType::Gauge);
        labelled(&mut e, desc, "kind", viewers)?;
        if let Some(r) = &interval {
            encode_interval(&mut e, r)?;
        }
        let lat: Vec<(&str, &Buckets)> = t.latency.iter().map(|(s, b)| (*s, b)).collect();
        histograms(&mut e, "framecast_latency", "Latency from capture to each sender stage.", "stage", &lat)?;
        histograms(
            &mut e,
            "framecast_ack_rtt",
            "Native viewers: a frame's write to its acknowledgement.",
            "",
            &[("", &t.ack_rtt)],
        )
    }
}

/// The UDP transport's counts (`--transport udp`), at 0 without it.
fn encode_udp(e: &mut DescriptorEncoder, u: &UdpCounts) -> std::fmt::Result {
    for (name, help, n) in [
        (
            "framecast_udp_packets_lost",
            "UDP: data packets viewers never got nor rebuilt (their receipts).",
            u.packets_lost,
        ),
        ("framecast_udp_fec_recovered_packets", "UDP: data packets viewers rebuilt from parity.", u.fec_recovered),
        ("framecast_udp_retransmitted_packets", "UDP: packets sent again on a NACK.", u.retransmitted),
        ("framecast_udp_ignored_datagrams", "UDP: datagrams ignored (no handshake, malformed, replayed).", u.ignored),
    ] {
        counter(e, name, help, None, n)?;
    }
    let bytes = [("media", ConstCounter::new(u.media_bytes)), ("parity", ConstCounter::new(u.fec_bytes))];
    let series = bytes.into_iter().map(|(kind, c)| (kind.to_string(), c));
    let desc = (
        "framecast_udp_sent",
        "UDP: payload bytes sent, data and FEC parity.",
        Some(&Unit::Bytes),
        MetricType::Counter,
    );
    labelled(e, desc, "kind", series)
}

/// Gauges from the last stats interval (`/stats`): fps by stage, bit rate, mean frame size.
fn encode_interval(e: &mut DescriptorEncoder, r: &Report) -> std::fmt::Result {
    let per_s = |n: Option<u64>| n.map_or(0.0, |n| if r.seconds > 0.0 { n as f64 / r.seconds } else { 0.0 });
    let fps = [("captured", per_s(r.captured)), ("encoded", per_s(r.encoded)), ("sent", r.fps)];
    let series = fps.iter().map(|&(stage, v)| (stage.to_string(), ConstGauge::new(v)));
    let desc = ("framecast_fps", "Frames per second through each stage, last stats interval.", None, MetricType::Gauge);
    labelled(e, desc, "stage", series)?;
    gauge(e, "framecast_bitrate_bits_per_second", "Bit rate sent, last stats interval.", None, r.kbps * 1000.0)?;
    gauge(e, "framecast_frame_size", "Mean JPEG size, last stats interval.", Some(&Unit::Bytes), r.mean_frame_bytes)?;
    match &r.viewer {
        Some(v) => encode_viewer(e, v),
        None => Ok(()),
    }
}

/// Gauges from the interval report a viewer sent back (native and UDP viewers do; the latest
/// one to report, with several): what the far end saw, which only it can count.
fn encode_viewer(e: &mut DescriptorEncoder, v: &Report) -> std::fmt::Result {
    let help = "Frames per second the viewer showed (or decoded), its last report.";
    gauge(e, "framecast_viewer_fps", help, None, v.fps)?;
    if let Some(p) = v.end_to_end() {
        let q = [("0.5", p.p50), ("0.95", p.p95), ("0.99", p.p99)];
        let series = q.iter().map(|&(q, ms)| (q.to_string(), ConstGauge::new(ms / 1000.0)));
        let help = "Capture to shown (or decoded) at the viewer, quantiles of its last report.";
        let desc = ("framecast_viewer_latency", help, Some(&Unit::Seconds), MetricType::Gauge);
        labelled(e, desc, "quantile", series)?;
    }
    let help = "Frames the viewer dropped, its last report.";
    gauge(e, "framecast_viewer_dropped_frames", help, None, v.drops_total as f64)?;
    let help = "Frames the viewer showed with lost parts taken from the previous frame, its last report.";
    gauge(e, "framecast_viewer_concealed_frames", help, None, v.concealed as f64)?;
    for (name, help, n) in [
        (
            "framecast_viewer_frames_lost",
            "UDP viewer: frames with nothing showable by their deadline, its last report.",
            v.frames_lost,
        ),
        (
            "framecast_viewer_late_frames",
            "UDP viewer: unfinished frames given up for a newer one, its last report.",
            v.late_frames,
        ),
        ("framecast_viewer_packets_lost", "UDP viewer: data packets lost for good, its last report.", v.packets_lost),
        (
            "framecast_viewer_fec_recovered_packets",
            "UDP viewer: data packets rebuilt from parity, its last report.",
            v.fec_recovered,
        ),
    ] {
        gauge(e, name, help, None, n as f64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &v in values_us {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn buckets_put_each_sample_under_its_bound() {
        // 1 ms exactly is <= 0.001; 1.001 ms is not; 7 s only fits +Inf.
        let b = Buckets::of(&hist(&[500, 1000, 1001, 30_000, 30_000, 7_000_000]));
        let at = |le: f64| b.counts.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.001), 2, "{b:?}");
        assert_eq!(at(0.0025), 1, "{b:?}");
        assert_eq!(at(0.035), 2, "{b:?}");
        assert_eq!(at(f64::INFINITY), 1, "{b:?}");
        assert_eq!(b.counts.iter().map(|c| c.1).sum::<u64>(), 6);
        assert_eq!(b.count, 6);
        assert!((b.sum_s - 7.062_501).abs() < 0.01, "{}", b.sum_s);
        assert_eq!(b.counts.len(), LATENCY_BOUNDS.len() + 1);
    }

    #[test]
    fn empty_histogram_has_every_bucket_at_zero() {
        let b = Buckets::of(&hist(&[]));
        assert!(b.counts.iter().all(|c| c.1 == 0) && b.count == 0 && b.sum_s == 0.0, "{b:?}");
    }

    #[test]
    fn accept_headers() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(!wants_openmetrics("*/*"));
    }

    #[test]
    fn scrape_of_a_fresh_sender_names_every_family() {
        let meter = Meter::new(crate::stats::Side::Sender);
        meter.update(|c| {
            c.captured += 3;
            c.encoded += 2;
            c.sent += 2;
            c.drop_frame(DropCause::Congestion);
            let _ = c.lat_sent.record(12_000);
        });
        let m = Metrics::new(Arc::new(Hub::new()), meter, LatestStats::default());
        let (text, ct) = m.render(false);
        assert_eq!(ct, PROMETHEUS_TEXT);
        for line in [
            "framecast_frames_total{stage=\"captured\"} 3",
            "framecast_frames_dropped_total{cause=\"congestion\"} 1",
            "framecast_frames_dropped_total{cause=\"encoder_busy\"} 0",
            "framecast_viewers{kind=\"http\"} 0",
            "framecast_latency_seconds_bucket{stage=\"capture_sent\",le=\"0.02\"} 1",
            "framecast_latency_seconds_count{stage=\"capture_sent\"} 1",
            "framecast_ack_rtt_seconds_bucket{le=\"+Inf\"} 0",
            "# TYPE framecast_sent_bytes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        let (text, ct) = m.render(true);
        assert_eq!(ct, OPENMETRICS);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
