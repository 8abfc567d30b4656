//! A frame to RTP packets and back, for the UDP transport.
//!
//! Every packet of a frame is an RTP packet of the viewer's stream (one SSRC, consecutive
//! sequence numbers) with two one-byte-form header extensions (RFC 8285):
//!
//! ```text
//! id 1  capture time (rtp::capture_time, 8 bytes)
//! id 2  frame: frame seq u32, packet index u16, data packets u16, parity packets u16 (10 bytes)
//! id 3  timing, in the frame's first data packet only: quality u8, then encode start,
//!       encode end and send, each µs after capture, u32 (13 bytes)
//! ```
//!
//! Data packets (PT 26) are RFC 2435 RTP/JPEG packets, indices 0..data. Parity packets
//! (PT [`FEC_PAYLOAD_TYPE`]) follow, indices data..data+parity; their payload is a parity
//! shard of [`super::fec`] for the group of data packets it covers: group `g` is data
//! packets `g*G..min((g+1)*G, data)` with `G` = [`super::fec::MAX_GROUP_DATA`], and its
//! parity packets are consecutive. The payload starts with: group u8, parity index in the
//! group u8, parity packets in the group u8, reserved u8.
//!
//! The receiver's [`Assembler`] rebuilds frames: packets in, FEC recovery as soon as a group
//! can be rebuilt, NACKs for what is still missing while the frame can be shown in time
//! (RTT-aware), and frames out: complete, partial (the restart intervals that arrived, for
//! concealment over the previous frame) or lost. A newer complete frame always wins: older
//! unfinished ones are given up at once.

use crate::rtp::depacketize::Band;
use crate::rtp::packetize::{Packetized, RtpStream};

/// The RTP payload type of parity packets (dynamic range).
pub const FEC_PAYLOAD_TYPE: u8 = 127;
/// Header extension ids (one-byte form).
pub const FRAME_EXT_ID: u8 = 2;
pub const TIMING_EXT_ID: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("bad RTP packet: {0}")]
    Rtp(String),
    #[error("packet without framecast's frame extension (id {FRAME_EXT_ID})")]
    NoFrameExt,
    #[error("frame {frame}: {what}")]
    Frame { frame: u64, what: String },
}

/// What the sender says about a frame besides its JPEG.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// The encoder's frame sequence number (acks name it).
    pub seq: u64,
    pub capture_us: u64,
    pub encode_start_us: u64,
    pub encode_end_us: u64,
    pub send_us: u64,
    pub quality: u8,
}

/// The sender's side for one viewer: the RTP stream, and the packets of recent frames kept
/// for retransmission (bounded in bytes, and dropped once their frame is past its deadline).
pub struct Outgoing {
    pub stream: RtpStream,
}

/// Counters of the sender's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutgoingCounts {
    pub data_packets: u64,
    pub parity_packets: u64,
    pub parity_bytes: u64,
    pub retransmitted: u64,
    /// NACKed packets not sent: unknown, expired, or already resent within an RTT.
    pub nack_refused: u64,
}

impl Outgoing {
    /// `store_bytes` bounds the packets kept for retransmission.
    pub fn new(stream: RtpStream, store_bytes: usize) -> Self {
        let _ = store_bytes;
        Outgoing { stream }
    }

    /// The frame's packets, whole RTP packets in sending order (data, then `parity_per_group`
    /// parity packets for each group), kept for retransmission until `expires_us`.
    pub fn frame(
        &mut self,
        frame: &Packetized,
        info: &FrameInfo,
        parity_per_group: usize,
        now_us: u64,
        expires_us: u64,
    ) -> Vec<Vec<u8>> {
        let _ = (frame, info, parity_per_group, now_us, expires_us);
        unimplemented!("media::Outgoing::frame")
    }

    /// The packets a NACK asks for that are still kept and unexpired, each resent at most once
    /// per `rtt_us`; the rest are counted as refused.
    pub fn retransmit(&mut self, runs: &[(u16, u16)], now_us: u64, rtt_us: u64) -> Vec<Vec<u8>> {
        let _ = (runs, now_us, rtt_us);
        unimplemented!("media::Outgoing::retransmit")
    }

    pub fn counts(&self) -> OutgoingCounts {
        unimplemented!("media::Outgoing::counts")
    }
}

/// A frame as the receiver rebuilt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub info: FrameInfo,
    pub width: u32,
    pub height: u32,
    /// RFC 2435 type (0: 4:2:2, 1: 4:2:0; +64 with restart markers).
    pub kind: u8,
    /// When its first packet arrived (receiver's clock).
    pub first_us: u64,
    /// When it was complete or given up (receiver's clock).
    pub done_us: u64,
    /// Data packets rebuilt from parity, and received again after a NACK.
    pub recovered: u32,
    pub retransmitted: u32,
}

/// What the assembler hands out, oldest frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    Frame {
        frame: Received,
        jpeg: Vec<u8>,
    },
    /// Packets still missing at the deadline: the restart intervals that arrived, as bands.
    Partial {
        frame: Received,
        bands: Vec<Band>,
    },
    /// Nothing showable (no restart markers, or nothing arrived in time).
    Lost {
        seq: u64,
        why: &'static str,
    },
}

/// Counters of the receiver's side (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerCounts {
    /// Media packets received (data, parity, retransmissions; duplicates not counted).
    pub packets: u64,
    pub bytes: u64,
    /// Highest RTP sequence number seen, extended.
    pub highest_seq: u32,
    /// Data packets missing on arrival (before recovery).
    pub missing: u64,
    /// Data packets never recovered.
    pub lost: u64,
    pub recovered_fec: u64,
    pub recovered_nack: u64,
    pub nacked: u64,
    /// Packets of frames already done or given up.
    pub late_packets: u64,
    pub duplicates: u64,
    pub frames_complete: u64,
    pub frames_partial: u64,
    pub frames_lost: u64,
    /// Frames given up because a newer frame was complete first.
    pub frames_superseded: u64,
}

/// The receiver's side: see the module docs.
pub struct Assembler {}

impl Assembler {
    /// `wait_us`: how long after a frame's first packet the assembler waits for its missing
    /// packets before it hands out what it has (the latency budget for loss recovery).
    pub fn new(wait_us: u64) -> Self {
        let _ = wait_us;
        unimplemented!("media::Assembler::new")
    }

    pub fn set_wait(&mut self, wait_us: u64) {
        let _ = wait_us;
        unimplemented!("media::Assembler::set_wait")
    }

    /// Takes one RTP packet (data or parity) that arrived at `now_us`.
    pub fn push(&mut self, rtp: &[u8], now_us: u64) -> Result<(), MediaError> {
        let _ = (rtp, now_us);
        unimplemented!("media::Assembler::push")
    }

    /// The next frame done by `now_us` (complete, rebuilt, or at its deadline partial or lost).
    pub fn poll(&mut self, now_us: u64) -> Option<Assembled> {
        let _ = now_us;
        unimplemented!("media::Assembler::poll")
    }

    /// Runs of missing packets to NACK now: missing beyond what parity still on its way can
    /// rebuild, not NACKed within the last `rtt_us`, and whose frame's deadline is at least
    /// `rtt_us` away.
    pub fn nacks(&mut self, now_us: u64, rtt_us: u64) -> Vec<(u16, u16)> {
        let _ = (now_us, rtt_us);
        unimplemented!("media::Assembler::nacks")
    }

    /// When the next frame's deadline falls (for the caller's receive timeout).
    pub fn next_deadline(&self) -> Option<u64> {
        unimplemented!("media::Assembler::next_deadline")
    }

    pub fn counts(&self) -> AssemblerCounts {
        unimplemented!("media::Assembler::counts")
    }

    /// Loss on arrival in 1/10000 over recent packets (for the receipt's `loss_bp`).
    pub fn recent_loss_bp(&self) -> u16 {
        unimplemented!("media::Assembler::recent_loss_bp")
    }
}
