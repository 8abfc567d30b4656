//! The stats record: [`Report`], which `--stats-json` writes one a line and
//! [`read_json_lines`] reads back, its human forms ([`Report::human_line`],
//! [`Report::summary_text`]) and the types inside it. The latency stages are listed once, in
//! [`Stage`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Counters, DropCause};
use crate::control::ControlStatus;
use crate::hub::LinkReport;

/// Version of the JSON stats schema (README "Stats").
pub const SCHEMA: u32 = 2;

/// Which side a meter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Sender,
    Receiver,
}

impl Side {
    /// The name in the JSON `role` field.
    pub fn name(self) -> &'static str {
        match self {
            Side::Sender => "sender",
            Side::Receiver => "receiver",
        }
    }
}

/// What span a [`Report`] covers: the JSON `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    /// One interval (`--stats-interval`).
    Interval,
    /// The whole run, written once at exit.
    Summary,
}

/// A latency the stats measure, in pipeline order. The one list of stages: its JSON key and
/// label are here, and [`Report::latency`] reads its percentiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Capture to the end of encoding (on the sender's clock, so always known).
    CaptureEncoded,
    /// Capture to the write to the socket (on the sender's clock).
    CaptureSent,
    /// Capture to received (receiver, once the sender's clock is known, as the next two).
    CaptureReceived,
    /// Capture to the end of decoding.
    CaptureDecoded,
    /// Capture to shown (or handed to the headless sink).
    CaptureDisplayed,
    /// Decoded to displayed: the delay the view adds (one clock, always known).
    DecodedDisplayed,
    /// Sender: a frame's write to its acknowledgement.
    AckRtt,
}

impl Stage {
    /// Every stage, in pipeline order (and in the order of the JSON fields).
    pub const ALL: [Stage; 7] = [
        Stage::CaptureEncoded,
        Stage::CaptureSent,
        Stage::CaptureReceived,
        Stage::CaptureDecoded,
        Stage::CaptureDisplayed,
        Stage::DecodedDisplayed,
        Stage::AckRtt,
    ];

    /// The stages the summary and `framecast report` list: each measured from capture, and the
    /// ack round trip (decoded→displayed is the last part of capture→displayed).
    pub const LISTED: [Stage; 6] = [
        Stage::CaptureEncoded,
        Stage::CaptureSent,
        Stage::CaptureReceived,
        Stage::CaptureDecoded,
        Stage::CaptureDisplayed,
        Stage::AckRtt,
    ];

    /// A viewer's end-to-end latency is the first of these it reports.
    pub const END_TO_END: [Stage; 2] = [Stage::CaptureDisplayed, Stage::CaptureDecoded];

    /// The field of the JSON schema.
    pub fn key(self) -> &'static str {
        match self {
            Stage::CaptureEncoded => "latency_capture_encoded_ms",
            Stage::CaptureSent => "latency_capture_sent_ms",
            Stage::CaptureReceived => "latency_capture_received_ms",
            Stage::CaptureDecoded => "latency_capture_decoded_ms",
            Stage::CaptureDisplayed => "latency_capture_displayed_ms",
            Stage::DecodedDisplayed => "latency_decoded_displayed_ms",
            Stage::AckRtt => "ack_rtt_ms",
        }
    }

    /// The label of the summary and of `framecast report`'s table.
    pub fn label(self) -> &'static str {
        match self {
            Stage::CaptureEncoded => "capture->encoded",
            Stage::CaptureSent => "capture->sent",
            Stage::CaptureReceived => "capture->received",
            Stage::CaptureDecoded => "capture->decoded",
            Stage::CaptureDisplayed => "capture->displayed",
            Stage::DecodedDisplayed => "decoded->displayed",
            Stage::AckRtt => "ack rtt",
        }
    }
}

/// Where the receiver's view of the sender's clock comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    /// Same host: one monotonic clock.
    Shared,
    /// Offset estimated from the reverse channel's NTP-style exchanges.
    Synced,
    /// No exchange yet.
    Unknown,
    /// RTSP from a foreign sender: RTP timestamps mapped to wall time through its RTCP sender
    /// reports, compared with this host's wall clock (right only as far as both hosts' wall
    /// clocks agree, e.g. through NTP).
    Rtcp,
}

impl ClockSource {
    /// The name in the JSON `source` field.
    pub fn name(self) -> &'static str {
        match self {
            ClockSource::Shared => "shared",
            ClockSource::Synced => "synced",
            ClockSource::Unknown => "unknown",
            ClockSource::Rtcp => "rtcp",
        }
    }
}

/// How the receiver relates the sender's timestamps to its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockStatus {
    pub source: ClockSource,
    /// Sender clock minus receiver clock, ms (as measured, also when the clock is shared).
    pub offset_ms: Option<f64>,
    /// Bound on the offset error, ms: half the best exchange's round trip.
    pub uncertainty_ms: Option<f64>,
    /// How much faster the sender's clock runs, parts per million.
    pub drift_ppm: Option<f64>,
    pub exchanges: u64,
}

impl ClockStatus {
    pub fn unsynced(shared: bool) -> Self {
        ClockStatus {
            source: if shared { ClockSource::Shared } else { ClockSource::Unknown },
            offset_ms: None,
            uncertainty_ms: None,
            drift_ppm: None,
            exchanges: 0,
        }
    }

    pub fn from_estimate(shared: bool, e: &crate::clock::Estimate) -> Self {
        ClockStatus {
            source: if shared { ClockSource::Shared } else { ClockSource::Synced },
            offset_ms: Some(round3(e.offset_us / 1000.0)),
            uncertainty_ms: Some(round3(e.uncertainty_us / 1000.0)),
            drift_ppm: Some(round3(e.drift_ppm)),
            exchanges: e.samples,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Frames measured.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| round3(v as f64 / 1000.0);
        Some(Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            count: h.len(),
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One stats record: a per-interval line or the summary at exit. Field meanings and units
/// are listed in the README ("Stats"). It reads back from JSON as it was written; fields it
/// does not know are ignored, and a required one missing is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: RecordType,
    pub role: Side,
    /// Seconds since the side started, at the end of this span.
    pub t: f64,
    /// Length of this span in seconds.
    pub seconds: f64,
    /// Frames through the side's last stage: sent (sender) or decoded (receiver).
    pub frames: u64,
    pub fps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displayed: Option<u64>,
    pub bytes: u64,
    pub kbps: f64,
    pub mean_frame_bytes: f64,
    pub quality: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f64>,
    /// Mean CPU time per frame of encoding (sender) or decoding (receiver), all threads
    /// together; present when the stage's codec had more than one thread for some frame of
    /// the span (`--encode-threads`, `--decode-threads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_cpu_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_cpu_ms: Option<f64>,
    /// Of the frames the stage coded in the span, those coded as slices on more than one
    /// thread; present with the CPU time. Fewer than all when slices did not pay for a while
    /// (both cores busy) or, decoding, for JPEGs without restart markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_sliced_frames: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_sliced_frames: Option<u64>,
    /// By [`DropCause::name`].
    pub drops: BTreeMap<String, u64>,
    pub drops_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_gaps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<u64>,
    /// Receiver: capture→encoded and capture→sent (sender's clock, always known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_capture_encoded_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_capture_sent_ms: Option<Percentiles>,
    /// Receiver, once the sender's clock is known: capture→received/decoded/displayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_capture_received_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_capture_decoded_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_capture_displayed_ms: Option<Percentiles>,
    /// Receiver: decoded→displayed (waiting for the view, and drawing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_decoded_displayed_ms: Option<Percentiles>,
    /// Sender: write → acknowledgement round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_rtt_ms: Option<Percentiles>,
    /// Receiver: frames whose latency is unknown (received before the clocks were synced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_unknown_frames: Option<u64>,
    /// Receiver: the sender's clock as seen from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
    /// Sender: the viewer's latest interval report, as it sent it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "sorted_keys")]
    pub viewer: Option<Box<Report>>,
    /// Sender: viewers connected (native and HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u64>,
    /// Sender: each viewer's link.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "sorted_keys")]
    pub links: Option<Vec<LinkReport>>,
    /// Sender: the rate controller's state at the end of the span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStatus>,
    /// Connections made again after one was lost (`--connect`); absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reconnects: u64,
    /// Sender: times the source failed mid-stream; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_losses: u64,
    /// Sender: frames re-encoded for RTSP viewers because RTP/JPEG (RFC 2435) cannot carry
    /// them as they are (4:4:4, grey, progressive, optimised Huffman tables); absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rtp_reencoded: u64,
    /// Sender: "no signal" frames sent while the source was lost; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub no_signal_frames: u64,
    /// Receiver (RTSP): frames shown with missing restart intervals taken from the previous
    /// frame; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub concealed: u64,
    /// UDP transport: data packets lost for good (never received nor rebuilt); absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub packets_lost: u64,
    /// UDP transport: data packets rebuilt from FEC parity; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fec_recovered: u64,
    /// UDP transport: packets sent again on a NACK (sender) or received that way (receiver);
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retransmitted: u64,
    /// UDP receiver: frames with nothing showable by their deadline; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frames_lost: u64,
    /// UDP receiver: unfinished frames given up because a newer one was complete first;
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_frames: u64,
    /// UDP sender: parity bytes sent, percent of the data bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fec_overhead_pct: Option<f64>,
    /// UDP: datagrams ignored (no handshake from that address, malformed, replayed, forged);
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub udp_ignored: u64,
    /// Sender, while the source is lost: since when (UTC, `YYYY-MM-DDTHH:MM:SSZ`) and for how
    /// many seconds at the end of this span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_lost_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_lost_s: Option<f64>,
}

/// ` (cpu 2.20)` after a threaded stage's wall time, ` (cpu 1.30, 12 of 30 sliced)` when it
/// coded some of its `coded` frames on one thread; nothing when it is not measured.
fn cpu_note(cpu_ms: Option<f64>, sliced: Option<u64>, coded: u64) -> String {
    match (cpu_ms, sliced) {
        (Some(ms), Some(n)) if n < coded => format!(" (cpu {ms:.2}, {n} of {coded} sliced)"),
        (Some(ms), _) => format!(" (cpu {ms:.2})"),
        (None, _) => String::new(),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Writes a nested record (`viewer`, `links`) with its keys sorted, as schema 2 always has:
/// those records used to pass through `serde_json::Value`, whose maps are sorted. Once a
/// report, not once a frame.
fn sorted_keys<T: Serialize, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(v).map_err(serde::ser::Error::custom)?.serialize(s)
}

/// Reads a rate where `null` means unlimited: `serde_json` writes an infinite `f64` as `null`.
pub(crate) fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

impl Report {
    /// Builds a report from the counters of a span of `seconds` ending `t` seconds after start.
    pub fn build(side: Side, kind: RecordType, c: &Counters, t: f64, seconds: f64) -> Report {
        let per_s = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        let mean_ms = |us: u64, n: u64| (n > 0).then(|| round3(us as f64 / n as f64 / 1000.0));
        let sender = side == Side::Sender;
        let frames = if sender { c.sent } else { c.decoded };
        let counted = if sender { c.sent } else { c.received };
        let mut r = Report {
            schema: SCHEMA,
            kind,
            role: side,
            t: round3(t),
            seconds: round3(seconds),
            frames,
            fps: round3(per_s(frames)),
            captured: sender.then_some(c.captured),
            encoded: sender.then_some(c.encoded),
            received: (!sender).then_some(c.received),
            displayed: (!sender).then_some(c.displayed),
            bytes: c.bytes,
            kbps: round3(per_s(c.bytes) * 8.0 / 1000.0),
            mean_frame_bytes: if counted > 0 { round3(c.bytes as f64 / counted as f64) } else { 0.0 },
            quality: c.quality,
            encode_ms: if sender { mean_ms(c.encode_us, c.encoded) } else { None },
            decode_ms: if sender { None } else { mean_ms(c.decode_us, c.decoded) },
            encode_cpu_ms: if sender && c.threaded > 0 { mean_ms(c.encode_cpu_us, c.encoded) } else { None },
            decode_cpu_ms: if !sender && c.threaded > 0 { mean_ms(c.decode_cpu_us, c.decoded) } else { None },
            encode_sliced_frames: (sender && c.threaded > 0).then_some(c.sliced),
            decode_sliced_frames: (!sender && c.threaded > 0).then_some(c.sliced),
            drops: c.drops.iter().map(|(k, v)| (k.name().to_owned(), *v)).collect(),
            drops_total: c.drops.values().sum(),
            seq_gaps: (!sender).then_some(c.seq_gaps),
            out_of_order: (!sender).then_some(c.out_of_order),
            latency_capture_encoded_ms: None,
            latency_capture_sent_ms: None,
            latency_capture_received_ms: None,
            latency_capture_decoded_ms: None,
            latency_capture_displayed_ms: None,
            latency_decoded_displayed_ms: None,
            ack_rtt_ms: None,
            latency_unknown_frames: (!sender).then_some(c.latency_unknown),
            clock: c.clock,
            viewer: c.viewer.clone(),
            viewers: if sender { c.viewers } else { None },
            links: if sender { c.links.clone() } else { None },
            control: c.control.clone(),
            reconnects: c.reconnects,
            source_losses: c.source_losses,
            rtp_reencoded: c.rtp_reencoded,
            no_signal_frames: c.no_signal_frames,
            concealed: c.concealed,
            packets_lost: c.udp.packets_lost,
            fec_recovered: c.udp.fec_recovered,
            retransmitted: c.udp.retransmitted,
            frames_lost: c.udp.frames_lost,
            late_frames: c.udp.late_frames,
            fec_overhead_pct: c.udp.fec_overhead_pct().map(round3),
            udp_ignored: c.udp.ignored,
            source_lost_since: c.source_lost.map(|l| l.utc()),
            source_lost_s: c.source_lost.map(|l| round3(l.at.elapsed().as_secs_f64())),
        };
        for stage in Stage::ALL {
            *r.latency_mut(stage) = Percentiles::of(c.histogram(stage));
        }
        r
    }

    /// The percentiles of one latency stage, if measured in this span.
    pub fn latency(&self, stage: Stage) -> Option<Percentiles> {
        match stage {
            Stage::CaptureEncoded => self.latency_capture_encoded_ms,
            Stage::CaptureSent => self.latency_capture_sent_ms,
            Stage::CaptureReceived => self.latency_capture_received_ms,
            Stage::CaptureDecoded => self.latency_capture_decoded_ms,
            Stage::CaptureDisplayed => self.latency_capture_displayed_ms,
            Stage::DecodedDisplayed => self.latency_decoded_displayed_ms,
            Stage::AckRtt => self.ack_rtt_ms,
        }
    }

    fn latency_mut(&mut self, stage: Stage) -> &mut Option<Percentiles> {
        match stage {
            Stage::CaptureEncoded => &mut self.latency_capture_encoded_ms,
            Stage::CaptureSent => &mut self.latency_capture_sent_ms,
            Stage::CaptureReceived => &mut self.latency_capture_received_ms,
            Stage::CaptureDecoded => &mut self.latency_capture_decoded_ms,
            Stage::CaptureDisplayed => &mut self.latency_capture_displayed_ms,
            Stage::DecodedDisplayed => &mut self.latency_decoded_displayed_ms,
            Stage::AckRtt => &mut self.ack_rtt_ms,
        }
    }

    /// Frames dropped for `cause` in this span.
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops.get(cause.name()).copied().unwrap_or(0)
    }

    /// The viewer's latency from capture to the end of its pipeline ([`Stage::END_TO_END`]).
    pub fn end_to_end(&self) -> Option<Percentiles> {
        Stage::END_TO_END.into_iter().find_map(|stage| self.latency(stage))
    }

    /// The line a person reads on stderr.
    /// What follows the encode wall time in the text: CPU time, and how many frames were
    /// sliced if not all.
    fn encode_note(&self) -> String {
        cpu_note(self.encode_cpu_ms, self.encode_sliced_frames, self.encoded.unwrap_or(0))
    }

    fn decode_note(&self) -> String {
        cpu_note(self.decode_cpu_ms, self.decode_sliced_frames, self.frames)
    }

    pub fn human_line(&self) -> String {
        let mut s = format!(
            "{:<8} {:>6.1} fps {:>8.0} kbit/s {:>7.1} KB/frame",
            match self.role {
                Side::Sender => "send",
                Side::Receiver => "recv",
            },
            self.fps,
            self.kbps,
            self.mean_frame_bytes / 1000.0,
        );
        match self.quality {
            Some(0) => s.push_str("  q cam"),
            Some(q) => s.push_str(&format!("  q{q:<3}")),
            None => s.push_str("  q -  "),
        }
        if let Some(c) = &self.control {
            let rate = if c.rate_kbps.is_finite() { format!("{:.0}", c.rate_kbps) } else { "-".into() };
            let half = if c.half_size { " half size" } else { "" };
            s.push_str(&format!("  ctl q{} {:.1} fps{half} rate {rate} kbit/s", c.quality, c.fps));
        }
        if let Some(ms) = self.encode_ms {
            s.push_str(&format!("  enc {ms:.2} ms{}", self.encode_note()));
        }
        if let Some(ms) = self.decode_ms {
            s.push_str(&format!("  dec {ms:.2} ms{}", self.decode_note()));
        }
        self.push_latency(&mut s);
        self.push_counts(&mut s);
        s
    }

    /// The latency part of [`human_line`](Self::human_line): end to end (with the clock's
    /// uncertainty when synced) and the ack round trip.
    fn push_latency(&self, s: &mut String) {
        if let Some(p) = self.end_to_end() {
            s.push_str(&format!("  latency p50/p95/p99 {:.1}/{:.1}/{:.1} ms", p.p50, p.p95, p.p99));
            if let Some(ClockStatus { source: ClockSource::Synced, uncertainty_ms: Some(u), .. }) = self.clock {
                s.push_str(&format!(" (clock synced ±{u:.2} ms)"));
            }
            if self.clock.is_some_and(|c| c.source == ClockSource::Rtcp) {
                s.push_str(" (RTCP wall clock: as exact as the hosts' clocks agree)");
            }
        } else if self.role == Side::Receiver {
            s.push_str("  latency unknown");
        }
        if let Some(p) = self.ack_rtt_ms {
            s.push_str(&format!("  ack rtt p50 {:.1} ms", p.p50));
        }
    }

    /// The tail of [`human_line`](Self::human_line): drops, viewers, reconnects, a lost
    /// source and the viewer's own figures.
    fn push_counts(&self, s: &mut String) {
        s.push_str(&format!("  drops {}", self.drops_total));
        if self.drops_total > 0 {
            let parts: Vec<String> = self.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", parts.join(" ")));
        }
        if let Some(n) = self.viewers {
            s.push_str(&format!("  viewers {n}"));
        }
        if self.reconnects > 0 {
            s.push_str(&format!("  reconnects {}", self.reconnects));
        }
        if self.concealed > 0 {
            s.push_str(&format!("  concealed {}", self.concealed));
        }
        if let Some(udp) = self.udp_figures() {
            s.push_str(&format!("  udp {udp}"));
        }
        if let (Some(since), Some(secs)) = (&self.source_lost_since, self.source_lost_s) {
            s.push_str(&format!("  SOURCE LOST since {since} ({secs:.0} s, no-signal frames sent)"));
        }
        if let Some(v) = &self.viewer {
            s.push_str(&format!("  | viewer {:.1} fps", v.fps));
            match v.end_to_end() {
                Some(p) => s.push_str(&format!(" latency p95 {:.1} ms", p.p95)),
                None => s.push_str(" latency unknown"),
            }
        }
    }

    /// The UDP transport's figures that are not zero (`lost 3 fec 12 rtx 5 ...`), or `None`
    /// when all are (another transport, or a clean link).
    pub fn udp_figures(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (name, n) in [
            ("lost", self.packets_lost),
            ("fec", self.fec_recovered),
            ("rtx", self.retransmitted),
            ("frames lost", self.frames_lost),
            ("late", self.late_frames),
            ("ignored", self.udp_ignored),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if let Some(pct) = self.fec_overhead_pct.filter(|p| *p > 0.0) {
            parts.push(format!("fec overhead {pct:.1}%"));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The multi-line summary printed at exit.
    pub fn summary_text(&self) -> String {
        let mut s = format!(
            "{} summary: {} frames in {:.1} s = {:.1} fps, {} bytes = {:.0} kbit/s, mean frame {:.0} bytes",
            self.role.name(),
            self.frames,
            self.seconds,
            self.fps,
            self.bytes,
            self.kbps,
            self.mean_frame_bytes
        );
        if let Some(ms) = self.encode_ms {
            s.push_str(&format!(", encode {ms:.2} ms{}", self.encode_note()));
        }
        if let Some(ms) = self.decode_ms {
            s.push_str(&format!(", decode {ms:.2} ms{}", self.decode_note()));
        }
        for stage in Stage::LISTED {
            if let Some(p) = self.latency(stage) {
                let name = stage.label();
                s.push_str(&format!("; {name} p50/p95/p99/max {:.2}/{:.2}/{:.2}/{:.2} ms", p.p50, p.p95, p.p99, p.max));
            }
        }
        s.push_str(&format!("; drops {}", self.drops_total));
        if self.drops_total > 0 {
            let parts: Vec<String> = self.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", parts.join(" ")));
        }
        if let (Some(g), Some(o)) = (self.seq_gaps, self.out_of_order) {
            s.push_str(&format!("; sequence gaps {g}, out of order {o}"));
        }
        if self.reconnects > 0 {
            s.push_str(&format!("; reconnects {}", self.reconnects));
        }
        if self.concealed > 0 {
            s.push_str(&format!("; {} frames concealed (missing slices from the previous frame)", self.concealed));
        }
        if let Some(udp) = self.udp_figures() {
            s.push_str(&format!("; udp {udp}"));
        }
        if self.source_losses > 0 {
            s.push_str(&format!(
                "; source lost {} times, {} no-signal frames",
                self.source_losses, self.no_signal_frames
            ));
        }
        if self.rtp_reencoded > 0 {
            s.push_str(&format!("; {} frames re-encoded for RTP/JPEG", self.rtp_reencoded));
        }
        if let Some(since) = &self.source_lost_since {
            s.push_str(&format!("; source lost since {since}"));
        }
        if let Some(n) = self.latency_unknown_frames.filter(|n| *n > 0) {
            s.push_str(&format!("; {n} frames before the clock was known"));
        }
        if let Some(ClockStatus { source, offset_ms: Some(o), uncertainty_ms: Some(u), drift_ppm: Some(d), .. }) =
            self.clock
        {
            let source = source.name();
            s.push_str(&format!("; sender clock {source}, offset {o:.3} ms ±{u:.3}, drift {d:.1} ppm"));
        }
        s
    }
}

/// Reads a `--stats-json` log: one [`Report`] a line, blank lines skipped. An error names the
/// file, the line and what was wrong with it.
pub fn read_json_lines(path: &Path) -> anyhow::Result<Vec<Report>> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut reports = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        reports.push(parse_report(line.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?);
    }
    Ok(reports)
}

/// Parses one stats record, saying whether the input was not JSON at all or JSON that is not
/// a stats record (and which field was wrong). A sender's record may carry its viewer's record
/// (`viewer`), which carries none: deeper nesting is refused before the typed parse recurses
/// into it (each level of `Report` costs the parser kilobytes of stack, and a 64 KiB record
/// from the network could otherwise nest a hundred of them).
pub fn parse_report(json: &[u8]) -> anyhow::Result<Report> {
    parse_nested(json, 1)
}

/// Parses the stats record a viewer sent over the wire: a receiver's own record, which never
/// carries a `viewer` record of its own (the sender nests it under its own record).
pub fn parse_viewer_report(json: &[u8]) -> anyhow::Result<Report> {
    parse_nested(json, 0)
}

/// Parses a record whose chain of `viewer` records is at most `depth` deep.
fn parse_nested(json: &[u8], depth: usize) -> anyhow::Result<Report> {
    // serde_json's `Value` parser limits nesting itself (128 levels, little stack each).
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| anyhow::anyhow!("not JSON; expected a framecast --stats-json log: {e}"))?;
    let mut level = &v;
    for _ in 0..=depth {
        match level.get("viewer") {
            Some(inner) => level = inner,
            None => return serde_json::from_value(v).map_err(|e| anyhow::anyhow!("not a framecast stats record: {e}")),
        }
    }
    anyhow::bail!("not a framecast stats record: viewer reports nested more than {depth} deep")
}

/// The schema fixture: `testdata/stats-v2.jsonl` and `testdata/stats-v2.txt` were written by
/// the code before `Report` was typed, from the counters built here. Any change to a field's
/// name, order, presence or format, or to the human text, fails these tests.
#[cfg(test)]
mod schema {
    use std::time::Instant;

    use super::*;
    use crate::hub::ViewerKind;
    use crate::stats::SourceLost;

    const JSONL: &str = include_str!("../testdata/stats-v2.jsonl");
    const TEXT: &str = include_str!("../testdata/stats-v2.txt");

    fn record(h: &mut Histogram<u64>, base_us: u64, n: u64) {
        for i in 0..n {
            h.record(base_us + i * 37).unwrap();
        }
    }

    fn receiver_counters() -> Counters {
        let mut c = Counters {
            received: 31,
            decoded: 30,
            displayed: 29,
            bytes: 812_345,
            decode_us: 36_123,
            quality: Some(75),
            seq_gaps: 1,
            out_of_order: 0,
            latency_unknown: 2,
            clock: Some(ClockStatus::from_estimate(
                false,
                &crate::clock::Estimate {
                    offset_us: 3_600_000_123.456_7,
                    drift_ppm: 99.87654,
                    uncertainty_us: 51.2345,
                    at_us: 0,
                    samples: 9,
                },
            )),
            ..Default::default()
        };
        c.drop_frame(DropCause::DecoderBusy);
        c.drop_frame(DropCause::DisplayBusy);
        c.drop_frame(DropCause::DisplayBusy);
        record(&mut c.lat_encoded, 1_200, 30);
        record(&mut c.lat_sent, 1_500, 30);
        record(&mut c.lat_received, 2_100, 30);
        record(&mut c.lat_decoded, 3_300, 30);
        record(&mut c.lat_displayed, 3_900, 29);
        record(&mut c.lat_shown, 450, 29);
        c
    }

    fn control(mode: &'static str, rate_kbps: f64) -> ControlStatus {
        ControlStatus {
            mode: mode.into(),
            quality: 62,
            fps: 27.5,
            half_size: true,
            rate_kbps,
            predicted_kbps: 4_321.0,
            delivered_kbps: 4_100.0,
            latency_p95_ms: Some(48.2),
            in_flight: 3,
            reason: "latency p95 48.2 ms over 40 ms".into(),
        }
    }

    fn links() -> Vec<LinkReport> {
        vec![
            LinkReport {
                id: 1,
                kind: ViewerKind::new("native"),
                peer: "127.0.0.1:40001".into(),
                seconds: 12.345,
                frames: 300,
                bytes: 7_654_321,
                drops: 4,
                rtcp_loss_pct: None,
                rtcp_jitter_ms: None,
                udp: None,
            },
            LinkReport {
                id: 3,
                kind: ViewerKind::new("http"),
                peer: "[::1]:40002".into(),
                seconds: 0.5,
                frames: 15,
                bytes: 400_000,
                drops: 0,
                rtcp_loss_pct: None,
                rtcp_jitter_ms: None,
                udp: None,
            },
        ]
    }

    fn sender_counters(viewer: &Report) -> Counters {
        let mut c = Counters {
            captured: 33,
            encoded: 31,
            sent: 30,
            bytes: 812_345,
            encode_us: 31_234,
            quality: Some(62),
            viewers: Some(2),
            reconnects: 1,
            source_losses: 1,
            no_signal_frames: 4,
            source_lost: Some(SourceLost { unix_ms: 1_700_000_000_123, at: Instant::now() }),
            ..Default::default()
        };
        c.drop_frame(DropCause::EncoderBusy);
        c.drop_frame(DropCause::Congestion);
        c.drop_frame(DropCause::RateLimit);
        record(&mut c.ack_rtt, 2_700, 30);
        // As the sender gets it: off the wire.
        c.viewer = Some(Box::new(parse_report(&serde_json::to_vec(viewer).unwrap()).unwrap()));
        c.links = Some(links());
        c.control = Some(control("latency", f64::INFINITY));
        c
    }

    /// Today's four records: sender interval, receiver interval, receiver summary, sender
    /// summary. `source_lost_s` depends on the time elapsed, so it is pinned.
    fn reports() -> Vec<Report> {
        let r_int = Report::build(Side::Receiver, RecordType::Interval, &receiver_counters(), 5.0004, 1.0012);
        let mut s_int = Report::build(Side::Sender, RecordType::Interval, &sender_counters(&r_int), 5.1234, 0.9996);
        s_int.source_lost_s = Some(2.5);
        let r_sum = Report::build(Side::Receiver, RecordType::Summary, &receiver_counters(), 12.25, 11.75);
        let mut c = sender_counters(&r_int);
        c.source_lost = None;
        c.control = Some(control("target+latency", 5_000.0));
        let s_sum = Report::build(Side::Sender, RecordType::Summary, &c, 12.5, 12.0);
        vec![s_int, r_int, r_sum, s_sum]
    }

    fn jsonl(reports: &[Report]) -> String {
        reports.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
    }

    fn text(reports: &[Report]) -> String {
        let [s_int, r_int, r_sum, s_sum] = reports else { panic!("four reports") };
        [s_int.human_line(), r_int.human_line(), r_sum.summary_text(), s_sum.summary_text()]
            .iter()
            .map(|l| l.clone() + "\n")
            .collect()
    }

    #[test]
    fn counters_serialise_to_the_fixture() {
        let reports = reports();
        assert_eq!(jsonl(&reports), JSONL);
        assert_eq!(text(&reports), TEXT);
    }

    #[test]
    fn the_fixture_reads_back_and_writes_the_same_bytes() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/stats-v2.jsonl"));
        let read = read_json_lines(path).unwrap();
        assert_eq!(jsonl(&read), JSONL);
        assert_eq!(text(&read), TEXT);
        // Typed all the way down: the viewer's report, the links, the controller's state.
        let v = read[0].viewer.as_deref().expect("a nested viewer report");
        assert_eq!((v.role, v.kind), (Side::Receiver, RecordType::Interval));
        assert_eq!(v.clock.map(|c| c.source), Some(ClockSource::Synced));
        assert_eq!(read[0].links.as_ref().map(|l| l[1].kind.clone()), Some(ViewerKind::new("http")));
        assert_eq!(read[0].control.as_ref().map(|c| c.rate_kbps), Some(f64::INFINITY));
        assert_eq!(read, reports());
    }

    /// Threaded stages add their CPU time after the wall time, and the frames they sliced,
    /// in the JSON and the text (the count in the text only when some frame was not sliced);
    /// the fixture's counters (one thread) have neither.
    #[test]
    fn threaded_records_carry_cpu_time_and_sliced_frames() {
        let receiver = Counters {
            decoded: 4,
            decode_us: 4_400,
            decode_cpu_us: 8_810,
            threaded: 4,
            sliced: 4,
            ..Default::default()
        };
        let r = Report::build(Side::Receiver, RecordType::Interval, &receiver, 1.0, 1.0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""decode_ms":1.1,"decode_cpu_ms":2.203,"decode_sliced_frames":4,"drops""#), "{json}");
        assert!(!json.contains("encode_cpu_ms") && !json.contains("encode_sliced"), "{json}");
        assert!(r.human_line().contains("  dec 1.10 ms (cpu 2.20)  "), "{}", r.human_line());
        assert_eq!(parse_report(json.as_bytes()).unwrap(), r);
        // A camera's JPEGs without restart markers: one of four decoded in pieces.
        let partly = Counters { sliced: 1, ..receiver.clone() };
        let r = Report::build(Side::Receiver, RecordType::Interval, &partly, 1.0, 1.0);
        assert!(r.human_line().contains("  dec 1.10 ms (cpu 2.20, 1 of 4 sliced)  "), "{}", r.human_line());
        let sender = Counters {
            encoded: 2,
            encode_us: 3_000,
            encode_cpu_us: 5_000,
            threaded: 2,
            sliced: 0,
            ..Default::default()
        };
        let s = Report::build(Side::Sender, RecordType::Summary, &sender, 1.0, 1.0);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""encode_ms":1.5,"encode_cpu_ms":2.5,"encode_sliced_frames":0,"drops""#), "{json}");
        assert!(s.summary_text().contains(", encode 1.50 ms (cpu 2.50, 0 of 2 sliced);"), "{}", s.summary_text());
        assert_eq!(parse_report(json.as_bytes()).unwrap(), s);
        // Measured, but on one thread: not shown.
        let one = Counters { threaded: 0, ..sender };
        let s = Report::build(Side::Sender, RecordType::Summary, &one, 1.0, 1.0);
        assert!(s.encode_cpu_ms.is_none() && s.encode_sliced_frames.is_none(), "{s:?}");
        assert!(!s.summary_text().contains("cpu"), "{}", s.summary_text());
        for r in reports() {
            assert!(r.encode_cpu_ms.is_none() && r.decode_cpu_ms.is_none());
            assert!(r.encode_sliced_frames.is_none() && r.decode_sliced_frames.is_none());
        }
    }

    #[test]
    fn a_dropped_or_renamed_field_fails_the_round_trip() {
        let line = JSONL.lines().next().unwrap();
        for (from, to) in
            [("\"fps\":", "\"fps_x\":"), ("\"no_signal_frames\":", "\"no_signal\":"), ("\"p95\":", "\"p_95\":")]
        {
            let changed = line.replacen(from, to, 1);
            let back = parse_report(changed.as_bytes()).map(|r| serde_json::to_string(&r).unwrap());
            assert!(back.as_deref().ok() != Some(changed.as_str()), "{from} -> {to} survived");
        }
    }

    #[test]
    fn stage_keys_are_the_schema_fields() {
        for stage in Stage::ALL {
            let mut r = Report::build(Side::Receiver, RecordType::Interval, &Counters::default(), 1.0, 1.0);
            let p = Percentiles { p50: 1.0, p95: 2.0, p99: 3.0, max: 4.0, count: 5 };
            *r.latency_mut(stage) = Some(p);
            assert_eq!(r.latency(stage), Some(p));
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v[stage.key()]["count"], 5, "{stage:?}: {v}");
        }
    }

    #[test]
    fn names_are_the_json_strings() {
        for side in [Side::Sender, Side::Receiver] {
            assert_eq!(serde_json::to_value(side).unwrap(), side.name());
        }
        for source in [ClockSource::Shared, ClockSource::Synced, ClockSource::Unknown, ClockSource::Rtcp] {
            assert_eq!(serde_json::to_value(source).unwrap(), source.name());
        }
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        for bad in [&b"not json"[..], b"", b"[1,2]", b"{\"fps\":3}", b"{\"type\":\"interval\",\"role\":\"sender\"}"] {
            assert!(parse_report(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A viewer's report cut anywhere (it is read off the wire) is an error, never a panic.
        let line = JSONL.lines().next().unwrap().as_bytes();
        for cut in 0..line.len() {
            assert!(parse_report(&line[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_report(line).is_ok());
        assert!(format!("{}", parse_report(b"nope").unwrap_err()).contains("not JSON"));
        // Nested viewer reports: one level is a sender's record; more is refused, however
        // deep, without recursing into it (a hundred levels used to overflow the stack).
        // A receiver's own record: the fixture's one line with no viewer record in it.
        let own = JSONL.lines().find(|l| !l.contains(r#""viewer""#)).unwrap().as_bytes();
        let nested = |depth: usize| {
            let mut json = own.to_vec();
            for _ in 0..depth {
                let mut outer = own[..own.len() - 1].to_vec();
                outer.extend_from_slice(b",\"viewer\":");
                outer.extend_from_slice(&json);
                outer.push(b'}');
                json = outer;
            }
            json
        };
        assert!(parse_report(&nested(1)).is_ok());
        assert!(parse_viewer_report(&nested(0)).is_ok());
        let e = parse_viewer_report(&nested(1)).unwrap_err().to_string();
        assert!(e.contains("viewer reports nested more than 0 deep"), "{e}");
        for depth in [2, 100, 127] {
            let e = parse_report(&nested(depth)).unwrap_err().to_string();
            assert!(e.contains("nested more than 1 deep") || e.contains("recursion limit"), "{depth}: {e}");
        }
        let e = format!("{}", parse_report(br#"{"schema":2,"type":"interval"}"#).unwrap_err());
        assert!(e.contains("not a framecast stats record") && e.contains("role"), "{e}");
    }

    #[test]
    fn read_errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("fc-stats-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.jsonl");
        std::fs::write(&p, format!("{}\n\n{{\"type\":\"summary\"}}\n", JSONL.lines().next().unwrap())).unwrap();
        let e = format!("{}", read_json_lines(&p).unwrap_err());
        assert!(e.contains("x.jsonl:3: not a framecast stats record") && e.contains("missing field"), "{e}");
        let e = format!("{}", read_json_lines(&dir.join("none.jsonl")).unwrap_err());
        assert!(e.contains("cannot read") && e.contains("none.jsonl"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
