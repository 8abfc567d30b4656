//! The receiver's side of the UDP media path: RTP packets in, frames out, run by the
//! receiver's network thread (`receiver::udp`). See the module docs of [`super`] for the
//! packets.
//!
//! Frames are keyed by their frame sequence number (u32 on the wire, extended to u64 against
//! the newest seen) and their packets placed by index. A group's missing data packets are
//! rebuilt from parity as soon as enough shards are here; a frame whose data packets are all
//! here is complete, and rebuilt as a JPEG by [`crate::rtp::depacketize::Depacketizer`] at
//! once. A frame is given up [`Assembler::set_wait`] after its first packet arrived, or at once
//! when a newer frame is complete: then the restart intervals that arrived make a partial
//! frame, or it is lost. Frames come out of [`Assembler::poll`] in order, each exactly once.
//! A frame whose first packet (with the quantization tables) is missing borrows the tables of
//! the frames before when they are known to be the same (see `Pending::build`).
//!
//! NACKs ([`Assembler::nacks`]) ask for data packets known missing (a later sequence number
//! arrived, or the frame's tail is overdue) beyond what the group's parity can still rebuild,
//! once per RTT, and only while the frame's deadline is at least an RTT away. The loss the
//! receiver reports for FEC sizing ([`Assembler::recent_loss_bp`]) counts, over the last
//! 512 sequence numbers, the packets that did not arrive unasked.
//!
//! Everything a peer claims is capped before it is believed: packets per frame
//! ([`MAX_FRAME_PACKETS`]), frames open ([`MAX_FRAMES_OPEN`]; more give up the oldest), bytes
//! per frame (twice the largest scan of its RFC 2435 size) and bytes held in all
//! ([`MAX_HELD_BYTES`]); packets are stored as they arrive, never in room sized by a claim.
//! A packet that contradicts its frame (counts, sequence numbers, parity headers or shard
//! sizes that change) is an error naming both, and is not used.

use std::collections::BTreeMap;

use rtp_types::RtpPacketBuilder;

use super::{FecHeader, FrameInfo, MediaError, MediaPacket, FEC_PAYLOAD_TYPE, MAX_FRAME_PACKETS};
use crate::net::udp::fec::{self, MAX_GROUP_DATA, MAX_GROUP_PARITY};
use crate::rtp::depacketize::{max_scan_bytes, Band, Config, Depacketizer, Output};
use crate::rtp::{JpegHeader, QuantTables, RestartHeader, PAYLOAD_TYPE};

/// The most frames in progress: a packet of one more gives up the oldest.
pub const MAX_FRAMES_OPEN: usize = 8;
/// The most frames held, in progress or done and not yet polled: past this a packet of a new
/// frame is an error until [`Assembler::poll`] hands some out.
const MAX_FRAMES_HELD: usize = 2 * MAX_FRAMES_OPEN;
/// The most bytes of packets and rebuilt frames held in all.
pub const MAX_HELD_BYTES: usize = 32 << 20;
/// How far past the newest frame a frame sequence number may jump (about 36 minutes at 30 fps;
/// a session ends after 3 s of silence, so a real sender never jumps that far). A packet that
/// passes every check with a frame number ahead still makes the frames before it late once its
/// frame is handed out: the defence against forged packets is the `--key-file` seal.
const MAX_FRAME_JUMP: u64 = 1 << 16;
/// The most packets one call of [`Assembler::nacks`] asks for.
const MAX_NACK_PACKETS: usize = 512;
/// The most runs one call of [`Assembler::nacks`] returns (a NACK's cap on the wire).
const MAX_NACK_RUNS: usize = crate::net::udp::wire::MAX_NACK_RANGES;
/// How long without a packet of a frame before its unarrived packets count as lost (at least;
/// four times the frame's mean gap between packets when that is longer).
const TAIL_WAIT_US: u64 = 10_000;
/// Sequence numbers the loss measure looks back over.
const LOSS_WINDOW: u64 = 512;

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

impl Assembled {
    /// The frame's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Assembled::Frame { frame, .. } | Assembled::Partial { frame, .. } => frame.info.seq,
            Assembled::Lost { seq, .. } => *seq,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Assembled::Frame { jpeg, .. } => jpeg.len(),
            Assembled::Partial { bands, .. } => bands.iter().map(|b| b.jpeg.len()).sum(),
            Assembled::Lost { .. } => 0,
        }
    }
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
pub struct Assembler {
    wait_us: u64,
    /// The frame size when the RFC 2435 header says 0 (above 2040 pixels).
    dims: Option<(u32, u32)>,
    frames: BTreeMap<u64, Pending>,
    /// The newest frame sequence number seen, extended.
    newest: Option<u64>,
    /// The newest frame handed out, and the newest complete one.
    handed_out: Option<u64>,
    newest_complete: Option<u64>,
    seqs: SeqWindow,
    held: usize,
    counts: AssemblerCounts,
    /// The quantization tables of the newest frame whose first packet arrived.
    tables: Option<Tables>,
}

/// A frame in progress, or done and waiting for [`Assembler::poll`].
struct Pending {
    seq: u64,
    ssrc: u32,
    timestamp: u32,
    /// Extended RTP sequence number of data packet 0.
    base: u64,
    data: u16,
    parity: u16,
    /// Parity packets per group.
    per_group: u16,
    first_us: u64,
    last_us: u64,
    info: FrameInfo,
    timed: bool,
    /// RFC 2435 type and size, from the first data packet.
    kind: u8,
    size: Option<(u32, u32)>,
    /// Data payloads and parity shards by index.
    payloads: BTreeMap<u16, Vec<u8>>,
    shards: BTreeMap<u16, Vec<u8>>,
    /// When each data packet was last NACKed.
    nacked: BTreeMap<u16, u64>,
    /// Data packets that arrived unasked, rebuilt, and arrived after a NACK.
    arrived: u16,
    recovered: u32,
    retransmitted: u32,
    bytes: usize,
    /// When it was given up (superseded, or too many open), before its deadline.
    given_up: Option<u64>,
    out: Option<Assembled>,
}

impl Assembler {
    /// `wait_us`: how long after a frame's first packet the assembler waits for its missing
    /// packets before it hands out what it has (the latency budget for loss recovery).
    pub fn new(wait_us: u64) -> Self {
        Assembler {
            wait_us,
            dims: None,
            frames: BTreeMap::new(),
            newest: None,
            handed_out: None,
            newest_complete: None,
            seqs: SeqWindow::default(),
            held: 0,
            counts: AssemblerCounts::default(),
            tables: None,
        }
    }

    pub fn set_wait(&mut self, wait_us: u64) {
        self.wait_us = wait_us;
    }

    /// The frame size for frames whose RFC 2435 header says 0 (wider or higher than 2040
    /// pixels), from the stream's `StreamInfo`.
    pub fn set_dimensions(&mut self, dims: Option<(u32, u32)>) {
        self.dims = dims;
    }

    /// Takes one RTP packet (data or parity) that arrived at `now_us`. A packet that is
    /// malformed or contradicts its frame is an error and is not used (nor is a frame started
    /// for it); a packet of a frame already done is counted as late.
    pub fn push(&mut self, rtp: &[u8], now_us: u64) -> Result<(), MediaError> {
        let m = MediaPacket::parse(rtp)?;
        let f = self.check_counts(&m)?;
        let seq = self.seqs.extend(m.seq);
        let new = f.is_some_and(|f| !self.frames.contains_key(&f));
        let Some(f) = f.filter(|&f| self.accepts(f)) else {
            self.counts.late_packets += 1;
            self.arrived(seq, true, rtp.len());
            return Ok(());
        };
        if new && !self.start_frame(&m, f, seq, now_us)? {
            self.counts.late_packets += 1;
            self.arrived(seq, true, rtp.len());
            return Ok(());
        }
        let p = self.frames.get_mut(&f).expect("accepted or started");
        p.check(&m, seq, self.dims)?;
        let index = m.frame.index;
        if p.payloads.contains_key(&index) || p.shards.contains_key(&index) {
            self.counts.duplicates += 1;
            return Ok(());
        }
        if self.held + m.payload.len() > MAX_HELD_BYTES {
            let what = format!("{} bytes held, {} more passes the cap of {MAX_HELD_BYTES}", self.held, m.payload.len());
            return Err(frame_error(f, what));
        }
        let before = p.bytes;
        let asked = p.store(&m, self.dims, now_us);
        self.counts.recovered_nack += u64::from(asked);
        let rebuilt = p.recover(p.group_of(index), self.dims).map_err(|e| frame_error(f, format!("parity: {e}")));
        self.counts.recovered_fec += *rebuilt.as_ref().unwrap_or(&0) as u64;
        self.held = self.held + p.bytes - before;
        let complete = p.payloads.len() == usize::from(p.data);
        self.arrived(seq, !asked, rtp.len());
        if complete {
            self.finish(f, now_us);
        }
        rebuilt.map(|_| ())
    }

    /// Whether a packet of frame `f` can still be used: the frame is not done, and if it is
    /// new, no newer frame is complete or handed out.
    fn accepts(&self, f: u64) -> bool {
        if self.handed_out.is_some_and(|h| f <= h) {
            return false;
        }
        match self.frames.get(&f) {
            Some(p) => p.out.is_none(),
            None => self.newest_complete.is_none_or(|c| f >= c),
        }
    }

    /// Starts frame `f` with packet `m` if the packet is good and there is room: with
    /// [`MAX_FRAMES_OPEN`] frames open the oldest is given up (false if `f` is older still).
    fn start_frame(&mut self, m: &MediaPacket, f: u64, seq: u64, now_us: u64) -> Result<bool, MediaError> {
        let fresh = Pending::new(m, f, seq, now_us);
        fresh.check(m, seq, self.dims)?;
        if self.frames.len() >= MAX_FRAMES_HELD {
            return Err(frame_error(f, format!("{MAX_FRAMES_HELD} frames already held (poll hands them out)")));
        }
        let mut open = self.frames.iter().filter(|(_, p)| p.open()).map(|(&k, _)| k);
        if let Some(oldest) = open.next().filter(|_| self.open_frames() >= MAX_FRAMES_OPEN) {
            if f < oldest {
                return Ok(false);
            }
            self.frames.get_mut(&oldest).expect("listed").given_up = Some(now_us);
        }
        self.frames.insert(f, fresh);
        self.newest = Some(self.newest.map_or(f, |n| n.max(f)));
        Ok(true)
    }

    fn open_frames(&self) -> usize {
        self.frames.values().filter(|p| p.open()).count()
    }

    /// Counts a packet that arrived (extended sequence number `seq`), `unasked` if it was
    /// not NACKed (a retransmission is loss on arrival all the same).
    fn arrived(&mut self, seq: u64, unasked: bool, len: usize) {
        self.seqs.advance(seq);
        if unasked {
            self.seqs.mark(seq);
        }
        self.counts.highest_seq = self.seqs.max.unwrap_or(0) as u32;
        self.counts.packets += 1;
        self.counts.bytes += len as u64;
    }

    /// The frame sequence number of `m`, extended (`None` if it cannot be: older than the
    /// first frame); checks the counts that need no frame.
    fn check_counts(&self, m: &MediaPacket) -> Result<Option<u64>, MediaError> {
        let e = &m.frame;
        let f = match self.newest {
            None => Some(u64::from(e.frame)),
            Some(n) => n.checked_add_signed(i64::from(e.frame.wrapping_sub(n as u32) as i32)),
        };
        let err = |what: String| Err(frame_error(f.unwrap_or(u64::from(e.frame)), what));
        let (data, parity, index) = (usize::from(e.data), usize::from(e.parity), usize::from(e.index));
        if data == 0 || data + parity > MAX_FRAME_PACKETS {
            return err(format!(
                "{data} data and {parity} parity packets, expected 1.. data and at most {MAX_FRAME_PACKETS} in all"
            ));
        }
        let groups = data.div_ceil(MAX_GROUP_DATA);
        if parity % groups != 0 || parity / groups > MAX_GROUP_PARITY {
            let max = groups * MAX_GROUP_PARITY;
            return err(format!(
                "{parity} parity packets for {groups} groups, expected a multiple of {groups} up to {max}"
            ));
        }
        if index >= data + parity {
            return err(format!(
                "packet index {index}, expected below {} ({data} data + {parity} parity)",
                data + parity
            ));
        }
        let is_parity = m.payload_type == FEC_PAYLOAD_TYPE;
        if is_parity != (index >= data) {
            return err(format!("packet {index} of {data} data packets has payload type {}", m.payload_type));
        }
        if let (Some(n), Some(f)) = (self.newest, f) {
            if f > n + MAX_FRAME_JUMP {
                return err(format!("jumps past the newest frame {n} by more than {MAX_FRAME_JUMP}"));
            }
        }
        Ok(f)
    }

    /// Builds frame `f`'s output (complete, partial or lost), counts it, and when it is a
    /// whole frame gives up every older frame still in progress.
    fn finish(&mut self, f: u64, now_us: u64) {
        let p = self.frames.get_mut(&f).expect("finishing a held frame");
        let out = p.build(self.dims, self.tables.as_ref(), now_us);
        if let Some(t) = p.payloads.get(&0).and_then(|first| Tables::read(first, p, self.dims)) {
            if !matches!(&self.tables, Some(old) if old.seq >= t.seq) {
                self.tables = Some(Tables { stable: self.tables.as_ref().is_some_and(|old| old.same(&t)), ..t });
            }
        }
        let c = &mut self.counts;
        let data = u64::from(p.data);
        c.missing += data - u64::from(p.arrived);
        c.lost += data - p.payloads.len() as u64;
        match &out {
            Assembled::Frame { .. } => c.frames_complete += 1,
            Assembled::Partial { .. } => c.frames_partial += 1,
            Assembled::Lost { .. } => c.frames_lost += 1,
        }
        self.held = self.held - p.bytes + out.bytes();
        p.bytes = out.bytes();
        p.payloads.clear();
        p.shards.clear();
        p.nacked.clear();
        let whole = matches!(out, Assembled::Frame { .. });
        p.out = Some(out);
        if !whole {
            return;
        }
        self.newest_complete = Some(self.newest_complete.map_or(f, |c| c.max(f)));
        for (_, older) in self.frames.range_mut(..f) {
            if older.open() {
                older.given_up.get_or_insert(now_us);
                self.counts.frames_superseded += 1;
            }
        }
    }

    /// The next frame done by `now_us` (complete, rebuilt, or at its deadline partial or lost).
    pub fn poll(&mut self, now_us: u64) -> Option<Assembled> {
        let (&f, p) = self.frames.first_key_value()?;
        if p.out.is_none() {
            if p.given_up.is_none() && now_us < p.first_us.saturating_add(self.wait_us) {
                return None;
            }
            self.finish(f, now_us);
        }
        let p = self.frames.remove(&f).expect("first key");
        self.held -= p.bytes;
        self.handed_out = Some(f);
        p.out
    }

    /// Runs of missing packets to NACK now: missing beyond what parity still on its way can
    /// rebuild, not NACKed within the last `rtt_us`, and whose frame's deadline is at least
    /// `rtt_us` away.
    ///
    /// A packet counts as missing once a later sequence number has arrived, or once no packet
    /// of its frame has arrived for a while (the frame's tail is overdue: 10 ms, or
    /// four times the frame's mean gap between packets). A NACKed packet is asked for again
    /// after an RTT if it still has not come.
    pub fn nacks(&mut self, now_us: u64, rtt_us: u64) -> Vec<(u16, u16)> {
        let highest = self.seqs.max.unwrap_or(0);
        let mut seqs = Vec::new();
        for p in self.frames.values_mut() {
            let deadline = p.first_us.saturating_add(self.wait_us);
            if !p.open() || now_us.saturating_add(rtt_us) > deadline {
                continue;
            }
            let known = if p.overdue(now_us) { u64::MAX } else { highest };
            p.nacks(known, now_us, rtt_us, MAX_NACK_PACKETS - seqs.len(), &mut seqs);
        }
        self.counts.nacked += seqs.len() as u64;
        runs(&mut seqs)
    }

    /// When the next frame's deadline falls (for the caller's receive timeout): at once if a
    /// frame is ready to be polled.
    pub fn next_deadline(&self) -> Option<u64> {
        let p = self.frames.values().next()?;
        match (&p.out, p.given_up) {
            (Some(_), _) | (None, Some(_)) => Some(p.given_up.unwrap_or(p.last_us)),
            (None, None) => Some(p.first_us.saturating_add(self.wait_us)),
        }
    }

    pub fn counts(&self) -> AssemblerCounts {
        self.counts
    }

    /// Bytes of packets and rebuilt frames held.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Loss on arrival in 1/10000 over recent packets (for the receipt's `loss_bp`).
    pub fn recent_loss_bp(&self) -> u16 {
        self.seqs.loss_bp()
    }
}

fn frame_error(frame: u64, what: String) -> MediaError {
    MediaError::Frame { frame, what }
}

/// Sorted, merged runs of the extended sequence numbers `seqs`, at most [`MAX_NACK_RUNS`].
fn runs(seqs: &mut [u64]) -> Vec<(u16, u16)> {
    seqs.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    let mut prev: Option<u64> = None;
    for &s in seqs.iter() {
        let extends = prev == Some(s.wrapping_sub(1)) && out.last().is_some_and(|r| r.1 < u16::MAX);
        if prev == Some(s) {
            continue;
        }
        if extends {
            out.last_mut().expect("checked").1 += 1;
        } else if out.len() == MAX_NACK_RUNS {
            break;
        } else {
            out.push((s as u16, 1));
        }
        prev = Some(s);
    }
    out
}

impl Pending {
    fn new(m: &MediaPacket, f: u64, seq: u64, now_us: u64) -> Self {
        let e = &m.frame;
        let groups = usize::from(e.data).div_ceil(MAX_GROUP_DATA);
        Pending {
            seq: f,
            ssrc: m.ssrc,
            timestamp: m.timestamp,
            base: seq.wrapping_sub(u64::from(e.index)),
            data: e.data,
            parity: e.parity,
            per_group: (usize::from(e.parity) / groups) as u16,
            first_us: now_us,
            last_us: now_us,
            info: FrameInfo {
                seq: f,
                capture_us: m.capture_us,
                encode_start_us: m.capture_us,
                encode_end_us: m.capture_us,
                send_us: m.capture_us,
                quality: 0,
            },
            timed: false,
            kind: 0,
            size: None,
            payloads: BTreeMap::new(),
            shards: BTreeMap::new(),
            nacked: BTreeMap::new(),
            arrived: 0,
            recovered: 0,
            retransmitted: 0,
            bytes: 0,
            given_up: None,
            out: None,
        }
    }

    fn open(&self) -> bool {
        self.out.is_none() && self.given_up.is_none()
    }

    /// Checks that packet `m` (extended sequence number `seq`) agrees with the frame.
    fn check(&self, m: &MediaPacket, seq: u64, dims: Option<(u32, u32)>) -> Result<(), MediaError> {
        let err = |what: String| Err(frame_error(self.seq, what));
        let e = &m.frame;
        if (e.data, e.parity) != (self.data, self.parity) {
            return err(format!(
                "{} data and {} parity packets, but {} and {} in its first packet",
                e.data, e.parity, self.data, self.parity
            ));
        }
        let base = seq.wrapping_sub(u64::from(e.index));
        if base != self.base || m.ssrc != self.ssrc || m.timestamp != self.timestamp {
            return err(format!(
                "packet {} has RTP seq {}, SSRC {:#x}, timestamp {}; expected seq {}, SSRC {:#x}, timestamp {} from its first packet",
                e.index,
                m.seq,
                m.ssrc,
                m.timestamp,
                self.base.wrapping_add(u64::from(e.index)) as u16,
                self.ssrc,
                self.timestamp
            ));
        }
        if e.index < self.data {
            self.check_data(e.index, m.payload, dims)
        } else {
            self.check_parity(e.index, m.payload)
        }
    }

    /// Checks a data packet: an RFC 2435 header, within the frame's byte cap, and no longer
    /// than its group's parity shards (which hold it).
    fn check_data(&self, index: u16, payload: &[u8], dims: Option<(u32, u32)>) -> Result<(), MediaError> {
        let (h, _) = JpegHeader::parse(payload).map_err(|e| frame_error(self.seq, e.to_string()))?;
        if h.type_specific != 0 || !matches!(h.kind, 0 | 1 | 64 | 65) {
            let what = format!(
                "data packet {index} has RFC 2435 type-specific {} and type {}, expected 0 and 0, 1, 64 or 65",
                h.type_specific, h.kind
            );
            return Err(frame_error(self.seq, what));
        }
        let cap = self.cap(self.size.or(frame_size(&h, dims)));
        if self.bytes + payload.len() > cap {
            let what = format!("{} bytes held, {} more passes the frame's cap of {cap}", self.bytes, payload.len());
            return Err(frame_error(self.seq, what));
        }
        match self.shard_len(self.group_of(index)) {
            Some(len) if payload.len() + fec::LEN_BYTES > len => Err(frame_error(
                self.seq,
                format!("data packet {index} of {} bytes, but its group's parity shards are {len}", payload.len()),
            )),
            _ => Ok(()),
        }
    }

    /// Checks a parity packet: its header says where it is as the frame's counts do, and its
    /// shard is as long as its group's others and holds the group's data packets.
    fn check_parity(&self, index: u16, payload: &[u8]) -> Result<(), MediaError> {
        let err = |what: String| Err(frame_error(self.seq, what));
        let Some((h, shard)) = FecHeader::parse(payload).filter(|(_, s)| s.len() >= fec::LEN_BYTES) else {
            return err(format!("parity packet {index} of {} bytes, expected at least {}", payload.len(), 6));
        };
        let g = self.group_of(index);
        let k = usize::from(index - self.data) % usize::from(self.per_group);
        let want = (g as u8, k as u8, self.per_group as u8);
        if (h.group, h.index, h.count) != want {
            return err(format!(
                "parity packet {index} says group {} index {} of {}, expected group {} index {} of {}",
                h.group, h.index, h.count, want.0, want.1, want.2
            ));
        }
        if let Some(len) = self.shard_len(g).filter(|&len| len != shard.len()) {
            return err(format!("parity shard of {} bytes, but its group's others are {len}", shard.len()));
        }
        let longest = self.data_range(g).filter_map(|i| self.payloads.get(&i)).map(Vec::len).max().unwrap_or(0);
        if longest + fec::LEN_BYTES > shard.len() {
            return err(format!("parity shard of {} bytes, but its group has a data packet of {longest}", shard.len()));
        }
        let cap = self.cap(self.size);
        if self.bytes + payload.len() > cap {
            return err(format!("{} bytes held, {} more passes the frame's cap of {cap}", self.bytes, payload.len()));
        }
        Ok(())
    }

    /// The most bytes the frame may hold: twice the largest scan of its size (data, and
    /// parity up to half of it), and never more than its packets can carry.
    fn cap(&self, size: Option<(u32, u32)>) -> usize {
        let packets = (usize::from(self.data) + usize::from(self.parity)) * super::MAX_MEDIA_PACKET;
        size.map_or(packets, |(w, h)| packets.min(2 * max_scan_bytes(w, h)))
    }

    /// Stores a checked packet; true if it is a data packet that was NACKed.
    fn store(&mut self, m: &MediaPacket, dims: Option<(u32, u32)>, now_us: u64) -> bool {
        self.last_us = self.last_us.max(now_us);
        if let (Some(t), false) = (m.timing, self.timed) {
            t.apply(&mut self.info);
            self.timed = true;
        }
        let index = m.frame.index;
        if index >= self.data {
            let shard = &m.payload[super::FEC_HEADER..];
            self.bytes += shard.len();
            self.shards.insert(index, shard.to_vec());
            return false;
        }
        self.note_header(m.payload, dims);
        self.bytes += m.payload.len();
        self.payloads.insert(index, m.payload.to_vec());
        let asked = self.nacked.contains_key(&index);
        if asked {
            self.retransmitted += 1;
        } else {
            self.arrived += 1;
        }
        asked
    }

    /// The RFC 2435 type and size, from the first data packet that has them.
    fn note_header(&mut self, payload: &[u8], dims: Option<(u32, u32)>) {
        if self.size.is_none() {
            if let Ok((h, _)) = JpegHeader::parse(payload) {
                self.kind = h.kind;
                self.size = frame_size(&h, dims);
            }
        }
    }

    fn groups(&self) -> usize {
        usize::from(self.data).div_ceil(MAX_GROUP_DATA)
    }

    /// The group of packet `index` (data or parity).
    fn group_of(&self, index: u16) -> usize {
        let (i, data) = (usize::from(index), usize::from(self.data));
        if i < data {
            i / MAX_GROUP_DATA
        } else {
            (i - data) / usize::from(self.per_group).max(1)
        }
    }

    /// Indices of group `g`'s data packets, and of its parity packets.
    fn data_range(&self, g: usize) -> std::ops::Range<u16> {
        let start = g * MAX_GROUP_DATA;
        start as u16..usize::from(self.data).min(start + MAX_GROUP_DATA) as u16
    }

    fn parity_range(&self, g: usize) -> std::ops::Range<u16> {
        let start = usize::from(self.data) + g * usize::from(self.per_group);
        start as u16..(start + usize::from(self.per_group)) as u16
    }

    /// The length of group `g`'s parity shards, once one arrived.
    fn shard_len(&self, g: usize) -> Option<usize> {
        self.parity_range(g).find_map(|i| self.shards.get(&i)).map(Vec::len)
    }

    /// Rebuilds group `g`'s missing data packets if enough shards are here; returns how many.
    fn recover(&mut self, g: usize, dims: Option<(u32, u32)>) -> Result<usize, fec::FecError> {
        let data = self.data_range(g);
        let missing = data.clone().filter(|i| !self.payloads.contains_key(i)).count();
        let parity = self.parity_range(g);
        let have = parity.clone().filter(|i| self.shards.contains_key(i)).count();
        if missing == 0 || have < missing {
            return Ok(0);
        }
        let mut d: Vec<Option<Vec<u8>>> = data.clone().map(|i| self.payloads.get(&i).cloned()).collect();
        let p: Vec<Option<Vec<u8>>> = parity.map(|i| self.shards.get(&i).cloned()).collect();
        let n = fec::recover(&mut d, &p)?;
        for (i, payload) in data.zip(d) {
            if let (false, Some(payload)) = (self.payloads.contains_key(&i), payload) {
                self.note_header(&payload, dims);
                self.bytes += payload.len();
                self.payloads.insert(i, payload);
            }
        }
        self.recovered += n as u32;
        Ok(n)
    }

    /// The frame's output from the data packets here: a JPEG if they are all here, else the
    /// restart intervals that arrived as bands, else lost.
    ///
    /// Without its first packet (and the quantization tables in it) a frame is shown in
    /// part with the tables of an earlier frame, when they are known to be the same: the
    /// frame's quality (from a parity packet's timing) is theirs, and they did not change
    /// between the last two frames that brought them.
    fn build(&self, dims: Option<(u32, u32)>, tables: Option<&Tables>, now_us: u64) -> Assembled {
        let lost = |why| Assembled::Lost { seq: self.seq, why };
        if self.payloads.is_empty() {
            return lost("no data packet arrived in time");
        }
        let mut d = Depacketizer::new(Config { dimensions: dims, capture_ext: None, payload_type: None });
        let borrowed = tables.filter(|t| !self.payloads.contains_key(&0) && t.fit(self)).map(Tables::first_packet);
        for (&i, payload) in borrowed.iter().map(|b| (&0, b)).chain(&self.payloads) {
            let pkt = RtpPacketBuilder::<&[u8], &[u8]>::new()
                .payload_type(PAYLOAD_TYPE)
                .sequence_number(self.base.wrapping_add(u64::from(i)) as u16)
                .timestamp(self.timestamp)
                .ssrc(self.ssrc)
                .marker_bit(i + 1 == self.data)
                .payload(payload)
                .write_vec_unchecked();
            if d.push(&pkt).is_err() {
                return lost("its packets are not RFC 2435 JPEG as framecast sends it");
            }
        }
        d.flush();
        let received = |width, height| Received {
            info: self.info,
            width,
            height,
            kind: self.kind,
            first_us: self.first_us,
            done_us: now_us,
            recovered: self.recovered,
            retransmitted: self.retransmitted,
        };
        match d.pull() {
            Some(Output::Frame(f)) => Assembled::Frame { frame: received(f.width, f.height), jpeg: f.jpeg },
            Some(Output::Partial(p)) => Assembled::Partial { frame: received(p.width, p.height), bands: p.bands },
            Some(Output::Lost { why, .. }) => lost(why),
            None => lost("the depayloader made nothing of its packets"),
        }
    }

    /// Whether no packet of the frame has come for long enough that the ones not here are
    /// lost (the frame's tail is overdue).
    fn overdue(&self, now_us: u64) -> bool {
        let n = (u64::from(self.arrived) + u64::from(self.retransmitted) + self.shards.len() as u64).max(1);
        let gap = (self.last_us - self.first_us) / n.saturating_sub(1).max(1);
        now_us >= self.last_us.saturating_add(TAIL_WAIT_US.max(4 * gap))
    }

    /// Appends to `seqs` (up to `room` of them) the data packets to NACK: in each group, as
    /// many of those known missing (sequence number below `known`) and not NACKed within
    /// `rtt_us` as the group's losses pass its parity, less the NACKs still on their way.
    fn nacks(&mut self, known: u64, now_us: u64, rtt_us: u64, room: usize, seqs: &mut Vec<u64>) {
        let start = seqs.len();
        for g in 0..self.groups() {
            let lost = |i: &u16| self.base.wrapping_add(u64::from(*i)) < known;
            let lost_parity = self.parity_range(g).filter(|i| !self.shards.contains_key(i) && lost(i)).count();
            let lost_data: Vec<u16> =
                self.data_range(g).filter(|i| !self.payloads.contains_key(i) && lost(i)).collect();
            let asked = |i: &u16| self.nacked.get(i).is_some_and(|&t| now_us < t.saturating_add(rtt_us));
            let in_flight = lost_data.iter().filter(|i| asked(i)).count();
            let deficit = (lost_data.len() + lost_parity).saturating_sub(in_flight + usize::from(self.per_group));
            let pick: Vec<u16> = lost_data.iter().copied().filter(|i| !asked(i)).take(deficit).collect();
            for i in pick {
                if seqs.len() - start >= room {
                    return;
                }
                self.nacked.insert(i, now_us);
                seqs.push(self.base.wrapping_add(u64::from(i)));
            }
        }
    }
}

/// The quantization tables a frame's first packet brought.
#[derive(Debug, Clone)]
struct Tables {
    /// The frame's sequence number and quality.
    seq: u64,
    quality: u8,
    /// Its RFC 2435 header: type, size (as the header says it) and restart interval.
    kind: u8,
    width: u32,
    height: u32,
    interval: u16,
    /// The frame's size (from the header, or the stream's when it says 0).
    size: Option<(u32, u32)>,
    tables: Vec<u8>,
    /// The frame before it that brought tables had the same.
    stable: bool,
}

impl Tables {
    /// The tables in `p`'s first packet `first`, if it has them and `p`'s quality is known.
    fn read(first: &[u8], p: &Pending, dims: Option<(u32, u32)>) -> Option<Self> {
        let (h, rest) = JpegHeader::parse(first).ok()?;
        if h.fragment_offset != 0 || h.q < 128 || !p.timed || frame_size(&h, dims) != p.size {
            return None;
        }
        let (interval, rest) = match h.has_restart() {
            true => RestartHeader::parse(rest).map(|(r, rest)| (r.interval, rest)).ok()?,
            false => (0, rest),
        };
        let (t, _) = QuantTables::parse(rest).ok()?;
        let (kind, width, height, size) = (h.kind, h.width, h.height, p.size);
        let tables = t.tables.to_vec();
        Some(Tables { seq: p.seq, quality: p.info.quality, kind, width, height, interval, size, tables, stable: false })
    }

    fn same(&self, o: &Tables) -> bool {
        (self.quality, self.kind, self.width, self.height, self.interval, &self.tables)
            == (o.quality, o.kind, o.width, o.height, o.interval, &o.tables)
    }

    /// Whether these tables stand in for those of frame `p`, whose first packet is missing.
    fn fit(&self, p: &Pending) -> bool {
        self.stable && p.timed && (p.info.quality, p.kind, p.size) == (self.quality, self.kind, self.size)
    }

    /// A first packet with these tables and no scan data.
    fn first_packet(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.tables.len());
        let (kind, width, height) = (self.kind, self.width, self.height);
        JpegHeader { type_specific: 0, fragment_offset: 0, kind, q: 255, width, height }.write(&mut b);
        if self.interval > 0 {
            RestartHeader { interval: self.interval, first: true, last: true, count: 0 }.write(&mut b);
        }
        QuantTables { tables: &self.tables }.write(&mut b);
        b
    }
}

/// The frame size an RFC 2435 header states, or `dims` when it says 0.
fn frame_size(h: &JpegHeader, dims: Option<(u32, u32)>) -> Option<(u32, u32)> {
    if h.width == 0 || h.height == 0 {
        dims
    } else {
        Some((h.width, h.height))
    }
}

/// RTP sequence numbers extended to 64 bits (starting at 2^32, so a packet reordered before
/// the first is still a number), and which of the last [`LOSS_WINDOW`] arrived unasked.
#[derive(Debug, Default)]
struct SeqWindow {
    max: Option<u64>,
    first: u64,
    bits: [u64; (LOSS_WINDOW / 64) as usize],
}

impl SeqWindow {
    fn extend(&self, seq: u16) -> u64 {
        match self.max {
            None => (1 << 32) + u64::from(seq),
            Some(m) => m.wrapping_add_signed(i64::from(seq.wrapping_sub(m as u16) as i16)),
        }
    }

    fn bit(&mut self, seq: u64, on: bool) {
        let (word, bit) = ((seq % LOSS_WINDOW / 64) as usize, seq % 64);
        if on {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
    }

    /// Moves the window's top to `seq` if it is newer, clearing the sequence numbers it passes.
    fn advance(&mut self, seq: u64) {
        let Some(max) = self.max else {
            (self.max, self.first) = (Some(seq), seq);
            return;
        };
        if seq <= max {
            return;
        }
        if seq - max >= LOSS_WINDOW {
            self.bits = Default::default();
        } else {
            for s in max + 1..=seq {
                self.bit(s, false);
            }
        }
        self.max = Some(seq);
    }

    /// Marks `seq` as arrived (if it is within the window).
    fn mark(&mut self, seq: u64) {
        let max = self.max.unwrap_or(seq);
        if seq >= self.first && seq + LOSS_WINDOW > max {
            self.bit(seq, true);
        }
    }

    fn loss_bp(&self) -> u16 {
        let Some(max) = self.max else { return 0 };
        let expected = (max - self.first + 1).min(LOSS_WINDOW);
        let received = u64::from(self.bits.iter().map(|w| w.count_ones()).sum::<u32>()).min(expected);
        ((expected - received) * 10_000 / expected) as u16
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, BinaryHeap};

    use proptest::prelude::*;

    use super::*;
    use crate::codec::{restart, Decoder};
    use crate::format::Subsampling;
    use crate::net::udp::media::{extension_block, FrameExt, Outgoing};
    use crate::rtp::capture_time;
    use crate::rtp::packetize::{packetize, Packetized, RtpStream};
    use crate::testutil::{pattern_jpeg, psnr, restart_jpeg, xrgb_to_rgb};

    const WAIT: u64 = 100_000;
    const RTT: u64 = 20_000;

    fn info(seq: u64) -> FrameInfo {
        let at = 1_000_000 + seq * 33_333;
        FrameInfo {
            seq,
            capture_us: at,
            encode_start_us: at + 100,
            encode_end_us: at + 3000,
            send_us: at + 3100,
            quality: 60,
        }
    }

    /// 320x240 4:2:0 with a restart marker every MCU row: 15 rows in several packets.
    fn restart_frame() -> (Vec<u8>, Packetized) {
        let jpeg = restart_jpeg((320, 240), Subsampling::S420, 90, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        assert!(p.len() >= 6, "{} packets", p.len());
        (jpeg, p)
    }

    fn sender() -> Outgoing {
        Outgoing::new(RtpStream::new(0x5EED, 65530, 77), 1 << 22)
    }

    fn decode(jpeg: &[u8], w: usize, h: usize) -> Vec<u32> {
        let mut px = Vec::new();
        Decoder::new().unwrap().decode(jpeg, w, h, &mut px).unwrap();
        px
    }

    fn scan(jpeg: &[u8]) -> &[u8] {
        &jpeg[restart::parse_header(jpeg).unwrap().scan_at..jpeg.len() - 2]
    }

    /// Pushes `pkts` at `now`, each must be accepted.
    fn push_all<'a>(a: &mut Assembler, pkts: impl IntoIterator<Item = &'a Vec<u8>>, now: u64) {
        for p in pkts {
            a.push(p, now).unwrap();
        }
    }

    fn only_frame(a: &mut Assembler, now: u64) -> (Received, Vec<u8>) {
        match a.poll(now) {
            Some(Assembled::Frame { frame, jpeg }) => {
                assert_eq!(a.poll(now), None);
                (frame, jpeg)
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_round_trips_without_loss() {
        let (jpeg, p) = restart_frame();
        let mut o = sender();
        let pkts = o.frame(&p, &info(7), 0, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        push_all(&mut a, &pkts, 5);
        assert_eq!(a.next_deadline(), Some(5));
        let (frame, out) = only_frame(&mut a, 5);
        assert_eq!(scan(&out), scan(&jpeg), "the scan data arrive byte for byte");
        assert_eq!(decode(&out, 320, 240), decode(&jpeg, 320, 240), "and decode to the same pixels");
        let want = Received {
            info: info(7),
            width: 320,
            height: 240,
            kind: 65,
            first_us: 5,
            done_us: 5,
            recovered: 0,
            retransmitted: 0,
        };
        assert_eq!(frame, want);
        let c = a.counts();
        assert_eq!((c.packets, c.frames_complete, c.missing, c.lost), (p.len() as u64, 1, 0, 0));
        assert_eq!(c.bytes, pkts.iter().map(|b| b.len() as u64).sum::<u64>());
        assert_eq!(c.highest_seq, 65530 + p.len() as u32 - 1);
        assert_eq!(a.recent_loss_bp(), 0);
        assert_eq!(a.held_bytes(), 0, "nothing held once handed out");
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn every_single_lost_packet_is_rebuilt_by_one_parity_packet() {
        let (jpeg, p) = restart_frame();
        for lost in 0..p.len() {
            let pkts = sender().frame(&p, &info(1), 1, 0, 1_000_000);
            let mut a = Assembler::new(WAIT);
            push_all(&mut a, pkts.iter().enumerate().filter(|&(i, _)| i != lost).map(|(_, b)| b), 10);
            let (frame, out) = only_frame(&mut a, 10);
            assert_eq!(scan(&out), scan(&jpeg), "lost {lost}");
            assert_eq!((frame.recovered, frame.info), (1, info(1)), "lost {lost}: timing from the parity packet too");
            let c = a.counts();
            assert_eq!((c.recovered_fec, c.missing, c.lost), (1, 1, 0));
        }
    }

    #[test]
    fn two_lost_in_a_group_with_two_parity() {
        let (jpeg, p) = restart_frame();
        let n = p.len() + 2;
        for x in 0..n {
            for y in x + 1..n {
                let pkts = sender().frame(&p, &info(1), 2, 0, 1_000_000);
                let mut a = Assembler::new(WAIT);
                let mut kept: Vec<&Vec<u8>> =
                    pkts.iter().enumerate().filter(|&(i, _)| i != x && i != y).map(|(_, b)| b).collect();
                kept.reverse(); // and in any order
                push_all(&mut a, kept, 10);
                let (_, out) = only_frame(&mut a, 10);
                assert_eq!(scan(&out), scan(&jpeg), "lost {x} and {y}");
            }
        }
    }

    #[test]
    fn loss_beyond_parity_is_nacked_and_the_retransmission_completes_the_frame() {
        let (jpeg, p) = restart_frame();
        let mut o = sender();
        let pkts = o.frame(&p, &info(1), 1, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        // Data packets 1 and 2 lost; one parity packet can rebuild only one.
        push_all(&mut a, pkts.iter().enumerate().filter(|&(i, _)| i != 1 && i != 2).map(|(_, b)| b), 1000);
        assert_eq!(a.poll(1000), None);
        let runs = a.nacks(1000, RTT);
        assert_eq!(runs, vec![(65531, 1)], "one NACK: the parity covers the other");
        assert_eq!(a.nacks(1000 + RTT / 2, RTT), vec![], "not again within an RTT");
        let again = o.retransmit(&runs, 1000, RTT);
        assert_eq!(again, vec![pkts[1].clone()]);
        push_all(&mut a, &again, 1000 + RTT);
        let (frame, out) = only_frame(&mut a, 1000 + RTT);
        assert_eq!(scan(&out), scan(&jpeg));
        assert_eq!((frame.recovered, frame.retransmitted), (1, 1));
        let c = a.counts();
        assert_eq!((c.nacked, c.recovered_nack, c.recovered_fec, c.missing, c.lost), (1, 1, 1, 2, 0));
    }

    #[test]
    fn nacks_wait_for_a_later_packet_or_an_overdue_tail_and_stop_near_the_deadline() {
        let (_, p) = restart_frame();
        let pkts = sender().frame(&p, &info(1), 0, 0, 1_000_000);
        let last = pkts.len() - 1;
        let mut a = Assembler::new(WAIT);
        // Packet 2 lost; 0 and 1 here: nothing is known missing yet.
        push_all(&mut a, &pkts[..2], 0);
        assert_eq!(a.nacks(1000, RTT), vec![]);
        a.push(&pkts[3], 2000).unwrap();
        assert_eq!(a.nacks(2000, RTT), vec![(65532, 1)], "a later packet arrived");
        // The tail (the last packet) lost too: NACKed once no packet came for a while.
        push_all(&mut a, &pkts[4..last], 3000);
        assert_eq!(a.nacks(3000 + 5000, RTT), vec![]);
        let tail = 65530u16.wrapping_add(last as u16);
        assert_eq!(a.nacks(3000 + TAIL_WAIT_US, RTT), vec![(tail, 1)], "packet 2 was asked for within an RTT");
        // Asked again after an RTT, but not once the deadline is less than an RTT away.
        assert_eq!(a.nacks(3000 + TAIL_WAIT_US + RTT, RTT), vec![(65532, 1), (tail, 1)]);
        assert_eq!(a.nacks(WAIT - RTT + 1, RTT), vec![]);
        assert_eq!(a.counts().nacked, 4);
    }

    #[test]
    fn nack_runs_are_merged_and_capped() {
        let mut seqs: Vec<u64> = vec![5, 3, 4, 4, 9, (1 << 32) + 65535, (1 << 32) + 65536];
        assert_eq!(runs(&mut seqs), vec![(3, 3), (9, 1), (65535, 2)]);
        let mut many: Vec<u64> = (0..2000).map(|i| i * 2).collect();
        assert_eq!(runs(&mut many).len(), MAX_NACK_RUNS);
        let mut long: Vec<u64> = (0..70_000).collect();
        assert_eq!(runs(&mut long), vec![(0, u16::MAX), (65535, (70_000 - 65535) as u16)]);
    }

    /// Decodes a partial frame's bands over black and returns the picture.
    fn conceal(bands: &[Band], w: usize, h: usize) -> Vec<u32> {
        let mut px = vec![0u32; w * h];
        for b in bands {
            let rows = (b.rows.end - b.rows.start) as usize;
            let band = decode(&b.jpeg, w, rows);
            px[b.rows.start as usize * w..b.rows.end as usize * w].copy_from_slice(&band);
        }
        px
    }

    #[test]
    fn loss_at_the_deadline_gives_the_rows_that_arrived() {
        let (jpeg, p) = restart_frame();
        let pkts = sender().frame(&p, &info(1), 0, 0, 1_000_000);
        let lost = 2;
        let mut a = Assembler::new(WAIT);
        push_all(&mut a, pkts.iter().enumerate().filter(|&(i, _)| i != lost).map(|(_, b)| b), 0);
        assert_eq!(a.poll(WAIT - 1), None, "waits for the deadline");
        assert_eq!(a.next_deadline(), Some(WAIT));
        let Some(Assembled::Partial { frame, bands }) = a.poll(WAIT) else { panic!("expected a partial frame") };
        assert_eq!((frame.width, frame.height, frame.done_us, frame.info), (320, 240, WAIT, info(1)));
        let whole = decode(&jpeg, 320, 240);
        let px = conceal(&bands, 320, 240);
        let covered: u32 = bands.iter().map(|b| b.rows.len() as u32).sum();
        assert!(covered > 0 && covered < 240, "{:?}", bands.iter().map(|b| b.rows.clone()).collect::<Vec<_>>());
        for b in &bands {
            let r = b.rows.start as usize * 320..b.rows.end as usize * 320;
            assert!(psnr(&xrgb_to_rgb(&px[r.clone()]), &xrgb_to_rgb(&whole[r])) > 35.0, "rows {:?}", b.rows);
        }
        let c = a.counts();
        assert_eq!((c.frames_partial, c.missing, c.lost), (1, 1, 1));
    }

    #[test]
    fn without_its_first_packet_a_frame_borrows_the_tables_of_the_frames_before() {
        let (jpeg, p) = restart_frame();
        let whole = decode(&jpeg, 320, 240);
        for quality_changed in [false, true] {
            let mut o = sender();
            let mut a = Assembler::new(WAIT);
            for f in 0..2 {
                push_all(&mut a, &o.frame(&p, &info(f), 1, 0, 1_000_000), f * 33_333);
                assert!(matches!(a.poll(f * 33_333), Some(Assembled::Frame { .. })));
            }
            // Frame 2 loses its first two packets; one parity packet cannot rebuild them.
            let mut i2 = info(2);
            i2.quality += u8::from(quality_changed);
            let pkts = o.frame(&p, &i2, 1, 0, 1_000_000);
            push_all(&mut a, &pkts[2..], 70_000);
            let out = a.poll(70_000 + WAIT);
            if quality_changed {
                assert!(matches!(out, Some(Assembled::Lost { seq: 2, .. })), "other tables: {out:?}");
                continue;
            }
            let Some(Assembled::Partial { frame, bands }) = out else { panic!("expected a partial frame: {out:?}") };
            assert_eq!(frame.info, info(2));
            assert!(bands[0].rows.start > 0, "the first rows are missing");
            let px = conceal(&bands, 320, 240);
            for b in &bands {
                let r = b.rows.start as usize * 320..b.rows.end as usize * 320;
                assert!(psnr(&xrgb_to_rgb(&px[r.clone()]), &xrgb_to_rgb(&whole[r])) > 35.0, "rows {:?}", b.rows);
            }
        }
    }

    #[test]
    fn a_frame_without_restart_markers_missing_a_packet_is_lost() {
        let jpeg = pattern_jpeg(320, 240, Subsampling::S420, 90, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let pkts = sender().frame(&p, &info(4), 0, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        push_all(&mut a, &pkts[1..], 0);
        let out = a.poll(WAIT);
        assert!(matches!(out, Some(Assembled::Lost { seq: 4, .. })), "{out:?}");
        assert_eq!(a.counts().frames_lost, 1);
    }

    #[test]
    fn a_newer_complete_frame_supersedes_an_older_incomplete_one() {
        let (_, p) = restart_frame();
        let mut o = sender();
        let one = o.frame(&p, &info(1), 0, 0, 1_000_000);
        let two = o.frame(&p, &info(2), 0, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        push_all(&mut a, one.iter().skip(2).chain(&one[..1]), 0);
        push_all(&mut a, &two, 1000);
        // Before frame 1's deadline: it comes out at once, in order, then frame 2.
        let first = a.poll(1000);
        assert!(matches!(&first, Some(Assembled::Partial { frame, .. }) if frame.info.seq == 1), "{first:?}");
        assert!(matches!(a.poll(1000), Some(Assembled::Frame { frame, .. }) if frame.info.seq == 2));
        assert_eq!(a.counts().frames_superseded, 1);
        // Frame 1's missing packet, now: late.
        a.push(&one[1], 2000).unwrap();
        assert_eq!(a.counts().late_packets, 1);
        assert_eq!(a.poll(1_000_000), None);
    }

    #[test]
    fn duplicates_and_late_packets_are_counted() {
        let (_, p) = restart_frame();
        let mut o = sender();
        let pkts = o.frame(&p, &info(1), 0, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        a.push(&pkts[0], 0).unwrap();
        a.push(&pkts[0], 0).unwrap();
        push_all(&mut a, &pkts[1..], 0);
        assert_eq!(a.counts().duplicates, 1);
        // The frame is done (not yet polled): its packets are late from now.
        a.push(&pkts[2], 0).unwrap();
        assert!(matches!(a.poll(0), Some(Assembled::Frame { .. })));
        a.push(&pkts[3], 0).unwrap();
        let c = a.counts();
        assert_eq!((c.duplicates, c.late_packets, c.packets), (1, 2, pkts.len() as u64 + 2));
    }

    #[test]
    fn loss_on_arrival_is_measured_before_recovery() {
        let (_, p) = restart_frame();
        let mut o = sender();
        let mut a = Assembler::new(WAIT);
        let mut sent = 0;
        let mut dropped = 0;
        for f in 0..100 {
            let pkts = o.frame(&p, &info(f), 1, 0, 1_000_000);
            for b in &pkts {
                sent += 1;
                if sent % 10 == 0 {
                    dropped += 1;
                    continue;
                }
                a.push(b, f * 33_333).unwrap();
            }
            while a.poll(f * 33_333).is_some() {}
        }
        assert!(sent > 512 && dropped > 0);
        let bp = a.recent_loss_bp();
        assert!((900..=1100).contains(&bp), "{bp} bp of 1000");
    }

    /// An RTP packet of framecast's media with the given header fields.
    fn craft(pt: u8, seq: u16, e: FrameExt, payload: &[u8]) -> Vec<u8> {
        let cap = capture_time::encode(1, 1000);
        let block = extension_block(&[(1, &cap[1..9]), (2, &e.encode())]);
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .sequence_number(seq)
            .ssrc(9)
            .extension(capture_time::ONE_BYTE_PROFILE, &block)
            .payload(payload)
            .write_vec()
            .unwrap()
    }

    #[test]
    fn bad_packets_are_errors_and_allocate_nothing_big() {
        let (_, p) = restart_frame();
        let good = p.payload(1);
        let e = FrameExt { frame: 1, index: 0, data: 4, parity: 2 };
        let err = |a: &mut Assembler, pkt: Vec<u8>| a.push(&pkt, 0).unwrap_err().to_string();
        let mut a = Assembler::new(WAIT);
        assert!(matches!(a.push(b"garbage", 0), Err(MediaError::Rtp(_))));
        let m = err(&mut a, craft(26, 0, FrameExt { data: 0, ..e }, good));
        assert!(m.contains("0 data"), "{m}");
        let m = err(&mut a, craft(26, 0, FrameExt { data: 4000, parity: 100, ..e }, good));
        assert!(m.contains("4096"), "{m}");
        let m = err(&mut a, craft(26, 0, FrameExt { index: 6, ..e }, good));
        assert!(m.contains("index 6"), "{m}");
        let m = err(&mut a, craft(127, 1, FrameExt { index: 1, ..e }, good));
        assert!(m.contains("payload type 127"), "{m}");
        let m = err(&mut a, craft(26, 0, FrameExt { data: 65, parity: 3, ..e }, good));
        assert!(m.contains("3 parity packets for 2 groups"), "{m}");
        // A frame: then contradictions within it.
        a.push(&craft(26, 0, e, good), 0).unwrap();
        let m = err(&mut a, craft(26, 1, FrameExt { index: 1, data: 5, ..e }, good));
        assert!(m.contains("5 data and 2 parity") && m.contains("4 and 2 in its first"), "{m}");
        let m = err(&mut a, craft(26, 7, FrameExt { index: 1, ..e }, good));
        assert!(m.contains("RTP seq 7") && m.contains("expected seq 1"), "{m}");
        let m = err(&mut a, craft(26, 1, FrameExt { index: 1, ..e }, b"short"));
        assert!(m.contains("RFC 2435"), "{m}");
        let mut shard = vec![1, 0, 2, 0];
        shard.extend_from_slice(&[0; 1500]);
        let m = err(&mut a, craft(127, 5, FrameExt { index: 5, ..e }, &shard));
        assert!(m.contains("says group 1 index 0 of 2, expected group 0 index 1 of 2"), "{m}");
        shard[0] = 0;
        shard[1] = 1;
        a.push(&craft(127, 5, FrameExt { index: 5, ..e }, &shard), 0).unwrap();
        shard[1] = 0;
        shard.truncate(100);
        let m = err(&mut a, craft(127, 4, FrameExt { index: 4, ..e }, &shard));
        assert!(m.contains("parity shard of 96 bytes, but its group's others are 1500"), "{m}");
        assert!(a.held_bytes() < 4000, "{}", a.held_bytes());
        // A huge claim holds only what arrived.
        let mut a = Assembler::new(WAIT);
        a.push(&craft(26, 0, FrameExt { frame: 2, index: 0, data: 4000, parity: 63 }, good), 0).unwrap();
        assert_eq!(a.held_bytes(), good.len());
        // A frame far in the future.
        let m = err(&mut a, craft(26, 1, FrameExt { frame: 1 << 20, index: 0, data: 1, parity: 0 }, good));
        assert!(m.contains("jumps past the newest frame 2"), "{m}");
    }

    #[test]
    fn a_bad_packet_starts_no_frame() {
        let (_, p) = restart_frame();
        let mut o = sender();
        let pkts = o.frame(&p, &info(1), 0, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        a.push(&pkts[0], 0).unwrap();
        // A packet of a frame further on whose payload is no RFC 2435 JPEG: refused, and no
        // frame 500 waits to come out lost (which would make frames 2..500 late).
        let e = FrameExt { frame: 500, index: 0, data: 1, parity: 0 };
        assert!(a.push(&craft(26, 4000, e, b"not jpeg"), 0).is_err());
        push_all(&mut a, &pkts[1..], 0);
        assert!(matches!(a.poll(0), Some(Assembled::Frame { .. })));
        let two = o.frame(&p, &info(2), 0, 0, 1_000_000);
        push_all(&mut a, &two, 1000);
        assert!(matches!(a.poll(WAIT * 10), Some(Assembled::Frame { frame, .. }) if frame.info.seq == 2));
        assert_eq!(a.poll(WAIT * 10), None);
    }

    #[test]
    fn a_frame_rebuilt_wholly_from_parity_knows_its_type() {
        let jpeg = restart_jpeg((16, 16), Subsampling::S420, 90, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        assert_eq!(p.len(), 1);
        let pkts = sender().frame(&p, &info(3), 1, 0, 1_000_000);
        let mut a = Assembler::new(WAIT);
        a.push(&pkts[1], 0).unwrap();
        let (frame, out) = only_frame(&mut a, 0);
        assert_eq!((frame.kind, frame.width, frame.recovered, frame.info), (65, 16, 1, info(3)));
        assert_eq!(scan(&out), scan(&jpeg));
    }

    #[test]
    fn a_frame_over_its_byte_cap_is_refused() {
        // A 16x16 frame may hold twice its largest scan: about 130 KB, not 4096 packets.
        let jpeg = restart_jpeg((16, 16), Subsampling::S420, 90, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut payload = p.payload(0)[..8].to_vec();
        payload.resize(1300, 0);
        let mut a = Assembler::new(WAIT);
        let e = FrameExt { frame: 0, index: 0, data: 4000, parity: 0 };
        let mut refused = None;
        for i in 0..4000u16 {
            if let Err(err) = a.push(&craft(26, i, FrameExt { index: i, ..e }, &payload), 0) {
                refused = Some((i, err.to_string()));
                break;
            }
        }
        let (i, m) = refused.expect("the cap is reached");
        assert_eq!(m, "frame 0: 132600 bytes held, 1300 more passes the frame's cap of 133120");
        assert!(usize::from(i) * 1300 <= 2 * max_scan_bytes(16, 16));
        assert!(a.held_bytes() <= 2 * max_scan_bytes(16, 16));
    }

    #[test]
    fn too_many_frames_open_give_up_the_oldest() {
        let (_, p) = restart_frame();
        let mut o = sender();
        let mut a = Assembler::new(WAIT);
        for f in 0..MAX_FRAMES_OPEN as u64 + 1 {
            let pkts = o.frame(&p, &info(f), 0, 0, 1_000_000);
            a.push(&pkts[0], 0).unwrap();
        }
        let out = a.poll(0);
        assert!(matches!(out, Some(Assembled::Partial { ref frame, .. }) if frame.info.seq == 0), "{out:?}");
        assert_eq!(a.poll(0), None);
    }

    /// Time to packetise and assemble a 1280x720 frame, whole and with a packet rebuilt from
    /// parity (run with `--nocapture` to see it; no assertion on speed).
    #[test]
    fn speed_of_a_720p_frame() {
        let jpeg = restart_jpeg((1280, 720), Subsampling::S420, 75, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut o = sender();
        for lost in [None, Some(3)] {
            let t = std::time::Instant::now();
            let pkts = o.frame(&p, &info(1), 2, 0, 1_000_000);
            let sent = t.elapsed();
            let mut a = Assembler::new(WAIT);
            let t = std::time::Instant::now();
            push_all(&mut a, pkts.iter().enumerate().filter(|&(i, _)| Some(i) != lost).map(|(_, b)| b), 0);
            assert!(matches!(a.poll(0), Some(Assembled::Frame { .. })));
            let took = t.elapsed();
            println!(
                "720p frame, {} B in {} packets + 2 parity, lost {lost:?}: Outgoing::frame {sent:?}, assembled in {took:?}",
                jpeg.len(),
                p.len()
            );
        }
    }

    /// One frame's packets as they arrive: which are dropped, duplicated, and in what order.
    #[derive(Debug, Clone)]
    struct Pattern {
        drop: Vec<bool>,
        dup: Vec<bool>,
        order: Vec<usize>,
        parity: usize,
        gap_us: u64,
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        (
            proptest::collection::vec(any::<u8>().prop_map(|b| b < 40), 40),
            proptest::collection::vec(any::<u8>().prop_map(|b| b < 20), 40),
            proptest::collection::vec(0usize..40, 40),
            0usize..4,
            0u64..60_000,
        )
            .prop_map(|(drop, dup, order, parity, gap_us)| Pattern { drop, dup, order, parity, gap_us })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Arbitrary loss, reordering (within and across frames) and duplication: no panic,
        /// and every frame of which a packet arrived comes out exactly once, in order.
        #[test]
        fn any_arrival_pattern_gives_each_frame_once_in_order(
            frames in proptest::collection::vec(pattern(), 1..6),
            nack in any::<bool>(),
        ) {
            let (_, p) = restart_frame();
            let mut o = sender();
            let mut a = Assembler::new(WAIT);
            let mut arrivals: Vec<(u64, u64, Vec<u8>)> = Vec::new(); // (time, frame, packet)
            for (f, pat) in frames.iter().enumerate() {
                let f = f as u64;
                let pkts = o.frame(&p, &info(f), pat.parity, 0, u64::MAX);
                for (i, b) in pkts.iter().enumerate() {
                    if pat.drop[i % 40] {
                        continue;
                    }
                    let t = f * 33_333 + pat.order[i % 40] as u64 * 500;
                    arrivals.push((t, f, b.clone()));
                    if pat.dup[i % 40] {
                        arrivals.push((t + pat.gap_us, f, b.clone()));
                    }
                }
            }
            // Arrivals in time order; NACKs (when on) bring retransmissions an RTT later.
            let frame_of: BTreeMap<Vec<u8>, u64> = arrivals.iter().map(|(_, f, b)| (b.clone(), *f)).collect();
            let mut queue: BinaryHeap<Reverse<(u64, Vec<u8>)>> =
                arrivals.iter().map(|(t, _, b)| Reverse((*t, b.clone()))).collect();
            let mut out = Vec::new();
            let mut seen = BTreeSet::new();
            let mut last_t = 0;
            while let Some(Reverse((t, b))) = queue.pop() {
                last_t = t;
                let before = a.counts();
                let used = a.push(&b, t).is_ok() && {
                    let c = a.counts();
                    (c.late_packets, c.duplicates) == (before.late_packets, before.duplicates)
                };
                if let (true, Some(f)) = (used, frame_of.get(&b)) {
                    seen.insert(*f);
                }
                if nack {
                    let runs = a.nacks(t, RTT);
                    prop_assert!(runs.len() <= MAX_NACK_RUNS);
                    for r in o.retransmit(&runs, t, RTT) {
                        queue.push(Reverse((t + RTT, r)));
                    }
                }
                while let Some(x) = a.poll(t) {
                    out.push(x.seq());
                }
            }
            let end = last_t + WAIT + 1;
            while let Some(x) = a.poll(end) {
                out.push(x.seq());
            }
            prop_assert!(out.windows(2).all(|w| w[0] < w[1]), "in order, once: {:?}", out);
            for f in &seen {
                prop_assert!(out.contains(f), "frame {} came out: {:?}", f, out);
            }
            let arrived: BTreeSet<u64> = arrivals.iter().map(|x| x.1).collect();
            prop_assert!(out.iter().all(|f| arrived.contains(f)));
            prop_assert_eq!(a.held_bytes(), 0);
        }

        /// Arbitrary bytes, and arbitrary changes to good packets, never panic.
        #[test]
        fn arbitrary_packets_never_panic(
            garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            flips in proptest::collection::vec((0usize..1500, any::<u8>()), 0..16),
        ) {
            let (_, p) = restart_frame();
            let pkts = sender().frame(&p, &info(1), 2, 0, u64::MAX);
            let mut a = Assembler::new(WAIT);
            for g in &garbage {
                let _ = a.push(g, 0);
            }
            for (k, (at, x)) in flips.iter().enumerate() {
                let mut b = pkts[k % pkts.len()].clone();
                let n = b.len();
                b[at % n] ^= x;
                let _ = a.push(&b, 0);
                let _ = a.nacks(k as u64 * 1000, RTT);
            }
            while a.poll(u64::MAX / 2).is_some() {}
        }
    }
}
