//! Arbitrary bytes through `codec::restart::split_shared`, the receiver's cutting of a JPEG
//! at its restart markers into pieces of given shares, and the parallel decoder that uses it.
//! The first byte gives the number of pieces (mod 17) and, above that, a pattern of unequal
//! shares (0: all equal, as `split` cuts); the JPEG follows.
//!
//! Checks, besides "never panics": the pieces of a split cover the image's rows in order,
//! each a whole number of restart intervals; every piece written out is a JPEG whose own
//! restart markers check out; and when a 64x48 JPEG decodes both serially and on three
//! threads, the pixels are equal. Run with `-malloc_limit_mb=64`: nothing may be allocated
//! from a size the input claims.

#![no_main]

use framecast::codec::restart::{self, Split};
use framecast::codec::Decoder;
use libfuzzer_sys::fuzz_target;

const W: usize = 64;
const H: usize = 48;

fuzz_target!(|data: &[u8]| {
    let Some((&k, jpeg)) = data.split_first() else { return };
    let pattern = usize::from(k / 17);
    let shares: Vec<f32> = (0..usize::from(k % 17)).map(|i| (1 + pattern * (i + 1) * 7 % 13) as f32).collect();
    if let Ok(Split::Pieces(p)) = restart::split_shared(jpeg, &shares) {
        let mut row = 0;
        let mut next = 0;
        let mut out = Vec::new();
        for (i, piece) in p.pieces.iter().enumerate() {
            assert_eq!((piece.first_row, piece.intervals.start), (row, next));
            assert!(piece.rows > 0 && !piece.intervals.is_empty());
            restart::write_piece(jpeg, &p, i, &mut out);
            let h = restart::parse_header(&out).expect("a piece's header parses");
            assert_eq!(usize::from(h.height), piece.rows);
            let ivs = restart::intervals(&out, &h).expect("a piece's markers check out");
            assert_eq!(ivs.len(), piece.intervals.len());
            row += piece.rows;
            next = piece.intervals.end;
        }
        assert_eq!((row, next), (usize::from(p.header.height), p.intervals.len()));
    }
    let (mut serial, mut parallel) = (Vec::new(), Vec::new());
    let one = Decoder::new().expect("a turbojpeg handle").decode(jpeg, W, H, &mut serial);
    let mut dec = Decoder::new().expect("a turbojpeg handle");
    dec.set_threads(3).expect("slice threads");
    if one.is_ok() && dec.decode(jpeg, W, H, &mut parallel).is_ok() {
        assert!(serial == parallel, "parallel and serial decodes differ");
    }
});
