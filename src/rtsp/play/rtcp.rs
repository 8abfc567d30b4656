//! RTCP for the RTSP player ([`super::Player`], run by the thread that plays: the receiver's
//! `net-rx`, the sender's `capture` for `--source rtsp://`): the reception statistics of RFC
//! 3550 (interarrival jitter, loss since the last report), the receiver reports built from
//! them, and the sender reports read back, which map RTP timestamps to the sender's wall
//! clock. Pure code: times come in as arguments.

use rtcp_types::{Compound, Packet, ReceiverReport, ReportBlock, RtcpPacketWriter, RtcpPacketWriterExt};

use crate::rtp::depacketize::Counts;
use crate::rtp::CLOCK_RATE;

/// Seconds from 1900 (NTP) to 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The last sender report: its NTP time, its RTP timestamp, and when it arrived (µs on our
/// monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp: u32,
    pub arrived_us: u64,
}

impl SenderReport {
    /// The wall time (µs since the Unix epoch) on the sender's clock of RTP timestamp `ts`.
    pub fn wall_us(&self, ts: u32) -> Option<u64> {
        let ntp_us = ((u128::from(self.ntp) * 1_000_000) >> 32) as u64;
        let unix_us = ntp_us.checked_sub(NTP_UNIX_OFFSET * 1_000_000)?;
        let delta = i64::from(ts.wrapping_sub(self.rtp) as i32) * 1_000_000 / i64::from(CLOCK_RATE);
        unix_us.checked_add_signed(delta)
    }
}

/// Reception statistics of one RTP source.
#[derive(Debug, Default)]
pub struct Reception {
    /// RFC 3550 A.8, in RTP timestamp units, scaled by 16.
    jitter: u32,
    last_transit: Option<u32>,
    /// Counts at the last receiver report (for the fraction lost since).
    prior: Counts,
    pub ssrc: Option<u32>,
    pub last_sr: Option<SenderReport>,
}

impl Reception {
    /// An RTP packet with timestamp `ts` arrived at `arrival_us` (our clock).
    pub fn packet(&mut self, ssrc: u32, ts: u32, arrival_us: u64) {
        self.ssrc = Some(ssrc);
        let arrival = (u128::from(arrival_us) * u128::from(CLOCK_RATE) / 1_000_000) as u32;
        let transit = arrival.wrapping_sub(ts);
        if let Some(last) = self.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept scaled by 16 (RFC 3550 A.8); in u64 and capped, since a
            // peer's timestamps can make |D| as large as 2^31 every packet.
            let j = u64::from(self.jitter);
            self.jitter = (j + d - ((j + 8) >> 4)).min(u64::from(u32::MAX)) as u32;
        }
        self.last_transit = Some(transit);
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter >> 4
    }

    /// Reads the sender reports of a compound RTCP packet about the RTP source (any source
    /// before RTP arrived). Malformed RTCP is ignored (it carries nothing the stream needs);
    /// returns how many sender reports were read.
    pub fn rtcp(&mut self, data: &[u8], arrived_us: u64) -> usize {
        let Ok(compound) = Compound::parse(data) else { return 0 };
        let mut n = 0;
        for p in compound.flatten() {
            if let Packet::Sr(sr) = p {
                if self.ssrc.is_some_and(|s| s != sr.ssrc()) {
                    continue;
                }
                self.last_sr = Some(SenderReport {
                    ssrc: sr.ssrc(),
                    ntp: sr.ntp_timestamp(),
                    rtp: sr.rtp_timestamp(),
                    arrived_us,
                });
                n += 1;
            }
        }
        n
    }

    /// A receiver report from `own_ssrc` about the source, with the counts so far, at
    /// `now_us`; `None` before any RTP arrived.
    pub fn report(&mut self, own_ssrc: u32, counts: Counts, now_us: u64) -> Option<Vec<u8>> {
        let ssrc = self.ssrc?;
        let expected = counts.expected().saturating_sub(self.prior.expected());
        let received = counts.packets.saturating_sub(self.prior.packets);
        let lost = expected.saturating_sub(received);
        let fraction = (lost * 256).checked_div(expected).map_or(0, |f| f.min(255) as u8);
        self.prior = counts;
        let (lsr, dlsr) = match self.last_sr {
            Some(sr) => {
                let delay = now_us.saturating_sub(sr.arrived_us) * 65536 / 1_000_000;
                ((sr.ntp >> 16) as u32, delay.min(u64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        let block = ReportBlock::builder(ssrc)
            .fraction_lost(fraction)
            .cumulative_lost(counts.lost().min(0x7F_FFFF) as u32)
            .extended_sequence_number(counts.max_seq)
            .interarrival_jitter(self.jitter())
            .last_sender_report_timestamp(lsr)
            .delay_since_last_sender_report_timestamp(dlsr);
        let rr = ReceiverReport::builder(own_ssrc).add_report_block(block);
        let mut buf = vec![0u8; rr.calculate_size().ok()?];
        rr.write_into(&mut buf).ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use rtcp_types::{RtcpPacketParser, SenderReport as Sr};

    use super::*;

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut r = Reception::default();
        // Packets 33 ms apart in RTP time, arriving alternately 0 and 10 ms late.
        for i in 0..200u64 {
            let ts = (i * 3000) as u32;
            let arrival = i * 33_333 + if i % 2 == 1 { 10_000 } else { 0 };
            r.packet(1, ts, arrival);
        }
        // |D| = 900 ticks every packet: J converges to 900.
        assert!((880..=900).contains(&r.jitter()), "{}", r.jitter());
    }

    /// Timestamps chosen so that the scaled jitter reaches u32::MAX (|D| of 2^31, 2^31, then
    /// 394 264 575): the next packet overflowed `jitter + 8` in u32 before.
    #[test]
    fn a_peer_s_wild_timestamps_cannot_overflow_the_jitter() {
        let mut r = Reception::default();
        for ts in [0, 1 << 31, 0, 394_264_575, 0, 1 << 31] {
            r.packet(1, ts, 0);
        }
        assert!(r.jitter() <= u32::MAX >> 4, "{}", r.jitter());
    }

    #[test]
    fn sender_reports_map_rtp_time_to_wall_time_and_feed_the_receiver_report() {
        let ntp = ((NTP_UNIX_OFFSET + 1_700_000_000) << 32) | (1 << 31); // .5 s
        let sr = Sr::builder(0xABCD).ntp_timestamp(ntp).rtp_timestamp(90_000);
        let mut buf = vec![0u8; sr.calculate_size().unwrap()];
        sr.write_into(&mut buf).unwrap();
        let mut r = Reception::default();
        assert_eq!(r.rtcp(&buf, 5_000_000), 1);
        assert_eq!(r.rtcp(&[1, 2, 3], 0), 0, "garbage is ignored");
        let s = r.last_sr.unwrap();
        assert_eq!(s.wall_us(90_000 + 45_000), Some(1_700_000_001_000_000));
        // Once RTP came from 0xABCD, another source's sender report maps nothing.
        r.packet(0xABCD, 0, 0);
        let other = Sr::builder(0x1234).ntp_timestamp(ntp + (7 << 32)).rtp_timestamp(1);
        let mut b2 = vec![0u8; other.calculate_size().unwrap()];
        other.write_into(&mut b2).unwrap();
        assert_eq!(r.rtcp(&b2, 6_000_000), 0);
        assert_eq!(r.last_sr, Some(s));
        assert_eq!(s.wall_us(90_000 - 90_000), Some(1_699_999_999_500_000));
        r.packet(0xABCD, 0, 0);
        let counts = Counts { packets: 9, base_seq: 0, max_seq: 9, ..Counts::default() };
        let rr = r.report(7, counts, 5_500_000).unwrap();
        let rr = rtcp_types::ReceiverReport::parse(&rr).unwrap();
        let b = rr.report_blocks().next().unwrap();
        assert_eq!((rr.ssrc(), b.ssrc(), b.cumulative_lost(), b.extended_sequence_number()), (7, 0xABCD, 1, 9));
        assert_eq!(b.fraction_lost(), 25); // 1 of 10
        assert_eq!(b.last_sender_report_timestamp(), (ntp >> 16) as u32);
        assert_eq!(b.delay_since_last_sender_report_timestamp(), 32768); // 0.5 s
    }
}
