//! One UDP peer, for the threads that run the transport (`sender::udp`, `receiver::udp`): the
//! handshake over datagrams ([`Handshake`]: hellos, then with a key the Noise messages of
//! [`super::seal`], each resent until answered), then the [`Link`] that sends inner datagrams
//! to the peer (sealed under the session's key when there is one) and the [`Opener`] that
//! opens what arrives. No thread of its own: it runs on whichever thread holds it.
//!
//! The connecting side sends its hello every [`RESEND`] until the listening side answers with
//! its own; a repeated hello of the same session gets the same answer again. With a key the
//! sender is the Noise initiator whichever side connected: it sends message 1 every
//! [`RESEND`] until message 2 arrives. A responder whose key differs answers with a plain
//! `Bye`, so that both sides name the cause at once instead of timing out.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::seal::{Initiator, Open, Responder, Seal, SealError, Sealer};
use super::wire::{Datagram, Inner, WireError};
use crate::clock::clock_id;
use crate::net::proto::{Hello, Message, Role};
use crate::net::secure::{HandshakeError, Key};

/// How often an unanswered hello or Noise message 1 is sent again.
pub const RESEND: Duration = Duration::from_millis(200);
/// How long a handshake may take before the attempt is given up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A session with nothing heard from the peer for this long is over (UDP has no FIN).
pub const SILENCE: Duration = Duration::from_secs(3);

/// A new random session id (per process run and connection attempt).
pub fn new_session() -> u64 {
    getrandom::u64().unwrap_or_else(|_| crate::clock::now_us() ^ u64::from(std::process::id()) << 32)
}

/// Sends inner datagrams to one peer, sealed when the session has a key. Cheap to clone: the
/// clones share the socket and the sealing half (its nonce counter), so that two threads
/// (net-rx and feedback on the receiver) can both send.
#[derive(Clone)]
pub struct Link {
    socket: Arc<UdpSocket>,
    pub peer: SocketAddr,
    seal: Option<Arc<Mutex<Seal>>>,
}

impl Link {
    pub fn new(socket: Arc<UdpSocket>, peer: SocketAddr, seal: Option<Seal>) -> Self {
        Link { socket, peer, seal: seal.map(|s| Arc::new(Mutex::new(s))) }
    }

    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// Sends `inner` as one datagram.
    pub fn send(&self, inner: &Inner<'_>) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(64);
        inner.encode(&mut buf);
        self.send_encoded(&buf)
    }

    /// Sends one framecast message.
    pub fn send_message(&self, msg: &Message<'_>) -> io::Result<usize> {
        self.send(&Inner::Message(*msg))
    }

    /// Sends an encoded [`Inner`]; returns the datagram's length.
    pub fn send_encoded(&self, inner: &[u8]) -> io::Result<usize> {
        let mut out = Vec::with_capacity(inner.len() + 32);
        match &self.seal {
            Some(s) => s.lock().unwrap_or_else(|p| p.into_inner()).seal(inner, &mut out),
            None => Datagram::Plain(inner).encode(&mut out),
        }
        self.socket.send_to(&out, self.peer)
    }
}

/// Why an arriving datagram was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0}")]
    Unexpected(&'static str),
}

/// Opens what arrives from an established peer into an [`Inner`].
pub struct Opener {
    open: Option<Open>,
    buf: Vec<u8>,
}

impl Opener {
    pub fn new(open: Option<Open>) -> Self {
        Opener { open, buf: Vec::with_capacity(super::MAX_DATAGRAM) }
    }

    /// The inner datagram of a `Sealed` (with a key) or `Plain` (without) datagram.
    pub fn open(&mut self, d: Datagram<'_>) -> Result<Inner<'_>, OpenError> {
        let Opener { open, buf } = self;
        match (d, open) {
            (Datagram::Sealed { nonce, body }, Some(o)) => o.open(nonce, body, buf)?,
            (Datagram::Plain(b), None) => {
                buf.clear();
                buf.extend_from_slice(b);
            }
            (Datagram::Sealed { .. }, None) => {
                return Err(OpenError::Unexpected("a sealed datagram, but no key is in use"))
            }
            (Datagram::Plain(_), Some(_)) => return Err(OpenError::Unexpected("a plain datagram in a sealed session")),
            (Datagram::Hello { .. } | Datagram::Handshake { .. }, _) => {
                return Err(OpenError::Unexpected("a hello or handshake where media or messages were expected"))
            }
        }
        Ok(Inner::parse(buf)?)
    }
}

/// A finished handshake: the peer's hello and session id, and the session's keys.
pub struct Established {
    pub theirs: Hello,
    pub session: u64,
    pub sealer: Option<Sealer>,
}

enum State {
    /// Waiting for the peer's hello.
    Hello,
    /// The sender's side with a key: message 1 sent, waiting for message 2.
    Initiating {
        init: Box<Initiator>,
        msg1: Vec<u8>,
    },
    /// The receiver's side with a key: waiting for message 1 (kept after it to answer repeats).
    Responding(Responder),
    Done,
}

/// One side's handshake with one peer (see the module docs).
pub struct Handshake {
    key: Option<Arc<Key>>,
    role: Role,
    ours: Hello,
    session: u64,
    theirs: Option<(Hello, u64)>,
    state: State,
    started: Instant,
    established: bool,
}

impl Handshake {
    /// A handshake as `role`; `session` is ours.
    pub fn new(role: Role, key: Option<Arc<Key>>, session: u64) -> Self {
        let ours = Hello::new(role, clock_id()).keyed(key.is_some());
        Handshake {
            key,
            role,
            ours,
            session,
            theirs: None,
            state: State::Hello,
            started: Instant::now(),
            established: false,
        }
    }

    /// Our session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The peer's session id, once its hello arrived.
    pub fn their_session(&self) -> Option<u64> {
        self.theirs.map(|(_, s)| s)
    }

    /// Whether the session's keys (or, without a key, the hellos) are settled.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Whether the handshake has taken longer than [`HANDSHAKE_TIMEOUT`].
    pub fn timed_out(&self) -> bool {
        !self.established && self.started.elapsed() > HANDSHAKE_TIMEOUT
    }

    /// Our hello datagram.
    pub fn hello(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        Datagram::Hello { session: self.session, hello: self.ours }.encode(&mut out);
        out
    }

    /// What to send again now that [`RESEND`] has passed unanswered: our hello (connecting,
    /// before the answer) or message 1 (the initiator).
    pub fn resend(&self, connecting: bool) -> Option<Vec<u8>> {
        match &self.state {
            State::Hello if connecting => Some(self.hello()),
            State::Initiating { msg1, .. } => Some(self.handshake_datagram(msg1)),
            _ => None,
        }
    }

    fn handshake_datagram(&self, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 16);
        Datagram::Handshake { session: self.session, msg }.encode(&mut out);
        out
    }

    /// The peer's hello. `answer`: we are the listening side and answer it with ours. Pushes
    /// what to send to `out`; returns the session when it is established by this hello.
    pub fn on_hello(
        &mut self,
        theirs: Hello,
        session: u64,
        answer: bool,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Established>, HandshakeError> {
        if answer {
            out.push(self.hello());
        }
        if !matches!(self.state, State::Hello) {
            // A repeat (our answer was lost): answered above, nothing else changes.
            return Ok(None);
        }
        let peer = opposite(self.role);
        match (&self.key, theirs.keyed) {
            (Some(_), false) => return Err(HandshakeError::PeerHasNoKey { peer }),
            (None, true) => return Err(HandshakeError::WeHaveNoKey { peer }),
            _ => {}
        }
        self.theirs = Some((theirs, session));
        let Some(key) = self.key.clone() else {
            self.state = State::Done;
            self.established = true;
            return Ok(Some(Established { theirs, session, sealer: None }));
        };
        let sessions = (self.session, session);
        if self.role == Role::Sender {
            let (init, msg1) = Initiator::start(&key, &self.ours, &theirs, sessions).map_err(noise)?;
            out.push(self.handshake_datagram(&msg1));
            self.state = State::Initiating { init: Box::new(init), msg1 };
        } else {
            self.state = State::Responding(Responder::new(&key, &self.ours, &theirs, sessions));
        }
        Ok(None)
    }

    /// A Noise message from the peer. Pushes the answer to `out` (message 2, or a plain `Bye`
    /// when the peer's key differs); returns the session when it is established by this message.
    pub fn on_handshake(&mut self, msg: &[u8], out: &mut Vec<Vec<u8>>) -> Result<Option<Established>, HandshakeError> {
        let peer = opposite(self.role);
        let Some((theirs, session)) = self.theirs else { return Ok(None) };
        match std::mem::replace(&mut self.state, State::Done) {
            State::Initiating { init, .. } => {
                let sealer = init.finish(msg).map_err(|_| HandshakeError::KeyMismatch { peer })?;
                self.established = true;
                Ok(Some(Established { theirs, session, sealer: Some(sealer) }))
            }
            State::Responding(mut resp) => {
                let answered = resp.respond(msg);
                self.state = State::Responding(resp);
                match answered {
                    Ok((msg2, sealer)) => {
                        out.push(self.handshake_datagram(&msg2));
                        self.established |= sealer.is_some();
                        Ok(sealer.map(|s| Established { theirs, session, sealer: Some(s) }))
                    }
                    Err(_) => {
                        let mut bye = Vec::new();
                        Datagram::Plain(&[super::wire::BYE]).encode(&mut bye);
                        out.push(bye);
                        Err(HandshakeError::KeyMismatch { peer })
                    }
                }
            }
            other => {
                self.state = other;
                Ok(None)
            }
        }
    }

    /// A plain `Bye` while we wait for message 2: the responder refused our key.
    pub fn refused(&self) -> Option<HandshakeError> {
        matches!(self.state, State::Initiating { .. }).then_some(HandshakeError::Refused { peer: opposite(self.role) })
    }
}

fn opposite(r: Role) -> Role {
    match r {
        Role::Sender => Role::Receiver,
        Role::Receiver => Role::Sender,
    }
}

fn noise(e: SealError) -> HandshakeError {
    HandshakeError::Io(io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One side of a handshake in memory.
    struct Side {
        hs: Handshake,
        connecting: bool,
        est: Option<Established>,
        err: Option<HandshakeError>,
    }

    impl Side {
        fn new(role: Role, key: Option<Key>, connecting: bool) -> Self {
            Side { hs: Handshake::new(role, key.map(Arc::new), new_session()), connecting, est: None, err: None }
        }

        /// Takes one datagram from the peer (of role `peer`); returns what it sends back.
        fn take(&mut self, d: &[u8], peer: Role) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let res = match Datagram::parse(d, peer).unwrap() {
                Datagram::Hello { session, hello } => self.hs.on_hello(hello, session, !self.connecting, &mut out),
                Datagram::Handshake { msg, .. } => self.hs.on_handshake(msg, &mut out),
                Datagram::Plain(b) if b == [super::super::wire::BYE] => Err(self.hs.refused().unwrap()),
                other => panic!("unexpected {other:?}"),
            };
            match res {
                Ok(Some(e)) => self.est = Some(e),
                Ok(None) => {}
                Err(e) => self.err = Some(e),
            }
            out
        }
    }

    /// Runs a handshake between a connecting side of role `c_role` and a listening one, each
    /// datagram delivered `copies` times (a repeat is what a resend looks like).
    fn handshake(c_role: Role, c_key: Option<Key>, l_key: Option<Key>, copies: usize) -> (Side, Side) {
        let l_role = if c_role == Role::Sender { Role::Receiver } else { Role::Sender };
        let mut c = Side::new(c_role, c_key, true);
        let mut l = Side::new(l_role, l_key, false);
        let mut to_l = vec![c.hs.hello()];
        let mut to_c: Vec<Vec<u8>> = Vec::new();
        for _ in 0..10 {
            for d in std::mem::take(&mut to_l) {
                for _ in 0..copies {
                    to_c.extend(l.take(&d, c_role));
                }
            }
            for d in std::mem::take(&mut to_c) {
                for _ in 0..copies {
                    to_l.extend(c.take(&d, l_role));
                }
            }
        }
        (c, l)
    }

    fn key(b: u8) -> Option<Key> {
        Some(Key::from_bytes([b; 32]))
    }

    #[test]
    fn both_sides_establish_with_or_without_a_key_whoever_connects() {
        for c_role in [Role::Sender, Role::Receiver] {
            for (k1, k2) in [(None, None), (key(1), key(1))] {
                for copies in [1, 2] {
                    let sealed = k1.is_some();
                    let (c, l) = handshake(c_role, k1.clone(), k2.clone(), copies);
                    let what = format!("{c_role:?} connects, key {sealed}, copies {copies}");
                    let (ce, le) = (c.est.expect(&what), l.est.expect(&what));
                    assert!(c.err.is_none() && l.err.is_none(), "{what}");
                    assert_eq!((ce.sealer.is_some(), le.sealer.is_some()), (sealed, sealed), "{what}");
                    assert_eq!(ce.session, l.hs.session());
                    assert_eq!(le.session, c.hs.session());
                    assert!(c.hs.is_established() && l.hs.is_established());
                    if let (Some(mut a), Some(mut b)) = (ce.sealer, le.sealer) {
                        // What one side seals, the other opens.
                        let mut d = Vec::new();
                        a.tx.seal(&[super::super::wire::BYE], &mut d);
                        let mut o = Opener::new(Some(b.rx));
                        assert_eq!(o.open(Datagram::parse(&d, c_role).unwrap()).unwrap(), Inner::Bye);
                        d.clear();
                        b.tx.seal(&[super::super::wire::BYE], &mut d);
                        let mut o = Opener::new(Some(a.rx));
                        assert_eq!(o.open(Datagram::parse(&d, c_role).unwrap()).unwrap(), Inner::Bye);
                    }
                }
            }
        }
    }

    #[test]
    fn a_wrong_or_missing_key_is_refused_clearly_on_both_sides() {
        for c_role in [Role::Sender, Role::Receiver] {
            let (c, l) = handshake(c_role, key(1), key(2), 1);
            assert!(c.est.is_none() && l.est.is_none());
            let errs = [c.err.unwrap().to_string(), l.err.unwrap().to_string()];
            assert!(errs.iter().all(|e| e.contains("key")), "{errs:?}");
            let (c, l) = handshake(c_role, key(1), None, 1);
            assert!(c.est.is_none() && l.est.is_none());
            let errs = [c.err.unwrap().to_string(), l.err.unwrap().to_string()];
            assert!(errs.iter().all(|e| e.contains("--key-file")), "{errs:?}");
        }
    }

    #[test]
    fn a_plain_datagram_in_a_sealed_session_and_the_reverse_are_refused() {
        let mut d = Vec::new();
        Datagram::Plain(&[super::super::wire::BYE]).encode(&mut d);
        let (c, _) = handshake(Role::Sender, key(3), key(3), 1);
        let mut o = Opener::new(Some(c.est.unwrap().sealer.unwrap().rx));
        assert!(o.open(Datagram::parse(&d, Role::Receiver).unwrap()).is_err());
        let mut o = Opener::new(None);
        assert_eq!(o.open(Datagram::parse(&d, Role::Receiver).unwrap()).unwrap(), Inner::Bye);
    }
}
