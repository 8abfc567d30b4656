//! framecast: a low-latency JPEG video streamer.
//!
//! # Layout
//!
//! - [`capture`]: frame sources (test pattern, Y4M file, camera) behind `FrameSource`; run by
//!   the sender's `capture` thread.
//! - [`format`]: pixel formats (`Subsampling`) shared by capture, codec and the wire.
//! - [`codec`]: libjpeg-turbo encode (sender's `encode` thread) and decode (receiver's
//!   `decode` thread), with reused handles and buffers.
//! - [`net`]: the wire protocol, `net::proto` (pure format), `net::io` (sockets, reconnect
//!   backoff) and `net::secure` (`--key-file`: Noise handshake, encrypted records); used by
//!   the sender's `net-tx`/`ack-rx` and the receiver's `net-rx`/`feedback` threads.
//! - [`view`]: frame sinks (minifb window, headless) on the receiver's main thread.
//! - [`sender`] and [`receiver`]: the two pipelines, wiring the stages with [`chan`].
//! - [`hub`]: the sender's fan-out of each encoded frame to every viewer.
//! - [`control`]: the sender's rate controller (`--target-kbps`, `--max-latency-ms`): quality
//!   and fps from measured frame sizes, acknowledgements and congestion drops.
//! - [`http`]: the sender's HTTP endpoint (page, MJPEG stream, snapshot, stats), one thread per client.
//! - [`stats`]: per-side counters, reports, the human line and JSON lines.
//! - [`report`]: `framecast report`, tables and SVG plots from JSON-lines stats logs.
//! - [`netsim`]: `framecast netsim`, a TCP relay that simulates a slow link (rate, delay,
//!   jitter, router queue, stalls); a reader and a writer thread per direction per connection.
//! - [`clock`]: monotonic microsecond timestamps shared by processes on one host.
//! - [`cli`]: the command line, validated into the configs the pipelines take.
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
pub mod control;
pub mod format;
pub use sender::http;
pub mod hub;
pub mod net;
pub mod netsim;
pub mod receiver;
pub mod report;
pub mod sender;
pub mod stage;
pub mod stats;
#[doc(hidden)]
pub mod testutil;
pub mod view;
