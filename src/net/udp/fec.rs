//! Forward error correction for the UDP transport: Reed-Solomon parity (the
//! `reed-solomon-erasure` crate, GF(2^8)) over one group of a frame's packets. Packets differ
//! in length: each data shard is the packet with a 2-byte length before it, zero-padded to the
//! group's longest; parity shards are that long. Any `data` of the `data + parity` shards of a
//! group rebuild the rest.
//!
//! Pure code over bytes, run by the sender's and the receiver's network threads (through
//! [`super::media`]). A shard that arrives from the network is checked before use: shards of
//! different sizes, and a rebuilt length that passes its shard (a corrupt parity shard), are
//! errors, never a panic; nothing is allocated beyond the shards that arrived.

use std::cell::RefCell;
use std::rc::Rc;

use reed_solomon_erasure::galois_8::ReedSolomon;

/// The most data packets in one group (a larger frame is cut into groups of at most this many).
pub const MAX_GROUP_DATA: usize = 64;
/// The most parity packets for one group.
pub const MAX_GROUP_PARITY: usize = 32;
/// Bytes of the length before each packet in its data shard.
pub const LEN_BYTES: usize = 2;

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
    /// A data packet too long for a 2-byte length, or a parity shard too short to hold one.
    #[error("shard {index} is {got} bytes, expected {LEN_BYTES}..={max} (a 2-byte length and a packet)", max = usize::from(u16::MAX) + LEN_BYTES)]
    Length { index: usize, got: usize },
}

/// The codecs made so far on this thread, by shape: building one inverts a matrix, which
/// costs more than encoding a small group. Few shapes occur (a frame's group sizes and the
/// parity the loss asks for), and the cache is emptied when it holds [`CODEC_CACHE`].
const CODEC_CACHE: usize = 32;

/// A codec and its shape (data, parity).
type Codec = ((usize, usize), Rc<ReedSolomon>);

thread_local! {
    static CODECS: RefCell<Vec<Codec>> = const { RefCell::new(Vec::new()) };
}

/// The codec for `data` data and `parity` (≥ 1) parity shards, shape checked by the caller.
fn codec(data: usize, parity: usize) -> Rc<ReedSolomon> {
    CODECS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, rs)) = c.iter().find(|(shape, _)| *shape == (data, parity)) {
            return rs.clone();
        }
        if c.len() >= CODEC_CACHE {
            c.clear();
        }
        let rs = Rc::new(ReedSolomon::new(data, parity).expect("shape checked: 1..=64 data, 1..=32 parity"));
        c.push(((data, parity), rs.clone()));
        rs
    })
}

fn check_shape(data: usize, parity: usize) -> Result<(), FecError> {
    if data == 0 || data > MAX_GROUP_DATA || parity > MAX_GROUP_PARITY {
        return Err(FecError::Shape { data, parity });
    }
    Ok(())
}

/// `packet` as a data shard of `len` bytes: its length, the packet, zeros.
fn shard(packet: &[u8], len: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    s.extend_from_slice(packet);
    s.resize(len, 0);
    s
}

/// The parity shards for one group of packets (each at most `u16::MAX` bytes).
pub fn encode(packets: &[&[u8]], parity: usize) -> Result<Vec<Vec<u8>>, FecError> {
    check_shape(packets.len(), parity)?;
    if let Some((index, p)) = packets.iter().enumerate().find(|(_, p)| p.len() > usize::from(u16::MAX)) {
        return Err(FecError::Length { index, got: p.len() });
    }
    if parity == 0 {
        return Ok(Vec::new());
    }
    let len = LEN_BYTES + packets.iter().map(|p| p.len()).max().unwrap_or(0);
    let data: Vec<Vec<u8>> = packets.iter().map(|p| shard(p, len)).collect();
    let mut out = vec![vec![0u8; len]; parity];
    codec(packets.len(), parity).encode_sep(&data, &mut out).expect("shards of one size, counts as the codec's");
    Ok(out)
}

/// Rebuilds the missing data packets of a group in place. `shards` holds the group's `data`
/// data packets (as packets, not shards: `None` where missing) and then its parity shards
/// (`None` where missing). Returns how many data packets it rebuilt.
pub fn recover(data: &mut [Option<Vec<u8>>], parity: &[Option<Vec<u8>>]) -> Result<usize, FecError> {
    check_shape(data.len(), parity.len())?;
    let missing = data.iter().filter(|d| d.is_none()).count();
    if missing == 0 {
        return Ok(0);
    }
    let have = data.len() - missing + parity.iter().flatten().count();
    if have < data.len() {
        return Err(FecError::TooFew { have, need: data.len() });
    }
    let len = shard_len(data, parity)?;
    let mut shards: Vec<Option<Vec<u8>>> =
        data.iter().map(|d| d.as_deref().map(|p| shard(p, len))).chain(parity.iter().cloned()).collect();
    codec(data.len(), parity.len()).reconstruct_data(&mut shards).expect("sizes and counts checked above");
    let mut rebuilt = Vec::with_capacity(missing);
    for (i, s) in shards.into_iter().enumerate().take(data.len()) {
        if data[i].is_none() {
            let s = s.expect("reconstruct_data fills every data shard");
            let n = usize::from(u16::from_be_bytes([s[0], s[1]]));
            if n > len - LEN_BYTES {
                return Err(FecError::BadLength { got: n, max: len });
            }
            rebuilt.push((i, s[LEN_BYTES..LEN_BYTES + n].to_vec()));
        }
    }
    for (i, p) in rebuilt {
        data[i] = Some(p);
    }
    Ok(missing)
}

/// The group's shard length, from its parity shards (which must agree, and hold at least the
/// length) and its data packets (which must fit).
fn shard_len(data: &[Option<Vec<u8>>], parity: &[Option<Vec<u8>>]) -> Result<usize, FecError> {
    let mut present = parity.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (data.len() + i, p.len())));
    let (first, len) = present.next().expect("a data packet is missing, so some parity shard is here");
    if !(LEN_BYTES..=usize::from(u16::MAX) + LEN_BYTES).contains(&len) {
        return Err(FecError::Length { index: first, got: len });
    }
    if let Some((index, got)) = present.find(|&(_, got)| got != len) {
        return Err(FecError::ShardSize { index, got, expected: len });
    }
    let long =
        data.iter().enumerate().find_map(|(i, d)| d.as_ref().filter(|d| d.len() + LEN_BYTES > len).map(|d| (i, d)));
    if let Some((index, d)) = long {
        return Err(FecError::ShardSize { index, got: d.len() + LEN_BYTES, expected: len });
    }
    Ok(len)
}

/// Parity packets for a group of `data` packets when the receiver reports `loss_bp` (1/10000)
/// of packets lost before recovery: none on a clean link, then enough to ride out bursts, up to
/// about a third of the group (and [`MAX_GROUP_PARITY`]).
///
/// `ceil(data × min(2 × loss, 1/3)) + 1`: twice the loss covers a group that loses more than
/// the average, the one more covers a single loss in a small group (where twice the loss rounds
/// to nothing), and a third is where retransmission does better than parity. The rarer groups
/// that lose more are NACKed: the parity is paid on every frame, a retransmission only for
/// those (three times the loss left 1280x720 at 13.3 fps under 5 % random loss, twice 19.3,
/// back to back). The cap is `ceil(data / 3)`, so a group of one to three packets gets one.
pub fn parity_for(data: usize, loss_bp: u16) -> usize {
    if data == 0 || loss_bp == 0 {
        return 0;
    }
    let data = data.min(MAX_GROUP_DATA);
    let share = (2 * u64::from(loss_bp)).min(10_000 / 3);
    let want = (data as u64 * share).div_ceil(10_000) as usize + 1;
    want.min(data.div_ceil(3)).min(MAX_GROUP_PARITY)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Packets of different lengths (some empty), with contents that differ.
    fn group(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (0..(i * 37 % 101)).map(|b| (b * 7 + i * 13) as u8).collect()).collect()
    }

    fn refs(g: &[Vec<u8>]) -> Vec<&[u8]> {
        g.iter().map(|p| p.as_slice()).collect()
    }

    /// The group with the packets and parity shards whose bits are set in `lost` removed.
    type Shards = Vec<Option<Vec<u8>>>;

    fn lose(g: &[Vec<u8>], parity: &[Vec<u8>], lost: u128) -> (Shards, Shards) {
        let keep = |i: usize, p: &Vec<u8>| (lost & (1 << i) == 0).then(|| p.clone());
        let data = g.iter().enumerate().map(|(i, p)| keep(i, p)).collect();
        let par = parity.iter().enumerate().map(|(i, p)| keep(g.len() + i, p)).collect();
        (data, par)
    }

    #[test]
    fn every_pattern_of_up_to_parity_losses_rebuilds_exactly() {
        for (n, p) in [(1, 1), (3, 1), (5, 2), (6, 3), (8, 3)] {
            let g = group(n);
            let parity = encode(&refs(&g), p).unwrap();
            assert_eq!(parity.len(), p);
            let longest = g.iter().map(Vec::len).max().unwrap();
            assert!(parity.iter().all(|s| s.len() == longest + LEN_BYTES));
            for lost in 0u128..1 << (n + p) {
                let k = lost.count_ones() as usize;
                let (mut data, par) = lose(&g, &parity, lost);
                let data_lost = data.iter().filter(|d| d.is_none()).count();
                let r = recover(&mut data, &par);
                if k <= p {
                    assert_eq!(r, Ok(data_lost), "{n}+{p}, lost {lost:b}");
                    let back: Vec<Vec<u8>> = data.into_iter().map(Option::unwrap).collect();
                    assert_eq!(back, g, "{n}+{p}, lost {lost:b}");
                } else if data_lost > 0 {
                    assert_eq!(r, Err(FecError::TooFew { have: n + p - k, need: n }), "{n}+{p}, lost {lost:b}");
                    assert_eq!(data.iter().filter(|d| d.is_none()).count(), data_lost, "untouched on error");
                }
            }
        }
    }

    #[test]
    fn a_full_group_of_full_packets() {
        let g: Vec<Vec<u8>> = (0..MAX_GROUP_DATA).map(|i| vec![i as u8; 1400 - i]).collect();
        let parity = encode(&refs(&g), MAX_GROUP_PARITY).unwrap();
        let lost = (0..32).fold(0u128, |m, i| m | 1 << (i * 2)); // every other data packet
        let (mut data, par) = lose(&g, &parity, lost);
        assert_eq!(recover(&mut data, &par), Ok(32));
        assert!(data.into_iter().map(Option::unwrap).eq(g));
    }

    #[test]
    fn bad_shapes_and_sizes_are_errors() {
        assert_eq!(encode(&[], 1), Err(FecError::Shape { data: 0, parity: 1 }));
        assert_eq!(encode(&refs(&group(65)), 1), Err(FecError::Shape { data: 65, parity: 1 }));
        assert_eq!(encode(&refs(&group(2)), 33), Err(FecError::Shape { data: 2, parity: 33 }));
        assert_eq!(encode(&refs(&group(2)), 0), Ok(vec![]));
        let big = vec![0u8; 65536];
        assert_eq!(encode(&[&[1], &big], 1), Err(FecError::Length { index: 1, got: 65536 }));
        assert_eq!(recover(&mut [], &[]), Err(FecError::Shape { data: 0, parity: 0 }));
        assert_eq!(recover(&mut vec![None; 65], &[]), Err(FecError::Shape { data: 65, parity: 0 }));

        let g = group(4);
        let parity = encode(&refs(&g), 2).unwrap();
        let len = parity[0].len();
        // Parity shards of different sizes.
        let (mut data, mut par) = lose(&g, &parity, 0b1);
        par[1].as_mut().unwrap().push(0);
        assert_eq!(recover(&mut data, &par), Err(FecError::ShardSize { index: 5, got: len + 1, expected: len }));
        // A data packet longer than the shards.
        let (mut data, par) = lose(&g, &parity, 0b1);
        data[2].as_mut().unwrap().resize(len, 9);
        assert_eq!(recover(&mut data, &par), Err(FecError::ShardSize { index: 2, got: len + 2, expected: len }));
        // A parity shard too short to hold a length.
        let (mut data, _) = lose(&g, &parity, 0b1);
        assert_eq!(recover(&mut data, &[Some(vec![7]), None]), Err(FecError::Length { index: 4, got: 1 }));
        // Nothing missing: nothing to do, whatever the parity.
        let (mut data, _) = lose(&g, &parity, 0);
        assert_eq!(recover(&mut data, &[None, Some(vec![])]), Ok(0));
    }

    #[test]
    fn a_corrupt_parity_shard_that_lies_about_the_length_is_an_error() {
        let g = group(3);
        let parity = encode(&refs(&g), 1).unwrap();
        let len = parity[0].len();
        // Flip the length bytes: the rebuilt packet's length comes out wrong.
        for flip in [[0xFF, 0xFF], [0x01, 0x00], [0x00, 0x80]] {
            let (mut data, mut par) = lose(&g, &parity, 0b10);
            let s = par[0].as_mut().unwrap();
            s[0] ^= flip[0];
            s[1] ^= flip[1];
            match recover(&mut data, &par) {
                Err(FecError::BadLength { got, max }) => assert!(got > len - 2 && max == len),
                Ok(1) => assert_ne!(data[1].as_ref(), Some(&g[1])),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn parity_follows_the_loss() {
        assert_eq!(parity_for(10, 0), 0);
        assert_eq!(parity_for(0, 500), 0);
        assert_eq!(parity_for(1, 1), 1);
        assert_eq!(parity_for(10, 1), 2, "a trace of loss: one for it, one for a burst");
        assert_eq!(parity_for(10, 200), 2, "2 %: ceil(10 × 0.04) + 1");
        assert_eq!(parity_for(30, 200), 3, "2 %: ceil(30 × 0.04) + 1");
        assert_eq!(parity_for(30, 500), 4, "5 %: ceil(30 × 0.10) + 1");
        assert_eq!(parity_for(30, 2000), 10, "20 %: capped at a third");
        assert_eq!(parity_for(64, 10_000), 22);
        assert_eq!(parity_for(200, 10_000), 22, "groups are at most 64");
        assert_eq!(parity_for(2, 10_000), 1);
        for data in 1..=MAX_GROUP_DATA {
            let mut last = 0;
            for bp in (0..=10_000).step_by(50) {
                let p = parity_for(data, bp);
                assert!(p >= last && p <= data.div_ceil(3) && p <= MAX_GROUP_PARITY, "{data} {bp}");
                last = p;
            }
        }
    }

    /// Speed of the pure Rust GF(2^8) code on a full group of full packets (run with
    /// `--nocapture` to see it; no assertion on speed).
    #[test]
    fn speed_of_a_full_group() {
        let g: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 ^ 0x5A; 1400]).collect();
        for p in [4, 21] {
            let t = std::time::Instant::now();
            let parity = encode(&refs(&g), p).unwrap();
            let first = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..10 {
                encode(&refs(&g), p).unwrap();
            }
            let enc = t.elapsed() / 10;
            let lost = (1u128 << p) - 1;
            let (data, par) = lose(&g, &parity, lost);
            let t = std::time::Instant::now();
            for _ in 0..10 {
                assert_eq!(recover(&mut data.clone(), &par), Ok(p));
            }
            let rec = t.elapsed() / 10;
            println!("fec 64 x 1400 B + {p} parity: encode {enc:?} ({first:?} with the codec's setup), rebuild {p} lost {rec:?}");
        }
    }

    proptest! {
        #[test]
        fn any_shards_never_panic(
            lens in proptest::collection::vec(proptest::option::of(0usize..40), 1..8),
            parity in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)), 0..5),
        ) {
            let mut data: Vec<Option<Vec<u8>>> = lens.iter().map(|l| l.map(|l| vec![1u8; l])).collect();
            let _ = recover(&mut data, &parity);
        }
    }
}
