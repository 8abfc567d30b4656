//! The RFC 2435 depayloader: RTP/JPEG packets in, whole JPEG frames out, for framecast's RTSP
//! client (`recv --connect rtsp://`). Pure code over bytes, run by the receiver's network
//! stage (thread `net-rx`); no sockets, no clocks.
//!
//! Packets are fed one at a time ([`Depacketizer::push`]) in the order they arrive, and what
//! they complete is taken with [`Depacketizer::pull`] (retina's push/pull shape). A frame is
//! the packets of one RTP timestamp, placed by their fragment offsets, so reordering within a
//! frame costs nothing. A frame is done when its marker packet has arrived and its bytes
//! cover the scan from 0 to the marker packet's end; a packet of a newer timestamp ends the
//! current frame whatever state it is in: lost, or (types 64..127 whose packets start on
//! restart intervals) shown in part, as [`Partial`] bands of whole MCU rows that the receiver
//! draws over the previous frame. Packets of older timestamps arrive too late and are counted.
//!
//! The JPEG headers RFC 2435 leaves out are rebuilt in front of the scan: SOI, DQT (from Q as
//! in the RFC's appendix A, or in-band), SOF0, the standard Huffman tables (JPEG Annex K.3),
//! DRI from the restart marker header, SOS; EOI at the end.
//!
//! Malformed input is an error naming what was expected and what arrived; nothing is
//! allocated from a size a packet claims: a frame stores only the bytes that arrived, up to a
//! cap derived from its announced size ([`max_scan_bytes`]).

use std::collections::VecDeque;
use std::ops::Range;

use rtp_types::RtpPacket;
use thiserror::Error;

use super::{capture_time, tables, HeaderError, JpegHeader, QuantTables, RestartHeader, PAYLOAD_TYPE};

/// Largest width or height accepted from the SDP's `a=x-dimensions`.
pub const MAX_DIMENSION: u32 = 16384;
/// Most packets one frame may have (a 64 MB frame in 1 KB packets).
const MAX_FRAGMENTS: usize = 65536;

/// Why a packet cannot be used. The frame it belongs to is dropped; the RTSP client closes the
/// session, since a peer that sends these is broken or hostile.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DepacketizeError {
    #[error("not an RTP packet: {0}")]
    Rtp(String),
    #[error("RTP payload type {got}, expected {want} (JPEG)")]
    PayloadType { got: u8, want: u8 },
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("RFC 2435 type {0}, expected 0, 1, 64 or 65 (4:2:2 or 4:2:0, with or without restart markers)")]
    Type(u8),
    #[error("RFC 2435 Q {0}, expected 1..=99 or 128..=255")]
    Q(u8),
    #[error("RFC 2435 type-specific {0} (interlaced fields), expected 0 (progressive frames)")]
    Interlaced(u8),
    #[error("frame size 0 in the RFC 2435 header and no a=x-dimensions in the SDP, expected a width and height")]
    NoDimensions,
    #[error("fragment of {len} bytes at offset {offset} passes the frame's cap of {cap} bytes (from its size {width}x{height})")]
    TooLarge { offset: u32, len: usize, cap: usize, width: u32, height: u32 },
    #[error("more than {MAX_FRAGMENTS} packets in one frame")]
    TooManyFragments,
    #[error("fragment at offset {offset} ({len} bytes) overlaps the one at {prev} ({prev_len} bytes)")]
    Overlap { offset: u32, len: u32, prev: u32, prev_len: u32 },
    #[error("fragment at offset {offset} ({len} bytes) is past the frame's end at {end} (its marker packet)")]
    PastEnd { offset: u32, len: u32, end: u32 },
    #[error("{what} changed within a frame: {first} in its first packet, {got} later")]
    Mismatch { what: &'static str, first: u32, got: u32 },
    #[error("Q {q} with no tables in-band and none received before (expected tables in a frame's first packet)")]
    NoTables { q: u8 },
    #[error("{got} bytes of quantization tables, expected at least 128 (a luma and a chroma table)")]
    TableLength { got: usize },
}

/// What the SDP says about the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `a=x-dimensions:W,H`: the size when the RFC 2435 header says 0 (above 2040 pixels).
    pub dimensions: Option<(u32, u32)>,
    /// The id of framecast's capture-time extension (`a=extmap:ID urn:x-framecast:capture-time`).
    pub capture_ext: Option<u8>,
    /// The RTP payload type of the JPEG media (`m=video 0 RTP/AVP PT`); 26 if `None`.
    pub payload_type: Option<u8>,
}

/// A whole frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub timestamp: u32,
    pub width: u32,
    pub height: u32,
    /// The capture time on the sender's clock, µs, from framecast's header extension.
    pub capture_us: Option<u64>,
    /// The RFC 2435 Q (the receiver shows it as the quality).
    pub q: u8,
    /// Where the scan data (as carried by the packets) lies in `jpeg`.
    pub scan: Range<usize>,
    pub jpeg: Vec<u8>,
}

/// A frame with packets missing, whose restart intervals that arrived make bands of whole MCU
/// rows, each a JPEG of its own: the receiver draws them over the previous frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    pub timestamp: u32,
    pub width: u32,
    pub height: u32,
    pub capture_us: Option<u64>,
    pub q: u8,
    pub bands: Vec<Band>,
}

/// Rows `rows` of a frame, as a JPEG as wide as the frame and `rows.len()` high.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub rows: Range<u32>,
    pub jpeg: Vec<u8>,
}

/// What the depayloader hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Frame(Frame),
    Partial(Partial),
    /// A frame whose packets did not all arrive, and could not be shown in part.
    Lost {
        timestamp: u32,
        why: &'static str,
    },
}

/// Counts over the packets pushed so far (RTCP receiver reports and stats read them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets used (duplicates and late ones not counted).
    pub packets: u64,
    /// The first sequence number, extended (RFC 3550 A.1).
    pub base_seq: u32,
    /// The highest sequence number received, extended with the wrap count in the high bits.
    pub max_seq: u32,
    /// Packets of frames already done (too late to use).
    pub late: u64,
    pub duplicates: u64,
}

impl Counts {
    /// Packets expected from the sequence numbers seen (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if self.packets == 0 {
            return 0;
        }
        u64::from(self.max_seq.wrapping_sub(self.base_seq)) + 1
    }

    /// Packets missing so far (never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }
}

/// The largest scan a frame of this size may have: libjpeg-turbo's worst case for a 4:2:2
/// frame (`tjBufSize`: 4 bytes per pixel of the MCU-padded size, plus 2 KB), with 64 KB to
/// spare. A frame that claims more is an error, and is never allocated.
pub fn max_scan_bytes(width: u32, height: u32) -> usize {
    let w = width.div_ceil(16) as usize * 16;
    let h = height.div_ceil(16) as usize * 16;
    w * h * 4 + 65536
}

/// RFC 2435 JPEG frames from RTP packets (see the module docs).
#[derive(Debug, Default)]
pub struct Depacketizer {
    cfg: Config,
    cur: Option<Assembly>,
    /// The last frame done (packets of it, or older, are late).
    last_done: Option<Done>,
    /// Tables in-band for Q 128..=254, which a sender may send once (index Q - 128).
    cached: Vec<Option<[u8; 128]>>,
    seq: Seq,
    counts: Counts,
    out: VecDeque<Output>,
}

impl Depacketizer {
    pub fn new(cfg: Config) -> Self {
        Depacketizer { cfg, cached: vec![None; 127], ..Default::default() }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The next frame (or lost frame) done, oldest first.
    pub fn pull(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Ends the frame in progress (end of stream): complete or not, it comes out of `pull`.
    pub fn flush(&mut self) {
        if let Some(a) = self.cur.take() {
            self.finish(a);
        }
    }

    /// Takes one RTP packet. On an error the frame in progress is dropped (without a
    /// [`Output::Lost`]) and the packet is not used.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), DepacketizeError> {
        let pkt = RtpPacket::parse(packet).map_err(|e| DepacketizeError::Rtp(e.to_string()))?;
        let want = self.cfg.payload_type.unwrap_or(PAYLOAD_TYPE);
        if pkt.payload_type() != want {
            return Err(DepacketizeError::PayloadType { got: pkt.payload_type(), want });
        }
        let Some(seq) = self.seq.update(pkt.sequence_number(), &mut self.counts) else { return Ok(()) };
        let ts = pkt.timestamp();
        if !self.start_frame(ts, seq) {
            self.counts.late += 1;
            return Ok(());
        }
        let res = self.add(&pkt, seq);
        if res.is_err() {
            self.cur = None;
            self.last_done = Some(Done { ts, marker_seq: None });
        }
        res
    }

    /// Makes `cur` the frame of packet (`ts`, extended sequence number `seq`), ending the
    /// current one if the packet is of a later frame. False if the packet is of a frame
    /// already done (late).
    ///
    /// Frames are told apart by timestamp, and by the marker packet for senders that give
    /// consecutive frames one timestamp (GStreamer's rtpjpegpay with an untimed source):
    /// after a marker, a packet of the same timestamp with a later sequence number starts a
    /// new frame. A timestamp further back than [`RESYNC`] is a new timeline, not a late
    /// packet.
    fn start_frame(&mut self, ts: u32, seq: u32) -> bool {
        if let Some(a) = &self.cur {
            let next_same_ts = a.ts == ts && a.marker_seq.is_some_and(|m| seq > m);
            if a.ts == ts && !next_same_ts {
                return true;
            }
            if !next_same_ts && newer(a.ts, ts) && a.ts.wrapping_sub(ts) < RESYNC {
                return false;
            }
            let a = self.cur.take().expect("checked above");
            self.finish(a);
        }
        if let Some(d) = self.last_done {
            let same_done = d.ts == ts && d.marker_seq.is_none_or(|m| seq <= m);
            let older = newer(d.ts, ts) && d.ts.wrapping_sub(ts) < RESYNC;
            if same_done || older {
                return false;
            }
        }
        self.cur = Some(Assembly::new(ts));
        true
    }

    fn add(&mut self, pkt: &RtpPacket<'_>, seq: u32) -> Result<(), DepacketizeError> {
        let (h, rest) = JpegHeader::parse(pkt.payload())?;
        let (restart, rest) =
            if h.has_restart() { RestartHeader::parse(rest).map(|(r, b)| (Some(r), b))? } else { (None, rest) };
        let meta = Meta::new(&h, restart.as_ref(), self.cfg.dimensions)?;
        let (tables, scan) = if h.fragment_offset == 0 && h.q >= 128 { self.tables(h.q, rest)? } else { (None, rest) };
        let capture = match (self.cfg.capture_ext, pkt.extension()) {
            (Some(id), Some((profile, block))) => capture_time::decode(profile, block, id),
            _ => None,
        };
        let a = self.cur.as_mut().expect("start_frame made one");
        a.set_meta(meta)?;
        if let Some(t) = tables {
            a.tables = Some(t);
        }
        a.capture_us = a.capture_us.or(capture);
        let chunk = restart.filter(|r| r.count != RestartHeader::UNALIGNED).map(|r| (r.count, r.first, r.last));
        a.insert(h.fragment_offset, scan, chunk)?;
        if pkt.marker_bit() {
            let end = h.fragment_offset + scan.len() as u32;
            a.end = Some(end);
            a.marker_seq = Some(seq);
        }
        if a.end.is_some() && a.complete()? {
            let a = self.cur.take().expect("just used");
            self.finish(a);
        }
        Ok(())
    }

    /// The tables at the start of a first packet's data (Q >= 128), and the scan after them.
    /// A table header of length 0 for Q 128..=254 means "the tables sent before".
    fn tables<'p>(&mut self, q: u8, rest: &'p [u8]) -> Result<(Option<[u8; 128]>, &'p [u8]), DepacketizeError> {
        if q < 255 && rest.len() >= 4 && rest[2..4] == [0, 0] {
            let cached = self.cached[usize::from(q - 128)].ok_or(DepacketizeError::NoTables { q })?;
            return Ok((Some(cached), &rest[4..]));
        }
        let (t, scan) = QuantTables::parse(rest)?;
        if t.tables.len() < 128 {
            return Err(DepacketizeError::TableLength { got: t.tables.len() });
        }
        let mut two = [0u8; 128];
        two.copy_from_slice(&t.tables[..128]);
        if q < 255 {
            self.cached[usize::from(q - 128)] = Some(two);
        }
        Ok((Some(two), scan))
    }

    /// Hands out a frame that is done: whole, in part, or lost.
    fn finish(&mut self, a: Assembly) {
        self.last_done = Some(Done { ts: a.ts, marker_seq: a.marker_seq });
        let out = match self.build(&a) {
            Ok(o) => o,
            Err(why) => Output::Lost { timestamp: a.ts, why },
        };
        self.out.push_back(out);
    }

    fn build(&self, a: &Assembly) -> Result<Output, &'static str> {
        let meta = a.meta.ok_or("no packet")?;
        let tables = match (a.tables, meta.q) {
            (Some(t), _) => t,
            (None, q @ 1..=99) => q_tables(q),
            (None, q @ 128..=254) => self.cached[usize::from(q - 128)].ok_or("no quantization tables")?,
            _ => return Err("its first packet (with the quantization tables) is missing"),
        };
        let runs = a.runs();
        let whole = a.end.is_some_and(|end| runs.len() == 1 && runs[0].bytes == (0..end));
        if whole {
            let scan = a.gather(&runs[0].frags);
            let (jpeg, range) = jpeg_frame(&meta, &tables, meta.height, &scan);
            let f = Frame {
                timestamp: a.ts,
                width: meta.width,
                height: meta.height,
                capture_us: a.capture_us,
                q: meta.q,
                scan: range,
                jpeg,
            };
            return Ok(Output::Frame(f));
        }
        let bands = a.bands(&meta, &tables, &runs)?;
        let p = Partial {
            timestamp: a.ts,
            width: meta.width,
            height: meta.height,
            capture_us: a.capture_us,
            q: meta.q,
            bands,
        };
        Ok(Output::Partial(p))
    }
}

/// How far back (90 kHz ticks: 10 s) a timestamp may be and still be a late packet rather
/// than a sender that started a new timeline.
const RESYNC: u32 = 10 * super::CLOCK_RATE;

/// A frame done: its timestamp, and the extended sequence number of its marker packet.
#[derive(Clone, Copy, Debug)]
struct Done {
    ts: u32,
    marker_seq: Option<u32>,
}

/// True if RTP timestamp `a` is after `b` (modulo 2^32).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Sequence numbers, extended with their wrap count (RFC 3550 A.1), and a window of the last
/// 64 seen for duplicates.
#[derive(Debug, Default)]
struct Seq {
    /// Highest extended sequence number, once any packet arrived.
    max: Option<u32>,
    /// Bit i: `max - i` was seen.
    seen: u64,
}

impl Seq {
    /// Records `seq` and returns it extended; `None` if it is a duplicate (or older than the
    /// window: treated as one).
    fn update(&mut self, seq: u16, counts: &mut Counts) -> Option<u32> {
        let Some(max) = self.max else {
            self.max = Some(u32::from(seq));
            self.seen = 1;
            *counts = Counts { packets: 1, base_seq: u32::from(seq), max_seq: u32::from(seq), ..*counts };
            return Some(u32::from(seq));
        };
        let delta = seq.wrapping_sub(max as u16) as i16;
        let ext = if delta > 0 {
            let ext = max.wrapping_add(delta as u32);
            self.seen = if delta >= 64 { 0 } else { self.seen << delta };
            self.seen |= 1;
            self.max = Some(ext);
            counts.max_seq = ext;
            ext
        } else {
            let back = u32::from(delta.unsigned_abs());
            if back >= 64 || self.seen & (1 << back) != 0 {
                counts.duplicates += 1;
                return None;
            }
            self.seen |= 1 << back;
            max.wrapping_sub(back)
        };
        counts.packets += 1;
        Some(ext)
    }
}

/// What every packet of a frame must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    kind: u8,
    q: u8,
    width: u32,
    height: u32,
    /// Restart interval in MCUs (0: none).
    interval: u16,
}

impl Meta {
    fn new(h: &JpegHeader, r: Option<&RestartHeader>, dims: Option<(u32, u32)>) -> Result<Self, DepacketizeError> {
        if !matches!(h.kind, 0 | 1 | 64 | 65) {
            return Err(DepacketizeError::Type(h.kind));
        }
        if h.q == 0 || (100..128).contains(&h.q) {
            return Err(DepacketizeError::Q(h.q));
        }
        if h.type_specific != 0 {
            return Err(DepacketizeError::Interlaced(h.type_specific));
        }
        // The SDP's size is the caller's to check; one outside 1..=MAX_DIMENSION is no size
        // (a width of 0 would divide by zero when a partial frame is cut into bands).
        let dims = dims.filter(|&(w, h)| (1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h));
        let (width, height) = match (h.width, h.height, dims) {
            (w, h, Some((dw, dh))) if w == 0 || h == 0 => (if w == 0 { dw } else { w }, if h == 0 { dh } else { h }),
            (0, _, None) | (_, 0, None) => return Err(DepacketizeError::NoDimensions),
            (w, h, _) => (w, h),
        };
        let interval = r.map_or(0, |r| r.interval);
        Ok(Meta { kind: h.kind, q: h.q, width, height, interval })
    }

    /// MCU width and height in pixels: type 0 is 4:2:2 (16x8), type 1 is 4:2:0 (16x16).
    fn mcu(&self) -> (u32, u32) {
        if self.kind & 1 == 0 {
            (16, 8)
        } else {
            (16, 16)
        }
    }
}

/// One packet's data, at its offset in the frame's scan.
#[derive(Clone, Copy, Debug)]
struct Frag {
    offset: u32,
    /// Where its bytes are in `Assembly::data`.
    at: u32,
    len: u32,
    /// With restart intervals on packet boundaries: the restart count, first, last.
    chunk: Option<(u16, bool, bool)>,
}

/// Contiguous bytes of the scan, from fragments in offset order.
#[derive(Clone, Debug)]
struct Run {
    bytes: Range<u32>,
    frags: Vec<Frag>,
}

/// A frame being put together.
#[derive(Debug)]
struct Assembly {
    ts: u32,
    meta: Option<Meta>,
    tables: Option<[u8; 128]>,
    capture_us: Option<u64>,
    /// Every packet's data, in arrival order (at most `max_scan_bytes`).
    data: Vec<u8>,
    frags: Vec<Frag>,
    /// The scan's length, and the marker packet's extended sequence number, once it arrived.
    end: Option<u32>,
    marker_seq: Option<u32>,
}

impl Assembly {
    fn new(ts: u32) -> Self {
        Assembly {
            ts,
            meta: None,
            tables: None,
            capture_us: None,
            data: Vec::new(),
            frags: Vec::new(),
            end: None,
            marker_seq: None,
        }
    }

    fn set_meta(&mut self, m: Meta) -> Result<(), DepacketizeError> {
        let Some(first) = self.meta else {
            self.meta = Some(m);
            return Ok(());
        };
        let diff = |what, a: u32, b: u32| {
            if a == b {
                Ok(())
            } else {
                Err(DepacketizeError::Mismatch { what, first: a, got: b })
            }
        };
        diff("RFC 2435 type", first.kind.into(), m.kind.into())?;
        diff("RFC 2435 Q", first.q.into(), m.q.into())?;
        diff("frame width", first.width, m.width)?;
        diff("frame height", first.height, m.height)?;
        diff("restart interval", first.interval.into(), m.interval.into())
    }

    fn insert(&mut self, offset: u32, bytes: &[u8], chunk: Option<(u16, bool, bool)>) -> Result<(), DepacketizeError> {
        let m = self.meta.expect("set before insert");
        let cap = max_scan_bytes(m.width, m.height);
        let too_large = DepacketizeError::TooLarge { offset, len: bytes.len(), cap, width: m.width, height: m.height };
        if offset as usize + bytes.len() > cap || self.data.len() + bytes.len() > cap {
            return Err(too_large);
        }
        if self.frags.len() >= MAX_FRAGMENTS {
            return Err(DepacketizeError::TooManyFragments);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let at = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        self.frags.push(Frag { offset, at, len: bytes.len() as u32, chunk });
        Ok(())
    }

    /// Whether the scan is all here (the marker packet arrived). Overlapping fragments and
    /// fragments past the end are errors.
    fn complete(&mut self) -> Result<bool, DepacketizeError> {
        let end = self.end.expect("checked by the caller");
        self.frags.sort_by_key(|f| f.offset);
        self.frags.dedup_by(|b, a| a.offset == b.offset && a.len == b.len);
        let mut next = 0u32;
        let mut whole = true;
        for (i, f) in self.frags.iter().enumerate() {
            if f.offset + f.len > end {
                return Err(DepacketizeError::PastEnd { offset: f.offset, len: f.len, end });
            }
            if f.offset < next {
                let p = self.frags[i - 1];
                return Err(DepacketizeError::Overlap {
                    offset: f.offset,
                    len: f.len,
                    prev: p.offset,
                    prev_len: p.len,
                });
            }
            whole &= f.offset == next;
            next = f.offset + f.len;
        }
        Ok(whole && next == end)
    }

    /// The fragments grouped into runs of contiguous bytes, in offset order; overlapping
    /// fragments and those past the end are left out.
    fn runs(&self) -> Vec<Run> {
        let mut frags = self.frags.clone();
        frags.sort_by_key(|f| f.offset);
        let mut runs: Vec<Run> = Vec::new();
        for f in frags {
            if self.end.is_some_and(|end| f.offset + f.len > end) {
                continue;
            }
            match runs.last_mut() {
                Some(r) if r.bytes.end == f.offset => {
                    r.bytes.end += f.len;
                    r.frags.push(f);
                }
                Some(r) if r.bytes.end > f.offset => {}
                _ => runs.push(Run { bytes: f.offset..f.offset + f.len, frags: vec![f] }),
            }
        }
        runs
    }

    fn gather(&self, frags: &[Frag]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frags {
            out.extend_from_slice(&self.data[f.at as usize..(f.at + f.len) as usize]);
        }
        out
    }

    /// The bands of a frame with packets missing: each run of whole chunks of restart
    /// intervals (a packet marked first, through one marked last) makes a JPEG of its rows.
    fn bands(&self, m: &Meta, tables: &[u8; 128], runs: &[Run]) -> Result<Vec<Band>, &'static str> {
        if m.interval == 0 || runs.iter().any(|r| r.frags.iter().any(|f| f.chunk.is_none())) {
            return Err("packets missing, and its packets do not start on restart intervals");
        }
        let (mw, mh) = m.mcu();
        let per_row = m.width.div_ceil(mw);
        let mcu_rows = m.height.div_ceil(mh);
        if u32::from(m.interval) % per_row != 0 || per_row * mcu_rows / u32::from(m.interval) >= 0x3FFF {
            return Err("packets missing, and its restart intervals are not whole MCU rows");
        }
        // Pixel rows per interval; u64, since a packet's count and restart markers are the
        // peer's claims.
        let rows_per_interval = u64::from(u32::from(m.interval) / per_row) * u64::from(mh);
        let mut bands = Vec::new();
        for run in runs {
            for chunks in whole_chunks(&run.frags) {
                let (count, _, _) = chunks[0].chunk.expect("checked above");
                let scan = strip_restarts(self.gather(chunks));
                let intervals = u64::from(count_restarts(&scan)) + 1;
                let first = (u64::from(count) * rows_per_interval).min(u64::from(m.height)) as u32;
                let last = ((u64::from(count) + intervals) * rows_per_interval).min(u64::from(m.height)) as u32;
                if first >= last {
                    continue;
                }
                let (jpeg, _) = jpeg_frame(m, tables, last - first, &renumber(scan));
                bands.push(Band { rows: first..last, jpeg });
            }
        }
        if bands.is_empty() {
            return Err("packets missing, and no whole restart interval arrived");
        }
        Ok(bands)
    }
}

/// Splits a run's fragments into runs of whole chunks (a packet marked first through one
/// marked last), joining chunks that follow each other; partial chunks are left out.
fn whole_chunks(frags: &[Frag]) -> Vec<&[Frag]> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut start = None;
    for (i, f) in frags.iter().enumerate() {
        let (_, first, last) = f.chunk.expect("checked by the caller");
        if first {
            start = Some(i);
        }
        if let (true, Some(s)) = (last, start) {
            start = None;
            match spans.last_mut() {
                Some(prev) if prev.end == s => prev.end = i + 1,
                _ => spans.push(s..i + 1),
            }
        }
    }
    spans.into_iter().map(|r| &frags[r]).collect()
}

fn is_restart(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0xFF && (0xD0..=0xD7).contains(&b[1])
}

/// Removes a restart marker at the start or end of a band's scan (packets may begin or end
/// with the marker between two intervals).
fn strip_restarts(mut scan: Vec<u8>) -> Vec<u8> {
    if is_restart(&scan) {
        scan.drain(..2);
    }
    let n = scan.len();
    if n >= 2 && is_restart(&scan[n - 2..]) && !(n >= 3 && scan[n - 3] == 0xFF) {
        scan.truncate(n - 2);
    }
    scan
}

/// Restart markers in entropy-coded data (0xFF 0x00 is a stuffed 0xFF, not a marker).
fn count_restarts(scan: &[u8]) -> u32 {
    let mut n = 0;
    let mut i = 0;
    while i + 1 < scan.len() {
        if scan[i] == 0xFF && (0xD0..=0xD7).contains(&scan[i + 1]) {
            n += 1;
            i += 2;
        } else {
            i += 1 + usize::from(scan[i] == 0xFF);
        }
    }
    n
}

/// Numbers a band's restart markers from RST0, as a JPEG of its own needs.
fn renumber(mut scan: Vec<u8>) -> Vec<u8> {
    let mut next = 0u8;
    let mut i = 0;
    while i + 1 < scan.len() {
        if scan[i] == 0xFF && (0xD0..=0xD7).contains(&scan[i + 1]) {
            scan[i + 1] = 0xD0 + next;
            next = (next + 1) % 8;
            i += 2;
        } else {
            i += 1 + usize::from(scan[i] == 0xFF);
        }
    }
    scan
}

/// The quantization tables of Q 1..=99 (RFC 2435 appendix A): the JPEG standard's example
/// tables (in zig-zag order) scaled as libjpeg's quality setting scales them.
pub fn q_tables(q: u8) -> [u8; 128] {
    let q = u32::from(q.clamp(1, 99));
    let factor = if q < 50 { 5000 / q } else { 200 - q * 2 };
    let mut out = [0u8; 128];
    for (i, &base) in LUMA_Q.iter().chain(CHROMA_Q.iter()).enumerate() {
        out[i] = ((u32::from(base) * factor + 50) / 100).clamp(1, 255) as u8;
    }
    out
}

/// A baseline JPEG of `height` rows with `meta`'s other parameters around `scan`; returns it
/// and where the scan lies in it.
fn jpeg_frame(meta: &Meta, tables: &[u8; 128], height: u32, scan: &[u8]) -> (Vec<u8>, Range<usize>) {
    let mut j = Vec::with_capacity(scan.len() + 700);
    j.extend_from_slice(&[0xFF, 0xD8]);
    for (id, t) in tables.chunks(64).enumerate() {
        j.extend_from_slice(&[0xFF, 0xDB, 0, 67, id as u8]);
        j.extend_from_slice(t);
    }
    let sampling = if meta.kind & 1 == 0 { 0x21 } else { 0x22 };
    j.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    j.extend_from_slice(&(height as u16).to_be_bytes());
    j.extend_from_slice(&(meta.width as u16).to_be_bytes());
    j.extend_from_slice(&[3, 1, sampling, 0, 2, 0x11, 1, 3, 0x11, 1]);
    huffman(&mut j, 0x00, &tables::DC_LUMINANCE);
    huffman(&mut j, 0x10, &tables::AC_LUMINANCE);
    huffman(&mut j, 0x01, &tables::DC_CHROMINANCE);
    huffman(&mut j, 0x11, &tables::AC_CHROMINANCE);
    if meta.interval > 0 {
        j.extend_from_slice(&[0xFF, 0xDD, 0, 4]);
        j.extend_from_slice(&meta.interval.to_be_bytes());
    }
    j.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    let start = j.len();
    j.extend_from_slice(scan);
    let range = start..j.len();
    if !scan.ends_with(&[0xFF, 0xD9]) {
        j.extend_from_slice(&[0xFF, 0xD9]);
    }
    (j, range)
}

/// Appends a DHT segment holding one table (`table`: counts, then values).
fn huffman(j: &mut Vec<u8>, class_id: u8, table: &[u8]) {
    let len = (2 + 1 + table.len()) as u16;
    j.extend_from_slice(&[0xFF, 0xC4]);
    j.extend_from_slice(&len.to_be_bytes());
    j.push(class_id);
    j.extend_from_slice(table);
}

// The JPEG standard's example tables (ITU T.81 Annex K), the ones RFC 2435 assumes: the
// quantization tables in zig-zag order (the Huffman tables are in `rtp::tables`).
const LUMA_Q: [u8; 64] = [
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35, 37, 29, 40, 58, 51, 61,
    60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87, 95, 98, 103, 104, 103, 62, 77, 113,
    121, 112, 100, 120, 92, 101, 103, 99,
];
const CHROMA_Q: [u8; 64] = [
    17, 18, 18, 24, 21, 24, 47, 26, 26, 47, 99, 66, 56, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rtp_types::RtpPacketBuilder;

    use super::*;
    use crate::codec::restart;
    use crate::codec::Decoder;
    use crate::format::Subsampling;
    use crate::testutil::{pattern_jpeg, restart_jpeg};

    /// An RFC 2435 payload before it is wrapped in RTP.
    #[derive(Clone, Debug)]
    struct Payload {
        bytes: Vec<u8>,
        marker: bool,
    }

    /// The quantization tables of a JPEG's DQT segments, in order.
    fn dqt(jpeg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 2;
        while at + 4 <= jpeg.len() && jpeg[at + 1] != 0xDA {
            let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if jpeg[at + 1] == 0xDB {
                for t in jpeg[at + 4..at + 2 + len].chunks(65) {
                    out.extend_from_slice(&t[1..]);
                }
            }
            at += 2 + len;
        }
        out
    }

    /// A small payloader for the tests: `jpeg`'s scan in packets of at most `max` bytes of
    /// data; with `tables`, Q 255 and its tables in-band, else Q `q` and none. With restart
    /// intervals, each interval starts a packet (restart count, first and last flags).
    fn payloads(jpeg: &[u8], q: u8, tables: bool, max: usize) -> Vec<Payload> {
        let h = restart::parse_header(jpeg).unwrap();
        let end = jpeg.len() - 2;
        let kind = u8::from(h.mcu_h == 16) + if h.interval > 0 { 64 } else { 0 };
        let chunks: Vec<(usize, usize)> = if h.interval > 0 {
            let ivs = restart::intervals(jpeg, &h).unwrap();
            let starts: Vec<usize> = ivs.iter().map(|r| r.start).collect();
            starts.iter().enumerate().map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(end))).collect()
        } else {
            vec![(h.scan_at, end)]
        };
        let mut out = Vec::new();
        for (count, &(s, e)) in chunks.iter().enumerate() {
            let mut at = s;
            while at < e {
                let n = max.min(e - at);
                let mut p = Vec::new();
                let hd = JpegHeader {
                    type_specific: 0,
                    fragment_offset: (at - h.scan_at) as u32,
                    kind,
                    q: if tables { 255 } else { q },
                    width: h.width.into(),
                    height: h.height.into(),
                };
                hd.write(&mut p);
                if h.interval > 0 {
                    let r =
                        RestartHeader { interval: h.interval, first: at == s, last: at + n == e, count: count as u16 };
                    r.write(&mut p);
                }
                if tables && at == h.scan_at {
                    QuantTables { tables: &dqt(jpeg) }.write(&mut p);
                }
                p.extend_from_slice(&jpeg[at..at + n]);
                out.push(Payload { bytes: p, marker: at + n == end });
                at += n;
            }
        }
        out
    }

    fn rtp(p: &Payload, seq: u16, ts: u32, capture: Option<u64>) -> Vec<u8> {
        let ext = capture.map(|us| capture_time::encode(capture_time::ID, us));
        let mut b = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(PAYLOAD_TYPE)
            .sequence_number(seq)
            .timestamp(ts)
            .marker_bit(p.marker)
            .payload(p.bytes.as_slice());
        if let Some(e) = &ext {
            b = b.extension(capture_time::ONE_BYTE_PROFILE, e.as_slice());
        }
        b.write_vec().unwrap()
    }

    fn packets(ps: &[Payload], seq0: u16, ts: u32) -> Vec<Vec<u8>> {
        ps.iter().enumerate().map(|(i, p)| rtp(p, seq0.wrapping_add(i as u16), ts, None)).collect()
    }

    fn push_all(d: &mut Depacketizer, pkts: &[Vec<u8>]) -> Vec<Output> {
        for p in pkts {
            d.push(p).unwrap();
        }
        std::iter::from_fn(|| d.pull()).collect()
    }

    fn decode(jpeg: &[u8], w: usize, h: usize) -> Vec<u32> {
        let mut px = Vec::new();
        Decoder::new().unwrap().decode(jpeg, w, h, &mut px).unwrap();
        px
    }

    fn scan_of(jpeg: &[u8]) -> &[u8] {
        &jpeg[restart::parse_header(jpeg).unwrap().scan_at..jpeg.len() - 2]
    }

    fn only_frame(out: Vec<Output>) -> Frame {
        match <[Output; 1]>::try_from(out) {
            Ok([Output::Frame(f)]) => f,
            Ok([other]) => panic!("expected a frame, got {other:?}"),
            Err(out) => panic!("expected one output, got {out:?}"),
        }
    }

    #[test]
    fn a_frame_comes_back_whole_with_tables_in_band() {
        for sub in [Subsampling::S420, Subsampling::S422] {
            let jpeg = pattern_jpeg(160, 96, sub, 80, 3).unwrap();
            let mut d = Depacketizer::new(Config::default());
            let mut pkts = packets(&payloads(&jpeg, 0, true, 300), 7, 1000);
            pkts.reverse(); // any order within a frame
            let f = only_frame(push_all(&mut d, &pkts));
            assert_eq!((f.width, f.height, f.q, f.timestamp), (160, 96, 255, 1000));
            assert_eq!(&f.jpeg[f.scan.clone()], scan_of(&jpeg), "{sub:?}");
            assert_eq!(decode(&f.jpeg, 160, 96), decode(&jpeg, 160, 96), "{sub:?}");
        }
    }

    #[test]
    fn q_below_100_makes_the_tables_of_the_rfc() {
        for q in [10, 50, 75, 99] {
            let jpeg = pattern_jpeg(64, 48, Subsampling::S420, q, 1).unwrap();
            assert_eq!(dqt(&jpeg), q_tables(q), "libjpeg's tables at quality {q}");
            let mut d = Depacketizer::new(Config::default());
            let f = only_frame(push_all(&mut d, &packets(&payloads(&jpeg, q, false, 200), 0, 0)));
            assert_eq!(decode(&f.jpeg, 64, 48), decode(&jpeg, 64, 48), "q {q}");
        }
    }

    #[test]
    fn q_128_to_254_tables_are_cached_from_an_earlier_frame() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let mut first = payloads(&jpeg, 0, true, 1000);
        first[0].bytes[5] = 200; // Q 200: static tables, sent in-band once
        let mut d = Depacketizer::new(Config::default());
        only_frame(push_all(&mut d, &packets(&first, 0, 0)));
        // The next frame says "length 0": the tables sent before.
        let mut second = payloads(&jpeg, 200, false, 1000);
        second[0].bytes.splice(8..8, [0, 0, 0, 0]);
        let f = only_frame(push_all(&mut d, &packets(&second, 1, 3000)));
        assert_eq!(decode(&f.jpeg, 64, 48), decode(&jpeg, 64, 48));
        // Another Q with length 0 and nothing cached is an error.
        second[0].bytes[5] = 201;
        let err = Depacketizer::new(Config::default()).push(&packets(&second, 0, 0)[0]).unwrap_err();
        assert_eq!(err, DepacketizeError::NoTables { q: 201 });
    }

    #[test]
    fn width_zero_takes_the_size_from_the_sdp_or_is_an_error() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let mut ps = payloads(&jpeg, 0, true, 1000);
        ps[0].bytes[6] = 0;
        let pkts = packets(&ps, 0, 0);
        let err = Depacketizer::new(Config::default()).push(&pkts[0]).unwrap_err();
        assert_eq!(err, DepacketizeError::NoDimensions);
        for bad in [(0, 48), (64, 0), (MAX_DIMENSION + 1, 48)] {
            let err = Depacketizer::new(Config { dimensions: Some(bad), ..Config::default() }).push(&pkts[0]);
            assert_eq!(err, Err(DepacketizeError::NoDimensions), "{bad:?}");
        }
        let mut d = Depacketizer::new(Config { dimensions: Some((64, 48)), ..Config::default() });
        let f = only_frame(push_all(&mut d, &pkts));
        assert_eq!((f.width, f.height), (64, 48));
        assert_eq!(decode(&f.jpeg, 64, 48), decode(&jpeg, 64, 48));
    }

    #[test]
    fn bad_packets_are_errors_that_name_what_arrived() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 100);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ps[0].clone();
            f(&mut p.bytes);
            Depacketizer::new(Config::default()).push(&rtp(&p, 0, 0, None)).unwrap_err()
        };
        assert_eq!(with(&|b| b[4] = 2), DepacketizeError::Type(2));
        assert_eq!(with(&|b| b[4] = 66), DepacketizeError::Type(66));
        assert_eq!(with(&|b| b[5] = 0), DepacketizeError::Q(0));
        assert_eq!(with(&|b| b[5] = 100), DepacketizeError::Q(100));
        assert_eq!(with(&|b| b[0] = 1), DepacketizeError::Interlaced(1));
        assert_eq!(with(&|b| b[10..12].copy_from_slice(&[0, 64])), DepacketizeError::TableLength { got: 64 });
        assert!(matches!(
            with(&|b| b[10..12].copy_from_slice(&[0, 65])),
            DepacketizeError::Header(HeaderError::TableLength { got: 65, .. })
        ));
        assert!(matches!(with(&|b| b.truncate(5)), DepacketizeError::Header(HeaderError::Short { .. })));
        // A fragment offset far past what a 64x48 frame can hold: refused, not allocated.
        let err = with(&|b| b[1..4].copy_from_slice(&[0x7F, 0, 0]));
        assert!(
            matches!(err, DepacketizeError::TooLarge { offset: 0x7F_0000, cap, .. } if cap == max_scan_bytes(64, 48)),
            "{err}"
        );
        let mut d = Depacketizer::new(Config::default());
        assert!(matches!(d.push(&[0x80, 26, 0]), Err(DepacketizeError::Rtp(_))));
        let mut p = rtp(&ps[0], 0, 0, None);
        p[1] = 96;
        assert_eq!(d.push(&p), Err(DepacketizeError::PayloadType { got: 96, want: 26 }));
        let msg = DepacketizeError::PayloadType { got: 96, want: 26 }.to_string();
        assert!(msg.contains("96") && msg.contains("26"), "{msg}");
    }

    #[test]
    fn overlapping_fragments_and_fragments_past_the_end_are_errors() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 100);
        let last = ps.len() - 1;
        // The second packet claims an offset inside the first's data.
        let mut bad = ps.clone();
        bad[1].bytes[3] -= 10;
        let pkts = packets(&bad, 0, 0);
        let mut d = Depacketizer::new(Config::default());
        let errs: Vec<_> = pkts.iter().filter_map(|p| d.push(p).err()).collect();
        assert!(matches!(errs[..], [DepacketizeError::Overlap { .. }]), "{errs:?}");
        // A packet beyond the marker packet's end.
        let mut bad = ps.clone();
        let mut extra = bad[last].clone();
        extra.marker = false;
        extra.bytes[1..4].copy_from_slice(&4000u32.to_be_bytes()[1..]);
        bad.insert(0, extra);
        let mut d = Depacketizer::new(Config::default());
        let errs: Vec<_> = packets(&bad, 0, 0).iter().filter_map(|p| d.push(p).err()).collect();
        assert!(matches!(errs[..], [DepacketizeError::PastEnd { offset: 4000, .. }]), "{errs:?}");
        assert_eq!(d.pull(), None, "the frame is dropped");
    }

    #[test]
    fn a_missing_packet_loses_the_frame_and_the_next_one_comes_through() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 100);
        assert!(ps.len() > 3);
        let mut pkts = packets(&ps, 65530, 0); // sequence numbers wrap within the frame
        pkts.remove(2);
        let mut d = Depacketizer::new(Config::default());
        assert_eq!(push_all(&mut d, &pkts), vec![]);
        let next = packets(&ps, 65530u16.wrapping_add(ps.len() as u16), 3000);
        let out = push_all(&mut d, &next);
        assert!(matches!(out[0], Output::Lost { timestamp: 0, .. }), "{out:?}");
        assert!(matches!(&out[1], Output::Frame(f) if f.timestamp == 3000), "{out:?}");
        let c = d.counts();
        assert_eq!((c.expected(), c.lost(), c.packets), (2 * ps.len() as u64, 1, 2 * ps.len() as u64 - 1));
        // The missing packet arrives late: not used, counted.
        d.push(&packets(&ps, 65530, 0)[2]).unwrap();
        assert_eq!((d.counts().late, d.counts().lost()), (1, 0));
        assert_eq!(d.pull(), None);
        // A duplicate is ignored.
        d.push(&next[0]).unwrap();
        assert_eq!(d.counts().duplicates, 1);
    }

    /// GStreamer's rtpjpegpay gives frames of an untimed source one timestamp: the marker
    /// packet ends each, and a timestamp far back is a new timeline, not late packets.
    #[test]
    fn frames_of_one_timestamp_are_told_apart_by_the_marker() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 300);
        let n = ps.len() as u16;
        let mut d = Depacketizer::new(Config::default());
        let mut pkts = packets(&ps, 0, 5_000_000);
        pkts.extend(packets(&ps, n, 5_000_000));
        pkts.extend(packets(&ps, 2 * n, 0)); // 55 s back: the sender's timeline restarted
        let out = push_all(&mut d, &pkts);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out.iter().all(|o| matches!(o, Output::Frame(_))), "{out:?}");
        // A packet of the last frame again, with an earlier sequence number: late.
        d.push(&packets(&ps, 2 * n, 0)[1]).unwrap();
        assert_eq!(d.counts().duplicates + d.counts().late, 1);
        assert_eq!(d.pull(), None);
    }

    #[test]
    fn the_capture_time_extension_is_read() {
        let jpeg = pattern_jpeg(64, 48, Subsampling::S420, 60, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 500);
        let pkts: Vec<_> = ps.iter().enumerate().map(|(i, p)| rtp(p, i as u16, 90, Some(123_456_789))).collect();
        let mut d = Depacketizer::new(Config { capture_ext: Some(capture_time::ID), ..Config::default() });
        assert_eq!(only_frame(push_all(&mut d, &pkts)).capture_us, Some(123_456_789));
        let mut d = Depacketizer::new(Config::default());
        let pkts: Vec<_> = ps.iter().enumerate().map(|(i, p)| rtp(p, i as u16, 90, Some(123_456_789))).collect();
        assert_eq!(only_frame(push_all(&mut d, &pkts)).capture_us, None, "no extmap in the SDP: not read");
    }

    /// A 128x96 4:2:0 frame with a restart interval per MCU row (6 intervals of 16 rows),
    /// its packets, and its decoded pixels.
    fn restart_frame() -> (Vec<u8>, Vec<Payload>, Vec<u32>) {
        let jpeg = restart_jpeg((128, 96), Subsampling::S420, 80, 1, 1).unwrap();
        let ps = payloads(&jpeg, 0, true, 200);
        let px = decode(&jpeg, 128, 96);
        (jpeg, ps, px)
    }

    #[test]
    fn restart_types_come_back_whole() {
        let (jpeg, ps, px) = restart_frame();
        assert_eq!(ps[0].bytes[4], 65);
        let mut d = Depacketizer::new(Config::default());
        let f = only_frame(push_all(&mut d, &packets(&ps, 0, 0)));
        assert_eq!(&f.jpeg[f.scan.clone()], scan_of(&jpeg));
        assert_eq!(decode(&f.jpeg, 128, 96), px);
    }

    #[test]
    fn a_restart_frame_with_a_packet_missing_keeps_the_intervals_that_arrived() {
        let (_, ps, px) = restart_frame();
        // Drop a packet of the third interval (rows 32..48).
        let third = ps.iter().position(|p| p.bytes[10] & 0x3F == 0 && p.bytes[11] == 2).unwrap();
        let mut pkts = packets(&ps, 0, 0);
        pkts.remove(third);
        let mut d = Depacketizer::new(Config::default());
        push_all(&mut d, &pkts);
        d.flush();
        let Some(Output::Partial(p)) = d.pull() else { panic!("expected a partial frame") };
        let rows: Vec<_> = p.bands.iter().map(|b| b.rows.clone()).collect();
        assert_eq!(rows, vec![0..32, 48..96]);
        for b in &p.bands {
            let n = (b.rows.end - b.rows.start) as usize;
            let got = decode(&b.jpeg, 128, n);
            let want = &px[b.rows.start as usize * 128..b.rows.end as usize * 128];
            assert!(got == want, "band {:?} decodes to the frame's rows", b.rows);
        }
    }

    #[test]
    fn unaligned_restart_packets_lose_the_frame() {
        let (_, ps, _) = restart_frame();
        let mut ps: Vec<Payload> = ps;
        for p in &mut ps {
            p.bytes[10] = 0xFF; // count 0x3FFF, first and last
            p.bytes[11] = 0xFF;
        }
        let mut pkts = packets(&ps, 0, 0);
        pkts.remove(1);
        let mut d = Depacketizer::new(Config::default());
        push_all(&mut d, &pkts);
        d.flush();
        assert!(matches!(d.pull(), Some(Output::Lost { .. })));
    }

    /// A peer's restart count times a huge restart interval claims more rows than u32 holds
    /// (the fuzzer's "u32 overflow of a partial frame's band rows"): the band is clamped to the
    /// frame, here to nothing, and the frame is lost rather than a panic.
    #[test]
    fn a_restart_count_claiming_rows_past_u32_loses_the_frame() {
        let payload = |offset: u32, count: u16, marker: bool| {
            let mut p = Vec::new();
            JpegHeader { type_specific: 0, fragment_offset: offset, kind: 65, q: 50, width: 8, height: 16 }
                .write(&mut p);
            RestartHeader { interval: u16::MAX, first: true, last: true, count }.write(&mut p);
            p.extend_from_slice(&[0x12, 0x34]);
            Payload { bytes: p, marker }
        };
        // Offset 0..4 never arrives: the frame has a gap, so it is cut into bands.
        let ps = [payload(4, RestartHeader::UNALIGNED - 1, false), payload(6, 0, true)];
        let mut pkts = packets(&ps, 0, 0);
        pkts.push(rtp(&payload(0, 0, true), 2, 9000, None));
        let mut d = Depacketizer::new(Config::default());
        for p in &pkts {
            d.push(p).unwrap();
        }
        assert!(matches!(d.pull(), Some(Output::Lost { timestamp: 0, .. })), "{:?}", d.pull());
    }

    /// framecast's own payloader (`rtp::packetize`) and this depayloader agree: whole frames
    /// byte-exact in their scan, and with a packet lost, the bands of the intervals that
    /// arrived.
    #[test]
    fn round_trips_through_framecast_s_payloader() {
        use crate::rtp::packetize::{packetize_with, RtpStream};
        for jpeg in [
            pattern_jpeg(320, 240, Subsampling::S420, 85, 4).unwrap(),
            restart_jpeg((320, 240), Subsampling::S422, 85, 2, 1).unwrap(),
        ] {
            let p = packetize_with(&jpeg, 300).unwrap();
            let mut stream = RtpStream::new(1, 65500, 0);
            let pkts: Vec<Vec<u8>> = (0..p.len())
                .map(|i| {
                    let mut out = Vec::new();
                    stream.write(&p, i, 1_000_000, &mut out);
                    out
                })
                .collect();
            let cfg = Config { capture_ext: Some(capture_time::ID), ..Config::default() };
            let mut d = Depacketizer::new(cfg);
            let f = only_frame(push_all(&mut d, &pkts));
            assert_eq!(&f.jpeg[f.scan.clone()], scan_of(&jpeg));
            assert_eq!(f.capture_us, Some(1_000_000));
            let px = decode(&jpeg, 320, 240);
            assert_eq!(decode(&f.jpeg, 320, 240), px);
            if p.interval == 0 {
                continue;
            }
            let mut lossy = pkts.clone();
            lossy.remove(pkts.len() / 2);
            let mut d = Depacketizer::new(cfg);
            push_all(&mut d, &lossy);
            d.flush();
            let Some(Output::Partial(part)) = d.pull() else { panic!("expected a partial frame") };
            let shown: u32 = part.bands.iter().map(|b| b.rows.end - b.rows.start).sum();
            assert!(shown > 0 && shown < 240, "{:?}", part.bands.iter().map(|b| &b.rows).collect::<Vec<_>>());
            for b in &part.bands {
                let got = decode(&b.jpeg, 320, (b.rows.end - b.rows.start) as usize);
                assert!(got == px[b.rows.start as usize * 320..b.rows.end as usize * 320], "band {:?}", b.rows);
            }
        }
    }

    /// Writes seed inputs for the `rtp_jpeg` fuzz target (its format: a settings byte, then
    /// packets each preceded by a 2-byte length) into `$FRAMECAST_RTP_SEEDS`: whole and lossy
    /// frames from framecast's payloader, with and without restart intervals.
    #[test]
    #[ignore = "writes fuzz seeds; run with FRAMECAST_RTP_SEEDS=DIR"]
    fn write_fuzz_seeds() {
        use crate::rtp::packetize::{packetize_with, RtpStream};
        let Ok(dir) = std::env::var("FRAMECAST_RTP_SEEDS") else { return };
        std::fs::create_dir_all(&dir).unwrap();
        let jpegs = [
            pattern_jpeg(64, 48, Subsampling::S420, 50, 1).unwrap(),
            restart_jpeg((64, 48), Subsampling::S422, 50, 1, 1).unwrap(),
            restart_jpeg((48, 32), Subsampling::S420, 30, 1, 1).unwrap(),
        ];
        for (i, jpeg) in jpegs.iter().enumerate() {
            let p = packetize_with(jpeg, 120).unwrap();
            for (k, drop) in [None, Some(1)].into_iter().enumerate() {
                let mut seed = vec![if i == 2 { 3 } else { 2 }];
                let mut stream = RtpStream::new(1, 65534, 0);
                for f in 0..2u64 {
                    for j in (0..p.len()).filter(|&j| Some(j) != drop) {
                        let mut pkt = Vec::new();
                        stream.write(&p, j, f * 33_333, &mut pkt);
                        seed.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
                        seed.extend_from_slice(&pkt);
                    }
                }
                std::fs::write(format!("{dir}/seed-{i}-{k}"), seed).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Any loss, reordering and duplication of the packets of three frames never panics,
        /// and every frame whose packets all arrived comes back with its scan byte-exact.
        #[test]
        fn any_loss_or_reorder_never_panics(
            keep in prop::collection::vec(0u8..10, 60),
            order in prop::collection::vec(any::<u16>(), 60),
            restart in any::<bool>(),
        ) {
            let jpeg = if restart {
                restart_jpeg((64, 48), Subsampling::S420, 70, 1, 1).unwrap()
            } else {
                pattern_jpeg(64, 48, Subsampling::S422, 70, 2).unwrap()
            };
            let ps = payloads(&jpeg, 0, true, 90);
            let n = ps.len();
            let mut all: Vec<(usize, Vec<u8>)> = Vec::new();
            for f in 0..3u32 {
                for (i, p) in packets(&ps, (f as usize * n) as u16, f * 3000).into_iter().enumerate() {
                    let k = f as usize * n + i;
                    let copies = match keep[k % keep.len()] { 0 => 0, 1 => 2, _ => 1 };
                    for _ in 0..copies {
                        all.push((k, p.clone()));
                    }
                }
            }
            // Shuffle within each frame only, so that frames stay in order.
            all.sort_by_key(|(k, _)| (k / n, order[k % order.len()]));
            let mut d = Depacketizer::new(Config::default());
            for (_, p) in &all {
                prop_assert!(d.push(p).is_ok());
            }
            d.flush();
            let whole: Vec<bool> = (0..3).map(|f| (0..n).all(|i| keep[(f * n + i) % keep.len()] != 0)).collect();
            while let Some(o) = d.pull() {
                if let Output::Frame(fr) = &o {
                    prop_assert_eq!(&fr.jpeg[fr.scan.clone()], scan_of(&jpeg));
                }
                let ts = match &o { Output::Frame(f) => f.timestamp, Output::Partial(p) => p.timestamp, Output::Lost { timestamp, .. } => *timestamp };
                if whole[(ts / 3000) as usize] {
                    prop_assert!(matches!(o, Output::Frame(_)), "frame {} arrived whole: {:?}", ts, o);
                }
            }
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn arbitrary_packets_never_panic(pkts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut d = Depacketizer::new(Config { dimensions: Some((32, 32)), ..Config::default() });
            for p in &pkts {
                let mut p = p.clone();
                if p.len() >= 2 { p[0] = 0x80; p[1] = (p[1] & 0x80) | 26; }
                let _ = d.push(&p);
            }
            d.flush();
            while d.pull().is_some() {}
        }
    }
}
