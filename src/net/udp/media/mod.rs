//! A frame to RTP packets and back, for the UDP transport.
//!
//! Every packet of a frame is an RTP packet of the viewer's stream (one SSRC, consecutive
//! sequence numbers, the frame's RTP timestamp) with header extensions in the one-byte form
//! (RFC 8285, profile 0xBEDE, the block padded to 32-bit words):
//!
//! ```text
//! id 1  capture time (rtp::capture_time, 8 bytes)
//! id 2  frame: frame seq u32, packet index u16, data packets u16, parity packets u16 (10 bytes)
//! id 3  timing, in the frame's first data packet and in every parity packet: quality u8, then
//!       encode start, encode end and send, each µs after capture, u32 (13 bytes)
//! ```
//!
//! Data packets (PT 26) are RFC 2435 RTP/JPEG packets, indices 0..data, the marker bit on the
//! last. Parity packets (PT [`FEC_PAYLOAD_TYPE`]) follow, indices data..data+parity; their
//! payload is a parity shard of [`super::fec`] for the group of data packets it covers: group
//! `g` is data packets `g*G..min((g+1)*G, data)` with `G` = [`super::fec::MAX_GROUP_DATA`],
//! and every group has the same number `P = parity / groups` of parity packets, consecutive:
//! group `g`'s are indices `data + g*P..data + (g+1)*P`. The payload starts with: group u8,
//! parity index in the group u8, parity packets in the group u8, reserved u8 ([`FEC_HEADER`]
//! bytes), then the shard. Parity covers the data packets' RTP payloads (the RFC 2435 headers
//! and scan data): the rest of a rebuilt packet follows from the frame (sequence number =
//! the first data packet's + index, the frame's timestamp, the marker on the last), and id 3
//! rides in the parity packets too, so a frame whose first packet was rebuilt keeps its
//! timing. The largest packet ([`MAX_MEDIA_PACKET`], a parity packet over full payloads of
//! the payloader) fits a sealed datagram ([`super::MAX_DATAGRAM`]).
//!
//! The receiver's [`Assembler`] rebuilds frames: packets in, FEC recovery as soon as a group
//! can be rebuilt, NACKs for what is still missing while the frame can be shown in time
//! (RTT-aware), and frames out: complete, partial (the restart intervals that arrived, for
//! concealment over the previous frame) or lost. A newer complete frame always wins: older
//! unfinished ones are given up at once.
//!
//! Pure code over bytes and timestamps passed in, no sockets and no clock: [`Outgoing`] runs
//! on the sender's per-viewer thread ([`outgoing`]), [`Assembler`] on the receiver's network
//! thread ([`assemble`]). This file holds what both sides share: the extensions and the
//! packet parser.

mod assemble;
mod outgoing;

pub use assemble::{Assembled, Assembler, AssemblerCounts, Received, MAX_FRAMES_OPEN, MAX_HELD_BYTES};
pub use outgoing::{Outgoing, OutgoingCounts, MAX_RETRANSMIT_PER_CALL};

use rtp_types::RtpPacket;

use crate::rtp::capture_time;
use crate::rtp::packetize::{MAX_PAYLOAD, RTP_HEADER};
use crate::rtp::PAYLOAD_TYPE;

use super::fec;

/// The RTP payload type of parity packets (dynamic range).
pub const FEC_PAYLOAD_TYPE: u8 = 127;
/// Header extension ids (one-byte form).
pub const FRAME_EXT_ID: u8 = 2;
pub const TIMING_EXT_ID: u8 = 3;
/// Bytes of the header before a parity packet's shard.
pub const FEC_HEADER: usize = 4;
/// The most packets (data and parity) one frame may have.
pub const MAX_FRAME_PACKETS: usize = 4096;
/// Bytes of the largest header extension: its 4-byte header and elements 1, 2 and 3
/// (9 + 11 + 14 bytes), padded to 36.
pub const MAX_EXTENSION: usize = 4 + 36;
/// The largest RTP packet framecast sends over UDP: a parity packet over payloads of the
/// payloader's largest ([`MAX_PAYLOAD`]). Sealed (26 bytes more) it fits [`super::MAX_DATAGRAM`].
pub const MAX_MEDIA_PACKET: usize = RTP_HEADER + MAX_EXTENSION + FEC_HEADER + fec::LEN_BYTES + MAX_PAYLOAD;
// Sealed: kind, nonce u64, inner kind, then the packet and a 16-byte tag (`wire`).
const _: () = assert!(1 + 8 + 1 + MAX_MEDIA_PACKET + 16 <= super::MAX_DATAGRAM);

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

/// Extension id 2: where a packet sits in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameExt {
    /// The frame's sequence number, low 32 bits.
    pub frame: u32,
    pub index: u16,
    pub data: u16,
    pub parity: u16,
}

impl FrameExt {
    const LEN: usize = 10;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(&self.frame.to_be_bytes());
        b[4..6].copy_from_slice(&self.index.to_be_bytes());
        b[6..8].copy_from_slice(&self.data.to_be_bytes());
        b[8..].copy_from_slice(&self.parity.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Some(FrameExt {
            frame: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            index: u16_at(4),
            data: u16_at(6),
            parity: u16_at(8),
        })
    }
}

/// Extension id 3: quality and the encoder's timestamps, µs after capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub quality: u8,
    pub encode_start: u32,
    pub encode_end: u32,
    pub send: u32,
}

impl Timing {
    const LEN: usize = 13;

    /// The timing of `info` (times before capture are 0, times past 71 minutes saturate).
    pub fn of(info: &FrameInfo) -> Self {
        let after = |us: u64| us.saturating_sub(info.capture_us).min(u64::from(u32::MAX)) as u32;
        Timing {
            quality: info.quality,
            encode_start: after(info.encode_start_us),
            encode_end: after(info.encode_end_us),
            send: after(info.send_us),
        }
    }

    /// Fills `info`'s quality and timestamps (its capture time set).
    pub fn apply(&self, info: &mut FrameInfo) {
        info.quality = self.quality;
        info.encode_start_us = info.capture_us.saturating_add(u64::from(self.encode_start));
        info.encode_end_us = info.capture_us.saturating_add(u64::from(self.encode_end));
        info.send_us = info.capture_us.saturating_add(u64::from(self.send));
    }

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.quality;
        b[1..5].copy_from_slice(&self.encode_start.to_be_bytes());
        b[5..9].copy_from_slice(&self.encode_end.to_be_bytes());
        b[9..].copy_from_slice(&self.send.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Timing { quality: b[0], encode_start: u32_at(1), encode_end: u32_at(5), send: u32_at(9) })
    }
}

/// A one-byte-form extension block (without the 4-byte header `rtp-types` writes) holding
/// `elements` (id 1..=14, 1..=16 bytes each), zero-padded to a whole number of 32-bit words.
pub fn extension_block(elements: &[(u8, &[u8])]) -> Vec<u8> {
    let mut b = Vec::with_capacity(MAX_EXTENSION);
    for (id, data) in elements {
        debug_assert!((1..=14).contains(id) && (1..=16).contains(&data.len()));
        b.push((id << 4) | (data.len() as u8 - 1));
        b.extend_from_slice(data);
    }
    b.resize(b.len().next_multiple_of(4), 0);
    b
}

/// The extension block of a packet of a frame: capture time, frame, and timing if given.
fn frame_extensions(capture_us: u64, frame: &FrameExt, timing: Option<&Timing>) -> Vec<u8> {
    let capture = capture_time::encode(capture_time::ID, capture_us);
    let frame = frame.encode();
    let timing = timing.map(Timing::encode);
    let mut elements: Vec<(u8, &[u8])> = vec![(capture_time::ID, &capture[1..9]), (FRAME_EXT_ID, &frame)];
    if let Some(t) = &timing {
        elements.push((TIMING_EXT_ID, t));
    }
    extension_block(&elements)
}

/// One media packet, read: the RTP header fields framecast uses and its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPacket<'a> {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub capture_us: u64,
    pub frame: FrameExt,
    pub timing: Option<Timing>,
    pub payload: &'a [u8],
}

impl<'a> MediaPacket<'a> {
    /// Reads an RTP packet of framecast's UDP media: PT 26 or [`FEC_PAYLOAD_TYPE`], with
    /// extensions 1 and 2 (3 is optional).
    pub fn parse(rtp: &'a [u8]) -> Result<Self, MediaError> {
        let pkt = RtpPacket::parse(rtp).map_err(|e| MediaError::Rtp(format!("{e} ({} bytes)", rtp.len())))?;
        let pt = pkt.payload_type();
        if pt != PAYLOAD_TYPE && pt != FEC_PAYLOAD_TYPE {
            return Err(MediaError::Rtp(format!(
                "payload type {pt}, expected {PAYLOAD_TYPE} (JPEG) or {FEC_PAYLOAD_TYPE} (parity)"
            )));
        }
        let Some((profile, block)) = pkt.extension() else { return Err(MediaError::NoFrameExt) };
        if profile != capture_time::ONE_BYTE_PROFILE {
            return Err(MediaError::Rtp(format!(
                "header extension profile {profile:#06x}, expected {:#06x} (one-byte form)",
                capture_time::ONE_BYTE_PROFILE
            )));
        }
        let frame = element(block, FRAME_EXT_ID).and_then(FrameExt::decode).ok_or(MediaError::NoFrameExt)?;
        let capture_us = capture_time::decode(profile, block, capture_time::ID).ok_or_else(|| {
            MediaError::Rtp(format!("no capture time (extension id {} of 8 bytes)", capture_time::ID))
        })?;
        let timing = element(block, TIMING_EXT_ID).and_then(Timing::decode);
        let at = pkt.payload_offset();
        Ok(MediaPacket {
            payload_type: pt,
            seq: pkt.sequence_number(),
            timestamp: pkt.timestamp(),
            ssrc: pkt.ssrc(),
            capture_us,
            frame,
            timing,
            payload: &rtp[at..at + pkt.payload_len()],
        })
    }
}

/// Element `id` of a one-byte-form extension block; `None` if absent or the block is
/// malformed before it.
fn element(block: &[u8], id: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b == 0 {
            i += 1;
            continue;
        }
        let (eid, len) = (b >> 4, usize::from(b & 0x0F) + 1);
        if eid == 15 {
            return None;
        }
        let data = block.get(i + 1..i + 1 + len)?;
        if eid == id {
            return Some(data);
        }
        i += 1 + len;
    }
    None
}

/// The header of a parity packet's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecHeader {
    pub group: u8,
    pub index: u8,
    pub count: u8,
}

impl FecHeader {
    fn encode(&self) -> [u8; FEC_HEADER] {
        [self.group, self.index, self.count, 0]
    }

    /// Reads the header; returns it and the shard.
    pub fn parse(payload: &[u8]) -> Option<(Self, &[u8])> {
        let (h, shard) = payload.split_first_chunk::<FEC_HEADER>()?;
        Some((FecHeader { group: h[0], index: h[1], count: h[2] }, shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_round_trip_padded_to_words() {
        let frame = FrameExt { frame: 0xDEAD_BEEF, index: 3, data: 70, parity: 4 };
        let timing = Timing { quality: 61, encode_start: 100, encode_end: 2100, send: 2200 };
        for t in [None, Some(timing)] {
            let block = frame_extensions(5_000_000, &frame, t.as_ref());
            assert_eq!(block.len(), if t.is_some() { 36 } else { 20 });
            assert!(4 + block.len() <= MAX_EXTENSION);
            let pkt = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
                .payload_type(26)
                .extension(capture_time::ONE_BYTE_PROFILE, &block)
                .payload(b"JPEG")
                .write_vec()
                .unwrap();
            let m = MediaPacket::parse(&pkt).unwrap();
            assert_eq!((m.frame, m.timing, m.capture_us, m.payload), (frame, t, 5_000_000, &b"JPEG"[..]));
        }
    }

    #[test]
    fn timing_is_relative_to_capture() {
        let info = FrameInfo {
            seq: 9,
            capture_us: 1_000_000,
            encode_start_us: 1_000_100,
            encode_end_us: 1_002_000,
            send_us: 999_999,
            quality: 75,
        };
        let t = Timing::of(&info);
        assert_eq!(t, Timing { quality: 75, encode_start: 100, encode_end: 2000, send: 0 });
        let mut back = FrameInfo { seq: 9, capture_us: 1_000_000, ..FrameInfo::default() };
        t.apply(&mut back);
        assert_eq!(back, FrameInfo { send_us: 1_000_000, ..info });
    }

    #[test]
    fn packets_without_framecast_s_extensions_are_named() {
        let plain = |pt: u8, ext: Option<(u16, Vec<u8>)>| {
            let mut b = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new().payload_type(pt).payload(b"x");
            if let Some((p, e)) = &ext {
                b = b.extension(*p, e.as_slice());
            }
            MediaPacket::parse(&b.write_vec().unwrap()).unwrap_err()
        };
        assert_eq!(plain(26, None), MediaError::NoFrameExt);
        let e = plain(96, None);
        assert!(matches!(&e, MediaError::Rtp(m) if m.contains("96") && m.contains("127")), "{e}");
        let e = plain(26, Some((0x1000, vec![0; 4])));
        assert!(matches!(&e, MediaError::Rtp(m) if m.contains("0x1000")), "{e}");
        let only_capture = capture_time::encode(1, 5).to_vec();
        assert_eq!(plain(26, Some((0xBEDE, only_capture))), MediaError::NoFrameExt);
        let frame = FrameExt { frame: 1, index: 0, data: 1, parity: 0 }.encode();
        let e = plain(26, Some((0xBEDE, extension_block(&[(2, &frame)]))));
        assert!(matches!(&e, MediaError::Rtp(m) if m.contains("capture time")), "{e}");
        assert!(matches!(MediaPacket::parse(&[0x80, 26, 0]), Err(MediaError::Rtp(_))));
        // An element that runs past the block, and the reserved id 15, end the reading.
        assert_eq!(element(&[0x29, 1, 2], 2), None);
        assert_eq!(element(&[0xF0, 0x20, 7], 2), None);
        assert_eq!(element(&[0, 0, 0x20, 7], 2), Some(&[7][..]));
    }
}
