//! Arbitrary bytes as the JPEG of a 64x48 frame, through `codec::Decoder::decode` as the
//! receiver's decode thread calls it.
//!
//! Checks, besides "never panics": success fills exactly 64x48 pixels; a JPEG that says
//! another size (however large) is `SizeMismatch`, judged from its header before the output
//! buffer is touched; and the same decoder still decodes a good frame afterwards, as the
//! decode thread reuses one decoder for the whole connection. Run with
//! `-malloc_limit_mb=64` so that any large allocation (by us or by libjpeg-turbo) is a crash.
//!
//! Coverage: libjpeg-turbo is C built by cmake, and only instrumented for coverage when
//! built with `CFLAGS=-fsanitize=fuzzer-no-link` (see docs/malformed-inputs.md).

#![no_main]

use std::sync::OnceLock;

use framecast::codec::{CodecError, Decoder};
use framecast::format::Subsampling;
use framecast::testutil::pattern_jpeg;
use libfuzzer_sys::fuzz_target;

const W: usize = 64;
const H: usize = 48;

/// A good 64x48 JPEG of the test pattern.
fn good() -> &'static [u8] {
    static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
    GOOD.get_or_init(|| pattern_jpeg(W as u32, H as u32, Subsampling::S420, 75, 1).expect("encode the test pattern"))
}

fuzz_target!(|data: &[u8]| {
    let good = good();
    let mut dec = Decoder::new().expect("a turbojpeg handle");
    let mut out = Vec::new();
    match dec.decode(data, W, H, &mut out) {
        Ok(()) => assert_eq!(out.len(), W * H),
        Err(CodecError::SizeMismatch { got_w, got_h, want_w, want_h }) => {
            assert!((got_w, got_h) != (W, H) && (want_w, want_h) == (W, H));
            assert_eq!(out.capacity(), 0, "a JPEG of the wrong size must be rejected before any output");
        }
        Err(CodecError::Turbo(_)) => {}
        Err(e) => panic!("decoding cannot give {e:?}"),
    }
    // The handle survives whatever came before. Set FRAMECAST_FUZZ_JPEG_NO_REUSE to skip this
    // while the known bug (docs/malformed-inputs.md, "Findings") is open, to look for others.
    if std::env::var_os("FRAMECAST_FUZZ_JPEG_NO_REUSE").is_none() {
        dec.decode(good, W, H, &mut out).expect("a good frame after a bad one");
        assert_eq!(out.len(), W * H);
    }
});
