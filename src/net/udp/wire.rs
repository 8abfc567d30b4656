//! The UDP datagram format (see the module docs of [`super`] for the exchange, and
//! `docs/protocol.md` for the byte layout). Pure code over bytes: parsing never panics,
//! never allocates from a length a peer claims, and names what it expected and what arrived.
//!
//! Every datagram starts with a kind byte:
//!
//! ```text
//! 0x01 Hello      session u64, then the 24-byte framecast hello (magic, version, role, flags, clock id)
//! 0x02 Handshake  session u64, Noise message (≤ 96 bytes)
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

use crate::net::proto::{Hello, Message, Role};

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

/// A parse error: what was expected, what arrived, at which byte of the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("datagram kind {got:#04x} at byte {offset}, expected {expected}")]
    Kind { offset: usize, got: u8, expected: &'static str },
    #[error("{what}: {got} bytes at byte {offset}, expected {expected}")]
    Length { offset: usize, what: &'static str, got: usize, expected: String },
    #[error("bad hello: {0}")]
    Hello(String),
    #[error("bad message: {0}")]
    Message(String),
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

/// The first byte of a datagram, parsed: [`Datagram::parse`].
impl<'a> Datagram<'a> {
    pub fn parse(d: &'a [u8], expected_role: Role) -> Result<Datagram<'a>, WireError> {
        let _ = (d, expected_role);
        unimplemented!("wire::Datagram::parse")
    }

    /// Appends the datagram (the whole outer layer) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!("wire::Datagram::encode")
    }
}

impl<'a> Inner<'a> {
    pub fn parse(d: &'a [u8]) -> Result<Inner<'a>, WireError> {
        let _ = d;
        unimplemented!("wire::Inner::parse")
    }

    /// Appends the inner kind byte and body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!("wire::Inner::encode")
    }
}
