//! Arbitrary datagrams through the UDP transport's parsers (`net::udp::wire`) and its sealing
//! (`net::udp::seal`), with one session's keys made once per process.
//!
//! The input is a sequence of records (`framecast_fuzz::udp`): raw datagrams, datagrams the
//! target seals itself from fuzzer-chosen Inners and then delivers (in any order, repeated,
//! or with one byte altered), nonce skips, and handshake messages. Checks, besides "never
//! panics":
//! - whatever parses (a datagram, an Inner) encodes back to exactly the bytes it came from,
//!   and a datagram over `MAX_DATAGRAM` never parses;
//! - a raw Sealed datagram never opens (it was not sealed with the session's keys);
//! - a delivered datagram opens exactly when a model of the replay window says its nonce is
//!   new, unaltered, and gives back the Inner sealed; an altered one is `Forged`, or `Replay`
//!   when its (altered) nonce is not new; the window moves only on success;
//! - no handshake message the fuzzer makes is accepted (it has no key).

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use framecast::net::proto::{Hello, Role};
use framecast::net::secure::Key;
use framecast::net::udp::seal::{Initiator, Open, Responder, Seal, SealError, Sealer, REPLAY_WINDOW};
use framecast::net::udp::wire::{Datagram, Inner, MAX_INNER};
use framecast::net::udp::MAX_DATAGRAM;
use framecast_fuzz::udp::{records, DELIVER, MSG1, MSG2, RAW, SEAL, SKIP};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const SESSIONS: (u64, u64) = (0x5e4d, 0x7e4e);

fn hellos() -> (Hello, Hello) {
    (Hello::new(Role::Sender, [1; 16]).keyed(true), Hello::new(Role::Receiver, [2; 16]).keyed(true))
}

/// The sender's and the viewer's keys of one session, made once.
fn session() -> &'static (Sealer, Sealer) {
    static S: OnceLock<(Sealer, Sealer)> = OnceLock::new();
    S.get_or_init(|| {
        let (s, v) = hellos();
        let key = Key::from_bytes(KEY);
        let (init, msg1) = Initiator::start(&key, &s, &v, SESSIONS).unwrap();
        let (msg2, keys) = Responder::new(&key, &v, &s, (SESSIONS.1, SESSIONS.0)).respond(&msg1).unwrap();
        (init.finish(&msg2).unwrap(), keys.unwrap())
    })
}

/// The replay window as a set: what `Open` must decide.
#[derive(Default)]
struct Model {
    seen: BTreeSet<u64>,
    highest: Option<u64>,
}

impl Model {
    fn is_new(&self, n: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) => n > h || (h - n < REPLAY_WINDOW && !self.seen.contains(&n)),
        }
    }
    fn accept(&mut self, n: u64) {
        let h = self.highest.map_or(n, |h| h.max(n));
        self.highest = Some(h);
        self.seen.insert(n);
        self.seen = self.seen.split_off(&h.saturating_sub(REPLAY_WINDOW));
    }
}

/// Parses what arrived as a datagram and as an Inner; whatever parses re-encodes to itself.
fn raw(b: &[u8], rx: &mut Open) {
    for role in [Role::Sender, Role::Receiver] {
        let Ok(d) = Datagram::parse(b, role) else { continue };
        assert!(b.len() <= MAX_DATAGRAM);
        let mut again = Vec::new();
        d.encode(&mut again);
        assert_eq!(again, b);
        match d {
            Datagram::Plain(inner) => inner_round_trip(inner),
            Datagram::Sealed { nonce, body } => {
                let before = rx.highest();
                assert!(rx.open(nonce, body, &mut Vec::new()).is_err(), "a forgery opened");
                assert_eq!(rx.highest(), before);
            }
            _ => {}
        }
    }
    inner_round_trip(b);
}

fn inner_round_trip(b: &[u8]) {
    if let Ok(i) = Inner::parse(b) {
        assert_eq!(i.to_vec(), b);
    }
}

/// Opens kept datagram `b[0]` with byte `b[1..3]` xored with `b[3]`, against the model.
fn deliver(b: &[u8], kept: &[(Vec<u8>, Vec<u8>)], rx: &mut Open, model: &mut Model) {
    if kept.is_empty() {
        return;
    }
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let (d, inner) = &kept[usize::from(at(0)) % kept.len()];
    let mut d = d.clone();
    let pos = usize::from(u16::from_be_bytes([at(1), at(2)])) % d.len();
    d[pos] ^= at(3);
    let Ok(Datagram::Sealed { nonce, body }) = Datagram::parse(&d, Role::Sender) else {
        assert!(pos == 0 && at(3) != 0, "a sealed datagram no longer parses");
        return;
    };
    let mut out = Vec::new();
    let got = rx.open(nonce, body, &mut out);
    match (at(3), model.is_new(nonce)) {
        (0, true) => {
            assert_eq!(got, Ok(()));
            assert_eq!(&out, inner);
            model.accept(nonce);
        }
        (_, true) => assert_eq!(got, Err(SealError::Forged)),
        (_, false) => assert!(matches!(got, Err(SealError::Replay { .. }))),
    }
    assert_eq!(rx.highest(), model.highest);
}

/// A handshake message the fuzzer made is never accepted.
fn handshake(op: u8, b: &[u8]) {
    let (s, v) = hellos();
    let key = Key::from_bytes(KEY);
    if op == MSG1 {
        let r = Responder::new(&key, &v, &s, (SESSIONS.1, SESSIONS.0)).respond(b);
        assert!(r.is_err(), "a made-up message 1 was accepted");
    } else {
        let (init, _) = Initiator::start(&key, &s, &v, SESSIONS).unwrap();
        assert!(init.finish(b).is_err(), "a made-up message 2 was accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    let (sender, viewer) = session();
    let (mut tx, mut rx): (Seal, Open) = (sender.tx.restarted(), viewer.rx.restarted());
    let mut model = Model::default();
    let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (op, b) in records(data) {
        match op {
            RAW => raw(b, &mut rx),
            // An Inner is never empty (it has a kind byte), and the sender seals nothing else.
            SEAL if kept.len() < 256 && !b.is_empty() => {
                let inner = &b[..b.len().min(MAX_INNER)];
                let nonce = tx.next_nonce();
                let mut d = Vec::new();
                tx.seal(inner, &mut d);
                assert!(d.len() <= MAX_DATAGRAM);
                assert!(
                    matches!(Datagram::parse(&d, Role::Sender), Ok(Datagram::Sealed { nonce: n, .. }) if n == nonce)
                );
                kept.push((d, inner.to_vec()));
            }
            DELIVER => deliver(b, &kept, &mut rx, &mut model),
            SKIP => tx.skip(
                16 * u64::from(u16::from_be_bytes([b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0)])),
            ),
            MSG1 | MSG2 => handshake(op, b),
            _ => {}
        }
    }
});
