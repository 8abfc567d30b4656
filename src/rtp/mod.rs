//! RTP for JPEG (RFC 2435), shared by every RTP transport: the RTSP server (`send --rtsp`),
//! publishing (`send --publish`), framecast's RTSP client (`recv --connect rtsp://`) and later
//! the UDP transport.
//!
//! This file holds the wire formats both directions need: the RFC 2435 headers that begin
//! every payload, and framecast's capture-time header extension. RTP and RTCP packets
//! themselves are read and written with the `rtp-types` and `rtcp-types` crates.
//!
//! Pure code over bytes: no sockets, no clocks.

pub mod depacketize;

use thiserror::Error;

pub mod packetize;
pub mod tables;

/// The RTP clock rate of video, Hz (RFC 2435 section 3).
pub const CLOCK_RATE: u32 = 90_000;
/// RTP/JPEG's static payload type (RFC 3551).
pub const PAYLOAD_TYPE: u8 = 26;
/// Largest RTP packet framecast sends (header, extension and payload): fits a 1500-byte
/// Ethernet or Wi-Fi MTU with IPv6 and UDP headers, and GStreamer's default `mtu` of 1400.
pub const MAX_PACKET: usize = 1400;
/// Largest width or height the RFC 2435 header can state (8 bits, in units of 8 pixels).
/// Larger frames state 0 and carry their size in the SDP (`a=x-dimensions:W,H`, GStreamer's
/// convention).
pub const MAX_HEADER_DIMENSION: u32 = 2040;
/// The Q value framecast sends: tables in-band in every frame (RFC 2435 section 3.1.8: "the
/// quantization table mapping is dynamic and can change on every frame").
pub const Q_DYNAMIC: u8 = 255;

/// Why an RTP/JPEG payload header cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("payload of {got} bytes, expected at least {need} for the {what}")]
    Short { what: &'static str, need: usize, got: usize },
    #[error("quantization table header says {got} bytes of tables, expected {want}")]
    TableLength { got: usize, want: String },
    #[error("quantization table header has precision bits {0:#04x}; only 8-bit tables (0) are read")]
    Precision(u8),
}

/// The main JPEG header (RFC 2435 section 3.1), 8 bytes at the start of every payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub type_specific: u8,
    /// Byte offset of this packet's data in the frame's scan data (24 bits).
    pub fragment_offset: u32,
    /// 0 (4:2:2) or 1 (4:2:0); 64 and 65 add a restart marker header.
    pub kind: u8,
    /// 1..=99: the decoder derives tables from Q; 128..=255: tables in-band.
    pub q: u8,
    /// Width in pixels (a multiple of 8, at most 2040; 0 means "stated elsewhere").
    pub width: u32,
    pub height: u32,
}

impl JpegHeader {
    pub const LEN: usize = 8;

    /// Whether a restart marker header follows (types 64..=127).
    pub fn has_restart(&self) -> bool {
        (64..128).contains(&self.kind)
    }

    /// Appends the header. Sizes above [`MAX_HEADER_DIMENSION`] are written as 0.
    pub fn write(&self, out: &mut Vec<u8>) {
        let dim = |px: u32| if px > MAX_HEADER_DIMENSION { 0 } else { px.div_ceil(8) as u8 };
        let off = self.fragment_offset.to_be_bytes();
        out.extend_from_slice(&[self.type_specific, off[1], off[2], off[3]]);
        out.extend_from_slice(&[self.kind, self.q, dim(self.width), dim(self.height)]);
    }

    /// Reads the header at the start of `payload`; returns it and the rest.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), HeaderError> {
        let b = need(payload, Self::LEN, "RFC 2435 JPEG header")?;
        let h = JpegHeader {
            type_specific: b[0],
            fragment_offset: u32::from_be_bytes([0, b[1], b[2], b[3]]),
            kind: b[4],
            q: b[5],
            width: u32::from(b[6]) * 8,
            height: u32::from(b[7]) * 8,
        };
        Ok((h, &payload[Self::LEN..]))
    }
}

/// The restart marker header (RFC 2435 section 3.1.7), 4 bytes after the main header in
/// types 64..=127.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartHeader {
    /// MCUs between restart markers (the frame's DRI).
    pub interval: u16,
    /// The packet holds the first fragment of a chunk of restart intervals.
    pub first: bool,
    /// The packet holds the last fragment of that chunk.
    pub last: bool,
    /// Index of the chunk's first restart interval in the frame, modulo 2^14; 0x3FFF (with
    /// `first` and `last`) means packets do not end on restart intervals.
    pub count: u16,
}

impl RestartHeader {
    pub const LEN: usize = 4;
    /// `count` saying "whole frame only": packets do not end on restart intervals.
    pub const UNALIGNED: u16 = 0x3FFF;

    pub fn write(&self, out: &mut Vec<u8>) {
        let flags = (u16::from(self.first) << 15) | (u16::from(self.last) << 14) | (self.count & 0x3FFF);
        out.extend_from_slice(&self.interval.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }

    pub fn parse(rest: &[u8]) -> Result<(Self, &[u8]), HeaderError> {
        let b = need(rest, Self::LEN, "RFC 2435 restart marker header")?;
        let flags = u16::from_be_bytes([b[2], b[3]]);
        let h = RestartHeader {
            interval: u16::from_be_bytes([b[0], b[1]]),
            first: flags & 0x8000 != 0,
            last: flags & 0x4000 != 0,
            count: flags & 0x3FFF,
        };
        Ok((h, &rest[Self::LEN..]))
    }
}

/// The quantization table header and its tables (RFC 2435 section 3.1.8), in the first
/// packet of a frame (fragment offset 0) when Q is 128 or more. framecast reads and writes
/// only 8-bit tables, 64 bytes each in zig-zag order as in the JPEG's DQT: two for types 0 and
/// 1 (luma, then chroma for both chroma components).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantTables<'a> {
    pub tables: &'a [u8],
}

impl<'a> QuantTables<'a> {
    pub const HEADER_LEN: usize = 4;
    /// Largest table data in a header: four 8-bit tables (more is refused on reading).
    pub const MAX_LEN: usize = 4 * 64;

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(self.tables.len() as u16).to_be_bytes());
        out.extend_from_slice(self.tables);
    }

    /// Reads the header and its tables; a length that is not a whole number of 64-byte tables
    /// (at most [`MAX_LEN`](Self::MAX_LEN)), or that the payload does not hold, is an error.
    pub fn parse(rest: &'a [u8]) -> Result<(Self, &'a [u8]), HeaderError> {
        let b = need(rest, Self::HEADER_LEN, "RFC 2435 quantization table header")?;
        if b[1] != 0 {
            return Err(HeaderError::Precision(b[1]));
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len == 0 || len % 64 != 0 || len > Self::MAX_LEN {
            return Err(HeaderError::TableLength { got: len, want: "64, 128, 192 or 256".into() });
        }
        let body = &rest[Self::HEADER_LEN..];
        let tables = need(body, len, "quantization tables")?;
        Ok((QuantTables { tables }, &body[len..]))
    }
}

fn need<'a>(b: &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], HeaderError> {
    b.get(..n).ok_or(HeaderError::Short { what, need: n, got: b.len() })
}

/// framecast's capture-time RTP header extension (RFC 8285, one-byte form), in every packet a
/// framecast sender writes: the frame's capture time on the sender's clock
/// ([`crate::clock::now_us`]) in the layout of WebRTC's `abs-capture-time` (64-bit NTP-format
/// seconds, 32.32 fixed point). Its URI is framecast's own, since the clock is the sender's
/// monotonic clock and not wall time: foreign clients ignore it (RFC 8285 section 4.1). The
/// SDP names it (`a=extmap:ID URI`) and states the sender's clock id
/// (`a=x-framecast-clock:ID`), so a framecast client on the same host measures
/// capture→displayed exactly.
pub mod capture_time {
    /// The extension's URI in `a=extmap`.
    pub const URI: &str = "urn:x-framecast:capture-time";
    /// The extension id framecast's SDP assigns.
    pub const ID: u8 = 1;
    /// RTP header extension profile of the one-byte form.
    pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
    /// The SDP attribute that states the sender's clock id (hex).
    pub const CLOCK_ATTRIBUTE: &str = "x-framecast-clock";

    /// The extension block (without its 4-byte profile and length header, which `rtp-types`
    /// writes): the element, padded to a whole number of 32-bit words.
    pub fn encode(id: u8, capture_us: u64) -> [u8; 12] {
        let ntp = (u128::from(capture_us) << 32) / 1_000_000;
        let mut b = [0u8; 12];
        b[0] = (id << 4) | 7; // length - 1
        b[1..9].copy_from_slice(&(ntp as u64).to_be_bytes());
        b
    }

    /// Finds element `id` in a one-byte-form extension block and reads the capture time, µs.
    /// `None` if the block is of another profile, malformed, or lacks the element.
    pub fn decode(profile: u16, block: &[u8], id: u8) -> Option<u64> {
        if profile != ONE_BYTE_PROFILE {
            return None;
        }
        let mut i = 0;
        while i < block.len() {
            let b = block[i];
            if b == 0 {
                i += 1; // padding
                continue;
            }
            let (eid, len) = (b >> 4, usize::from(b & 0x0F) + 1);
            if eid == 15 {
                return None; // reserved: stop reading (RFC 8285 section 4.2)
            }
            let data = block.get(i + 1..i + 1 + len)?;
            if eid == id && len == 8 {
                let ntp = u64::from_be_bytes(data.try_into().ok()?);
                return Some(((u128::from(ntp) * 1_000_000 + (1 << 31)) >> 32) as u64);
            }
            i += 1 + len;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = JpegHeader { type_specific: 0, fragment_offset: 0x12_3456, kind: 65, q: 255, width: 1280, height: 720 };
        let r = RestartHeader { interval: 160, first: true, last: false, count: 0x2ABC };
        let t: Vec<u8> = (0..128).map(|i| i as u8 + 1).collect();
        let mut out = Vec::new();
        h.write(&mut out);
        r.write(&mut out);
        QuantTables { tables: &t }.write(&mut out);
        out.extend_from_slice(b"scan");
        let (h2, rest) = JpegHeader::parse(&out).unwrap();
        assert_eq!(h2, h);
        assert!(h2.has_restart());
        let (r2, rest) = RestartHeader::parse(rest).unwrap();
        assert_eq!(r2, r);
        let (t2, rest) = QuantTables::parse(rest).unwrap();
        assert_eq!(t2.tables, &t[..]);
        assert_eq!(rest, b"scan");
    }

    #[test]
    fn large_sizes_are_written_as_zero() {
        let mut out = Vec::new();
        JpegHeader { type_specific: 0, fragment_offset: 0, kind: 1, q: 255, width: 2560, height: 1440 }.write(&mut out);
        assert_eq!(&out[6..8], &[0, 180]);
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(
            JpegHeader::parse(&[0; 5]).unwrap_err(),
            HeaderError::Short { what: "RFC 2435 JPEG header", need: 8, got: 5 }
        );
        assert!(matches!(QuantTables::parse(&[0, 0, 0, 65]), Err(HeaderError::TableLength { got: 65, .. })));
        assert!(matches!(QuantTables::parse(&[0, 0, 2, 0]), Err(HeaderError::TableLength { got: 512, .. })));
        assert_eq!(QuantTables::parse(&[0, 1, 0, 128]).unwrap_err(), HeaderError::Precision(1));
        assert!(matches!(QuantTables::parse(&[0, 0, 0, 128, 1, 2]), Err(HeaderError::Short { need: 128, got: 2, .. })));
    }

    #[test]
    fn capture_time_round_trips_to_the_microsecond() {
        for us in [0u64, 1, 999_999, 1_234_567_890_123, u64::from(u32::MAX) * 1000] {
            let b = capture_time::encode(3, us);
            assert_eq!(capture_time::decode(capture_time::ONE_BYTE_PROFILE, &b, 3), Some(us), "{us}");
            assert_eq!(capture_time::decode(capture_time::ONE_BYTE_PROFILE, &b, 4), None);
            assert_eq!(capture_time::decode(0x1000, &b, 3), None);
        }
        // Another element first, then padding, then ours.
        let mut block = vec![0x20, 0xAA, 0, 0];
        block.extend_from_slice(&capture_time::encode(1, 42)[..9]);
        assert_eq!(capture_time::decode(capture_time::ONE_BYTE_PROFILE, &block, 1), Some(42));
        // Truncated element.
        assert_eq!(capture_time::decode(capture_time::ONE_BYTE_PROFILE, &block[..8], 1), None);
    }
}
