//! The sender's side of the UDP media path, for one viewer: a frame's RFC 2435 payloads to
//! RTP packets with framecast's extensions, its parity packets, and a store of the packets
//! sent for retransmission on NACK. Run by the viewer's sending thread (`sender::udp`).
//!
//! The store is bounded twice: in bytes (the oldest frames go first) and in time (a frame's
//! packets go once its deadline has passed). A retransmission is the same bytes as the first
//! send (the same RTP sequence number), at most once per RTT per packet, and at most
//! [`MAX_RETRANSMIT_PER_CALL`] packets per NACK: what a NACK asks for beyond that (unknown,
//! expired, just resent) is counted as refused, never sent, so a NACK flood cannot make the
//! sender send more than it sent in the first place.

use std::collections::VecDeque;
use std::ops::Range;

use rtp_types::RtpPacketBuilder;

use super::{frame_extensions, FecHeader, FrameExt, FrameInfo, Timing, FEC_PAYLOAD_TYPE, MAX_FRAME_PACKETS};
use crate::net::udp::fec;
use crate::rtp::capture_time::ONE_BYTE_PROFILE;
use crate::rtp::packetize::{Packetized, RtpStream};
use crate::rtp::PAYLOAD_TYPE;

/// The most packets one call of [`Outgoing::retransmit`] sends.
pub const MAX_RETRANSMIT_PER_CALL: usize = 256;
/// The most packets the store keeps, whatever their size (so that sequence numbers in it
/// never wrap).
const MAX_STORED_PACKETS: usize = 16384;

/// The sender's side for one viewer: the RTP stream, and the packets of recent frames kept
/// for retransmission (bounded in bytes, and dropped once their frame is past its deadline).
pub struct Outgoing {
    pub stream: RtpStream,
    store_bytes: usize,
    store: VecDeque<Stored>,
    /// Bytes and packets in `store`.
    held: usize,
    held_packets: usize,
    counts: OutgoingCounts,
}

/// One frame's packets, kept for retransmission.
struct Stored {
    /// RTP sequence number of its first packet (the rest follow).
    first: u16,
    expires_us: u64,
    bytes: usize,
    packets: Vec<Kept>,
}

struct Kept {
    bytes: Vec<u8>,
    /// When it was last retransmitted.
    resent_us: Option<u64>,
}

/// Counters of the sender's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutgoingCounts {
    pub data_packets: u64,
    pub parity_packets: u64,
    pub parity_bytes: u64,
    pub retransmitted: u64,
    /// NACKed packets not sent: unknown, expired, already resent within an RTT, or past the
    /// per-NACK cap.
    pub nack_refused: u64,
    /// Frames not sent: more than [`MAX_FRAME_PACKETS`] data packets.
    pub oversized: u64,
}

impl Outgoing {
    /// `store_bytes` bounds the packets kept for retransmission.
    pub fn new(stream: RtpStream, store_bytes: usize) -> Self {
        Outgoing {
            stream,
            store_bytes,
            store: VecDeque::new(),
            held: 0,
            held_packets: 0,
            counts: OutgoingCounts::default(),
        }
    }

    /// The frame's packets, whole RTP packets in sending order (data, then `parity_per_group`
    /// parity packets for each group), kept for retransmission until `expires_us`.
    ///
    /// `parity_per_group` is capped at [`fec::MAX_GROUP_PARITY`], and lowered so that the
    /// frame has at most [`MAX_FRAME_PACKETS`] packets; a frame of more data packets than
    /// that is not sent (counted in `oversized`).
    pub fn frame(
        &mut self,
        frame: &Packetized,
        info: &FrameInfo,
        parity_per_group: usize,
        now_us: u64,
        expires_us: u64,
    ) -> Vec<Vec<u8>> {
        self.expire(now_us);
        let data = frame.len();
        if data == 0 || data > MAX_FRAME_PACKETS {
            self.counts.oversized += u64::from(data > 0);
            return Vec::new();
        }
        let groups = data.div_ceil(fec::MAX_GROUP_DATA);
        let per_group = parity_per_group.min(fec::MAX_GROUP_PARITY).min((MAX_FRAME_PACKETS - data) / groups);
        let ext = FrameExt { frame: info.seq as u32, index: 0, data: data as u16, parity: (per_group * groups) as u16 };
        let first = self.stream.seq;
        let mut out = Vec::with_capacity(data + per_group * groups);
        for i in 0..data {
            let timing = (i == 0).then(|| Timing::of(info));
            let e = FrameExt { index: i as u16, ..ext };
            out.push(self.packet(
                PAYLOAD_TYPE,
                info.capture_us,
                &e,
                timing.as_ref(),
                &[frame.payload(i)],
                i + 1 == data,
            ));
        }
        self.counts.data_packets += data as u64;
        for g in 0..groups {
            self.parity(frame, info, &ext, g, per_group, &mut out);
        }
        self.keep(first, &out, expires_us);
        out
    }

    /// Appends group `g`'s `per_group` parity packets to `out`.
    fn parity(
        &mut self,
        frame: &Packetized,
        info: &FrameInfo,
        ext: &FrameExt,
        g: usize,
        per_group: usize,
        out: &mut Vec<Vec<u8>>,
    ) {
        if per_group == 0 {
            return;
        }
        let range = g * fec::MAX_GROUP_DATA..frame.len().min((g + 1) * fec::MAX_GROUP_DATA);
        let payloads: Vec<&[u8]> = range.map(|i| frame.payload(i)).collect();
        let shards =
            fec::encode(&payloads, per_group).expect("1..=64 payloads of at most MAX_PAYLOAD bytes, 1..=32 parity");
        let timing = Timing::of(info);
        for (k, shard) in shards.iter().enumerate() {
            let index = usize::from(ext.data) + g * per_group + k;
            let e = FrameExt { index: index as u16, ..*ext };
            let h = FecHeader { group: g as u8, index: k as u8, count: per_group as u8 }.encode();
            let pkt = self.packet(FEC_PAYLOAD_TYPE, info.capture_us, &e, Some(&timing), &[&h, shard], false);
            self.counts.parity_packets += 1;
            self.counts.parity_bytes += pkt.len() as u64;
            out.push(pkt);
        }
    }

    /// One RTP packet of the stream (the next sequence number), counted in the stream.
    fn packet(
        &mut self,
        pt: u8,
        capture_us: u64,
        e: &FrameExt,
        t: Option<&Timing>,
        payload: &[&[u8]],
        marker: bool,
    ) -> Vec<u8> {
        let s = &mut self.stream;
        let ts = s.timestamp(capture_us);
        let block = frame_extensions(capture_us, e, t);
        let mut b = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .sequence_number(s.seq)
            .timestamp(ts)
            .ssrc(s.ssrc)
            .marker_bit(marker)
            .extension(ONE_BYTE_PROFILE, &block);
        let mut len = 0;
        for p in payload {
            b = b.payload(p);
            len += p.len();
        }
        let mut out = Vec::new();
        b.write_into_vec_unchecked(&mut out);
        s.seq = s.seq.wrapping_add(1);
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(len as u32);
        s.last = Some((ts, capture_us));
        out
    }

    /// Stores a frame's packets, then drops the oldest frames until the store is in bounds.
    fn keep(&mut self, first: u16, packets: &[Vec<u8>], expires_us: u64) {
        let bytes = packets.iter().map(Vec::len).sum();
        let packets = packets.iter().map(|p| Kept { bytes: p.clone(), resent_us: None }).collect::<Vec<_>>();
        self.held += bytes;
        self.held_packets += packets.len();
        self.store.push_back(Stored { first, expires_us, bytes, packets });
        while self.held > self.store_bytes || self.held_packets > MAX_STORED_PACKETS {
            let Some(old) = self.store.pop_front() else { break };
            self.held -= old.bytes;
            self.held_packets -= old.packets.len();
        }
    }

    /// Drops the frames past their deadline.
    fn expire(&mut self, now_us: u64) {
        let (mut held, mut held_packets) = (self.held, self.held_packets);
        self.store.retain(|s| {
            let keep = s.expires_us > now_us;
            if !keep {
                held -= s.bytes;
                held_packets -= s.packets.len();
            }
            keep
        });
        (self.held, self.held_packets) = (held, held_packets);
    }

    /// The packets a NACK asks for that are still kept and unexpired, each resent at most once
    /// per `rtt_us`; the rest are counted as refused.
    pub fn retransmit(&mut self, runs: &[(u16, u16)], now_us: u64, rtt_us: u64) -> Vec<Vec<u8>> {
        self.expire(now_us);
        let asked: u64 = runs.iter().map(|&(_, n)| u64::from(n)).sum();
        let mut out = Vec::new();
        'runs: for &(first, n) in runs {
            for s in &mut self.store {
                for range in overlap(first, n, s.first, s.packets.len()) {
                    for k in &mut s.packets[range] {
                        if out.len() >= MAX_RETRANSMIT_PER_CALL {
                            break 'runs;
                        }
                        if k.resent_us.is_some_and(|t| now_us < t.saturating_add(rtt_us)) {
                            continue;
                        }
                        k.resent_us = Some(now_us);
                        out.push(k.bytes.clone());
                    }
                }
            }
        }
        self.counts.retransmitted += out.len() as u64;
        self.counts.nack_refused += asked - out.len() as u64;
        out
    }

    pub fn counts(&self) -> OutgoingCounts {
        self.counts
    }

    /// Bytes of packets kept for retransmission.
    pub fn stored_bytes(&self) -> usize {
        self.held
    }
}

/// Which of `len` packets from sequence number `start` a run of `n` from `first` covers (in
/// sequence number arithmetic, modulo 2^16): at most two ranges of packet indices.
fn overlap(first: u16, n: u16, start: u16, len: usize) -> impl Iterator<Item = Range<usize>> {
    const M: usize = 1 << 16;
    let n = usize::from(n);
    // Where the packets start, counted from the run's first.
    let at = usize::from(start.wrapping_sub(first));
    let head = (at < n).then(|| 0..len.min(n - at));
    let tail = (at + len > M).then(|| M - at..len.min(M - at + n));
    head.into_iter().chain(tail).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::net::udp::media::MediaPacket;
    use crate::rtp::packetize::packetize;
    use crate::testutil::restart_jpeg;

    fn info(seq: u64) -> FrameInfo {
        FrameInfo {
            seq,
            capture_us: 1_000_000 + seq * 33_333,
            encode_start_us: 1_000_100 + seq * 33_333,
            encode_end_us: 1_003_000 + seq * 33_333,
            send_us: 1_003_100 + seq * 33_333,
            quality: 60,
        }
    }

    #[test]
    fn overlap_in_sequence_number_arithmetic() {
        let ranges = |first, n, start, len| overlap(first, n, start, len).collect::<Vec<Range<usize>>>();
        assert_eq!(ranges(100, 5, 98, 10), vec![2..7]);
        assert_eq!(ranges(100, 5, 103, 10), vec![0..2]);
        assert!(ranges(100, 5, 105, 10).is_empty());
        assert!(ranges(100, 5, 90, 10).is_empty());
        assert_eq!(ranges(65534, 4, 0, 10), vec![0..2], "the run wraps");
        assert_eq!(ranges(0, 3, 65534, 10), vec![2..5], "the packets wrap");
        assert_eq!(ranges(5, 65535, 0, 10), vec![0..4, 5..10], "a run of nearly everything but 4");
        assert_eq!(ranges(0, 65535, 0, 3), vec![0..3]);
    }

    #[test]
    fn packets_carry_the_extensions_and_parity_follows_the_data() {
        let jpeg = restart_jpeg((320, 240), Subsampling::S420, 75, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut o = Outgoing::new(RtpStream::new(7, 65533, 0), 1 << 20);
        let pkts = o.frame(&p, &info(3), 2, 0, 100_000);
        assert_eq!(pkts.len(), p.len() + 2);
        for (i, b) in pkts.iter().enumerate() {
            let m = MediaPacket::parse(b).unwrap();
            assert!(b.len() <= super::super::MAX_MEDIA_PACKET);
            assert_eq!(m.seq, 65533u16.wrapping_add(i as u16));
            assert_eq!(m.frame, FrameExt { frame: 3, index: i as u16, data: p.len() as u16, parity: 2 });
            assert_eq!(m.capture_us, info(3).capture_us);
            let data = i < p.len();
            assert_eq!(m.payload_type, if data { 26 } else { 127 });
            assert_eq!(m.timing.is_some(), i == 0 || !data, "packet {i}");
            if data {
                assert_eq!(m.payload, p.payload(i));
                let rtp = rtp_types::RtpPacket::parse(b).unwrap();
                assert_eq!(rtp.marker_bit(), i + 1 == p.len());
            } else {
                let (h, shard) = FecHeader::parse(m.payload).unwrap();
                assert_eq!(h, FecHeader { group: 0, index: (i - p.len()) as u8, count: 2 });
                let longest = p.payloads().map(<[u8]>::len).max().unwrap();
                assert_eq!(shard.len(), longest + 2);
            }
        }
        let c = o.counts();
        assert_eq!((c.data_packets, c.parity_packets), (p.len() as u64, 2));
        assert_eq!(c.parity_bytes, pkts[p.len()..].iter().map(|b| b.len() as u64).sum::<u64>());
        assert_eq!(o.stream.seq, 65533u16.wrapping_add(pkts.len() as u16));
    }

    #[test]
    fn large_frames_are_cut_into_groups_of_64_with_equal_parity() {
        let jpeg = restart_jpeg((640, 480), Subsampling::S422, 95, 1, 1).unwrap();
        let p = crate::rtp::packetize::packetize_with(&jpeg, 300).unwrap();
        assert!(p.len() > 64, "{} packets", p.len());
        let groups = p.len().div_ceil(64);
        let mut o = Outgoing::new(RtpStream::new(7, 0, 0), 1 << 24);
        let pkts = o.frame(&p, &info(1), 40, 0, 100_000);
        assert_eq!(pkts.len(), p.len() + 32 * groups, "capped at 32 a group");
        let heads: Vec<FecHeader> = pkts[p.len()..]
            .iter()
            .map(|b| FecHeader::parse(MediaPacket::parse(b).unwrap().payload).unwrap().0)
            .collect();
        for (j, h) in heads.iter().enumerate() {
            assert_eq!(*h, FecHeader { group: (j / 32) as u8, index: (j % 32) as u8, count: 32 });
        }
    }

    #[test]
    fn retransmissions_are_the_same_bytes_once_per_rtt() {
        let jpeg = restart_jpeg((320, 240), Subsampling::S420, 75, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut o = Outgoing::new(RtpStream::new(7, 65534, 0), 1 << 20);
        let a = o.frame(&p, &info(1), 1, 0, 200_000);
        let b = o.frame(&p, &info(2), 1, 0, 200_000);
        let all: Vec<&Vec<u8>> = a.iter().chain(&b).collect();
        // A run across both frames and the sequence number wrap.
        let first = 65534u16.wrapping_add(a.len() as u16 - 1);
        let again = o.retransmit(&[(first, 2)], 10_000, 50_000);
        assert_eq!(again, vec![all[a.len() - 1].clone(), all[a.len()].clone()]);
        // Within an RTT: refused; after it: sent again.
        assert!(o.retransmit(&[(first, 1)], 40_000, 50_000).is_empty());
        assert_eq!(o.retransmit(&[(first, 1)], 60_000, 50_000).len(), 1);
        // Never sent: refused.
        assert!(o.retransmit(&[(first.wrapping_sub(100), 3)], 60_000, 50_000).is_empty());
        let c = o.counts();
        assert_eq!((c.retransmitted, c.nack_refused), (3, 4));
        // Past the deadline: gone.
        assert!(o.retransmit(&[(65534, 3)], 200_000, 0).is_empty());
        assert_eq!(o.stored_bytes(), 0);
        assert_eq!(o.counts().nack_refused, 7);
    }

    #[test]
    fn the_store_is_bounded_in_bytes_oldest_first_and_a_flood_is_capped() {
        let jpeg = restart_jpeg((640, 480), Subsampling::S420, 75, 1, 1).unwrap();
        let p = packetize(&jpeg).unwrap();
        let mut o = Outgoing::new(RtpStream::new(7, 0, 0), 3 * p.payload_bytes());
        let mut sent = Vec::new();
        for f in 0..10 {
            sent.push(o.frame(&p, &info(f), 0, 0, u64::MAX));
            assert!(o.stored_bytes() <= 3 * p.payload_bytes());
        }
        let n = p.len() as u16;
        // The oldest frames are gone, the newest two are kept.
        assert!(o.retransmit(&[(0, n)], 1, 0).is_empty());
        assert_eq!(o.retransmit(&[(9 * n, n)], 1, 0), sent[9]);
        // A flood: every sequence number, many times over, gets at most the cap.
        let flood = vec![(0u16, u16::MAX); 256];
        let t = std::time::Instant::now();
        let out = o.retransmit(&flood, 2, 0);
        assert!(out.len() <= MAX_RETRANSMIT_PER_CALL && !out.is_empty());
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "bounded work");
        let c = o.counts();
        assert_eq!(c.retransmitted + c.nack_refused, u64::from(2 * n) + 256 * u64::from(u16::MAX));
    }

    #[test]
    fn an_empty_or_huge_frame_is_not_sent() {
        let mut o = Outgoing::new(RtpStream::new(7, 0, 0), 1 << 20);
        assert!(o.frame(&Packetized::default(), &info(1), 1, 0, 1).is_empty());
        assert_eq!(o.counts(), OutgoingCounts::default());
        assert_eq!(o.stream.seq, 0);
    }
}
