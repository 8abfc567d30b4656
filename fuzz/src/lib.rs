//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the seed corpus generator
//! (`examples/gen_corpus.rs`): the input format of the `decode` target and the two ways of
//! decoding a stream that `decode` compares. The reader that hands a stream out in chosen
//! pieces, sample headers and pattern JPEGs are framecast's `testutil`.
//!
//! Nothing here is part of framecast itself; see `docs/malformed-inputs.md`.

use framecast::net::io::{Event, MessageReader, NetError};
use framecast::net::proto::{
    Decoder, Hello, Message, ProtocolError, Role, FRAME_HEADER_LEN, HELLO_LEN, MAGIC, MAX_REPORT_LEN, MSG_HEADER_LEN,
};
use framecast::testutil::{Script, READ_CHUNK};

/// Bytes before the stream in a `decode` input: the role byte and the split point.
pub const DECODE_PREFIX_LEN: usize = 3;

/// One input of the `decode` target:
///
/// | byte | meaning |
/// |------|---------|
/// | 0    | bit 0 clear: we are a receiver and expect a sender's hello; set: the other way round |
/// | 1–2  | big-endian split point, taken modulo `stream.len() + 1` |
/// | 3..  | the bytes the peer sent, starting with its hello |
#[derive(Clone, Copy, Debug)]
pub struct DecodeInput<'a> {
    /// The role the peer's hello must announce.
    pub expect: Role,
    /// Where the stream is cut into two reads.
    pub split: usize,
    pub stream: &'a [u8],
}

impl<'a> DecodeInput<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.len() < DECODE_PREFIX_LEN {
            return None;
        }
        let expect = if data[0] & 1 == 0 { Role::Sender } else { Role::Receiver };
        let stream = &data[DECODE_PREFIX_LEN..];
        let split = usize::from(u16::from_be_bytes([data[1], data[2]])) % (stream.len() + 1);
        Some(DecodeInput { expect, split, stream })
    }

    /// The inverse of [`DecodeInput::parse`], for the corpus generator.
    pub fn encode(expect: Role, split: u16, stream: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::from(expect == Role::Receiver)];
        v.extend_from_slice(&split.to_be_bytes());
        v.extend_from_slice(stream);
        v
    }
}

/// How a stream ended, in a form that does not depend on how it was split into reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed between two messages.
    Eof,
    /// The peer closed inside its hello.
    ClosedInHandshake { have: usize },
    /// The peer closed inside a message.
    Truncated { offset: u64, have: usize, need: String },
    /// Malformed input. `BadMagic::got` is cut after the first wrong byte: how many bytes
    /// past it were buffered depends on the reads.
    Protocol(ProtocolError),
}

/// What a stream decoded to: each message re-encoded (the hello first), and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub messages: Vec<Vec<u8>>,
    pub end: End,
}

/// `BadMagic::got` holds every byte buffered when the magic was judged; keep the bytes up
/// to and including the first wrong one, after checking that they are the stream's own.
pub fn normalize(e: ProtocolError, stream: &[u8]) -> ProtocolError {
    match e {
        ProtocolError::BadMagic { offset, got } => {
            assert_eq!(offset, 0);
            assert!(stream.starts_with(&got), "bad magic shows bytes {got:02x?} that were not sent");
            let wrong = got.iter().zip(MAGIC).position(|(g, m)| *g != m).expect("bad magic without a wrong byte");
            ProtocolError::BadMagic { offset, got: got[..=wrong].to_vec() }
        }
        other => other,
    }
}

fn encoded(m: &Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// Decodes `stream` with the pure parser, all bytes at once, checking on the way that every
/// message re-encodes to exactly the bytes it came from and that every error points inside
/// the bytes it was judged from.
pub fn decode_whole(stream: &[u8], expect: Role) -> Run {
    let mut messages = Vec::new();
    match Hello::decode(stream, expect) {
        Ok(Some(h)) => {
            let mut b = Vec::new();
            h.encode(&mut b);
            assert_eq!(b, stream[..HELLO_LEN], "hello does not round-trip");
            assert_eq!(h.role, expect);
            messages.push(b);
        }
        Ok(None) => {
            assert!(stream.len() < HELLO_LEN);
            return Run { messages, end: End::ClosedInHandshake { have: stream.len() } };
        }
        Err(e) => return Run { messages, end: End::Protocol(normalize(e, stream)) },
    }
    let mut d = Decoder::new(HELLO_LEN as u64);
    let mut rest = &stream[HELLO_LEN..];
    loop {
        let before = d.offset;
        match d.decode(rest) {
            Ok(Some((m, used))) => {
                assert!(used >= MSG_HEADER_LEN && used <= rest.len());
                assert_eq!(d.offset, before + used as u64);
                let b = encoded(&m);
                assert_eq!(b, rest[..used], "{m:?} does not round-trip");
                if let Message::StreamInfo(s) = m {
                    assert_eq!(d.stream(), Some(s));
                }
                messages.push(b);
                rest = &rest[used..];
            }
            Ok(None) => {
                assert_eq!(d.offset, before);
                if rest.is_empty() {
                    return Run { messages, end: End::Eof };
                }
                // What `MessageReader` reports: the total the header declares, if it is complete.
                let need = if rest.len() < MSG_HEADER_LEN {
                    MSG_HEADER_LEN
                } else {
                    MSG_HEADER_LEN + u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize
                };
                let need = if need > rest.len() { need.to_string() } else { "more".into() };
                return Run { messages, end: End::Truncated { offset: d.offset, have: rest.len(), need } };
            }
            Err(e) => {
                assert_eq!(d.offset, before, "a failed decode must not advance");
                let at = e.offset().expect("message errors carry an offset");
                assert!(at >= before && at < before + rest.len() as u64, "{e:?} points outside the input");
                return Run { messages, end: End::Protocol(e) };
            }
        }
    }
}

/// The largest message the reader may be asked to buffer once `frame_cap` (message header
/// included) is the largest frame any stream so far allowed.
fn message_cap(frame_cap: usize) -> usize {
    frame_cap.max(MSG_HEADER_LEN + MAX_REPORT_LEN)
}

/// Decodes a stream through [`MessageReader`], as a connection does, checking after every
/// event that the reader's buffer stays within what has arrived and what the protocol allows:
/// at most twice the bytes handed out so far (or one 64 KiB chunk), and at most twice the
/// largest message the current limits allow.
pub fn decode_via_reader(script: Script, expect: Role) -> Run {
    let stream = script.data().to_vec();
    let stream = &stream[..];
    let budget = stream.len() / MSG_HEADER_LEN + 2;
    let mut r = MessageReader::new(script);
    let mut messages = Vec::new();
    let check_capacity = |r: &MessageReader<Script>, frame_cap: usize| {
        let cap = r.buffer_capacity();
        let received = r.get_ref().handed_out();
        assert!(cap <= READ_CHUNK.max(2 * received), "buffer of {cap} bytes after {received} bytes arrived");
        assert!(cap <= READ_CHUNK.max(2 * message_cap(frame_cap)), "buffer of {cap} bytes, cap {frame_cap}");
    };
    let protocol = |e: NetError| match e {
        NetError::Protocol { error, context } => {
            let tokens = context.split_whitespace().filter(|t| *t != "...").count();
            assert!(tokens <= 32, "hex context of {tokens} bytes: {context}");
            End::Protocol(normalize(error, stream))
        }
        NetError::Truncated { offset, have, need } => End::Truncated { offset, have, need },
        NetError::ClosedInHandshake { have } => End::ClosedInHandshake { have },
        other => panic!("unexpected error from an in-memory stream: {other:?}"),
    };
    match r.read_hello(expect, std::time::Duration::from_secs(1)) {
        Ok(h) => {
            let mut b = Vec::new();
            h.encode(&mut b);
            messages.push(b);
        }
        Err(e) => {
            check_capacity(&r, 0);
            return Run { messages, end: protocol(e) };
        }
    }
    let mut frame_cap = 0usize;
    for _ in 0..budget {
        let event = r.next_event();
        let end = match event {
            Ok(Event::Message(m)) => {
                messages.push(encoded(&m));
                None
            }
            Ok(Event::Eof) => Some(End::Eof),
            Ok(Event::Idle) => panic!("idle from a reader that never times out"),
            Err(e) => Some(protocol(e)),
        };
        if let Some(s) = r.stream() {
            frame_cap = frame_cap.max(MSG_HEADER_LEN + FRAME_HEADER_LEN + s.max_jpeg_len() as usize);
        }
        check_capacity(&r, frame_cap);
        if let Some(end) = end {
            return Run { messages, end };
        }
    }
    panic!("no end after {budget} events from {} bytes", stream.len());
}

/// The input format of the `udp_datagram` target: a sequence of records, each an op byte
/// (taken modulo [`udp::OPS`]), a 2-byte big-endian length and that many bytes (cut at the
/// end of the input).
pub mod udp {
    /// The bytes as a datagram that arrived (both roles), and as an Inner.
    pub const RAW: u8 = 0;
    /// Seal the bytes (as an Inner) with the session's key, under the next nonce; the
    /// datagram is kept for [`DELIVER`].
    pub const SEAL: u8 = 1;
    /// Open kept datagram number `b[0]` (modulo how many), with byte `b[1..3]` (modulo its
    /// length) xored with `b[3]` (0: unaltered).
    pub const DELIVER: u8 = 2;
    /// Skip `b[0..2]` × 16 nonces, as if that many datagrams were lost.
    pub const SKIP: u8 = 3;
    /// The bytes as handshake message 1, to the responder of the session's hellos.
    pub const MSG1: u8 = 4;
    /// The bytes as handshake message 2, to a new initiator.
    pub const MSG2: u8 = 5;
    pub const OPS: u8 = 6;

    /// One record.
    pub fn record(op: u8, bytes: &[u8]) -> Vec<u8> {
        let len = bytes.len().min(usize::from(u16::MAX));
        let mut r = vec![op];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend_from_slice(&bytes[..len]);
        r
    }

    /// The records of an input, in order.
    pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            if data.len() < 3 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
            let r = (data[0] % OPS, &data[3..3 + len]);
            data = &data[3 + len..];
            Some(r)
        })
    }
}
