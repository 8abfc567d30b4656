//! Forward error correction for the UDP transport: Reed-Solomon parity (the
//! `reed-solomon-erasure` crate, GF(2^8)) over one group of a frame's packets. Packets differ
//! in length: each data shard is the packet with a 2-byte length before it, zero-padded to the
//! group's longest; parity shards are that long. Any `data` of the `data + parity` shards of a
//! group rebuild the rest.

/// The most data packets in one group (a larger frame is cut into groups of at most this many).
pub const MAX_GROUP_DATA: usize = 64;
/// The most parity packets for one group.
pub const MAX_GROUP_PARITY: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    #[error("{data} data and {parity} parity shards: expected 1..={max_data} data and 0..={max_parity} parity", max_data = MAX_GROUP_DATA, max_parity = MAX_GROUP_PARITY)]
    Shape { data: usize, parity: usize },
    #[error("{have} of the {need} shards needed to rebuild the group arrived")]
    TooFew { have: usize, need: usize },
    #[error("a rebuilt shard says {got} bytes, but shards are {max} bytes (2 of them the length)")]
    BadLength { got: usize, max: usize },
    #[error("shard {index} is {got} bytes, expected {expected} like the others")]
    ShardSize { index: usize, got: usize, expected: usize },
}

/// The parity shards for one group of packets (each at most `u16::MAX` bytes).
pub fn encode(packets: &[&[u8]], parity: usize) -> Result<Vec<Vec<u8>>, FecError> {
    let _ = (packets, parity);
    unimplemented!("fec::encode")
}

/// Rebuilds the missing data packets of a group in place. `shards` holds the group's `data`
/// data packets (as packets, not shards: `None` where missing) and then its parity shards
/// (`None` where missing). Returns how many data packets it rebuilt.
pub fn recover(data: &mut [Option<Vec<u8>>], parity: &[Option<Vec<u8>>]) -> Result<usize, FecError> {
    let _ = (data, parity);
    unimplemented!("fec::recover")
}

/// Parity packets for a group of `data` packets when the receiver reports `loss_bp` (1/10000)
/// of packets lost before recovery: none on a clean link, then enough to ride out bursts, up to
/// about a third of the group (and [`MAX_GROUP_PARITY`]).
pub fn parity_for(data: usize, loss_bp: u16) -> usize {
    let _ = (data, loss_bp);
    unimplemented!("fec::parity_for")
}
