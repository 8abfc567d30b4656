//! The RFC 2435 payloader: one JPEG frame cut into RTP/JPEG payloads once, then sent to any
//! number of RTP streams (RTSP viewers over UDP or TCP, a publish session), each with its own
//! RTP header.
//!
//! [`packetize`] reads a baseline JPEG's markers, decides whether RFC 2435 can carry it
//! (three components sampled 2x1/1x1/1x1 or 2x2/1x1/1x1, 8-bit quantization tables, the
//! standard Huffman tables of JPEG Annex K) and cuts its scan into [`Packetized`] payloads.
//! With a restart interval (a DRI), packets end on restart-interval boundaries (types 64/65,
//! RFC 2435 section 3.1.7): a packet holds whole intervals, or one fragment of an interval too
//! big for a packet, so a receiver that loses a packet loses whole intervals only.
//! [`RtpStream`] then prefixes one viewer's RTP header (SSRC, sequence number, 90 kHz
//! timestamp, marker bit, framecast's capture-time extension) to each payload.
//!
//! Pure code over bytes, run by whichever thread sends (an RTSP session's, the publisher's).
//! No input makes it panic, and nothing is allocated from a size the JPEG claims.

use std::ops::Range;

use rtp_types::RtpPacketBuilder;
use thiserror::Error;

use super::tables::{AC_CHROMINANCE, AC_LUMINANCE, DC_CHROMINANCE, DC_LUMINANCE};
use super::{capture_time, JpegHeader, QuantTables, RestartHeader, CLOCK_RATE, MAX_PACKET, PAYLOAD_TYPE, Q_DYNAMIC};
use crate::codec::restart::{self, RestartError};

/// Bytes of a fixed RTP header (no CSRC).
pub const RTP_HEADER: usize = 12;
/// Bytes of the header extension framecast adds to every packet: the 4-byte RFC 3550
/// extension header and the capture-time element ([`capture_time::encode`]).
pub const EXTENSION: usize = 4 + 12;
/// Largest RTP/JPEG payload (RFC 2435 headers and scan data), so that a whole packet is at
/// most [`MAX_PACKET`] bytes.
pub const MAX_PAYLOAD: usize = MAX_PACKET - RTP_HEADER - EXTENSION;
/// Largest scan RFC 2435 can address: the fragment offset has 24 bits.
pub const MAX_SCAN: usize = 1 << 24;

/// Why a JPEG cannot go out as RTP/JPEG as it is. Every variant but
/// [`Malformed`](Self::Malformed) and [`TooLarge`](Self::TooLarge) is a valid JPEG that RFC
/// 2435 cannot describe: the caller re-encodes it ([`PacketizeError::needs_reencode`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PacketizeError {
    #[error("malformed JPEG: {0}")]
    Malformed(#[from] RestartError),
    #[error("{0}: RFC 2435 carries baseline sequential JPEGs only (SOF0, one scan)")]
    NotBaseline(String),
    #[error("{0} components: RFC 2435 carries YCbCr with 3 components only (grey and CMYK are re-encoded)")]
    Components(u8),
    #[error(
        "sampling factors {0}: RFC 2435 carries 4:2:2 (2x1,1x1,1x1) and 4:2:0 (2x2,1x1,1x1) only (4:4:4 is re-encoded)"
    )]
    Sampling(String),
    #[error("quantization table {0} has 16-bit precision: RFC 2435 carries 8-bit tables only")]
    Precision(u8),
    #[error("{0}: RFC 2435 depayloaders rebuild the JPEG with the standard tables (JPEG Annex K)")]
    Huffman(String),
    #[error("{0}")]
    Tables(String),
    #[error("scan of {len} bytes: RFC 2435 fragment offsets address at most {max}")]
    TooLarge { len: usize, max: usize },
}

impl PacketizeError {
    /// True if the JPEG is valid but RFC 2435 cannot carry it as it is: decoding and encoding
    /// it again as baseline 4:2:0 with standard tables makes it fit.
    pub fn needs_reencode(&self) -> bool {
        !matches!(self, PacketizeError::Malformed(_) | PacketizeError::TooLarge { .. })
    }
}

/// One frame cut into RTP/JPEG payloads, shared (in an `Arc`) by every stream that sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packetized {
    /// Every payload, one after the other.
    data: Vec<u8>,
    /// Where each payload ends in `data`.
    ends: Vec<usize>,
    /// RFC 2435 type: 0 (4:2:2) or 1 (4:2:0), plus 64 with restart markers.
    pub kind: u8,
    pub width: u32,
    pub height: u32,
    /// Restart interval in MCUs (0: none).
    pub interval: u16,
    /// Bytes of scan data the payloads carry (the JPEG's entropy-coded data, EOI excluded).
    pub scan_len: usize,
}

impl Packetized {
    /// Number of payloads (RTP packets).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload `i` (RFC 2435 headers, then scan data).
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.payload(i))
    }

    /// Bytes of all payloads together.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }
}

/// What the JPEG's headers say, as RFC 2435 needs it.
struct Layout<'a> {
    kind: u8,
    width: u32,
    height: u32,
    interval: u16,
    /// Luma table, then chroma table (64 bytes each, zig-zag order as in the DQT).
    tables: [&'a [u8]; 2],
    /// The scan data in the JPEG (EOI excluded).
    scan: Range<usize>,
    /// Start of each restart interval relative to the scan, then the scan's length.
    bounds: Vec<usize>,
}

/// Cuts `jpeg` into RTP/JPEG payloads of at most [`MAX_PAYLOAD`] bytes.
pub fn packetize(jpeg: &[u8]) -> Result<Packetized, PacketizeError> {
    packetize_with(jpeg, MAX_PAYLOAD)
}

/// [`packetize`] with payloads of at most `max_payload` bytes (at least 160: the headers of
/// the first packet and some data).
pub fn packetize_with(jpeg: &[u8], max_payload: usize) -> Result<Packetized, PacketizeError> {
    let l = read_layout(jpeg)?;
    let restart = l.interval > 0;
    let kind = l.kind + if restart { 64 } else { 0 };
    let head = JpegHeader::LEN + if restart { RestartHeader::LEN } else { 0 };
    let first_room = max_payload.saturating_sub(head + QuantTables::HEADER_LEN + 128).max(1);
    let room = max_payload.saturating_sub(head).max(1);
    let chunks =
        if restart { plan_aligned(&l.bounds, first_room, room) } else { plan_plain(l.scan.len(), first_room, room) };
    let scan = &jpeg[l.scan.clone()];
    let mut out = Packetized {
        data: Vec::with_capacity(scan.len() + chunks.len() * (head + 2) + 132),
        ends: Vec::with_capacity(chunks.len()),
        kind,
        width: l.width,
        height: l.height,
        interval: l.interval,
        scan_len: scan.len(),
    };
    let mut both = [0u8; 128];
    both[..64].copy_from_slice(l.tables[0]);
    both[64..].copy_from_slice(l.tables[1]);
    for c in &chunks {
        let h = JpegHeader {
            type_specific: 0,
            fragment_offset: c.range.start as u32,
            kind,
            q: Q_DYNAMIC,
            width: l.width,
            height: l.height,
        };
        h.write(&mut out.data);
        if restart {
            RestartHeader { interval: l.interval, first: c.first, last: c.last, count: c.count }.write(&mut out.data);
        }
        if c.range.start == 0 {
            QuantTables { tables: &both }.write(&mut out.data);
        }
        out.data.extend_from_slice(&scan[c.range.clone()]);
        out.ends.push(out.data.len());
    }
    Ok(out)
}

/// One payload's share of the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chunk {
    range: Range<usize>,
    first: bool,
    last: bool,
    count: u16,
}

/// Without restart markers: the scan in pieces that fill each packet.
fn plan_plain(len: usize, first_room: usize, room: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len || out.is_empty() {
        let end = len.min(at + if out.is_empty() { first_room } else { room });
        out.push(Chunk { range: at..end, first: true, last: true, count: RestartHeader::UNALIGNED });
        at = end;
    }
    out
}

/// With restart markers (RFC 2435 section 3.1.7): as many whole intervals as fit in a packet
/// (F=1, L=1, count = the first one's index); an interval larger than a packet alone, in
/// fragments (F=1,L=0 ... F=0,L=1, each with the interval's index).
fn plan_aligned(bounds: &[usize], first_room: usize, room: usize) -> Vec<Chunk> {
    let n = bounds.len() - 1;
    let mut out: Vec<Chunk> = Vec::new();
    let room_now = |out: &Vec<Chunk>| if out.is_empty() { first_room } else { room };
    let mut i = 0;
    while i < n {
        let start = bounds[i];
        let count = (i & 0x3FFF) as u16;
        let mut j = i;
        while j < n && bounds[j + 1] - start <= room_now(&out) {
            j += 1;
        }
        if j > i {
            out.push(Chunk { range: start..bounds[j], first: true, last: true, count });
            i = j;
            continue;
        }
        let end = bounds[i + 1];
        let mut at = start;
        while at < end {
            let e = end.min(at + room_now(&out));
            out.push(Chunk { range: at..e, first: at == start, last: e == end, count });
            at = e;
        }
        i += 1;
    }
    out
}

/// Reads the headers and checks that RFC 2435 can carry the JPEG.
fn read_layout(jpeg: &[u8]) -> Result<Layout<'_>, PacketizeError> {
    let h = restart::parse_header(jpeg)?;
    if let Some(why) = h.serial {
        return Err(PacketizeError::NotBaseline(why.to_string()));
    }
    let mut dqt: [Option<&[u8]>; 4] = [None; 4];
    let mut sof: Option<&[u8]> = None;
    let mut sos: Option<&[u8]> = None;
    for (marker, body) in segments(&jpeg[..h.scan_at]) {
        match marker {
            0xC0 => sof = Some(body),
            0xC1..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                return Err(PacketizeError::NotBaseline(format!("SOF{}", marker - 0xC0)));
            }
            0xDB => read_dqt(body, &mut dqt)?,
            0xC4 => check_dht(body)?,
            0xDA => sos = Some(body),
            _ => {}
        }
    }
    let missing = |what: &str| PacketizeError::Tables(format!("the JPEG has no {what} segment"));
    let (kind, tq) = read_sof(sof.ok_or_else(|| missing("SOF0"))?)?;
    check_sos(sos.ok_or_else(|| missing("SOS"))?)?;
    let table = |id: u8| {
        dqt.get(usize::from(id)).copied().flatten().ok_or_else(|| {
            PacketizeError::Tables(format!("the SOF uses quantization table {id}, which no DQT defines"))
        })
    };
    let tables = [table(tq[0])?, table(tq[1])?];
    let intervals = restart::intervals(jpeg, &h)?;
    let scan = h.scan_at..intervals.last().map_or(h.scan_at, |r| r.end);
    if scan.len() > MAX_SCAN {
        return Err(PacketizeError::TooLarge { len: scan.len(), max: MAX_SCAN });
    }
    let mut bounds: Vec<usize> = intervals.iter().map(|r| r.start - h.scan_at).collect();
    bounds[0] = 0;
    bounds.push(scan.len());
    let (width, height) = (u32::from(h.width), u32::from(h.height));
    Ok(Layout { kind, width, height, interval: h.interval, tables, scan, bounds })
}

/// The marker segments from SOI on (markers and bodies without their length fields); stops
/// at the first thing that is not a segment (`restart::parse_header` has checked them).
fn segments(head: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 2;
    std::iter::from_fn(move || {
        while head.get(at) == Some(&0xFF) && head.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        if head.get(at) != Some(&0xFF) {
            return None;
        }
        let marker = *head.get(at + 1)?;
        let len = usize::from(u16::from_be_bytes([*head.get(at + 2)?, *head.get(at + 3)?]));
        let body = head.get(at + 4..at + 2 + len.max(2))?;
        at += 2 + len.max(2);
        Some((marker, body))
    })
}

/// Reads a DQT segment's tables into `dqt` by id.
fn read_dqt<'a>(mut body: &'a [u8], dqt: &mut [Option<&'a [u8]>; 4]) -> Result<(), PacketizeError> {
    while let Some((&pq_tq, rest)) = body.split_first() {
        let (pq, tq) = (pq_tq >> 4, pq_tq & 15);
        if pq != 0 {
            return Err(PacketizeError::Precision(tq));
        }
        let table = rest.get(..64).ok_or_else(|| PacketizeError::Tables(format!("DQT table {tq} is cut short")))?;
        let slot = dqt.get_mut(usize::from(tq)).ok_or_else(|| PacketizeError::Tables(format!("DQT table id {tq}")))?;
        *slot = Some(table);
        body = &rest[64..];
    }
    Ok(())
}

/// Checks that every table of a DHT segment is the standard one of its class and id.
fn check_dht(mut body: &[u8]) -> Result<(), PacketizeError> {
    while let Some((&tc_th, rest)) = body.split_first() {
        let (tc, th) = (tc_th >> 4, tc_th & 15);
        let which = if tc == 0 { "DC" } else { "AC" };
        let Some(counts) = rest.get(..16) else {
            return Err(PacketizeError::Huffman(format!("{which} Huffman table {th} is cut short")));
        };
        let n = 16 + counts.iter().map(|&c| usize::from(c)).sum::<usize>();
        let table = rest.get(..n).ok_or_else(|| PacketizeError::Huffman(format!("{which} table {th} is cut short")))?;
        let standard: &[u8] = match (tc, th) {
            (0, 0) => &DC_LUMINANCE,
            (1, 0) => &AC_LUMINANCE,
            (0, 1) => &DC_CHROMINANCE,
            (1, 1) => &AC_CHROMINANCE,
            _ => return Err(PacketizeError::Huffman(format!("{which} Huffman table id {th} (only 0 and 1 exist)"))),
        };
        if table != standard {
            return Err(PacketizeError::Huffman(format!(
                "{which} Huffman table {th} is not the standard one (optimised?)"
            )));
        }
        body = &rest[n..];
    }
    Ok(())
}

/// Reads SOF0: returns the RFC 2435 type (0 or 1) and the luma and chroma table ids.
fn read_sof(sof: &[u8]) -> Result<(u8, [u8; 2]), PacketizeError> {
    let too_short = || PacketizeError::Tables("SOF0 segment too short".into());
    if *sof.first().ok_or_else(too_short)? != 8 {
        return Err(PacketizeError::NotBaseline(format!("{}-bit samples", sof[0])));
    }
    let n = *sof.get(5).ok_or_else(too_short)?;
    if n != 3 {
        return Err(PacketizeError::Components(n));
    }
    let c = sof.get(6..15).ok_or_else(too_short)?;
    let sampling = [c[1], c[4], c[7]];
    let kind = match sampling {
        [0x21, 0x11, 0x11] => 0,
        [0x22, 0x11, 0x11] => 1,
        s => {
            let f = |b: u8| format!("{}x{}", b >> 4, b & 15);
            return Err(PacketizeError::Sampling(format!("{},{},{}", f(s[0]), f(s[1]), f(s[2]))));
        }
    };
    if c[5] != c[8] {
        return Err(PacketizeError::Tables(format!(
            "Cb and Cr use quantization tables {} and {}: RFC 2435 has one chroma table",
            c[5], c[8]
        )));
    }
    Ok((kind, [c[2], c[5]]))
}

/// Checks the SOS: Huffman tables 0 for luma and 1 for chroma (as depayloaders rebuild them),
/// and a baseline scan of all coefficients.
fn check_sos(sos: &[u8]) -> Result<(), PacketizeError> {
    let ok = sos.len() == 10 && sos[0] == 3 && [sos[2], sos[4], sos[6]] == [0x00, 0x11, 0x11] && sos[7..] == [0, 63, 0];
    if ok {
        return Ok(());
    }
    Err(PacketizeError::Huffman(format!(
        "the scan header selects Huffman tables {:02x?}: RFC 2435 depayloaders use DC/AC 0 for Y and 1 for Cb and Cr",
        sos.get(1..7).unwrap_or(sos)
    )))
}

/// One viewer's RTP stream: its SSRC, next sequence number and timestamp offset, and what it
/// has sent (for RTCP sender reports).
#[derive(Clone, Debug)]
pub struct RtpStream {
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub seq: u16,
    /// Added to the capture time's 90 kHz count (random, RFC 3550 section 5.1).
    pub ts_offset: u32,
    /// Packets and payload bytes sent (RTCP sender report counts).
    pub packets: u32,
    pub octets: u32,
    /// RTP timestamp and capture time of the last frame written.
    pub last: Option<(u32, u64)>,
}

impl RtpStream {
    pub fn new(ssrc: u32, seq: u16, ts_offset: u32) -> Self {
        RtpStream { ssrc, seq, ts_offset, packets: 0, octets: 0, last: None }
    }

    /// A stream with a random SSRC, first sequence number and timestamp offset.
    pub fn random() -> Self {
        let mut b = [0u8; 10];
        // Predictable values only weaken RFC 3550's collision avoidance: no error here matters.
        let _ = getrandom::fill(&mut b);
        let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        RtpStream::new(ssrc, u16::from_be_bytes([b[4], b[5]]), u32::from_be_bytes([b[6], b[7], b[8], b[9]]))
    }

    /// The RTP timestamp of a frame captured at `capture_us` (framecast's clock).
    pub fn timestamp(&self, capture_us: u64) -> u32 {
        let ticks = u128::from(capture_us) * u128::from(CLOCK_RATE) / 1_000_000;
        (ticks as u32).wrapping_add(self.ts_offset)
    }

    /// Appends packet `i` of `frame` to `out` (whole RTP packet: header, capture-time
    /// extension, payload; the marker bit on the frame's last packet), and counts it.
    pub fn write(&mut self, frame: &Packetized, i: usize, capture_us: u64, out: &mut Vec<u8>) {
        let ts = self.timestamp(capture_us);
        let ext = capture_time::encode(capture_time::ID, capture_us);
        let payload = frame.payload(i);
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(PAYLOAD_TYPE)
            .sequence_number(self.seq)
            .timestamp(ts)
            .ssrc(self.ssrc)
            .marker_bit(i + 1 == frame.len())
            .extension(capture_time::ONE_BYTE_PROFILE, &ext)
            .payload(payload)
            .write_into_vec_unchecked(out);
        self.seq = self.seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        self.last = Some((ts, capture_us));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::Decoder;
    use crate::format::Subsampling;
    use crate::testutil::{pattern_jpeg, psnr, restart_jpeg, xrgb_to_rgb};

    /// One payload's headers, read back.
    struct Read<'a> {
        main: JpegHeader,
        restart: Option<RestartHeader>,
        tables: Option<Vec<u8>>,
        data: &'a [u8],
    }

    fn read(p: &[u8]) -> Read<'_> {
        let (main, rest) = JpegHeader::parse(p).unwrap();
        let (restart, rest) = if main.has_restart() {
            let (r, rest) = RestartHeader::parse(rest).unwrap();
            (Some(r), rest)
        } else {
            (None, rest)
        };
        let (tables, data) = if main.fragment_offset == 0 {
            let (t, rest) = QuantTables::parse(rest).unwrap();
            (Some(t.tables.to_vec()), rest)
        } else {
            (None, rest)
        };
        Read { main, restart, tables, data }
    }

    /// Checks every payload of `jpeg` cut at `max`: offsets contiguous, sizes, headers, and
    /// with restart markers every packet on interval boundaries as RFC 2435 3.1.7 says.
    /// Returns the packets.
    fn check(jpeg: &[u8], max: usize) -> Packetized {
        let p = packetize_with(jpeg, max).unwrap();
        let l = read_layout(jpeg).unwrap();
        let mut joined = Vec::new();
        let mut open: Option<u16> = None; // the interval being fragmented
        for (i, payload) in p.payloads().enumerate() {
            assert!(payload.len() <= max, "packet {i}: {} > {max}", payload.len());
            let r = read(payload);
            assert_eq!(r.main.fragment_offset as usize, joined.len(), "packet {i}");
            assert_eq!((r.main.kind, r.main.q), (p.kind, Q_DYNAMIC));
            assert_eq!(r.tables.is_some(), i == 0);
            let start = joined.len();
            joined.extend_from_slice(r.data);
            let Some(rh) = r.restart else { continue };
            assert_eq!(rh.interval, l.interval);
            let at_start = l.bounds.iter().position(|&b| b == start);
            let at_end = l.bounds.iter().position(|&b| b == joined.len());
            if rh.first {
                assert_eq!(open, None, "packet {i}: F=1 while an interval is still open");
                assert_eq!(at_start.map(|k| k as u16 & 0x3FFF), Some(rh.count), "packet {i} starts interval");
            } else {
                assert_eq!(open, Some(rh.count), "packet {i}: F=0 continues the open interval");
            }
            if rh.last {
                assert!(at_end.is_some(), "packet {i}: L=1 ends on an interval boundary");
                open = None;
            } else {
                assert!(at_end.is_none() || !rh.first, "packet {i}: a whole interval has L=1");
                open = Some(rh.count);
            }
        }
        assert_eq!(open, None);
        assert_eq!(&joined[..], &jpeg[l.scan.clone()], "the payloads re-joined give back the scan");
        p
    }

    #[test]
    fn without_restart_markers_packets_are_full() {
        let jpeg = pattern_jpeg(640, 480, Subsampling::S420, 80, 3).unwrap();
        let p = check(&jpeg, MAX_PAYLOAD);
        assert_eq!((p.kind, p.width, p.height, p.interval), (1, 640, 480, 0));
        for i in 0..p.len() - 1 {
            assert_eq!(p.payload(i).len(), MAX_PAYLOAD, "packet {i} is full");
        }
        let p = check(&pattern_jpeg(320, 240, Subsampling::S422, 80, 3).unwrap(), MAX_PAYLOAD);
        assert_eq!(p.kind, 0);
    }

    #[test]
    fn every_packet_size_keeps_the_scan_and_the_boundaries() {
        let plain = pattern_jpeg(160, 96, Subsampling::S420, 90, 1).unwrap();
        let rows = restart_jpeg((160, 96), Subsampling::S420, 90, 1, 1).unwrap();
        let mcu = {
            let mut j = pattern_jpeg(160, 96, Subsampling::S422, 90, 1).unwrap();
            // DRI of 1 MCU: intervals far smaller than a packet.
            let at = j.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            j.splice(at..at, [0xFF, 0xDD, 0, 4, 0, 1]);
            j
        };
        for max in 150..=600 {
            check(&plain, max);
            check(&rows, max);
        }
        // A JPEG whose DRI says 1 MCU but has no RST markers is malformed, not cut wrong.
        assert!(matches!(packetize(&mcu), Err(PacketizeError::Malformed(_))));
    }

    #[test]
    fn one_mcu_row_intervals_at_720p_and_4k() {
        for (w, h) in [(1280, 720), (3840, 2160)] {
            let jpeg = restart_jpeg((w, h), Subsampling::S420, 75, 1, 1).unwrap();
            let p = check(&jpeg, MAX_PAYLOAD);
            assert_eq!((p.kind, p.interval), (65, (w / 16) as u16));
            let r = read(p.payload(0));
            assert_eq!((r.main.width, r.main.height), if w > 2040 { (0, 0) } else { (w, h) });
            let last = read(p.payload(p.len() - 1)).restart.unwrap();
            assert_eq!(last.count, (h / 16 - 1) as u16, "{w}x{h}: the last packet is in the last row");
            assert!(last.last);
        }
    }

    #[test]
    fn intervals_larger_than_a_packet_are_fragmented() {
        let jpeg = restart_jpeg((1280, 720), Subsampling::S422, 95, 8, 1).unwrap();
        let p = check(&jpeg, MAX_PAYLOAD);
        let flags: Vec<(bool, bool, u16)> =
            p.payloads().map(|x| read(x).restart.unwrap()).map(|r| (r.first, r.last, r.count)).collect();
        assert_eq!(flags[0], (true, false, 0));
        assert!(flags.iter().any(|&(f, l, _)| !f && !l), "middle fragments: {flags:?}");
        assert!(flags.iter().any(|&(f, l, c)| !f && l && c == 0), "interval 0 ends with F=0,L=1");
        assert!(flags.iter().any(|&(f, _, c)| f && c == 1), "interval 1 starts with F=1");
    }

    #[test]
    fn tables_are_the_jpeg_s() {
        let jpeg = pattern_jpeg(320, 240, Subsampling::S420, 50, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let tables = read(p.payload(0)).tables.unwrap();
        let l = read_layout(&jpeg).unwrap();
        assert_eq!(&tables[..64], l.tables[0]);
        assert_eq!(&tables[64..], l.tables[1]);
        assert_ne!(l.tables[0], l.tables[1]);
        // A DQT's first table is libjpeg's luma table at quality 50 (Annex K, table K.1).
        assert_eq!(&tables[..4], &[16, 11, 12, 14]);
    }

    #[test]
    fn what_rfc_2435_cannot_carry_is_named() {
        let err = |j: &[u8]| packetize(j).unwrap_err();
        let e444 = err(&pattern_jpeg(64, 64, Subsampling::S444, 80, 1).unwrap());
        assert_eq!(e444, PacketizeError::Sampling("1x1,1x1,1x1".into()));
        assert!(e444.needs_reencode());
        assert_eq!(err(&pattern_jpeg(64, 64, Subsampling::Gray, 80, 1).unwrap()), PacketizeError::Components(1));
        let good = pattern_jpeg(64, 64, Subsampling::S420, 80, 1).unwrap();
        let at = |m: u8| good.windows(2).position(|w| w == [0xFF, m]).unwrap();
        let mut progressive = good.clone();
        progressive[at(0xC0) + 1] = 0xC2;
        assert!(matches!(err(&progressive), PacketizeError::NotBaseline(_)));
        let mut optimised = good.clone();
        optimised[at(0xC4) + 6] ^= 1; // a code-length count of the first DHT
        let e = err(&optimised);
        assert!(matches!(&e, PacketizeError::Huffman(m) if m.contains("DC Huffman table 0")), "{e}");
        let mut wide = good.clone();
        wide[at(0xDB) + 4] = 0x10; // 16-bit precision
        assert!(matches!(err(&wide), PacketizeError::Precision(0) | PacketizeError::Malformed(_)));
        let e = err(&good[..good.len() - 40]);
        assert!(matches!(e, PacketizeError::Malformed(_)) && !e.needs_reencode(), "{e}");
        for n in 0..good.len() {
            let _ = packetize(&good[..n]); // never panics
        }
    }

    #[test]
    fn a_camera_jpeg_without_dht_uses_the_standard_tables() {
        let good = pattern_jpeg(64, 64, Subsampling::S422, 80, 1).unwrap();
        let mut out = good[..2].to_vec();
        for (marker, body) in segments(&good[..read_layout(&good).unwrap().scan.start]) {
            if marker != 0xC4 {
                out.extend_from_slice(&[0xFF, marker]);
                out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
                out.extend_from_slice(body);
            }
        }
        out.extend_from_slice(&good[read_layout(&good).unwrap().scan.start..]);
        assert_eq!(packetize(&out).unwrap().kind, 0);
    }

    #[test]
    fn rtp_packets_carry_header_extension_and_marker() {
        let jpeg = pattern_jpeg(640, 480, Subsampling::S420, 80, 3).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut s = RtpStream::new(0x1234_5678, u16::MAX - 1, 1000);
        let mut seqs = Vec::new();
        for i in 0..p.len() {
            let mut out = Vec::new();
            s.write(&p, i, 2_000_000, &mut out);
            assert!(out.len() <= MAX_PACKET, "{} bytes", out.len());
            let pkt = rtp_types::RtpPacket::parse(&out).unwrap();
            assert_eq!((pkt.payload_type(), pkt.ssrc(), pkt.timestamp()), (26, 0x1234_5678, 180_000 + 1000));
            assert_eq!(pkt.marker_bit(), i + 1 == p.len());
            assert_eq!(pkt.payload(), p.payload(i));
            let (profile, block) = pkt.extension().unwrap();
            assert_eq!(capture_time::decode(profile, block, capture_time::ID), Some(2_000_000));
            seqs.push(pkt.sequence_number());
        }
        assert_eq!(&seqs[..3], &[u16::MAX - 1, u16::MAX, 0], "sequence numbers wrap");
        assert_eq!(s.packets as usize, p.len());
        assert_eq!(s.octets as usize, p.payload_bytes());
    }

    /// Rebuilds a JPEG from the payloads as a depayloader does (the original headers, the
    /// re-joined scan, EOI) and decodes it: the picture is the pattern's.
    #[test]
    fn rejoined_payloads_decode_to_the_pattern() {
        let jpeg = restart_jpeg((320, 240), Subsampling::S420, 90, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let l = read_layout(&jpeg).unwrap();
        let mut rebuilt = jpeg[..l.scan.start].to_vec();
        for x in p.payloads() {
            rebuilt.extend_from_slice(read(x).data);
        }
        rebuilt.extend_from_slice(&[0xFF, 0xD9]);
        let mut px = Vec::new();
        Decoder::new().unwrap().decode(&rebuilt, 320, 240, &mut px).unwrap();
        let want = crate::capture::pattern::TestPattern::new(320, 240, Subsampling::S420).render_rgb(5);
        assert!(psnr(&xrgb_to_rgb(&px), &want) > 30.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn payloads_rejoin_to_the_scan(
            w in 1u32..20, h in 1u32..12, rows in 0u16..4, q in 20u8..100, max in 150usize..1500, s422 in any::<bool>(),
        ) {
            let sub = if s422 { Subsampling::S422 } else { Subsampling::S420 };
            let jpeg = restart_jpeg((w * 16, h * 16), sub, q, rows, 1).unwrap();
            check(&jpeg, max);
        }
    }
}
