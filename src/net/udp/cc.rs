//! Congestion control for the UDP transport, which has none in the kernel: a [`Pacer`] that
//! spreads packets at a rate (no 100 KB bursts into a Wi-Fi queue), and a [`RateControl`]
//! that sets that rate from the receiver's receipts: never above what they show delivered
//! (plus a probe), backing off when queueing delay grows and on loss that FEC cannot explain,
//! and growing again when the link is clean. A TCP flow sharing the link keeps its share.

use super::wire::Receipt;

/// Sends packets no faster than a rate, with a small burst allowance.
pub struct Pacer {}

impl Pacer {
    pub fn new(rate_bps: u64, burst_bytes: usize) -> Self {
        let _ = (rate_bps, burst_bytes);
        unimplemented!("cc::Pacer::new")
    }

    pub fn set_rate(&mut self, rate_bps: u64) {
        let _ = rate_bps;
        unimplemented!("cc::Pacer::set_rate")
    }

    /// How long (µs) to wait from `now_us` before a packet of `len` bytes may go (0: now).
    pub fn wait_us(&self, len: usize, now_us: u64) -> u64 {
        let _ = (len, now_us);
        unimplemented!("cc::Pacer::wait_us")
    }

    /// Counts a packet of `len` bytes sent at `now_us`.
    pub fn sent(&mut self, len: usize, now_us: u64) {
        let _ = (len, now_us);
        unimplemented!("cc::Pacer::sent")
    }
}

/// The sender's view of one viewer's link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkEstimate {
    /// The rate packets may be sent at now, bit/s.
    pub rate_bps: u64,
    /// What receipts show delivered, bit/s.
    pub delivered_bps: u64,
    pub rtt_us: Option<u64>,
    pub min_rtt_us: Option<u64>,
    /// Loss on arrival the receiver reports, 1/10000.
    pub loss_bp: u16,
}

/// Sets the sending rate from receipts (see the module docs).
pub struct RateControl {}

impl RateControl {
    pub fn new(start_bps: u64, min_bps: u64, max_bps: u64) -> Self {
        let _ = (start_bps, min_bps, max_bps);
        unimplemented!("cc::RateControl::new")
    }

    /// A media packet with extended sequence number `seq` and `len` bytes left at `now_us`.
    pub fn on_sent(&mut self, seq: u32, len: usize, now_us: u64) {
        let _ = (seq, len, now_us);
        unimplemented!("cc::RateControl::on_sent")
    }

    pub fn on_receipt(&mut self, r: &Receipt, now_us: u64) {
        let _ = (r, now_us);
        unimplemented!("cc::RateControl::on_receipt")
    }

    pub fn estimate(&self) -> LinkEstimate {
        unimplemented!("cc::RateControl::estimate")
    }
}
