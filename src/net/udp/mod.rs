//! The UDP transport's shared parts (`send --transport udp`, `recv --transport udp`): frames as
//! RTP/JPEG packets (RFC 2435, the payloader of [`crate::rtp`]) with framecast's header
//! extensions, forward error correction per frame, retransmission on NACK inside a deadline,
//! concealment of what is still missing, and congestion control of its own, over one UDP
//! socket per side, sealed with the `--key-file` key when there is one.
//!
//! Pure code, each part tested on its own; the threads and sockets that run it are
//! `sender::udp` and `receiver::udp`.
//!
//! - [`wire`]: the datagram format: hello, Noise handshake, sealed and plain datagrams, and
//!   what a datagram carries ([`wire::Inner`]): an RTP packet, a framecast message (the TCP
//!   protocol's encoding), a NACK, a receipt for congestion control, a goodbye.
//! - [`seal`]: the Noise handshake over datagrams (retransmitted, idempotent) and the sealing
//!   of every later datagram with ChaCha20-Poly1305 under an explicit nonce; a replay window.
//! - [`fec`]: Reed-Solomon parity over a frame's packets (`reed-solomon-erasure`).
//! - [`media`]: a frame to packets and back: the sender's [`media::Outgoing`] (packets with
//!   the extensions, parity, a bounded store for retransmission) and the receiver's
//!   [`media::Assembler`] (recovery, NACKs inside the deadline, complete, concealable or lost
//!   frames, newest complete frame wins).
//! - [`link`]: one peer for the threads that run the transport: the handshake state machine
//!   over datagrams, sending sealed or plain, opening what arrives.
//! - [`cc`]: the pacer and the sender's rate: never above what receipts show delivered,
//!   backing off on queueing delay and on loss FEC cannot explain.
//!
//! ```text
//! connecting side                               listening side
//!   Hello{session} ──────────────────────────▶   (repeated every 200 ms until answered)
//!                 ◀────────────────────────── Hello{session}
//!   with a key, the sender (Noise initiator, whichever side connected):
//!   Handshake(msg 1) ─────────────────────────▶   (repeated until msg 2 arrives)
//!                 ◀───────────────────────── Handshake(msg 2)  (the same bytes on a repeat)
//!   then Sealed{nonce, ChaCha20-Poly1305(Inner)} both ways, or Plain(Inner) without a key
//! ```

pub mod cc;
pub mod fec;
pub mod link;
pub mod media;
pub mod seal;
pub mod wire;

/// Largest datagram framecast sends or accepts: an Ethernet MTU (1500) less the IPv4 and UDP
/// headers. Larger datagrams are counted and ignored.
pub const MAX_DATAGRAM: usize = 1472;
