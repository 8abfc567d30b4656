//! A receiver's (or a sender's) incoming stream: the peer's hello, then messages.
//!
//! Input: a role byte, a split point and the stream (see `framecast_fuzz::DecodeInput`).
//! The stream is decoded four ways, which must agree message for message and end the same
//! way (clean EOF, truncation, or the same protocol error):
//!
//! 1. the pure parser (`Hello::decode`, `Decoder::decode`) over all the bytes at once, which
//!    also checks that every message re-encodes to the bytes it came from and that every
//!    error points inside the input;
//! 2. `MessageReader` over one read of everything;
//! 3. `MessageReader` over two reads, cut at the fuzzer's split point (retina's two-feed check);
//! 4. `MessageReader` over one byte per read (inputs up to 8 KiB, all of the corpus).
//!
//! Through the reader, the buffer never holds more than twice the bytes that have arrived
//! (or one 64 KiB chunk) nor more than twice the largest message the protocol allows, so a
//! declared length is never allocated ahead of its bytes. Nothing panics.

#![no_main]

use framecast::testutil::Script;
use framecast_fuzz::{decode_via_reader, decode_whole, DecodeInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = DecodeInput::parse(data) else {
        return;
    };
    let stream = input.stream;
    let pure = decode_whole(stream, input.expect);
    let one = decode_via_reader(Script::whole(stream), input.expect);
    assert_eq!(pure, one, "one read differs from the pure parser");
    let two = decode_via_reader(Script::split(stream, &[input.split]), input.expect);
    assert_eq!(one, two, "split at {} differs from one read", input.split);
    if stream.len() <= 8192 {
        let bytewise = decode_via_reader(Script::bytewise(stream), input.expect);
        assert_eq!(one, bytewise, "one byte per read differs from one read");
    }
});
