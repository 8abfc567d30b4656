//! The HTTP source's multipart reader (`capture::http::multipart`) over arbitrary bytes, fed
//! in pieces whose sizes come from the input: never panics, every image it returns is within
//! the cap and starts with FF D8 and ends with FF D9, its buffer stays under its cap, and the
//! result does not depend on how the bytes were split.
#![no_main]

use framecast::capture::http::multipart::Multipart;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 << 10;

fn run(data: &[u8], step: usize) -> (Vec<(u64, usize)>, Option<String>) {
    let mut m = Multipart::new("b", MAX);
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        let res = m.feed(piece, |p| {
            assert!(p.image.len() <= MAX && p.image.starts_with(&[0xFF, 0xD8]) && p.image.ends_with(&[0xFF, 0xD9]));
            out.push((p.offset, p.image.len()));
        });
        if let Err(e) = res {
            return (out, Some(e.to_string()));
        }
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else { return };
    let (whole, whole_err) = run(data, data.len());
    let (pieces, pieces_err) = run(data, usize::from(step % 64) + 1);
    // The images up to an error are the same; the error's wording may differ (how many bytes
    // had been skipped when the cap was passed).
    assert_eq!(whole, pieces);
    assert_eq!(whole_err.is_some(), pieces_err.is_some(), "{whole_err:?} / {pieces_err:?}");
});
