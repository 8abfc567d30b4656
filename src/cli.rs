//! The command line (clap derive), and its validation into the checked configs that the
//! pipelines take. Every invalid value is rejected here with a message naming the flag.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::warn;

use crate::capture::camera::CameraSource;
use crate::capture::fault::{self, Fault, FlakyOpener};
use crate::capture::pattern::PatternSource;
use crate::capture::range::InputRange;
use crate::capture::raw::InputFormat;
use crate::capture::y4m::Y4mSource;
use crate::capture::{CaptureError, FrameSource, SourceSpec};
use crate::clock::ClockSkew;
use crate::codec::Speed;
use crate::control::ControlConfig;
use crate::format::Subsampling;
use crate::net::proto::{MAX_DIMENSION, MAX_PIXELS};
use crate::net::secure::{Key, KEY_ENV};
use crate::receiver::{self, DumpConfig, RecvConfig};
use crate::sender::{self, SendConfig, SourceFactory};
use crate::stats::{JsonLog, StatsConfig};

pub const DEFAULT_PORT: u16 = 8089;

/// Stream a camera (or a test pattern) as JPEG over TCP, with fps and latency stats.
#[derive(Debug, Parser)]
#[command(name = "framecast", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Capture, encode and stream.
    Send(SendArgs),
    /// Receive, decode and show.
    Recv(RecvArgs),
    /// Sender and receiver in one process over 127.0.0.1 (a window if a display exists).
    Demo(DemoArgs),
    /// List cameras and their formats.
    Cameras,
    /// Summarise --stats-json logs as a table, and plot them with --svg.
    Report(ReportArgs),
    /// Relay TCP through a simulated slow link (rate, delay, jitter, router queue, stalls).
    Netsim(NetsimArgs),
    /// Write a new random pre-shared key to PATH (mode 0600) for --key-file.
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (64 hex digits and a newline); an existing file is not replaced.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// The pre-shared key.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Access control")]
pub struct KeyArgs {
    /// Pre-shared key file: 64 hex digits (make one with `framecast keygen PATH`). Both ends
    /// need the same key: peers prove they hold it, everything after the handshake is
    /// encrypted and authenticated, and HTTP requires a token derived from it.
    /// [default: $FRAMECAST_KEY_FILE when set]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key from `--key-file`, else from the file `FRAMECAST_KEY_FILE` names (an empty
    /// variable counts as unset).
    pub fn load(&self) -> anyhow::Result<Option<Key>> {
        if let Some(path) = &self.key_file {
            return Key::load(path).map(Some).context("--key-file");
        }
        match std::env::var_os(KEY_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Key::load(Path::new(&path)).map(Some).context(KEY_ENV),
            None => Ok(None),
        }
    }
}

/// Warns about a socket that other hosts can reach while no key protects it.
fn warn_if_open(flag: &str, addr: SocketAddr, key: Option<&Key>) {
    if key.is_none() && !addr.ip().is_loopback() {
        warn!(
            "{flag} {addr}: reachable from other hosts without a key: anyone on the network can connect; \
             use --key-file (see `framecast keygen`) or a loopback address"
        );
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Stats logs written with --stats-json (sender's, receiver's, several runs).
    #[arg(required = true, value_name = "LOG.jsonl")]
    pub logs: Vec<PathBuf>,
    /// Also plot fps, kbit/s, quality and latency p50/p95 over time to this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
}

/// How frames travel between `send` and `recv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// framecast's protocol over TCP.
    #[default]
    Tcp,
    /// RTP/JPEG packets over UDP that ride out packet loss.
    Udp,
}

/// On or off (the hidden UDP knobs for tests and experiments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    #[default]
    On,
    Off,
}

/// `--transport`'s help, shared by `send`, `recv` and `demo`.
const TRANSPORT_HELP: &str = "How frames travel: 'tcp' (framecast's protocol over TCP, the default) or 'udp' \
(RTP/JPEG packets over one UDP socket per side, for lossy links such as Wi-Fi: a lost packet is asked for again \
(NACK) only while its frame can still be shown in time, forward error correction is sized to the loss the viewer \
reports, rows still missing are concealed from the previous frame, and the sender paces packets at a rate of its \
own congestion control, never above what the viewer's receipts show delivered). --key-file seals every datagram.";

fn bind_udp(addr: SocketAddr, flag: &str) -> anyhow::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind(addr).with_context(|| format!("{flag} {addr}: cannot bind a udp socket there"))
}

/// JPEG chroma subsampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubsamplingArg {
    #[value(name = "420")]
    S420,
    #[value(name = "422")]
    S422,
    #[value(name = "444")]
    S444,
    Gray,
}

impl From<SubsamplingArg> for Subsampling {
    fn from(s: SubsamplingArg) -> Self {
        match s {
            SubsamplingArg::S420 => Subsampling::S420,
            SubsamplingArg::S422 => Subsampling::S422,
            SubsamplingArg::S444 => Subsampling::S444,
            SubsamplingArg::Gray => Subsampling::Gray,
        }
    }
}

/// A frame size, WIDTHxHEIGHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected WIDTHxHEIGHT like 1280x720, each 1..={MAX_DIMENSION}");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(bad());
        }
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(format!("{width}x{height} is over the limit of {MAX_PIXELS} pixels (8K UHD)"));
        }
        Ok(Size { width, height })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| "expected seconds, e.g. 10 or 2.5".to_string())?;
    if !(secs > 0.0 && secs < 1e9) {
        return Err("expected a positive number of seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub use crate::codec::threads::{CodecThreads, ThreadsBySize};

/// What to capture and how to encode it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Source and encoding")]
pub struct SourceArgs {
    /// 'test' (built-in test pattern), 'camera', 'camera:N', a FILE.y4m, '-' (standard input),
    /// a FIFO or file of MJPEG, Y4M or raw frames, http://[USER:PASS@]HOST/PATH (multipart
    /// MJPEG or a JPEG snapshot) or rtsp://[USER:PASS@]HOST[:PORT]/PATH (M-JPEG). See README
    /// "Cameras".
    #[arg(long, default_value = "test")]
    pub source: SourceSpec,
    /// What a pipe or file carries: 'auto' recognises MJPEG and Y4M from the first bytes; raw
    /// frames need their format named, and --size.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto, value_name = "FORMAT")]
    pub input_format: InputFormat,
    /// The range of a Y4M file's or a pipe's YUV samples: 'limited' (video levels, Y 16-235:
    /// ffmpeg's yuv420p, rpicam-vid) is stretched to JPEG's full 0-255, else pictures come out
    /// washed out; 'auto' takes a Y4M header's XCOLORRANGE, else limited. RGB input is always
    /// full range.
    #[arg(long, value_enum, default_value_t = InputRange::Auto, value_name = "auto|full|limited")]
    pub input_range: InputRange,
    /// Frame size WIDTHxHEIGHT [default: 1280x720; a Y4M file's own size]. Raw frames from a
    /// pipe need it; for MJPEG from a pipe or the network it only caps the bytes of an image
    /// (4 a pixel): images keep their own size (framecast does not scale).
    #[arg(long, value_name = "WxH")]
    pub size: Option<Size>,
    /// Frames per second; 0 = as fast as possible (for benchmarks).
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// JPEG quality [default: 75]. Given explicitly, a camera's MJPEG is re-encoded at it.
    #[arg(long, value_name = "1-100", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Chroma subsampling [default: 420; a Y4M file's own].
    #[arg(long, value_enum)]
    pub subsampling: Option<SubsamplingArg>,
    /// Start a file source (Y4M, MJPEG or raw) over when it ends.
    #[arg(long = "loop")]
    pub looping: bool,
    /// libjpeg-turbo's fast integer DCT: less encode time, slightly lower quality.
    #[arg(long)]
    pub fast_dct: bool,
    /// Encode each frame as N horizontal slices on N threads, joined at restart markers into
    /// one standard JPEG. 'auto' (or 0): 1 below 1280x720, else one per core, at most one per
    /// 128 rows. See README "Slices".
    ///
    /// Measured on 2 cores under load, median wall ms per frame on 1 -> 2 threads: 640x480
    /// 0.34 -> 0.30, 1280x720 1.10 -> 0.79, 1920x1080 2.42 -> 1.82. Below 1280x720 a second
    /// thread saves about 0.1 ms or less, for 0.6 % more bytes (restart markers). While
    /// slices give less than 1.25x (the cores are busy with other work), frames are encoded
    /// on one thread for a while, with the same restart markers.
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pub encode_threads: CodecThreads,
}

/// libjpeg-turbo's faster decoding settings (off by default: they cost image quality).
#[derive(Debug, Args, Clone, Copy)]
#[command(next_help_heading = "Decoding")]
pub struct DecodeArgs {
    /// Nearest-neighbour chroma upsampling instead of the smooth one: less decode time,
    /// blockier colour edges.
    #[arg(long)]
    pub fast_upsample: bool,
    /// libjpeg-turbo's fast integer inverse DCT: less decode time, slightly lower quality.
    #[arg(long)]
    pub fast_idct: bool,
    /// Decode each JPEG that has restart markers on N threads, split at those markers (a JPEG
    /// without them decodes on one). 'auto' (or 0): 1 below 1280x720, else one per core, at
    /// most one per 128 rows. See README "Slices".
    ///
    /// Measured on 2 cores under load, median wall ms per frame on 1 -> 2 threads: 640x480
    /// 0.33 -> 0.29, 1280x720 1.05 -> 0.79, 1920x1080 2.50 -> 1.67. While slices give less
    /// than 1.25x (the cores are busy with other work), JPEGs are decoded on one thread for a
    /// while.
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pub decode_threads: CodecThreads,
}

impl From<DecodeArgs> for Speed {
    fn from(d: DecodeArgs) -> Speed {
        Speed { fast_dct: d.fast_idct, fast_upsample: d.fast_upsample }
    }
}

/// When to stop, and where stats go.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Run length and stats")]
pub struct RunArgs {
    /// Stop after N frames (sent, or decoded by the receiver).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write one JSON object per line per interval, and a final "summary" object, to PATH.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Seconds between stats lines.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// Measure nothing and print no stats (to see what measuring costs).
    #[arg(long, conflicts_with_all = ["stats_json"])]
    pub no_stats: bool,
}

impl RunArgs {
    fn stats(&self) -> StatsConfig {
        StatsConfig {
            interval: self.stats_interval,
            json: self.stats_json.clone().map(JsonLog::new),
            enabled: !self.no_stats,
        }
    }
}

/// Congestion control and the rate controller (sender).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Congestion and rate control")]
pub struct LinkArgs {
    /// Keep the sent bit rate near KBPS kbit/s: quality moves within --min-quality and
    /// --max-quality, then the frame rate goes down.
    #[arg(long, value_name = "KBPS", value_parser = clap::value_parser!(u32).range(16..=10_000_000))]
    pub target_kbps: Option<u32>,
    /// Keep capture->received latency p95 under MS milliseconds, using the most bandwidth
    /// that allows (measured from acknowledgements). With --target-kbps: the lower of both.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(10..=60_000))]
    pub max_latency_ms: Option<u32>,
    /// Lowest quality the rate controller may choose.
    #[arg(long, value_name = "1-100", default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub min_quality: u8,
    /// Highest quality the rate controller may choose.
    #[arg(long, value_name = "1-100", default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_quality: u8,
    /// When the rate controller has quality at its minimum, halve the frame size before
    /// lowering the frame rate (raw sources: test pattern, Y4M, YUYV/NV12 cameras).
    #[arg(long)]
    pub allow_downscale: bool,
    /// Most frames written to a viewer and not yet acknowledged [default: 100 ms of video,
    /// at least 2]. Newer frames wait in a one-frame slot and replace each other.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_in_flight: Option<u32>,
    /// No bound on frames in flight and the kernel's default send queue: latency then grows
    /// on a link slower than the stream, as with other MJPEG streamers (for comparison).
    #[arg(long, conflicts_with_all = ["target_kbps", "max_latency_ms", "max_in_flight", "allow_downscale"])]
    pub no_congestion_control: bool,
}

impl LinkArgs {
    /// The congestion settings and the rate controller for a stream at `fps`.
    pub fn validate(&self, fps: u32) -> anyhow::Result<(Option<sender::Congestion>, Option<ControlConfig>)> {
        if self.min_quality > self.max_quality {
            bail!("--min-quality {} is above --max-quality {}", self.min_quality, self.max_quality);
        }
        let congestion = (!self.no_congestion_control).then(|| {
            let mut c = sender::Congestion::for_fps(fps);
            if let Some(n) = self.max_in_flight {
                c.max_in_flight = n as usize;
            }
            c
        });
        let control = ControlConfig {
            target_kbps: self.target_kbps,
            max_latency_ms: self.max_latency_ms,
            min_quality: self.min_quality,
            max_quality: self.max_quality,
            fps,
            allow_downscale: self.allow_downscale,
        };
        if !control.is_active() {
            if self.allow_downscale {
                bail!(
                    "--allow-downscale is a choice of the rate controller: give --target-kbps or --max-latency-ms too"
                );
            }
            return Ok((congestion, None));
        }
        if fps == 0 {
            bail!(
                "--{} needs a live frame rate: --fps 0 streams as fast as possible, which leaves nothing to control",
                if self.target_kbps.is_some() { "target-kbps" } else { "max-latency-ms" }
            );
        }
        Ok((congestion, Some(control)))
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Read flags from this TOML file first: each key is a long flag without `--` (`fps = 15`,
    /// `http = "0.0.0.0:8080"`, `once = true`); flags given here win (see `framecast::config`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Connect to a listening viewer at HOST:PORT [default: 127.0.0.1:8089], and again (with
    /// backoff) whenever it goes away.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "listen")]
    pub connect: Option<String>,
    /// With --connect: end when the viewer disconnects instead of reconnecting.
    #[arg(long, conflicts_with = "listen")]
    pub once: bool,
    /// Listen for viewers on ADDR:PORT (e.g. 0.0.0.0:8089), any number at once.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Also serve HTTP on ADDR:PORT: a page at /, MJPEG at /stream.mjpg, /snapshot.jpg and
    /// /stats (for browsers, VLC, ffmpeg, OpenCV). Without --connect/--listen, HTTP only.
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// Also publish to an RTSP server (ANNOUNCE + RECORD, TCP interleaved; MediaMTX, say),
    /// again with backoff whenever it goes away. Without --connect/--listen, RTSP only.
    #[arg(long, value_name = "rtsp://[USER:PASS@]HOST[:PORT]/PATH", value_parser = parse_publish)]
    pub publish: Option<Box<sender::publish::Target>>,
    /// Also serve RTSP on ADDR:PORT (e.g. 0.0.0.0:8554): RTP/JPEG at rtsp://HOST:PORT/stream
    /// over UDP or TCP, for VLC, ffmpeg, GStreamer and media servers. Without
    /// --connect/--listen, RTSP (and HTTP) only.
    #[arg(long, value_name = "ADDR:PORT")]
    pub rtsp: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp, value_name = "tcp|udp", help = "How frames travel: tcp (the default) or udp (for lossy links: NACK, FEC, concealment, its own congestion control)", long_help = TRANSPORT_HELP)]
    pub transport: TransportArg,
    /// UDP: forward error correction (off: none, for tests and experiments).
    #[arg(long, value_enum, default_value_t = OnOff::On, hide = true)]
    pub fec: OnOff,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `--publish`'s URL (boxed: it would make `Cmd::Send` much larger than the other commands).
fn parse_publish(s: &str) -> Result<Box<sender::publish::Target>, String> {
    s.parse().map(Box::new)
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Read flags from this TOML file first: each key is a long flag without `--` (`fps = 15`,
    /// `http = "0.0.0.0:8080"`, `once = true`); flags given here win (see `framecast::config`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen for senders on ADDR:PORT [default: 0.0.0.0:8089].
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "connect")]
    pub listen: Option<SocketAddr>,
    /// Connect to a listening sender at HOST:PORT, and again (with backoff) whenever it goes away.
    /// Or play an RTSP stream of RTP/JPEG: rtsp://[user:password@]host[:port]/path (any RTSP
    /// M-JPEG source: IP cameras, MediaMTX, GStreamer, `send --rtsp`). RTSP is not encrypted.
    #[arg(long, value_name = "HOST:PORT|rtsp://...")]
    pub connect: Option<String>,
    /// How RTP travels from an rtsp:// server. TCP (the default) is interleaved in the RTSP
    /// connection: it passes NAT and firewalls, and a frame's burst of packets is never lost
    /// to a full socket buffer or Wi-Fi, at the cost of waiting for retransmissions. UDP never
    /// waits: a lost packet costs its frame (or, with restart markers, only the rows it
    /// carried, taken from the previous frame).
    #[arg(long, value_enum, default_value_t = receiver::RtspTransport::Tcp, value_name = "tcp|udp")]
    pub rtsp_transport: receiver::RtspTransport,
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp, value_name = "tcp|udp", help = "How frames travel: tcp (the default) or udp (for lossy links: NACK, FEC, concealment, its own congestion control)", long_help = TRANSPORT_HELP)]
    pub transport: TransportArg,
    /// With --transport udp: the latency budget, capture to display. A frame still missing
    /// packets is shown concealed (or dropped) after at most half of it [default: the wait is
    /// three frame intervals or two round trips, at most 250 ms].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(10..=60_000))]
    pub max_latency_ms: Option<u32>,
    /// UDP: ask for lost packets again (off: FEC and concealment only, for tests and
    /// experiments).
    #[arg(long, value_enum, default_value_t = OnOff::On, hide = true)]
    pub udp_nack: OnOff,
    /// Decode, count and measure, but open no window.
    #[arg(long)]
    pub headless: bool,
    /// Exit when the first sender disconnects instead of waiting for the next (--listen) or
    /// reconnecting (--connect).
    #[arg(long)]
    pub once: bool,
    /// Save decoded frames as PPM files in DIR (every --dump-every'th frame).
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Ask the sender for this JPEG quality when connected (with a rate controller on the
    /// sender: the highest quality it may choose). In a window, Up/Down move it at runtime.
    #[arg(long, value_name = "1-100", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Write one CSV line per displayed frame to PATH: seq, size, bytes, quality, time, and
    /// capture->received/decoded/displayed latency in ms (empty until the clocks are synced).
    #[arg(long, value_name = "PATH")]
    pub frame_log: Option<PathBuf>,
    /// With --dump-dir: save frames whose sequence number is a multiple of N.
    #[arg(long, value_name = "N", default_value_t = 30, requires = "dump_dir", value_parser = clap::value_parser!(u64).range(1..))]
    pub dump_every: u64,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after SECS seconds [default: until the window closes or Ctrl-C].
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after N frames.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,
    /// No window, even if a display exists.
    #[arg(long)]
    pub headless: bool,
    /// Both sides' stats as JSON lines in one file, each record tagged by "role" ("sender" or
    /// "receiver"); `framecast report PATH` reads it. For a file per side use
    /// --send-stats-json and --recv-stats-json instead (not together with this one).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["send_stats_json", "recv_stats_json"])]
    pub stats_json: Option<PathBuf>,
    /// Sender stats as JSON lines (see `send --stats-json`).
    #[arg(long, value_name = "PATH")]
    pub send_stats_json: Option<PathBuf>,
    /// Receiver stats as JSON lines (see `recv --stats-json`).
    #[arg(long, value_name = "PATH")]
    pub recv_stats_json: Option<PathBuf>,
    /// Measure nothing and print no stats (to see what measuring costs).
    #[arg(long, conflicts_with_all = ["stats_json", "send_stats_json", "recv_stats_json"])]
    pub no_stats: bool,
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp, value_name = "tcp|udp", help = "How frames travel: tcp (the default) or udp (for lossy links: NACK, FEC, concealment, its own congestion control)", long_help = TRANSPORT_HELP)]
    pub transport: TransportArg,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

impl DemoArgs {
    /// The sender's and the receiver's JSON-lines logs. With `--stats-json` (or both per-side
    /// flags naming one path) the two are clones of one log, so their lines never interleave.
    pub fn stats_logs(&self) -> (Option<JsonLog>, Option<JsonLog>) {
        if let Some(path) = &self.stats_json {
            let log = JsonLog::new(path);
            return (Some(log.clone()), Some(log));
        }
        let send = self.send_stats_json.clone().map(JsonLog::new);
        let recv = match (&send, &self.recv_stats_json) {
            (Some(s), Some(r)) if s.path() == r.as_path() => send.clone(),
            (_, r) => r.clone().map(JsonLog::new),
        };
        (send, recv)
    }
}

const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("{flag} {addr}: cannot listen there"))
}

/// Test hooks: environment variables that make a process misbehave on purpose, for the
/// integration tests. Hidden from `--help`. The binary reads them once at start-up, before
/// any thread starts, into this explicit config; no production path reads the environment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TestHooks {
    /// `FRAMECAST_TEST_CLOCK_SKEW=OFFSET_S,DRIFT_PPM`: this process's clock runs ahead and
    /// fast, with a clock id of its own (see [`crate::clock::install_skew`]).
    pub clock_skew: Option<ClockSkew>,
    /// `FRAMECAST_TEST_SOURCE_FAULT=AFTER:DOWN`: `--source test` fails on demand (see
    /// [`crate::capture::fault`]).
    pub source_fault: Option<Fault>,
}

/// The variable behind [`TestHooks::clock_skew`].
pub const CLOCK_SKEW_ENV: &str = "FRAMECAST_TEST_CLOCK_SKEW";

impl TestHooks {
    /// Reads the hooks from the environment. An unset or empty variable is no hook; a value
    /// that does not parse is an error naming the variable.
    pub fn from_env() -> anyhow::Result<TestHooks> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`TestHooks::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<TestHooks> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let clock_skew = get(CLOCK_SKEW_ENV)
            .map(|v| v.parse::<ClockSkew>().map_err(|e| anyhow::anyhow!("{CLOCK_SKEW_ENV}={e}")))
            .transpose()?;
        let source_fault = get(fault::ENV).map(|v| v.parse::<Fault>().map_err(anyhow::Error::msg)).transpose()?;
        Ok(TestHooks { clock_skew, source_fault })
    }

    /// Applies the hooks that are process-wide (the clock skew). Call it once, before any
    /// thread starts.
    pub fn install(&self) -> anyhow::Result<()> {
        if let Some(skew) = self.clock_skew {
            crate::clock::install_skew(skew).map_err(|e| anyhow::anyhow!("{CLOCK_SKEW_ENV}: {e}"))?;
            warn!(offset_us = skew.offset_us, drift_ppm = skew.drift_ppm, "test hook: this process's clock is skewed");
        }
        Ok(())
    }
}

/// Rejects a frame size that `sub` cannot sample (odd widths or heights where chroma is halved).
fn check_even(size: Size, sub: Subsampling) -> anyhow::Result<()> {
    let (w, h) = (size.width, size.height);
    let w_even = matches!(sub, Subsampling::S420 | Subsampling::S422);
    if (w_even && w % 2 == 1) || (sub == Subsampling::S420 && h % 2 == 1) {
        bail!(
            "--size {w}x{h}: with --subsampling {sub} the width{} must be even",
            if sub == Subsampling::S420 { " and height" } else { "" }
        );
    }
    Ok(())
}

/// The test pattern, failing on demand when a test asked for it (`fault`).
fn pattern_factory(size: Size, sub: Subsampling, fault: Option<Fault>) -> SourceFactory {
    let pattern = move || Box::new(PatternSource::new(size.width, size.height, sub)) as Box<dyn FrameSource>;
    match fault {
        Some(fault) => {
            let opener = FlakyOpener::new(fault);
            Box::new(move || opener.open(pattern()))
        }
        None => Box::new(move || Ok(pattern())),
    }
}

impl SourceArgs {
    /// Checks the source flags together and returns the function that opens the source on
    /// the capture thread, the encoder's subsampling, and whether a camera's MJPEG must be
    /// re-encoded. `fault` is the test hook [`TestHooks::source_fault`] (test pattern only).
    pub fn validate(&self, fault: Option<Fault>) -> anyhow::Result<(SourceFactory, Subsampling, bool)> {
        let sub: Subsampling = self.subsampling.map_or(Subsampling::S420, Into::into);
        let size = self.size.unwrap_or(Size { width: 1280, height: 720 });
        if self.looping && !matches!(self.source, SourceSpec::Y4m(_) | SourceSpec::Path(_) | SourceSpec::Stdin) {
            bail!("--loop applies to a file source, not to --source {}", source_name(&self.source));
        }
        let factory: SourceFactory = match &self.source {
            SourceSpec::TestPattern => {
                check_even(size, sub)?;
                pattern_factory(size, sub, fault)
            }
            SourceSpec::Y4m(path) => self.y4m_factory(path)?,
            SourceSpec::Camera(index) => {
                let (index, fps) = (*index, self.fps);
                Box::new(move || {
                    CameraSource::open(index, (size.width, size.height), fps, sub)
                        .map(|c| Box::new(c) as Box<dyn FrameSource>)
                })
            }
            SourceSpec::Stdin | SourceSpec::Path(_) => {
                let path = match &self.source {
                    SourceSpec::Path(p) => Some(p.clone()),
                    _ => None,
                };
                let spec = crate::capture::pipe::PipeSpec {
                    path,
                    format: self.input_format,
                    size: self.size.map(|s| (s.width, s.height)),
                    looping: self.looping,
                    subsampling: sub,
                    range: self.input_range,
                };
                Box::new(crate::capture::pipe::factory(spec))
            }
            SourceSpec::Http(url) => {
                let (url, fps) = (url.clone(), self.fps);
                let max = crate::capture::max_image_bytes(self.size.map(|s| (s.width, s.height)));
                Box::new(move || crate::capture::http::open(&url, fps, max))
            }
            SourceSpec::Rtsp(url) => {
                let url = url.clone();
                let max = crate::capture::max_image_bytes(self.size.map(|s| (s.width, s.height)));
                Box::new(move || crate::capture::rtsp::open(&url, max))
            }
        };
        Ok((factory, sub, self.quality.is_some()))
    }

    /// Opens the Y4M file now (a bad file fails before any thread starts) and checks that
    /// `--size` and `--subsampling`, if given, match it.
    fn y4m_factory(&self, path: &Path) -> anyhow::Result<SourceFactory> {
        let src = Y4mSource::open(path, self.looping).context("--source")?;
        if let Some(s) = self.size {
            if (s.width, s.height) != src.size() {
                bail!(
                    "--size {}x{} differs from the Y4M file's {}x{}; omit --size (framecast does not scale)",
                    s.width,
                    s.height,
                    src.size().0,
                    src.size().1
                );
            }
        }
        if let Some(want) = self.subsampling.map(Subsampling::from) {
            if want != src.subsampling() {
                bail!("--subsampling {want} differs from the Y4M file's {}; omit --subsampling or convert the file (ffmpeg -pix_fmt)", src.subsampling());
            }
        }
        let limited = self.input_range.limited(src.limited_range());
        // Opened once: a file that fails mid-stream ends the stream (never reopened).
        let (mut src, path) = (Some(src), path.to_path_buf());
        Ok(Box::new(move || {
            src.take()
                .map(|s| crate::capture::range::wrap(s, limited))
                .ok_or_else(|| CaptureError::File { path: path.clone(), what: "cannot be opened twice".into() })
        }))
    }
}

fn source_name(s: &SourceSpec) -> String {
    match s {
        SourceSpec::TestPattern => "test".into(),
        SourceSpec::Camera(n) => format!("camera:{n}"),
        SourceSpec::Y4m(p) | SourceSpec::Path(p) => p.display().to_string(),
        SourceSpec::Stdin => "-".into(),
        SourceSpec::Http(u) | SourceSpec::Rtsp(u) => u.clone(),
    }
}

impl SendArgs {
    /// The sender's config and source. `hooks` are the test hooks read at start-up.
    pub fn into_config(self, hooks: &TestHooks) -> anyhow::Result<(SendConfig, SourceFactory)> {
        let (factory, subsampling, reencode_jpeg) = self.source.validate(hooks.source_fault)?;
        let (congestion, control) = self.link.validate(self.source.fps)?;
        // A controller moves quality, so a camera's own MJPEG is re-encoded.
        let reencode_jpeg = reencode_jpeg || control.is_some();
        let key = self.key.load()?;
        for (flag, addr) in [("--listen", self.listen), ("--http", self.http), ("--rtsp", self.rtsp)] {
            if let Some(addr) = addr {
                warn_if_open(flag, addr, key.as_ref());
            }
        }
        let endpoint = match (self.transport, self.connect.clone(), self.listen) {
            (TransportArg::Udp, connect, listen) => self.udp_endpoint(connect, listen)?,
            (_, _, Some(addr)) => sender::Endpoint::Listen(bind(addr, "--listen")?),
            (_, Some(c), None) => sender::Endpoint::Connect(c),
            (_, None, None) if self.http.is_some() || self.rtsp.is_some() || self.publish.is_some() => {
                sender::Endpoint::None
            }
            (_, None, None) => sender::Endpoint::Connect(format!("127.0.0.1:{DEFAULT_PORT}")),
        };
        let http = self.http.map(|addr| bind(addr, "--http")).transpose()?;
        let rtsp = self.rtsp.map(|addr| bind(addr, "--rtsp")).transpose()?;
        Ok((
            SendConfig {
                endpoint,
                fps: self.source.fps,
                quality: self.source.quality.unwrap_or(75),
                subsampling,
                reencode_jpeg,
                frames: self.run.frames,
                duration: self.run.duration,
                stats: self.run.stats(),
                connect_patience: CONNECT_PATIENCE,
                once: self.once,
                http,
                // Restart markers let an RTP receiver show a frame with packets missing.
                restart_rows: if rtsp.is_some() || self.publish.is_some() {
                    crate::codec::DEFAULT_RESTART_ROWS
                } else {
                    0
                },
                publish: self.publish.map(|t| *t),
                rtsp,
                congestion,
                control,
                key,
                fast_dct: self.source.fast_dct,
                encode_threads: self.source.encode_threads,
            },
            factory,
        ))
    }
}

impl SendArgs {
    /// `--transport udp`: the UDP endpoint, and what does not combine with it refused.
    fn udp_endpoint(&self, connect: Option<String>, listen: Option<SocketAddr>) -> anyhow::Result<sender::Endpoint> {
        if self.link.no_congestion_control {
            bail!("--no-congestion-control applies to --transport tcp: udp always paces its packets at its own rate");
        }
        if self.link.max_in_flight.is_some() {
            bail!("--max-in-flight applies to --transport tcp: udp paces packets at the link's rate instead");
        }
        let opts = sender::udp::UdpOptions { fec: self.fec == OnOff::On };
        let endpoint = match (connect, listen) {
            (_, Some(addr)) => sender::udp::UdpEndpoint::Listen(bind_udp(addr, "--listen")?),
            (Some(c), None) => sender::udp::UdpEndpoint::Connect(c),
            (None, None) => sender::udp::UdpEndpoint::Connect(format!("127.0.0.1:{DEFAULT_PORT}")),
        };
        Ok(sender::Endpoint::Udp(endpoint, opts))
    }
}

impl RecvArgs {
    /// `--transport udp`: the UDP endpoint, and what does not combine with it refused.
    fn udp_endpoint(&self, key: Option<&Key>) -> anyhow::Result<receiver::Endpoint> {
        let opts = receiver::UdpRecvOptions { nack: self.udp_nack == OnOff::On, max_latency_ms: self.max_latency_ms };
        let endpoint = match (&self.listen, &self.connect) {
            (_, Some(c)) if c.starts_with("rtsp://") => bail!(
                "--transport udp does not apply to an rtsp:// stream: RTSP has its own (--rtsp-transport tcp|udp)"
            ),
            (_, Some(c)) => receiver::UdpEndpoint::Connect(c.clone()),
            (listen, None) => {
                let addr = listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
                warn_if_open("--listen", addr, key);
                receiver::UdpEndpoint::Listen(bind_udp(addr, "--listen")?)
            }
        };
        Ok(receiver::Endpoint::Udp(endpoint, opts))
    }

    pub fn into_config(self) -> anyhow::Result<RecvConfig> {
        let key = self.key.load()?;
        if self.transport == TransportArg::Tcp && self.max_latency_ms.is_some() {
            bail!("--max-latency-ms applies to --transport udp (over TCP the sender's --max-latency-ms keeps latency)");
        }
        let endpoint = match (self.listen, self.connect.clone()) {
            _ if self.transport == TransportArg::Udp => self.udp_endpoint(key.as_ref())?,
            (_, Some(c)) if c.starts_with("rtsp://") => {
                if key.is_some() {
                    bail!("--key-file does not apply to rtsp:// (RTSP is not encrypted): put the token in the URL, rtsp://user:TOKEN@host:port/path");
                }
                if self.quality.is_some() {
                    warn!("--quality has no effect on an rtsp:// stream (RTSP has no way to ask for it)");
                }
                let target = crate::rtsp::client::Target::parse(&c).context("--connect")?;
                receiver::Endpoint::Rtsp(receiver::RtspEndpoint { target, transport: self.rtsp_transport })
            }
            (_, Some(c)) => receiver::Endpoint::Connect(c),
            (listen, None) => {
                let addr = listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
                warn_if_open("--listen", addr, key.as_ref());
                receiver::Endpoint::Listen(bind(addr, "--listen")?)
            }
        };
        Ok(RecvConfig {
            endpoint,
            frames: self.run.frames,
            duration: self.run.duration,
            stats: self.run.stats(),
            once: self.once,
            dump: self.dump_dir.map(|dir| DumpConfig { dir, every: self.dump_every }),
            connect_patience: CONNECT_PATIENCE,
            quality: self.quality,
            frame_log: self.frame_log,
            key,
            decode_speed: self.decode.into(),
            decode_threads: self.decode.decode_threads,
        })
    }
}

/// `framecast netsim`: a slow, lossy link. A TCP relay by default; `--udp` relays datagrams;
/// `--packet-link` joins two network namespaces. Each direction is a link of its own.
#[derive(Debug, Args)]
pub struct NetsimArgs {
    /// Accept connections (with --udp: datagrams) on ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "packet_link")]
    pub listen: Option<SocketAddr>,
    /// Relay each connection (with --udp: each client's datagrams) to HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "packet_link")]
    pub forward: Option<String>,
    /// Relay UDP datagrams, with loss, instead of TCP connections; one upstream socket per
    /// client address, dropped after 60 s without traffic.
    #[arg(long, conflicts_with = "packet_link")]
    pub udp: bool,
    /// Create two network namespaces (--ns) joined by TUN devices through this process, which
    /// applies the link and loss to every IP packet; prints READY when up, deletes them on
    /// SIGINT/SIGTERM. Needs root. Run programs in them with `ip netns exec NS ...`.
    #[arg(long, conflicts_with_all = ["listen", "forward"])]
    pub packet_link: bool,
    /// With --packet-link: the names of the two namespaces to create (they must not exist).
    #[arg(long, value_name = "NS_A,NS_B", requires = "packet_link")]
    pub ns: Option<String>,
    /// With --packet-link: the address of each namespace on its TUN device, loopback-range
    /// (127.0.0.0/8, not 127.0.0.1) so that no traffic leaves the machine.
    #[arg(long, value_name = "ADDR_A,ADDR_B", requires = "packet_link")]
    pub addr: Option<String>,
    /// Bottleneck rate of each direction: 5mbit, 500kbit, 2MB/s (--packet-link counts IP
    /// headers, --udp and TCP count payload).
    #[arg(long, value_parser = crate::netsim::parse_rate)]
    pub rate: u64,
    /// One-way delay added to each direction: 20ms, 0.1s.
    #[arg(long, default_value = "0", value_parser = crate::netsim::parse_duration)]
    pub delay: Duration,
    /// Random extra delay, uniform in [0, JITTER]; packets are never reordered.
    #[arg(long, default_value = "0", value_parser = crate::netsim::parse_duration)]
    pub jitter: Duration,
    /// Router buffer of each direction. TCP relay: when full, it stops reading (backpressure);
    /// --udp and --packet-link: when full, arriving packets are dropped (drop-tail).
    #[arg(long, default_value = "64KB", value_parser = crate::netsim::parse_size)]
    pub queue: usize,
    /// Stall the link (nothing departs) every PERIOD, from the relay's start: 10s.
    #[arg(long, value_name = "PERIOD", requires = "stall", value_parser = crate::netsim::parse_duration)]
    pub stall_every: Option<Duration>,
    /// How long each stall lasts: 500ms.
    #[arg(long, value_name = "LENGTH", requires = "stall_every", value_parser = crate::netsim::parse_duration)]
    pub stall: Option<Duration>,
    /// Lose this share of the packets, one by one (--udp, --packet-link): 2%, 0.5%.
    #[arg(long, value_name = "SHARE", help_heading = "Loss", value_parser = crate::netsim::parse_percent)]
    pub loss: Option<f64>,
    /// Lose them in runs of this mean length in packets instead (two-state Gilbert model; the
    /// share stays --loss): 4.
    #[arg(long, value_name = "PACKETS", help_heading = "Loss")]
    pub loss_burst: Option<f64>,
    /// Outages in time: the link loses everything for outages of this mean length
    /// (exponentially distributed), --outage-share of the time: 50ms.
    #[arg(long, value_name = "MEAN", help_heading = "Loss", requires = "outage_share",
          value_parser = crate::netsim::parse_duration)]
    pub outage: Option<Duration>,
    /// Share of the time the link spends in outages: 2%.
    #[arg(long, value_name = "SHARE", help_heading = "Loss", requires = "outage",
          value_parser = crate::netsim::parse_percent)]
    pub outage_share: Option<f64>,
    /// Loss that changes in time, from the start, in place of --loss: phases DURATION:SHARE
    /// separated by commas, the last one holding: 10s:0%,10s:20%,10s:0%.
    #[arg(long, value_name = "PHASES", help_heading = "Loss", conflicts_with = "loss",
          value_parser = parse_phases)]
    pub loss_schedule: Option<Phases>,
    /// Seed of the link's jitter and loss draws (--udp and --packet-link): the same seed and
    /// loss flags give the same outage timeline on the link's clock, so that two runs (TCP
    /// and UDP, say) face the same outages; per-packet loss also depends on the packets
    /// sent. Default: a new seed each run, logged at start. With --packet-link and
    /// --outage, the outages drawn are logged when the link stops.
    #[arg(long, value_name = "N", help_heading = "Loss")]
    pub seed: Option<u64>,
}

/// `--loss-schedule`'s phases (a newtype, so that clap takes the value as one list).
#[derive(Clone, Debug)]
pub struct Phases(pub Vec<crate::netsim::Phase>);

fn parse_phases(s: &str) -> Result<Phases, String> {
    crate::netsim::parse_schedule(s).map(Phases)
}

impl NetsimArgs {
    pub fn into_config(self) -> anyhow::Result<crate::netsim::NetsimConfig> {
        use crate::netsim::{NetsimConfig, PacketLinkConfig, TcpConfig, UdpConfig};
        let stall = match (self.stall_every, self.stall) {
            (Some(every), Some(length)) => {
                if length.is_zero() || length >= every {
                    bail!("--stall {length:?} must be more than 0 and shorter than --stall-every {every:?}");
                }
                Some(crate::netsim::Stall { every, length })
            }
            _ => None,
        };
        let link = crate::netsim::LinkParams {
            rate_bps: self.rate,
            delay: self.delay,
            jitter: self.jitter,
            queue_bytes: self.queue,
            stall,
        };
        let loss = self.loss_params()?;
        let seed = self.seed.unwrap_or_else(crate::netsim::random_seed);
        if self.packet_link {
            let (ns, addr) = (self.ns.as_deref(), self.addr.as_deref());
            return Ok(NetsimConfig::PacketLink(PacketLinkConfig::new(ns, addr, link, loss, seed)?));
        }
        if self.ns.is_some() || self.addr.is_some() {
            bail!("--ns and --addr go with --packet-link");
        }
        let (listen, forward) = match (self.listen, self.forward) {
            (Some(l), Some(f)) => (l, f),
            _ => bail!("--listen and --forward are needed (or --packet-link)"),
        };
        let forward_addrs = resolve(&forward)?;
        if self.udp {
            return Ok(NetsimConfig::Udp(UdpConfig::bind(listen, forward, forward_addrs[0], link, loss, seed)?));
        }
        if !loss.is_none() {
            bail!("--loss, --outage and --loss-schedule need --udp or --packet-link: the TCP relay carries byte streams and cannot lose a packet");
        }
        Ok(NetsimConfig::Tcp(TcpConfig { listener: bind(listen, "--listen")?, forward, forward_addrs, link }))
    }

    /// The loss flags, checked together.
    fn loss_params(&self) -> anyhow::Result<crate::netsim::LossParams> {
        let schedule = self.loss_schedule.clone().map(|p| p.0).unwrap_or_default();
        let burst = match self.loss_burst {
            None => 1.0,
            Some(b) if !(1.0..=1000.0).contains(&b) => bail!("--loss-burst {b}: a mean run of 1 to 1000 packets"),
            Some(_) if self.loss.is_none() && schedule.is_empty() => {
                bail!("--loss-burst needs --loss (or --loss-schedule)")
            }
            Some(b) => b,
        };
        let outage = match (self.outage, self.outage_share) {
            (Some(mean), Some(share)) => {
                if mean.is_zero() || share <= 0.0 || share > 0.5 {
                    bail!(
                        "--outage {mean:?} --outage-share {}%: the mean must be more than 0 and the share in (0%, 50%]",
                        share * 100.0
                    );
                }
                Some(crate::netsim::Outage { mean, share })
            }
            _ => None,
        };
        Ok(crate::netsim::LossParams { loss: self.loss.unwrap_or(0.0), burst, outage, schedule })
    }
}

/// `--forward`'s addresses, resolved once at start.
fn resolve(forward: &str) -> anyhow::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> =
        forward.to_socket_addrs().with_context(|| format!("--forward {forward}: cannot resolve"))?.collect();
    if addrs.is_empty() {
        bail!("--forward {forward}: resolves to no address");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("framecast").chain(args.iter().copied()))
    }

    #[test]
    fn sizes() {
        assert_eq!("1280x720".parse::<Size>(), Ok(Size { width: 1280, height: 720 }));
        for bad in ["0x0", "abc", "1280", "x720", "1280x", "-1x5", "99999x10"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert!("16384x16384".parse::<Size>().unwrap_err().contains("8K"));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (args, flag) in [
            (&["send", "--quality", "0"][..], "--quality"),
            (&["send", "--quality", "101"][..], "--quality"),
            (&["send", "--size", "0x0"][..], "--size"),
            (&["send", "--size", "abc"][..], "--size"),
            (&["send", "--source", "webcam"][..], "--source"),
            (&["send", "--source", "/no/such.y4m"][..], "--source"),
            (&["send", "--subsampling", "411"][..], "--subsampling"),
            (&["recv", "--duration", "0"][..], "--duration"),
            (&["recv", "--duration", "soon"][..], "--duration"),
            (&["send", "--connect", "a:1", "--listen", "0.0.0.0:1"][..], "--listen"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn what_does_not_combine_with_udp_is_refused_naming_the_flags() {
        let hooks = TestHooks::default();
        for (args, says) in [
            (
                &["send", "--transport", "udp", "--no-congestion-control", "--connect", "127.0.0.1:9"][..],
                "--no-congestion-control",
            ),
            (
                &["send", "--transport", "udp", "--max-in-flight", "3", "--connect", "127.0.0.1:9"][..],
                "--max-in-flight",
            ),
        ] {
            let Cmd::Send(a) = parse(args).unwrap().cmd else { unreachable!() };
            let e = a.into_config(&hooks).err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(e.contains(says) && e.contains("udp"), "{args:?}: {e}");
        }
        let Cmd::Recv(a) = parse(&["recv", "--transport", "udp", "--connect", "rtsp://h/p"]).unwrap().cmd else {
            unreachable!()
        };
        let e = a.into_config().err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("--transport udp") && e.contains("rtsp://"), "{e}");
        let Cmd::Recv(a) = parse(&["recv", "--max-latency-ms", "100", "--connect", "127.0.0.1:9"]).unwrap().cmd else {
            unreachable!()
        };
        let e = a.into_config().err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("--max-latency-ms") && e.contains("--transport udp"), "{e}");
        let Cmd::Send(a) =
            parse(&["send", "--transport", "udp", "--connect", "127.0.0.1:9", "--size", "64x48"]).unwrap().cmd
        else {
            unreachable!()
        };
        let (cfg, _) = a.into_config(&hooks).unwrap();
        assert!(matches!(cfg.endpoint, sender::Endpoint::Udp(sender::udp::UdpEndpoint::Connect(_), _)));
        assert!(parse(&["send", "--help"]).unwrap_err().to_string().contains("--transport"));
    }

    #[test]
    fn odd_size_with_420_is_rejected() {
        let Cmd::Send(a) = parse(&["send", "--size", "641x480"]).unwrap().cmd else { unreachable!() };
        let e = a.source.validate(None).err().unwrap().to_string();
        assert!(e.contains("--size 641x480") && e.contains("even"), "{e}");
        let Cmd::Send(a) = parse(&["send", "--size", "641x481", "--subsampling", "444"]).unwrap().cmd else {
            unreachable!()
        };
        assert!(a.source.validate(None).is_ok());
    }

    #[test]
    fn test_hooks_come_from_the_variables_given() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(TestHooks::from_vars(vars(&[])).unwrap(), TestHooks::default());
        assert_eq!(
            TestHooks::from_vars(vars(&[(CLOCK_SKEW_ENV, " "), (fault::ENV, "")])).unwrap(),
            TestHooks::default()
        );
        let h = TestHooks::from_vars(vars(&[(CLOCK_SKEW_ENV, "3600,100"), (fault::ENV, "30:2.5")])).unwrap();
        assert_eq!(h.clock_skew, Some(ClockSkew { offset_us: 3_600_000_000, drift_ppm: 100.0 }));
        assert_eq!(h.source_fault, Some(Fault { after_frames: 30, down: Duration::from_millis(2500) }));
        let e = TestHooks::from_vars(vars(&[(CLOCK_SKEW_ENV, "an hour")])).unwrap_err().to_string();
        assert!(e.contains(CLOCK_SKEW_ENV) && e.contains("OFFSET_S,DRIFT_PPM"), "{e}");
        let e = TestHooks::from_vars(vars(&[(fault::ENV, "30")])).unwrap_err().to_string();
        assert!(e.contains(fault::ENV) && e.contains("AFTER_FRAMES:DOWN_SECONDS"), "{e}");
    }

    #[test]
    fn only_the_test_pattern_takes_a_source_fault() {
        let fault = Some(Fault { after_frames: 2, down: Duration::from_secs(60) });
        let Cmd::Send(a) = parse(&["send", "--size", "16x16"]).unwrap().cmd else { unreachable!() };
        let (mut open, _, _) = a.source.validate(fault).unwrap();
        let mut src = open().unwrap();
        assert!(src.describe().contains(fault::ENV), "{}", src.describe());
        let mut frame = crate::capture::RawFrame::empty();
        assert!(src.next_frame(&mut frame).is_ok() && src.next_frame(&mut frame).is_ok());
        assert!(src.next_frame(&mut frame).is_err(), "the fault did not fire after 2 frames");
        let (mut open, _, _) = a.source.validate(None).unwrap();
        assert!(!open().unwrap().describe().contains(fault::ENV));
    }

    #[test]
    fn demo_stats_logs_share_one_file_when_asked() {
        let dir = std::env::temp_dir().join(format!("framecast-cli-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        // Whether the receiver's log shares the sender's file: opening a second, separate
        // log of one path would truncate what the first one's file holds.
        let shared = |args: &[&str]| -> bool {
            let Cmd::Demo(d) = parse(&[&["demo"][..], args].concat()).unwrap().cmd else { unreachable!() };
            let (Some(s), Some(r)) = d.stats_logs() else { panic!("{args:?}: a side has no log") };
            let cfg = |log: JsonLog| StatsConfig { json: Some(log), ..StatsConfig::default() };
            crate::stats::open_json(&cfg(s.clone())).unwrap();
            std::fs::write(s.path(), "kept\n").unwrap();
            crate::stats::open_json(&cfg(r.clone())).unwrap();
            std::fs::read_to_string(s.path()).unwrap() == "kept\n"
        };
        assert!(shared(&["--stats-json", &path("both.jsonl")]));
        assert!(shared(&["--send-stats-json", &path("x.jsonl"), "--recv-stats-json", &path("x.jsonl")]));
        let logs = |args: &[&str]| {
            let Cmd::Demo(d) = parse(&[&["demo"][..], args].concat()).unwrap().cmd else { unreachable!() };
            d.stats_logs()
        };
        let (s, r) = logs(&["--send-stats-json", "s.jsonl", "--recv-stats-json", "r.jsonl"]);
        assert_eq!((s.unwrap().path(), r.unwrap().path()), (Path::new("s.jsonl"), Path::new("r.jsonl")));
        let (s, r) = logs(&["--recv-stats-json", "r.jsonl"]);
        assert!(s.is_none() && r.unwrap().path() == Path::new("r.jsonl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn codec_threads_parse_and_follow_the_frame_size() {
        for (arg, want) in [("auto", CodecThreads::Auto), ("AUTO", CodecThreads::Auto), ("0", CodecThreads::Auto)] {
            assert_eq!(arg.parse::<CodecThreads>(), Ok(want), "{arg}");
        }
        assert_eq!("16".parse::<CodecThreads>(), Ok(CodecThreads::Fixed(16)));
        for bad in ["17", "-1", "two", ""] {
            assert!(bad.parse::<CodecThreads>().unwrap_err().contains("1..=16"), "{bad}");
        }
        let auto = CodecThreads::Auto;
        assert_eq!(auto.for_frame(640, 480, 4), 1);
        assert_eq!(auto.for_frame(1279, 720, 4), 1);
        assert_eq!(auto.for_frame(1280, 720, 4), 4);
        assert_eq!(auto.for_frame(1920, 1080, 2), 2);
        assert_eq!(auto.for_frame(3840, 2160, 64), CodecThreads::MAX);
        // A wide, flat frame: one thread per 128 rows at most.
        assert_eq!(auto.for_frame(8192, 200, 8), 1);
        assert_eq!(auto.for_frame(4096, 300, 8), 2);
        assert_eq!(CodecThreads::Fixed(3).for_frame(64, 64, 1), 3);
        for (args, flag) in [
            (&["send", "--encode-threads", "17"][..], "--encode-threads"),
            (&["recv", "--decode-threads", "x"][..], "--decode-threads"),
            (&["demo", "--decode-threads", "99"][..], "--decode-threads"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        let Cmd::Demo(d) = parse(&["demo", "--encode-threads", "2", "--decode-threads", "auto"]).unwrap().cmd else {
            unreachable!()
        };
        assert_eq!((d.source.encode_threads, d.decode.decode_threads), (CodecThreads::Fixed(2), CodecThreads::Auto));
        let Cmd::Recv(r) = parse(&["recv"]).unwrap().cmd else { unreachable!() };
        assert_eq!(r.decode.decode_threads, CodecThreads::Auto);
    }

    #[test]
    fn threads_by_size_change_only_with_the_size() {
        let mut t = ThreadsBySize::new(CodecThreads::Fixed(2));
        assert_eq!(t.change_for(64, 64), Some(2));
        t.threads = 2;
        assert_eq!(t.change_for(64, 64), None);
        assert_eq!(t.change_for(32, 32), None, "a fixed count does not change with the size");
        let mut t = ThreadsBySize::new(CodecThreads::Auto);
        assert_eq!(t.change_for(640, 480), None, "one thread, as a new codec has");
    }

    #[test]
    fn explicit_quality_means_reencode() {
        let Cmd::Send(a) = parse(&["send"]).unwrap().cmd else { unreachable!() };
        assert!(!a.source.validate(None).unwrap().2);
        let Cmd::Send(a) = parse(&["send", "--quality", "75"]).unwrap().cmd else { unreachable!() };
        assert!(a.source.validate(None).unwrap().2);
    }
}

/// The figures behind `auto` in [`CodecThreads`] (release build, run by hand):
/// `cargo test --release --lib cli::measure -- --ignored --nocapture`.
#[cfg(test)]
mod measure {
    use crate::codec::{Decoder, Encoder, JpegBuf};
    use crate::format::Subsampling;
    use crate::testutil::pattern_frame;
    use std::time::Instant;

    fn median(mut v: Vec<u128>) -> f64 {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    }

    /// One thread count's codec, buffers and timings (µs).
    struct Side {
        enc: Encoder,
        dec: Decoder,
        out: JpegBuf,
        px: Vec<u32>,
        enc_us: Vec<u128>,
        dec_us: Vec<u128>,
    }

    /// Encodes and decodes one frame on 1 and on 2 threads in turn, `runs` times, so that
    /// both meet the same load on a shared machine: median wall ms of each, and frame bytes.
    fn by_threads(w: u32, h: u32, runs: usize) -> [(f64, f64, usize); 2] {
        let frame = pattern_frame(w, h, Subsampling::S420, 3);
        let mut sides: Vec<Side> = (1..=2)
            .map(|threads| {
                let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
                enc.set_threads(threads).unwrap();
                let mut dec = Decoder::new().unwrap();
                dec.set_threads(threads).unwrap();
                Side { enc, dec, out: JpegBuf::default(), px: Vec::new(), enc_us: Vec::new(), dec_us: Vec::new() }
            })
            .collect();
        for _ in 0..runs {
            for s in &mut sides {
                let t = Instant::now();
                s.enc.encode(&frame, &mut s.out).unwrap();
                s.enc_us.push(t.elapsed().as_micros());
                let t = Instant::now();
                s.dec.decode(s.out.as_slice(), w as usize, h as usize, &mut s.px).unwrap();
                s.dec_us.push(t.elapsed().as_micros());
            }
        }
        let mut it = sides.into_iter().map(|s| (median(s.enc_us), median(s.dec_us), s.out.as_slice().len()));
        [it.next().unwrap(), it.next().unwrap()]
    }

    #[test]
    #[ignore]
    fn wall_per_frame_by_threads() {
        for (w, h) in [(640u32, 480u32), (1280, 720), (1920, 1080)] {
            let [one, two] = by_threads(w, h, 400);
            eprintln!(
                "{w}x{h}: encode {:.2} -> {:.2} ms ({:.2}x), decode {:.2} -> {:.2} ms ({:.2}x), {} -> {} bytes",
                one.0,
                two.0,
                two.0 / one.0,
                one.1,
                two.1,
                two.1 / one.1,
                one.2,
                two.2
            );
        }
    }
}
