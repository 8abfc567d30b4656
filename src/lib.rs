//! framecast: a low-latency JPEG video streamer.
//!
//! # Layout
//!
//! `docs/architecture.md` draws the threads of each side and who owns what. In the order a
//! frame travels:
//!
//! - [`capture`]: frame sources (test pattern, Y4M file, camera) behind `FrameSource`; run by
//!   the sender's `capture` thread ([`sender::capture`]).
//! - [`format`](mod@format): pixel formats (`Subsampling`) shared by capture, codec and the wire.
//! - [`codec`]: libjpeg-turbo encode (the sender's `encode` thread, [`sender::encode`]) and
//!   decode (the receiver's `decode` thread), with reused handles and buffers.
//! - [`control`]: the rate controller (`--target-kbps`, `--max-latency-ms`), owned by the
//!   encode thread: quality and fps from frame sizes, acknowledgements and congestion drops.
//! - [`hub`]: the sender's fan-out of each encoded frame to every viewer's newest-wins slot.
//! - [`sender`]: the sender pipeline, one file per stage, and its viewer transports behind
//!   [`sender::transport::Transport`]: [`sender::native`] (the framecast protocol) and
//!   [`sender::http`] (MJPEG, snapshots, the page, `/stats`), [`sender::rtsp`] (RTSP/RTP),
//!   [`sender::publish`] (RTSP RECORD into a media server), [`sender::udp`] (`--transport
//!   udp`: RTP/JPEG over UDP, threads `udp-tx` and `udp-PEER`).
//! - [`net`]: the wire protocol: `net::proto` (pure format), `net::io` (framed reader and
//!   writer), `net::conn` (the one accept loop, connect policies, socket options) and
//!   `net::secure` (`--key-file`: Noise handshake, encrypted records); `net::udp`, the UDP
//!   transport's pure parts (datagrams, sealing, FEC, frames to packets and back, congestion
//!   control, one peer's handshake), run by `sender::udp` and the receiver's UDP `net-rx`.
//! - [`rtp`]: RTP for JPEG (RFC 2435): the payload headers, the payloader (`rtp::packetize`),
//!   the depayloader (`rtp::depacketize`) and framecast's capture-time header extension,
//!   shared by the RTSP server, publishing and the RTSP client.
//! - [`rtsp`]: RTSP messages and interleaved frames on the wire, with caps, and Basic/Digest
//!   auth; the client connection (`rtsp::client`, for `recv --connect rtsp://`,
//!   `send --source rtsp://` and `send --publish`) and the stream player on it (`rtsp::play`,
//!   for the first two); run by whichever thread owns an RTSP connection.
//! - [`receiver`]: the receiver pipeline, one file per stage: `net-rx` (TCP, RTSP or UDP),
//!   `decode`, the view (main thread) and `feedback`.
//! - [`view`]: frame sinks (minifb window, headless) on the receiver's main thread.
//! - [`stage`] and [`chan`]: named stage threads and the newest-wins channels between them.
//! - [`stats`]: per-side counters, the typed `Report` (JSON lines written and read back), the
//!   human line.
//! - [`report`]: `framecast report`, tables and SVG plots from JSON-lines stats logs.
//! - [`netsim`]: `framecast netsim`, a simulated slow, lossy link (rate, delay, jitter, router
//!   queue, stalls, loss models): a TCP relay (two threads per connection), a UDP relay (one
//!   thread), and a packet link between two namespaces over TUN devices (a thread per direction).
//! - [`clock`]: monotonic microsecond timestamps shared by processes on one host.
//! - [`cli`]: the command line, validated into the configs the pipelines take.
//! - [`config`]: `--config PATH` of `send` and `recv`: a TOML file of flags, read into the
//!   command line before it is parsed.
//!
//! # Errors
//!
//! Errors the hot path can branch on are enums (`net::ProtocolError`, `codec::CodecError`,
//! `capture::CaptureError`): a corrupt JPEG ends one frame, a protocol error ends one
//! connection, and callers need to tell which. `anyhow` is used only where a pipeline or the
//! binary gives up, with context naming what it was doing.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod capture;
pub mod chan;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod control;
pub mod format;
pub use sender::http;
pub mod hub;
pub mod net;
pub mod netsim;
pub mod receiver;
pub mod report;
pub mod rtp;
pub mod rtsp;
pub mod sender;
pub mod stage;
pub mod stats;
#[doc(hidden)]
pub mod testutil;
pub mod view;
