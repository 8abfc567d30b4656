//! The UDP datagram format (see the module docs of [`super`] for the exchange, and
//! `docs/protocol.md` for the byte layout). Pure code over bytes: parsing never panics,
//! never allocates from a length a peer claims, and names what it expected and what arrived.
//! Called by whichever thread owns the socket (`sender::udp`, `receiver::udp`).
//!
//! Every datagram starts with a kind byte:
//!
//! ```text
//! 0x01 Hello      session u64, then the 24-byte framecast hello (magic, version, role, flags, clock id)
//! 0x02 Handshake  session u64, Noise message (≤ 96 bytes; none: "refused, the keys differ")
//! 0x03 Sealed     nonce u64, ChaCha20-Poly1305 ciphertext of an Inner, 16-byte tag
//! 0x04 Plain      an Inner, when there is no key
//! ```
//!
//! An [`Inner`] starts with its own kind byte:
//!
//! ```text
//! 0x10 Media    an RTP packet: RTP/JPEG (PT 26) or framecast FEC parity (PT 127), with extensions
//! 0x20 Message  one framecast message, in the TCP protocol's encoding (StreamInfo, Ack, Ping,
//!               Pong, SetQuality, QualityStep, Report; never Frame)
//! 0x21 Nack     u16 count, then count × (first RTP seq u16, run length u16)
//! 0x22 Receipt  the receiver's transport feedback (see [`Receipt`])
//! 0x30 Bye      the peer is leaving
//! ```
//!
//! Every length is exact: a datagram with bytes left over after what its kind carries is an
//! error, as is one over [`super::MAX_DATAGRAM`]. Error offsets count from the first byte of
//! what was parsed: the datagram for [`Datagram::parse`], the Inner's kind byte for
//! [`Inner::parse`] (byte 1 of a plain datagram; byte 0 of a sealed one's plaintext).

use crate::net::proto::{Decoder, Hello, Message, MsgType, ProtocolError, Role, HELLO_LEN};
use crate::net::secure::TAG_LEN;

use super::MAX_DATAGRAM;

/// Datagram kinds.
pub const HELLO: u8 = 0x01;
pub const HANDSHAKE: u8 = 0x02;
pub const SEALED: u8 = 0x03;
pub const PLAIN: u8 = 0x04;

/// Inner kinds.
pub const MEDIA: u8 = 0x10;
pub const MESSAGE: u8 = 0x20;
pub const NACK: u8 = 0x21;
pub const RECEIPT: u8 = 0x22;
pub const BYE: u8 = 0x30;

/// The most (seq, run) ranges one NACK carries.
pub const MAX_NACK_RANGES: usize = 256;
/// Bytes in a Hello datagram: kind, session, the framecast hello.
pub const HELLO_DATAGRAM_LEN: usize = 1 + 8 + HELLO_LEN;
/// The longest Noise handshake message a Handshake datagram carries (framecast's are 48).
pub const MAX_HANDSHAKE_MSG: usize = 96;
/// Bytes a sealed datagram adds around its Inner: kind, nonce, tag.
pub const SEALED_OVERHEAD: usize = 1 + 8 + TAG_LEN;
/// The longest encoded Inner that fits a datagram sealed or plain.
pub const MAX_INNER: usize = MAX_DATAGRAM - SEALED_OVERHEAD;
/// The longest RTP packet a Media inner carries, sealed or plain.
pub const MAX_RTP_PACKET: usize = MAX_INNER - 1;
/// Bytes in an RTP fixed header: the shortest Media packet.
pub const RTP_HEADER_LEN: usize = 12;
/// Bytes of a Receipt's body, after its kind byte.
pub const RECEIPT_LEN: usize = 42;
/// The largest `loss_bp` (100 %).
pub const MAX_LOSS_BP: u16 = 10_000;

/// What a datagram kind byte may be, for errors.
const DATAGRAM_KINDS: &str = "a datagram kind: 0x01 hello, 0x02 handshake, 0x03 sealed or 0x04 plain";
/// What an inner kind byte may be, for errors.
const INNER_KINDS: &str = "an inner kind: 0x10 media, 0x20 message, 0x21 nack, 0x22 receipt or 0x30 bye";

/// A parse error: what was expected, what arrived, at which byte of the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("kind {got:#04x} at byte {offset}, expected {expected}")]
    Kind { offset: usize, got: u8, expected: &'static str },
    #[error("{what}: {got} bytes at byte {offset}, expected {expected}")]
    Length { offset: usize, what: &'static str, got: usize, expected: String },
    #[error("bad hello: {0}")]
    Hello(String),
    #[error("bad message: {0}")]
    Message(String),
    /// A field whose value is out of range.
    #[error("{what} {got} at byte {offset}, expected {expected}")]
    Value { offset: usize, what: &'static str, got: u64, expected: String },
}

impl WireError {
    fn length(offset: usize, what: &'static str, got: usize, expected: impl Into<String>) -> Self {
        WireError::Length { offset, what, got, expected: expected.into() }
    }

    fn value(offset: usize, what: &'static str, got: impl Into<u64>, expected: impl Into<String>) -> Self {
        WireError::Value { offset, what, got: got.into(), expected: expected.into() }
    }
}

/// A datagram as it arrives: the outer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A peer's hello; `session` is random per process run and connection attempt, so a
    /// restarted peer is told from a late datagram of its previous run.
    Hello {
        session: u64,
        hello: Hello,
    },
    /// A Noise handshake message; an empty one is the responder's refusal (message 1 did not
    /// authenticate: the keys differ), as on TCP.
    Handshake {
        session: u64,
        msg: &'a [u8],
    },
    /// `body` is ciphertext and tag.
    Sealed {
        nonce: u64,
        body: &'a [u8],
    },
    Plain(&'a [u8]),
}

/// What a (plain or opened) datagram carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inner<'a> {
    /// A whole RTP packet.
    Media(&'a [u8]),
    Message(Message<'a>),
    /// Missing RTP packets: (first sequence number, count) runs.
    Nack(Vec<(u16, u16)>),
    Receipt(Receipt),
    Bye,
}

/// The receiver's transport feedback, sent every few tens of milliseconds while media flows.
/// Counters are cumulative since the session began (a lost receipt loses nothing); the
/// sender differences two receipts.
///
/// On the wire ([`RECEIPT_LEN`] bytes after the kind byte): `highest_seq` u32,
/// `highest_age_us` u32, `packets`, `bytes`, `lost`, `recovered` u64 each, `loss_bp` u16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Highest RTP sequence number received, extended to 32 bits with the wrap count.
    pub highest_seq: u32,
    /// How long ago (µs, receiver's clock) the packet `highest_seq` arrived when this receipt
    /// left: the sender's RTT sample is now − send time of that packet − this.
    pub highest_age_us: u32,
    /// Media packets received (data and parity, retransmissions included).
    pub packets: u64,
    /// Media bytes received (whole RTP packets).
    pub bytes: u64,
    /// Data packets that never arrived and were not recovered (given up on).
    pub lost: u64,
    /// Data packets recovered by FEC.
    pub recovered: u64,
    /// Loss the receiver measures on arrival before recovery, in 1/10000 (for FEC sizing).
    pub loss_bp: u16,
}

/// A random session id for a new connection attempt (see [`Datagram::Hello`]).
pub fn new_session() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No generator: the clock still tells one run from the next.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_be_bytes(b)
}

/// The first byte of a datagram, parsed: [`Datagram::parse`].
impl<'a> Datagram<'a> {
    /// Parses the outer layer of a datagram as it arrived from the socket. `expected_role` is
    /// the peer's role, which its hello must carry. A Sealed or Plain body is not looked into
    /// here: open it ([`super::seal::Open`]) and parse it with [`Inner::parse`].
    pub fn parse(d: &'a [u8], expected_role: Role) -> Result<Datagram<'a>, WireError> {
        let Some(&kind) = d.first() else {
            return Err(WireError::Empty);
        };
        if d.len() > MAX_DATAGRAM {
            return Err(WireError::length(0, "datagram", d.len(), format!("at most {MAX_DATAGRAM}")));
        }
        match kind {
            HELLO => parse_hello(d, expected_role),
            HANDSHAKE => {
                let session = u64_field(d, "handshake datagram", "9 or more (kind, session, Noise message)")?;
                let msg = &d[9..];
                if msg.len() > MAX_HANDSHAKE_MSG {
                    let want = format!("at most {MAX_HANDSHAKE_MSG}");
                    return Err(WireError::length(9, "noise handshake message", msg.len(), want));
                }
                Ok(Datagram::Handshake { session, msg })
            }
            SEALED => {
                let want = format!("at least {} (kind, nonce, one byte of ciphertext, tag)", SEALED_OVERHEAD + 1);
                if d.len() <= SEALED_OVERHEAD {
                    return Err(WireError::length(0, "sealed datagram", d.len(), want));
                }
                Ok(Datagram::Sealed { nonce: u64_field(d, "sealed datagram", want)?, body: &d[9..] })
            }
            PLAIN if d.len() == 1 => Err(WireError::length(1, "plain datagram's inner", 0, "at least 1")),
            PLAIN => Ok(Datagram::Plain(&d[1..])),
            got => Err(WireError::Kind { offset: 0, got, expected: DATAGRAM_KINDS }),
        }
    }

    /// Appends the datagram (the whole outer layer) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Datagram::Hello { session, hello } => {
                out.push(HELLO);
                out.extend_from_slice(&session.to_be_bytes());
                hello.encode(out);
            }
            Datagram::Handshake { session, msg } => {
                out.push(HANDSHAKE);
                out.extend_from_slice(&session.to_be_bytes());
                out.extend_from_slice(msg);
            }
            Datagram::Sealed { nonce, body } => {
                out.push(SEALED);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(body);
            }
            Datagram::Plain(inner) => {
                out.push(PLAIN);
                out.extend_from_slice(inner);
            }
        }
    }
}

/// The big-endian u64 at bytes 1..9 of `d` (a session id or a nonce).
fn u64_field(d: &[u8], what: &'static str, expected: impl Into<String>) -> Result<u64, WireError> {
    match d.get(1..9) {
        Some(b) => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        None => Err(WireError::length(0, what, d.len(), expected)),
    }
}

/// A Hello datagram: the framecast hello is checked first (magic byte by byte, then the
/// version), so that a peer of another version gets the TCP protocol's error whatever the
/// length of its hello; then the length is exact.
fn parse_hello(d: &[u8], expected_role: Role) -> Result<Datagram<'_>, WireError> {
    let expected_len = || format!("{HELLO_DATAGRAM_LEN} (kind, session, {HELLO_LEN}-byte hello)");
    let session = u64_field(d, "hello datagram", expected_len())?;
    let hello = match Hello::decode(&d[9..], expected_role) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(WireError::length(0, "hello datagram", d.len(), expected_len())),
        Err(e) => return Err(hello_error(&e)),
    };
    if d.len() != HELLO_DATAGRAM_LEN {
        return Err(WireError::length(0, "hello datagram", d.len(), expected_len()));
    }
    Ok(Datagram::Hello { session, hello })
}

/// The TCP protocol's hello error; its offsets count from the hello, which is byte 9 here.
fn hello_error(e: &ProtocolError) -> WireError {
    match e.offset() {
        Some(_) => WireError::Hello(format!("{e} (offsets from the hello, at byte 9 of the datagram)")),
        None => WireError::Hello(e.to_string()),
    }
}

impl<'a> Inner<'a> {
    /// Parses what a plain datagram carries, or a sealed one's plaintext. Offsets in errors
    /// count from the Inner's kind byte.
    pub fn parse(d: &'a [u8]) -> Result<Inner<'a>, WireError> {
        let Some(&kind) = d.first() else {
            return Err(WireError::Empty);
        };
        let body = &d[1..];
        match kind {
            MEDIA => parse_media(body).map(Inner::Media),
            MESSAGE => parse_message(body).map(Inner::Message),
            NACK => parse_nack(body).map(Inner::Nack),
            RECEIPT => Receipt::parse(body).map(Inner::Receipt),
            BYE if body.is_empty() => Ok(Inner::Bye),
            BYE => Err(WireError::length(1, "bye", body.len(), "0 after its kind byte")),
            got => Err(WireError::Kind { offset: 0, got, expected: INNER_KINDS }),
        }
    }

    /// Appends the inner kind byte and body to `out`. A NACK of more than
    /// [`MAX_NACK_RANGES`] ranges is cut to the first ones (the parser refuses more). A Frame
    /// message must not be passed: frames travel as RTP packets, and the parser refuses it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Inner::Media(rtp) => {
                out.push(MEDIA);
                out.extend_from_slice(rtp);
            }
            Inner::Message(m) => {
                debug_assert!(!matches!(m, Message::Frame(..)), "frames travel as RTP packets");
                out.push(MESSAGE);
                m.encode(out);
            }
            Inner::Nack(ranges) => {
                let ranges = &ranges[..ranges.len().min(MAX_NACK_RANGES)];
                out.push(NACK);
                out.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
                for (first, run) in ranges {
                    out.extend_from_slice(&first.to_be_bytes());
                    out.extend_from_slice(&run.to_be_bytes());
                }
            }
            Inner::Receipt(r) => {
                out.push(RECEIPT);
                r.encode(out);
            }
            Inner::Bye => out.push(BYE),
        }
    }

    /// Appends a whole Plain datagram carrying this Inner to `out` (no key).
    pub fn encode_plain(&self, out: &mut Vec<u8>) {
        out.push(PLAIN);
        self.encode(out);
    }

    /// The encoded Inner, to seal ([`super::seal::Seal::seal`]).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A Media inner's RTP packet: at least the fixed header, RTP version 2. The rest of it
/// (extensions, payload) is `media`'s to check.
fn parse_media(rtp: &[u8]) -> Result<&[u8], WireError> {
    if rtp.len() < RTP_HEADER_LEN {
        let want = format!("at least {RTP_HEADER_LEN} (the RTP fixed header)");
        return Err(WireError::length(1, "rtp packet", rtp.len(), want));
    }
    let version = rtp[0] >> 6;
    if version != 2 {
        return Err(WireError::value(1, "rtp version", version, "2 (first byte 0x80..=0xbf)"));
    }
    Ok(rtp)
}

/// A Message inner: exactly one message of the TCP protocol, through its decoder and caps
/// (a report ≤ `MAX_REPORT_LEN`, UTF-8), never a Frame.
fn parse_message(body: &[u8]) -> Result<Message<'_>, WireError> {
    const FRAME: u8 = MsgType::Frame as u8;
    if body.first() == Some(&FRAME) {
        return Err(WireError::value(1, "message type", FRAME, "any type but 2 (frames travel as RTP packets)"));
    }
    let mut dec = Decoder::new(1);
    match dec.decode(body) {
        Err(e) => Err(WireError::Message(e.to_string())),
        Ok(None) => {
            let need = dec.need(body).map_err(|e| WireError::Message(e.to_string()))?;
            Err(WireError::length(1, "message", body.len(), format!("{need} (as its header says)")))
        }
        Ok(Some((_, used))) if used != body.len() => {
            Err(WireError::length(1, "message", body.len(), format!("{used} (one message and nothing after it)")))
        }
        Ok(Some((m, _))) => Ok(m),
    }
}

/// A NACK inner's ranges: the count is checked against [`MAX_NACK_RANGES`] and the length
/// before anything is allocated; a run of 0 packets is an error.
fn parse_nack(body: &[u8]) -> Result<Vec<(u16, u16)>, WireError> {
    let Some(head) = body.get(..2) else {
        return Err(WireError::length(1, "nack", body.len(), "at least 2 (the range count)"));
    };
    let count = usize::from(u16::from_be_bytes([head[0], head[1]]));
    if count > MAX_NACK_RANGES {
        return Err(WireError::value(1, "nack range count", count as u64, format!("at most {MAX_NACK_RANGES}")));
    }
    let want = 2 + 4 * count;
    if body.len() != want {
        return Err(WireError::length(1, "nack", body.len(), format!("{want} for {count} ranges")));
    }
    let mut ranges = Vec::with_capacity(count);
    for (i, r) in body[2..].chunks_exact(4).enumerate() {
        let run = u16::from_be_bytes([r[2], r[3]]);
        if run == 0 {
            return Err(WireError::value(1 + 2 + 4 * i + 2, "nack run length", run, "1..=65535"));
        }
        ranges.push((u16::from_be_bytes([r[0], r[1]]), run));
    }
    Ok(ranges)
}

impl Receipt {
    /// Appends the receipt's [`RECEIPT_LEN`] bytes (no kind byte).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.highest_age_us.to_be_bytes());
        for v in [self.packets, self.bytes, self.lost, self.recovered] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.loss_bp.to_be_bytes());
    }

    /// Parses a receipt's body (after the kind byte, which is byte 0 for the offsets).
    pub fn parse(b: &[u8]) -> Result<Receipt, WireError> {
        if b.len() != RECEIPT_LEN {
            return Err(WireError::length(1, "receipt", b.len(), RECEIPT_LEN.to_string()));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let loss_bp = u16::from_be_bytes([b[40], b[41]]);
        if loss_bp > MAX_LOSS_BP {
            return Err(WireError::value(41, "receipt loss", loss_bp, format!("0..={MAX_LOSS_BP} (1/10000)")));
        }
        Ok(Receipt {
            highest_seq: u32_at(0),
            highest_age_us: u32_at(4),
            packets: u64_at(8),
            bytes: u64_at(16),
            lost: u64_at(24),
            recovered: u64_at(32),
            loss_bp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::proto::{Ack, Ping, Pong, StreamInfo, MAX_REPORT_LEN, VERSION};
    use proptest::prelude::*;

    fn hello(role: Role) -> Hello {
        Hello::new(role, [7; 16]).keyed(true)
    }

    fn rtp(len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 26, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4];
        p.extend((0..len.saturating_sub(RTP_HEADER_LEN)).map(|i| i as u8));
        p
    }

    fn receipt() -> Receipt {
        Receipt {
            highest_seq: 0x0001_fffe,
            highest_age_us: 1234,
            packets: 1 << 40,
            bytes: 99,
            lost: 3,
            recovered: 4,
            loss_bp: MAX_LOSS_BP,
        }
    }

    /// One of each message a datagram may carry.
    fn messages() -> Vec<Message<'static>> {
        vec![
            Message::StreamInfo(StreamInfo { width: 640, height: 480, fps_milli: 30_000 }),
            Message::Ack(Ack { seq: 1, received_us: 2, decoded_us: 3, displayed_us: 4 }),
            Message::Ping(Ping { id: 5, t1_us: 6 }),
            Message::Pong(Pong { id: 5, t1_us: 6, t2_us: 7, t3_us: 8 }),
            Message::SetQuality(60),
            Message::QualityStep(-3),
            Message::Report(br#"{"fps":29.9}"#),
        ]
    }

    /// One of each Inner (every message kind), encoded.
    fn inners() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = messages().into_iter().map(|m| Inner::Message(m).to_vec()).collect();
        v.push(Inner::Media(&rtp(300)).to_vec());
        v.push(Inner::Media(&rtp(RTP_HEADER_LEN)).to_vec());
        v.push(Inner::Nack(vec![(65535, 2), (7, 1)]).to_vec());
        v.push(Inner::Nack(vec![]).to_vec());
        v.push(Inner::Receipt(receipt()).to_vec());
        v.push(Inner::Bye.to_vec());
        v
    }

    fn datagram(d: Datagram<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        d.encode(&mut out);
        out
    }

    /// The whole parse of a datagram from the sender's point of view (the peer a receiver).
    fn parse_all(d: &[u8]) -> Result<String, WireError> {
        Ok(match Datagram::parse(d, Role::Receiver)? {
            Datagram::Plain(b) => format!("{:?}", Inner::parse(b)?),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn every_datagram_kind_round_trips() {
        let noise = [0x5a; 48];
        let sealed = [0xc3; 40];
        let cases = [
            Datagram::Hello { session: u64::MAX, hello: hello(Role::Receiver) },
            Datagram::Hello { session: 0, hello: Hello::new(Role::Receiver, [0; 16]) },
            Datagram::Handshake { session: 42, msg: &noise },
            Datagram::Handshake { session: 42, msg: &[] },
            Datagram::Handshake { session: 42, msg: &[1; MAX_HANDSHAKE_MSG] },
            Datagram::Sealed { nonce: 1 << 63, body: &sealed },
            Datagram::Plain(&[BYE]),
        ];
        for d in cases {
            let b = datagram(d);
            assert_eq!(Datagram::parse(&b, Role::Receiver), Ok(d));
        }
        let b = datagram(cases[0]);
        assert_eq!(b.len(), HELLO_DATAGRAM_LEN);
        assert_eq!(&b[..9], &[HELLO, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&b[9..13], b"FCST");
        assert_eq!(datagram(cases[5])[..9], [SEALED, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn every_inner_kind_round_trips_alone_and_in_a_plain_datagram() {
        for b in inners() {
            let inner = Inner::parse(&b).unwrap();
            assert_eq!(inner.to_vec(), b);
            let mut plain = Vec::new();
            inner.encode_plain(&mut plain);
            assert_eq!(Datagram::parse(&plain, Role::Sender), Ok(Datagram::Plain(&b)));
        }
        let b = Inner::Receipt(receipt()).to_vec();
        assert_eq!(b.len(), 1 + RECEIPT_LEN);
        assert_eq!(&b[..9], &[RECEIPT, 0, 1, 0xff, 0xfe, 0, 0, 0x04, 0xd2]);
        assert_eq!(Inner::Nack(vec![(65535, 2)]).to_vec(), [NACK, 0, 1, 0xff, 0xff, 0, 2]);
        assert_eq!(
            Inner::parse(&[MESSAGE, 6, 0, 0, 0, 0, 0, 0, 4, 60, 0, 0, 0]),
            Ok(Inner::Message(Message::SetQuality(60)))
        );
    }

    #[test]
    fn every_truncation_of_every_variant_is_an_error() {
        let mut all: Vec<Vec<u8>> = inners().iter().map(|i| [&[PLAIN][..], i].concat()).collect();
        all.push(datagram(Datagram::Hello { session: 3, hello: hello(Role::Receiver) }));
        all.push(datagram(Datagram::Handshake { session: 3, msg: &[9; 48] }));
        for b in &all {
            assert!(parse_all(b).is_ok(), "{b:02x?}");
            // An RTP packet has no length of its own: cut after its fixed header it is still a
            // packet here, and `media` finds what is missing. So is a Noise message for `seal`.
            let (min_ok, exact) = match (b[0], b[1]) {
                (PLAIN, MEDIA) => (2 + RTP_HEADER_LEN, false),
                (HANDSHAKE, _) => (9, false),
                _ => (b.len(), true),
            };
            for n in 0..min_ok {
                assert!(parse_all(&b[..n]).is_err(), "{:02x?} cut to {n} bytes parsed", b);
            }
            // A Handshake message may be any length up to its cap; the Noise layer checks it.
            if exact {
                let longer = [&b[..], &[0]].concat();
                assert!(parse_all(&longer).is_err(), "{b:02x?} with a byte more parsed");
            }
        }
        let sealed = datagram(Datagram::Sealed { nonce: 1, body: &[0; TAG_LEN + 1] });
        for n in 0..sealed.len() {
            assert!(Datagram::parse(&sealed[..n], Role::Sender).is_err(), "sealed cut to {n}");
        }
    }

    #[test]
    fn errors_name_what_arrived_what_was_expected_and_where() {
        let e = |b: &[u8]| parse_all(b).unwrap_err().to_string();
        assert_eq!(Datagram::parse(&[], Role::Sender), Err(WireError::Empty));
        assert_eq!(e(&[0x99]), "kind 0x99 at byte 0, expected ".to_string() + DATAGRAM_KINDS);
        assert_eq!(e(&[PLAIN, 0x11]), "kind 0x11 at byte 0, expected ".to_string() + INNER_KINDS);
        assert_eq!(
            e(&[PLAIN, MEDIA, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "rtp version 1 at byte 1, expected 2 (first byte 0x80..=0xbf)"
        );
        assert_eq!(
            e(&[PLAIN, MEDIA, 0x80]),
            "rtp packet: 1 bytes at byte 1, expected at least 12 (the RTP fixed header)"
        );
        assert_eq!(e(&[PLAIN, BYE, 0]), "bye: 1 bytes at byte 1, expected 0 after its kind byte");
        assert_eq!(e(&[PLAIN]), "plain datagram's inner: 0 bytes at byte 1, expected at least 1");
        let r = Inner::Receipt(receipt()).to_vec();
        assert_eq!(Inner::parse(&r[..20]).unwrap_err().to_string(), "receipt: 19 bytes at byte 1, expected 42");
        let mut r = r;
        r[41..43].copy_from_slice(&10_001u16.to_be_bytes());
        assert_eq!(
            Inner::parse(&r).unwrap_err().to_string(),
            "receipt loss 10001 at byte 41, expected 0..=10000 (1/10000)"
        );
        let short = datagram(Datagram::Handshake { session: 1, msg: &[1] });
        assert_eq!(
            e(&short[..5]),
            "handshake datagram: 5 bytes at byte 0, expected 9 or more (kind, session, Noise message)"
        );
        assert_eq!(Datagram::parse(&short[..9], Role::Sender), Ok(Datagram::Handshake { session: 1, msg: &[] }));
        let long = [&short[..9], &[0; MAX_HANDSHAKE_MSG + 1]].concat();
        assert_eq!(e(&long), "noise handshake message: 97 bytes at byte 9, expected at most 96");
    }

    #[test]
    fn oversized_datagrams_are_refused_and_the_largest_accepted() {
        let max = [&[PLAIN, MEDIA][..], &rtp(MAX_DATAGRAM - 2)].concat();
        assert_eq!(max.len(), MAX_DATAGRAM);
        assert!(parse_all(&max).is_ok());
        let over = [&max[..], &[0]].concat();
        assert_eq!(
            Datagram::parse(&over, Role::Receiver).unwrap_err().to_string(),
            "datagram: 1473 bytes at byte 0, expected at most 1472"
        );
        let sealed = datagram(Datagram::Sealed { nonce: 0, body: &vec![0; MAX_DATAGRAM - 8] });
        assert!(Datagram::parse(&sealed, Role::Receiver).is_err());
        assert_eq!(MAX_RTP_PACKET + 1 + SEALED_OVERHEAD, MAX_DATAGRAM);
    }

    #[test]
    fn a_hello_of_another_version_gets_the_tcp_protocols_error() {
        let mut b = datagram(Datagram::Hello { session: 1, hello: hello(Role::Sender) });
        b[13..15].copy_from_slice(&(VERSION + 1).to_be_bytes());
        let want = format!(
            "bad hello: protocol version mismatch: we speak version {VERSION}, the peer speaks version {}; run the \
             same framecast release on both ends",
            VERSION + 1
        );
        assert_eq!(Datagram::parse(&b, Role::Sender).unwrap_err().to_string(), want);
        // Judged from the version alone, whatever the length of a future version's hello.
        assert_eq!(Datagram::parse(&b[..15], Role::Sender).unwrap_err().to_string(), want);
        b.extend_from_slice(&[0; 40]);
        assert_eq!(Datagram::parse(&b, Role::Sender).unwrap_err().to_string(), want);
    }

    #[test]
    fn hellos_of_the_wrong_role_or_bad_magic_or_length_are_refused() {
        let b = datagram(Datagram::Hello { session: 1, hello: hello(Role::Sender) });
        let e = Datagram::parse(&b, Role::Receiver).unwrap_err().to_string();
        assert!(e.contains("says it is a sender, but a receiver was expected") && e.contains("byte 9"), "{e}");
        let mut bad = b.clone();
        bad[9] = b'G';
        let e = Datagram::parse(&bad, Role::Sender).unwrap_err().to_string();
        assert!(e.starts_with("bad hello: bad magic at offset 0"), "{e}");
        let e = Datagram::parse(&[&b[..], &[0]].concat(), Role::Sender).unwrap_err();
        assert_eq!(e.to_string(), "hello datagram: 34 bytes at byte 0, expected 33 (kind, session, 24-byte hello)");
    }

    #[test]
    fn frames_and_bad_messages_are_refused_inside_datagrams() {
        let info = StreamInfo { width: 16, height: 16, fps_milli: 0 };
        let h = crate::testutil::sample_header(1, info, 3);
        let mut b = vec![MESSAGE];
        Message::Frame(h, &[1, 2, 3]).encode(&mut b);
        assert_eq!(
            Inner::parse(&b).unwrap_err().to_string(),
            "message type 2 at byte 1, expected any type but 2 (frames travel as RTP packets)"
        );
        // Two messages in one datagram, one message cut short, a bad field.
        let two = [Inner::Message(Message::Ping(Ping { id: 1, t1_us: 2 })).to_vec(), vec![9]].concat();
        assert_eq!(
            Inner::parse(&two).unwrap_err().to_string(),
            "message: 25 bytes at byte 1, expected 24 (one message and nothing after it)"
        );
        let ping = Inner::Message(Message::Ping(Ping { id: 1, t1_us: 2 })).to_vec();
        assert_eq!(
            Inner::parse(&ping[..10]).unwrap_err().to_string(),
            "message: 9 bytes at byte 1, expected 24 (as its header says)"
        );
        let q = [MESSAGE, 6, 0, 0, 0, 0, 0, 0, 4, 101, 0, 0, 0];
        let e = Inner::parse(&q).unwrap_err().to_string();
        assert!(e.starts_with("bad message: malformed input at offset 9: set-quality payload"), "{e}");
        // A report over the TCP protocol's cap is refused from its header.
        let mut r = vec![MESSAGE, 7, 0, 0, 0];
        r.extend_from_slice(&(MAX_REPORT_LEN as u32 + 1).to_be_bytes());
        let e = Inner::parse(&r).unwrap_err().to_string();
        assert!(e.contains("over the cap of 65536"), "{e}");
        let bad_utf8 = [&[MESSAGE, 7, 0, 0, 0, 0, 0, 0, 2][..], &[0xff, 0xfe]].concat();
        assert!(Inner::parse(&bad_utf8).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn nacks_are_capped_and_runs_are_not_empty() {
        let full: Vec<(u16, u16)> = (0..MAX_NACK_RANGES as u16).map(|i| (i * 3, 1)).collect();
        let b = Inner::Nack(full.clone()).to_vec();
        assert_eq!(Inner::parse(&b), Ok(Inner::Nack(full.clone())));
        let mut over = full.clone();
        over.push((1, 1));
        assert_eq!(Inner::Nack(over).to_vec(), b, "encode cuts to the cap");
        let mut claim = b.clone();
        claim[1..3].copy_from_slice(&(MAX_NACK_RANGES as u16 + 1).to_be_bytes());
        assert_eq!(
            Inner::parse(&claim).unwrap_err().to_string(),
            "nack range count 257 at byte 1, expected at most 256"
        );
        claim[1..3].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(Inner::parse(&claim).is_err());
        let zero = [NACK, 0, 2, 0, 1, 0, 1, 0, 9, 0, 0];
        assert_eq!(Inner::parse(&zero).unwrap_err().to_string(), "nack run length 0 at byte 9, expected 1..=65535");
        let e = Inner::parse(&[NACK, 0, 2, 0, 1, 0, 1]).unwrap_err().to_string();
        assert_eq!(e, "nack: 6 bytes at byte 1, expected 10 for 2 ranges");
    }

    #[test]
    fn new_sessions_differ() {
        assert_ne!(new_session(), new_session());
    }

    fn inner_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), RTP_HEADER_LEN..MAX_RTP_PACKET).prop_map(|mut p| {
                p[0] = 0x80 | (p[0] & 0x3f);
                Inner::Media(&p).to_vec()
            }),
            prop::collection::vec((any::<u16>(), 1..=u16::MAX), 0..=MAX_NACK_RANGES)
                .prop_map(|r| Inner::Nack(r).to_vec()),
            (any::<[u32; 2]>(), any::<[u64; 4]>(), 0..=MAX_LOSS_BP).prop_map(|(a, b, loss_bp)| {
                let r = Receipt {
                    highest_seq: a[0],
                    highest_age_us: a[1],
                    packets: b[0],
                    bytes: b[1],
                    lost: b[2],
                    recovered: b[3],
                    loss_bp,
                };
                Inner::Receipt(r).to_vec()
            }),
            (any::<[u64; 4]>()).prop_map(|v| {
                Inner::Message(Message::Pong(Pong { id: v[0], t1_us: v[1], t2_us: v[2], t3_us: v[3] })).to_vec()
            }),
            "[ -~]{0,1400}".prop_map(|s| Inner::Message(Message::Report(s.as_bytes())).to_vec()),
            Just(Inner::Bye.to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_inners_round_trip(b in inner_strategy()) {
            let inner = Inner::parse(&b).unwrap();
            prop_assert_eq!(inner.to_vec(), b);
        }

        /// Arbitrary bytes never panic, and whatever parses encodes back to the same bytes (one
        /// encoding per meaning: nothing a parser ignores).
        #[test]
        fn prop_arbitrary_bytes_parse_or_fail_cleanly(
            bytes in prop::collection::vec(any::<u8>(), 0..1600),
            kind in prop::sample::select(vec![HELLO, HANDSHAKE, SEALED, PLAIN, MEDIA, MESSAGE, NACK, RECEIPT, BYE, 0]),
            inner_kind in prop::sample::select(vec![MEDIA, MESSAGE, NACK, RECEIPT, BYE, 0]),
        ) {
            let mut b = bytes;
            // Most cases start with a real kind, so parsing gets past the first byte.
            if kind != 0 && !b.is_empty() {
                b[0] = kind;
                if kind == PLAIN && b.len() > 1 && inner_kind != 0 {
                    b[1] = inner_kind;
                }
            }
            for role in [Role::Sender, Role::Receiver] {
                if let Ok(d) = Datagram::parse(&b, role) {
                    prop_assert_eq!(datagram(d), b.clone());
                }
            }
            if let Ok(i) = Inner::parse(&b) {
                prop_assert_eq!(i.to_vec(), b.clone());
            }
            if b.len() > 1 {
                if let Ok(i) = Inner::parse(&b[1..]) {
                    prop_assert_eq!(i.to_vec(), b[1..].to_vec());
                }
            }
        }
    }
}
