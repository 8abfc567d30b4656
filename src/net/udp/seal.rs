//! `--key-file` over UDP: the Noise handshake of `net::secure` (NNpsk0, the sender the
//! initiator, the prologue binding both hellos and both session ids) carried in `Handshake`
//! datagrams, retransmitted by the initiator until answered (the responder answers a repeated
//! message 1 with the same message 2), then every datagram sealed under an explicit 64-bit
//! nonce (snow's stateless transport state). Replayed, very old or forged datagrams are
//! rejected: a sliding window of [`REPLAY_WINDOW`] nonces.

use crate::net::proto::Hello;
use crate::net::secure::Key;

/// Nonces remembered behind the highest one seen; older ones are rejected as replays.
pub const REPLAY_WINDOW: u64 = 4096;

/// Why a datagram was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the datagram does not authenticate (another key, or altered on the way)")]
    Forged,
    #[error("nonce {nonce} replayed or older than the window ({highest} is the highest seen)")]
    Replay { nonce: u64, highest: u64 },
    #[error("the handshake failed: {0}")]
    Handshake(String),
}

/// The initiator's side of the handshake (the sender).
pub struct Initiator {}

/// The responder's side of the handshake (the receiver).
pub struct Responder {}

/// An established session's keys, in two halves so that the thread that sends and the one
/// that receives each own one.
pub struct Sealer {
    pub tx: Seal,
    pub rx: Open,
}

/// Seals what we send.
pub struct Seal {}

/// Opens what arrives.
pub struct Open {}

impl Initiator {
    /// Starts the handshake; `ours` and `theirs` are the hellos exchanged, `sessions` the
    /// two session ids (ours, theirs). Returns it and message 1 (resend it until message 2
    /// arrives).
    pub fn start(key: &Key, ours: &Hello, theirs: &Hello, sessions: (u64, u64)) -> Result<(Self, Vec<u8>), SealError> {
        let _ = (key, ours, theirs, sessions);
        unimplemented!("seal::Initiator::start")
    }

    /// Takes message 2; the session's keys.
    pub fn finish(self, msg2: &[u8]) -> Result<Sealer, SealError> {
        let _ = msg2;
        unimplemented!("seal::Initiator::finish")
    }
}

impl Responder {
    pub fn new(key: &Key, ours: &Hello, theirs: &Hello, sessions: (u64, u64)) -> Self {
        let _ = (key, ours, theirs, sessions);
        unimplemented!("seal::Responder::new")
    }

    /// Takes message 1 and returns message 2 and the session's keys; a repeat of the same
    /// message 1 (message 2 was lost) gets the same message 2 again, and no keys.
    pub fn respond(&mut self, msg1: &[u8]) -> Result<(Vec<u8>, Option<Sealer>), SealError> {
        let _ = msg1;
        unimplemented!("seal::Responder::respond")
    }
}

impl Seal {
    /// Appends a whole `Sealed` datagram carrying `inner` (an encoded [`super::wire::Inner`])
    /// to `out`, under the next nonce.
    pub fn seal(&mut self, inner: &[u8], out: &mut Vec<u8>) {
        let _ = (inner, out);
        unimplemented!("seal::Seal::seal")
    }
}

impl Open {
    /// Opens a `Sealed` datagram's body into `out` (replacing its contents): the encoded
    /// Inner. Checks the replay window only after the tag authenticates.
    pub fn open(&mut self, nonce: u64, body: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let _ = (nonce, body, out);
        unimplemented!("seal::Open::open")
    }
}
