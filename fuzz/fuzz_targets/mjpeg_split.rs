//! Arbitrary bytes through `capture::mjpeg::MjpegReader`, the splitter of a pipe's (and an
//! HTTP part's) back-to-back JPEG images, with a small cap.
//!
//! The input is a byte giving the size of each read (1..=256), a byte giving the cap
//! (16 + 64 * b bytes), then the stream. Checks, besides "never panics": reading in pieces
//! gives the same images and the same error (kind and offset) as reading in large chunks;
//! the images are the stream's bytes in order, each from FF D8 to FF D9 and within the cap,
//! and a scan of each alone finds it complete; what follows the last image is nothing, or
//! what the error says. Run with `-malloc_limit_mb=64`: nothing may be allocated from a
//! length the input claims.

#![no_main]

use framecast::capture::mjpeg::{MjpegReader, ScanError, Scanner};
use framecast::testutil::Script;
use libfuzzer_sys::fuzz_target;

/// An error's kind and offset or length (its message quotes as many bytes as were buffered).
fn key(e: &ScanError) -> (u8, usize) {
    match e {
        ScanError::NotJpeg { .. } => (0, 0),
        ScanError::Malformed { offset, .. } => (1, *offset),
        ScanError::TooLong { max } => (2, *max),
        ScanError::Truncated { len } => (3, *len),
        ScanError::Io(_) => (4, 0),
    }
}

fn read_all(stream: &[u8], step: usize, cap: usize) -> (Vec<Vec<u8>>, Option<(u8, usize)>) {
    let mut r = MjpegReader::new(Script::whole(stream).max_read(step), &[], cap);
    let mut images = Vec::new();
    let mut out = Vec::new();
    loop {
        match r.read_image(&mut out) {
            Ok(true) => images.push(out.clone()),
            Ok(false) => return (images, None),
            Err(e) => return (images, Some(key(&e))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else { return };
    let step = 1 + usize::from(*a);
    let cap = 16 + 64 * usize::from(*b);
    let (images, end) = read_all(stream, usize::MAX, cap);
    assert_eq!((images.clone(), end), read_all(stream, step, cap), "pieces of {step} differ from whole reads");
    let mut at = 0;
    for img in &images {
        assert!(img.len() >= 4 && img.len() <= cap, "image of {} bytes, cap {cap}", img.len());
        assert!(img.starts_with(&[0xFF, 0xD8]) && img.ends_with(&[0xFF, 0xD9]));
        assert_eq!(&stream[at..at + img.len()], &img[..]);
        assert_eq!(Scanner::new(cap).scan(img), Ok(Some(img.len())));
        at += img.len();
    }
    match end {
        None => assert_eq!(at, stream.len()),
        Some((3, len)) => assert_eq!(at + len, stream.len()),
        Some(_) => assert!(at < stream.len()),
    }
});
