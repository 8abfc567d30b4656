//! `--key-file` over UDP: the Noise handshake of `net::secure` (NNpsk0, the sender the
//! initiator, the prologue binding both hellos and both session ids) carried in `Handshake`
//! datagrams, retransmitted by the initiator until answered (the responder answers a repeated
//! message 1 with the same message 2), then every datagram sealed under an explicit 64-bit
//! nonce (snow's stateless transport state). Replayed, very old or forged datagrams are
//! rejected: a sliding window of [`REPLAY_WINDOW`] nonces.
//!
//! Pure code, no sockets. The handshake runs on the thread that owns the socket; afterwards
//! [`Seal`] belongs to the thread that sends and [`Open`] to the one that receives (both are
//! `Send`, and share the keys read-only).
//!
//! ```text
//! prologue = "framecast secure v1" ‖ sender's hello (24 bytes) ‖ receiver's hello (24 bytes)
//!            ‖ sender's session u64 ‖ receiver's session u64
//! sender   → receiver: Handshake{session, message 1 (48 bytes: -> psk, e)}, repeated until answered
//! receiver → sender:   Handshake{session, message 2 (48 bytes: <- e, ee)}, the same bytes for a repeat,
//!                      or a refusal: a plain Bye (`net::udp::link`), or Handshake{session, no bytes}
//! then:                Sealed{nonce, ChaCha20-Poly1305(key of the direction, nonce, Inner) ‖ tag}
//! ```
//!
//! A session runs one handshake: a different message 1 after one was answered is refused
//! (the initiator starts over with a new session and a new hello). Each direction numbers its
//! datagrams from 0; the nonce travels in the datagram, so loss and reordering do not desync.

use std::sync::Arc;

use snow::{HandshakeState, StatelessTransportState};

use crate::net::proto::{Hello, Role};
use crate::net::secure::{self, HandshakeError, Key, HANDSHAKE_LEN, TAG_LEN};

use super::wire::SEALED;

/// Nonces remembered behind the highest one seen; older ones are rejected as replays.
pub const REPLAY_WINDOW: u64 = 4096;

/// A refusal in a Handshake datagram: no message. [`Initiator::finish`] reads it as the
/// responder's "the keys differ" (`net::udp::link` refuses with a plain `Bye` instead).
pub const REFUSAL: &[u8] = &[];

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

impl SealError {
    fn handshake(e: impl std::fmt::Display) -> Self {
        SealError::Handshake(e.to_string())
    }
}

/// The initiator's side of the handshake (the sender).
pub struct Initiator {
    hs: HandshakeState,
}

/// The responder's side of the handshake (the receiver).
pub struct Responder {
    key: Key,
    prologue: Vec<u8>,
    /// Message 1 as answered, and the answer, for repeats.
    answered: Option<(Vec<u8>, Vec<u8>)>,
}

/// An established session's keys, in two halves so that the thread that sends and the one
/// that receives each own one.
pub struct Sealer {
    pub tx: Seal,
    pub rx: Open,
}

/// Seals what we send.
pub struct Seal {
    state: Arc<StatelessTransportState>,
    next: u64,
}

/// Opens what arrives.
pub struct Open {
    state: Arc<StatelessTransportState>,
    window: ReplayWindow,
}

/// The prologue: `net::secure`'s (label, the sender's hello, the receiver's), then the
/// sender's session id and the receiver's, so that a datagram of another session, or a
/// handshake message spliced from one, does not authenticate.
fn prologue(ours: &Hello, theirs: &Hello, sessions: (u64, u64)) -> Vec<u8> {
    let mut p = secure::prologue(ours, theirs);
    let (sender, receiver) = if ours.role == Role::Sender { sessions } else { (sessions.1, sessions.0) };
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&receiver.to_be_bytes());
    p
}

/// Checks that a handshake message is the one length framecast's are.
fn check_len(which: &str, msg: &[u8]) -> Result<(), SealError> {
    if msg.len() != HANDSHAKE_LEN {
        let e = format!("noise message {which} of {} bytes, expected {HANDSHAKE_LEN}", msg.len());
        return Err(SealError::Handshake(e));
    }
    Ok(())
}

fn sealer(hs: HandshakeState) -> Result<Sealer, SealError> {
    let state = Arc::new(hs.into_stateless_transport_mode().map_err(SealError::handshake)?);
    Ok(Sealer { tx: Seal { state: state.clone(), next: 0 }, rx: Open { state, window: ReplayWindow::default() } })
}

impl Initiator {
    /// Starts the handshake; `ours` and `theirs` are the hellos exchanged, `sessions` the
    /// two session ids (ours, theirs). Returns it and message 1 (resend it until message 2
    /// arrives).
    pub fn start(key: &Key, ours: &Hello, theirs: &Hello, sessions: (u64, u64)) -> Result<(Self, Vec<u8>), SealError> {
        let prologue = prologue(ours, theirs, sessions);
        let builder = secure::noise_builder(key, &prologue).map_err(SealError::handshake)?;
        let mut hs = builder.build_initiator().map_err(SealError::handshake)?;
        let mut msg = vec![0u8; HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg).map_err(SealError::handshake)?;
        msg.truncate(n);
        Ok((Initiator { hs }, msg))
    }

    /// Takes message 2; the session's keys. A refusal ([`REFUSAL`]) or a message 2 that does
    /// not authenticate is the TCP handshake's error; either way this handshake is over (start
    /// again with a new session).
    pub fn finish(mut self, msg2: &[u8]) -> Result<Sealer, SealError> {
        if msg2.is_empty() {
            return Err(SealError::handshake(HandshakeError::Refused { peer: Role::Receiver }));
        }
        check_len("2", msg2)?;
        let mut payload = [0u8; HANDSHAKE_LEN];
        if self.hs.read_message(msg2, &mut payload).is_err() {
            return Err(SealError::handshake(HandshakeError::KeyMismatch { peer: Role::Receiver }));
        }
        sealer(self.hs)
    }
}

impl Responder {
    pub fn new(key: &Key, ours: &Hello, theirs: &Hello, sessions: (u64, u64)) -> Self {
        Responder { key: key.clone(), prologue: prologue(ours, theirs, sessions), answered: None }
    }

    /// Takes message 1 and returns message 2 and the session's keys; a repeat of the same
    /// message 1 (message 2 was lost) gets the same message 2 again, and no keys.
    ///
    /// A message 1 that does not authenticate (another key, another session, altered) is an
    /// error: answer it with a refusal (the transport sends a plain `Bye`; [`REFUSAL`] in a
    /// Handshake datagram reads the same to [`Initiator::finish`]). A different message 1 once one was answered is an
    /// error too (one handshake per session), and gets no answer.
    pub fn respond(&mut self, msg1: &[u8]) -> Result<(Vec<u8>, Option<Sealer>), SealError> {
        if let Some((first, msg2)) = &self.answered {
            if first[..] == *msg1 {
                return Ok((msg2.clone(), None));
            }
            return Err(SealError::Handshake(
                "a second, different handshake message 1 in an answered session; ignored".into(),
            ));
        }
        check_len("1", msg1)?;
        let builder = secure::noise_builder(&self.key, &self.prologue).map_err(SealError::handshake)?;
        let mut hs = builder.build_responder().map_err(SealError::handshake)?;
        let mut payload = [0u8; HANDSHAKE_LEN];
        if hs.read_message(msg1, &mut payload).is_err() {
            return Err(SealError::handshake(HandshakeError::KeyMismatch { peer: Role::Sender }));
        }
        let mut msg2 = vec![0u8; HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg2).map_err(SealError::handshake)?;
        msg2.truncate(n);
        let keys = sealer(hs)?;
        self.answered = Some((msg1.to_vec(), msg2.clone()));
        Ok((msg2, Some(keys)))
    }
}

impl Seal {
    /// Appends a whole `Sealed` datagram carrying `inner` (an encoded [`super::wire::Inner`])
    /// to `out`, under the next nonce. `inner` is at most [`super::wire::MAX_INNER`] bytes for
    /// the datagram to fit; more than Noise's 65519 is a bug of the caller (a panic).
    pub fn seal(&mut self, inner: &[u8], out: &mut Vec<u8>) {
        let nonce = self.next;
        self.next += 1;
        out.push(SEALED);
        out.extend_from_slice(&nonce.to_be_bytes());
        let start = out.len();
        out.resize(start + inner.len() + TAG_LEN, 0);
        let n =
            self.state.write_message(nonce, inner, &mut out[start..]).expect("a datagram's Inner fits a Noise message");
        out.truncate(start + n);
    }

    /// The nonce the next datagram gets (how many were sealed).
    pub fn next_nonce(&self) -> u64 {
        self.next
    }

    /// A sealer of the same keys that starts again at nonce 0 (reusing nonces: for tests and
    /// the fuzz target only).
    #[doc(hidden)]
    pub fn restarted(&self) -> Seal {
        Seal { state: self.state.clone(), next: 0 }
    }

    /// Skips `n` nonces, as if that many datagrams had been sealed and lost (for the fuzz
    /// target, which cannot seal thousands per input).
    #[doc(hidden)]
    pub fn skip(&mut self, n: u64) {
        self.next = self.next.saturating_add(n);
    }
}

impl Open {
    /// Opens a `Sealed` datagram's body into `out` (replacing its contents): the encoded
    /// Inner. Checks the replay window only after the tag authenticates.
    ///
    /// A nonce the window already refuses is refused before decrypting (nothing to learn from
    /// it, and a flood of replays costs no decryption); the window moves only for a datagram
    /// that authenticates, so a forged one cannot push it forward.
    pub fn open(&mut self, nonce: u64, body: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        self.window.check(nonce)?;
        if body.len() < TAG_LEN {
            return Err(SealError::Forged);
        }
        out.clear();
        out.resize(body.len() - TAG_LEN, 0);
        match self.state.read_message(nonce, body, out) {
            Ok(n) => out.truncate(n),
            Err(_) => {
                out.clear();
                return Err(SealError::Forged);
            }
        }
        self.window.check(nonce)?;
        self.window.mark(nonce);
        Ok(())
    }

    /// The highest nonce opened so far.
    pub fn highest(&self) -> Option<u64> {
        self.window.highest
    }

    /// An opener of the same keys with an empty replay window (for tests and the fuzz target).
    #[doc(hidden)]
    pub fn restarted(&self) -> Open {
        Open { state: self.state.clone(), window: ReplayWindow::default() }
    }
}

/// The nonces seen: the highest, and a bitmap of the [`REPLAY_WINDOW`] nonces up to it
/// (nonce `n` at bit `n % REPLAY_WINDOW`), as in RFC 6479.
struct ReplayWindow {
    highest: Option<u64>,
    bits: Box<[u64; (REPLAY_WINDOW / 64) as usize]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { highest: None, bits: Box::new([0; (REPLAY_WINDOW / 64) as usize]) }
    }
}

impl ReplayWindow {
    fn bit(n: u64) -> (usize, u64) {
        let i = n % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `nonce` is new: above the highest, or inside the window and not seen.
    fn check(&self, nonce: u64) -> Result<(), SealError> {
        let Some(highest) = self.highest else { return Ok(()) };
        let (word, mask) = Self::bit(nonce);
        if nonce > highest || (highest - nonce < REPLAY_WINDOW && self.bits[word] & mask == 0) {
            return Ok(());
        }
        Err(SealError::Replay { nonce, highest })
    }

    /// Records `nonce` (checked new), moving the window up when it is the highest.
    fn mark(&mut self, nonce: u64) {
        match self.highest {
            Some(h) if nonce <= h => {}
            Some(h) if nonce - h < REPLAY_WINDOW => {
                for n in h + 1..nonce {
                    let (word, mask) = Self::bit(n);
                    self.bits[word] &= !mask;
                }
                self.highest = Some(nonce);
            }
            _ => {
                self.bits.fill(0);
                self.highest = Some(nonce);
            }
        }
        let (word, mask) = Self::bit(nonce);
        self.bits[word] |= mask;
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Datagram, Inner};
    use super::*;
    use crate::net::secure::KEY_LEN;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; KEY_LEN])
    }

    fn hellos() -> (Hello, Hello) {
        (Hello::new(Role::Sender, [1; 16]).keyed(true), Hello::new(Role::Receiver, [2; 16]).keyed(true))
    }

    /// A whole handshake, the sender's session 10 and the viewer's 20.
    fn pair(sender_key: &Key, viewer_key: &Key) -> (Sealer, Sealer) {
        let (s, v) = hellos();
        let (init, msg1) = Initiator::start(sender_key, &s, &v, (10, 20)).unwrap();
        let mut resp = Responder::new(viewer_key, &v, &s, (20, 10));
        let (msg2, keys) = resp.respond(&msg1).unwrap();
        (init.finish(&msg2).unwrap(), keys.unwrap())
    }

    fn seal(s: &mut Seal, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal(inner, &mut out);
        out
    }

    /// Parses a sealed datagram and opens it.
    fn open(o: &mut Open, d: &[u8]) -> Result<Vec<u8>, SealError> {
        let Ok(Datagram::Sealed { nonce, body }) = Datagram::parse(d, Role::Sender) else {
            panic!("not a sealed datagram: {d:02x?}");
        };
        let mut out = vec![0xee; 3];
        o.open(nonce, body, &mut out).map(|()| out)
    }

    /// Both directions carry datagrams between the two halves.
    fn assert_talk(a: &mut Sealer, b: &mut Sealer) {
        let bye = Inner::Bye.to_vec();
        let d = seal(&mut a.tx, &bye);
        assert_eq!(open(&mut b.rx, &d).unwrap(), bye);
        let media = Inner::Media(&[0x80; 1000]).to_vec();
        let d = seal(&mut b.tx, &media);
        assert_eq!(d.len(), 1 + 8 + media.len() + TAG_LEN);
        assert_eq!(open(&mut a.rx, &d).unwrap(), media);
    }

    #[test]
    fn a_handshake_establishes_keys_both_ways() {
        let (mut s, mut v) = pair(&key(3), &key(3));
        assert_talk(&mut s, &mut v);
        let (s_hello, v_hello) = hellos();
        let (_, msg1) = Initiator::start(&key(3), &s_hello, &v_hello, (10, 20)).unwrap();
        assert_eq!(msg1.len(), 48);
    }

    #[test]
    fn lost_handshake_messages_are_repeated_and_give_the_same_keys() {
        let (s, v) = hellos();
        let (init, msg1) = Initiator::start(&key(3), &s, &v, (10, 20)).unwrap();
        let mut resp = Responder::new(&key(3), &v, &s, (20, 10));
        // Message 1 lost: the sender resends the same bytes; the first that arrives counts.
        let (msg2, keys) = resp.respond(&msg1).unwrap();
        let mut viewer = keys.unwrap();
        // Message 2 lost twice: each repeat of message 1 gets the same message 2, no new keys.
        for _ in 0..2 {
            let (again, keys) = resp.respond(&msg1).unwrap();
            assert_eq!(again, msg2);
            assert!(keys.is_none());
        }
        let mut sender = init.finish(&msg2).unwrap();
        assert_talk(&mut sender, &mut viewer);
        // A different message 1 in the answered session is refused.
        let (_, other) = Initiator::start(&key(3), &s, &v, (10, 20)).unwrap();
        let e = resp.respond(&other).err().unwrap();
        assert!(e.to_string().contains("second, different handshake message 1"), "{e}");
    }

    #[test]
    fn a_wrong_key_fails_with_a_clear_error_on_both_sides() {
        let (s, v) = hellos();
        let (init, msg1) = Initiator::start(&key(3), &s, &v, (10, 20)).unwrap();
        let mut resp = Responder::new(&key(4), &v, &s, (20, 10));
        let e = resp.respond(&msg1).err().unwrap();
        assert_eq!(
            e.to_string(),
            "the handshake failed: the sender's key differs from ours: its handshake message failed authentication; \
             refused"
        );
        let e = init.finish(REFUSAL).err().unwrap();
        assert_eq!(
            e.to_string(),
            "the handshake failed: the viewer refused the secure handshake: its key differs from ours"
        );
        // The responder may try again with the right message 1 (a refusal answered nothing).
        let (init, msg1) = Initiator::start(&key(3), &s, &v, (10, 20)).unwrap();
        let mut resp = Responder::new(&key(3), &v, &s, (20, 10));
        assert!(resp.respond(&[0; 48]).is_err());
        assert!(resp.respond(&msg1[..47]).err().unwrap().to_string().contains("47 bytes, expected 48"));
        let (msg2, _) = resp.respond(&msg1).unwrap();
        let mut bad = msg2.clone();
        bad[40] ^= 1;
        let e = init.finish(&bad).err().unwrap();
        assert!(e.to_string().contains("the viewer's key differs from ours"), "{e}");
    }

    #[test]
    fn a_handshake_of_another_session_or_other_hellos_fails() {
        let (s, v) = hellos();
        let (_, msg1) = Initiator::start(&key(3), &s, &v, (10, 20)).unwrap();
        for (sessions, theirs) in
            [((21, 10), s), ((20, 11), s), ((20, 10), s.keyed(false)), ((20, 10), Hello { clock_id: [9; 16], ..s })]
        {
            let mut resp = Responder::new(&key(3), &v, &theirs, sessions);
            assert!(resp.respond(&msg1).is_err(), "{sessions:?} {theirs:?}");
        }
        // The same message 1 in its own session still works.
        assert!(Responder::new(&key(3), &v, &s, (20, 10)).respond(&msg1).is_ok());
    }

    #[test]
    fn a_datagram_sealed_for_another_session_fails() {
        let (mut s1, _) = pair(&key(3), &key(3));
        let (s, v) = hellos();
        let (init, msg1) = Initiator::start(&key(3), &s, &v, (11, 20)).unwrap();
        let (msg2, keys) = Responder::new(&key(3), &v, &s, (20, 11)).respond(&msg1).unwrap();
        let (_, mut v2) = (init.finish(&msg2).unwrap(), keys.unwrap());
        let d = seal(&mut s1.tx, &Inner::Bye.to_vec());
        assert_eq!(open(&mut v2.rx, &d), Err(SealError::Forged));
        // Nor does a datagram opened in the direction it was not sealed for.
        let (mut a, _) = pair(&key(3), &key(3));
        let d = seal(&mut a.tx, b"\x30");
        assert_eq!(open(&mut a.rx, &d), Err(SealError::Forged));
    }

    #[test]
    fn replayed_reordered_too_old_and_altered_datagrams() {
        let (mut s, mut v) = pair(&key(3), &key(3));
        let d: Vec<Vec<u8>> = (0..6).map(|i| seal(&mut s.tx, &[0x30, i])).collect();
        assert_eq!(open(&mut v.rx, &d[0]).unwrap(), [0x30, 0]);
        assert_eq!(open(&mut v.rx, &d[0]), Err(SealError::Replay { nonce: 0, highest: 0 }));
        // Reordered inside the window: each accepted once.
        assert!(open(&mut v.rx, &d[5]).is_ok());
        assert!(open(&mut v.rx, &d[3]).is_ok());
        assert_eq!(open(&mut v.rx, &d[3]), Err(SealError::Replay { nonce: 3, highest: 5 }));
        assert!(open(&mut v.rx, &d[1]).is_ok());
        // Altered: any byte of ciphertext, tag or nonce.
        for i in [1, 8, 9, d[2].len() - 1] {
            let mut bad = d[2].clone();
            bad[i] ^= 0x40;
            assert_eq!(open(&mut v.rx, &bad), Err(SealError::Forged), "byte {i}");
        }
        assert_eq!(v.rx.open(2, &d[2][9..9 + TAG_LEN - 1], &mut Vec::new()), Err(SealError::Forged));
        // A forged datagram with a far nonce does not move the window.
        let mut far = d[2].clone();
        far[1..9].copy_from_slice(&1_000_000u64.to_be_bytes());
        assert_eq!(open(&mut v.rx, &far), Err(SealError::Forged));
        assert_eq!(v.rx.highest(), Some(5));
        assert_eq!(open(&mut v.rx, &d[2]).unwrap(), [0x30, 2]);
        // Too old: more than the window behind the highest.
        let old = seal(&mut s.tx, b"\x30");
        let mut last = Vec::new();
        for _ in 0..REPLAY_WINDOW {
            last = seal(&mut s.tx, b"\x30");
        }
        assert!(open(&mut v.rx, &last).is_ok());
        assert_eq!(open(&mut v.rx, &old), Err(SealError::Replay { nonce: 6, highest: 6 + REPLAY_WINDOW }));
        assert_eq!(open(&mut v.rx, &d[4]), Err(SealError::Replay { nonce: 4, highest: 6 + REPLAY_WINDOW }));
    }

    #[test]
    fn the_replay_window_is_exact_at_its_edge() {
        let mut w = ReplayWindow::default();
        w.mark(10_000);
        let edge = 10_000 - REPLAY_WINDOW + 1;
        assert!(w.check(edge).is_ok());
        assert!(w.check(edge - 1).is_err());
        w.mark(edge);
        assert!(w.check(edge).is_err());
        // Moving up by one forgets the oldest slot, which now stands for the new nonce.
        w.mark(10_001);
        assert!(w.check(edge).is_err(), "now too old");
        assert!(w.check(10_000 - 1).is_ok());
        assert!(w.check(10_000).is_err() && w.check(10_001).is_err());
        // A jump over the whole window clears it.
        w.mark(50_000);
        assert!(w.check(50_000 - 1).is_ok() && w.check(50_000 - REPLAY_WINDOW).is_err());
    }

    #[test]
    fn seal_and_open_move_to_their_own_threads() {
        fn is_send<T: Send + 'static>() {}
        is_send::<Seal>();
        is_send::<Open>();
        let (mut s, mut v) = pair(&key(3), &key(3));
        let sealed = std::thread::spawn(move || seal(&mut s.tx, b"\x30")).join().unwrap();
        let opened = std::thread::spawn(move || open(&mut v.rx, &sealed)).join().unwrap();
        assert_eq!(opened.unwrap(), b"\x30");
    }
}
